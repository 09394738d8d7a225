"""What made a result: package version, git commit and a hash of the package's source."""

from __future__ import annotations

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
