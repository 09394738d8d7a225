"""Hessian-trace tables and figures (reports/flatness/).

Input: the CSVs of `stages.flatness.curvature` (one row per network: family, kind, source, path,
t, trace, trace_se, top_eigenvalue, losses/errors and the evaluation-set definition). Output:

    traces.csv / traces.md   per family: mean ± std over its minima of the Hessian trace, top
                             eigenvalue and test error (with the definition of every number)
    minima.csv               one row per minimum (trace vs test error; DVC plots)
    paths.csv                trace and top eigenvalue at every point t of every path (DVC plots)
    paths.png                trace and top eigenvalue along the paths
    sharpness.png            trace vs test error across minima, one colour per family
    metrics.json, section.md
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the workflow's machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from ...core.barrier import mean_std  # noqa: E402
from ...io import atomic_path, write_json, write_text  # noqa: E402
from ...figures import save_figure

CAVEAT = (
    "**Scale-invariance caveat (Dinh et al. 2017).** Sharpness measures such as the Hessian trace and "
    "top eigenvalue are not invariant to reparametrisations that leave the network's function unchanged: "
    "in a ReLU network, multiplying one layer's weights by c > 0 and dividing the next layer's by c gives "
    "the same function (same loss, same test error) with a Hessian whose curvature can be made arbitrarily "
    "large or small. A flat/sharp comparison is therefore only meaningful between networks of one "
    "architecture trained the same way (similar weight norms), as here; it is not evidence that flatness "
    "causes generalisation."
)


def read(csvs: list[Path]) -> pd.DataFrame:
    if not csvs:
        raise ValueError("no curvature results given")
    table = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    labels = ["family", "kind", "source", "path"]  # a minima-only CSV has an empty (all-NaN) path column
    table[labels] = table[labels].fillna("").astype(str)
    return table


def definition(table: pd.DataFrame) -> str:
    """How every number was measured, from the columns stored with it."""
    r = table.iloc[0]
    bn = "recomputed on training batches for every network" if table.bn_reset.any() else "not applicable (no BatchNorm)"
    return (
        f"Hessian of the mean cross-entropy over a fixed set of {int(r.hessian_batches)} batches × "
        f"{int(r.hessian_batch_size)} = {int(r.hessian_examples)} {r.hessian_split} examples (the same for every network), "
        f"module in {r.hessian_mode} mode, w.r.t. all {int(r.parameters)} parameters. Trace: Hutchinson estimate with "
        f"{int(r.probes)} Rademacher probes (± its standard error, std/√probes). Top eigenvalue: power iteration "
        f"(at most {int(r.power_iterations_max)} Hessian-vector products; its residual ‖Hv − λv‖/|λ| says how far from "
        f"converged, mean over the family). Test error on the full test split. "
        f"BatchNorm statistics: {bn}."
    )


def per_family(minima: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample std over the minima of each family (in order of appearance)."""
    rows = []
    for family, g in minima.groupby("family", sort=False):
        row = {"family": family, "kind": ",".join(sorted(g.kind.astype(str).unique())), "minima": len(g)}
        for col in ("trace", "top_eigenvalue", "test_error", "train_loss"):
            row[f"{col}_mean"], row[f"{col}_std"] = mean_std(torch.tensor(g[col].to_numpy()))
        row["trace_se_mean"] = float(g.trace_se.mean())
        row["eig_residual_mean"] = float(g.eig_residual.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def path_table(table: pd.DataFrame) -> pd.DataFrame:
    paths = table[table.kind.isin(["path", "simplex"])].copy()
    paths["curve"] = paths.family + ": " + paths.source.str.replace(".safetensors", "", regex=False) + " (" + paths.path + ")"
    return paths[["family", "curve", "path", "t", "trace", "trace_se", "top_eigenvalue", "train_loss", "test_error"]]


def markdown(fam: pd.DataFrame, paths: pd.DataFrame, table: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "family": fam.family,
        "kind": fam.kind,
        "minima": fam.minima,
        "Hessian trace": [f"{m:.1f} ± {s:.1f}" for m, s in zip(fam.trace_mean, fam.trace_std)],
        "mean SE of trace": [f"{v:.1f}" for v in fam.trace_se_mean],
        "top eigenvalue": [f"{m:.2f} ± {s:.2f}" for m, s in zip(fam.top_eigenvalue_mean, fam.top_eigenvalue_std)],
        "power-iteration residual": [f"{v:.3f}" for v in fam.eig_residual_mean],
        "test error": [f"{m:.4f} ± {s:.4f}" for m, s in zip(fam.test_error_mean, fam.test_error_std)],
    })
    lines = ["### Hessian trace at minima, per family", "", f"**Definition.** {definition(table)} "
             "Values are mean ± sample std over the family's minima.", "", shown.to_markdown(index=False), ""]
    if len(paths):
        peak = paths.loc[paths.groupby("curve").trace.idxmax()]
        lines += ["### Trace along paths", "", "Largest trace along each path and where it lies (t; endpoints t = 0, 1 are the minima).", "",
                  peak[["curve", "t", "trace", "trace_se", "top_eigenvalue", "train_loss"]].to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(lines)


def paths_figure(paths: pd.DataFrame, path: Path) -> None:
    """Trace (± 2 SE band) and top eigenvalue vs t, one colour per path."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colours = dict(zip(paths.curve.unique(), sns.color_palette("tab10", paths.curve.nunique())))
    for curve, g in paths.groupby("curve", sort=False):
        g = g.sort_values("t")
        axes[0].plot(g.t, g.trace, marker="o", color=colours[curve], label=curve)
        axes[0].fill_between(g.t, g.trace - 2 * g.trace_se, g.trace + 2 * g.trace_se, color=colours[curve], alpha=0.15)
        axes[1].plot(g.t, g.top_eigenvalue, marker="o", color=colours[curve])
    for ax, col, label in ((axes[0], "trace", "Hessian trace (Hutchinson)"), (axes[1], "top_eigenvalue", "top Hessian eigenvalue")):
        ax.set_xlabel("t along the path (0, 1: the end minima)")
        ax.set_ylabel(label)
        values = paths[col]
        if (values > 0).all() and values.max() / values.min() > 30:  # log only where it spans decades
            ax.set_yscale("log")
    axes[0].legend(loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2, fontsize=7)
    fig.suptitle("Curvature along paths between minima (band: ±2 standard errors of the trace)")
    _save(fig, path)


def sharpness_figure(minima: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    sns.scatterplot(data=minima, x="trace", y="test_error", hue="family", style="family", s=60, ax=ax)
    ax.errorbar(minima.trace, minima.test_error, xerr=minima.trace_se, fmt="none", ecolor="grey", alpha=0.6, zorder=0)
    ax.set_xlabel("Hessian trace at the minimum (± 1 SE)")
    ax.set_ylabel("test error")
    ax.set_title("Sharp vs flat: trace vs test error across minima")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    save_figure(fig, path)


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Rank correlation (nan for fewer than 3 points or constant input)."""
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(np.corrcoef(x.rank(), y.rank())[0, 1])


def metrics(fam: pd.DataFrame, minima: pd.DataFrame, paths: pd.DataFrame, table: pd.DataFrame) -> dict:
    r = table.iloc[0]
    out: dict = {"probes": int(r.probes), "hessian_examples": int(r.hessian_examples), "hessian_mode": r.hessian_mode,
                 "hessian_split": r.hessian_split, "minima": len(minima),
                 "trace_test_error_spearman": _finite(spearman(minima.trace, minima.test_error))}
    for f in fam.itertuples():
        out.setdefault("trace", {})[f.family] = {"mean": f.trace_mean, "std": f.trace_std}
        out.setdefault("top_eigenvalue", {})[f.family] = {"mean": f.top_eigenvalue_mean, "std": f.top_eigenvalue_std}
    if len(paths):
        ends = paths[paths.t.isin([0.0, 1.0])].groupby("curve").trace.mean()
        peak = paths.groupby("curve").trace.max()
        out["path_peak_trace_over_endpoints"] = {"mean": float((peak / ends).mean()), "paths": int(len(peak))}
    return out


def dinh_check(minima: pd.DataFrame, rescaled: pd.DataFrame) -> list[dict]:
    """Each rescaled network next to its original: same function, other curvature."""
    out = []
    for r in rescaled.itertuples():
        original = minima[(minima.family == r.family) & (minima.source == r.source.split(" (")[0])]
        if original.empty:
            continue
        o = original.iloc[0]
        out.append({"network": r.source, "trace": r.trace, "trace_original": o.trace, "top_eigenvalue": r.top_eigenvalue,
                    "top_eigenvalue_original": o.top_eigenvalue, "test_error": r.test_error, "test_error_original": o.test_error})
    return out


def _finite(v: float):
    return None if v != v else v


def section(fam: pd.DataFrame, paths: pd.DataFrame, table: pd.DataFrame, m: dict) -> str:
    lines = ["## Flatness: Hessian trace and top eigenvalue", "",
             "Papers: Hutchinson (1990) trace estimator and power iteration as in PyHessian (Yao et al. 2020); the "
             "sharp-vs-flat question of Keskar et al. (2017) and its caveat by Dinh et al. (2017).", "",
             markdown(fam, paths, table).replace("### ", "#### "),
             "![Trace vs test error](flatness/sharpness.png)", ""]
    rho = m["trace_test_error_spearman"]
    if rho is not None:
        trend = "the sign Keskar et al. report" if rho > 0 else "the opposite sign to Keskar et al.'s finding"
        lines += [f"Across the {m['minima']} minima the rank correlation (Spearman) of trace and test error is {rho:+.2f}, "
                  f"{trend} (sharper minima, reached with large batches, generalise worse). Here the minima differ in seed "
                  "and method rather than batch size, and with this few of them the correlation is weak evidence either way.", ""]
    if len(paths):
        ratio = m["path_peak_trace_over_endpoints"]["mean"]
        shape = ("the curvature rises well above the minima's on the way, where the loss barrier is (Frankle et al. 2020; "
                 "Garipov et al. 2018: independently trained minima are not joined by a low-loss line)") if ratio > 1.5 else \
                ("the curvature stays near the minima's level along the paths, as on a low-loss connecting path (Garipov et al. 2018; "
                 "Draxler et al. 2018)")
        lines += ["![Curvature along paths](flatness/paths.png)", "",
                  f"Along the {m['path_peak_trace_over_endpoints']['paths']} paths the largest trace is on average {ratio:.1f}× the mean "
                  f"trace of the path's two end minima: {shape}.", ""]
    lines += [CAVEAT, ""]
    for d in m.get("rescaled", []):
        lines += [f"Checked here: {d['network']} computes the same function (test error {d['test_error']:.4f} vs "
                  f"{d['test_error_original']:.4f}) but has Hessian trace {d['trace']:.1f} vs {d['trace_original']:.1f} and top "
                  f"eigenvalue {d['top_eigenvalue']:.2f} vs {d['top_eigenvalue_original']:.2f}.", ""]
    return "\n".join(lines)


def write(csvs: list[Path], out_dir: Path, cfg=None) -> dict:
    table = read(csvs)
    minima = table[~table.kind.isin(["path", "simplex", "rescaled"])].reset_index(drop=True)
    rescaled = table[table.kind == "rescaled"]
    paths = path_table(table)
    if minima.empty:
        raise ValueError("curvature results hold no minimum (only paths)")
    fam = per_family(minima)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (("traces.csv", fam), ("minima.csv", minima[["family", "kind", "source", "trace", "trace_se", "top_eigenvalue", "eig_residual", "train_loss", "test_error"]]), ("paths.csv", paths)):
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, index=False)
    write_text(out_dir / "traces.md", "# Hessian trace and top eigenvalue\n\n" + markdown(fam, paths, table) + "\n" + CAVEAT + "\n")
    sharpness_figure(minima, out_dir / "sharpness.png")
    if len(paths):
        paths_figure(paths, out_dir / "paths.png")
    else:  # keep the declared output: an empty figure that says so
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no paths were given", ha="center", va="center")
        ax.axis("off")
        _save(fig, out_dir / "paths.png")
    m = metrics(fam, minima, paths, table)
    m["rescaled"] = dinh_check(minima, rescaled)
    write_json(out_dir / "metrics.json", m)
    write_text(out_dir / "section.md", section(fam, paths, table, m))
    return m
