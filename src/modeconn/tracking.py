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
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import TrackingConfig
from .provenance import git_commit

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

BUSY_TIMEOUT_S = 30


def store_uri(uri: str) -> str:
    """Add a SQLite busy timeout to a sqlite:/// URI that has none."""
    if uri.startswith("sqlite:") and "timeout=" not in uri:
        return uri + ("&" if "?" in uri else "?") + f"timeout={BUSY_TIMEOUT_S}"
    return uri


def _retry(call: Callable[[], Any], attempts: int = 8) -> Any:
    # The SQLite lock timeout covers most contention; a retry covers the rest (e.g. a lock held
    # across a schema check at start-up). Only database errors are retried.
    for attempt in range(attempts):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - MLflow wraps SQLAlchemy errors in several types
            text = f"{type(err).__name__}: {err}".lower()
            if attempt == attempts - 1 or not any(w in text for w in ("locked", "busy", "operationalerror")):
                raise
            time.sleep(min(0.5 * 2**attempt, 8.0))


def _client(cfg: TrackingConfig):
    from mlflow.tracking import MlflowClient  # lazy: importing MLflow takes seconds

    return MlflowClient(tracking_uri=store_uri(cfg.uri))


def _experiment_id(client, name: str) -> str:
    def get_or_create():
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else client.create_experiment(name)

    try:
        return _retry(get_or_create)
    except Exception:  # noqa: BLE001 - another process created it between our get and create
        return _retry(lambda: client.get_experiment_by_name(name).experiment_id)


def init_store(cfg: TrackingConfig) -> None:
    """Create the tracking database and the experiment once, before any job runs."""
    if not cfg.enabled:
        return
    if cfg.uri.startswith("sqlite:///"):
        Path(cfg.uri.removeprefix("sqlite:///").split("?")[0]).resolve().parent.mkdir(parents=True, exist_ok=True)
    _experiment_id(_client(cfg), cfg.experiment)


class Recorder:
    """One MLflow run; the few calls jobs make. A disabled recorder (no client) does nothing."""

    def __init__(self, client=None, run_id: str | None = None, experiment_id: str | None = None):
        self._client, self.run_id, self._experiment_id = client, run_id, experiment_id

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
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            _retry(lambda: self._client.log_batch(self.run_id, params=items[i : i + 100]))

    def artifact(self, path: str | Path) -> None:
        if self.enabled and Path(path).exists():
            _retry(lambda: self._client.log_artifact(self.run_id, str(path)))

    def open_child(self, name: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> "Recorder":
        """A nested run (e.g. one member of a population) under this one; close it with `close`."""
        if not self.enabled:
            return self
        tags = {"mlflow.parentRunId": self.run_id, "git_commit": git_commit(), **(tags or {})}
        run = _retry(lambda: self._client.create_run(self._experiment_id, run_name=name, tags=tags))
        child = Recorder(self._client, run.info.run_id, self._experiment_id)
        child.params(params or {})
        return child

    def close(self, status: str = "FINISHED") -> None:
        if self.enabled:
            _retry(lambda: self._client.set_terminated(self.run_id, status=status))


@contextlib.contextmanager
def job(cfg: TrackingConfig, name: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> Iterator[Recorder]:
    """One MLflow run for one workflow job; marked FAILED if the job raises."""
    if not cfg.enabled:
        yield Recorder()
        return
    client = _client(cfg)
    experiment = _experiment_id(client, cfg.experiment)
    all_tags = {"git_commit": git_commit(), **(tags or {})}
    run = _retry(lambda: client.create_run(experiment, run_name=name, tags=all_tags))
    rec = Recorder(client, run.info.run_id, experiment)
    status = "FINISHED"
    try:
        rec.params(params)
        yield rec
    except BaseException:
        status = "FAILED"
        raise
    finally:
        rec.close(status)
