"""Typed config sections of the flatness family (schema: schemas/flatness.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlatnessConfig:
    """Hessian trace and top eigenvalue at minima and along paths."""


@dataclass(frozen=True)
class LandscapeConfig:
    """Filter-normalised loss landscapes (Li et al. 2018)."""
