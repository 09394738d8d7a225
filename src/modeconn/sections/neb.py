"""Typed config sections of the neb family (schema: schemas/neb.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NebConfig:
    """AutoNEB paths between minima (Draxler et al. 2018)."""


@dataclass(frozen=True)
class SimplexConfig:
    """Low-loss simplexes and simplex ensembles (Benton et al. 2021)."""
