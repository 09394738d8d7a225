"""Fast geometric ensembling (Garipov et al. 2018) and stochastic weight averaging (Izmailov et al. 2018).

Both start from every seed's checkpoint at a step of its own training (with the optimizer state)
and continue it, all seeds as one population, through `train.train_population`:

fge   a cyclic per-iteration lr lr1 → lr2 → lr1 over cycles of c iterations (schedules "cyclic"),
      a snapshot after the lowest-lr update of each cycle → results/fge/networks/seed<s>.cycle<j>
      (meta kind "fge"); test error and NLL of the ensemble of the first n snapshots, and at equal
      budget of ensembles of independently trained seeds → fge.csv
swa   a constant lr, the running average of the weights every `swa.every` → results/swa/networks/
      seed<s>.safetensors (meta kind "swa"); BN statistics recomputed; compared with the SGD
      solution (the seed's final weights and the last iterate of the SWA run) → swa.csv
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, resume, tracking
from ...config import Config
from ...core import ensemble
from ...core.params import member, stack
from ...core.population import has_batchnorm, recompute_bn
from ...core.swa import RunningAverage
from ...io import write_csv
from ...schedules import iterations, steps_per_epoch
from ...train import MemberSeeds, TrainState, train_population
from ...jobs import TRAIN_SECTIONS, Job, checkpoint_name, load_network, bn_batches, data_on, evaluate_population, params_of, skeleton, split


def _check_start(name: str, start: int, cfg: Config, spe: int) -> None:
    """The start checkpoint must lie inside the seeds' training (else the seeds never saved it)."""
    total = iterations(cfg.train.duration, spe)
    if not 0 <= start < total:
        raise ValueError(f"{name}.start is iteration {start}, not inside the seeds' training of {total} iterations "
                         f"(train.duration {cfg.train.duration!r}); set {name}.start to ~75-80% of train.duration")


def _load_seeds(cfg: Config, seeds: list[int], dirs: list[Path], step: int | None, device) -> list[checkpoint.Checkpoint]:
    """Each seed's checkpoint at `step` (None: final); a step checkpoint must carry optimizer state,
    unless the optimizer keeps none (plain SGD: no momentum, as in the LeNet presets)."""
    if len(seeds) != len(dirs):
        raise ValueError(f"{len(seeds)} seeds but {len(dirs)} seed directories")
    stateless = cfg.train.optimizer == "sgd" and cfg.train.momentum == 0
    out = []
    for seed, d in zip(seeds, dirs):
        path = Path(d) / checkpoint_name(seed, step)
        ckpt = load_network(cfg, path, device)
        if step is not None and not ckpt.optimizer and not stateless:
            raise checkpoint.CheckpointError(f"{path}: no optimizer state to resume from")
        out.append(ckpt)
    return out


def continue_seeds(cfg: Config, data, model, begin: resume.PopulationStart, seeds: list[int], train_cfg, on_checkpoint,
                   on_epoch=None, lr_key: str = "train.lr") -> TrainState:
    """Continue every seed's training from `begin` (their checkpoints at the method's start, or the
    job's resume point) under `train_cfg`, as one population; `lr_key` names the learning-rate key
    a divergence error asks to lower."""
    return train_population(
        model,
        begin.params,
        begin.buffers,
        data.x_train,
        data.y_train,
        train_cfg,
        [MemberSeeds.same(s) for s in seeds],
        start_step=begin.step,
        member_optimizer_states=begin.optimizer_states,
        on_checkpoint=on_checkpoint,
        on_epoch=on_epoch,
        lr_key=lr_key,
    )


def _files(seeds: list[int], dirs: list[Path], step: int | None) -> list[Path]:
    """Every seed's checkpoint file at `step` (None: final), as `_load_seeds` reads them."""
    return [Path(d) / checkpoint_name(s, step) for s, d in zip(seeds, dirs)]


def _begin(cfg: Config, method: str, seeds: list[int], dirs: list[Path], step: int, out_dir: Path, device) -> tuple[resume.Resume, resume.PopulationStart]:
    """The job's resume points and where its population starts: the resume point if there is one,
    else every seed's checkpoint at `step` (with its optimizer state)."""
    starts = _load_seeds(cfg, seeds, dirs, step, device)
    points = resume.Resume(out_dir, resume.identity(cfg, ("data", "model", "train", method), _files(seeds, dirs, step), seeds=seeds), f"{method} seeds {seeds}")
    begin = points.start_population("population", stack([c.params for c in starts]), stack([c.buffers for c in starts]), step,
                                    [c.optimizer for c in starts], device)
    return points, begin


