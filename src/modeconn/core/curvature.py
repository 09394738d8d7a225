"""Curvature of the loss at one network: Hessian-vector products, Hutchinson trace, top eigenvalue.

The Hessian H = ∇²L(θ) of the mean cross-entropy L over a fixed evaluation set is never formed.
Everything goes through the product v ↦ Hv, computed forward-over-reverse with torch.func:
Hv = jvp(∇L, θ; v), through `functional_call` on the plain module (PyHessian, Yao et al. 2020, use
the same two estimators with reverse-over-reverse products).

    Hutchinson (1990):  tr H = E_z[zᵀHz] for Rademacher z (entries ±1), estimated by the mean of
                        P probes; its standard error is the sample std of zᵀHz over probes / √P.
    power iteration:    v ← Hv / ‖Hv‖ from a random start; λ = vᵀHv (Rayleigh quotient) converges
                        to the eigenvalue of largest magnitude (the top one at a minimum).

Parameters are dicts {name: T}; probes are stacked dicts {name: T[P, ...]}, multiplied by H in
chunks under `vmap`. Pure functions: no files, no global RNG (pass a torch.Generator).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, jvp, vmap

from .params import TensorDict

Hvp = Callable[[TensorDict], TensorDict]


# ----------------------------------------------------------------------------- the loss


@contextlib.contextmanager
def batch_statistics(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """The model in train or eval mode for a pure (side-effect free) loss.

    In train mode BatchNorm normalises with the batch's own statistics; its running statistics
    are then switched off (track_running_stats = False) so the loss does not update buffers in
    place, which function transforms would reject and which would change the network.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    before = [m.training for m in model.modules()], [m.track_running_stats for m in norms]
    model.train(training)
    if training:
        for m in norms:
            m.track_running_stats = False
    try:
        yield model
    finally:
        for m, was in zip(model.modules(), before[0]):
            m.training = was
        for m, was in zip(norms, before[1]):
            m.track_running_stats = was


def batch_loss(model: nn.Module, buffers: TensorDict, x: Tensor, y: Tensor) -> Callable[[TensorDict], Tensor]:
    """θ ↦ mean cross-entropy of the module with parameters θ on one batch (x [B, ...], y [B])."""

    def loss(params: TensorDict) -> Tensor:
        return F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)

    return loss


def loss_and_grad(losses: list[Callable[[TensorDict], Tensor]], params: TensorDict) -> tuple[Tensor, TensorDict]:
    """L(θ) = mean over equal-sized batches of the batch losses, and ∇L(θ)."""
    total, g = None, None
    for f in losses:
        gb, lb = grad_and_value(f)(params)
        total = lb if total is None else total + lb
        g = gb if g is None else {k: g[k] + gb[k] for k in g}
    n = len(losses)
    return total / n, {k: v / n for k, v in g.items()}


def hvp_operator(losses: list[Callable[[TensorDict], Tensor]], params: TensorDict) -> Hvp:
    """v ↦ Hv with H the Hessian of L = mean of `losses` (one per batch) at `params`.

    Forward-over-reverse: Hv = d/dε ∇L(θ + εv) at ε = 0 = jvp(∇L, (θ,), (v,)). The batches are
    taken one at a time, so memory is that of one batch; the result is exact for the whole set.
    """
    grads = [grad(f) for f in losses]

    def hvp(v: TensorDict) -> TensorDict:
        out = None
        for g in grads:
            hb = jvp(g, (params,), (v,))[1]
            out = hb if out is None else {k: out[k] + hb[k] for k in out}
        return {k: t / len(grads) for k, t in out.items()}

    return hvp


# ----------------------------------------------------------------------------- vector algebra


def dot(a: TensorDict, b: TensorDict) -> Tensor:
    """⟨a, b⟩: the sum over all tensors of the elementwise product (a scalar)."""
    return sum((a[k] * b[k]).sum() for k in a)


def rowwise_dot(a: TensorDict, b: TensorDict) -> Tensor:
    """⟨a_i, b_i⟩ for stacked vectors a, b [P, ...] → [P]."""
    return sum((a[k] * b[k]).flatten(1).sum(1) for k in a)


def norm(a: TensorDict) -> Tensor:
    return torch.sqrt(sum(t.pow(2).sum() for t in a.values()))


def parameter_count(params: TensorDict) -> int:
    return sum(t.numel() for t in params.values())


def rademacher(params: TensorDict, count: int, generator: torch.Generator) -> TensorDict:
    """`count` probes with independent ±1 entries, stacked [count, ...] like `params`."""
    out = {}
    for name, t in params.items():
        bits = torch.randint(0, 2, (count, *t.shape), generator=generator)
        out[name] = (2.0 * bits - 1.0).to(dtype=t.dtype, device=t.device)
    return out


