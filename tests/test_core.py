"""Properties of core.params, core.paths, core.barrier and core.population (evaluate, recompute_bn)."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ARCHS, clone, member_module, population, seeded_model, synthetic
from modeconn.core import barrier as B
from modeconn.core.params import combine, flat_norm, member, module_state, select, size, stack, unstack
from modeconn.core.paths import alphas, linear_coefficients
from modeconn.core.population import batchnorm_layers, evaluate, has_batchnorm, recompute_bn


def assert_dicts_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def assert_dicts_close(a: dict, b: dict, atol: float, rtol: float = 0.0) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=lambda m, k=k: f"{k}: {m}")


# ------------------------------------------------------------------------------------ params


def _states(arch: str, seeds: list[int]):
    cfg, shape = ARCHS[arch]
    return [module_state(seeded_model(cfg, shape, s)) for s in seeds]


def test_stack_unstack_round_trip():
    states = _states("mlp-bn", [0, 1, 2])
    for part in (0, 1):  # params, buffers
        members = [s[part] for s in states]
        stacked = stack(members)
        assert size(stacked) == 3
        for k, v in stacked.items():
            assert v.shape == (3, *members[0][k].shape)
        back = unstack(stacked)
        assert len(back) == 3
        for original, restored in zip(members, back):
            assert_dicts_equal(original, restored)


def test_member_and_select():
    params = stack([s[0] for s in _states("mlp", [0, 1, 2])])
    singles = unstack(params)
    for i in range(3):
        assert_dicts_equal(member(params, i), singles[i])
    assert_dicts_equal(select(params, [0, 2]), stack([singles[0], singles[2]]))
    assert_dicts_equal(select(params, slice(1, 3)), stack([singles[1], singles[2]]))
    assert_dicts_equal(select(params, torch.tensor([2, 0])), stack([singles[2], singles[0]]))


def test_stack_rejects_empty_and_mismatched_members():
    with pytest.raises(ValueError, match="empty population"):
        stack([])
    a = {"w": torch.zeros(2), "b": torch.zeros(1)}
    with pytest.raises(ValueError, match="member 1 has different tensor names"):
        stack([a, {"w": torch.zeros(2)}])
    with pytest.raises(ValueError, match="member 1 has different tensor names"):
        stack([a, {"b": torch.zeros(1), "w": torch.zeros(2)}])  # same names, different order


def test_size_rejects_inconsistent_population():
    with pytest.raises(ValueError, match=r"inconsistent population sizes \[2, 3\]"):
        size({"a": torch.zeros(3, 2), "b": torch.zeros(2, 2)})


def test_combine_identity_coefficients_return_anchors_exactly():
    states = _states("mlp-bn", [0, 1])
    params = stack([s[0] for s in states])
    buffers = stack([s[1] for s in states])
    eye = torch.eye(2, dtype=torch.float64)
    assert_dicts_equal(combine(eye, params), params)
    out = combine(eye, buffers)
    for k, v in buffers.items():
        if v.is_floating_point():
            assert torch.equal(out[k], v), k


def test_combine_linear_path_endpoints_are_exact():
    states = _states("mlp", [3, 4])
    params = stack([s[0] for s in states])
    out = combine(linear_coefficients(alphas(5)), params)
    assert size(out) == 5
    assert_dicts_equal(member(out, 0), member(params, 0))
    assert_dicts_equal(member(out, 4), member(params, 1))


@pytest.mark.parametrize("anchors", [2, 3])
def test_combine_rows_summing_to_one_on_identical_anchors_give_the_anchor(anchors):
    p, b = _states("mlp-bn", [7])[0]
    if anchors == 2:
        coeffs = linear_coefficients(alphas(9))
    else:  # barycentric points of a simplex
        w = torch.rand(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        coeffs = w / w.sum(1, keepdim=True)
    assert torch.allclose(coeffs.sum(1), torch.ones(coeffs.shape[0], dtype=coeffs.dtype))
    for state in (p, b):
        out = combine(coeffs, stack([state] * anchors))
        for i in range(coeffs.shape[0]):
            for k, v in state.items():
                torch.testing.assert_close(out[k][i], v, atol=1e-6, rtol=1e-6)
                assert out[k][i].dtype == v.dtype


def test_combine_is_the_affine_combination():
    params = stack([s[0] for s in _states("mlp", [0, 1, 2])])
    c = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = combine(c, params)
    for k, v in params.items():
        expected = sum(c[:, m].float().view(-1, *[1] * (v.ndim - 1)) * v[m] for m in range(3))
        torch.testing.assert_close(out[k], expected, atol=1e-5, rtol=1e-5)


def test_combine_does_not_interpolate_integer_buffers():
    anchors = {
        "running_mean": torch.tensor([[0.0, 2.0], [4.0, 6.0]]),
        "num_batches_tracked": torch.tensor([5, 9], dtype=torch.long),
    }
    coeffs = torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.25, 0.75]], dtype=torch.float64)
    out = combine(coeffs, anchors)
    assert out["num_batches_tracked"].dtype == torch.long
    assert out["num_batches_tracked"].tolist() == [5, 5, 5]
    torch.testing.assert_close(out["running_mean"], torch.tensor([[2.0, 4.0], [4.0, 6.0], [3.0, 5.0]]))
    # the result does not alias the anchors
    out["num_batches_tracked"].add_(1)
    assert anchors["num_batches_tracked"].tolist() == [5, 9]


def test_combine_rejects_bad_shapes():
    anchors = {"w": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match=r"must be \[K, M\], got shape \(2,\)"):
        combine(torch.tensor([0.5, 0.5]), anchors)  # not [K, M]
    with pytest.raises(ValueError, match=r"must be \[K, M\], got shape \(1, 1, 2\)"):
        combine(torch.ones(1, 1, 2), anchors)
    with pytest.raises(ValueError, match="w"):
        combine(torch.ones(4, 3) / 3, anchors)  # 3 coefficients, 2 anchors


def test_flat_norm_per_member():
    params = stack([s[0] for s in _states("mlp", [0, 1])])
    norms = flat_norm(params)
    assert norms.shape == (2,)
    for i in range(2):
        flat = torch.cat([v[i].flatten() for v in params.values()])
        torch.testing.assert_close(norms[i], flat.norm(), rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------ paths


@pytest.mark.parametrize("n", [2, 3, 5, 25, 101])
def test_alphas_include_endpoints_and_are_evenly_spaced(n):
    a = alphas(n)
    assert a.shape == (n,)
    assert a[0].item() == 0.0 and a[-1].item() == 1.0
    torch.testing.assert_close(a.diff(), torch.full((n - 1,), 1.0 / (n - 1), dtype=a.dtype), atol=1e-12, rtol=0)


def test_alphas_need_two_points():
    with pytest.raises(ValueError, match="at least 2 points, got 1"):
        alphas(1)


def test_linear_coefficients():
    a = alphas(11)
    c = linear_coefficients(a)
    assert c.shape == (11, 2)
    torch.testing.assert_close(c.sum(1), torch.ones(11, dtype=c.dtype), atol=1e-12, rtol=0)
    assert c[0].tolist() == [1.0, 0.0]
    assert c[-1].tolist() == [0.0, 1.0]
    torch.testing.assert_close(c[:, 1], a)
    torch.testing.assert_close(c[:, 0], 1 - a)


# ------------------------------------------------------------------------------------ barrier


def test_barrier_of_constant_path_is_zero():
    assert B.barrier(torch.full((7,), 2.5)).item() == 0.0


def test_barrier_with_maximum_at_an_endpoint_is_half_the_endpoint_difference():
    g = torch.Generator().manual_seed(0)
    for descending in (False, True):
        v = torch.rand(9, generator=g, dtype=torch.float64).sort(descending=descending).values
        expected = 0.5 * abs(v[-1] - v[0])
        torch.testing.assert_close(B.barrier(v), expected)
    v = torch.tensor([1.0, 0.5, 0.2, 3.0])
    assert B.barrier(v).item() == pytest.approx(1.0)


def test_barrier_hand_example():
    assert B.barrier(torch.tensor([1.0, 3.0, 2.0])).item() == pytest.approx(3.0 - 1.5)


@pytest.mark.parametrize("kind", B.KINDS)
def test_barrier_is_batched_over_leading_dims(kind):
    v = torch.rand(2, 3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = B.barrier(v, kind)
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], B.barrier(v[i, j], kind))


def test_barrier_needs_two_points():
    with pytest.raises(ValueError, match="at least the two endpoints"):
        B.barrier(torch.tensor([1.0]))


def test_argmax_alpha():
    a = alphas(5)
    v = torch.tensor([[0.0, 1.0, 5.0, 2.0, 0.0], [3.0, 1.0, 0.0, 1.0, 2.0]])
    assert B.argmax_alpha(v, a).tolist() == [0.5, 0.0]
    assert B.argmax_alpha(v[0], a).item() == 0.5


def test_mean_std():
    assert B.mean_std(torch.tensor([2.5])) == (2.5, 0.0)
    values = [1.0, 2.0, 4.0, 7.0]
    mean, std = B.mean_std(torch.tensor(values))
    assert mean == pytest.approx(statistics.mean(values))
    assert std == pytest.approx(statistics.stdev(values))


def test_definition_states_the_formula_of_each_kind():
    mmm, ent = B.definition(25), B.definition(25, "entezari")
    assert mmm.startswith("barrier (`max_minus_mean`) = max over the 25 evenly spaced alphas")
    assert "f(alpha) minus the mean of f at the two endpoints" in mmm and "(1 − alpha) f(0)" not in mmm
    assert ent.startswith("barrier (`entezari`) = max over the 25 evenly spaced alphas")
    assert "f(alpha) − ((1 − alpha) f(0) + alpha f(1))" in ent and "minus the mean" not in ent
    assert B.definition(7).replace(" 7 ", " 25 ") == mmm
    with pytest.raises(ValueError, match="unknown barrier definition 'max'"):
        B.definition(25, "max")


# ------------------------------------------------------------------------------------ population


def _reference_eval(skeleton, params, buffers, x, y):
    loss, err = [], []
    for i in range(size(params)):
        m = member_module(skeleton, params, buffers, i).eval()
        with torch.no_grad():
            logits = m(x)
        loss.append(F.cross_entropy(logits, y, reduction="sum").double().item() / x.shape[0])
        err.append((logits.argmax(-1) != y).double().sum().item() / x.shape[0])
    return torch.tensor(loss, dtype=torch.float64), torch.tensor(err, dtype=torch.float64)


@pytest.mark.parametrize("arch", ["mlp", "mlp-bn", "resnet20-bn", "resnet20-ln"])
def test_evaluate_equals_plain_loop(arch):
    skeleton, params, buffers = population(arch, [0, 1, 2])
    x, y = synthetic(48, ARCHS[arch][1], seed=5)
    res = evaluate(skeleton, params, buffers, x, y)
    assert res["loss"].shape == (3,) and res["loss"].dtype == torch.float64
    ref_loss, ref_err = _reference_eval(skeleton, params, buffers, x, y)
    torch.testing.assert_close(res["loss"], ref_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res["error"], ref_err, atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["mlp-bn", "resnet20-bn"])
def test_evaluate_independent_of_member_chunk_and_batch_size(arch):
    skeleton, params, buffers = population(arch, [0, 1, 2])
    x, y = synthetic(40, ARCHS[arch][1], seed=6)
    base = evaluate(skeleton, params, buffers, x, y, batch_size=2000, member_chunk=0)
    for batch_size, chunk in [(7, 0), (40, 1), (13, 2), (1000, 3)]:
        res = evaluate(skeleton, params, buffers, x, y, batch_size=batch_size, member_chunk=chunk)
        torch.testing.assert_close(res["loss"], base["loss"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(res["error"], base["error"], atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["mlp", "resnet20-bn"])
def test_members_at_once_follows_the_activation_budget(arch, monkeypatch):
    """On a CPU: as many members as keep members × batch × widest layer × 4 bytes within the
    budget, at least one; a forced evaluation.member_chunk wins; off the CPU every member at once."""
    from modeconn.core import population as pop

    skeleton, params, buffers = population(arch, [0, 1, 2, 3])
    x, _ = synthetic(40, ARCHS[arch][1], seed=6)
    widest = pop.widest_activation(skeleton, params, buffers, x)
    # the widest activation is at least the input and the output, and some layer's output exactly
    assert widest >= max(x[0].numel(), 10)
    per_member = widest * 40 * 4
    for members, budget in [(1, per_member - 1), (1, per_member), (2, 2 * per_member + 1), (3, 3 * per_member), (4, 100 * per_member)]:
        monkeypatch.setattr(pop, "CPU_ACTIVATION_BYTES", budget)
        assert pop.members_at_once(skeleton, params, buffers, x, 1000) == members
    monkeypatch.setattr(pop, "CPU_ACTIVATION_BYTES", 2 * per_member)
    assert pop.members_at_once(skeleton, params, buffers, x, 1000) == 2
    assert pop.members_at_once(skeleton, params, buffers, x, 20) == 4  # half the batch: twice the members
    assert pop.members_at_once(skeleton, params, buffers, x, 1000, chunk=3) == 3
    on_gpu = x.to("meta")
    assert pop.members_at_once(skeleton, params, buffers, on_gpu, 1000) == 4


def test_widest_activation_of_an_mlp_is_its_widest_layer():
    from modeconn.config import ModelConfig
    from modeconn.core.population import widest_activation
    from modeconn.models import build_model

    model = build_model(ModelConfig(name="mlp", depth=2, width=96), [1, 40], 10)
    params, buffers = stack([dict(model.named_parameters())]), stack([dict(model.named_buffers())])
    assert widest_activation(model, params, buffers, torch.zeros(5, 1, 40)) == 96


def test_evaluate_restores_training_mode_and_leaves_inputs_alone():
    skeleton, params, buffers = population("mlp-bn", [0, 1])
    skeleton.train()
    skeleton.norms[0].eval()
    before = [m.training for m in skeleton.modules()]
    p0, b0 = clone(params), clone(buffers)
    x, y = synthetic(16, ARCHS["mlp-bn"][1], seed=1)
    evaluate(skeleton, params, buffers, x, y)
    assert [m.training for m in skeleton.modules()] == before
    assert_dicts_equal(params, p0)
    assert_dicts_equal(buffers, b0)


@pytest.mark.parametrize("arch", ["mlp", "mlp-bn"])
def test_linear_path_between_identical_networks_has_zero_barrier(arch):
    skeleton, params, buffers = population(arch, [3])
    anchors_p = stack([member(params, 0)] * 2)
    anchors_b = stack([member(buffers, 0)] * 2)
    coeffs = linear_coefficients(alphas(7))
    path_p, path_b = combine(coeffs, anchors_p), combine(coeffs, anchors_b)
    x, y = synthetic(64, ARCHS[arch][1], seed=2)
    if has_batchnorm(skeleton):
        path_b = recompute_bn(skeleton, path_p, path_b, list(x.split(16)))
    res = evaluate(skeleton, path_p, path_b, x, y)
    assert B.barrier(res["loss"]).item() == pytest.approx(0.0, abs=1e-6)
    assert B.barrier(res["error"]).item() == pytest.approx(0.0, abs=1e-12)


def _reference_bn(skeleton, params, buffers, batches):
    out = []
    for i in range(size(params)):
        m = member_module(skeleton, params, buffers, i)
        for bn in m.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.reset_running_stats()
                bn.momentum = None
        m.train()
        with torch.no_grad():
            for xb in batches:
                m(xb)
        out.append({k: v.detach().clone() for k, v in m.named_buffers()})
    return stack(out)


@pytest.mark.parametrize("member_chunk", [0, 2])
@pytest.mark.parametrize("arch", ["mlp-bn", "resnet20-bn"])
def test_recompute_bn_equals_reference_loop(arch, member_chunk):
    skeleton, params, buffers = population(arch, [0, 1, 2])
    x, _ = synthetic(64, ARCHS[arch][1], seed=9)
    batches = list(x.split(16))
    p0, b0 = clone(params), clone(buffers)
    new = recompute_bn(skeleton, params, buffers, batches, member_chunk=member_chunk)
    ref = _reference_bn(skeleton, params, buffers, batches)
    assert set(new) == set(ref) == set(buffers)
    for k in ref:
        if k.endswith("num_batches_tracked"):
            assert torch.equal(new[k], ref[k]), k
        else:
            torch.testing.assert_close(new[k], ref[k], atol=1e-5, rtol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    # the statistics really changed (the randomised ones were far from these)
    assert not torch.allclose(new[next(k for k in new if k.endswith("running_mean"))], b0[next(k for k in b0 if k.endswith("running_mean"))])
    # inputs untouched
    assert_dicts_equal(params, p0)
    assert_dicts_equal(buffers, b0)


def test_recompute_bn_accepts_a_generator_of_batches():
    skeleton, params, buffers = population("mlp-bn", [0, 1])
    x, _ = synthetic(48, ARCHS["mlp-bn"][1], seed=3)
    a = recompute_bn(skeleton, params, buffers, list(x.split(16)))
    b = recompute_bn(skeleton, params, buffers, (xb for xb in x.split(16)))
    assert_dicts_equal(a, b)


@pytest.mark.parametrize("arch", ["mlp", "resnet20-ln"])
def test_recompute_bn_without_batchnorm_returns_buffers_unchanged(arch):
    skeleton, params, buffers = population(arch, [0, 1])
    assert not has_batchnorm(skeleton)
    x, _ = synthetic(32, ARCHS[arch][1], seed=3)
    b0 = clone(buffers)
    out = recompute_bn(skeleton, params, buffers, list(x.split(16)))
    assert_dicts_equal(out, b0)


def test_recompute_bn_restores_momentum_and_training_flags():
    skeleton, params, buffers = population("resnet20-bn", [0, 1])
    layers = batchnorm_layers(skeleton)
    assert len(layers) > 0
    for j, m in enumerate(layers.values()):
        m.momentum = 0.05 * (j + 1)
    skeleton.eval()
    skeleton.stages[1].train()  # a mixed state, to check flags are restored module by module
    flags = [m.training for m in skeleton.modules()]
    momenta = {n: m.momentum for n, m in layers.items()}
    x, _ = synthetic(32, ARCHS["resnet20-bn"][1], seed=4)
    recompute_bn(skeleton, params, buffers, list(x.split(16)), member_chunk=1)
    assert [m.training for m in skeleton.modules()] == flags
    assert {n: m.momentum for n, m in layers.items()} == momenta

    # also when the forward pass fails half way (the second batch has 5 channels, the first conv wants 3)
    with pytest.raises(RuntimeError, match="3 channels, but got 5"):
        recompute_bn(skeleton, params, buffers, [x[:16], torch.zeros(16, 5, 8, 8)])
    assert [m.training for m in skeleton.modules()] == flags
    assert {n: m.momentum for n, m in layers.items()} == momenta


def test_recompute_bn_result_does_not_depend_on_stale_statistics():
    skeleton, params, buffers = population("mlp-bn", [0, 1])
    x, _ = synthetic(48, ARCHS["mlp-bn"][1], seed=8)
    batches = list(x.split(16))
    other = {k: (v * 3 + 1 if v.is_floating_point() else v + 7) for k, v in buffers.items()}
    a = recompute_bn(skeleton, params, buffers, batches)
    b = recompute_bn(skeleton, params, other, batches)
    assert_dicts_close(a, b, atol=0)


# ----------------------------------------------------------------------------- path parametrisations


@pytest.mark.parametrize("kind,anchors", [("linear", 2), ("bezier", 2), ("bezier", 3), ("bezier", 5), ("polychain", 3), ("polychain", 6)])
def test_path_coefficients_sum_to_one_and_hit_the_endpoints(kind, anchors):
    from modeconn.core.paths import path_coefficients

    c = path_coefficients(kind, alphas(41), anchors)
    assert c.shape == (41, anchors)
    assert torch.allclose(c.sum(1), torch.ones(41, dtype=torch.float64))
    assert (c >= 0).all()
    assert torch.equal(c[0], torch.eye(anchors, dtype=torch.float64)[0])
    assert torch.equal(c[-1], torch.eye(anchors, dtype=torch.float64)[-1])


def test_two_anchor_curves_are_the_linear_path():
    from modeconn.core.paths import bezier_coefficients, polychain_coefficients

    a = alphas(17)
    assert torch.allclose(bezier_coefficients(a, 2), linear_coefficients(a))
    assert torch.allclose(polychain_coefficients(a, 2), linear_coefficients(a))


def test_bezier_with_midpoint_bend_is_the_linear_path():
    """A quadratic Bezier curve whose bend is the midpoint of the endpoints is the straight line."""
    from modeconn.core.paths import bezier_coefficients

    a = alphas(11)
    anchors = torch.tensor([[0.0, 0.0], [0.5, 1.0], [1.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(bezier_coefficients(a, 3) @ anchors, linear_coefficients(a) @ anchors[[0, 2]])


def test_polychain_passes_through_its_anchors():
    from modeconn.core.paths import polychain_coefficients

    c = polychain_coefficients(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), 5)
    assert torch.allclose(c, torch.eye(5, dtype=torch.float64))
