"""REPAIR properties and the rebasin stages (match, width sweep, report) through the command line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import randomize_norms, seeded_model, synthetic
from modeconn import checkpoint
from modeconn.cli import main
from modeconn.config import Config, ModelConfig
from modeconn.core import permutation as perm
from modeconn.core import repair
from modeconn.core.params import module_state
from modeconn.models import permutation_spec
from modeconn.families.rebasin import stage as stage

SHAPES = {"mlp": (1, 12), "resnet20": (3, 8, 8), "vgg11": (3, 8, 8)}


def build(name: str, norm: str, seed: int):
    model = randomize_norms(seeded_model(ModelConfig(name=name, norm=norm, depth=2, width=16), SHAPES[name], seed), 50 + seed).eval()
    return model, permutation_spec(model), module_state(model)


# ----------------------------------------------------------------------------- REPAIR


@pytest.mark.parametrize("name,norm", [("mlp", "none"), ("resnet20", "ln"), ("vgg11", "none")])
def test_repair_leaves_an_identical_pair_unchanged(name, norm):
    model, spec, (p, b) = build(name, norm, 0)
    x = synthetic(64, SHAPES[name], 1)[0]
    stats = repair.channel_stats(model, p, b, spec, x)
    for alpha in (0.0, 0.3, 1.0):
        goal = repair.interpolate_stats(stats, stats, alpha)
        fixed = repair.repair(model, spec, p, b, goal, x)
        for k, v in p.items():
            torch.testing.assert_close(fixed[k], v, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("name,norm", [("mlp", "none"), ("resnet20", "none"), ("resnet20", "ln")])
def test_repaired_network_has_the_goal_statistics(name, norm):
    """The fused correction is the hooked one: every point's statistics on the batch equal the goal."""
    model, spec, (pa, ba) = build(name, norm, 0)
    _, _, (pb, _) = build(name, norm, 1)
    x = synthetic(64, SHAPES[name], 1)[0]
    mid = {k: 0.5 * (pa[k] + pb[k]) for k in pa}
    goal = repair.interpolate_stats(repair.channel_stats(model, pa, ba, spec, x), repair.channel_stats(model, pb, ba, spec, x), 0.5)
    fixed = repair.repair(model, spec, mid, ba, goal, x)
    after = repair.channel_stats(model, fixed, ba, spec, x)
    for m, (mu, sd) in goal.items():
        torch.testing.assert_close(after[m][0], mu, rtol=1e-3, atol=1e-3, msg=m)
        torch.testing.assert_close(after[m][1], sd, rtol=1e-3, atol=1e-3, msg=m)
    ratios = repair.collapse_ratio(after, goal)
    assert all(r == pytest.approx(1.0, abs=1e-2) for r in ratios.values())


def test_batchnorm_models_have_no_repair_points():
    for name in SHAPES:
        assert build(name, "bn", 0)[1].repair == ()


def test_collapse_ratio_of_identical_networks_is_one():
    model, spec, (p, b) = build("mlp", "none", 0)
    x = synthetic(64, SHAPES["mlp"], 1)[0]
    s = repair.channel_stats(model, p, b, spec, x)
    assert all(v == pytest.approx(1.0, abs=1e-4) for v in repair.collapse_ratio(s, s).values())


# ----------------------------------------------------------------------------- stages

PARAMS = {
    "data": {"name": "mnist1d", "num_samples": 500},
    "model": {"name": "mlp", "depth": 2, "width": 16},
    "train": {"duration": "2ep", "batch_size": 50},
    "rebasin": {"interpolation_points": 5, "activation_examples": 100, "ste_steps": 2, "ste_batch_size": 32,
                "ste_eval_examples": 100, "repair_examples": 100, "widths": [8], "width_duration": "1ep"},
    "tracking": {"enabled": False},
}


