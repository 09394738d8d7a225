"""Atomic file output: write beside the target, then rename, so no reader ever sees half a file.

Files get the usual mode of a new file (0666 minus the process umask, e.g. 0644), not the 0600
of the temporary file, so a team folder or a shared DVC cache can read them. JSON is strict
(RFC 8259): a NaN or infinity is an error naming the file and the key, never a bare `NaN`.

Evaluation tables are checked here too, in the one writer every evaluation job uses: given the
job's input checkpoints, `write_csv` refuses a table whose measurements (loss, error, NLL, Hessian
trace) hold a NaN or infinity, naming the file, the column, the row and the inputs, and writes
nothing. A diverged or overflowing network then stops its job instead of becoming `nan` in a report.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


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


# Columns of an evaluation table that hold a measurement of networks: loss, error, NLL and Hessian
# trace, alone or as a suffix (test_loss, ensemble_nll, hessian_loss), and the barrier summaries of
# a path (barrier, endpoint_mean, peak: tables.path_rows). None of them is ever
# legitimately non-finite: NaN there means a diverged or overflowing network. Other columns may hold
# NaN by design (t of a minimum, the disagreement of train rows, eigenvalues ARPACK did not converge
# on, which eig_converged records).
MEASURED = re.compile(r"(?:.+_)?(?:loss|error|nll|trace|barrier)|endpoint_mean|peak")


class NonFiniteError(ValueError):
    """An evaluation job's table holds a non-finite measurement: the job fails and writes nothing."""


def _non_finite_rows(frame, rows=None):
    """(bad columns, bad-row mask, the rows checked) of the measurements (numeric columns named as in
    MEASURED) of `frame` that are NaN or infinite, over `rows` (default all); ([], None, ...) if none."""
    import numpy as np
    import pandas as pd

    checked = frame if rows is None else frame[rows]
    columns = [c for c in checked.columns
               if MEASURED.fullmatch(str(c)) and pd.api.types.is_numeric_dtype(checked[c]) and not pd.api.types.is_bool_dtype(checked[c])]
    if not columns:
        return [], None, checked
    bad = ~np.isfinite(checked[columns].to_numpy(dtype=float))
    if not bad.any():
        return [], None, checked
    return [c for c, b in zip(columns, bad.any(axis=0)) if b], bad.any(axis=1), checked


def _first_row(checked, row_mask, columns) -> str:
    first = checked[row_mask].iloc[0]
    return ", ".join(f"{c}={first[c]}" for c in checked.columns if c not in columns)[:300] or f"row {first.name}"


def check_measurements(path: str | Path, frame, inputs: Iterable[str | Path], rows=None) -> None:
    """Raise NonFiniteError unless every measurement (numeric columns named as in MEASURED) of
    `frame` is finite; `rows` (a boolean Series) limits the check to the rows that hold
    measurements (e.g. the grid rows of a curve plane, whose other rows carry only coordinates).
    The message names the file, the columns, the first bad row and the job's `inputs`."""
    columns, row_mask, checked = _non_finite_rows(frame, rows)
    if not columns:
        return
    names = [str(p) for p in inputs]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    raise NonFiniteError(
        f"{path}: refusing to write non-finite {', '.join(columns)} (NaN or infinity) in "
        f"{int(row_mask.sum())} of {len(checked)} rows, first at {_first_row(checked, row_mask, columns)}; the networks evaluated from "
        f"{shown or 'the inputs'} give non-finite values (diverged or overflowing weights); nothing was written")


def read_tables(paths: Iterable[str | Path], measured=None, **read_csv):
    """The CSV tables a report summarises, concatenated (pandas). Every measurement must be finite:
    the evaluation jobs never write NaN or infinity there, so one in a table means the file was
    edited or made elsewhere, and a report would turn it into 'nan ± nan' that reads like a result.
    `measured(frame)` gives the boolean rows that hold measurements (default all); `read_csv` goes to
    pandas.read_csv. Raises
    NonFiniteError naming the file, the columns and the first bad row."""
    import pandas as pd

    frames = []
    for path in paths:
        frame = pd.read_csv(path, **read_csv)
        columns, row_mask, checked = _non_finite_rows(frame, None if measured is None else measured(frame))
        if columns:
            raise NonFiniteError(f"{path}: non-finite {', '.join(columns)} (NaN or infinity) in {int(row_mask.sum())} rows, "
                                 f"first at {_first_row(checked, row_mask, columns)}; a report does not summarise them: "
                                 f"rerun the job that writes this file")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_csvs(frames: dict, inputs: Iterable[str | Path] | None = None) -> None:
    """Write several DataFrames ({path: frame}) as CSV, atomically. With `inputs` (the checkpoint
    files an evaluation job read) every table is first checked (`check_measurements`), all of them
    before the first is written, so a job that fails the check leaves none of them behind."""
    if inputs is not None:
        inputs = list(inputs)
        for path, frame in frames.items():
            check_measurements(path, frame, inputs)
    for path, frame in frames.items():
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)


def write_csv(path: str | Path, frame, inputs: Iterable[str | Path] | None = None, rows=None) -> None:
    """Write a pandas DataFrame as CSV (no index), atomically; with `inputs`, only after
    `check_measurements` (over `rows`, default all) passed."""
    if inputs is not None:
        check_measurements(path, frame, inputs, rows)
    write_csvs({path: frame})
