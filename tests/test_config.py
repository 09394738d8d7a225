"""The configuration door: schema defaults, errors naming the dotted key, YAML merging, presets."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from modeconn.config import Config, ConfigError, ModelConfig, TrainConfig, flatten, load_yaml, schema, sections, validate

ROOT = Path(__file__).resolve().parents[1]
PARAM_FILES = [ROOT / "params.yaml", *sorted((ROOT / "config").glob("*.yaml"))]


def test_empty_dict_gives_defaults():
    assert Config.from_dict({}) == Config()
    assert Config.from_dict(None) == Config()
    assert Config.from_dict({"train": {}}) == Config()


def test_schema_defaults_match_dataclass_defaults():
    """Every schema property has a typed field with the same default, and vice versa."""
    sch = schema()
    assert set(sch["properties"]) == set(sections())
    for name, cls in sections().items():
        props = sch["properties"][name]["properties"]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(props) == set(fields), name
        instance = cls()
        for key, prop in props.items():
            default = getattr(instance, key)
            expected = tuple(prop["default"]) if isinstance(prop["default"], list) else prop["default"]
            assert default == expected, f"{name}.{key}"


def test_validate_fills_defaults_without_modifying_input():
    raw = {"train": {"lr": 0.5}}
    out = validate(raw)
    assert raw == {"train": {"lr": 0.5}}
    assert out["train"]["lr"] == 0.5 and out["train"]["optimizer"] == "adam"
    assert set(out) == set(sections())


def test_from_dict_types_values():
    cfg = Config.from_dict({"train": {"milestones": ["1ep", "20it"], "lr": 1}, "model": {"name": "resnet20"}})
    assert cfg.train.milestones == ("1ep", "20it")
    assert cfg.model.name == "resnet20"
    assert cfg.train.lr == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 2  # type: ignore[misc]


def test_to_dict_round_trip():
    cfg = Config.from_dict({"train": {"optimizer": "sgd", "checkpoint_steps": ["0it", "2ep"]}, "seeds": {"count": 3}})
    d = cfg.to_dict()
    assert d["train"]["checkpoint_steps"] == ["0it", "2ep"]
    assert Config.from_dict(d) == cfg
    assert yaml.safe_load(yaml.safe_dump(d)) == d  # plain data


@pytest.mark.parametrize("raw,key", [
    ({"foo": 1}, "foo"),
    ({"train": {"foo": 1}}, "train.foo"),
    ({"model": {"width": 8, "colour": "red"}}, "model.colour"),
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"train": {"nesterov": "yes"}}, "train.nesterov"),
    ({"model": {"depth": 1.5}}, "model.depth"),
    ({"evaluation": {"batch_size": True}}, "evaluation.batch_size"),
    ({"train": 3}, "train"),
    ({"train": {"lr": 0}}, "train.lr"),
    ({"train": {"momentum": 1.5}}, "train.momentum"),
    ({"seeds": {"count": 1}}, "seeds.count"),
    ({"seeds": {"interpolation_points": 2}}, "seeds.interpolation_points"),
    ({"runtime": {"threads": -1}}, "runtime.threads"),
    ({"model": {"norm": "gn"}}, "model.norm"),
    ({"train": {"duration": "5 epochs"}}, "train.duration"),
    ({"train": {"warmup": "10"}}, "train.warmup"),
    ({"train": {"milestones": ["3ep", "x"]}}, "train.milestones.1"),
    ({"train": {"checkpoint_steps": "3it"}}, "train.checkpoint_steps"),
])
def test_bad_values_raise_config_error_naming_the_dotted_key(raw, key):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(raw)
    lines = str(err.value).splitlines()[1:]
    assert any(line.strip().startswith(f"{key}:") for line in lines), str(err.value)


def test_error_names_the_source():
    with pytest.raises(ConfigError, match="my.yaml"):
        Config.from_dict({"foo": 1}, source="my.yaml")


def test_every_bad_key_is_named():
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"train": {"lr": "x"}, "seeds": {"count": 1}, "model": {"norm": "gn"}})
    for key in ("train.lr", "seeds.count", "model.norm"):
        assert key in str(err.value)


@pytest.mark.parametrize("raw,keys", [
    ({"foo": 1, "bar": 2}, ["foo", "bar"]),
    ({"train": {"foo": 1, "bar": 2}}, ["train.foo", "train.bar"]),
])
def test_every_unknown_key_in_one_mapping_is_named(raw, keys):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(raw)
    for key in keys:
        assert key in str(err.value)


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_yaml_merges_later_files_over_nested_keys(tmp_path):
    a = _write(tmp_path / "a.yaml", {"train": {"lr": 0.1, "optimizer": "sgd"}, "model": {"width": 8}})
    b = _write(tmp_path / "b.yaml", {"train": {"lr": 0.5, "milestones": ["1ep"]}, "seeds": {"count": 3}})
    c = _write(tmp_path / "c.yaml", {"train": {"milestones": ["2ep"]}})
    merged = load_yaml(a, b, c)
    assert merged == {
        "train": {"lr": 0.5, "optimizer": "sgd", "milestones": ["2ep"]},
        "model": {"width": 8},
        "seeds": {"count": 3},
    }
    cfg = Config.from_dict(merged)
    assert (cfg.train.lr, cfg.train.optimizer, cfg.train.milestones) == (0.5, "sgd", ("2ep",))
    assert cfg.model.width == 8 and cfg.model.depth == ModelConfig().depth
    assert load_yaml(str(a)) == {"train": {"lr": 0.1, "optimizer": "sgd"}, "model": {"width": 8}}
    assert load_yaml() == {}


def test_load_yaml_empty_file_is_empty(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    assert load_yaml(empty) == {}


def test_load_yaml_missing_file_raises_naming_it(tmp_path):
    a = _write(tmp_path / "a.yaml", {"train": {"lr": 0.1}})
    with pytest.raises(ConfigError, match="missing_preset.yaml"):
        load_yaml(a, tmp_path / "missing_preset.yaml")


def test_load_yaml_bad_files_raise_naming_them(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_yaml(broken)
    listing = _write(tmp_path / "listing.yaml", [1, 2, 3])
    with pytest.raises(ConfigError, match="listing.yaml"):
        load_yaml(listing)


@pytest.mark.parametrize("path", PARAM_FILES, ids=[p.relative_to(ROOT).as_posix() for p in PARAM_FILES])
def test_repository_parameter_files_validate(path):
    raw = load_yaml(path)
    cfg = Config.from_dict(raw, source=str(path))
    full = flatten(cfg.to_dict())
    for key, value in flatten(raw).items():
        assert key in full, key
        assert full[key] == value, key
    if path.name != "params.yaml":  # a preset applied on top of params.yaml (as --configfile does)
        merged = Config.from_dict(load_yaml(ROOT / "params.yaml", path))
        merged_flat = flatten(merged.to_dict())
        for key, value in flatten(raw).items():
            assert merged_flat[key] == value, key


def test_flatten_gives_dotted_keys():
    assert flatten({"train": {"lr": 0.1, "sub": {"x": 1}}, "top": 2, "lst": [1, 2]}) == {
        "train.lr": 0.1,
        "train.sub.x": 1,
        "top": 2,
        "lst": [1, 2],
    }
    assert flatten({}) == {}
    keys = set(flatten(Config().to_dict()))
    expected = {f"{s}.{f.name}" for s, cls in sections().items() for f in dataclasses.fields(cls)}
    assert keys == expected
    assert "train.lr" in keys and "seeds.interpolation_points" in keys


def test_train_config_defaults_are_consistent_with_schedules():
    # the default duration / warmup strings are valid iteration specifications
    from modeconn.schedules import iterations

    t = TrainConfig()
    assert iterations(t.duration, 10) > iterations(t.warmup, 10)


def test_params_yaml_lists_every_key_at_its_default():
    """params.yaml is the default preset and DVC's params file: it names every key (so `dvc params
    diff` sees every change) with exactly the schema's default."""
    listed = flatten(load_yaml(ROOT / "params.yaml"))
    defaults = flatten(Config().to_dict())
    assert sorted(set(defaults) - set(listed)) == []
    assert {k: v for k, v in listed.items() if defaults[k] != v} == {}


# ----------------------------------------------------------------------------- values checked before work


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", [("train", "lr"), ("fge", "lr1"), ("neb", "spring"), ("flatness", "rescale")])
def test_non_finite_numbers_are_refused_naming_key_and_value(key, value):
    section, name = key
    with pytest.raises(ConfigError, match=rf"{section}\.{name}: -?(nan|inf) is not a finite number"):
        Config.from_dict({section: {name: value}})


@pytest.mark.parametrize("key", [("train", "duration"), ("curves", "duration"), ("simplex", "duration"), ("swa", "duration"),
                                 ("fge", "cycle"), ("swa", "every"), ("rebasin", "width_duration")])
def test_zero_durations_are_refused(key):
    section, name = key
    with pytest.raises(ConfigError, match=rf"{section}\.{name}: '0ep' is not a positive duration"):
        Config.from_dict({section: {name: "0ep"}})
    Config.from_dict({section: {name: "3ep"}})  # a positive one passes


@pytest.mark.parametrize("raw, key", [
    ({"fge": {"start": "31ep"}}, "fge.start"),
    ({"swa": {"start": "1861it"}}, "swa.start"),
    ({"instability": {"steps": ["0it", "5000it"]}}, "instability.steps"),
    ({"lottery": {"rewind_step": "40ep"}}, "lottery.rewind_step"),
    ({"train": {"checkpoint_steps": ["0it", "31ep"]}}, "train.checkpoint_steps"),
    ({"train": {"warmup": "100ep"}}, "train.warmup"),
])
def test_steps_past_the_training_are_refused_naming_the_key(raw, key):
    """Default training: 30 epochs of ⌊8000 / 128⌋ = 62 steps = 1860 iterations."""
    from modeconn.config import check_steps

    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: \S+ = iteration \d+ is past the end of the seeds' training \(train.duration 30ep = 1860"):
        check_steps(Config.from_dict(raw))
    check_steps(Config.from_dict({}))  # the default passes
    check_steps(Config.from_dict({"swa": {"start": "1860it"}}))  # the last step is inside


def test_train_examples_known_without_building_the_data():
    import mnist1d.data

    from modeconn.config import MNIST1D_TRAIN_SPLIT, DataConfig
    from modeconn.data import build_dataset

    assert mnist1d.data.get_dataset_args().train_split == MNIST1D_TRAIN_SPLIT
    cfg = DataConfig(num_samples=300)
    assert cfg.train_examples == len(build_dataset(cfg).x_train) == 240
    assert DataConfig(name="mnist").train_examples == 60000 and DataConfig(name="cifar10").train_examples == 50000
