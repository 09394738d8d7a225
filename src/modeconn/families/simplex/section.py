"""Typed config sections of the simplex family (schema: schema.yaml beside this file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimplexConfig:
    """Low-loss simplexes and simplex ensembles (Benton et al. 2021)."""

    count: int = 0
    vertices: int = 3
    duration: str = "4ep"
    optimizer: str = "adam"
    lr: float = 0.001
    momentum: float = 0.9
    batch_size: int = 128
    samples: int = 3
    volume_weight: float = 0.2
    eval_samples: int = 8
    ensemble_samples: int = 4

    def chosen_seeds(self, seeds: list[int]) -> list[int]:
        return list(seeds) if self.count == 0 else list(seeds)[: self.count]


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"simplex": SimplexConfig}
