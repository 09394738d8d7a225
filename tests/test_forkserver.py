"""The fork server (forkserver.py): a job run through it is the job run alone, and it dies as that job would.

Every test starts the real server (`python -m modeconn.forkserver`) and runs the real `modeconn`
console command against it, in a temporary working directory, with and without the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modeconn import forkserver
from modeconn.checkpoint import load

pytestmark = pytest.mark.skipif(not forkserver.available(), reason="the fork server needs Linux")

BIN = Path(sys.executable).parent / "modeconn"
PARAMS = {
    "data": {"name": "mnist1d", "num_samples": 500},
    "model": {"name": "mlp", "depth": 1, "width": 16},
    "train": {"duration": "2ep", "batch_size": 50},
    "seeds": {"interpolation_points": 5},
    "tracking": {"enabled": False},
}


def start_server(folder: Path) -> tuple[subprocess.Popen, str, Path]:
    """A server listening at folder/fork.sock, logging to folder/server.log: (process, address, log)."""
    address, log = str(folder / "fork.sock"), folder / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "modeconn.forkserver", address], stdout=out, stderr=subprocess.STDOUT,
                                env=client_env(None))
    deadline = time.monotonic() + 300
    while not os.path.exists(address) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(address), log.read_text()
    return proc, address, log


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running server: (socket address, its log)."""
    proc, address, log = start_server(tmp_path_factory.mktemp("server"))
    yield address, log
    proc.terminate()
    proc.wait(timeout=60)
    assert not os.path.exists(address), "the server removes its socket when it stops"


def client_env(address: str | None, env: dict | None = None) -> dict:
    """This environment with the server at `address` (None: no server) and `env` on top."""
    environ = {k: v for k, v in os.environ.items() if k != forkserver.ADDRESS_ENV} | (env or {})
    return environ if address is None else environ | {forkserver.ADDRESS_ENV: address}


def modeconn(cwd: Path, *args: str, address: str | None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], cwd=cwd, env=client_env(address, env), capture_output=True, text=True, timeout=600)


def served_pids(log: Path, command: str, cwd: Path) -> list[int]:
    """Pids of the children the server started for `modeconn <command>` in `cwd` (its log)."""
    return [int(line.split()[3].rstrip(":")) for line in log.read_text().splitlines()
            if line.endswith(f"modeconn {command} ({cwd})")]


def exit_status(log: Path, pid: int) -> int | None:
    for line in log.read_text().splitlines():
        if line.startswith(f"fork server: pid {pid}: exit status "):
            return int(line.rsplit(" ", 1)[1])
    return None


def job(cwd: Path, address: str | None, *args: str, params: dict = PARAMS, env: dict | None = None) -> subprocess.CompletedProcess:
    return modeconn(cwd, *args, "--params", json.dumps(params), "--threads", "1", "--device", "cpu", address=address, env=env)


def test_a_job_through_the_server_writes_what_it_writes_alone(server, tmp_path):
    """Data, training and a path with relative paths (the client's working directory), alone and
    through the server: the same files, byte for byte, and the same exit code."""
    address, log = server
    for where, via in (("alone", None), ("served", address)):
        cwd = tmp_path / where
        cwd.mkdir()
        assert job(cwd, via, "prepare-data", "--out", "data.safetensors").returncode == 0
        assert job(cwd, via, "train-seeds", "--seeds", "0", "1", "--data", "data.safetensors", "--out-dir", "pop").returncode == 0
        out = job(cwd, via, "interpolate", "--data", "data.safetensors", "--a", "pop/seed0.safetensors", "--b", "pop/seed1.safetensors",
                  "--out", "pair.csv")
        assert out.returncode == 0, out.stderr
    alone, served = tmp_path / "alone", tmp_path / "served"
    assert (served / "pair.csv").read_bytes() == (alone / "pair.csv").read_bytes()
    assert (served / "data.safetensors").read_bytes() == (alone / "data.safetensors").read_bytes()
    for seed in ("seed0", "seed1"):
        a, b = load(alone / f"pop/{seed}.safetensors"), load(served / f"pop/{seed}.safetensors")
        assert a.meta == b.meta and all(a.params[k].equal(b.params[k]) for k in a.params)
    # each served job ran in a child of the server, and none ran there for the alone ones
    assert [len(served_pids(log, c, served)) for c in ("prepare-data", "train-seeds", "interpolate")] == [1, 1, 1]
    assert served_pids(log, "train-seeds", alone) == []


@pytest.mark.parametrize("args", [("--help",), ("validate", "--params", '{"train": {"lr": "fast"}}'), ("no-such-command",),
                                  ("interpolate", "--params", '{"tracking": {"enabled": false}}', "--data", "missing.safetensors", "--a", "a", "--b", "b", "--out", "x.csv")])
