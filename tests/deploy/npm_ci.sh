#!/usr/bin/env bash
# Installs the npm packages of tests/deploy/node (exact versions from its
# package-lock.json) into OUT_DIR/node_modules, outside the source tree.
# Usage: npm_ci.sh SOURCE_DIR OUT_DIR
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: npm_ci.sh SOURCE_DIR OUT_DIR" >&2
  exit 2
fi
source_dir=$1
out_dir=$2

if ! command -v npm >/dev/null; then
  echo "npm_ci.sh: npm not found; install Node.js 20 and npm (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi

mkdir -p "$out_dir"
cp "$source_dir/tests/deploy/node/package.json" "$source_dir/tests/deploy/node/package-lock.json" "$out_dir/"
# --ignore-scripts: none of the packages needs an install script here.
timeout 300 npm ci --prefix "$out_dir" --no-audit --no-fund --ignore-scripts
echo "PASSED: npm packages installed in $out_dir/node_modules"
