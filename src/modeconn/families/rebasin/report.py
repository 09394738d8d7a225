"""Tables, figures and report section of the rebasin family (reports/rebasin/).

Inputs: the per-pair folders of `stages.rebasin.match_pair` (paths.csv, collapse.csv,
matching.json) and the per-width CSVs of `stages.rebasin.sweep_width`. Outputs:

barriers.csv / barriers.md   barrier per pair, method and correction; summary mean ± std over pairs
                             (every barrier under `evaluation.barrier`, named in each table)
interpolation.csv / .png     every evaluated point (DVC plots) / mean curves per method
width_sweep.csv / .png       barrier vs width per method (Ainsworth et al. 2023, Fig. 4 style)
collapse.csv / .png          variance-collapse ratio per layer before/after REPAIR (Jordan et al. 2022)
matching.csv                 time, sweeps and moved units of every matching
metrics.json, section.md     DVC metrics; the family's section of reports/README.md
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ...consolidated import NEAR_ZERO, headline, share  # noqa: E402
from ...core import barrier as barrier_math  # noqa: E402
from ...io import read_tables, write_csv, write_json, write_text  # noqa: E402
from ...tables import mean_std_table, pm  # noqa: E402
from ..rebasin.stage import barriers  # noqa: E402
from ...figures import save_figure

METHODS = ("none", "weight", "activation", "ste")
SHORT = {"weight": "weight", "activation": "activation", "ste": "STE"}
LABELS = {"none": "no matching", "weight": "weight matching", "activation": "activation matching", "ste": "straight-through"}


def _read(pairs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    if not pairs:
        raise ValueError("no rebasin pair results given")
    paths, coll, info = [], [], []
    for d in pairs:
        for f in ("paths.csv", "collapse.csv", "matching.json"):
            if not (d / f).is_file():
                raise ValueError(f"{d / f}: missing (not a rebasin-match output folder)")
        paths.append(read_tables([d / "paths.csv"]))
        coll.append(read_tables([d / "collapse.csv"]))
        m = json.loads((d / "matching.json").read_text())
        for method, v in m["methods"].items():
            info.append({"seed_a": m["seed_a"], "seed_b": m["seed_b"], "method": method, "seconds": v["seconds"], "sweeps": v["sweeps"],
                         "identity": v["identity"], "moved_units": sum(v["moved_units"].values())})
    return pd.concat(paths, ignore_index=True), pd.concat(coll, ignore_index=True), pd.DataFrame(info)


def _order(df: pd.DataFrame) -> list[str]:
    return [m for m in METHODS if m in set(df.method)]


def summary(per_pair: pd.DataFrame, by=("method", "correction", "split", "metric")) -> pd.DataFrame:
    """Mean ± sample std over pairs of the barrier and the endpoint mean per group of `by`, methods
    in METHODS order (a categorical column), the rest sorted."""
    out = mean_std_table(per_pair, list(by), {"barrier": "barrier", "endpoint_mean": "endpoint"}, count="pairs",
                         order={"method": METHODS})
    out["method"] = pd.Categorical(out.method, [m for m in METHODS if m in set(out.method)], ordered=True)
    return out


def barrier_markdown(summ: pd.DataFrame, points: int, bn: bool, kind: str = barrier_math.MAX_MINUS_MEAN) -> str:
    """Wide table: one row per method and correction, columns split × metric, mean ± std over pairs."""
    summ = summ.assign(value=[pm(m, s) for m, s in zip(summ.barrier_mean, summ.barrier_std)])
    wide = summ.pivot_table(index=["method", "correction"], columns=["split", "metric"], values="value", aggfunc="first", observed=True)
    wide.columns = [f"{split} {metric} {barrier_math.column(kind)}" for split, metric in wide.columns]
    wide = wide.reset_index()
    wide["method"] = wide.method.map(LABELS)
    pairs = int(summ.pairs.max())
    bn_text = ("BatchNorm statistics recomputed on training batches at every alpha (all rows)" if bn
               else "no BatchNorm; `repair` rows: REPAIR applied at every alpha (Jordan et al. 2022)")
    return "\n".join([
        f"**Barrier definition.** {barrier_math.definition(points, kind)}; the path is θ(α) = (1−α)θ_A + α π(θ_B) with π the "
        f"method's permutation of seed B (identity for no matching). Mean ± sample std over {pairs} pairs of seeds. {bn_text}.",
        "",
        wide.to_markdown(index=False),
    ])


def figure_interpolation(table: pd.DataFrame, path: Path) -> None:
    long = table.melt(id_vars=["method", "correction", "alpha", "split", "seed_a", "seed_b"], value_vars=["loss", "error"], var_name="metric")
    long["method"] = long.method.map(LABELS)
    grid = sns.relplot(data=long, x="alpha", y="value", hue="method", style="correction", row="metric", col="split",
                       hue_order=[LABELS[m] for m in _order(table)], row_order=["loss", "error"], col_order=["train", "test"],
                       kind="line", errorbar="sd", height=2.8, aspect=1.4, facet_kws={"sharey": "row"})
    for (metric, split), ax in grid.axes_dict.items():
        ax.set_ylabel(metric)
        ax.set_xlabel("α  (θ = (1−α) θ_A + α π(θ_B))")
    grid.set_titles("{row_name} — {col_name}")
    grid.figure.suptitle("Linear paths between seeds before and after permutation matching (mean ± sd over pairs)", y=1.02)
    _save(grid.figure, path)


def figure_width(sweep: pd.DataFrame, path: Path, model: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if sweep.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "width sweep not run (rebasin.widths is empty, or the model has fixed widths)", ha="center", va="center")
    else:
        test = sweep[sweep.split == "test"].copy()
        test["method"] = test.method.map(LABELS)
        for ax, metric in zip(axes, ("loss", "error")):
            style = "correction" if test.correction.nunique() > 1 else None
            sns.lineplot(data=test[test.metric == metric], x="width", y="barrier", hue="method", style=style, marker="o",
                         hue_order=[LABELS[m] for m in _order(sweep)], errorbar="sd", ax=ax)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("hidden width" if model == "mlp" else "width multiplier")
            ax.set_ylabel(f"test {metric} {barrier_math.column(sweep.barrier_definition.iloc[0])}")
            ax.axhline(0, color="grey", lw=0.8)
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes:
            ax.get_legend().remove()
    fig.suptitle("Barrier vs width, per matching method (Ainsworth et al. 2023, Fig. 4)")
    fig.tight_layout()
    if not sweep.empty:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _save(fig, path)


def figure_collapse(coll: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if coll.empty:
        ax.text(0.5, 0.5, "no REPAIR points (BatchNorm network: statistics are reset instead)", ha="center", va="center")
    else:
        long = coll.melt(id_vars=["method", "depth", "layer"], value_vars=["before", "after"], var_name="REPAIR", value_name="ratio")
        long["method"] = long.method.map(LABELS)
        sns.lineplot(data=long, x="depth", y="ratio", hue="method", style="REPAIR", marker="o", errorbar="sd",
                     hue_order=[LABELS[m] for m in _order(coll)], ax=ax)
        layers = coll.drop_duplicates("depth").sort_values("depth")
        ax.set_xticks(layers.depth, layers.layer, rotation=45, ha="right", fontsize=7)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_ylabel("σ(merged) / interpolated σ(endpoints)")
        ax.set_xlabel("layer (pre-activation)")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Variance collapse at α = ½ before/after REPAIR (test data; Jordan et al. 2022)")
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    save_figure(fig, path)


def _csv(df: pd.DataFrame, path: Path) -> None:
    write_csv(path, df)


def metrics(summ: pd.DataFrame, sweep_summ: pd.DataFrame, coll: pd.DataFrame, points: int, kind: str = barrier_math.MAX_MINUS_MEAN) -> dict:
    out: dict = {"points": points, "pairs": int(summ.pairs.max()), "barrier_definition": kind}
    for r in summ.itertuples():
        out.setdefault("barrier", {}).setdefault(r.method, {}).setdefault(r.correction, {}).setdefault(r.split, {})[r.metric] = {"mean": r.barrier_mean, "std": r.barrier_std}
    for r in sweep_summ.itertuples():
        if r.split == "test":
            out.setdefault("width_sweep", {}).setdefault(r.method, {}).setdefault(r.correction, {}).setdefault(str(r.width), {})[r.metric] = r.barrier_mean
    if not coll.empty:
        c = coll.groupby("method").agg(before=("before", "mean"), after=("after", "mean"), deepest_before=("before", "min"))
        out["collapse"] = {m: {k: float(v) for k, v in row.items()} for m, row in c.iterrows()}
    return out


def _get(summ: pd.DataFrame, method: str, correction: str, split: str, metric: str) -> tuple[float, float] | None:
    sel = summ[(summ.method == method) & (summ.correction == correction) & (summ.split == split) & (summ.metric == metric)]
    return None if sel.empty else (float(sel.barrier_mean.iloc[0]), float(sel.barrier_std.iloc[0]))


def section(cfg, summ: pd.DataFrame, sweep_summ: pd.DataFrame, coll: pd.DataFrame, info: pd.DataFrame, table_md: str, points: int) -> str:
    """The family's section of reports/README.md: what ran, the table, figures, comparisons with the papers."""
    model = cfg.model
    arch = f"{model.name} (depth {model.depth}, width {model.width}, norm {model.norm})" if model.name == "mlp" else f"{model.name} (width ×{model.width_multiplier}, norm {model.norm})"
    lines = [
        "## Permutation alignment: Git Re-Basin, REPAIR, width",
        "",
        "Papers: Ainsworth, Hayase & Srinivasa 2023 (*Git Re-Basin*: weight matching, activation matching, straight-through "
        "estimator); Entezari et al. 2022 (*The role of permutation invariance in linear mode connectivity*); Jordan et al. 2022 "
        "(*REPAIR*).",
        "",
        f"Run: data `{cfg.data.name}`, model {arch}, the seeds of the seeds family (every pair, seed B permuted onto seed A), "
        f"{points} points per path, train and test. Weight matching: coordinate descent with linear assignment until a sweep "
        f"makes no progress (≤ {cfg.rebasin.max_sweeps} sweeps); activation matching: correlations of post-ReLU features on "
        f"{cfg.rebasin.activation_examples} training examples; STE: {cfg.rebasin.ste_steps} Adam steps (lr {cfg.rebasin.ste_lr}, "
        f"batch {cfg.rebasin.ste_batch_size}), keeping the permutation with the lowest midpoint loss on "
        f"{cfg.rebasin.ste_eval_examples} training examples. REPAIR statistics from {cfg.rebasin.repair_examples} training examples. "
        f"The matched seeds B are saved as checkpoints (kind `matched`) in `{cfg.run.results}/rebasin/pairs/`.",
        "",
        table_md,
        "",
        "![interpolation](rebasin/interpolation.png)",
        "",
    ]
    lines += [line for h in headlines(summ, sweep_summ, cfg.instability.threshold) for line in (h, "")]
    lines += _comparisons(summ, sweep_summ, coll, info)
    lines += ["", "![width sweep](rebasin/width_sweep.png)", "", "![variance collapse](rebasin/collapse.png)", ""]
    return "\n".join(lines)


