"""The curves family: Bezier / PolyChain curves between two seeds' minima (Garipov et al. 2018).

train     one pair → one path checkpoint per curve kind (stacked anchors [M, ...], meta kind "path")
evaluate  linear path and every curve at N t-points as one batched population (BN recomputed per t)
          → along.csv (loss/error per t and split, arc length, test disagreement with the ends) and
          ensembles.csv (ensembles of n evenly spaced points on each path, test split)
plane     the plane through the endpoints and the free bend of every curve: a G×G grid of loss and
          error, with the curve's projection → plane.csv
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, resume, tracking
from ...config import Config
from ...core import curves as curve_math
from ...core import ensemble
from ...core import plane as plane_math
from ...core.optimizers import make_optimizer
from ...core.params import combine, member, select, stack
from ...core.paths import alphas, path_coefficients
from ...core.population import has_batchnorm, recompute_bn
from ...io import write_csv, write_csvs
from ...progress import ProgressLog
from ...schedules import iterations, steps_per_epoch
from ...train import generator
from ...jobs import Job, load_networks, bn_batches, data_on, evaluate_population, params_of, skeleton, split

SECTIONS = ("data", "model", "curves")


def _load_curve(path: Path, device: torch.device) -> checkpoint.Checkpoint:
    ckpt = checkpoint.load(path, device)
    if ckpt.meta.get("kind") != "path" or ckpt.meta.get("path") not in ("bezier", "polychain"):
        raise checkpoint.CheckpointError(f"{path}: not a curve checkpoint (meta kind {ckpt.meta.get('kind')!r}, path {ckpt.meta.get('path')!r})")
    return ckpt


def _check_endpoints(a: checkpoint.Checkpoint, b: checkpoint.Checkpoint, curve: checkpoint.Checkpoint, path: Path) -> None:
    """A curve must end exactly at the two given networks (same architecture, same weights)."""
    first, last = member(curve.params, 0), member(curve.params, curve.meta["anchors"] - 1)
    checkpoint.same_architecture(a, checkpoint.Checkpoint(first, member(curve.buffers, 0), {}))
    if not all(torch.equal(first[k], a.params[k]) and torch.equal(last[k], b.params[k]) for k in first):
        raise ValueError(f"{path}: the curve's endpoints are not the given checkpoints (seeds {curve.meta.get('seeds')})")


def _chunked(cfg: Config, max_examples: int | None = None) -> Config:
    """cfg with the curves' member chunk (and optionally an example cap) for evaluate_population."""
    ev = dataclasses.replace(cfg.evaluation, member_chunk=cfg.curves.chunk)
    if max_examples is not None:
        ev = dataclasses.replace(ev, max_examples=max_examples)
    return dataclasses.replace(cfg, evaluation=ev)


# ----------------------------------------------------------------------------- training


