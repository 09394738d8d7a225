#!/usr/bin/env bash
# An MLflow tracking server for many writers (jobs on several machines, a Slurm cluster): every
# job talks HTTP to this one process, which alone writes the database. Runs in the foreground.
#
#   bash scripts/mlflow-server.sh                          # SQLite in ./mlflow-server/, 127.0.0.1:5000
#   bash scripts/mlflow-server.sh --port 5001 --dir /shared/mlflow
#   bash scripts/mlflow-server.sh --backend postgresql://mlflow:SECRET@127.0.0.1:5432/mlflow
#   bash scripts/mlflow-server.sh --host 0.0.0.0           # reachable from compute nodes (see below)
#
# Then point the workflow at it (params.yaml or a --configfile preset):
#   tracking: {uri: "http://127.0.0.1:5000"}
# and open the same address in a browser for the MLflow UI.
#
# Options (or the environment variables in brackets):
#   --backend URI    database [MLFLOW_BACKEND_URI]; default sqlite:///<dir>/mlflow.db. SQLite is fine
#                    for one server process on one host (the server serialises the writes); for
#                    several server processes or hosts use PostgreSQL (needs `pip install
#                    psycopg2-binary`; see docs/cluster.md).
#   --artifacts DIR  where run artifacts (figures, metrics files) are stored [MLFLOW_ARTIFACTS];
#                    default <dir>/artifacts. The server proxies uploads and downloads
#                    (--serve-artifacts), so jobs need no access to this folder.
#   --dir DIR        home of the default database and artifacts [MLFLOW_SERVER_DIR]; default ./mlflow-server
#   --host HOST      interface to bind [MLFLOW_HOST]; default 127.0.0.1 (this machine only). Binding
#                    another interface exposes an unauthenticated server to that network: prefer an
#                    SSH tunnel (ssh -L 5000:127.0.0.1:5000 login-node) or a site proxy.
#   --port PORT      [MLFLOW_PORT]; default 5000
#   --workers N      server worker processes [MLFLOW_WORKERS]; default 1 with SQLite, 4 otherwise
# Anything after `--` goes to `mlflow server` unchanged.
#
# The database is created (or migrated) once by one process before the server's workers start:
# several processes creating a fresh database at once can corrupt it.
set -euo pipefail

DIR=${MLFLOW_SERVER_DIR:-mlflow-server}
BACKEND=${MLFLOW_BACKEND_URI:-}
ARTIFACTS=${MLFLOW_ARTIFACTS:-}
HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
WORKERS=${MLFLOW_WORKERS:-}
EXTRA=()
while (($#)); do
    case $1 in
        --backend) BACKEND=$2; shift 2 ;;
        --artifacts) ARTIFACTS=$2; shift 2 ;;
        --dir) DIR=$2; shift 2 ;;
        --host) HOST=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "mlflow-server: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

command -v mlflow >/dev/null || { echo "mlflow-server: mlflow not found (source .venv/bin/activate)" >&2; exit 1; }
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
BACKEND=${BACKEND:-sqlite:///$DIR/mlflow.db}
ARTIFACTS=${ARTIFACTS:-$DIR/artifacts}
if [[ -z $WORKERS ]]; then
    [[ $BACKEND == sqlite:* ]] && WORKERS=1 || WORKERS=4
fi
[[ $ARTIFACTS == *://* ]] || mkdir -p "$ARTIFACTS"

export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}
# Create or migrate the schema once, in this process, before any worker opens the database.
python - "$BACKEND" <<'EOF'
import sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

# creates the tables of a new database (its Default experiment stores artifacts through the
# server, as `mlflow server --serve-artifacts` does), checks the schema of an existing one
SqlAlchemyStore(sys.argv[1], "mlflow-artifacts:/")
EOF

shown=$BACKEND
[[ $shown == *://*:*@* ]] && shown=$(sed -E 's#(://[^:/]+):[^@]*@#\1:***@#' <<<"$shown")  # hide a password
echo "mlflow-server: http://$HOST:$PORT  backend $shown  artifacts $ARTIFACTS  workers $WORKERS" >&2
exec mlflow server \
    --backend-store-uri "$BACKEND" \
    --artifacts-destination "$ARTIFACTS" \
    --serve-artifacts \
    --host "$HOST" \
    --port "$PORT" \
    --workers "$WORKERS" \
    "${EXTRA[@]}"
