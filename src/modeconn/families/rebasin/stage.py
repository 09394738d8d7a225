"""The rebasin family: align seed B to seed A by permutation, evaluate the matched paths.

match   one pair of seeds → for every method (none, weight, activation, ste): the matched B as a
        checkpoint (meta kind "matched"), loss and error along θ(α) = (1 − α) θ_A + α π(θ_B) on
        train and test, plain and after REPAIR (no-BN networks), and the variance-collapse ratio
        per layer at α = ½ before and after REPAIR → results/rebasin/pairs/seed<a>-seed<b>/
train-width  seeds at one width of the width sweep (the seeds' training, other model width and
        length) → results/rebasin/width/w<w>/seed<s>.safetensors
sweep   every pair of one width's seeds, every method → barriers of the plain paths under every
        definition (column barrier_definition; one CSV per width)
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, tracking
from ...config import Config
from ...core import barrier as barrier_math
from ...core import matching, repair
from ...core import permutation as perm
from ...core.params import combine, member, stack
from ...core.paths import alphas, linear_coefficients
from ...data import Dataset
from ...io import write_csv, write_json
from ...progress import ProgressLog
from ...tables import all_path_rows, path_rows
from ...models import permutation_spec, width_key
from ...provenance import code_version
from ...train import generator
from ..seeds import stage as seeds_stage
from ...jobs import Job, checkpoint_name, load_networks, data_on, evaluate_population, params_of, skeleton

SECTIONS = ("data", "model", "evaluation", "rebasin")


@dataclasses.dataclass
class Inputs:
    """What every matching job works on: the model, its spec and fixed example subsets."""

    model: torch.nn.Module
    spec: perm.PermutationSpec
    x_act: torch.Tensor  # activation matching
    x_repair: torch.Tensor  # REPAIR statistics (training data)
    x_collapse: torch.Tensor  # variance-collapse measurement (test data)
    x_ste: torch.Tensor
    y_ste: torch.Tensor


def inputs(cfg: Config, data: Dataset, device: torch.device) -> Inputs:
    model = skeleton(cfg, data, device)
    spec = permutation_spec(model)
    r = cfg.rebasin
    # one fixed subset of the training data for every job, so methods and pairs see the same examples
    order = torch.randperm(data.x_train.shape[0], generator=generator("rebasin", "examples")).to(device)
    return Inputs(
        model,
        spec,
        data.x_train[order[: r.activation_examples]],
        data.x_train[order[: r.repair_examples]],
        data.x_test[: r.repair_examples],
        data.x_train[order[: r.ste_eval_examples]],
        data.y_train[order[: r.ste_eval_examples]],
    )


def match(cfg: Config, data: Dataset, inp: Inputs, method: str, a: checkpoint.Checkpoint, b: checkpoint.Checkpoint, key: tuple) -> matching.MatchResult:
    """π for B under `method` (identity for "none")."""
    r, g = cfg.rebasin, generator("rebasin", method, *key)
    if method == "none":
        return matching.MatchResult(perm.identity(perm.sizes(inp.spec, a.params), data.x_train.device))
    if method == "weight":
        return matching.weight_matching(inp.spec, a.params, b.params, g, max_sweeps=r.max_sweeps)
    if method == "activation":
        return matching.activation_matching(inp.model, inp.spec, (a.params, a.buffers), (b.params, b.buffers), inp.x_act, r.activation_batch_size)
    if method == "ste":
        log = ProgressLog(0, r.ste_steps + 1, label=f"straight-through estimator {key}")
        return matching.ste_matching(
            inp.model, inp.spec, (a.params, a.buffers), b.params, data.x_train, data.y_train, inp.x_ste, inp.y_ste,
            g, r.ste_steps, r.ste_lr, r.ste_batch_size, r.max_sweeps, lambda step, loss: log.update(step + 1, {"midpoint loss": loss}),
        )
    raise ValueError(f"rebasin.methods: unknown method {method!r}")


def repaired_path(inp: Inputs, params, buffers, state_a, state_b, alpha: torch.Tensor) -> dict:
    """REPAIR at every α of a path (params/buffers stacked [N, ...]) → repaired params [N, ...]."""
    stats_a = repair.channel_stats(inp.model, *state_a, inp.spec, inp.x_repair)
    stats_b = repair.channel_stats(inp.model, *state_b, inp.spec, inp.x_repair)
    out = []
    for i, al in enumerate(alpha.tolist()):
        goal = repair.interpolate_stats(stats_a, stats_b, al)
        out.append(repair.repair(inp.model, inp.spec, member(params, i), member(buffers, i), goal, inp.x_repair))
    return stack(out)


def collapse(inp: Inputs, state_a, state_b) -> pd.DataFrame:
    """Variance-collapse ratio σ_merged / goal σ per REPAIR point at α = ½, before and after REPAIR,
    measured on test examples (REPAIR itself is fitted on training examples)."""
    mid = {k: 0.5 * (state_a[0][k] + state_b[0][k]) for k in state_a[0]}
    mid_buffers = combine(torch.tensor([[0.5, 0.5]]), stack([state_a[1], state_b[1]]))
    mid_buffers = member(mid_buffers, 0)
    goal_train = repair.interpolate_stats(
        repair.channel_stats(inp.model, *state_a, inp.spec, inp.x_repair), repair.channel_stats(inp.model, *state_b, inp.spec, inp.x_repair), 0.5
    )
    fixed = repair.repair(inp.model, inp.spec, mid, mid_buffers, goal_train, inp.x_repair)
    goal = repair.interpolate_stats(
        repair.channel_stats(inp.model, *state_a, inp.spec, inp.x_collapse), repair.channel_stats(inp.model, *state_b, inp.spec, inp.x_collapse), 0.5
    )
    before = repair.collapse_ratio(repair.channel_stats(inp.model, mid, mid_buffers, inp.spec, inp.x_collapse), goal)
    after = repair.collapse_ratio(repair.channel_stats(inp.model, fixed, mid_buffers, inp.spec, inp.x_collapse), goal)
    return pd.DataFrame({"layer": list(before), "depth": range(len(before)), "before": list(before.values()), "after": [after[k] for k in before]})


def analyse_pair(cfg: Config, data: Dataset, inp: Inputs, a: checkpoint.Checkpoint, b: checkpoint.Checkpoint, key: tuple, on_method=None):
    """Every method on one pair: (paths table, collapse table, per-method matching info, matched states)."""
    points = cfg.rebasin.interpolation_points
    alpha = alphas(points)
    coeffs = linear_coefficients(alpha)
    use_repair = cfg.rebasin.repair and bool(inp.spec.repair)
    paths, collapses, info, matched = [], [], {}, {}
    for method in cfg.rebasin.methods:
        start = time.perf_counter()
        result = match(cfg, data, inp, method, a, b, key)
        seconds = time.perf_counter() - start
        pm, bm = perm.apply(inp.spec, result.perms, b.params), perm.apply(inp.spec, result.perms, b.buffers)
        matched[method] = (pm, bm, result.perms)
        params, buffers = combine(coeffs, stack([a.params, pm])), combine(coeffs, stack([a.buffers, bm]))
        variants = {"plain": params}
        if use_repair:
            variants["repair"] = repaired_path(inp, params, buffers, (a.params, a.buffers), (pm, bm), alpha)
            collapses.append(collapse(inp, (a.params, a.buffers), (pm, bm)).assign(method=method))
        for correction, p in variants.items():
            table = evaluate_population(cfg, data, inp.model, p, buffers)
            table.insert(0, "alpha", alpha.numpy()[table.pop("member").to_numpy()])
            paths.append(table.assign(method=method, correction=correction))
        info[method] = {
            "seconds": seconds,
            "sweeps": result.sweeps,
            "history": result.history,
            "identity": perm.is_identity(result.perms),
            "moved_units": {p: int((v != torch.arange(v.numel(), device=v.device)).sum()) for p, v in result.perms.items()},
        }
        if on_method is not None:
            on_method(method, paths[-len(variants):], info[method])
    paths = pd.concat(paths, ignore_index=True)
    collapses = pd.concat(collapses, ignore_index=True) if collapses else pd.DataFrame(columns=["layer", "depth", "before", "after", "method"])
    return paths, collapses, info, matched


def _path_keys(paths: pd.DataFrame) -> list[str]:
    return [c for c in ("seed_a", "seed_b", "width", "method", "correction", "split") if c in paths]


def barriers(paths: pd.DataFrame, kind: str = barrier_math.MAX_MINUS_MEAN) -> pd.DataFrame:
    """One row per (method, correction, split, metric) group of a paths table: barrier (definition
    `kind`), endpoints, peak and where it lies (tables.path_rows), in the paths' order."""
    return path_rows(paths, _path_keys(paths), kind, sort=False)


