"""Per-job fixed cost: the time from process start to the first useful work of each kind of job.

Every workflow job is a fresh `modeconn <command>` process. Before it does any work it imports
Python, the CLI, the family's stage or report module and what they import (torch, MLflow, pandas,
matplotlib/seaborn...). This script starts, for a representative command of each kind of job, a
fresh interpreter that does exactly the imports that job does before its first useful work
(parse the CLI, build the parser, import the family module the command calls), under
`python -X importtime`, and prints the wall time and the cumulative import time of the heavy
top-level packages. Medians over --repeats runs, interleaved (kinds in turn), so machine load
affects all alike. It prints numbers and asserts nothing.

    python benchmarks/bench_startup.py              # 5 repeats
    python benchmarks/bench_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

# kind of job -> (example command, the module its function imports before working)
KINDS = {
    "train (train-seeds)": ("train-seeds", "modeconn.families.seeds.stage"),
    "fork/level (lottery-level)": ("lottery-level", "modeconn.families.lottery.stage"),
    "evaluation (interpolate)": ("interpolate", "modeconn.families.seeds.stage"),
    "curvature (curvature)": ("curvature", "modeconn.families.flatness.stage"),
    "report (report-seeds)": ("report-seeds", "modeconn.families.seeds.report"),
    "tracking only (init-tracking)": ("init-tracking", "mlflow.tracking"),
}
HEAVY = ("torch", "mlflow", "pandas", "numpy", "scipy", "matplotlib", "seaborn", "safetensors", "jsonschema", "yaml", "sqlalchemy")

SNIPPET = """
import sys
from modeconn import cli
parser = cli.parser()
import importlib
importlib.import_module(sys.argv[1])
"""


def one_run(module: str) -> tuple[float, dict[str, float]]:
    """Wall seconds of a fresh interpreter doing the job's imports, and seconds per heavy package."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", SNIPPET, module], env=env,
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    cumulative: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            name = m.group(3)
            top = name.split(".")[0]
            # the first (outermost) import of a package is its full cost
            if top in HEAVY and name == top:
                cumulative[top] = cumulative.get(top, 0.0) + int(m.group(1)) / 1e6
    return wall, cumulative


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    walls = {k: [] for k in KINDS}
    parts: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
    bare = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
        for kind, (_, module) in KINDS.items():
            wall, cum = one_run(module)
            walls[kind].append(wall)
            for pkg, s in cum.items():
                parts[kind].setdefault(pkg, []).append(s)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, 1-min load {load:.2f}, median of {args.repeats}")
    print(f"bare interpreter start: {statistics.median(bare):.2f} s\n")
    print(f"| kind of job | command | start to first work (s) | heavy imports (s, cumulative) |")
    print("|---|---|---:|---|")
    for kind, (command, _) in KINDS.items():
        heavy = ", ".join(f"{p} {statistics.median(v):.2f}" for p, v in sorted(parts[kind].items(), key=lambda kv: -statistics.median(kv[1])) if statistics.median(v) >= 0.05)
        print(f"| {kind} | `modeconn {command}` | {statistics.median(walls[kind]):.2f} | {heavy} |")


if __name__ == "__main__":
    main()
