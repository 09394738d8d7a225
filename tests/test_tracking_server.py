"""Many writers, one MLflow tracking server: a real `mlflow server` (scripts/mlflow-server.sh, SQLite
backend in tmp_path, a free loopback port) takes jobs from parallel processes and loses nothing; a
server that stops mid-run fails the job loudly, naming the server, and keeps what it acknowledged.
Needs only pip-installed mlflow (the server is started from this environment)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from modeconn.config import Config, TrackingConfig
from modeconn.tracking import TrackingServerError, _ServerClient, is_server, job, store_uri

from mlflow_server import free_port, start, stop, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "server"
WRITERS = 4
STEPS = 10

WRITER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from modeconn.config import TrackingConfig
    from modeconn.tracking import job

    uri, i, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    cfg = TrackingConfig(uri=uri, experiment="server")
    with job(cfg, f"job{i}", {"train.lr": 0.1 * i, "model.width": 8}, {"rule": "test", "wildcards": f"i={i}"}) as run:
        child = run.open_child(f"member{i}", {"seed": i})
        for step in range(%d):
            run.metrics({"loss": 1.0 / (step + 1), "error": 0.5}, step=step)
            child.metrics({"loss": 2.0 / (step + 1)}, step=step)
        child.close()
        out.write_text(json.dumps({"job": i}))
        run.artifact(out)
    """
    % STEPS
)

# Logs a metric every 0.1 s until the server goes away; prints each step the server acknowledged.
DOOMED = textwrap.dedent(
    """
    import os, sys, time
    from modeconn.config import TrackingConfig
    from modeconn.tracking import job

    with job(TrackingConfig(uri=sys.argv[1], experiment="server"), "doomed", {"train.lr": 0.5}) as run:
        os.environ["MODECONN_TRACKING_RETRY_S"] = "3"  # a short budget once the run exists
        step = 0
        while True:
            run.metrics({"loss": 1.0 / (step + 1)}, step=step)
            print(f"logged {step}", flush=True)
            step += 1
            time.sleep(0.1)
    """
)


def env() -> dict[str, str]:
    # a generous budget: the writers start while the server is still booting and wait for it
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MODECONN_TRACKING_RETRY_S": "150"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running server; the writers of the first test are started while it boots (see `writers`)."""
    home = tmp_path_factory.mktemp("mlflow-server")
    proc, url, log = start(home, env())
    # the parallel writers start now, overlapping the server's boot (they retry until it answers)
    files = [home / f"metrics{i}.json" for i in range(WRITERS)]
    script = home / "writer.py"
    script.write_text(WRITER)
    procs = [
        subprocess.Popen([sys.executable, str(script), url, str(i), str(files[i])], env=env(), stderr=subprocess.PIPE, text=True)
        for i in range(WRITERS)
    ]
    try:
        wait_healthy(url, proc, log)
        yield {"url": url, "proc": proc, "home": home, "log": log, "writers": procs, "files": files}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        stop(proc, timeout=20)


def test_http_uri_is_accepted():
    cfg = Config.from_dict({"tracking": {"uri": "http://127.0.0.1:5000"}}, source="test")
    assert cfg.tracking.uri == "http://127.0.0.1:5000"
    assert is_server(cfg.tracking.uri) and not is_server("sqlite:///mlflow.db")
    assert store_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"  # only SQLite gets a timeout


def test_parallel_writers_lose_nothing(server):
    for p in server["writers"]:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    everything_arrived(server["url"], server["home"])
    stored = list((server["home"] / "srv/artifacts").rglob("metrics*.json"))
    assert len(stored) == WRITERS


