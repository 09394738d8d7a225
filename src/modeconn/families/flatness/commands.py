"""Commands of the flatness family: curvature at minima and along paths, the report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def curvature(args, cfg) -> None:
    from . import stage as flatness

    minima = [flatness.Spec.parse(s) for s in args.minimum]
    paths = [flatness.Spec.parse(s) for s in args.path]
    flatness.curvature(cfg, args.data, minima, paths, args.out, job(args, cfg))


def report_flatness(args, cfg) -> None:
    from . import report

    report.write(args.csvs, args.out_dir, cfg)


def register(command) -> None:
    p = command("curvature", curvature, "Hessian trace and extreme eigenvalues at minima and along paths (one CSV)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--minimum", action="append", default=[], metavar="FAMILY=FILE", help="a minimum's checkpoint (repeat)")
    p.add_argument("--path", action="append", default=[], metavar="FAMILY=FILE[,FILE]",
                   help="two endpoints of a linear path, or one path/simplex checkpoint (repeat)")
    p.add_argument("--out", type=Path, required=True)
    p = command("report-flatness", report_flatness, "Hessian trace and eigenvalue tables and figures (reports/flatness)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("csvs", type=Path, nargs="+")
