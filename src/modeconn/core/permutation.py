"""Permutation symmetries of a network, described as data, and their application to tensors.

Hidden units of a layer can be reordered without changing the function, provided every tensor
that touches those units is reordered consistently (Hecht-Nielsen 1990; Entezari et al. 2022;
Ainsworth et al. 2023, Sec. 3). A `PermutationSpec` says which named permutation acts on which
axis of which parameter or buffer:

    axes["layers.1.weight"] = ("P1", "P0")   # W₁ ∈ R^{n₁×n₀}:  W₁ ↦ P₁ W₁ P₀ᵀ
    axes["norms.1.running_mean"] = ("P1",)
    axes["classifier.bias"] = (None,)         # listed, never permuted

A permutation is stored as a LongTensor `p` of indices: the permuted tensor is
`t.index_select(axis, p)`, i.e. new unit j is old unit p[j] (the row-selection form of P). The
spec also names where each permutation is *observed* (`activations`: modules whose output, after a
ReLU, carries that permutation on axis 1; used by activation matching) and which layers REPAIR may
rescale (`repair`: (module, weight, bias) whose output channels sit on axis 1 and whose weight's
axis 0 and bias are those channels; Jordan et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor

from .params import TensorDict

Permutation = dict[str, Tensor]


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation acts on which axis of which tensor (see the module docstring)."""

    axes: Mapping[str, tuple[str | None, ...]]
    activations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    repair: tuple[tuple[str, str, str | None], ...] = ()

    @property
    def perms(self) -> tuple[str, ...]:
        """Permutation names in order of first appearance (≈ forward order)."""
        seen: dict[str, None] = {}
        for names in self.axes.values():
            for p in names:
                if p is not None:
                    seen.setdefault(p, None)
        return tuple(seen)

    def users(self, perm: str) -> list[tuple[str, int]]:
        """Every (tensor name, axis) the permutation `perm` acts on."""
        return [(name, ax) for name, names in self.axes.items() for ax, p in enumerate(names) if p == perm]


def sizes(spec: PermutationSpec, tensors: TensorDict) -> dict[str, int]:
    """Size of each permutation, read from the tensors; raises ValueError on inconsistency."""
    out: dict[str, int] = {}
    for name, names in spec.axes.items():
        if name not in tensors:
            continue
        t = tensors[name]
        if t.ndim != len(names):
            raise ValueError(f"permutation spec: {name} has {t.ndim} axes, spec lists {len(names)}")
        for ax, p in enumerate(names):
            if p is not None and out.setdefault(p, t.shape[ax]) != t.shape[ax]:
                raise ValueError(f"permutation spec: {p} has size {out[p]} elsewhere but {t.shape[ax]} on {name} axis {ax}")
    return out


def check(spec: PermutationSpec, params: TensorDict, buffers: TensorDict) -> None:
    """Raise ValueError unless the spec lists exactly the model's floating tensors, consistently."""
    state = {**params, **buffers}
    floating = {k for k, v in state.items() if v.is_floating_point()}
    missing, extra = floating - set(spec.axes), set(spec.axes) - set(state)
    if missing or extra:
        raise ValueError(f"permutation spec: tensors not listed {sorted(missing)}, listed but absent {sorted(extra)}")
    sizes(spec, state)


def identity(perm_sizes: Mapping[str, int], device: torch.device | str = "cpu") -> Permutation:
    return {p: torch.arange(n, device=device) for p, n in perm_sizes.items()}


def random(perm_sizes: Mapping[str, int], generator: torch.Generator) -> Permutation:
    """Independent uniform permutations (drawn on the CPU from `generator`)."""
    return {p: torch.randperm(n, generator=generator) for p, n in perm_sizes.items()}


def inverse(perms: Permutation) -> Permutation:
    return {p: torch.argsort(v) for p, v in perms.items()}


def is_identity(perms: Permutation) -> bool:
    return all(torch.equal(v, torch.arange(v.numel(), device=v.device)) for v in perms.values())


def permute_tensor(t: Tensor, names: tuple[str | None, ...], perms: Permutation, skip_axis: int | None = None, offset: int = 0) -> Tensor:
    """t with perms[names[ax]] applied on each axis ax (except `skip_axis`); `offset` skips leading
    (member) dimensions of a stacked population."""
    for ax, p in enumerate(names):
        if p is not None and ax != skip_axis and p in perms:
            t = t.index_select(ax + offset, perms[p].to(t.device))
    return t


def apply(spec: PermutationSpec, perms: Permutation, tensors: TensorDict, stacked: bool = False) -> TensorDict:
    """Permuted copy of `tensors` (params or buffers; stacked=True: population [K, ...]).

    Tensors the spec does not list (e.g. BatchNorm's integer `num_batches_tracked`) are unchanged.
    """
    offset = 1 if stacked else 0
    return {k: permute_tensor(v, spec.axes[k], perms, offset=offset) if k in spec.axes else v for k, v in tensors.items()}
