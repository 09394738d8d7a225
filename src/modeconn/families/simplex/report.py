"""Report of the simplex family (reports/simplex/): SPRO simplexes per size, ESPRO vs deep ensembles.

Inputs: points.csv (vertices, seed, sample, split, loss, error at Dirichlet(1)-sampled points of
each simplex size) and ensemble.csv (members, method, error, accuracy, nll on the test split) of
`stages.simplex.grow`. Outputs: sizes.csv / sizes.md (min and mean over sampled points, then
mean ± std over simplexes), ensemble.md, simplex.png, ensemble.png, metrics.json, section.md; the
two CSVs are copied as points.csv and ensemble.csv for DVC plots.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ...consolidated import NEAR_ZERO, headline as headline_line  # noqa: E402
from ...io import read_tables, write_csv, write_json, write_text  # noqa: E402
from ...tables import mean_std_table, pm  # noqa: E402
from ...figures import save_figure

DEFINITION = (
    "per simplex (one per seed), {samples} points w ~ Dirichlet(1) are sampled (a simplex of 1 vertex is the "
    "seed itself); min and mean over those points of the loss (mean cross-entropy) and of the accuracy "
    "(1 − error) on the full named split; then mean ± sample std over the simplexes"
)


def per_size(points: pd.DataFrame) -> pd.DataFrame:
    """Per (vertices, seed, split): min and mean over sampled points of loss and accuracy."""
    points = points.assign(accuracy=1.0 - points["error"])
    g = points.groupby(["vertices", "seed", "split"], sort=True)
    out = g.agg(loss_mean=("loss", "mean"), loss_min=("loss", "min"), loss_max=("loss", "max"),
                accuracy_mean=("accuracy", "mean"), accuracy_min=("accuracy", "min"), samples=("sample", "count"))
    return out.reset_index()


def size_summary(sizes: pd.DataFrame) -> pd.DataFrame:
    """Per (vertices, split): column c is the mean over simplexes, c_std the sample std."""
    cols = ("loss_mean", "loss_min", "loss_max", "accuracy_mean", "accuracy_min")
    return mean_std_table(sizes, ["vertices", "split"], cols, count="simplexes", mean="{}", std="{}_std")


def _pm(frame: pd.DataFrame, col: str) -> list[str]:
    return [pm(m, s) for m, s in zip(frame[col], frame[col + "_std"])]


def sizes_md(summ: pd.DataFrame, samples: int) -> str:
    shown = pd.DataFrame({"vertices": summ.vertices, "split": summ.split, "loss (mean over points)": _pm(summ, "loss_mean"),
                          "loss (min)": _pm(summ, "loss_min"), "loss (max)": _pm(summ, "loss_max"),
                          "accuracy (mean)": _pm(summ, "accuracy_mean"), "accuracy (min)": _pm(summ, "accuracy_min"),
                          "simplexes": summ.simplexes})
    return f"**Definition.** {DEFINITION.format(samples=samples)}.\n\n" + shown.to_markdown(index=False) + "\n"


def ensemble_md(ens: pd.DataFrame, samples: int, vertices: int) -> str:
    wide = ens.pivot_table(index="members", columns="method", values=["accuracy", "nll"]).reset_index()
    wide.columns = ["members"] + [f"{m} {method}" for m, method in wide.columns[1:]]
    return (f"Test accuracy and NLL of the ensemble (probabilities averaged) vs number of members m: ESPRO averages "
            f"{samples} Dirichlet(1) points of each of m simplexes of {vertices} vertices; the deep ensemble averages "
            "the m seeds the simplexes were grown from.\n\n" + wide.to_markdown(index=False, floatfmt=("g",) + (".4f",) * (wide.shape[1] - 1)) + "\n")


def simplex_figure(points: pd.DataFrame, path: Path) -> None:
    """Loss and accuracy at every sampled point vs simplex size (points per seed, mean line)."""
    points = points.assign(accuracy=1.0 - points["error"])
    long = points.melt(id_vars=["vertices", "seed", "split"], value_vars=["loss", "accuracy"], var_name="metric", value_name="value")
    # No jitter: seaborn draws it from numpy's global generator in an order that depends on Python's
    # string hashing, so the figure would be another file on every run (DVC would see a change).
    # Dodged by seed, each seed's points lie on their own vertical line.
    grid = sns.catplot(data=long, x="vertices", y="value", hue="seed", col="split", row="metric", kind="strip",
                       col_order=["train", "test"], row_order=["loss", "accuracy"], dodge=True, jitter=False, height=2.8,
                       aspect=1.3, sharey=False, palette="deep", size=4)
    for (metric, split), ax in grid.axes_dict.items():
        sel = long[(long.metric == metric) & (long.split == split)].groupby("vertices")["value"].mean()
        ax.plot(range(len(sel)), sel.to_numpy(), color="black", marker="_", markersize=20, lw=1, label="mean")
        ax.set_ylabel(metric)
        ax.set_xlabel("vertices of the simplex (1 = the trained seed)")
    grid.set_titles("{row_name} — {col_name}")
    grid.figure.suptitle("SPRO: loss and accuracy at Dirichlet(1)-sampled points of each simplex (black: mean)", y=1.02)
    save_figure(grid.figure, path)


def ensemble_figure(ens: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    labels = {"espro": "ESPRO (simplex points)", "deep_ensemble": "deep ensemble (seeds)"}
    for ax, metric in zip(axes, ("accuracy", "nll")):
        for method, group in ens.groupby("method"):
            ax.plot(group.members, group[metric], marker="o", label=labels.get(method, method))
        ax.set_xlabel("members (simplexes / seeds)")
        ax.set_ylabel(f"test {metric}" + (" (negative log-likelihood)" if metric == "nll" else ""))
        ax.set_xticks(sorted(ens.members.unique()))
    axes[0].legend()
    fig.suptitle("ESPRO vs deep ensemble of the same seeds (test split)")
    fig.tight_layout()
    save_figure(fig, path)


def metrics(summ: pd.DataFrame, ens: pd.DataFrame) -> dict:
    out: dict = {"sizes": {}}
    for r in summ.to_dict("records"):
        entry = out["sizes"].setdefault(f"v{r['vertices']}", {}).setdefault(r["split"], {})
        for col in ("loss_mean", "loss_min", "accuracy_mean", "accuracy_min"):
            entry[col] = {"mean": r[col], "std": r[col + "_std"]}
    top = ens[ens.members == ens.members.max()].set_index("method")
    out["ensemble"] = {m: {"members": int(top.loc[m, "members"]), "test_accuracy": float(top.loc[m, "accuracy"]),
                           "test_nll": float(top.loc[m, "nll"])} for m in top.index}
    return out


def headline(summ: pd.DataFrame, ens: pd.DataFrame) -> str:
    """The section's headline line (consolidated.headline): low-loss simplexes whose ensembles beat single
    networks (Benton et al. 2021). Low loss: the worst sampled point's train loss at most NEAR_ZERO above
    the trained networks'; beating: ESPRO's test accuracy above a single network's."""
    vmax = int(summ.vertices.max())
    train = summ[summ.split == "train"].set_index("vertices")
    test = summ[summ.split == "test"].set_index("vertices")
    worst, seed = float(train.loc[vmax, "loss_max"]), float(train.loc[1, "loss_mean"])
    low = vmax > 1 and worst <= (1 + NEAR_ZERO) * seed
    top = ens[ens.members == ens.members.max()].set_index("method")
    k = int(ens.members.max())
    espro, single = float(top.loc["espro", "accuracy"]), float(test.loc[1, "accuracy_mean"])
    deep = f" (deep ensemble of the same {k} seeds: {100 * float(top.loc['deep_ensemble', 'accuracy']):.2f}%)" if "deep_ensemble" in top.index else ""
    return headline_line(low and espro > single,
        f"The {vmax}-vertex SPRO simplexes have a train loss of {worst:.4f} at their worst sampled point against {seed:.4f} "
        f"at the trained networks ({'low' if low else 'not low'} by the threshold of at most {NEAR_ZERO:.0%} above it), and ESPRO "
        f"over {k} simplexes reaches {100 * espro:.2f}% test accuracy against {100 * single:.2f}% for a single network"
        f"{deep}, {'above' if espro > single else 'not above'} it; Benton et al. 2021 find every point of their simplexes "
        "about as good as the trained network and ESPRO ensembles above single networks and deep ensembles of the same size.")


