"""Curvature of the loss at one network: Hessian-vector products, Hutchinson trace, extreme eigenvalues.

H = ∇²L(θ) is the Hessian of L(θ) = (1/B) Σ_b L_b(θ), the mean cross-entropy over a fixed
evaluation set of B equal-sized batches. H is never formed; two products reach it:

    Hv     `second_order`: reverse-over-reverse on one autograd graph kept per batch. The gradient
           g_b = ∇L_b(θ) is built once with create_graph=True; each product is then one backward
           pass over the kept graph, Hv = (1/B) Σ_b ∂⟨g_b, v⟩/∂θ (the product PyHessian, Yao et al.
           2020, uses for one batch), so the forward pass and the gradient are not recomputed.

    zᵀHz   `quadratic_forms`: for the network traced into operations y_n = f_n(a_n) (torch.fx),

               zᵀHz = Σ_n ⟨ā_n, D²f_n(a_n)[u_n, u_n]⟩ + D²ℓ(h)[u_h, u_h],

           with u_n the first-order tangents of f_n's inputs along z (one forward-mode pass),
           ā_n = ∂L/∂y_n the adjoints of one ordinary backward pass (computed once, shared by every
           probe) and ℓ the loss of the logits h. This is second-order forward (Taylor) mode
           contracted with first-order adjoints (Griewank & Walther 2008, "Evaluating Derivatives",
           2nd ed., on Taylor arithmetic and second-order adjoints). D²f_n is 0 for (piecewise)
           linear operations (ReLU, pooling, sums, reshapes), 2·f_n(u_x; u_W) for linear and
           convolution layers (bilinear in input and weight), and uᵀ∇²⟨ā, f⟩u by forward-over-reverse
           for the rest (normalisation layers, the loss), whose cost is that of elementwise work (not
           jvp of jvp: torch 2.14's nested forward mode gets layer_norm and train-mode batch_norm
           wrong). Per probe that is about three matrix products per layer against about six for
           an HVP.

Estimators:

    Hutchinson (1990):  tr H = E_z[zᵀHz] for Rademacher z (entries ±1); the mean of P probes, with
                        standard error std(zᵢᵀHzᵢ)/√P. The probes go through `quadratic_forms` in
                        chunks under vmap (one batched forward-tangent pass per chunk).
    extreme eigenvalues: λ_max and λ_min by ARPACK's implicitly restarted Lanczos method
                        (scipy.sparse.linalg.eigsh, which="LA" and which="SA") over a
                        scipy LinearOperator whose matvec is Hv. λ_min is found on H + 2|λ_max|·I
                        (the same Krylov spaces): ARPACK stops when ‖r‖ ≤ tol·|θ| for the Ritz
                        value θ, and θ = λ_min + 2|λ_max| lies between |λ_max| and 2|λ_max| when
                        |λ_min| ≤ |λ_max|, so the rule is relative to the spectral scale, not to a
                        λ_min close to 0 (or to λ_min + |λ_max| close to 0 on a near-symmetric
                        spectrum). Each eigenpair comes with its residual ‖Hv − λv‖: some
                        eigenvalue of H lies within it of the reported λ.

Restriction to some coordinates (the surviving weights of a lottery ticket): with P = diag(free)
the 0/1 projection onto the free coordinates, Hutchinson with probes Pz estimates tr(PHP) (the sum
of H_ii over free coordinates) and Lanczos runs on the free coordinates only, so its eigenvalues are
those of the restricted Hessian (the pruned coordinates add no spurious zeros).

Parameters are dicts {name: T}; probes are stacked dicts {name: T[P, ...]}. Pure functions: no files,
no global RNG (pass a torch.Generator or the start vector).
"""

from __future__ import annotations

import contextlib
import math
import operator
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor, fx, nn
from torch.func import functional_call, grad, grad_and_value, jvp, vmap

from .params import TensorDict

Hvp = Callable[[TensorDict], TensorDict]
Quadratic = Callable[[TensorDict], Tensor]  # stacked probes {name: [P, ...]} -> zᵢᵀHzᵢ [P]


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


