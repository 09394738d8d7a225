"""The one door for configuration: params.yaml → schema (with defaults) → typed, frozen config.

`validate(raw)` fills defaults from `schemas/params.schema.yaml` and rejects any unknown or
ill-typed key with a `ConfigError` naming it; `Config.from_dict` turns the validated dict into
dataclasses that are passed down explicitly. Nothing else in the package reads params.yaml.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .families import registry
from .schedules import iterations, steps_per_epoch


class ConfigError(ValueError):
    """A parameter file or dict that does not satisfy the schema."""


def schema() -> dict:
    """The full JSON schema: the core sections plus every registered family's schema.yaml."""
    full = yaml.safe_load(resources.files("modeconn").joinpath("schemas/params.schema.yaml").read_text())
    for family in registry():
        added = yaml.safe_load(family.file("schema.yaml").read_text())
        clash = set(added) & set(full["properties"])
        if clash:
            raise RuntimeError(f"family {family.name}: schema.yaml redefines sections {sorted(clash)}")
        full["properties"].update(added)
    return full


def _defaults_filling_validator():
    # jsonschema's documented recipe: a validator that also inserts each property's default.
    base = jsonschema.Draft7Validator

    def finite_number(checker, instance) -> bool:
        # YAML has .nan and .inf, JSON has neither: a number key must hold a finite number.
        return base.TYPE_CHECKER.is_type(instance, "number") and math.isfinite(instance)

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = _copy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, sch)

    return jsonschema.validators.extend(base, {"properties": set_defaults},
                                        type_checker=base.TYPE_CHECKER.redefine("number", finite_number))


def _copy(value):
    return yaml.safe_load(yaml.safe_dump(value))


def _keys(error: jsonschema.ValidationError) -> list[str]:
    """One line per offending dotted key."""
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        prefix = path + "." if path else ""
        return [f"{prefix}{name}: unknown key" for name in sorted(set(error.instance) - known)]
    if error.validator == "type" and isinstance(error.instance, float) and not math.isfinite(error.instance):
        return [f"{path}: {error.instance} is not a finite number"]
    if error.validator == "pattern" and "(ep|it)" in str(error.validator_value):
        kind = "a positive duration" if "[1-9]" in str(error.validator_value) else "a step"
        return [f"{path}: {error.instance!r} is not {kind}: <N>ep (epochs) or <N>it (iterations)"]
    if error.validator == "pattern" and str(error.validator_value).startswith("^(?!/)"):
        return [f"{path}: {error.instance!r} is not a folder inside the project (relative, letters, digits, _ . - /, no . or .. parts)"]
    return [f"{path or '<top level>'}: {error.message}"]


def validate(raw: dict | None, source: str = "params") -> dict:
    """Return a copy of `raw` with defaults filled in; raise ConfigError naming every bad key."""
    data = _copy(raw or {})
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    validator = _defaults_filling_validator()(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n  ".join(line for e in errors for line in _keys(e))
        raise ConfigError(f"{source}: invalid configuration\n  {lines}")
    return data


def load_yaml(*paths: str | Path) -> dict:
    """Merge YAML files left to right (later files override whole keys, section by section)."""
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such parameter file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
        _deep_update(merged, data)
    return merged


def _deep_update(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


# ----------------------------------------------------------------------------- typed sections

MNIST1D_TRAIN_SPLIT = 0.8  # mnist1d.data.get_dataset_args().train_split (tested)
TRAIN_EXAMPLES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000}


@dataclass(frozen=True)
class RunConfig:
    """Which run this is and where its files go (see check_run): every workflow path derives from it."""

    name: str = "default"
    results: str = "results"
    reports: str = "reports"

    @property
    def logs(self) -> str:
        """Job logs: logs/ for the default run, logs/<name>/ for a named one."""
        return "logs" if self.name == DEFAULT_RUN.name else f"logs/{self.name}"


DEFAULT_RUN = RunConfig()


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"
    threads: int = 0


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist1d"
    root: str = "data/raw"
    download: bool = False
    num_samples: int = 10000
    seed: int = 42

    @property
    def train_examples(self) -> int:
        """Size of the training split, known without building the data (for cross-key checks):
        MNIST-1D keeps mnist1d's default 80% of num_samples for training; the others are fixed."""
        if self.name == "mnist1d":
            return int(self.num_samples * MNIST1D_TRAIN_SPLIT)
        return TRAIN_EXAMPLES[self.name]


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    depth: int = 2
    width: int = 256
    width_multiplier: int = 1
    norm: str = "none"


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    duration: str = "30ep"
    schedule: str = "constant"
    warmup: str = "0it"
    milestones: tuple[str, ...] = ()
    gamma: float = 0.1
    augment: str = "none"
    checkpoint_steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationConfig:
    batch_size: int = 2000
    max_examples: int = 0
    bn_batches: int = 20
    bn_batch_size: int = 256
    member_chunk: int = 0
    barrier: str = "max_minus_mean"  # core.barrier.KINDS; only the jobs that summarise paths read it


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "modeconn"
    enabled: bool = True


CORE_SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "runtime": RuntimeConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "evaluation": EvaluationConfig,
    "tracking": TrackingConfig,
}


