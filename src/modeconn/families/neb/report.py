"""Report of the neb family (reports/neb/): AutoNEB vs linear paths, saddles, minimum spanning tree.

Inputs: the per-pair CSVs of `stages.neb.connect` (seed_a, seed_b, t, pivot, split, loss, error,
bn_reset, examples) and the seeds family's linear-interpolation CSVs of the same pairs. Outputs:
paths.png, paths.csv (every point, DVC plots), saddles.csv / saddles.md (endpoint loss vs saddle,
per pair and mean ± std), mst.csv (edges of the minimum spanning tree of saddle train loss),
mst.png, metrics.json and section.md. Barriers use the definition `evaluation.barrier`
(core.barrier), named in every table.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from scipy.sparse.csgraph import minimum_spanning_tree  # noqa: E402

from ...consolidated import NEAR_ZERO, headline as headline_line, share  # noqa: E402
from ...core import barrier as barrier_math  # noqa: E402
from ...io import read_tables, write_csv, write_json, write_text  # noqa: E402
from ...tables import mean_std_table, pm  # noqa: E402
from ...figures import save_figure

METRICS = ("loss", "error")
SPLITS = ("train", "test")
SADDLE = (
    "saddle = max of f over the dense points of the path (for AutoNEB: every pivot plus evenly spaced "
    "points between consecutive pivots; for the linear path: the seeds family's evenly spaced alphas); "
    "endpoints = mean of f at the two minima; barrier (`{kind}`) = {formula}, t the position along the "
    "path (AutoNEB: pivot index / (pivots − 1); linear: alpha){same}; f = mean cross-entropy "
    "(loss) or fraction misclassified (error) on the full named split"
)


def definitions(kind: str = barrier_math.MAX_MINUS_MEAN) -> str:
    """The saddle and barrier definitions of the tables, for barrier definition `kind`."""
    same = ", i.e. saddle − endpoints" if kind == barrier_math.MAX_MINUS_MEAN else ""
    return SADDLE.format(kind=kind, formula=barrier_math.formula(kind, "t"), same=same)


def _pair(table: pd.DataFrame) -> pd.Series:
    return "seed" + table["seed_a"].astype(str) + "–seed" + table["seed_b"].astype(str)


def read(neb_csvs: list[Path], linear_csvs: list[Path]) -> pd.DataFrame:
    """All points of both kinds of path: pair, path (autoneb | linear), position in [0, 1], split, loss, error."""
    if not neb_csvs:
        raise ValueError("no NEB results given")
    neb = read_tables(neb_csvs).rename(columns={"t": "position"})
    neb["path"] = "autoneb"
    lin = read_tables(linear_csvs).rename(columns={"alpha": "position"})
    lin["path"], lin["pivot"] = "linear", lin["position"].isin([0.0, 1.0])
    table = pd.concat([neb, lin], ignore_index=True)
    table["pair"] = _pair(table)
    wanted = set(_pair(neb))
    return table[table.pair.isin(wanted)][["pair", "seed_a", "seed_b", "path", "position", "pivot", "split", "loss", "error", "bn_reset"]]


def _barrier(path: pd.DataFrame, metric: str, kind: str) -> float:
    return barrier_math.barrier(torch.tensor(path[metric].to_numpy()), kind, torch.tensor(path.position.to_numpy())).item()


def per_pair(table: pd.DataFrame, kind: str = barrier_math.MAX_MINUS_MEAN) -> pd.DataFrame:
    """One row per (pair, split, metric): endpoint mean, saddle and barrier (definition `kind`) of
    both paths, pivots."""
    rows = []
    for (pair, split), group in table.groupby(["pair", "split"], sort=True):
        neb = group[group.path == "autoneb"].sort_values("position")
        lin = group[group.path == "linear"].sort_values("position")
        for metric in METRICS:
            row = {"pair": pair, "seed_a": int(neb.seed_a.iloc[0]), "seed_b": int(neb.seed_b.iloc[0]), "split": split,
                   "metric": metric, "endpoints": 0.5 * (neb[metric].iloc[0] + neb[metric].iloc[-1]),
                   "neb_saddle": neb[metric].max(),
                   "neb_saddle_t": neb.position.iloc[int(neb[metric].to_numpy().argmax())],
                   "pivots": int(neb["pivot"].sum()), "neb_points": len(neb),
                   "neb_barrier": _barrier(neb, metric, kind)}
            if len(lin):
                row["linear_saddle"] = lin[metric].max()
                row["linear_barrier"] = _barrier(lin, metric, kind)
            rows.append({**row, "barrier_definition": kind})
    return pd.DataFrame(rows)


def summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample std over pairs of endpoints, saddles and barriers, per split and metric."""
    cols = [c for c in ("endpoints", "neb_saddle", "neb_barrier", "linear_saddle", "linear_barrier") if c in pairs]
    return mean_std_table(pairs, ["split", "metric"], cols, count="pairs", order={"split": SPLITS, "metric": METRICS})


