#!/usr/bin/env bash
# The GPU checks in one run, for a fresh GPU machine: record the machine, make a Python
# environment with onnxruntime-gpu and the CUDA/cuDNN/TensorRT libraries from pip, run
# tests/gpu (and the IO binding unit tests), run benchmarks/gpu/bench_gpu.py in-process and
# through the server, and write everything under $OUT. Every step has a time limit and the whole
# run stays under DEADLINE_S (default 540 s); a step that fails is recorded and the rest go on.
#
#   scripts/device_check.sh               # on the GPU machine
#   scripts/device_check.sh --cpu-only    # dry run here: the project's .venv, no installs, short
#   scripts/device_check.sh --no-install  # the GPU venv (or the system Python) as it is
#
# Environment: OUT (default /tmp/tensorgate-device-check), DEADLINE_S, PYTHON (default python3),
# GPU_VENV (default ~/.cache/tensorgate-gpu-venv; reused when it already works),
# ORT_GPU_VERSION (default: 1.31.1, the version the project's lock uses, built for CUDA 13, when
# the driver supports CUDA 13 and Python >= 3.11; else 1.26.0, the last CUDA 12 build on PyPI;
# 1.23.2 on Python 3.10).
# Exit status: 0 when the tests ran and passed (skips count as passes), 1 otherwise.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO_ROOT="$PWD"

CPU_ONLY=0
INSTALL=1
for arg in "$@"; do
  case "$arg" in
    --cpu-only) CPU_ONLY=1 ;;
    --no-install) INSTALL=0 ;;
    -h | --help)
      sed -n '2,19p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

OUT="${OUT:-/tmp/tensorgate-device-check}"
DEADLINE_S="${DEADLINE_S:-540}"
mkdir -p "$OUT"
STARTED=$SECONDS
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

log() { printf '[device_check +%ss] %s\n' "$((SECONDS - STARTED))" "$*" | tee -a "$SUMMARY"; }
left() { echo $((DEADLINE_S - (SECONDS - STARTED))); }

# step NAME LIMIT_S COMMAND...: run with a time limit (never past the deadline, keeping 20 s for
# the summary), output to $OUT/NAME.log, status recorded in the summary.
step() {
  local name=$1 limit=$2
  shift 2
  local budget=$(($(left) - 20))
  ((budget < limit)) && limit=$budget
  if ((limit < 10)); then
    log "$name: SKIPPED (out of time)"
    return 124
  fi
  log "$name: start (limit ${limit}s)"
  local begun=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  log "$name: exit $rc after $((SECONDS - begun))s$( ((rc == 124)) && echo ' (timed out)')"
  return "$rc"
}

# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------
{
  date -u
  uname -a
  nproc
  free -g 2>/dev/null
  df -h "$REPO_ROOT" /tmp 2>/dev/null
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
    nvidia-smi -L
  else
    echo "nvidia-smi: not found"
  fi
  git -C "$REPO_ROOT" log -1 --oneline 2>/dev/null
} >"$OUT/machine.txt" 2>&1
GPUS=0
DRIVER_CUDA=""
if command -v nvidia-smi >/dev/null; then
  GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
  DRIVER_CUDA=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\)\..*/\1/p' | head -n1)
fi
log "GPUs: ${GPUS:-0}; driver CUDA version: ${DRIVER_CUDA:-none}; cpu-only: $CPU_ONLY"

