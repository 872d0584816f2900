#!/usr/bin/env bash
# Install everything the tests need, then run them. Extra arguments go to pytest.
# Unit and integration tests run in separate pytest processes: tritonclient's protobuf stubs and
# tensorgate's register the same symbols and cannot share one process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install_dev.sh
.venv/bin/python -m pytest tests/unit tests/inprocess "$@"
.venv/bin/python -m pytest tests/integration "$@"
.venv/bin/python -m pytest tests/deploy "$@"
.venv/bin/python -m pytest tests/bench "$@"
# GPU tests skip (with their reason) on a machine without an NVIDIA GPU.
.venv/bin/python -m pytest tests/gpu "$@"
