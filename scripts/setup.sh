#!/usr/bin/env bash
# Create .venv and install modeconn with its pinned dependencies (idempotent: a second call with an
# unchanged pyproject.toml returns at once). Python 3.11 and pip only; torch and torchvision come
# from the pins in pyproject.toml. Bytecode is compiled at install on purpose: every workflow job
# is a fresh process, and without .pyc files (PYTHONDONTWRITEBYTECODE is common) each one spends
# ~5 s recompiling MLflow and torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.modeconn-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    exit 0
fi
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
echo "$want" > "$stamp"