def section(summ: pd.DataFrame, ens: pd.DataFrame, samples: int, ens_samples: int) -> str:
    vmax = int(summ.vertices.max())
    test = summ[summ.split == "test"].set_index("vertices")
    train = summ[summ.split == "train"].set_index("vertices")
    top = ens[ens.members == ens.members.max()].set_index("method")
    k = int(ens.members.max())
    return "\n".join([
        "## Low-loss simplexes and simplex ensembles (Benton et al. 2021)",
        "",
        "*Loss Surface Simplexes for Mode Connecting Volumes and Fast Ensembling* (Benton, Maddox, Lotfi & Wilson, ICML 2021).",
        f"From each of {int(summ.simplexes.max())} trained seeds a simplex was grown (SPRO) one vertex at a time up to {vmax} "
        "vertices: each new vertex starts at the centroid of the existing ones and is trained with them frozen on the mean "
        "cross-entropy over Dirichlet(1)-sampled points of the simplex minus a weighted log Cayley–Menger volume (the "
        "reference code sums over the samples; here it is the mean). The simplexes are trained together as one population. "
        "ESPRO ensembles sampled points of the simplexes of different seeds.",
        "",
        sizes_md(summ, samples),
        ensemble_md(ens, ens_samples, vmax),
        "![Loss and accuracy in the simplexes](simplex/simplex.png)",
        "",
        "![ESPRO vs deep ensemble](simplex/ensemble.png)",
        "",
        f"- Worst sampled point of the {vmax}-vertex simplexes: train loss {train.loc[vmax, 'loss_max']:.4f} vs "
        f"{train.loc[1, 'loss_mean']:.4f} at the seeds, test accuracy {test.loc[vmax, 'accuracy_min']:.4f} vs "
        f"{test.loc[1, 'accuracy_mean']:.4f}; Benton et al. find every point of their simplexes about as good as the "
        "trained network (a low-loss volume, not only a low-loss curve).",
        f"- ESPRO with {k} simplexes: test accuracy {top.loc['espro', 'accuracy']:.4f} and NLL {top.loc['espro', 'nll']:.4f}, "
        f"against {top.loc['deep_ensemble', 'accuracy']:.4f} and {top.loc['deep_ensemble', 'nll']:.4f} for the deep "
        "ensemble of the same seeds; Benton et al. report ESPRO above deep ensembles of the same size in accuracy and "
        "especially in NLL.",
        "",
        headline(summ, ens),
        "",
    ])


def write(points_csv: Path, ensemble_csv: Path, out_dir: Path, cfg) -> dict:
    points, ens = read_tables([points_csv]), read_tables([ensemble_csv])
    if points.empty or ens.empty:
        raise ValueError(f"{points_csv} or {ensemble_csv}: no simplex results")
    sizes = per_size(points)
    summ = size_summary(sizes)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (("sizes.csv", sizes), ("points.csv", points), ("ensemble.csv", ens)):
        write_csv(out_dir / name, frame)
    write_text(out_dir / "sizes.md", "# SPRO simplexes per size\n\n" + sizes_md(summ, cfg.eval_samples))
    write_text(out_dir / "ensemble.md", "# ESPRO vs deep ensemble\n\n" + ensemble_md(ens, cfg.ensemble_samples, int(summ.vertices.max())))
    simplex_figure(points, out_dir / "simplex.png")
    ensemble_figure(ens, out_dir / "ensemble.png")
    result = metrics(summ, ens)
    write_json(out_dir / "metrics.json", result)
    write_text(out_dir / "section.md", section(summ, ens, cfg.eval_samples, cfg.ensemble_samples))
    return result
