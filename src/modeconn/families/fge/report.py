"""Tables and figures of FGE and SWA (reports/fge/), in the format of Garipov et al. 2018 (Table 2)
and Izmailov et al. 2018 (Table 1).

Inputs: fge.csv (ensemble test error and NLL: FGE snapshot ensembles and ensembles of
independently trained seeds, with their training budget in units B of one seed's training) and
swa.csv (loss and error of SWA and of the SGD solutions per seed and split). Outputs: fge.csv /
fge.md (test error and NLL by method and budget, mean ± std over seed subsets), swa.csv / swa.md,
ensemble_size.csv (error and NLL vs members, for DVC plots), fge.png, metrics.json, section.md.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ...consolidated import headline  # noqa: E402
from ...io import read_tables, write_csv, write_json, write_text  # noqa: E402
from ...tables import mean_std_table, ms  # noqa: E402
from ...figures import save_figure

SNAPSHOTS = "fge (first n snapshots)"
SGD = "sgd (seed, full schedule)"


def _ms(values, scale: float = 1.0, digits: int = 2) -> str:
    return ms(values, digits, scale)


def budget_table(fge: pd.DataFrame) -> pd.DataFrame:
    """Garipov's FGE table: rows method, columns budget (multiples of one seed's training) → test error (%) and NLL."""
    rows = []
    for method in ("independent", "fge"):
        sel = fge[fge.method == method]
        for budget, g in sel.groupby("budget"):
            rows.append({"method": "Ind" if method == "independent" else "FGE", "budget": f"{budget:g}B", "members": int(g.members.iloc[0]),
                         "test error (%)": _ms(g.error, 100), "test NLL": _ms(g.nll, 1, 3),
                         "member error (%)": _ms(g.member_error, 100), "subsets": len(g)})
    return pd.DataFrame(rows)


def size_curve(fge: pd.DataFrame) -> pd.DataFrame:
    """Ensemble error/NLL vs members: FGE's first n snapshots (one seed) and n independent seeds."""
    snaps = fge[fge.method == SNAPSHOTS].assign(kind="FGE: first n snapshots of one seed")
    ind = fge[fge.method == "independent"].assign(kind="independent seeds")
    return pd.concat([snaps, ind], ignore_index=True)[["kind", "seeds", "members", "budget", "error", "nll", "member_error"]]