def run(*args: str, params: dict = PARAMS) -> int:
    return main([*args, "--params", json.dumps(params), "--threads", "1", "--device", "cpu"])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("rebasin")
    data = str(tmp / "data.safetensors")
    assert run("prepare-data", "--out", data) == 0
    assert run("train-seeds", "--seeds", "0", "1", "--data", data, "--out-dir", str(tmp / "pop")) == 0
    # the oracle: seed 0 with its hidden units shuffled (a functionally identical network)
    a = checkpoint.load(tmp / "pop" / "seed0.safetensors")
    cfg = Config.from_dict(PARAMS)
    model = stage.skeleton(cfg, stage.data_on(data, "cpu"), torch.device("cpu"))
    spec = permutation_spec(model)
    hidden = perm.random(perm.sizes(spec, a.params), torch.Generator().manual_seed(9))
    oracle = checkpoint.Checkpoint(perm.apply(spec, hidden, a.params), perm.apply(spec, hidden, a.buffers), {**a.meta, "seed": 100})
    checkpoint.save(tmp / "pop" / "seed100.safetensors", oracle)
    for b in ("1", "100"):
        assert run("rebasin-match", "--data", data, "--a", str(tmp / "pop/seed0.safetensors"), "--b", str(tmp / f"pop/seed{b}.safetensors"),
                   "--out-dir", str(tmp / f"pair{b}")) == 0
    assert run("rebasin-train-width", "--width", "8", "--data", data, "--out-dir", str(tmp / "w8")) == 0
    assert run("rebasin-sweep-width", "--width", "8", "--data", data, "--in-dir", str(tmp / "w8"), "--out", str(tmp / "sweep8.csv")) == 0
    return tmp


def test_oracle_pair_is_matched_back_with_zero_barrier(work):
    paths = pd.read_csv(work / "pair100" / "paths.csv")
    table = stage.barriers(paths)
    for method in ("weight", "activation", "ste"):
        sel = table[(table.method == method) & (table.correction == "plain")]
        assert sel.barrier.abs().max() < 1e-5, (method, sel)
        matched = checkpoint.load(work / "pair100" / f"{method}.safetensors")
        a = checkpoint.load(work / "pop" / "seed0.safetensors")
        for k, v in a.params.items():
            torch.testing.assert_close(matched.params[k], v, rtol=0, atol=1e-6)
    # without matching the shuffled copy is a different point of weight space with a real barrier
    assert table[(table.method == "none") & (table.correction == "plain") & (table.metric == "loss")].barrier.max() > 1e-3


def test_matched_checkpoints_describe_themselves(work):
    for method in ("none", "weight", "activation", "ste"):
        meta = checkpoint.read_meta(work / "pair1" / f"{method}.safetensors")
        assert meta["kind"] == "matched" and meta["method"] == method
        assert meta["seeds"] == [0, 1] and set(meta["permutation"]) == {"P0", "P1"}
    none = checkpoint.load(work / "pair1" / "none.safetensors")
    b = checkpoint.load(work / "pop" / "seed1.safetensors")
    assert all(torch.equal(none.params[k], v) for k, v in b.params.items())


def test_matched_network_computes_the_same_function(work):
    data = stage.data_on(work / "data.safetensors", "cpu")
    cfg = Config.from_dict(PARAMS)
    model = stage.skeleton(cfg, data, torch.device("cpu")).eval()
    b = checkpoint.load(work / "pop" / "seed1.safetensors")
    m = checkpoint.load(work / "pair1" / "weight.safetensors")
    f = torch.func.functional_call
    torch.testing.assert_close(f(model, (m.params, m.buffers), (data.x_test,)), f(model, (b.params, b.buffers), (data.x_test,)), rtol=1e-5, atol=1e-5)


