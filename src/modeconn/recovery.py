"""Recovering from a killed workflow: which process owns what, and stale Snakemake locks.

After `kill -9` (or a machine reset) Snakemake leaves its locks behind, and the next run stops with
a LockException until the user finds `--unlock`. A workflow run records its owner (host, pid and
the pid's start time) in `.snakemake/modeconn-owner` when it starts and removes it when it ends;
the next run, while its Snakefile is read, removes the locks only if that owner is a dead process
of this host. A live owner (a second instance really running) keeps its locks, so Snakemake still
refuses to run two instances on the same outputs. Incomplete outputs of killed jobs are rerun by
`rerun-incomplete` in the profiles. MLflow runs of dead jobs are ended by `tracking.end_dead_runs`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

OWNER_FILE = Path(".snakemake/modeconn-owner")
LOCK_DIR = Path(".snakemake/locks")  # Snakemake's file persistence backend (its default)


def process_start(pid: int | str) -> str:
    """Start time of a process (Linux: field 22 of /proc/<pid>/stat, in clock ticks since boot),
    "" where unknown: with the pid it identifies a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name; the 22nd overall


def owner_id(pid: int | None = None) -> str:
    """"pid:start" of this process (or of `pid`)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{process_start(pid)}"


def process_alive(owner: str) -> bool:
    """Whether the process `pid:start` of this host still runs (a reused pid does not count)."""
    pid, _, start = owner.partition(":")
    if start:
        return process_start(pid) == start
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(workdir: Path = Path(".")) -> None:
    """Record this process (the Snakemake run) as the owner of the working directory's locks."""
    path = workdir / OWNER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{socket.gethostname()} {owner_id()}\n")


def release(workdir: Path = Path(".")) -> None:
    (workdir / OWNER_FILE).unlink(missing_ok=True)


def clear_stale_locks(workdir: Path = Path(".")) -> str | None:
    """Remove Snakemake's locks if their owner is a dead process of this host; say so, else None."""
    locks = sorted((workdir / LOCK_DIR).glob("*.lock"))
    owner_file = workdir / OWNER_FILE
    if not locks or not owner_file.is_file():
        return None
    host, _, owner = owner_file.read_text().strip().partition(" ")
    if host != socket.gethostname() or not owner or process_alive(owner):
        return None
    for lock in locks:
        lock.unlink(missing_ok=True)
    owner_file.unlink(missing_ok=True)
    return f"modeconn: removed {len(locks)} stale lock(s) of a workflow run that died (host {host}, process {owner.split(':')[0]})"
