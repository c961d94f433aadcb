#!/usr/bin/env bash
# One-time set-up of a fresh machine: system packages (Debian), the Python environment with
# Muster and its dev tools, and the real Go-built peers (cached outside the checkout by version).
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

# Real peers from Debian: the OCI registry (distribution 2.8), Prometheus and promtool, skopeo;
# buildah and debootstrap build the container image offline (hack/build-image.sh).
apt_packages=(docker-registry prometheus skopeo buildah debootstrap)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
  log "installing Debian packages: ${missing[*]}"
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages start system services we do not use: tests start their own.
  for service in docker-registry prometheus; do
    $sudo_ systemctl disable --now "$service" >/dev/null 2>&1 || true
    $sudo_ service "$service" stop >/dev/null 2>&1 || true
  done
fi

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "installing muster and its dev tools into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

bash hack/install-tools.sh
