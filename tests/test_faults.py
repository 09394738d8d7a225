"""Faults, as a hostile user or a crashing machine produces them, on a tiny run through the CLI:
a diverging training fails loudly and writes nothing; a training job killed with -9 resumes from
its last resume point and ends with the same checkpoints, bit for bit, as an uninterrupted one; an
evaluation of overflowing weights fails naming its input checkpoints and writes nothing.
(Bad values: tests/test_config.py and the workflow test; flipped bytes in data and checkpoint
headers: tests/test_data.py and tests/test_checkpoint.py; kill -9 of the whole workflow and stale
locks: tests/test_workflow.py; interrupted forks, lottery levels, FGE/SWA and fits resuming bit for
bit: tests/test_resume.py.)"""

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
    point = tmp_path / ".killed.resume" / "population.resume.safetensors"
    deadline = time.monotonic() + 600
    while not point.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the training finished before it could be killed"
    assert not (killed / "seed0.safetensors").exists()

    resumed = subprocess.run(train(tmp, data, killed), env=env(), capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming seeds [0, 1] from its resume point at step" in resumed.stderr
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


# ------------------------------------------------------------------------------------ evaluations check their outputs


def test_measurements_must_be_finite_and_nothing_is_written_otherwise(tmp_path):
    """io's one check of evaluation tables: loss, error, NLL, trace and barrier columns, finite or refused."""
    import pandas as pd

    from modeconn.io import NonFiniteError, write_csv, write_csvs

    inputs = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    good = pd.DataFrame({"alpha": [0.0, 1.0], "split": "test", "loss": [0.5, 0.6], "error": [0.1, 0.2],
                         "t": [float("nan")] * 2, "disagree_a": [float("nan"), 0.3], "lambda_min": [float("nan"), -1.0]})
    write_csv(tmp_path / "good.csv", good, inputs=inputs)  # NaN outside the measurements is allowed (by design there)
    assert pd.read_csv(tmp_path / "good.csv").shape == (2, 7)
    for column, value in (("loss", float("nan")), ("error", float("inf")), ("test_loss", float("-inf")), ("ensemble_nll", float("nan")),
                          ("trace", float("nan")), ("barrier", float("nan"))):
        bad = good.assign(**{column: [0.5, value]})
        out = tmp_path / f"bad_{column}.csv"
        with pytest.raises(NonFiniteError, match=rf"{out}: refusing to write non-finite {column} \(NaN or infinity\) in 1 of 2 rows, "
                                                 rf"first at alpha=1.0, split=test.*from {inputs[0]}, {inputs[1]} give non-finite values"):
            write_csv(out, bad, inputs=inputs)
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}*"))
        write_csv(out, bad)  # without inputs (a report's own table) the writer does not check
        assert out.exists()
    # rows: a plane's coordinate rows carry no loss; its grid rows must
    plane = pd.DataFrame({"role": ["grid", "curve"], "loss": [0.5, float("nan")], "error": [0.1, float("nan")]})
    write_csv(tmp_path / "plane.csv", plane, inputs=inputs, rows=plane.role == "grid")
    grid = plane.assign(role="grid")  # the same NaN in a grid row is refused
    with pytest.raises(NonFiniteError, match="non-finite loss, error"):
        write_csv(tmp_path / "plane2.csv", grid, inputs=inputs, rows=grid.role == "grid")
    # several tables: all are checked before the first is written
    with pytest.raises(NonFiniteError, match="second.csv"):
        write_csvs({tmp_path / "first.csv": good, tmp_path / "second.csv": good.assign(loss=[float("nan")] * 2)}, inputs=inputs)
    assert not (tmp_path / "first.csv").exists()


def test_evaluating_an_overflowing_checkpoint_fails_naming_the_inputs_and_writes_nothing(tmp_path, capsys):
    """Weights ×1e30 (a valid checkpoint: its digest is right) overflow the logits: the interpolation
    job fails naming both checkpoints instead of writing a table of NaN."""
    from modeconn.cli import main

    p = {"data": {"num_samples": 400}, "model": {"depth": 1, "width": 16}, "train": {"batch_size": 50, "duration": "1ep"},
         "seeds": {"interpolation_points": 3}, "tracking": {"enabled": False}}
    args = ["--params", json.dumps(p), "--threads", "1", "--device", "cpu"]
    data = tmp_path / "data.safetensors"
    assert main(["prepare-data", *args, "--out", str(data)]) == 0
    assert main(["train-seeds", *args, "--seeds", "0", "1", "--data", str(data), "--out-dir", str(tmp_path / "pop")]) == 0
    a, seed1 = tmp_path / "pop/seed0.safetensors", checkpoint.load(tmp_path / "pop/seed1.safetensors")
    huge = tmp_path / "huge.safetensors"
    checkpoint.save(huge, checkpoint.Checkpoint({k: v * 1e30 for k, v in seed1.params.items()}, seed1.buffers, seed1.meta))
    ok = tmp_path / "ok.csv"
    assert main(["interpolate", *args, "--data", str(data), "--a", str(a), "--b", str(tmp_path / "pop/seed1.safetensors"), "--out", str(ok)]) == 0
    out = tmp_path / "pair.csv"
    capsys.readouterr()
    assert main(["interpolate", *args, "--data", str(data), "--a", str(a), "--b", str(huge), "--out", str(out), "--rule", "interpolate"]) == 1
    err = capsys.readouterr().err
    assert f"modeconn interpolate (rule interpolate): {out}: refusing to write non-finite loss" in err
    assert f"the networks evaluated from {a}, {huge} give non-finite values" in err
    assert not out.exists() and not list(tmp_path.glob(".pair.csv*"))
