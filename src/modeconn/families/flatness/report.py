"""Hessian-trace tables and figures (reports/flatness/).

Input: the CSVs of `stages.flatness.curvature` (one row per network: family, kind, source, path, t,
point, trace, trace_se, lambda_max, lambda_min with residuals, losses/errors and the definition of
every estimate). Output:

    traces.csv / traces.md   per family: mean ± std over its minima of the Hessian trace, λ_max,
                             λ_min and test error (with the definition of every number); the peak
                             trace along paths per group of paths; the simplexes' vertices and centres
    minima.csv               one row per minimum (trace vs test error; DVC plots)
    paths.csv                trace, λ_max and λ_min at every point t of every path (DVC plots)
    simplex.csv              the same at the vertices and the centre of every simplex (no t: a
                             simplex is not a path)
    paths.png                trace, λ_max and λ_min along the paths, one row of panels per group
    sharpness.png            trace vs test error across minima, one colour per family
    metrics.json, section.md

A path group is the family that made the paths and the kind of path, e.g. "seeds (linear)" (the
unmatched linear paths between independently trained seeds), "rebasin (linear)" (the same pairs
after weight matching), "curves (bezier)", "neb (polychain)": the peak-to-endpoint ratio is
reported per group, so the low-loss paths are never averaged with the unmatched linear ones.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the workflow's machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ...figures import save_figure  # noqa: E402
from ...io import atomic_path, read_tables, write_json, write_text  # noqa: E402

CAVEAT = (
    "**Scale-invariance caveat (Dinh et al. 2017).** Sharpness measures such as the Hessian trace and "
    "largest eigenvalue are not invariant to reparametrisations that leave the network's function unchanged: "
    "in a ReLU network, multiplying one layer's weights by c > 0 and dividing the next layer's by c gives "
    "the same function (same loss, same test error) with a Hessian whose curvature can be made arbitrarily "
    "large or small. A flat/sharp comparison is therefore only meaningful between networks of one "
    "architecture trained the same way (similar weight norms), as here; it is not evidence that flatness "
    "causes generalisation."
)
LABELS = ["family", "kind", "source", "path", "point"]
CURVATURE = ["trace", "trace_se", "lambda_max", "lambda_min"]
# The ratio above which the curvature along a path is said to rise well above the minima's.
RISE = 1.5


def read(csvs: list[Path]) -> pd.DataFrame:
    if not csvs:
        raise ValueError("no curvature results given")
    table = read_tables(csvs)
    for col in LABELS:  # a minima-only CSV has empty (all-NaN) path and point columns
        values = table[col] if col in table else pd.Series([""] * len(table))
        table[col] = values.astype(object).where(values.notna(), "").astype(str)
    return table


def _number(v) -> str:
    return f"{int(v):,}"


def definition(table: pd.DataFrame) -> str:
    """How every number was measured, from the columns stored with it."""
    r = table.iloc[0]
    bn = "recomputed on training batches for every network" if table.bn_reset.any() else "not applicable (no BatchNorm)"
    restricted = table[table.hessian_restriction != "all parameters"]
    over = f"all {_number(r.parameters)} parameters"
    if len(restricted):
        over += (f", except for the {len(restricted)} pruned networks (lottery tickets), where it is the Hessian restricted to "
                 "the surviving weights (the pruned coordinates are held at zero in training, so they are no direction "
                 "the network can move in): trace = sum of H_ii over surviving coordinates, eigenvalues those of the "
                 "restricted Hessian (see the \"Hessian over\" column)")
    method = "forward tangents contracted with backprop adjoints" if (table.quadratic_method == "forward tangents and adjoints").all() \
        else "one Hessian-vector product per probe (where the network could not be traced) or forward tangents with adjoints"
    return (
        f"Hessian of the mean cross-entropy over a fixed set of {int(r.hessian_batches)} batches × "
        f"{int(r.hessian_batch_size)} = {int(r.hessian_examples)} {r.hessian_split} examples (the same for every network), "
        f"module in {r.hessian_mode} mode, w.r.t. {over}. Trace: Hutchinson estimate with {int(r.probes)} Rademacher "
        f"probes (± its standard error, std/√probes; zᵀHz by {method}). λ_max and λ_min: the largest and the smallest "
        f"eigenvalue of that Hessian by scipy's eigsh (ARPACK implicitly restarted Lanczos, which = LA and SA, "
        f"{int(r.lanczos_vectors)} Lanczos vectors, at most {int(r.lanczos_max_restarts)} restarts, tolerance {r.eig_tolerance:g}; "
        f"λ_min on H + 2|λ_max|·I so the tolerance is relative to the spectral scale). Each comes with its residual "
        f"‖Hv − λv‖ / max(|λ_max|, |λ_min|): an eigenvalue of H lies within that fraction of the spectral scale of the "
        f"reported value (largest residual over the family shown). Test error on the full test split. BatchNorm statistics: {bn}."
    )


def _mean_std(values: pd.Series) -> tuple[float, float]:
    """Mean and sample std (0 for one value) of the finite values; nan if there are none."""
    v = values.astype(float)
    v = v[np.isfinite(v)]
    if v.empty:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _over(g: pd.DataFrame) -> str:
    """Which coordinates the family's Hessians are taken over, for the table."""
    if (g.hessian_restriction == "all parameters").all():
        return f"all {_number(g.parameters.iloc[0])} parameters"
    return f"surviving weights: {_number(g.hessian_coordinates.mean())} of {_number(g.parameters.iloc[0])} (mean)"


