"""Tables and figures of the curves family (reports/curves/), in the format of Garipov et al. 2018.

Inputs, per seed pair: along.csv (loss/error at every t of the linear path and each curve, train
and test, arc length, test disagreement with the endpoints), ensembles.csv (ensembles of points
on each path) and plane.csv (grid of the curve plane). Outputs: table.csv / table.md (min, max,
mean, length-weighted integral and barrier of every metric along every path; mean ± std over
pairs), ensembles.csv / ensembles.md, along.csv (DVC plots), along.png, ensembles.png, plane.png,
metrics.json and section.md (the family's part of reports/README.md). Barriers use the definition
`evaluation.barrier` (core.barrier), named in every table.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from ...consolidated import NEAR_ZERO, headline as headline_line, share  # noqa: E402
from ...core import barrier as barrier_math  # noqa: E402
from ...core.curves import path_summary  # noqa: E402
from ...io import read_tables, write_csv, write_json, write_text  # noqa: E402
from ...tables import mean_std_table, ms  # noqa: E402
from ...figures import save_figure

PATHS = ("linear", "bezier", "polychain")
NAMES = {"linear": "straight line", "bezier": "Bezier", "polychain": "PolyChain"}
STATS = ("min", "max", "mean", "int", "barrier")


def _pair(table: pd.DataFrame) -> pd.Series:
    return "seed" + table.seed_a.astype(str) + "–seed" + table.seed_b.astype(str)


def _ms(values) -> str:
    return ms(values, 3)


def per_pair(along: pd.DataFrame, kind: str = barrier_math.MAX_MINUS_MEAN) -> pd.DataFrame:
    """One row per (pair, path, split, metric) with min, max, mean, int and barrier (definition `kind`) along t."""
    rows = []
    for (pair, path, split), g in along.groupby(["pair", "path", "split"], sort=False):
        g = g.sort_values("t")
        lengths = torch.tensor(np.diff(g.arc_length.to_numpy()))
        t = torch.tensor(g.t.to_numpy())
        for metric in ("loss", "error"):
            summ = path_summary(torch.tensor(g[metric].to_numpy()), lengths, kind, t)
            rows.append({"pair": pair, "path": path, "split": split, "metric": metric, **summ,
                         "length": g.arc_length.max(), "points": len(g), "bn_reset": bool(g.bn_reset.iloc[0]),
                         "barrier_definition": kind})
    return pd.DataFrame(rows)


def garipov_table(pairs: pd.DataFrame, split: str, metric: str, scale: float = 1.0) -> pd.DataFrame:
    """Rows: paths; columns: min, max, avg, int (and the barrier, its definition in the header) of
    `metric` on `split`, mean ± std over pairs."""
    names = {"mean": "avg", "barrier": barrier_math.column(str(pairs.barrier_definition.iloc[0]))}
    out = []
    for path in [p for p in PATHS if p in set(pairs.path)]:
        sel = pairs[(pairs.path == path) & (pairs.split == split) & (pairs.metric == metric)]
        out.append({"path": path, **{names.get(s, s): _ms(sel[s] * scale) for s in STATS}})
    return pd.DataFrame(out)


def ensemble_summary(ens: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (path, points), g in ens.groupby(["path", "points"], sort=False):
        rows.append({"path": path, "points": points, "t": g.t.iloc[0], "ensemble error (%)": _ms(100 * g.ensemble_error),
                     "ensemble NLL": _ms(g.ensemble_nll), "member error (%)": _ms(100 * g.member_error), "pairs": len(g)})
    return pd.DataFrame(rows)


def _save(fig, path: Path) -> None:
    save_figure(fig, path)


def along_figure(along: pd.DataFrame, path: Path) -> None:
    """Loss and error vs t for every path (mean over pairs, band: ± std), train and test."""
    long = along.melt(id_vars=["pair", "path", "t", "split"], value_vars=["loss", "error"], var_name="metric", value_name="value")
    grid = sns.relplot(data=long, x="t", y="value", hue="path", hue_order=[p for p in PATHS if p in set(along.path)],
                       row="metric", col="split", col_order=["train", "test"], kind="line", errorbar="sd",
                       height=2.8, aspect=1.4, facet_kws={"sharey": False})
    for (metric, split), ax in grid.axes_dict.items():
        ax.set_ylabel(f"{split} {metric}")
        ax.set_xlabel("t (position along the path; endpoints at 0 and 1)")
    grid.set_titles("{row_name} — {col_name}")
    grid.figure.suptitle(f"Loss and error along the linear path and the trained curves (mean ± std over {along.pair.nunique()} pairs)", y=1.02)
    _save(grid.figure, path)


def ensembles_figure(ens: pd.DataFrame, along: pd.DataFrame, path: Path) -> None:
    """Left: test error of ensembles of n points on each path; right: disagreement with endpoint A along t."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    order = [p for p in PATHS if p in set(ens.path)]
    sns.lineplot(data=ens.assign(err=100 * ens.ensemble_error), x="points", y="err", hue="path", hue_order=order, marker="o", errorbar="sd", ax=axes[0])
    single = 100 * ens[ens.points == 1].member_error.mean()
    axes[0].axhline(single, color="grey", ls=":", label="single endpoint (mean)")
    axes[0].set_xlabel("n: evenly spaced points on the path in the ensemble (n = 1: endpoints alone)")
    axes[0].set_ylabel("ensemble test error (%)")
    axes[0].legend()
    test = along[along.split == "test"]
    sns.lineplot(data=test.assign(d=100 * test.disagree_a), x="t", y="d", hue="path", hue_order=order, errorbar="sd", ax=axes[1])
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("test predictions differing from θ(0) (%)")
    fig.suptitle("Ensembles along the paths and disagreement between points (test split, mean ± std over pairs)")
    _save(fig, path)


