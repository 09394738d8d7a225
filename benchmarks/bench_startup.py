"""Per-job fixed cost: the time from process start to the first useful work of each kind of job.

Every workflow job is a fresh `modeconn <command>` process. Before it does any work it imports
Python, the CLI, the family's stage or report module and what they import (torch, MLflow, pandas,
matplotlib/seaborn...). This script starts, for a representative command of each kind of job, a
fresh interpreter that does exactly the imports that job does before its first useful work
(parse the CLI, build the parser, import the family module the command calls), under
and prints its wall time, and the cumulative import time of the heavy top-level packages from a
second run under `python -X importtime` (which itself adds a few tenths of a second). For jobs that log to MLflow it also times the same process opening and closing
its run in a SQLite store (one param, one metric): directly (a job run by hand) and
through the tracking journal (journal.py; every job under Snakemake), whose drainer works in its
own process, off the job's clock. Each process ends as the `modeconn` command does (os._exit,
no interpreter teardown). Medians over --repeats runs, interleaved (kinds in turn), so
machine load affects all alike.

Then it times small real jobs of each kind (`served`: tiny MNIST-1D data and MLP, MLflow records
through the journal, as under the workflow), each run as a fresh process and through the fork
server that a local workflow starts (forkserver.py), whose children start with those imports
done. The difference of the two is the fixed cost the server saves per job. It prints numbers and
asserts nothing.

    python benchmarks/bench_startup.py              # 5 repeats
    python benchmarks/bench_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modeconn.config import TrackingConfig
from modeconn.journal import JOURNAL_ENV, Drainer
from modeconn.tracking import init_store

# kind of job -> (example command, the module its function imports before working, whether it logs to MLflow)
KINDS = {
    "train (train-seeds)": ("train-seeds", "modeconn.families.seeds.stage", True),
    "fork/level (lottery-level)": ("lottery-level", "modeconn.families.lottery.stage", True),
    "evaluation (interpolate)": ("interpolate", "modeconn.families.seeds.stage", True),
    "curvature (curvature)": ("curvature", "modeconn.families.flatness.stage", True),
    "report (report-seeds)": ("report-seeds", "modeconn.families.seeds.report", False),
}
HEAVY = ("torch", "mlflow", "pandas", "numpy", "scipy", "matplotlib", "seaborn", "safetensors", "jsonschema", "yaml", "sqlalchemy")

SNIPPET = """
import os, sys, time
from modeconn import cli
parser = cli.parser()
import importlib
importlib.import_module(sys.argv[1])
if len(sys.argv) > 2:  # open and close the job's MLflow run, as every job of a workflow does
    from modeconn.config import TrackingConfig
    from modeconn.tracking import job
    with job(TrackingConfig(uri=sys.argv[2], experiment="bench"), "bench", {"a": 1}, {"rule": "bench"}) as run:
        run.metrics({"x": 1.0})
