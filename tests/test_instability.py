"""Spawn/fork instability: children share everything but the SGD noise; batched paths; report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import MLP_SHAPE, synthetic
from modeconn.config import Config, ModelConfig, TrainConfig
from modeconn.core.instability import first_stable, fork_seed, pair_paths
from modeconn.core.params import combine, select
from modeconn.core.paths import alphas, linear_coefficients
from modeconn.models import build_model
from modeconn.families.instability.stage import children_of
from modeconn.train import MemberSeeds, init_population, member_optimizer_state, train_population

MLP = ModelConfig(name="mlp", depth=2, width=16)
N = 48
CFG = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=8, duration="2ep", checkpoint_steps=("3it",))
K = 3


def spawn():
    """A trunk trained to step K: its weights, buffers and optimizer state (as the seeds save them)."""
    x, y = synthetic(N, MLP_SHAPE, seed=0)
    model, params, buffers = init_population(lambda: build_model(MLP, MLP_SHAPE, 4), [0])
    saved = {}

    def keep(state):
        saved.update(params={k: v.detach().clone() for k, v in state.params.items()}, buffers=state.buffers, opt=member_optimizer_state(state, 0))

    train_population(model, params, buffers, x, y, CFG, [MemberSeeds.same(0)], on_checkpoint=keep)
    return model, saved, x, y


def fork(model, saved, x, y, seeds):
    """Children of the spawn, one per MemberSeeds, trained as one population from step K."""
    k = len(seeds)
    params = {n: v.expand(k, *v.shape[1:]).clone() for n, v in saved["params"].items()}
    buffers = {n: v.expand(k, *v.shape[1:]).clone() for n, v in saved["buffers"].items()}
    assert saved["opt"], "the spawn must carry optimizer state (momentum) to test that it is shared"
    return train_population(model, params, buffers, x, y, CFG, seeds, start_step=K, member_optimizer_states=[saved["opt"]] * k)


def test_forking_with_identical_seeds_gives_identical_children():
    model, saved, x, y = spawn()
    same = MemberSeeds(init=0, data=7, augment=7)
    state = fork(model, saved, x, y, [same, same])
    for n, v in state.params.items():
        assert torch.equal(v[0], v[1]), n


def test_children_differ_when_their_data_seeds_differ_and_only_then():
    model, saved, x, y = spawn()
    children = children_of(0, 1)
    assert children[0].seeds.init == children[1].seeds.init == 0
    assert children[0].seeds.data != children[1].seeds.data
    state = fork(model, saved, x, y, [c.seeds for c in children])
    assert any(not torch.equal(v[0], v[1]) for v in state.params.values())
    # a child with the trunk's own seeds continues the trunk exactly (resuming is exact)
    trunk = train_population(model, saved["params"], saved["buffers"], x, y, CFG, [MemberSeeds.same(0)], start_step=K, member_optimizer_states=[saved["opt"]])
    alone = fork(model, saved, x, y, [MemberSeeds.same(0)])
    assert all(torch.equal(trunk.params[n], alone.params[n]) for n in trunk.params)


def test_fork_seeds_are_deterministic_and_distinct():
    seeds = {(t, p, c): fork_seed(t, p, c) for t in range(4) for p in range(3) for c in (0, 1)}
    assert len(set(seeds.values())) == len(seeds)
    assert fork_seed(2, 1, 0) == seeds[(2, 1, 0)]
    assert all(s not in range(4) for s in seeds.values())


def test_pair_paths_equal_the_loop_over_pairs():
    g = torch.Generator().manual_seed(0)
    stacked = {"w": torch.randn(4, 3, 2, generator=g), "n": torch.arange(4)}
    alpha = alphas(7)
    pairs = [(0, 1), (2, 3), (3, 0)]
    batched = pair_paths(stacked, pairs, alpha)
    for p, (a, b) in enumerate(pairs):
        ref = combine(linear_coefficients(alpha), select(stacked, [a, b]))
        rows = slice(p * 7, (p + 1) * 7)
        torch.testing.assert_close(batched["w"][rows], ref["w"])
        assert torch.equal(batched["w"][p * 7], stacked["w"][a]) and torch.equal(batched["w"][p * 7 + 6], stacked["w"][b])
        assert torch.equal(batched["n"][rows], ref["n"])


def test_first_stable():
    assert first_stable([0, 10, 100, 1000], [0.1, 0.05, 0.01, 0.0], 0.02) == 100
    assert first_stable([100, 0, 10], [0.0, 0.01, 0.5], 0.02) == 0
    assert first_stable([0, 10], [0.1, 0.05], 0.02) is None


def test_report_threshold_table_and_files(tmp_path):
    from modeconn.families.instability import report

    csvs = []
    for k, label, height in ((0, "0it", 0.10), (16, "16it", 0.03), (64, "64it", 0.01)):
        rows = []
        for trunk in (0, 1):
            for split in ("train", "test"):
                for a in alphas(5).tolist():
                    bump = height * (1 - abs(2 * a - 1)) + 0.002 * trunk
                    rows.append({"k_label": label, "k": k, "trunk": trunk, "pair": 0, "alpha": a, "split": split, "loss": 0.1, "error": 0.2 + bump * (a not in (0.0, 1.0)), "bn_reset": False, "examples": 10})
        path = tmp_path / f"k{label}.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        csvs.append(path)
    cfg = Config.from_dict({"instability": {"steps": ["0it", "16it", "64it"], "points": 5}})
    out = tmp_path / "reports"
    report.write(cfg, csvs, out)
    for name in ("barriers.csv", "instability.csv", "instability.md", "instability.png", "metrics.json", "section.md"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stability"]["k"] == 64 and metrics["stability"]["k_label"] == "64it"
    assert metrics["instability"]["0it"]["test"]["error_barrier"]["mean"] == pytest.approx(0.101)
    assert metrics["instability"]["0it"]["test"]["replicates"] == 2
    assert "instability/instability.png" in (out / "section.md").read_text()
    # k = 0 has a 10-point barrier, above the 2% threshold: the headline says so
    assert "**Headline.** **Not shown.** For mlp on mnist1d, children forked at k = 0 have a test error barrier of 10.10 ± 0.14 points, " \
           "not below the stability threshold of 2%" in (out / "section.md").read_text()
    assert metrics["barrier_definition"] == "max_minus_mean"
    assert set(pd.read_csv(out / "barriers.csv").barrier_definition) == {"max_minus_mean"}
    assert "| test error barrier (max_minus_mean, %)" in (out / "instability.md").read_text()
    # the children's endpoints have equal error, so Entezari's barrier is the same number, named differently
    ent = Config.from_dict({"instability": {"steps": ["0it", "16it", "64it"], "points": 5}, "evaluation": {"barrier": "entezari"}})
    other = report.write(ent, csvs, tmp_path / "entezari")
    assert other["instability"] == metrics["instability"] and other["barrier_definition"] == "entezari"
    text = (tmp_path / "entezari/section.md").read_text()
    assert "test error barrier (entezari, %)" in text and "barrier (`entezari`)" in text and "max_minus_mean" not in text


def _summary(barriers: dict[str, float]) -> pd.DataFrame:
    """The report's summary of two replicates per spawn step label (k in iterations from the label)."""
    from modeconn.families.instability import report

    rows = [{"k_label": label, "k": int(label.removesuffix("it")), "trunk": t, "split": split, "error_barrier": b + 0.001 * t,
             "loss_barrier": 0.1, "error_endpoints": 0.05, "barrier_definition": "max_minus_mean"}
            for label, b in barriers.items() for t in (0, 1) for split in ("train", "test")]
    return report.summary(pd.DataFrame(rows), ["k", "k_label", "split"])


