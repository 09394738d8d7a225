"""Typed config sections of the fge family (schema: schema.yaml beside this file)."""

from __future__ import annotations

from dataclasses import dataclass


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


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"fge": FgeConfig, "swa": SwaConfig}
