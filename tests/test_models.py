"""Properties of the model registry: shapes, metadata, population (vmap) equivalence, seeding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from modeconn.config import ModelConfig
from modeconn.models import MODELS, ChannelLayerNorm, ModelInfo, build_model, model_info

NORMS = ("none", "bn", "ln")
IMAGE_MODELS = ("resnet20", "vgg11", "vgg16")
FLAT_MODELS = ("mlp", "lenet300_100")
SHAPES = {"mnist1d": (1, 40), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}


def cfg_for(name: str, norm: str = "none", **kw) -> ModelConfig:
    # small MLPs keep the tests fast; width_multiplier=1 is the smallest the schema allows
    defaults = {"depth": 2, "width": 32} if name == "mlp" else {}
    return ModelConfig(name=name, norm=norm, **{**defaults, **kw})


def seeded(cfg: ModelConfig, shape, num_classes: int, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(cfg, shape, num_classes)


def supported(name: str) -> list[str]:
    return list(SHAPES) if name in FLAT_MODELS else ["mnist", "cifar"]


def test_registry_keys_match_schema_enum():
    assert set(MODELS) == {"mlp", "lenet300_100", "resnet20", "vgg11", "vgg16"}


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", list(MODELS))
def test_builds_and_gives_logits(name, norm):
    for data in supported(name):
        shape = SHAPES[data]
        model = build_model(cfg_for(name, norm), shape, 7)
        model.train()  # BatchNorm in train mode needs > 1 example
        out = model(torch.randn(2, *shape))
        assert out.shape == (2, 7), (data, out.shape)
        assert torch.isfinite(out).all()
        model.eval()
        assert model(torch.randn(1, *shape)).shape == (1, 7)


def test_unknown_name_raises_naming_it():
    with pytest.raises(ValueError, match="resnet999") as err:
        build_model(ModelConfig(name="resnet999"), (3, 32, 32), 10)
    for key in MODELS:
        assert key in str(err.value)


def test_unknown_norm_raises():
    with pytest.raises(ValueError, match="gn"):
        build_model(ModelConfig(name="mlp", norm="gn"), (1, 40), 10)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_models_reject_1d_inputs(name):
    with pytest.raises(ValueError, match=r"\[C, H, W\]") as err:
        build_model(cfg_for(name), (1, 40), 10)
    assert name in str(err.value)


def test_mlp_structure_follows_config():
    model = build_model(ModelConfig(name="mlp", depth=3, width=17, norm="ln"), (1, 40), 5)
    assert [layer.out_features for layer in model.layers] == [17, 17, 17]
    assert model.layers[0].in_features == 40
    assert all(isinstance(n, nn.LayerNorm) for n in model.norms)
    assert model.classifier.in_features == 17 and model.classifier.out_features == 5


def test_lenet300_100_parameter_count():
    model = build_model(ModelConfig(name="lenet300_100"), (1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) == 266_610


def test_resnet20_parameter_count():
    model = build_model(ModelConfig(name="resnet20", norm="bn", width_multiplier=1), (3, 32, 32), 10)
    assert 260_000 <= sum(p.numel() for p in model.parameters()) <= 280_000


def test_resnet20_width_multiplier_scales_channels():
    model = build_model(ModelConfig(name="resnet20", width_multiplier=2), (3, 32, 32), 10)
    assert model.stem.conv.out_channels == 32
    assert model.classifier.in_features == 128
    names = dict(model.named_parameters())
    assert "stages.1.blocks.0.shortcut.conv.weight" in names
    assert "stages.0.blocks.0.shortcut.conv.weight" not in names  # identity shortcut
    assert "stages.1.blocks.0.conv1.bias" in names  # norm == none: convs carry a bias


def test_vgg_skips_pools_on_small_inputs():
    # 28 -> 14 -> 7 -> 3 -> 1: the fifth pool would hit a 1x1 map and is skipped
    model = build_model(ModelConfig(name="vgg16"), (1, 28, 28), 10)
    assert sum(model.pool_after) == 4
    assert sum(build_model(ModelConfig(name="vgg16"), (3, 32, 32), 10).pool_after) == 5
    assert [c.out_channels for c in model.convs][-1] == 512
    assert model.classifier.in_features == 512


def test_channel_layernorm_normalises_over_channels():
    norm = ChannelLayerNorm(6)
    x = torch.randn(2, 6, 5, 4) * 3 + 1
    y = norm(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 5, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(2, 5, 4), atol=1e-3, rtol=0)
    assert norm.weight.shape == (6,) and norm.bias.shape == (6,)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", list(MODELS))
def test_model_info(name, norm):
    shape = SHAPES["mnist"]
    model = build_model(cfg_for(name, norm), shape, 10)
    info = model_info(model)
    assert isinstance(info, ModelInfo)
    params = dict(model.named_parameters())
    weighted = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert info.prunable and len(set(info.prunable)) == len(info.prunable)
    for pname in info.prunable:
        assert pname in params
        owner, leaf = pname.rsplit(".", 1)
        assert leaf == "weight" and owner in weighted
    # every conv/linear weight is prunable, nothing else is (no biases, no norm parameters)
    assert set(info.prunable) == {f"{n}.weight" for n in weighted}
    assert not any(p.endswith(".bias") for p in info.prunable)
    norm_params = {n for n, m in model.named_modules()
                   if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm))}
    assert not any(p.rsplit(".", 1)[0] in norm_params for p in info.prunable)
    assert info.output_layer == "classifier"
    assert f"{info.output_layer}.weight" in info.prunable
    assert params[f"{info.output_layer}.weight"].shape[0] == 10
    assert info.has_batchnorm == (norm == "bn")


# --- populations: functional_call under vmap equals the per-member loop ------------------------

VMAP_SHAPES = {"mlp": (1, 40), "lenet300_100": (1, 12, 12), "resnet20": (3, 8, 8),
               "vgg11": (3, 8, 8), "vgg16": (1, 8, 8)}
K, B = 3, 4


DATA_RNG = torch.Generator()


def population(name: str, norm: str) -> tuple[list[nn.Module], tuple[int, ...]]:
    # Fixed data for the population tests: each test sees the same inputs whatever ran before it.
    DATA_RNG.manual_seed(0)
    shape = VMAP_SHAPES[name]
    members = [seeded(cfg_for(name, norm), shape, 5, seed) for seed in range(K)]
    if norm == "bn":  # give each member its own (non-default) running statistics
        with torch.no_grad():
            for k, m in enumerate(members):
                m.train()
                m(torch.randn(8, *shape, generator=DATA_RNG) * (k + 1) + k)
    return members, shape


def stacked_forward(members: list[nn.Module], xs: torch.Tensor, train: bool):
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    base.train(train)

    def call(p, b, x):
        return functional_call(base, (p, b), (x,))

    with torch.no_grad():
        out = vmap(call)(params, buffers, xs)
    return out, buffers


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", list(MODELS))
def test_vmap_matches_loop_eval(name, norm):
    members, shape = population(name, norm)
    xs = torch.randn(K, B, *shape, generator=DATA_RNG)
    for m in members:
        m.eval()
    out, _ = stacked_forward(members, xs, train=False)
    with torch.no_grad():
        expected = torch.stack([m(x) for m, x in zip(members, xs)])
    assert out.shape == (K, B, 5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(expected[0], expected[1])  # members really differ


@pytest.mark.parametrize("name", list(MODELS))
def test_vmap_matches_loop_train_batchnorm(name):
    members, shape = population(name, "bn")
    xs = torch.randn(K, B, *shape, generator=DATA_RNG)
    for m in members:
        m.train()
    out, buffers = stacked_forward(members, xs, train=True)
    with torch.no_grad():
        expected = torch.stack([m(x) for m, x in zip(members, xs)])  # updates each member's stats
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    running = [n for n in buffers if n.endswith("running_mean")]
    assert running
    for bname in buffers:
        after = torch.stack([dict(m.named_buffers())[bname] for m in members])
        torch.testing.assert_close(buffers[bname], after, atol=1e-5, rtol=1e-4, msg=bname)


@pytest.mark.parametrize("name,norm", [("mlp", "bn"), ("resnet20", "ln"), ("resnet20", "bn"), ("lenet300_100", "none")])
def test_vmap_grad_matches_loop(name, norm):
    # the population trainer differentiates through functional_call under vmap
    members, shape = population(name, norm)
    xs, ys = torch.randn(K, B, *shape, generator=DATA_RNG), torch.randint(0, 5, (K, B), generator=DATA_RNG)
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta").train()

    def loss(p, b, x, y):
        return nn.functional.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grads = vmap(torch.func.grad(loss))(params, buffers, xs, ys)
    for k, m in enumerate(members):
        m.train().zero_grad()
        nn.functional.cross_entropy(m(xs[k]), ys[k]).backward()
        for pname, p in m.named_parameters():
            torch.testing.assert_close(grads[pname][k], p.grad, atol=1e-5, rtol=1e-4, msg=pname)


# --- seeding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_construction_is_deterministic_under_seed(name):
    cfg, shape = cfg_for(name, "bn"), VMAP_SHAPES[name]
    a, b, c = (seeded(cfg, shape, 10, s) for s in (3, 3, 4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    for key, p in a.named_parameters():
        if key.endswith("weight") and p.dim() > 1:  # randomly initialised tensors
            assert not torch.equal(p, dict(c.named_parameters())[key]), key