def _endpoint(summ: pd.DataFrame, method: str, correction: str, split: str, metric: str) -> float:
    sel = summ[(summ.method == method) & (summ.correction == correction) & (summ.split == split) & (summ.metric == metric)]
    return float(sel.endpoint_mean.iloc[0])


def headlines(summ: pd.DataFrame, sweep_summ: pd.DataFrame, stability: float | None = None) -> list[str]:
    """The section's headline lines (consolidated.headline): matching removes the linear barrier between
    independently trained seeds (Ainsworth et al. 2023); with a width sweep, the barrier after matching
    shrinks with width (Ainsworth et al. 2023; Entezari et al. 2022). Test loss, no REPAIR. The unmatched
    test error barrier is set against `stability` (instability.threshold), when given: independently
    trained networks are not stable (Frankle et al. 2020)."""
    out = []
    none = _get(summ, "none", "plain", "test", "loss")
    matched = [m for m in ("weight", "activation", "ste") if _get(summ, m, "plain", "test", "loss") is not None]
    if none is not None and matched:
        b0, e0 = none[0], _endpoint(summ, "none", "plain", "test", "loss")
        err = _get(summ, "none", "plain", "test", "error")
        large = b0 > e0
        after = {m: _get(summ, m, "plain", "test", "loss")[0] for m in matched}
        far = [SHORT[m] for m in matched if not (b0 > 0 and after[m] <= NEAR_ZERO * b0)]
        verdict = "reached by every method" if not far else "not reached by " + " and ".join(far) + " matching"
        unstable = "" if stability is None else \
            f", {'above' if err[0] >= stability else 'below'} the {100 * stability:g}% instability threshold"
        out.append(headline(large and not far,
            f"Independently trained networks are separated by a linear test loss barrier of {b0:.4f} "
            f"({'large: above' if large else 'not large: not above'} the endpoints' own test loss, {e0:.4f}; test error barrier "
            f"{100 * err[0]:.1f} points{unstable}), which matching lowers to {' / '.join(f'{after[m]:.4f}' for m in matched)} "
            f"({' / '.join(SHORT[m] for m in matched)}: {' / '.join(share(after[m], b0) for m in matched)} of it; near zero: "
            f"at most {NEAR_ZERO:.0%} of it, {verdict}); Ainsworth et al. 2023 report the barrier near zero after matching "
            "for their MNIST MLP."))
    test = sweep_summ[(sweep_summ.split == "test") & (sweep_summ.correction == "plain") & (sweep_summ.metric == "loss")]
    methods = [m for m in ("weight", "activation", "ste") if m in set(test.method)]
    if methods and test.width.nunique() > 1:
        m = methods[0]  # weight matching when it ran, as in Ainsworth et al.'s Fig. 4
        sel = test[test.method == m].sort_values("width")
        widths, values = sel.width.tolist(), sel.barrier_mean.tolist()
        shrinks = values[-1] < values[0] and all(b <= a for a, b in zip(values, values[1:]))
        unmatched = test[test.method == "none"].sort_values("width").barrier_mean.tolist()
        plain = f" (without matching: {unmatched[0]:.4f} → {unmatched[-1]:.4f})" if len(unmatched) > 1 else ""
        out.append(headline(shrinks,
            f"After {SHORT[m]} matching the test loss barrier is " + ", ".join(f"{v:.4f} at width {w}" for w, v in zip(widths, values))
            + f"{plain}: it {'shrinks' if shrinks else 'does not shrink'} with width (shrinking: no wider network above a narrower "
            "one, the widest below the narrowest); Ainsworth et al. 2023 and Entezari et al. 2022 find the barrier after "
            "matching shrinking as width grows."))
    return out


