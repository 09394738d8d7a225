"""Shared helpers for the core / train / checkpoint tests: tiny seeded models and synthetic data."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml
from torch import nn

from modeconn.config import ModelConfig, RunConfig
from modeconn.core.params import module_state, stack
from modeconn.models import build_model

# The smoke preset's own folders (its run section): where the workflow tests find its files.
SMOKE_RUN = RunConfig(**yaml.safe_load((Path(__file__).resolve().parents[1] / "config/smoke.yaml").read_text())["run"])
SMOKE_RESULTS, SMOKE_REPORTS, SMOKE_LOGS = SMOKE_RUN.results, SMOKE_RUN.reports, SMOKE_RUN.logs

MLP_SHAPE = (1, 12)
IMAGE_SHAPE = (3, 8, 8)
NUM_CLASSES = 4

# (model config, input shape) of the architectures the population tests run on
ARCHS = {
    "mlp": (ModelConfig(name="mlp", depth=2, width=16), MLP_SHAPE),
    "mlp-bn": (ModelConfig(name="mlp", depth=2, width=16, norm="bn"), MLP_SHAPE),
    "resnet20-bn": (ModelConfig(name="resnet20", norm="bn"), IMAGE_SHAPE),
    "resnet20-ln": (ModelConfig(name="resnet20", norm="ln"), IMAGE_SHAPE),
}


def seeded_model(cfg: ModelConfig, shape, seed: int, num_classes: int = NUM_CLASSES) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg, shape, num_classes)


def synthetic(n: int, shape, seed: int, num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def randomize_norms(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm / LayerNorm affine parameters and BN running statistics (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
                if m.weight is not None:
                    m.weight.copy_(1.0 + 0.3 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(int(torch.randint(1, 100, (), generator=g)))
    return model


def population(arch: str, seeds: list[int]) -> tuple[nn.Module, dict, dict]:
    """A skeleton module and the stacked (params, buffers) of one randomised network per seed."""
    cfg, shape = ARCHS[arch]
    states = [module_state(randomize_norms(seeded_model(cfg, shape, s), 1000 + s)) for s in seeds]
    skeleton = seeded_model(cfg, shape, 0)
    return skeleton, stack([p for p, _ in states]), stack([b for _, b in states])


def member_module(skeleton: nn.Module, params: dict, buffers: dict, i: int) -> nn.Module:
    """A plain nn.Module holding member i's tensors (the reference for population results)."""
    m = copy.deepcopy(skeleton)
    m.load_state_dict({**{k: v[i] for k, v in params.items()}, **{k: v[i] for k, v in buffers.items()}}, strict=True)
    return m


def clone(d: dict) -> dict:
    return {k: v.detach().clone() for k, v in d.items()}


# The longest file first: the smoke workflow (tests/test_workflow.py, minutes, mostly waiting on
# its jobs) then runs on one pytest worker while the other works through the unit tests, instead
# of starting when they are done (pyproject.toml runs two workers, one file per worker).
FIRST = ("test_workflow.py",)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in FIRST)  # stable: the rest keep their order
