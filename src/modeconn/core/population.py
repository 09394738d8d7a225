"""Batched evaluation of a population through the plain, unmodified `nn.Module`.

`forward` runs K members of one architecture as one computation:
`vmap(functional_call(model, (params_k, buffers_k), x))` over the leading member dimension. The
module's own tensors are never used, so one skeleton module serves every member, every point of a
path and every method. BatchNorm is handled explicitly (`recompute_bn`): after any weight-space
operation the running statistics are stale and are re-estimated per member on training batches.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .params import TensorDict, select, size


def forward(model: nn.Module, params: TensorDict, buffers: TensorDict, x: Tensor, shared_input: bool = True) -> Tensor:
    """Logits [K, B, C] of K stacked members.

    x is [B, ...] and fed to every member when `shared_input`, else [K, B, ...] (one batch per
    member, as in population training with separate data orders). The module's train/eval mode
    decides how normalisation layers behave, exactly as for a single network.
    """

    def one(p, b, xb):
        return functional_call(model, (p, b), (xb,))

    return vmap(one, in_dims=(0, 0, None if shared_input else 0))(params, buffers, x)


@contextlib.contextmanager
def mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Temporarily put `model` in train or eval mode, restoring its previous mode afterwards."""
    before = [m.training for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, was in zip(model.modules(), before):
            m.training = was


@torch.no_grad()
def module_outputs(model: nn.Module, params: TensorDict, buffers: TensorDict, x: Tensor, names: Iterable[str]) -> dict[str, Tensor]:
    """Outputs of the named submodules of one network on x (eval mode), captured with forward hooks."""
    seen: dict[str, Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out)) for n in set(names)]
    try:
        with mode(model, training=False):
            functional_call(model, (params, buffers), (x,))
    finally:
        for h in hooks:
            h.remove()
    return seen


# On a CPU, one batched (vmap) step over k members runs each layer as a bmm on activations
# [k, B, width] plus separate elementwise passes (bias, ReLU) over them; once those activations
# leave the cache the elementwise passes are limited by memory traffic and the batched call is
# slower than a loop (25 points of a 2×256 MLP on 2000-example batches: 1.7× the time of one point
# at a time). Measured on this project's 2-core machine (one thread, 24 members, 10,000 examples;
# benchmarks/README.md), the fastest chunk kept members × batch × widest layer × 4 bytes near 0.5-2
# MiB: 1 member at 2 MiB each (2×256 MLP, batch 2000; also a 3×512 MLP), 4 at 0.5 MiB, 4-8 at
# 0.25 MiB. So on a CPU members go together while that stays within this budget; on a GPU every
# member goes at once, which is where batching pays.
CPU_ACTIVATION_BYTES = 2**20


def widest_activation(model: nn.Module, params: TensorDict, buffers: TensorDict, x: Tensor) -> int:
    """Elements of the largest output of any layer for one example (one member, eval mode)."""
    leaves = [name for name, m in model.named_modules() if name and not list(m.children())]
    one = {k: v[0] for k, v in params.items()}, {k: v[0] for k, v in buffers.items()}
    outs = module_outputs(model, *one, x[:1], leaves)
    return max([t.numel() for t in outs.values() if isinstance(t, Tensor)] + [x[:1].numel()])


def members_at_once(model: nn.Module, params: TensorDict, buffers: TensorDict, x: Tensor, batch_size: int, chunk: int = 0) -> int:
    """How many members to run at once: `chunk` when set (> 0, `evaluation.member_chunk`), else
    every member on a GPU, and on a CPU as many as keep the widest activation of a batch
    (members × batch × widest layer × bytes) within CPU_ACTIVATION_BYTES, at least one."""
    k = size(params)
    if chunk > 0:
        return chunk
    if x.device.type != "cpu":
        return k
    per_member = widest_activation(model, params, buffers, x) * min(batch_size, x.shape[0]) * x.element_size()
    return max(1, min(k, CPU_ACTIVATION_BYTES // per_member))


def chunks(k: int, chunk: int) -> list[slice]:
    """Slices of `chunk` members (the last one shorter) covering k members."""
    step = k if chunk <= 0 else chunk
    return [slice(i, min(i + step, k)) for i in range(0, k, step)]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    params: TensorDict,
    buffers: TensorDict,
    x: Tensor,
    y: Tensor,
    batch_size: int = 2000,
    member_chunk: int = 0,
) -> dict[str, Tensor]:
    """Mean cross-entropy loss and error rate of every member on (x, y), in eval mode.

    Returns {"loss": [K], "error": [K]} (float64). Members are processed `member_chunk` at a time
    (0 = chosen from the device and the sizes: `members_at_once`) and examples `batch_size` at a time,
    which bounds memory and time without changing the result.
    """
    k, n = size(params), x.shape[0]
    member_chunk = members_at_once(model, params, buffers, x, batch_size, member_chunk)
    loss = torch.zeros(k, dtype=torch.float64, device=x.device)
    wrong = torch.zeros(k, dtype=torch.float64, device=x.device)
    with mode(model, training=False):
        for part in chunks(k, member_chunk):
            p, b = select(params, part), select(buffers, part)
            for start in range(0, n, batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                logits = forward(model, p, b, xb)  # [k, B, C]
                ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(logits.shape[0]), reduction="none")
                loss[part] += ce.view(logits.shape[0], -1).sum(1).double()
                wrong[part] += (logits.argmax(-1) != yb).sum(1).double()
    return {"loss": loss / n, "error": wrong / n}


def batchnorm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers (with running statistics) by module name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorm_layers(model))


@torch.no_grad()
def recompute_bn(
    model: nn.Module,
    params: TensorDict,
    buffers: TensorDict,
    batches: Iterable[Tensor],
    member_chunk: int = 0,
) -> TensorDict:
    """Fresh BatchNorm running statistics for every member, estimated on `batches`.

    Equivalent, member by member, to resetting the statistics, setting `momentum=None` (a
    cumulative average over batches) and running the batches through the network in train mode:
    running_mean = mean over batches of the batch means, running_var = mean of the unbiased batch
    variances. The cumulative average is realised by setting momentum = 1/n before batch n, so the
    update stays a batched in-place operation under vmap. Returns new buffers; the inputs are not
    modified. Models without BatchNorm get their buffers back unchanged.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return buffers
    batches = list(batches)
    new = {k: v.clone() for k, v in buffers.items()}
    for name in layers:
        new[f"{name}.running_mean"].zero_()
        new[f"{name}.running_var"].fill_(1.0)
        if f"{name}.num_batches_tracked" in new:
            new[f"{name}.num_batches_tracked"].zero_()
    momenta = {name: m.momentum for name, m in layers.items()}
    try:
        with mode(model, training=True):
            at_once = members_at_once(model, params, buffers, batches[0], batches[0].shape[0], member_chunk) if batches else 1
            for part in chunks(size(params), at_once):
                p, b = select(params, part), select(new, part)  # views: updates land in `new`
                for n, xb in enumerate(batches, start=1):
                    for m in layers.values():
                        m.momentum = 1.0 / n
                    forward(model, p, b, xb)
    finally:
        for name, m in layers.items():
            m.momentum = momenta[name]
    return new
