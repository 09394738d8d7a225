"""Typed config sections of the neb family (schema: schema.yaml beside this file)."""

from __future__ import annotations

from dataclasses import dataclass
from ...schedules import iterations

DEFAULT_CYCLES = (
    {"method": "equal", "insert": 3, "steps": "200it", "lr": 0.002},
    {"method": "highest", "insert": 2, "steps": "200it", "lr": 0.001},
    {"method": "highest", "insert": 2, "steps": "200it", "lr": 0.0005},
)


@dataclass(frozen=True)
class NebConfig:
    """AutoNEB paths between minima (Draxler et al. 2018)."""

    pairs: int = 0
    optimizer: str = "adam"
    momentum: float = 0.9
    batch_size: int = 128
    redistribute: bool = True
    spring: float = 1.0
    cycles: tuple[dict, ...] = DEFAULT_CYCLES
    dense_points: int = 6
    eval_examples: int = 2000

    def cycle_steps(self, steps_per_epoch: int) -> list[int]:
        """Steps of every cycle in iterations (an epoch is `steps_per_epoch` minibatches)."""
        return [iterations(c["steps"], steps_per_epoch) for c in self.cycles]

    def chosen_pairs(self, pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return list(pairs) if self.pairs == 0 else list(pairs)[: self.pairs]


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"neb": NebConfig}
