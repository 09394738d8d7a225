"""Coefficients of paths through anchor points, for `params.combine`.

A path with M anchors θ_0 … θ_{M−1} (θ_0, θ_{M−1} the endpoints) is θ(t) = Σ_j c_j(t) θ_j, and
every parametrisation here is just its coefficient function t ↦ c(t) ∈ R^M with Σ_j c_j(t) = 1,
c(0) = e_0 and c(1) = e_{M−1}. Evaluating N points of a path is then one `combine(coeffs[N, M],
anchors)` and one batched population call.

    linear     M = 2: c(α) = (1 − α, α)
    bezier     c_j(t) = binom(n, j) t^j (1 − t)^(n−j), n = M − 1   (Garipov et al. 2018, eq. 3)
    polychain  piecewise linear through θ_j placed at t_j = j / (M − 1) (Garipov et al. 2018, eq. 2;
               also the polyline of AutoNEB pivots, Draxler et al. 2018)

Points t are evenly spaced in [0, 1] (both endpoints included), so that the maximum and the
endpoints of a path come from one call.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def alphas(points: int) -> Tensor:
    """N evenly spaced α in [0, 1], endpoints included (float64 so that α is exact at the ends)."""
    if points < 2:
        raise ValueError(f"a path needs at least 2 points, got {points}")
    return torch.linspace(0.0, 1.0, points, dtype=torch.float64)


def linear_coefficients(alpha: Tensor) -> Tensor:
    """[N] → [N, 2]: rows (1 − α, α); each row sums to 1."""
    alpha = alpha.reshape(-1)
    return torch.stack([1.0 - alpha, alpha], dim=1)


def bezier_coefficients(t: Tensor, anchors: int) -> Tensor:
    """[N] → [N, M]: Bernstein polynomials of degree M − 1 at t."""
    if anchors < 2:
        raise ValueError(f"a Bezier curve needs at least 2 anchors, got {anchors}")
    t = t.reshape(-1, 1).to(torch.float64)
    n = anchors - 1
    j = torch.arange(anchors, dtype=torch.float64)
    binom = torch.exp(torch.lgamma(torch.tensor(n + 1.0)) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1))
    return binom.round() * t**j * (1 - t) ** (n - j)


def polychain_coefficients(t: Tensor, anchors: int) -> Tensor:
    """[N] → [N, M]: hat functions around t_j = j / (M − 1) (at most two non-zero per row)."""
    if anchors < 2:
        raise ValueError(f"a polygonal chain needs at least 2 anchors, got {anchors}")
    s = t.reshape(-1).to(torch.float64) * (anchors - 1)  # position in units of segments
    left = s.floor().clamp(max=anchors - 2).long()  # segment index; t = 1 falls in the last one
    w = s - left  # weight of the right anchor, in [0, 1]
    out = torch.zeros(s.numel(), anchors, dtype=torch.float64)
    rows = torch.arange(s.numel())
    out[rows, left] = 1.0 - w
    out[rows, left + 1] = w
    return out


PATHS: dict[str, Callable[[Tensor, int], Tensor]] = {
    "linear": lambda t, anchors: polychain_coefficients(t, anchors),
    "bezier": bezier_coefficients,
    "polychain": polychain_coefficients,
}


def path_coefficients(kind: str, t: Tensor, anchors: int) -> Tensor:
    """Coefficients [N, M] of the path `kind` ("linear" needs M = 2) at t."""
    if kind not in PATHS:
        raise ValueError(f"unknown path {kind!r}; known: {sorted(PATHS)}")
    if kind == "linear" and anchors != 2:
        raise ValueError(f"a linear path has 2 anchors, got {anchors}")
    return PATHS[kind](t, anchors)
