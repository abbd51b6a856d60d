#!/usr/bin/env bash
# Trains the default MLP (configs/fashion_mnist_dni.textproto) through the
# services in locked backprop, DNI and cDNI mode, with the same optimizer,
# seed and epochs, and writes the per-epoch test accuracy to docs/results.md.
#
# Usage: bench/accuracy.sh [--skip_setup] [--build_dir DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run_args=()
build_dir=$root/build
while [[ $# -gt 0 ]]; do
  case "$1" in
    --skip_setup) run_args+=(--skip_setup); shift ;;
    --build_dir) build_dir=$2; run_args+=(--build_dir "$2"); shift 2 ;;
    *) echo "accuracy.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

spec=$root/configs/fashion_mnist_dni.textproto
out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT
for mode in backprop dni cdni; do
  echo "== $mode"
  "$root/deploy/local/run.sh" "${run_args[@]}" --spec "$spec" -- \
    --mode="$mode" --summary_out="$out_dir/$mode.json"
  run_args=(--skip_setup --build_dir "$build_dir")
done

python3 - "$out_dir" "$root/docs/results.md" "$spec" <<'PY'
import json, os, platform, subprocess, sys

out_dir, target, spec = sys.argv[1:]
modes = ["backprop", "dni", "cdni"]
runs = {m: json.load(open(os.path.join(out_dir, m + ".json"))) for m in modes}

def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()

final = {m: 100 * runs[m]["epochsDone"][-1]["testAccuracy"] for m in modes}
lines = [
    "# Accuracy: locked backprop, DNI and cDNI through the services",
    "",
    "Written by `bench/accuracy.sh`; do not edit by hand.",
    "",
    f"- Spec: `configs/fashion_mnist_dni.textproto` (MLP 784-256-256-256-10, "
    "three layer groups, batch 256), with `--mode` set per run.",
    "- Every run: three `synthgrad_layer` services and one "
    "`synthgrad_coordinator` on loopback, started by `deploy/local/run.sh`.",
    f"- Machine: {cpu()}, {os.cpu_count()} cores.",
    "",
    "## Final test accuracy",
    "",
    "| mode | test accuracy | gap to backprop | train loss |",
    "|---|---|---|---|",
]
for m in modes:
    last = runs[m]["epochsDone"][-1]
    gap = final[m] - final["backprop"]
    lines.append(f"| {m} | {final[m]:.2f} % | {gap:+.2f} points | "
                 f"{last['trainLoss']:.4f} |")
lines += ["", "Wall times are not reported because other work shared the "
          "machine during the run.",
          "", "## Test accuracy per epoch (%)", "",
          "| epoch | " + " | ".join(modes) + " |",
          "|---|" + "---|" * len(modes)]
for i in range(len(runs["backprop"]["epochsDone"])):
    row = [f"{100 * runs[m]['epochsDone'][i]['testAccuracy']:.2f}" for m in modes]
    lines.append(f"| {i + 1} | " + " | ".join(row) + " |")
open(target, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
