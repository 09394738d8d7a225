"""Coefficients of paths between anchor points, for `params.combine`.

The linear path θ(α) = (1 − α) θ_A + α θ_B is evaluated at N evenly spaced α in [0, 1]
(both endpoints included), so that its maximum and its endpoints come from one batched call.
"""

from __future__ import annotations

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
