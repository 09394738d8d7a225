"""Curves between two minima, trained through the ordinary model (Garipov et al. 2018).

A curve with M anchors θ_0 = θ_A, θ_1 … θ_{M−2} (the free bends), θ_{M−1} = θ_B is
θ(t) = Σ_j c_j(t) θ_j with c from `core.paths` (Bezier: Bernstein basis; PolyChain: hat
functions). C curves (e.g. the Bezier and the PolyChain of one pair) are trained together: the
anchors are stacked [C, M, ...], the endpoints are constants and only the bends [C, M−2, ...] are
optimised. Each step draws one t ~ U(0, 1) per curve and minibatch, forms θ_c(t_c) = Σ_j c_j(t_c)
θ_{c,j} ([C, ...]) and runs the plain network on it through `core.population.forward`; the
objective is

    Σ_c [ CE(θ_c(t_c); batch) + (wd / 2) |θ_c(t_c)|² ]

so that the L2 penalty acts on the sampled point, not on the bends (Garipov et al. 2018, Sec. 3.2),
with their schedule (`schedules.curve_factor`). BatchNorm runs on batch statistics during
training; the anchors' running statistics are meaningless and are recomputed per t at evaluation.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..schedules import curve_factor, iterations, steps_per_epoch
from .optimizers import FitState, load_optimizer_tensors, optimizer_tensors
from .params import TensorDict, combine, flat_norm, require_finite, stack
from .paths import path_coefficients
from .population import forward


def line_anchors(a: TensorDict, b: TensorDict, anchors: int) -> TensorDict:
    """[M, ...]: θ_j = (1 − j/(M−1)) θ_A + j/(M−1) θ_B, the bends evenly spaced on the segment.

    Bezier and PolyChain curves through these anchors are the straight line θ(t) = (1−t)θ_A + tθ_B
    (Bernstein polynomials reproduce linear functions), which is where training starts.
    """
    s = torch.linspace(0.0, 1.0, anchors, dtype=torch.float64)
    return combine(torch.stack([1.0 - s, s], dim=1), stack([a, b]))


def assemble(endpoints: TensorDict, bends: TensorDict) -> TensorDict:
    """Endpoints [C, 2, ...] and bends [C, M−2, ...] → anchors [C, M, ...] in curve order."""
    return {k: torch.cat([endpoints[k][:, :1], bends[k], endpoints[k][:, 1:]], dim=1) for k in bends}


def split_anchors(anchors: TensorDict) -> tuple[TensorDict, TensorDict]:
    """Anchors [C, M, ...] → (endpoints [C, 2, ...], bends [C, M−2, ...]); inverse of `assemble`."""
    ends = {k: torch.stack([v[:, 0], v[:, -1]], dim=1) for k, v in anchors.items()}
    return ends, {k: v[:, 1:-1] for k, v in anchors.items()}


def curve_coefficients(kinds: list[str], t: Tensor, anchors: int) -> Tensor:
    """One t per curve: t [C] → coefficients [C, M], row c from curve c's parametrisation."""
    return torch.cat([path_coefficients(kind, t[c : c + 1], anchors) for c, kind in enumerate(kinds)])


def points_on(coefficients: Tensor, anchors: TensorDict) -> TensorDict:
    """θ_c = Σ_j c[c, j] θ_{c, j}: coefficients [C, M], anchors [C, M, ...] → [C, ...] (differentiable)."""
    out = {}
    for k, v in anchors.items():
        if v.is_floating_point():
            w = coefficients.to(v.dtype).reshape(*coefficients.shape, *([1] * (v.ndim - 2)))
            out[k] = (w * v).sum(1)
        else:
            out[k] = v[:, 0].clone()
    return out


def garipov_schedule(total: int) -> Callable[[int], float]:
    """Factor on the curve lr at iteration i of `total` (flat 50%, linear to 1% at 90%, flat after)."""
    return lambda i: curve_factor(i / max(total, 1))


@dataclasses.dataclass(frozen=True)
class CurveTraining:
    """The settings of one curve-training run (a slice of the `curves` section).

    `optimizer(tensors)` builds the optimizer of the bends (the stage passes core.optimizers.make_optimizer
    with the curves section's optimizer settings and no weight decay: the L2 term is in the loss).
    """

    optimizer: Callable[[list[Tensor]], torch.optim.Optimizer]
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    duration: str = "20ep"


