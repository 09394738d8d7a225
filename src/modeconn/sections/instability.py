"""Typed config sections of the instability family (schema: schemas/instability.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstabilityConfig:
    """Spawn/fork instability analysis (Frankle et al. 2020)."""


@dataclass(frozen=True)
class LotteryConfig:
    """Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020)."""