def mst(pairs: pd.DataFrame) -> pd.DataFrame:
    """Edges of the minimum spanning tree (forest, if pairs are missing) of saddle train loss."""
    sel = pairs[(pairs.split == "train") & (pairs.metric == "loss")]
    seeds = sorted(set(sel.seed_a) | set(sel.seed_b))
    index = {s: i for i, s in enumerate(seeds)}
    weights = np.zeros((len(seeds), len(seeds)))
    for r in sel.itertuples():
        # csgraph reads 0 as "no edge"; a saddle loss is > 0 for any real network.
        weights[index[r.seed_a], index[r.seed_b]] = max(r.neb_saddle, 1e-300)
    tree = minimum_spanning_tree(weights).tocoo()
    edges = [{"seed_a": seeds[min(i, j)], "seed_b": seeds[max(i, j)], "saddle_train_loss": w} for i, j, w in zip(tree.row, tree.col, tree.data)]
    return pd.DataFrame(edges, columns=["seed_a", "seed_b", "saddle_train_loss"]).sort_values("saddle_train_loss", ignore_index=True)


def _pm(summ: pd.DataFrame, col: str) -> list[str]:
    if col + "_mean" not in summ:
        return ["–"] * len(summ)
    return [pm(m, s) for m, s in zip(summ[col + "_mean"], summ[col + "_std"])]


def tables_md(pairs: pd.DataFrame, summ: pd.DataFrame, edges: pd.DataFrame) -> str:
    kind = str(pairs.barrier_definition.iloc[0])
    header = barrier_math.column(kind)
    shown = pd.DataFrame({
        "split": summ.split, "metric": summ.metric, "endpoints": _pm(summ, "endpoints"),
        "AutoNEB saddle": _pm(summ, "neb_saddle"), f"AutoNEB {header}": _pm(summ, "neb_barrier"),
        "linear saddle": _pm(summ, "linear_saddle"), f"linear {header}": _pm(summ, "linear_barrier"), "pairs": summ.pairs,
    })
    detail = pairs[(pairs.metric == "loss")].reindex(columns=["pair", "split", "endpoints", "neb_saddle", "neb_barrier", "linear_saddle", "linear_barrier", "pivots", "neb_saddle_t"])
    detail = detail.rename(columns={"neb_barrier": f"neb {header}", "linear_barrier": f"linear {header}"})
    return "\n".join([
        f"**Definitions.** {definitions(kind)}. Mean ± sample std over pairs.",
        "",
        shown.to_markdown(index=False),
        "",
        "Loss per pair (`neb_saddle_t`: where along the AutoNEB path, t = pivot index / (pivots − 1), the saddle lies):",
        "",
        detail.to_markdown(index=False, floatfmt=".4f"),
        "",
        "Minimum spanning tree of the saddle train loss over all connected seeds:",
        "",
        edges.to_markdown(index=False, floatfmt=("g", "g", ".4f")),
        "",
    ])


