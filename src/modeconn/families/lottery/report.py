"""Report of the lottery family (reports/lottery/): IMP tickets vs baselines over sparsity.

Input: the results directory of every level (stages.lottery.level: accuracy.csv, stability.csv).
Output:

    accuracy.csv    test/train accuracy mean ± std over seeds per (variant, level), for DVC plots
    levels.csv/.md  one row per level: % weights remaining, accuracy of IMP, random pruning,
                    random reinitialisation and the dense net, matching, instability, stable
    accuracy.png    test accuracy vs % of prunable weights remaining (log axis, sparser to the
                    right) for IMP and both baselines, error bars over seeds, dense band
    stability.png   instability (test/train error barrier between two fork copies) vs sparsity
    metrics.json    per level the numbers of levels.csv
    section.md      the family's section of reports/README.md
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the workflow's machines
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from ...config import Config  # noqa: E402
from ...consolidated import headline as headline_line  # noqa: E402
from ...core import barrier as barrier_math  # noqa: E402
from ...io import read_tables, write_csv, write_json, write_text  # noqa: E402
from ..instability.stage import barriers  # noqa: E402
from ..instability.report import pm  # noqa: E402
from ...figures import save_figure

VARIANTS = {"imp": "IMP ticket (rewound)", "random_prune": "random pruning", "reinit": "random reinitialisation"}


def read(level_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not level_dirs:
        raise ValueError("no lottery levels given")
    acc = read_tables([Path(d) / "accuracy.csv" for d in level_dirs])
    acc = acc.drop_duplicates(subset=["level", "seed", "variant", "split"])  # every level job re-evaluates the dense seeds
    stab = read_tables([Path(d) / "stability.csv" for d in level_dirs])
    return acc, stab


def accuracy_summary(acc: pd.DataFrame) -> pd.DataFrame:
    """Accuracy = 1 − error, mean ± std over seeds, per (variant, level, split)."""
    rows = []
    for (variant, level, split), group in acc.groupby(["variant", "level", "split"], sort=True):
        mean, std = barrier_math.mean_std(torch.tensor(1.0 - group.error.to_numpy()))
        rows.append({"variant": variant, "level": level, "split": split, "remaining_percent": 100 * group.density.mean(),
                     "accuracy_mean": mean, "accuracy_std": std, "seeds": len(group)})
    return pd.DataFrame(rows)


def stability_summary(stab: pd.DataFrame, kind: str = barrier_math.MAX_MINUS_MEAN) -> pd.DataFrame:
    """Instability (test error barrier of definition `kind` between the ticket and its fork),
    mean ± std over seeds, per (level, split)."""
    per_seed = barriers(stab, ["level", "seed", "density"], kind)
    rows = []
    for (level, split), group in per_seed.groupby(["level", "split"], sort=True):
        mean, std = barrier_math.mean_std(torch.tensor(group.error_barrier.to_numpy()))
        rows.append({"level": level, "split": split, "remaining_percent": 100 * group.density.mean(), "instability_mean": mean, "instability_std": std, "seeds": len(group)})
    return pd.DataFrame(rows)


def levels_table(accs: pd.DataFrame, stabs: pd.DataFrame, tolerance: float, threshold: float) -> pd.DataFrame:
    """One row per level (test split): accuracies, matching and stable (definitions in the module docstring)."""
    test = accs[accs.split == "test"]
    dense = test[test.variant == "dense"].iloc[0]
    rows = []
    for level in sorted(test[test.variant == "imp"].level.unique()):
        row = {"level": int(level)}
        for variant in ("imp", "random_prune", "reinit"):
            r = test[(test.variant == variant) & (test.level == level)].iloc[0]
            row["remaining_percent"] = r.remaining_percent if variant == "imp" else row["remaining_percent"]
            row[f"{variant}_accuracy_mean"], row[f"{variant}_accuracy_std"] = r.accuracy_mean, r.accuracy_std
        row["dense_accuracy_mean"], row["dense_accuracy_std"] = dense.accuracy_mean, dense.accuracy_std
        row["matching"] = bool(row["imp_accuracy_mean"] >= dense.accuracy_mean - tolerance)
        s = stabs[(stabs.level == level) & (stabs.split == "test")].iloc[0]
        row["instability_mean"], row["instability_std"] = s.instability_mean, s.instability_std
        row["stable"] = bool(s.instability_mean < threshold)
        rows.append(row)
    return pd.DataFrame(rows)


def levels_markdown(levels: pd.DataFrame, kind: str = barrier_math.MAX_MINUS_MEAN) -> str:
    shown = pd.DataFrame(
        {
            "level": levels.level,
            "weights remaining (%)": levels.remaining_percent.map(lambda v: f"{v:.1f}"),
            "IMP acc (%)": [pm(m, s) for m, s in zip(levels.imp_accuracy_mean, levels.imp_accuracy_std)],
            "random pruning acc (%)": [pm(m, s) for m, s in zip(levels.random_prune_accuracy_mean, levels.random_prune_accuracy_std)],
            "random reinit acc (%)": [pm(m, s) for m, s in zip(levels.reinit_accuracy_mean, levels.reinit_accuracy_std)],
            "dense acc (%)": [pm(m, s) for m, s in zip(levels.dense_accuracy_mean, levels.dense_accuracy_std)],
            "matching": levels.matching.map({True: "yes", False: "no"}),
            f"instability = test error {barrier_math.column(kind, '%')}": [pm(m, s) for m, s in zip(levels.instability_mean, levels.instability_std)],
            "stable": levels.stable.map({True: "yes", False: "no"}),
        }
    )
    return shown.to_markdown(index=False)


def pruning_rule(cfg: Config) -> str:
    """One sentence naming the pruning rule (core.pruning) and its rates."""
    lot = cfg.lottery
    pools = {
        "global": "in one magnitude ranking over every layer but the output layer",
        "layerwise": "of every layer by magnitude within that layer (as Frankle & Carbin 2019 prune LeNet-300-100)",
    }[lot.rule]
    return (f"Pruning rule `{lot.rule}`: each level removes {100 * lot.fraction:g}% of the remaining weights {pools}, "
            f"and {100 * lot.output_fraction:g}% of the output layer's by magnitude on its own.")


def definitions(cfg: Config, points: int, bn: bool = False) -> str:
    lot = cfg.lottery
    norm = "BatchNorm statistics recomputed on training batches for every network and every α" if bn else "no BatchNorm"
    return (
        f"Test accuracy, mean ± sample std over {lot.seeds} seeds. Weights remaining = surviving fraction of the prunable weights "
        f"(every conv/linear weight; biases and norm parameters are never pruned). {pruning_rule(cfg)} Survivors are rewound to "
        f"step {lot.rewind_step} of the seed's training (weights and optimizer state) and retrained to the end of the seeds' schedule; "
        "the random-reinitialisation baseline starts from a fresh initialisation and a fresh optimizer state at the same step. "
        f"*Matching*: mean IMP test accuracy at most {100 * lot.matching_tolerance:g} points below the dense networks'. "
        f"*Instability*: test error barrier between two copies of the rewound ticket trained with different data-order seeds "
        "(the IMP ticket and a fork), "
        f"{barrier_math.definition(points, cfg.evaluation.barrier)}; *stable* when below {100 * cfg.instability.threshold:g}% ({norm})."
    )


def sparsity_axis(ax, remaining_percent) -> None:
    """The x axis of both lottery figures: % weights remaining, log scale, sparser to the right
    (as in the papers), a tick at every level."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = sorted(remaining_percent)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:.1f}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("prunable weights remaining (%, log scale)")


