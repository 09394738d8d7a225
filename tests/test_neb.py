"""AutoNEB core (Draxler et al. 2018): forces, redistribution, insertion, toy surfaces, batched gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import population, synthetic
from modeconn.core import neb
from modeconn.core.params import member
from modeconn.core.paths import path_coefficients


def _path(m: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projected_force_has_no_component_along_tangent(seed):
    x = _path(7, 5, seed)
    energy = torch.randn(7, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
    grad = _path(7, 5, 20 + seed)
    tau = neb.improved_tangent(x, energy)
    assert torch.allclose(tau.norm(dim=1), torch.ones(5, dtype=torch.float64))
    force = neb.neb_force(x, energy, grad, spring=None)
    assert torch.allclose((force * tau).sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    # with a spring, the only component along τ is the spring's
    k = 2.5
    lengths = (x[1:] - x[:-1]).norm(dim=1)
    along = (neb.neb_force(x, energy, grad, spring=k) * tau).sum(1)
    assert torch.allclose(along, k * (lengths[1:] - lengths[:-1]), atol=1e-12)


def test_improved_tangent_points_to_higher_neighbour():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    up = neb.improved_tangent(x, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    down = neb.improved_tangent(x, torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(up[0], torch.tensor([1.0, 1.0], dtype=torch.float64) / 2**0.5)  # τ⁺
    assert torch.allclose(down[0], torch.tensor([1.0, 0.0], dtype=torch.float64))  # τ⁻


def test_redistribute_equal_spacing_on_the_same_polyline():
    # polyline of length 3: along x from 0 to 1, then up to (1, 2); 5 pivots → arc spacing 3/4
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    y = neb.redistribute(x)
    expected = torch.tensor([[0.0, 0.0], [0.75, 0.0], [1.0, 0.5], [1.0, 1.25], [1.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(y, expected)
    assert torch.equal(y[0], x[0]) and torch.equal(y[-1], x[-1])
    # a straight, evenly spaced chain is a fixed point
    line = neb.points_at(torch.stack([x[0], x[-1]]), torch.linspace(0, 1, 6, dtype=torch.float64))
    assert torch.allclose(neb.redistribute(line), line)


def test_insertion_keeps_the_polyline():
    x = _path(3, 4, 5)
    more = neb.insert_equal(x, 2)
    assert more.shape[0] == 7 and torch.allclose(more[::3], x)
    t = neb.dense_t(3, 4)
    values = torch.zeros_like(t)
    values[2], values[6] = 1.0, 3.0  # both segments rise above their chord; the second more
    one = neb.insert_highest(x, t, values, 1)
    assert one.shape[0] == 4 and torch.allclose(one[2], neb.points_at(x, t[6:7])[0])
    none = neb.insert_highest(x, t, -torch.ones_like(t), 2)  # flat curve: nothing rises above the chord
    assert none.shape[0] == 3


def test_points_at_uses_polychain_coefficients():
    x = _path(4, 3, 7)
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    assert torch.allclose(neb.points_at(x, t), path_coefficients("polychain", t, 4) @ x)


# ----------------------------------------------------------------------------- toy surfaces


def _quadratic(h: torch.Tensor):
    def grad_fn(x, step):
        return 0.5 * (x * h * x).sum(1), x * h

    def dense(points):
        return 0.5 * (points * h * points).sum(1)

    return grad_fn, dense


def test_straight_path_on_convex_quadratic_stays_straight_and_saddle_is_an_endpoint():
    h = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    grad_fn, dense = _quadratic(h)
    a, b = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    cycles = [neb.Cycle("equal", 3, 50, 0.05), neb.Cycle("highest", 2, 50, 0.05)]
    for spring in (None, 1.0):
        res = neb.autoneb(a, b, cycles, grad_fn, dense, 4, spring, optimizer="sgd")
        assert torch.allclose(res.pivots[:, 1:], torch.zeros_like(res.pivots[:, 1:]), atol=1e-12)  # on the line
        assert float(res.t[res.values.argmax()]) in (0.0, 1.0)
        assert res.saddle == pytest.approx(float(dense(b[None])[0]))


def _curved_valley():
    """L(x, y) = (x² − 1)² + 5 (y − (1 − x²))²: minima (±1, 0); the valley y = 1 − x² bends up.

    Along the valley the maximum is 1 (at (0, 1)); along the straight line y = 0 it is 1 + 5 = 6.
    """

    def energy(p):
        x, y = p[:, 0], p[:, 1]
        return (x**2 - 1) ** 2 + 5 * (y - (1 - x**2)) ** 2

    def grad_fn(p, step):
        p = p.detach().requires_grad_(True)
        e = energy(p)
        (g,) = torch.autograd.grad(e.sum(), p)
        return e.detach(), g

    return energy, grad_fn


@pytest.mark.parametrize("spring", [None, 2.0])
def test_neb_finds_the_curved_valley_on_a_toy_surface(spring):
    energy, grad_fn = _curved_valley()
    a, b = torch.tensor([-1.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    straight = energy(neb.points_at(torch.stack([a, b]), torch.linspace(0, 1, 101, dtype=torch.float64))).max()
    cycles = [neb.Cycle("equal", 4, 300, 0.01), neb.Cycle("highest", 3, 300, 0.01)]
    res = neb.autoneb(a, b, cycles, grad_fn, lambda p: energy(p).detach(), 8, spring, optimizer="sgd")
    assert straight == pytest.approx(6.0)
    assert res.saddle < 1.3 < straight
    assert [h["pivots"] for h in res.history][0] == 6


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize("arch", ["mlp", "mlp-bn"])
def test_batched_pivot_gradients_equal_the_per_pivot_loop(arch):
    model, params, buffers = population(arch, [0, 1, 2])
    x, spec = neb.flatten_members(params)
    inputs, targets = synthetic(16, (1, 12), 3)
    model.train()
    loss, grads = neb.pivot_grads(model, x, spec, buffers, inputs, targets)
    assert grads.shape == x.shape
    for i in range(3):
        p = {k: v.clone().requires_grad_(True) for k, v in member(params, i).items()}
        b = {k: v.clone() for k, v in member(buffers, i).items()}
        out = torch.func.functional_call(model, (p, b), (inputs,))
        ref = F.cross_entropy(out, targets)
        ref.backward()
        ref_grad = torch.cat([p[k].grad.flatten() for k in spec.names])
        assert loss[i].item() == pytest.approx(ref.item(), rel=1e-5)
        assert torch.allclose(grads[i], ref_grad, atol=1e-6, rtol=1e-4)


def test_flatten_round_trip():
    _, params, _ = population("mlp", [0, 1])
    x, spec = neb.flatten_members(params)
    back = neb.unflatten(x, spec)
    assert all(torch.equal(back[k], params[k]) for k in params)


# ----------------------------------------------------------------------------- stages (CLI, tiny data)

STAGE_PARAMS = {
    "data": {"name": "mnist1d", "num_samples": 400},
    "model": {"name": "mlp", "depth": 1, "width": 16},
    "train": {"duration": "2ep", "batch_size": 50},
    "seeds": {"count": 3},
    "neb": {"cycles": [{"method": "equal", "insert": 1, "steps": "5it", "lr": 0.01},
                       {"method": "highest", "insert": 1, "steps": "5it", "lr": 0.01}], "dense_points": 3, "eval_examples": 100},
    "simplex": {"duration": "2it", "vertices": 3, "eval_samples": 2, "ensemble_samples": 2},
    "tracking": {"enabled": False},
}


def _run(*args: str) -> int:
    import json

    from modeconn.cli import main

    return main([*args, "--params", json.dumps(STAGE_PARAMS), "--threads", "1", "--device", "cpu"])


def test_neb_and_simplex_stages_write_self_describing_outputs(tmp_path):
    import pandas as pd

    from modeconn import checkpoint

    data = str(tmp_path / "data.safetensors")
    assert _run("prepare-data", "--out", data) == 0
    assert _run("train-seeds", "--seeds", "0", "1", "2", "--data", data, "--out-dir", str(tmp_path / "pop")) == 0
    seeds = [str(tmp_path / f"pop/seed{s}.safetensors") for s in range(3)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert _run("neb-connect", "--data", data, "--a", seeds[a], "--b", seeds[b], "--out", str(tmp_path / f"neb/seed{a}-seed{b}.safetensors")) == 0
        assert _run("interpolate", "--data", data, "--a", seeds[a], "--b", seeds[b], "--out", str(tmp_path / f"lin/seed{a}-seed{b}.csv")) == 0
    path = checkpoint.load(tmp_path / "neb/seed0-seed1.safetensors")
    assert path.meta["kind"] == "path" and path.meta["path"] == "polychain" and path.meta["seeds"] == [0, 1]
    m = path.meta["anchors"]
    assert m in (3, 4)  # 2 → 3 pivots (equal), then at most one more (highest)
    ends = [checkpoint.load(s) for s in seeds[:2]]
    for name, stacked in path.params.items():
        assert stacked.shape[0] == m
        assert torch.allclose(stacked[0], ends[0].params[name]) and torch.allclose(stacked[-1], ends[1].params[name])
    table = pd.read_csv(tmp_path / "neb/seed0-seed1.csv")
    assert table["pivot"].sum() == 2 * m and table.t.min() == 0.0 and table.t.max() == 1.0
    neb_csvs = sorted(str(p) for p in (tmp_path / "neb").glob("*.csv"))
    lin_csvs = sorted(str(p) for p in (tmp_path / "lin").glob("*.csv"))
    assert _run("report-neb", "--neb", *neb_csvs, "--linear", *lin_csvs, "--out-dir", str(tmp_path / "reports/neb")) == 0
    edges = pd.read_csv(tmp_path / "reports/neb/mst.csv")
    assert len(edges) == 2  # a spanning tree of 3 seeds
    assert (tmp_path / "reports/neb/section.md").read_text().startswith("## AutoNEB")
    assert (tmp_path / "reports/neb/section.md").read_text().count("**Headline.**") == 1

    assert _run("simplex-grow", "--data", data, "--seeds", *seeds, "--out-dir", str(tmp_path / "simplex")) == 0
    sim = checkpoint.load(tmp_path / "simplex/seed2.safetensors")
    assert sim.meta["kind"] == "simplex" and sim.meta["vertices"] == 3
    assert all(v.shape[0] == 3 for v in sim.params.values())
    seed2 = checkpoint.load(seeds[2])
    assert all(torch.equal(sim.params[k][0], seed2.params[k]) for k in seed2.params)
    assert _run("report-simplex", "--points", str(tmp_path / "simplex/points.csv"), "--ensemble", str(tmp_path / "simplex/ensemble.csv"),
                "--out-dir", str(tmp_path / "reports/simplex")) == 0
    assert set(pd.read_csv(tmp_path / "reports/simplex/sizes.csv").vertices) == {1, 2, 3}
    assert (tmp_path / "reports/simplex/section.md").read_text().count("**Headline.**") == 1


def test_report_barriers_follow_the_definition_along_each_paths_positions():
    """AutoNEB positions t are not evenly spaced; Entezari's line runs through them."""
    import pandas as pd

    from modeconn.families.neb import report

    def rows(path, positions, losses):
        return [{"pair": "seed0–seed1", "seed_a": 0, "seed_b": 1, "path": path, "position": p, "pivot": p in (0.0, 1.0),
                 "split": split, "loss": v, "error": 0.1, "bn_reset": False}
                for split in ("train", "test") for p, v in zip(positions, losses)]

    table = pd.DataFrame(rows("autoneb", [0.0, 0.25, 1.0], [0.0, 1.0, 1.0]) + rows("linear", [0.0, 0.5, 1.0], [0.0, 2.0, 1.0]))
    for kind, neb_b, lin_b in (("max_minus_mean", 0.5, 1.5), ("entezari", 0.75, 1.5)):
        pairs = report.per_pair(table, kind)
        loss = pairs[pairs.metric == "loss"]
        assert loss.neb_barrier.tolist() == pytest.approx([neb_b] * 2) and loss.linear_barrier.tolist() == pytest.approx([lin_b] * 2)
        assert set(pairs.barrier_definition) == {kind}
        md = report.tables_md(pairs, report.summary(pairs), report.mst(pairs))
        assert f"| AutoNEB barrier ({kind})" in md and f"barrier (`{kind}`)" in md
        assert ("max_minus_mean" in md) == (kind == "max_minus_mean")


