"""Loss-landscape figures and tables (reports/landscape/).

Input: the CSVs of `stages.landscape.around` (1-D and 2-D, per minimum) and `.between` (per pair).
Output:

    landscape_1d.png / surface_1d.csv   loss and error along one filter-normalised direction
    landscape_2d.png / surface_2d.csv   contours of train loss and test error over two directions
    between.png / between.csv           loss and error on the line through two minima (and beyond)
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

from ...io import read_tables, write_csv, write_json, write_text  # noqa: E402
from ...figures import save_figure

METRICS = ("loss", "error")
SPLITS = ("train", "test")


def _save(fig, path: Path) -> None:
    save_figure(fig, path)


def figure_1d(table: pd.DataFrame, path: Path) -> None:
    """Loss (left) and error (right) along α·d₁ around every minimum, train and test."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, METRICS):
        sns.lineplot(data=table, x="alpha", y=metric, hue="center", style="split", ax=ax, marker=".", legend=ax is axes[0])
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("α  (θ = θ* + α d, d filter-normalised)")
        ax.set_ylabel(f"{metric} (first {int(table.examples.iloc[0])} examples)")
    fig.suptitle("1-D loss landscape around a minimum (Li et al. 2018)")
    _save(fig, path)


def figure_2d(table: pd.DataFrame, path: Path) -> None:
    """Contours of train loss and test error over (α, β) for every minimum (one row each)."""
    centers = list(dict.fromkeys(table.center))
    fig, axes = plt.subplots(len(centers), 2, figsize=(10, 4.2 * len(centers)), squeeze=False)
    for row, center in zip(axes, centers):
        for ax, (split, metric) in zip(row, (("train", "loss"), ("test", "error"))):
            sel = table[(table.center == center) & (table.split == split)]
            grid = sel.pivot(index="beta", columns="alpha", values=metric)
            a, b, z = grid.columns.to_numpy(), grid.index.to_numpy(), grid.to_numpy()
            if metric == "loss":
                levels = np.geomspace(max(z.min(), 1e-4), z.max(), 15) if z.max() > z.min() else 10
                cs = ax.contour(a, b, z, levels=levels, cmap="viridis")
                ax.clabel(cs, cs.levels[::3], fmt="%.2g", fontsize=7)
            else:
                cs = ax.contourf(a, b, z, levels=12, cmap="magma")
                fig.colorbar(cs, ax=ax, label="test error")
            ax.plot(0, 0, "k*", ms=10, label="minimum")
            ax.set_xlabel("α (direction 1)")
            ax.set_ylabel("β (direction 2)")
            ax.set_title(f"{center}: {split} {metric}" + (" (log-spaced contours)" if metric == "loss" else ""))
            ax.set_aspect("equal")
    fig.suptitle("2-D loss landscape around a minimum, filter-normalised directions (Li et al. 2018)")
    _save(fig, path)


