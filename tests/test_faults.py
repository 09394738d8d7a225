"""Faults, as a hostile user or a crashing machine produces them, on a tiny run through the CLI:
a diverging training fails loudly and writes nothing; a training job killed with -9 resumes from
its last resume point and ends with the same checkpoints, bit for bit, as an uninterrupted one.
(Bad values: tests/test_config.py and the workflow test; flipped bytes in data and checkpoint
headers: tests/test_data.py and tests/test_checkpoint.py; kill -9 of the whole workflow and stale
locks: tests/test_workflow.py.)"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modeconn import checkpoint

BIN = Path(sys.executable).parent / "modeconn"


def params(tmp: Path, **train) -> str:
    return json.dumps({
        "data": {"num_samples": 600},
        "model": {"depth": 2, "width": 32},
        "train": {"batch_size": 64, "duration": "60ep", "checkpoint_steps": ["0it", "30ep"], **train},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "faults"},
    })


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


def run(*args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN), *args], env=env(**extra), capture_output=True, text=True, timeout=1200)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("faults")
    out = tmp / "mnist1d.safetensors"
    run("prepare-data", "--params", params(tmp), "--out", str(out))
    run("init-tracking", "--params", params(tmp))
    return out


def train(tmp: Path, data: Path, out: Path, p: str | None = None, **extra: str) -> list[str]:
    return [str(BIN), "train-seeds", "--params", p or params(tmp), "--seeds", "0", "1", "--data", str(data),
            "--out-dir", str(out), "--threads", "1", "--rule", "train_seeds", "--wildcards", "population=0"]


def test_divergence_fails_the_job_names_it_and_writes_no_checkpoint(data, tmp_path):
    tmp = data.parent
    out = tmp_path / "diverged"
    proc = subprocess.run(train(tmp, data, out, params(tmp, lr=1e30, optimizer="sgd")), env=env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 1
    assert "modeconn train-seeds (rule train_seeds, population=0): training diverged at step" in proc.stderr
    assert "init seeds [0, 1]" in proc.stderr and "lower train.lr" in proc.stderr
    assert not out.exists() or not list(out.glob("seed*.safetensors"))  # the finite step-0 checkpoint waits aside, no final
    db = sqlite3.connect(tmp / "mlflow.db")
    status = db.execute("select status from runs where name = 'train seeds [0, 1]' order by start_time desc limit 1").fetchone()[0]
    assert status == "FAILED"


def test_killed_training_resumes_bit_for_bit(data, tmp_path):
    tmp = data.parent
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(train(tmp, data, clean), env=env(), check=True, capture_output=True, timeout=1200)

    # a resume point after every epoch; kill -9 as soon as the first one exists
    proc = subprocess.Popen(train(tmp, data, killed), env=env(MODECONN_RESUME_EVERY_S="0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    point = tmp_path / ".killed.resume" / "seed1.resume.safetensors"
    deadline = time.monotonic() + 600
    while not point.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the training finished before it could be killed"
    assert not (killed / "seed0.safetensors").exists()

    resumed = subprocess.run(train(tmp, data, killed), env=env(), capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming seeds [0, 1] from their resume point at step" in resumed.stderr
    assert not (tmp_path / ".killed.resume").exists()  # cleaned up once complete
    names = sorted(p.name for p in clean.iterdir())
    assert names == sorted(p.name for p in killed.iterdir())
    assert {"seed0.safetensors", "seed0.step0.safetensors", "seed0.step210.safetensors"} <= set(names)
    for name in names:
        a, b = checkpoint.load(clean / name), checkpoint.load(killed / name)
        for part in ("params", "buffers", "optimizer"):
            da, db = getattr(a, part), getattr(b, part)
            assert da.keys() == db.keys()
            assert all(torch.equal(da[k], db[k]) for k in da), (name, part)
        assert a.meta["step"] == b.meta["step"]
