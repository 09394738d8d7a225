"""The benchmark table of benchmarks/README.md, measured in one run and printed as one Markdown table.

    python benchmarks/bench_table.py            # about 3 minutes on 2 CPU cores
    python benchmarks/bench_table.py --quick    # about 1 minute
    python benchmarks/bench_table.py --device cuda --model resnet20   # on a GPU

Rows (every ratio is of two numbers measured in this run, on this machine, under the same load):
- population training, K = 8 and K = 32 networks as one population (`train.train_population`)
  against the same number of networks trained one after another by a plain PyTorch loop
  (nn.Module, torch.optim.Adam, batches indexed from resident tensors): networks × iterations per
  second, ratio > 1 = the population is faster (bench_population.py);
- evaluating a 25-point path (`core.population.evaluate`, default member chunk) against one
  model: ratio of wall times, 25 = no gain from batching; and the same path with every point in one
  vmap call (bench_population.py);
- per-job fixed cost: a fresh process's imports for each kind of job, and with the job's MLflow run
  opened directly or through the workflow's journal; and small real jobs of each kind run as a
  fresh process and forked from the fork server of a local workflow (bench_startup.py).
It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_population as bp  # noqa: E402
import bench_startup as bs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations and repeats")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--model", choices=sorted(bp.DEFAULTS), default="mlp")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    began = time.perf_counter()
    population_args = ["--device", args.device, "--model", args.model, "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    setup, device = bp.configure(bp.parse_args(population_args))
    with contextlib.redirect_stderr(io.StringIO()):  # train_population's progress lines
        train = {r["label"]: r for r in bp.bench_training(setup, device)}
    path = bp.bench_path(setup, device)
    startup = bs.measure(2 if args.quick else 3)
    jobs = bs.served(2 if args.quick else 3)
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"
    print(f"torch {torch.__version__}, device {device} ({bp.device_name(device)}), {torch.get_num_threads()} torch threads, "
          f"Python {platform.python_version()}, 1-min load {load}; model {setup.model.name}, batch {setup.batch_size}, "
          f"{setup.iters} timed iterations, {setup.eval_examples} evaluation examples\n")
    print("| what | measured | ratio |")
    print("|---|---|---:|")
    k_max = max(setup.ks)
    loop = train[f"plain PyTorch loop x{k_max}"]["member_it_s"]
    print(f"| plain PyTorch loop, {k_max} networks one after another | {loop:,.0f} networks·it/s | 1.00 |")
    for k in setup.ks:
        row = train[f"K={k} population"]
        print(f"| K = {k} population (train_population) vs the plain loop | {row['member_it_s']:,.0f} networks·it/s | {row['member_it_s'] / loop:.2f}× |")
    one = path["one"]
    print(f"| one model's evaluation ({setup.eval_examples} examples) | {one * 1e3:.1f} ms | 1.00 |")
    print(f"| {setup.points}-point path, default member chunk ({path['chunk']} here) vs one model | {path['many'] * 1e3:.1f} ms | {path['many'] / one:.2f} |")
    print(f"| {setup.points}-point path, all points in one vmap call vs one model | {path['at_once'] * 1e3:.1f} ms | {path['at_once'] / one:.2f} |")
    for kind, (command, _, logs) in bs.KINDS.items():
        w = startup["walls"][kind]
        cells = f"{w['imports']:.2f} s imports" + (f"; + MLflow run: {w['direct']:.2f} s direct, {w['journal']:.2f} s journal" if logs else "")
        ratio = f"{w['journal'] / w['direct']:.2f} (journal / direct)" if logs else ""
        print(f"| per-job fixed cost, {kind} | {cells} | {ratio} |")
    for kind, w in jobs.items():
        print(f"| small real job, {kind}: fresh process vs forked from the fork server | {w['alone']:.2f} s vs {w['served']:.2f} s | "
              f"{w['served'] / w['alone']:.2f} (server / fresh) |")
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
