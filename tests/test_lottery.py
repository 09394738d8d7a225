"""Lottery tickets: exact pruning counts, monotone masks, baselines, masked training, rewinding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import MLP_SHAPE, synthetic
from modeconn import checkpoint
from modeconn.config import Config, ModelConfig, TrainConfig
from modeconn.core import pruning
from modeconn.core.params import member
from modeconn.data import Dataset
from modeconn.models import build_model, model_info
from modeconn.train import MemberSeeds, init_population, member_optimizer_state, train_population

MLP = ModelConfig(name="mlp", depth=2, width=16)
N, BATCH = 48, 8  # 6 steps per epoch
OPTIMIZERS = {
    "sgd-momentum-wd": TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-3, batch_size=BATCH, duration="2ep"),
    "adam": TrainConfig(optimizer="adam", lr=1e-2, batch_size=BATCH, duration="2ep"),
    "adamw": TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=5e-2, batch_size=BATCH, duration="2ep"),
}


def network(seed: int = 0):
    model, params, buffers = init_population(lambda: build_model(MLP, MLP_SHAPE, 4), [seed])
    return model, member(params, 0), member(buffers, 0)


def prunable(model):
    info = model_info(model)
    return info.prunable, f"{info.output_layer}.weight"


# ------------------------------------------------------------------------------------ pruning maths


@pytest.mark.parametrize("fraction,output_fraction", [(0.2, 0.1), (0.5, 0.0), (0.2, 0.2)])
def test_exact_pruned_fraction_per_level(fraction, output_fraction):
    model, params, _ = network()
    names, output = prunable(model)
    mask = pruning.ones_mask(params, names)
    hidden_alive = sum(params[n].numel() for n in names if n != output)
    output_alive = params[output].numel()
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        weights = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}  # as if retrained
        mask = pruning.magnitude_prune(weights, mask, fraction, output, output_fraction)
        hidden_alive -= round(fraction * hidden_alive)
        output_alive -= round(output_fraction * output_alive)
        assert sum(int(mask[n].sum()) for n in names if n != output) == hidden_alive
        assert int(mask[output].sum()) == output_alive
        assert pruning.remaining(mask) == hidden_alive + output_alive
    if output_fraction == 0.0:
        assert bool(mask[output].all())


def test_masks_shrink_monotonically_and_keep_the_largest_weights():
    model, params, _ = network()
    names, output = prunable(model)
    mask = pruning.ones_mask(params, names)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        weights = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}
        new = pruning.magnitude_prune(weights, mask, 0.3, output, 0.15)
        assert pruning.is_subset(new, mask) and pruning.remaining(new) < pruning.remaining(mask)
        # global within the pool: every kept hidden weight is at least as large as every newly pruned one
        hidden = [n for n in names if n != output]
        kept = torch.cat([weights[n].abs()[new[n] > 0] for n in hidden])
        dropped = torch.cat([weights[n].abs()[(mask[n] > 0) & (new[n] == 0)] for n in hidden])
        assert kept.min() >= dropped.max()
        mask = new


def test_exact_count_with_tied_magnitudes():
    weights = {"w": torch.ones(10, 10)}
    mask = pruning.magnitude_prune(weights, {"w": torch.ones(10, 10)}, 0.37)
    assert pruning.remaining(mask) == 100 - 37


def _reference_global_prune(weights, mask, fraction, output, output_fraction):
    """The pre-`rule` behaviour, written out with a sort: one pool of all non-output layers, the output layer apart."""
    out = {}
    for pool, f in (([n for n in mask if n != output], fraction), ([output], output_fraction)):
        alive = torch.cat([weights[n].abs()[mask[n] > 0] for n in pool])
        keep = alive.numel() - round(f * alive.numel())
        threshold = alive.sort(descending=True).values[keep - 1]  # distinct magnitudes: no ties
        out |= {n: ((weights[n].abs() >= threshold) & (mask[n] > 0)).float() for n in pool}
    return out


def test_global_rule_is_the_default_and_gives_the_original_masks():
    model, params, _ = network()
    names, output = prunable(model)
    mask = pruning.ones_mask(params, names)
    g = torch.Generator().manual_seed(4)
    for _ in range(4):
        weights = {n: torch.randn(p.shape, generator=g) * (1 + i) for i, (n, p) in enumerate(params.items())}  # layers of different scales
        default = pruning.magnitude_prune(weights, mask, 0.2, output, 0.1)
        explicit = pruning.magnitude_prune(weights, mask, 0.2, output, 0.1, rule="global")
        reference = _reference_global_prune(weights, mask, 0.2, output, 0.1)
        for n in names:
            assert torch.equal(default[n], explicit[n]) and torch.equal(default[n], reference[n]), n
        mask = default


def lenet():
    model, params, _ = init_population(lambda: build_model(ModelConfig(name="lenet300_100", norm="none"), (1, 28, 28), 10), [0])
    return model, member(params, 0)


def test_layerwise_rule_prunes_every_layer_at_its_own_rate():
    """Frankle & Carbin 2019, LeNet-300-100: each hidden layer loses 20% of its survivors per round, the output layer 10%."""
    model, params = lenet()
    names, output = prunable(model)
    mask = pruning.ones_mask(params, names)
    alive = {n: params[n].numel() for n in names}
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        # scales as different as the layers' fan-ins make them: a global ranking would not prune them equally
        weights = {n: torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 for n, p in params.items()}
        new = pruning.magnitude_prune(weights, mask, 0.2, output, 0.1, rule="layerwise")
        for n in names:
            alive[n] -= round((0.1 if n == output else 0.2) * alive[n])
            assert int(new[n].sum()) == alive[n], n
            # by magnitude within the layer
            kept, dropped = weights[n].abs()[new[n] > 0], weights[n].abs()[(mask[n] > 0) & (new[n] == 0)]
            assert kept.min() >= dropped.max(), n
        assert pruning.is_subset(new, mask)
        mask = new
    glob = pruning.magnitude_prune(weights, pruning.ones_mask(params, names), 0.2, output, 0.1, rule="global")
    hidden = [n for n in names if n != output]
    assert {n: int(glob[n].sum()) for n in hidden} != {n: params[n].numel() - round(0.2 * params[n].numel()) for n in hidden}


def test_unknown_pruning_rule_is_refused():
    model, params, _ = network()
    names, output = prunable(model)
    with pytest.raises(ValueError, match="unknown pruning rule 'per_neuron'"):
        pruning.magnitude_prune(params, pruning.ones_mask(params, names), 0.2, output, 0.1, rule="per_neuron")


def test_lenet_preset_prunes_as_frankle_and_carbin_and_the_default_stays_global():
    from modeconn.config import load_yaml

    root = Path(__file__).resolve().parents[1]
    lenet_cfg = Config.from_dict(load_yaml(root / "params.yaml", root / "config/mnist.yaml", root / "config/mnist_lenet.yaml"))
    assert lenet_cfg.model.name == "lenet300_100"
    assert (lenet_cfg.lottery.rule, lenet_cfg.lottery.fraction, lenet_cfg.lottery.output_fraction) == ("layerwise", 0.2, 0.1)
    assert Config.from_dict(load_yaml(root / "params.yaml")).lottery.rule == "global"
    assert Config.from_dict({}).lottery.rule == "global"


def test_random_pruning_has_the_same_layerwise_sparsity():
    model, params, _ = network()
    names, output = prunable(model)
    mask = pruning.magnitude_prune(params, pruning.ones_mask(params, names), 0.5, output, 0.25)
    rand = pruning.random_like(mask, torch.Generator().manual_seed(3))
    again = pruning.random_like(mask, torch.Generator().manual_seed(3))
    for n in names:
        assert int(rand[n].sum()) == int(mask[n].sum())
        assert torch.equal(rand[n], again[n])
    assert any(not torch.equal(rand[n], mask[n]) for n in names)


def test_apply_zeroes_exactly_the_masked_weights_and_copies_the_rest():
    model, params, _ = network()
    names, output = prunable(model)
    mask = pruning.magnitude_prune(params, pruning.ones_mask(params, names), 0.5, output, 0.5)
    out = pruning.apply(params, mask)
    for n, p in params.items():
        if n in mask:
            assert torch.equal(out[n][mask[n] > 0], p[mask[n] > 0]) and bool((out[n][mask[n] == 0] == 0).all())
        else:
            assert torch.equal(out[n], p)


def test_check_mask_rejects_bad_masks():
    _, params, _ = network()
    with pytest.raises(ValueError, match="unknown"):
        pruning.check_mask({"nope": torch.ones(1)}, params)
    with pytest.raises(ValueError, match="shape"):
        pruning.check_mask({"classifier.weight": torch.ones(1)}, params)
    with pytest.raises(ValueError, match="0 and 1"):
        pruning.check_mask({"classifier.bias": torch.full_like(params["classifier.bias"], 0.5)}, params)


# ------------------------------------------------------------------------------------ masked training


def masks_for(params: dict, names, seeds: list[int], fraction: float = 0.6) -> list[dict]:
    """One random mask per seed over the named weights of a stacked population (about 40% kept)."""
    return [
        {n: (torch.rand(params[n][0].shape, generator=torch.Generator().manual_seed(100 * s + i)) > fraction).float() for i, n in enumerate(names)}
        for s in seeds
    ]


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_pruned_weights_and_their_optimizer_state_stay_zero(opt):
    """Resume at step k with a non-zero optimizer state, under a mask: pruned entries stay exactly 0."""
    cfg = dataclasses.replace(OPTIMIZERS[opt], checkpoint_steps=("4it",))
    x, y = synthetic(N, MLP_SHAPE, seed=0)
    seeds = [MemberSeeds(init=i, data=10 + i, augment=i) for i in range(2)]
    model, params, buffers = init_population(lambda: build_model(MLP, MLP_SHAPE, 4), [s.init for s in seeds])
    saved = {}

    def keep(state):
        saved["params"] = {k: v.detach().clone() for k, v in state.params.items()}
        saved["opt"] = [member_optimizer_state(state, i) for i in range(2)]

    train_population(model, params, buffers, x, y, cfg, seeds, on_checkpoint=keep)
    names, _ = prunable(model)
    masks = pruning.stacked_masks(masks_for(saved["params"], names, [0, 1]))
    state = train_population(model, saved["params"], buffers, x, y, cfg, seeds, start_step=4, member_optimizer_states=saved["opt"], masks=masks)
    for n in names:
        assert bool((state.params[n].detach()[masks[n] == 0] == 0).all()), n
        assert bool((state.params[n].detach()[masks[n] > 0] != 0).all()), n
    for i in range(2):
        for key, value in member_optimizer_state(state, i).items():
            name = key.split("/", 1)[0]
            if name in masks and value.shape == masks[name][i].shape:
                assert bool((value[masks[name][i] == 0] == 0).all()), key


def test_masked_population_equals_masked_members_alone():
    cfg = OPTIMIZERS["adam"]
    x, y = synthetic(N, MLP_SHAPE, seed=0)
    seeds = [MemberSeeds(init=i, data=10 + i, augment=i) for i in range(3)]
    model, params, buffers = init_population(lambda: build_model(MLP, MLP_SHAPE, 4), [s.init for s in seeds])
    names, _ = prunable(model)
    masks = masks_for(params, names, [0, 1, 2])
    together = train_population(model, params, buffers, x, y, cfg, seeds, masks=pruning.stacked_masks(masks))
    for i in range(3):
        alone = train_population(model, {k: v[i : i + 1] for k, v in params.items()}, {k: v[i : i + 1] for k, v in buffers.items()},
                                 x, y, cfg, [seeds[i]], masks=pruning.stacked_masks([masks[i]]))
        for k, v in alone.params.items():
            torch.testing.assert_close(together.params[k][i].detach(), v[0].detach(), atol=1e-5, rtol=0)


def test_masks_of_wrong_shape_are_rejected():
    x, y = synthetic(N, MLP_SHAPE, seed=0)
    model, params, buffers = init_population(lambda: build_model(MLP, MLP_SHAPE, 4), [0])
    with pytest.raises(ValueError, match="shape"):
        train_population(model, params, buffers, x, y, OPTIMIZERS["adam"], [MemberSeeds.same(0)], masks={"classifier.weight": torch.ones(3)})


# ------------------------------------------------------------------------------------ rewinding


def test_rewinding_restores_the_step_k_weights_bit_for_bit(tmp_path):
    cfg = dataclasses.replace(OPTIMIZERS["sgd-momentum-wd"], checkpoint_steps=("5it",))
    x, y = synthetic(N, MLP_SHAPE, seed=0)
    seeds = [MemberSeeds.same(0)]
    model, params, buffers = init_population(lambda: build_model(MLP, MLP_SHAPE, 4), [0])

    def save(state):  # as the seeds' training saves its step-k checkpoint
        ckpt = checkpoint.Checkpoint(member(state.params, 0), member(state.buffers, 0), {"step": state.step}, member_optimizer_state(state, 0))
        checkpoint.save(tmp_path / "seed0.step5.safetensors", ckpt)

    final = train_population(model, params, buffers, x, y, cfg, seeds, on_checkpoint=save)
    at_k = train_population(model, params, buffers, x, y, cfg, seeds, stop_step=5)
    names, output = prunable(model)
    mask = pruning.magnitude_prune(member(final.params, 0), pruning.ones_mask(member(final.params, 0), names), 0.5, output, 0.25)
    rewind = checkpoint.load(tmp_path / "seed0.step5.safetensors")
    ticket = pruning.apply(rewind.params, mask)
    for n, p in member(at_k.params, 0).items():
        p = p.detach()
        if n in mask:
            assert torch.equal(ticket[n][mask[n] > 0], p[mask[n] > 0]) and bool((ticket[n][mask[n] == 0] == 0).all())
        else:
            assert torch.equal(ticket[n], p)
    # a ticket checkpoint round-trips exactly too
    checkpoint.save(tmp_path / "ticket.safetensors", checkpoint.Checkpoint(ticket, {}, {"kind": "ticket"}))
    back = checkpoint.load(tmp_path / "ticket.safetensors")
    assert all(torch.equal(back.params[n], ticket[n]) for n in ticket)


def test_training_a_dense_mask_changes_nothing():
    cfg = OPTIMIZERS["sgd-momentum-wd"]
    x, y = synthetic(N, MLP_SHAPE, seed=0)
    model, params, buffers = init_population(lambda: build_model(MLP, MLP_SHAPE, 4), [0])
    names, _ = prunable(model)
    ones = {n: torch.ones_like(params[n]) for n in names}
    a = train_population(model, params, buffers, x, y, cfg, [MemberSeeds.same(0)])
    b = train_population(model, params, buffers, x, y, cfg, [MemberSeeds.same(0)], masks=ones)
    assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)


# ------------------------------------------------------------------------------------ the reinit baseline


def rewound_seed(opt: str, k: int):
    """Seed 0 trained with OPTIMIZERS[opt]: (model, its step-k checkpoint with optimizer state, its final checkpoint, data)."""
    cfg = dataclasses.replace(OPTIMIZERS[opt], checkpoint_steps=(f"{k}it",))
    x, y = synthetic(N, MLP_SHAPE, seed=0)
    model, params, buffers = init_population(lambda: build_model(MLP, MLP_SHAPE, 4), [0])
    saved = {}

    def keep(state):
        params_k = {n: v.detach().clone() for n, v in member(state.params, 0).items()}
        saved["k"] = checkpoint.Checkpoint(params_k, member(state.buffers, 0), {"step": state.step}, member_optimizer_state(state, 0))

    final = train_population(model, params, buffers, x, y, cfg, [MemberSeeds.same(0)], on_checkpoint=keep)
    dense = checkpoint.Checkpoint({n: v.detach() for n, v in member(final.params, 0).items()}, member(final.buffers, 0), {})
    xt, yt = synthetic(16, MLP_SHAPE, seed=1)
    return model, saved["k"], dense, Dataset("synthetic", x, y, xt, yt, 4)


def level_one(opt: str, k: int):
    """The four members (seed, variant, start, mask, seeds) of level 1 for seed 0 rewound to step k, and what they need."""
    from modeconn.families.lottery import stage

    model, rewind, dense, data = rewound_seed(opt, k)
    train = dataclasses.asdict(OPTIMIZERS[opt])
    cfg = Config.from_dict({"train": {**train, "milestones": list(train["milestones"]), "checkpoint_steps": []}})
    names, output = prunable(model)
    members = stage.level_members(cfg, 0, 1, dense, rewind, dense.params, pruning.ones_mask(dense.params, names), model,
                                  lambda: build_model(MLP, MLP_SHAPE, 4), output)
    return cfg, model, rewind, data, [(0, *m) for m in members]


def test_reinit_baseline_starts_with_a_fresh_optimizer_state():
    """A freshly initialised network has no optimizer history: no momentum, no Adam moments, step 0."""
    _, _, rewind, _, members = level_one("adam", 4)
    assert rewind.optimizer  # the step-k state the rewound members carry (Adam moments and step count)
    starts = {variant: start for _, variant, start, _, _ in members}
    assert starts["reinit"].optimizer == {}
    for variant in ("imp", "random_prune", "fork"):
        assert set(starts[variant].optimizer) == set(rewind.optimizer)
        assert all(torch.equal(starts[variant].optimizer[n], rewind.optimizer[n]) for n in rewind.optimizer), variant


class _Run:
    """A child run that records nothing (the epoch logger's target)."""

    def metrics(self, values, step=None):
        pass


@pytest.mark.parametrize("opt", ["adam", "sgd-momentum-wd"])
def test_level_trains_every_member_as_it_would_train_alone(opt):
    """Rewound members keep their step-k state, the reinit member trains from a fresh state, each as if alone."""
    from modeconn.families.lottery import stage

    cfg, model, rewind, data, members = level_one(opt, 4)
    state = stage.train_members(cfg, data, model, members, 4, [_Run() for _ in members], 1)
    schedule = dataclasses.replace(cfg.train, checkpoint_steps=())

    def alone(start, mask, seeds, optimizer):
        return train_population(model, {n: v[None] for n, v in start.params.items()}, {n: v[None] for n, v in start.buffers.items()},
                                data.x_train, data.y_train, schedule, [seeds], start_step=4, member_optimizer_states=[optimizer],
                                masks=pruning.stacked_masks([mask]))

    for i, (_, variant, start, mask, seeds) in enumerate(members):
        ref = alone(start, mask, seeds, start.optimizer)
        for n, v in ref.params.items():
            torch.testing.assert_close(state.params[n][i].detach(), v[0].detach(), atol=1e-5, rtol=0, msg=lambda m, n=n: f"{variant} {n}: {m}")
    # and the fresh state matters: the reinit member under the rewound state would end elsewhere
    i, (_, _, start, mask, seeds) = next((i, m) for i, m in enumerate(members) if m[1] == "reinit")
    inherited = alone(start, mask, seeds, rewind.optimizer)
    assert max((state.params[n][i].detach() - v[0].detach()).abs().max().item() for n, v in inherited.params.items()) > 1e-3


# ------------------------------------------------------------------------------------ report


def test_report_writes_every_file_and_flags_matching_and_stable(tmp_path):
    from modeconn.families.lottery import report

    paths = []
    for level, density in ((1, 0.8), (2, 0.64)):
        d = tmp_path / f"level{level}"
        d.mkdir()
        acc = []
        for seed in (0, 1):
            for split in ("train", "test"):
                for variant, err in (("imp", 0.10 + 0.01 * level), ("random_prune", 0.2), ("reinit", 0.25), ("fork", 0.1), ("dense", 0.11)):
                    dens = 1.0 if variant == "dense" else density
                    acc.append({"level": 0 if variant == "dense" else level, "seed": seed, "variant": variant, "remaining": int(100 * dens), "total": 100,
                                "density": dens, "split": split, "loss": 0.3, "error": err, "bn_reset": False, "examples": 10})
                for a in torch.linspace(0, 1, 5).tolist():
                    bump = (0.0 if level == 1 else 0.05) * (1 - abs(2 * a - 1))
                    paths.append({"level": level, "seed": seed, "density": density, "alpha": a, "split": split, "loss": 0.3, "error": 0.1 + bump, "bn_reset": False, "examples": 10})
        pd.DataFrame(acc).to_csv(d / "accuracy.csv", index=False)
        pd.DataFrame([p for p in paths if p["level"] == level]).to_csv(d / "stability.csv", index=False)
    cfg = Config.from_dict({"lottery": {"levels": 2}})
    out = tmp_path / "reports"
    report.write(cfg, [tmp_path / "level1", tmp_path / "level2"], out)
    for name in ("accuracy.csv", "levels.csv", "levels.md", "accuracy.png", "stability.png", "metrics.json", "section.md"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["matching_levels"] == [1] and metrics["stable_levels"] == [1]
    assert metrics["levels"]["2"]["instability_mean"] == pytest.approx(0.05)
    assert "lottery/accuracy.png" in (out / "section.md").read_text()
    # IMP matches at level 1 (80%), neither baseline at any level: shown
    assert "**Headline.** **Shown.** IMP tickets match the dense test accuracy (89.00%; matching: at most 0.2 points below it) at as few " \
           "as 80.0% of the weights remaining, random pruning at no level run and random reinitialisation at no level run" in (out / "section.md").read_text()
    # the pruning rule is named in the table's file, the section and the metrics
    assert (metrics["rule"], metrics["fraction"], metrics["output_fraction"]) == ("global", 0.2, 0.1)
    for name in ("levels.md", "section.md"):
        assert "Pruning rule `global`: each level removes 20% of the remaining weights in one magnitude ranking" in (out / name).read_text(), name


def test_report_names_the_layerwise_rule_and_its_rates():
    from modeconn.families.lottery import report

    cfg = Config.from_dict({"lottery": {"rule": "layerwise", "fraction": 0.2, "output_fraction": 0.1}})
    text = report.definitions(cfg, 5)
    assert "Pruning rule `layerwise`: each level removes 20% of the remaining weights of every layer by magnitude within that layer" in text
    assert "10% of the output layer's" in text


def _levels(imp: list[float], random_prune: list[float], reinit: list[float], dense: float = 0.98) -> pd.DataFrame:
    """levels_table's accuracy columns for levels at 80%, 51.2%, 26.2% and 10.7% of the weights remaining."""
    remaining = [80.0, 51.2, 26.2, 10.7][: len(imp)]
    return pd.DataFrame({"level": range(1, len(imp) + 1), "remaining_percent": remaining, "imp_accuracy_mean": imp,
                         "random_prune_accuracy_mean": random_prune, "reinit_accuracy_mean": reinit, "dense_accuracy_mean": dense})


def test_headline_shown_when_imp_matches_sparser_than_both_baselines():
    from modeconn.families.lottery import report

    text = report.headline(_levels([0.981, 0.980, 0.979, 0.975], [0.980, 0.970, 0.95, 0.9], [0.979, 0.96, 0.94, 0.9]), 0.002)
    assert text.startswith("**Headline.** **Shown.** IMP tickets match the dense test accuracy (98.00%; matching: at most 0.2 points "
                           "below it) at as few as 26.2% of the weights remaining, random pruning at as few as 80.0% and random "
                           "reinitialisation at as few as 80.0% (sparsest level run: 10.7%), so IMP matches at a sparser level than both baselines")
    assert "Frankle & Carbin 2019 find LeNet-300-100 tickets matching down to about 3.6%" in text
    # the tolerance is the one given (lottery.matching_tolerance)
    assert "at as few as 10.7% of the weights remaining" in report.headline(_levels([0.981, 0.980, 0.979, 0.975], [0.9] * 4, [0.9] * 4), 0.01)


def test_headline_not_shown_when_a_baseline_matches_as_sparse_or_imp_never_matches():
    from modeconn.families.lottery import report

    level = report.headline(_levels([0.981, 0.980], [0.980, 0.979], [0.9, 0.9]), 0.002)
    assert level.startswith("**Headline.** **Not shown.**") and "random pruning at as few as 51.2%" in level
    assert "so IMP does not match at a sparser level than both baselines" in level
    never = report.headline(_levels([0.95, 0.94], [0.9, 0.9], [0.9, 0.9]), 0.002)
    assert never.startswith("**Headline.** **Not shown.** IMP tickets match the dense test accuracy (98.00%; matching: at most 0.2 "
                            "points below it) at no level run, random pruning at no level run")
