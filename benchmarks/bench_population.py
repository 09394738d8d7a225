"""Benchmark: population training throughput and batched path-evaluation cost.

What is measured (all through modeconn's public functions, nothing re-implemented):

1. Training throughput of `modeconn.train.train_population` (Adam, batch 128, constant lr):
   - plain loop: K_max networks (K_max = the largest --ks) trained one after another the way a
                 researcher writes it without modeconn (nn.Module, torch.optim.Adam, batches
                 indexed from tensors resident on the device): the baseline of the speed-ups;
   - sequential: K = 1 with train_population, K_max times one after another;
   - batched:    each K in --ks (default 8 and 32) trained as one population.
   Each run trains for --warmup + --iters iterations; only the last --iters are timed (the clock
   starts in an `on_checkpoint` callback at step --warmup and stops after the call returns, with
   `torch.cuda.synchronize` on a GPU). Reported: iterations/s of the loop, members*iterations/s,
   training examples/s (= members*iterations/s * batch) and the speed-up of each row over the
   plain loop (ratio of members*iterations/s).

2. Path-evaluation cost of `modeconn.core.population.evaluate`: a 25-point linear path between two
   networks (`core.paths.alphas` + `core.paths.linear_coefficients` + `core.params.combine`)
   against a single network, on an evaluation split of --eval-examples examples (default 10,000),
   with the default evaluation batch size (2000). Reported: wall time (median of --repeats calls
   after one untimed call), time per point, and the ratio (25-point cost / 1-model cost); 25 would
   mean no gain from batching the points. The default member chunk is chosen from the device and
   the sizes (`population.members_at_once`); for reference the same 25 points are also evaluated
   all in one vmap call and with `member_chunk=1` (one point at a time, same function).

Data are synthetic random tensors of the real shapes (timing does not depend on the values):
MNIST-1D-shaped [N, 1, 40] with 10 classes for the default MLP (depth 2, width 256), or
CIFAR-shaped [N, 3, 32, 32] with --model resnet20 (meant for GPUs; very slow on a CPU).

The script only prints numbers; it asserts nothing about speed.

Run (from the repository root, with the package installed):

    python benchmarks/bench_population.py                 # defaults, a few minutes on 2 CPU cores
    python benchmarks/bench_population.py --quick         # under ~1 minute on 2 CPU cores
    python benchmarks/bench_population.py --device cuda --model resnet20
    python benchmarks/bench_population.py --help
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from modeconn.config import EvaluationConfig, ModelConfig, TrainConfig
from modeconn.core import params as P
from modeconn.core import paths, population
from modeconn.models import build_model
from modeconn.jobs import Job
from modeconn.train import MemberSeeds, init_population, train_population

NUM_CLASSES = 10


@dataclass(frozen=True)
class Setup:
    """Everything one benchmark run depends on."""

    model: ModelConfig
    input_shape: tuple[int, ...]
    train_examples: int
    eval_examples: int
    batch_size: int
    iters: int
    warmup: int
    ks: tuple[int, ...]
    points: int
    repeats: int


# Defaults per model: (input shape, training examples, evaluation examples, timed iterations, warm-up).
DEFAULTS = {
    "mlp": ((1, 40), 8000, 10_000, 500, 20),
    "resnet20": ((3, 32, 32), 5000, 10_000, 50, 5),
}
QUICK = {
    "mlp": ((1, 40), 8000, 10_000, 40, 5),
    "resnet20": ((3, 32, 32), 1000, 1000, 3, 1),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return "CPU: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU: " + (platform.processor() or platform.machine())


def synthetic(n: int, shape: tuple[int, ...], device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return x.to(device), y.to(device)


def population_on(setup: Setup, seeds: list[int], device: torch.device):
    """Skeleton module and stacked (params, buffers) of freshly initialised members, on `device`."""
    model, params, buffers = init_population(lambda: build_model(setup.model, setup.input_shape, NUM_CLASSES), seeds)
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    return model.to(device), move(params), move(buffers)


def time_training(setup: Setup, k: int, first_seed: int, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Seconds spent on the last `setup.iters` iterations of training a population of k members."""
    model, params, buffers = population_on(setup, list(range(first_seed, first_seed + k)), device)
    cfg = TrainConfig(
        optimizer="adam",
        batch_size=setup.batch_size,
        duration=f"{setup.warmup + setup.iters}it",
        checkpoint_steps=(f"{setup.warmup}it",),
    )
    start: list[float] = []

    def on_checkpoint(state) -> None:  # called before step `warmup`'s update: start the clock
        sync(device)
        start.append(time.perf_counter())

    seeds = [MemberSeeds.same(s) for s in range(first_seed, first_seed + k)]
    train_population(model, params, buffers, x, y, cfg, seeds, on_checkpoint=on_checkpoint)
    sync(device)
    return time.perf_counter() - start[0]


