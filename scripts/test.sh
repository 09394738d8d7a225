#!/usr/bin/env bash
# The test suite: set up (first time only), then pytest, including the end-to-end smoke workflow
# (Snakemake on config/smoke.yaml). Extra arguments go to pytest (e.g. `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
exec python -m pytest "$@"
