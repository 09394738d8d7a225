"""Hessian trace and extreme eigenvalues against exact Hessians: Hessian-vector products on kept
graphs, zᵀHz by forward tangents and adjoints, Hutchinson, Lanczos (scipy eigsh) for λ_max and λ_min,
the restriction to a ticket's surviving weights; the flatness stage's labels and its report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pathlib import Path
import torch
from torch import nn
from torch.func import functional_call

from conftest import IMAGE_SHAPE, MLP_SHAPE, population, randomize_norms, seeded_model, synthetic
from modeconn.config import ModelConfig
from modeconn.core import curvature
from modeconn.core.params import member, module_state
from modeconn.models import BasicBlock, VGG, make_norm


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny problems are overhead-bound: one thread is faster, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def report_inputs(tmp_path_factory):
    """The curvature CSVs the report tests read, computed once (see `curvature_tables`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return curvature_tables(tmp_path_factory.mktemp("curvature"))
    finally:
        torch.set_num_threads(before)


def tiny_problem(dtype=torch.float64, norm="none", width=6):
    """A 1×width MLP on 12 inputs, 4 classes (110 parameters for width 6), two batches of 16 examples."""
    model = seeded_model(ModelConfig(name="mlp", depth=1, width=width, norm=norm), MLP_SHAPE, seed=3).to(dtype)
    randomize_norms(model, 7)
    params, buffers = module_state(model)
    x, y = synthetic(32, MLP_SHAPE, seed=5)
    batches = [(xb.to(dtype), yb) for xb, yb in zip(x.split(16), y.split(16))]
    return model, params, buffers, batches


def losses_of(model, buffers, batches):
    return [curvature.batch_loss(model, buffers, x, y) for x, y in batches]


def exact_hessian(losses, params) -> torch.Tensor:
    """The full Hessian of the mean loss over a flat parameter vector [n, n].

    By torch.autograd.functional.hessian (plain reverse-over-reverse autograd, one row per backward
    pass): torch.func.hessian (jacfwd of jacrev, under vmap) is off for train-mode BatchNorm in
    torch 2.14 (it disagrees with finite differences; see test_exact_hessian_reference_agrees_with_finite_differences)."""
    names, shapes = list(params), [t.shape for t in params.values()]
    sizes = [t.numel() for t in params.values()]
    flat_params = torch.cat([t.reshape(-1) for t in params.values()])

    def f(vec):
        parts = dict(zip(names, (p.reshape(s) for p, s in zip(vec.split(sizes), shapes))))
        return sum(loss(parts) for loss in losses) / len(losses)

    return torch.autograd.functional.hessian(f, flat_params)


def exact_quadratic(losses, params, probes) -> torch.Tensor:
    """zᵢᵀHzᵢ [P] with Hzᵢ by torch.autograd.functional.vhp (exact; one double backward per probe)."""
    names, shapes = list(params), [t.shape for t in params.values()]
    sizes = [t.numel() for t in params.values()]

    def f(vec):
        parts = dict(zip(names, (p.reshape(s) for p, s in zip(vec.split(sizes), shapes))))
        return sum(loss(parts) for loss in losses) / len(losses)

    flat_params, z = flat(params), stacked_flat({k: probes[k] for k in names})
    return torch.stack([torch.autograd.functional.vhp(f, flat_params, zi)[1] @ zi for zi in z])


def flat(d):
    return torch.cat([t.reshape(-1) for t in d.values()])


def stacked_flat(z):
    return torch.cat([t.flatten(1) for t in z.values()], dim=1)


# ----------------------------------------------------------------------------- Hv on kept graphs


def test_hvp_loss_and_gradient_match_exact_and_reuse_the_graph():
    model, params, buffers, batches = tiny_problem()
    calls = []
    losses = [lambda p, f=f: calls.append(1) or f(p) for f in losses_of(model, buffers, batches)]
    local = curvature.second_order(losses, params)
    assert len(calls) == 2  # one forward per batch, building the graph
    h = exact_hessian(losses_of(model, buffers, batches), params)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in params.items()}
        torch.testing.assert_close(flat(local.hvp(v)), h @ flat(v), rtol=1e-8, atol=1e-10)
    assert len(calls) == 2  # products reuse the kept graphs: no forward pass, no gradient recomputed
    value, grad = curvature.loss_and_grad(losses_of(model, buffers, batches), params)
    assert local.loss.item() == pytest.approx(value.item(), rel=1e-12)
    torch.testing.assert_close(flat(local.grad), flat(grad))


def test_loss_and_grad_is_mean_over_batches():
    model, params, buffers, batches = tiny_problem()
    value, g = curvature.loss_and_grad(losses_of(model, buffers, batches), params)
    x, y = synthetic(32, MLP_SHAPE, seed=5)
    whole = curvature.batch_loss(model, buffers, x.double(), y)
    assert value.item() == pytest.approx(whole(params).item(), rel=1e-10)
    ref = torch.func.grad(whole)(params)
    for k in params:
        torch.testing.assert_close(g[k], ref[k])


# ----------------------------------------------------------------------------- zᵀHz by forward tangents


