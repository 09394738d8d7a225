"""The flatness family: Hessian trace and extreme eigenvalues at minima and along paths, one table per job.

Inputs are generic, so that every family's outputs can be measured by one job:

    minimum   FAMILY=FILE          any network checkpoint (meta "kind": seed, fork, ticket, fge, swa…);
                                   a lottery ticket (meta "mask_file") is measured on its surviving
                                   weights only (the Hessian restricted to the unpruned coordinates)
    path      FAMILY=A,B           the linear path between two network checkpoints
              FAMILY=FILE          one path checkpoint: stacked anchors [M, …] with meta {"kind":
                                   "path", "path": linear|bezier|polychain, "anchors": M}; or a
                                   simplex (meta "kind": "simplex"): its vertices and its centre
                                   (labelled as such in `point`; a simplex has no t)

Every row of the output CSV is one network: its curvature (Hutchinson trace ± standard error, the
largest and smallest Hessian eigenvalues by Lanczos with their residuals and product counts, the
gradient norm), its loss and error on both splits, and the definition of every estimate (split,
batch size, number of batches, train/eval mode, probes, eigensolver settings, the coordinates the
Hessian is taken over). `source` names the input files (unique per path: both endpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, tracking
from ...config import Config
from ...core import curvature as curv
from ...core import pruning
from ...core.params import combine, member, stack
from ...core.paths import alphas, path_coefficients
from ...core.population import has_batchnorm, recompute_bn
from ...data import Dataset
from ...io import write_csv
from ...models import model_info
from ...progress import ProgressLog
from ...train import generator
from ...jobs import Job, load_network, load_networks, bn_batches, data_on, evaluate_population, params_of, skeleton, split

ALL_PARAMETERS = "all parameters"
# How zᵀHz is computed (recorded with every trace): see core/curvature.py.
TANGENTS = "forward tangents and adjoints"
PRODUCTS = "Hessian-vector products"


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


def file_label(path: Path, results: str | Path) -> str:
    """A checkpoint's identity in the tables: its path without the suffix, relative to the run's
    results folder (run.results) when inside it, e.g. rebasin/pairs/seed0-seed1/weight. Unique per
    file, unlike the stem, and the same for every run (preset)."""
    path = Path(path).with_suffix("")
    try:
        path = path.relative_to(results)
    except ValueError:
        pass
    return path.as_posix()


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


# ----------------------------------------------------------------------------- curvature of networks


def traced(model: torch.nn.Module) -> curv.Program | None:
    """The model as a torch.fx program for the fast zᵀHz, or None where fx cannot trace it (the
    trace then falls back to one Hessian-vector product per probe; the CSV records which)."""
    try:
        return curv.trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure has the same, recorded, fallback
        return None


def network_curvature(cfg: Config, model: torch.nn.Module, program: curv.Program | None, params: dict, buffers: dict,
                      batches, probes: dict, start: dict, free: dict | None) -> dict:
    """Trace, λ_max, λ_min, loss and gradient norm of one network's loss on `batches`.

    `probes` (Rademacher [P, …]) and the Lanczos `start` are shared by every network (common random
    numbers make differences between networks less noisy than the standard errors suggest). With
    `free` the Hessian is restricted to the free coordinates (probes and gradient projected, Lanczos
    on the free coordinates only).
    """
    fc = cfg.flatness
    local = curv.second_order([curv.batch_loss(model, buffers, x, y) for x, y in batches], params)
    quadratic = curv.quadratic_forms(program, params, buffers, batches) if program is not None else curv.quadratic_from_hvp(local.hvp)
    trace = curv.hutchinson(quadratic, curv.restrict(probes, free), fc.probe_chunk)
    eig = curv.extreme_eigenvalues(local.hvp, params, start, fc.tolerance, fc.lanczos_vectors, fc.lanczos_restarts, free)
    return {
        "trace": trace["trace"],
        "trace_se": trace["stderr"],
        "lambda_max": eig["lambda_max"],
        "lambda_min": eig["lambda_min"],
        "lambda_max_residual": eig["residual_max"],
        "lambda_min_residual": eig["residual_min"],
        "lambda_max_matvecs": eig["matvecs_max"],
        "lambda_min_matvecs": eig["matvecs_min"],
        "eig_converged": eig["converged"],
        "hessian_coordinates": eig["coordinates"],
        "hessian_loss": local.loss.item(),
        "grad_norm": curv.norm(curv.restrict(local.grad, free)).item(),
        "quadratic_method": TANGENTS if program is not None else PRODUCTS,
    }


def group_curvature(cfg: Config, model: torch.nn.Module, params: dict, buffers: dict, batches, free: dict | None = None,
                    known: dict | None = None, on_network=None) -> list[dict]:
    """`network_curvature` of each of K stacked networks, one at a time (ARPACK is sequential), with
    the probes and the Lanczos start drawn once from generators keyed by `flatness.seed` only, so a
    network gets the same numbers alone or in a group.

    `known` (digest of a network → its numbers) is shared by the groups of one job: a network
    measured before (a seed that ends several paths, and is a minimum too) is not measured again;
    its numbers are the same, bit for bit, as the estimates are deterministic given the network."""
    fc = cfg.flatness
    first = member(params, 0)
    probes = curv.rademacher(first, fc.probes, generator("hutchinson", fc.seed))
    start = curv.gaussian(first, generator("lanczos", fc.seed))
    k = next(iter(params.values())).shape[0]
    known = {} if known is None else known
    rows = []
    with curv.batch_statistics(model, training=fc.mode == "train"):
        program = traced(model)
        for j in range(k):
            p, b = member(params, j), member(buffers, j)
            key = network_digest(p, b, free)
            if key not in known:
                known[key] = network_curvature(cfg, model, program, p, b, batches, probes, start, free)
            rows.append(known[key])
            if on_network is not None:
                on_network()
    return rows


def network_digest(params: dict, buffers: dict, free: dict | None) -> tuple[str, str, str]:
    """What makes two networks' numbers equal: their tensors and their free coordinates (checkpoint.digest)."""
    return checkpoint.digest(params), checkpoint.digest(buffers), checkpoint.digest(free or {})


