"""Commands of the flatness family: curvature at minima and along paths, loss landscapes, their
reports, and the consolidated reports/README.md."""

from __future__ import annotations

from pathlib import Path

from . import job


def curvature(args, cfg) -> None:
    from ..stages import flatness

    minima = [flatness.Spec.parse(s) for s in args.minimum]
    paths = [flatness.Spec.parse(s) for s in args.path]
    flatness.curvature(cfg, args.data, minima, paths, args.out, job(args, cfg))


def report_flatness(args, cfg) -> None:
    from ..report import flatness as report

    report.write(args.csvs, args.out_dir, cfg)


def landscape_directions(args, cfg) -> None:
    from ..stages import landscape

    landscape.make_directions(cfg, args.center, args.out, job(args, cfg))


def landscape_around(args, cfg) -> None:
    from ..stages import landscape

    landscape.around(cfg, args.data, args.center, args.directions, args.dims, args.out, job(args, cfg))


def landscape_between(args, cfg) -> None:
    from ..stages import landscape

    landscape.between(cfg, args.data, args.a, args.b, args.out, job(args, cfg))


def report_landscape(args, cfg) -> None:
    from ..report import landscape as report

    report.write(args.around, args.between, args.out_dir, cfg)


def report_readme(args, cfg) -> None:
    from ..report import consolidated

    consolidated.write(cfg, args.reports, args.out)


def register(command) -> None:
    p = command("curvature", curvature, "Hessian trace and top eigenvalue at minima and along paths (one CSV)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--minimum", action="append", default=[], metavar="FAMILY=FILE", help="a minimum's checkpoint (repeat)")
    p.add_argument("--path", action="append", default=[], metavar="FAMILY=FILE[,FILE]",
                   help="two endpoints of a linear path, or one path/simplex checkpoint (repeat)")
    p.add_argument("--out", type=Path, required=True)
    p = command("report-flatness", report_flatness, "Hessian-trace tables and figures (reports/flatness)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("csvs", type=Path, nargs="+")
    p = command("landscape-directions", landscape_directions, "filter-normalised random directions around a minimum")
    p.add_argument("--center", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = command("landscape-around", landscape_around, "1-D or 2-D loss landscape around a minimum")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--center", type=Path, required=True)
    p.add_argument("--directions", type=Path, required=True)
    p.add_argument("--dims", type=int, choices=[1, 2], required=True)
    p.add_argument("--out", type=Path, required=True)
    p = command("landscape-between", landscape_between, "1-D loss landscape on the line through two minima")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--a", type=Path, required=True)
    p.add_argument("--b", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = command("report-landscape", report_landscape, "landscape figures and tables (reports/landscape)")
    p.add_argument("--around", type=Path, nargs="+", required=True)
    p.add_argument("--between", type=Path, nargs="*", default=[])
    p.add_argument("--out-dir", type=Path, required=True)
    p = command("report-readme", report_readme, "the consolidated reports/README.md from every family's section")
    p.add_argument("--reports", type=Path, default=Path("reports"), help="folder holding reports/<family>/")
    p.add_argument("--out", type=Path, required=True)
