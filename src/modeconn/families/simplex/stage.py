"""The simplex family's job: SPRO simplexes grown from K seeds as one population, and ESPRO.

grow  K seed checkpoints → results/simplex/seed<s>.safetensors (the stacked vertices: meta kind
      "simplex"; the simplex of size j is its first j vertices), points.csv (loss and error at
      sampled points of every simplex size, train and test) and ensemble.csv (ESPRO vs deep
      ensemble of the same seeds: test error and NLL vs number of members).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ... import checkpoint, resume, tracking
from ...config import Config
from ...core import simplex as simplex_math
from ...core.optimizers import FitState, load_optimizer_tensors, make_optimizer, optimizer_tensors
from ...core.params import require_finite, select, size, stack
from ...core.population import chunks, evaluate, forward, has_batchnorm, members_at_once, mode, recompute_bn
from ...data import Dataset
from ...io import write_csvs
from ...progress import ProgressLog
from ...schedules import iterations, steps_per_epoch
from ...train import generator
from ...jobs import Job, load_networks, bn_batches, data_on, params_of, skeleton, split

SECTIONS = ("data", "model", "evaluation", "simplex")


def _with_bn(cfg: Config, data: Dataset, model, params: dict, buffers: dict) -> dict:
    if not has_batchnorm(model):
        return buffers
    return recompute_bn(model, params, buffers, bn_batches(data, cfg.evaluation), cfg.evaluation.member_chunk)


def train_vertex(cfg: Config, data: Dataset, model, frozen: dict, buffers: dict, seeds: list[int], on_epoch=None,
                 start: FitState | None = None, on_state=None) -> dict:
    """Train one new vertex per simplex, the existing ones frozen; returns the vertices [K, V+1, ...].

    frozen {name: T[K, V, ...]}: the K simplexes' existing vertices. Per step and simplex k, one
    minibatch (its own data order) and S points w ~ Dir(1); the loss is
    Σ_k [mean_s CE(θ_k(w_s)) − λ log Vol_k] (summing over k keeps each simplex's gradient its own).

    Resuming: after every epoch `on_state` gets the FitState (the new vertices, the optimizer state,
    the positions of the Dirichlet streams); given back as `start`, training continues from that
    epoch exactly as if it had not stopped.
    """
    s = cfg.simplex
    k, v = next(iter(frozen.values())).shape[:2]
    n = data.x_train.shape[0]
    spe = steps_per_epoch(n, s.batch_size, "simplex.batch_size")
    total = iterations(s.duration, spe)
    if start is None:
        first, new = 0, {name: t.mean(1).clone().requires_grad_(True) for name, t in frozen.items()}  # centroid start
    elif start.step % spe:
        raise ValueError(f"simplex training resumes at an epoch boundary, not at step {start.step} ({spe} steps per epoch)")
    else:
        first, new = start.step, {name: start.tensors[f"new/{name}"].clone().requires_grad_(True) for name in frozen}
    opt = make_optimizer(s.optimizer, list(new.values()), s.lr, s.momentum)
    # One sampling stream per simplex (keyed by its seed), so K simplexes trained together draw
    # exactly what each would draw alone.
    gens = [generator("simplex", sd, v) for sd in seeds]
    if start is not None:
        load_optimizer_tensors(opt, start.optimizer)
        for i, g in enumerate(gens):
            g.set_state(start.generators[f"dirichlet{i}"])
    bufs = {name: b[:, 0].repeat_interleave(s.samples, 0) for name, b in buffers.items()}  # train mode: thrown away
    orders: dict[int, torch.Tensor] = {}
    sums = torch.zeros(3, dtype=torch.float64)
    model.train()
    for step in range(first, total):
        epoch, j = divmod(step, spe)
        if epoch not in orders:
            orders = {epoch: torch.stack([torch.randperm(n, generator=generator("simplex-data", sd, v, epoch)) for sd in seeds]).to(data.x_train.device)}
        idx = orders[epoch][:, j * s.batch_size : (j + 1) * s.batch_size]  # [K, B]
        xb, yb = data.x_train[idx].repeat_interleave(s.samples, 0), data.y_train[idx].repeat_interleave(s.samples, 0)
        vertices = {name: torch.cat([frozen[name], new[name].unsqueeze(1)], 1) for name in frozen}
        w = torch.stack([simplex_math.dirichlet(s.samples, v + 1, g) for g in gens]).to(data.x_train.device)
        pts = simplex_math.points(w, vertices)
        logits = forward(model, pts, {n_: b.clone() for n_, b in bufs.items()}, xb, shared_input=False)  # [K·S, B, C]
        ce = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(k, s.samples, -1).mean(-1)  # [K, S]
        log_vol = simplex_math.log_volume(simplex_math.flat_vertices(vertices, 1))  # [K]
        loss = simplex_math.spro_loss(ce, log_vol.to(ce.dtype), s.volume_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums += torch.tensor([ce.mean().item(), log_vol.mean().item(), 1.0], dtype=torch.float64)
        if (step + 1) % spe == 0:
            require_finite(f"simplex vertex {v + 1}", step + 1, "simplex.lr", sums, *new.values())
            if on_epoch is not None:
                on_epoch(v + 1, (step + 1) // spe, {"train_loss": sums[0] / sums[2], "log_volume": sums[1] / sums[2]})
            sums.zero_()
            if on_state is not None and step + 1 < total:
                on_state(FitState(step + 1, {f"new/{name}": t.detach() for name, t in new.items()}, optimizer_tensors(opt),
                                  {f"dirichlet{i}": g.get_state() for i, g in enumerate(gens)}))
    model.eval()
    return {name: torch.cat([frozen[name], new[name].detach().unsqueeze(1)], 1) for name in frozen}


@torch.no_grad()
def sampled_points(cfg: Config, data: Dataset, model, vertices: dict, buffers: dict, samples: int, key) -> tuple[dict, dict, torch.Tensor]:
    """`samples` Dir(1) points in each of the K simplexes: params/buffers [K·S, ...] and weights [K, S, V]."""
    k, v = next(iter(vertices.values())).shape[:2]
    w = simplex_math.dirichlet(samples, v, generator("simplex-eval", *key, v), lead=(k,))
    if v == 1:
        w = torch.ones(k, samples, 1, dtype=torch.float64)
    params = simplex_math.points(w, vertices)
    bufs = simplex_math.points(w, buffers)
    return params, _with_bn(cfg, data, model, params, bufs), w


@torch.no_grad()
def point_table(cfg: Config, data: Dataset, model, vertices: dict, buffers: dict, seeds: list[int]) -> pd.DataFrame:
    """Loss and error of eval_samples sampled points per simplex (size = its vertex count), train and test."""
    s = cfg.simplex
    k, v = next(iter(vertices.values())).shape[:2]
    samples = 1 if v == 1 else s.eval_samples  # a single vertex is one point
    params, buffers, _ = sampled_points(cfg, data, model, vertices, buffers, samples, ("points",))
    frames = []
    for name in ("train", "test"):
        x, y = split(data, name, cfg.evaluation.max_examples)
        res = evaluate(model, params, buffers, x, y, cfg.evaluation.batch_size, cfg.evaluation.member_chunk)
        frames.append(pd.DataFrame({
            "vertices": v, "seed": [sd for sd in seeds for _ in range(samples)], "sample": list(range(samples)) * k,
            "split": name, "loss": res["loss"].cpu().numpy(), "error": res["error"].cpu().numpy(),
            "bn_reset": has_batchnorm(model), "examples": x.shape[0],
        }))
    return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def probabilities(cfg: Config, model, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
    """Softmax outputs [P, N, C] of P stacked networks on x, in eval mode, in evaluation batches."""
    out = []
    ev = cfg.evaluation
    parts = chunks(size(params), members_at_once(model, params, buffers, x, ev.batch_size, ev.member_chunk))
    with mode(model, training=False):
        for start in range(0, x.shape[0], ev.batch_size):
            xb = x[start : start + ev.batch_size]
            out.append(torch.cat([forward(model, select(params, part), select(buffers, part), xb).softmax(-1) for part in parts], 0))
    return torch.cat(out, 1)


def ensemble_scores(probs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(error, NLL) of the ensemble that averages the probabilities probs [P, N, C]."""
    mean = probs.double().mean(0)
    nll = -torch.log(mean.gather(1, y[:, None]).clamp_min(1e-12)).mean().item()
    return (mean.argmax(1) != y).double().mean().item(), nll


@torch.no_grad()
def ensemble_table(cfg: Config, data: Dataset, model, vertices: dict, buffers: dict, seed_params: dict, seed_buffers: dict, seeds: list[int]) -> pd.DataFrame:
    """Test error and NLL vs number of members m = 1 … K: ESPRO (ensemble_samples points of each of
    the first m simplexes, probabilities averaged) and the deep ensemble of the same m seeds."""
    s = cfg.simplex
    x, y = split(data, "test", cfg.evaluation.max_examples)
    params, bufs, _ = sampled_points(cfg, data, model, vertices, buffers, s.ensemble_samples, ("ensemble",))
    espro = probabilities(cfg, model, params, bufs, x).view(len(seeds), s.ensemble_samples, x.shape[0], -1)
    deep = probabilities(cfg, model, seed_params, seed_buffers, x)
    rows = []
    v = next(iter(vertices.values())).shape[1]
    for m in range(1, len(seeds) + 1):
        for method, probs in (("espro", espro[:m].flatten(0, 1)), ("deep_ensemble", deep[:m])):
            err, nll = ensemble_scores(probs, y)
            rows.append({"members": m, "method": method, "vertices": v if method == "espro" else 1,
                         "networks": probs.shape[0], "error": err, "accuracy": 1.0 - err, "nll": nll, "examples": x.shape[0]})
    return pd.DataFrame(rows)


def grow(cfg: Config, data_path: Path, paths: list[Path], out_dir: Path, job: Job) -> pd.DataFrame:
    """SPRO from every given seed checkpoint (one population), then ESPRO; writes out_dir/*.

    Resumable (modeconn.resume): a point holds the finished vertices and, inside a vertex's
    training, its FitState; progress lines per vertex in the job's log (modeconn.progress). The
    tables are written first, so a non-finite value in them (io.write_csvs) leaves nothing written."""
    device = job.setup()
    logged = {**params_of(cfg, *SECTIONS), "checkpoints": " ".join(map(str, paths))}
    with tracking.job(cfg.tracking, f"simplex {len(paths)} seeds", logged, job.tags(family="simplex")) as run:
        data = data_on(data_path, device)
        ckpts = load_networks(cfg, paths, device)
        seeds = [c.meta.get("seed") for c in ckpts]
        model = skeleton(cfg, data, device)
        seed_params, seed_buffers = stack([c.params for c in ckpts]), stack([c.buffers for c in ckpts])
        vertices = {k: t.unsqueeze(1) for k, t in seed_params.items()}  # [K, 1, ...]
        points = resume.Resume(out_dir, resume.identity(cfg, ("data", "model", "simplex"), paths), f"simplex {seeds}")
        made = points.load_fit("simplex", device)
        fit = None
        if made is not None:  # the vertices finished so far, and where the next one's training was
            fit, saved, _ = made
            vertices = resume.ordered(resume.split(saved)["vertices"], seed_params)
        spe = steps_per_epoch(data.x_train.shape[0], cfg.simplex.batch_size, "simplex.batch_size")
        total = iterations(cfg.simplex.duration, spe)

        for size in range(next(iter(vertices.values())).shape[1] + 1, cfg.simplex.vertices + 1):
            log = ProgressLog(0 if fit is None else fit.step, total, spe, label=f"simplex vertex {size}/{cfg.simplex.vertices}")

            def on_epoch(size: int, epoch: int, stats: dict, log=log) -> None:
                run.metrics({f"v{size}_{k}": float(val) for k, val in stats.items()}, step=epoch)
                log.update(epoch * spe, {"loss": stats["train_loss"], "log volume": stats["log_volume"]})

            def finished(frozen=vertices) -> tuple[dict, dict]:
                return {f"vertices/{k}": t for k, t in frozen.items()}, {}

            vertices = train_vertex(cfg, data, model, vertices, _repeat(seed_buffers, size - 1), seeds, on_epoch, fit,
                                    points.fit_saver("simplex", extra=finished))
            fit = None
            points.save_fit("simplex", None, finished(vertices)[0])  # between vertices: a rerun starts the next one
            vol = simplex_math.volume(simplex_math.flat_vertices(vertices, 1))
            run.metrics({"log_volume_mean": vol.log().mean().item()}, step=size)
        vbuffers = _repeat(seed_buffers, cfg.simplex.vertices)
        # every size j: its first j vertices (the simplex as it was when its j-th vertex was done)
        tables = [point_table(cfg, data, model, _first(vertices, j), _first(vbuffers, j), seeds) for j in range(1, cfg.simplex.vertices + 1)]
        points_table = pd.concat(tables, ignore_index=True)
        ens = ensemble_table(cfg, data, model, vertices, vbuffers, seed_params, seed_buffers, seeds)
        write_csvs({out_dir / "points.csv": points_table, out_dir / "ensemble.csv": ens}, inputs=paths)
        _save(cfg, out_dir, vertices, vbuffers, seeds, model)
        points.complete()
        final = ens[ens.members == len(seeds)].set_index("method")
        run.metrics({f"{m}_test_error": final.loc[m, "error"] for m in final.index} | {f"{m}_test_nll": final.loc[m, "nll"] for m in final.index})
    return points_table


def _repeat(buffers: dict, count: int) -> dict:
    """Every simplex's buffers as those of its `count` vertices [K, count, ...]: the seed's, as
    vertex 0 has them (BN statistics are recomputed at any point before it is evaluated)."""
    return {k: t.unsqueeze(1).expand(t.shape[0], count, *t.shape[1:]).clone() for k, t in buffers.items()}


def _first(stacked: dict, j: int) -> dict:
    """The first j vertices [K, j, ...] of every simplex, as a contiguous tensor (as it was built)."""
    return {k: t[:, :j].contiguous() for k, t in stacked.items()}


def _save(cfg: Config, out_dir: Path, vertices: dict, buffers: dict, seeds: list[int], model) -> None:
    vol = simplex_math.volume(simplex_math.flat_vertices(vertices, 1))
    origin = checkpoint.Origin.of(cfg, SECTIONS)
    for i, seed in enumerate(seeds):
        meta = origin.meta(
            "simplex", vertices=int(next(iter(vertices.values())).shape[1]), seed=seed, method="spro", volume=float(vol[i]),
            note="vertex 0 is the trained seed; the simplex of size j is the first j vertices; BN buffers (if any) are vertex 0's and must be recomputed at any point",
        )
        params = {k: t[i] for k, t in vertices.items()}
        bufs = {k: t[i] for k, t in buffers.items()}
        checkpoint.save(out_dir / f"seed{seed}.safetensors", checkpoint.Checkpoint(params, bufs, meta))