def sections() -> dict[str, type]:
    """Section name -> typed dataclass: the core sections, then every family's (section.py SECTIONS)."""
    out = dict(CORE_SECTIONS)
    for family in registry():
        for name, cls in family.module("section").SECTIONS.items():
            if name in out:
                raise RuntimeError(f"family {family.name}: section {name!r} is defined twice")
            out[name] = cls
    return out


def _section(cls: type, values: dict):
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


class _ConfigMethods:
    """Methods of Config; its fields (one per section, e.g. `cfg.train`, `cfg.lottery`) come from
    `sections()`, so a family's section appears here without editing this file."""

    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "params") -> "Config":
        """Validate (filling defaults) and type a full or partial parameter dict."""
        data = validate(raw, source)
        return cls(**{name: _section(kind, data[name]) for name, kind in sections().items()})

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def seed_checkpoint_steps(self) -> tuple[str, ...]:
        """Every point of the seeds' training at which some family needs a checkpoint.

        `train.checkpoint_steps` plus what each family section asks for through its own
        `seed_checkpoint_steps()` (e.g. the spawn steps k of the instability analysis). The
        Snakefile passes this union to the seeds' training jobs as their `train.checkpoint_steps`.
        """
        steps = list(self.train.checkpoint_steps)
        for name in sections():
            wanted = getattr(getattr(self, name), "seed_checkpoint_steps", None)
            if wanted is not None:
                steps += [s for s in wanted() if s not in steps]
        return tuple(steps)


Config = dataclasses.make_dataclass(
    "Config",
    [(name, kind, field(default_factory=kind)) for name, kind in sections().items()],
    bases=(_ConfigMethods,),
    frozen=True,
)
Config.__module__ = __name__
Config.__doc__ = "The typed, frozen configuration: one field per params.yaml section."


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} → {'train.lr': 0.1}: the dotted keys MLflow params use."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# ----------------------------------------------------------------------------- cross-key checks


def _keys_holding(section_name: str, section, value: str) -> list[str]:
    """Dotted keys of `section` whose value is `value` or a list containing it."""
    keys = []
    for f in dataclasses.fields(section):
        v = getattr(section, f.name)
        if v == value or (isinstance(v, tuple) and value in v):
            keys.append(f"{section_name}.{f.name}")
    return keys


def check_steps(cfg: Config) -> None:
    """Cross-key checks made when the DAG is built, before any job: every step some section asks
    the seeds' training to checkpoint (train.checkpoint_steps, spawn steps, rewind step, FGE/SWA
    starts: each section's `seed_checkpoint_steps()`) and the warm-up lie inside train.duration.
    Raises ConfigError naming each dotted key and its value."""
    spe = steps_per_epoch(cfg.data.train_examples, cfg.train.batch_size, "train.batch_size")
    total = iterations(cfg.train.duration, spe)
    asked = [("train.checkpoint_steps", s) for s in cfg.train.checkpoint_steps] + [("train.warmup", cfg.train.warmup)]
    for name in sections():
        section = getattr(cfg, name)
        wanted = getattr(section, "seed_checkpoint_steps", None)
        for step in wanted() if wanted is not None else ():
            asked += [(key, step) for key in _keys_holding(name, section, step) or [f"{name}.?"]]
    late = sorted({f"{key}: {step} = iteration {iterations(step, spe)} is past the end of the seeds' training "
                   f"(train.duration {cfg.train.duration} = {total} iterations of {spe} per epoch)"
                   for key, step in asked if iterations(step, spe) > total})
    if late:
        raise ConfigError("invalid configuration\n  " + "\n  ".join(late))


def check_run(cfg: Config) -> None:
    """Cross-key checks of the run's folders, made when the DAG is built: a named run (a preset)
    must not write into the default run's folders or into another run's, and its results and
    reports folders must be apart. Raises ConfigError naming the key and its value."""
    run, problems = cfg.run, []
    results, reports = Path(run.results), Path(run.reports)
    if run.name != DEFAULT_RUN.name:
        for key, folder, default in (("results", results, DEFAULT_RUN.results), ("reports", reports, DEFAULT_RUN.reports)):
            if folder == Path(default):
                problems.append(f"run.{key}: {str(folder)!r} is the default run's folder; a run named {run.name!r} "
                                f"needs its own (e.g. {default}/{run.name}), or it overwrites the default run's files")
    if results == reports or results in reports.parents or reports in results.parents:
        problems.append(f"run.results: {run.results!r} and run.reports: {run.reports!r} must be apart (neither inside the other)")
    if problems:
        raise ConfigError("invalid configuration\n  " + "\n  ".join(problems))


def check(cfg: Config) -> None:
    """Every cross-key check (the run's folders, then the steps), as the workflow and the CLI make them."""
    check_run(cfg)
    check_steps(cfg)
