"""The neb family's job: an AutoNEB path between two trained seeds (Draxler et al. 2018).

connect  two seed checkpoints → results/neb/seed<a>-seed<b>.safetensors (the stacked pivots: a
         path checkpoint, meta kind "path", path "polychain"), .csv (loss and error at the dense
         points between pivots, train and test) and .json (the AutoNEB cycles).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ... import checkpoint, resume, tracking
from ...config import Config
from ...core import neb as neb_math
from ...core.params import stack
from ...core.population import evaluate, has_batchnorm, recompute_bn
from ...data import Dataset
from ...io import write_csv, write_json
from ...progress import ProgressLog
from ...schedules import steps_per_epoch
from ...train import generator
from ...jobs import Job, load_networks, bn_batches, data_on, evaluate_population, params_of, skeleton

SECTIONS = ("data", "model", "evaluation", "neb")


def cycles(cfg: Config, steps_per_epoch: int) -> list[neb_math.Cycle]:
    steps = cfg.neb.cycle_steps(steps_per_epoch)
    return [neb_math.Cycle(c["method"], int(c["insert"]), s, float(c["lr"])) for c, s in zip(cfg.neb.cycles, steps)]


def _broadcast(buffers: dict, m: int) -> dict:
    return {k: v.unsqueeze(0).expand(m, *v.shape).clone() for k, v in buffers.items()}


class NetworkSurface:
    """The callbacks AutoNEB needs for a network: minibatch loss and gradient of every pivot, and
    the loss of a population of points on a fixed subset of the training set."""

    def __init__(self, cfg: Config, data: Dataset, model: torch.nn.Module, spec: neb_math.FlatSpec, buffers: dict, key: tuple):
        self.cfg, self.data, self.model, self.spec, self.buffers, self.key = cfg, data, model, spec, buffers, key
        self.n = data.x_train.shape[0]
        self.spe = steps_per_epoch(self.n, cfg.neb.batch_size, "neb.batch_size")
        self._orders: dict[int, torch.Tensor] = {}
        self.bn = has_batchnorm(model)

    def minibatch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, j = divmod(step, self.spe)
        if epoch not in self._orders:
            self._orders = {epoch: torch.randperm(self.n, generator=generator("neb", *self.key, epoch)).to(self.data.x_train.device)}
        idx = self._orders[epoch][j * self.cfg.neb.batch_size : (j + 1) * self.cfg.neb.batch_size]
        return self.data.x_train[idx], self.data.y_train[idx]

    def grad(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = self.minibatch(step)
        self.model.train()  # the training loss, as the seeds were trained (BN: batch statistics)
        return neb_math.pivot_grads(self.model, x, self.spec, _broadcast(self.buffers, x.shape[0]), xb, yb)

    def state(self, points: torch.Tensor) -> tuple[dict, dict]:
        """Params and buffers of a population of flat points (BN statistics recomputed if any)."""
        params = neb_math.unflatten(points, self.spec)
        buffers = _broadcast(self.buffers, points.shape[0])
        if self.bn:
            buffers = recompute_bn(self.model, params, buffers, bn_batches(self.data, self.cfg.evaluation), self.cfg.evaluation.member_chunk)
        return params, buffers

    @torch.no_grad()
    def dense(self, points: torch.Tensor) -> torch.Tensor:
        n = self.cfg.neb.eval_examples
        x, y = (self.data.x_train, self.data.y_train) if n == 0 else (self.data.x_train[:n], self.data.y_train[:n])
        params, buffers = self.state(points)
        ev = self.cfg.evaluation
        return evaluate(self.model, params, buffers, x, y, ev.batch_size, ev.member_chunk)["loss"].float()


def path_table(surface: NetworkSurface, result: neb_math.NebResult, seed_a, seed_b) -> pd.DataFrame:
    """Loss and error at the dense points of the final path, on the full train and test splits."""
    points = neb_math.points_at(result.pivots, result.t)
    params, buffers = surface.state(points)
    table = evaluate_population(surface.cfg, surface.data, surface.model, params, buffers)
    m = result.pivots.shape[0]
    t = result.t.numpy()[table.pop("member").to_numpy()]
    table.insert(0, "pivot", [abs(v * (m - 1) - round(v * (m - 1))) < 1e-9 for v in t])
    table.insert(0, "t", t)
    table.insert(0, "seed_b", seed_b)
    table.insert(0, "seed_a", seed_a)
    return table


def connect(cfg: Config, data_path: Path, path_a: Path, path_b: Path, out: Path, job: Job) -> pd.DataFrame:
    """One AutoNEB job between two seeds; writes out (.safetensors), out.csv and out.json.

    Resumable (modeconn.resume: a point beside `out` after a step when due), with progress lines
    in the job's log (modeconn.progress). The path table is written first, so a non-finite value in
    it (io.write_csv) leaves nothing written."""
    device = job.setup()
    logged = {**params_of(cfg, *SECTIONS), "checkpoint_a": str(path_a), "checkpoint_b": str(path_b)}
    with tracking.job(cfg.tracking, f"neb {path_a.stem}-{path_b.stem}", logged, job.tags(family="neb")) as run:
        data = data_on(data_path, device)
        a, b = load_networks(cfg, [path_a, path_b], device)
        seed_a, seed_b = a.meta.get("seed"), b.meta.get("seed")
        model = skeleton(cfg, data, device)
        x, spec = neb_math.flatten_members(stack([a.params, b.params]))
        surface = NetworkSurface(cfg, data, model, spec, a.buffers, (seed_a, seed_b))
        plan = cycles(cfg, surface.spe)
        points = resume.Resume(out, resume.identity(cfg, SECTIONS, [path_a, path_b]), f"AutoNEB {path_a.stem}-{path_b.stem}")
        made = points.load_fit("neb", device)
        start = made[0] if made is not None else None
        log = ProgressLog(0 if start is None else start.step, sum(c.steps for c in plan), label="AutoNEB")

        def on_step(step: int, energy: torch.Tensor) -> None:
            if step % 10 == 0:
                run.metrics({"pivot_loss_max": energy.max().item(), "pivot_loss_mean": energy.mean().item(), "pivots": energy.numel()}, step=step)
            log.update(step + 1, {"pivot loss max": energy.max(), "pivots": energy.numel()})

        spring = None if cfg.neb.redistribute else cfg.neb.spring
        result = neb_math.autoneb(x[0], x[1], plan, surface.grad, surface.dense, cfg.neb.dense_points,
                                  spring, cfg.neb.optimizer, cfg.neb.momentum, on_step, start, points.fit_saver("neb"))
        for h in result.history:
            run.metrics({"cycle_saddle_loss": h["saddle"], "cycle_pivots": h["pivots"]}, step=h["cycle"])
        table = path_table(surface, result, seed_a, seed_b)
        _save(cfg, out, surface, result, seed_a, seed_b, table, [path_a, path_b])
        points.complete()
        for split, rows in table.groupby("split"):
            run.metrics({f"{split}_saddle_loss": rows.loss.max(), f"{split}_saddle_error": rows.error.max()})
        run.artifact(out.with_suffix(".csv"))
    return table


def _save(cfg: Config, out: Path, surface: NetworkSurface, result: neb_math.NebResult, seed_a, seed_b, table: pd.DataFrame, inputs: list[Path]) -> None:
    write_csv(out.with_suffix(".csv"), table, inputs=inputs)  # first: a non-finite table stops the job before any output
    params, buffers = surface.state(result.pivots)
    train = table[table.split == "train"]
    meta = checkpoint.Origin.of(cfg, SECTIONS).meta(
        "path", path="polychain", anchors=int(result.pivots.shape[0]), seeds=[seed_a, seed_b], method="autoneb",
        saddle_train_loss=float(train.loss.max()), saddle_t=float(train.t.iloc[int(train.loss.to_numpy().argmax())]),
        cycles=result.history, bn_reset=surface.bn,
    )
    checkpoint.save(out, checkpoint.Checkpoint(params, buffers, meta))
    write_json(out.with_suffix(".json"), {"seed_a": seed_a, "seed_b": seed_b, "cycles": result.history})