# ---------------------------------------------------------------------------------------------
# Python environment
# ---------------------------------------------------------------------------------------------
CUDA_PROBE='
import onnxruntime as ort, sys
options = ort.SessionOptions()
options.log_severity_level = 3
s = ort.InferenceSession("server/example_models/image_classifier/1/model.onnx", options,
                         providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
print("onnxruntime", ort.__version__, ort.get_available_providers(), "active:", s.get_providers())
sys.exit(0 if s.get_providers()[0] == "CUDAExecutionProvider" else 1)
'

# The CUDA, cuDNN and TensorRT libraries pip installs are not on the loader's path: put them there
# (onnxruntime's provider libraries have no RPATH to them). The server subprocess inherits it.
library_path() {
  "$PY" - <<'EOF'
import site, sys
from pathlib import Path
roots = [Path(p) for p in site.getsitepackages() + [site.getusersitepackages()]]
dirs = set()
for root in roots:
    for base in (root / "nvidia", root / "tensorrt_libs"):
        if base.is_dir():
            dirs.update(str(so.parent) for so in base.rglob("*.so*"))
print(":".join(sorted(dirs)))
EOF
}

if ((CPU_ONLY)); then
  PY="$REPO_ROOT/.venv/bin/python"
  [[ -x "$PY" ]] || {
    log "no .venv: create it with scripts/install_dev.sh first"
    exit 1
  }
else
  PYTHON="${PYTHON:-python3}"
  GPU_VENV="${GPU_VENV:-$HOME/.cache/tensorgate-gpu-venv}"
  PY="$GPU_VENV/bin/python"
  PIP_USER=()
  if [[ ! -x "$PY" ]]; then
    # System site packages: a machine image that already has CUDA Python packages is used as is.
    step venv 60 "$PYTHON" -m venv --system-site-packages "$GPU_VENV"
  fi
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    log "no working venv at $GPU_VENV (python3-venv missing?): installing for the user"
    PY=$(command -v "$PYTHON")
    PIP_USER=(--user --break-system-packages)
  fi
  PY_MINOR=$("$PY" -c 'import sys; print(sys.version_info[1])' 2>/dev/null || echo 0)
  if [[ -z "${ORT_GPU_VERSION:-}" ]]; then
    if ((${DRIVER_CUDA:-0} >= 13 && PY_MINOR >= 11)); then
      ORT_GPU_VERSION=1.31.1
    elif ((PY_MINOR >= 11)); then
      ORT_GPU_VERSION=1.26.0
    else
      ORT_GPU_VERSION=1.23.2
    fi
  fi
  case "$ORT_GPU_VERSION" in
    1.2[7-9]* | 1.3*) CU=13 ;;
    *) CU=12 ;;
  esac
  log "python 3.$PY_MINOR, onnxruntime-gpu $ORT_GPU_VERSION (CUDA $CU)"
  PIP=("$PY" -m pip --disable-pip-version-check --retries 2 --timeout 30)
  if ((!INSTALL)); then
    log "--no-install: using what $PY already has"
  elif step pip_reachable 60 "${PIP[@]}" index versions onnxruntime-gpu; then
    # One resolve: the project, test tools, onnxruntime-gpu with its CUDA and cuDNN wheels.
    step pip_install 300 "${PIP[@]}" install "${PIP_USER[@]}" -e "$REPO_ROOT" pytest \
      'tritonclient[grpc]' \
      "onnxruntime-gpu[cuda,cudnn]==$ORT_GPU_VERSION" ||
      log "pip install failed: see $OUT/pip_install.log"
    step pip_tensorrt 200 "${PIP[@]}" install "${PIP_USER[@]}" "tensorrt-cu$CU-libs>=10,<11" ||
      log "TensorRT libraries not installed: TensorRT checks will skip"
  else
    log "pip cannot reach a package index: using what $PY already has"
  fi
  LIBS=$(library_path 2>/dev/null || true)
  export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$OUT/machine.txt"
fi
"$PY" -m pip list 2>/dev/null >"$OUT/pip_list.txt"
if step providers 60 "$PY" -c "$CUDA_PROBE"; then
  log "CUDA provider active: $(tail -n1 "$OUT/providers.log")"
else
  log "CUDA provider NOT active: $(tail -n1 "$OUT/providers.log")"
fi

# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
TESTS_OK=0
if step tests_gpu 240 "$PY" -m pytest tests/gpu -v -rs -p no:cacheprovider \
  --junitxml="$OUT/tests_gpu.xml"; then
  TESTS_OK=1
fi
grep -E '^(SKIPPED|FAILED|ERROR)|passed|failed|skipped' "$OUT/tests_gpu.log" | tail -n 15 |
  tee -a "$SUMMARY"
step tests_io_binding_unit 60 "$PY" -m pytest tests/unit/test_onnx_runtime.py -q \
  -p no:cacheprovider || TESTS_OK=0

# ---------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------
if ! scripts/perf_analyzer --version >/dev/null 2>&1; then
  if ((CPU_ONLY)); then
    log "perf_analyzer not installed: served figures will say so"
  else
    step perf_analyzer_install 150 env PYTHON="$PY" bash scripts/install_perf_analyzer.sh ||
      log "perf_analyzer not installed: served figures will say so"
  fi
fi
if ((CPU_ONLY)); then
  BENCH_ARGS=(--duration 0.3 --measurement-ms 300 --batches "1,8")
else
  BENCH_ARGS=(--duration 1.5 --measurement-ms 1000)
fi
step bench_gpu 300 "$PY" -m benchmarks.gpu.bench_gpu --server --out "$OUT/bench" "${BENCH_ARGS[@]}"
cat "$OUT"/bench/gpu-*.md >>"$SUMMARY" 2>/dev/null || log "no benchmark table written"

log "done in $((SECONDS - STARTED))s; tests $( ((TESTS_OK)) && echo passed || echo FAILED); files:"
(cd "$OUT" && find . -type f | sort) | tee -a "$SUMMARY"
((TESTS_OK))
