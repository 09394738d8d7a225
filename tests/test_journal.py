"""The tracking journal (journal.py) gives the MLflow store exactly what direct writes give it, live,
and loses nothing when a job or the drainer dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modeconn.config import TrackingConfig
from modeconn.journal import JOURNAL_ENV, Drainer, JournalRecorder, JournalWriter
from modeconn.tracking import init_store, job, store_uri

JOB = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modeconn.config import TrackingConfig
    from modeconn.tracking import job

    cfg = TrackingConfig(uri=sys.argv[1], experiment="journal")
    table = Path(sys.argv[2])
    with job(cfg, "train 0 1", {"train.lr": 0.1, "model.width": 8}, {"rule": "train", "wildcards": "a=0"}) as run:
        children = [run.open_child(f"seed{s}", {"seed": s}, {"rule": "train"}) for s in (0, 1)]
        for step in range(5):
            run.metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
            for s, child in enumerate(children):
                child.metrics({"loss": (s + 1.0) / (step + 1)}, step=step)
        run.params({"bn_reset": False})
        table.write_text("a,b\\n1,2\\n")
        run.artifact(table)
        table.write_text("changed after logging\\n")
        if len(sys.argv) > 3:  # die mid-run, after a last metric
            run.metrics({"last": 1.0}, step=9)
            time.sleep(600)
    """
)


def store(tmp: Path, name: str) -> str:
    uri = f"sqlite:///{tmp / name}"
    init_store(TrackingConfig(uri=uri, experiment="journal"))
    return uri


def run_job(tmp: Path, uri: str, journal: Path | None, *extra: str) -> subprocess.Popen:
    script = tmp / "job.py"
    script.write_text(JOB)
    env = {k: v for k, v in os.environ.items() if k != JOURNAL_ENV} | {"MLFLOW_DISABLE_TELEMETRY": "true"}
    if journal is not None:
        env[JOURNAL_ENV] = str(journal)
    return subprocess.Popen([sys.executable, str(script), uri, str(tmp / f"table-{len(extra)}.csv"), *extra], env=env,
                            stderr=subprocess.PIPE, text=True)


def recorded(uri: str) -> dict:
    """Everything a user sees of the experiment, keyed by run name (ids and times left out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(uri))
    exp = client.get_experiment_by_name("journal")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    names = {r.info.run_id: r.info.run_name for r in runs}
    out = {}
    for r in runs:
        tags = {k: v for k, v in r.data.tags.items() if k not in ("modeconn.pid", "mlflow.runName")}
        tags["mlflow.parentRunId"] = names.get(tags.get("mlflow.parentRunId"))
        metrics = {k: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)) for k in r.data.metrics}
        artifacts = {}
        for a in client.list_artifacts(r.info.run_id):
            artifacts[a.path] = Path(client.download_artifacts(r.info.run_id, a.path, str(Path(uri[10:]).parent))).read_text()
        out[r.info.run_name] = {"status": r.info.status, "params": r.data.params, "tags": tags, "metrics": metrics, "artifacts": artifacts}
    return out


def test_journal_records_what_direct_writes_record(tmp_path):
    direct, journaled = store(tmp_path, "direct.db"), store(tmp_path, "journal.db")
    folder = tmp_path / "journal"
    for uri, where in ((direct, None), (journaled, folder)):
        proc = run_job(tmp_path, uri, where)
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    assert recorded(journaled) == {}  # nothing reaches the store before the drainer writes it
    assert Drainer(folder).drain() > 0
    want = recorded(direct)
    assert set(want) == {"train 0 1", "seed0", "seed1"}
    assert want["train 0 1"]["artifacts"] == {"table-0.csv": "a,b\n1,2\n"}  # as it was when logged
    assert recorded(journaled) == want
    assert list(folder.iterdir()) == []  # every finished job's file is gone


def test_drainer_shows_a_live_job_and_ends_a_killed_one(tmp_path):
    uri = store(tmp_path, "mlflow.db")
    folder = tmp_path / "journal"
    proc = run_job(tmp_path, uri, folder, "die")
    drainer = Drainer(folder)
    deadline = time.monotonic() + 300
    while "last" not in recorded(uri).get("train 0 1", {}).get("metrics", {}):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()[-3000:] if proc.poll() else "timed out"
        drainer.drain()
        time.sleep(0.2)
    live = recorded(uri)
    assert {name: r["status"] for name, r in live.items()} == {"train 0 1": "RUNNING", "seed0": "RUNNING", "seed1": "RUNNING"}
    assert live["seed1"]["metrics"]["loss"] == [(s, 2.0 / (s + 1)) for s in range(5)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    drainer.drain()
    ended = recorded(uri)
    assert {name: r["status"] for name, r in ended.items()} == {"train 0 1": "KILLED", "seed0": "KILLED", "seed1": "KILLED"}
    assert ended["train 0 1"]["metrics"]["last"] == [(9, 1.0)]
    assert list(folder.iterdir()) == []


def test_a_new_drainer_continues_where_the_last_one_stopped(tmp_path):
    """Records written in two parts (the second after a drainer 'died' and a new one took over),
    including a line whose end had not been written yet: each run and metric lands exactly once."""
    uri = store(tmp_path, "mlflow.db")
    folder = tmp_path / "journal"
    writer = JournalWriter(folder, uri, "journal", {"git_commit": "abc"})
    run = JournalRecorder.start(writer, "job", {"rule": "r"})
    run.metrics({"loss": 1.0}, step=0)
    child = run.open_child("member", {"seed": 3})
    whole = writer.path.read_bytes()
    writer.path.write_bytes(whole[:-7])  # the child's params line, cut mid-line
    Drainer(folder).drain()
    first = recorded(uri)
    assert set(first) == {"job", "member"} and first["member"]["params"] == {}
    writer.path.write_bytes(whole)
    child.metrics({"loss": 2.0}, step=1)
    run.metrics({"loss": 0.5}, step=1)
    run.close()
    Drainer(folder).drain()  # a fresh drainer: only the saved state tells it where to go on
    final = recorded(uri)
    assert final["job"]["metrics"]["loss"] == [(0, 1.0), (1, 0.5)]
    assert final["member"] == {**final["member"], "status": "FINISHED", "params": {"seed": "3"}, "metrics": {"loss": [(1, 2.0)]}}
    assert final["member"]["tags"]["mlflow.parentRunId"] == "job" and final["job"]["tags"]["git_commit"] == "abc"
    assert list(folder.iterdir()) == []


def test_jobs_without_the_journal_variable_write_the_store_themselves(tmp_path, monkeypatch):
    monkeypatch.delenv(JOURNAL_ENV, raising=False)
    uri = store(tmp_path, "mlflow.db")
    with job(TrackingConfig(uri=uri, experiment="journal"), "by hand", {"a": 1}) as run:
        run.metrics({"x": 1.0})
    assert recorded(uri)["by hand"]["status"] == "FINISHED"


@pytest.mark.parametrize("uri", ["http://127.0.0.1:1"])
def test_a_tracking_server_is_never_journaled(tmp_path, monkeypatch, uri):
    """Cluster jobs write to the server directly: the journal folder is on one machine only."""
    from modeconn import tracking

    monkeypatch.setenv(JOURNAL_ENV, str(tmp_path / "journal"))
    monkeypatch.setattr(tracking, "_client", lambda cfg: (_ for _ in ()).throw(ConnectionError("direct")))
    with pytest.raises(ConnectionError, match="direct"):
        with job(TrackingConfig(uri=uri, experiment="journal"), "x", {}):
            pass
    assert not (tmp_path / "journal").exists()
