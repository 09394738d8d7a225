"""Typed config sections of the curves family (schema: schemas/curves.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CurvesConfig:
    """Bezier / PolyChain curves between two minima and the curve plane (Garipov et al. 2018)."""


@dataclass(frozen=True)
class FgeConfig:
    """Fast geometric ensembling (Garipov et al. 2018)."""


@dataclass(frozen=True)
class SwaConfig:
    """Stochastic weight averaging (Izmailov et al. 2018)."""
