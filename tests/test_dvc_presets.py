"""DVC with presets: `dvc exp run $(modeconn dvc-params <preset>.yaml)` runs the pipeline with the
preset's values (never copied into params.yaml by hand), records them in the experiment, and keys
every DVC output to the preset's own folders (dvc.yaml is templated from the run section), so the
default run's outputs stay where they are. Runs the `data` stage only (seconds)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "params.yaml", "workflow", "config", "profiles", "dvc.yaml", ".gitignore", ".dvcignore"]

if shutil.which("git") is None or shutil.which("dvc") is None:
    pytest.skip("needs git and dvc on PATH", allow_module_level=True)


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_dvc_exp_run_with_a_preset_keeps_its_own_outputs(tmp_path):
    for name in COPY:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (tmp_path / "tiny.yaml").write_text("run: {name: tiny, results: results/tiny, reports: reports/tiny}\n"
                                        "data: {num_samples: 2000, seed: 7}\n")
    params_before = (tmp_path / "params.yaml").read_text()
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    sh(tmp_path, "git", "add", "-A")
    sh(tmp_path, "git", "commit", "-qm", "workflow")

    # a bad preset is refused naming the key before DVC is involved
    (tmp_path / "bad.yaml").write_text("run: {name: bad}\n")  # a named run in the default folders
    proc = subprocess.run([sys.executable, "-m", "modeconn.cli", "dvc-params", "bad.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "run.results" in proc.stderr
    flags = sh(tmp_path, sys.executable, "-m", "modeconn.cli", "dvc-params", "tiny.yaml").split()
    assert "--set-param=data.num_samples=2000" in flags and '--set-param=run.results="results/tiny"' in flags
    # what a user types: dvc exp run $(modeconn dvc-params tiny.yaml) data
    sh(tmp_path, "bash", "-c", f"dvc exp run {' '.join(map(shlex.quote, flags))} data")

    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["data"]
    assert [o["path"] for o in lock["outs"]] == ["results/tiny/data"]
    assert lock["params"]["params.yaml"]["data"]["num_samples"] == 2000
    assert (tmp_path / "results/tiny/data/mnist1d.safetensors").stat().st_size > 0
    assert not (tmp_path / "results/data").exists()  # the default run's folder is untouched
    # the experiment recorded the preset's values, and the pipeline agrees with them
    shown = sh(tmp_path, "dvc", "exp", "show", "--no-pager", "--csv")
    assert "tiny" in shown and "2000" in shown
    assert "Data and pipelines are up to date" in sh(tmp_path, "dvc", "status", "data")
    # the experiment's params stay applied in the workspace (README: git checkout params.yaml dvc.lock to go back)
    assert params_before != (tmp_path / "params.yaml").read_text()
