#!/usr/bin/env bash
# Builds the real third-party tools Muster is tested against (kube-apiserver, etcd,
# kubectl, cosign v2 and v3, helm, crane, Prometheus, policy-controller's tester, the
# referrers-capable test registry, the Notation test signer) from the Go module proxy, once per
# pinned version, into a cache outside the checkout.
# Prints nothing but progress; the tools end up in "$MUSTER_TOOLS_DIR/bin".
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
COSIGN_V2_VERSION="${COSIGN_V2_VERSION:-v2.6.5}"
COSIGN_V3_VERSION="${COSIGN_V3_VERSION:-v3.1.3}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CRANE_VERSION="${CRANE_VERSION:-v0.22.1}"
# sigstore policy-controller, for its `tester` command: the peer benchmarks/startup.py times
# `muster image verify` against on the same signature cases.
POLICY_CONTROLLER_VERSION="${POLICY_CONTROLLER_VERSION:-v0.13.1}"
# Prometheus' Go module version (v0.316.0 is Prometheus 3.16); Debian's build has no Kubernetes
# service discovery, which the observability end-to-end test finds Muster through.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${MUSTER_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/muster-tools}"
BIN="${MUSTER_TOOLS_DIR:-$CACHE}/bin"
mkdir -p "$CACHE" "$BIN"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[tools] %s\n' "$*" >&2; }

# Each tool is built into "$CACHE/<name>-<version>/" and linked into $BIN, so a
# version bump rebuilds exactly one tool and an unchanged pin costs nothing.
have() { [[ -x "$CACHE/$1/$2" ]]; }
link() { ln -sfn "$CACHE/$1/$2" "$BIN/$3"; }

# k8s.io/kubernetes and etcd's server module replace their sibling modules with
# relative paths, so `go install` refuses them. A wrapper module requires the root
# module and points every such sibling at its published version instead.
build_wrapped() {
  local key="$1" root_module="$2" root_version="$3" sibling_version="$4" ldflags="$5"; shift 5
  local dir="$CACHE/$key/src"
  rm -rf "$dir"; mkdir -p "$dir"
  (
    cd "$dir"
    go mod init "muster.local/${key%%-v*}-wrapper" >/dev/null 2>&1
    go mod download -json "$root_module@$root_version" >/dev/null
    local modfile
    modfile="$(go env GOMODCACHE)/cache/download/$root_module/@v/$root_version.mod"
    go mod edit -require="$root_module@$root_version"
    # "	name => ./relative/path" lines are the siblings to replace.
    grep -E '^\s*[a-z0-9./-]+ => \.\.?/' "$modfile" | awk '{print $1}' | while read -r sibling; do
      go mod edit -replace="$sibling=$sibling@$sibling_version"
    done
    {
      echo "//go:build tools"
      echo "package tools"
      for pkg in "$@"; do echo "import _ \"$pkg\""; done
    } > tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    for pkg in "$@"; do
      log "go build $pkg"
      go build -trimpath -ldflags="-s -w $ldflags" -o "$CACHE/$key/$(basename "$pkg")" "$pkg"
    done
  )
}

build_installed() {
  local key="$1" pkg="$2" version="$3" name="$4"
  log "go install $pkg@$version"
  GOBIN="$CACHE/$key" go install -trimpath -ldflags='-s -w' "$pkg@$version" 2>&1 | { grep -v '^go: downloading' || true; }
  [[ -x "$CACHE/$key/$(basename "$pkg")" ]] || { log "go install $pkg@$version failed"; exit 1; }
  [[ "$(basename "$pkg")" == "$name" ]] || mv "$CACHE/$key/$(basename "$pkg")" "$CACHE/$key/$name"
}

# A module whose go.mod replaces dependencies by other published versions (policy-controller
# pins a glog fork and older code generators) cannot be `go install`ed either: a wrapper module
# requires it and repeats those replacements, so the build uses the versions its release did.
build_replaced() {
  local key="$1" root_module="$2" root_version="$3" pkg="$4" name="$5"
  local dir="$CACHE/$key/src"
  rm -rf "$dir"; mkdir -p "$dir"
  (
    cd "$dir"
    go mod init "muster.local/${key%%-v*}-wrapper" >/dev/null 2>&1
    go mod download -json "$root_module@$root_version" >/dev/null
    local modfile
    modfile="$(go env GOMODCACHE)/cache/download/$root_module/@v/$root_version.mod"
    go mod edit -require="$root_module@$root_version"
    # "old [version] => new version", alone after `replace` or inside a replace ( ... ) block;
    # replacements by local paths are not published and cannot be repeated.
    awk '/=>/ && !/^[ \t]*\/\// {
      line = $0; sub(/^[ \t]*(replace[ \t]+)?/, "", line)
      n = split(line, f, /[ \t]+/)
      for (i = 1; i <= n && f[i] != "=>"; i++) {}
      old = (i == 3) ? f[1] "@" f[2] : f[1]
      if (f[i + 1] !~ /^[.\/]/ && f[i + 2] != "") print old "=" f[i + 1] "@" f[i + 2]
    }' "$modfile" | while read -r replacement; do
      go mod edit -replace="$replacement"
    done
    printf '//go:build tools\npackage tools\nimport _ "%s"\n' "$pkg" > tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    log "go build $pkg@$root_version"
    go build -trimpath -ldflags='-s -w' -o "$CACHE/$key/$name" "$pkg"
  )
}

