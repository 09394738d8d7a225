"""MLflow as the record of every training and fitting job (never the source of truth for the DAG).

One MLflow run per workflow job, tagged with the git commit, the Snakemake rule and its wildcards;
params under the same dotted keys as params.yaml; metrics per epoch or per path point; one nested
child run per population member where a job trains several networks. The SQLite store must exist
before jobs fan out (`init_store`, called from the Snakefile's `onstart`): several processes
creating a fresh database at once can corrupt it. SQLite waits `timeout` seconds for a lock, and
every call is retried with backoff, so parallel jobs never fail or lose a run because of it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import TrackingConfig
from .journal import JOURNAL_ENV, JournalRecorder, JournalWriter
from .provenance import git_commit
from .recovery import owner_id, process_alive

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

BUSY_TIMEOUT_S = 30
MAX_METRICS, MAX_PARAMS = 1000, 100  # MLflow's log_batch limits
OWNER_HOST, OWNER_PID = "modeconn.host", "modeconn.pid"  # tags of every run (see end_dead_runs)


def store_uri(uri: str) -> str:
    """Add a SQLite busy timeout to a sqlite:/// URI that has none."""
    if uri.startswith("sqlite:") and "timeout=" not in uri:
        return uri + ("&" if "?" in uri else "?") + f"timeout={BUSY_TIMEOUT_S}"
    return uri


def is_server(uri: str) -> bool:
    """An MLflow tracking server (`mlflow server`, scripts/mlflow-server.sh) rather than a store
    this process opens itself."""
    return uri.startswith(("http://", "https://"))


# A tracking server that does not answer (stopped, restarting, network down) is retried for
# MODECONN_TRACKING_RETRY_S seconds with backoff; then the job fails with TrackingServerError,
# naming the server, so Snakemake reruns it later: a run is never dropped silently. Each attempt
# is one HTTP request (MLflow's own retries are switched off for it unless the user set
# MLFLOW_HTTP_REQUEST_MAX_RETRIES) that waits at most MLFLOW_HTTP_REQUEST_TIMEOUT seconds.
SERVER_RETRY_S = 120.0
SERVER_REQUEST_TIMEOUT_S = 30
_TRANSIENT = (
    "max retries exceeded", "connection refused", "connection aborted", "connection reset",
    "remote end closed", "remotedisconnected", "timed out", "temporarily unavailable",
    "bad gateway", "service unavailable", "gateway timeout", "too many 5", "error responses",
    "connectionerror", "newconnectionerror", "broken pipe",
)


class TrackingServerError(RuntimeError):
    """The MLflow tracking server did not answer within the retry budget."""


def _transient(err: BaseException) -> bool:
    import requests  # lazy, like MLflow

    chain, seen = [], set()
    while err is not None and id(err) not in seen:  # the error and what caused it
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    if any(isinstance(e, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)) for e in chain):
        return True
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain).lower()
    return any(w in text for w in _TRANSIENT)


class _ServerClient:
    """An MlflowClient for an http(s) tracking URI whose every call retries a server that does not
    answer, then raises TrackingServerError naming it. After one such failure the next calls of
    this job (e.g. marking the run FAILED on the way out) try once more each, without waiting."""

    def __init__(self, client, uri: str):
        self._mlflow, self.uri = client, uri
        self._down_since: float | None = None  # when the server stopped answering (monotonic)
        self._attempts = 0  # failed attempts since then

    def __getattr__(self, name: str):
        attr = getattr(self._mlflow, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            budget = float(os.environ.get("MODECONN_TRACKING_RETRY_S", SERVER_RETRY_S))
            while True:
                try:
                    result = attr(*args, **kwargs)
                    self._down_since, self._attempts = None, 0
                    return result
                except Exception as err:  # noqa: BLE001 - MLflow wraps transport errors in MlflowException
                    if not _transient(err):
                        raise
                    now = time.monotonic()
                    if self._down_since is None:
                        self._down_since = now
                    self._attempts += 1
                    waited = now - self._down_since
                    if waited >= budget:
                        raise TrackingServerError(
                            f"MLflow tracking server {self.uri} did not answer `{name}`: "
                            f"{self._attempts} attempt(s) over {waited:.0f} s (MODECONN_TRACKING_RETRY_S={budget:g}); "
                            f"last error {type(err).__name__}: {str(err)[:500]}. Is it running "
                            "(scripts/mlflow-server.sh) and reachable from this host? The job fails so "
                            "that it is rerun; its run on the server is left unfinished."
                        ) from err
                    time.sleep(min(2.0 ** (self._attempts - 1), 5.0, budget - waited))  # 1, 2, 4, 5, 5... s

        return call


def _retry(call: Callable[[], Any], attempts: int = 8) -> Any:
    # The SQLite lock timeout covers most contention; a retry covers the rest (e.g. a lock held
    # across a schema check at start-up). Only database errors are retried. A tracking server
    # retries on its own (_ServerClient): its failure is final here.
    for attempt in range(attempts):
        try:
            return call()
        except TrackingServerError:
            raise
        except Exception as err:  # noqa: BLE001 - MLflow wraps SQLAlchemy errors in several types
            text = f"{type(err).__name__}: {err}".lower()
            if attempt == attempts - 1 or not any(w in text for w in ("locked", "busy", "operationalerror")):
                raise
            time.sleep(min(0.5 * 2**attempt, 8.0))


def _client(cfg: TrackingConfig):
    from mlflow.tracking import MlflowClient  # lazy: importing MLflow takes seconds

    if is_server(cfg.uri):
        # One HTTP request per attempt: _ServerClient paces the retries and names the server.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(SERVER_REQUEST_TIMEOUT_S))
        return _ServerClient(MlflowClient(tracking_uri=cfg.uri), cfg.uri)
    return MlflowClient(tracking_uri=store_uri(cfg.uri))


def _experiment_id(client, name: str) -> str:
    def get_or_create():
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else client.create_experiment(name)

    try:
        return _retry(get_or_create)
    except Exception:  # noqa: BLE001 - another process created it between our get and create
        return _retry(lambda: client.get_experiment_by_name(name).experiment_id)


def init_store(cfg: TrackingConfig) -> int:
    """Create the tracking database and the experiment once, before any job runs; end the runs of
    jobs that died (see `end_dead_runs`). Returns how many runs were ended."""
    if not cfg.enabled:
        return 0
    if cfg.uri.startswith("sqlite:///"):
        Path(cfg.uri.removeprefix("sqlite:///").split("?")[0]).resolve().parent.mkdir(parents=True, exist_ok=True)
    client = _client(cfg)
    return end_dead_runs(client, _experiment_id(client, cfg.experiment))


def owner_tags() -> dict[str, str]:
    """Which process on which host writes a run: lets a later workflow run tell a dead job's run
    (its process is gone) from a live one (e.g. of a second workflow running at the same time)."""
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: owner_id()}


