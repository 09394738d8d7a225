"""Commands of the fge family: FGE and SWA from the seeds' checkpoints, the report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def run_fge(args, cfg) -> None:
    from . import stage as fge

    fge.fge(cfg, args.data, args.seeds, args.seed_dirs, args.out_dir, args.out, job(args, cfg))


def run_swa(args, cfg) -> None:
    from . import stage as fge

    fge.swa(cfg, args.data, args.seeds, args.seed_dirs, args.out_dir, args.out, job(args, cfg))


def report_fge(args, cfg) -> None:
    from . import report

    report.write(args.fge, args.swa, args.out_dir, cfg)


def _seeds(p) -> None:
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--seed-dirs", type=Path, nargs="+", required=True, help="each seed's population directory (same order as --seeds)")
    p.add_argument("--out-dir", type=Path, required=True, help="where the checkpoints go")
    p.add_argument("--out", type=Path, required=True, help="the CSV of results")


def register(command) -> None:
    p = command("fge", run_fge, "fast geometric ensembling from every seed's checkpoint at fge.start")
    _seeds(p)
    p = command("swa", run_swa, "stochastic weight averaging from every seed's checkpoint at swa.start")
    _seeds(p)
    p = command("report-fge", report_fge, "FGE ensemble table at equal budget, SWA vs SGD, figures")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--fge", type=Path, required=True)
    p.add_argument("--swa", type=Path, required=True)
