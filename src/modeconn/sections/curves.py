"""Typed config sections of the curves family (schema: schemas/curves.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CurvesConfig:
    """Bezier / PolyChain curves between two minima and the curve plane (Garipov et al. 2018)."""

    pairs: int = 2
    kinds: tuple[str, ...] = ("bezier", "polychain")
    anchors: int = 3
    optimizer: str = "adam"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    duration: str = "15ep"
    points: int = 61
    ensemble_sizes: tuple[int, ...] = (2, 3, 5, 9)
    grid: int = 9
    margin: float = 0.25
    plane_examples: int = 2000
    chunk: int = 64
    seed: int = 0


@dataclass(frozen=True)
class FgeConfig:
    """Fast geometric ensembling (Garipov et al. 2018)."""

    start: str = "24ep"
    cycle: str = "1ep"
    cycles: int = 6
    lr1: float = 0.005
    lr2: float = 0.00005

    def seed_checkpoint_steps(self) -> tuple[str, ...]:
        return (self.start,)


@dataclass(frozen=True)
class SwaConfig:
    """Stochastic weight averaging (Izmailov et al. 2018)."""

    start: str = "22ep"
    duration: str = "8ep"
    lr: float = 0.001
    every: str = "1ep"

    def seed_checkpoint_steps(self) -> tuple[str, ...]:
        return (self.start,)
