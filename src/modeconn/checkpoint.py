"""Self-describing checkpoints: safetensors weights + JSON metadata, written atomically.

One file holds one network: tensors under "params/<name>", "buffers/<name>" and optionally
"optimizer/<param>/<key>", and in the safetensors header a JSON document with the config, step,
seeds and code version that made it, plus a SHA-256 digest of every tensor's bytes. Loading never
unpickles; a truncated file, a foreign file or a file whose tensors no longer match their digest
raises `CheckpointError` naming the path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .core.params import TensorDict
from .io import atomic_path

FORMAT = "modeconn.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, damaged or not a modeconn checkpoint."""


@dataclass
class Checkpoint:
    params: TensorDict
    buffers: TensorDict
    meta: dict
    optimizer: TensorDict = field(default_factory=dict)


def digest(tensors: TensorDict) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(path: str | Path, ckpt: Checkpoint) -> None:
    tensors = {f"params/{k}": v for k, v in ckpt.params.items()}
    tensors |= {f"buffers/{k}": v for k, v in ckpt.buffers.items()}
    tensors |= {f"optimizer/{k}": v for k, v in ckpt.optimizer.items()}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header = {"format": FORMAT, "sha256": digest(tensors), "meta": ckpt.meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"modeconn": json.dumps(header, sort_keys=True)})


def read_meta(path: str | Path) -> dict:
    """Only the metadata (cheap: reads the header, not the tensors)."""
    return _header(Path(path))["meta"]


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
    header = json.loads(raw)
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
    if digest(tensors) != header["sha256"]:
        raise CheckpointError(f"{path}: tensor contents do not match the recorded SHA-256 (file modified or damaged)")
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