def describe(cfg: Config, parameters: int, restriction: str) -> dict:
    """The definition stored with every number: which set, how big, which mode, how many probes,
    which eigensolver settings, over which coordinates."""
    fc = cfg.flatness
    return {
        "hessian_split": fc.split,
        "hessian_batch_size": fc.batch_size,
        "hessian_batches": fc.batches,
        "hessian_examples": fc.examples,
        "hessian_mode": fc.mode,
        "probes": fc.probes,
        "eig_solver": "scipy eigsh (ARPACK Lanczos), LA and SA",
        "eig_tolerance": fc.tolerance,
        "lanczos_vectors": fc.lanczos_vectors,
        "lanczos_max_restarts": fc.lanczos_restarts,
        "parameters": parameters,
        "hessian_restriction": restriction,
    }


# ----------------------------------------------------------------------------- networks of one input


@dataclass
class Group:
    """Networks from one input spec, stacked [K, …], with a label per member.

    `t` is the position along a path (nan for minima and simplex points); `point` names each member
    ("" for minima, "t=0.25" on paths, "vertex 0" … "centre" on a simplex). `free` restricts the
    Hessian of every member to some coordinates (a ticket's surviving weights), `restriction` says so.
    """

    family: str
    kind: str
    source: str
    path: str
    t: list[float]
    params: dict
    buffers: dict
    point: list[str] = field(default_factory=list)
    free: dict | None = None
    restriction: str = ALL_PARAMETERS

    def __post_init__(self):
        if not self.point:
            self.point = ["" if t != t else f"t={t:g}" for t in self.t]