def test_paths_cover_every_method_and_correction(work):
    paths = pd.read_csv(work / "pair1" / "paths.csv")
    assert set(paths.method) == {"none", "weight", "activation", "ste"}
    assert set(paths.correction) == {"plain", "repair"}
    assert len(paths) == 4 * 2 * 2 * 5  # methods × corrections × splits × points
    # REPAIR interpolates the endpoints' statistics, so the endpoints themselves are unchanged
    ends = paths[paths.alpha.isin([0.0, 1.0])].pivot_table(index=["method", "alpha", "split"], columns="correction", values="loss")
    assert (ends.plain - ends.repair).abs().max() < 1e-3
    collapse = pd.read_csv(work / "pair1" / "collapse.csv")
    assert set(collapse.layer) == {"layers.0", "layers.1"} and (collapse.after - 1).abs().max() < 0.2


def test_width_sweep_and_report(work):
    sweep = pd.read_csv(work / "sweep8.csv")
    assert set(sweep.width) == {8} and set(sweep.method) == {"none", "weight", "activation", "ste"}
    meta = checkpoint.read_meta(work / "w8" / "seed0.safetensors")
    assert meta["config"]["model"]["width"] == 8
    out = work / "report"
    assert run("report-rebasin", "--out-dir", str(out), "--pairs", str(work / "pair1"), str(work / "pair100"), "--sweeps", str(work / "sweep8.csv")) == 0
    for name in ("barriers.csv", "barriers.md", "interpolation.csv", "interpolation.png", "width_sweep.csv", "width_sweep.png",
                 "collapse.csv", "collapse.png", "matching.csv", "metrics.json", "section.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["barrier"]) == {"none", "weight", "activation", "ste"}
    assert "width_sweep" in metrics
    text = (out / "section.md").read_text()
    assert text.startswith("## ") and "](rebasin/interpolation.png)" in text
    # the sweep job records every definition; the report keeps the configured one and names it
    assert sorted(set(sweep.barrier_definition)) == ["entezari", "max_minus_mean"]
    assert set(pd.read_csv(out / "width_sweep.csv").barrier_definition) == {"max_minus_mean"}
    assert metrics["barrier_definition"] == "max_minus_mean" and "test loss barrier (max_minus_mean)" in text
    # one headline line (a single width: no width trend), stated against the configured instability threshold
    assert text.count("**Headline.**") == 1 and "Independently trained networks are separated by a linear test loss barrier" in text
    assert "the 2% instability threshold" in text


def test_report_with_the_entezari_barrier(work):
    if not (work / "sweep8.csv").exists():
        pytest.skip("needs test_width_sweep_and_report")
    out = work / "report_entezari"
    params = {**PARAMS, "evaluation": {"barrier": "entezari"}}
    assert run("report-rebasin", "--out-dir", str(out), "--pairs", str(work / "pair1"), "--sweeps", str(work / "sweep8.csv"),
               params=params) == 0
    per_pair = pd.read_csv(out / "barriers.csv")
    expected = stage.barriers(pd.read_csv(work / "pair1" / "paths.csv"), "entezari")
    assert (per_pair.barrier_definition == "entezari").all()
    assert per_pair.barrier.to_numpy() == pytest.approx(expected.barrier.to_numpy())
    sweep = pd.read_csv(work / "sweep8.csv")
    kept = pd.read_csv(out / "width_sweep.csv")
    assert len(kept) == len(sweep) // 2 and kept.barrier.tolist() == sweep[sweep.barrier_definition == "entezari"].barrier.tolist()
    md = (out / "barriers.md").read_text()
    assert "barrier (`entezari`)" in md and "test error barrier (entezari)" in md and "max_minus_mean" not in md


def test_width_config():
    cfg = Config.from_dict(PARAMS)
    assert stage.width_config(cfg, 64).model.width == 64
    assert stage.width_config(cfg, 64).train.duration == "1ep"
    res = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="resnet20"))
    assert stage.width_config(res, 4).model.width_multiplier == 4
    with pytest.raises(ValueError, match="no width"):
        stage.width_config(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="lenet300_100")), 2)


