#!/usr/bin/env bash
# Builds Muster's container image from the repository's Dockerfile without Docker and without
# pulling a base image: buildah (vfs storage, chroot isolation, works as root) on a base made
# here from Debian packages (debootstrap: a minimal bookworm with Debian's python3, 3.11), then
# runs `muster --version`, `trivy --version` and, given a host root, a node agent in the image.
#
#   hack/build-image.sh                                # build localhost/muster:dev
#   hack/build-image.sh --node-agent-root DIR          # ... and run the node agent against DIR
#
# The debootstrapped base is cached outside the checkout, keyed by suite, mirror (or snapshot)
# and package list, like the Go tools: a cold run debootstraps (minutes), a warm one reuses it.
# Environment: MUSTER_IMAGE_CACHE (cache dir), DEBIAN_MIRROR, DEBIAN_SNAPSHOT (e.g.
# 20260101T000000Z: use snapshot.debian.org for a reproducible base), IMAGE (tag to build).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 2; }

agent_root=""
while (($#)); do
  case "$1" in
    --node-agent-root) agent_root="${2:?--node-agent-root needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ -z "$agent_root" || -d "$agent_root" ]] || die "--node-agent-root $agent_root is not a directory"

for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || die "$tool is missing: run hack/setup.sh"
done
[[ $(id -u) -eq 0 ]] || die "debootstrap and buildah's chroot isolation need root"

suite="bookworm"
if [[ -n "${DEBIAN_SNAPSHOT:-}" ]]; then
  mirror="https://snapshot.debian.org/archive/debian/${DEBIAN_SNAPSHOT}"
else
  mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi
# python3-venv: the Dockerfile makes a virtual environment; ca-certificates: registries over TLS.
packages="python3,python3-venv,ca-certificates"
recipe=2  # bump when the way the base is made changes
key="$(printf '%s|%s|%s|%s' "$suite" "$mirror" "$packages" "$recipe" | sha256sum | cut -c1-12)"
cache="${MUSTER_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/muster-image}"
base="localhost/muster-base:${suite}-${key}"
image="${IMAGE:-localhost/muster:dev}"
mkdir -p "$cache"
bah=(buildah --root "$cache/storage" --runroot "$cache/runroot" --storage-driver vfs)

containers=()
cleanup() {
  for ctr in "${containers[@]}"; do "${bah[@]}" rm "$ctr" >/dev/null 2>&1 || true; done
  [[ -z "${rootfs_tmp:-}" ]] || rm -rf "$rootfs_tmp"
}
trap cleanup EXIT

started=$SECONDS
# -- the base: a debootstrapped Debian with python3, cached as a tarball and a local image ----
tarball="$cache/base-${suite}-${key}.tar"
if "${bah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
  log "base $base is cached"
else
  if [[ ! -s "$tarball" ]]; then
    log "debootstrapping $suite from $mirror (cold: a few minutes)"
    rootfs_tmp="$(mktemp -d "$cache/rootfs.XXXXXX")"
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs_tmp" "$mirror" \
      >"$cache/debootstrap.log" 2>&1 || die "debootstrap failed; see $cache/debootstrap.log"
    # What a runtime image never needs: package caches, docs, man pages, locales.
    rm -rf "$rootfs_tmp"/var/cache/apt/* "$rootfs_tmp"/var/lib/apt/lists/* \
      "$rootfs_tmp"/usr/share/doc/* "$rootfs_tmp"/usr/share/man/* \
      "$rootfs_tmp"/usr/share/locale/* "$rootfs_tmp"/var/log/* "$rootfs_tmp"/debootstrap
    tar --numeric-owner --xattrs -C "$rootfs_tmp" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs_tmp"; rootfs_tmp=""
  fi
  log "importing the base as $base"
  ctr="$("${bah[@]}" from scratch)"; containers+=("$ctr")
  "${bah[@]}" add "$ctr" "$tarball" / >/dev/null
  "${bah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 --os linux --arch amd64 "$ctr"
  "${bah[@]}" commit --quiet --rm "$ctr" "$base" >/dev/null
  containers=()
fi
log "base ready after $((SECONDS - started))s"

# -- wheels: resolved on this machine (its pip configuration and CA store reach the index), so
# the build itself needs no network. Dependencies are cached by pyproject.toml; Muster's own
# wheel is built fresh each time.
python="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || python="python3"
# The scanner the image ships (trivy), as the Dockerfile's SCANNER_PACKAGES names it.
scanner="$(sed -n 's/^ARG SCANNER_PACKAGES=//p' "$root/Dockerfile")"
[[ -n "$scanner" ]] || die "the Dockerfile names no SCANNER_PACKAGES"
deps="$cache/wheels/deps-$( (cat "$root/pyproject.toml"; echo "$scanner") | sha256sum | cut -c1-12)"
if [[ ! -d "$deps" ]]; then
  log "collecting dependency wheels"
  rm -rf "$deps.partial"
  # shellcheck disable=SC2086  # SCANNER_PACKAGES is a list of requirements
  "$python" -m pip wheel --quiet --wheel-dir "$deps.partial" "$root" $scanner >/dev/null
  rm -f "$deps.partial"/muster-*.whl
  mv "$deps.partial" "$deps"
fi
self="$cache/wheels/self"
rm -rf "$self"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$self" "$root" >/dev/null

# -- the image: the repository's Dockerfile on that base ---------------------------------------
built=$SECONDS
"${bah[@]}" bud --isolation chroot --pull-never --layers=false --quiet \
  --volume "$deps:/wheels/deps:ro" --volume "$self:/wheels/self:ro" \
  --build-arg "PIP_INSTALL_ARGS=--no-index --find-links=/wheels/deps --find-links=/wheels/self muster" \
  --build-arg "BASE_IMAGE=$base" -t "$image" -f "$root/Dockerfile" "$root" >/dev/null
log "built $image in $((SECONDS - built))s"

# -- run it: the version, and the node agent against a host root ------------------------------
ctr="$("${bah[@]}" from "$image")"; containers+=("$ctr")
printf 'version: %s\n' "$("${bah[@]}" run --isolation chroot "$ctr" -- muster --version)"
printf 'trivy: %s\n' "$("${bah[@]}" run --isolation chroot "$ctr" -- trivy --version \
  | sed -n 's/^Version: //p')"
printf 'user: %s\n' "$("${bah[@]}" run --isolation chroot "$ctr" -- python3 -c \
  'import os; print(f"{os.getuid()}:{os.getgid()}")')"
if [[ -n "$agent_root" ]]; then
  printf 'node-agent: %s\n' "$("${bah[@]}" run --isolation chroot \
    --volume "$(cd "$agent_root" && pwd):/host:ro" "$ctr" -- \
    muster node-agent --once --host-root /host --format json \
    | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))')"
fi
# The size of what a node stores: the image's root filesystem, uncompressed.
size="$(du -sb "$("${bah[@]}" mount "$ctr")" | cut -f1)"
printf 'size: %s bytes\n' "$size"
# Earlier builds of the same tag are left dangling: drop them so the cache does not grow.
"${bah[@]}" rmi --prune >/dev/null 2>&1 || true
log "done in $((SECONDS - started))s"
