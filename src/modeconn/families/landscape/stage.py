"""Loss landscapes (Li et al. 2018): filter-normalised directions, 1-D / 2-D grids around a minimum,
the 1-D line through two minima. Grids are populations: rows of coefficients over anchors,
`combine`d and evaluated `landscape.chunk` points at a time through `evaluate_population`.

directions  minimum → results/landscape/<name>/directions.safetensors: two directions stacked
            [2, …]; meta records the minimum's content digest (SHA-256 of its tensors), the seed
            and the bias/norm rule, and the directions are drawn from a generator keyed by both,
            so a changed minimum never reuses stale directions (`load_directions` refuses them).
around      minimum + directions → CSV of loss / error at every (α, β) (1-D: β = 0, d₁ only)
between     two minima → CSV of loss / error at θ(α) = (1−α)θ_A + αθ_B, α ∈ [−margin, 1+margin]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, tracking
from ...config import Config
from ...core import directions as dirs
from ...core.params import combine, stack
from ...core.paths import linear_coefficients
from ...data import Dataset
from ...io import write_csv
from ...train import generator
from ...jobs import Job, load_network, load_networks, data_on, evaluate_population, params_of, skeleton

DIRECTIONS = 2


def content_digest(ckpt: checkpoint.Checkpoint) -> str:
    """SHA-256 of the network's tensors (params and buffers), names and shapes included."""
    return checkpoint.digest({**{f"params/{k}": v for k, v in ckpt.params.items()}, **{f"buffers/{k}": v for k, v in ckpt.buffers.items()}})


def direction_meta(cfg: Config, center: checkpoint.Checkpoint, center_path: Path) -> dict:
    lc = cfg.landscape
    return {"kind": "directions", "count": DIRECTIONS, "center": str(center_path), "center_sha256": content_digest(center),
            "seed": lc.seed, "bias_and_norm": lc.bias_and_norm, "method": "filter-normalised Gaussian (Li et al. 2018)"}


def make_directions(cfg: Config, center_path: Path, out: Path, job: Job) -> Path:
    """Draw and save the directions of one minimum (reusing `out` if it already holds them)."""
    device = job.setup()
    logged = {**params_of(cfg, "landscape"), "center": str(center_path)}
    with tracking.job(cfg.tracking, f"landscape directions {center_path.stem}", logged, job.tags(family="landscape")) as run:
        center = load_network(cfg, center_path, device)
        meta = direction_meta(cfg, center, center_path)
        run.params({"center_sha256": meta["center_sha256"]})
        if out.is_file():
            try:
                if _same(checkpoint.read_meta(out), meta):
                    return out  # cached by content: same minimum, seed and rule
            except checkpoint.CheckpointError:
                pass
        g = generator("landscape directions", meta["center_sha256"], cfg.landscape.seed, cfg.landscape.bias_and_norm)
        drawn = dirs.directions(center.params, DIRECTIONS, g, cfg.landscape.bias_and_norm)
        checkpoint.save(out, checkpoint.Checkpoint(stack(drawn), {}, meta))
    return out


def _same(a: dict, b: dict) -> bool:
    keys = ("center_sha256", "seed", "bias_and_norm", "count")
    return all(a.get(k) == b.get(k) for k in keys)


def load_directions(cfg: Config, path: Path, center: checkpoint.Checkpoint, center_path: Path) -> dict:
    """Stacked directions [2, …]; ValueError if they were drawn for other weights, seed or rule."""
    ck = checkpoint.load(path, next(iter(center.params.values())).device)
    want = direction_meta(cfg, center, center_path)
    if not _same(ck.meta, want):
        raise ValueError(f"{path}: directions were drawn for minimum {ck.meta.get('center_sha256', '?')[:12]} (seed "
                         f"{ck.meta.get('seed')}, {ck.meta.get('bias_and_norm')}), not for {center_path} "
                         f"({want['center_sha256'][:12]}, seed {want['seed']}, {want['bias_and_norm']}): stale directions")
    return ck.params


