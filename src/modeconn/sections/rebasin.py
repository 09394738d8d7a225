"""Typed config sections of the rebasin family (schema: schemas/rebasin.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RebasinConfig:
    """Permutation alignment, barriers before/after, REPAIR, width sweep (Ainsworth et al. 2023; Jordan et al. 2022)."""
