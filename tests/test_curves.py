"""Curves (Garipov et al. 2018): coefficients, batched evaluation vs the per-t loop, the straight
curve, gradients only to the free bends, the schedule, the plane, ensembles."""

from __future__ import annotations

import pytest
import torch

from conftest import MLP_SHAPE, clone, member_module, population, synthetic
from modeconn.core import curves as cm
from modeconn.core import ensemble, plane
from modeconn.core.params import combine, member, stack
from modeconn.core.paths import alphas, linear_coefficients, path_coefficients
from modeconn.core.population import evaluate, recompute_bn
from modeconn.schedules import curve_factor, lr_factor
from modeconn.families.curves.stage import path_population


@pytest.mark.parametrize("anchors", [3, 4, 5])
def test_curve_coefficients_one_t_per_curve(anchors):
    t = torch.tensor([0.0, 1.0, 0.3, 0.7], dtype=torch.float64)
    c = cm.curve_coefficients(["bezier", "polychain", "bezier", "polychain"], t, anchors)
    assert c.shape == (4, anchors)
    torch.testing.assert_close(c.sum(1), torch.ones(4, dtype=torch.float64))
    assert c[0, 0] == 1 and c[1, -1] == 1  # endpoints at t = 0 and t = 1
    torch.testing.assert_close(c[2], path_coefficients("bezier", t[2:3], anchors)[0])


def test_assemble_and_split_are_inverse():
    _, params, _ = population("mlp", [0, 1, 2])
    anchors = {k: v[None].expand(2, *v.shape).clone() for k, v in params.items()}  # C = 2 curves, M = 3
    ends, bends = cm.split_anchors(anchors)
    back = cm.assemble(ends, bends)
    for k in anchors:
        torch.testing.assert_close(back[k], anchors[k])


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
@pytest.mark.parametrize("anchors", [3, 4])
def test_straight_curve_reproduces_linear_path(kind, anchors):
    """Bends on the segment (the midpoint for one bend): the curve is the line θ(t) = (1−t)θ_A + tθ_B."""
    _, params, _ = population("mlp", [0, 1])
    a, b = member(params, 0), member(params, 1)
    line = cm.line_anchors(a, b, anchors)
    if anchors == 3:
        torch.testing.assert_close(member(line, 1), {k: 0.5 * (a[k] + b[k]) for k in a})
    t = alphas(9)
    curve = combine(path_coefficients(kind, t, anchors), line)
    straight = combine(linear_coefficients(t), stack([a, b]))
    for k in curve:
        torch.testing.assert_close(curve[k], straight[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["mlp", "mlp-bn"])
def test_batched_path_evaluation_equals_per_t_loop(arch):
    """Every path's N points as one population (BN recomputed per t) = one plain module per t."""
    skeleton, params, buffers = population(arch, [0, 1, 2])
    curve_params = {k: v.clone() for k, v in params.items()}  # anchors A, bend, B
    curve_params = {k: torch.stack([v[0], v[2], v[1]]) for k, v in curve_params.items()}
    curve_buffers = {k: torch.stack([v[0], v[2], v[1]]) for k, v in buffers.items()}
    paths = [("linear", {k: v[:2] for k, v in params.items()}, {k: v[:2] for k, v in buffers.items()}),
             ("bezier", curve_params, curve_buffers), ("polychain", curve_params, curve_buffers)]
    t = alphas(5)
    p, b = path_population(paths, t)
    x, y = synthetic(40, MLP_SHAPE, 7)
    bn_batches = list(synthetic(64, MLP_SHAPE, 8)[0].split(16))
    b = recompute_bn(skeleton, p, b, bn_batches)
    batched = evaluate(skeleton, p, b, x, y)
    row = 0
    for kind, anchors, anchor_buffers in paths:
        m = next(iter(anchors.values())).shape[0]
        for ti in t:
            c = path_coefficients(kind, ti.reshape(1), m)[0]
            single_p = {k: sum(c[j].float() * v[j] for j in range(m)) for k, v in anchors.items()}
            single_b = {k: (sum(c[j].float() * v[j] for j in range(m)) if v.is_floating_point() else v[0]) for k, v in anchor_buffers.items()}
            one_p, one_b = stack([single_p]), stack([single_b])
            one_b = recompute_bn(skeleton, one_p, one_b, bn_batches)
            net = member_module(skeleton, one_p, one_b, 0).eval()
            with torch.no_grad():
                logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y).double()
            torch.testing.assert_close(batched["loss"][row], loss, rtol=1e-4, atol=1e-5)
            assert batched["error"][row] == (logits.argmax(-1) != y).double().mean()
            row += 1


