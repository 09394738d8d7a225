"""The two barrier definitions (core.barrier) and the shared tables built on them (tables.py):
hand-computed values, the properties that tell the definitions apart, and the rows and summaries
every family's report builds, against plain loops."""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest
import torch

from modeconn.core import barrier as B
from modeconn.core.curves import path_summary
from modeconn.core.paths import alphas
from modeconn import tables

MMM, ENT = "max_minus_mean", "entezari"


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------ hand-computed values


def test_hand_example_where_the_definitions_differ():
    # α = 0, 1/3, 2/3, 1; the line between the endpoints is 0, 1/3, 2/3, 1
    v = t(0.0, 2.0, 1.0, 1.0)
    assert B.barrier(v, MMM).item() == pytest.approx(2.0 - 0.5)
    assert B.barrier(v, ENT).item() == pytest.approx(2.0 - 1 / 3)
    torch.testing.assert_close(B.excess(v, ENT), t(0.0, 5 / 3, 1 / 3, 0.0))


def test_peak_of_entezari_is_where_f_rises_most_above_the_line():
    # f peaks at the endpoint α = 1 (so max − mean is half the endpoint gap), but rises above the
    # straight line between the endpoints only in the middle, by 0.4
    v, a = t(0.0, 0.9, 1.0), alphas(3)
    assert B.barrier(v, MMM).item() == pytest.approx(0.5)
    assert B.barrier(v, ENT).item() == pytest.approx(0.4)
    assert B.argmax_alpha(v, a, MMM).item() == 1.0
    assert B.argmax_alpha(v, a, ENT).item() == 0.5
    assert B.path_stats(v, a, ENT) == pytest.approx({"barrier": 0.4, "endpoint_mean": 0.5, "peak": 0.9, "peak_alpha": 0.5})
    assert B.path_stats(v, a, MMM) == pytest.approx({"barrier": 0.5, "endpoint_mean": 0.5, "peak": 1.0, "peak_alpha": 1.0})


def test_entezari_uses_the_given_alphas():
    v = t(0.0, 1.0, 1.0)
    assert B.barrier(v, ENT, t(0.0, 0.9, 1.0)).item() == pytest.approx(0.1)  # the line is at 0.9 there
    assert B.barrier(v, ENT).item() == pytest.approx(0.5)  # evenly spaced: the line is at 0.5
    assert B.barrier(v, MMM, t(0.0, 0.9, 1.0)).item() == B.barrier(v, MMM).item() == pytest.approx(0.5)


# ------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("slope", [-2.0, 0.7, 3.0])
def test_f_linear_in_alpha_has_no_entezari_barrier_but_a_max_minus_mean_one(slope):
    a = alphas(11)
    v = 1.5 + slope * a
    assert B.barrier(v, ENT).item() == pytest.approx(0.0, abs=1e-12)
    assert B.barrier(v, MMM).item() == pytest.approx(abs(slope) / 2)


def test_entezari_ignores_any_linear_trend_max_minus_mean_only_a_constant():
    g = torch.Generator().manual_seed(0)
    v, a = torch.rand(4, 9, generator=g, dtype=torch.float64), alphas(9)
    trend = 0.8 - 1.7 * a
    torch.testing.assert_close(B.barrier(v + trend, ENT), B.barrier(v, ENT))
    torch.testing.assert_close(B.barrier(v + 0.8, MMM), B.barrier(v, MMM))
    assert not torch.allclose(B.barrier(v + trend, MMM), B.barrier(v, MMM))


