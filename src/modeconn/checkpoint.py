"""Self-describing checkpoints: safetensors weights + JSON metadata, written atomically.

One file holds one network: tensors under "params/<name>", "buffers/<name>" and optionally
"optimizer/<param>/<key>", and in the safetensors header a JSON document with the config, step,
seeds and code version that made it, plus a SHA-256 digest of every tensor's bytes. Loading never
unpickles; a truncated file, a foreign file or a file whose tensors no longer match their digest
raises `CheckpointError` naming the path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .core.params import TensorDict
from .io import atomic_path, non_finite
from .provenance import code_version

# 2: the SHA-256 covers the metadata as well as the tensors
FORMAT = "modeconn.checkpoint/2"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged or not a modeconn checkpoint."""


@dataclass
class Checkpoint:
    params: TensorDict
    buffers: TensorDict
    meta: dict
    optimizer: TensorDict = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """What made the checkpoints of one job, recorded in the metadata of each: the config sections
    that made them (as in params.yaml) and the code version (`provenance.code_version`), computed
    once per job. Each stage adds only what is its own (seed, step, level, ...) through `meta`."""

    config: dict
    code: dict

    @classmethod
    def of(cls, cfg, sections: tuple[str, ...] | list[str]) -> "Origin":
        """The `sections` of `cfg` (a config.Config) and the running code."""
        full = cfg.to_dict()
        return cls({s: full[s] for s in sections}, code_version())

    def meta(self, kind: str, record_config: bool = True, **fields) -> dict:
        """{"kind": kind, **fields, "config": ..., "code": ...}; dataclass values (seed triples,
        config sections) are recorded as dicts. `record_config` False leaves out the config
        (files that are not networks, e.g. a pruning mask)."""
        meta = {"kind": kind, **{k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in fields.items()}}
        if record_config:
            meta["config"] = self.config
        return meta | {"code": self.code}


def digest(tensors: TensorDict, meta: dict | None = None) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors, in name order, then over the
    metadata (sorted-key JSON): other families rely on `kind`, `step` and the config recorded there,
    so an edited header is as much a damaged file as a flipped tensor byte."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if meta is not None:
        h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def save(path: str | Path, ckpt: Checkpoint) -> None:
    tensors = {f"params/{k}": v for k, v in ckpt.params.items()}
    tensors |= {f"buffers/{k}": v for k, v in ckpt.buffers.items()}
    tensors |= {f"optimizer/{k}": v for k, v in ckpt.optimizer.items()}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    bad = non_finite(ckpt.meta)
    if bad:
        raise CheckpointError(f"{path}: refusing to write non-finite metadata (NaN or infinity) at {', '.join(bad[:5])}")
    meta = json.loads(json.dumps(ckpt.meta, sort_keys=True))  # the metadata as it will read back
    header = {"format": FORMAT, "sha256": digest(tensors, meta), "meta": meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"modeconn": json.dumps(header, sort_keys=True)})


def read_meta(path: str | Path) -> dict:
    """Only the metadata (cheap: reads the header, not the tensors)."""
    return _header(Path(path))["meta"]


def recorded_digest(path: str | Path) -> str:
    """The SHA-256 recorded in the header (cheap: the tensors are not read): it names the file's
    content, e.g. to tell whether a resume point was made from these very inputs."""
    return _header(Path(path))["sha256"]


def _header(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("modeconn")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without modeconn metadata (not a modeconn checkpoint)")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({err})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {header.get('format')!r}, expected {FORMAT}")
    return header


def load(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    header = _header(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged checkpoint ({err})") from err
    if digest(tensors, header.get("meta")) != header.get("sha256"):
        raise CheckpointError(f"{path}: tensors or metadata do not match the recorded SHA-256 (file modified or damaged)")
    parts: dict[str, TensorDict] = {"params": {}, "buffers": {}, "optimizer": {}}
    for key, value in tensors.items():
        kind, name = key.split("/", 1)
        parts[kind][name] = value.to(device)
    return Checkpoint(parts["params"], parts["buffers"], header["meta"], parts["optimizer"])


def same_architecture(a: Checkpoint, b: Checkpoint) -> None:
    """Raise unless two checkpoints hold tensors of the same names and shapes."""
    for kind in ("params", "buffers"):
        sa = {k: tuple(v.shape) for k, v in getattr(a, kind).items()}
        sb = {k: tuple(v.shape) for k, v in getattr(b, kind).items()}
        if sa != sb:
            raise CheckpointError(f"checkpoints differ in their {kind}: {sorted(set(sa.items()) ^ set(sb.items()))[:4]}")

