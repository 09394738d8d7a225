"""Stages through the command line, in temporary directories, tracking off: data → train → paths → report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from modeconn import checkpoint
from modeconn.cli import main
from modeconn.config import Config
from modeconn.core.population import evaluate
from modeconn.data import load_dataset
from modeconn.models import build_model

PARAMS = {
    "data": {"name": "mnist1d", "num_samples": 500},
    "model": {"name": "mlp", "depth": 1, "width": 16},
    "train": {"duration": "2ep", "batch_size": 50, "checkpoint_steps": ["0it", "4it"]},
    "seeds": {"interpolation_points": 5},
    "tracking": {"enabled": False},
}


def run(*args: str, params: dict = PARAMS) -> int:
    return main([*args, "--params", json.dumps(params), "--threads", "1", "--device", "cpu"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("stages")
    assert run("prepare-data", "--out", str(tmp / "data.safetensors")) == 0
    assert run("train-seeds", "--seeds", "0", "1", "--data", str(tmp / "data.safetensors"), "--out-dir", str(tmp / "pop")) == 0
    return tmp


def test_checkpoints_describe_themselves(trained):
    meta = checkpoint.read_meta(trained / "pop/seed1.safetensors")
    assert meta["seed"] == 1 and meta["seeds"] == {"init": 1, "data": 1, "augment": 1}
    assert meta["step"] == meta["total_steps"] == 2 * meta["steps_per_epoch"]
    assert meta["config"]["train"]["duration"] == "2ep" and meta["config"]["model"]["width"] == 16
    assert set(meta["code"]) == {"package", "git_commit", "source_sha256"}
    early = checkpoint.load(trained / "pop/seed0.step4.safetensors")
    assert early.meta["step"] == 4 and early.optimizer  # optimizer state travels with step checkpoints
    assert (trained / "pop/seed0.step0.safetensors").exists()


def test_interpolation_endpoints_are_the_trained_networks(trained):
    out = trained / "pair.csv"
    assert run("interpolate", "--data", str(trained / "data.safetensors"), "--a", str(trained / "pop/seed0.safetensors"),
               "--b", str(trained / "pop/seed1.safetensors"), "--out", str(out)) == 0
    table = pd.read_csv(out)
    assert len(table) == 2 * 5 and set(table.split) == {"train", "test"}
    assert not table.bn_reset.any()
    data = load_dataset(trained / "data.safetensors")
    cfg = Config.from_dict(PARAMS)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    for seed, alpha in ((0, 0.0), (1, 1.0)):
        ck = checkpoint.load(trained / f"pop/seed{seed}.safetensors")
        stacked = {k: v[None] for k, v in ck.params.items()}
        direct = evaluate(model, stacked, {k: v[None] for k, v in ck.buffers.items()}, data.x_test, data.y_test)
        row = table[(table.split == "test") & (table.alpha == alpha)].iloc[0]
        assert row.error == pytest.approx(direct["error"].item())
        assert row.loss == pytest.approx(direct["loss"].item(), rel=1e-5)


def test_linear_path_between_identical_networks_has_zero_barrier(trained):
    out = trained / "self.csv"
    seed0 = str(trained / "pop/seed0.safetensors")
    assert run("interpolate", "--data", str(trained / "data.safetensors"), "--a", seed0, "--b", seed0, "--out", str(out)) == 0
    assert run("report-seeds", "--out-dir", str(trained / "self_report"), str(out)) == 0
    metrics = json.loads((trained / "self_report/metrics.json").read_text())
    for split in ("train", "test"):
        assert metrics["barrier"][split]["error"]["mean"] == pytest.approx(0.0, abs=1e-12)
        assert metrics["barrier"][split]["loss"]["mean"] == pytest.approx(0.0, abs=1e-5)


def test_report_over_pairs(trained):
    csv = trained / "pair.csv"
    if not csv.exists():
        pytest.skip("needs test_interpolation_endpoints_are_the_trained_networks")
    out = trained / "report"
    assert run("report-seeds", "--out-dir", str(out), str(csv)) == 0
    for name in ("barriers.csv", "barriers.md", "interpolation.csv", "interpolation.png", "metrics.json"):
        assert (out / name).stat().st_size > 0
    pairs = pd.read_csv(out / "barriers.csv")
    assert set(pairs.metric) == {"loss", "error"} and (pairs.barrier_definition == "max_minus_mean").all()
    points = pd.read_csv(csv)
    for r in pairs.itertuples():
        values = points[points.split == r.split].sort_values("alpha")[r.metric].tolist()
        assert r.barrier == pytest.approx(max(values) - 0.5 * (values[0] + values[-1]), abs=1e-12)
    assert "| split   | metric   | barrier (max_minus_mean)" in (out / "barriers.md").read_text()


def test_report_refuses_a_non_finite_measurement(trained, tmp_path, capsys):
    """A NaN in an input table (edited, or written elsewhere) stops the report naming the file;
    no report file is written (the evaluation jobs never write one: tests/test_faults.py)."""
    csv = trained / "pair.csv"
    if not csv.exists():
        pytest.skip("needs test_interpolation_endpoints_are_the_trained_networks")
    points = pd.read_csv(csv)
    points.loc[3, "loss"] = float("nan")
    bad = tmp_path / "seed0-seed1.csv"
    points.to_csv(bad, index=False)
    out = tmp_path / "report"
    assert run("report-seeds", "--out-dir", str(out), str(bad)) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "non-finite loss" in err
    assert not out.exists() or not any(out.iterdir())


def test_read_tables_checks_only_the_rows_that_hold_measurements(tmp_path):
    """A curve plane's coordinate rows carry no measurement (NaN by design); its grid rows must."""
    from modeconn.io import NonFiniteError, read_tables

    path = tmp_path / "plane.csv"
    pd.DataFrame({"role": ["anchor", "grid", "grid"], "loss": [float("nan"), 0.5, 0.7]}).to_csv(path, index=False)
    assert len(read_tables([path], measured=lambda f: f.role == "grid")) == 3
    with pytest.raises(NonFiniteError, match="non-finite loss"):
        read_tables([path])


