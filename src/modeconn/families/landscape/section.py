"""Typed config sections of the landscape family (schema: schema.yaml beside this file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LandscapeConfig:
    """Filter-normalised loss landscapes (Li et al. 2018)."""

    seed: int = 0
    bias_and_norm: str = "zero"
    span: float = 1.0
    points_1d: int = 41
    points_2d: int = 21
    between_points: int = 41
    margin: float = 0.5
    examples: int = 1000
    chunk: int = 64
    centers: int = 1
    pairs: int = 1

    def chosen_centers(self, seeds: list[int]) -> list[int]:
        return list(seeds)[: self.centers]

    def chosen_pairs(self, pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return list(pairs)[: self.pairs]


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"landscape": LandscapeConfig}