def train(cfg: Config, data_path: Path, path_a: Path, path_b: Path, outs: list[Path], job: Job) -> None:
    """Train one curve per kind in curves.kinds between two seeds (all kinds as one population).

    Resumable (modeconn.resume: a point beside the first output after every epoch when due), with
    a progress line per epoch in the job's log (modeconn.progress)."""
    c, kinds = cfg.curves, list(cfg.curves.kinds)
    if len(outs) != len(kinds):
        raise ValueError(f"{len(outs)} output paths for the {len(kinds)} curve kinds {kinds}")
    device = job.setup()
    logged = {**params_of(cfg, *SECTIONS), "checkpoint_a": str(path_a), "checkpoint_b": str(path_b)}
    with tracking.job(cfg.tracking, f"train curves {path_a.stem}-{path_b.stem}", logged, job.tags(family="curves")) as run:
        data = data_on(data_path, device)
        a, b = load_networks(cfg, [path_a, path_b], device)
        model = skeleton(cfg, data, device)
        line = curve_math.line_anchors(a.params, b.params, c.anchors)  # [M, ...]
        line_buffers = curve_math.line_anchors(a.buffers, b.buffers, c.anchors)
        endpoints, bends = curve_math.split_anchors({k: v.expand(len(kinds), *v.shape).clone() for k, v in line.items()})
        buffers = {k: v.expand(len(kinds), *v.shape).clone() for k, v in a.buffers.items()}
        # no weight decay in the optimizer: the L2 term is in the curve loss, at the sampled point
        settings = curve_math.CurveTraining(
            optimizer=lambda tensors: make_optimizer(c.optimizer, tensors, c.lr, c.momentum), lr=c.lr, weight_decay=c.weight_decay, batch_size=c.batch_size, duration=c.duration
        )
        seed_a, seed_b = a.meta.get("seed"), b.meta.get("seed")
        points = resume.Resume(outs[0], resume.identity(cfg, SECTIONS, [path_a, path_b]), f"curve training {path_a.stem}-{path_b.stem}")
        made = points.load_fit("curves", device)
        start = made[0] if made is not None else None
        spe = steps_per_epoch(data.x_train.shape[0], c.batch_size, "curves.batch_size")
        log = ProgressLog(0 if start is None else start.step, iterations(c.duration, spe), spe, label="curve training")

        def on_epoch(epoch: int, loss: torch.Tensor, lr: float) -> None:
            run.metrics({**{f"{kind}_train_loss": loss[i].item() for i, kind in enumerate(kinds)}, "lr": lr}, step=epoch)
            log.update(epoch * spe, {"loss": loss.mean()})

        bends = curve_math.train_curves(
            model, endpoints, bends, buffers, kinds, data.x_train, data.y_train, settings,
            lambda *keys: generator("curves", c.seed, seed_a, seed_b, *keys), on_epoch, start, points.fit_saver("curves"),
        )
        anchors = curve_math.assemble(endpoints, bends)
        origin = checkpoint.Origin.of(cfg, SECTIONS)
        for i, (kind, out) in enumerate(zip(kinds, outs)):
            meta = origin.meta("path", path=kind, anchors=c.anchors, seeds=[seed_a, seed_b], endpoints=[str(path_a), str(path_b)],
                               bn="anchor running statistics are stale: recompute them at every t before evaluating")
            checkpoint.save(out, checkpoint.Checkpoint(member(anchors, i), line_buffers, meta))
        points.complete()


# ----------------------------------------------------------------------------- along the paths


def paths_of(a: checkpoint.Checkpoint, b: checkpoint.Checkpoint, curves: list[checkpoint.Checkpoint]) -> list[tuple[str, dict, dict]]:
    """(name, anchors, anchor buffers) of the linear path and every curve."""
    out = [("linear", stack([a.params, b.params]), stack([a.buffers, b.buffers]))]
    return out + [(ck.meta["path"], ck.params, ck.buffers) for ck in curves]


def path_population(paths: list[tuple[str, dict, dict]], t: torch.Tensor) -> tuple[dict, dict]:
    """All paths' points at t as one stacked population [P·N, ...] (path-major)."""
    params, buffers = [], []
    for kind, anchors, anchor_buffers in paths:
        m = next(iter(anchors.values())).shape[0]
        coeffs = path_coefficients(kind, t, m)
        params.append(combine(coeffs, anchors))
        buffers.append(combine(coeffs, anchor_buffers))
    cat = lambda dicts: {k: torch.cat([d[k] for d in dicts]) for k in dicts[0]}  # noqa: E731
    return cat(params), cat(buffers)