def test_report_uses_the_configured_barrier_definition(trained):
    csv = trained / "pair.csv"
    if not csv.exists():
        pytest.skip("needs test_interpolation_endpoints_are_the_trained_networks")
    out = trained / "report_entezari"
    params = {**PARAMS, "evaluation": {"barrier": "entezari"}}
    assert run("report-seeds", "--out-dir", str(out), str(csv), params=params) == 0
    pairs = pd.read_csv(out / "barriers.csv")
    assert (pairs.barrier_definition == "entezari").all()
    points = pd.read_csv(csv)
    for r in pairs.itertuples():
        path = points[points.split == r.split].sort_values("alpha")
        f, a = path[r.metric].to_numpy(), path.alpha.to_numpy()
        assert r.barrier == pytest.approx(max(f - ((1 - a) * f[0] + a * f[-1])), abs=1e-12)
    md = (out / "barriers.md").read_text()
    assert "barrier (`entezari`)" in md and "| barrier (entezari)" in md and "max_minus_mean" not in md
    assert json.loads((out / "metrics.json").read_text())["barrier_definition"] == "entezari"


def test_damaged_checkpoint_fails_cleanly_and_writes_nothing(trained, capsys):
    bad = trained / "bad.safetensors"
    bad.write_bytes((trained / "pop/seed0.safetensors").read_bytes()[:1000])
    out = trained / "never.csv"
    code = run("interpolate", "--data", str(trained / "data.safetensors"), "--a", str(bad),
               "--b", str(trained / "pop/seed1.safetensors"), "--out", str(out))
    assert code == 1
    assert str(bad) in capsys.readouterr().err
    assert not out.exists() and not list(trained.glob(".never.csv*"))


def test_bad_params_name_the_key(capsys):
    assert run("validate", params={"train": {"lr": "fast"}}) == 2
    assert "train.lr" in capsys.readouterr().err


