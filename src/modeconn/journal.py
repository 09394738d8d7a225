"""The tracking journal: workflow jobs append their MLflow records to a file, one process writes them.

Opening a local MLflow store costs a job about 2 s on a 2-core machine (importing MLflow and
SQLAlchemy, checking the database schema) — more than many jobs' own work. Under Snakemake each
job therefore appends its records (run start with tags, params, metrics with their step and time,
artifacts, end with status) as JSON lines to its own file in the journal folder, and one drainer
process, started by the Snakefile's `onstart` and stopped by `onsuccess`/`onerror`, writes them
into the store as they come (within about a second: `mlflow ui` shows a running job live). Runs
keep the start, metric and end times the job recorded, and the host/pid tags of the job.

A job whose process died (kill -9, out of memory) leaves a file without its end: the drainer
writes what it holds and ends its runs as KILLED. A drainer that dies leaves per-file state (how
far it got, which MLflow run each journal run became), so the next one neither loses nor repeats
a record. Several drainers (two workflows at once) take each file under a lock.

Used only for a local store (sqlite:///...): a tracking server is cheap to reach, and cluster
jobs write to it directly. Without MODECONN_TRACKING_JOURNAL (a job run by hand; not under `dvc
repro`, whose stages run Snakemake) jobs write to the store themselves (`tracking.Recorder`).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .recovery import owner_id, process_alive

JOURNAL_ENV = "MODECONN_TRACKING_JOURNAL"
SUFFIX = ".jsonl"
POLL_S = 0.5


def now_ms() -> int:
    return int(time.time() * 1000)


# ----------------------------------------------------------------------------- the job's side


class JournalWriter:
    """One job's journal file: `<folder>/<host>-<pid>-<ms>.jsonl`, one JSON record per line,
    flushed as written (a reader only ever sees whole lines once their newline is there)."""

    def __init__(self, folder: Path, uri: str, experiment: str, tags: dict[str, str]):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}{SUFFIX}"
        self.artifacts = self.path.with_suffix(".artifacts")
        self._file = open(self.path, "a", encoding="utf-8")
        self._ids = itertools.count()
        # tags: of every run of the job (its commit); the drainer adds them, and the owner tags from host and owner
        self.write({"op": "job", "uri": uri, "experiment": experiment, "tags": tags, "host": socket.gethostname(), "owner": owner_id()})

    def new_run(self) -> str:
        return str(next(self._ids))

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def keep_artifact(self, path: Path) -> str:
        """A copy of `path` as it is now (the job may rewrite it later); its name relative to the journal."""
        n = sum(1 for _ in self.artifacts.glob("*/*")) if self.artifacts.exists() else 0
        target = self.artifacts / str(n) / path.name
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)
        return str(target.relative_to(self.path.parent))


class JournalRecorder:
    """`tracking.Recorder`'s calls, appended to a journal instead of sent to MLflow."""

    enabled = True

    def __init__(self, writer: JournalWriter, run: str):
        self._writer, self.run_id = writer, run
        self._open: list[JournalRecorder] = []
        self._closed = False

    @classmethod
    def start(cls, writer: JournalWriter, name: str, tags: dict[str, str], parent: "JournalRecorder | None" = None) -> "JournalRecorder":
        run = writer.new_run()
        writer.write({"op": "start", "run": run, "name": name, "tags": tags, "parent": parent.run_id if parent else None, "time": now_ms()})
        return cls(writer, run)

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        if values:
            self._writer.write({"op": "metrics", "run": self.run_id, "values": {k: float(v) for k, v in values.items()}, "step": int(step), "time": now_ms()})

    def params(self, values: dict[str, Any]) -> None:
        if values:
            self._writer.write({"op": "params", "run": self.run_id, "values": {k: str(v)[:6000] for k, v in values.items()}})

    def artifact(self, path: str | Path) -> None:
        if Path(path).exists():
            self._writer.write({"op": "artifact", "run": self.run_id, "path": self._writer.keep_artifact(Path(path))})

    def open_child(self, name: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> "JournalRecorder":
        child = JournalRecorder.start(self._writer, name, tags or {}, parent=self)
        child.params(params or {})
        self._open.append(child)
        return child

    def close(self, status: str = "FINISHED") -> None:
        if not self._closed:
            for child in self._open:
                child.close("FAILED" if status != "FINISHED" else "FINISHED")
            self._writer.write({"op": "end", "run": self.run_id, "status": status, "time": now_ms()})
            self._closed = True


# ----------------------------------------------------------------------------- the drainer's side


class _State:
    """How far one journal file has been written to the store, saved beside it after every batch."""

    def __init__(self, journal: Path):
        self.file = journal.with_suffix(".state")
        saved = json.loads(self.file.read_text()) if self.file.exists() else {}
        self.offset: int = saved.get("offset", 0)
        self.runs: dict[str, str] = saved.get("runs", {})  # journal run -> MLflow run id
        self.open: list[str] = saved.get("open", [])  # journal runs started, not ended
        self.header: dict | None = saved.get("header")

    def save(self) -> None:
        tmp = self.file.with_suffix(".state.tmp")
        tmp.write_text(json.dumps({"offset": self.offset, "runs": self.runs, "open": self.open, "header": self.header}))
        os.replace(tmp, self.file)


class Drainer:
    """Writes every journal file in `folder` into its MLflow store; see the module docstring."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._clients: dict[str, Any] = {}
        self._experiments: dict[tuple[str, str], str] = {}

    def _client(self, uri: str):
        if uri not in self._clients:
            from . import tracking
            from .config import TrackingConfig

            self._clients[uri] = tracking._client(TrackingConfig(uri=uri))
        return self._clients[uri]

    def _experiment(self, header: dict) -> str:
        key = (header["uri"], header["experiment"])
        if key not in self._experiments:
            from . import tracking

            self._experiments[key] = tracking._experiment_id(self._client(header["uri"]), header["experiment"])
        return self._experiments[key]

    def drain(self) -> int:
        """One pass over every journal file; returns how many records it wrote."""
        written = 0
        for journal in sorted(self.folder.glob(f"*{SUFFIX}")):  # files are independent: any order will do
            lock = journal.with_suffix(".lock")
            try:
                handle = open(lock, "a")
            except FileNotFoundError:
                continue
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another drainer has it now
                if journal.exists():
                    written += self._drain_file(journal)
        return written

    def _drain_file(self, journal: Path) -> int:
        state = _State(journal)
        # Whether the writer is gone is decided before reading: whatever it wrote is then all there.
        dead = state.header is not None and state.header["host"] == socket.gethostname() and not process_alive(state.header["owner"])
        with open(journal, "rb") as f:
            f.seek(state.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        records = [json.loads(line) for line in complete.decode("utf-8").splitlines() if line]
        if records:
            self._apply(journal, state, records)
            state.offset += len(complete)
            state.save()
        if state.header is not None and not state.open and state.runs:
            self._remove(journal)  # every run ended
        elif dead:
            self._end_dead(state)
            self._remove(journal)
        return len(records)

    def _apply(self, journal: Path, state: _State, records: list[dict]) -> None:
        from mlflow.entities import Metric, Param

        from . import tracking

        if state.header is None:
            state.header = records[0]
            records = records[1:]
        client = self._client(state.header["uri"])
        job_tags = {**state.header["tags"], tracking.OWNER_HOST: state.header["host"], tracking.OWNER_PID: state.header["owner"]}
        metrics: dict[str, list] = {}
        params: dict[str, list] = {}

        def flush() -> None:
            for run, batch in metrics.items():
                for i in range(0, len(batch), tracking.MAX_METRICS):
                    tracking._retry(lambda: client.log_batch(run, metrics=batch[i : i + tracking.MAX_METRICS]))
            for run, batch in params.items():
                for i in range(0, len(batch), tracking.MAX_PARAMS):
                    tracking._retry(lambda: client.log_batch(run, params=batch[i : i + tracking.MAX_PARAMS]))
            metrics.clear()
            params.clear()

        for rec in records:
            op = rec["op"]
            if op == "start":
                tags = {**job_tags, **rec["tags"]}
                if rec["parent"] is not None:
                    tags["mlflow.parentRunId"] = state.runs[rec["parent"]]
                run = tracking._retry(lambda: client.create_run(self._experiment(state.header), start_time=rec["time"], run_name=rec["name"], tags=tags))
                state.runs[rec["run"]] = run.info.run_id
                state.open.append(rec["run"])
            elif op == "metrics":
                metrics.setdefault(state.runs[rec["run"]], []).extend(Metric(k, v, rec["time"], rec["step"]) for k, v in rec["values"].items())
            elif op == "params":
                params.setdefault(state.runs[rec["run"]], []).extend(Param(k, v) for k, v in rec["values"].items())
            else:
                flush()  # params and metrics before an artifact or the end, in the job's order
                if op == "artifact":
                    tracking._retry(lambda: client.log_artifact(state.runs[rec["run"]], str(journal.parent / rec["path"])))
                elif op == "end":
                    tracking._retry(lambda: client.set_terminated(state.runs[rec["run"]], status=rec["status"], end_time=rec["time"]))
                    state.open.remove(rec["run"])
                else:
                    raise ValueError(f"{journal}: unknown journal record {rec!r}")
        flush()

    def _end_dead(self, state: _State) -> None:
        from . import tracking

        client = self._client(state.header["uri"])
        killed, state.open = state.open, []
        for run in killed:
            tracking._retry(lambda: client.set_terminated(state.runs[run], status="KILLED"))
        if killed:
            print(f"modeconn: the job {state.header['owner']} died; its {len(killed)} open MLflow run(s) are marked KILLED", flush=True)

    @staticmethod
    def _remove(journal: Path) -> None:
        shutil.rmtree(journal.with_suffix(".artifacts"), ignore_errors=True)
        for path in (journal, journal.with_suffix(".state"), journal.with_suffix(".lock")):
            path.unlink(missing_ok=True)


def follow(folder: Path, owner: str, stop: Path) -> None:
    """Drain `folder` until `stop` exists or the owner process (the workflow) is gone; then drain
    once more and return.

    Ctrl-C reaches the whole process group: the drainer ignores it, so that the workflow's onerror
    can still ask it for its last pass (a drainer that stops on its own owner's death needs no signal)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    drainer = Drainer(folder)
    while not stop.exists() and process_alive(owner):
        if drainer.drain() == 0:
            time.sleep(POLL_S)
    drainer.drain()


# ----------------------------------------------------------------------------- the workflow's side


def _stop_file(folder: Path) -> Path:
    """The file that tells the drainer of this workflow process to finish."""
    return folder / f"stop-{os.getpid()}"


def start_drainer(folder: Path, log: Path, params: str) -> subprocess.Popen:
    """Start `modeconn drain-journal` for this process (the workflow) in the background and point
    the jobs it starts at `folder` (the environment they inherit)."""
    folder.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    stop = _stop_file(folder)
    stop.unlink(missing_ok=True)
    with open(log, "a") as out:
        proc = subprocess.Popen(["modeconn", "drain-journal", "--params", params, "--folder", str(folder), "--owner", owner_id(), "--stop", str(stop)],
                                stdout=out, stderr=subprocess.STDOUT)
    os.environ[JOURNAL_ENV] = str(folder)
    return proc


def stop_drainer(proc: subprocess.Popen, folder: Path, log: Path, timeout_s: float = 600) -> None:
    """Let the drainer write what is left and wait for it; a failure names its log."""
    stop = _stop_file(folder)
    stop.touch()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = f"killed after {timeout_s:.0f} s"
    stop.unlink(missing_ok=True)
    if code != 0:
        raise RuntimeError(f"modeconn drain-journal failed ({code}); see {log}. The records left in {folder} are written by the next run.")