def test_headline_shown_only_when_k0_is_below_the_threshold():
    from modeconn.families.instability import report

    cfg = Config.from_dict({"model": {"name": "lenet300_100"}, "data": {"name": "mnist"}})
    stable = report.headline(cfg, _summary({"0it": 0.0100, "100it": 0.001}), 0.02)
    assert stable.startswith("**Headline.** **Shown.** For lenet300_100 on mnist, children forked at k = 0 have a test error barrier "
                             "of 1.05 ± 0.07 points, below the stability threshold of 2%, so they are stable at initialisation")
    assert "Frankle et al. 2020 find LeNet-300-100 on MNIST stable already at k = 0" in stable
    unstable = report.headline(cfg, _summary({"0it": 0.05, "100it": 0.001}), 0.02)
    assert unstable.startswith("**Headline.** **Not shown.**") and "5.05 ± 0.07 points, not below the stability threshold of 2%, so they are not stable" in unstable
    # the threshold is the one given (instability.threshold)
    assert report.headline(cfg, _summary({"0it": 0.05, "100it": 0.001}), 0.10).startswith("**Headline.** **Shown.**")
    # k = 0 not run: nothing to show, and the sentence says why
    missing = report.headline(cfg, _summary({"100it": 0.001, "20it": 0.003}), 0.02)
    assert missing.startswith("**Headline.** **Not shown.** k = 0 is not among the spawn steps run (20it, 100it)")
