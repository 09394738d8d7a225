"""Commands of the curves family (curves, curve planes) and of FGE / SWA (Garipov et al. 2018; Izmailov et al. 2018)."""

from __future__ import annotations

from pathlib import Path

from . import job


def train_curves(args, cfg) -> None:
    from ..stages import curves

    curves.train(cfg, args.data, args.a, args.b, args.out, job(args, cfg))


def evaluate_curves(args, cfg) -> None:
    from ..stages import curves

    curves.evaluate(cfg, args.data, args.a, args.b, args.curves, args.along, args.ensembles, job(args, cfg))


def curve_plane(args, cfg) -> None:
    from ..stages import curves

    curves.plane(cfg, args.data, args.a, args.b, args.curves, args.out, job(args, cfg))


def report_curves(args, cfg) -> None:
    from ..report import curves as report

    report.write(args.along, args.ensembles, args.planes, args.out_dir, cfg)


def run_fge(args, cfg) -> None:
    from ..stages import fge

    fge.fge(cfg, args.data, args.seeds, args.seed_dirs, args.out_dir, args.out, job(args, cfg))


def run_swa(args, cfg) -> None:
    from ..stages import fge

    fge.swa(cfg, args.data, args.seeds, args.seed_dirs, args.out_dir, args.out, job(args, cfg))


def report_fge(args, cfg) -> None:
    from ..report import fge as report

    report.write(args.fge, args.swa, args.out_dir, cfg)


def _pair(p) -> None:
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--a", type=Path, required=True, help="checkpoint of the first endpoint")
    p.add_argument("--b", type=Path, required=True, help="checkpoint of the second endpoint")


def _seeds(p) -> None:
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--seed-dirs", type=Path, nargs="+", required=True, help="each seed's population directory (same order as --seeds)")
    p.add_argument("--out-dir", type=Path, required=True, help="where the checkpoints go")
    p.add_argument("--out", type=Path, required=True, help="the CSV of results")


def register(command) -> None:
    p = command("train-curves", train_curves, "train Bezier / PolyChain curves between two minima")
    _pair(p)
    p.add_argument("--out", type=Path, nargs="+", required=True, help="one path checkpoint per kind in curves.kinds")
    p = command("evaluate-curves", evaluate_curves, "loss, error, ensembles and disagreement along the linear path and the curves")
    _pair(p)
    p.add_argument("--curves", type=Path, nargs="+", required=True)
    p.add_argument("--along", type=Path, required=True)
    p.add_argument("--ensembles", type=Path, required=True)
    p = command("curve-plane", curve_plane, "loss and error on the plane through the endpoints and the free bend")
    _pair(p)
    p.add_argument("--curves", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p = command("report-curves", report_curves, "curve tables (Garipov Table 1 format), figures and planes")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--along", type=Path, nargs="+", required=True)
    p.add_argument("--ensembles", type=Path, nargs="+", required=True)
    p.add_argument("--planes", type=Path, nargs="+", required=True)
    p = command("fge", run_fge, "fast geometric ensembling from every seed's checkpoint at fge.start")
    _seeds(p)
    p = command("swa", run_swa, "stochastic weight averaging from every seed's checkpoint at swa.start")
    _seeds(p)
    p = command("report-fge", report_fge, "FGE ensemble table at equal budget, SWA vs SGD, figures")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--fge", type=Path, required=True)
    p.add_argument("--swa", type=Path, required=True)