def train_curves(
    model: nn.Module,
    endpoints: TensorDict,
    bends: TensorDict,
    buffers: TensorDict,
    kinds: list[str],
    x: Tensor,
    y: Tensor,
    settings: CurveTraining,
    generator: Callable[..., torch.Generator],
    on_epoch: Callable[[int, Tensor, float], None] | None = None,
    start: FitState | None = None,
    on_state: Callable[[FitState], None] | None = None,
) -> TensorDict:
    """Optimise the bends [C, M−2, ...] of C curves with fixed endpoints [C, 2, ...]; return them.

    `buffers` [C, ...] are used (and updated in place by BatchNorm in train mode) at every sampled
    point. `generator(*keys)` gives seeded generators: ("order", epoch) for the data order and
    ("t",) for the stream of t. `on_epoch(epoch, mean_loss [C], lr)` after every epoch.

    Resuming: after every epoch `on_state` gets the loop's FitState (bends, buffers, optimizer
    state, the position of the t stream); given back as `start`, the loop continues from that
    epoch exactly as if it had not stopped (the data order is a function of the epoch alone).
    """
    n = x.shape[0]
    spe = steps_per_epoch(n, settings.batch_size, "curves.batch_size")
    total = iterations(settings.duration, spe)
    schedule = garipov_schedule(total)
    anchors_count = next(iter(endpoints.values())).shape[1] + next(iter(bends.values())).shape[1]
    first = 0
    if start is not None:
        if start.step % spe:
            raise ValueError(f"curve training resumes at an epoch boundary, not at step {start.step} ({spe} steps per epoch)")
        first = start.step
        bends = {k: start.tensors[f"bends/{k}"] for k in bends}
        with torch.no_grad():
            for k, b in buffers.items():
                b.copy_(start.tensors[f"buffers/{k}"])
    leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in bends.items()}
    trainable = [v for v in leaves.values() if v.requires_grad]
    optimizer = settings.optimizer(trainable)
    t_stream = generator("t")
    if start is not None:
        load_optimizer_tensors(optimizer, start.optimizer)
        t_stream.set_state(start.generators["t"])
    sums = torch.zeros(len(kinds), dtype=torch.float64, device=x.device)
    model.train()
    for step in range(first, total):
        epoch, j = divmod(step, spe)
        if j == 0:
            order = torch.randperm(n, generator=generator("order", epoch)).to(x.device)
        idx = order[j * settings.batch_size : (j + 1) * settings.batch_size]
        t = torch.rand(len(kinds), generator=t_stream, dtype=torch.float64)
        theta = points_on(curve_coefficients(kinds, t, anchors_count).to(x.device), assemble(endpoints, leaves))
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * schedule(step)
        logits = forward(model, theta, buffers, x[idx])  # [C, B, classes]
        ce = F.cross_entropy(logits.flatten(0, 1), y[idx].repeat(len(kinds)), reduction="none").view(len(kinds), -1).mean(1)
        loss = ce.sum()
        if settings.weight_decay > 0:
            loss = loss + 0.5 * settings.weight_decay * flat_norm(theta).pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += ce.detach().double()
        if j == spe - 1:
            require_finite("curve training", step + 1, "curves.lr", sums, *trainable)
            if on_epoch is not None:
                on_epoch(epoch + 1, sums / spe, optimizer.param_groups[0]["lr"])
            sums.zero_()
            if on_state is not None and step + 1 < total:
                tensors = {f"bends/{k}": v.detach() for k, v in leaves.items()} | {f"buffers/{k}": v for k, v in buffers.items()}
                on_state(FitState(step + 1, tensors, optimizer_tensors(optimizer), {"t": t_stream.get_state()}))
    model.eval()
    return {k: v.detach() for k, v in leaves.items()}


# ----------------------------------------------------------------------------- along the path


def segment_lengths(points: TensorDict) -> Tensor:
    """|θ_{i+1} − θ_i| for N stacked points [N, ...] → [N−1] (floating tensors only)."""
    diffs = {k: v[1:] - v[:-1] for k, v in points.items() if v.is_floating_point()}
    return flat_norm(diffs)


def length_weighted_mean(values: Tensor, lengths: Tensor) -> Tensor:
    """∫ f(θ(t)) |θ'(t)| dt / ∫ |θ'(t)| dt by the trapezoid rule on segments: values [..., N], lengths [N−1].

    Garipov et al. 2018's "Int" column (the mean of f over the curve by arc length). A path of
    zero length (identical endpoints) gets the plain mean.
    """
    lengths = lengths.to(values)
    mids = 0.5 * (values[..., 1:] + values[..., :-1])
    total = lengths.sum()
    if total <= 0:
        return values.mean(-1)
    return (mids * lengths).sum(-1) / total


def path_summary(values: Tensor, lengths: Tensor, kind: str = "max_minus_mean", t: Tensor | None = None) -> dict[str, float]:
    """f along one path, values [N] at t [N] (evenly spaced in [0, 1] if None), segment lengths [N − 1]
    → min, max, mean over the points, length-weighted integral (Garipov et al. 2018's "int") and the
    barrier under definition `kind` (core.barrier: max_minus_mean or entezari, the latter linear in t)."""
    from .barrier import barrier

    return {
        "min": values.min().item(),
        "max": values.max().item(),
        "mean": values.mean().item(),
        "int": length_weighted_mean(values, lengths).item(),
        "barrier": barrier(values, kind, t).item(),
    }
