"""Filter-normalised random directions and the grids of a loss-landscape plot (Li et al. 2018).

A landscape around a minimum θ* plots L(θ* + α·d₁ + β·d₂) over a grid of (α, β). Plain Gaussian
directions make plots of different networks incomparable (ReLU networks are invariant to rescaling
a layer, so the same step means little to a network with large weights). Li et al. (2018, Sec. 4)
therefore rescale the direction filter by filter:

    d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖θ_{i,j}‖

for filter j of layer i: one output channel of a convolution kernel [C_out, C_in, k, k] or one
output row of a linear weight [out, in] (the weights that make one neuron). Biases and the affine
parameters of normalisation layers (1-D tensors) get a zero direction, as in the paper
(`bias_and_norm="zero"`); `bias_and_norm="filter"` instead treats each 1-D tensor as one filter.

Grid points are rows of affine coefficients over anchors, so they go through `params.combine`
and one batched population evaluation like any path:

    around a minimum: anchors (θ*, d₁, d₂), coefficients (1, α, β)
    between minima:   anchors (θ_A, θ_B),   coefficients (1 − α, α), α beyond [0, 1] allowed
"""

from __future__ import annotations

import torch
from torch import Tensor

from .params import TensorDict

BIAS_AND_NORM = ("zero", "filter")


def gaussian_direction(params: TensorDict, generator: torch.Generator) -> TensorDict:
    """A direction with i.i.d. N(0, 1) entries, shaped like `params` (floating tensors only)."""
    return {
        k: torch.randn(t.shape, generator=generator, dtype=torch.float64).to(dtype=t.dtype, device=t.device)
        for k, t in params.items()
        if t.is_floating_point()
    }


def filter_normalize(direction: TensorDict, weights: TensorDict, bias_and_norm: str = "zero", eps: float = 1e-10) -> TensorDict:
    """Rescale every filter of `direction` to the norm of the matching filter of `weights`.

    Tensors with ≥ 2 dimensions: filter j is the slice [j, ...] (norms over all other axes).
    1-D tensors (biases, norm-layer scales and shifts): zero ("zero", Li et al.) or one filter
    ("filter"). Scalars count as 1-D. Returns a new dict; a zero filter of `direction` stays zero.
    """
    if bias_and_norm not in BIAS_AND_NORM:
        raise ValueError(f"bias_and_norm must be one of {BIAS_AND_NORM}, got {bias_and_norm!r}")
    out = {}
    for name, d in direction.items():
        w = weights[name]
        if d.shape != w.shape:
            raise ValueError(f"{name}: direction shape {tuple(d.shape)} differs from weights {tuple(w.shape)}")
        if d.ndim <= 1:
            if bias_and_norm == "zero":
                out[name] = torch.zeros_like(d)
                continue
            rows_d, rows_w = d.reshape(1, -1), w.reshape(1, -1)
        else:
            rows_d, rows_w = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
        scale = rows_w.norm(dim=1, keepdim=True) / (rows_d.norm(dim=1, keepdim=True) + eps)
        out[name] = (rows_d * scale).reshape(d.shape)
    return out


def filter_norms(t: Tensor) -> Tensor:
    """Norm of every filter (slice [j, ...]) of a tensor with ≥ 2 dimensions → [C_out]."""
    return t.reshape(t.shape[0], -1).norm(dim=1)


def directions(params: TensorDict, count: int, generator: torch.Generator, bias_and_norm: str = "zero") -> list[TensorDict]:
    """`count` independent filter-normalised Gaussian directions around `params`."""
    return [filter_normalize(gaussian_direction(params, generator), params, bias_and_norm) for _ in range(count)]


def axis(span: float, points: int) -> Tensor:
    """`points` evenly spaced coefficients in [−span, span] (0 included when `points` is odd)."""
    if points < 2:
        raise ValueError(f"a landscape axis needs at least 2 points, got {points}")
    return torch.linspace(-span, span, points, dtype=torch.float64)


def line_coefficients(alpha: Tensor) -> Tensor:
    """[N] → [N, 2]: rows (1, α) over anchors (θ*, d)."""
    alpha = alpha.reshape(-1)
    return torch.stack([torch.ones_like(alpha), alpha], dim=1)


def grid_coefficients(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Coefficients [N·M, 3] of rows (1, α_i, β_j) over anchors (θ*, d₁, d₂), α-major, and the
    flattened α and β of every row ([N·M] each)."""
    a, b = torch.meshgrid(alpha.reshape(-1), beta.reshape(-1), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    return torch.stack([torch.ones_like(a), a, b], dim=1), a, b
