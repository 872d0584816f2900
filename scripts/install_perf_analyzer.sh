#!/usr/bin/env bash
# Install Triton's perf_analyzer load generator for tensorgate's benchmarks and
# integration tests, reproducibly and idempotently.
#
# What it installs:
#   * Debian packages for the binary's shared libraries (libb64-0d; libssl3 and
#     zlib1g are checked too but are normally present already).
#   * A private virtualenv at <repo>/.tools/perf-analyzer/venv holding
#       - tritonclient==2.51.0, whose wheel ships the perf_analyzer binary.
#         Newer wheels need a newer glibc than Debian 12's 2.36; 2.51.0 needs
#         GLIBC_2.34 at most. Installed with --no-deps: only the binary is
#         used, and the Python client's pins (numpy<2, protobuf<5) must never
#         meet the project's own .venv.
#       - nvidia-cuda-runtime-cu12, for libcudart.so.12, which the binary links
#         against even when no GPU is used (none is needed).
#   * <repo>/.tools/perf-analyzer/paths.env, which scripts/perf_analyzer reads
#     to find the binary and its library directories.
#
# Re-running is a fast no-op when the same pinned versions are installed and
# the wrapper runs. Set PERF_ANALYZER_FORCE=1 to reinstall anyway, and PYTHON
# to pick the interpreter used to create the virtualenv (default: python3).
# Needs root (or the Debian packages already installed) for the apt step.
set -euo pipefail

TRITONCLIENT_VERSION="2.51.0"
CUDA_RUNTIME_VERSION="12.9.79"
APT_PACKAGES=(libb64-0d libssl3 zlib1g)

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/.." && pwd)"
TOOLS_DIR="${REPO_ROOT}/.tools/perf-analyzer"
VENV_DIR="${TOOLS_DIR}/venv"
PATHS_ENV="${TOOLS_DIR}/paths.env"
STAMP="${TOOLS_DIR}/installed.stamp"
WRAPPER="${SCRIPT_DIR}/perf_analyzer"
PYTHON="${PYTHON:-python3}"
STAMP_CONTENT="tritonclient==${TRITONCLIENT_VERSION} nvidia-cuda-runtime-cu12==${CUDA_RUNTIME_VERSION} layout=1"

log() { printf '[install_perf_analyzer] %s\n' "$*"; }
die() {
  printf '[install_perf_analyzer] ERROR: %s\n' "$*" >&2
  exit 1
}

start_s=${SECONDS}
mkdir -p "${TOOLS_DIR}"

# Serialise concurrent runs (e.g. two test sessions starting at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TOOLS_DIR}.lock"
  flock 9
fi

wrapper_works() {
  "${WRAPPER}" --version >/dev/null 2>&1
}

if [[ "${PERF_ANALYZER_FORCE:-0}" != "1" && -f "${STAMP}" ]] &&
  [[ "$(cat "${STAMP}")" == "${STAMP_CONTENT}" ]] && wrapper_works; then
  log "already installed and working: $("${WRAPPER}" --version 2>&1 | head -n 1)"
  exit 0
fi

# --- 1. Debian packages ------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("${pkg}")
  fi
done
if ((${#missing[@]} > 0)); then
  log "installing Debian packages: ${missing[*]}"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} by hand"
  if [[ "$(id -u)" != "0" ]]; then
    die "root is needed to install ${missing[*]} (run: sudo apt-get install -y ${missing[*]})"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o Acquire::Retries=3 update -qq
  apt-get -o Acquire::Retries=3 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages already present: ${APT_PACKAGES[*]}"
fi

# --- 2. Private virtualenv with the wheels -----------------------------------
log "creating virtualenv ${VENV_DIR#"${REPO_ROOT}/"} with ${PYTHON} ($("${PYTHON}" --version 2>&1))"
rm -rf "${VENV_DIR}" "${STAMP}" "${PATHS_ENV}"
"${PYTHON}" -m venv "${VENV_DIR}"
PIP=("${VENV_DIR}/bin/python" -m pip --disable-pip-version-check --no-input)

log "installing tritonclient==${TRITONCLIENT_VERSION} (binary only, --no-deps) and nvidia-cuda-runtime-cu12==${CUDA_RUNTIME_VERSION}"
pip_filter() { grep -v "is ignored: it is neither a file nor a directory" || true; }
if ! pip_out="$("${PIP[@]}" install --quiet --progress-bar off --no-deps \
  "tritonclient==${TRITONCLIENT_VERSION}" \
  "nvidia-cuda-runtime-cu12==${CUDA_RUNTIME_VERSION}" 2>&1)"; then
  printf '%s\n' "${pip_out}" | pip_filter >&2
  die "pip install failed (output above)"
fi
[[ -z "${pip_out}" ]] || printf '%s\n' "${pip_out}" | pip_filter

# --- 3. Locate the binary and the CUDA runtime -------------------------------
# The wheel puts it in <venv>/bin (tritonclient-*.data/data/bin); fall back to a
# search in case a later wheel moves it inside the package.
bin_path="${VENV_DIR}/bin/perf_analyzer"
if [[ ! -x "${bin_path}" ]]; then
  bin_path="$(find "${VENV_DIR}" -type f -name perf_analyzer -perm -u+x -print -quit)"
fi
[[ -n "${bin_path}" && -x "${bin_path}" ]] || die "perf_analyzer binary not found in ${VENV_DIR}"
file_desc="$(head -c 4 "${bin_path}" | od -An -c | tr -d ' ')"
[[ "${file_desc}" == '177ELF' ]] || die "${bin_path} is not an ELF binary (placeholder package?)"
log "binary: ${bin_path#"${REPO_ROOT}/"}"

cudart="$(find "${VENV_DIR}" -name 'libcudart.so.12*' -print -quit)"
[[ -n "${cudart}" ]] || die "libcudart.so.12 not found in ${VENV_DIR}"
cudart_dir="$(dirname -- "${cudart}")"
log "libcudart: ${cudart#"${REPO_ROOT}/"}"

# Paths relative to TOOLS_DIR, so a moved or re-cloned checkout still works.
{
  echo "# Written by scripts/install_perf_analyzer.sh; paths relative to this file's folder."
  echo "PA_BIN=${bin_path#"${TOOLS_DIR}/"}"
  echo "PA_LIB_DIRS=${cudart_dir#"${TOOLS_DIR}/"}"
} >"${PATHS_ENV}"

# --- 4. Check shared libraries and run it ------------------------------------
not_found="$(LD_LIBRARY_PATH="${cudart_dir}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}" \
  ldd "${bin_path}" 2>&1 | grep 'not found' || true)"
if [[ -n "${not_found}" ]]; then
  die "perf_analyzer is missing shared libraries:
${not_found}"
fi

version_out="$("${WRAPPER}" --version 2>&1)" || die "scripts/perf_analyzer --version failed:
${version_out}"
echo "${STAMP_CONTENT}" >"${STAMP}"
log "installed: ${version_out%%$'\n'*} (took $((SECONDS - start_s))s)"
log "run it with: scripts/perf_analyzer -m MODEL -u HOST:PORT -i grpc ..."
