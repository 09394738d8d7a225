"""Nudged elastic band and AutoNEB on flat parameter vectors (Draxler et al. 2018).

A path is M pivots x [M, D] (rows: flattened parameter vectors; x_0 and x_{M−1} the two minima,
kept fixed), read as the polygonal chain through them: θ(t) = Σ_j c_j(t) x_j with c from
`paths.path_coefficients("polychain", t, M)` (pivot j at t_j = j / (M − 1)).

One NEB step moves the interior pivots i = 1 … M−2 along the force (Henkelman & Jónsson 2000)

    F_i = −(g_i − (g_i·τ_i) τ_i) + k (|x_{i+1} − x_i| − |x_i − x_{i−1}|) τ_i

with g_i = ∇L(x_i) on a minibatch and τ_i the *improved* unit tangent: toward the higher-energy
neighbour (τ⁺ = x_{i+1} − x_i or τ⁻ = x_i − x_{i−1}), or, at a local extremum of the energy, a
mix of both weighted by the energy differences. With an infinite spring constant (Draxler et al.'s
choice) the spring term is dropped and, after every step, the pivots are redistributed to equal
spacing along the polyline (`redistribute`).

AutoNEB runs cycles: insert pivots (evenly into every segment, or into the segments whose dense
evaluation rises most above the chord between its two pivots), optimise for some steps, evaluate
densely between consecutive pivots. The saddle of the path is the maximum of the dense curve.

Everything here works on plain tensors and callbacks (energy and gradient of a population of
pivots, energy of a population of dense points), so the same code runs on a 2-D toy surface and on
a network (see stages/neb.py for the network callbacks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

from .optimizers import FitState, load_optimizer_tensors, make_optimizer, optimizer_tensors
from .params import TensorDict, require_finite
from .paths import path_coefficients

# ----------------------------------------------------------------------------- flat vectors


@dataclass(frozen=True)
class FlatSpec:
    """Names and shapes of the floating tensors of one network, to go from dicts to vectors."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        return [int(torch.Size(s).numel()) for s in self.shapes]


def flatten_members(stacked: TensorDict) -> tuple[Tensor, FlatSpec]:
    """{name: T[M, ...]} → (x [M, D], spec); only floating tensors (all parameters are)."""
    names = tuple(k for k, v in stacked.items() if v.is_floating_point())
    spec = FlatSpec(names, tuple(tuple(stacked[k].shape[1:]) for k in names))
    return torch.cat([stacked[k].flatten(1) for k in names], dim=1), spec


def unflatten(vector: Tensor, spec: FlatSpec) -> TensorDict:
    """x [..., D] → {name: T[..., *shape]} (views, differentiable)."""
    lead = vector.shape[:-1]
    parts = vector.split(spec.sizes, dim=-1)
    return {k: p.reshape(*lead, *s) for k, p, s in zip(spec.names, parts, spec.shapes)}


# ----------------------------------------------------------------------------- forces


def improved_tangent(x: Tensor, energy: Tensor) -> Tensor:
    """Unit tangents [M−2, D] at the interior pivots of x [M, D] (Henkelman & Jónsson 2000, eqs. 8–11).

    τ = τ⁺ if E_{i+1} > E_i > E_{i−1}; τ = τ⁻ if E_{i+1} < E_i < E_{i−1}; otherwise
    τ = τ⁺ ΔE_max + τ⁻ ΔE_min when E_{i+1} > E_{i−1} (and the weights swapped otherwise), with
    ΔE_max/min the larger/smaller of |E_{i±1} − E_i|. Weighting avoids kinks at extrema.
    """
    plus, minus = x[2:] - x[1:-1], x[1:-1] - x[:-2]
    e_prev, e, e_next = energy[:-2], energy[1:-1], energy[2:]
    d_next, d_prev = (e_next - e).abs(), (e_prev - e).abs()
    d_max, d_min = torch.maximum(d_next, d_prev), torch.minimum(d_next, d_prev)
    up = (e_next > e) & (e > e_prev)
    down = (e_next < e) & (e < e_prev)
    higher_next = (e_next > e_prev)[:, None]
    mixed = torch.where(higher_next, plus * d_max[:, None] + minus * d_min[:, None], plus * d_min[:, None] + minus * d_max[:, None])
    # Flat energy (all differences zero): the mixed tangent vanishes; fall back to the chord.
    mixed = torch.where((d_max > 0)[:, None], mixed, plus + minus)
    tau = torch.where(up[:, None], plus, torch.where(down[:, None], minus, mixed))
    return tau / tau.norm(dim=1, keepdim=True).clamp_min(1e-12)


def perpendicular(g: Tensor, tau: Tensor) -> Tensor:
    """g − (g·τ) τ row by row: the part of g [N, D] orthogonal to the unit tangents τ [N, D]."""
    return g - (g * tau).sum(1, keepdim=True) * tau