def accuracy_figure(accs: pd.DataFrame, path: Path) -> None:
    test = accs[accs.split == "test"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    dense = test[test.variant == "dense"].iloc[0]
    ax.axhline(100 * dense.accuracy_mean, color="black", lw=1, label="dense (unpruned)")
    ax.axhspan(100 * (dense.accuracy_mean - dense.accuracy_std), 100 * (dense.accuracy_mean + dense.accuracy_std), color="black", alpha=0.1)
    for (variant, label), color in zip(VARIANTS.items(), sns.color_palette("deep", 3)):
        sel = test[test.variant == variant].sort_values("level")
        ax.errorbar(sel.remaining_percent, 100 * sel.accuracy_mean, yerr=100 * sel.accuracy_std, marker="o", capsize=3, color=color, label=label)
    sparsity_axis(ax, test[test.variant == "imp"].remaining_percent.unique())
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("IMP tickets vs random pruning and reinitialisation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def stability_figure(stabs: pd.DataFrame, threshold: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for split, color in zip(("train", "test"), sns.color_palette("deep", 2)):
        sel = stabs[stabs.split == split].sort_values("level")
        ax.errorbar(sel.remaining_percent, 100 * sel.instability_mean, yerr=100 * sel.instability_std, marker="o", capsize=3, color=color, label=f"{split} error barrier")
    ax.axhline(100 * threshold, color="grey", ls="--", label=f"stability threshold ({100 * threshold:g}%)")
    sparsity_axis(ax, stabs.remaining_percent.unique())
    ax.set_ylabel("instability of the ticket (percentage points)")
    ax.set_title("Instability of the rewound IMP ticket vs sparsity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def sparsest_matching(levels: pd.DataFrame, variant: str, tolerance: float) -> float | None:
    """The % of weights remaining at the sparsest level where `variant` is matching (mean test accuracy
    at most `tolerance` below the dense networks', as the `matching` column for IMP); None if at none."""
    sel = levels[levels[f"{variant}_accuracy_mean"] >= levels.dense_accuracy_mean - tolerance]
    return float(sel.remaining_percent.min()) if len(sel) else None


def headline(levels: pd.DataFrame, tolerance: float) -> str:
    """The section's headline line (consolidated.headline): IMP tickets keep matching at sparser levels
    than random pruning and random reinitialisation (Frankle & Carbin 2019)."""
    reach = {v: sparsest_matching(levels, v, tolerance) for v in VARIANTS}
    imp = reach["imp"]
    shown = imp is not None and all(reach[v] is None or reach[v] > imp for v in ("random_prune", "reinit"))

    def at(v: str, of: str = "") -> str:
        return f"at as few as {reach[v]:.1f}%{of}" if reach[v] is not None else "at no level run"

    return headline_line(shown,
        f"IMP tickets match the dense test accuracy ({100 * levels.dense_accuracy_mean.iloc[0]:.2f}%; matching: at most "
        f"{100 * tolerance:g} points below it) {at('imp', ' of the weights remaining')}, random pruning {at('random_prune')} and "
        f"random reinitialisation {at('reinit')} (sparsest level run: {levels.remaining_percent.min():.1f}%), so IMP "
        f"{'matches' if shown else 'does not match'} at a sparser level than both baselines; Frankle & Carbin 2019 find "
        "LeNet-300-100 tickets matching down to about 3.6% of the weights while both baselines fall off much earlier.")


def section(cfg: Config, levels: pd.DataFrame, points: int, bn: bool) -> str:
    sparsest = levels.iloc[-1]
    matching = levels[levels.matching]
    return "\n".join(
        [
            "## Lottery tickets: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020)",
            "",
            "*The Lottery Ticket Hypothesis* (Frankle & Carbin, ICLR 2019) and *Linear Mode Connectivity and the Lottery Ticket "
            "Hypothesis* (Frankle, Dziugaite, Roy & Carbin, ICML 2020).",
            "",
            f"Data {cfg.data.name}, model {cfg.model.name} (norm {cfg.model.norm}), {cfg.train.optimizer} lr {cfg.train.lr}, "
            f"batch {cfg.train.batch_size}, {cfg.train.duration}; {cfg.lottery.levels} pruning levels, rule `{cfg.lottery.rule}`.",
            "",
            definitions(cfg, points, bn),
            "",
            levels_markdown(levels, cfg.evaluation.barrier),
            "",
            "![Accuracy vs weights remaining](lottery/accuracy.png)",
            "",
            "![Instability vs weights remaining](lottery/stability.png)",
            "",
            f"At {sparsest.remaining_percent:.1f}% of the weights the IMP ticket reaches {pm(sparsest.imp_accuracy_mean, sparsest.imp_accuracy_std)}% "
            f"test accuracy against {pm(sparsest.random_prune_accuracy_mean, sparsest.random_prune_accuracy_std)}% for random pruning and "
            f"{pm(sparsest.reinit_accuracy_mean, sparsest.reinit_accuracy_std)}% for random reinitialisation (dense: "
            f"{pm(sparsest.dense_accuracy_mean, sparsest.dense_accuracy_std)}%); the papers find IMP tickets matching down to a few percent "
            "of the weights (LeNet-300-100: about 3.6%, rewinding to k = 0) while both baselines fall below the dense accuracy much earlier. "
            f"Matching levels here: {', '.join(str(int(v)) for v in matching.level) or 'none'}; "
            f"stable levels: {', '.join(str(int(v)) for v in levels[levels.stable].level) or 'none'} — Frankle et al. 2020 find "
            "that matching sparse tickets are exactly the stable ones (rewinding late enough makes them stable).",
            "",
            headline(levels, cfg.lottery.matching_tolerance),
            "",
        ]
    )


def write(cfg: Config, level_dirs: list[Path], out_dir: Path) -> dict:
    acc, stab = read(level_dirs)
    points = int(stab.groupby(["level", "seed", "split"]).size().iloc[0])
    bn = bool(stab.bn_reset.any())
    kind = cfg.evaluation.barrier
    accs, stabs = accuracy_summary(acc), stability_summary(stab, kind)
    levels = levels_table(accs, stabs, cfg.lottery.matching_tolerance, cfg.instability.threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "accuracy.csv", accs)
    write_csv(out_dir / "levels.csv", levels)
    write_text(out_dir / "levels.md", "\n".join(["# Lottery tickets per pruning level", "", definitions(cfg, points, bn), "", levels_markdown(levels, kind), ""]))
    accuracy_figure(accs, out_dir / "accuracy.png")
    stability_figure(stabs, cfg.instability.threshold, out_dir / "stability.png")
    result = {
        "rule": cfg.lottery.rule,
        "fraction": cfg.lottery.fraction,
        "output_fraction": cfg.lottery.output_fraction,
        "points": points,
        "barrier_definition": kind,
        "bn_reset": bn,
        "levels": {int(r.level): {k: (bool(v) if k in ("matching", "stable") else float(v)) for k, v in r._asdict().items() if k not in ("Index", "level")} for r in levels.itertuples()},
        "matching_levels": [int(v) for v in levels[levels.matching].level],
        "stable_levels": [int(v) for v in levels[levels.stable].level],
    }
    write_json(out_dir / "metrics.json", result)
    write_text(out_dir / "section.md", section(cfg, levels, points, bn))
    return result