# ----------------------------------------------------------------------------- Hv on kept graphs


@dataclass
class SecondOrder:
    """L(θ), ∇L(θ) and v ↦ Hv at one θ; the autograd graphs of every batch stay alive with it."""

    loss: Tensor
    grad: TensorDict
    hvp: Hvp


def second_order(losses: list[Callable[[TensorDict], Tensor]], params: TensorDict) -> SecondOrder:
    """Loss, gradient and Hessian-vector products of L = mean of `losses` (one per batch) at `params`.

    Each batch's gradient g_b = ∇L_b is built once with create_graph=True; a product is then
    Hv = (1/B) Σ_b autograd.grad(g_b, θ, v) over the kept graphs (reverse-over-reverse), without
    recomputing the forward pass or the gradient. Memory: the graphs of all B batches.
    """
    leaves = {k: t.detach().requires_grad_(True) for k, t in params.items()}
    names, inputs = list(leaves), tuple(leaves.values())
    grads, total = [], 0.0
    with torch.enable_grad():
        for f in losses:
            value = f(leaves)
            grads.append(torch.autograd.grad(value, inputs, create_graph=True, materialize_grads=True))
            total = total + value.detach()
    n = len(losses)
    mean_grad = {k: sum(g[i].detach() for g in grads) / n for i, k in enumerate(leaves)}

    def hvp(v: TensorDict) -> TensorDict:
        out = [torch.zeros_like(t) for t in inputs]
        for g in grads:
            # A parameter the gradient does not depend on (e.g. a bias before a normalisation)
            # has a zero row of H; autograd rejects outputs without a graph.
            live = [i for i, gi in enumerate(g) if gi.requires_grad]
            hb = torch.autograd.grad([g[i] for i in live], inputs, [v[names[i]] for i in live], retain_graph=True, materialize_grads=True)
            out = [o + h for o, h in zip(out, hb)]
        return {k: t / n for k, t in zip(leaves, out)}

    return SecondOrder(total / n, mean_grad, hvp)


# ----------------------------------------------------------------------------- zᵀHz by forward tangents


# Operations whose second derivative is zero: linear, or piecewise linear (autograd's own second
# derivative of ReLU and max-pooling is zero too, so the results agree with reverse-over-reverse).
# Anything not listed takes the general (forward-over-reverse) rule, which is always correct, only slower.
_LINEAR_FUNCTIONS = {F.relu, torch.relu, operator.add, torch.add, operator.sub, torch.sub, operator.neg, operator.getitem,
                     torch.flatten, torch.cat, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d}
_LINEAR_METHODS = {"flatten", "view", "reshape", "movedim", "permute", "transpose", "contiguous", "squeeze", "unsqueeze",
                   "mean", "sum", "relu", "add", "sub", "neg"}
