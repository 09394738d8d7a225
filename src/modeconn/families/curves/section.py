"""Typed config sections of the curves family (schema: schema.yaml beside this file)."""

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
    chunk: int = 0  # 0: chosen from the device and the sizes (core.population.members_at_once)
    seed: int = 0


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"curves": CurvesConfig}
