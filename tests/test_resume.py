"""Interrupted jobs resume bit for bit (modeconn.resume), and long loops write progress lines.

Every long job kind (instability forks, lottery levels, FGE and SWA, curves, AutoNEB, simplexes)
is run three times on tiny data, through its real stage function and real training: once
uninterrupted; once with a resume point at every boundary (MODECONN_RESUME_EVERY_S=0) and an
interruption right after the n-th point is written (as if the machine died then: the process
state is lost, only the files remain); then again, which must resume from that point and end with
the same outputs, tensor for tensor (torch.equal) and byte for byte (tables). The seeds' training
is killed with -9 in a subprocess in tests/test_faults.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
import torch

from modeconn import checkpoint, resume
from modeconn.cli import main
from modeconn.config import Config
from modeconn.jobs import Job

# One params.yaml-like text (config sections, several named like families: YAML, not a Python list of families).
# 300 training examples in batches of 50: 6 steps per epoch, 24 in all.
PARAMS = yaml.safe_load("""
data: {name: mnist1d, num_samples: 400}
model: {name: mlp, depth: 1, width: 16}
train:
  optimizer: sgd
  lr: 0.05
  momentum: 0.9
  duration: 4ep
  batch_size: 50
  checkpoint_steps: [0it, 6it, 12it]
seeds: {count: 2}
instability:
  steps: [6it]
  trunks: 1
  pairs: 1
  points: 3
lottery: {seeds: 1, levels: 2, rewind_step: 6it}
fge: {start: 12it, cycle: 1ep, cycles: 2, lr1: 0.05, lr2: 0.0005}
swa: {start: 12it, duration: 2ep, lr: 0.01, every: 3it}
curves:
  duration: 3ep
  batch_size: 50
  points: 3
  ensemble_sizes: [2]
  grid: 2
  plane_examples: 50
neb:
  batch_size: 50
  dense_points: 3
  eval_examples: 100
  cycles:
  - {method: equal, insert: 1, steps: 4it, lr: 0.01}
  - {method: highest, insert: 1, steps: 4it, lr: 0.01}
simplex: {duration: 2ep, batch_size: 50, vertices: 3, eval_samples: 2, ensemble_samples: 2}
rebasin:
  methods: [ste]
  ste_steps: 2
  ste_batch_size: 50
  ste_eval_examples: 100
  activation_examples: 100
  repair_examples: 100
evaluation: {max_examples: 100}
tracking: {enabled: false}
""")
CFG = Config.from_dict(PARAMS)
JOB = Job(device="cpu", threads=1)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    """The data and two trained seeds (with step checkpoints at 0, 6 and 12) in one folder."""
    tmp = tmp_path_factory.mktemp("resume")
    args = ["--params", json.dumps(PARAMS), "--threads", "1", "--device", "cpu"]
    assert main(["prepare-data", *args, "--out", str(tmp / "data.safetensors")]) == 0
    assert main(["train-seeds", *args, "--seeds", "0", "1", "--data", str(tmp / "data.safetensors"), "--out-dir", str(tmp / "pop")]) == 0
    return tmp


class Interrupted(Exception):
    """Stands for the machine dying right after a resume point was written."""


def interrupted(monkeypatch, run, after: int) -> list[dict]:
    """Run `run()` with a resume point at every boundary, stopped right after the `after`-th point is
    written; returns the states of the points written."""
    written = []
    real = resume.Resume.save

    def save(self, name, tensors, state):
        real(self, name, tensors, state)
        written.append({"name": name, **state})
        if len(written) == after:
            raise Interrupted(f"stopped after resume point {after}")

    with monkeypatch.context() as m:
        m.setenv(resume.ENV, "0")
        m.setattr(resume.Resume, "save", save)
        with pytest.raises(Interrupted):
            run()
    return written


def assert_same_outputs(clean: list[Path], resumed: list[Path]) -> None:
    """Every checkpoint equal tensor for tensor (params, buffers, optimizer) and in its metadata,
    every other file (CSV, JSON) byte for byte."""
    assert len(clean) == len(resumed) and clean
    for a, b in zip(clean, resumed):
        assert a.name == b.name
        if a.suffix == ".safetensors":
            ca, cb = checkpoint.load(a), checkpoint.load(b)
            for part in ("params", "buffers", "optimizer"):
                ta, tb = getattr(ca, part), getattr(cb, part)
                assert ta.keys() == tb.keys(), (a.name, part)
                assert all(torch.equal(ta[k], tb[k]) for k in ta), (a.name, part)
            assert ca.meta == cb.meta, a.name
        else:
            assert a.read_bytes() == b.read_bytes(), a.name


def files(*roots: Path) -> list[Path]:
    """The files of the given folders (or the files themselves), sorted, hidden ones excluded."""
    out = []
    for root in roots:
        out += sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")) if root.is_dir() else [root]
    return out


def check_resumed(capsys, label: str, written: list[dict], output: Path) -> None:
    """The rerun said it resumed `label` from a point, and removed the resume folder when done."""
    assert written, "no resume point was written before the interruption"
    err = capsys.readouterr().err
    assert f"resuming {label} from its resume point at " in err, err[-2000:]
    assert not resume.folder(output).exists()


def interrupt_and_resume(monkeypatch, capsys, run, after: int, label: str, output) -> list[dict]:
    """run("clean"); run("killed") stopped right after its `after`-th resume point; run("killed")
    again. The rerun must say it resumed `label` (and remove the resume folder of `output(outputs)`)
    and leave outputs equal to the clean run's. Returns the states of the points written."""
    clean = run("clean")
    written = interrupted(monkeypatch, lambda: run("killed"), after=after)
    capsys.readouterr()
    killed = run("killed")
    check_resumed(capsys, label, written, output(killed))
    assert_same_outputs(clean, killed)
    return written