# -r2: the binaries carry their real version (helm and kubectl compare against it).
k8s_key="kubernetes-$KUBERNETES_VERSION-r2"
k8s_minor="${KUBERNETES_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1"
  k8s_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
k8s_tools=(kube-apiserver kube-controller-manager kubectl)
missing=0
for tool in "${k8s_tools[@]}"; do have "$k8s_key" "$tool" || missing=1; done
if (( missing )); then
  log "building ${k8s_tools[*]} $KUBERNETES_VERSION (cold: many minutes)"
  build_wrapped "$k8s_key" k8s.io/kubernetes "$KUBERNETES_VERSION" "v0.${KUBERNETES_VERSION#v1.}" "$k8s_ldflags" \
    "${k8s_tools[@]/#/k8s.io/kubernetes/cmd/}"
fi
for tool in "${k8s_tools[@]}"; do link "$k8s_key" "$tool" "$tool"; done

etcd_key="etcd-$ETCD_VERSION"
if ! have "$etcd_key" etcd; then
  log "building etcd $ETCD_VERSION"
  build_wrapped "$etcd_key" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" "" go.etcd.io/etcd/server/v3
  mv "$CACHE/$etcd_key/v3" "$CACHE/$etcd_key/etcd"
fi
link "$etcd_key" etcd etcd

for spec in "cosign-$COSIGN_V2_VERSION github.com/sigstore/cosign/v2/cmd/cosign $COSIGN_V2_VERSION cosign cosign2" \
            "cosign-$COSIGN_V3_VERSION github.com/sigstore/cosign/v3/cmd/cosign $COSIGN_V3_VERSION cosign cosign" \
            "helm-$HELM_VERSION helm.sh/helm/v3/cmd/helm $HELM_VERSION helm helm" \
            "crane-$CRANE_VERSION github.com/google/go-containerregistry/cmd/crane $CRANE_VERSION crane crane"; do
  read -r key pkg version name alias <<<"$spec"
  have "$key" "$name" || build_installed "$key" "$pkg" "$version" "$name"
  link "$key" "$name" "$alias"
done

pc_key="policy-controller-$POLICY_CONTROLLER_VERSION"
if ! have "$pc_key" policy-tester; then
  log "building policy-controller's tester $POLICY_CONTROLLER_VERSION"
  build_replaced "$pc_key" github.com/sigstore/policy-controller "$POLICY_CONTROLLER_VERSION" \
    github.com/sigstore/policy-controller/cmd/tester policy-tester
fi
link "$pc_key" policy-tester policy-tester

# The test registry is our own few lines of Go: keyed by a hash of its source.
reg_src="$HERE/../tools/testregistry"
if [[ -d "$reg_src" ]]; then
  reg_key="testregistry-$(cat "$reg_src"/go.mod "$reg_src"/*.go | sha256sum | cut -c1-12)"
  if ! have "$reg_key" testregistry; then
    log "building the referrers-capable test registry"
    (cd "$reg_src" && go build -trimpath -o "$CACHE/$reg_key/testregistry" .)
  fi
  link "$reg_key" testregistry testregistry
fi

# The tiny trivy database writer for tests: keyed by a hash of its source too.
tdb_src="$HERE/../tools/trivydb"
if [[ -d "$tdb_src" ]]; then
  tdb_key="trivydb-$(cat "$tdb_src"/go.mod "$tdb_src"/*.go | sha256sum | cut -c1-12)"
  if ! have "$tdb_key" trivydb; then
    log "building the trivy database writer"
    (cd "$tdb_src" && go build -trimpath -o "$CACHE/$tdb_key/trivydb" .)
  fi
  link "$tdb_key" trivydb trivydb
fi

# The Notation signer for tests (the Notary Project's own Go libraries): keyed by its source.
ns_src="$HERE/../tools/notationsign"
if [[ -d "$ns_src" ]]; then
  ns_key="notationsign-$(cat "$ns_src"/go.mod "$ns_src"/go.sum "$ns_src"/*.go | sha256sum | cut -c1-12)"
  if ! have "$ns_key" notationsign; then
    log "building the Notation test signer"
    (cd "$ns_src" && go build -trimpath -o "$CACHE/$ns_key/notationsign" .)
  fi
  link "$ns_key" notationsign notationsign
fi

# Prometheus with only the Kubernetes service discovery compiled in (its build tags), and no
# embedded web UI: the tests use its HTTP API.
prom_key="prometheus-$PROMETHEUS_VERSION-k8s"
if ! have "$prom_key" prometheus; then
  log "go install github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
  GOBIN="$CACHE/$prom_key" go install -trimpath -ldflags='-s -w' -tags=remove_all_sd,enable_kubernetes_sd \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" 2>&1 | { grep -v '^go: downloading' || true; }
  [[ -x "$CACHE/$prom_key/prometheus" ]] || { log "building prometheus failed"; exit 1; }
fi
link "$prom_key" prometheus prometheus

log "tools ready in $BIN"