def paths_figure(table: pd.DataFrame, path: Path) -> None:
    """Loss and error along the AutoNEB path (solid) and the linear path (dashed) of every pair."""
    long = table.melt(id_vars=["pair", "path", "position", "split"], value_vars=list(METRICS), var_name="metric", value_name="value")
    grid = sns.relplot(data=long, x="position", y="value", hue="pair", style="path", style_order=["autoneb", "linear"],
                       row="metric", col="split", row_order=list(METRICS), col_order=list(SPLITS), kind="line",
                       height=2.8, aspect=1.4, facet_kws={"sharey": "row"})
    pivots = table[(table.path == "autoneb") & table["pivot"].astype(bool)]
    for (metric, split), ax in grid.axes_dict.items():
        sel = pivots[pivots.split == split]
        ax.scatter(sel.position, sel[metric], s=12, color="black", zorder=5)
        ax.set_ylabel(metric)
        ax.set_xlabel("position along the path (AutoNEB t; linear α)")
    grid.set_titles("{row_name} — {col_name}")
    grid.figure.suptitle("AutoNEB (solid, pivots as dots) vs linear (dashed) paths between seeds", y=1.02)
    save_figure(grid.figure, path)


def mst_figure(pairs: pd.DataFrame, edges: pd.DataFrame, path: Path) -> None:
    """Saddle train loss of every pair (lower triangle: AutoNEB, upper: linear), MST edges boxed."""
    sel = pairs[(pairs.split == "train") & (pairs.metric == "loss")]
    seeds = sorted(set(sel.seed_a) | set(sel.seed_b))
    idx = {s: i for i, s in enumerate(seeds)}
    mat = np.full((len(seeds), len(seeds)), np.nan)
    for r in sel.itertuples():
        mat[idx[r.seed_b], idx[r.seed_a]] = r.neb_saddle
        mat[idx[r.seed_a], idx[r.seed_b]] = getattr(r, "linear_saddle", np.nan)
    fig, ax = plt.subplots(figsize=(1.2 * len(seeds) + 2.5, 1.0 * len(seeds) + 1.5))
    finite = mat[np.isfinite(mat)]
    # Linear saddles are often 10x the AutoNEB ones: a log colour scale keeps both readable.
    norm = LogNorm(finite.min(), finite.max()) if finite.size and finite.min() > 0 else None
    sns.heatmap(mat, annot=True, fmt=".3f", cmap="viridis", norm=norm, xticklabels=seeds, yticklabels=seeds, ax=ax,
                cbar_kws={"label": "saddle train loss (log colour scale)"})
    for e in edges.itertuples():
        ax.add_patch(plt.Rectangle((idx[e.seed_a], idx[e.seed_b]), 1, 1, fill=False, edgecolor="red", lw=2.5))
    ax.set_xlabel("seed")
    ax.set_ylabel("seed")
    ax.set_title("Saddle train loss: below diagonal AutoNEB, above linear;\nred boxes: minimum spanning tree edges")
    save_figure(fig, path)


def metrics(summ: pd.DataFrame, pairs: pd.DataFrame, edges: pd.DataFrame) -> dict:
    out: dict = {"pairs": int(pairs.pair.nunique()), "pivots_mean": float(pairs.pivots.mean()),
                 "barrier_definition": str(pairs.barrier_definition.iloc[0]),
                 "mst": {"edges": len(edges), "max_saddle_train_loss": float(edges.saddle_train_loss.max()) if len(edges) else None,
                         "total_saddle_train_loss": float(edges.saddle_train_loss.sum())}}
    for r in summ.to_dict("records"):
        for col in ("endpoints", "neb_saddle", "neb_barrier", "linear_barrier"):
            if col + "_mean" in r:
                out.setdefault(col, {}).setdefault(r["split"], {})[r["metric"]] = {"mean": r[col + "_mean"], "std": r[col + "_std"]}
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.0%}" if b > 0 else "n/a"