def _comparisons(summ, sweep_summ, coll, info) -> list[str]:
    """One sentence per number, each set against the claim of the paper that makes one."""
    out = []
    none, none_err = _get(summ, "none", "plain", "test", "loss"), _get(summ, "none", "plain", "test", "error")
    if none is not None:
        out.append(f"- Without matching the test loss barrier is {pm(*none)} (error {pm(*none_err)}): independently trained "
                   "seeds are not linearly connected, as all three papers find.")
    matched = [m for m in ("weight", "activation", "ste") if _get(summ, m, "plain", "test", "loss") is not None]
    for m in matched:
        b, e = _get(summ, m, "plain", "test", "loss"), _get(summ, m, "plain", "test", "error")
        cut = f" ({100 * (1 - b[0] / none[0]):.0f}% below no matching)" if none and none[0] > 0 else ""
        out.append(f"- {LABELS[m]}: test loss barrier {pm(*b)}{cut}, error barrier {pm(*e)}.")
    if matched and none is not None:
        far = [LABELS[m] for m in matched if not (none[0] > 0 and _get(summ, m, "plain", "test", "loss")[0] <= NEAR_ZERO * none[0])]
        out.append("  Ainsworth et al. report a near-zero loss barrier after all three methods for their MNIST MLP (3×512, "
                   "`config/mnist.yaml`); " + (f"here every method brings it to at most {NEAR_ZERO:.0%} of the unmatched barrier." if not far
                   else f"here a barrier remains: above {NEAR_ZERO:.0%} of the unmatched one after {', '.join(far)}."))
    for m in matched:
        r, p = _get(summ, m, "repair", "test", "error"), _get(summ, m, "plain", "test", "error")
        rl, pl = _get(summ, m, "repair", "test", "loss"), _get(summ, m, "plain", "test", "loss")
        if r is not None:
            out.append(f"- REPAIR after {LABELS[m]}: test error barrier {p[0]:.4f} → {r[0]:.4f}, loss barrier {pl[0]:.4f} → {rl[0]:.4f}.")
    if any(_get(summ, m, "repair", "test", "error") is not None for m in matched):
        out.append("  Jordan et al. report that REPAIR removes most of the barrier left after matching in networks without "
                   "BatchNorm; compare the error and loss columns above for where that holds on this data.")
    if not info.empty:
        t = info.groupby("method").seconds.mean()
        out.append("- Mean matching time per pair: " + ", ".join(f"{LABELS[m]} {t[m]:.2f} s" for m in METHODS if m in t.index) + ".")
    if not coll.empty:
        c = coll[coll.method != "none"]
        if not c.empty:
            out.append(f"- Variance collapse at α = ½ after matching: σ ratio {c.before.mean():.3f} on average over layers and pairs, "
                       f"{c.before.min():.3f} at the lowest, {c.after.mean():.3f} after REPAIR (test data). Jordan et al. find the "
                       "ratio falling with depth and REPAIR restoring it to ≈ 1.")
    if not sweep_summ.empty:
        s = sweep_summ[(sweep_summ.split == "test") & (sweep_summ.correction == "plain")]
        for m in _order(s):
            sel = s[(s.method == m) & (s.metric == "error")].sort_values("width")
            vals = ", ".join(f"{w}: {v:.3f}" for w, v in zip(sel.width, sel.barrier_mean))
            trend = "shrinks" if sel.barrier_mean.iloc[-1] < sel.barrier_mean.iloc[0] else "does not shrink"
            out.append(f"- Width sweep, {LABELS[m]}: test error barrier by width {vals}; it {trend} from the narrowest to the widest.")
        out.append("  Ainsworth et al. (Fig. 4) and Entezari et al. find the barrier after matching shrinking as width grows, "
                   "while the unmatched barrier does not; the sweep here has few pairs and short training (see the figure).")
    return out