def test_unknown_method_is_refused(capsys):
    bad = {**PARAMS, "rebasin": {"methods": ["sinkhorn"]}}
    assert run("rebasin-match", "--data", "x", "--a", "a", "--b", "b", "--out-dir", "o", params=bad) == 2
    assert "rebasin.methods" in capsys.readouterr().err


# ----------------------------------------------------------------------------- headline


def _summ(test_loss: dict, endpoint: float = 0.1, error: float = 0.4) -> pd.DataFrame:
    """Summary of two pairs per method: test loss barrier test_loss[method], error barrier `error`."""
    from modeconn.families.rebasin import report

    rows = [{"seed_a": 0, "seed_b": p, "method": m, "correction": "plain", "split": "test", "metric": metric,
             "barrier": (b if metric == "loss" else error) + 0.01 * (p - 1.5), "endpoint_mean": endpoint}
            for m, b in test_loss.items() for metric in ("loss", "error") for p in (1, 2)]
    return report.summary(pd.DataFrame(rows))


def _sweep(values: list[float]) -> pd.DataFrame:
    from modeconn.families.rebasin import report

    if not values:  # what the report holds when the sweep did not run
        return pd.DataFrame(columns=["width", "method", "correction", "split", "metric", "barrier_mean"])
    rows = [{"width": w, "seed_a": 0, "seed_b": 1, "method": m, "correction": "plain", "split": "test", "metric": "loss",
             "barrier": v if m == "weight" else 1.0, "endpoint_mean": 0.1} for w, v in zip((16, 64, 256), values) for m in ("none", "weight")]
    return report.summary(pd.DataFrame(rows), by=("width", "method", "correction", "split", "metric"))


def test_headline_shows_matching_removing_a_large_barrier():
    from modeconn.families.rebasin import report

    empty = _sweep([])
    lines = report.headlines(_summ({"none": 2.0, "weight": 0.1, "activation": 0.15, "ste": 0.05}), empty, 0.02)
    assert len(lines) == 1 and lines[0].startswith("**Headline.** **Shown.** Independently trained networks")
    assert "barrier of 2.0000 (large: above the endpoints' own test loss, 0.1000; test error barrier 40.0 points, above the 2% instability" in lines[0]
    assert "lowers to 0.1000 / 0.1500 / 0.0500 (weight / activation / STE: 5.0% / 7.5% / 2.5% of it; near zero: at most 10% of it, reached by every method)" in lines[0]
    assert "Ainsworth et al. 2023" in lines[0]
    # one method above 10% of the unmatched barrier: not shown, and the sentence names it
    far = report.headlines(_summ({"none": 2.0, "weight": 0.1, "activation": 0.3, "ste": 0.05}), empty)[0]
    assert far.startswith("**Headline.** **Not shown.**") and "not reached by activation matching" in far and "instability threshold" not in far
    # an unmatched barrier below the endpoints' own loss is not large: not shown either
    small = report.headlines(_summ({"none": 0.05, "weight": 0.001}, endpoint=0.1), empty)[0]
    assert small.startswith("**Headline.** **Not shown.**") and "not large: not above the endpoints' own test loss" in small


def test_width_headline_only_with_a_sweep_and_shown_when_the_barrier_shrinks():
    from modeconn.families.rebasin import report

    summ = _summ({"none": 2.0, "weight": 0.1})
    shrinking = report.headlines(summ, _sweep([0.3, 0.2, 0.1]))
    assert len(shrinking) == 2 and shrinking[1].startswith("**Headline.** **Shown.** After weight matching the test loss barrier is "
                                                          "0.3000 at width 16, 0.2000 at width 64, 0.1000 at width 256")
    assert "it shrinks with width" in shrinking[1] and "(without matching: 1.0000 → 1.0000)" in shrinking[1]
    bumpy = report.headlines(summ, _sweep([0.3, 0.35, 0.1]))[1]
    assert bumpy.startswith("**Headline.** **Not shown.**") and "it does not shrink with width" in bumpy
    assert len(report.headlines(summ, _sweep([0.3]))) == 1  # one width: no trend to state
