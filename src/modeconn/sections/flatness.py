"""Typed config sections of the flatness family (schema: schemas/flatness.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlatnessConfig:
    """Hessian trace (Hutchinson) and top eigenvalue (power iteration) at minima and along paths.

    The Hessian is that of the mean cross-entropy over a fixed evaluation set: `batches` batches of
    `batch_size` examples of `split`, drawn once by a seeded permutation (the same for every network).
    """

    split: str = "train"
    batch_size: int = 500
    batches: int = 2
    mode: str = "eval"
    probes: int = 32
    probe_chunk: int = 16
    member_chunk: int = 1
    power_iterations: int = 20
    tolerance: float = 0.001
    seed: int = 0
    path_points: int = 5
    rescale: float = 4.0

    @property
    def examples(self) -> int:
        return self.batch_size * self.batches


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
