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
# The KServe Python SDK, in its own environment: tests/deploy/test_kserve.py loads the KServe
# manifests into its models.
bash benchmarks/peers/setup.sh kserve
# An MLflow tracking server, in its own environment: tests/integration/test_mlflow_registry.py.
bash scripts/install_mlflow.sh
bash scripts/install_debian_tools.sh || echo "[install_dev] Prometheus or docker-compose not installed: their tests will skip"
