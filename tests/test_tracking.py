"""The MLflow record survives parallel jobs: no failure, no lost run, no lost metric."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from modeconn.config import TrackingConfig
from modeconn.tracking import Recorder, init_store, job, store_uri

WRITER = textwrap.dedent(
    """
    import sys
    from modeconn.config import TrackingConfig
    from modeconn.tracking import job

    cfg = TrackingConfig(uri=sys.argv[1], experiment="parallel")
    i = int(sys.argv[2])
    with job(cfg, f"job{i}", {"train.lr": 0.1 * i, "model.width": 8}, {"rule": "test", "wildcards": f"i={i}"}) as run:
        child = run.open_child(f"member{i}", {"seed": i})
        for step in range(20):
            run.metrics({"loss": 1.0 / (step + 1), "error": 0.5}, step=step)
            child.metrics({"loss": 2.0 / (step + 1)}, step=step)
        child.close()
    """
)


def test_parallel_jobs_lose_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrackingConfig(uri=uri, experiment="parallel")
    init_store(cfg)  # as the Snakefile's onstart does, before jobs fan out
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    procs = [subprocess.Popen([sys.executable, str(script), uri, str(i)], env=env, stderr=subprocess.PIPE, text=True) for i in range(6)]
    for p in procs:
        _, err = p.communicate(timeout=1200)
        assert p.returncode == 0, err[-3000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(uri))
    exp = client.get_experiment_by_name("parallel")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert len(runs) == 12  # 6 jobs + 6 children
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(20))
    parents = [r for r in runs if r.info.run_name.startswith("job")]
    assert {r.data.params["train.lr"] for r in parents} == {str(0.1 * i) for i in range(6)}
    assert all("git_commit" in r.data.tags and r.data.tags["rule"] == "test" for r in parents)
    children = [r for r in runs if r.info.run_name.startswith("member")]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {r.info.run_id for r in parents}


def test_failed_job_is_marked_failed(tmp_path):
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="fail")
    init_store(cfg)
    try:
        with job(cfg, "boom", {"a": 1}):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(cfg.uri))
    (run,) = client.search_runs([client.get_experiment_by_name("fail").experiment_id])
    assert run.info.status == "FAILED"


def test_disabled_tracking_touches_nothing(tmp_path):
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", enabled=False)
    with job(cfg, "quiet", {"a": 1}) as run:
        assert isinstance(run, Recorder) and not run.enabled
        run.metrics({"x": 1.0}, step=0)
        run.open_child("c").close()
    assert not (tmp_path / "mlflow.db").exists()


def test_store_uri_adds_a_busy_timeout_once():
    assert store_uri("sqlite:///a.db") == "sqlite:///a.db?timeout=30"
    assert store_uri("sqlite:///a.db?timeout=5") == "sqlite:///a.db?timeout=5"
    assert store_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


HANGING = textwrap.dedent(
    """
    import sys, time
    from modeconn.config import TrackingConfig
    from modeconn.tracking import job

    cfg = TrackingConfig(uri=sys.argv[1], experiment="dead")
    with job(cfg, "hanging job", {"train.lr": 0.1}) as run:
        child = run.open_child("member0")
        print("started", flush=True)
        time.sleep(600)
    """
)


def test_runs_of_killed_jobs_end_as_killed_and_live_ones_stay_running(tmp_path):
    """kill -9 leaves a job's runs RUNNING; the next init_store (the Snakefile's onstart) marks them
    KILLED, while a run whose process is alive (here: this test's own) is left running."""
    import signal

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrackingConfig(uri=uri, experiment="dead")
    assert init_store(cfg) == 0
    script = tmp_path / "hang.py"
    script.write_text(HANGING)
    proc = subprocess.Popen([sys.executable, str(script), uri], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with job(cfg, "live job", {}) as live:
        assert init_store(cfg) == 2  # the killed job's run and its child
        client = MlflowClient(store_uri(uri))
        status = {r.info.run_name: r.info.status for r in client.search_runs([client.get_experiment_by_name("dead").experiment_id])}
        assert status == {"hanging job": "KILLED", "member0": "KILLED", "live job": "RUNNING"}
        assert live.run_id
    assert init_store(cfg) == 0  # nothing left to end


def test_open_child_runs_fail_with_their_job(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrackingConfig(uri=uri, experiment="failing")
    init_store(cfg)
    try:
        with job(cfg, "failing job", {}) as run:
            run.open_child("member0")
            done = run.open_child("member1")
            done.close()
            raise RuntimeError("diverged")
    except RuntimeError:
        pass
    client = MlflowClient(store_uri(uri))
    status = {r.info.run_name: r.info.status for r in client.search_runs([client.get_experiment_by_name("failing").experiment_id])}
    assert status == {"failing job": "FAILED", "member0": "FAILED", "member1": "FINISHED"}
