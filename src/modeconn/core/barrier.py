"""Barriers along a path.

Definition used for every barrier number the workflow reports (Frankle et al. 2020, eq. for
instability; Entezari et al. 2022 use the same with loss):

    B = max_i f(θ(α_i)) − ½ (f(θ(α_0)) + f(θ(α_{N−1})))

over the N evaluated points α_0 = 0 < … < α_{N−1} = 1 (endpoints included), for f the loss or the
error rate, on the train or the test split. B ≥ 0 always, since the maximum includes the endpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFINITION = (
    "barrier = max over the {points} evenly spaced alphas in [0, 1] (endpoints included) of f(alpha) "
    "minus the mean of f at the two endpoints; f is the mean cross-entropy loss or the error rate "
    "(fraction misclassified) on the named split"
)


def barrier(values: Tensor) -> Tensor:
    """values [..., N] along the path → barrier [...] (max minus mean of the endpoints)."""
    if values.shape[-1] < 2:
        raise ValueError("a barrier needs at least the two endpoints")
    endpoints = 0.5 * (values[..., 0] + values[..., -1])
    return values.max(dim=-1).values - endpoints


def argmax_alpha(values: Tensor, alpha: Tensor) -> Tensor:
    """Where along the path the maximum lies (the α of the barrier's peak)."""
    return alpha.to(values.device)[values.argmax(dim=-1)]


def definition(points: int) -> str:
    return DEFINITION.format(points=points)


def mean_std(values: Tensor) -> tuple[float, float]:
    """Mean and (sample) standard deviation over replicates; std is 0 for a single value."""
    values = values.double().reshape(-1)
    std = values.std(unbiased=True).item() if values.numel() > 1 else 0.0
    return values.mean().item(), std

