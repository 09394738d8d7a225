"""The lottery family's job: one level of iterative magnitude pruning with rewinding.

level l   for every lottery seed s: prune the level l−1 ticket (level 1: the trained dense seed)
          by magnitude (core.pruning), rewind the survivors to step k = lottery.rewind_step of the
          seed's training (weights and optimizer state of seed<s>.step<k>.safetensors) and train
          to the end of the seeds' schedule with the mask held fixed. Beside the IMP ticket, in the
          same population:
            random_prune  the rewound weights under a random mask of the same layer-wise sparsity
            reinit        a fresh random initialisation under the IMP mask, with a fresh (empty)
                          optimizer state, as a freshly initialised network has
            fork          a second copy of the IMP ticket trained with another data-order and
                          augmentation seed; the error barrier between it and the IMP ticket is the
                          ticket's instability (Frankle et al. 2020, Sec. 5: two copies of the
                          rewound subnetwork under different SGD noise; the IMP ticket itself is the
                          first copy, which saves a fifth member per seed)
          → results/lottery/level<l>/seed<s>.<variant>.safetensors (meta kind "ticket"),
            seed<s>.<imp|random_prune>.mask.safetensors (meta kind "mask"), accuracy.csv
            (every member and the dense seed, train and test) and stability.csv (the paths between
            the IMP ticket and its fork).

The IMP ticket, random_prune and the fork start at step k with the seed's step-k optimizer state,
masked (train.py), so they differ only in their weights and masks (and the fork in its SGD noise).
The reinit baseline owes nothing to the dense network's training: its optimizer state is fresh (no
momentum, Adam step 0), and it trains from step k to the end of the same schedule as the ticket
(open_lth's randomly_reinitialize branch does the same: a fresh optimizer, started at the rewind
step). At k = 0 every member's state is empty and all train as one population; at a later k the
reinit members' fresh state cannot share an optimizer with the rewound members' (one Adam step
count per stacked tensor), so the members train as two populations (train.optimizer_cohorts).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, resume, tracking
from ...config import Config
from ...core import pruning
from ...core.instability import fork_seed
from ...core.params import member, stack
from ...io import write_csvs
from ...models import model_info
from ...schedules import iterations, steps_per_epoch
from ...train import MemberSeeds, TrainState, generator, init_population, merge_states, optimizer_cohorts
from ...jobs import TRAIN_SECTIONS, Job, checkpoint_name, data_on, evaluate_population, params_of, skeleton
from ..instability.stage import epoch_logger, load_spawn, log_barriers, pair_table, train_children

SECTIONS = ("data", "model", "train", "evaluation", "lottery")
VARIANTS = ("imp", "random_prune", "reinit", "fork")
# what the level's training depends on (a resume point made under other values is not used)
TRAINING = ("data", "model", "train", "lottery")


def lottery_seeds(cfg: Config) -> list[int]:
    """The dense networks pruned: the first `lottery.seeds` seeds of the seeds family."""
    seeds = cfg.seeds.seeds
    if cfg.lottery.seeds > len(seeds):
        raise ValueError(f"lottery.seeds = {cfg.lottery.seeds} but only {len(seeds)} seeds are trained (seeds.count)")
    return seeds[: cfg.lottery.seeds]


def reinit_seed(seed: int, level: int) -> int:
    """Init seed of the random-reinitialisation baseline of `seed` at `level` (a fresh draw per level)."""
    return int(generator("reinit", seed, level).initial_seed() % 2**31)


def mask_file(seed: int, variant: str) -> str:
    return f"seed{seed}.{'random_prune' if variant == 'random_prune' else 'imp'}.mask.safetensors"


def previous(cfg: Config, seed: int, level: int, dense: checkpoint.Checkpoint, prev_dir: Path | None, prunable: tuple[str, ...], device) -> tuple[dict, dict]:
    """(weights to rank, current mask) for pruning `seed` at `level`: the dense net at level 1, else level l−1's IMP ticket."""
    if level == 1:
        return dense.params, pruning.ones_mask(dense.params, prunable)
    if prev_dir is None:
        raise ValueError(f"level {level} needs the directory of level {level - 1}")
    ticket = checkpoint.load(Path(prev_dir) / f"seed{seed}.imp.safetensors", device)
    mask = checkpoint.load(Path(prev_dir) / mask_file(seed, "imp"), device).params
    pruning.check_mask(mask, ticket.params)
    return ticket.params, mask


