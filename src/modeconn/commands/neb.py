"""Commands of the neb family: AutoNEB paths between seeds, SPRO/ESPRO simplexes, their reports."""

from __future__ import annotations

from pathlib import Path

from . import job


def neb_connect(args, cfg) -> None:
    from ..stages import neb

    neb.connect(cfg, args.data, args.a, args.b, args.out, job(args, cfg))


def report_neb(args, cfg) -> None:
    from ..report import neb as report

    report.write(args.neb, args.linear, args.out_dir)


def simplex_grow(args, cfg) -> None:
    from ..stages import simplex

    simplex.grow(cfg, args.data, args.seeds, args.out_dir, job(args, cfg))


def report_simplex(args, cfg) -> None:
    from ..report import simplex as report

    report.write(args.points, args.ensemble, args.out_dir, cfg.simplex)


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
    p = command("simplex-grow", simplex_grow, "SPRO simplexes from seed checkpoints (one population) and ESPRO (Benton et al. 2021)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seeds", type=Path, nargs="+", required=True, help="seed checkpoints, one simplex each")
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("report-simplex", report_simplex, "simplex loss/accuracy per size and ESPRO vs deep ensemble")
    p.add_argument("--points", type=Path, required=True)
    p.add_argument("--ensemble", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
