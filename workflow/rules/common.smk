# Shared by the files in this folder: the validated, typed configuration and helper functions.
# params.yaml (plus any --configfile preset) is validated here, when the DAG is built: an unknown
# or ill-typed key stops the run before any job starts, with a message naming the key.
import json

from modeconn.config import Config, ConfigError
from modeconn.provenance import imported_sources, source_hash

try:
    CFG = Config.from_dict(config, source="params.yaml (+ --configfile)")
except ConfigError as err:
    raise WorkflowError(str(err)) from None

FULL = CFG.to_dict()
ENV = "../envs/modeconn.yaml"
# Only a run on CUDA asks the cluster for a GPU; on one machine the resource is unconstrained.
GPU = 1 if CFG.runtime.device == "cuda" else 0
DATA_FILE = f"data/prepared/{CFG.data.name}.safetensors"


def params_json(**sections):
    """JSON of the params.yaml sections (or parts of them) that one job uses. Pass section=True for
    a whole section, section={...} for some of its keys. The job reruns exactly when this text changes.
    Every job also gets `runtime` and `tracking`: where it runs changes its numerics, and where it
    is recorded is part of its provenance."""
    chosen = {name: FULL[name] if value is True else value for name, value in sections.items()}
    chosen |= {"runtime": FULL["runtime"], "tracking": FULL["tracking"]}
    return json.dumps(chosen, sort_keys=True)


def code(*modules):
    """Hash of the source of the package modules a job runs (dotted, e.g. "stages.seeds") and of
    every package module they import: Snakemake does not see edits to imported code, so this param
    reruns exactly the jobs whose code changed. The schemas count wherever config.py does."""
    files = imported_sources(*modules)
    return source_hash(*files, *(["schemas"] if "config.py" in files else []))