def _opt(tensors):
    return torch.optim.SGD(tensors, lr=0.1)


def test_gradient_flows_only_to_free_bends():
    skeleton, params, buffers = population("mlp-bn", [0, 1])
    a, b = member(params, 0), member(params, 1)
    line = cm.line_anchors(a, b, 3)
    anchors = {k: v[None].clone() for k, v in line.items()}  # one curve
    ends, bends = cm.split_anchors(anchors)
    ends_before, bends_before = clone(ends), clone(bends)
    x, y = synthetic(64, MLP_SHAPE, 3)
    settings = cm.CurveTraining(optimizer=_opt, lr=0.1, weight_decay=1e-3, batch_size=16, duration="2ep")
    gen = lambda *keys: torch.Generator().manual_seed(hash(keys) % 1000)  # noqa: E731
    new = cm.train_curves(skeleton, ends, bends, {k: v[:1].clone() for k, v in buffers.items()}, ["bezier"], x, y, settings, gen)
    for k in ends:
        assert torch.equal(ends[k], ends_before[k]), k  # endpoints are constants
    assert any(not torch.equal(new[k], bends_before[k]) for k in new)
    # and the autograd graph of a sampled point reaches the bends only
    leaf = {k: v.clone().requires_grad_(True) for k, v in bends.items()}
    theta = cm.points_on(cm.curve_coefficients(["bezier"], torch.tensor([0.3], dtype=torch.float64), 3), cm.assemble(ends, leaf))
    sum(v.sum() for v in theta.values()).backward()
    assert all(v.grad is not None for v in leaf.values())
    assert all(not v.requires_grad for v in ends.values())


def test_penalty_is_on_the_sampled_point():
    """d/dθ_bend of (wd/2)|θ(t)|² = wd · c_bend(t) · θ(t): the penalty of the point, not of the bend."""
    _, params, _ = population("mlp", [0, 1])
    line = cm.line_anchors(member(params, 0), member(params, 1), 3)
    ends, bends = cm.split_anchors({k: v[None] for k, v in line.items()})
    leaf = {k: v.clone().requires_grad_(True) for k, v in bends.items()}
    t = torch.tensor([0.25], dtype=torch.float64)
    c = cm.curve_coefficients(["bezier"], t, 3)
    theta = cm.points_on(c, cm.assemble(ends, leaf))
    wd = 0.1
    (0.5 * wd * sum(v.pow(2).sum() for v in theta.values())).backward()
    for k in leaf:
        torch.testing.assert_close(leaf[k].grad[0, 0], wd * c[0, 1].float() * theta[k][0].detach())


def test_garipov_schedule():
    assert curve_factor(0.0) == curve_factor(0.5) == 1.0
    assert curve_factor(0.7) == pytest.approx(1 - 0.5 * 0.99)
    assert curve_factor(0.9) == pytest.approx(0.01) and curve_factor(1.0) == 0.01
    f = lr_factor("curve", 100)
    assert f(0) == 1.0 and f(95) == 0.01


def test_length_weighted_mean():
    values = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64)
    assert cm.length_weighted_mean(values, torch.tensor([1.0, 1.0])).item() == pytest.approx(3.0)
    assert cm.length_weighted_mean(values, torch.tensor([1.0, 0.0])).item() == pytest.approx(2.0)
    assert cm.length_weighted_mean(torch.full((4,), 2.0), torch.tensor([0.1, 5.0, 1.0])).item() == pytest.approx(2.0)
    _, params, _ = population("mlp", [0, 1])
    pts = combine(linear_coefficients(alphas(5)), params)
    lengths = cm.segment_lengths(pts)
    total = torch.sqrt(sum((params[k][1] - params[k][0]).double().pow(2).sum() for k in params))
    torch.testing.assert_close(lengths.sum().double(), total, rtol=1e-4, atol=1e-5)