def neb_force(x: Tensor, energy: Tensor, grad: Tensor, spring: float | None) -> Tensor:
    """Force [M−2, D] on the interior pivots: −g⊥ plus the spring term along τ (None: k = ∞, no term).

    x [M, D] pivots, energy [M] and grad [M, D] (only the interior rows of grad are used).
    """
    tau = improved_tangent(x, energy)
    force = -perpendicular(grad[1:-1], tau)
    if spring is not None and spring > 0:
        lengths = (x[1:] - x[:-1]).norm(dim=1)  # [M−1]
        force = force + spring * (lengths[1:] - lengths[:-1])[:, None] * tau
    return force


# ----------------------------------------------------------------------------- pivots along the polyline


def pivot_t(m: int) -> Tensor:
    """Polychain parameter of the M pivots: t_j = j / (M − 1)."""
    return torch.linspace(0.0, 1.0, m, dtype=torch.float64)


def points_at(x: Tensor, t: Tensor) -> Tensor:
    """Points [N, D] of the polyline through x [M, D] at polychain parameters t [N]."""
    c = path_coefficients("polychain", t, x.shape[0]).to(x)
    return c @ x


def arc_t(x: Tensor, fractions: Tensor) -> Tensor:
    """Polychain parameters t of the points at the given fractions [N] of the polyline's length."""
    lengths = (x[1:] - x[:-1]).norm(dim=1).double()
    cum = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    total = cum[-1]
    if total <= 0:
        return fractions.double()
    target = fractions.double() * total
    seg = (torch.searchsorted(cum, target, right=True) - 1).clamp(0, len(lengths) - 1)
    within = ((target - cum[seg]) / lengths[seg].clamp_min(1e-30)).clamp(0.0, 1.0)
    return (seg.double() + within) / (x.shape[0] - 1)


def redistribute(x: Tensor) -> Tensor:
    """The same polyline with its M pivots at equal arc-length spacing (endpoints unchanged)."""
    t = arc_t(x, pivot_t(x.shape[0]))
    t[0], t[-1] = 0.0, 1.0
    return points_at(x, t)


def dense_t(m: int, per_segment: int) -> Tensor:
    """Dense evaluation parameters: every pivot plus `per_segment` − 1 evenly spaced points inside each segment."""
    return torch.linspace(0.0, 1.0, (m - 1) * per_segment + 1, dtype=torch.float64)


def insert_equal(x: Tensor, n: int) -> Tensor:
    """n new pivots evenly spaced inside every segment: M → M + n (M − 1)."""
    return points_at(x, dense_t(x.shape[0], n + 1))