def test_console_entry_point_help():
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([str(bin_dir / "modeconn"), "--help"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0
    for command in ("train-seeds", "interpolate", "report-seeds", "prepare-data", "init-tracking"):
        assert command in out.stdout


def test_training_stage_is_deterministic(tmp_path, trained):
    assert run("train-seeds", "--seeds", "1", "--data", str(trained / "data.safetensors"), "--out-dir", str(tmp_path)) == 0
    alone = checkpoint.load(tmp_path / "seed1.safetensors").params
    together = checkpoint.load(trained / "pop/seed1.safetensors").params
    for name in alone:
        torch.testing.assert_close(alone[name], together[name], atol=1e-5, rtol=1e-4)


def test_checkpoint_of_another_architecture_is_refused(trained, capsys):
    wider = {**PARAMS, "model": {"name": "mlp", "depth": 1, "width": 32}}
    code = run("interpolate", "--data", str(trained / "data.safetensors"), "--a", str(trained / "pop/seed0.safetensors"),
               "--b", str(trained / "pop/seed1.safetensors"), "--out", str(trained / "wrong.csv"), params=wider)
    assert code == 1
    assert "configured model" in capsys.readouterr().err
    assert not (trained / "wrong.csv").exists()


def test_batchnorm_paths_recompute_statistics_and_say_so(trained, tmp_path):
    bn = {**PARAMS, "model": {"name": "mlp", "depth": 1, "width": 16, "norm": "bn"}}
    data = str(trained / "data.safetensors")
    assert run("train-seeds", "--seeds", "0", "1", "--data", data, "--out-dir", str(tmp_path), params=bn) == 0
    ck = checkpoint.load(tmp_path / "seed0.safetensors")
    assert "norms.0.running_mean" in ck.buffers and int(ck.buffers["norms.0.num_batches_tracked"]) > 0
    out = tmp_path / "pair.csv"
    assert run("interpolate", "--data", data, "--a", str(tmp_path / "seed0.safetensors"), "--b", str(tmp_path / "seed1.safetensors"),
               "--out", str(out), params=bn) == 0
    table = pd.read_csv(out)
    assert table.bn_reset.all()
    assert run("report-seeds", "--out-dir", str(tmp_path / "report"), str(out)) == 0
    assert "recomputed on training batches" in (tmp_path / "report/barriers.md").read_text()


def test_imported_sources_follow_the_package_imports():
    """The code hash of a job covers what it imports, and nothing of the other families."""
    from modeconn.families import names
    from modeconn.provenance import imported_sources

    seeds = imported_sources("families.seeds.stage")
    assert {"families/seeds/stage.py", "jobs.py", "train.py", "core/population.py", "models.py", "config.py"} <= set(seeds)
    assert not any(f.startswith("families/") and not f.startswith(("families/seeds/", "families/__init__")) for f in seeds)
    report = imported_sources("families.seeds.report")
    assert "core/barrier.py" in report and "train.py" not in report
    # no family's stage imports the seeds family's stage for shared scaffolding (that lives in jobs.py),
    # so editing it reruns only the seeds and what trains seeds of its own (the width sweep)
    importers = [f for f in names() if f not in ("seeds", "rebasin")
                 and "families/seeds/stage.py" in imported_sources(f"families.{f}.stage")]
    assert importers == []


@pytest.mark.parametrize("body, code, out, err", [
    ("print('written'); return 3", 3, "written\n", ""),
    ("raise RuntimeError('boom')", 1, "", "RuntimeError: boom"),
    ("import sys; sys.exit('usage: bad')", 1, "", "usage: bad"),
    ("import sys; sys.exit(None)", 0, "", ""),
])
def test_console_entry_exits_with_mains_code_and_flushed_streams(body, code, out, err):
    """`modeconn` skips the interpreter's teardown (os._exit) but keeps what Python's own exit
    would give: the exit code, everything printed, the traceback of an uncaught error."""
    script = "from modeconn import cli\ndef fake():\n    " + body + "\ncli.main = fake\ncli.entry()\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == code and proc.stdout == out and err in proc.stderr
    assert ("Traceback" in proc.stderr) == (code == 1 and "boom" in err)