def surviving_weights(path: Path, ckpt: checkpoint.Checkpoint, model: torch.nn.Module, device: torch.device) -> tuple[dict | None, str]:
    """The free coordinates of a pruned network and their label, or (None, "all parameters").

    A lottery ticket names its mask file (meta "mask_file", beside the ticket: 1 = surviving weight).
    Without that file the restriction is derived from the weights: the pruned weights of a ticket
    are exactly zero and held there during training, so the free coordinates are the nonzero
    prunable weights (and every other parameter); this is exact when their count equals the
    ticket's recorded "remaining" (a surviving weight that is exactly 0.0 would break it).
    """
    name = ckpt.meta.get("mask_file")
    if not name:
        return None, ALL_PARAMETERS
    mask_path = Path(path).parent / name
    if mask_path.is_file():
        mask = checkpoint.load(mask_path, device).params
        pruning.check_mask(mask, ckpt.params)
        stray = [n for n, m in mask.items() if bool((ckpt.params[n][m == 0] != 0).any())]
        if stray:
            raise ValueError(f"{path}: pruned weights are not zero in {stray} (mask {mask_path.name})")
        return curv.free_coordinates(ckpt.params, mask), f"surviving weights ({mask_path.name})"
    prunable = model_info(model).prunable
    mask = {n: (ckpt.params[n] != 0).to(ckpt.params[n].dtype) for n in prunable}
    survivors, recorded = pruning.remaining(mask), ckpt.meta.get("remaining")
    if recorded is not None and int(recorded) != survivors:
        raise ValueError(f"{path}: mask file {name} missing and {survivors} nonzero prunable weights ≠ the recorded {recorded} survivors")
    how = "= recorded survivors" if recorded is not None else "unchecked: no recorded count"
    return curv.free_coordinates(ckpt.params, mask), f"surviving weights (nonzero prunable weights, {how}; {name} missing)"


def load_minimum(cfg: Config, spec: Spec, device: torch.device, model: torch.nn.Module | None = None) -> Group:
    if len(spec.files) != 1:
        raise ValueError(f"minimum of {spec.family}: expected one checkpoint, got {len(spec.files)}")
    path = spec.files[0]
    ckpt = load_network(cfg, path, device)
    kind = str(ckpt.meta.get("kind", "minimum"))
    if kind in ("path", "simplex", "directions"):
        raise ValueError(f"{path}: a {kind} checkpoint is not a minimum; pass it as a path")
    free, restriction = surviving_weights(path, ckpt, model, device) if model is not None else (None, ALL_PARAMETERS)
    return Group(spec.family, kind, file_label(path, cfg.run.results), "", [float("nan")], stack([ckpt.params]), stack([ckpt.buffers]),
                 free=free, restriction=restriction)


def load_path(cfg: Config, spec: Spec, device: torch.device) -> Group:
    """The points of a path at `flatness.path_points` evenly spaced t (a simplex: vertices + centre)."""
    t = alphas(cfg.flatness.path_points)
    if len(spec.files) == 2:
        a, b = load_networks(cfg, spec.files, device)
        anchors_p, anchors_b, kind, m = stack([a.params, b.params]), stack([a.buffers, b.buffers]), "linear", 2
        source = " – ".join(file_label(p, cfg.run.results) for p in spec.files)
    else:
        path = spec.files[0]
        ck = load_network(cfg, path, device)
        anchors_p, anchors_b, source = ck.params, ck.buffers, file_label(path, cfg.run.results)
        meta_kind = ck.meta.get("kind")
        if meta_kind == "simplex":
            m = int(ck.meta.get("vertices", next(iter(ck.params.values())).shape[0]))
            coeffs = torch.cat([torch.eye(m, dtype=torch.float64), torch.full((1, m), 1.0 / m, dtype=torch.float64)])
            return Group(spec.family, "simplex", source, "simplex", [float("nan")] * (m + 1), combine(coeffs, anchors_p),
                         combine(coeffs, anchors_b), point=[f"vertex {i}" for i in range(m)] + ["centre"])
        if meta_kind != "path" or "path" not in ck.meta or "anchors" not in ck.meta:
            raise checkpoint.CheckpointError(f"{path}: expected meta kind 'path' with 'path' and 'anchors' (or kind 'simplex'), got {ck.meta.get('kind')!r}")
        kind, m = str(ck.meta["path"]), int(ck.meta["anchors"])
    coeffs = path_coefficients(kind, t, m)
    return Group(spec.family, "path", source, kind, t.tolist(), combine(coeffs, anchors_p), combine(coeffs, anchors_b))


