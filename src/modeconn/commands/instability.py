"""Commands of the instability family: fork trunks at a spawn step; one IMP level; the two reports."""

from __future__ import annotations

from pathlib import Path

from . import job


def fork(args, cfg) -> None:
    from ..stages import instability

    instability.fork(cfg, args.step, args.data, args.trunk_dirs, args.out_dir, job(args, cfg))


def report_instability(args, cfg) -> None:
    from ..report import instability as report

    report.write(cfg, args.csvs, args.out_dir)


def lottery_level(args, cfg) -> None:
    from ..stages import lottery

    lottery.level(cfg, args.level, args.data, args.seed_dirs, args.previous, args.out_dir, job(args, cfg))


def report_lottery(args, cfg) -> None:
    from ..report import lottery as report

    report.write(cfg, args.level_dirs, args.out_dir)


def register(command) -> None:
    p = command("instability-fork", fork, "fork every trunk at one spawn step k, train the children, evaluate their paths")
    p.add_argument("--step", required=True, help="spawn step k, e.g. 64it or 1ep")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--trunk-dirs", type=Path, nargs="+", required=True, help="population directory of each trunk, in trunk order")
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("report-instability", report_instability, "instability vs spawn step: table, figure, threshold, metrics, section")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("csvs", type=Path, nargs="+", help="paths.csv of every spawn step")
    p = command("lottery-level", lottery_level, "one level of iterative magnitude pruning with rewinding, baselines and stability")
    p.add_argument("--level", type=int, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seed-dirs", type=Path, nargs="+", required=True, help="population directory of each lottery seed, in seed order")
    p.add_argument("--previous", type=Path, help="directory of level l-1 (levels >= 2)")
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("report-lottery", report_lottery, "accuracy and instability vs sparsity for IMP and the baselines")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("level_dirs", type=Path, nargs="+", help="results directory of every level")
