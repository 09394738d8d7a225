"""The seeds family: independently trained networks and the linear paths between every pair.

train      K seeds as one population → results/seeds/population<c>/seed<s>.safetensors
           (+ seed<s>.step<i>.safetensors at train.checkpoint_steps, with optimizer state)
interpolate one pair → a CSV of loss and error along α, train and test
report     every pair → barrier table, figure, DVC metrics (see report/seeds.py)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, resume, tracking
from ...config import Config
from ...core.params import combine, member, stack
from ...core.paths import alphas, linear_coefficients
from ...core.population import evaluate
from ...data import Dataset
from ...io import write_csv
from ...tables import all_path_rows
from ...train import MemberSeeds, TrainState, init_population, member_optimizer_state, train_population
from ...jobs import TRAIN_SECTIONS, Job, checkpoint_name, load_networks, data_on, evaluate_population, params_of, skeleton, split

def train(cfg: Config, seeds: list[int], data_path: Path, out_dir: Path, job: Job, family: str = "seeds") -> list[Path]:
    """Train `seeds` as one population; write one checkpoint per seed (and per checkpoint step).

    Resumable (modeconn.resume): every MODECONN_RESUME_EVERY_S seconds, at the end of an epoch, the
    population's weights, buffers and optimizer state are saved in `resume.folder(out_dir)`, where
    the step checkpoints also wait until the job completes; a rerun of a killed job continues from
    there and gives the same checkpoints, bit for bit, as an uninterrupted run (data order and
    augmentation depend only on seed and step). `family` labels the MLflow runs (e.g. the width
    sweep's seeds)."""
    device = job.setup()
    data = data_on(data_path, device)
    model, params, buffers = init_population(lambda: skeleton(cfg, data, torch.device("cpu")), seeds)
    model.to(device)
    params = {k: v.to(device) for k, v in params.items()}
    buffers = {k: v.to(device) for k, v in buffers.items()}
    member_seeds = [MemberSeeds.same(s) for s in seeds]
    x_test, y_test = split(data, "test", cfg.evaluation.max_examples)
    origin = checkpoint.Origin.of(cfg, TRAIN_SECTIONS)
    points = resume.Resume(out_dir, resume.identity(cfg, TRAIN_SECTIONS, seeds=seeds), f"seeds {seeds}")
    start = points.start_population("population", params, buffers, 0, None, device)

    def save(state: TrainState, final: bool) -> None:
        for i, seed in enumerate(seeds):
            meta = origin.meta("seed", seed=seed, seeds=member_seeds[i], **state.progress())
            ckpt = checkpoint.Checkpoint(
                member(state.params, i),
                member(state.buffers, i),
                meta,
                optimizer={} if final else member_optimizer_state(state, i),
            )
            folder = out_dir if final else points.folder  # step checkpoints wait beside the resume points
            checkpoint.save(folder / checkpoint_name(seed, None if final else state.step), ckpt)

    logged, tags = params_of(cfg, *TRAIN_SECTIONS), job.tags(family=family)
    with tracking.job(cfg.tracking, f"train seeds {seeds}", logged, {**tags, "resumed_from_step": str(start.step)}) as run:
        # One child run per network, with the job's params and tags, so each seed is found alone.
        children = [run.open_child(f"seed{s}", {**logged, "seed": s, "population": len(seeds)}, tags) for s in seeds]

        def on_epoch(epoch: int, stats: dict, state: TrainState) -> None:
            test = evaluate(model, state.params, state.buffers, x_test, y_test, cfg.evaluation.batch_size, cfg.evaluation.member_chunk)
            for i, child in enumerate(children):
                child.metrics(
                    {
                        "train_loss": stats["train_loss"][i],
                        "train_error": stats["train_error"][i],
                        "test_loss": test["loss"][i],
                        "test_error": test["error"][i],
                        "lr": state.optimizer.param_groups[0]["lr"],
                    },
                    step=epoch,
                )

        state = train_population(
            model,
            start.params,
            start.buffers,
            data.x_train,
            data.y_train,
            cfg.train,
            member_seeds,
            start_step=start.step,
            member_optimizer_states=start.optimizer_states,
            on_checkpoint=lambda s: save(s, final=False),
            on_epoch=points.population_saver("population", on_epoch),
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        for step_file in sorted(points.folder.glob("seed*.step*.safetensors")):
            resume.keep(step_file, out_dir / step_file.name)
        save(state, final=True)
        points.complete()
        for child in children:
            child.close()
    return [out_dir / checkpoint_name(s) for s in seeds]


def path_table(cfg: Config, data: Dataset, a: checkpoint.Checkpoint, b: checkpoint.Checkpoint, points: int, device: torch.device) -> pd.DataFrame:
    """Loss and error at `points` α on θ(α) = (1−α)θ_A + αθ_B, train and test, as one population.

    BatchNorm statistics are recomputed at every α when the model has BatchNorm (recorded in the
    `bn_reset` column).
    """
    model = skeleton(cfg, data, device)
    alpha = alphas(points)
    coeffs = linear_coefficients(alpha)
    params = combine(coeffs, stack([a.params, b.params]))
    buffers = combine(coeffs, stack([a.buffers, b.buffers]))
    table = evaluate_population(cfg, data, model, params, buffers)
    table.insert(0, "alpha", alpha.numpy()[table.pop("member").to_numpy()])
    table.insert(0, "seed_b", b.meta.get("seed"))
    table.insert(0, "seed_a", a.meta.get("seed"))
    return table


def interpolate(cfg: Config, data_path: Path, path_a: Path, path_b: Path, out_csv: Path, points: int, job: Job) -> pd.DataFrame:
    """One interpolation job: load two checkpoints, evaluate the path (`path_table`), write the CSV.

    Logged to MLflow from the start, so a failure is recorded as a FAILED run.
    """
    device = job.setup()
    logged = {**params_of(cfg, "evaluation"), "seeds.interpolation_points": points, "checkpoint_a": str(path_a), "checkpoint_b": str(path_b)}
    with tracking.job(cfg.tracking, f"interpolate {path_a.stem}-{path_b.stem}", logged, job.tags(family="seeds")) as run:
        data = data_on(data_path, device)
        a, b = load_networks(cfg, [path_a, path_b], device)
        table = path_table(cfg, data, a, b, points, device)
        run.params({"bn_reset": bool(table.bn_reset.iloc[0])})
        for i in range(points):
            rows = table[table.index % points == i]  # row i of each split
            run.metrics({f"{r.split}_{m}": getattr(r, m) for r in rows.itertuples() for m in ("loss", "error")}, step=i)
        # every definition, each named: the report picks one (evaluation.barrier) without rerunning this job
        for r in all_path_rows(table, ["split"]).itertuples():
            run.metrics({f"{r.split}_{r.metric}_barrier_{r.barrier_definition}": r.barrier})
        write_csv(out_csv, table, inputs=[path_a, path_b])  # refuses non-finite losses and errors, naming the inputs
        run.artifact(out_csv)
    return table
