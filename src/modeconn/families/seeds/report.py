"""Barrier tables and interpolation figure for the seeds family (reports/seeds/).

Input: the per-pair CSVs written by `stages.seeds.interpolate` (columns seed_a, seed_b, alpha,
split, loss, error, bn_reset, examples). Output: barriers.csv (per pair), barriers.md (summary
mean ± std over pairs with the definition, then per pair), interpolation.csv (all points, for DVC
plots), interpolation.png, metrics.json (for `dvc metrics show`). Every barrier uses the definition
`evaluation.barrier` (core.barrier), named in the tables, the CSV and the metrics.
"""

from __future__ import annotations

from pathlib import Path


import pandas as pd
import seaborn as sns

from ...core import barrier as barrier_math
from ...io import read_tables, write_csv, write_json, write_text
from ...tables import mean_std_table, path_rows, pm
from ...figures import save_figure  # first: selects the Agg backend

METRICS = ("loss", "error")
SPLITS = ("train", "test")


def read_paths(csvs: list[Path]) -> pd.DataFrame:
    if not csvs:
        raise ValueError("no interpolation results given")
    table = read_tables(csvs)
    table["pair"] = "seed" + table["seed_a"].astype(str) + "–seed" + table["seed_b"].astype(str)
    return table


def per_pair(table: pd.DataFrame, kind: str = barrier_math.MAX_MINUS_MEAN) -> pd.DataFrame:
    """One row per (pair, split, metric): barrier under `kind`, endpoint mean, peak value and where it lies."""
    return path_rows(table, ["pair", "split"], kind)


def summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over pairs of the barrier and of the endpoint value, per split and metric."""
    return mean_std_table(pairs, ["split", "metric"], {"barrier": "barrier", "endpoint_mean": "endpoint"},
                          count="pairs", order={"split": SPLITS, "metric": METRICS})


def markdown(pairs: pd.DataFrame, summ: pd.DataFrame, points: int, kind: str = barrier_math.MAX_MINUS_MEAN) -> str:
    bn = "recomputed on training batches at every alpha" if pairs["bn_reset"].any() else "not applicable (no BatchNorm)"
    header = barrier_math.column(kind)
    shown = pd.DataFrame({
        "split": summ.split, "metric": summ.metric, header: [pm(m, s) for m, s in zip(summ.barrier_mean, summ.barrier_std)],
        "endpoints": [pm(m, s) for m, s in zip(summ.endpoint_mean, summ.endpoint_std)], "pairs": summ.pairs,
    })
    detail = pairs[["pair", "split", "metric", "barrier", "endpoint_mean", "peak", "peak_alpha"]].rename(columns={"barrier": header})
    return "\n".join(
        [
            "# Linear interpolation between independently trained seeds",
            "",
            f"**Barrier definition.** {barrier_math.definition(points, kind)}. "
            "Values are mean ± sample std over pairs of seeds.",
            f"**BatchNorm statistics:** {bn}.",
            "",
            shown.to_markdown(index=False),
            "",
            "## Per pair",
            "",
            detail.to_markdown(index=False, floatfmt=".4f"),
            "",
        ]
    )


def figure(table: pd.DataFrame, path: Path) -> None:
    """Loss and error vs α for every pair (rows: metric; columns: split), endpoints marked."""
    long = table.melt(id_vars=["pair", "alpha", "split"], value_vars=list(METRICS), var_name="metric", value_name="value")
    grid = sns.relplot(
        data=long, x="alpha", y="value", hue="pair", row="metric", col="split",
        row_order=list(METRICS), col_order=list(SPLITS), kind="line", marker="o", markersize=3,
        height=2.8, aspect=1.3, facet_kws={"sharey": "row"},
    )
    ends = long[long.alpha.isin([0.0, 1.0])]
    for (metric, split), ax in grid.axes_dict.items():
        sel = ends[(ends.metric == metric) & (ends.split == split)]
        ax.scatter(sel.alpha, sel.value, s=60, facecolors="none", edgecolors="black", zorder=5, label="endpoints")
        ax.set_ylabel(metric)
        ax.set_xlabel("α  (θ = (1−α) θ_A + α θ_B)")
    grid.set_titles("{row_name} — {col_name}")
    grid.figure.suptitle("Linear interpolation between independently trained seeds (endpoints circled)", y=1.02)
    save_figure(grid.figure, path)


def metrics(summ: pd.DataFrame, pairs: pd.DataFrame, points: int) -> dict:
    out: dict = {"points": points, "pairs": int(pairs.pair.nunique()), "bn_reset": bool(pairs.bn_reset.any()),
                 "barrier_definition": str(pairs.barrier_definition.iloc[0])}
    for r in summ.itertuples():
        out.setdefault("barrier", {}).setdefault(r.split, {})[r.metric] = {"mean": r.barrier_mean, "std": r.barrier_std}
        out.setdefault("endpoint", {}).setdefault(r.split, {})[r.metric] = {"mean": r.endpoint_mean, "std": r.endpoint_std}
    return out


def _summary_table(barriers_md: str) -> str:
    """The summary table of reports/seeds/barriers.md (the first Markdown table)."""
    lines, table = barriers_md.splitlines(), []
    for line in lines:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return "\n".join(table)


def section(barriers_md: str, m: dict) -> str:
    """The seeds family's section of reports/README.md from its barrier table and metrics."""
    b, ends = m["barrier"], m["endpoint"]
    train_loss, test_err = b["train"]["loss"], b["test"]["error"]
    high = train_loss["mean"] > 10 * max(ends["train"]["loss"]["mean"], 1e-3) and train_loss["mean"] > 0.1
    verdict = ("a high barrier, as claimed" if high else "no high barrier, unlike the claim")
    kind = m["barrier_definition"]
    # entezari measures the height above the straight line between the endpoint values, not above their mean
    above = "above endpoints at" if kind == barrier_math.MAX_MINUS_MEAN else "above the endpoints' straight line (endpoints at"
    close = "" if kind == barrier_math.MAX_MINUS_MEAN else ")"
    return "\n".join([
        "## Seeds: linear interpolation between independently trained networks",
        "",
        "Papers: Frankle et al. (2020), Garipov et al. (2018), Draxler et al. (2018) — independently trained "
        "minima are separated by a high loss barrier on the straight line between them (the starting point "
        "that curves, AutoNEB and re-basin methods improve on).",
        "",
        f"{m['pairs']} pairs of seeds, {m['points']} evenly spaced α in [0, 1] (endpoints included); mean ± std over pairs. "
        f"{barrier_math.definition(m['points'], kind)}.",
        "",
        _summary_table(barriers_md),
        "",
        "![Linear interpolation](seeds/interpolation.png)",
        "",
        f"- Train-loss barrier {train_loss['mean']:.3f} ± {train_loss['std']:.3f} {above} "
        f"{ends['train']['loss']['mean']:.4f}{close}: {verdict}.",
        f"- Test-error barrier {test_err['mean']:.3f} ± {test_err['std']:.3f} {above} "
        f"{ends['test']['error']['mean']:.3f}{close}: the midpoint of two good networks is a much worse network"
        + ("" if test_err["mean"] > 0.05 else " (not here: the barrier is small)") + ".",
        "",
    ])


def write(csvs: list[Path], out_dir: Path, kind: str = barrier_math.MAX_MINUS_MEAN) -> dict:
    table = read_paths(csvs)
    points = int(table.groupby(["pair", "split"]).size().iloc[0])
    pairs = per_pair(table, kind)
    summ = summary(pairs)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "barriers.csv", pairs)
    write_csv(out_dir / "interpolation.csv", table.drop(columns=["examples"]))
    barriers_md = markdown(pairs, summ, points, kind)
    write_text(out_dir / "barriers.md", barriers_md)
    figure(table, out_dir / "interpolation.png")
    result = metrics(summ, pairs, points)
    write_json(out_dir / "metrics.json", result)
    write_text(out_dir / "section.md", section(barriers_md, result))
    return result
