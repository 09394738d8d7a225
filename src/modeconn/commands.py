"""What every family's commands.py shares: `job(args, cfg)`, how a job runs and how it is labelled.

A family's `register(command)` adds its subcommands: `command(name, func, help)` (from cli.py)
returns a subparser that already has the shared flags (--params, --params-file, --tracking,
--device, --threads, --rule, --wildcards); `func(args, cfg)` receives the parsed arguments and the
typed config. Commands modules stay light: heavy imports (torch, stages) happen inside the functions.
"""

from __future__ import annotations

import argparse


def job(args: argparse.Namespace, cfg):
    """How this job runs (device, threads) and how it is labelled (rule, wildcards)."""
    from .jobs import Job

    return Job(
        device=args.device or cfg.runtime.device,
        threads=args.threads if args.threads is not None else cfg.runtime.threads,
        rule=args.rule,
        wildcards=args.wildcards,
        run=cfg.run.name,
    )