def test_plane_coordinates_and_grid_coefficients():
    _, params, _ = population("mlp", [0, 1, 2])
    a, b, bend = (member(params, i) for i in range(3))
    geo = plane.plane(a, b, bend)
    anchors = stack([a, b, bend])
    coords = plane.project(anchors, a, b, bend, geo)
    torch.testing.assert_close(coords, torch.tensor([[0, 0], [geo.length, 0], [geo.bend_x, geo.bend_y]], dtype=torch.float64), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(geo.coefficients(coords[:, 0], coords[:, 1]), torch.eye(3, dtype=torch.float64), rtol=1e-4, atol=1e-4)
    xs, ys = plane.grid(geo, 4, 0.2)
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    c = geo.coefficients(gx.flatten(), gy.flatten())
    torch.testing.assert_close(c.sum(1), torch.ones(16, dtype=torch.float64))
    back = plane.project(combine(c, anchors), a, b, bend, geo)  # grid points lie in the plane, where asked
    torch.testing.assert_close(back, torch.stack([gx.flatten(), gy.flatten()], 1), rtol=1e-3, atol=1e-3)


def test_ensemble_scores():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 50, 4, generator=g).log_softmax(-1)
    y = torch.randint(0, 4, (50,), generator=g)
    same = ensemble.scores(logp[:1].expand(3, -1, -1), y)
    one = ensemble.member_scores(logp[:1], y)
    assert same["error"] == pytest.approx(one["error"].item())
    assert same["nll"] == pytest.approx(one["nll"].item())
    torch.testing.assert_close(ensemble.disagreement(logp, logp[0])[0], torch.tensor(0.0, dtype=torch.float64))
    assert ensemble.evenly_spaced(61, 2) == [0, 60] and ensemble.evenly_spaced(61, 3) == [0, 30, 60]
    # ensemble NLL never exceeds the mean member NLL (Jensen)
    assert ensemble.scores(logp, y)["nll"] <= ensemble.member_scores(logp, y)["nll"].mean().item() + 1e-9


def test_log_probs_chunks_agree():
    skeleton, params, buffers = population("mlp-bn", [0, 1, 2])
    x, _ = synthetic(30, MLP_SHAPE, 1)
    torch.testing.assert_close(ensemble.log_probs(skeleton, params, buffers, x, 7, 2), ensemble.log_probs(skeleton, params, buffers, x, 100, 0))