def test_exit_code_and_streams_are_the_commands(server, tmp_path, args):
    """Help, a bad key (exit 2, named), an unknown command (argparse), a missing file (exit 1):
    the same exit code, stdout and stderr through the server as alone."""
    address, _ = server
    alone, served = modeconn(tmp_path, *args, address=None), modeconn(tmp_path, *args, address=address)
    assert (served.returncode, served.stdout, served.stderr) == (alone.returncode, alone.stdout, alone.stderr)
    assert alone.returncode == {"--help": 0, "validate": 2, "no-such-command": 2, "interpolate": 1}[args[0]]


def test_the_job_gets_the_clients_environment(server, tmp_path):
    """A job journaling its MLflow records (journal.py) writes into the folder the client's
    environment names, as the process the client's pid journal header says is the server's child."""
    address, log = server
    params = {**PARAMS, "tracking": {"enabled": True, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "t"}}
    assert modeconn(tmp_path, "init-tracking", "--params", json.dumps(params), address=None).returncode == 0
    assert job(tmp_path, address, "prepare-data", "--out", "data.safetensors", params=params).returncode == 0
    journal = tmp_path / "journal"
    journal.mkdir()
    out = job(tmp_path, address, "train-seeds", "--seeds", "0", "--data", "data.safetensors", "--out-dir", "pop", params=params,
              env={"MODECONN_TRACKING_JOURNAL": str(journal)})
    assert out.returncode == 0, out.stderr
    files = list(journal.glob("*.jsonl"))
    assert len(files) == 1
    header = json.loads(files[0].read_text().splitlines()[0])
    assert header["op"] == "job" and served_pids(log, "train-seeds", tmp_path) == [int(header["owner"].split(":")[0])]


def long_job(tmp_path: Path, address: str, log: Path) -> tuple[subprocess.Popen, int]:
    """A training of many epochs started through the server: the client and its job's pid."""
    assert job(tmp_path, None, "prepare-data", "--out", "data.safetensors").returncode == 0
    params = {**PARAMS, "train": {**PARAMS["train"], "duration": "100000ep"}}
    client = subprocess.Popen([str(BIN), "train-seeds", "--params", json.dumps(params), "--seeds", "0", "--data", "data.safetensors",
                               "--out-dir", "pop", "--threads", "1"], cwd=tmp_path, env=client_env(address),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        pids = served_pids(log, "train-seeds", tmp_path)
        if pids:
            return client, pids[0]
        assert client.poll() is None, "the job ended before it could be signalled"
        time.sleep(0.02)
    raise AssertionError("the server did not start the job")


def wait_for_status(log: Path, pid: int) -> int:
    deadline = time.monotonic() + 120
    while (status := exit_status(log, pid)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return status


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_client_reaches_its_job(server, tmp_path, sig):
    """Snakemake stopping a job signals its process: the job gets the signal and the client ends
    as the job did (killed by SIGTERM; SIGINT: Python's KeyboardInterrupt, exit 130)."""
    address, log = server
    client, pid = long_job(tmp_path, address, log)
    client.send_signal(sig)
    code = client.wait(timeout=120)
    status = wait_for_status(log, pid)
    assert status == code == (-signal.SIGTERM if sig == signal.SIGTERM else 130)
    assert not (tmp_path / "pop/seed0.safetensors").exists()


def test_killing_the_client_kills_its_job(server, tmp_path):
    """kill -9 of a job's process (the client) leaves no job running on in the server."""
    address, log = server
    client, pid = long_job(tmp_path, address, log)
    client.kill()
    client.wait(timeout=60)
    assert wait_for_status(log, pid) == -signal.SIGKILL


def test_without_a_server_the_command_runs_itself(tmp_path):
    """No server listening at the address (not started yet, stopped), or switched off: the command
    runs in its own process, with the same result."""
    for address in (str(tmp_path / "nobody.sock"), forkserver.OFF):
        out = modeconn(tmp_path, "validate", "--params", "{}", address=address)
        assert out.returncode == 0 and "interpolation_points" in out.stdout, out.stderr


def test_a_dead_server_takes_its_jobs_and_the_client_says_so(tmp_path):
    """The server killed (kill -9) while a job runs: the job dies with it (PR_SET_PDEATHSIG) and
    the client fails, naming the server."""
    proc, address, log = start_server(tmp_path)
    client, pid = long_job(tmp_path, address, log)
    proc.kill()
    proc.wait(timeout=60)
    assert client.wait(timeout=120) == 1
    deadline = time.monotonic() + 10  # the job alone would train for minutes
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(pid), "the job outlived its server"


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_client_of_another_import_path_runs_the_command_itself(server, tmp_path):
    """The server's children have its modules: a client with another PYTHONPATH (or Python) is
    refused, and its command runs in its own process, with its own import path."""
    address, log = server
    refused = log.read_text().count("refused")
    out = modeconn(tmp_path, "validate", "--params", "{}", address=address, env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0 and "interpolation_points" in out.stdout, out.stderr
    assert log.read_text().count("refused") == refused + 1