def _sweep(sweeps: list[Path], kind: str) -> pd.DataFrame:
    """The width-sweep rows of definition `kind` (the sweep jobs record every definition)."""
    if not sweeps:
        return pd.DataFrame(columns=["width", "seed_a", "seed_b", "method", "correction", "split", "metric", "barrier",
                                     "endpoint_mean", "barrier_definition"])
    sweep = read_tables(sweeps)
    return sweep[sweep.barrier_definition == kind].reset_index(drop=True)


def write(pairs: list[Path], sweeps: list[Path], out_dir: Path, cfg) -> dict:
    kind = cfg.evaluation.barrier
    paths, coll, info = _read(pairs)
    per_pair = barriers(paths, kind)
    summ = summary(per_pair)
    points = int(per_pair.points.iloc[0])
    sweep = _sweep(sweeps, kind)
    sweep_summ = summary(sweep, by=("width", "method", "correction", "split", "metric")) if not sweep.empty else pd.DataFrame(
        columns=["width", "method", "correction", "split", "metric", "barrier_mean"])
    out_dir.mkdir(parents=True, exist_ok=True)
    _csv(per_pair, out_dir / "barriers.csv")
    _csv(paths.drop(columns=["examples"]).assign(path=paths.method + "/" + paths.correction), out_dir / "interpolation.csv")
    _csv(sweep, out_dir / "width_sweep.csv")
    _csv(coll, out_dir / "collapse.csv")
    _csv(info, out_dir / "matching.csv")
    table_md = barrier_markdown(summ, points, bool(per_pair.bn_reset.any()), kind)
    write_text(out_dir / "barriers.md", "# Barriers before and after permutation matching\n\n" + table_md + "\n\n## Per pair\n\n"
               + per_pair.to_markdown(index=False, floatfmt=".4f") + "\n")
    figure_interpolation(paths, out_dir / "interpolation.png")
    figure_width(sweep, out_dir / "width_sweep.png", cfg.model.name)
    figure_collapse(coll, out_dir / "collapse.png")
    result = metrics(summ, sweep_summ, coll, points, kind)
    write_json(out_dir / "metrics.json", result)
    write_text(out_dir / "section.md", section(cfg, summ, sweep_summ, coll, info, table_md, points))
    return result
