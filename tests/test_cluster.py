"""The smoke DAG on a real Slurm cluster through profiles/slurm (snakemake-executor-plugin-slurm).

Opt-in (`bash scripts/test.sh -m cluster`): needs sbatch/sinfo/squeue/scancel, a node that accepts
jobs (`sudo bash scripts/slurm-local.sh up` makes a single-node one on this machine) and the
plugin (`pip install -e ".[cluster]"`). Skipped with the reason otherwise.

1. The whole smoke DAG runs through the profile: every job is a Slurm job with its Slurm log under
   logs/slurm/, and every family's report and metrics are written.
2. A job cancelled by the scheduler (`scancel`) fails the run without leaving a half-written
   output, and the rerun completes with the same metrics as the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

from conftest import SMOKE_LOGS, SMOKE_REPORTS, SMOKE_RESULTS

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "params.yaml", "workflow", "config", "profiles", "dvc.yaml"]
RUN = ["--profile", "profiles/slurm", "--configfile", "config/smoke.yaml"]
TIMEOUT = 3600  # a 2-core machine shared with other work can be very slow
USABLE = ("idle", "mixed", "allocated", "completing")


def skip_reason() -> str | None:
    missing = [t for t in ("sbatch", "sinfo", "squeue", "scancel", "snakemake") if shutil.which(t) is None]
    if missing:
        return f"no {', '.join(missing)} on PATH (Slurm client tools; a local cluster: sudo bash scripts/slurm-local.sh up)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return 'snakemake-executor-plugin-slurm is not installed (pip install -e ".[cluster]")'
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T %m"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 30 s: the cluster is down (sudo bash scripts/slurm-local.sh up)"
    nodes = [line.split() for line in out.stdout.splitlines() if line.strip()]
    usable = [int(re.sub(r"\D", "", mem) or 0) for state, mem in nodes if state.rstrip("*~#!%$@^-").startswith(USABLE)]
    if out.returncode != 0 or not usable:
        return f"no Slurm node accepts jobs (sinfo: {(out.stdout + out.stderr).strip()[:300] or 'nothing'}); sudo bash scripts/slurm-local.sh up"
    if max(usable) < 8000:
        return f"the largest usable node has {max(usable)} MB; profiles/slurm asks up to 8000 MB per job"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster_ready():
    """Asked only when a cluster test is selected (a down controller can make sinfo slow)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


def workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, path / name)
    return path


def env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1"}