def all_barriers(paths: pd.DataFrame) -> pd.DataFrame:
    """barriers under every definition, told apart by the barrier_definition column (what jobs record)."""
    return all_path_rows(paths, _path_keys(paths), sort=False)


def _log_method(run, method: str, tables: list[pd.DataFrame], info: dict) -> None:
    for t in tables:
        for row in all_barriers(t).itertuples():
            run.metrics({f"{method}_{row.correction}_{row.split}_{row.metric}_barrier_{row.barrier_definition}": row.barrier})
    run.metrics({f"{method}_match_seconds": info["seconds"]})
    for i, v in enumerate(info["history"]):
        run.metrics({f"{method}_{'ste_midpoint_loss' if method == 'ste' else 'objective'}": v}, step=i)


def match_pair(cfg: Config, data_path: Path, path_a: Path, path_b: Path, out_dir: Path, job: Job) -> pd.DataFrame:
    """One pair of seeds: every method, paths, REPAIR, collapse, matched checkpoints (see module doc)."""
    device = job.setup()
    logged = {**params_of(cfg, *SECTIONS), "checkpoint_a": str(path_a), "checkpoint_b": str(path_b)}
    with tracking.job(cfg.tracking, f"rebasin {path_a.stem}-{path_b.stem}", logged, job.tags(family="rebasin")) as run:
        data = data_on(data_path, device)
        a, b = load_networks(cfg, [path_a, path_b], device)
        inp = inputs(cfg, data, device)
        perm.check(inp.spec, a.params, a.buffers)
        sa, sb = a.meta.get("seed"), b.meta.get("seed")
        paths, coll, info, matched = analyse_pair(cfg, data, inp, a, b, (sa, sb), lambda m, t, i: _log_method(run, m, t, i))
        paths.insert(0, "seed_b", sb)
        paths.insert(0, "seed_a", sa)
        coll = coll.assign(seed_a=sa, seed_b=sb)
        # first: a non-finite value in the paths stops the job before any output is written
        write_csv(out_dir / "paths.csv", paths, inputs=[path_a, path_b])
        # the permuted network was made by B's config and the rebasin section
        origin = checkpoint.Origin({**b.meta.get("config", {}), "rebasin": cfg.to_dict()["rebasin"]}, code_version())
        for method, (pm, bm, perms) in matched.items():
            meta = origin.meta("matched", method=method, seed=sb, reference_seed=sa, seeds=[sa, sb], reference=str(path_a), source=str(path_b),
                               step=b.meta.get("step"), permutation={p: v.tolist() for p, v in perms.items()})
            checkpoint.save(out_dir / f"{method}.safetensors", checkpoint.Checkpoint(pm, bm, meta))
        write_csv(out_dir / "collapse.csv", coll)
        write_json(out_dir / "matching.json", {"seed_a": sa, "seed_b": sb, "methods": info})
        for f in ("paths.csv", "matching.json"):
            run.artifact(out_dir / f)
    return paths


