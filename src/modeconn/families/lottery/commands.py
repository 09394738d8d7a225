"""Commands of the lottery family: one level of IMP with rewinding and its baselines; the report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def lottery_level(args, cfg) -> None:
    from . import stage as lottery

    lottery.level(cfg, args.level, args.data, args.seed_dirs, args.previous, args.out_dir, job(args, cfg))


def report_lottery(args, cfg) -> None:
    from . import report

    report.write(cfg, args.level_dirs, args.out_dir)


def register(command) -> None:
    p = command("lottery-level", lottery_level, "one level of iterative magnitude pruning with rewinding, baselines and stability")
    p.add_argument("--level", type=int, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seed-dirs", type=Path, nargs="+", required=True, help="population directory of each lottery seed, in seed order")
    p.add_argument("--previous", type=Path, help="directory of level l-1 (levels >= 2)")
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("report-lottery", report_lottery, "accuracy and instability vs sparsity for IMP and the baselines")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("level_dirs", type=Path, nargs="+", help="results directory of every level")
