from pathlib import Path


def report_midpoint(args, cfg) -> None:
    from . import report

    report.write(args.csvs, args.out_dir, cfg.midpoint.split)


def register(command) -> None:
    p = command("report-midpoint", report_midpoint, "loss and error at the midpoint of every seed pair's linear path")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("csvs", type=Path, nargs="+", help="the seeds family's per-pair interpolation CSVs")
