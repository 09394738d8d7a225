"""End-to-end: the Snakemake workflow on the smoke preset, as a user runs it.

The repository's workflow files are copied into a temporary directory and `snakemake` runs there
with `--configfile config/smoke.yaml` and 2 cores (so jobs run in parallel and write to MLflow
concurrently). The module-scoped run is shared by the tests below. It runs with the example family
of tests/example_family registered (an entry point on PYTHONPATH, no other file edited), so the
smoke run also proves that a family added from outside runs end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from modeconn import forkserver
from modeconn.families import get, names

from conftest import SMOKE_LOGS, SMOKE_REPORTS, SMOKE_RESULTS

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests/example_family"
WORKFLOW_FILES = ["Snakefile", "params.yaml", "workflow", "config", "profiles"]
FAMILIES = names()


def snakemake(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLE), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "snakemake", *args]
    # generous: the smoke run takes ~2.5 min on 2 idle cores; a busy machine must not fail the test
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=2400)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def copy_workflow(dest: Path) -> Path:
    """The repository's workflow files (not its data or results) in `dest`."""
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = copy_workflow(tmp_path_factory.mktemp("workflow"))
    snakemake(work, "--configfile", "config/smoke.yaml", "--cores", "2")
    return work


def test_reports_are_written(work):
    for name in get("seeds").report_files(SMOKE_REPORTS):
        assert (work / name).stat().st_size > 0, name
    metrics = json.loads((work / SMOKE_REPORTS / "seeds/metrics.json").read_text())
    assert metrics["pairs"] == 3 and metrics["points"] == 5
    # the reported mean barrier is max over α minus the endpoints' mean, recomputed from the
    # interpolation table the report also wrote, averaged over the pairs
    import pandas as pd

    points = pd.read_csv(work / SMOKE_REPORTS / "seeds/interpolation.csv")
    for split in ("train", "test"):
        for metric in ("loss", "error"):
            per_pair = [g.sort_values("alpha")[metric].to_numpy() for _, g in points[points.split == split].groupby("pair")]
            expected = sum(v.max() - 0.5 * (v[0] + v[-1]) for v in per_pair) / len(per_pair)
            assert metrics["barrier"][split][metric]["mean"] == pytest.approx(expected, rel=1e-9, abs=1e-12), (split, metric)
    markdown = (work / SMOKE_REPORTS / "seeds/barriers.md").read_text()
    assert "5 evenly spaced alphas" in markdown and "±" in markdown


