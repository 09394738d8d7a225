"""The plane through a curve's endpoints and its free bend (Garipov et al. 2018, Fig. 1).

Gram–Schmidt on w_1 = θ_B − θ_A and w_2 = θ_bend − θ_A gives the orthonormal basis
u = w_1 / |w_1|, v = (w_2 − ⟨w_2, u⟩ u) / |…|. In these coordinates A = (0, 0), B = (|w_1|, 0),
bend = (b_x, b_y) with b_x = ⟨w_2, u⟩, b_y = |w_2 − b_x u|. A plane point θ = A + x u + y v is
an affine combination of the three anchors,

    θ = (1 − a − b) θ_A + a θ_B + b θ_bend,   b = y / b_y,   a = (x − b b_x) / |w_1|,

so a G×G grid is one `params.combine(coefficients [G², 3], anchors [3, ...])` and one batched
population — no flattened vectors or per-point models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .params import TensorDict


def flat_dot(a: TensorDict, b: TensorDict) -> Tensor:
    """⟨a, b⟩ of two single networks as flat vectors (floating tensors only; float64 scalar)."""
    return sum((a[k].double() * b[k].double()).sum() for k in a if a[k].is_floating_point())


def member_dots(points: TensorDict, direction: TensorDict) -> Tensor:
    """⟨θ_k, d⟩ for every member of stacked points [K, ...] and one direction d → [K]."""
    return sum((points[k].double() * direction[k].double()).flatten(1).sum(1) for k in direction)


def _sub(a: TensorDict, b: TensorDict) -> TensorDict:
    return {k: a[k] - b[k] for k in a if a[k].is_floating_point()}


@dataclass(frozen=True)
class Plane:
    """The plane's geometry: |θ_B − θ_A| and the bend's coordinates (b_x, b_y)."""

    length: float
    bend_x: float
    bend_y: float

    def coefficients(self, x: Tensor, y: Tensor) -> Tensor:
        """Plane coordinates x, y [P] → anchor coefficients [P, 3] over (θ_A, θ_B, θ_bend); rows sum to 1."""
        b = y.double() / self.bend_y
        a = (x.double() - b * self.bend_x) / self.length
        return torch.stack([1.0 - a - b, a, b], dim=1)


def plane(a: TensorDict, b: TensorDict, bend: TensorDict) -> Plane:
    """The Gram–Schmidt geometry of the plane through θ_A, θ_B and the bend (unstacked dicts)."""
    w1, w2 = _sub(b, a), _sub(bend, a)
    length = flat_dot(w1, w1).sqrt().item()
    if length == 0:
        raise ValueError("the endpoints coincide: no plane")
    bx = (flat_dot(w2, w1) / length).item()
    by2 = flat_dot(w2, w2).item() - bx**2
    by = max(by2, 0.0) ** 0.5
    if by <= 1e-12 * length:
        raise ValueError("the bend lies on the line through the endpoints: no plane")
    return Plane(length, bx, by)


def project(points: TensorDict, a: TensorDict, b: TensorDict, bend: TensorDict, geometry: Plane) -> Tensor:
    """Plane coordinates [N, 2] of N stacked points (their orthogonal projection onto the plane)."""
    w1, w2 = _sub(b, a), _sub(bend, a)
    u = {k: v / geometry.length for k, v in w1.items()}
    v = {k: (w2[k] - geometry.bend_x * u[k]) / geometry.bend_y for k in w2}
    rel = {k: points[k] - a[k] for k in u}
    x, y = member_dots(rel, u), member_dots(rel, v)
    return torch.stack([x, y], dim=1)


def grid(geometry: Plane, size: int, margin: float) -> tuple[Tensor, Tensor]:
    """Axes [G] (x, y) of a G×G grid covering A, B and the bend.

    Both axes are padded on each side by `margin` times the larger of the two extents, so that a
    bend close to the line still gets a plane of readable height.
    """
    xs = torch.tensor([0.0, geometry.length, geometry.bend_x], dtype=torch.float64)
    ys = torch.tensor([0.0, 0.0, geometry.bend_y], dtype=torch.float64)
    pad = margin * max((xs.max() - xs.min()).item(), (ys.max() - ys.min()).item())

    def axis(v: Tensor) -> Tensor:
        return torch.linspace(v.min().item() - pad, v.max().item() + pad, size, dtype=torch.float64)

    return axis(xs), axis(ys)