def seed_file(seeds: Path, s: int, step: int | None = None) -> Path:
    return seeds / "pop" / (f"seed{s}.safetensors" if step is None else f"seed{s}.step{step}.safetensors")


# ------------------------------------------------------------------------------------ training jobs


def test_instability_fork_resumes_bit_for_bit(seeds, tmp_path, monkeypatch, capsys):
    from modeconn.families.instability import stage

    def run(out):
        return stage.fork(CFG, "6it", seeds / "data.safetensors", [seeds / "pop"], out, JOB)

    run(tmp_path / "clean")
    written = interrupted(monkeypatch, lambda: run(tmp_path / "killed"), after=1)
    assert written[0]["step"] == 12 and not (tmp_path / "killed/paths.csv").exists()
    capsys.readouterr()
    run(tmp_path / "killed")
    check_resumed(capsys, "instability fork at 6it", written, tmp_path / "killed")
    assert_same_outputs(files(tmp_path / "clean"), files(tmp_path / "killed"))


def test_lottery_level_resumes_bit_for_bit_across_its_cohorts(seeds, tmp_path, monkeypatch, capsys):
    """At rewind step 6 the reinit member's fresh optimizer state trains as a second cohort: the
    interruption falls inside the second cohort, after the first one was saved as finished."""
    from modeconn.families.lottery import stage

    def run(out):
        return stage.level(CFG, 1, seeds / "data.safetensors", [seeds / "pop"], None, out, JOB)

    run(tmp_path / "clean")
    written = interrupted(monkeypatch, lambda: run(tmp_path / "killed"), after=4)
    assert [(w["name"], w["step"]) for w in written] == [("cohort0", 12), ("cohort0", 18), ("cohort0", 24), ("cohort1", 12)]
    capsys.readouterr()
    run(tmp_path / "killed")
    check_resumed(capsys, "lottery level 1", written, tmp_path / "killed")
    assert_same_outputs(files(tmp_path / "clean"), files(tmp_path / "killed"))


def test_fge_resumes_bit_for_bit_with_its_snapshots(seeds, tmp_path, monkeypatch, capsys):
    """The point at step 18 already holds the snapshot of step 16; the one of step 22 comes after."""
    from modeconn.families.fge import stage

    def run(name):
        stage.fge(CFG, seeds / "data.safetensors", [0, 1], [seeds / "pop"] * 2, tmp_path / name / "networks", tmp_path / name / "fge.csv", JOB)
        return files(tmp_path / name / "networks", tmp_path / name / "fge.csv")

    written = interrupt_and_resume(monkeypatch, capsys, run, after=1, label="fge seeds [0, 1]", output=lambda outs: tmp_path / "killed/networks")
    assert written[0]["step"] == 18 and written[0]["extra"] == {"steps": [16]}