def test_checkpoints_per_seed_and_step(work):
    """Every seed saves its final weights and a checkpoint at every step some family asks for."""
    from modeconn.config import Config, load_yaml
    from modeconn.schedules import iterations

    cfg = Config.from_dict(load_yaml(work / "params.yaml", work / "config/smoke.yaml"))
    steps = {iterations(s, 480 // 64) for s in cfg.seed_checkpoint_steps()}  # full batches per epoch
    assert {0, 7} <= steps  # train.checkpoint_steps [0it, 1ep] (480 examples / 64 = 7 steps per epoch)
    names = {p.name for p in (work / SMOKE_RESULTS / "seeds").glob("population*/*.safetensors")}
    expected = {f"seed{s}.safetensors" for s in range(3)} | {f"seed{s}.step{k}.safetensors" for s in range(3) for k in steps}
    assert names == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_writes_its_reports(work, family):
    """Every file the family's REPORTS lists (its report rule's outputs) is written and nothing else;
    its DVC metrics parse; its section is in the README."""
    reports = work / SMOKE_REPORTS / family
    listed = get(family).reports
    assert sorted(p.name for p in reports.iterdir()) == sorted(listed)
    for name in listed:
        assert (reports / name).stat().st_size > 0, name
    metrics = json.loads((reports / "metrics.json").read_text())
    assert isinstance(metrics, dict) and metrics
    pngs = list(reports.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    readme = (work / SMOKE_REPORTS / "README.md").read_text()
    section = (reports / "section.md").read_text()
    assert section.splitlines()[0].startswith("## ")
    assert section.splitlines()[0] in readme


def test_example_family_registered_from_outside_runs_end_to_end(work):
    """tests/example_family's midpoint family: its rules ran, its report files exist, and its section
    comes last in the consolidated report (after every built-in family)."""
    for name in ("midpoints.csv", "metrics.json", "section.md"):
        assert (work / SMOKE_REPORTS / "midpoint" / name).stat().st_size > 0, name
    metrics = json.loads((work / SMOKE_REPORTS / "midpoint/metrics.json").read_text())
    assert metrics["pairs"] == 3 and 0.0 <= metrics["mean_error"] <= 1.0
    readme = (work / SMOKE_REPORTS / "README.md").read_text()
    assert readme.index("## Midpoints") > readme.index((work / SMOKE_REPORTS / "landscape/section.md").read_text().splitlines()[0])


def test_every_family_is_recorded_in_mlflow(work):
    db = sqlite3.connect(work / "mlflow.db")
    families = {v for (v,) in db.execute("select value from tags where key = 'family'")}
    assert set(FAMILIES) <= families, families
    failed = db.execute("select name from runs where status != 'FINISHED'").fetchall()
    assert failed == []


def test_mlflow_records_every_job(work):
    db = sqlite3.connect(work / "mlflow.db")
    # the seeds family's runs (other families, e.g. the width sweep, train networks of their own)
    runs = dict(
        db.execute(
            "select r.run_uuid, r.name from runs r join tags t on t.run_uuid = r.run_uuid"
            " where r.status = 'FINISHED' and t.key = 'family' and t.value = 'seeds'"
        ).fetchall()
    )
    names = sorted(runs.values())
    assert names.count("seed0") == names.count("seed1") == names.count("seed2") == 1
    assert sum(n.startswith("train seeds") for n in names) == 2
    assert sum(n.startswith("interpolate") for n in names) == 3
    tags = db.execute("select key, value from tags").fetchall()
    assert ("rule", "train_seeds") in tags and ("rule", "interpolate_seeds") in tags
    assert any(k == "wildcards" and v == "a=0,b=1" for k, v in tags)
    assert any(k == "git_commit" for k, _ in tags)
    seed_tags = dict(db.execute("select key, value from tags where run_uuid = (select run_uuid from runs where name = 'seed2')").fetchall())
    assert seed_tags["rule"] == "train_seeds" and seed_tags["wildcards"] == "population=1" and "git_commit" in seed_tags
    seed_params = dict(db.execute("select key, value from params where run_uuid = (select run_uuid from runs where name = 'seed2')").fetchall())
    assert seed_params["seed"] == "2" and seed_params["train.duration"] == "3ep"
    params = {k for (k,) in db.execute("select key from params")}
    assert {"train.lr", "model.width", "data.name", "evaluation.batch_size"} <= params
    # Metrics per epoch for each seed (3 epochs in the smoke preset).
    seed0 = next(r for r, n in runs.items() if n == "seed0")
    steps = db.execute("select step from metrics where run_uuid = ? and key = 'test_error'", (seed0,)).fetchall()
    assert sorted(s for (s,) in steps) == [1, 2, 3]


def running_training(work: Path) -> bool:
    """Whether a train_seeds job of the workflow in `work` is under way: its tracking journal
    (journal.py) holds its run's start and no end. (The store lags the journal by up to a second:
    a run it shows as RUNNING may have ended already; and the smoke preset's 3 epochs can pass
    between two polls, so an epoch's metrics are not waited for.)"""
    for journal in (work / ".modeconn/journal").glob("*.jsonl"):
        try:
            text = journal.read_text()
        except OSError:  # drained and removed meanwhile
            continue
        records = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]  # whole lines only
        ops = [r["op"] for r in records]
        if any(r["op"] == "start" and r["tags"].get("rule") == "train_seeds" for r in records) and "end" not in ops:
            return True
    return False


def test_killed_run_resumes_with_the_same_command(work, tmp_path):
    """kill -9 of the whole workflow (Snakemake and its jobs) while a seed population trains: the
    same command then completes without --unlock or --rerun-incomplete, the metrics equal those
    of the uninterrupted run, and the killed jobs' MLflow runs end as KILLED, not RUNNING."""
    import signal
    import time

    (tmp_path / "killed").mkdir()
    copy = copy_workflow(tmp_path / "killed")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "snakemake", "seeds", "--configfile", "config/smoke.yaml", "--cores", "2"]
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 1200
    while not running_training(copy) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the workflow ended before a seed population started training"
    assert list((copy / ".snakemake/locks").glob("*.lock"))  # held by the running workflow
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    rerun = snakemake(copy, "seeds", "--configfile", "config/smoke.yaml", "--cores", "2")
    assert "removed" in rerun.stderr and "stale lock" in rerun.stderr
    assert (copy / SMOKE_REPORTS / "seeds/metrics.json").read_text() == (work / SMOKE_REPORTS / "seeds/metrics.json").read_text()
    db = sqlite3.connect(copy / "mlflow.db")
    statuses = {s for (s,) in db.execute("select status from runs")}
    assert "RUNNING" not in statuses and "KILLED" in statuses, statuses


@pytest.mark.skipif(not forkserver.available(), reason="the fork server needs Linux")
def test_jobs_start_from_the_fork_server(work):
    """Under a local run every job is a child of the fork server (forkserver.py), which ends with
    the run: each child it started ended (the log holds its exit status), none was left running."""
    lines = (work / SMOKE_LOGS / "fork-server.log").read_text().splitlines()
    started = [line.split()[3] for line in lines if ": modeconn " in line]
    exited = [line.split()[3] for line in lines if ": exit status " in line]
    assert {"train-seeds", "interpolate", "report-seeds", "curvature", "report-readme"} <= {line.split()[5] for line in lines if ": modeconn " in line}
    assert sorted(started) == sorted(exited)
    assert lines[-1].endswith("stopped (0 jobs still running were killed)")


def test_second_run_has_nothing_to_do(work):
    out = snakemake(work, "--configfile", "config/smoke.yaml", "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_presets_keep_their_own_results(work):
    """A run of another preset in the same folder (its own run section) writes only into its own
    folders: every file of the smoke run is untouched, both runs are complete afterwards (snakemake
    -n has nothing to do for either) and each job's MLflow run carries its run's name."""
    (work / "other.yaml").write_text("run: {name: other, results: results/other, reports: reports/other}\n"
                                      "seeds: {count: 2, population: 2, interpolation_points: 3}\n")
    smoke_files = [p for folder in (SMOKE_RESULTS, SMOKE_REPORTS) for p in (work / folder).rglob("*") if p.is_file()]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in smoke_files}
    snakemake(work, "seeds", "--configfile", "config/smoke.yaml", "other.yaml", "--cores", "2")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in smoke_files} == before
    other = json.loads((work / "reports/other/seeds/metrics.json").read_text())
    assert other != json.loads((work / SMOKE_REPORTS / "seeds/metrics.json").read_text())  # 2 seeds, not 3
    assert sorted(p.name for p in (work / "results/other/seeds").glob("population*/seed?.safetensors")) == ["seed0.safetensors", "seed1.safetensors"]
    for args in (("--configfile", "config/smoke.yaml"), ("seeds", "--configfile", "config/smoke.yaml", "other.yaml")):
        out = snakemake(work, *args, "-n")
        assert "Nothing to be done" in out.stdout + out.stderr, args
    db = sqlite3.connect(work / "mlflow.db")
    tagged = dict(db.execute("select t.value, count(*) from tags t join tags r on r.run_uuid = t.run_uuid"
                             " where t.key = 'run' and r.key = 'rule' and r.value = 'train_seeds' group by t.value").fetchall())
    # a run per population job and a child run per seed: other 1 + 2, smoke 2 + 3 (3 seeds, 2 per population)
    assert tagged == {"other": 1 + 2, "smoke": 2 + 3}, tagged