def level_members(cfg: Config, seed: int, level: int, dense, rewind, source, prev_mask, model, build, output: str):
    """The four members of one seed at one level: (variant, start checkpoint, mask, MemberSeeds)."""
    lot = cfg.lottery
    mask = pruning.magnitude_prune(source, prev_mask, lot.fraction, output, lot.output_fraction, lot.rule)
    random_mask = pruning.random_like(mask, generator("lottery-random", seed, level))
    _, fresh, fresh_buffers = init_population(build, [reinit_seed(seed, level)])
    device = next(iter(rewind.params.values())).device
    # in the checkpoint's tensor order: a population stacks members with identically ordered dicts
    fresh = {k: fresh[k][0].to(device) for k in rewind.params}
    fresh_buffers = {k: fresh_buffers[k][0].to(device) for k in rewind.buffers}

    def start(params, buffers, m, optimizer):
        return checkpoint.Checkpoint(pruning.apply(params, m), buffers, {}, optimizer), m

    own = MemberSeeds.same(seed)
    fork = MemberSeeds(init=seed, data=fork_seed(seed, 0, 0), augment=fork_seed(seed, 0, 0))
    return [
        ("imp", *start(rewind.params, rewind.buffers, mask, rewind.optimizer), own),
        ("random_prune", *start(rewind.params, rewind.buffers, random_mask, rewind.optimizer), own),
        # a fresh network's optimizer state: empty (see the module docstring)
        ("reinit", *start(fresh, fresh_buffers, mask, {}), MemberSeeds(init=reinit_seed(seed, level), data=seed, augment=seed)),
        ("fork", *start(rewind.params, rewind.buffers, mask, rewind.optimizer), fork),
    ]


