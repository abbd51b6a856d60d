#!/usr/bin/env bash
# Trains the default DNI spec through the services with an exact-gradient
# probe every 20 training batches, and writes docs/synthetic-gradient-quality.md:
# per epoch and per group, the cosine between the synthetic gradient and its
# bootstrapped target, and between the synthetic gradient and the exact
# backpropagated gradient.
#
# Usage: bench/sg_quality.sh [--skip_setup] [--build_dir DIR] [--epochs N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run_args=()
epochs=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    --skip_setup) run_args+=(--skip_setup); shift ;;
    --build_dir) run_args+=(--build_dir "$2"); shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    *) echo "sg_quality.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT
"$root/deploy/local/run.sh" "${run_args[@]}" --spec "$root/configs/fashion_mnist_dni.textproto" -- \
  --mode=dni --epochs="$epochs" --exact_gradient_probe_interval=20 \
  --summary_out="$out_dir/dni.json"

python3 - "$out_dir/dni.json" "$root/docs/synthetic-gradient-quality.md" "$epochs" <<'PY'
import json, os, sys

summary, target, epochs = sys.argv[1:]
run = json.load(open(summary))

def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"

lines = [
    "# Synthetic-gradient quality during DNI training",
    "",
    "Written by `bench/sg_quality.sh`; do not edit by hand.",
    "",
    f"- Run: `configs/fashion_mnist_dni.textproto` in DNI mode for {epochs} epochs "
    "through three `synthgrad_layer` services on loopback, with an "
    "exact-gradient probe every 20 training batches "
    "(`--exact_gradient_probe_interval=20`).",
    f"- Machine: {cpu()}, {os.cpu_count()} cores.",
    "- target cosine: cosine between M(h) and the gradient that arrived from the "
    "next group (true for group 1, bootstrapped through M1 for group 0); moving "
    "average over recent batches.",
    "- exact cosine and relative error: M(h) against the exact backpropagated "
    "gradient at the epoch's last probe; relative error is ||M(h) - g|| / ||g||.",
    "",
    "| epoch | test accuracy | group | target cosine | exact cosine | exact relative error | staleness (steps, mean) |",
    "|---|---|---|---|---|---|---|",
]
for epoch in run["epochsDone"]:
    for group in epoch["groups"][:-1]:
        lines.append(
            f"| {epoch['epoch']} | {100 * epoch['testAccuracy']:.2f} % | "
            f"{group.get('groupIndex', 0)} | {group['syntheticGradientCosine']:.3f} | "
            f"{group['probeCosine']:.3f} | {group['probeRelativeError']:.3f} | "
            f"{group['stalenessStepsMean']:.2f} |")
open(target, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