def everything_arrived(url: str, home: Path) -> None:
    """Every run, param, metric step, tag and artifact of the WRITERS jobs is on the server."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = {r.info.run_name: r for r in runs if r.info.run_name.startswith("job")}
    children = [r for r in runs if r.info.run_name.startswith("member")]
    assert sorted(parents) == [f"job{i}" for i in range(WRITERS)]
    assert len(children) == WRITERS and len(runs) == 2 * WRITERS
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {r.info.run_id for r in parents.values()}
    for i in range(WRITERS):
        run = parents[f"job{i}"]
        assert run.data.params == {"train.lr": str(0.1 * i), "model.width": "8"}
        assert run.data.tags["rule"] == "test" and "git_commit" in run.data.tags
        for key in ("loss", "error"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(STEPS))
        # the artifact went through the server (--serve-artifacts) into its artifacts folder
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == [f"metrics{i}.json"]
        local = client.download_artifacts(run.info.run_id, f"metrics{i}.json", str(home))
        assert json.loads(Path(local).read_text()) == {"job": i}
    for r in children:
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "loss")) == list(range(STEPS))


def test_server_stopped_mid_run_fails_the_job_and_keeps_its_run(server):
    script = server["home"] / "doomed.py"
    script.write_text(DOOMED)
    proc = subprocess.Popen([sys.executable, str(script), server["url"]], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logged = []
    try:
        for line in proc.stdout:  # wait until the run exists and a few metrics arrived
            logged.append(int(line.split()[1]))
            if len(logged) == 4:
                break
        assert len(logged) == 4, proc.stderr.read()[-3000:]
        os.killpg(server["proc"].pid, signal.SIGKILL)  # the server dies mid-run
        server["proc"].wait(timeout=30)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    logged += [int(line.split()[1]) for line in out.splitlines()]
    assert proc.returncode != 0
    assert "TrackingServerError" in err and f"MLflow tracking server {server['url']} did not answer" in err, err[-3000:]

    # Nothing the server acknowledged is lost: read its database directly (the server is gone).
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(f"sqlite:///{server['home'] / 'srv/mlflow.db'}"))
    exp = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'doomed'")
    assert run.info.status == "RUNNING"  # visibly unfinished, never reported FINISHED
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "loss")}
    assert set(logged) <= steps


def test_unreachable_server_is_named(monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("MODECONN_TRACKING_RETRY_S", "1")
    start = time.monotonic()
    with pytest.raises(TrackingServerError, match=f"MLflow tracking server http://127.0.0.1:{port} did not answer"):
        with job(TrackingConfig(uri=f"http://127.0.0.1:{port}", experiment="x"), "never", {}):
            pass
    assert time.monotonic() - start < 30


def test_server_client_retries_until_the_server_answers(monkeypatch):
    import requests

    monkeypatch.setenv("MODECONN_TRACKING_RETRY_S", "10")
    monkeypatch.setattr("modeconn.tracking.time.sleep", lambda s: None)
    calls = []

    class Flaky:  # refuses twice, then answers (a server restarting)
        def log_batch(self, run_id, metrics=()):
            calls.append(run_id)
            if len(calls) < 3:
                raise requests.ConnectionError("Connection refused")
            return "ok"

        def get_run(self, run_id):
            raise ValueError("RESOURCE_DOES_NOT_EXIST")  # not a transport error: never retried

    client = _ServerClient(Flaky(), "http://127.0.0.1:1")
    assert client.log_batch("r1", metrics=[]) == "ok" and calls == ["r1"] * 3
    with pytest.raises(ValueError):
        client.get_run("r1")


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


@pytest.mark.cluster
def test_postgresql_backend():
    """The same parallel writers against a server whose database is PostgreSQL (a private instance
    on a free loopback port, several server workers). Opt-in with the cluster tests: needs the
    PostgreSQL server binaries (Debian: apt-get install postgresql) and psycopg2 (".[cluster]")."""
    pg = postgres_bin()
    if pg is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl, initdb)")
    pytest.importorskip("psycopg2", reason='psycopg2 is not installed (pip install -e ".[cluster]")')
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
    home = Path(tempfile.mkdtemp(prefix="modeconn-pg-"))  # readable by the postgres user
    if as_postgres:
        shutil.chown(home, "postgres")
    data, pg_port, port = home / "data", free_port(), free_port()
    subprocess.run([*as_postgres, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    opts = f"-p {pg_port} -k {home} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_postgres, str(pg / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(home / "pg.log"), "-w", "start"], check=True, capture_output=True)
    server = None
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE mlflow")
        conn.close()
        url, log = f"http://127.0.0.1:{port}", home / "server.log"
        backend = f"postgresql://postgres@127.0.0.1:{pg_port}/mlflow"
        with log.open("w") as out:
            server = subprocess.Popen(
                ["bash", str(ROOT / "scripts/mlflow-server.sh"), "--backend", backend, "--dir", str(home / "srv"), "--port", str(port), "--workers", "2"],
                stdout=out, stderr=subprocess.STDOUT, env=env(), start_new_session=True,
            )
        wait_healthy(url, server, log)
        script = home / "writer.py"
        script.write_text(WRITER)
        procs = [
            subprocess.Popen([sys.executable, str(script), url, str(i), str(home / f"metrics{i}.json")], env=env(), stderr=subprocess.PIPE, text=True)
            for i in range(WRITERS)
        ]
        for p in procs:
            _, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
        everything_arrived(url, home)
        assert "postgresql://postgres@127.0.0.1" in log.read_text()
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        subprocess.run([*as_postgres, str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