def figure_between(table: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, METRICS):
        sns.lineplot(data=table, x="alpha", y=metric, hue="pair", style="split", ax=ax, marker=".", legend=ax is axes[0])
        for x in (0.0, 1.0):
            ax.axvline(x, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("α  (θ = (1−α) θ_A + α θ_B; minima at 0 and 1)")
        ax.set_ylabel(f"{metric} (first {int(table.examples.iloc[0])} examples)")
    fig.suptitle("1-D landscape on the line through two minima")
    _save(fig, path)


def center_metrics(one: pd.DataFrame, two: pd.DataFrame) -> dict:
    out = {}
    for center, g in one.groupby("center"):
        tr = g[g.split == "train"].sort_values("alpha")
        at0 = tr.loc[tr.alpha.abs().idxmin()]
        edge = tr[tr.alpha.abs() == tr.alpha.abs().max()]
        out[center] = {"train_loss_at_minimum": float(at0.loss), "train_loss_at_span_edges": float(edge.loss.mean()),
                       "bowl_1d": bowl(tr.alpha.to_numpy(), tr.loss.to_numpy()),
                       "test_error_at_minimum": float(g[(g.split == "test")].set_index("alpha").error.loc[at0.alpha])}
    for center, g in two.groupby("center"):
        tr = g[g.split == "train"]
        base = float(tr[(tr.alpha == 0) & (tr.beta == 0)].loss.iloc[0]) if ((tr.alpha == 0) & (tr.beta == 0)).any() else float(tr.loss.min())
        # Share of the plotted square whose train loss stays below twice the minimum's plus 0.1:
        # a rough "basin width" for comparing minima drawn with the same span.
        out.setdefault(center, {})["basin_fraction_2d"] = float((tr.loss <= 2 * base + 0.1).mean())
    return out


def bowl(alpha: np.ndarray, loss: np.ndarray, slack: float = 1e-3) -> bool:
    """True if the loss never decreases moving away from α = 0 on either side (up to `slack`):
    the convex-looking basin Li et al. (2018) see around minima of well-generalising networks."""
    right, left = loss[alpha >= 0], loss[alpha <= 0][::-1]
    return bool((np.diff(right) >= -slack).all() and (np.diff(left) >= -slack).all())


def between_metrics(table: pd.DataFrame) -> dict:
    out = {}
    for pair, g in table.groupby("pair"):
        inside = g[(g.alpha >= 0) & (g.alpha <= 1)]
        for split in SPLITS:
            s = inside[inside.split == split].sort_values("alpha")
            ends = 0.5 * (s.loss.iloc[0] + s.loss.iloc[-1])
            out.setdefault(pair, {})[f"{split}_loss_barrier"] = float(s.loss.max() - ends)
    return out


def section(m: dict, one: pd.DataFrame, between: pd.DataFrame, cfg) -> str:
    lc = cfg.landscape if cfg is not None else None
    how = (f"Directions: Gaussian, filter-normalised (each output row / filter rescaled to the norm of the matching "
           f"filter of the minimum), biases and normalisation parameters: {lc.bias_and_norm}; coefficients over "
           f"[−{lc.span}, {lc.span}], {lc.points_1d} points (1-D) and {lc.points_2d}×{lc.points_2d} (2-D); "
           f"evaluated on the first {lc.examples or 'all'} examples of each split.") if lc else ""
    lines = ["## Loss landscapes", "",
             "Paper: Li et al. (2018), *Visualizing the Loss Landscape of Neural Nets*: filter-normalised random "
             "directions make landscapes of different networks comparable; 1-D linear interpolation between minima "
             "follows Goodfellow et al. (2015).", "", how, "",
             "![1-D landscape](landscape/landscape_1d.png)", "",
             "![2-D landscape](landscape/landscape_2d.png)", ""]
    for center, v in m["centers"].items():
        lines.append(f"- {center}: train loss {v['train_loss_at_minimum']:.4f} at the minimum and {v['train_loss_at_span_edges']:.3f} "
                     f"at the edges of the 1-D plot" + (f"; {100 * v['basin_fraction_2d']:.0f}% of the 2-D square stays below twice the minimum's loss + 0.1" if "basin_fraction_2d" in v else "")
                     + (". The 1-D train loss rises monotonically on both sides: a convex-looking basin, as Li et al. find around minima of well-generalising networks."
                        if v["bowl_1d"] else ". The 1-D train loss does not rise monotonically on both sides: not the convex-looking basin Li et al. find around minima of well-generalising networks."))
    if len(between):
        lines += ["", "![Between minima](landscape/between.png)", ""]
        for pair, v in m["between"].items():
            lines.append(f"- {pair}: train-loss barrier on the segment {v['train_loss_barrier']:.3f} (max minus mean of the endpoints, "
                         f"{int(between[between.pair == pair].alpha.between(0, 1).sum() // 2)} points in [0, 1]); independently "
                         "trained minima are separated by a barrier on the straight line (Goodfellow et al. 2015 found none for "
                         "the line from initialisation; Frankle et al. 2020 and Garipov et al. 2018 report one between separately trained networks).")
    lines.append("")
    return "\n".join(lines)


def write(around: list[Path], between: list[Path], out_dir: Path, cfg=None) -> dict:
    if not around:
        raise ValueError("no landscape results given")
    table = read_tables(around)
    one, two = table[table.dims == 1], table[table.dims == 2]
    if one.empty or two.empty:
        raise ValueError("landscape report needs both a 1-D and a 2-D landscape")
    lines = read_tables(between) if between else pd.DataFrame(columns=["a", "b", "alpha", "split", "loss", "error", "examples"])
    lines["pair"] = lines["a"].astype(str) + "–" + lines["b"].astype(str)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (("surface_1d.csv", one.drop(columns=["beta", "dims"])), ("surface_2d.csv", two.drop(columns=["dims"])), ("between.csv", lines)):
        write_csv(out_dir / name, frame)
    figure_1d(one, out_dir / "landscape_1d.png")
    figure_2d(two, out_dir / "landscape_2d.png")
    if len(lines):
        figure_between(lines, out_dir / "between.png")
    else:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no pairs of minima were given", ha="center", va="center")
        ax.axis("off")
        _save(fig, out_dir / "between.png")
    m = {"centers": center_metrics(one, two), "between": between_metrics(lines) if len(lines) else {}}
    write_json(out_dir / "metrics.json", m)
    write_text(out_dir / "section.md", section(m, one, lines, cfg))
    return m