def level(cfg: Config, level_index: int, data_path: Path, seed_dirs: list[Path], prev_dir: Path | None, out_dir: Path, job: Job) -> pd.DataFrame:
    """One IMP level for every lottery seed, trained as one population per optimizer history (see
    the module docstring); resumable (modeconn.resume). The tables are written first, so a
    non-finite value in them (io.write_csvs) leaves nothing written."""
    device = job.setup()
    seeds = lottery_seeds(cfg)
    if len(seed_dirs) != len(seeds):
        raise ValueError(f"{len(seed_dirs)} seed directories for lottery seeds {seeds}")
    logged = {**params_of(cfg, *SECTIONS), "instability.points": cfg.instability.points, "level": level_index}
    tags = job.tags(family="lottery")
    with tracking.job(cfg.tracking, f"lottery level {level_index}", logged, tags) as run:
        data = data_on(data_path, device)
        spe = steps_per_epoch(data.x_train.shape[0], cfg.train.batch_size, "train.batch_size")
        k = iterations(cfg.lottery.rewind_step, spe)
        model = skeleton(cfg, data, device)
        info = model_info(model)
        output = f"{info.output_layer}.weight"
        members, denses, inputs = [], [], []
        for seed, directory in zip(seeds, seed_dirs):
            dense_path, rewind_path = Path(directory) / checkpoint_name(seed), Path(directory) / checkpoint_name(seed, k)
            dense = checkpoint.load(dense_path, device)
            rewind = load_spawn(rewind_path, k, device)
            source, prev_mask = previous(cfg, seed, level_index, dense, prev_dir, info.prunable, device)
            build = lambda: skeleton(cfg, data, torch.device("cpu"))  # noqa: E731
            members += [(seed, *m) for m in level_members(cfg, seed, level_index, dense, rewind, source, prev_mask, model, build, output)]
            denses.append(dense)
            inputs += [dense_path, rewind_path]
            if level_index > 1:
                inputs += [Path(prev_dir) / f"seed{seed}.imp.safetensors", Path(prev_dir) / mask_file(seed, "imp")]
        points = resume.Resume(out_dir, resume.identity(cfg, TRAINING, inputs, level=level_index), f"lottery level {level_index}")
        runs = [run.open_child(f"seed{s}.{v}", {**logged, "seed": s, "variant": v}, tags) for s, v, *_ in members]
        every = max(1, iterations(cfg.train.duration, spe) // spe // 10)
        state = train_members(cfg, data, model, members, k, runs, every, points)
        accuracy = accuracy_table(cfg, data, model, members, state, denses, seeds, level_index)
        for r in runs:
            r.close()
        stability = stability_table(cfg, data, model, members, state, level_index)
        run.metrics({f"seed{r.seed}.{r.variant}.test_error": r.error for r in accuracy[accuracy.split == "test"].itertuples()})
        log_barriers(run, stability.rename(columns={"seed": "trunk"}).assign(pair=0))
        write_csvs({out_dir / "accuracy.csv": accuracy, out_dir / "stability.csv": stability}, inputs=inputs)
        save_tickets(cfg, out_dir, members, state, level_index, k)
        points.complete()
        run.artifact(out_dir / "accuracy.csv")
    return accuracy


def train_members(cfg: Config, data, model, members, k: int, runs: list, every: int, points: resume.Resume | None = None) -> TrainState:
    """Train every member (seed, variant, start checkpoint, mask, MemberSeeds) from step k under its
    mask; members with different optimizer histories (the reinit baseline's fresh state beside the
    rewound step-k state, k > 0) train as separate populations, merged back into member order.

    With `points` each cohort resumes from and keeps its resume point, and a finished cohort is
    saved as one (at its last step), so that a rerun skips it and trains only what was left."""
    starts = [start for _, _, start, _, _ in members]
    cohorts = optimizer_cohorts([start.optimizer for start in starts])
    states = []
    for c, cohort in enumerate(cohorts):
        state = train_children(cfg, data, model, [starts[i] for i in cohort], [members[i][4] for i in cohort], k,
                               masks=pruning.stacked_masks([members[i][3] for i in cohort]), on_epoch=epoch_logger([runs[i] for i in cohort], every),
                               points=points, part=f"cohort{c}")
        if points is not None:
            points.save_population(f"cohort{c}", state)
        states.append(state)
    return merge_states(states, cohorts)


def accuracy_table(cfg, data, model, members, state: TrainState, denses, seeds, level_index: int) -> pd.DataFrame:
    """Loss and error of every trained member and of the dense seeds (level 0), train and test."""
    params = {n: torch.cat([v.detach(), stack([d.params for d in denses])[n]]) for n, v in state.params.items()}
    buffers = {n: torch.cat([v, stack([d.buffers for d in denses])[n]]) for n, v in state.buffers.items()}
    table = evaluate_population(cfg, data, model, params, buffers)
    labels = [(s, v, pruning.remaining(m), pruning.total(m)) for s, v, _, m, _ in members]
    dense_total = pruning.total(members[0][3])
    labels += [(s, "dense", dense_total, dense_total) for s in seeds]
    index = table.pop("member").to_numpy()
    table.insert(0, "total", [labels[i][3] for i in index])
    table.insert(0, "remaining", [labels[i][2] for i in index])
    table.insert(0, "variant", [labels[i][1] for i in index])
    table.insert(0, "seed", [labels[i][0] for i in index])
    table.insert(0, "level", [0 if labels[i][1] == "dense" else level_index for i in index])
    table.insert(5, "density", table.remaining / table.total)
    return table


def stability_table(cfg, data, model, members, state: TrainState, level_index: int) -> pd.DataFrame:
    """Loss and error along the path between every seed's IMP ticket and its fork copy."""
    where = {(s, v): i for i, (s, v, *_rest) in enumerate(members)}
    seeds = sorted({s for s, *_rest in members})
    pairs = [(where[(s, "imp")], where[(s, "fork")]) for s in seeds]
    table = pair_table(cfg, data, model, state, pairs, cfg.instability.points)
    density = {s: pruning.density(members[where[(s, "imp")]][3]) for s in seeds}
    table.insert(0, "density", [density[seeds[i]] for i in table.pair_index])
    table.insert(0, "seed", [seeds[i] for i in table.pair_index])
    table.insert(0, "level", level_index)
    return table.drop(columns="pair_index")


def save_tickets(cfg: Config, out_dir: Path, members, state: TrainState, level_index: int, rewind: int) -> None:
    origin = checkpoint.Origin.of(cfg, TRAIN_SECTIONS)
    for i, (seed, variant, _, mask, seeds) in enumerate(members):
        meta = origin.meta(
            "ticket", variant=variant, seed=seed, level=level_index, rewind_step=rewind, remaining=pruning.remaining(mask),
            prunable=pruning.total(mask), density=pruning.density(mask), layer_density=pruning.layer_density(mask),
            mask_file=mask_file(seed, variant), seeds=seeds, **state.progress(),
        )
        params = {k: v.detach() for k, v in member(state.params, i).items()}
        checkpoint.save(out_dir / f"seed{seed}.{variant}.safetensors", checkpoint.Checkpoint(params, member(state.buffers, i), meta))
        if variant in ("imp", "random_prune"):
            mask_meta = origin.meta("mask", record_config=False, variant=variant, seed=seed, level=level_index,
                                    remaining=pruning.remaining(mask), density=pruning.density(mask))
            checkpoint.save(out_dir / mask_file(seed, variant), checkpoint.Checkpoint(mask, {}, mask_meta))