def fge_schedule(cfg: Config, spe: int) -> tuple[object, list[int]]:
    """The TrainConfig of the FGE phase and its snapshot steps.

    Cycles of c iterations start at s0 (fge.start); the lr is lr1 at s0 + jc and lr2 at
    s0 + jc + c/2; the snapshot is taken after that lowest-lr update (step s0 + jc + c/2 + 1). The
    phase runs whole cycles, so FGE's budget is s0 + cycles·c iterations.
    """
    f = cfg.fge
    s0, c = iterations(f.start, spe), iterations(f.cycle, spe)
    if c < 2:
        raise ValueError(f"fge.cycle {f.cycle!r} is {c} iterations; a cycle needs at least 2")
    end = s0 + f.cycles * c
    snaps = [s0 + j * c + c // 2 + 1 for j in range(f.cycles)]
    train_cfg = dataclasses.replace(
        cfg.train, lr=f.lr1, schedule="cyclic", milestones=(f"{s0}it", f"{s0 + c}it"), gamma=f.lr2 / f.lr1,
        warmup="0it", duration=f"{end}it", checkpoint_steps=tuple(f"{s}it" for s in snaps),
    )
    return train_cfg, snaps


def _budget(steps: int, total: int) -> float:
    return round(steps / total, 4)


def ensemble_rows(method: str, logp_by_seed: dict[int, torch.Tensor], y, budget: float, sizes: range) -> list[dict]:
    """Ensembles over every combination of k seeds (k in sizes) of their members' log-probs [S, N, C]."""
    rows = []
    seeds = sorted(logp_by_seed)
    for k in sizes:
        for combo in itertools.combinations(seeds, k):
            logp = torch.cat([logp_by_seed[s] for s in combo])
            members = ensemble.member_scores(logp, y)
            rows.append({"method": method, "seeds": " ".join(map(str, combo)), "budget": round(k * budget, 4), "members": logp.shape[0],
                         **ensemble.scores(logp, y), "member_error": members["error"].mean().item(), "member_nll": members["nll"].mean().item()})
    return rows


def fge(cfg: Config, data_path: Path, seeds: list[int], dirs: list[Path], out_dir: Path, out_csv: Path, job: Job) -> pd.DataFrame:
    """FGE from every seed's checkpoint at fge.start; snapshots, ensemble table at equal budget.

    Resumable (modeconn.resume): a resume point holds the population and the snapshots taken so
    far; the snapshot checkpoints are written once training is complete."""
    device = job.setup()
    with tracking.job(cfg.tracking, f"fge seeds {seeds}", params_of(cfg, "train", "fge"), job.tags(family="fge")) as run:
        data = data_on(data_path, device)
        spe = steps_per_epoch(data.x_train.shape[0], cfg.train.batch_size, "train.batch_size")
        total = iterations(cfg.train.duration, spe)
        train_cfg, snaps = fge_schedule(cfg, spe)
        s0 = iterations(cfg.fge.start, spe)
        _check_start("fge", s0, cfg, spe)
        points, begin = _begin(cfg, "fge", seeds, dirs, s0, out_dir, device)
        model = skeleton(cfg, data, device)
        # (step, params, buffers) of every snapshot so far, the resumed ones first
        saved = resume.split(begin.extra)
        snapshots = []
        for j, step in enumerate(begin.extra_state.get("steps", [])):
            parts = resume.split(saved[str(j)])
            snapshots.append((step, resume.ordered(parts["params"], begin.params), resume.ordered(parts.get("buffers", {}), begin.buffers)))

        def snapshot(state: TrainState) -> None:
            snapshots.append((state.step, {k: v.detach().clone() for k, v in state.params.items()}, {k: v.clone() for k, v in state.buffers.items()}))
            run.metrics({"lr": state.optimizer.param_groups[0]["lr"]}, step=state.step)

        def taken() -> tuple[dict, dict]:
            tensors = {f"{j}/{part}/{k}": v for j, (_, p, b) in enumerate(snapshots) for part, d in (("params", p), ("buffers", b)) for k, v in d.items()}
            return tensors, {"steps": [step for step, _, _ in snapshots]}

        state = continue_seeds(cfg, data, model, begin, seeds, train_cfg, snapshot, points.population_saver("population", extra=taken), lr_key="fge.lr1")
        budget = _budget(state.total_steps, total)
        x, y = split(data, "test", cfg.evaluation.max_examples)
        bs, chunk = cfg.evaluation.batch_size, cfg.evaluation.member_chunk
        snap_logp = torch.stack([ensemble.log_probs(model, p, b, x, bs, chunk) for _, p, b in snapshots], 1)  # [K, S, N, C]
        finals = _load_seeds(cfg, seeds, dirs, None, device)
        final_logp = ensemble.log_probs(model, stack([c.params for c in finals]), stack([c.buffers for c in finals]), x, bs, chunk)
        rows = []
        for i, seed in enumerate(seeds):  # ensemble of the first n snapshots of one seed
            for n in range(1, len(snapshots) + 1):
                rows += ensemble_rows("fge (first n snapshots)", {seed: snap_logp[i, :n]}, y, _budget(snaps[n - 1], total), range(1, 2))
        rows += ensemble_rows("fge", {s: snap_logp[i] for i, s in enumerate(seeds)}, y, budget, range(1, len(seeds) + 1))
        rows += ensemble_rows("independent", {s: final_logp[i : i + 1] for i, s in enumerate(seeds)}, y, 1.0, range(1, len(seeds) + 1))
        table = pd.DataFrame(rows)
        table["examples"] = x.shape[0]
        best = table[table.method == "fge"].groupby("budget").error.mean()
        run.metrics({f"fge_error_budget{b}": e for b, e in best.items()})
        write_csv(out_csv, table, inputs=_files(seeds, dirs, s0) + _files(seeds, dirs, None))
        origin = checkpoint.Origin.of(cfg, TRAIN_SECTIONS)
        for j, (step, params, buffers) in enumerate(snapshots):
            for i, seed in enumerate(seeds):
                meta = origin.meta("fge", seed=seed, cycle=j, step=step, start_step=s0, steps_per_epoch=spe, fge=cfg.fge)
                checkpoint.save(out_dir / f"seed{seed}.cycle{j}.safetensors", checkpoint.Checkpoint(member(params, i), member(buffers, i), meta))
        points.complete()
    return table


def swa(cfg: Config, data_path: Path, seeds: list[int], dirs: list[Path], out_dir: Path, out_csv: Path, job: Job) -> pd.DataFrame:
    """SWA from every seed's checkpoint at swa.start; compared with the SGD solutions.

    Resumable (modeconn.resume): a resume point holds the population and the running averages."""
    device = job.setup()
    s = cfg.swa
    with tracking.job(cfg.tracking, f"swa seeds {seeds}", params_of(cfg, "train", "swa"), job.tags(family="fge")) as run:
        data = data_on(data_path, device)
        spe = steps_per_epoch(data.x_train.shape[0], cfg.train.batch_size, "train.batch_size")
        s0, length, every = iterations(s.start, spe), iterations(s.duration, spe), iterations(s.every, spe)
        if every < 1 or every > length:
            raise ValueError(f"swa.every {s.every!r} must be between 1 iteration and swa.duration {s.duration!r}")
        steps = list(range(s0 + every, s0 + length + 1, every))
        train_cfg = dataclasses.replace(cfg.train, lr=s.lr, schedule="constant", milestones=(), warmup="0it",
                                        duration=f"{s0 + length}it", checkpoint_steps=tuple(f"{k}it" for k in steps))
        _check_start("swa", s0, cfg, spe)
        points, begin = _begin(cfg, "swa", seeds, dirs, s0, out_dir, device)
        model = skeleton(cfg, data, device)
        saved = resume.split(begin.extra)
        count = begin.extra_state.get("averaged", 0)
        avg_p = RunningAverage.resumed(resume.ordered(saved["params"], begin.params) if count else {}, count)
        avg_b = RunningAverage.resumed(resume.ordered(saved.get("buffers", {}), begin.buffers) if count else {}, count)

        def add(state: TrainState) -> None:
            avg_p.add(state.params)
            avg_b.add(state.buffers)

        def averages() -> tuple[dict, dict]:
            tensors = {f"params/{k}": v for k, v in avg_p.mean.items()} | {f"buffers/{k}": v for k, v in avg_b.mean.items()}
            return tensors, {"averaged": avg_p.count}

        state = continue_seeds(cfg, data, model, begin, seeds, train_cfg, add, points.population_saver("population", extra=averages), lr_key="swa.lr")
        finals = _load_seeds(cfg, seeds, dirs, None, device)
        swa_buffers = avg_b.mean
        if has_batchnorm(model):
            swa_buffers = recompute_bn(model, avg_p.mean, swa_buffers, bn_batches(data, cfg.evaluation), cfg.evaluation.member_chunk)
        methods = ["swa", "sgd (seed, full schedule)", "sgd (last iterate of the swa run)"]
        params = {k: torch.cat([avg_p.mean[k], stack([c.params for c in finals])[k], state.params[k].detach()]) for k in avg_p.mean}
        buffers = {k: torch.cat([avg_b.mean[k], stack([c.buffers for c in finals])[k], state.buffers[k]]) for k in avg_b.mean}
        table = evaluate_population(cfg, data, model, params, buffers)
        idx = table.pop("member").to_numpy()
        k = len(seeds)
        table.insert(0, "seed", [seeds[i % k] for i in idx])
        table.insert(0, "method", [methods[i // k] for i in idx])
        table["averaged"] = avg_p.count
        table["budget"] = _budget(s0 + length, iterations(cfg.train.duration, spe))
        for (method, split_name), g in table.groupby(["method", "split"]):
            run.metrics({f"{method.split()[0]}_{split_name}_{m}": g[m].mean() for m in ("loss", "error")})
        write_csv(out_csv, table, inputs=_files(seeds, dirs, s0) + _files(seeds, dirs, None))
        origin = checkpoint.Origin.of(cfg, TRAIN_SECTIONS)
        for i, seed in enumerate(seeds):
            meta = origin.meta("swa", seed=seed, averaged=avg_p.count, start_step=s0, end_step=s0 + length, steps_per_epoch=spe,
                               swa=s, bn="recomputed" if has_batchnorm(model) else "no BatchNorm")
            checkpoint.save(out_dir / f"seed{seed}.safetensors", checkpoint.Checkpoint(member(avg_p.mean, i), member(swa_buffers, i), meta))
        points.complete()
    return table
