"""What made a result: package version, git commit and a hash of the package's source."""

from __future__ import annotations

import ast
import functools
import hashlib
import subprocess
from pathlib import Path

from . import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def source_hash(*relative: str) -> str:
    """SHA-256 (first 16 hex digits) of the package's .py and schema files under the given paths.

    With no argument, the whole package. Snakemake rules use this as a param so that editing the
    code a rule runs reruns that rule (Snakemake does not see changes in imported modules).
    """
    roots = [PACKAGE_DIR / r for r in relative] or [PACKAGE_DIR]
    h = hashlib.sha256()
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in {".py", ".yaml"})
        if not files or not all(f.exists() for f in files):
            raise FileNotFoundError(f"source path {root} not found in the modeconn package")
        for f in files:
            h.update(str(f.relative_to(PACKAGE_DIR)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def imported_sources(*modules: str) -> list[str]:
    """The package's source files that `modules` (dotted, relative to the package, e.g.
    "stages.seeds") import, directly or through each other, themselves included.

    Read statically from the import statements (those inside functions too), so the answer is a
    superset of what a run executes. Paths are relative to the package, ready for `source_hash`.
    """
    todo = [m.strip(".") for m in modules]
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        seen[name] = path
        todo += _package_imports(name, path)
    return sorted(str(p.relative_to(PACKAGE_DIR)) for p in seen.values())


def _module_file(name: str) -> Path:
    base = PACKAGE_DIR.joinpath(*name.split(".")) if name else PACKAGE_DIR
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"module modeconn.{name} not found in the package")


def _package_imports(name: str, path: Path) -> list[str]:
    """Dotted names (relative to the package) of the package modules imported by one file."""
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    package = "" if package == name and path.name != "__init__.py" else package
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name.removeprefix("modeconn.") for a in node.names if a.name == "modeconn" or a.name.startswith("modeconn.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(parts + ([node.module] if node.module else []))
            elif node.module and (node.module == "modeconn" or node.module.startswith("modeconn.")):
                base = node.module.removeprefix("modeconn").strip(".")
            else:
                continue
            found.append(base)
            # `from . import x` / `from .core import params` may name submodules
            found += [f"{base}.{a.name}".strip(".") for a in node.names if _is_module(f"{base}.{a.name}".strip("."))]
    return [m for m in found if _is_module(m)]


def _is_module(name: str) -> bool:
    base = PACKAGE_DIR.joinpath(*name.split(".")) if name else PACKAGE_DIR
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


@functools.cache
def git_commit() -> str:
    """HEAD of the repository holding the package, with "-dirty" if tracked files changed; "unknown" outside git."""
    try:
        run = functools.partial(subprocess.run, cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)
        head = run(["git", "rev-parse", "HEAD"])
        if head.returncode != 0:
            return "unknown"
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_version() -> dict[str, str]:
    return {"package": __version__, "git_commit": git_commit(), "source_sha256": source_hash()}
