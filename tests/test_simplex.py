"""Simplex core and SPRO training (Benton et al. 2021): volumes, Dirichlet samples, points, population = loop."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import MLP_SHAPE, NUM_CLASSES, population, synthetic
from modeconn.config import Config
from modeconn.core import simplex
from modeconn.core.params import combine, member, select
from modeconn.data import Dataset
from modeconn.families.simplex import stage as stage


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_cayley_menger_volume_of_unit_right_simplex(n):
    vertices = torch.cat([torch.zeros(1, n), torch.eye(n)]).double()
    assert simplex.volume(vertices).item() == pytest.approx(1.0 / math.factorial(n), rel=1e-10)
    # the same simplex embedded in more dimensions, moved and rotated, has the same volume
    q, _ = torch.linalg.qr(torch.randn(n + 3, n + 3, generator=torch.Generator().manual_seed(n), dtype=torch.float64))
    moved = torch.cat([vertices, torch.zeros(n + 1, 3, dtype=torch.float64)], 1) @ q.T + 5.0
    assert simplex.volume(moved).item() == pytest.approx(1.0 / math.factorial(n), rel=1e-8)


def test_volume_matches_gram_determinant_and_batches():
    x = torch.randn(4, 3, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # 4 triangles
    edges = x[:, 1:] - x[:, :1]
    gram = edges @ edges.transpose(1, 2)
    ref = torch.linalg.det(gram).sqrt() / math.factorial(2)
    assert torch.allclose(simplex.volume(x), ref)
    assert torch.allclose(simplex.log_volume(x, eps=0.0), ref.log())
    assert simplex.volume(x[:, :1]).eq(1).all()  # a single vertex


def test_log_volume_gradient_is_finite_at_a_degenerate_start():
    x = torch.randn(2, 5, dtype=torch.float64)
    new = x.mean(0, keepdim=True).requires_grad_(True)  # the centroid: zero volume
    simplex.log_volume(torch.cat([x, new])).backward()
    assert torch.isfinite(new.grad).all()


def test_dirichlet_samples_lie_in_the_simplex():
    g = torch.Generator().manual_seed(0)
    w = simplex.dirichlet(20000, 4, g, lead=(2,))
    assert w.shape == (2, 20000, 4)
    assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(2, 20000, dtype=torch.float64))
    # Dirichlet(1): uniform on the simplex, mean 1/V and variance (V−1)/(V²(V+1)) per coordinate
    assert torch.allclose(w.mean((0, 1)), torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)
    assert torch.allclose(w.var((0, 1)), torch.full((4,), 3 / 80, dtype=torch.float64), atol=0.003)
    again = simplex.dirichlet(20000, 4, torch.Generator().manual_seed(0), lead=(2,))
    assert torch.equal(w, again)


def test_points_equal_per_simplex_combine():
    _, params, buffers = population("mlp-bn", [0, 1, 2, 3, 4, 5])
    vertices = {k: v.view(2, 3, *v.shape[1:]) for k, v in params.items()}  # 2 simplexes of 3 vertices
    w = simplex.dirichlet(4, 3, torch.Generator().manual_seed(1), lead=(2,))
    pts = simplex.points(w, vertices)
    for k in range(2):
        ref = combine(w[k], select(params, slice(3 * k, 3 * k + 3)))
        for name in params:
            assert torch.allclose(pts[name][4 * k : 4 * k + 4], ref[name], atol=1e-6)
    bufs = simplex.points(w, {k: v.view(2, 3, *v.shape[1:]) for k, v in buffers.items()})
    assert all(b.shape[0] == 8 for b in bufs.values())


def _dataset(n: int = 64) -> Dataset:
    x, y = synthetic(n, MLP_SHAPE, 0)
    xt, yt = synthetic(32, MLP_SHAPE, 1)
    return Dataset("synthetic", x, y, xt, yt, NUM_CLASSES)


def _cfg(**simplex_keys) -> Config:
    return Config.from_dict({"model": {"name": "mlp", "depth": 2, "width": 16}, "tracking": {"enabled": False},
                             "simplex": {"duration": "3ep", "batch_size": 16, "samples": 3, "volume_weight": 0.01, **simplex_keys}})


def test_population_of_simplexes_trains_like_each_alone():
    model, params, buffers = population("mlp", [0, 1])
    data, cfg = _dataset(), _cfg()
    frozen = {k: v.unsqueeze(1) for k, v in params.items()}
    bufs = {k: v.unsqueeze(1) for k, v in buffers.items()}
    together = stage.train_vertex(cfg, data, model, frozen, bufs, [7, 9])
    for i, seed in enumerate([7, 9]):
        alone = stage.train_vertex(cfg, data, model, select(frozen, slice(i, i + 1)), select(bufs, slice(i, i + 1)), [seed])
        for name in params:
            assert torch.allclose(together[name][i], alone[name][0], atol=1e-5), name
    # the seed vertex is frozen, the new one moved off the (degenerate) centroid start
    for name in params:
        assert torch.equal(together[name][:, 0], params[name])
    flat = simplex.flat_vertices(together, 1)
    assert (simplex.volume(flat) > 0).all()


def test_spro_loss_is_the_mean_over_samples():
    """Benton et al.'s reference code sums the S sampled losses; the loss here is their mean."""
    ce = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    log_vol = torch.tensor([0.3, -0.2])
    assert simplex.spro_loss(ce, log_vol, 0.1).item() == pytest.approx(2.0 + 0.5 - 0.1 * 0.1)
    repeated = ce[:, :1].expand(2, 7)  # S identical samples = one sample
    assert simplex.spro_loss(repeated, log_vol, 0.1).item() == pytest.approx(simplex.spro_loss(ce[:, :1], log_vol, 0.1).item())


