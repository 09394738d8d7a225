"""FGE and SWA: the cyclic schedule, snapshots at the low point, SWA of identical weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import MLP_SHAPE, clone, population, synthetic
from modeconn.config import Config
from modeconn.core.swa import RunningAverage, average
from modeconn.schedules import iterations, lr_factor
from modeconn.families.fge.stage import ensemble_rows, fge_schedule
from modeconn.train import MemberSeeds, train_population


def test_cyclic_schedule_hits_lr1_and_lr2():
    m0, c, gamma = 30, 10, 0.01
    f = lr_factor("cyclic", 100, milestones=(m0, m0 + c), gamma=gamma)
    assert f(0) == f(m0 - 1) == 1.0  # before the cycles
    for j in range(7):
        assert f(m0 + j * c) == pytest.approx(1.0)  # lr1 at every cycle start
        assert f(m0 + j * c + c // 2) == pytest.approx(gamma)  # lr2 at every middle
        down = [f(m0 + j * c + s) for s in range(c // 2 + 1)]
        up = [f(m0 + j * c + s) for s in range(c // 2, c)]
        assert down == sorted(down, reverse=True) and up == sorted(up)
    assert min(f(i) for i in range(100)) == pytest.approx(gamma)


def test_cyclic_schedule_needs_a_cycle():
    with pytest.raises(ValueError, match="milestones"):
        lr_factor("cyclic", 100, milestones=(30,), gamma=0.1)


def test_fge_schedule_snapshots_after_lowest_lr_update():
    cfg = Config.from_dict({"train": {"duration": "10ep"}, "fge": {"start": "8ep", "cycle": "2ep", "cycles": 3, "lr1": 0.01, "lr2": 0.0001}})
    spe = 10
    train_cfg, snaps = fge_schedule(cfg, spe)
    assert iterations(train_cfg.duration, spe) == 80 + 3 * 20  # whole cycles after the start
    f = lr_factor(train_cfg.schedule, iterations(train_cfg.duration, spe), 0, tuple(iterations(m, spe) for m in train_cfg.milestones), train_cfg.gamma)
    for s in snaps:
        assert train_cfg.lr * f(s - 1) == pytest.approx(0.0001)  # the update just before the snapshot used lr2
    assert train_cfg.lr * f(80) == pytest.approx(0.01)


def test_train_population_runs_the_cycle_and_snapshots_at_lr2():
    """Through the real training loop: at every snapshot the last lr applied is lr2."""
    skeleton, params, buffers = population("mlp", [0, 1])
    x, y = synthetic(64, MLP_SHAPE, 5)
    cfg = Config.from_dict({"train": {"batch_size": 16, "duration": "4ep", "optimizer": "sgd", "lr": 0.05},
                            "fge": {"start": "1ep", "cycle": "1ep", "cycles": 3, "lr1": 0.05, "lr2": 0.0005}})
    train_cfg, snaps = fge_schedule(cfg, 4)
    seen = []
    train_population(skeleton, params, buffers, x, y, train_cfg, [MemberSeeds.same(0), MemberSeeds.same(1)], start_step=4,
                     on_checkpoint=lambda s: seen.append((s.step, s.optimizer.param_groups[0]["lr"])))
    assert [s for s, _ in seen] == snaps
    assert all(lr == pytest.approx(0.0005) for _, lr in seen)


def test_swa_of_identical_weights_is_those_weights():
    _, params, buffers = population("mlp-bn", [0, 1])
    avg = average([clone(params)] * 5)
    for k in params:
        assert torch.equal(avg[k], params[k])
    avg_b = average([clone(buffers)] * 3)
    for k in buffers:
        assert torch.equal(avg_b[k], buffers[k])


def test_running_average_is_the_mean():
    g = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 4, generator=g), "n": torch.tensor(i)} for i in range(6)]
    avg = RunningAverage()
    for s in states:
        avg.add(s)
    torch.testing.assert_close(avg.mean["w"], torch.stack([s["w"] for s in states]).mean(0))
    assert avg.count == 6 and avg.mean["n"] == 5


def test_ensemble_rows_budget_and_members():
    g = torch.Generator().manual_seed(1)
    logp = {s: torch.randn(2, 20, 3, generator=g).log_softmax(-1) for s in (0, 1, 2)}
    y = torch.randint(0, 3, (20,), generator=g)
    rows = ensemble_rows("fge", logp, y, 1.0, range(1, 4))
    assert [r["members"] for r in rows] == [2, 2, 2, 4, 4, 4, 6]
    assert [r["budget"] for r in rows] == [1.0] * 3 + [2.0] * 3 + [3.0]


def test_config_declares_the_seed_checkpoints():
    cfg = Config.from_dict({"fge": {"start": "40ep"}, "swa": {"start": "30ep"}})
    assert {"40ep", "30ep"} <= set(cfg.seed_checkpoint_steps())
    assert dataclasses.asdict(cfg.fge)["cycles"] >= 1


def test_report_writes_every_file(tmp_path):
    import json

    import pandas as pd

    from modeconn.config import Config
    from modeconn.families.fge import report

    rows = [{"method": "fge (first n snapshots)", "seeds": str(s), "budget": 0.9 + 0.05 * n, "members": n, "error": 0.3, "nll": 1.0,
             "member_error": 0.31, "member_nll": 1.1} for s in (0, 1) for n in (1, 2)]
    rows += [{"method": m, "seeds": seeds, "budget": float(len(seeds.split())), "members": len(seeds.split()) * (2 if m == "fge" else 1),
              "error": 0.25, "nll": 0.9, "member_error": 0.3, "member_nll": 1.0} for m in ("fge", "independent") for seeds in ("0", "1", "0 1")]
    swa = pd.DataFrame([{"method": m, "seed": s, "split": sp, "loss": 0.5, "error": 0.2, "bn_reset": False, "examples": 10, "averaged": 3, "budget": 1.0}
                        for m in ("swa", "sgd (seed, full schedule)", "sgd (last iterate of the swa run)") for s in (0, 1) for sp in ("train", "test")])
    pd.DataFrame(rows).to_csv(tmp_path / "fge.csv", index=False)
    swa.to_csv(tmp_path / "swa.csv", index=False)
    out = tmp_path / "reports"
    result = report.write(tmp_path / "fge.csv", tmp_path / "swa.csv", out, Config())
    for name in ("fge.csv", "fge.md", "swa.csv", "swa.md", "ensemble_size.csv", "fge.png", "metrics.json", "section.md"):
        assert (out / name).stat().st_size > 0, name
    assert result["fge"]["1B"]["error"]["mean"] == pytest.approx(0.25)
    assert "| FGE" in (out / "fge.md").read_text() and json.loads((out / "metrics.json").read_text())
    # FGE ties the independent ensembles (not shown); SWA ties SGD (at least matching it: shown)
    section = (out / "section.md").read_text()
    assert "**Headline.** **Not shown.** At equal training budget (1B / 2B; B = one network's training) FGE ensembles err on " \
           "25.00% / 25.00% of the test set against 25.00% / 25.00%" in section
    assert "**Headline.** **Shown.** SWA errs on 20.00% of the test set against 20.00% for SGD" in section


def _fge(fge_errors: dict[float, float], ind_errors: dict[float, float]):
    import pandas as pd

    rows = [{"method": "fge", "seeds": "0", "budget": b, "members": 4, "error": e} for b, e in fge_errors.items()]
    rows += [{"method": "independent", "seeds": "0", "budget": b, "members": int(b), "error": e} for b, e in ind_errors.items()]
    return pd.DataFrame(rows)


def _swa(swa_error: float, sgd_error: float):
    import pandas as pd

    return pd.DataFrame([{"method": m, "seed": s, "split": split, "error": e if split == "test" else 0.0}
                         for m, e in (("swa", swa_error), ("sgd (seed, full schedule)", sgd_error)) for s in (0, 1) for split in ("train", "test")])


def test_fge_headline_shown_when_fge_beats_independent_ensembles_at_every_budget():
    from modeconn.families.fge import report

    fge, swa = report.headlines(_fge({1.0: 0.20, 2.0: 0.18}, {1.0: 0.25, 2.0: 0.22}), _swa(0.2, 0.2))
    assert fge == ("**Headline.** **Shown.** At equal training budget (1B / 2B; B = one network's training) FGE ensembles err on "
                   "20.00% / 18.00% of the test set against 25.00% / 22.00% for ensembles of independently trained networks, lower at "
                   "2 of 2 budgets; Garipov et al. 2018 find FGE ensembles better than independent ensembles of the same training budget.")
    lost = report.headlines(_fge({1.0: 0.20, 2.0: 0.23}, {1.0: 0.25, 2.0: 0.22}), _swa(0.2, 0.2))[0]
    assert lost.startswith("**Headline.** **Not shown.**") and "lower at 1 of 2 budgets" in lost
    # an FGE budget below one network's is set against the independent ensemble of the next budget up
    cheaper = report.headlines(_fge({0.9: 0.20}, {1.0: 0.25, 2.0: 0.10}), _swa(0.2, 0.2))[0]
    assert cheaper.startswith("**Headline.** **Shown.** At equal training budget (0.9B against 1B;") and "against 25.00%" in cheaper


def test_swa_headline_shown_when_swa_at_least_matches_sgd():
    from modeconn.families.fge import report

    fge = _fge({1.0: 0.20}, {1.0: 0.25})
    better = report.headlines(fge, _swa(0.19, 0.20))[1]
    assert better == ("**Headline.** **Shown.** SWA errs on 19.00% of the test set against 20.00% for SGD at the same budget (at least "
                      "matching SGD); Izmailov et al. 2018 report SWA improving test accuracy over SGD at equal budget.")
    worse = report.headlines(fge, _swa(0.21, 0.20))[1]
    assert worse.startswith("**Headline.** **Not shown.** SWA errs on 21.00% of the test set against 20.00%") and "(worse than SGD)" in worse
