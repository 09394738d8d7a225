"""Commands of the neb family: an AutoNEB path between two seeds, the report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def neb_connect(args, cfg) -> None:
    from . import stage as neb

    neb.connect(cfg, args.data, args.a, args.b, args.out, job(args, cfg))


def report_neb(args, cfg) -> None:
    from . import report

    report.write(args.neb, args.linear, args.out_dir, cfg.evaluation.barrier)


def register(command) -> None:
    p = command("neb-connect", neb_connect, "AutoNEB path between two seed checkpoints (Draxler et al. 2018)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--a", type=Path, required=True)
    p.add_argument("--b", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="path checkpoint (.safetensors); .csv and .json are written beside it")
    p = command("report-neb", report_neb, "NEB vs linear paths, saddle table and minimum spanning tree")
    p.add_argument("--neb", type=Path, nargs="+", required=True, help="per-pair NEB CSVs")
    p.add_argument("--linear", type=Path, nargs="+", required=True, help="per-pair linear-interpolation CSVs of the seeds family")
    p.add_argument("--out-dir", type=Path, required=True)