# ----------------------------------------------------------------------------- width sweep


def width_config(cfg: Config, width: int) -> Config:
    """The configuration of the width-sweep networks at `width` (see rebasin.widths)."""
    key = width_key(cfg.model.name)
    if key is None:
        raise ValueError(f"rebasin.widths: model {cfg.model.name!r} has fixed widths, there is no width to sweep")
    model = dataclasses.replace(cfg.model, **{key: width})
    train = dataclasses.replace(cfg.train, duration=cfg.rebasin.width_duration, checkpoint_steps=())
    return dataclasses.replace(cfg, model=model, train=train)


def width_seeds(cfg: Config) -> list[int]:
    return list(range(cfg.seeds.first, cfg.seeds.first + cfg.rebasin.width_seeds))


def train_width(cfg: Config, width: int, data_path: Path, out_dir: Path, job: Job) -> list[Path]:
    """Train the width-sweep seeds at `width` as one population (the seeds family's training)."""
    return seeds_stage.train(width_config(cfg, width), width_seeds(cfg), data_path, out_dir, job, family="rebasin")


def sweep_width(cfg: Config, width: int, data_path: Path, in_dir: Path, out_csv: Path, job: Job) -> pd.DataFrame:
    """Barriers of every method on every pair of the width's seeds → one CSV (column `width`)."""
    device = job.setup()
    # plain paths only: the sweep asks how matching alone scales with width (and halves its cost)
    wcfg = width_config(cfg, width)
    wcfg = dataclasses.replace(wcfg, rebasin=dataclasses.replace(wcfg.rebasin, repair=False))
    logged = {**params_of(wcfg, *SECTIONS), "width": width}
    with tracking.job(cfg.tracking, f"rebasin width {width}", logged, job.tags(family="rebasin")) as run:
        data = data_on(data_path, device)
        inp = inputs(wcfg, data, device)
        tables = []
        files = [in_dir / checkpoint_name(s) for s in width_seeds(cfg)]
        for sa, sb in itertools.combinations(width_seeds(cfg), 2):
            a, b = load_networks(wcfg, [in_dir / checkpoint_name(sa), in_dir / checkpoint_name(sb)], device)
            paths = analyse_pair(wcfg, data, inp, a, b, ("width", width, sa, sb))[0]
            # every definition: the report picks evaluation.barrier without rerunning the sweep
            tables.append(all_barriers(paths.assign(seed_a=sa, seed_b=sb, width=width)))
        table = pd.concat(tables, ignore_index=True)
        by = ["method", "correction", "split", "metric", "barrier_definition"]
        for row in table.groupby(by).barrier.mean().reset_index().itertuples():
            run.metrics({f"{row.method}_{row.correction}_{row.split}_{row.metric}_barrier_{row.barrier_definition}": row.barrier})
        write_csv(out_csv, table, inputs=files)
    return table
