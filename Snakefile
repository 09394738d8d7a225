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


report: "workflow/report/workflow.rst"


onstart:
    # The MLflow store must exist before jobs fan out: parallel first-time creation corrupts it.
    shell("modeconn init-tracking --params {params:q}", params=params_json())


rule all:
    default_target: True
    input:
        rules.seeds.input,