def _neb_summary(neb_barrier: float, linear_barrier: float | None, endpoints: float = 0.05):
    import pandas as pd

    from modeconn.families.neb import report

    rows = []
    for p in (1, 2):
        for split in ("train", "test"):
            for metric in ("loss", "error"):
                row = {"pair": f"seed0–seed{p}", "split": split, "metric": metric, "endpoints": endpoints,
                       "neb_saddle": endpoints + neb_barrier, "neb_barrier": neb_barrier}
                if linear_barrier is not None:
                    row |= {"linear_saddle": endpoints + linear_barrier, "linear_barrier": linear_barrier}
                rows.append(row)
    return report.summary(pd.DataFrame(rows))


def test_headline_shown_when_the_saddle_barrier_is_near_zero_against_the_line():
    from modeconn.families.neb import report

    text = report.headline(_neb_summary(0.02, 1.0))
    assert text.startswith("**Headline.** **Shown.** AutoNEB paths between independently trained seeds peak at a train loss of 0.0700 "
                           "against 0.0500 at the endpoints, a barrier of 0.0200 that is 2.0% of the straight line's 1.0000 (near zero "
                           "by the threshold of at most 10% of the line's)")
    assert "Draxler et al. 2018" in text
    high = report.headline(_neb_summary(0.2, 1.0))
    assert high.startswith("**Headline.** **Not shown.**") and "20% of the straight line's 1.0000 (not near zero" in high
    assert report.headline(_neb_summary(0.0, None)).startswith("**Headline.** **Not shown.**")  # no line to compare with
