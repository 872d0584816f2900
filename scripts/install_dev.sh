#!/usr/bin/env bash
# Install tensorgate with its test and dev extras into .venv, and perf_analyzer into .tools/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
bash scripts/install_perf_analyzer.sh
bash scripts/install_kubectl.sh
