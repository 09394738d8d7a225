#!/usr/bin/env bash
# The main job: set up (first time only), then regenerate reports/ with Snakemake.
# Extra arguments go to snakemake, e.g. `bash scripts/run.sh --configfile config/mnist.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
exec snakemake "$@"