def chord_rise(t: Tensor, values: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Per segment, how far the dense curve rises above the chord between its two pivots, and where.

    t [N] dense parameters (from `dense_t`, so that pivots are among them), values [N]. Returns
    (rise [M−1], t_at [M−1]): max over the segment's points of values − linear interpolation of the
    values at its two pivots, and the t of that maximum.
    """
    seg = (t * (m - 1)).floor().long().clamp(max=m - 2)
    pivot_values = values[torch.isclose(t * (m - 1), (t * (m - 1)).round())]
    left = seg.double()
    w = t * (m - 1) - left
    chord = (1 - w) * pivot_values[seg] + w * pivot_values[seg + 1]
    above = values.double() - chord.double()
    rise = torch.full((m - 1,), -float("inf"), dtype=torch.float64)
    t_at = torch.zeros(m - 1, dtype=torch.float64)
    for j in range(m - 1):
        sel = seg == j
        k = above[sel].argmax()
        rise[j], t_at[j] = above[sel][k], t[sel][k]
    return rise, t_at


def insert_highest(x: Tensor, t: Tensor, values: Tensor, n: int) -> Tensor:
    """Up to n new pivots, at most one per segment, where the dense curve rises most above the chord.

    Only segments whose curve rises above the chord (rise > 0) get a pivot, placed at the maximum.
    """
    m = x.shape[0]
    rise, t_at = chord_rise(t, values, m)
    order = [j for j in rise.argsort(descending=True).tolist() if rise[j] > 0][:n]
    new_t = torch.sort(torch.cat([pivot_t(m), t_at[order]])).values
    return points_at(x, new_t)


# ----------------------------------------------------------------------------- AutoNEB


@dataclass(frozen=True)
class Cycle:
    """One AutoNEB cycle: insert `insert` pivots by `method`, then `steps` optimisation steps at `lr`."""

    method: str  # "equal" | "highest"
    insert: int
    steps: int
    lr: float


@dataclass
class NebResult:
    pivots: Tensor  # [M, D]
    t: Tensor  # dense parameters [N]
    values: Tensor  # energy of the dense points [N]
    history: list[dict] = field(default_factory=list)  # one entry per cycle

    @property
    def saddle(self) -> float:
        return float(self.values.max())


GradFn = Callable[[Tensor, int], tuple[Tensor, Tensor]]  # (x [M, D], step) → (energy [M], grad [M, D])
DenseFn = Callable[[Tensor], Tensor]  # points [N, D] → energy [N]


def optimise(x: Tensor, grad_fn: GradFn, steps: int, lr: float, spring: float | None, optimizer: str = "sgd",
             momentum: float = 0.0, first_step: int = 0, on_step: Callable[[int, Tensor], None] | None = None,
             optimizer_state: dict[str, Tensor] | None = None,
             after_step: Callable[[int, Tensor, dict[str, Tensor]], None] | None = None) -> Tensor:
    """`steps` NEB steps on the interior pivots of x [M, D]; returns the new pivots (endpoints unchanged).

    The optimiser sees −F as the gradient of the interior pivots, so SGD moves them by lr · F.
    spring None means k = ∞: redistribute to equal spacing after every step. `optimizer_state`
    (core.optimizers.optimizer_tensors) continues an interrupted run; `after_step(steps done, x,
    optimizer tensors)` is called after every step, for resume points.
    """
    x = x.detach().clone()
    if x.shape[0] < 3:
        return x
    inner = x[1:-1].clone().requires_grad_(True)
    opt = make_optimizer(optimizer, [inner], lr, momentum=momentum)
    if optimizer_state is not None:
        load_optimizer_tensors(opt, optimizer_state)
    for step in range(first_step, first_step + steps):
        full = torch.cat([x[:1], inner.detach(), x[-1:]])
        energy, grad = grad_fn(full, step)
        require_finite("AutoNEB", step, "the lr of neb.cycles", energy, grad)
        inner.grad = -neb_force(full, energy.detach(), grad.detach(), spring)
        opt.step()
        if spring is None:
            with torch.no_grad():
                inner.copy_(redistribute(torch.cat([x[:1], inner, x[-1:]]))[1:-1])
        if on_step is not None:
            on_step(step, energy.detach())
        if after_step is not None:
            after_step(step + 1, torch.cat([x[:1], inner.detach(), x[-1:]]), optimizer_tensors(opt))
    return torch.cat([x[:1], inner.detach(), x[-1:]])


def autoneb(a: Tensor, b: Tensor, cycles: list[Cycle], grad_fn: GradFn, dense_fn: DenseFn, per_segment: int,
            spring: float | None, optimizer: str = "sgd", momentum: float = 0.0,
            on_step: Callable[[int, Tensor], None] | None = None,
            start: FitState | None = None, on_state: Callable[[FitState], None] | None = None) -> NebResult:
    """AutoNEB between minima a, b [D]: cycles of insertion, NEB optimisation and dense evaluation.

    Resuming: after every step `on_state` gets a FitState (steps done, the pivots, the optimizer
    state, and in `extra` the cycle and the history so far); given back as `start`, AutoNEB
    continues inside that cycle (its pivots are already inserted) exactly as if it had not stopped.
    """
    history, step, first = [], 0, 0
    if start is None:
        x = torch.stack([a, b])
        t = dense_t(2, per_segment)
        values = dense_fn(points_at(x, t))
    else:  # the resumed cycle's insertion is done; its dense evaluation follows its steps
        x, step, first, history = start.tensors["pivots"], start.step, start.extra["cycle"], list(start.extra["history"])
    for i, cycle in enumerate(cycles):
        if i < first:
            continue
        begin = sum(c.steps for c in cycles[:i])
        resumed = start is not None and i == first
        if not resumed:
            if cycle.method == "equal":
                x = insert_equal(x, cycle.insert)
            elif cycle.method == "highest":
                x = insert_highest(x, t, values, cycle.insert)
            else:
                raise ValueError(f"neb cycle {i}: unknown insertion method {cycle.method!r}")

        def after_step(done: int, pivots: Tensor, opt: dict[str, Tensor], i: int = i) -> None:
            if on_state is not None:
                on_state(FitState(done, {"pivots": pivots}, opt, {}, {"cycle": i, "history": list(history)}))

        x = optimise(x, grad_fn, begin + cycle.steps - step, cycle.lr, spring, optimizer, momentum, step, on_step,
                     start.optimizer if resumed else None, after_step)
        step = begin + cycle.steps
        t = dense_t(x.shape[0], per_segment)
        values = dense_fn(points_at(x, t))
        history.append({"cycle": i, "method": cycle.method, "pivots": x.shape[0], "steps": step,
                        "saddle": float(values.max()), "saddle_t": float(t[values.argmax()])})
    return NebResult(x, t, values, history)


# ----------------------------------------------------------------------------- networks


def pivot_grads(model: torch.nn.Module, x: Tensor, spec: FlatSpec, buffers: TensorDict, inputs: Tensor,
                targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy [M] on one minibatch and its gradient [M, D] for each pivot of x [M, D].

    One batched computation: vmap over pivots of torch.func.grad_and_value. `buffers` are stacked
    [M, ...] (BatchNorm statistics; in train mode the batch statistics are used and the running
    ones are updated on a copy that is thrown away).
    """

    def loss(vector: Tensor, buf: TensorDict) -> Tensor:
        logits = functional_call(model, (unflatten(vector, spec), buf), (inputs,))
        return torch.nn.functional.cross_entropy(logits, targets)

    buffers = {k: v.clone() for k, v in buffers.items()}
    grads, values = vmap(grad_and_value(loss), in_dims=(0, 0))(x, buffers)
    return values, grads
