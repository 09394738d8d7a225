"""The flatness family: Hessian trace and top eigenvalue at minima and along paths, one table per job.

Inputs are generic, so that every family's outputs can be measured by one job:

    minimum   FAMILY=FILE          any network checkpoint (meta "kind": seed, fork, ticket, fge, swa…)
    path      FAMILY=A,B           the linear path between two network checkpoints
              FAMILY=FILE          one path checkpoint: stacked anchors [M, …] with meta {"kind":
                                   "path", "path": linear|bezier|polychain, "anchors": M}; or a
                                   simplex (meta "kind": "simplex"): its vertices and its centre

Every row of the output CSV is one network: its curvature (Hutchinson trace ± standard error, top
eigenvalue by power iteration, gradient norm), its loss and error on both splits, and the fixed
evaluation set the Hessian was taken on (split, batch size, number of batches, mode, probes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, tracking
from ...config import Config
from ...core import curvature as curv
from ...core.params import combine, member, select, stack
from ...core.paths import alphas, path_coefficients
from ...core.population import has_batchnorm, recompute_bn
from ...data import Dataset
from ...io import atomic_path
from ...train import generator
from ...jobs import Job, load_network, load_networks, bn_batches, data_on, evaluate_population, params_of, skeleton, split


@dataclass(frozen=True)
class Spec:
    """One input of a curvature job: a family label and one (minimum, path checkpoint) or two
    (endpoints of a linear path) files."""

    family: str
    files: tuple[Path, ...]

    @classmethod
    def parse(cls, text: str) -> "Spec":
        family, sep, files = text.partition("=")
        if not sep or not family or not files:
            raise ValueError(f"{text!r}: expected FAMILY=FILE or FAMILY=FILE_A,FILE_B")
        paths = tuple(Path(f) for f in files.split(","))
        if len(paths) > 2:
            raise ValueError(f"{text!r}: a spec names one checkpoint or two endpoints, not {len(paths)}")
        return cls(family, paths)


# ----------------------------------------------------------------------------- the evaluation set


def evaluation_batches(data: Dataset, cfg: Config) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed batches the Hessian is taken on: `batches` × `batch_size` examples of the split,
    drawn once by a permutation seeded with `flatness.seed` (identical for every network and job)."""
    fc = cfg.flatness
    x, y = split(data, fc.split)
    if fc.examples > x.shape[0]:
        raise ValueError(f"flatness: {fc.batches} batches of {fc.batch_size} need {fc.examples} examples, the {fc.split} split has {x.shape[0]}")
    order = torch.randperm(x.shape[0], generator=generator("hessian", fc.seed))[: fc.examples].to(x.device)
    return list(zip(x[order].split(fc.batch_size), y[order].split(fc.batch_size)))


def group_curvature(cfg: Config, model: torch.nn.Module, params: dict, buffers: dict, batches) -> list[dict]:
    """Trace, top eigenvalue, loss and gradient norm of K stacked networks' losses on `batches`.

    One vmapped computation over the members (`flatness.member_chunk` at a time; 0 = all). Probes
    and the power-iteration start come from generators keyed by `flatness.seed` only, so every
    network sees the same probes (common random numbers make differences between networks less
    noisy than the standard errors suggest), and a network gets the same numbers alone or in a group.
    """
    fc = cfg.flatness
    k = next(iter(params.values())).shape[0]
    step = k if fc.member_chunk <= 0 else fc.member_chunk
    rows = []
    with curv.batch_statistics(model, training=fc.mode == "train"):
        hvp = curv.member_hvp(model, batches)
        probes = curv.rademacher(member(params, 0), fc.probes, generator("hutchinson", fc.seed))
        for i in range(0, k, step):
            p, b = select(params, slice(i, i + step)), select(buffers, slice(i, i + step))
            trace, stderr = curv.hutchinson_summary(curv.population_hutchinson(hvp, p, b, probes, fc.probe_chunk))
            top = curv.population_power_iteration(hvp, p, b, fc.power_iterations, generator("power", fc.seed), fc.tolerance)
            loss, gnorm = curv.population_loss_and_grad(model, batches, p, b)
            for j in range(trace.shape[0]):
                rows.append({
                    "trace": trace[j].item(),
                    "trace_se": stderr[j].item(),
                    "top_eigenvalue": top["eigenvalue"][j].item(),
                    "eig_iterations": int(top["iterations"][j]),
                    "eig_residual": top["residual"][j].item(),
                    "hessian_loss": loss[j].item(),
                    "grad_norm": gnorm[j].item(),
                })
    return rows


def describe(cfg: Config, parameters: int) -> dict:
    """The definition stored with every number: which set, how big, which mode, how many probes."""
    fc = cfg.flatness
    return {
        "hessian_split": fc.split,
        "hessian_batch_size": fc.batch_size,
        "hessian_batches": fc.batches,
        "hessian_examples": fc.examples,
        "hessian_mode": fc.mode,
        "probes": fc.probes,
        "power_iterations_max": fc.power_iterations,
        "parameters": parameters,
    }


# ----------------------------------------------------------------------------- networks of one input


@dataclass
class Group:
    """Networks from one input spec, stacked [K, …], with a label per member."""

    family: str
    kind: str
    source: str
    path: str
    t: list[float]
    params: dict
    buffers: dict


def load_minimum(cfg: Config, spec: Spec, device: torch.device) -> Group:
    if len(spec.files) != 1:
        raise ValueError(f"minimum of {spec.family}: expected one checkpoint, got {len(spec.files)}")
    path = spec.files[0]
    ckpt = load_network(cfg, path, device)
    kind = str(ckpt.meta.get("kind", "minimum"))
    if kind in ("path", "simplex", "directions"):
        raise ValueError(f"{path}: a {kind} checkpoint is not a minimum; pass it as a path")
    return Group(spec.family, kind, path.name, "", [float("nan")], stack([ckpt.params]), stack([ckpt.buffers]))


