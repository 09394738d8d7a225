"""The consolidated reports/README.md: every present section in registry order, absent ones left
out, the header from the config; the seeds family's section built from its barrier table and metrics."""

from __future__ import annotations

import json

from modeconn.config import Config
from modeconn import consolidated
from modeconn.families import names
from modeconn.families.seeds.report import section as seeds_section

SEEDS_MD = """# Linear interpolation between independently trained seeds

**Barrier definition.** whatever.

| split   | metric   | barrier         | endpoints       |   pairs |
|:--------|:---------|:----------------|:----------------|--------:|
| train   | loss     | 4.9683 ± 0.5371 | 0.0177 ± 0.0017 |       6 |

## Per pair

| pair | split |
|:-----|:------|
| seed0–seed1 | test |
"""


def seeds_metrics(train_loss: float, kind: str = "max_minus_mean") -> dict:
    ms = lambda m: {"mean": m, "std": 0.01}  # noqa: E731
    return {"pairs": 6, "points": 25, "bn_reset": False, "barrier_definition": kind,
            "barrier": {"train": {"loss": ms(train_loss), "error": ms(0.7)}, "test": {"loss": ms(4.1), "error": ms(0.49)}},
            "endpoint": {"train": {"loss": ms(0.018), "error": ms(0.0)}, "test": {"loss": ms(1.08), "error": ms(0.27)}}}


def fake_reports(root, families, train_loss=4.97, kind="max_minus_mean"):
    (root / "seeds").mkdir(parents=True)
    (root / "seeds/barriers.md").write_text(SEEDS_MD)
    (root / "seeds/metrics.json").write_text(json.dumps(seeds_metrics(train_loss, kind)))
    (root / "seeds/section.md").write_text(seeds_section(SEEDS_MD, seeds_metrics(train_loss, kind)))
    for f in families:
        (root / f).mkdir()
        (root / f / "section.md").write_text(f"## Section of {f}\n\nbody of {f} ![fig]({f}/fig.png)\n")


def test_every_present_section_in_report_order(tmp_path):
    fake_reports(tmp_path, ["landscape", "neb", "flatness"])
    text = consolidated.write(Config(), tmp_path, tmp_path / "README.md")
    assert (tmp_path / "README.md").read_text() == text
    order = [text.index(h) for h in ("## Seeds:", "## Section of neb", "## Section of flatness", "## Section of landscape")]
    assert order == sorted(order)
    for absent in set(names()) - {"seeds", "landscape", "neb", "flatness"}:
        assert f"Section of {absent}" not in text and f"- [{absent}]" not in text
    assert "- [neb](#section-of-neb)" in text
    assert "(neb/fig.png)" in text  # links stay relative to reports/


def test_header_names_data_model_training_and_barrier_definition(tmp_path):
    fake_reports(tmp_path, [])
    cfg = Config.from_dict({"model": {"depth": 3, "width": 512}, "train": {"optimizer": "sgd", "lr": 0.1}})
    text = consolidated.render(cfg, tmp_path)
    assert "mnist1d" in text and "depth 3 × width 512" in text and "sgd (lr 0.1, momentum 0.9" in text
    assert "**Barrier definition**" in text and "minus the mean of f at the two endpoints" in text
    assert "`evaluation.barrier: max_minus_mean`" in text and "over the N evenly spaced alphas" in text


def test_header_names_the_configured_barrier_definition(tmp_path):
    fake_reports(tmp_path, [])
    text = consolidated.render(Config.from_dict({"evaluation": {"barrier": "entezari"}}), tmp_path)
    header = text[: text.index("## Contents")]
    assert "`evaluation.barrier: entezari`" in header and "Entezari et al. 2022" in header
    assert "minus the mean of f at the two endpoints" not in header


def test_seeds_section_from_barrier_table_and_metrics(tmp_path):
    fake_reports(tmp_path, [])
    section = (tmp_path / "seeds/section.md").read_text()
    assert section.startswith("## Seeds")
    assert "| train   | loss     | 4.9683 ± 0.5371" in section and "Per pair" not in section
    assert "a high barrier, as claimed" in section and "seeds/interpolation.png" in section
    low = tmp_path / "low"
    fake_reports(low, [], train_loss=0.01)
    assert "no high barrier, unlike the claim" in (low / "seeds/section.md").read_text()
    assert "barrier (`max_minus_mean`)" in section and "above endpoints at 0.0180" in section


def test_seeds_section_states_the_entezari_definition(tmp_path):
    fake_reports(tmp_path, [], kind="entezari")
    section = (tmp_path / "seeds/section.md").read_text()
    assert "barrier (`entezari`)" in section and "(1 − alpha) f(0) + alpha f(1)" in section
    assert "above the endpoints' straight line (endpoints at 0.0180)" in section


def test_missing_sections_are_absent(tmp_path):
    assert consolidated.sections(tmp_path) == []
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds/section.md").write_text("## Seeds written by the family\n")
    assert consolidated.sections(tmp_path) == [("seeds", "## Seeds written by the family\n")]


# ------------------------------------------------------------------------------- headline effects


def write_section(root, family: str, body: list[str]) -> None:
    (root / family).mkdir(parents=True, exist_ok=True)
    (root / family / "section.md").write_text("\n".join([f"## Section of {family}", "", *body, ""]))


def test_headline_line_states_whether_the_effect_shows():
    assert consolidated.headline(True, "It shows. ") == "**Headline.** **Shown.** It shows."
    assert consolidated.headline(False, "It does not.") == "**Headline.** **Not shown.** It does not."
    assert consolidated.share(0.5, 2.0) == "25%" and consolidated.share(0.01, 2.0) == "0.5%" and consolidated.share(1.0, 0.0) == "n/a"


def test_headlines_are_gathered_in_registry_order_after_the_settings(tmp_path):
    fake_reports(tmp_path, [])
    # written in another order than the registry's; lottery has none, rebasin two
    write_section(tmp_path, "rebasin", ["text", consolidated.headline(False, "Rebasin one."), "", consolidated.headline(True, "Rebasin two.")])
    write_section(tmp_path, "lottery", ["no headline here", "- **Headline.** is not at the start of this line"])
    write_section(tmp_path, "instability", [consolidated.headline(True, "Instability one."), "more text"])
    text = consolidated.render(Config(), tmp_path)
    block = text[text.index("## Headline effects"): text.index("## Contents")]
    assert text.index("| device |") < text.index("**Barrier definition**") < text.index("## Headline effects")
    items = [line for line in block.splitlines() if line.startswith("- ")]
    assert items == [
        "- **Shown.** Instability one. ([instability](#section-of-instability))",
        "- **Not shown.** Rebasin one. ([rebasin](#section-of-rebasin))",
        "- **Shown.** Rebasin two. ([rebasin](#section-of-rebasin))",
    ]
    assert "is not at the start" not in block
    # the sections themselves are unchanged, their headline lines included
    assert "**Headline.** **Shown.** Instability one." in text[text.index("## Section of instability"):]


def test_no_headline_block_when_no_section_has_one(tmp_path):
    fake_reports(tmp_path, ["neb", "flatness"])
    text = consolidated.render(Config(), tmp_path)
    assert "Headline effects" not in text and "**Headline.**" not in text
    assert consolidated.headline_block(consolidated.sections(tmp_path)) == []
    assert text.index("**Barrier definition**") < text.index("## Contents")