class TinyResNet(nn.Module):
    """Conv stem + norm, one strided ResNet basic block (projection shortcut), global mean, linear:
    every operation of ResNet-20, small enough for an exact Hessian."""

    def __init__(self, norm: str):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 3, padding=1, bias=norm == "none")
        self.norm = make_norm(norm, 3, spatial=True)
        self.block = BasicBlock(3, 4, 2, norm)
        self.classifier = nn.Linear(4, 4)

    def forward(self, x):
        x = self.block(torch.relu(self.norm(self.stem(x))))
        return self.classifier(x.mean(dim=(-2, -1)))


def tiny_network(arch: str, dtype=torch.float64):
    """(model, params, buffers, batches) of a tiny network of each kind the workflow uses."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        if arch.startswith("mlp"):
            norm = arch.split("-")[1] if "-" in arch else "none"
            model = seeded_model(ModelConfig(name="mlp", depth=2, width=5, norm=norm), MLP_SHAPE, seed=3)
            shape = MLP_SHAPE
        elif arch.startswith("vgg"):
            model, shape = VGG([3, "M", 4], IMAGE_SHAPE, 4, arch.split("-")[1]), IMAGE_SHAPE
        else:
            model, shape = TinyResNet(arch.split("-")[1]), IMAGE_SHAPE
    model = randomize_norms(model.to(dtype), 11)
    params, buffers = module_state(model)
    x, y = synthetic(12, shape, seed=2)
    return model, params, buffers, [(xb.to(dtype), yb) for xb, yb in zip(x.split(6), y.split(6))]


ARCHS = ["mlp", "mlp-bn", "mlp-ln", "vgg-none", "vgg-bn", "resnet-none", "resnet-bn", "resnet-ln"]


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("arch", ARCHS)
def test_quadratic_forms_equal_exact_quadratic_forms(arch, training):
    model, params, buffers, batches = tiny_network(arch)
    probes = curvature.rademacher(params, 5, torch.Generator().manual_seed(0))
    with curvature.batch_statistics(model, training):
        exact = exact_quadratic(losses_of(model, buffers, batches), params, probes)
        got = curvature.quadratic_forms(curvature.trace(model), params, buffers, batches)(probes)
    torch.testing.assert_close(got, exact, rtol=1e-9, atol=1e-9)


def test_exact_hessian_reference_agrees_with_finite_differences():
    # The reference itself, on the case where torch's functorch Hessian is off: train-mode BatchNorm.
    model, params, buffers, batches = tiny_network("mlp-bn")
    z = curvature.member_of(curvature.rademacher(params, 1, torch.Generator().manual_seed(0)), 0)
    with curvature.batch_statistics(model, True):
        losses = losses_of(model, buffers, batches)
        h = exact_hessian(losses, params)

        def phi(e):
            return sum(f({k: params[k] + e * z[k] for k in params}) for f in losses).item() / len(losses)

        eps = 1e-4
        second = (phi(eps) - 2 * phi(0.0) + phi(-eps)) / eps**2
    assert (flat(z) @ h @ flat(z)).item() == pytest.approx(second, rel=1e-5)


def test_second_order_rule_matches_exact_hessian_where_nested_forward_mode_does_not():
    # Why the general rule is forward-over-reverse: torch's jvp-of-jvp gets the second derivative of
    # layer_norm and train-mode batch_norm wrong (an upstream bug); the rule used must not.
    x, u = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    for op in (lambda a: torch.nn.functional.layer_norm(a, (7,)), lambda a: torch.nn.functional.batch_norm(a, None, None, training=True)):
        def scalar(a, op=op):
            return (op(a) ** 3).sum()

        h = torch.autograd.functional.hessian(lambda v: scalar(v.reshape(5, 7)), x.reshape(-1))
        exact = torch.einsum("i,ij,j->", u.reshape(-1), h, u.reshape(-1))
        assert curvature._curvature_along(scalar, (x,), (u,)).item() == pytest.approx(exact.item(), rel=1e-9)


def test_shortcut_rules_equal_the_general_rule(monkeypatch):
    # The "linear" (D²f = 0) and "bilinear" (2 u_x ⋆ u_W) rules are shortcuts: forcing every node
    # through the general jvp/forward-over-reverse rule gives the same quadratic forms.
    model, params, buffers, batches = tiny_network("resnet-bn")
    probes = curvature.rademacher(params, 3, torch.Generator().manual_seed(1))
    program = curvature.trace(model)
    rules = {curvature._rule(model, n) for n in program.graph.nodes if n.op.startswith("call")}
    assert {"linear", "bilinear", "general"} <= rules
    with curvature.batch_statistics(model, False):
        fast = curvature.quadratic_forms(program, params, buffers, batches)(probes)
        monkeypatch.setattr(curvature, "_rule", lambda model, node: "general")
        slow = curvature.quadratic_forms(program, params, buffers, batches)(probes)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)


def test_quadratic_forms_equal_hvp_reference_on_resnet20():
    model, params, buffers = population("resnet20-bn", [0])
    params, buffers = member(params, 0), member(buffers, 0)
    x, y = synthetic(8, IMAGE_SHAPE, seed=3)
    batches = [(x, y)]
    probes = curvature.rademacher(params, 2, torch.Generator().manual_seed(0))
    with curvature.batch_statistics(model, False):
        fast = curvature.quadratic_forms(curvature.trace(model), params, buffers, batches)(probes)
        ref = curvature.quadratic_from_hvp(curvature.second_order(losses_of(model, buffers, batches), params).hvp)(probes)
    torch.testing.assert_close(fast, ref, rtol=2e-3, atol=1e-2)


def test_train_mode_batchnorm_leaves_buffers_untouched():
    model, params, buffers, batches = tiny_network("mlp-bn")
    before = {k: v.clone() for k, v in buffers.items()}
    with curvature.batch_statistics(model, training=True):
        local = curvature.second_order(losses_of(model, buffers, batches), params)
        q = curvature.quadratic_forms(curvature.trace(model), params, buffers, batches)
        est = curvature.hutchinson(q, curvature.rademacher(params, 4, torch.Generator().manual_seed(0)))
        local.hvp(params)
    assert math.isfinite(est["trace"])
    for k in buffers:
        assert torch.equal(buffers[k], before[k]), k
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    # eval mode uses the running statistics: a different loss than train mode's batch statistics
    x, y = batches[0]
    with curvature.batch_statistics(model, training=False):
        eval_loss = curvature.batch_loss(model, buffers, x, y)(params)
    with curvature.batch_statistics(model, training=True):
        train_loss = curvature.batch_loss(model, buffers, x, y)(params)
    assert not torch.isclose(eval_loss, train_loss)


# ----------------------------------------------------------------------------- Hutchinson


def test_hutchinson_within_standard_error_of_exact_trace():
    model, params, buffers, batches = tiny_problem()
    exact = torch.trace(exact_hessian(losses_of(model, buffers, batches), params)).item()
    q = curvature.quadratic_forms(curvature.trace(model), params, buffers, batches)
    est = curvature.hutchinson(q, curvature.rademacher(params, 2000, torch.Generator().manual_seed(1)), chunk=500)
    assert est["probes"] == 2000 and est["samples"].shape == (2000,)
    assert 0 < est["stderr"] < 0.2 * abs(exact)
    assert abs(est["trace"] - exact) < 3.5 * est["stderr"]


def test_hutchinson_standard_error_shrinks_like_inverse_sqrt_probes():
    model, params, buffers, batches = tiny_problem()
    q = curvature.quadratic_forms(curvature.trace(model), params, buffers, batches)
    few = curvature.hutchinson(q, curvature.rademacher(params, 100, torch.Generator().manual_seed(2)))
    many = curvature.hutchinson(q, curvature.rademacher(params, 1600, torch.Generator().manual_seed(2)), chunk=400)
    assert 2.0 < few["stderr"] / many["stderr"] < 8.0  # √16 = 4 up to sampling noise of the std


def test_hutchinson_chunks_and_fallback_give_the_same_samples():
    model, params, buffers, batches = tiny_problem()
    probes = curvature.rademacher(params, 7, torch.Generator().manual_seed(4))
    q = curvature.quadratic_forms(curvature.trace(model), params, buffers, batches)
    whole = curvature.hutchinson(q, probes)["samples"]
    chunked = curvature.hutchinson(q, probes, chunk=3)["samples"]  # chunks 3 + 3 + 1
    by_products = curvature.hutchinson(curvature.quadratic_from_hvp(curvature.second_order(losses_of(model, buffers, batches), params).hvp), probes)["samples"]
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(by_products, whole, rtol=1e-9, atol=1e-10)


def test_rademacher_entries_are_plus_minus_one():
    _, params, _, _ = tiny_problem()
    z = curvature.rademacher(params, 50, torch.Generator().manual_seed(0))
    values = torch.cat([t.reshape(-1) for t in z.values()])
    assert set(values.unique().tolist()) == {-1.0, 1.0}
    assert abs(values.mean().item()) < 0.05


# ----------------------------------------------------------------------------- extreme eigenvalues


def quadratic_with_spectrum(lam: torch.Tensor):
    """L(θ) = ½ θᵀAθ with A = Q diag(λ) Qᵀ (Hessian A), θ [5, 6] = 30 coordinates."""
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    a = q @ torch.diag(lam) @ q.T
    params = {"w": torch.zeros(5, 6, dtype=torch.float64)}

    def loss(p):
        t = p["w"].reshape(-1)
        return 0.5 * t @ a @ t

    return params, loss, q


def test_extreme_eigenvalues_are_the_largest_and_smallest_not_the_largest_magnitude():
    # λ ∈ [−12, 10]: the eigenvalue of largest magnitude (what power iteration finds) is −12, which
    # is λ_min, not the top eigenvalue; both ends are reported, each with its eigen-residual.
    lam = torch.cat([torch.tensor([10.0, -12.0], dtype=torch.float64), torch.linspace(-3.0, 4.0, 28, dtype=torch.float64)])
    params, loss, _ = quadratic_with_spectrum(lam)
    local = curvature.second_order([loss], params)
    start = curvature.gaussian(params, torch.Generator().manual_seed(3))
    out = curvature.extreme_eigenvalues(local.hvp, params, start, tolerance=1e-10, vectors=8, restarts=100)
    assert out["lambda_max"] == pytest.approx(10.0, rel=1e-8)
    assert out["lambda_min"] == pytest.approx(-12.0, rel=1e-8)
    assert out["residual_max"] < 1e-6 and out["residual_min"] < 1e-6
    assert out["converged"] and 0 < out["matvecs_max"] and 0 < out["matvecs_min"] and out["coordinates"] == 30


def test_extreme_eigenvalues_match_exact_spectrum_of_network():
    model, params, buffers, batches = tiny_problem()
    eig = torch.linalg.eigvalsh(exact_hessian(losses_of(model, buffers, batches), params))
    assert eig[0] < 0 < eig[-1]  # an indefinite Hessian: λ_min is a distinct, negative number
    local = curvature.second_order(losses_of(model, buffers, batches), params)
    out = curvature.extreme_eigenvalues(local.hvp, params, curvature.gaussian(params, torch.Generator().manual_seed(0)),
                                        tolerance=1e-8, vectors=20, restarts=200)
    assert out["lambda_max"] == pytest.approx(eig[-1].item(), rel=1e-6)
    assert out["lambda_min"] == pytest.approx(eig[0].item(), rel=1e-5, abs=1e-7 * eig[-1].item())
    # the residual bounds the distance to the spectrum: an eigenvalue lies within it
    scale = max(abs(out["lambda_max"]), abs(out["lambda_min"]))
    assert (eig - out["lambda_min"]).abs().min() <= out["residual_min"] * scale + 1e-12


def test_small_problems_are_solved_densely():
    lam = torch.linspace(-2.0, 5.0, 30, dtype=torch.float64)
    params, loss, _ = quadratic_with_spectrum(lam)
    local = curvature.second_order([loss], params)
    out = curvature.extreme_eigenvalues(local.hvp, params, curvature.gaussian(params, torch.Generator().manual_seed(0)), vectors=30)
    assert out["matvecs_max"] == 30 and out["matvecs_min"] == 30  # n products give the matrix
    assert out["lambda_max"] == pytest.approx(5.0, rel=1e-12) and out["lambda_min"] == pytest.approx(-2.0, rel=1e-12)


# ----------------------------------------------------------------------------- restriction


def ticket_mask(params, seed=0, keep=0.5):
    """A 0/1 mask over the weights (not the biases) keeping about `keep` of them."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.rand(t.shape, generator=g) < keep).to(t.dtype) for k, t in params.items() if k.endswith("weight")}


