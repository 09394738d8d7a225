"""Commands of the simplex family: grow SPRO simplexes and ESPRO ensembles, the report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def simplex_grow(args, cfg) -> None:
    from . import stage as simplex

    simplex.grow(cfg, args.data, args.seeds, args.out_dir, job(args, cfg))


def report_simplex(args, cfg) -> None:
    from . import report

    report.write(args.points, args.ensemble, args.out_dir, cfg.simplex)


def register(command) -> None:
    p = command("simplex-grow", simplex_grow, "SPRO simplexes from seed checkpoints (one population) and ESPRO (Benton et al. 2021)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seeds", type=Path, nargs="+", required=True, help="seed checkpoints, one simplex each")
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("report-simplex", report_simplex, "simplex loss/accuracy per size and ESPRO vs deep ensemble")
    p.add_argument("--points", type=Path, required=True)
    p.add_argument("--ensemble", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