def end_dead_runs(client, experiment_id: str) -> int:
    """Mark KILLED every RUNNING run whose job process on this host is gone (killed with -9, out
    of memory, machine reset): without this they would show as running forever. Runs of other
    hosts are left alone (their processes cannot be checked from here)."""
    host, ended = socket.gethostname(), 0
    runs = _retry(lambda: client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000))
    for run in runs:
        tags = run.data.tags
        if tags.get(OWNER_HOST) == host and OWNER_PID in tags and not process_alive(tags[OWNER_PID]):
            _retry(lambda: client.set_terminated(run.info.run_id, status="KILLED"))
            ended += 1
    if ended:
        print(f"modeconn: marked {ended} MLflow run(s) of dead jobs as KILLED")
    return ended


class Recorder:
    """One MLflow run; the few calls jobs make. A disabled recorder (no client) does nothing."""

    def __init__(self, client=None, run_id: str | None = None, experiment_id: str | None = None, job_tags: dict[str, str] | None = None):
        self._client, self.run_id, self._experiment_id = client, run_id, experiment_id
        self._job_tags = job_tags or {}  # of every run of the job (commit, owner process): computed once
        self._open: list[Recorder] = []  # child runs, ended with this one if still open
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        if not (self.enabled and values):
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items()]
        _retry(lambda: self._client.log_batch(self.run_id, metrics=batch))

    def params(self, values: dict[str, Any]) -> None:
        if not (self.enabled and values):
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in values.items()]
        for i in range(0, len(items), MAX_PARAMS):
            _retry(lambda: self._client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS]))

    def artifact(self, path: str | Path) -> None:
        if self.enabled and Path(path).exists():
            _retry(lambda: self._client.log_artifact(self.run_id, str(path)))

    def open_child(self, name: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> "Recorder":
        """A nested run (e.g. one member of a population) under this one; close it with `close`."""
        if not self.enabled:
            return self
        tags = {"mlflow.parentRunId": self.run_id, **self._job_tags, **(tags or {})}
        run = _retry(lambda: self._client.create_run(self._experiment_id, run_name=name, tags=tags))
        child = Recorder(self._client, run.info.run_id, self._experiment_id, self._job_tags)
        child.params(params or {})
        self._open.append(child)
        return child

    def close(self, status: str = "FINISHED") -> None:
        """End this run, and as FAILED any child run still open when this one fails."""
        if self.enabled and not self._closed:
            for child in self._open:
                child.close("FAILED" if status != "FINISHED" else "FINISHED")
            _retry(lambda: self._client.set_terminated(self.run_id, status=status))
            self._closed = True


def _open_run(cfg: TrackingConfig, name: str, tags: dict[str, str]) -> "Recorder | JournalRecorder":
    """The run of one job: in the store, or, under a workflow that drains a journal (journal.py),
    as records in the job's journal file (no MLflow import, no store opened in this process)."""
    commit = {"git_commit": git_commit()}
    journal = os.environ.get(JOURNAL_ENV)
    if journal and not is_server(cfg.uri):
        # the drainer adds the owner tags from the journal's header (the job's host and process)
        return JournalRecorder.start(JournalWriter(Path(journal), cfg.uri, cfg.experiment, commit), name, tags)
    job_tags = {**commit, **owner_tags()}
    client = _client(cfg)
    experiment = _experiment_id(client, cfg.experiment)
    run = _retry(lambda: client.create_run(experiment, run_name=name, tags={**job_tags, **tags}))
    return Recorder(client, run.info.run_id, experiment, job_tags)


@contextlib.contextmanager
def job(cfg: TrackingConfig, name: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> Iterator["Recorder | JournalRecorder"]:
    """One MLflow run for one workflow job; marked FAILED if the job raises."""
    if not cfg.enabled:
        yield Recorder()
        return
    rec = _open_run(cfg, name, tags or {})
    status = "FINISHED"
    try:
        rec.params(params)
        yield rec
    except BaseException:
        status = "FAILED"
        raise
    finally:
        rec.close(status)
