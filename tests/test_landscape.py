"""Filter-normalised directions, landscape grids, chunked grid evaluation vs the loop, direction cache."""

from __future__ import annotations

import pytest
import torch

from conftest import MLP_SHAPE, population, synthetic
from modeconn import checkpoint
from modeconn.config import Config
from modeconn.core import directions as dirs
from modeconn.core.params import combine, member, stack
from modeconn.core.population import evaluate
from modeconn.data import Dataset
from modeconn.families.landscape import stage as landscape
from modeconn.jobs import Job, skeleton


@pytest.mark.parametrize("arch", ["mlp", "resnet20-bn"])
def test_every_filter_gets_the_norm_of_the_matching_weight_filter(arch):
    _, params, _ = population(arch, [0])
    w = member(params, 0)
    d = dirs.filter_normalize(dirs.gaussian_direction(w, torch.Generator().manual_seed(0)), w)
    checked = 0
    for name, t in w.items():
        if t.ndim >= 2:  # linear rows [out, in] and conv filters [out, in, k, k]
            torch.testing.assert_close(dirs.filter_norms(d[name]), dirs.filter_norms(t), rtol=1e-5, atol=1e-6)
            checked += 1
        else:  # biases and BN scales / shifts: zero direction (Li et al. 2018)
            assert torch.count_nonzero(d[name]) == 0, name
    assert checked >= (3 if arch == "mlp" else 20)


def test_filter_mode_normalises_one_dimensional_tensors_as_one_filter():
    _, params, _ = population("mlp-bn", [0])
    w = member(params, 0)
    d = dirs.filter_normalize(dirs.gaussian_direction(w, torch.Generator().manual_seed(1)), w, bias_and_norm="filter")
    for name, t in w.items():
        if t.ndim == 1:
            assert d[name].norm().item() == pytest.approx(t.norm().item(), rel=1e-5)


def test_filter_normalisation_follows_a_layer_rescaling():
    # Scaling a layer by c scales its direction by c: the plot does not depend on such rescalings.
    _, params, _ = population("mlp", [0])
    w = member(params, 0)
    raw = dirs.gaussian_direction(w, torch.Generator().manual_seed(2))
    scaled = {k: (3.0 * v if k == "layers.0.weight" else v) for k, v in w.items()}
    a, b = dirs.filter_normalize(raw, w), dirs.filter_normalize(raw, scaled)
    torch.testing.assert_close(b["layers.0.weight"], 3.0 * a["layers.0.weight"])
    torch.testing.assert_close(b["layers.1.weight"], a["layers.1.weight"])


def test_unknown_bias_rule_and_shape_mismatch_are_refused():
    w = {"a": torch.ones(2, 3)}
    with pytest.raises(ValueError, match="bias_and_norm"):
        dirs.filter_normalize(w, w, bias_and_norm="keep")
    with pytest.raises(ValueError, match="shape"):
        dirs.filter_normalize({"a": torch.ones(3, 2)}, w)


def test_grid_coefficients_give_center_plus_directions():
    _, params, _ = population("mlp", [0, 1, 2])
    alpha, beta = dirs.axis(1.0, 3), dirs.axis(0.5, 5)
    coeffs, a, b = dirs.grid_coefficients(alpha, beta)
    assert coeffs.shape == (15, 3) and a.shape == b.shape == (15,)
    grid = combine(coeffs, params)
    for i in (0, 7, 14):
        for k, v in params.items():
            torch.testing.assert_close(grid[k][i], v[0] + a[i].item() * v[1] + b[i].item() * v[2])


def test_between_alphas_contain_both_minima_exactly():
    alpha = landscape.between_alphas(0.5, 41)
    assert alpha[0].item() == -0.5 and alpha[-1].item() == 1.5
    assert (alpha == 0).sum() == 1 and (alpha == 1).sum() == 1
    assert len(alpha) == 41 and ((alpha >= 0) & (alpha <= 1)).sum() == 21


def tiny_setup(chunk: int):
    cfg = Config.from_dict({"model": {"depth": 2, "width": 16}, "landscape": {"chunk": chunk, "examples": 0},
                            "tracking": {"enabled": False}})
    xtr, ytr = synthetic(40, MLP_SHAPE, seed=1)
    xte, yte = synthetic(20, MLP_SHAPE, seed=2)
    data = Dataset("synthetic", xtr, ytr, xte, yte, num_classes=4)
    return cfg, data, skeleton(cfg, data, torch.device("cpu"))


def test_chunked_grid_evaluation_equals_per_point_loop():
    cfg, data, model = tiny_setup(chunk=4)
    _, params, buffers = population("mlp", [0, 1])
    ps = stack([member(params, 0), member(params, 1)])
    coeffs = dirs.line_coefficients(dirs.axis(1.0, 9))  # 9 points in chunks of 4
    table = landscape.evaluate_grid(cfg, data, model, ps, buffers, coeffs)
    grid = combine(coeffs, ps)
    for i in range(9):
        one = {k: v[i : i + 1] for k, v in grid.items()}
        ref = evaluate(model, one, {}, data.x_test, data.y_test)
        row = table[(table.member == i) & (table.split == "test")].iloc[0]
        assert row.loss == pytest.approx(ref["loss"].item(), rel=1e-5)
        assert row.error == pytest.approx(ref["error"].item())


def test_directions_are_cached_by_content_and_refused_when_stale(tmp_path):
    cfg, _, _ = tiny_setup(chunk=4)
    _, params, buffers = population("mlp", [0, 1])
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    checkpoint.save(a, checkpoint.Checkpoint(member(params, 0), member(buffers, 0), {"kind": "seed"}))
    checkpoint.save(b, checkpoint.Checkpoint(member(params, 1), member(buffers, 1), {"kind": "seed"}))
    out = tmp_path / "dirs.safetensors"
    landscape.make_directions(cfg, a, out, Job())
    meta = checkpoint.read_meta(out)
    assert meta["center_sha256"] == landscape.content_digest(checkpoint.load(a)) and meta["seed"] == 0
    stamp = out.stat().st_mtime_ns
    landscape.make_directions(cfg, a, out, Job())  # same minimum and seed: reused, not redrawn
    assert out.stat().st_mtime_ns == stamp
    d = landscape.load_directions(cfg, out, checkpoint.load(a), a)
    assert next(iter(d.values())).shape[0] == 2
    with pytest.raises(ValueError, match="stale"):
        landscape.load_directions(cfg, out, checkpoint.load(b), b)
    other_seed = Config.from_dict({**cfg.to_dict(), "landscape": {**cfg.to_dict()["landscape"], "seed": 5}})
    with pytest.raises(ValueError, match="stale"):
        landscape.load_directions(other_seed, out, checkpoint.load(a), a)


def test_directions_differ_between_minima_and_seeds():
    _, params, _ = population("mlp", [0])
    w = member(params, 0)
    d1 = dirs.directions(w, 2, torch.Generator().manual_seed(0))
    assert not torch.allclose(d1[0]["layers.0.weight"], d1[1]["layers.0.weight"])


def test_conv_direction_shapes():
    _, params, _ = population("resnet20-bn", [0])
    w = member(params, 0)
    d = dirs.directions(w, 1, torch.Generator().manual_seed(0))[0]
    assert {k: v.shape for k, v in d.items()} == {k: v.shape for k, v in w.items()}