def per_family(minima: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample std over the minima of each family (in order of appearance)."""
    rows = []
    for family, g in minima.groupby("family", sort=False):
        row = {"family": family, "kind": ",".join(sorted(g.kind.astype(str).unique())), "minima": len(g), "hessian_over": _over(g)}
        for col in ("trace", "lambda_max", "lambda_min", "test_error", "train_loss"):
            row[f"{col}_mean"], row[f"{col}_std"] = _mean_std(g[col])
        row["trace_se_mean"] = float(g.trace_se.mean())
        row["residual_max"] = float(np.nanmax(g[["lambda_max_residual", "lambda_min_residual"]].to_numpy(dtype=float)))
        row["not_converged"] = int((~g.eig_converged.astype(bool)).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def path_table(table: pd.DataFrame) -> pd.DataFrame:
    """Every point of every path, with its group (family and kind of path) and a unique path label."""
    paths = table[table.kind == "path"].copy()
    paths["group"] = paths.family + " (" + paths.path + ")"
    paths["curve"] = paths.family + ": " + paths.source + " (" + paths.path + ")"
    return paths[["family", "group", "curve", "source", "path", "t", "trace", "trace_se", "lambda_max", "lambda_min", "train_loss", "test_error"]]


def simplex_table(table: pd.DataFrame) -> pd.DataFrame:
    """The vertices and the centre of every simplex: points of a simplex, not of a path."""
    simplex = table[table.kind == "simplex"]
    return simplex[["family", "source", "point", "trace", "trace_se", "lambda_max", "lambda_min", "train_loss", "test_error"]].reset_index(drop=True)


def peaks(paths: pd.DataFrame) -> pd.DataFrame:
    """Per path: the largest trace along it, where (t), and its ratio to the mean trace of the two ends."""
    rows = []
    for curve, g in paths.groupby("curve", sort=False):
        top = g.loc[g.trace.idxmax()]
        ends = g[g.t.isin([0.0, 1.0])].trace.mean()
        rows.append({"group": g.group.iloc[0], "curve": curve, "t": top.t, "trace": top.trace, "trace_se": top.trace_se,
                     "ratio": top.trace / ends, "lambda_max": g.lambda_max.max(), "lambda_min": g.lambda_min.min(),
                     "train_loss": g.train_loss.max()})
    return pd.DataFrame(rows)


def per_group(peak: pd.DataFrame) -> pd.DataFrame:
    """Peak-to-endpoint trace ratio per group of paths (mean, range) and the extreme eigenvalues met."""
    rows = []
    for group, g in peak.groupby("group", sort=False):
        rows.append({"group": group, "paths": len(g), "ratio_mean": float(g.ratio.mean()), "ratio_min": float(g.ratio.min()),
                     "ratio_max": float(g.ratio.max()), "lambda_max": float(g.lambda_max.max()), "lambda_min": float(g.lambda_min.min()),
                     "train_loss_max": float(g.train_loss.max())})
    return pd.DataFrame(rows)


def _pm(m: float, s: float, fmt: str) -> str:
    return "n/a" if m != m else f"{m:{fmt}} ± {s:{fmt}}"


def markdown(fam: pd.DataFrame, paths: pd.DataFrame, simplex: pd.DataFrame, table: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "family": fam.family,
        "kind": fam.kind,
        "minima": fam.minima,
        "Hessian over": fam.hessian_over,
        "Hessian trace": [_pm(m, s, ".1f") for m, s in zip(fam.trace_mean, fam.trace_std)],
        "mean SE of trace": [f"{v:.1f}" for v in fam.trace_se_mean],
        "λ_max": [_pm(m, s, ".2f") for m, s in zip(fam.lambda_max_mean, fam.lambda_max_std)],
        "λ_min": [_pm(m, s, ".3f") for m, s in zip(fam.lambda_min_mean, fam.lambda_min_std)],
        "largest eigen-residual": [f"{v:.1e}" for v in fam.residual_max],
        "test error": [_pm(m, s, ".4f") for m, s in zip(fam.test_error_mean, fam.test_error_std)],
    })
    lines = ["### Hessian trace and extreme eigenvalues at minima, per family", "", f"**Definition.** {definition(table)} "
             "Values are mean ± sample std over the family's minima.", "", shown.to_markdown(index=False), ""]
    missing = int(fam.not_converged.sum())
    if missing:
        lines += [f"For {missing} minima the Lanczos solver did not converge within its restarts; they are left out of the eigenvalue means.", ""]
    if len(paths):
        peak = peaks(paths)
        groups = per_group(peak)
        lines += ["### Trace along paths", "",
                  "Per group of paths (the family that made them and the kind of path): the largest trace along each path "
                  "divided by the mean trace at its two end minima (t = 0, 1), its mean and range over the group's paths; the "
                  "largest λ_max and the smallest λ_min met on the group's paths, and the highest training loss.", "",
                  pd.DataFrame({"group": groups.group, "paths": groups.paths,
                                "peak trace / endpoints": [f"{m:.2f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in zip(groups.ratio_mean, groups.ratio_min, groups.ratio_max)],
                                "max λ_max": [f"{v:.2f}" for v in groups.lambda_max], "min λ_min": [f"{v:.3f}" for v in groups.lambda_min],
                                "max train loss": [f"{v:.3f}" for v in groups.train_loss_max]}).to_markdown(index=False), "",
                  "Each path: where its trace peaks (t), the peak, and its ratio to the endpoints.", "",
                  peak[["group", "curve", "t", "trace", "trace_se", "ratio", "lambda_max", "lambda_min", "train_loss"]].to_markdown(index=False, floatfmt=".3f"), ""]
    if len(simplex):
        lines += ["### Simplexes", "", "Curvature at each vertex and at the centre (the mean of the vertices) of every simplex.", "",
                  simplex[["family", "source", "point", "trace", "trace_se", "lambda_max", "lambda_min", "train_loss", "test_error"]].to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(lines)


def short_labels(sources: list[str]) -> dict[str, str]:
    """Legend labels: each endpoint's last path components, as few as keep the labels distinct."""
    def cut(source: str, depth: int) -> str:
        return " – ".join("/".join(end.split("/")[-depth:]) for end in source.split(" – "))

    for depth in range(1, 1 + max(len(end.split("/")) for s in sources for end in s.split(" – "))):
        labels = {s: cut(s, depth) for s in sources}
        if len(set(labels.values())) == len(sources):
            return labels
    return {s: s for s in sources}


def paths_figure(paths: pd.DataFrame, path: Path) -> None:
    """One row of panels per group of paths: trace (± 2 SE band), λ_max and λ_min vs t, a colour per path."""
    groups = list(paths.group.unique())
    fig, axes = plt.subplots(len(groups), 3, figsize=(14, 3.1 * len(groups)), squeeze=False, layout="constrained")
    for row, group in zip(axes, groups):
        g = paths[paths.group == group]
        names = short_labels(list(g.source.unique()))
        colours = dict(zip(names, sns.color_palette("tab10", len(names))))
        for source, c in g.groupby("source", sort=False):
            c = c.sort_values("t")
            colour = colours[source]
            row[0].plot(c.t, c.trace, marker="o", color=colour, label=names[source])
            row[0].fill_between(c.t, c.trace - 2 * c.trace_se, c.trace + 2 * c.trace_se, color=colour, alpha=0.15)
            row[1].plot(c.t, c.lambda_max, marker="o", color=colour)
            row[2].plot(c.t, c.lambda_min, marker="o", color=colour)
        for ax, label in zip(row, ("Hessian trace (Hutchinson)", "λ_max", "λ_min")):
            ax.set_ylabel(label)
            ax.set_title(group, fontsize=9)
        row[2].axhline(0.0, color="grey", lw=0.8)
        if (g.trace > 0).all() and g.trace.max() / g.trace.min() > 30:  # log only where it spans decades
            row[0].set_yscale("log")
        row[0].legend(fontsize=7, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("t along the path (0, 1: the end minima)")
    fig.suptitle("Curvature along paths between minima, one row per group of paths (band: ±2 standard errors of the trace)")
    save_figure(fig, path)


def sharpness_figure(minima: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    sns.scatterplot(data=minima, x="trace", y="test_error", hue="family", style="family", s=60, ax=ax)
    ax.errorbar(minima.trace, minima.test_error, xerr=minima.trace_se, fmt="none", ecolor="grey", alpha=0.6, zorder=0)
    ax.set_xlabel("Hessian trace at the minimum (± 1 SE)")
    ax.set_ylabel("test error")
    ax.set_title("Sharp vs flat: trace vs test error across minima")
    # beside the axes: inside, the legend covered the sharpest and worst minima
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Rank correlation (nan for fewer than 3 points or constant input)."""
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(np.corrcoef(x.rank(), y.rank())[0, 1])


def _finite(v: float):
    return None if v != v else v


def metrics(fam: pd.DataFrame, minima: pd.DataFrame, paths: pd.DataFrame, simplex: pd.DataFrame, table: pd.DataFrame) -> dict:
    r = table.iloc[0]
    out: dict = {"probes": int(r.probes), "hessian_examples": int(r.hessian_examples), "hessian_mode": r.hessian_mode,
                 "hessian_split": r.hessian_split, "minima": len(minima), "paths": int(paths.curve.nunique()) if len(paths) else 0,
                 "simplex_points": len(simplex), "eig_not_converged": int((~table.eig_converged.astype(bool)).sum()),
                 "trace_test_error_spearman": _finite(spearman(minima.trace, minima.test_error))}
    for f in fam.itertuples():
        for col in ("trace", "lambda_max", "lambda_min"):
            out.setdefault(col, {})[f.family] = {"mean": _finite(getattr(f, f"{col}_mean")), "std": _finite(getattr(f, f"{col}_std"))}
    if len(paths):
        out["path_peak_trace_over_endpoints"] = {
            g.group: {"mean": g.ratio_mean, "min": g.ratio_min, "max": g.ratio_max, "paths": int(g.paths)} for g in per_group(peaks(paths)).itertuples()}
    return out


def dinh_check(minima: pd.DataFrame, rescaled: pd.DataFrame) -> list[dict]:
    """Each rescaled network next to its original: same function, other curvature."""
    out = []
    for r in rescaled.itertuples():
        original = minima[(minima.family == r.family) & (minima.source == r.source.split(" (")[0])]
        if original.empty:
            continue
        o = original.iloc[0]
        out.append({"network": r.source, "trace": r.trace, "trace_original": o.trace, "lambda_max": _finite(r.lambda_max),
                    "lambda_max_original": _finite(o.lambda_max), "test_error": r.test_error, "test_error_original": o.test_error})
    return out


def _path_sentence(group: str, g: dict) -> str:
    ratio = g["mean"]
    shape = ("the curvature rises well above the minima's on the way" if ratio > RISE
             else "the curvature stays near the minima's level along the paths")
    return f"- {group}: the largest trace is on average {ratio:.2f}× the mean trace of the two end minima (range {g['min']:.2f}–{g['max']:.2f} over {g['paths']} paths): {shape}."


def section(fam: pd.DataFrame, paths: pd.DataFrame, simplex: pd.DataFrame, table: pd.DataFrame, m: dict) -> str:
    lines = ["## Flatness: Hessian trace and extreme eigenvalues", "",
             "Papers: Hutchinson (1990) trace estimator as in PyHessian (Yao et al. 2020); the largest and smallest Hessian "
             "eigenvalues by the Lanczos method (ARPACK via scipy); the sharp-vs-flat question of Keskar et al. (2017) and its "
             "caveat by Dinh et al. (2017).", "",
             markdown(fam, paths, simplex, table).replace("### ", "#### "),
             "![Trace vs test error](flatness/sharpness.png)", ""]
    rho = m["trace_test_error_spearman"]
    if rho is not None:
        trend = "the sign Keskar et al. report" if rho > 0 else "the opposite sign to Keskar et al.'s finding"
        lines += [f"Across the {m['minima']} minima the rank correlation (Spearman) of trace and test error is {rho:+.2f}, "
                  f"{trend} (sharper minima, reached with large batches, generalise worse). Here the minima differ in seed "
                  "and method rather than batch size, and with this few of them the correlation is weak evidence either way.", ""]
    if len(paths):
        lines += ["![Curvature along paths](flatness/paths.png)", "",
                  "Peak trace along the paths relative to their end minima, per group of paths. Independently trained minima "
                  "are not joined by a low-loss line (Frankle et al. 2020; Garipov et al. 2018), so the unmatched linear paths "
                  "between seeds are expected to rise; trained curves and NEB paths (Garipov et al. 2018; Draxler et al. 2018) are "
                  "low-loss paths, and weight matching (Ainsworth et al. 2023) lowers the barrier of the linear path. Each group "
                  "is reported on its own:", ""]
        lines += [_path_sentence(group, g) for group, g in m["path_peak_trace_over_endpoints"].items()]
        lines += ["", "A negative λ_min is a direction of negative curvature (the loss falls along it to second order).", ""]
    lines += [CAVEAT, ""]
    for d in m.get("rescaled", []):
        lines += [f"Checked here: {d['network']} computes the same function (test error {d['test_error']:.4f} vs "
                  f"{d['test_error_original']:.4f}) but has Hessian trace {d['trace']:.1f} vs {d['trace_original']:.1f} and "
                  f"λ_max {d['lambda_max']:.2f} vs {d['lambda_max_original']:.2f}.", ""]
    return "\n".join(lines)


def _empty_figure(path: Path, text: str) -> None:
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.axis("off")
    save_figure(fig, path)


def write(csvs: list[Path], out_dir: Path, cfg=None) -> dict:
    table = read(csvs)
    minima = table[~table.kind.isin(["path", "simplex", "rescaled"])].reset_index(drop=True)
    rescaled = table[table.kind == "rescaled"]
    paths, simplex = path_table(table), simplex_table(table)
    if minima.empty:
        raise ValueError("curvature results hold no minimum (only paths)")
    fam = per_family(minima)
    out_dir.mkdir(parents=True, exist_ok=True)
    minima_columns = ["family", "kind", "source", "hessian_restriction", "hessian_coordinates", "trace", "trace_se", "lambda_max",
                      "lambda_min", "lambda_max_residual", "lambda_min_residual", "train_loss", "test_error"]
    for name, frame in (("traces.csv", fam), ("minima.csv", minima[minima_columns]), ("paths.csv", paths), ("simplex.csv", simplex)):
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, index=False)
    write_text(out_dir / "traces.md", "# Hessian trace and extreme eigenvalues\n\n" + markdown(fam, paths, simplex, table) + "\n" + CAVEAT + "\n")
    sharpness_figure(minima, out_dir / "sharpness.png")
    if len(paths):
        paths_figure(paths, out_dir / "paths.png")
    else:  # keep the declared output: an empty figure that says so
        _empty_figure(out_dir / "paths.png", "no paths were given")
    m = metrics(fam, minima, paths, simplex, table)
    m["rescaled"] = dinh_check(minima, rescaled)
    write_json(out_dir / "metrics.json", m)
    write_text(out_dir / "section.md", section(fam, paths, simplex, table, m))
    return m
