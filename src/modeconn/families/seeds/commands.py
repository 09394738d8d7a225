"""Commands of the seeds family: train seeds as a population, interpolate a pair, report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def train_seeds(args, cfg) -> None:
    from . import stage as seeds

    seeds.train(cfg, args.seeds, args.data, args.out_dir, job(args, cfg))


def interpolate(args, cfg) -> None:
    from . import stage as seeds

    seeds.interpolate(cfg, args.data, args.a, args.b, args.out, cfg.seeds.interpolation_points, job(args, cfg))


def report_seeds(args, cfg) -> None:
    from . import report

    report.write(args.csvs, args.out_dir, cfg.evaluation.barrier)


def register(command) -> None:
    p = command("train-seeds", train_seeds, "train several seeds as one population")
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("interpolate", interpolate, "evaluate the linear path between two checkpoints")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--a", type=Path, required=True)
    p.add_argument("--b", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = command("report-seeds", report_seeds, "barrier table and figure over all pairs of seeds")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("csvs", type=Path, nargs="+")