def swa_table(swa: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (method, split), g in swa.groupby(["method", "split"], sort=False):
        rows.append({"method": method, "split": split, "loss": _ms(g.loss, 1, 4), "error (%)": _ms(g.error, 100), "seeds": len(g),
                     "budget": f"{g.budget.iloc[0]:g}B" if method == "swa" else "", "bn_reset": bool(g.bn_reset.iloc[0])})
    return pd.DataFrame(rows)


def figure(curve: pd.DataFrame, swa: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, label in ((axes[0], "error", "ensemble test error (%)"), (axes[1], "nll", "ensemble test NLL")):
        data = curve.assign(v=curve[metric] * (100 if metric == "error" else 1))
        sns.lineplot(data=data, x="members", y="v", hue="kind", marker="o", errorbar="sd", ax=ax)
        if metric == "error":
            for method, style in (("swa", "--"), ("sgd (seed, full schedule)", ":")):
                sel = swa[(swa.method == method) & (swa.split == "test")]
                ax.axhline(100 * sel.error.mean(), color="black", ls=style, lw=1, label=method)
            ax.legend(fontsize=8)
        ax.set_xlabel("members in the ensemble")
        ax.set_ylabel(label)
    fig.suptitle("FGE snapshots vs independently trained seeds (mean ± std over seeds / subsets); SWA and SGD as lines")
    save_figure(fig, path)


def metrics(fge: pd.DataFrame, swa: pd.DataFrame) -> dict:
    out: dict = {}
    for method in ("independent", "fge"):
        for r in mean_std_table(fge[fge.method == method], ["budget"], ["error", "nll"]).to_dict("records"):
            out.setdefault(method, {})[f"{r['budget']:g}B"] = {m: {"mean": r[f"{m}_mean"], "std": r[f"{m}_std"]} for m in ("error", "nll")}
    for r in mean_std_table(swa, ["method", "split"], ["loss", "error"]).to_dict("records"):
        out.setdefault("swa_vs_sgd", {}).setdefault(r["method"], {})[r["split"]] = {
            m: {"mean": r[f"{m}_mean"], "std": r[f"{m}_std"]} for m in ("loss", "error")}
    return out


def setting(cfg) -> str:
    if cfg is None:
        return ""
    f, s, t = cfg.fge, cfg.swa, cfg.train
    return (f"{cfg.data.name}, {cfg.model.name} (norm {cfg.model.norm}); seeds trained {t.duration} with {t.optimizer} lr {t.lr:g} "
            f"({t.schedule}). FGE: from each seed's checkpoint at {f.start}, {f.cycles} cycles of {f.cycle}, lr {f.lr1:g} → {f.lr2:g} → {f.lr1:g} "
            f"per iteration, one snapshot per cycle at its lowest lr. SWA: from {s.start}, {s.duration} at constant lr {s.lr:g}, "
            f"weights averaged every {s.every}.")


def equal_budgets(fge: pd.DataFrame) -> list[tuple[float, float, float, float]]:
    """(FGE budget, its mean test error, the independent ensembles' budget, their mean test error) for every
    FGE budget, against the independent ensembles of the smallest budget not below it (none: left out)."""
    ind = fge[fge.method == "independent"].groupby("budget").error.mean()
    out = []
    for budget, error in fge[fge.method == "fge"].groupby("budget").error.mean().items():
        fair = [b for b in ind.index if b >= budget - 1e-9]
        if fair:
            out.append((float(budget), float(error), float(min(fair)), float(ind[min(fair)])))
    return out


def headlines(fge: pd.DataFrame, swa: pd.DataFrame) -> list[str]:
    """The section's headline lines (consolidated.headline): FGE beats independent ensembles at equal
    budget (Garipov et al. 2018); SWA at least matches SGD (Izmailov et al. 2018). Test error."""
    out = []
    rows = equal_budgets(fge)
    if rows:
        wins = sum(f < i for _, f, _, i in rows)
        same = all(abs(b - c) < 1e-9 for b, _, c, _ in rows)
        budgets = (" / ".join(f"{b:g}B" for b, *_ in rows) if same else
                   " / ".join(f"{b:g}B" for b, *_ in rows) + " against " + " / ".join(f"{c:g}B" for *_, c, _ in rows))
        out.append(headline(wins == len(rows),
            f"At equal training budget ({budgets}; B = one network's training) FGE ensembles err on "
            + " / ".join(f"{100 * f:.2f}%" for _, f, _, _ in rows) + " of the test set against "
            + " / ".join(f"{100 * i:.2f}%" for *_, i in rows) + f" for ensembles of independently trained networks, lower at "
            f"{wins} of {len(rows)} budgets; Garipov et al. 2018 find FGE ensembles better than independent ensembles of the "
            "same training budget."))
    test = swa[swa.split == "test"]
    if (test.method == "swa").any() and (test.method == SGD).any():
        e_swa, e_sgd = test[test.method == "swa"].error.mean(), test[test.method == SGD].error.mean()
        shown = e_swa <= e_sgd
        out.append(headline(shown,
            f"SWA errs on {100 * e_swa:.2f}% of the test set against {100 * e_sgd:.2f}% for SGD at the same budget "
            f"({'at least matching' if shown else 'worse than'} SGD); Izmailov et al. 2018 report SWA improving test "
            "accuracy over SGD at equal budget."))
    return out


def section(fge: pd.DataFrame, swa: pd.DataFrame, setting_text: str) -> str:
    table = budget_table(fge)
    ind1 = fge[(fge.method == "independent") & (fge.members == 1)].error.mean() * 100
    f1 = fge[(fge.method == "fge") & (fge.seeds.astype(str).str.count(" ") == 0)]
    fge1, b1 = f1.error.mean() * 100, f1.budget.iloc[0]
    ind2 = fge[(fge.method == "independent") & (fge.members == 2)].error.mean() * 100
    test = swa[swa.split == "test"]
    e_swa = test[test.method == "swa"].error.mean() * 100
    e_sgd = test[test.method == SGD].error.mean() * 100
    return "\n".join([
        "## Fast geometric ensembling and stochastic weight averaging (Garipov et al. 2018; Izmailov et al. 2018)",
        "",
        "Garipov et al., *Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs*, NeurIPS 2018; Izmailov, Podoprikhin, "
        "Garipov, Vetrov, Wilson, *Averaging Weights Leads to Wider Optima and Better Generalization*, UAI 2018.",
        "",
        f"What was run: {setting_text}",
        "",
        "Budget B = one seed's full training. FGE at budget kB ensembles the snapshots of k seeds (each continued from its own "
        "checkpoint); Ind at kB ensembles k independently trained seeds. Ensemble = mean of softmax probabilities; error and NLL "
        "on the full test split; mean ± sample std over the subsets of seeds (all combinations).",
        "",
        table.to_markdown(index=False),
        "",
        "**SWA vs SGD** (BatchNorm statistics of every network recomputed on training batches where the model has BatchNorm)",
        "",
        swa_table(swa).to_markdown(index=False),
        "",
        "![FGE ensembles vs independent ensembles](fge/fge.png)",
        "",
        "How this compares with the papers:",
        "",
        f"- FGE at budget {b1:g}B errs on {fge1:.1f}% of the test set against {ind1:.1f}% for one independently trained network (1B) "
        f"and {ind2:.1f}% for two (2B). Garipov et al. find FGE at 1B better than a single network and competitive with independent "
        "ensembles of the same budget; " + ("that ordering holds here." if fge1 < ind1 else "here FGE does not beat the single network."),
        f"- SWA: {e_swa:.1f}% test error against {e_sgd:.1f}% for the SGD solution at the same budget. Izmailov et al. report SWA "
        "improving test accuracy over SGD at equal budget; " + ("so it does here." if e_swa < e_sgd else "it does not here."),
        "",
        *(line for h in headlines(fge, swa) for line in (h, "")),
    ])


def write(fge_csv: Path, swa_csv: Path, out_dir: Path, cfg=None) -> dict:
    fge, swa = read_tables([fge_csv], dtype={"seeds": str}), read_tables([swa_csv])
    out_dir.mkdir(parents=True, exist_ok=True)
    table = budget_table(fge)
    write_csv(out_dir / "fge.csv", fge)
    write_csv(out_dir / "swa.csv", swa)
    curve = size_curve(fge)
    write_csv(out_dir / "ensemble_size.csv", curve)
    write_text(out_dir / "fge.md", "# FGE vs independent ensembles at equal budget\n\n" + table.to_markdown(index=False) + "\n")
    write_text(out_dir / "swa.md", "# SWA vs SGD\n\n" + swa_table(swa).to_markdown(index=False) + "\n")
    figure(curve, swa, out_dir / "fge.png")
    write_text(out_dir / "section.md", section(fge, swa, setting(cfg)))
    result = metrics(fge, swa)
    write_json(out_dir / "metrics.json", result)
    return result