def load_path(cfg: Config, spec: Spec, device: torch.device) -> Group:
    """The points of a path at `flatness.path_points` evenly spaced t (a simplex: vertices + centre)."""
    t = alphas(cfg.flatness.path_points)
    if len(spec.files) == 2:
        a, b = load_networks(cfg, spec.files, device)
        anchors_p, anchors_b, kind, m = stack([a.params, b.params]), stack([a.buffers, b.buffers]), "linear", 2
        source = "–".join(p.stem for p in spec.files)
    else:
        path = spec.files[0]
        ck = load_network(cfg, path, device)
        anchors_p, anchors_b, source = ck.params, ck.buffers, path.name
        meta_kind = ck.meta.get("kind")
        if meta_kind == "simplex":
            m = int(ck.meta.get("vertices", next(iter(ck.params.values())).shape[0]))
            coeffs = torch.cat([torch.eye(m, dtype=torch.float64), torch.full((1, m), 1.0 / m, dtype=torch.float64)])
            return Group(spec.family, "simplex", source, "simplex", list(range(m)) + [float("nan")], combine(coeffs, anchors_p), combine(coeffs, anchors_b))
        if meta_kind != "path" or "path" not in ck.meta or "anchors" not in ck.meta:
            raise checkpoint.CheckpointError(f"{path}: expected meta kind 'path' with 'path' and 'anchors' (or kind 'simplex'), got {ck.meta.get('kind')!r}")
        kind, m = str(ck.meta["path"]), int(ck.meta["anchors"])
    coeffs = path_coefficients(kind, t, m)
    return Group(spec.family, "path", source, kind, t.tolist(), combine(coeffs, anchors_p), combine(coeffs, anchors_b))


def rescaled(cfg: Config, model: torch.nn.Module, groups: list[Group]) -> list[Group]:
    """Dinh et al.'s reparametrisation of the first minimum (same function, other Hessian), where it
    applies: an MLP without normalisation and `flatness.rescale` > 0. Labelled kind "rescaled"."""
    c = cfg.flatness.rescale
    if not groups or c <= 0 or cfg.model.name not in ("mlp", "lenet300_100") or cfg.model.norm != "none":
        return []
    g, hidden = groups[0], len(getattr(model, "layers", []))
    if hidden == 0:
        return []
    second = "layers.1" if hidden > 1 else "classifier"
    params = curv.rescaled_layers(g.params, "layers.0", second, c)
    return [Group(g.family, "rescaled", f"{g.source} (layers.0 ×{c:g}, {second} ×1/{c:g})", "", g.t, params, g.buffers)]


def group_table(cfg: Config, data: Dataset, model: torch.nn.Module, group: Group, batches, on_row=None) -> pd.DataFrame:
    """One row per member of the group: labels, curvature, loss/error on both splits, definitions."""
    evaluated = evaluate_population(cfg, data, model, group.params, group.buffers)
    buffers = group.buffers
    if cfg.flatness.mode == "eval" and has_batchnorm(model):
        # Same fresh statistics the loss/error above were measured with.
        buffers = recompute_bn(model, group.params, buffers, bn_batches(data, cfg.evaluation), cfg.evaluation.member_chunk)
    curvature_rows = group_curvature(cfg, model, group.params, buffers, batches)
    rows = []
    for i, t in enumerate(group.t):
        row = {"family": group.family, "kind": group.kind, "source": group.source, "path": group.path, "t": t}
        row |= curvature_rows[i]
        for r in evaluated[evaluated.member == i].itertuples():
            row |= {f"{r.split}_loss": r.loss, f"{r.split}_error": r.error}
        row |= {"bn_reset": bool(evaluated.bn_reset.iloc[0])}
        row |= describe(cfg, curv.parameter_count(member(group.params, i)))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return pd.DataFrame(rows)


def curvature(cfg: Config, data_path: Path, minima: list[Spec], paths: list[Spec], out_csv: Path, job: Job) -> pd.DataFrame:
    """One curvature job: every minimum and every path point → one CSV (see the module docstring)."""
    if not minima and not paths:
        raise ValueError("curvature: give at least one --minimum or --path")
    device = job.setup()
    logged = {**params_of(cfg, "evaluation", "flatness"),
              "minima": " ".join(f"{s.family}={','.join(map(str, s.files))}" for s in minima),
              "paths": " ".join(f"{s.family}={','.join(map(str, s.files))}" for s in paths)}
    with tracking.job(cfg.tracking, f"curvature {out_csv.parent.name}/{out_csv.stem}", logged, job.tags(family="flatness")) as run:
        data = data_on(data_path, device)
        model = skeleton(cfg, data, device)
        batches = evaluation_batches(data, cfg)
        step = iter(range(10**9))

        def log(row: dict) -> None:
            run.metrics({k: row[k] for k in ("trace", "trace_se", "top_eigenvalue", "grad_norm", "test_error")}, step=next(step))

        groups = [load_minimum(cfg, s, device) for s in minima]
        groups += rescaled(cfg, model, groups[:1]) + [load_path(cfg, s, device) for s in paths]
        table = pd.concat([group_table(cfg, data, model, g, batches, log) for g in groups], ignore_index=True)
        with atomic_path(out_csv) as tmp:
            table.to_csv(tmp, index=False)
        run.artifact(out_csv)
    return table
