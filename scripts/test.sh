#!/usr/bin/env bash
# Install everything the tests need, then run every suite. Extra arguments go to pytest.
# Each suite runs in its own pytest process (tritonclient's protobuf stubs and tensorgate's
# register the same symbols and cannot share one process). Every suite runs even when an
# earlier one fails; the failures are listed at the end and the exit status is non-zero.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install_dev.sh || exit 1

failed=()
run_suite() {
  local name="$1"
  shift
  echo "=== ${name} ==="
  if ! .venv/bin/python -m pytest "$@"; then
    failed+=("${name}")
  fi
}

run_suite "unit and in-process" tests/unit tests/inprocess "$@"
run_suite "integration" tests/integration "$@"
run_suite "deploy" tests/deploy "$@"
run_suite "bench" tests/bench "$@"
# GPU tests skip (with their reason) on a machine without an NVIDIA GPU.
run_suite "gpu" tests/gpu "$@"

if ((${#failed[@]})); then
  printf '\nFAILED suites: %s\n' "${failed[*]}"
  exit 1
fi
printf '\nevery suite passed\n'
