# modeconn: regenerate every figure and table of the mode-connectivity papers into reports/.
#   snakemake                       # default params.yaml (MNIST-1D, CPU, minutes)
#   snakemake --configfile config/mnist.yaml
#   snakemake --report report.html  # HTML report with every figure and table
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/seeds.smk"
include: "workflow/rules/instability.smk"
include: "workflow/rules/lottery.smk"
include: "workflow/rules/curves.smk"
include: "workflow/rules/fge.smk"
include: "workflow/rules/neb.smk"
include: "workflow/rules/simplex.smk"
include: "workflow/rules/rebasin.smk"
include: "workflow/rules/flatness.smk"


report: "workflow/report/workflow.rst"


onstart:
    # The MLflow store must exist before jobs fan out: parallel first-time creation corrupts it.
    shell("modeconn init-tracking --params {params:q}", params=params_json())


rule all:
    default_target: True
    input:
        rules.seeds.input,
        rules.instability.input,
        rules.lottery.input,
        rules.curves.input,
        rules.fge.input,
        rules.neb.input,
        rules.simplex.input,
        rules.rebasin.input,
        rules.flatness.input,
        "reports/README.md",  # the consolidated report: every family's section
