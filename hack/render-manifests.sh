#!/usr/bin/env bash
# Renders manifests/muster.yaml from charts/muster: the chart is the one source of truth and
# the plain manifests are generated, never edited by hand. The output is deterministic: it uses
# manifests/values.yaml (cert-manager issues the webhook certificate, so no generated key
# material), a fixed release name, namespace and Kubernetes version, and no hooks (`kubectl
# apply` would run a pre-delete Job at once; the helm test pod is not for plain installs).
#
#   hack/render-manifests.sh            # rewrite manifests/muster.yaml
#   hack/render-manifests.sh -          # print to stdout (CI compares it with the file)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_bin="${MUSTER_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/muster-tools}/bin"
helm="${HELM:-}"
if [[ -z "$helm" ]]; then
  if [[ -x "$tools_bin/helm" ]]; then helm="$tools_bin/helm"; else helm="helm"; fi
fi
out="${1:-$root/manifests/muster.yaml}"
namespace="muster-system"
kube_version="1.36.0"

render() {
  cat <<HEADER
# Muster: plain manifests rendered from charts/muster by hack/render-manifests.sh.
# Do not edit: change the chart (or manifests/values.yaml) and re-run the script.
# Needs cert-manager. Install: kubectl apply --server-side -f manifests/muster.yaml
---
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    app.kubernetes.io/part-of: muster
    pod-security.kubernetes.io/enforce: restricted
HEADER
  cd "$root"
  "$helm" template muster charts/muster \
    --namespace "$namespace" \
    --kube-version "$kube_version" \
    --values manifests/values.yaml \
    --include-crds \
    --no-hooks
}

if [[ "$out" == "-" ]]; then
  render
else
  render > "$out.tmp"
  mv "$out.tmp" "$out"
fi
