"""`modeconn` command line: the entry point Snakemake rules call, one subcommand per stage.

Every subcommand takes its configuration through `--params` (the JSON of the params.yaml sections
the rule passes, already validated by the Snakefile; validated again here) or `--params-file`
(YAML files, for use by hand). How a job runs (`--device`, `--threads`) and how it is labelled
(`--rule`, `--wildcards`) are separate flags, not params, so they never change a result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import Config, ConfigError, check, load_yaml
from .families import registry


def _config(args: argparse.Namespace) -> Config:
    if args.params is not None and args.params_file:
        raise ConfigError("give either --params or --params-file, not both")
    if args.params is not None:
        try:
            raw = json.loads(args.params)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--params: not valid JSON ({err})") from err
        source = "--params"
    else:
        paths = args.params_file or ["params.yaml"]
        raw, source = load_yaml(*paths), " + ".join(map(str, paths))
    if args.tracking is not None:
        try:
            raw["tracking"] = json.loads(args.tracking)["tracking"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"--tracking: expected JSON {{\"tracking\": {{...}}}} ({err})") from err
    return Config.from_dict(raw, source=source)


def cmd_validate(args, cfg: Config) -> None:
    """Print the full configuration with defaults filled in (after the DAG-build cross-key checks)."""
    import yaml

    check(cfg)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")


def cmd_dvc_params(args, cfg: Config) -> None:
    """Print one `--set-param=KEY=VALUE` argument per key the presets set, for
    `dvc exp run $(modeconn dvc-params config/<preset>.yaml ...)`: DVC then runs the pipeline with
    params.yaml plus the presets (the presets' `run` section keys every DVC output to the preset's
    folders), records them in the experiment, and nobody copies values by hand. The merged
    parameters pass the same checks as the workflow's before anything is printed."""
    from .config import flatten

    preset = load_yaml(*args.presets)
    merged = Config.from_dict(load_yaml(*(args.params_file or ["params.yaml"]), *args.presets),
                              source=" + ".join(map(str, ["params.yaml", *args.presets])))
    check(merged)
    for key, value in flatten(preset).items():
        text = json.dumps(value, separators=(",", ":"))  # JSON is YAML: DVC parses it back
        if any(c.isspace() for c in text):
            raise ConfigError(f"{key}: {value!r} holds whitespace, which a shell would split; set it with -S by hand")
        print(f"--set-param={key}={text}")


def cmd_init_tracking(args, cfg: Config) -> None:
    from .tracking import init_store

    init_store(cfg.tracking)


def cmd_drain_journal(args, cfg: Config) -> None:
    from .journal import follow

    follow(args.folder, args.owner, args.stop)


def cmd_prepare_data(args, cfg: Config) -> None:
    from .data import build_dataset, save_dataset

    save_dataset(build_dataset(cfg.data), args.out)


def cmd_report_readme(args, cfg: Config) -> None:
    from . import consolidated

    consolidated.write(cfg, args.reports, args.out)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="modeconn", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("--params", help="JSON of the params.yaml sections this stage uses")
        p.add_argument("--params-file", nargs="+", type=Path, help="YAML parameter files merged left to right (default: params.yaml)")
        p.add_argument("--tracking", help='JSON {"tracking": {...}}: overrides the tracking section (changes no result)')
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides runtime.device")
        p.add_argument("--threads", type=int, help="torch threads (0: torch's default); overrides runtime.threads")
        p.add_argument("--rule", default="manual", help="Snakemake rule name, recorded as an MLflow tag")
        p.add_argument("--wildcards", default="", help="Snakemake wildcards, recorded as an MLflow tag")
        return p

    command("validate", cmd_validate, "validate parameters and print them with defaults filled in")
    p = command("dvc-params", cmd_dvc_params, "print the --set-param arguments that run presets under DVC: dvc exp run $(modeconn dvc-params config/mnist_cpu.yaml)")
    p.add_argument("presets", nargs="+", type=Path, help="preset files, merged left to right over params.yaml")
    command("init-tracking", cmd_init_tracking, "create the MLflow store and experiment (before jobs fan out)")
    p = command("drain-journal", cmd_drain_journal, "write the jobs' tracking journal into the MLflow store until --stop exists or --owner exits (started by the Snakefile)")
    p.add_argument("--folder", type=Path, required=True, help="the journal folder")
    p.add_argument("--owner", required=True, help="pid:start of the workflow process")
    p.add_argument("--stop", type=Path, required=True, help="drain once more and exit when this file exists")
    p = command("prepare-data", cmd_prepare_data, "build the configured dataset into one safetensors file")
    p.add_argument("--out", type=Path, required=True)
    p = command("report-readme", cmd_report_readme, "the consolidated reports/README.md from every family's section")
    p.add_argument("--reports", type=Path, default=Path("reports"), help="folder holding reports/<family>/")
    p.add_argument("--out", type=Path, required=True)
    for family in registry():
        family.module("commands").register(command)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = _config(args)
        args.func(args, cfg)
    except ConfigError as err:
        print(f"modeconn: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:  # incl. CheckpointError, DatasetFileError, DivergenceError
        job = f" (rule {args.rule}, {args.wildcards})" if args.wildcards else (f" (rule {args.rule})" if args.rule != "manual" else "")
        print(f"modeconn {args.command}{job}: {err}", file=sys.stderr)
        return 1
    return 0


def entry() -> None:
    """What the `modeconn` console command runs (in its own process, or in a child of the fork
    server: forkserver.entry): `main`, then exit without Python's interpreter teardown.

    With torch, pandas and their extensions loaded, the teardown (module finalizers, freeing every
    object) takes about 0.5 s on 2 cores, a third of a short job's fixed cost, and does nothing a
    job needs: every output is written atomically and closed before `main` returns. So the
    streams and logging are flushed and the process ends with os._exit. (Tests call `main`.)"""
    try:
        code = main()
    except SystemExit as err:  # argparse (--help, a usage error)
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # what Python would print on its way out
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


if __name__ == "__main__":
    entry()