def test_param_change_reruns_only_what_it_touches(work):
    (work / "more_points.yaml").write_text("seeds:\n  interpolation_points: 7\n")
    out = snakemake(work, "--configfile", "config/smoke.yaml", "more_points.yaml", "-n")
    text = out.stdout + out.stderr
    assert "interpolate_seeds" in text and "report_seeds" in text
    assert "train_seeds" not in text and "prepare_data" not in text


def test_barrier_definition_change_reruns_only_the_reports(work):
    """evaluation.barrier picks the definition a table reports: switching it reruns the report jobs
    that summarise paths and the consolidated report, and no training or evaluation job."""
    (work / "entezari.yaml").write_text("evaluation:\n  barrier: entezari\n")
    out = snakemake(work, "-n", "--configfile", "config/smoke.yaml", "entezari.yaml")
    text = out.stdout + out.stderr
    for rule in ("report_seeds", "report_instability", "report_lottery", "report_rebasin", "report_readme"):
        assert rule in text, rule
    for rule in ("train_seeds", "interpolate_seeds", "fork_instability", "lottery_level", "match_rebasin", "neb_connect",
                 "train_curves", "evaluate_curves", "continue_seeds", "curvature"):
        assert rule not in text, rule


def test_html_report_contains_figure_and_table(work):
    snakemake(work, "--configfile", "config/smoke.yaml", "--report", "report.html")
    html = (work / "report.html").read_text(errors="replace")
    assert "interpolation.png" in html and "barriers.csv" in html


def test_lint_is_clean(work):
    out = snakemake(work, "--lint", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Lints for" not in out.stdout + out.stderr


@pytest.mark.parametrize(
    "bad, key",
    [("train:\n  lr: -1\n", "train.lr"), ("train:\n  learning_rate: 0.1\n", "train.learning_rate"), ("sedes:\n  count: 2\n", "sedes"),
     ("train:\n  lr: .nan\n", "train.lr: nan is not a finite number"), ("train:\n  duration: 0ep\n", "train.duration: '0ep' is not a positive"),
     ("fge:\n  start: 99ep\n", "fge.start: 99ep = iteration")],
)
def test_bad_config_stops_before_any_job(tmp_path, bad, key):
    copy_workflow(tmp_path)
    (tmp_path / "bad.yaml").write_text(bad)
    out = snakemake(tmp_path, "--configfile", "bad.yaml", "-n", check=False)
    assert out.returncode != 0
    assert key in out.stdout + out.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()
