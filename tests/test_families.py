"""The family registry is the one list of families: the CLI, the schema, the typed config, the
rules, the report order and dvc.yaml all follow it, and a family registered from outside the
package (tests/example_family, an entry point) is picked up without editing any other file."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import copy_workflow

from conftest import SMOKE_REPORTS
from modeconn.config import Config, schema, sections
from modeconn.families import BUILTIN, get, names, registry
from modeconn.models import MODELS, ModelConfig, build_model, width_key

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests/example_family"  # holds midpoint_family/ and its dist-info (entry point)


def example_env() -> dict[str, str]:
    """The environment of a process that sees the example family (as if it were pip-installed)."""
    path = os.pathsep.join(filter(None, [str(EXAMPLE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_DISABLE_TELEMETRY": "true"}


def run(*cmd: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=example_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_builtin_families_each_have_every_part():
    for family in registry():
        for name in ("schema.yaml", "rules.smk"):
            assert family.file(name).is_file(), (family.name, name)
        for module in ("section", "commands", "stage", "report"):
            family.module(module)
        assert family.reports and "metrics.json" in family.reports and "section.md" in family.reports, family.name
        for caption in filter(None, family.reports.values()):
            assert family.file(f"captions/{caption[0]}").is_file(), (family.name, caption)
        # the target rule of the family is named after it
        assert re.search(rf"^rule {family.name}:", family.file("rules.smk").read_text(), re.M), family.name


def test_config_sections_and_schema_come_from_the_families():
    owned = {name for f in registry() for name in f.module("section").SECTIONS}
    assert {"seeds", "lottery", "fge", "swa", "landscape"} <= owned
    assert owned <= set(sections()) and owned <= set(schema()["properties"])
    assert {f.name for f in dataclasses.fields(Config)} == set(sections())


# A literal naming this many families is a list of the families (tests may name a few as data).
LISTING = 6


def _family_lists(text: str) -> list[str]:
    """Literal lists/tuples/sets (or dict keys) in Python source that name LISTING or more families."""
    found = []
    for node in ast.walk(ast.parse(text)):
        elements = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            words = {e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if len(words & set(BUILTIN)) >= LISTING:
                found.append(ast.unparse(node)[:80])
    return found


def test_the_registry_is_the_only_list_of_families():
    """No file but families/__init__.py writes out a list of families (Python and Snakemake files)."""
    offenders = {}
    files = [*REPO.glob("src/modeconn/**/*.py"), *REPO.glob("src/modeconn/**/*.smk"), *REPO.glob("workflow/**/*.smk"),
             REPO / "Snakefile", *REPO.glob("tests/*.py"), *REPO.glob("benchmarks/*.py")]
    for path in files:
        if path == REPO / "src/modeconn/families/__init__.py":
            continue
        text = path.read_text()
        if path.suffix == ".py":
            lists = _family_lists(text)
        else:  # Snakemake syntax is not Python: look for bracketed runs of quoted family names
            lists = [m.group(0)[:80] for m in re.finditer(r"[\[(]\s*(\"\w+\",\s*){2,}\"\w+\"", text)
                     if len(set(re.findall(r"\"(\w+)\"", m.group(0))) & set(BUILTIN)) >= LISTING]
        if lists:
            offenders[str(path.relative_to(REPO))] = lists
    assert offenders == {}
    # and the check itself finds a list when there is one
    assert _family_lists(repr(tuple(BUILTIN[:LISTING]))) and not _family_lists(repr(tuple(BUILTIN[: LISTING - 1])))


def test_dvc_stages_declare_exactly_each_familys_report_files():
    """dvc.yaml has a stage per family whose outs, metrics and plots under reports/<family>/ are
    the family's REPORTS (the list its report rule writes)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(names()) <= set(stages)
    for family in registry():
        stage = stages[family.name]
        declared = set()
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                path = path.replace("${run.reports}", "reports")  # DVC fills it from params.yaml's run section
                if path.startswith(f"reports/{family.name}/"):
                    declared.add(path)
        assert declared == set(family.report_files()), family.name
        assert f" {family.name} " in stage["cmd"], stage["cmd"]
    readme_deps = {d.replace("${run.reports}", "reports") for d in stages["report"]["deps"]}
    assert {f"reports/{f}/section.md" for f in names()} <= readme_deps


def test_dvc_paths_all_derive_from_the_run_section():
    """Every output and data path in dvc.yaml is templated from run.results / run.reports, so a
    run of another preset (dvc exp run -S run.name=... ) keeps its own DVC outputs."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for kind in ("deps", "outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                if path.split("/")[0] in ("results", "reports", "data") or "prepared" in path:
                    raise AssertionError(f"dvc.yaml stage {name}: {kind} path {path!r} does not derive from run.*")


@pytest.mark.parametrize("name", list(MODELS))
def test_width_key_scales_the_model_or_is_absent(name):
    """The model registry says which key scales a model's width (the width sweep varies it)."""
    shape = (1, 40) if name in ("mlp", "lenet300_100") else (3, 8, 8)
    key = width_key(name)
    if name == "lenet300_100":
        assert key is None
        return
    count = lambda **kw: sum(p.numel() for p in build_model(ModelConfig(name=name, **kw), shape, 10).parameters())  # noqa: E731
    assert count(**{key: 2}) > count(**{key: 1})
    with pytest.raises(ValueError, match="unknown model"):
        width_key("no_such_model")


def test_example_family_is_picked_up_from_its_entry_point(tmp_path):
    """A family outside the package, registered by an entry point only, gets its CLI command, its
    config section, its rules and its place in the consolidated report; the in-process registry
    (without the entry point on sys.path) does not know it."""
    assert "midpoint" not in names()
    help_text = run(sys.executable, "-m", "modeconn.cli", "--help").stdout
    assert "report-midpoint" in help_text
    shown = run(sys.executable, "-m", "modeconn.cli", "validate", "--params-file", "params.yaml").stdout
    assert yaml.safe_load(shown)["midpoint"] == {"split": "test"}
    order = run(sys.executable, "-c", "from modeconn.families import names; print(' '.join(names()))").stdout.split()
    assert order == [*BUILTIN, "midpoint"]
    copy_workflow(tmp_path)
    dry = run(sys.executable, "-m", "snakemake", "midpoint", "-n", "--configfile", "config/smoke.yaml", cwd=tmp_path)
    assert "report_midpoint" in dry.stdout + dry.stderr
    graph = run(sys.executable, "-m", "snakemake", f"{SMOKE_REPORTS}/README.md", "-n", "--forceall", "--configfile", "config/smoke.yaml",
                "--dag", cwd=tmp_path).stdout
    assert "report_midpoint" in graph  # the consolidated report waits for its section


def test_registry_names_are_single_words_and_unique():
    assert len(set(names())) == len(names())
    for name in names():
        assert re.fullmatch(r"[a-z]+", name), name
        assert get(name).name == name
    with pytest.raises(KeyError, match="no family named"):
        get("nonexistent")
