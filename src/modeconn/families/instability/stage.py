"""The instability family's job: fork every trunk at one spawn step k and measure the barrier.

fork   trunks' step-k checkpoints (results/seeds/population*/seed<s>.step<k>.safetensors, with
       optimizer state) → trunks × pairs × 2 children trained to the end of the seeds' schedule
       as ONE population → results/instability/k<k>/trunk<s>.pair<p>.child<c>.safetensors
       (meta kind "fork") and paths.csv: loss and error at `instability.points` α along the
       linear path between the two children of every pair, train and test.

Frankle et al. 2020, Sec. 3: children share the step-k weights and optimizer state and differ
only in the data-order and augmentation seeds, so the barrier between them measures the effect of
SGD noise alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, resume, tracking
from ...config import Config
from ...core import barrier as barrier_math
from ...core.instability import fork_seed, pair_paths
from ...core.params import member, stack
from ...core.paths import alphas
from ...data import Dataset
from ...io import write_csv
from ...tables import path_rows
from ...schedules import iterations, steps_per_epoch
from ...train import MemberSeeds, TrainState, train_population
from ...jobs import TRAIN_SECTIONS, Job, checkpoint_name, data_on, evaluate_population, params_of, skeleton

SECTIONS = ("data", "model", "train", "evaluation", "instability")
# what the children's training depends on (a resume point made under other values is not used)
TRAINING = ("data", "model", "train", "instability")


@dataclass(frozen=True)
class Child:
    """One child: the trunk it forks from, its pair and its index in the pair, its seeds."""

    trunk: int
    pair: int
    child: int
    seeds: MemberSeeds

    @property
    def name(self) -> str:
        return f"trunk{self.trunk}.pair{self.pair}.child{self.child}"


def trunk_seeds(cfg: Config) -> list[int]:
    """The trunks: the first `instability.trunks` seeds of the seeds family."""
    seeds = cfg.seeds.seeds
    if cfg.instability.trunks > len(seeds):
        raise ValueError(f"instability.trunks = {cfg.instability.trunks} but only {len(seeds)} seeds are trained (seeds.count)")
    return seeds[: cfg.instability.trunks]


def children_of(trunk: int, pairs: int) -> list[Child]:
    """The 2·pairs children of one trunk; init seed = the trunk's, data and augment = the fork seed."""
    return [
        Child(trunk, p, c, MemberSeeds(init=trunk, data=fork_seed(trunk, p, c), augment=fork_seed(trunk, p, c)))
        for p in range(pairs)
        for c in (0, 1)
    ]


def load_spawn(path: Path, step: int, device: torch.device) -> checkpoint.Checkpoint:
    """A seed's checkpoint at `step`; ValueError if it was saved at another step."""
    ckpt = checkpoint.load(path, device)
    if ckpt.meta.get("step") != step:
        raise ValueError(f"{path}: checkpoint of step {ckpt.meta.get('step')}, expected step {step}")
    return ckpt


def train_children(cfg: Config, data: Dataset, model: torch.nn.Module, spawns: list[checkpoint.Checkpoint], seeds: list[MemberSeeds], step: int, masks=None,
                   on_epoch=None, points: resume.Resume | None = None, part: str = "children") -> TrainState:
    """Train one child per (spawn checkpoint, seeds) from `step` to the end of the seeds' schedule, as one population.

    With `points`, the population starts from its resume point `part` if there is one and keeps
    one while it trains (modeconn.resume)."""
    params = stack([s.params for s in spawns])
    buffers = stack([s.buffers for s in spawns])
    optimizer_states = [s.optimizer for s in spawns]
    schedule = dataclasses.replace(cfg.train, checkpoint_steps=())
    if points is not None:
        start = points.start_population(part, params, buffers, step, optimizer_states, data.x_train.device)
        params, buffers, step, optimizer_states = start.params, start.buffers, start.step, start.optimizer_states
        on_epoch = points.population_saver(part, on_epoch)
    return train_population(
        model, params, buffers, data.x_train, data.y_train, schedule, seeds,
        start_step=step, member_optimizer_states=optimizer_states, on_epoch=on_epoch, masks=masks,
    )