sys.stdout.flush()
os._exit(0)  # as the `modeconn` command ends (cli.entry: no interpreter teardown)
"""


def one_run(module: str, store: str | None = None, journal: str | None = None) -> tuple[float, dict[str, float]]:
    """Wall seconds of a fresh interpreter doing the job's imports (and, with `store`, opening and
    closing its MLflow run there: directly, or through `journal` as under the workflow), and
    seconds per heavy package."""
    env = {k: v for k, v in os.environ.items() if k != JOURNAL_ENV} | {"MLFLOW_DISABLE_TELEMETRY": "true"}
    if journal:
        env[JOURNAL_ENV] = journal
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", SNIPPET, module, *([store] if store else [])], env=env, capture_output=True, check=True)
    wall = time.perf_counter() - start
    if store:
        return wall, {}
    # the breakdown from a second run: -X importtime itself adds a few tenths of a second
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", SNIPPET, module], env=env, capture_output=True, text=True, check=True)
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


def measure(repeats: int) -> dict:
    """Medians over `repeats` interleaved rounds: per kind of job, seconds to first work (imports),
    the same plus the job's MLflow run opened directly in a SQLite store and through the journal
    (jobs that log), and seconds per heavy import."""
    variants = ("imports", "direct", "journal")
    walls = {k: {v: [] for v in variants} for k in KINDS}
    parts: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
    bare = []
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        init_store(TrackingConfig(uri=store, experiment="bench"))  # as the workflow's onstart does
        journal = Path(tmp) / "journal"
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - start)
            for kind, (_, module, logs) in KINDS.items():
                wall, cum = one_run(module)
                walls[kind]["imports"].append(wall)
                for pkg, sec in cum.items():
                    parts[kind].setdefault(pkg, []).append(sec)
                if logs:
                    walls[kind]["direct"].append(one_run(module, store)[0])
                    walls[kind]["journal"].append(one_run(module, store, str(journal))[0])
                    Drainer(journal).drain()  # the drainer's work happens in its own process, off the job's clock
    med = lambda v: statistics.median(v) if v else float("nan")  # noqa: E731
    return {"bare": med(bare), "walls": {k: {v: med(x) for v, x in w.items()} for k, w in walls.items()},
            "heavy": {k: {p: med(v) for p, v in d.items()} for k, d in parts.items()}}


# kind of job -> the arguments of a small real job of that kind ({tmp}: the benchmark's folder, {i}: the round)
JOBS = {
    "train (train-seeds)": "train-seeds --seeds 2 --data {tmp}/data.safetensors --out-dir {tmp}/train{i}",
    "evaluation (interpolate)": "interpolate --data {tmp}/data.safetensors --a {tmp}/pop/seed0.safetensors "
                                "--b {tmp}/pop/seed1.safetensors --out {tmp}/pair{i}.csv",
    "curvature (curvature)": "curvature --data {tmp}/data.safetensors --minimum seeds={tmp}/pop/seed0.safetensors --out {tmp}/curv{i}.csv",
    "report (report-seeds)": "report-seeds --out-dir {tmp}/report{i} {tmp}/pair.csv",
}
JOB_PARAMS = {
    "data": {"name": "mnist1d", "num_samples": 500},
    "model": {"name": "mlp", "depth": 1, "width": 16},
    "train": {"duration": "1ep", "batch_size": 50},
    "seeds": {"interpolation_points": 5},
    "flatness": {"batch_size": 100, "batches": 1, "probes": 4, "probe_chunk": 4},
}


def served(repeats: int) -> dict:
    """Medians over `repeats` interleaved rounds of the wall time of each small real job (`JOBS`),
    as a fresh process ("alone") and through a fork server ("served"); MLflow through the journal."""
    from modeconn import forkserver

    walls = {k: {"alone": [], "served": []} for k in JOBS}
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        params = json.dumps({**JOB_PARAMS, "tracking": {"uri": store, "experiment": "bench"}})
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        init_store(TrackingConfig(uri=store, experiment="bench"))
        journal = Path(tmp) / "journal"
        base = {k: v for k, v in os.environ.items() if k != forkserver.ADDRESS_ENV} | {JOURNAL_ENV: str(journal), "MLFLOW_DISABLE_TELEMETRY": "true"}
        modeconn = [str(Path(sys.executable).parent / "modeconn")]

        def job(args: str, env: dict) -> float:
            start = time.perf_counter()
            subprocess.run([*modeconn, *args.split(), "--params", params, "--threads", "1"], env=env, capture_output=True, check=True)
            return time.perf_counter() - start

        job(f"prepare-data --out {tmp}/data.safetensors", base)
        job(f"train-seeds --seeds 0 1 --data {tmp}/data.safetensors --out-dir {tmp}/pop", base)
        job(JOBS["evaluation (interpolate)"].format(tmp=tmp, i=""), base)
        address = str(Path(tmp) / "fork.sock")
        server = subprocess.Popen([sys.executable, "-m", "modeconn.forkserver", address], env=base,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not os.path.exists(address):
                if server.poll() is not None:
                    raise RuntimeError("the fork server did not start")
                time.sleep(0.05)
            for i in range(repeats):
                for kind, args in JOBS.items():
                    for how, env in (("alone", base), ("served", base | {forkserver.ADDRESS_ENV: address})):
                        walls[kind][how].append(job(args.format(tmp=tmp, i=f"{how}{i}"), env))
                        Drainer(journal).drain()
        finally:
            server.terminate()
            server.wait()
    return {k: {how: statistics.median(v) for how, v in w.items()} for k, w in walls.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    res = measure(args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, 1-min load {load:.2f}, median of {args.repeats}")
    print(f"bare interpreter start: {res['bare']:.2f} s\n")
    print("| kind of job | command | to first work: imports (s) | + MLflow run, direct (s) | + MLflow run, journal (s) | heavy imports (s, cumulative) |")
    print("|---|---|---:|---:|---:|---|")
    for kind, (command, _, _) in KINDS.items():
        w = res["walls"][kind]
        heavy = ", ".join(f"{p} {v:.2f}" for p, v in sorted(res["heavy"][kind].items(), key=lambda kv: -kv[1]) if v >= 0.05)
        cell = lambda v: "—" if v != v else f"{v:.2f}"  # noqa: E731
        print(f"| {kind} | `modeconn {command}` | {w['imports']:.2f} | {cell(w['direct'])} | {cell(w['journal'])} | {heavy} |")
    jobs = served(args.repeats)
    print("\nSmall real jobs (MLflow through the journal), a fresh process vs a child of the fork server:\n")
    print("| kind of job | fresh process (s) | through the fork server (s) | saved per job (s) |")
    print("|---|---:|---:|---:|")
    for kind, w in jobs.items():
        print(f"| {kind} | {w['alone']:.2f} | {w['served']:.2f} | {w['alone'] - w['served']:.2f} |")


if __name__ == "__main__":
    main()