def rescaled(cfg: Config, model: torch.nn.Module, groups: list[Group]) -> list[Group]:
    """Dinh et al.'s reparametrisation of the first minimum (same function, other Hessian), where it
    applies: an MLP without normalisation and `flatness.rescale` > 0. Labelled kind "rescaled".
    Rescaling keeps zero weights zero, so a ticket's restriction carries over."""
    c = cfg.flatness.rescale
    if not groups or c <= 0 or cfg.model.name not in ("mlp", "lenet300_100") or cfg.model.norm != "none":
        return []
    g, hidden = groups[0], len(getattr(model, "layers", []))
    if hidden == 0:
        return []
    second = "layers.1" if hidden > 1 else "classifier"
    params = curv.rescaled_layers(g.params, "layers.0", second, c)
    return [Group(g.family, "rescaled", f"{g.source} (layers.0 ×{c:g}, {second} ×1/{c:g})", "", g.t, params, g.buffers,
                  free=g.free, restriction=g.restriction)]


def group_table(cfg: Config, data: Dataset, model: torch.nn.Module, group: Group, batches, on_row=None,
                known: dict | None = None, on_network=None) -> pd.DataFrame:
    """One row per member of the group: labels, curvature, loss/error on both splits, definitions."""
    evaluated = evaluate_population(cfg, data, model, group.params, group.buffers)
    buffers = group.buffers
    if cfg.flatness.mode == "eval" and has_batchnorm(model):
        # Same fresh statistics the loss/error above were measured with.
        buffers = recompute_bn(model, group.params, buffers, bn_batches(data, cfg.evaluation), cfg.evaluation.member_chunk)
    curvature_rows = group_curvature(cfg, model, group.params, buffers, batches, group.free, known, on_network)
    rows = []
    for i, t in enumerate(group.t):
        row = {"family": group.family, "kind": group.kind, "source": group.source, "path": group.path, "t": t, "point": group.point[i]}
        row |= curvature_rows[i]
        for r in evaluated[evaluated.member == i].itertuples():
            row |= {f"{r.split}_loss": r.loss, f"{r.split}_error": r.error}
        row |= {"bn_reset": bool(evaluated.bn_reset.iloc[0])}
        row |= describe(cfg, curv.parameter_count(member(group.params, i)), group.restriction)
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
            run.metrics({k: row[k] for k in ("trace", "trace_se", "lambda_max", "lambda_min", "grad_norm", "test_error")}, step=next(step))

        groups = [load_minimum(cfg, s, device, model) for s in minima]
        groups += rescaled(cfg, model, groups[:1]) + [load_path(cfg, s, device) for s in paths]
        networks = sum(len(g.t) for g in groups)
        progress = ProgressLog(0, networks, label="curvature of networks")
        done = iter(range(1, networks + 1))
        known: dict = {}  # networks met twice (a path's endpoints) are measured once

        def measured() -> None:
            progress.update(next(done), {"measured": len(known)})

        table = pd.concat([group_table(cfg, data, model, g, batches, log, known, measured) for g in groups], ignore_index=True)
        # refuses a non-finite loss, error or trace (eigenvalues may be NaN: not converged, recorded in eig_converged)
        write_csv(out_csv, table, inputs=[f for spec in [*minima, *paths] for f in spec.files])
        run.artifact(out_csv)
    return table
