#!/usr/bin/env bash
# Trains the default DNI job (configs/fashion_mnist_dni.textproto) through
# deploy/local/run.sh twice without interruption and once with a SIGKILL of
# group 1's process part-way through. In the killed run, run.sh starts the
# group again and the coordinator recovers from its latest checkpoint. All
# runs use the spec's seed. Writes final test accuracies and the recovery
# counters to docs/crash-recovery.md.
#
# Usage: bench/crash_recovery.sh [--skip_setup] [--build_dir DIR]
#                                [--kill_after_seconds N] [--epochs N]
#   --kill_after_seconds N  seconds after training starts at which group 1
#                           is killed (default 90, about 40 % of 60 epochs
#                           on a 2-core machine)
#   --epochs N              epochs of every run (default: the spec's 60)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$root/build
skip_setup=0
kill_after=90
epochs=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --skip_setup) skip_setup=1; shift ;;
    --build_dir) build_dir=$(realpath "$2"); shift 2 ;;
    --kill_after_seconds) kill_after=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "crash_recovery.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

if [[ $skip_setup -eq 0 ]]; then
  "$root/deploy/local/install-deps.sh"
  "$root/deploy/local/build.sh" "$build_dir"
fi

spec=$root/configs/fashion_mnist_dni.textproto
out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT
ctl_flags=()
if [[ $epochs -gt 0 ]]; then ctl_flags+=(--epochs="$epochs"); fi

# Runs one job into $out_dir/$1.json with its own checkpoint folder.
run_job() {
  local name=$1
  "$root/deploy/local/run.sh" --skip_setup --build_dir "$build_dir" --spec "$spec" \
    --checkpoint_dir "$out_dir/checkpoints-$name" -- \
    --summary_out="$out_dir/$name.json" "${ctl_flags[@]}" >"$out_dir/$name.log" 2>&1
}

for name in uninterrupted-1 uninterrupted-2; do
  echo "== $name"
  start=$(date +%s)
  run_job "$name"
  echo $(($(date +%s) - start)) >"$out_dir/$name.seconds"
done

echo "== killed: SIGKILL of group 1 after $kill_after s"
start=$(date +%s)
run_job killed &
job_pid=$!
sleep "$kill_after"
victim=$(pgrep -f -- "--checkpoint_dir $out_dir/checkpoints-killed/group-1" | head -n 1 || true)
if [[ -z $victim ]]; then
  echo "crash_recovery.sh: group 1 is not running after $kill_after s; the job ended" \
    "early or did not start (see $out_dir/killed.log)" >&2
  wait "$job_pid" || true
  exit 1
fi
kill -KILL "$victim"
echo "killed group 1 (pid $victim)"
wait "$job_pid"
echo $(($(date +%s) - start)) >"$out_dir/killed.seconds"

python3 - "$out_dir" "$root/docs/crash-recovery.md" "$kill_after" "${ctl_flags[*]:-}" <<'PY'
import json, os, platform, sys

out_dir, target, kill_after, ctl_flags = sys.argv[1:]
names = ["uninterrupted-1", "uninterrupted-2", "killed"]
runs = {n: json.load(open(os.path.join(out_dir, n + ".json"))) for n in names}
seconds = {n: int(open(os.path.join(out_dir, n + ".seconds")).read()) for n in names}

def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()

def final_accuracy(run):
    return 100.0 * run["epochsDone"][-1]["testAccuracy"]

killed = runs["killed"]
accuracies = [final_accuracy(runs[n]) for n in names]
reference = sum(accuracies[:2]) / 2
lines = [
    "# Crash recovery: a group killed in the middle of training",
    "",
    "Written by `bench/crash_recovery.sh`"
    + (f" with `{ctl_flags}`" if ctl_flags else "")
    + f" on {os.cpu_count()} cores ({cpu()}).",
    "Each run trains `configs/fashion_mnist_dni.textproto` (DNI, the spec's seed, "
    f"{len(killed['epochsDone'])} epochs) through "
    "`deploy/local/run.sh` with a checkpoint every 5 shards of 20 batches and at each "
    "epoch start. In the killed run, group 1's process gets SIGKILL "
    f"{kill_after} s after the run starts. run.sh starts it again on the same port, "
    "and the coordinator restores every group from the latest checkpoint and feeds "
    "the batches after it again.",
    "",
    "| Run | Final test accuracy | Recoveries | Training batches fed | Fed again | Samples counted | Wall time |",
    "|---|---|---|---|---|---|---|",
]
for name in names:
    run = runs[name]
    lines.append(
        f"| {name} | {final_accuracy(run):.2f} % | {run.get('recoveries', 0)} | "
        f"{run.get('batchesFed', 0)} | {run.get('batchesRefed', 0)} | "
        f"{run['samplesDone']} of {run['samplesTotal']} | {seconds[name]} s |")
lines += [
    "",
    f"The killed run ends {final_accuracy(killed) - reference:+.2f} points from the mean of "
    f"the two uninterrupted runs ({reference:.2f} %). The two uninterrupted runs differ by "
    f"{abs(accuracies[0] - accuracies[1]):.2f} points, because DNI groups run "
    "asynchronously and the order in which gradients arrive varies between runs "
    "with the same seed.",
    "",
    "A finished job satisfies batches fed = batches per epoch x epochs + batches fed "
    "again, and every epoch counts each training example once; "
    "`tests/crash_recovery_test.py` checks both after a SIGKILL in the test suite.",
    "",
]
open(target, "w").write("\n".join(lines))
print("wrote", target)
PY
