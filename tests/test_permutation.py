"""Permutation specs and matching: invariance for every model, oracle recovery, identity, monotone
weight matching, activation matching, STE."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from conftest import randomize_norms, seeded_model, synthetic
from modeconn.config import ModelConfig
from modeconn.core import matching
from modeconn.core import permutation as perm
from modeconn.core.barrier import barrier
from modeconn.core.params import combine, module_state, stack
from modeconn.core.paths import alphas, linear_coefficients
from modeconn.core.population import evaluate
from modeconn.models import MODELS, permutation_spec

SHAPES = {"mlp": (1, 12), "lenet300_100": (1, 12), "resnet20": (3, 8, 8), "vgg11": (3, 8, 8), "vgg16": (3, 8, 8)}
NORMS = ("none", "bn", "ln")


def build(name: str, norm: str, seed: int = 0, width: int = 16):
    cfg = ModelConfig(name=name, norm=norm, depth=2, width=width)
    model = randomize_norms(seeded_model(cfg, SHAPES[name], seed), 100 + seed).eval()
    return model, permutation_spec(model), module_state(model)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", list(MODELS))
def test_random_permutation_leaves_function_unchanged(name, norm):
    model, spec, (params, buffers) = build(name, norm)
    perm.check(spec, params, buffers)
    perms = perm.random(perm.sizes(spec, params), torch.Generator().manual_seed(3))
    assert not perm.is_identity(perms)
    x = synthetic(6, SHAPES[name], 0)[0]
    before = functional_call(model, (params, buffers), (x,))
    after = functional_call(model, (perm.apply(spec, perms, params), perm.apply(spec, perms, buffers)), (x,))
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    # and the weights really moved
    assert any(not torch.equal(perm.apply(spec, perms, params)[k], v) for k, v in params.items())


def test_stacked_apply_equals_loop():
    model, spec, _ = build("resnet20", "bn")
    states = [module_state(build("resnet20", "bn", seed=s)[0]) for s in (0, 1)]
    perms = perm.random(perm.sizes(spec, states[0][0]), torch.Generator().manual_seed(1))
    stacked = perm.apply(spec, perms, stack([s[0] for s in states]), stacked=True)
    for i, (p, _) in enumerate(states):
        for k, v in perm.apply(spec, perms, p).items():
            assert torch.equal(stacked[k][i], v)


def test_spec_check_names_missing_tensor():
    _, spec, (params, buffers) = build("mlp", "none")
    with pytest.raises(ValueError, match="extra|not listed"):
        perm.check(spec, {**params, "extra": torch.zeros(2)}, buffers)


@pytest.mark.parametrize("name,norm", [("mlp", "none"), ("mlp", "bn"), ("resnet20", "ln"), ("vgg11", "bn")])
def test_weight_matching_recovers_oracle_exactly(name, norm):
    """Entezari et al. 2022: B = a random permutation of A is matched back to A exactly."""
    model, spec, (pa, ba) = build(name, norm)
    hidden = perm.random(perm.sizes(spec, pa), torch.Generator().manual_seed(7))
    pb, bb = perm.apply(spec, hidden, pa), perm.apply(spec, hidden, ba)
    result = matching.weight_matching(spec, pa, pb, torch.Generator().manual_seed(0))
    for k, v in perm.apply(spec, result.perms, pb).items():
        assert torch.equal(v, pa[k]), k
    for k, v in perm.apply(spec, result.perms, bb).items():
        assert torch.equal(v, ba[k]), k


def test_oracle_path_has_zero_barrier():
    model, spec, (pa, ba) = build("mlp", "none")
    hidden = perm.random(perm.sizes(spec, pa), torch.Generator().manual_seed(7))
    pb = perm.apply(spec, hidden, pa)
    matched = perm.apply(spec, matching.weight_matching(spec, pa, pb, torch.Generator().manual_seed(0)).perms, pb)
    coeffs = linear_coefficients(alphas(9))
    x, y = synthetic(64, SHAPES["mlp"], 1)
    res = evaluate(model, combine(coeffs, stack([pa, matched])), combine(coeffs, stack([ba, ba])), x, y)
    assert barrier(res["loss"]).item() == pytest.approx(0.0, abs=1e-6)
    assert barrier(res["error"]).item() == 0.0


@pytest.mark.parametrize("name", ["mlp", "resnet20"])
def test_activation_matching_recovers_oracle(name):
    """Exact up to units that are dead on every probe input (indistinguishable by their activations):
    the matched B has exactly A's post-activation features at every observation point."""
    model, spec, (pa, ba) = build(name, "none")
    hidden = perm.random(perm.sizes(spec, pa), torch.Generator().manual_seed(5))
    state_b = (perm.apply(spec, hidden, pa), perm.apply(spec, hidden, ba))
    x = synthetic(64, SHAPES[name], 2)[0]
    result = matching.activation_matching(model, spec, (pa, ba), state_b, x, batch_size=16)
    matched = tuple(perm.apply(spec, result.perms, t) for t in state_b)
    fa = matching.post_activation_features(model, pa, ba, spec.activations, x)
    fm = matching.post_activation_features(model, *matched, spec.activations, x)
    for p in fa:
        for a, m in zip(fa[p], fm[p]):
            torch.testing.assert_close(m, a, rtol=1e-5, atol=1e-6)
    if name == "mlp":
        inv = perm.inverse(hidden)
        assert all(torch.equal(result.perms[p], inv[p]) for p in inv)


