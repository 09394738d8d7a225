"""Resume points: a long job killed at any moment continues where it was, with the same result.

Every long training or fitting job (seeds, instability forks, lottery levels, FGE/SWA, curves,
AutoNEB, simplexes) keeps, every `every_s()` seconds (MODECONN_RESUME_EVERY_S, default 300),
everything a bit-identical continuation needs: parameters, buffers, optimizer state, the positions
of its random streams, the step, and running results (SWA's average, FGE's snapshots, finished
simplex vertices or lottery cohorts). A rerun of the job, e.g. the same `snakemake` command after
`kill -9`, starts from there instead of from step 0; data order and augmentation are functions of
(seed, step), so a continued run draws exactly what the uninterrupted one would have.

The points live in a hidden folder beside the job's output (`folder`), not inside it: Snakemake
deletes the outputs of a killed job before it reruns it. Each point is a checkpoint file
(safetensors, digest-checked, written aside and renamed, so a kill while writing leaves the last
complete point). It records its *identity*: the config sections the job reads, the package source
and the digests of the job's input checkpoints. A folder whose points were made by another
configuration, code or inputs is ignored with a message on stderr and deleted, so a stale point
never leaks into a result; the folder is deleted when the job completes.

A point is saved only at a boundary where the loop holds no partial sums (an epoch end for the
training loops, a step for AutoNEB), so "everything" is small and explicit.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable


from . import checkpoint
from .core.optimizers import FitState
from .core.params import TensorDict
from .provenance import code_version
from .train import TrainState, member_optimizer_state

ENV = "MODECONN_RESUME_EVERY_S"
SUFFIX = ".resume.safetensors"


def every_s() -> float:
    """Seconds between resume points (MODECONN_RESUME_EVERY_S, default 300): a killed job loses at
    most about this much work; results do not depend on it. 0 saves at every boundary (tests)."""
    raw = os.environ.get(ENV, "300")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0:
        raise ValueError(f"{ENV}={raw!r}: the interval between resume points must be >= 0 seconds")
    return value


def folder(output: Path) -> Path:
    """Where the job writing `output` (its output folder or its first output file) keeps its resume
    points: a hidden sibling, which Snakemake's clean-up of a killed job's outputs leaves alone."""
    output = Path(output)
    return output.parent / f".{output.name}.resume"


def identity(cfg, sections: Iterable[str], inputs: Iterable[Path] = (), **job) -> dict:
    """What must be equal for a resume point to be used: the config `sections` the job reads, the
    package's code (version and source hash, not the git commit: a commit that leaves the source
    alone changes nothing), the recorded digests of its input checkpoints (a retrained seed makes a
    fit's point stale although the fit's own config did not change) and job arguments (`job`)."""
    full = cfg.to_dict()
    code = code_version()
    return {
        "config": {s: full[s] for s in sections},
        "code": {"package": code["package"], "source_sha256": code["source_sha256"]},
        "inputs": {str(p): checkpoint.recorded_digest(p) for p in inputs},
        "job": job,
    }


@dataclass
class Point:
    """A loaded resume point: named tensors and the JSON state beside them."""

    tensors: TensorDict
    state: dict


class Resume:
    """The resume points of one job, in `folder(output)`.

    Opening checks the folder: it is kept only if it holds a point made with `ident` (see
    `identity`); otherwise it is deleted (with a message if it held points), so whatever else the
    job parks there (the seeds' step checkpoints) is never mixed with another run's. `label` names
    the job in messages ("seeds [0, 1]", "AutoNEB seed0-seed1").
    """

    def __init__(self, output: Path, ident: dict, label: str):
        self.folder, self.identity, self.label = folder(output), ident, label
        self.every = every_s()
        self.last = time.monotonic()
        self._open()

    def _open(self) -> None:
        if not self.folder.exists():
            return
        points = sorted(self.folder.glob(f"*{SUFFIX}"))
        reason = None if points else "no resume point"
        for path in points:
            try:
                made_by = checkpoint.read_meta(path).get("identity")
            except checkpoint.CheckpointError as err:
                reason = f"unusable resume point ({err})"
                break
            if made_by != self.identity:
                reason = f"resume point {path.name} was made by another configuration, code or inputs"
                break
        if reason is not None:
            if points:
                print(f"{self.folder}: {reason}; {self.label} starts from the beginning", file=sys.stderr, flush=True)
            shutil.rmtree(self.folder)

    # ------------------------------------------------------------------ points

    def path(self, name: str) -> Path:
        return self.folder / f"{name}{SUFFIX}"

    def load(self, name: str) -> Point | None:
        """The point `name` (made by this identity: see `_open`), or None. Its tensors are on the
        CPU: the callers move what lives on the training device; optimizer state stays where
        `optimizer.load_state_dict` puts it (Adam's step count on the CPU, as in a fresh run)."""
        path = self.path(name)
        if not path.is_file():
            return None
        ckpt = checkpoint.load(path, "cpu")
        return Point(ckpt.params, ckpt.meta["state"])

    def due(self) -> bool:
        """Whether `every_s()` has passed since the job started or last saved a point."""
        return time.monotonic() - self.last >= self.every

    def save(self, name: str, tensors: TensorDict, state: dict) -> None:
        """Write the point `name` atomically (replacing the previous one)."""
        meta = {"kind": "resume", "name": name, "identity": self.identity, "state": state}
        checkpoint.save(self.path(name), checkpoint.Checkpoint(dict(tensors), {}, meta))
        self.last = time.monotonic()

    def resumed(self, where: str) -> None:
        """Say on stderr (the job's log) that the job continues from a point, and where ("step 120")."""
        print(f"resuming {self.label} from its resume point at {where} ({self.folder})", file=sys.stderr, flush=True)

    def complete(self) -> None:
        """The job's outputs are written: its resume points are no longer needed."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ training populations

    def start_population(self, name: str, params: TensorDict, buffers: TensorDict, step: int,
                         optimizer_states: list[TensorDict] | None, device) -> "PopulationStart":
        """Where `train.train_population` should start: the point `name` if there is one, else the
        given start (params, buffers, step and per-member optimizer states)."""
        point = self.load(name)
        if point is None:
            return PopulationStart(params, buffers, step, optimizer_states, {}, {})
        parts = {part: _to(tensors, device) if part != "optimizer" else tensors for part, tensors in split(point.tensors).items()}
        per_member = split(parts.get("optimizer", {}))
        states = [per_member.get(str(i), {}) for i in range(point.state["members"])]
        self.resumed(f"step {point.state['step']}")
        return PopulationStart(ordered(parts["params"], params), ordered(parts.get("buffers", {}), buffers), point.state["step"],
                               states, parts.get("extra", {}), point.state["extra"])

    def save_population(self, name: str, state: TrainState, extra: TensorDict | None = None, extra_state: dict | None = None) -> None:
        """A point of a training population: stacked params and buffers, each member's optimizer
        state, the step, and the job's running results (`extra` tensors, `extra_state` JSON)."""
        k = next(iter(state.params.values())).shape[0]
        tensors = {f"params/{n}": v.detach() for n, v in state.params.items()}
        tensors |= {f"buffers/{n}": v for n, v in state.buffers.items()}
        for i in range(k):
            tensors |= {f"optimizer/{i}/{key}": v for key, v in member_optimizer_state(state, i).items()}
        tensors |= {f"extra/{n}": v for n, v in (extra or {}).items()}
        self.save(name, tensors, {"step": state.step, "members": k, "extra": extra_state or {}})

    def population_saver(self, name: str, on_epoch: Callable | None = None,
                         extra: Callable[[], tuple[TensorDict, dict]] | None = None) -> Callable:
        """An `on_epoch` for `train_population`: calls `on_epoch` (if any), then saves a point when one
        is due and training is not over (a rerun at the end would redo nothing). `extra()` gives the
        job's running results at that moment (tensors, JSON)."""

        def after_epoch(epoch: int, stats: dict, state: TrainState) -> None:
            if on_epoch is not None:
                on_epoch(epoch, stats, state)
            if state.step < state.total_steps and self.due():
                tensors, extra_state = extra() if extra is not None else ({}, {})
                self.save_population(name, state, tensors, extra_state)

        return after_epoch

    # ------------------------------------------------------------------ fits

    def load_fit(self, name: str, device) -> tuple[FitState | None, TensorDict, dict] | None:
        """The point `name` of a fitting job, or None: (the fit's FitState, or None where the point
        was saved between fits; the job's extra tensors; its extra JSON)."""
        point = self.load(name)
        if point is None:
            return None
        parts = split(point.tensors)
        fit, made = None, point.state["fit"]
        if made is not None:  # generator states stay on the CPU, where torch.Generator keeps them
            saved = split(parts.get("fit", {}))
            fit = FitState(made["step"], _to(saved.get("tensors", {}), device), saved.get("optimizer", {}), saved.get("generators", {}), made["extra"])
        self.resumed("the start of a fit" if fit is None else f"step {fit.step}")
        return fit, _to(parts.get("extra", {}), device), point.state["extra"]

    def save_fit(self, name: str, fit: FitState | None, extra: TensorDict | None = None, extra_state: dict | None = None) -> None:
        """A point of a fitting job: the fit's state (None between fits) and the job's running
        results (`extra` tensors, e.g. finished simplex vertices, and `extra_state` JSON)."""
        tensors = {f"extra/{n}": v for n, v in (extra or {}).items()}
        made = None
        if fit is not None:
            for part in ("tensors", "optimizer", "generators"):
                tensors |= {f"fit/{part}/{n}": v for n, v in getattr(fit, part).items()}
            made = {"step": fit.step, "extra": fit.extra}
        self.save(name, tensors, {"fit": made, "extra": extra_state or {}})

    def fit_saver(self, name: str, extra: Callable[[], tuple[TensorDict, dict]] | None = None) -> Callable[[FitState], None]:
        """An `on_state` callback for a fit: saves its FitState (and the job's `extra()`) when due."""

        def on_state(fit: FitState) -> None:
            if self.due():
                tensors, extra_state = extra() if extra is not None else ({}, {})
                self.save_fit(name, fit, tensors, extra_state)

        return on_state


@dataclass
class PopulationStart:
    """Where a training population starts (see `Resume.start_population`)."""

    params: TensorDict
    buffers: TensorDict
    step: int
    optimizer_states: list[TensorDict] | None
    extra: TensorDict
    extra_state: dict


def ordered(loaded: TensorDict, like: TensorDict) -> TensorDict:
    """`loaded` in the key order of `like` (a population stacks and an optimizer enumerates its
    tensors in dict order); ValueError if the names differ (a point of another architecture)."""
    if set(loaded) != set(like):
        raise ValueError(f"resume point holds tensors {sorted(set(loaded) ^ set(like))[:4]} that the job does not (or the reverse)")
    return {name: loaded[name] for name in like}


def _to(tensors: TensorDict, device) -> TensorDict:
    return {name: t.to(device) for name, t in tensors.items()}


def split(tensors: TensorDict) -> dict[str, TensorDict]:
    """{"a/b/c": t} → {"a": {"b/c": t}}: one level of the names a point's tensors are saved under
    (a job reads its extra tensors back with it, e.g. FGE's "<snapshot>/params/<name>")."""
    out: dict[str, TensorDict] = {}
    for name, value in tensors.items():
        head, _, rest = name.partition("/")
        out.setdefault(head, {})[rest] = value
    return out


def keep(src: Path, dst: Path) -> None:
    """Put a file parked in a resume folder (a step checkpoint) into the output folder, leaving the
    parked copy until the folder is deleted: a kill halfway through leaves the folder complete, so
    the rerun still finds every parked file. A hard link where the file system allows, else a copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
