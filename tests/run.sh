#!/usr/bin/env bash
# Installs missing packages, builds synthgrad (Release) and runs the whole test
# suite with CTest. Exits non-zero when any step or test fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${SYNTHGRAD_BUILD_DIR:-$root/build}

"$root/deploy/local/install-deps.sh"
"$root/deploy/local/build.sh" "$build_dir"
cd "$build_dir"
ctest --output-on-failure --timeout 900 -j 2
