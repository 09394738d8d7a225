# modeconn: regenerate every figure and table of the mode-connectivity papers into reports/.
#   snakemake                       # default params.yaml (MNIST-1D, CPU, minutes)
#   snakemake --configfile config/mnist.yaml
#   snakemake <family>              # one family and what it needs (e.g. snakemake lottery)
#   snakemake --report report.html  # HTML report with every figure and table
# The families and their rules come from the registry (src/modeconn/families/__init__.py).
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


# One meaning per wildcard name, for every rule of every family.
wildcard_constraints:
    a=r"\d+",
    b=r"\d+",
    population=r"\d+",
    width=r"\d+",
    level=r"[1-9][0-9]*",
    step=r"[0-9]+(ep|it)",
    dims="[12]",
    table="minima|paths",
    method="fge|swa",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


for family in FAMILIES:

    include: str(family.file("rules.smk"))


include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


onstart:
    # This run owns the locks now (a later run may clear them if this process dies: recovery.py).
    recovery.claim()
    # The MLflow store must exist before jobs fan out: parallel first-time creation corrupts it.
    # It also ends as KILLED the MLflow runs of jobs whose process died.
    shell("modeconn init-tracking --params {params:q}", params=params_json())
    # Jobs append their MLflow records to a journal that one process writes into a local store
    # (journal.py): opening the store would cost every job about 2 s.
    if JOURNAL:
        DRAINER.append(journal.start_drainer(JOURNAL, Path(in_logs("tracking-journal.log")), params_json()))
    # Jobs run on this machine start as forks of one process that has done their imports
    # (forkserver.py): importing torch, pandas, scipy and seaborn would cost every job 1-2 s.
    if workflow.local_exec and not workflow.deployment_settings.deployment_method:
        FORK_SERVER.append(forkserver.start(in_logs("fork-server.log")))


onsuccess:
    stop_fork_server()
    stop_journal()
    recovery.release()


onerror:
    stop_fork_server()
    stop_journal()
    recovery.release()


rule all:
    default_target: True
    input:
        [getattr(rules, family.name).input for family in FAMILIES],
        in_reports("README.md"),  # the consolidated report: every family's section