def batched_hvp(hvp: Hvp, vectors: TensorDict, chunk: int = 0) -> TensorDict:
    """H applied to every stacked vector [P, ...], `chunk` vectors at a time under vmap (0: all)."""
    p = next(iter(vectors.values())).shape[0]
    step = p if chunk <= 0 else chunk
    parts = [vmap(hvp)({k: v[i : i + step] for k, v in vectors.items()}) for i in range(0, p, step)]
    return {k: torch.cat([part[k] for part in parts]) for k in vectors}


# ----------------------------------------------------------------------------- estimators


def hutchinson(hvp: Hvp, params: TensorDict, probes: int, generator: torch.Generator, chunk: int = 0) -> dict:
    """Hutchinson estimate of tr H with `probes` Rademacher vectors.

    Returns {"trace": mean of zᵢᵀHzᵢ, "stderr": std(zᵢᵀHzᵢ)/√P (sample std; nan for P = 1),
    "samples": the P values zᵢᵀHzᵢ as a [P] tensor, "probes": P}.
    """
    if probes < 1:
        raise ValueError(f"Hutchinson needs at least one probe, got {probes}")
    z = rademacher(params, probes, generator)
    samples = rowwise_dot(z, batched_hvp(hvp, z, chunk)).detach()
    stderr = samples.double().std(unbiased=True).item() / math.sqrt(probes) if probes > 1 else float("nan")
    return {"trace": samples.double().mean().item(), "stderr": stderr, "samples": samples, "probes": probes}


def power_iteration(hvp: Hvp, params: TensorDict, iterations: int, generator: torch.Generator, tolerance: float = 0.0) -> dict:
    """Eigenvalue of H of largest magnitude by power iteration from a Gaussian start.

    Stops after `iterations` products or once the Rayleigh quotient changes by less than
    `tolerance`·|λ| between iterations. Returns {"eigenvalue": λ = vᵀHv, "iterations": products
    used, "residual": ‖Hv − λv‖ / |λ| at the returned v (0 for an exact eigenvector),
    "vector": v (unit norm)}.
    """
    if iterations < 1:
        raise ValueError(f"power iteration needs at least one iteration, got {iterations}")
    v = {k: torch.randn(t.shape, generator=generator).to(dtype=t.dtype, device=t.device) for k, t in params.items()}
    v = _scaled(v, 1.0 / norm(v))
    eigenvalue, used = None, 0
    for used in range(1, iterations + 1):
        hv = hvp(v)
        new = dot(v, hv).item()
        size = norm(hv)
        if size == 0:
            return {"eigenvalue": 0.0, "iterations": used, "residual": 0.0, "vector": v}
        converged = eigenvalue is not None and abs(new - eigenvalue) <= tolerance * abs(new)
        eigenvalue = new
        if converged or used == iterations:
            break
        v = _scaled(hv, 1.0 / size)
    residual = norm({k: hv[k] - eigenvalue * v[k] for k in v}).item() / max(abs(eigenvalue), 1e-30)
    return {"eigenvalue": eigenvalue, "iterations": used, "residual": residual, "vector": v}


def _scaled(a: TensorDict, s: Tensor | float) -> TensorDict:
    return {k: t * s for k, t in a.items()}


# ----------------------------------------------------------------------------- reparametrisation


def rescaled_layers(params: TensorDict, first: str, second: str, c: float) -> TensorDict:
    """θ' with layer `first` (weight and bias) multiplied by c > 0 and layer `second`'s weight by 1/c.

    With a ReLU between the two layers (and no normalisation), relu(c·z) = c·relu(z), so θ' computes
    the same function as θ, yet its Hessian differs: the curvature along `first` scales by 1/c² and
    along `second` by c² (Dinh et al. 2017, "Sharp minima can generalize for deep nets", Sec. 4).
    """
    if c <= 0:
        raise ValueError(f"the rescaling factor must be positive, got {c}")
    out = dict(params)
    for name in (f"{first}.weight", f"{first}.bias"):
        if name in out:
            out[name] = out[name] * c
    out[f"{second}.weight"] = out[f"{second}.weight"] / c
    return out


# ----------------------------------------------------------------------------- populations
#
# The same estimators for K networks of one architecture at once (e.g. the points of a path), as
# one vmapped computation over the members: params and buffers stacked [K, ...]. Every member
# sees the same probes and the same power-iteration start as the single-network functions, and
# gives the same numbers (tests/test_curvature.py checks this against the loop).

MemberHvp = Callable[[TensorDict, TensorDict, TensorDict], TensorDict]


