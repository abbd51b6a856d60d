#!/usr/bin/env bash
# Measures training throughput of the wide MLP
# (configs/fashion_mnist_wide.textproto, 784-1024x6-10 in two groups) in
# five variants, alternating them for --repeats rounds: the in-process
# trainer in backprop mode (no network), and locked backprop and DNI
# through the services, each with no added latency and with 2 ms added to
# every message between groups (run.sh --link_latency_ms 2). Throughput is the second epoch's
# training examples per second (the first warms up); the services figure is
# epoch time including a 256-example evaluation. Writes docs/benchmarks.md
# with medians and ratios from this one run.
#
# Usage: bench/throughput.sh [--build_dir DIR] [--repeats N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$root/build
repeats=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build_dir) build_dir=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    *) echo "throughput.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

spec=$root/configs/fashion_mnist_wide.textproto
out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT

for ((round = 1; round <= repeats; round++)); do
  echo "== round $round of $repeats"
  "$build_dir/bench/train_in_process" --spec "$spec" --mode backprop \
    | tee "$out_dir/in_process-$round.txt"
  for latency in 0 2; do
    for mode in backprop dni; do
      "$root/deploy/local/run.sh" --skip_setup --build_dir "$build_dir" --spec "$spec" \
        --link_latency_ms "$latency" -- \
        --mode="$mode" --summary_out="$out_dir/services_${mode}_${latency}ms-$round.json" >/dev/null
    done
  done
done

python3 - "$out_dir" "$root/docs/benchmarks.md" "$repeats" "$build_dir" <<'PY'
import glob, json, os, re, statistics, subprocess, sys

out_dir, target, repeats, build_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
train_examples = 10240

def in_process(path):
    rates = re.findall(r"epoch 2: .* ([0-9.]+) samples/s", open(path).read())
    return float(rates[-1])

def services(path):
    run = json.load(open(path))
    return train_examples / run["epochsDone"][1]["seconds"]

samples = {
    "in-process backprop": [in_process(p) for p in sorted(glob.glob(f"{out_dir}/in_process-*.txt"))],
    "services, locked backprop": [services(p) for p in sorted(glob.glob(f"{out_dir}/services_backprop_0ms-*.json"))],
    "services, DNI": [services(p) for p in sorted(glob.glob(f"{out_dir}/services_dni_0ms-*.json"))],
    "services, locked backprop, +2 ms per hop": [services(p) for p in sorted(glob.glob(f"{out_dir}/services_backprop_2ms-*.json"))],
    "services, DNI, +2 ms per hop": [services(p) for p in sorted(glob.glob(f"{out_dir}/services_dni_2ms-*.json"))],
}
median = {k: statistics.median(v) for k, v in samples.items()}

def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"

compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
march = "unknown"
cache = os.path.join(build_dir, "CMakeCache.txt")
if os.path.exists(cache):
    for line in open(cache):
        if line.startswith("SYNTHGRAD_MARCH:"):
            march = line.split("=", 1)[1].strip() or "(compiler default)"

lines = [
    "# Benchmarks",
    "",
    "Written by `bench/throughput.sh`; do not edit by hand.",
    "",
    f"- Machine: {cpu()}, {os.cpu_count()} cores.",
    f"- Compiler: {compiler}; CMake Release with `-march={march}`.",
    f"- Command: `bench/throughput.sh --repeats {repeats}`.",
    "- Model: `configs/fashion_mnist_wide.textproto`, MLP 784-1024x6-10 "
    "(Linear, LayerNorm, ReLU per hidden layer) in two groups of three hidden "
    "layers, batch 256, Adam, 10240 training examples, 2 epochs.",
    "- Throughput: training examples per second in the second epoch. The "
    "variants alternate in each round; the table gives the median over rounds.",
    "- Services: two `synthgrad_layer` processes and a `synthgrad_coordinator` "
    "on loopback, started by `deploy/local/run.sh`. Their epoch time includes "
    "evaluating 256 test examples.",
    "",
    "| variant | samples/s (median) | all rounds | ratio to locked backprop |",
    "|---|---|---|---|",
]
locked = median["services, locked backprop"]
for name, values in samples.items():
    rounds = ", ".join(f"{v:.0f}" for v in values)
    lines.append(f"| {name} | {median[name]:.0f} | {rounds} | {median[name] / locked:.2f}x |")
lines += [
    "",
    f"- DNI through services against locked backprop through services: "
    f"{median['services, DNI'] / locked:.2f}x.",
    f"- Locked backprop through services against the in-process trainer: "
    f"{locked / median['in-process backprop']:.2f}x.",
    f"- With 2 ms added to every message between groups, DNI keeps "
    f"{median['services, DNI, +2 ms per hop'] / median['services, DNI']:.2f}x of "
    f"its throughput and locked backprop "
    f"{median['services, locked backprop, +2 ms per hop'] / locked:.2f}x of its own.",
    "",
    "Not measured yet: the transport's share of time per group. "
    "`bench/memory.sh` and `bench/pytorch.sh` add the sections below.",
    "",
    "## Micro-benchmarks",
    "",
    "`build/bench/micro_benchmarks` (Google Benchmark) times a Linear + LayerNorm "
    "+ ReLU block, the linear synthetic-gradient model, tensor conversion and "
    "one Forward RPC on loopback. Run it on an idle machine; its output is not "
    "recorded here.",
]
open(target, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
