#!/usr/bin/env bash
# Renders the kustomize base and every overlay under deploy/k8s/overlays with
# `kubectl kustomize` into OUT_DIR/NAME.yaml, and fails on the first error.
# Usage: render_overlays.sh SOURCE_DIR OUT_DIR
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: render_overlays.sh SOURCE_DIR OUT_DIR" >&2
  exit 2
fi
k8s_dir=$1/deploy/k8s
out_dir=$2

if ! command -v kubectl >/dev/null; then
  echo "render_overlays.sh: kubectl not found; install kubectl 1.27 or later (Debian 12's kubernetes-client is too old)" >&2
  exit 1
fi
# kubectl 1.27 and later embed kustomize v5, which these files are written
# for (tested with kubectl 1.32.4, kustomize v5.5.0). Debian 12's
# kubernetes-client is kubectl 1.20 with kustomize v2.0.3, which rejects the
# `labels` and targeted `patches` fields.
version=$(kubectl version --client 2>/dev/null || true)
echo "$version" | sed 's/^/# /'
kustomize_major=$(sed -n 's/^Kustomize Version: v\([0-9]*\)\..*/\1/p' <<<"$version")
if [[ -z $kustomize_major || $kustomize_major -lt 5 ]]; then
  echo "render_overlays.sh: $(command -v kubectl) embeds no kustomize v5 or later; install kubectl 1.27 or later" >&2
  exit 1
fi

rm -rf "$out_dir"
mkdir -p "$out_dir"
overlays=("$k8s_dir"/overlays/*/)
if [[ ! -d ${overlays[0]} ]]; then
  echo "render_overlays.sh: no overlay folders under $k8s_dir/overlays" >&2
  exit 1
fi
for dir in "$k8s_dir/base/" "${overlays[@]}"; do
  name=$(basename "$dir")
  if ! timeout 60 kubectl kustomize "$dir" >"$out_dir/$name.yaml"; then
    echo "FAILED: kubectl kustomize $dir" >&2
    exit 1
  fi
  echo "ok $name: $(grep -c '^kind:' "$out_dir/$name.yaml") objects in $out_dir/$name.yaml"
done
echo "PASSED"
