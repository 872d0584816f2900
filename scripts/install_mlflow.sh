#!/usr/bin/env bash
# Install an MLflow tracking server into .tools/mlflow, its own environment (its dependencies do
# not belong in tensorgate's), for tests/integration/test_mlflow_registry.py, which starts it.
# Idempotent: an install whose stamp matches the pinned version and that starts is kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION="3.17.2"  # the same as the mlflow-skinny client in tensorgate's test environment
VENV=.tools/mlflow
PYTHON="${PYTHON:-python3}"
log() { printf '[install_mlflow] %s\n' "$*"; }

if [[ -f "${VENV}/installed.stamp" && "$(cat "${VENV}/installed.stamp")" == "mlflow==${VERSION}" ]] &&
  "${VENV}/bin/mlflow" --version >/dev/null 2>&1; then
  log "already installed: mlflow ${VERSION}"
  exit 0
fi
log "installing mlflow ${VERSION} into ${VENV}"
rm -rf "${VENV}"
mkdir -p .tools
"${PYTHON}" -m venv "${VENV}"
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --progress-bar off "mlflow==${VERSION}"
"${VENV}/bin/mlflow" --version
echo "mlflow==${VERSION}" >"${VENV}/installed.stamp"
