"""Lottery tickets: exact pruning counts, monotone masks, baselines, masked training, rewinding."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from conftest import MLP_SHAPE, synthetic
from modeconn import checkpoint
from modeconn.config import Config, ModelConfig, TrainConfig
from modeconn.core import pruning
from modeconn.core.params import member
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
