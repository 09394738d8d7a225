"""Atomic file output: write beside the target, then rename, so no reader ever sees half a file.

Files get the usual mode of a new file (0666 minus the process umask, e.g. 0644), not the 0600
of the temporary file, so a team folder or a shared DVC cache can read them. JSON is strict
(RFC 8259): a NaN or infinity is an error naming the file and the key, never a bare `NaN`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _file_mode() -> int:
    # os.umask can only be read by setting it; put it straight back (jobs are single-threaded here).
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` only on success.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Dotted keys (list indices in brackets) of every NaN or infinite float inside `obj`."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [prefix or "<value>"]
    if isinstance(obj, dict):
        return [k for key, v in obj.items() for k in non_finite(v, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(obj, (list, tuple)):
        return [k for i, v in enumerate(obj) for k in non_finite(v, f"{prefix}[{i}]")]
    return []


def write_json(path: str | Path, obj) -> None:
    """Write `obj` as strict JSON; raise ValueError naming the file and keys if it holds NaN/inf."""
    bad = non_finite(obj)
    if bad:
        raise ValueError(f"{path}: refusing to write non-finite values (NaN or infinity) at {', '.join(bad[:5])}")
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_csv(path: str | Path, frame) -> None:
    """Write a pandas DataFrame as CSV (no index), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