def evaluate_grid(cfg: Config, data: Dataset, model, anchors_p: dict, anchors_b: dict, coeffs: torch.Tensor) -> pd.DataFrame:
    """Loss and error (train, test; first `landscape.examples` examples) of every row of `coeffs`
    [K, M] over the anchors, `landscape.chunk` points at a time. `member` indexes the rows."""
    lc = cfg.landscape
    ecfg = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, max_examples=lc.examples))
    frames = []
    for start in range(0, coeffs.shape[0], lc.chunk):
        c = coeffs[start : start + lc.chunk]
        part = evaluate_population(ecfg, data, model, combine(c, anchors_p), combine(c, anchors_b))
        part["member"] += start
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def around(cfg: Config, data_path: Path, center_path: Path, directions_path: Path, dims: int, out_csv: Path, job: Job) -> pd.DataFrame:
    """1-D (d₁ only) or 2-D landscape around one minimum; columns alpha, beta, split, loss, error…"""
    if dims not in (1, 2):
        raise ValueError(f"a landscape has 1 or 2 dimensions, got {dims}")
    device = job.setup()
    lc = cfg.landscape
    logged = {**params_of(cfg, "evaluation", "landscape"), "center": str(center_path), "dims": dims}
    with tracking.job(cfg.tracking, f"landscape {dims}d {center_path.stem}", logged, job.tags(family="landscape")) as run:
        data = data_on(data_path, device)
        model = skeleton(cfg, data, device)
        center = load_network(cfg, center_path, device)
        d = load_directions(cfg, directions_path, center, center_path)
        zero_b = {k: torch.zeros_like(v) for k, v in center.buffers.items()}
        if dims == 1:
            alpha = dirs.axis(lc.span, lc.points_1d)
            coeffs, a, b = dirs.line_coefficients(alpha), alpha, torch.zeros_like(alpha)
            anchors_p = stack([center.params, {k: v[0] for k, v in d.items()}])
            anchors_b = stack([center.buffers, zero_b])
        else:
            axis = dirs.axis(lc.span, lc.points_2d)
            coeffs, a, b = dirs.grid_coefficients(axis, axis)
            anchors_p = stack([center.params, *({k: v[i] for k, v in d.items()} for i in range(DIRECTIONS))])
            anchors_b = stack([center.buffers, zero_b, zero_b])
        _complete(anchors_p, center.params)
        table = evaluate_grid(cfg, data, model, anchors_p, anchors_b, coeffs)
        idx = table.pop("member").to_numpy()
        table.insert(0, "beta", b.numpy()[idx])
        table.insert(0, "alpha", a.numpy()[idx])
        table.insert(0, "dims", dims)
        table.insert(0, "center", center_path.stem)
        table["directions_sha256"] = checkpoint.read_meta(directions_path)["center_sha256"]
        at_min = table[(table.alpha == 0) & (table.beta == 0)]
        run.metrics({f"center_{r.split}_loss": r.loss for r in at_min.itertuples()})
        run.metrics({"max_train_loss": table[table.split == "train"].loss.max()})
        write_csv(out_csv, table, inputs=[center_path, directions_path])
    return table


def _complete(anchors_p: dict, params: dict) -> None:
    # Directions only cover floating tensors; every parameter is floating in these models.
    missing = set(params) - set(anchors_p)
    if missing:
        raise ValueError(f"directions miss parameters {sorted(missing)}")


def between(cfg: Config, data_path: Path, path_a: Path, path_b: Path, out_csv: Path, job: Job) -> pd.DataFrame:
    """1-D landscape on the line through two minima, α over [−margin, 1 + margin] (α = 0, 1 included)."""
    device = job.setup()
    lc = cfg.landscape
    logged = {**params_of(cfg, "evaluation", "landscape"), "checkpoint_a": str(path_a), "checkpoint_b": str(path_b)}
    with tracking.job(cfg.tracking, f"landscape between {path_a.stem}-{path_b.stem}", logged, job.tags(family="landscape")) as run:
        data = data_on(data_path, device)
        model = skeleton(cfg, data, device)
        a, b = load_networks(cfg, [path_a, path_b], device)
        alpha = between_alphas(lc.margin, lc.between_points)
        table = evaluate_grid(cfg, data, model, stack([a.params, b.params]), stack([a.buffers, b.buffers]), linear_coefficients(alpha))
        table.insert(0, "alpha", alpha.numpy()[table.pop("member").to_numpy()])
        table.insert(0, "b", path_b.stem)
        table.insert(0, "a", path_a.stem)
        for i, x in enumerate(alpha.tolist()):
            rows = table[table.alpha == x]
            run.metrics({f"{r.split}_{m}": getattr(r, m) for r in rows.itertuples() for m in ("loss", "error")}, step=i)
        write_csv(out_csv, table, inputs=[path_a, path_b])
    return table


def between_alphas(margin: float, points: int) -> torch.Tensor:
    """`points` evenly spaced α over [−margin, 1 + margin], with 0 and 1 added if not on the grid."""
    alpha = torch.linspace(-margin, 1.0 + margin, points, dtype=torch.float64)
    for end in (0.0, 1.0):
        near = (alpha - end).abs() < 1e-9  # a grid point that is a minimum up to rounding is that minimum
        alpha[near] = end
    return torch.unique(torch.cat([alpha, torch.tensor([0.0, 1.0], dtype=torch.float64)]))
