#!/usr/bin/env bash
# Install the peer servers that benchmarks/compare.py runs next to tensorgate, each into its own
# virtual environment under .tools/peers/<name>, never into tensorgate's .venv.
#
#   bash benchmarks/peers/setup.sh [mlserver] [kserve] [pytriton] [plot]   (default: all four)
#
# Idempotent: a peer whose stamp file matches its pinned requirements and whose import check
# passes is left alone (PEERS_FORCE=1 reinstalls). A peer that fails to install is reported and
# the others still install; the exit status is non-zero when any failed. The error text of each
# failure is kept in .tools/peers/<name>/install.log.
set -uo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/../.." && pwd)"
PEERS_DIR="${REPO_ROOT}/.tools/peers"
PYTHON="${PYTHON:-python3}"
# The same onnxruntime as tensorgate's (CPU build), so every server runs the same kernels.
ORT="onnxruntime==1.31.1"

# name -> pinned requirements (space-separated) and the import that proves the install works.
declare -A REQUIREMENTS=(
  # MLServer 1.7.1 fails to start with uvloop 0.22+.
  [mlserver]="mlserver==1.7.1 uvloop<0.22 ${ORT}"
  [kserve]="kserve==0.21.0 ${ORT}"
  [pytriton]="nvidia-pytriton==0.7.0 ${ORT}"
  [plot]="matplotlib==3.11.2"
)
declare -A CHECKS=(
  [mlserver]="import mlserver, mlserver.grpc.server, onnxruntime"
  [kserve]="import kserve, kserve.protocol.grpc.server, onnxruntime"
  [pytriton]="import pytriton.triton, onnxruntime"
  [plot]="import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot"
)

log() { printf '[peers/setup] %s\n' "$*"; }

install_one() {
  local name="$1"
  local venv="${PEERS_DIR}/${name}"
  local stamp="${venv}/installed.stamp"
  local want="${REQUIREMENTS[${name}]} python=$("${PYTHON}" -c 'import sys; print(sys.version.split()[0])')"
  if [[ "${PEERS_FORCE:-0}" != "1" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]] &&
    "${venv}/bin/python" -c "${CHECKS[${name}]}" >/dev/null 2>&1; then
    log "${name}: already installed (${REQUIREMENTS[${name}]})"
    return 0
  fi
  log "${name}: creating ${venv#"${REPO_ROOT}/"} and installing ${REQUIREMENTS[${name}]}"
  rm -rf "${venv}"
  mkdir -p "${PEERS_DIR}"
  local started=${SECONDS}
  local logfile="${PEERS_DIR}/${name}.install.log"
  # shellcheck disable=SC2086  # the requirement list is split on purpose
  if ! { "${PYTHON}" -m venv "${venv}" &&
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      --upgrade pip &&
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      --progress-bar off ${REQUIREMENTS[${name}]}; } >"${logfile}" 2>&1; then
    log "${name}: install FAILED; the last lines of ${logfile#"${REPO_ROOT}/"}:"
    tail -n 20 "${logfile}" >&2
    return 1
  fi
  if ! "${venv}/bin/python" -c "${CHECKS[${name}]}" >>"${logfile}" 2>&1; then
    log "${name}: installed but the import check failed; the last lines of ${logfile#"${REPO_ROOT}/"}:"
    tail -n 20 "${logfile}" >&2
    return 1
  fi
  mv "${logfile}" "${venv}/install.log"
  echo "${want}" >"${stamp}"
  log "${name}: installed in $((SECONDS - started))s"
}

names=("$@")
((${#names[@]})) || names=(mlserver kserve pytriton plot)
mkdir -p "${PEERS_DIR}"
# Serialise concurrent runs on one checkout.
exec 9>"${PEERS_DIR}/.lock"
command -v flock >/dev/null 2>&1 && flock 9

failed=()
for name in "${names[@]}"; do
  if [[ -z "${REQUIREMENTS[${name}]+x}" ]]; then
    log "unknown peer ${name} (known: ${!REQUIREMENTS[*]})"
    failed+=("${name}")
    continue
  fi
  install_one "${name}" || failed+=("${name}")
done
if ((${#failed[@]})); then
  log "failed: ${failed[*]}"
  exit 1
fi
log "all installed: ${names[*]}"