def test_report_writes_every_file(tmp_path):
    """The report runs on small synthetic per-pair CSVs and writes every file the rule lists."""
    import json

    import pandas as pd

    from modeconn.families.curves import report

    t = [0.0, 0.5, 1.0]
    along = pd.DataFrame([
        {"seed_a": 0, "seed_b": 1, "path": p, "t": ti, "arc_length": ti * 2, "split": s, "loss": 1 + (p == "linear") * ti * (1 - ti),
         "error": 0.2 + 0.1 * ti, "bn_reset": False, "examples": 10, "disagree_a": ti if s == "test" else float("nan"), "disagree_b": 1 - ti}
        for p in ("linear", "bezier") for s in ("train", "test") for ti in t])
    ens = pd.DataFrame([{"seed_a": 0, "seed_b": 1, "path": p, "points": n, "ensemble_error": 0.2, "ensemble_nll": 0.5,
                         "member_error": 0.25, "member_nll": 0.6, "t": "0 1"} for p in ("linear", "bezier") for n in (1, 2)])
    xs = [0.0, 1.0]
    plane = pd.DataFrame(
        [{"seed_a": 0, "seed_b": 1, "curve": "bezier", "role": "grid", "x": x, "y": y, "split": s, "loss": 1.0 + x + y, "error": 0.3}
         for x in xs for y in xs for s in ("train", "test")]
        + [{"seed_a": 0, "seed_b": 1, "curve": "bezier", "role": r, "x": ti, "y": ti * (1 - ti), "t": ti} for r in ("curve", "anchor") for ti in t])
    paths = []
    for name, table in (("along", along), ("ens", ens), ("plane", plane)):
        paths.append(tmp_path / f"{name}.csv")
        table.to_csv(paths[-1], index=False)
    out = tmp_path / "reports"
    result = report.write([paths[0]], [paths[1]], [paths[2]], out)
    for name in ("table.csv", "table.md", "ensembles.csv", "ensembles.md", "along.csv", "along.png", "ensembles.png", "plane.png", "metrics.json", "section.md"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text())["points"] == 3 == result["points"]
    assert result["linear"]["train"]["loss"]["barrier"]["mean"] == pytest.approx(0.25)
    assert "## Curves" in (out / "section.md").read_text()
    # a flat curve, but the line's barrier (0.25) is below the endpoints' own loss (1.0): not large, not shown
    assert "**Headline.** **Not shown.** Trained Bezier curves have a train loss barrier of 0.0000 (0.0% of the straight line's 0.2500, " \
           "which is not large: not above the endpoints' own train loss, 1.0000;" in (out / "section.md").read_text()
    # error is linear in t: half its endpoint gap under max_minus_mean, zero under Entezari's definition
    assert result["bezier"]["test"]["error"]["barrier"]["mean"] == pytest.approx(0.05)
    assert result["barrier_definition"] == "max_minus_mean" and "| barrier (max_minus_mean)" in (out / "table.md").read_text()
    from modeconn.config import Config

    ent = report.write([paths[0]], [paths[1]], [paths[2]], tmp_path / "entezari", Config.from_dict({"evaluation": {"barrier": "entezari"}}))
    assert ent["bezier"]["test"]["error"]["barrier"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert ent["linear"]["train"]["loss"]["barrier"]["mean"] == pytest.approx(0.25)  # equal endpoints: the same
    assert ent["barrier_definition"] == "entezari" and set(pd.read_csv(tmp_path / "entezari/table.csv").barrier_definition) == {"entezari"}
    text = (tmp_path / "entezari/section.md").read_text()
    assert "barrier (`entezari`)" in text and "| barrier (entezari)" in text and "max_minus_mean" not in text


def test_curve_with_other_endpoints_is_refused(tmp_path):
    from modeconn import checkpoint
    from modeconn.families.curves.stage import _check_endpoints

    _, params, buffers = population("mlp", [0, 1, 2])
    a, b, c = (checkpoint.Checkpoint(member(params, i), member(buffers, i), {"seed": i}) for i in range(3))
    curve = checkpoint.Checkpoint(cm.line_anchors(a.params, b.params, 3), cm.line_anchors(a.buffers, b.buffers, 3), {"anchors": 3, "seeds": [0, 1]})
    _check_endpoints(a, b, curve, tmp_path / "ok")
    with pytest.raises(ValueError, match="endpoints"):
        _check_endpoints(a, c, curve, tmp_path / "bad.safetensors")


def _pairs(barriers: dict[str, float]):
    """Per-pair rows of two pairs (train loss barrier barriers[path] ± 0.01), as report.per_pair writes them."""
    import pandas as pd

    return pd.DataFrame([{"pair": f"seed0–seed{p}", "path": path, "split": split, "metric": metric,
                          "barrier": b + 0.01 * (p - 1.5) if (split, metric) == ("train", "loss") else 0.5}
                         for path, b in barriers.items() for p in (1, 2) for split in ("train", "test") for metric in ("loss", "error")])


def test_headline_shown_when_every_curve_is_near_zero_where_the_line_is_large():
    from modeconn.families.curves import report

    text = report.headline(_pairs({"linear": 2.0, "bezier": 0.1, "polychain": 0.15}), 0.05)
    assert text.startswith("**Headline.** **Shown.** Trained Bezier / PolyChain curves have a train loss barrier of 0.1000 / 0.1500 "
                           "(5.0% / 7.5% of the straight line's 2.0000, which is large: above the endpoints' own train loss, 0.0500; "
                           "near zero: at most 10% of the line's, reached by every curve)")
    assert "Garipov et al. 2018" in text
    far = report.headline(_pairs({"linear": 2.0, "bezier": 0.1, "polychain": 0.5}), 0.05)
    assert far.startswith("**Headline.** **Not shown.**") and "not reached by PolyChain)" in far
    low_line = report.headline(_pairs({"linear": 0.04, "bezier": 0.0}), 0.05)
    assert low_line.startswith("**Headline.** **Not shown.**") and "not large: not above the endpoints' own train loss, 0.0500" in low_line


def test_endpoint_loss_is_the_mean_over_pairs_at_t_0_and_1():
    import pandas as pd

    from modeconn.families.curves import report

    along = pd.DataFrame([{"pair": pair, "path": path, "split": split, "t": t, "loss": loss + (path != "linear") + (split == "test")}
                          for pair, ends in (("a", (0.1, 0.3)), ("b", (0.5, 0.5))) for path in ("linear", "bezier")
                          for split in ("train", "test") for t, loss in ((0.0, ends[0]), (0.5, 9.0), (1.0, ends[1]))])
    assert report.endpoint_loss(along) == pytest.approx(0.35)
    assert report.endpoint_loss(along, "test") == pytest.approx(1.35)