def test_equal_endpoints_make_the_definitions_agree():
    v = torch.rand(5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v[:, -1] = v[:, 0]
    torch.testing.assert_close(B.barrier(v, ENT), B.barrier(v, MMM))


def test_entezari_lies_between_the_peak_above_the_higher_and_the_lower_endpoint():
    v = torch.rand(200, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    be, top = B.barrier(v, ENT), v.max(-1).values
    hi, lo = torch.maximum(v[:, 0], v[:, -1]), torch.minimum(v[:, 0], v[:, -1])
    assert (be >= top - hi - 1e-12).all() and (be <= top - lo + 1e-12).all()
    # and the two definitions really differ on generic paths, both ways
    diff = be - B.barrier(v, MMM)
    assert (diff > 1e-3).any() and (diff < -1e-3).any()


@pytest.mark.parametrize("kind", B.KINDS)
def test_argmax_alpha_is_batched(kind):
    v, a = torch.rand(3, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64), alphas(8)
    assert B.argmax_alpha(v, a, kind).tolist() == [B.path_stats(row, a, kind)["peak_alpha"] for row in v]


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown barrier definition 'entezzari'"):
        B.barrier(t(0.0, 1.0), "entezzari")
    with pytest.raises(ValueError, match="at least the two endpoints"):
        B.barrier(t(1.0), ENT)
    with pytest.raises(ValueError, match=r"alpha has shape \(2,\), the path has 3 points"):
        B.barrier(t(0.0, 1.0, 0.0), ENT, t(0.0, 1.0))
    with pytest.raises(ValueError, match="one path at a time"):
        B.path_stats(torch.zeros(2, 3, dtype=torch.float64), alphas(3))


def test_column_and_formula_name_the_definition():
    assert B.column(ENT) == "barrier (entezari)" and B.column(MMM, "%") == "barrier (max_minus_mean, %)"
    assert B.formula(ENT, "t") == ("max over the evaluated points of f(t) − ((1 − t) f(0) + t f(1)), the height of f "
                                   "above the straight line between its endpoint values (Entezari et al. 2022)")


def test_path_summary_barrier_follows_the_definition_along_t():
    v, tt = t(0.0, 2.0, 1.0, 1.0), alphas(4)
    lengths = torch.ones(3, dtype=torch.float64)
    assert path_summary(v, lengths)["barrier"] == pytest.approx(1.5)
    assert path_summary(v, lengths, ENT, tt)["barrier"] == pytest.approx(5 / 3)
    assert path_summary(v, lengths, ENT, t(0.0, 0.5, 0.75, 1.0))["barrier"] == pytest.approx(1.5)


# ---------------------------------------------------------------------------------- tables.path_rows


def points_table() -> pd.DataFrame:
    """Two pairs × two splits of 5 points along α, shuffled (path_rows must sort by α)."""
    g = np.random.default_rng(0)
    rows = [{"pair": pair, "split": split, "alpha": a, "loss": g.random(), "error": g.random(), "bn_reset": False}
            for pair in ("p1", "p0") for split in ("train", "test") for a in np.linspace(0, 1, 5)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


def _plain(values: list[float], alpha: list[float], kind: str) -> float:
    """The barrier with Python floats, one point at a time (the loop the tensor code replaces)."""
    line = [(1 - a) * values[0] + a * values[-1] if kind == ENT else 0.5 * (values[0] + values[-1]) for a in alpha]
    return max(v - ref for v, ref in zip(values, line))


@pytest.mark.parametrize("kind", B.KINDS)
def test_path_rows_match_a_plain_loop(kind):
    table = points_table()
    rows = tables.path_rows(table, ["pair", "split"], kind)
    assert list(rows.columns) == ["pair", "split", "metric", "barrier", "endpoint_mean", "peak", "peak_alpha", "points",
                                  "bn_reset", "barrier_definition"]
    assert list(zip(rows.pair, rows.split, rows.metric))[:4] == [("p0", "test", "loss"), ("p0", "test", "error"),
                                                                 ("p0", "train", "loss"), ("p0", "train", "error")]
    assert (rows.barrier_definition == kind).all() and (rows.points == 5).all()
    for r in rows.itertuples():
        path = table[(table.pair == r.pair) & (table.split == r.split)].sort_values("alpha")
        values, alpha = path[r.metric].tolist(), path.alpha.tolist()
        assert r.barrier == pytest.approx(_plain(values, alpha, kind), abs=1e-12)
        assert r.endpoint_mean == pytest.approx(0.5 * (values[0] + values[-1]))
        assert r.peak - ((1 - r.peak_alpha) * values[0] + r.peak_alpha * values[-1] if kind == ENT else r.endpoint_mean) \
            == pytest.approx(r.barrier)


def test_path_rows_keep_the_order_of_appearance_when_asked():
    rows = tables.path_rows(points_table(), ["pair", "split"], sort=False)
    first = points_table().drop_duplicates(["pair", "split"])
    assert list(zip(rows.pair, rows.split))[::2] == list(zip(first.pair, first.split))


def test_all_path_rows_stack_every_definition():
    table = points_table()
    both = tables.all_path_rows(table, ["pair", "split"])
    assert sorted(set(both.barrier_definition)) == sorted(B.KINDS)
    for kind in B.KINDS:
        pd.testing.assert_frame_equal(both[both.barrier_definition == kind].reset_index(drop=True),
                                      tables.path_rows(table, ["pair", "split"], kind))


def test_instability_barriers_are_path_rows_side_by_side():
    from modeconn.families.instability.stage import barriers

    table = points_table().rename(columns={"pair": "trunk"})
    wide = barriers(table, ["trunk"], ENT)
    long = tables.path_rows(table, ["trunk", "split"], ENT)
    assert list(wide.columns) == ["trunk", "split", "loss_barrier", "loss_endpoints", "error_barrier", "error_endpoints",
                                  "points", "bn_reset", "barrier_definition"]
    for r in wide.itertuples():
        for metric in ("loss", "error"):
            row = long[(long.trunk == r.trunk) & (long.split == r.split) & (long.metric == metric)].iloc[0]
            assert getattr(r, f"{metric}_barrier") == row.barrier
            assert getattr(r, f"{metric}_endpoints") == row.endpoint_mean


# ----------------------------------------------------------------------------- tables.mean_std_table


def test_mean_std_table_against_statistics():
    frame = pd.DataFrame({"split": ["train", "test", "train", "test", "train"], "metric": ["loss"] * 5,
                          "barrier": [1.0, 2.0, 4.0, 8.0, 7.0], "endpoint_mean": [0.1, 0.2, 0.3, 0.4, 0.5]})
    out = tables.mean_std_table(frame, ["split", "metric"], {"barrier": "barrier", "endpoint_mean": "endpoint"},
                                count="pairs", order={"split": ["train", "test"]})
    assert list(out.columns) == ["split", "metric", "barrier_mean", "barrier_std", "endpoint_mean", "endpoint_std", "pairs"]
    assert out.split.tolist() == ["train", "test"] and out.pairs.tolist() == [3, 2]
    assert out.barrier_mean.tolist() == pytest.approx([4.0, 5.0])
    assert out.barrier_std.tolist() == pytest.approx([statistics.stdev([1.0, 4.0, 7.0]), statistics.stdev([2.0, 8.0])])
    assert out.endpoint_mean.tolist() == pytest.approx([0.3, 0.3])
    # without an order: sorted (test before train); one replicate: std 0; other name patterns
    plain = tables.mean_std_table(frame.iloc[:2], ["split"], ["barrier"], mean="{}", std="{}_sd")
    assert plain.split.tolist() == ["test", "train"] and plain.barrier.tolist() == [2.0, 1.0]
    assert plain.barrier_sd.tolist() == [0.0, 0.0] and plain.n.tolist() == [1, 1]


def test_mean_std_text():
    assert tables.pm(0.1234, 0.0056, 2, 100) == "12.34 ± 0.56"
    assert tables.pm(1.0, 0.5) == "1.0000 ± 0.5000"
    assert tables.ms([1.0, 2.0, 3.0], 3) == "2.000 ± 1.000"
    assert tables.ms([0.01, 0.03], 2, 100) == "2.00 ± 1.41"
    assert tables.ms([2.5], 1) == "2.5 ± 0.0"
