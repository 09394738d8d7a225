"""Commands of the curves family: train Bezier / PolyChain curves, evaluate them, the curve plane, the report."""

from __future__ import annotations

from pathlib import Path

from ...commands import job


def train_curves(args, cfg) -> None:
    from . import stage as curves

    curves.train(cfg, args.data, args.a, args.b, args.out, job(args, cfg))


def evaluate_curves(args, cfg) -> None:
    from . import stage as curves

    curves.evaluate(cfg, args.data, args.a, args.b, args.curves, args.along, args.ensembles, job(args, cfg))


def curve_plane(args, cfg) -> None:
    from . import stage as curves

    curves.plane(cfg, args.data, args.a, args.b, args.curves, args.out, job(args, cfg))


def report_curves(args, cfg) -> None:
    from . import report

    report.write(args.along, args.ensembles, args.planes, args.out_dir, cfg)


def _pair(p) -> None:
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--a", type=Path, required=True, help="checkpoint of the first endpoint")
    p.add_argument("--b", type=Path, required=True, help="checkpoint of the second endpoint")


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
