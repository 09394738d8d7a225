"""Barriers along a path, under the two definitions of the literature.

f is the loss or the error rate along a path θ(α), evaluated at N points
α_0 = 0 < … < α_{N−1} = 1 (endpoints included); `values` holds f(θ(α_i)) in its last dimension.

max_minus_mean (Frankle et al. 2020, the instability of a pair of networks; the default):

    B = max_i f(θ(α_i)) − ½ (f(θ(0)) + f(θ(1)))

entezari (Entezari et al. 2022, their loss barrier; here for the loss or the error):

    B_E = max_i [ f(θ(α_i)) − ((1 − α_i) f(θ(0)) + α_i f(θ(1))) ]

the height of the path above the straight line between the two endpoint values. Both are ≥ 0 (the
maximum runs over the endpoints, where B_E's term is 0) and equal when f(θ(0)) = f(θ(1)); where f
is linear in α, B_E = 0 while B = |f(θ(1)) − f(θ(0))| / 2. `evaluation.barrier` chooses one for
every table the workflow writes, and every table names it.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_MINUS_MEAN = "max_minus_mean"
ENTEZARI = "entezari"
KINDS = (MAX_MINUS_MEAN, ENTEZARI)

# What the maximum runs over, in words, with "{x}" for the path coordinate (alpha for lines, t for curves).
_TERMS = {
    MAX_MINUS_MEAN: "f({x}) minus the mean of f at the two endpoints",
    ENTEZARI: "f({x}) − ((1 − {x}) f(0) + {x} f(1)), the height of f above the straight line between its "
              "endpoint values (Entezari et al. 2022)",
}
DEFINITION = (
    "barrier (`{kind}`) = max over the {points} evenly spaced alphas in [0, 1] (endpoints included) of {term}; "
    "f is the mean cross-entropy loss or the error rate (fraction misclassified) on the named split"
)


def check(kind: str) -> str:
    """`kind` if it names a barrier definition, else ValueError listing the known ones."""
    if kind not in KINDS:
        raise ValueError(f"unknown barrier definition {kind!r}; known: {', '.join(KINDS)}")
    return kind


def _alpha(values: Tensor, alpha: Tensor | None) -> Tensor:
    """The path coordinates [N] of `values` [..., N]: evenly spaced in [0, 1] when not given."""
    n = values.shape[-1]
    if alpha is None:
        return torch.linspace(0.0, 1.0, n, dtype=values.dtype, device=values.device)
    alpha = alpha.to(device=values.device, dtype=values.dtype)
    if alpha.shape != (n,):
        raise ValueError(f"alpha has shape {tuple(alpha.shape)}, the path has {n} points")
    return alpha


def excess(values: Tensor, kind: str = MAX_MINUS_MEAN, alpha: Tensor | None = None) -> Tensor:
    """values [..., N] → [..., N]: f(α_i) minus the reference the barrier subtracts (its max is the barrier).

    max_minus_mean: the endpoints' mean; entezari: (1 − α_i) f(0) + α_i f(1) (α evenly spaced if None)."""
    if values.shape[-1] < 2:
        raise ValueError("a barrier needs at least the two endpoints")
    first, last = values[..., :1], values[..., -1:]
    if check(kind) == MAX_MINUS_MEAN:
        return values - 0.5 * (first + last)
    a = _alpha(values, alpha)
    return values - ((1 - a) * first + a * last)


def barrier(values: Tensor, kind: str = MAX_MINUS_MEAN, alpha: Tensor | None = None) -> Tensor:
    """values [..., N] along the path → barrier [...] under definition `kind` (see the module doc).

    `alpha` [N]: the path coordinate of each point (used by entezari only; evenly spaced if None)."""
    if check(kind) == MAX_MINUS_MEAN:
        if values.shape[-1] < 2:
            raise ValueError("a barrier needs at least the two endpoints")
        # computed as max − mean rather than max(excess): the same number, bit for bit, as before
        return values.max(dim=-1).values - 0.5 * (values[..., 0] + values[..., -1])
    return excess(values, kind, alpha).max(dim=-1).values


def argmax_alpha(values: Tensor, alpha: Tensor, kind: str = MAX_MINUS_MEAN) -> Tensor:
    """Where along the path the barrier is attained: argmax of f (max_minus_mean) or of the excess
    over the endpoints' straight line (entezari); the first such point on ties."""
    alpha = alpha.to(values.device)
    if check(kind) == MAX_MINUS_MEAN:
        return alpha[values.argmax(dim=-1)]
    return alpha[excess(values, kind, alpha).argmax(dim=-1)]


def path_stats(values: Tensor, alpha: Tensor, kind: str = MAX_MINUS_MEAN) -> dict[str, float]:
    """One path, values [N] at coordinates alpha [N] (ascending) → barrier, endpoint_mean (½ (f(0) + f(1))),
    peak (f where the barrier is attained; the maximum of f for max_minus_mean) and peak_alpha (where)."""
    if values.dim() != 1:
        raise ValueError(f"one path at a time: values has shape {tuple(values.shape)}")
    at = int(excess(values, kind, alpha).argmax()) if kind == ENTEZARI else int(values.argmax())
    return {
        "barrier": barrier(values, kind, alpha).item(),
        "endpoint_mean": 0.5 * (values[0] + values[-1]).item(),
        "peak": values[at].item(),
        "peak_alpha": alpha[at].item(),
    }


def formula(kind: str = MAX_MINUS_MEAN, coordinate: str = "alpha") -> str:
    """The definition in words for any set of evaluated points, coordinate named `coordinate` (alpha, t)."""
    return f"max over the evaluated points of {_TERMS[check(kind)].format(x=coordinate)}"


def definition(points: int | str, kind: str = MAX_MINUS_MEAN) -> str:
    """The sentence stating the barrier definition of a table of linear paths (points: N, or "N")."""
    return DEFINITION.format(kind=kind, points=points, term=_TERMS[check(kind)].format(x="alpha"))


def column(kind: str = MAX_MINUS_MEAN, unit: str = "") -> str:
    """A table header naming the definition, e.g. "barrier (max_minus_mean)" or, with unit "%",
    "barrier (max_minus_mean, %)"."""
    return f"barrier ({check(kind)}{', ' + unit if unit else ''})"


def mean_std(values: Tensor) -> tuple[float, float]:
    """Mean and (sample) standard deviation over replicates; std is 0 for a single value."""
    values = values.double().reshape(-1)
    std = values.std(unbiased=True).item() if values.numel() > 1 else 0.0
    return values.mean().item(), std