_LINEAR_MODULES = (nn.ReLU, nn.Identity, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
# y = x ⋆ W + b: affine in x, linear in (W, b), so D²y[(u_x, u_W, u_b)]² = 2 · u_x ⋆ u_W.
_BILINEAR_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Program:
    """A network's forward pass as a torch.fx graph; torch.nn layers stay single (module) nodes."""

    model: nn.Module
    graph: fx.Graph


def trace(model: nn.Module) -> Program:
    """`Program` of `model` (raises torch.fx's error for a forward with data-dependent control flow)."""
    return Program(model, fx.symbolic_trace(model).graph)


def _rule(model: nn.Module, node: fx.Node) -> str:
    """"linear" (D²f = 0), "bilinear" (a linear/conv layer on one input) or "general"."""
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        if type(module) in _BILINEAR_MODULES and len(node.args) == 1 and not node.kwargs:
            return "bilinear"
        return "linear" if type(module) in _LINEAR_MODULES else "general"
    if node.op == "call_function" and node.target in _LINEAR_FUNCTIONS:
        return "linear"
    if node.op == "call_method" and node.target in _LINEAR_METHODS:
        return "linear"
    return "general"


def _module_state(model: nn.Module, node: fx.Node, params: TensorDict, buffers: TensorDict) -> tuple[list[str], dict]:
    """A module node's parameter names (its differentiable inputs) and its buffers (constants)."""
    module = model.get_submodule(node.target)
    prefix = f"{node.target}."
    names = [n for n, _ in module.named_parameters()]
    missing = [prefix + n for n in names if prefix + n not in params]
    if missing:
        raise KeyError(f"parameters of {node.target} not given: {missing}")
    return names, {n: buffers[prefix + n] if prefix + n in buffers else b for n, b in module.named_buffers()}


def _call(model: nn.Module, node: fx.Node, args, kwargs, state: dict) -> Tensor:
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return functional_call(model.get_submodule(node.target), state, args, kwargs)


class _Node:
    """One operation of the traced program: its differentiable inputs (activations that depend on θ,
    then the module's own parameters) and f(*inputs) with everything else held fixed."""

    def __init__(self, program: Program, node: fx.Node, values: dict, tangents: dict, params: TensorDict,
                 buffers: TensorDict, probes: TensorDict | None):
        self.program, self.node, self.values = program, node, values
        self.inputs = [n for n in node.all_input_nodes if tangents.get(n) is not None]
        self.names, self.buffers = _module_state(program.model, node, params, buffers) if node.op == "call_module" else ([], {})
        prefix = f"{node.target}."
        self.primals = [values[n] for n in self.inputs] + [params[prefix + n] for n in self.names]
        self.tangents = None if probes is None else [tangents[n] for n in self.inputs] + [probes[prefix + n] for n in self.names]

    def __call__(self, *x: Tensor) -> Tensor:
        bound = dict(zip(self.inputs, x))
        look = lambda n: bound[n] if n in bound else self.values[n]  # noqa: E731
        state = dict(zip(self.names, x[len(self.inputs):])) | self.buffers
        return _call(self.program.model, self.node, fx.node.map_arg(self.node.args, look), fx.node.map_arg(self.node.kwargs, look), state)


def _forward(program: Program, params: TensorDict, buffers: TensorDict, x: Tensor) -> tuple[dict, Tensor]:
    """Values of every node of the program at θ = `params` on input x, and the logits."""
    values = {}
    for node in program.graph.nodes:
        if node.op == "placeholder":
            values[node] = x
        elif node.op == "get_attr":
            values[node] = params[node.target] if node.target in params else \
                buffers[node.target] if node.target in buffers else _attribute(program.model, node.target)
        elif node.op == "output":
            return values, values[node.args[0]]
        else:
            f = _Node(program, node, values, {}, params, buffers, None)
            values[node] = f(*f.primals)
    raise ValueError("traced program has no output")


def _attribute(model: nn.Module, target: str):
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class _Point:
    """One batch at one θ: node values and the adjoints ā_n = ∂L_b/∂y_n of the nodes that need them."""

    values: dict
    adjoints: dict
    logits: Tensor
    y: Tensor


def _prepare(program: Program, params: TensorDict, buffers: TensorDict, x: Tensor, y: Tensor) -> _Point:
    leaves = {k: t.detach().requires_grad_(True) for k, t in params.items()}
    with torch.enable_grad():
        values, logits = _forward(program, leaves, buffers, x)
        loss = F.cross_entropy(logits, y)
        wanted = [n for n in values if n.op.startswith("call") and _rule(program.model, n) != "linear"
                  and isinstance(values[n], Tensor) and values[n].requires_grad]
        adj = torch.autograd.grad(loss, [values[n] for n in wanted], allow_unused=True, materialize_grads=True)
    detached = {n: v.detach() if isinstance(v, Tensor) else v for n, v in values.items()}
    return _Point(detached, dict(zip(wanted, adj)), logits.detach(), y)


def _contract(adjoint: Tensor, second: Tensor) -> Tensor:
    """⟨ā, s_p⟩ for each probe p: adjoint [...] and second-order terms [P, ...] → [P]."""
    return (second * adjoint.unsqueeze(0)).flatten(1).sum(1)


def _bilinear(program: Program, node: fx.Node, point: _Point, tangents: dict, params: TensorDict, probes: TensorDict) -> tuple[Tensor, Tensor | None]:
    """Tangent and ⟨ā, D²y⟩ of y = x ⋆ W + b: u_y = u_x ⋆ W + x ⋆ u_W + u_b, D²y = 2 u_x ⋆ u_W."""
    module = program.model.get_submodule(node.target)
    apply = (lambda a, w, b: F.linear(a, w, b)) if isinstance(module, nn.Linear) else module._conv_forward
    w, uw = params[f"{node.target}.weight"], probes[f"{node.target}.weight"]
    ub = probes.get(f"{node.target}.bias") if module.bias is not None else None
    x, ux = point.values[node.args[0]], tangents.get(node.args[0])
    if isinstance(module, nn.Linear) and x.dim() == 2:
        return _dense_layer(x, ux, w, uw, ub, point.adjoints.get(node))
    if ub is None:
        u = vmap(lambda dw: apply(x, dw, None))(uw)
    else:
        u = vmap(lambda dw, db: apply(x, dw, db))(uw, ub)
    if ux is None:  # affine in the parameters alone (e.g. the first layer): no second-order term
        return u, None
    u = u + vmap(lambda dx: apply(dx, w, None))(ux)
    adjoint = point.adjoints.get(node)
    source = None if adjoint is None else 2.0 * _contract(adjoint, vmap(lambda dx, dw: apply(dx, dw, None))(ux, uw))
    return u, source


def _dense_layer(x: Tensor, ux: Tensor | None, w: Tensor, uw: Tensor, ub: Tensor | None, adjoint: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """`_bilinear` for y = x Wᵀ + b on x [N, in] as whole-batch matrix products over the probes:
    u_y = x u_Wᵀ + u_b + u_x Wᵀ [P, N, out] and ⟨ā, 2 u_x u_Wᵀ⟩ = 2⟨āᵀu_x, u_W⟩ [P] (the [P, out, in]
    product is smaller than the [P, N, out] one whenever in < N)."""
    u = torch.matmul(x, uw.transpose(-1, -2)).contiguous()
    if ub is not None:
        u += ub.unsqueeze(-2)  # in place (here and below): u is this function's own fresh tensor
    if ux is None:
        return u, None
    u.view(-1, u.shape[-1]).addmm_(ux.reshape(-1, ux.shape[-1]), w.T)
    source = None if adjoint is None else 2.0 * (torch.matmul(adjoint.T, ux) * uw).flatten(1).sum(1)
    return u, source


def _general(f: _Node, adjoint: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Tangent Df[u] and ⟨ā, D²f[u, u]⟩ = uᵀ∇²⟨ā, f⟩u, the latter forward-over-reverse (only where ā
    is needed). Not jvp of jvp: torch's nested forward mode gets the second derivative of
    layer_norm and train-mode batch_norm wrong (tests/test_curvature.py checks the rule used here)."""
    primals = tuple(f.primals)
    if adjoint is None:
        return vmap(lambda *u: jvp(f, primals, u)[1])(*f.tangents), None
    return vmap(lambda *u: (jvp(f, primals, u)[1], _curvature_along(lambda *p: (adjoint * f(*p)).sum(), primals, u)))(*f.tangents)


def _curvature_along(scalar: Callable[..., Tensor], primals: tuple, u: tuple) -> Tensor:
    """uᵀ∇²s(p)u for a scalar function s of several tensors: ⟨u, jvp(∇s, p; u)⟩."""
    hu = jvp(grad(scalar, argnums=tuple(range(len(primals)))), primals, u)[1]
    return sum((a * b).sum() for a, b in zip(u, hu))


def _batch_quadratic(program: Program, point: _Point, params: TensorDict, buffers: TensorDict, probes: TensorDict) -> Tensor:
    """zᵢᵀ H_b zᵢ for one batch b and stacked probes [P, ...] → [P]."""
    tangents: dict = {}
    total = None
    for node in program.graph.nodes:
        if node.op == "get_attr" and node.target in probes:
            tangents[node] = probes[node.target]
            continue
        if not node.op.startswith("call") or not isinstance(point.values[node], Tensor) or not point.values[node].is_floating_point():
            continue
        rule = _rule(program.model, node)
        f = _Node(program, node, point.values, tangents, params, buffers, probes)
        if not f.tangents:  # depends on the input only (e.g. flatten(x)): a constant
            continue
        if rule == "bilinear":
            tangents[node], source = _bilinear(program, node, point, tangents, params, probes)
        elif rule == "linear":
            tangents[node], source = vmap(lambda *u: jvp(f, tuple(f.primals), u)[1])(*f.tangents), None
        else:
            tangents[node], source = _general(f, point.adjoints.get(node))
        if source is not None:
            total = source if total is None else total + source
    output = next(n for n in program.graph.nodes if n.op == "output").args[0]
    h, uh = point.logits, tangents.get(output)
    if uh is None:
        raise ValueError("the logits do not depend on the parameters")

    # D²ℓ(h)[u, u]: the loss's own second-order term (its adjoint is 1)
    own = vmap(lambda u: _curvature_along(lambda a: F.cross_entropy(a, point.y), (h,), (u,)))(uh)
    return own if total is None else total + own


def quadratic_forms(program: Program, params: TensorDict, buffers: TensorDict, batches: list[tuple[Tensor, Tensor]]) -> Quadratic:
    """z ↦ zᵢᵀHzᵢ [P] for stacked probes z [P, ...], H the Hessian of the mean loss over `batches`.

    One forward pass and one backward pass per batch are done here, once; each call is then one
    forward-tangent pass of all P probes per batch (see the module docstring for the rule).
    """
    points = [_prepare(program, params, buffers, x, y) for x, y in batches]

    def quadratic(probes: TensorDict) -> Tensor:
        return sum(_batch_quadratic(program, p, params, buffers, probes) for p in points) / len(points)

    return quadratic


def quadratic_from_hvp(hvp: Hvp) -> Quadratic:
    """z ↦ zᵢᵀ(Hzᵢ), one Hessian-vector product per probe: for any loss, e.g. one torch.fx cannot trace."""

    def quadratic(probes: TensorDict) -> Tensor:
        p = next(iter(probes.values())).shape[0]
        return torch.stack([dot(z, hvp(z)) for z in (member_of(probes, i) for i in range(p))])

    return quadratic


# ----------------------------------------------------------------------------- vector algebra


def dot(a: TensorDict, b: TensorDict) -> Tensor:
    """⟨a, b⟩: the sum over all tensors of the elementwise product (a scalar)."""
    return sum((a[k] * b[k]).sum() for k in a)


def rowwise_dot(a: TensorDict, b: TensorDict) -> Tensor:
    """⟨a_i, b_i⟩ for stacked vectors a, b [P, ...] → [P]."""
    return sum((a[k] * b[k]).flatten(1).sum(1) for k in a)


def norm(a: TensorDict) -> Tensor:
    return torch.sqrt(sum(t.pow(2).sum() for t in a.values()))


def member_of(stacked: TensorDict, i: int) -> TensorDict:
    return {k: v[i] for k, v in stacked.items()}


def parameter_count(params: TensorDict) -> int:
    return sum(t.numel() for t in params.values())


def rademacher(params: TensorDict, count: int, generator: torch.Generator) -> TensorDict:
    """`count` probes with independent ±1 entries, stacked [count, ...] like `params`.

    Drawn in sorted name order, so the probes do not depend on the dict's order (a checkpoint's
    tensors load sorted, a module's state in definition order)."""
    out = {}
    for name in sorted(params):
        t = params[name]
        # int8 draws the same bits as the default int64, with an eighth of the memory traffic
        bits = torch.randint(0, 2, (count, *t.shape), generator=generator, dtype=torch.int8)
        out[name] = bits.to(dtype=t.dtype, device=t.device).mul_(2).sub_(1)
    return {k: out[k] for k in params}


def gaussian(params: TensorDict, generator: torch.Generator) -> TensorDict:
    """One standard normal vector shaped like `params` (a Lanczos start vector; sorted name order)."""
    out = {k: torch.randn(params[k].shape, generator=generator).to(dtype=params[k].dtype, device=params[k].device) for k in sorted(params)}
    return {k: out[k] for k in params}


# ----------------------------------------------------------------------------- restriction


def free_coordinates(params: TensorDict, mask: TensorDict | None) -> TensorDict | None:
    """{name: bool tensor}: True where a coordinate is free. `mask` (0/1 over some parameters, e.g. a
    ticket's pruning mask) fixes its zero entries; parameters without a mask are free. None: all free."""
    if mask is None:
        return None
    return {k: (mask[k] != 0) if k in mask else torch.ones_like(t, dtype=torch.bool) for k, t in params.items()}


def restrict(v: TensorDict, free: TensorDict | None) -> TensorDict:
    """P v: the pruned coordinates set to zero (works for stacked [P, ...] vectors too)."""
    if free is None:
        return v
    return {k: t * free[k].to(t.dtype) for k, t in v.items()}


@dataclass(frozen=True)
class Coordinates:
    """The flat coordinate vector the Hessian is restricted to: all parameters, or the free ones."""

    params: TensorDict
    free: TensorDict | None = None

    @property
    def size(self) -> int:
        return parameter_count(self.params) if self.free is None else int(sum(int(f.sum()) for f in self.free.values()))

    def flatten(self, v: TensorDict) -> Tensor:
        if self.free is None:
            return torch.cat([v[k].reshape(-1) for k in self.params])
        return torch.cat([v[k].reshape(-1)[self.free[k].reshape(-1)] for k in self.params])

    def unflatten(self, x: Tensor) -> TensorDict:
        out, i = {}, 0
        for k, t in self.params.items():
            n = t.numel() if self.free is None else int(self.free[k].sum())
            part = x[i: i + n].to(dtype=t.dtype, device=t.device)
            if self.free is None:
                out[k] = part.view(t.shape)
            else:
                full = torch.zeros(t.numel(), dtype=t.dtype, device=t.device)
                full[self.free[k].reshape(-1)] = part
                out[k] = full.view(t.shape)
            i += n
        return out


# ----------------------------------------------------------------------------- estimators


def hutchinson_summary(samples: Tensor) -> tuple[float, float]:
    """Trace estimate (mean) and its standard error std/√P (sample std; nan for P = 1) of samples [P]."""
    s = samples.double()
    p = s.shape[0]
    stderr = s.std(unbiased=True).item() / math.sqrt(p) if p > 1 else float("nan")
    return s.mean().item(), stderr


def hutchinson(quadratic: Quadratic, probes: TensorDict, chunk: int = 0) -> dict:
    """Hutchinson estimate of tr H from stacked probes z [P, ...] (Rademacher; restricted: P·z).

    Returns {"trace": mean of zᵢᵀHzᵢ, "stderr": std(zᵢᵀHzᵢ)/√P, "samples": the P values [P],
    "probes": P}. `chunk` probes go through `quadratic` at once (0: all).
    """
    p = next(iter(probes.values())).shape[0]
    if p < 1:
        raise ValueError("Hutchinson needs at least one probe")
    step = p if chunk <= 0 else chunk
    samples = torch.cat([quadratic({k: v[i: i + step] for k, v in probes.items()}) for i in range(0, p, step)]).detach()
    trace, stderr = hutchinson_summary(samples)
    return {"trace": trace, "stderr": stderr, "samples": samples, "probes": p}


def hessian_operator(hvp: Hvp, space: Coordinates) -> tuple[LinearOperator, list[int]]:
    """H (restricted to `space`) as a scipy LinearOperator, and a list counting its products.

    In the parameters' precision: ARPACK then runs in single precision for float32 networks, which
    halves its own work per product (orthogonalising against the Lanczos basis, O(n · ncv)) and
    loses nothing, since the products themselves are float32."""
    count = [0]
    dtype = torch.empty(0, dtype=next(iter(space.params.values())).dtype).numpy().dtype

    def matvec(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        v = space.unflatten(torch.from_numpy(np.ascontiguousarray(x, dtype=dtype).reshape(-1)))
        return space.flatten({k: t.detach() for k, t in hvp(v).items()}).cpu().numpy().astype(dtype, copy=False)

    return LinearOperator((space.size, space.size), matvec=matvec, dtype=dtype), count


def lanczos(operator_: LinearOperator, which: str, start: np.ndarray, tolerance: float, vectors: int, restarts: int,
            shift: float = 0.0) -> tuple[float, np.ndarray | None]:
    """The eigenvalue at one end of the spectrum ("LA": largest, "SA": smallest) and its unit eigenvector,
    by scipy eigsh (ARPACK) on A + shift·I with `vectors` Lanczos vectors and at most `restarts`
    restarts; (nan, None) if ARPACK does not converge within them. Small problems (n ≤ vectors)
    are solved densely (n products give the whole matrix)."""
    n = operator_.shape[0]
    if n <= max(vectors, 2):
        dense = np.stack([operator_.matvec(e) for e in np.eye(n, dtype=operator_.dtype)], axis=1).astype(np.float64)
        w, v = np.linalg.eigh(0.5 * (dense + dense.T))
        i = -1 if which == "LA" else 0
        return float(w[i]), v[:, i].astype(operator_.dtype)
    shifted = LinearOperator(operator_.shape, matvec=lambda x: operator_.matvec(x) + operator_.dtype.type(shift) * np.asarray(x).reshape(-1),
                             dtype=operator_.dtype)
    try:
        w, v = eigsh(shifted, k=1, which=which, v0=start.astype(operator_.dtype), ncv=vectors, tol=tolerance, maxiter=restarts)
    except ArpackNoConvergence:
        return float("nan"), None
    return float(w[0]) - shift, v[:, 0]


def _residual(operator_: LinearOperator, value: float, vector: np.ndarray | None) -> float:
    """‖Hv − λv‖ for a unit v (one more product); nan without a vector."""
    if vector is None:
        return float("nan")
    return float(np.linalg.norm(operator_.matvec(vector).astype(np.float64) - value * vector.astype(np.float64)))


def extreme_eigenvalues(hvp: Hvp, params: TensorDict, start: TensorDict, tolerance: float = 1e-3, vectors: int = 10,
                        restarts: int = 20, free: TensorDict | None = None) -> dict:
    """λ_max and λ_min of H (restricted to the free coordinates) by Lanczos (scipy eigsh LA / SA).

    `start` is the Lanczos start vector (e.g. `gaussian`, the same for every network), `tolerance`
    ARPACK's relative tolerance, `vectors` its Lanczos basis size (ncv), `restarts` its maxiter.
    λ_min runs on H + 2|λ_max|·I so its stopping rule is relative to the spectral scale (see the
    module docstring). Returns {"lambda_max", "lambda_min", "residual_max", "residual_min" (‖Hv − λv‖
    / max(|λ_max|, |λ_min|): some eigenvalue of H lies within residual·‖H‖ of λ), "matvecs_max",
    "matvecs_min" (products ARPACK used), "converged", "coordinates" (the dimension searched)}.
    """
    space = Coordinates(params, free)
    op, count = hessian_operator(hvp, space)
    v0 = space.flatten(start).cpu().numpy()
    top, top_vector = lanczos(op, "LA", v0, tolerance, vectors, restarts)
    used_top = count[0]
    shift = 2.0 * abs(top) if math.isfinite(top) else 0.0
    bottom, bottom_vector = lanczos(op, "SA", v0, tolerance, vectors, restarts, shift)
    used_bottom = count[0] - used_top
    scale = max(abs(top), abs(bottom), 1e-30)
    return {
        "lambda_max": top,
        "lambda_min": bottom,
        "residual_max": _residual(op, top, top_vector) / scale,
        "residual_min": _residual(op, bottom, bottom_vector) / scale,
        "matvecs_max": used_top,
        "matvecs_min": used_bottom,
        "converged": bool(math.isfinite(top) and math.isfinite(bottom)),
        "coordinates": space.size,
    }


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
