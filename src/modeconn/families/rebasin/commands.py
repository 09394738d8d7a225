"""Commands of the rebasin family: match a pair of seeds, train and sweep one width, report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def match(args, cfg) -> None:
    from . import stage as rebasin

    rebasin.match_pair(cfg, args.data, args.a, args.b, args.out_dir, job(args, cfg))


def train_width(args, cfg) -> None:
    from . import stage as rebasin

    rebasin.train_width(cfg, args.width, args.data, args.out_dir, job(args, cfg))


def sweep_width(args, cfg) -> None:
    from . import stage as rebasin

    rebasin.sweep_width(cfg, args.width, args.data, args.in_dir, args.out, job(args, cfg))


def report_rebasin(args, cfg) -> None:
    from . import report

    report.write(args.pairs, args.sweeps, args.out_dir, cfg)


def register(command) -> None:
    p = command("rebasin-match", match, "align seed B to seed A by every matching method; paths before/after, REPAIR")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--a", type=Path, required=True)
    p.add_argument("--b", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("rebasin-train-width", train_width, "train the width-sweep seeds at one width")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("rebasin-sweep-width", sweep_width, "barriers of every matching method at one width")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--in-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = command("report-rebasin", report_rebasin, "rebasin tables, figures, metrics and report section")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--pairs", type=Path, nargs="+", required=True, help="per-pair result folders of rebasin-match")
    p.add_argument("--sweeps", type=Path, nargs="*", default=[], help="per-width barrier CSVs of rebasin-sweep-width")
