"""Parameter dicts and their stacked (population) form.

A *state* is a pair of dicts `(params, buffers)` mapping names to tensors, as `nn.Module`
stores them. A *population* of K members of one architecture is the same pair with every
tensor stacked along a new leading dimension of size K. Every method of the workflow — seeds,
points along a line or curve, NEB images, simplex samples, snapshots — is a population.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TensorDict = dict[str, Tensor]


def module_state(model: nn.Module) -> tuple[TensorDict, TensorDict]:
    """Detached copies of a module's parameters and buffers."""
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    return params, buffers


def stack(members: list[TensorDict]) -> TensorDict:
    """[{name: T[...]}] * K → {name: T[K, ...]}; every member must have the same names and shapes."""
    if not members:
        raise ValueError("cannot stack an empty population")
    names = list(members[0])
    for i, m in enumerate(members[1:], start=1):
        if list(m) != names:
            raise ValueError(f"member {i} has different tensor names from member 0")
    return {k: torch.stack([m[k] for m in members]) for k in names}


def unstack(stacked: TensorDict) -> list[TensorDict]:
    """Inverse of `stack`."""
    return [member(stacked, i) for i in range(size(stacked))]


def member(stacked: TensorDict, i: int) -> TensorDict:
    return {k: v[i] for k, v in stacked.items()}


def size(stacked: TensorDict) -> int:
    """Number of members K of a stacked dict."""
    sizes = {v.shape[0] for v in stacked.values()}
    if len(sizes) != 1:
        raise ValueError(f"inconsistent population sizes {sorted(sizes)}")
    return sizes.pop()


def select(stacked: TensorDict, index: Tensor | slice | list[int]) -> TensorDict:
    return {k: v[index] for k, v in stacked.items()}


def combine(coefficients: Tensor, anchors: TensorDict) -> TensorDict:
    """Members as affine combinations of anchor points.

    θ_k = Σ_m c[k, m] · θ_m, with `coefficients` c of shape [K, M] and `anchors` stacked [M, ...];
    returns a population stacked [K, ...]. Lines (M = 2, c = [1−α, α]), Bézier curves and
    PolyChains (c from their bases) and simplexes (barycentric c) are all this one operation.
    Integer tensors (e.g. BatchNorm's `num_batches_tracked`) are not combined: each member gets
    anchor 0's value.
    """
    if coefficients.ndim != 2:
        raise ValueError(f"coefficients must be [K, M], got shape {tuple(coefficients.shape)}")
    out = {}
    for name, anchor in anchors.items():
        if anchor.shape[0] != coefficients.shape[1]:
            raise ValueError(f"{name}: {anchor.shape[0]} anchors but {coefficients.shape[1]} coefficients")
        if anchor.is_floating_point():
            c = coefficients.to(dtype=anchor.dtype, device=anchor.device)
            out[name] = torch.tensordot(c, anchor, dims=([1], [0]))
        else:
            out[name] = anchor[:1].expand(coefficients.shape[0], *anchor.shape[1:]).clone()
    return out


def flat_norm(state: TensorDict) -> Tensor:
    """Euclidean norm of all floating tensors together; per member if stacked ([K] result)."""
    parts = [v.flatten(1).pow(2).sum(1) for v in state.values() if v.is_floating_point()]
    return torch.stack(parts).sum(0).sqrt()


class DivergenceError(ValueError):
    """A fit produced a non-finite loss or parameter: the job stops and writes no result."""


def require_finite(what: str, step: int, key: str, *values: Tensor) -> None:
    """Raise DivergenceError unless every entry of `values` (losses, parameters) is finite.

    `what` names the fit (e.g. "AutoNEB"), `step` where it diverged, `key` the config key to
    change (e.g. "neb.cycles[].lr"). Called at a cheap cadence (once per epoch or per step of a
    small fit): the check is one pass over the tensors.
    """
    if all(bool(torch.isfinite(v).all()) for v in values):
        return
    raise DivergenceError(f"{what} diverged at step {step}: non-finite loss or parameters; lower {key} and rerun")