@pytest.mark.parametrize("name", ["mlp", "resnet20"])
def test_matching_a_model_to_itself_gives_identity(name):
    model, spec, (pa, ba) = build(name, "ln")
    assert perm.is_identity(matching.weight_matching(spec, pa, pa, torch.Generator().manual_seed(0)).perms)
    x = synthetic(32, SHAPES[name], 2)[0]
    assert perm.is_identity(matching.activation_matching(model, spec, (pa, ba), (pa, ba), x).perms)


@pytest.mark.parametrize("name,norm", [("mlp", "none"), ("resnet20", "bn"), ("vgg11", "none")])
def test_weight_matching_never_lowers_its_objective(name, norm):
    model, spec, (pa, _) = build(name, norm, seed=0)
    _, _, (pb, _) = build(name, norm, seed=1)
    result = matching.weight_matching(spec, pa, pb, torch.Generator().manual_seed(0))
    h = result.history
    assert len(h) >= 2
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(h, h[1:])), h
    assert h[-1] > h[0]  # different networks: matching found something better than the identity
    assert result.history[-1] == pytest.approx(matching.objective(spec, pa, pb, result.perms))


def test_assignment_matches_brute_force():
    import itertools

    cost = torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    best = max(itertools.permutations(range(5)), key=lambda s: sum(cost[i, s[i]] for i in range(5)))
    assert matching.assignment(cost).tolist() == list(best)


def test_weight_matching_finds_the_brute_force_optimum_of_a_one_hidden_layer_net():
    """One hidden layer: one permutation, so one linear assignment is exact; check it against all 5!."""
    import itertools

    cfg = ModelConfig(name="mlp", norm="none", depth=1, width=5)
    pa, pb = (module_state(seeded_model(cfg, SHAPES["mlp"], seed))[0] for seed in (0, 1))
    spec = permutation_spec(seeded_model(cfg, SHAPES["mlp"], 0))
    (p,) = perm.sizes(spec, pa)

    def value(order) -> float:
        return matching.objective(spec, pa, pb, {p: torch.tensor(order)})

    best = max(itertools.permutations(range(5)), key=value)
    assert value(best) > value(tuple(range(5)))  # independent networks: the identity is not the optimum
    result = matching.weight_matching(spec, pa, pb, torch.Generator().manual_seed(0))
    assert result.perms[p].tolist() == list(best)
    assert result.history[-1] == pytest.approx(value(best))


def _midpoint_loss(model, spec, perms, pa, ba, pb, x, y) -> float:
    pm = perm.apply(spec, perms, pb)
    mid = {k: 0.5 * (pa[k] + pm[k]) for k in pa}
    return torch.nn.functional.cross_entropy(functional_call(model, (mid, ba), (x,)), y).item()


def test_ste_starts_at_weight_matching_and_keeps_its_best_permutation():
    model, spec, (pa, ba) = build("mlp", "none", seed=0, width=8)
    _, _, (pb, _) = build("mlp", "none", seed=1, width=8)
    x, y = synthetic(128, SHAPES["mlp"], 4)
    result = matching.ste_matching(model, spec, (pa, ba), pb, x, y, x, y, torch.Generator().manual_seed(0), steps=5, lr=1e-2, batch_size=32)
    assert len(result.history) == 6
    # step 0: the proxy is θ_A, so its permutation is weight matching's from the same generator state
    wm = matching.weight_matching(spec, pa, pb, torch.Generator().manual_seed(0)).perms
    assert result.history[0] == pytest.approx(_midpoint_loss(model, spec, wm, pa, ba, pb, x, y), rel=1e-6)
    # the kept permutation is the one with the lowest midpoint loss seen
    assert _midpoint_loss(model, spec, result.perms, pa, ba, pb, x, y) == pytest.approx(min(result.history), rel=1e-5)
