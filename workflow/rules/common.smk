# Shared by every rules file: the validated, typed configuration, the family registry and helpers.
# params.yaml (plus any --configfile preset) is validated here, when the DAG is built: an unknown,
# ill-typed or non-finite key, a zero duration, or a step past the end of the training it refers
# to stops the run before any job starts, with a message naming the key and its value.
import json
import sys

from modeconn.config import Config, ConfigError, check
from modeconn.families import registry
from modeconn.models import width_key
from modeconn.provenance import imported_sources, source_hash
from modeconn import forkserver, journal, recovery

try:
    CFG = Config.from_dict(config, source="params.yaml (+ --configfile)")
    check(CFG)  # cross-key: the run's own folders; every step a family asks for lies inside the seeds' training
except ConfigError as err:
    raise WorkflowError(str(err)) from None

# A run killed with -9 left its locks: remove them when their owner process is dead, so the same
# command simply runs again (a live second instance keeps them, and Snakemake refuses to start).
_stale = recovery.clear_stale_locks()
if _stale:
    print(_stale, file=sys.stderr)

FULL = CFG.to_dict()
FAMILIES = registry()
ENV = str(Path(workflow.basedir) / "workflow/envs/modeconn.yaml")
# Only a run on CUDA asks the cluster for a GPU; on one machine the resource is unconstrained.
GPU = 1 if CFG.runtime.device == "cuda" else 0

# The tracking journal (journal.py) of a local MLflow store, and its drainer once started (onstart).
JOURNAL = Path(".modeconn/journal").resolve() if CFG.tracking.enabled and CFG.tracking.uri.startswith("sqlite:") else None
DRAINER = []


def stop_journal():
    if DRAINER:
        journal.stop_drainer(DRAINER.pop(), JOURNAL, Path(in_logs("tracking-journal.log")))


# The fork server the jobs start from (forkserver.py), once started (onstart).
FORK_SERVER = []


def stop_fork_server():
    if FORK_SERVER:
        forkserver.stop(FORK_SERVER.pop())


# Every path of the run derives from run.results / run.reports / its logs folder (run section of
# params.yaml): runs of different presets keep their own files, and the default run keeps
# results/, reports/ and logs/.
RESULTS, REPORTS, LOGS = CFG.run.results, CFG.run.reports, CFG.run.logs


def in_results(path):
    return f"{RESULTS}/{path}"


def in_reports(path):
    return f"{REPORTS}/{path}"


def in_logs(path):
    return f"{LOGS}/{path}"


DATA_FILE = in_results(f"data/{CFG.data.name}.safetensors")


def output_dir(wildcards, output):
    """The folder of a rule's outputs, for a command's --out-dir (derived from the outputs, as
    Snakemake wants a path prefix to be, so that it holds wherever the job runs)."""
    return str(Path(output[0]).parent)

# What the flatness family measures, filled by each family's rules.smk (included before flatness):
# group -> checkpoints of its minima (any network checkpoint: seed, fork, ticket, fge, swa...), and
# group -> its paths: a pair (A, B) of network checkpoints for the linear path between them, or one
# path checkpoint (stacked anchors, meta kind "path") or simplex checkpoint (meta kind "simplex").
FLATNESS_MINIMA = {}
FLATNESS_PATHS = {}
# directory() outputs (a file inside one is required through its directory), filled by the families.
DIRECTORY_OUTPUTS = []


def params_json(barrier=False, **sections):
    """JSON of the params.yaml sections (or parts of them) that one job uses. Pass section=True for
    a whole section, section={...} for some of its keys. The job reruns exactly when this text changes.
    Every job also gets `runtime`, `tracking` and `run`: where it runs changes its
    numerics, and where and under which run it is recorded is part of its provenance.

    evaluation.barrier (which barrier definition a table reports) is not part of evaluation=True:
    the jobs that evaluate paths record every definition, so only the jobs that pick one for a
    table ask for it with barrier=True, and switching it reruns those alone."""
    chosen = {name: FULL[name] if value is True else value for name, value in sections.items()}
    if sections.get("evaluation") is True:
        chosen["evaluation"] = {k: v for k, v in FULL["evaluation"].items() if k != "barrier"}
    if barrier:
        chosen["evaluation"] = {**chosen.get("evaluation", {}), "barrier": FULL["evaluation"]["barrier"]}
    chosen |= {"runtime": FULL["runtime"], "tracking": FULL["tracking"], "run": FULL["run"]}
    return json.dumps(chosen, sort_keys=True)


def code(*modules):
    """Hash of the source of the package modules a job runs (dotted, e.g. "families.seeds.stage")
    and of every package module they import: Snakemake does not see edits to imported code, so this
    param reruns exactly the jobs whose code changed. The core schema counts wherever config.py
    does, and a family's schema.yaml wherever its modules do. The registry (families/__init__.py)
    does not count: adding a family changes no other family's result."""
    files = [f for f in imported_sources(*modules) if f != "families/__init__.py"]
    extra = ["schemas/params.schema.yaml"] if "config.py" in files else []
    extra += sorted({f"families/{f.split('/')[1]}/schema.yaml" for f in files if f.startswith("families/")})
    return source_hash(*files, *extra)


def report_outputs(name):
    """The output files of a family's report rule, from its REPORTS (families/<name>/__init__.py):
    files with a caption are marked for `snakemake --report`."""
    family = next(f for f in FAMILIES if f.name == name)
    outputs = []
    for file, caption in family.reports.items():
        path = in_reports(f"{name}/{file}")
        if caption is None:
            outputs.append(path)
        else:
            text, label = caption
            outputs.append(report(path, caption=str(family.file(f"captions/{text}")), category=family.title, labels={"what": label}))
    return outputs


def report_files(name):
    return next(f for f in FAMILIES if f.name == name).report_files(REPORTS)


def seed_file(seed):
    return f"{POPULATION_DIR[seed]}/seed{seed}.safetensors"


def needed(path):
    """The workflow output that provides `path` (its directory() output, or the file itself)."""
    for directory in DIRECTORY_OUTPUTS:
        if path.startswith(f"{directory}/"):
            return directory
    return path


def path_files(item):
    """The checkpoint files of one FLATNESS_MINIMA / FLATNESS_PATHS item (a file or a pair)."""
    return list(item) if isinstance(item, (tuple, list)) else [item]


def path_spec(group, item):
    return f"{group}={','.join(path_files(item))}"
