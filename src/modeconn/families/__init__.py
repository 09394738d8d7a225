"""The one registry of method families: the CLI, the schema merge, the typed config, the report
order, the Snakefile includes and the tests all read `registry()`; no other file lists families.

A family is one package (`families/<name>/` for the built-in ones) holding, by convention:

    __init__.py   a docstring (papers, what it computes), TITLE, and REPORTS: report file name ->
                  (caption file under captions/, label) or None; its report rule's outputs, dvc.yaml
                  and the tests take the list from here
    schema.yaml   its params.yaml sections (JSON schema), merged into schemas/params.schema.yaml
    section.py    SECTIONS: section name -> frozen dataclass (the typed config)
    commands.py   register(command): its `modeconn` subcommands
    rules.smk     its Snakemake rules; the target rule is named after the family
    stage.py      its jobs (read config, load inputs, call core/, write outputs, log)
    report.py     its tables, figures, metrics.json and section.md (a `## ` section of reports/README.md)

Built-in families are listed in BUILTIN in report order. A family outside this package is added
without editing any file here: declare it as an entry point of the group `modeconn.families`
(name = package), e.g. in the extending project's pyproject.toml:

    [project.entry-points."modeconn.families"]
    mymethod = "mymethod_family"

It is then ordered after the built-in ones. See CONTRIBUTING.md for a worked example.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from types import ModuleType

# Report order: seeds first (every other family starts from them), flatness and landscape last
# (they measure what the others produced).
BUILTIN = ("seeds", "instability", "lottery", "curves", "fge", "neb", "simplex", "rebasin", "flatness", "landscape")
ENTRY_POINT_GROUP = "modeconn.families"


@dataclass(frozen=True)
class Family:
    """One method family: its name (one word, used everywhere) and the package holding its files."""

    name: str
    package: str

    def module(self, part: str) -> ModuleType:
        """Its `section`, `commands`, `stage` or `report` module."""
        return importlib.import_module(f"{self.package}.{part}")

    def file(self, name: str) -> Path:
        """A file of its folder (schema.yaml, rules.smk, captions/...)."""
        return Path(str(resources.files(self.package).joinpath(name)))

    @property
    def reports(self) -> dict[str, tuple[str, str] | None]:
        """Report file name (under reports/<name>/) -> (caption file under captions/, label) or None."""
        return dict(importlib.import_module(self.package).REPORTS)

    @property
    def title(self) -> str:
        """Its heading in the HTML report."""
        return getattr(importlib.import_module(self.package), "TITLE", self.name)

    def report_files(self, root: str = "reports") -> list[str]:
        return [f"{root}/{self.name}/{f}" for f in self.reports]


@functools.cache
def registry() -> tuple[Family, ...]:
    """Every family in report order: the built-in ones, then those declared as entry points."""
    found = [Family(name, f"{__name__}.{name}") for name in BUILTIN]
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in BUILTIN:
            raise RuntimeError(f"entry point {ep.name} = {ep.value}: the name of a built-in family")
        found.append(Family(ep.name, ep.value))
    return tuple(found)


def names() -> list[str]:
    return [f.name for f in registry()]


def get(name: str) -> Family:
    for family in registry():
        if family.name == name:
            return family
    raise KeyError(f"no family named {name!r} (known: {', '.join(names())})")
