"""The tables every family's report builds the same way: barrier rows per path, mean ± std per group.

path_rows       points along paths (one row per point: key columns, the path coordinate, loss,
                error, bn_reset) → one row per path and metric: barrier under one definition (named
                in the `barrier_definition` column), endpoint mean, peak and where it lies, points
all_path_rows   path_rows under every barrier definition at once (what the jobs record)
mean_std_table  per group of rows: mean and sample std of chosen columns over the group, its size
pm, ms          "mean ± std" as text, from the two numbers or from the replicate values

The maths lives in core.barrier (barrier, path_stats, mean_std); this module only groups frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .core import barrier as barrier_math

METRICS = ("loss", "error")


def _key(group) -> tuple:
    """groupby's key as a tuple whatever the number of grouping columns."""
    return group if isinstance(group, tuple) else (group,)


def path_rows(
    table: pd.DataFrame,
    keys: Sequence[str],
    kind: str = barrier_math.MAX_MINUS_MEAN,
    coordinate: str = "alpha",
    metrics: Sequence[str] = METRICS,
    sort: bool = True,
) -> pd.DataFrame:
    """One row per (keys…, metric): the path of `table` whose rows share the key values, ordered by
    `coordinate` (α ∈ [0, 1], endpoints included), summarised by core.barrier.path_stats.

    Columns: keys…, metric, barrier, endpoint_mean, peak, peak_alpha, points, bn_reset,
    barrier_definition. Paths in sorted key order, or in order of appearance with sort=False."""
    barrier_math.check(kind)
    rows = []
    for group, sel in table.groupby(list(keys), sort=sort):
        sel = sel.sort_values(coordinate)
        alpha = torch.tensor(sel[coordinate].to_numpy())
        ids = dict(zip(keys, _key(group)))
        for metric in metrics:
            stats = barrier_math.path_stats(torch.tensor(sel[metric].to_numpy()), alpha, kind)
            rows.append({**ids, "metric": metric, **stats, "points": len(sel),
                         "bn_reset": bool(sel["bn_reset"].iloc[0]), "barrier_definition": kind})
    return pd.DataFrame(rows)


def all_path_rows(table: pd.DataFrame, keys: Sequence[str], **kwargs) -> pd.DataFrame:
    """path_rows under every definition of core.barrier.KINDS, stacked (told apart by barrier_definition).

    A job that records barriers writes them all, so that the choice `evaluation.barrier` reruns
    only the reports that pick one, never the job."""
    return pd.concat([path_rows(table, keys, kind, **kwargs) for kind in barrier_math.KINDS], ignore_index=True)


def mean_std_table(
    frame: pd.DataFrame,
    by: Sequence[str],
    columns: Sequence[str] | Mapping[str, str],
    count: str = "n",
    order: Mapping[str, Sequence] | None = None,
    mean: str = "{}_mean",
    std: str = "{}_std",
    sort: bool = True,
) -> pd.DataFrame:
    """One row per group of `frame` by `by`: for each column c of `columns` (or c → stem, when a
    mapping; the stem is c otherwise) the mean and the sample standard deviation over the group's
    rows (core.barrier.mean_std; std = 0 for one row), named mean.format(stem) and std.format(stem);
    then `count`, the number of rows in the group.

    Groups in sorted order of `by` (in order of appearance with sort=False); a column named in
    `order` sorts by the position of its values in the given sequence instead (e.g. train before test)."""
    stems = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    rows = []
    for group, sel in frame.groupby(list(by), sort=sort):
        row = dict(zip(by, _key(group)))
        for col, stem in stems.items():
            row[mean.format(stem)], row[std.format(stem)] = barrier_math.mean_std(torch.tensor(sel[col].to_numpy()))
        row[count] = len(sel)
        rows.append(row)
    out = pd.DataFrame(rows, columns=[*by, *(f.format(s) for s in stems.values() for f in (mean, std)), count])
    if order:
        rank = {col: {v: i for i, v in enumerate(values)} for col, values in order.items()}
        out = out.sort_values(list(by), key=lambda s: s.map(rank[s.name]) if s.name in rank else s, kind="stable")
        out = out.reset_index(drop=True)
    return out


def pm(mean: float, std: float, digits: int = 4, scale: float = 1.0) -> str:
    """"mean ± std" with `digits` decimals, both multiplied by `scale` first (e.g. 100 for percent)."""
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def ms(values, digits: int = 4, scale: float = 1.0) -> str:
    """"mean ± sample std" of replicate `values`, scaled by `scale` before the statistics are taken."""
    return pm(*barrier_math.mean_std(torch.tensor(np.asarray(values, dtype=float) * scale)), digits)