def member_hvp(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> MemberHvp:
    """(θ, buffers, v) ↦ Hv for one network, H the Hessian of the mean loss over `batches`."""

    def hvp(params: TensorDict, buffers: TensorDict, v: TensorDict) -> TensorDict:
        out = None
        for x, y in batches:
            hb = jvp(grad(batch_loss(model, buffers, x, y)), (params,), (v,))[1]
            out = hb if out is None else {k: out[k] + hb[k] for k in out}
        return {k: t / len(batches) for k, t in out.items()}

    return hvp


def population_loss_and_grad(model: nn.Module, batches, params: TensorDict, buffers: TensorDict) -> tuple[Tensor, Tensor]:
    """Mean loss over `batches` [K] and gradient norm ‖∇L‖ [K] of every member."""

    def one(p, b):
        value, g = loss_and_grad([batch_loss(model, b, x, y) for x, y in batches], p)
        return value, torch.sqrt(sum(t.pow(2).sum() for t in g.values()))

    return vmap(one)(params, buffers)


def population_hutchinson(hvp: MemberHvp, params: TensorDict, buffers: TensorDict, probes: TensorDict, chunk: int = 0) -> Tensor:
    """zᵢᵀH_k zᵢ for every member k and shared probe i → [K, P] (probes `chunk` at a time)."""
    p = next(iter(probes.values())).shape[0]
    step = p if chunk <= 0 else chunk
    over_probes = vmap(hvp, in_dims=(None, None, 0))
    parts = []
    for i in range(0, p, step):
        z = {k: v[i : i + step] for k, v in probes.items()}
        hz = vmap(over_probes, in_dims=(0, 0, None))(params, buffers, z)  # [K, p_chunk, ...]
        parts.append(sum((hz[k] * z[k].unsqueeze(0)).flatten(2).sum(2) for k in z))
    return torch.cat(parts, dim=1).detach()


def hutchinson_summary(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Trace estimates [K] and their standard errors [K] from samples [K, P]."""
    s = samples.double()
    p = s.shape[1]
    stderr = s.std(dim=1, unbiased=True) / math.sqrt(p) if p > 1 else torch.full((s.shape[0],), float("nan"), dtype=torch.float64)
    return s.mean(dim=1), stderr


def population_power_iteration(hvp: MemberHvp, params: TensorDict, buffers: TensorDict, iterations: int,
                               generator: torch.Generator, tolerance: float = 0.0) -> dict:
    """`power_iteration` for every member at once, from the same start vector.

    A member stops (its v, λ and iteration count freeze) under the same rule as the single-network
    version; the others go on until all have stopped or `iterations` is reached. Returns
    {"eigenvalue": [K], "iterations": [K], "residual": [K]}.
    """
    if iterations < 1:
        raise ValueError(f"power iteration needs at least one iteration, got {iterations}")
    ref = next(iter(params.values()))
    k = ref.shape[0]
    start = {n: torch.randn(t.shape[1:], generator=generator).to(dtype=t.dtype, device=t.device) for n, t in params.items()}
    start = _scaled(start, 1.0 / norm(start))
    v = {n: t.unsqueeze(0).expand(k, *t.shape).clone() for n, t in start.items()}
    eig = torch.full((k,), float("nan"), dtype=ref.dtype, device=ref.device)
    used = torch.zeros(k, dtype=torch.long, device=ref.device)
    residual = torch.zeros(k, dtype=ref.dtype, device=ref.device)
    done = torch.zeros(k, dtype=torch.bool, device=ref.device)
    batched = vmap(hvp)
    for it in range(1, iterations + 1):
        hv = {n: t.detach() for n, t in batched(params, buffers, v).items()}
        new = rowwise_dot(v, hv)
        size = torch.sqrt(sum(t.pow(2).flatten(1).sum(1) for t in hv.values()))
        active = ~done
        converged = active & ~torch.isnan(eig) & ((new - eig).abs() <= tolerance * new.abs())
        eig = torch.where(active, new, eig)
        used = torch.where(active, torch.full_like(used, it), used)
        res = torch.sqrt(sum((hv[n] - new.view(-1, *[1] * (hv[n].ndim - 1)) * v[n]).pow(2).flatten(1).sum(1) for n in hv))
        residual = torch.where(active, res / new.abs().clamp_min(1e-30), residual)
        stop = active & (converged | (it == iterations) | (size == 0))
        done = done | stop
        if bool(done.all()):
            break
        move = (~done).view(-1)
        for n in v:
            shape = (-1, *[1] * (v[n].ndim - 1))
            v[n] = torch.where(move.view(shape), hv[n] / size.clamp_min(1e-30).view(shape), v[n])
    eig = torch.where(torch.isnan(eig), torch.zeros_like(eig), eig)
    return {"eigenvalue": eig, "iterations": used, "residual": residual}