def test_restricted_curvature_is_that_of_the_submatrix_on_surviving_weights():
    model, params, buffers, batches = tiny_problem()
    mask = ticket_mask(params)
    params = {k: t * mask[k] if k in mask else t for k, t in params.items()}  # a ticket's pruned weights are zero
    free = curvature.free_coordinates(params, mask)
    keep = flat(free)
    h = exact_hessian(losses_of(model, buffers, batches), params)
    sub = h[keep][:, keep]
    local = curvature.second_order(losses_of(model, buffers, batches), params)
    out = curvature.extreme_eigenvalues(local.hvp, params, curvature.gaussian(params, torch.Generator().manual_seed(0)),
                                        tolerance=1e-8, vectors=20, restarts=200, free=free)
    eig = torch.linalg.eigvalsh(sub)
    assert out["coordinates"] == int(keep.sum()) < keep.numel()
    assert out["lambda_max"] == pytest.approx(eig[-1].item(), rel=1e-6)
    assert out["lambda_min"] == pytest.approx(eig[0].item(), rel=1e-5, abs=1e-7 * eig[-1].item())
    full = torch.linalg.eigvalsh(h)
    assert abs(full[0].item() - eig[0].item()) > 1e-6  # the restriction changes the answer
    # Hutchinson with projected probes: each sample is z_fᵀ H_ff z_f exactly, and tr(H_ff) is estimated
    probes = curvature.restrict(curvature.rademacher(params, 6, torch.Generator().manual_seed(1)), free)
    q = curvature.quadratic_forms(curvature.trace(model), params, buffers, batches)
    zf = stacked_flat(probes)[:, keep]
    torch.testing.assert_close(curvature.hutchinson(q, probes)["samples"], torch.einsum("pi,ij,pj->p", zf, sub, zf), rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- reparametrisation


def test_dinh_rescaling_keeps_the_function_and_changes_the_curvature():
    model, params, buffers, batches = tiny_problem()
    x, _ = synthetic(32, MLP_SHAPE, seed=5)
    scaled = curvature.rescaled_layers(params, "layers.0", "classifier", 5.0)
    out = functional_call(model, (params, buffers), (x.double(),))
    torch.testing.assert_close(functional_call(model, (scaled, buffers), (x.double(),)), out)
    exact = torch.trace(exact_hessian(losses_of(model, buffers, batches), params)).item()
    exact_scaled = torch.trace(exact_hessian(losses_of(model, buffers, batches), scaled)).item()
    assert abs(exact_scaled - exact) > 0.5 * abs(exact)
    with pytest.raises(ValueError, match="positive"):
        curvature.rescaled_layers(params, "layers.0", "classifier", 0.0)


# ----------------------------------------------------------------------------- the stage


def tiny_data():
    from modeconn.data import Dataset

    xtr, ytr = synthetic(60, MLP_SHAPE, seed=1)
    xte, yte = synthetic(20, MLP_SHAPE, seed=2)
    return Dataset("synthetic", xtr, ytr, xte, yte, num_classes=4)


def stage_cfg(**flatness):
    from modeconn.config import Config

    return Config.from_dict({"model": {"depth": 2, "width": 16}, "tracking": {"enabled": False},
                             "flatness": {"batch_size": 20, "batches": 2, "probes": 4, "lanczos_restarts": 30, "path_points": 3, **flatness}})


def save_networks(tmp_path, names, params, buffers, meta=None):
    from modeconn import checkpoint

    files = []
    for i, name in enumerate(names):
        files.append(tmp_path / f"{name}.safetensors")
        files[-1].parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save(files[-1], checkpoint.Checkpoint(member(params, i), member(buffers, i), meta or {"kind": "seed"}))
    return files


def test_path_specs_parse_and_path_checkpoints_give_their_points(tmp_path):
    from modeconn import checkpoint
    from modeconn.families.flatness import stage as flatness

    _, params, buffers = population("mlp", [0, 1, 2])
    files = save_networks(tmp_path, ["m0", "m1", "m2"], params, buffers)
    bez = tmp_path / "curve.safetensors"
    checkpoint.save(bez, checkpoint.Checkpoint(params, buffers, {"kind": "path", "path": "bezier", "anchors": 3}))
    cfg = stage_cfg()
    group = flatness.load_path(cfg, flatness.Spec.parse(f"curves={bez}"), torch.device("cpu"))
    assert group.t == [0.0, 0.5, 1.0] and group.path == "bezier" and group.point == ["t=0", "t=0.5", "t=1"]
    for k in params:  # ends are the end anchors, the middle is the quadratic Bezier point
        torch.testing.assert_close(group.params[k][0], params[k][0])
        torch.testing.assert_close(group.params[k][2], params[k][2])
        torch.testing.assert_close(group.params[k][1], 0.25 * params[k][0] + 0.5 * params[k][1] + 0.25 * params[k][2])
    linear = flatness.load_path(cfg, flatness.Spec.parse(f"seeds={files[0]},{files[1]}"), torch.device("cpu"))
    assert linear.path == "linear" and linear.source == f"{tmp_path / 'm0'} – {tmp_path / 'm1'}"
    with pytest.raises(ValueError, match="FAMILY=FILE"):
        flatness.Spec.parse("no-family")
    with pytest.raises(ValueError, match="not a minimum"):
        flatness.load_minimum(cfg, flatness.Spec.parse(f"x={bez}"), torch.device("cpu"))
    bad = tmp_path / "bad.safetensors"
    checkpoint.save(bad, checkpoint.Checkpoint(params, buffers, {"kind": "fge"}))
    with pytest.raises(checkpoint.CheckpointError, match="bad.safetensors"):
        flatness.load_path(cfg, flatness.Spec.parse(f"x={bad}"), torch.device("cpu"))


def test_simplex_points_are_vertices_and_centre_not_positions_t(tmp_path):
    from modeconn import checkpoint
    from modeconn.families.flatness import stage as flatness

    _, params, buffers = population("mlp", [0, 1, 2])
    simplex = tmp_path / "simplex.safetensors"
    checkpoint.save(simplex, checkpoint.Checkpoint(params, buffers, {"kind": "simplex", "vertices": 3}))
    g = flatness.load_path(stage_cfg(), flatness.Spec.parse(f"simplex={simplex}"), torch.device("cpu"))
    assert g.kind == "simplex" and g.point == ["vertex 0", "vertex 1", "vertex 2", "centre"]
    assert all(math.isnan(t) for t in g.t)  # a vertex index is no position along a path
    for k in params:
        torch.testing.assert_close(g.params[k][3], params[k].mean(0))


def test_file_labels_keep_the_whole_file_identity():
    from pathlib import Path

    from modeconn.families.flatness.stage import file_label

    assert file_label(Path("results/rebasin/pairs/seed0-seed1/weight.safetensors"), "results") == "rebasin/pairs/seed0-seed1/weight"
    assert file_label(Path("results/lottery/level2/seed0.imp.safetensors"), "results") == "lottery/level2/seed0.imp"
    assert file_label(Path("results/lottery/level1/seed0.imp.safetensors"), "results") != file_label(Path("results/lottery/level2/seed0.imp.safetensors"), "results")
    # A named run's files get the same labels relative to its own results folder (run.results).
    named = file_label(Path("results/mnist_cpu/lottery/level2/seed0.imp.safetensors"), "results/mnist_cpu")
    assert named == file_label(Path("results/lottery/level2/seed0.imp.safetensors"), "results")
    # A file outside the run's folder keeps its whole path.
    assert file_label(Path("elsewhere/seed0.safetensors"), "results") == "elsewhere/seed0"


def test_matched_paths_from_one_seed_keep_distinct_labels(tmp_path, monkeypatch):
    # Re-Basin's paths run from seed a to seed b permuted onto a: results/rebasin/pairs/seed{a}-seed{b}/weight.
    # Pairs (0, 1) and (0, 2) share A and the stem of B; their labels must still differ.
    from modeconn.families.flatness import stage as flatness

    monkeypatch.chdir(tmp_path)  # the workflow passes paths relative to the project, like these
    _, params, buffers = population("mlp", [0, 1, 2])
    files = save_networks(tmp_path, ["results/seeds/seed0", "results/rebasin/pairs/seed0-seed1/weight", "results/rebasin/pairs/seed0-seed2/weight"], params, buffers)
    files = [Path(f).relative_to(tmp_path) for f in files]
    cfg = stage_cfg()
    a = flatness.load_path(cfg, flatness.Spec.parse(f"rebasin={files[0]},{files[1]}"), torch.device("cpu"))
    b = flatness.load_path(cfg, flatness.Spec.parse(f"rebasin={files[0]},{files[2]}"), torch.device("cpu"))
    assert a.source == "seeds/seed0 – rebasin/pairs/seed0-seed1/weight"
    assert a.source != b.source


def test_stage_table_records_the_evaluation_set_with_every_number():
    from modeconn.families.flatness import stage as flatness
    from modeconn.jobs import skeleton

    cfg, data = stage_cfg(), tiny_data()
    model = skeleton(cfg, data, torch.device("cpu"))
    _, params, buffers = population("mlp", [0, 1])
    group = flatness.Group("seeds", "seed", "x", "", [float("nan"), float("nan")], params, buffers)
    batches = flatness.evaluation_batches(data, cfg)
    assert [b[0].shape[0] for b in batches] == [20, 20]
    table = flatness.group_table(cfg, data, model, group, batches)
    assert len(table) == 2
    for col, value in {"hessian_batch_size": 20, "hessian_batches": 2, "hessian_examples": 40, "hessian_mode": "eval",
                       "probes": 4, "hessian_split": "train", "lanczos_vectors": 10, "lanczos_max_restarts": 30,
                       "eig_tolerance": 1e-3, "hessian_restriction": "all parameters",
                       "quadratic_method": flatness.TANGENTS}.items():
        assert (table[col] == value).all(), col
    assert (table.hessian_coordinates == table.parameters).all()
    assert (table.trace_se > 0).all() and table.eig_converged.all()
    assert (table.lambda_min < table.lambda_max).all() and (table.lambda_max_matvecs > 0).all()
    # The same network alone gives the same numbers (same fixed set, probes and Lanczos start).
    alone = flatness.group_table(cfg, data, model, flatness.Group("seeds", "seed", "x", "", [0.0], {k: v[1:] for k, v in params.items()}, buffers), batches)
    for col in ("trace", "lambda_max", "lambda_min"):
        assert alone[col].iloc[0] == pytest.approx(table[col].iloc[1], rel=1e-5), col


def test_a_network_met_twice_in_a_job_is_measured_once_with_the_same_numbers(monkeypatch):
    """A seed that ends several paths: its second row is the first one's numbers, not a new estimate."""
    from modeconn.families.flatness import stage as flatness
    from modeconn.jobs import skeleton

    cfg, data = stage_cfg(), tiny_data()
    model = skeleton(cfg, data, torch.device("cpu"))
    _, params, buffers = population("mlp", [0, 1])
    batches = flatness.evaluation_batches(data, cfg)
    fresh = flatness.group_curvature(cfg, model, params, buffers, batches)
    calls = []
    real = flatness.network_curvature
    monkeypatch.setattr(flatness, "network_curvature", lambda *a: calls.append(1) or real(*a))
    known = {}
    twice = {k: torch.cat([v, v[:1]]) for k, v in params.items()}  # members 0, 1, 0
    rows = flatness.group_curvature(cfg, model, twice, {k: torch.cat([v, v[:1]]) for k, v in buffers.items()}, batches, known=known)
    assert len(calls) == 2 and len(known) == 2
    assert rows[0] == rows[2] == fresh[0] and rows[1] == fresh[1]
    # a later group of the same job (a minimum that is also an endpoint) reuses it as well
    again = flatness.group_curvature(cfg, model, {k: v[1:] for k, v in params.items()}, {k: v[1:] for k, v in buffers.items()}, batches, known=known)
    assert len(calls) == 2 and again == [fresh[1]]
    # restricted to other coordinates, the same weights are another measurement
    first = next(iter(params))
    mask = {first: torch.ones_like(params[first][0])}
    mask[first].view(-1)[0] = 0
    free = flatness.curv.free_coordinates(member(params, 0), mask)
    flatness.group_curvature(cfg, model, {k: v[:1] for k, v in params.items()}, {k: v[:1] for k, v in buffers.items()}, batches, free, known=known)
    assert len(calls) == 3


def test_stage_falls_back_to_products_where_fx_cannot_trace(monkeypatch):
    from modeconn.families.flatness import stage as flatness
    from modeconn.jobs import skeleton

    cfg, data = stage_cfg(), tiny_data()
    model = skeleton(cfg, data, torch.device("cpu"))
    _, params, buffers = population("mlp", [0])
    group = flatness.Group("seeds", "seed", "x", "", [float("nan")], params, buffers)
    batches = flatness.evaluation_batches(data, cfg)
    fast = flatness.group_table(cfg, data, model, group, batches)

    def untraceable(model):
        raise torch.fx.proxy.TraceError("data-dependent control flow")

    monkeypatch.setattr(flatness.curv, "trace", untraceable)
    slow = flatness.group_table(cfg, data, model, group, batches)
    assert slow.quadratic_method.iloc[0] == flatness.PRODUCTS and fast.quadratic_method.iloc[0] == flatness.TANGENTS
    assert slow.trace.iloc[0] == pytest.approx(fast.trace.iloc[0], rel=1e-4)


def test_ticket_curvature_is_restricted_to_its_surviving_weights(tmp_path):
    from modeconn import checkpoint
    from modeconn.core import pruning
    from modeconn.families.flatness import stage as flatness
    from modeconn.jobs import skeleton
    from modeconn.models import model_info

    cfg, data = stage_cfg(), tiny_data()
    model = skeleton(cfg, data, torch.device("cpu"))
    _, params, buffers = population("mlp", [0])
    p, b = member(params, 0), member(buffers, 0)
    mask = ticket_mask({n: p[n] for n in model_info(model).prunable}, seed=3, keep=0.3)
    ticket = pruning.apply(p, mask)  # how the lottery stage saves a ticket: pruned weights exactly zero
    level = tmp_path / "results/lottery/level1"
    level.mkdir(parents=True)
    meta = {"kind": "ticket", "mask_file": "seed0.imp.mask.safetensors", "remaining": pruning.remaining(mask)}
    checkpoint.save(level / "seed0.imp.safetensors", checkpoint.Checkpoint(ticket, b, meta))
    checkpoint.save(level / "seed0.imp.mask.safetensors", checkpoint.Checkpoint(mask, {}, {"kind": "mask"}))
    spec = flatness.Spec.parse(f"lottery={level / 'seed0.imp.safetensors'}")
    group = flatness.load_minimum(cfg, spec, torch.device("cpu"), model)
    assert group.source.endswith("lottery/level1/seed0.imp") and group.restriction == "surviving weights (seed0.imp.mask.safetensors)"
    batches = flatness.evaluation_batches(data, cfg)
    restricted = flatness.group_table(cfg, data, model, group, batches).iloc[0]
    dense = curvature.parameter_count(p)
    survivors = pruning.remaining(mask) + dense - pruning.total(mask)  # surviving weights and every bias
    assert restricted.hessian_coordinates == survivors < restricted.parameters == dense
    unrestricted = flatness.group_table(cfg, data, model, flatness.Group("lottery", "ticket", "x", "", [float("nan")], group.params, group.buffers), batches).iloc[0]
    assert unrestricted.hessian_coordinates == dense
    assert restricted.trace != pytest.approx(unrestricted.trace, rel=1e-3)
    # The exact restricted Hessian of that ticket: the stage's probes (projected) give exactly its
    # quadratic forms, and λ_max, λ_min are its extreme eigenvalues.
    with curvature.batch_statistics(model, False):
        h = exact_hessian(losses_of(model, b, batches), member(group.params, 0))
    keep = flat(group.free)
    sub = h[keep][:, keep]
    z = stacked_flat(curvature.rademacher(member(group.params, 0), 4, flatness.generator("hutchinson", cfg.flatness.seed)))[:, keep]
    assert restricted.trace == pytest.approx(torch.einsum("pi,ij,pj->p", z, sub, z).mean().item(), rel=1e-4)
    eig = torch.linalg.eigvalsh(sub)
    assert restricted.lambda_max == pytest.approx(eig[-1].item(), rel=1e-3)
    assert restricted.lambda_min == pytest.approx(eig[0].item(), abs=2e-3 * eig[-1].item())
    # Without the mask file the restriction comes from the zero weights, checked against the recorded count.
    (level / "seed0.imp.mask.safetensors").unlink()
    derived = flatness.load_minimum(cfg, spec, torch.device("cpu"), model)
    assert "nonzero prunable weights" in derived.restriction
    assert all(torch.equal(derived.free[k], group.free[k]) for k in group.free)
    checkpoint.save(level / "seed0.imp.safetensors", checkpoint.Checkpoint(ticket, b, meta | {"remaining": 1}))
    with pytest.raises(ValueError, match="recorded"):
        flatness.load_minimum(cfg, spec, torch.device("cpu"), model)


# ----------------------------------------------------------------------------- the report


def curvature_tables(tmp_path):
    """Minima (with the rescaled copy), unmatched and matched linear paths, a simplex: CSVs."""
    from modeconn.families.flatness import stage as flatness
    from modeconn.jobs import skeleton

    cfg, data = stage_cfg(), tiny_data()
    model = skeleton(cfg, data, torch.device("cpu"))
    _, params, buffers = population("mlp", [0, 1, 2])
    batches = flatness.evaluation_batches(data, cfg)
    first = {k: v[:1] for k, v in params.items()}
    minima = flatness.Group("seeds", "seed", "seeds/s0", "", [float("nan")] * 3, params, buffers)
    groups = [minima, *flatness.rescaled(cfg, model, [flatness.Group("seeds", "seed", "seeds/s0", "", [float("nan")], first, buffers)])]
    assert groups[-1].kind == "rescaled"
    only = tmp_path / "minima.csv"
    pd.concat([flatness.group_table(cfg, data, model, g, batches) for g in groups]).to_csv(only, index=False)
    t = [0.0, 0.5, 1.0]
    paths = [flatness.Group("seeds", "path", "seeds/s0 – seeds/s1", "linear", t, params, buffers),
             flatness.Group("seeds", "path", "seeds/s0 – seeds/s2", "linear", t, params, buffers),
             flatness.Group("rebasin", "path", "seeds/s0 – rebasin/pairs/s0-s1/weight", "linear", t, params, buffers),
             flatness.Group("rebasin", "path", "seeds/s0 – rebasin/pairs/s0-s2/weight", "linear", t, params, buffers),
             flatness.Group("simplex", "simplex", "simplex/s0", "simplex", [float("nan")] * 3, params, buffers, point=["vertex 0", "vertex 1", "centre"])]
    csv = tmp_path / "paths.csv"
    pd.concat([flatness.group_table(cfg, data, model, g, batches) for g in paths]).to_csv(csv, index=False)
    return only, csv


def test_report_from_minima_only_and_from_minima_with_paths(tmp_path, report_inputs):
    from modeconn.families.flatness import REPORTS, report

    only, paths = report_inputs
    m = report.write([only], tmp_path / "a", stage_cfg())
    assert m["minima"] == 3 and len(m["rescaled"]) == 1  # the rescaled copy is not counted as a minimum
    assert m["rescaled"][0]["lambda_max"] != pytest.approx(m["rescaled"][0]["lambda_max_original"], rel=1e-2)
    text = (tmp_path / "a/section.md").read_text()
    assert "Dinh et al. 2017" in text and "λ_min" in text and "top eigenvalue" not in text and "power iteration" not in text
    m = report.write([only, paths], tmp_path / "b", stage_cfg())
    for name in REPORTS:
        assert (tmp_path / "b" / name).stat().st_size > 0, name
    assert set(m["lambda_min"]) == {"seeds"} and m["lambda_min"]["seeds"]["mean"] < m["lambda_max"]["seeds"]["mean"]


def test_peak_ratio_is_reported_per_group_of_paths(tmp_path, report_inputs):
    from modeconn.families.flatness import report

    only, paths = report_inputs
    m = report.write([only, paths], tmp_path / "b", stage_cfg())
    ratio = m["path_peak_trace_over_endpoints"]
    assert set(ratio) == {"seeds (linear)", "rebasin (linear)"}  # the simplex is no path; groups never pooled
    assert ratio["seeds (linear)"]["paths"] == 2 and ratio["rebasin (linear)"]["paths"] == 2 and m["paths"] == 4
    section = (tmp_path / "b/section.md").read_text()
    assert "- seeds (linear):" in section and "- rebasin (linear):" in section


def test_simplex_vertices_are_reported_apart_from_paths(tmp_path, report_inputs):
    from modeconn.families.flatness import report

    only, paths = report_inputs
    m = report.write([only, paths], tmp_path / "b", stage_cfg())
    on_t = pd.read_csv(tmp_path / "b/paths.csv")
    simplex = pd.read_csv(tmp_path / "b/simplex.csv")
    assert "simplex" not in set(on_t.family) and on_t.t.between(0.0, 1.0).all()
    assert list(simplex.point) == ["vertex 0", "vertex 1", "centre"] and m["simplex_points"] == 3
    assert "### Simplexes" in (tmp_path / "b/traces.md").read_text()


def test_paths_figure_has_one_row_of_panels_per_group(tmp_path, monkeypatch, report_inputs):
    from modeconn.families.flatness import report

    figures = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.__setitem__(path.name, fig))
    only, paths = report_inputs
    report.write([only, paths], tmp_path / "b", stage_cfg())
    axes = figures["paths.png"].axes
    assert len(axes) == 2 * 3  # two groups × (trace, λ_max, λ_min)
    for ax in axes:
        assert len([line for line in ax.get_lines() if len(line.get_xdata()) == 3]) == 2  # that group's two paths only
    assert {ax.get_title() for ax in axes} == {"seeds (linear)", "rebasin (linear)"}
    labels = [t.get_text() for t in axes[3].get_legend().get_texts()]
    assert labels == ["seeds/s0 – s0-s1/weight", "seeds/s0 – s0-s2/weight"]  # short, and still distinct


