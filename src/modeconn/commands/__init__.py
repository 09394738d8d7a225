"""Subcommands of `modeconn`, one module per family, each with `register(command)`.

`command(name, func, help)` (from cli.py) adds a subparser that already has the shared flags
(--params, --params-file, --tracking, --device, --threads, --rule, --wildcards) and returns it for
the family's own arguments. `func(args, cfg)` receives the parsed arguments and the typed config.
Modules here stay light: heavy imports (torch, the stages) happen inside the functions.
"""

from __future__ import annotations

import argparse

FAMILIES = ("seeds", "instability", "curves", "neb", "rebasin", "flatness")


def job(args: argparse.Namespace, cfg):
    """How this job runs (device, threads) and how it is labelled (rule, wildcards)."""
    from ..stages.common import Job

    return Job(
        device=args.device or cfg.runtime.device,
        threads=args.threads if args.threads is not None else cfg.runtime.threads,
        rule=args.rule,
        wildcards=args.wildcards,
    )