def time_plain_loop(setup: Setup, seed: int, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Seconds for the last `setup.iters` iterations of one network trained the way a researcher
    writes it without modeconn: an nn.Module, torch.optim.Adam, batches indexed from tensors
    resident on the device (no DataLoader), a fresh permutation each epoch."""
    torch.manual_seed(seed)
    model = build_model(setup.model, setup.input_shape, NUM_CLASSES).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=TrainConfig().lr)
    n, b = x.shape[0], setup.batch_size
    order, at, t0 = torch.randperm(n, device=device), 0, None
    for step in range(setup.warmup + setup.iters):
        if step == setup.warmup:
            sync(device)
            t0 = time.perf_counter()
        if at + b > n:
            order, at = torch.randperm(n, device=device), 0
        idx = order[at : at + b]
        at += b
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0


def bench_training(setup: Setup, device: torch.device) -> list[dict]:
    x, y = synthetic(setup.train_examples, setup.input_shape, device, seed=0)
    k_max = max(setup.ks)
    rows = []
    # Baseline: K_max networks trained one after another by a plain PyTorch loop.
    seconds = sum(time_plain_loop(setup, s, x, y, device) for s in range(k_max))
    rows.append(dict(label=f"plain PyTorch loop x{k_max}", members=k_max, seconds=seconds, loop_iters=k_max * setup.iters))
    # modeconn with one member per run, K_max runs: the population code's own per-step cost.
    seconds = sum(time_training(setup, 1, s, x, y, device) for s in range(k_max))
    rows.append(dict(label=f"K=1 x{k_max} sequential", members=k_max, seconds=seconds, loop_iters=k_max * setup.iters))
    for k in setup.ks:
        seconds = time_training(setup, k, 0, x, y, device)
        rows.append(dict(label=f"K={k} population", members=k, seconds=seconds, loop_iters=setup.iters))
    base = None
    for r in rows:
        r["it_s"] = r["loop_iters"] / r["seconds"]
        r["member_it_s"] = r["members"] * setup.iters / r["seconds"]
        r["examples_s"] = r["member_it_s"] * setup.batch_size
        base = base or r["member_it_s"]
        r["speedup"] = r["member_it_s"] / base
    return rows


def median_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # untimed warm-up call
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_path(setup: Setup, device: torch.device) -> dict:
    x, y = synthetic(setup.eval_examples, setup.input_shape, device, seed=1)
    model, anchors, anchor_buffers = population_on(setup, [0, 1], device)  # the two end networks
    batch = EvaluationConfig().batch_size

    sync(device)
    t0 = time.perf_counter()
    coefficients = paths.linear_coefficients(paths.alphas(setup.points))  # [points, 2]
    path_params = P.combine(coefficients, anchors)
    path_buffers = P.combine(coefficients, anchor_buffers)
    sync(device)
    combine_s = time.perf_counter() - t0

    one_params, one_buffers = P.select(anchors, slice(0, 1)), P.select(anchor_buffers, slice(0, 1))
    one = median_time(lambda: population.evaluate(model, one_params, one_buffers, x, y, batch), setup.repeats, device)
    many = median_time(lambda: population.evaluate(model, path_params, path_buffers, x, y, batch), setup.repeats, device)
    chunk = population.members_at_once(model, path_params, path_buffers, x, batch)
    # Reference: every point in one vmap call (what member_chunk=0 meant before it was chosen from the device).
    at_once = median_time(
        lambda: population.evaluate(model, path_params, path_buffers, x, y, batch, member_chunk=setup.points), setup.repeats, device
    )
    # Reference: the same call with member_chunk=1, i.e. the points evaluated one after another.
    one_by_one = median_time(
        lambda: population.evaluate(model, path_params, path_buffers, x, y, batch, member_chunk=1), setup.repeats, device
    )
    return dict(one=one, many=many, chunk=chunk, at_once=at_once, one_by_one=one_by_one, combine=combine_s, batch=batch)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See benchmarks/README.md.")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto = cuda if available (default)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--model", choices=sorted(DEFAULTS), default="mlp", help="mlp (depth 2, width 256; default) or resnet20")
    p.add_argument("--quick", action="store_true", help="fewer iterations and examples: under ~1 min on 2 CPU cores (mlp)")
    p.add_argument("--ks", type=int, nargs="+", help="population sizes trained as one population (default: 8 32; e.g. --ks 8 on a slow CPU)")
    p.add_argument("--iters", type=int, help="timed training iterations per run")
    p.add_argument("--warmup", type=int, help="untimed training iterations before the timed ones")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument("--train-examples", type=int, help="synthetic training examples N")
    p.add_argument("--eval-examples", type=int, help="synthetic evaluation examples (default 10000)")
    p.add_argument("--points", type=int, default=25, help="points on the linear path (default 25)")
    p.add_argument("--repeats", type=int, default=5, help="timed evaluate() calls; the median is reported (default 5)")
    p.add_argument("--skip-train", action="store_true", help="skip the training benchmark")
    p.add_argument("--skip-eval", action="store_true", help="skip the path-evaluation benchmark")
    return p.parse_args(argv)


def configure(args: argparse.Namespace) -> tuple[Setup, torch.device]:
    """The run's settings and device from the parsed options."""
    try:
        device = Job(device=args.device, threads=args.threads).setup()
    except RuntimeError as err:  # --device cuda without a GPU
        raise SystemExit(f"bench_population: {err}") from None
    shape, n_train, n_eval, iters, warmup = (QUICK if args.quick else DEFAULTS)[args.model]
    ks = args.ks or [8, 32]
    return Setup(
        model=ModelConfig(name=args.model),  # mlp: depth 2, width 256; resnet20: width x1, no norm
        input_shape=shape,
        train_examples=args.train_examples or n_train,
        eval_examples=args.eval_examples or n_eval,
        batch_size=args.batch_size,
        iters=args.iters or iters,
        warmup=warmup if args.warmup is None else args.warmup,
        ks=tuple(ks),
        points=args.points,
        repeats=args.repeats,
    ), device


def main(argv=None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    setup, device = configure(args)
    load = f" | load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__} | device {device} ({device_name(device)}) | threads {torch.get_num_threads()}"
          f" | python {platform.python_version()}{load}")
    print(f"model {setup.model.name} (depth {setup.model.depth}, width {setup.model.width}) " if setup.model.name == "mlp"
          else f"model {setup.model.name} (width x{setup.model.width_multiplier}, norm {setup.model.norm}) ", end="")
    print(f"| input {list(setup.input_shape)}, {NUM_CLASSES} classes, synthetic data"
          f"{' | --quick' if args.quick else ''}")

    if not args.skip_train:
        print(f"\nTraining (train_population, adam, batch {setup.batch_size}, N={setup.train_examples}): "
              f"{setup.iters} timed iterations per run after {setup.warmup} warm-up")
        rows = bench_training(setup, device)
        print(table(
            ["run", "wall s", "it/s", "members*it/s", "examples/s", "speed-up"],
            [[r["label"], f"{r['seconds']:.2f}", f"{r['it_s']:.1f}", f"{r['member_it_s']:.1f}",
              f"{r['examples_s']:,.0f}", f"{r['speedup']:.2f}x"] for r in rows],
        ))

    if not args.skip_eval:
        res = bench_path(setup, device)
        print(f"\nPath evaluation (population.evaluate, {setup.eval_examples} examples, batch {res['batch']}, "
              f"median of {setup.repeats}); building the {setup.points}-point path with combine: "
              f"{res['combine'] * 1e3:.1f} ms")
        cases = [("1 model", 1, res["one"]),
                 (f"{setup.points}-point path, default (chunk {res['chunk']} here)", setup.points, res["many"]),
                 (f"{setup.points}-point path, all at once", setup.points, res["at_once"]),
                 (f"{setup.points}-point path, member_chunk=1", setup.points, res["one_by_one"])]
        print(table(
            ["evaluate", "wall ms", "ms/point", "points*examples/s", "cost / 1 model"],
            [[name, f"{t * 1e3:.1f}", f"{t * 1e3 / pts:.1f}", f"{pts * setup.eval_examples / t:,.0f}", f"{t / res['one']:.2f}"]
             for name, pts, t in cases],
        ))
        print(f"ratio ({setup.points}-point cost / 1-model cost): {res['many'] / res['one']:.2f} "
              f"(no gain from batching would be ~{setup.points}; one point at a time measured "
              f"{res['one_by_one'] / res['one']:.2f})")

    load = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"\ntotal {time.perf_counter() - began:.0f} s{load}")


if __name__ == "__main__":
    main()
