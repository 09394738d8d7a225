"""Hessian trace and top eigenvalue: Hutchinson vs the exact Hessian, power iteration on a known
quadratic, batched (vmap) Hessian-vector products vs the loop, train-mode BN without side effects."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, hessian

from conftest import MLP_SHAPE, population, seeded_model, synthetic
from modeconn.config import ModelConfig
from modeconn.core import curvature
from modeconn.core.params import member, module_state


def tiny_problem(dtype=torch.float64):
    """A 1×6 MLP on 12 inputs, 4 classes (110 parameters), two batches of 16 examples."""
    model = seeded_model(ModelConfig(name="mlp", depth=1, width=6), MLP_SHAPE, seed=3).to(dtype)
    params, buffers = module_state(model)
    x, y = synthetic(32, MLP_SHAPE, seed=5)
    losses = [curvature.batch_loss(model, buffers, xb.to(dtype), yb) for xb, yb in zip(x.split(16), y.split(16))]
    return model, params, buffers, losses


def exact_hessian(losses, params) -> torch.Tensor:
    """The full Hessian of the mean loss over a flat parameter vector [n, n]."""
    names, shapes = list(params), [t.shape for t in params.values()]
    sizes = [t.numel() for t in params.values()]
    flat = torch.cat([t.reshape(-1) for t in params.values()])

    def f(vec):
        parts = dict(zip(names, (p.reshape(s) for p, s in zip(vec.split(sizes), shapes))))
        return sum(loss(parts) for loss in losses) / len(losses)

    return hessian(f)(flat)


def flat(d):
    return torch.cat([t.reshape(-1) for t in d.values()])


def test_hvp_matches_exact_hessian():
    _, params, _, losses = tiny_problem()
    h = exact_hessian(losses, params)
    g = torch.Generator().manual_seed(0)
    v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in params.items()}
    hv = curvature.hvp_operator(losses, params)(v)
    torch.testing.assert_close(flat(hv), h @ flat(v), rtol=1e-8, atol=1e-10)


def test_hutchinson_within_standard_error_of_exact_trace():
    _, params, _, losses = tiny_problem()
    exact = torch.trace(exact_hessian(losses, params)).item()
    est = curvature.hutchinson(curvature.hvp_operator(losses, params), params, probes=2000, generator=torch.Generator().manual_seed(1), chunk=500)
    assert est["probes"] == 2000 and est["samples"].shape == (2000,)
    assert 0 < est["stderr"] < 0.2 * abs(exact)
    assert abs(est["trace"] - exact) < 3.5 * est["stderr"]


def test_hutchinson_standard_error_shrinks_like_inverse_sqrt_probes():
    _, params, _, losses = tiny_problem()
    hvp = curvature.hvp_operator(losses, params)
    few = curvature.hutchinson(hvp, params, 100, torch.Generator().manual_seed(2))
    many = curvature.hutchinson(hvp, params, 1600, torch.Generator().manual_seed(2), chunk=400)
    assert 2.0 < few["stderr"] / many["stderr"] < 8.0  # √16 = 4 up to sampling noise of the std


def test_power_iteration_finds_top_eigenvalue_of_known_quadratic():
    # L(θ) = ½ θᵀAθ with A = Q diag(λ) Qᵀ has Hessian A; top eigenvalue 10, next 5.
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([10.0, 5.0], dtype=torch.float64), torch.linspace(-3.0, 4.0, 28, dtype=torch.float64)])
    a = q @ torch.diag(lam) @ q.T
    params = {"w": torch.zeros(5, 6, dtype=torch.float64)}

    def loss(p):
        t = p["w"].reshape(-1)
        return 0.5 * t @ a @ t

    hvp = curvature.hvp_operator([loss], params)
    out = curvature.power_iteration(hvp, params, iterations=200, generator=torch.Generator().manual_seed(3), tolerance=1e-12)
    assert out["eigenvalue"] == pytest.approx(10.0, rel=1e-6)
    assert out["residual"] < 1e-3
    top = q[:, 0]
    assert abs(flat(out["vector"]) @ top) == pytest.approx(1.0, abs=1e-5)


def test_power_iteration_matches_exact_spectrum_of_network():
    _, params, _, losses = tiny_problem()
    eig = torch.linalg.eigvalsh(exact_hessian(losses, params))
    top = eig[eig.abs().argmax()].item()
    out = curvature.power_iteration(curvature.hvp_operator(losses, params), params, 500, torch.Generator().manual_seed(0), tolerance=1e-10)
    assert out["eigenvalue"] == pytest.approx(top, rel=1e-3)


def test_batched_hvp_equals_loop():
    _, params, _, losses = tiny_problem()
    hvp = curvature.hvp_operator(losses, params)
    probes = curvature.rademacher(params, 7, torch.Generator().manual_seed(4))
    batched = curvature.batched_hvp(hvp, probes, chunk=3)  # chunks 3 + 3 + 1
    for i in range(7):
        one = hvp(member(probes, i))
        for k in params:
            torch.testing.assert_close(batched[k][i], one[k], rtol=1e-10, atol=1e-12)


def test_rademacher_entries_are_plus_minus_one():
    _, params, _, _ = tiny_problem()
    z = curvature.rademacher(params, 50, torch.Generator().manual_seed(0))
    values = torch.cat([t.reshape(-1) for t in z.values()])
    assert set(values.unique().tolist()) == {-1.0, 1.0}
    assert abs(values.mean().item()) < 0.05


def test_loss_and_grad_is_mean_over_batches():
    model, params, buffers, losses = tiny_problem()
    value, g = curvature.loss_and_grad(losses, params)
    x, y = synthetic(32, MLP_SHAPE, seed=5)
    whole = curvature.batch_loss(model, buffers, x.double(), y)
    assert value.item() == pytest.approx(whole(params).item(), rel=1e-10)
    ref = torch.func.grad(whole)(params)
    for k in params:
        torch.testing.assert_close(g[k], ref[k])


def test_train_mode_batchnorm_leaves_buffers_untouched():
    model, params, buffers = population("mlp-bn", [0])
    p, b = member(params, 0), member(buffers, 0)
    before = {k: v.clone() for k, v in b.items()}
    x, y = synthetic(16, MLP_SHAPE, seed=1)
    with curvature.batch_statistics(model, training=True):
        hvp = curvature.hvp_operator([curvature.batch_loss(model, b, x, y)], p)
        est = curvature.hutchinson(hvp, p, 4, torch.Generator().manual_seed(0))
    assert math.isfinite(est["trace"])
    for k in b:
        assert torch.equal(b[k], before[k]), k
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    # eval mode uses the running statistics: a different loss than train mode's batch statistics
    with curvature.batch_statistics(model, training=False):
        eval_loss = curvature.batch_loss(model, b, x, y)(p)
    with curvature.batch_statistics(model, training=True):
        train_loss = curvature.batch_loss(model, b, x, y)(p)
    assert not torch.isclose(eval_loss, train_loss)


# ----------------------------------------------------------------------------- the stage


def tiny_data():
    from modeconn.data import Dataset

    xtr, ytr = synthetic(60, MLP_SHAPE, seed=1)
    xte, yte = synthetic(20, MLP_SHAPE, seed=2)
    return Dataset("synthetic", xtr, ytr, xte, yte, num_classes=4)


def stage_cfg():
    from modeconn.config import Config

    return Config.from_dict({"model": {"depth": 2, "width": 16}, "tracking": {"enabled": False},
                             "flatness": {"batch_size": 20, "batches": 2, "probes": 4, "power_iterations": 3, "path_points": 3}})


def test_path_specs_parse_and_path_checkpoints_give_their_points(tmp_path):
    from modeconn import checkpoint
    from modeconn.families.flatness import stage as flatness

    _, params, buffers = population("mlp", [0, 1, 2])
    files = []
    for i in range(3):
        files.append(tmp_path / f"m{i}.safetensors")
        checkpoint.save(files[-1], checkpoint.Checkpoint(member(params, i), member(buffers, i), {"kind": "seed"}))
    bez = tmp_path / "curve.safetensors"
    checkpoint.save(bez, checkpoint.Checkpoint(params, buffers, {"kind": "path", "path": "bezier", "anchors": 3}))
    cfg = stage_cfg()
    spec = flatness.Spec.parse(f"curves={bez}")
    group = flatness.load_path(cfg, spec, torch.device("cpu"))
    assert group.t == [0.0, 0.5, 1.0] and group.path == "bezier"
    for k in params:  # ends are the end anchors, the middle is the quadratic Bezier point
        torch.testing.assert_close(group.params[k][0], params[k][0])
        torch.testing.assert_close(group.params[k][2], params[k][2])
        torch.testing.assert_close(group.params[k][1], 0.25 * params[k][0] + 0.5 * params[k][1] + 0.25 * params[k][2])
    linear = flatness.load_path(cfg, flatness.Spec.parse(f"seeds={files[0]},{files[1]}"), torch.device("cpu"))
    assert linear.path == "linear" and linear.source == "m0–m1"
    simplex = tmp_path / "simplex.safetensors"
    checkpoint.save(simplex, checkpoint.Checkpoint(params, buffers, {"kind": "simplex", "vertices": 3}))
    g = flatness.load_path(cfg, flatness.Spec.parse(f"simplex={simplex}"), torch.device("cpu"))
    assert len(g.t) == 4 and g.kind == "simplex"
    with pytest.raises(ValueError, match="FAMILY=FILE"):
        flatness.Spec.parse("no-family")
    with pytest.raises(ValueError, match="not a minimum"):
        flatness.load_minimum(cfg, flatness.Spec.parse(f"x={bez}"), torch.device("cpu"))
    bad = tmp_path / "bad.safetensors"
    checkpoint.save(bad, checkpoint.Checkpoint(params, buffers, {"kind": "fge"}))
    with pytest.raises(checkpoint.CheckpointError, match="bad.safetensors"):
        flatness.load_path(cfg, flatness.Spec.parse(f"x={bad}"), torch.device("cpu"))


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
                       "probes": 4, "hessian_split": "train"}.items():
        assert (table[col] == value).all(), col
    assert (table.trace_se > 0).all() and table.eig_iterations.le(3).all()
    # The same network alone gives the same numbers (same fixed set, probes and start).
    alone = flatness.group_table(cfg, data, model, flatness.Group("seeds", "seed", "x", "", [0.0], {k: v[1:] for k, v in params.items()}, buffers), batches)
    assert alone.trace.iloc[0] == pytest.approx(table.trace.iloc[1], rel=1e-5)


def test_dinh_rescaling_keeps_the_function_and_changes_the_curvature():
    model, params, buffers, losses = tiny_problem()
    x, _ = synthetic(32, MLP_SHAPE, seed=5)
    scaled = curvature.rescaled_layers(params, "layers.0", "classifier", 5.0)
    out = functional_call(model, (params, buffers), (x.double(),))
    torch.testing.assert_close(functional_call(model, (scaled, buffers), (x.double(),)), out)
    exact = torch.trace(exact_hessian(losses, params)).item()
    exact_scaled = torch.trace(exact_hessian(losses, scaled)).item()
    assert abs(exact_scaled - exact) > 0.5 * abs(exact)
    with pytest.raises(ValueError, match="positive"):
        curvature.rescaled_layers(params, "layers.0", "classifier", 0.0)


def test_report_from_minima_only_and_from_minima_with_paths(tmp_path):
    from modeconn.families.flatness import report
    from modeconn.families.flatness import stage as flatness
    from modeconn.jobs import skeleton

    cfg, data = stage_cfg(), tiny_data()
    model = skeleton(cfg, data, torch.device("cpu"))
    _, params, buffers = population("mlp", [0, 1, 2])
    batches = flatness.evaluation_batches(data, cfg)
    minima = flatness.Group("seeds", "seed", "s.safetensors", "", [float("nan")] * 3, params, buffers)
    groups = [minima, *flatness.rescaled(cfg, model, [flatness.Group("seeds", "seed", "s.safetensors", "", [float("nan")], {k: v[:1] for k, v in params.items()}, buffers)])]
    assert groups[-1].kind == "rescaled"
    only = tmp_path / "minima.csv"
    pd_table = __import__("pandas").concat([flatness.group_table(cfg, data, model, g, batches) for g in groups])
    pd_table.to_csv(only, index=False)
    m = report.write([only], tmp_path / "a", cfg)
    assert m["minima"] == 3 and len(m["rescaled"]) == 1  # the rescaled copy is not counted as a minimum
    assert "Dinh et al. 2017" in (tmp_path / "a/section.md").read_text()
    path = flatness.Group("seeds", "path", "s0–s1", "linear", [0.0, 0.5, 1.0], params, buffers)
    paths = tmp_path / "paths.csv"
    flatness.group_table(cfg, data, model, path, batches).to_csv(paths, index=False)
    m = report.write([only, paths], tmp_path / "b", cfg)
    assert m["path_peak_trace_over_endpoints"]["paths"] == 1
    for name in ("traces.csv", "traces.md", "minima.csv", "paths.csv", "paths.png", "sharpness.png", "metrics.json", "section.md"):
        assert (tmp_path / "b" / name).stat().st_size > 0, name


@pytest.mark.parametrize("arch", ["mlp", "mlp-bn"])
def test_population_estimators_equal_the_per_network_loop(arch):
    model, params, buffers = population(arch, [0, 1, 2])
    x, y = synthetic(24, MLP_SHAPE, seed=3)
    batches = list(zip(x.split(12), y.split(12)))
    probes = curvature.rademacher(member(params, 0), 6, torch.Generator().manual_seed(7))
    with curvature.batch_statistics(model, training=False):
        hvp = curvature.member_hvp(model, batches)
        samples = curvature.population_hutchinson(hvp, params, buffers, probes, chunk=4)
        trace, stderr = curvature.hutchinson_summary(samples)
        top = curvature.population_power_iteration(hvp, params, buffers, 15, torch.Generator().manual_seed(9), tolerance=1e-3)
        loss, gnorm = curvature.population_loss_and_grad(model, batches, params, buffers)
        for i in range(3):
            p, b = member(params, i), member(buffers, i)
            losses = [curvature.batch_loss(model, b, xb, yb) for xb, yb in batches]
            one = curvature.hvp_operator(losses, p)
            ref = curvature.rowwise_dot(probes, curvature.batched_hvp(one, probes))
            torch.testing.assert_close(samples[i], ref, rtol=1e-4, atol=1e-5)
            est = curvature.hutchinson(one, p, 6, torch.Generator().manual_seed(7))
            assert trace[i].item() == pytest.approx(est["trace"], rel=1e-4) and stderr[i].item() == pytest.approx(est["stderr"], rel=1e-3)
            pw = curvature.power_iteration(one, p, 15, torch.Generator().manual_seed(9), tolerance=1e-3)
            assert top["iterations"][i].item() == pw["iterations"]
            assert top["eigenvalue"][i].item() == pytest.approx(pw["eigenvalue"], rel=1e-4)
            assert top["residual"][i].item() == pytest.approx(pw["residual"], rel=1e-2, abs=1e-5)
            value, g = curvature.loss_and_grad(losses, p)
            assert loss[i].item() == pytest.approx(value.item(), rel=1e-5)
            assert gnorm[i].item() == pytest.approx(curvature.norm(g).item(), rel=1e-4)


def test_stage_member_chunks_give_the_same_table():
    from modeconn.config import Config
    from modeconn.families.flatness import stage as flatness
    from modeconn.jobs import skeleton

    data = tiny_data()
    _, params, buffers = population("mlp", [0, 1, 2])
    group = flatness.Group("seeds", "path", "x", "linear", [0.0, 0.5, 1.0], params, buffers)
    tables = []
    for chunk in (1, 2, 0):
        raw = stage_cfg().to_dict()
        raw["flatness"]["member_chunk"] = chunk
        cfg = Config.from_dict(raw)
        model = skeleton(cfg, data, torch.device("cpu"))
        tables.append(flatness.group_table(cfg, data, model, group, flatness.evaluation_batches(data, cfg)))
    for other in tables[1:]:
        for col in ("trace", "trace_se", "top_eigenvalue", "grad_norm", "hessian_loss"):
            assert other[col].to_numpy() == pytest.approx(tables[0][col].to_numpy(), rel=1e-4), col
        assert (other.eig_iterations == tables[0].eig_iterations).all()
