#!/usr/bin/env bash
# Trains the wide MLP (configs/fashion_mnist_wide.textproto) in DNI mode for
# 5 epochs through the services and writes each process's peak resident
# memory (VmHWM), next to an upper estimate from the spec, to
# docs/benchmarks.md, replacing that section if it is there. Run it after
# bench/throughput.sh, which rewrites the whole page.
#
# Usage: bench/memory.sh [--build_dir DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$root/build
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build_dir) build_dir=$2; shift 2 ;;
    *) echo "memory.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

spec=$root/configs/fashion_mnist_wide.textproto
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$root/deploy/local/run.sh" --skip_setup --build_dir "$build_dir" --spec "$spec" -- \
  --mode=dni --epochs=5 | tee "$log"

python3 - "$spec" "$log" "$root/docs/benchmarks.md" "$root/bench" <<'PY'
import re, sys

spec_path, log_path, target, bench_dir = sys.argv[1:]
spec = open(spec_path).read()
batch = int(re.search(r"^batch_size: (\d+)", spec, re.M).group(1))
window = int(re.search(r"^max_in_flight: (\d+)", spec, re.M).group(1))
cache = int(re.search(r"^cache_capacity: (\d+)", spec, re.M).group(1)) if "cache_capacity" in spec else 64
width = int(re.search(r"^input_dim: (\d+)", spec, re.M).group(1))
groups = re.findall(r"^groups \{(.*?)^\}", spec, re.M | re.S)
peaks = dict(re.findall(r"peak memory: (\S+) (\d+) kB", open(log_path).read()))

lines = ["", "## Peak memory per group", "",
         "Written by `bench/memory.sh`: the wide MLP in DNI mode for 5 epochs through "
         "the services; peak resident set (VmHWM) of each process. The estimate "
         "adds, in float32: parameters, their gradients and Adam's two moments "
         "(4 copies), the same for the linear synthetic-gradient model, a full "
         "activation cache (cache_capacity batches of the group's output), the "
         "bounded event queue (2 x cache_capacity + 8 batches of the group's "
         "input) and one batch's forward trace, plus 64 MiB for the binary, gRPC "
         "and the allocator. It is an estimate, not a guarantee.", "",
         "| process | peak RSS (MiB) | estimate (MiB) | of which activation cache (MiB) |",
         "|---|---|---|---|"]
mib = 1 << 20
for index, body in enumerate(groups):
    params, trace, w = 0, 0, width
    for kind, units in re.findall(r"kind: (KIND_\w+)(?: units: (\d+))?", body):
        trace += batch * w
        if kind == "KIND_LINEAR":
            params += (w + 1) * int(units)
            w = int(units)
        elif kind == "KIND_LAYER_NORM":
            params += 2 * w
    trace += batch * w
    last = index == len(groups) - 1
    sg = 0 if last else (w + 1) * w
    cache_floats = 0 if last else cache * batch * w
    queue_floats = (2 * cache + 8) * batch * width
    estimate = 4 * (4 * params + 4 * sg + cache_floats + queue_floats + 2 * trace) + 64 * mib
    peak = int(peaks.get(f"group-{index}", 0)) * 1024
    lines.append(f"| group-{index} | {peak / mib:.0f} | {estimate / mib:.0f} | {4 * cache_floats / mib:.0f} |")
    width = w
lines.append(f"| coordinator | {int(peaks.get('coordinator', 0)) / 1024:.0f} | | |")
sys.path.insert(0, bench_dir)
from replace_section import replace_section
replace_section(target, "## Peak memory per group", "\n".join(lines[1:]) + "\n")
print("\n".join(lines))
PY