def snakemake(cwd: Path, *extra: str, timeout: float = TIMEOUT) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(["snakemake", *RUN, *extra], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - start


def metrics(cwd: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((cwd / SMOKE_REPORTS).glob("*/metrics.json"))}


def numbers(tree, prefix=""):
    """Every number in a metrics tree, by its dotted path."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from numbers(v, f"{prefix}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, float(tree)


def same_metrics(a: dict, b: dict) -> list[str]:
    """Paths whose values differ (beyond float round-off) or exist on one side only."""
    na, nb = dict(numbers(a)), dict(numbers(b))
    diff = sorted(set(na) ^ set(nb))
    for k in set(na) & set(nb):
        x, y = na[k], nb[k]
        if not (x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)):
            diff.append(f"{k}: {x} != {y}")
    return diff


@pytest.fixture(scope="module")
def reference(cluster_ready, tmp_path_factory):
    """One uninterrupted run of the smoke DAG through the profile."""
    cwd = workdir(tmp_path_factory.mktemp("slurm") / "run")
    proc, seconds = snakemake(cwd)
    assert proc.returncode == 0, proc.stderr[-6000:]
    print(f"\nsmoke DAG through Slurm: {seconds:.0f} s")
    return {"cwd": cwd, "log": proc.stderr, "seconds": seconds, "metrics": metrics(cwd)}


def test_smoke_dag_through_slurm(reference):
    cwd, log = reference["cwd"], reference["log"]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", log)
    assert submitted, log[-3000:]
    # every job went through Slurm; each has its Slurm log (kept after success), named in the main log
    for jobid, slurm_log in submitted:
        path = Path(slurm_log)
        assert path.is_relative_to(cwd / "logs/slurm") and path.name == f"{jobid}.log", slurm_log
        assert path.exists(), f"Slurm log of job {jobid} missing: {slurm_log}"
    assert re.search(r"(\d+) of \1 steps \(100%\) done", log), log[-3000:]
    # every family's report and metrics
    from modeconn.families import registry

    names = {f.name for f in registry() if f.reports}
    assert (cwd / SMOKE_REPORTS / "README.md").stat().st_size > 0
    got = reference["metrics"]
    assert names <= set(got), sorted(names - set(got))
    for name, tree in got.items():
        values = dict(numbers(tree))
        assert values, f"{SMOKE_REPORTS}/{name}/metrics.json holds no numbers"
    for family in names:
        figures = list((cwd / SMOKE_REPORTS / family).glob("*.png"))
        assert figures and all(f.stat().st_size > 1000 for f in figures), family
    # nothing left in the queue
    rid = re.search(r"SLURM run ID: (\S+)", log).group(1)
    queued = subprocess.run(["squeue", "-h", "-n", rid, "-t", "PENDING,RUNNING"], capture_output=True, text=True).stdout
    assert not queued.strip(), queued


def slurm_jobs(run_id: str) -> list[tuple[str, str, str]]:
    out = subprocess.run(["squeue", "-h", "-n", run_id, "-t", "all", "-o", "%i|%T|%k"], capture_output=True, text=True).stdout
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line.count("|") == 2]


def partial_files(root: Path) -> list[str]:
    """Files that look half-written: temporary names left by an interrupted atomic write (Snakemake's
    own .snakemake_timestamp in directory outputs is not one)."""
    def partial(p: Path) -> bool:
        name = p.name
        return name != ".snakemake_timestamp" and (name.startswith(".") or ".tmp" in name or name.endswith((".partial", ".part", "~")))

    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and partial(p)]


def test_scancel_leaves_no_partial_output_and_rerun_matches(reference, tmp_path):
    cwd = workdir(tmp_path / "run")
    target_rule, target_out, target_log = "train_seeds", cwd / SMOKE_RESULTS / "seeds/population0", cwd / SMOKE_LOGS / "seeds/train_population0.log"
    proc = subprocess.Popen(["snakemake", *RUN], cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    cancelled = None
    try:
        run_id = None
        deadline = time.monotonic() + 1800
        while cancelled is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            if run_id is None and (m := re.search(r"SLURM run ID: (\S+)", line)):
                run_id = m.group(1)
            if run_id is None or "has been submitted with SLURM jobid" not in line or f"/rule_{target_rule}/0/" not in line:
                continue
            jobid = re.search(r"SLURM jobid (\d+)", line).group(1)
            # wait until the job runs and its program has started writing, then cancel it mid-job
            while time.monotonic() < deadline:
                state = {j: s for j, s, _ in slurm_jobs(run_id)}.get(jobid)
                if state == "RUNNING" and (target_log.exists() or target_out.exists()):
                    break
                assert state in (None, "PENDING", "CONFIGURING", "RUNNING"), f"job {jobid} ended ({state}) before it could be cancelled"
                time.sleep(0.1)
            subprocess.run(["scancel", jobid], check=True)
            cancelled = jobid
        assert cancelled, "".join(lines)[-4000:]
        rest, _ = proc.communicate(timeout=TIMEOUT)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
    first = "".join(lines)
    assert proc.returncode != 0, first[-4000:]
    assert re.search(rf"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'", first), first[-4000:]
    # the error names the Slurm log beside the job's own log, and Slurm wrote why the job ended there
    slurm_log = cwd / f"logs/slurm/rule_{target_rule}/0/{cancelled}.log"
    assert re.search(rf"log: {re.escape(SMOKE_LOGS)}/seeds/train_population0\.log, {re.escape(str(slurm_log))}", first), first[-4000:]
    assert "CANCELLED" in slurm_log.read_text()
    # no half-written output: the cancelled job's output is gone (or Snakemake marked it incomplete),
    # and no temporary file of an interrupted write is left anywhere
    status = subprocess.run(["snakemake", "--configfile", "config/smoke.yaml", "--summary"], cwd=cwd, env=env(), capture_output=True, text=True)
    row = next((l for l in status.stdout.splitlines() if l.startswith(str(target_out.relative_to(cwd)))), "")
    print(f"\nafter scancel of Slurm job {cancelled}: {target_out.relative_to(cwd)} "
          f"{'exists' if target_out.exists() else 'absent'}; snakemake --summary: {row.split()[1:] if row else 'no row'}")
    if target_out.exists():
        assert "incomplete" in row or "missing" in row, row
    assert partial_files(cwd / SMOKE_RESULTS) == []

    # the rerun picks up where it stopped and ends with the uninterrupted run's metrics
    again, seconds = snakemake(cwd)
    assert again.returncode == 0, again.stderr[-6000:]
    print(f"\nrerun after scancel: {seconds:.0f} s")
    assert target_out.is_dir() and any(target_out.iterdir())
    got = metrics(cwd)
    assert set(got) == set(reference["metrics"])
    for name in got:
        assert same_metrics(got[name], reference["metrics"][name]) == [], name