def test_short_labels_lengthen_until_distinct():
    from modeconn.families.flatness.report import short_labels

    assert short_labels(["a/s0 – a/s1", "a/s0 – a/s2"]) == {"a/s0 – a/s1": "s0 – s1", "a/s0 – a/s2": "s0 – s2"}
    assert set(short_labels(["p/x/w – q", "p/y/w – q"]).values()) == {"x/w – q", "y/w – q"}


def test_report_does_not_write_nan_into_metrics(tmp_path, report_inputs):
    from modeconn.families.flatness import report

    table = pd.read_csv(report_inputs[0])
    only = tmp_path / "minima.csv"
    table.loc[1, ["lambda_max", "lambda_min", "lambda_max_residual", "lambda_min_residual"]] = np.nan
    table.loc[1, "eig_converged"] = False
    table.to_csv(only, index=False)
    m = report.write([only], tmp_path / "c", stage_cfg())
    assert m["eig_not_converged"] == 1 and math.isfinite(m["lambda_max"]["seeds"]["mean"])
    assert "did not converge" in (tmp_path / "c/traces.md").read_text()


def test_probes_and_start_do_not_depend_on_the_order_of_the_parameters():
    _, params, _, _ = tiny_problem()
    backwards = dict(reversed(list(params.items())))
    for draw in (lambda p: curvature.rademacher(p, 3, torch.Generator().manual_seed(0)),
                 lambda p: curvature.gaussian(p, torch.Generator().manual_seed(0))):
        a, b = draw(params), draw(backwards)
        assert list(b) == list(backwards)
        assert all(torch.equal(a[k], b[k]) for k in params)