def test_evaluation_tables(tmp_path):
    model, params, buffers = population("mlp", [0, 1])
    data, cfg = _dataset(), _cfg(duration="1ep", eval_samples=3, ensemble_samples=2)
    vertices = {k: v.unsqueeze(1) for k, v in params.items()}
    bufs = {k: v.unsqueeze(1) for k, v in buffers.items()}
    vertices = stage.train_vertex(cfg, data, model, vertices, bufs, [0, 1])
    bufs = {k: torch.cat([t, t[:, :1]], 1) for k, t in bufs.items()}
    points = stage.point_table(cfg, data, model, vertices, bufs, [0, 1])
    assert len(points) == 2 * 2 * 3 and set(points.split) == {"train", "test"}
    ens = stage.ensemble_table(cfg, data, model, vertices, bufs, params, buffers, [0, 1])
    assert set(ens.method) == {"espro", "deep_ensemble"} and ens.members.max() == 2
    # deep ensemble of 1 member = that network's own test error
    one = ens[(ens.method == "deep_ensemble") & (ens.members == 1)].iloc[0]
    logits = torch.func.functional_call(model.eval(), (member(params, 0), member(buffers, 0)), (data.x_test,))
    assert one.error == pytest.approx((logits.argmax(1) != data.y_test).double().mean().item())


def _simplex(worst_train_loss: float, espro_accuracy: float):
    """size_summary and ensemble tables of two seeds: train loss 0.10 and test accuracy 0.90 at the seeds."""
    import pandas as pd

    from modeconn.families.simplex import report

    points = pd.DataFrame([{"vertices": v, "seed": seed, "sample": i, "split": split,
                            "loss": (0.10 if v == 1 or i == 0 else worst_train_loss) if split == "train" else 0.3,
                            "error": 0.10 if split == "test" else 0.05}
                           for v in (1, 3) for seed in (0, 1) for split in ("train", "test") for i in range(1 if v == 1 else 2)])
    ens = pd.DataFrame([{"members": m, "method": method, "accuracy": espro_accuracy if method == "espro" else 0.91, "nll": 0.3,
                         "error": 0.1} for m in (1, 2) for method in ("espro", "deep_ensemble")])
    return report.size_summary(report.per_size(points)), ens


def test_headline_shown_for_a_low_loss_simplex_whose_ensemble_beats_one_network():
    from modeconn.families.simplex import report

    text = report.headline(*_simplex(0.105, 0.93))
    assert text.startswith("**Headline.** **Shown.** The 3-vertex SPRO simplexes have a train loss of 0.1050 at their worst sampled "
                           "point against 0.1000 at the trained networks (low by the threshold of at most 10% above it), and ESPRO "
                           "over 2 simplexes reaches 93.00% test accuracy against 90.00% for a single network (deep ensemble of the "
                           "same 2 seeds: 91.00%), above it")
    assert "Benton et al. 2021" in text
    high = report.headline(*_simplex(0.2, 0.93))
    assert high.startswith("**Headline.** **Not shown.**") and "(not low by the threshold" in high
    worse = report.headline(*_simplex(0.105, 0.89))
    assert worse.startswith("**Headline.** **Not shown.**") and "89.00% test accuracy against 90.00% for a single network" in worse
    assert "not above it" in worse



SIMPLEX_FIGURE = """
import sys
import numpy as np
import pandas as pd
from modeconn.families.simplex import report
np.random.seed(int(sys.argv[2]))
points = pd.DataFrame([{"vertices": v, "seed": s, "split": split, "loss": 0.1 * v + 0.01 * i, "error": 0.02 * i}
                       for v in (1, 2, 3) for s in (0, 1) for split in ("train", "test") for i in range(4)])
report.simplex_figure(points, sys.argv[1])
"""


def test_simplex_figure_is_the_same_file_in_every_process(tmp_path):
    """A rerun writes the same bytes (so DVC sees no change): two processes with different string
    hashing (PYTHONHASHSEED) and numpy global states draw the same figure."""
    import os
    import subprocess
    import sys

    files = []
    for hash_seed in ("0", "1"):
        files.append(tmp_path / f"simplex{hash_seed}.png")
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", SIMPLEX_FIGURE, str(files[-1]), hash_seed], env=env, check=True, timeout=600)
    assert files[0].read_bytes() == files[1].read_bytes()
