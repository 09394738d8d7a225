"""What every family's stage needs: the device, the data on it, the model skeleton, checked
checkpoints, BN batches, job tags, the population evaluation table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import pandas as pd

from . import checkpoint
from .config import Config, EvaluationConfig, flatten
from .core.population import evaluate, has_batchnorm, recompute_bn
from .data import Dataset, load_dataset
from .models import build_model
from .train import generator


# The config sections that make a trained network what it is: recorded in every trained checkpoint.
TRAIN_SECTIONS = ("data", "model", "train")


def checkpoint_name(seed: int, step: int | None = None) -> str:
    """File name of a seed's final checkpoint, or of its checkpoint at iteration `step`."""
    return f"seed{seed}.safetensors" if step is None else f"seed{seed}.step{step}.safetensors"


@dataclass(frozen=True)
class Job:
    """How a job runs and how it is labelled; not part of any result."""

    device: str = "auto"
    threads: int = 0
    rule: str = "manual"
    wildcards: str = ""
    run: str = "default"  # run.name: which preset's run this job belongs to

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available")
        return torch.device(self.device)

    def setup(self) -> torch.device:
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        return self.torch_device()

    def tags(self, **extra: str) -> dict[str, str]:
        return {"rule": self.rule, "wildcards": self.wildcards, "run": self.run, **extra}


def data_on(path: str | Path, device: torch.device) -> Dataset:
    return load_dataset(path).to(device)


def skeleton(cfg: Config, data: Dataset, device: torch.device) -> torch.nn.Module:
    """A module of the configured architecture, used only through `functional_call`."""
    return build_model(cfg.model, data.input_shape, data.num_classes).to(device)


def split(data: Dataset, name: str, max_examples: int = 0) -> tuple[Tensor, Tensor]:
    """(x, y) of the "train" or "test" split, optionally its first `max_examples` examples."""
    x, y = (data.x_train, data.y_train) if name == "train" else (data.x_test, data.y_test)
    if max_examples > 0:
        x, y = x[:max_examples], y[:max_examples]
    return x, y


def bn_batches(data: Dataset, cfg: EvaluationConfig) -> list[Tensor]:
    """The fixed training batches on which BatchNorm statistics are recomputed (same for every job)."""
    order = torch.randperm(data.x_train.shape[0], generator=generator("bn", 0)).to(data.x_train.device)
    n = min(cfg.bn_batches * cfg.bn_batch_size, order.numel())
    return list(data.x_train[order[:n]].split(cfg.bn_batch_size))


def params_of(cfg: Config, *sections: str) -> dict:
    """Dotted params.yaml keys of the given sections, for MLflow."""
    full = cfg.to_dict()
    return flatten({s: full[s] for s in sections})


def evaluate_population(cfg: Config, data: Dataset, model: torch.nn.Module, params: dict, buffers: dict) -> pd.DataFrame:
    """Loss and error of K stacked networks (e.g. the points of a path), train and test.

    For a model with BatchNorm the running statistics are first recomputed for every member on
    the fixed `bn_batches` (weights made by any weight-space operation have stale statistics);
    the `bn_reset` column records it. Returns 2·K rows: member, split, loss, error, bn_reset, examples.
    """
    bn = has_batchnorm(model)
    if bn:
        buffers = recompute_bn(model, params, buffers, bn_batches(data, cfg.evaluation), cfg.evaluation.member_chunk)
    frames = []
    for name in ("train", "test"):
        x, y = split(data, name, cfg.evaluation.max_examples)
        res = evaluate(model, params, buffers, x, y, cfg.evaluation.batch_size, cfg.evaluation.member_chunk)
        k = res["loss"].shape[0]
        frames.append(
            pd.DataFrame(
                {
                    "member": range(k),
                    "split": name,
                    "loss": res["loss"].cpu().numpy(),
                    "error": res["error"].cpu().numpy(),
                    "bn_reset": bn,
                    "examples": x.shape[0],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def check_model(cfg: Config, ckpt: checkpoint.Checkpoint, path: Path) -> None:
    """Refuse a checkpoint made with another model section than the configured one."""
    configured = cfg.to_dict()["model"]
    made_with = ckpt.meta.get("config", {}).get("model")
    if made_with is not None and made_with != configured:
        raise ValueError(f"{path}: checkpoint was made with model {made_with}, but the configured model is {configured}")


def load_network(cfg: Config, path: Path, device: torch.device) -> checkpoint.Checkpoint:
    """A checkpoint, verified (digest) and checked against the configured model."""
    ckpt = checkpoint.load(path, device)
    check_model(cfg, ckpt, path)
    return ckpt


def load_networks(cfg: Config, paths: list[Path], device: torch.device) -> list[checkpoint.Checkpoint]:
    """Several checkpoints of the configured model and one architecture (e.g. the two endpoints of a path)."""
    ckpts = [load_network(cfg, Path(p), device) for p in paths]
    for ckpt in ckpts[1:]:
        checkpoint.same_architecture(ckpts[0], ckpt)
    return ckpts