def headline(summ: pd.DataFrame) -> str:
    """The section's headline line (consolidated.headline): AutoNEB saddles close to the endpoints' loss
    (Draxler et al. 2018), judged by the train loss barrier against the straight line's."""
    tr = summ.set_index(["split", "metric"]).loc[("train", "loss")]
    neb, line = tr.neb_barrier_mean, tr.get("linear_barrier_mean", float("nan"))
    shown = bool(line > 0 and neb <= NEAR_ZERO * line)  # False when the linear paths are missing (NaN)
    return headline_line(shown,
        f"AutoNEB paths between independently trained seeds peak at a train loss of {tr.neb_saddle_mean:.4f} against "
        f"{tr.endpoints_mean:.4f} at the endpoints, a barrier of {neb:.4f} that is {share(neb, line)} of the straight "
        f"line's {line:.4f} ({'near zero' if shown else 'not near zero'} by the threshold of at most {NEAR_ZERO:.0%} of the "
        "line's); Draxler et al. 2018 find AutoNEB saddles barely above the minima's loss (\"essentially no barriers\").")


def section(pairs: pd.DataFrame, summ: pd.DataFrame, edges: pd.DataFrame, table: pd.DataFrame) -> str:
    s = summ.set_index(["split", "metric"])
    tr, te = s.loc[("train", "loss")], s.loc[("test", "error")]
    bn = "recomputed on training batches at every point" if table.bn_reset.any() else "not applicable (no BatchNorm)"
    lin_tr = tr.get("linear_barrier_mean", float("nan"))
    return "\n".join([
        "## AutoNEB paths between minima (Draxler et al. 2018)",
        "",
        "*Essentially No Barriers in Neural Network Energy Landscape* (Draxler, Veschgini, Salmhofer & Hamprecht, ICML 2018).",
        f"For {len(pairs.pair.unique())} pairs of independently trained seeds, a path of pivots between the two minima was "
        f"optimised with AutoNEB (nudged elastic band, improved tangent; {int(pairs.pivots.max())} pivots after the last cycle) "
        "and evaluated densely between the pivots on the full train and test splits; it is compared with the straight line. "
        f"BatchNorm statistics: {bn}.",
        "",
        tables_md(pairs, summ, edges),
        "![AutoNEB vs linear paths](neb/paths.png)",
        "",
        "![Saddle loss matrix and minimum spanning tree](neb/mst.png)",
        "",
        f"- Train-loss barrier along AutoNEB paths: {tr.neb_barrier_mean:.4f} ± {tr.neb_barrier_std:.4f}, against "
        f"{lin_tr:.4f} along the straight line ({_ratio(tr.neb_barrier_mean, lin_tr)} of it); Draxler et al. find the "
        "saddles of AutoNEB paths barely above the minima (\"essentially no barriers\") while straight lines cross high barriers.",
        f"- Test-error barrier along AutoNEB paths: {te.neb_barrier_mean:.4f} ± {te.neb_barrier_std:.4f} "
        f"(linear: {te.get('linear_barrier_mean', float('nan')):.4f}); the paper reports test error along the MST "
        "paths close to that of the minima.",
        f"- Minimum spanning tree: {len(edges)} edges, largest saddle train loss "
        f"{edges.saddle_train_loss.max():.4f}; Draxler et al. connect all their minima along the MST of saddle losses, "
        "so its largest edge bounds the loss needed to travel between any two of these minima.",
        "",
        headline(summ),
        "",
    ])


def write(neb_csvs: list[Path], linear_csvs: list[Path], out_dir: Path, kind: str = barrier_math.MAX_MINUS_MEAN) -> dict:
    table = read(neb_csvs, linear_csvs)
    pairs = per_pair(table, kind)
    summ = summary(pairs)
    edges = mst(pairs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (("saddles.csv", pairs), ("mst.csv", edges), ("paths.csv", table)):
        write_csv(out_dir / name, frame)
    write_text(out_dir / "saddles.md", "# AutoNEB saddles vs linear barriers\n\n" + tables_md(pairs, summ, edges))
    paths_figure(table, out_dir / "paths.png")
    mst_figure(pairs, edges, out_dir / "mst.png")
    result = metrics(summ, pairs, edges)
    write_json(out_dir / "metrics.json", result)
    write_text(out_dir / "section.md", section(pairs, summ, edges, table))
    return result
