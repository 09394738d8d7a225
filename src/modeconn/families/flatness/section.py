"""Typed config sections of the flatness family (schema: schema.yaml beside this file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlatnessConfig:
    """Hessian trace (Hutchinson) and extreme eigenvalues (Lanczos: scipy eigsh) at minima and along paths.

    The Hessian is that of the mean cross-entropy over a fixed evaluation set: `batches` batches of
    `batch_size` examples of `split`, drawn once by a seeded permutation (the same for every network).
    λ_max and λ_min come from Lanczos (scipy eigsh) with `lanczos_vectors` basis vectors, at most
    `lanczos_restarts` restarts and relative tolerance `tolerance`.
    """

    split: str = "train"
    batch_size: int = 500
    batches: int = 2
    mode: str = "eval"
    probes: int = 32
    probe_chunk: int = 16
    lanczos_vectors: int = 10
    lanczos_restarts: int = 30
    tolerance: float = 0.001
    seed: int = 0
    path_points: int = 5
    rescale: float = 4.0

    @property
    def examples(self) -> int:
        return self.batch_size * self.batches


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"flatness": FlatnessConfig}