def pair_table(cfg: Config, data: Dataset, model: torch.nn.Module, state: TrainState, pairs: list[tuple[int, int]], points: int) -> pd.DataFrame:
    """Loss and error along the linear path between members a and b of `state`, for each (a, b).

    All P·N points are evaluated as one population (BN statistics recomputed where present).
    Columns: pair_index, alpha, split, loss, error, bn_reset, examples.
    """
    alpha = alphas(points)
    params = pair_paths({k: v.detach() for k, v in state.params.items()}, pairs, alpha)
    buffers = pair_paths(state.buffers, pairs, alpha)
    table = evaluate_population(cfg, data, model, params, buffers)
    index = table.pop("member").to_numpy()
    table.insert(0, "alpha", alpha.numpy()[index % points])
    table.insert(0, "pair_index", index // points)
    return table


def epoch_logger(children: list, every: int):
    """on_epoch callback: the members' training loss and error to their child runs, every `every` epochs."""

    def log(epoch: int, stats: dict, state: TrainState) -> None:
        if epoch % every and state.step != state.total_steps:
            return
        for i, child in enumerate(children):
            child.metrics({"train_loss": stats["train_loss"][i], "train_error": stats["train_error"][i]}, step=epoch)

    return log


def fork(cfg: Config, spawn_step: str, data_path: Path, trunk_dirs: list[Path], out_dir: Path, job: Job) -> pd.DataFrame:
    """One job: fork every trunk at `spawn_step`, train the children (resumable: modeconn.resume),
    evaluate every pair's path. The path table is written before the children, so a non-finite
    value in it (io.write_csv) leaves nothing written."""
    device = job.setup()
    trunks = trunk_seeds(cfg)
    if len(trunk_dirs) != len(trunks):
        raise ValueError(f"{len(trunk_dirs)} trunk directories for trunks {trunks}")
    logged = {**params_of(cfg, *SECTIONS), "spawn_step": spawn_step}
    with tracking.job(cfg.tracking, f"fork at {spawn_step}", logged, job.tags(family="instability")) as run:
        data = data_on(data_path, device)
        spe = steps_per_epoch(data.x_train.shape[0], cfg.train.batch_size, "train.batch_size")
        k = iterations(spawn_step, spe)
        model = skeleton(cfg, data, device)
        children, spawns = [], []
        spawn_files = [Path(directory) / checkpoint_name(trunk, k) for trunk, directory in zip(trunks, trunk_dirs)]
        for trunk, path in zip(trunks, spawn_files):
            spawn = load_spawn(path, k, device)
            for child in children_of(trunk, cfg.instability.pairs):
                children.append(child)
                spawns.append(spawn)
        points = resume.Resume(out_dir, resume.identity(cfg, TRAINING, spawn_files, spawn_step=k), f"instability fork at {spawn_step}")
        runs = [run.open_child(c.name, {**logged, "trunk": c.trunk, "pair": c.pair, "child": c.child, "data_seed": c.seeds.data}, job.tags(family="instability")) for c in children]
        epochs = max(1, iterations(cfg.train.duration, spe) // spe // 10)
        state = train_children(cfg, data, model, spawns, [c.seeds for c in children], k, on_epoch=epoch_logger(runs, epochs), points=points)
        pairs = [(i, i + 1) for i in range(0, len(children), 2)]
        table = pair_table(cfg, data, model, state, pairs, cfg.instability.points)
        first = [children[a] for a, _ in pairs]
        table.insert(0, "pair", [first[i].pair for i in table.pair_index])
        table.insert(0, "trunk", [first[i].trunk for i in table.pair_index])
        table.insert(0, "k", k)
        table.insert(0, "k_label", spawn_step)
        table = table.drop(columns="pair_index")
        log_barriers(run, table)
        for r in runs:
            r.close()
        write_csv(out_dir / "paths.csv", table, inputs=spawn_files)
        save_children(cfg, out_dir, children, state, k)
        points.complete()
        run.artifact(out_dir / "paths.csv")
    return table


def save_children(cfg: Config, out_dir: Path, children: list[Child], state: TrainState, spawn_step: int) -> None:
    origin = checkpoint.Origin.of(cfg, TRAIN_SECTIONS)
    for i, c in enumerate(children):
        meta = origin.meta("fork", trunk=c.trunk, pair=c.pair, child=c.child, spawn_step=spawn_step, seeds=c.seeds, **state.progress())
        params = {k: v.detach() for k, v in member(state.params, i).items()}
        checkpoint.save(out_dir / f"{c.name}.safetensors", checkpoint.Checkpoint(params, member(state.buffers, i), meta))


def barriers(table: pd.DataFrame, keys: list[str], kind: str = barrier_math.MAX_MINUS_MEAN) -> pd.DataFrame:
    """Barrier (definition `kind`) of loss and error per path (grouped by `keys` + split), with the
    endpoints' mean: one row per path, columns keys…, split, loss_barrier, loss_endpoints,
    error_barrier, error_endpoints, points, bn_reset, barrier_definition (tables.path_rows, side by side)."""
    rows = path_rows(table, [*keys, "split"], kind)
    wide = []
    for group, path in rows.groupby([*keys, "split"], sort=False):
        row = dict(zip([*keys, "split"], group))
        for r in path.itertuples():
            row[f"{r.metric}_barrier"], row[f"{r.metric}_endpoints"] = r.barrier, r.endpoint_mean
        wide.append({**row, "points": int(path.points.iloc[0]), "bn_reset": bool(path.bn_reset.iloc[0]), "barrier_definition": kind})
    return pd.DataFrame(wide)


def log_barriers(run, table: pd.DataFrame) -> None:
    """Loss and error barrier of every (trunk, pair, split) path under every definition, each named,
    so that the reports choose one (evaluation.barrier) without rerunning the job."""
    for kind in barrier_math.KINDS:
        for r in barriers(table, ["trunk", "pair"], kind).itertuples():
            name = f"trunk{r.trunk}.pair{r.pair}.{r.split}"
            run.metrics({f"{name}_error_barrier_{kind}": r.error_barrier, f"{name}_loss_barrier_{kind}": r.loss_barrier})