def test_swa_resumes_bit_for_bit_with_its_running_average(seeds, tmp_path, monkeypatch, capsys):
    """The point at step 18 holds the average of the weights of step 15 only; 18, 21, 24 are added after."""
    from modeconn.families.fge import stage

    def run(name):
        stage.swa(CFG, seeds / "data.safetensors", [0, 1], [seeds / "pop"] * 2, tmp_path / name / "networks", tmp_path / name / "swa.csv", JOB)
        return files(tmp_path / name / "networks", tmp_path / name / "swa.csv")

    written = interrupt_and_resume(monkeypatch, capsys, run, after=1, label="swa seeds [0, 1]", output=lambda outs: tmp_path / "killed/networks")
    assert written[0]["step"] == 18 and written[0]["extra"] == {"averaged": 1}
    assert checkpoint.read_meta(tmp_path / "killed/networks/seed0.safetensors")["averaged"] == 4


# ------------------------------------------------------------------------------------ fits


def test_curve_training_resumes_bit_for_bit(seeds, tmp_path, monkeypatch, capsys):
    """Bends, Adam state and the position of the t stream come back from the point."""
    from modeconn.families.curves import stage

    def run(name):
        outs = [tmp_path / name / f"{kind}.safetensors" for kind in CFG.curves.kinds]
        stage.train(CFG, seeds / "data.safetensors", seed_file(seeds, 0), seed_file(seeds, 1), outs, JOB)
        return outs

    written = interrupt_and_resume(monkeypatch, capsys, run, after=1, label="curve training seed0-seed1", output=lambda outs: outs[0])
    assert written[0]["fit"]["step"] == 6


def test_autoneb_resumes_bit_for_bit_inside_its_second_cycle(seeds, tmp_path, monkeypatch, capsys):
    """Interrupted after step 6: inside the second cycle, after its ("highest") insertion."""
    from modeconn.families.neb import stage

    def run(name):
        out = tmp_path / name / "seed0-seed1.safetensors"
        stage.connect(CFG, seeds / "data.safetensors", seed_file(seeds, 0), seed_file(seeds, 1), out, JOB)
        return [out, out.with_suffix(".csv"), out.with_suffix(".json")]

    written = interrupt_and_resume(monkeypatch, capsys, run, after=6, label="AutoNEB seed0-seed1", output=lambda outs: outs[0])
    assert written[-1]["fit"]["step"] == 6 and written[-1]["fit"]["extra"]["cycle"] == 1


def test_simplex_resumes_bit_for_bit_inside_its_third_vertex(seeds, tmp_path, monkeypatch, capsys):
    """Points: vertex 2 at step 6, vertex 2 finished, vertex 3 at step 6 (interrupted there)."""
    from modeconn.families.simplex import stage

    def run(name):
        stage.grow(CFG, seeds / "data.safetensors", [seed_file(seeds, 0), seed_file(seeds, 1)], tmp_path / name, JOB)
        return files(tmp_path / name)

    written = interrupt_and_resume(monkeypatch, capsys, run, after=3, label="simplex [0, 1]", output=lambda outs: tmp_path / "killed")
    assert [w["fit"] and w["fit"]["step"] for w in written] == [6, None, 6]


# ------------------------------------------------------------------------------------ the points themselves


def test_a_point_of_another_configuration_or_input_is_ignored_and_removed(seeds, tmp_path, capsys):
    output = tmp_path / "out"
    ident = resume.identity(CFG, ("data", "model", "curves"), [seed_file(seeds, 0)])
    points = resume.Resume(output, ident, "a fit")
    points.save("fit", {"x": torch.arange(3.0)}, {"step": 3})
    assert resume.Resume(output, ident, "a fit").load("fit").state == {"step": 3}  # same identity: kept
    other_lr = Config.from_dict({**PARAMS, "curves": {**PARAMS["curves"], "lr": 0.5}})
    for changed in (resume.identity(other_lr, ("data", "model", "curves"), [seed_file(seeds, 0)]),
                    resume.identity(CFG, ("data", "model", "curves"), [seed_file(seeds, 1)])):  # another input file's content
        assert changed != ident
        points.save("fit", {"x": torch.arange(3.0)}, {"step": 3})
        capsys.readouterr()
        assert resume.Resume(output, changed, "a fit").load("fit") is None
        assert "made by another configuration, code or inputs; a fit starts from the beginning" in capsys.readouterr().err
        assert not resume.folder(output).exists()