def along_table(cfg: Config, data, model, paths, t: torch.Tensor) -> tuple[pd.DataFrame, torch.Tensor]:
    """Loss/error of every path at every t (train and test) and the members' test log-probs [P·N, n, C]."""
    params, buffers = path_population(paths, t)
    chunked = _chunked(cfg)
    table = evaluate_population(chunked, data, model, params, buffers)
    n = t.numel()
    arcs = []
    for i in range(len(paths)):
        lengths = curve_math.segment_lengths(select(params, slice(i * n, (i + 1) * n)))
        arcs.append(torch.cat([torch.zeros(1, dtype=lengths.dtype, device=lengths.device), lengths.cumsum(0)]))
    arc = torch.cat(arcs).cpu().numpy()
    idx = table.pop("member").to_numpy()
    table.insert(0, "arc_length", arc[idx])
    table.insert(0, "t", t.numpy()[idx % n])
    table.insert(0, "path", [paths[i // n][0] for i in idx])
    if has_batchnorm(model):
        buffers = recompute_bn(model, params, buffers, bn_batches(data, cfg.evaluation), cfg.curves.chunk)
    x, y = split(data, "test", cfg.evaluation.max_examples)
    logp = ensemble.log_probs(model, params, buffers, x, cfg.evaluation.batch_size, cfg.curves.chunk)
    return table, logp


def ensembles_table(paths, logp: torch.Tensor, y: torch.Tensor, sizes: tuple[int, ...]) -> pd.DataFrame:
    """Test error/NLL of ensembles of n evenly spaced points on each path, and their members' mean."""
    rows, n = [], logp.shape[0] // len(paths)
    for i, (kind, _, _) in enumerate(paths):
        part = logp[i * n : (i + 1) * n]
        for size in (1, *sizes):
            idx = ensemble.evenly_spaced(n, size) if size > 1 else [0, n - 1]
            members = ensemble.member_scores(part[idx], y)
            ens = ensemble.scores(part[idx], y) if size > 1 else {"error": members["error"].mean().item(), "nll": members["nll"].mean().item()}
            rows.append({"path": kind, "points": size, "ensemble_error": ens["error"], "ensemble_nll": ens["nll"],
                         "member_error": members["error"].mean().item(), "member_nll": members["nll"].mean().item(),
                         "t": " ".join(f"{j / (n - 1):.3f}" for j in idx)})
    return pd.DataFrame(rows)


def evaluate(cfg: Config, data_path: Path, path_a: Path, path_b: Path, curve_paths: list[Path], out_along: Path, out_ensembles: Path, job: Job) -> pd.DataFrame:
    """Linear path and curves of one pair at curves.points t's: along.csv and ensembles.csv."""
    device = job.setup()
    logged = {**params_of(cfg, "evaluation", "curves"), "checkpoint_a": str(path_a), "checkpoint_b": str(path_b)}
    with tracking.job(cfg.tracking, f"evaluate curves {path_a.stem}-{path_b.stem}", logged, job.tags(family="curves")) as run:
        data = data_on(data_path, device)
        a, b = load_networks(cfg, [path_a, path_b], device)
        curves = [_load_curve(p, device) for p in curve_paths]
        for path, ck in zip(curve_paths, curves):
            _check_endpoints(a, b, ck, path)
        model = skeleton(cfg, data, device)
        paths = paths_of(a, b, curves)
        t = alphas(cfg.curves.points)
        table, logp = along_table(cfg, data, model, paths, t)
        n = t.numel()
        test = table.split == "test"
        for name in ("disagree_a", "disagree_b"):
            table[name] = float("nan")
        for i in range(len(paths)):
            part = logp[i * n : (i + 1) * n]
            rows = test & (table.path == paths[i][0])
            table.loc[rows, "disagree_a"] = ensemble.disagreement(part, part[0]).cpu().numpy()
            table.loc[rows, "disagree_b"] = ensemble.disagreement(part, part[-1]).cpu().numpy()
        table.insert(0, "seed_b", b.meta.get("seed"))
        table.insert(0, "seed_a", a.meta.get("seed"))
        _, y = split(data, "test", cfg.evaluation.max_examples)
        ens = ensembles_table(paths, logp, y, cfg.curves.ensemble_sizes)
        ens.insert(0, "seed_b", b.meta.get("seed"))
        ens.insert(0, "seed_a", a.meta.get("seed"))
        run.params({"bn_reset": bool(table.bn_reset.iloc[0])})
        for kind, group in table.groupby("path"):
            for split_name, g in group.groupby("split"):
                lengths = torch.tensor(g.arc_length.diff().to_numpy()[1:])
                for metric in ("loss", "error"):
                    summ = curve_math.path_summary(torch.tensor(g[metric].to_numpy()), lengths)
                    run.metrics({f"{kind}_{split_name}_{metric}_{k}": v for k, v in summ.items()})
        write_csvs({out_along: table, out_ensembles: ens}, inputs=[path_a, path_b, *curve_paths])
    return table


# ----------------------------------------------------------------------------- the plane


def plane_table(cfg: Config, data, model, curve: checkpoint.Checkpoint, t: torch.Tensor) -> pd.DataFrame:
    """Grid of loss/error on the plane of one curve, its anchors' and points' plane coordinates."""
    m = curve.meta["anchors"]
    bend = m // 2  # with several bends, the middle one spans the plane with the endpoints
    corners = [0, m - 1, bend]
    a, b, mid = (member(curve.params, j) for j in corners)
    geometry = plane_math.plane(a, b, mid)
    xs, ys = plane_math.grid(geometry, cfg.curves.grid, cfg.curves.margin)
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    coeffs = geometry.coefficients(gx.flatten(), gy.flatten())
    params = combine(coeffs, select(curve.params, corners))
    buffers = combine(coeffs, select(curve.buffers, corners))
    grid = evaluate_population(_chunked(cfg, cfg.curves.plane_examples), data, model, params, buffers)
    idx = grid.pop("member").to_numpy()
    grid.insert(0, "y", gy.flatten().numpy()[idx])
    grid.insert(0, "x", gx.flatten().numpy()[idx])
    grid.insert(0, "role", "grid")
    points = combine(path_coefficients(curve.meta["path"], t, m), curve.params)
    coords = plane_math.project(points, a, b, mid, geometry).cpu().numpy()
    anchors = plane_math.project(curve.params, a, b, mid, geometry).cpu().numpy()
    extra = pd.DataFrame({"role": ["curve"] * len(t) + ["anchor"] * m, "x": [*coords[:, 0], *anchors[:, 0]],
                          "y": [*coords[:, 1], *anchors[:, 1]], "t": [*t.numpy(), *[j / (m - 1) for j in range(m)]]})
    table = pd.concat([grid, extra], ignore_index=True)
    table.insert(0, "curve", curve.meta["path"])
    return table


def plane(cfg: Config, data_path: Path, path_a: Path, path_b: Path, curve_paths: list[Path], out_csv: Path, job: Job) -> pd.DataFrame:
    """The curve planes of one pair → plane.csv (grid, curve and anchor rows per curve kind)."""
    device = job.setup()
    logged = {**params_of(cfg, "evaluation", "curves"), "checkpoint_a": str(path_a), "checkpoint_b": str(path_b)}
    with tracking.job(cfg.tracking, f"curve plane {path_a.stem}-{path_b.stem}", logged, job.tags(family="curves")) as run:
        data = data_on(data_path, device)
        a, b = load_networks(cfg, [path_a, path_b], device)
        model = skeleton(cfg, data, device)
        t = alphas(cfg.curves.points)
        curves = [_load_curve(p, device) for p in curve_paths]
        for path, ck in zip(curve_paths, curves):
            _check_endpoints(a, b, ck, path)
        tables = [plane_table(cfg, data, model, ck, t) for ck in curves]
        table = pd.concat(tables, ignore_index=True)
        table.insert(0, "seed_b", b.meta.get("seed"))
        table.insert(0, "seed_a", a.meta.get("seed"))
        grid = table[table.role == "grid"]
        for (kind, split_name), g in grid.groupby(["curve", "split"]):
            run.metrics({f"{kind}_{split_name}_loss_min": g.loss.min(), f"{kind}_{split_name}_error_min": g.error.min()})
        # only the grid rows are measurements: the curve and anchor rows carry plane coordinates
        write_csv(out_csv, table, inputs=[path_a, path_b, *curve_paths], rows=table.role == "grid")
    return table
