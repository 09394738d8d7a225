"""Commands of the landscape family: filter-normalised directions, landscapes around and between minima, the report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def landscape_directions(args, cfg) -> None:
    from . import stage as landscape

    landscape.make_directions(cfg, args.center, args.out, job(args, cfg))


def landscape_around(args, cfg) -> None:
    from . import stage as landscape

    landscape.around(cfg, args.data, args.center, args.directions, args.dims, args.out, job(args, cfg))


def landscape_between(args, cfg) -> None:
    from . import stage as landscape

    landscape.between(cfg, args.data, args.a, args.b, args.out, job(args, cfg))


def report_landscape(args, cfg) -> None:
    from . import report

    report.write(args.around, args.between, args.out_dir, cfg)


def register(command) -> None:
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