def plane_figure(planes: pd.DataFrame, path: Path) -> None:
    """Contours of train loss and test error on each curve's plane, linear path and curve overlaid."""
    panels = list(planes.groupby(["pair", "curve"], sort=False))
    fig, axes = plt.subplots(len(panels), 2, figsize=(13, 4.0 * len(panels)), squeeze=False, constrained_layout=True)
    for row, ((pair, curve), g) in enumerate(panels):
        grid = g[g.role == "grid"]
        anchors = g[g.role == "anchor"].sort_values("t")
        line = g[g.role == "curve"].sort_values("t")
        for col, (split, metric, label) in enumerate([("train", "loss", "train loss (log scale)"), ("test", "error", "test error (%)")]):
            ax = axes[row, col]
            sel = grid[grid.split == split].pivot_table(index="y", columns="x", values=metric)
            z = np.log10(sel.to_numpy().clip(min=1e-4)) if metric == "loss" else 100 * sel.to_numpy()
            cs = ax.contourf(sel.columns, sel.index, z, levels=20, cmap="viridis_r")
            fig.colorbar(cs, ax=ax, label=("log10 " if metric == "loss" else "") + label.split(" (")[0])
            ends = anchors.iloc[[0, -1]]
            ax.plot(ends.x, ends.y, "k--", lw=1.5, label="linear path")
            ax.plot(line.x, line.y, color="orange", lw=2, label="curve (the row's kind)")
            ax.scatter(ends.x, ends.y, c="white", edgecolors="black", s=60, zorder=5, label="endpoints (seeds)")
            ax.scatter(anchors.x.iloc[1:-1], anchors.y.iloc[1:-1], c="red", marker="s", s=40, zorder=5, label="bend")
            ax.set_title(f"{pair}, {curve} plane: {label}")
            ax.set_xlabel("x along θ_B − θ_A (weight-space distance)")
            ax.set_ylabel("y (Gram–Schmidt direction to the bend)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=9)
    _save(fig, path)


def metrics(pairs: pd.DataFrame, ens: pd.DataFrame, points: int) -> dict:
    out: dict = {"pairs": int(pairs.pair.nunique()), "points": points, "bn_reset": bool(pairs.bn_reset.any()),
                 "barrier_definition": str(pairs.barrier_definition.iloc[0])}
    stats = ("max", "int", "barrier")
    for r in mean_std_table(pairs, ["path", "split", "metric"], stats).to_dict("records"):
        out.setdefault(r["path"], {}).setdefault(r["split"], {}).setdefault(r["metric"], {}).update(
            {stat: {"mean": r[f"{stat}_mean"], "std": r[f"{stat}_std"]} for stat in stats})
    for r in mean_std_table(ens, ["path", "points"], ["ensemble_error"]).to_dict("records"):
        out.setdefault(r["path"], {}).setdefault("ensemble_test_error", {})[str(r["points"])] = {
            "mean": r["ensemble_error_mean"], "std": r["ensemble_error_std"]}
    return out


DEFINITIONS = (
    "Every path is evaluated at {points} evenly spaced t in [0, 1] (endpoints included); min, max and avg are over "
    "those points; int is the length-weighted mean ∫ f(θ(t)) |θ'(t)| dt / ∫ |θ'(t)| dt (trapezoids on the segments "
    "between consecutive points); barrier (`{kind}`) = {formula}. Loss = mean cross-entropy, error = "
    "fraction misclassified, on the full train or test split. Values: mean ± sample std over {pairs} pairs of seeds. "
    "BatchNorm statistics: {bn}."
)


def _text(pairs: pd.DataFrame, ens: pd.DataFrame, points: int) -> tuple[str, str, str]:
    bn = "recomputed on training batches at every t" if pairs.bn_reset.any() else "not applicable (no BatchNorm)"
    kind = str(pairs.barrier_definition.iloc[0])
    definition = DEFINITIONS.format(points=points, pairs=pairs.pair.nunique(), bn=bn, kind=kind, formula=barrier_math.formula(kind, "t"))
    tables = "\n".join([
        "**Train loss** (Garipov et al. 2018, Table 1 format)", "", garipov_table(pairs, "train", "loss").to_markdown(index=False), "",
        "**Test error (%)**", "", garipov_table(pairs, "test", "error", 100).to_markdown(index=False), "",
        "**Test loss**", "", garipov_table(pairs, "test", "loss").to_markdown(index=False), "",
        "**Train error (%)**", "", garipov_table(pairs, "train", "error", 100).to_markdown(index=False), "",
    ])
    ens_md = ensemble_summary(ens).to_markdown(index=False)
    return definition, tables, ens_md


def endpoint_loss(along: pd.DataFrame, split: str = "train") -> float:
    """Mean over pairs of the mean loss at the two endpoints (t = 0 and 1) of the linear path."""
    lin = along[(along.path == "linear") & (along.split == split)]
    ends = lin[lin.t.isin([lin.t.min(), lin.t.max()])]
    return float(ends.groupby("pair")["loss"].mean().mean())


def headline(pairs: pd.DataFrame, endpoints: float) -> str:
    """The section's headline line (consolidated.headline): trained curves have a near-zero train loss
    barrier where the straight line has a large one (Garipov et al. 2018). `endpoints`: the mean train
    loss at the endpoints (see endpoint_loss)."""
    def barrier(path: str) -> float:
        return float(pairs[(pairs.path == path) & (pairs.split == "train") & (pairs.metric == "loss")].barrier.mean())

    line = barrier("linear")
    curves = [p for p in PATHS[1:] if p in set(pairs.path)]
    values = {p: barrier(p) for p in curves}
    large = line > endpoints
    far = [NAMES[p] for p in curves if not (line > 0 and values[p] <= NEAR_ZERO * line)]
    shares = " / ".join(share(values[p], line) for p in curves)
    return headline_line(large and bool(curves) and not far,
        f"Trained {' / '.join(NAMES[p] for p in curves)} curves have a train loss barrier of "
        f"{' / '.join(f'{values[p]:.4f}' for p in curves)} ({shares} of the straight line's {line:.4f}, which is "
        f"{'large: above' if large else 'not large: not above'} the endpoints' own train loss, {endpoints:.4f}; near zero: "
        f"at most {NEAR_ZERO:.0%} of the line's, " + ("reached by every curve" if not far else "not reached by " + " and ".join(far))
        + "); Garipov et al. 2018 find curves of near-constant train loss between minima that the straight line separates "
        "by a high barrier.")


def section(pairs: pd.DataFrame, ens: pd.DataFrame, points: int, setting: str, endpoints: float) -> str:
    """The family's section; `endpoints`: the mean train loss at the endpoints (endpoint_loss), for the headline."""
    definition, tables, ens_md = _text(pairs, ens, points)

    def val(path, split, metric, stat, scale=1.0):
        sel = pairs[(pairs.path == path) & (pairs.split == split) & (pairs.metric == metric)][stat]
        return scale * sel.mean() if len(sel) else float("nan")

    curve = "bezier" if "bezier" in set(pairs.path) else sorted(set(pairs.path) - {"linear"})[0]
    comparisons = [
        f"- Maximum train loss along the {curve} curve: {val(curve, 'train', 'loss', 'max'):.3f}, against "
        f"{val('linear', 'train', 'loss', 'max'):.3f} on the straight line. Garipov et al. report that trained curves "
        "keep the train loss near the endpoints' value for all t while the line rises sharply; "
        + ("the same holds here (its train loss barrier is near zero: at most "
           f"{NEAR_ZERO:.0%} of the line's)." if val(curve, "train", "loss", "barrier") <= NEAR_ZERO * val("linear", "train", "loss", "barrier")
           else f"here the curve's train loss barrier, {val(curve, 'train', 'loss', 'barrier'):.3f}, is "
           f"{share(val(curve, 'train', 'loss', 'barrier'), val('linear', 'train', 'loss', 'barrier'))} of the line's, more than "
           f"the {NEAR_ZERO:.0%} counted as near zero."),
        f"- Maximum test error along the {curve} curve: {val(curve, 'test', 'error', 'max', 100):.1f}% against "
        f"{val('linear', 'test', 'error', 'max', 100):.1f}% on the line and {val(curve, 'test', 'error', 'min', 100):.1f}% at best along it. "
        "The paper finds the test error along trained curves staying close to the endpoints' while the line's rises towards chance; "
        + ("so it does here." if val(curve, "test", "error", "max") < 0.5 * val("linear", "test", "error", "max") else "here the curve's test error rises well above the endpoints'."),
    ]
    e2 = ens[(ens.path == curve) & (ens.points == 2)].ensemble_error.mean() * 100
    big = ens[ens.path == curve].points.max()
    ebig = ens[(ens.path == curve) & (ens.points == big)].ensemble_error.mean() * 100
    comparisons.append(
        f"- Ensembles: the two endpoints together err on {e2:.1f}% of the test set and {big} points along the {curve} curve on "
        f"{ebig:.1f}%; Garipov et al. observe that points along a curve are diverse enough to ensemble (the idea behind FGE), "
        "though an ensemble of independent endpoints is usually the stronger one."
    )
    return "\n".join([
        "## Curves between minima (Garipov et al. 2018)",
        "",
        "Garipov, Izmailov, Podoprikhin, Vetrov, Wilson, *Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs*, NeurIPS 2018.",
        "",
        f"What was run: {setting}",
        "",
        definition,
        "",
        tables,
        "**Ensembles of n evenly spaced points on each path** (test split; n = 1 row: the two endpoints' mean single-model error)",
        "",
        ens_md,
        "",
        "![Loss and error along the paths](curves/along.png)",
        "",
        "![Ensembles along the curves and disagreement](curves/ensembles.png)",
        "",
        "![The plane through the endpoints and the bend](curves/plane.png)",
        "",
        "How this compares with the paper:",
        "",
        *comparisons,
        "",
        headline(pairs, endpoints),
        "",
    ])


def setting(cfg) -> str:
    """One sentence on what was run (dataset, model, curve training, plane)."""
    if cfg is None:
        return ""
    c = cfg.curves
    return (f"{cfg.data.name}, {cfg.model.name} (norm {cfg.model.norm}); {', '.join(c.kinds)} curves with {c.anchors} anchors "
            f"({c.anchors - 2} free bend{'s' if c.anchors > 3 else ''}) between the first {c.pairs} seed pair(s), trained {c.duration} "
            f"with {c.optimizer} lr {c.lr:g} (Garipov's schedule), batch {c.batch_size}, L2 {c.weight_decay:g} on the sampled point; "
            f"planes on a {c.grid}×{c.grid} grid ({'first ' + str(c.plane_examples) if c.plane_examples else 'all'} examples of each split).")


def write(along_csvs: list[Path], ensemble_csvs: list[Path], plane_csvs: list[Path], out_dir: Path, cfg=None) -> dict:
    if not along_csvs:
        raise ValueError("no curve evaluations given")
    along = read_tables(along_csvs)
    ens = read_tables(ensemble_csvs)
    planes = read_tables(plane_csvs, measured=lambda f: f.role == "grid")  # other rows: coordinates only
    for t in (along, ens, planes):
        t["pair"] = _pair(t)
    points = int(along.groupby(["pair", "path", "split"]).size().iloc[0])
    pairs = per_pair(along, barrier_math.MAX_MINUS_MEAN if cfg is None else cfg.evaluation.barrier)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "table.csv", pairs)
    write_csv(out_dir / "ensembles.csv", ens)
    write_csv(out_dir / "along.csv", along.drop(columns=["examples"]))
    definition, tables, ens_md = _text(pairs, ens, points)
    write_text(out_dir / "table.md", f"# Curves between minima: loss and error along the paths\n\n{definition}\n\n{tables}")
    write_text(out_dir / "ensembles.md", "# Ensembles of points along the paths (test split)\n\n"
               "Ensemble = average of the members' softmax probabilities; NLL = mean negative log-probability of the true class. "
               "Values: mean ± sample std over pairs.\n\n" + ens_md + "\n")
    along_figure(along, out_dir / "along.png")
    ensembles_figure(ens, along, out_dir / "ensembles.png")
    plane_figure(planes, out_dir / "plane.png")
    write_text(out_dir / "section.md", section(pairs, ens, points, setting(cfg), endpoint_loss(along)))
    result = metrics(pairs, ens, points)
    write_json(out_dir / "metrics.json", result)
    return result
