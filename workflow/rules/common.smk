# Shared by every rule file: the validated, typed configuration and small helpers.
# params.yaml (plus any --configfile preset) is validated here, when the DAG is built: an unknown
# or ill-typed key stops the run before any job starts, with a message naming the key.
import json
import shlex

from modeconn.config import Config, ConfigError
from modeconn.provenance import source_hash

try:
    CFG = Config.from_dict(config, source="params.yaml (+ --configfile)")
except ConfigError as err:
    raise WorkflowError(str(err)) from None

FULL = CFG.to_dict()
TRACKING_PARAMS = json.dumps({"tracking": FULL["tracking"]})
# Only a run on CUDA asks the cluster for a GPU; on one machine the resource is unconstrained.
GPU = 1 if CFG.runtime.device == "cuda" else 0
# Where a job runs and where it is recorded change no result, so they reach the command line
# outside `params:` (a change reruns nothing).
RUN = f"--device {CFG.runtime.device} --tracking {shlex.quote(TRACKING_PARAMS)}"
DATA_FILE = f"data/prepared/{CFG.data.name}.safetensors"


def params_json(**sections):
    """The params.yaml sections (or parts of them) one rule uses, as JSON: section=True for a whole
    section, section={...} for some of its keys. A rule reruns exactly when this text changes."""
    chosen = {name: FULL[name] if value is True else value for name, value in sections.items()}
    return json.dumps(chosen, sort_keys=True)


def code(*paths):
    """Hash of the package modules a rule runs: Snakemake does not see edits to imported code."""
    return source_hash(*paths)


rule data:
    input:
        DATA_FILE,


rule prepare_data:
    output:
        "data/prepared/{dataset}.safetensors",
    params:
        cfg=params_json(data=True),
        code=code("data.py", "io.py"),
    log:
        "logs/prepare_data/{dataset}.log",
    shell:
        "modeconn prepare-data --params {params.cfg:q} --out {output:q} {RUN} --rule {rule} > {log:q} 2>&1"
