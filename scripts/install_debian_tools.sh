#!/usr/bin/env bash
# Install the Debian packages the deploy tests check our files with: `prometheus` (prometheus and
# promtool: deploy/prometheus/, tests/integration/test_prometheus.py) and `docker-compose`
# (its `config` checks deploy/compose/ without a Docker daemon).
#
# Idempotent: a no-op when every tool is already on PATH. Never leaves a daemon running: a
# policy-rc.d that refuses every start is in place while apt installs, so the prometheus
# package's init script does not start the service on port 9090.
set -euo pipefail

log() { printf '[install_debian_tools] %s\n' "$*"; }

declare -A PACKAGE_OF=([promtool]=prometheus [prometheus]=prometheus [docker-compose]=docker-compose)
missing=()
for tool in "${!PACKAGE_OF[@]}"; do
  command -v "${tool}" >/dev/null || missing+=("${PACKAGE_OF[${tool}]}")
done
if ((${#missing[@]} == 0)); then
  log "already installed: $(promtool --version 2>&1 | head -n 1); $(docker-compose version --short 2>&1)"
  exit 0
fi
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
command -v apt-get >/dev/null || {
  log "ERROR: no apt-get here; install ${packages[*]} by hand" >&2
  exit 1
}
SUDO=()
if [[ "$(id -u)" != 0 ]]; then SUDO=(sudo); fi

policy=/usr/sbin/policy-rc.d
placed_policy=0
if [[ ! -e "${policy}" ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "${policy}" >/dev/null
  "${SUDO[@]}" chmod 755 "${policy}"
  placed_policy=1
fi
cleanup() { if ((placed_policy)); then "${SUDO[@]}" rm -f "${policy}"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
for package in "${packages[@]}"; do
  if ! apt-cache show "${package}" >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get update -qq
    break
  fi
done
log "installing Debian's ${packages[*]}"
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
log "installed: $(promtool --version 2>&1 | head -n 1); $(docker-compose version --short 2>&1)"
