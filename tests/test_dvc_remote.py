"""DVC remote round trip: the smoke preset's `data`, `seeds` and `instability` stages run under DVC in
a fresh git repository, `dvc push` to a folder remote, `git clone` + `dvc pull` elsewhere; then
the clone agrees with the commit: `dvc status` is clean, and after recording the pulled state as
Snakemake's own (`snakemake --touch --forceall <target>`) `snakemake -n` has nothing to do, while a
changed parameter still reruns exactly the jobs it touches. Bytecode that running the code leaves
in src/ (the stages' code dependency) must not count as a change (.dvcignore).

Why the touch: DVC restores file contents, not modification times or Snakemake's metadata
(.snakemake/ is per machine, not versioned). Straight after `dvc pull` the files carry the order
in which DVC happened to write them, so Snakemake's mtime trigger reruns jobs whose inputs were
written after their outputs, and with no metadata a changed parameter would trigger nothing. With
`dvc status` clean, the pulled outputs are exactly what the committed code and params make, so
`--touch --forceall` may rightly record them: it touches every output in DAG order and writes the
metadata (params, code hash, inputs) of every job.

Opt-in (`bash scripts/test.sh -m slow`, a few minutes): needs git and dvc (pip), nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modeconn.config import load_yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "params.yaml", "workflow", "config", "profiles", "dvc.yaml", ".gitignore", ".dvcignore"]
STAGE = "instability"  # with its upstream stages data and seeds
TIMEOUT = 3600

if shutil.which("git") is None or shutil.which("dvc") is None:
    pytest.skip("needs git and dvc on PATH", allow_module_level=True)


def env() -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost",
    }


def sh(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=TIMEOUT)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def would_run(dry_run_output: str) -> dict[str, int]:
    """{rule: count} from the job table of `snakemake -n`; {} when there is nothing to do."""
    if "Nothing to be done" in dry_run_output:
        return {}
    table = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", dry_run_output, re.S)
    assert table, dry_run_output[-3000:]
    return {name: int(n) for name, n in (line.split() for line in table.group(1).splitlines() if line.strip())}


def test_dvc_remote_round_trip(tmp_path):
    a, b, store = tmp_path / "a", tmp_path / "b", tmp_path / "store"
    a.mkdir()
    for name in COPY:
        src = ROOT / name
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, a / name)
    # the stages' code deps (the jobs themselves run the installed package)
    shutil.copytree(ROOT / "src", a / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # DVC reads params.yaml only: the smoke preset's values go into it
    params = load_yaml(a / "params.yaml", a / "config/smoke.yaml")  # merged as the workflow merges presets
    (a / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    sh(a, "git", "init", "-q")
    sh(a, "dvc", "init", "-q")
    sh(a, "git", "add", "-A")
    sh(a, "git", "commit", "-qm", "workflow")
    sh(a, "dvc", "repro", STAGE)
    sh(a, "git", "add", "-A")
    sh(a, "git", "commit", "-qm", "results")
    sh(a, "dvc", "remote", "add", "-d", "store", str(store))
    sh(a, "git", "commit", "-qam", "remote")
    sh(a, "dvc", "push", "--with-deps", STAGE)

    sh(tmp_path, "git", "clone", "-q", str(a), str(b))
    sh(b, "dvc", "pull", "--with-deps", STAGE)
    # checkpoints and prepared data moved, byte for byte; the MLflow store did not (not DVC's business)
    results = params["run"]["results"]
    moved = [p.relative_to(a) for p in (a / results).rglob("*.safetensors")]
    for folder in ("data", "seeds", "instability"):
        assert any(str(p).startswith(f"{results}/{folder}/") for p in moved), folder
    for rel in moved:
        assert (b / rel).read_bytes() == (a / rel).read_bytes(), rel
    assert (a / "mlflow.db").exists() and not (b / "mlflow.db").exists()

    status = sh(b, "dvc", "status", "--with-deps", STAGE).stdout
    assert "Data and pipelines are up to date" in status, status
    # running the code from this checkout leaves bytecode beside it: not a change of the code dep
    cache = b / "src/modeconn/__pycache__"
    cache.mkdir()
    (cache / "tracking.cpython-311.pyc").write_bytes(b"bytecode")
    status = sh(b, "dvc", "status", "--with-deps", STAGE).stdout
    assert "Data and pipelines are up to date" in status, f"add __pycache__/ and *.pyc to .dvcignore:\n{status}"

    # Straight after the pull Snakemake sees DVC's write order, not the DAG's (reported, not asserted:
    # it depends on the order DVC wrote the files in).
    before = would_run(sh(b, "snakemake", "-n", STAGE).stdout)
    print(f"\nsnakemake -n {STAGE} straight after dvc pull would run: {before or 'nothing'}")

    # Record the pulled state as Snakemake's own; then nothing reruns for the unchanged commit.
    sh(b, "snakemake", "--touch", "--forceall", "--cores", "1", STAGE)
    after = sh(b, "snakemake", "-n", STAGE).stdout
    assert would_run(after) == {}, after[-3000:]
    assert "missing provenance" not in after, after[-3000:]
    assert "Data and pipelines are up to date" in sh(b, "dvc", "status", "--with-deps", STAGE).stdout

    # ...and a changed parameter reruns exactly what it touches, in Snakemake and in DVC
    params["instability"]["points"] += 2
    (b / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = would_run(sh(b, "snakemake", "-n", STAGE).stdout)
    assert changed == {"fork_instability": len(params["instability"]["steps"]), "report_instability": 1, STAGE: 1}, changed
    status = sh(b, "dvc", "status", "--with-deps", STAGE).stdout
    assert "instability:" in status and "seeds:" not in status and "data:" not in status, status