def test_resume_interval_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv(resume.ENV, "12.5")
    assert resume.every_s() == 12.5
    monkeypatch.delenv(resume.ENV)
    assert resume.every_s() == 300.0
    monkeypatch.setenv(resume.ENV, "soon")
    with pytest.raises(ValueError, match="MODECONN_RESUME_EVERY_S='soon'"):
        resume.every_s()


# ------------------------------------------------------------------------------------ progress lines


def test_fits_write_progress_lines_to_their_log(seeds, tmp_path, monkeypatch, capsys):
    """Not on a terminal (here: captured), each fit writes step / total, loss, throughput and ETA."""
    import modeconn.progress as progress
    from modeconn.data import load_dataset
    from modeconn.families.curves import stage as curves
    from modeconn.families.neb import stage as neb
    from modeconn.families.rebasin import stage as rebasin
    from modeconn.families.simplex import stage as simplex

    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)
    data, a, b = seeds / "data.safetensors", seed_file(seeds, 0), seed_file(seeds, 1)
    capsys.readouterr()
    curves.train(CFG, data, a, b, [tmp_path / "bezier.safetensors", tmp_path / "polychain.safetensors"], JOB)
    neb.connect(CFG, data, a, b, tmp_path / "neb.safetensors", JOB)
    simplex.grow(CFG, data, [a, b], tmp_path / "simplex", JOB)
    dataset = load_dataset(data)
    inp = rebasin.inputs(CFG, dataset, torch.device("cpu"))
    rebasin.match(CFG, dataset, inp, "ste", checkpoint.load(a), checkpoint.load(b), (0, 1))
    lines = capsys.readouterr().err.splitlines()

    def starting(prefix: str) -> list[str]:
        return [line for line in lines if line.startswith(prefix)]

    curve = starting("curve training: epoch ")
    assert [line.split("  ")[1] for line in curve] == ["step 6/18", "step 12/18", "step 18/18"]
    assert " loss " in curve[0] and " it/s  ETA " in curve[0] and curve[-1].endswith("ETA 0m00s")
    autoneb = starting("AutoNEB: step ")
    assert [line.split("  ")[0] for line in autoneb] == [f"AutoNEB: step {i}/8" for i in range(1, 9)]
    anchors = checkpoint.read_meta(tmp_path / "neb.safetensors")["anchors"]  # 3 or 4: "highest" inserts where the path rises
    assert "pivot loss max " in autoneb[0] and "  pivots 3  " in autoneb[0] and f"  pivots {anchors}  " in autoneb[-1]
    for size in (2, 3):
        vertex = starting(f"simplex vertex {size}/3: epoch ")
        assert [line.split("  ")[1] for line in vertex] == ["step 6/12", "step 12/12"] and " log volume " in vertex[0]
    ste = starting("straight-through estimator (0, 1): step ")
    assert [line.split("  ")[0].rsplit(" ", 1)[1] for line in ste] == ["1/3", "2/3", "3/3"] and " midpoint loss " in ste[0]


def test_plain_sgd_seeds_continue_into_swa_and_fge_without_optimizer_state(seeds, tmp_path):
    """Plain SGD (momentum 0, the LeNet presets) keeps no optimizer state: its step checkpoints hold
    none, and FGE and SWA continue from them all the same (an Adam checkpoint without state is refused)."""
    from modeconn.families.fge import stage

    plain = {**PARAMS, "train": {**PARAMS["train"], "momentum": 0.0}}
    cfg = Config.from_dict(plain)
    args = ["--params", json.dumps(plain), "--threads", "1", "--device", "cpu"]
    assert main(["train-seeds", *args, "--seeds", "0", "--data", str(seeds / "data.safetensors"), "--out-dir", str(tmp_path / "pop")]) == 0
    assert checkpoint.load(tmp_path / "pop/seed0.step12.safetensors").optimizer == {}
    stage.swa(cfg, seeds / "data.safetensors", [0], [tmp_path / "pop"], tmp_path / "swa", tmp_path / "swa.csv", JOB)
    stage.fge(cfg, seeds / "data.safetensors", [0], [tmp_path / "pop"], tmp_path / "fge", tmp_path / "fge.csv", JOB)
    assert (tmp_path / "swa/seed0.safetensors").is_file() and (tmp_path / "fge.csv").is_file()
    adam = Config.from_dict({**plain, "train": {**plain["train"], "optimizer": "adam"}})
    with pytest.raises(checkpoint.CheckpointError, match="no optimizer state"):
        stage._load_seeds(adam, [0], [tmp_path / "pop"], 12, torch.device("cpu"))
