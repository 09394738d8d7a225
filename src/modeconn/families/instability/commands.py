"""Commands of the instability family: fork the trunks at a spawn step k; the instability report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def fork(args, cfg) -> None:
    from . import stage as instability

    instability.fork(cfg, args.step, args.data, args.trunk_dirs, args.out_dir, job(args, cfg))


def report_instability(args, cfg) -> None:
    from . import report

    report.write(cfg, args.csvs, args.out_dir)


def register(command) -> None:
    p = command("instability-fork", fork, "fork every trunk at one spawn step k, train the children, evaluate their paths")
    p.add_argument("--step", required=True, help="spawn step k, e.g. 64it or 1ep")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--trunk-dirs", type=Path, nargs="+", required=True, help="population directory of each trunk, in trunk order")
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("report-instability", report_instability, "instability vs spawn step: table, figure, threshold, metrics, section")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("csvs", type=Path, nargs="+", help="paths.csv of every spawn step")
