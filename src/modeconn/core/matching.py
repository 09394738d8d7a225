"""Permutation matching of network B onto network A (Git Re-Basin, Ainsworth et al. 2023).

Every method returns a `Permutation` π for B's hidden units such that π(θ_B) (see
`core.permutation.apply`) is functionally B but aligned to A, so the linear path
θ(α) = (1 − α) θ_A + α π(θ_B) is the "matched" path.

weight matching (Ainsworth et al. Sec. 3.2, Alg. 1): maximise Σ_w ⟨θ_A[w], π(θ_B)[w]⟩ over all
    parameters w by coordinate descent: for one permutation P at a time, with the others fixed,
    the objective is linear in P, ⟨P, C⟩ with C[i, j] = Σ_{(w, axis) using P} ⟨A_w[i], π₋P(B_w)[j]⟩
    (slices along that axis, every other axis already permuted), a linear assignment problem.
    Permutations are visited in a random order per sweep; stop after a sweep without progress.
activation matching (Sec. 3.1): for each P, maximise Σ_i corr(a_i, b_{π(i)}) where a, b are the
    post-ReLU features P acts on, over training examples (and spatial positions). B's features at
    one layer do not depend on the other permutations, so every layer is solved from one pass.
straight-through estimator (Sec. 3.3, Alg. 2): learn proxy weights θ̃ such that the midpoint
    ½(θ_A + π(θ_B)) with π = weight_matching(θ̃, θ_B) has low loss; the gradient flows to θ̃ through
    θ̃ + stopgrad(π(θ_B) − θ̃). The permutation with the lowest midpoint loss is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.func import functional_call

from .optimizers import make_optimizer
from .params import TensorDict, require_finite
from .permutation import Permutation, PermutationSpec, apply, identity, permute_tensor, sizes
from .population import mode, module_outputs


def assignment(cost: Tensor) -> Tensor:
    """argmax_σ Σ_i cost[i, σ(i)] (scipy's Hungarian solver) as an index tensor σ [n]."""
    rows, cols = linear_sum_assignment(cost.detach().double().cpu().numpy(), maximize=True)
    out = torch.empty(len(rows), dtype=torch.long)
    out[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return out.to(cost.device)


def objective(spec: PermutationSpec, params_a: TensorDict, params_b: TensorDict, perms: Permutation) -> float:
    """Σ_w ⟨θ_A[w], π(θ_B)[w]⟩ over the parameters the spec lists (the weight-matching objective)."""
    pb = apply(spec, perms, {k: params_b[k] for k in spec.axes if k in params_b})
    return float(sum((params_a[k].double() * v.double()).sum() for k, v in pb.items()))


def _cost(spec: PermutationSpec, perm: str, params_a: TensorDict, params_b: TensorDict, perms: Permutation) -> Tensor:
    """C[i, j] = Σ over tensors using `perm` of ⟨unit i of A, unit j of B with the other axes permuted⟩."""
    total = None
    for name, axis in spec.users(perm):
        if name not in params_a:
            continue  # buffers (BN running statistics) are permuted but not matched on
        a = params_a[name].double().movedim(axis, 0).reshape(params_a[name].shape[axis], -1)
        b = permute_tensor(params_b[name], spec.axes[name], perms, skip_axis=axis).double()
        b = b.movedim(axis, 0).reshape(b.shape[axis], -1)
        c = a @ b.T
        total = c if total is None else total + c
    return total


@dataclass
class MatchResult:
    perms: Permutation
    history: list[float] = field(default_factory=list)  # objective after each sweep (weight) / step (ste)
    sweeps: int = 0


def weight_matching(
    spec: PermutationSpec,
    params_a: TensorDict,
    params_b: TensorDict,
    generator: torch.Generator,
    init: Permutation | None = None,
    max_sweeps: int = 100,
) -> MatchResult:
    """Coordinate descent over the permutations (see module docstring); history[0] is the start."""
    perm_sizes = sizes(spec, params_a)
    device = next(iter(params_a.values())).device
    perms = {p: v.clone() for p, v in (init or identity(perm_sizes, device)).items()}
    names = [p for p in spec.perms if p in perm_sizes]
    result = MatchResult(perms, [objective(spec, params_a, params_b, perms)])
    for sweep in range(max_sweeps):
        progress = False
        for k in torch.randperm(len(names), generator=generator).tolist():
            p = names[k]
            cost = _cost(spec, p, params_a, params_b, perms)
            new = assignment(cost)
            rows = torch.arange(len(new), device=cost.device)
            gain = cost[rows, new].sum() - cost[rows, perms[p]].sum()
            # a strict improvement beyond round-off; ties keep the current permutation
            if gain > 1e-12 * max(1.0, cost.abs().max().item()):
                perms[p], progress = new, True
        result.history.append(objective(spec, params_a, params_b, perms))
        result.sweeps = sweep + 1
        if not progress:
            break
    return result


# ----------------------------------------------------------------------------- activations


class _Moments:
    """Running sums for the cross-correlation of two feature sets a, b ∈ R^{N×C}."""

    def __init__(self):
        self.n, self.sa, self.sb, self.saa, self.sbb, self.sab = 0, 0.0, 0.0, 0.0, 0.0, 0.0

    def add(self, a: Tensor, b: Tensor) -> None:
        a, b = a.double(), b.double()
        self.n += a.shape[0]
        self.sa, self.sb = self.sa + a.sum(0), self.sb + b.sum(0)
        self.saa, self.sbb = self.saa + (a * a).sum(0), self.sbb + (b * b).sum(0)
        self.sab = self.sab + a.T @ b

    def correlation(self, eps: float = 1e-8) -> Tensor:
        """corr[i, j] = cov(a_i, b_j) / (σ(a_i) σ(b_j)); dead units (σ = 0) correlate 0."""
        ma, mb = self.sa / self.n, self.sb / self.n
        cov = self.sab / self.n - ma[:, None] * mb[None, :]
        sa = (self.saa / self.n - ma**2).clamp_min(0).sqrt()
        sb = (self.sbb / self.n - mb**2).clamp_min(0).sqrt()
        return cov / (sa[:, None] * sb[None, :] + eps)


def channels_last(t: Tensor) -> Tensor:
    """[B, C, ...] → [B·..., C]: every example and spatial position is one observation."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


@torch.no_grad()
def post_activation_features(model: nn.Module, params: TensorDict, buffers: TensorDict, points: dict[str, tuple[str, ...]], x: Tensor) -> dict[str, list[Tensor]]:
    """relu(output) [B·positions, C] of each module in `points` (perm → module names), eval mode."""
    seen = module_outputs(model, params, buffers, x, (m for ms in points.values() for m in ms))
    return {p: [channels_last(F.relu(seen[m])) for m in ms] for p, ms in points.items()}


def activation_correlations(model, spec, state_a, state_b, x: Tensor, batch_size: int = 500) -> dict[str, Tensor]:
    """corr [C, C] of A's and B's post-activation features for every permutation, summed over the
    points where that permutation is observed (e.g. every block of a residual stage)."""
    moments = {p: [_Moments() for _ in ms] for p, ms in spec.activations.items()}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        fa = post_activation_features(model, *state_a, spec.activations, xb)
        fb = post_activation_features(model, *state_b, spec.activations, xb)
        for p in moments:
            for m, a, b in zip(moments[p], fa[p], fb[p]):
                m.add(a, b)
    return {p: sum(m.correlation() for m in ms) for p, ms in moments.items()}


def activation_matching(model, spec, state_a, state_b, x: Tensor, batch_size: int = 500) -> MatchResult:
    """π[P] = argmax Σ_i corr_P[i, π(i)] for each permutation P (one linear assignment each)."""
    corr = activation_correlations(model, spec, state_a, state_b, x, batch_size)
    perms = {p: assignment(c) for p, c in corr.items()}
    score = sum(float(c[torch.arange(len(perms[p])), perms[p]].sum()) for p, c in corr.items())
    return MatchResult(perms, [score], 1)


# ----------------------------------------------------------------------------- straight-through


def _midpoint_loss(model: nn.Module, params: TensorDict, buffers: TensorDict, x: Tensor, y: Tensor) -> Tensor:
    # Train mode: a BatchNorm midpoint is evaluated with its batch statistics (fresh, as after a
    # BN reset); buffers are cloned because train mode updates running statistics in place.
    with mode(model, training=True):
        logits = functional_call(model, (params, {k: v.clone() for k, v in buffers.items()}), (x,))
    return F.cross_entropy(logits, y)


def ste_matching(
    model: nn.Module,
    spec: PermutationSpec,
    state_a: tuple[TensorDict, TensorDict],
    params_b: TensorDict,
    x: Tensor,
    y: Tensor,
    x_eval: Tensor,
    y_eval: Tensor,
    generator: torch.Generator,
    steps: int,
    lr: float,
    batch_size: int,
    max_sweeps: int = 100,
    on_step: Callable[[int, float], None] | None = None,
) -> MatchResult:
    """Straight-through estimator (Ainsworth et al. Alg. 2). The proxy θ̃ starts at θ_A, so step 0 is
    weight matching; every step re-matches θ_B to θ̃ (warm-started) and takes one Adam step on the
    minibatch loss of ½(θ_A + θ̃ + sg(π(θ_B) − θ̃)). history: midpoint loss on (x_eval, y_eval) of
    each step's π; the π with the lowest one is returned. `on_step(step, midpoint loss)` after each
    of the steps + 1 evaluations (e.g. progress lines)."""
    params_a, buffers_a = state_a
    proxy = {k: v.detach().clone().requires_grad_(True) for k, v in params_a.items()}
    optimizer = make_optimizer("adam", list(proxy.values()), lr)
    perms, best, result = None, math.inf, MatchResult({})
    for step in range(steps + 1):
        detached = {k: v.detach() for k, v in proxy.items()}
        perms = weight_matching(spec, detached, params_b, generator, init=perms, max_sweeps=max_sweeps).perms
        pb = apply(spec, perms, params_b)
        with torch.no_grad():
            loss = _midpoint_loss(model, {k: 0.5 * (params_a[k] + pb[k]) for k in pb}, buffers_a, x_eval, y_eval).item()
        require_finite("straight-through estimator", step, "rebasin.ste_lr", torch.tensor(loss), *detached.values())
        result.history.append(loss)
        if on_step is not None:
            on_step(step, loss)
        if loss < best:
            best, result.perms = loss, {p: v.clone() for p, v in perms.items()}
        if step == steps:
            break
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=generator).to(x.device)
        mid = {k: 0.5 * (params_a[k] + proxy[k] + (pb[k] - proxy[k]).detach()) for k in pb}
        optimizer.zero_grad(set_to_none=True)
        _midpoint_loss(model, mid, buffers_a, x[idx], y[idx]).backward()
        optimizer.step()
    result.sweeps = steps
    return result
