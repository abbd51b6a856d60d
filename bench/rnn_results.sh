#!/usr/bin/env bash
# Trains the LSTM of bench/train_rnn with truncated BPTT, DNI and DNI+Aux at
# truncation T in {2, 3, 5, 8} on Copy, Repeat Copy and King James Bible
# character modelling (36 runs, the flags in configs/rnn_*.flags) and writes
# docs/results-rnn.md. Runs `--jobs` trainings at a time (default 2).
#
# Usage: bench/rnn_results.sh [--build_dir DIR] [--jobs N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$root/build
jobs=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build_dir) build_dir=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    *) echo "rnn_results.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
trainer=$build_dir/bench/train_rnn
if [[ ! -x $trainer ]]; then
  echo "rnn_results.sh: $trainer not found; build the project first" >&2
  exit 1
fi

out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT
# One line per run: flag file, mode, truncation. The slowest task goes
# first so the two job slots finish close together.
for task in char_lm repeat_copy copy; do
  for truncation in 2 3 5 8; do
    for mode in bptt dni dni_aux; do
      echo "$task $mode $truncation"
    done
  done
done >"$out_dir/runs"

start=$(date +%s)
export trainer root out_dir
xargs -P "$jobs" -L 1 bash -c '
  log=$out_dir/$0-$1-$2.log
  if ! "$trainer" --flagfile="$root/configs/rnn_$0.flags" --mode="$1" \
      --truncation="$2" >"$out_dir/$0-$1-$2.result" 2>"$log"; then
    echo "train_rnn failed for task $0, mode $1, T=$2:" >&2
    tail -n 5 "$log" >&2
    exit 255
  fi
  cat "$out_dir/$0-$1-$2.result"
' <"$out_dir/runs"
elapsed=$(( $(date +%s) - start ))

cat "$out_dir"/*.result >"$out_dir/all"
python3 - "$out_dir/all" "$root/docs/results-rnn.md" "$root" "$elapsed" "$jobs" <<'PY'
import os, platform, sys

results_path, target, root, elapsed, jobs = sys.argv[1:]
runs = {}
for line in open(results_path):
    if not line.startswith("RESULT "):
        continue
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    runs[(fields["task"], fields["mode"], int(fields["T"]))] = fields

def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()

def flags(task):
    path = os.path.join(root, "configs", f"rnn_{task}.flags")
    return [l.strip() for l in open(path) if l.startswith("--")]

def flag(task, name):
    for line in flags(task):
        if line.startswith(f"--{name}="):
            return line.split("=", 1)[1]

def budget(task):
    return int(flag(task, "budget_steps"))

modes = [("bptt", "BPTT"), ("dni", "DNI"), ("dni_aux", "DNI+Aux")]
truncations = [2, 3, 5, 8]
lines = [
    "# Recurrent DNI: truncated BPTT against DNI and DNI+Aux",
    "",
    "Written by `bench/rnn_results.sh`; do not edit by hand.",
    "",
    f"- Command: `bench/rnn_results.sh --build_dir <build> --jobs {jobs}`, "
    "which runs `bench/train_rnn` in one thread per run.",
    f"- Machine: {cpu()}, {os.cpu_count()} cores, {jobs} runs at a time. "
    "Other work shared the machine, so run times are indicative.",
    f"- Wall time of the whole script: {int(elapsed) / 60:.1f} minutes.",
    "- Model: one LSTM layer with a linear readout, Adam, gradients clipped "
    f"to global norm 1. DNI: a linear synthetic-gradient model on (h, c), "
    "zero-initialised, injected at every chunk boundary scaled by "
    f"{flag('copy', 'sg_scale')}. DNI+Aux adds a linear head on every h_t "
    "that predicts the synthetic gradient injected at the chunk's end.",
    "- Flags per task: `configs/rnn_copy.flags`, "
    "`configs/rnn_repeat_copy.flags`, `configs/rnn_char_lm.flags`; one seed "
    "(1) per cell, so differences of one length step can be noise.",
    "",
]

def table(task, title, metric, fmt, note):
    out = [f"## {title}", "", note, "",
           "| T | " + " | ".join(name for _, name in modes) + " |",
           "|---|" + "---|" * len(modes)]
    for t in truncations:
        cells = []
        for mode, _ in modes:
            run = runs.get((task, mode, t))
            cells.append("missing" if run is None else
                         fmt(run[metric]) + f" ({float(run['seconds']):.0f} s)")
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    return out + [""]

lines += table(
    "copy", "Copy", "solved_length", lambda v: v,
    f"Longest sequence length solved within {budget('copy')} time steps per "
    f"lane (batch {flag('copy', 'batch')}, {flag('copy', 'units')} LSTM "
    "units): the curriculum starts at length 1 and adds one when "
    "the mean error of the last 20 batches falls below 0.15 bits per "
    "sequence. Sequences: L random 8-bit vectors, a delimiter, then L "
    "scored output steps. Training seconds in brackets.")
lines += table(
    "repeat_copy", "Repeat Copy", "solved_length", lambda v: v,
    f"Longest length L solved within {budget('repeat_copy')} time steps per "
    f"lane (batch {flag('repeat_copy', 'batch')}), with the same curriculum. "
    "Sequences: L random 8-bit vectors, a delimiter carrying the repeat count "
    f"R (uniform in 1..{flag('repeat_copy', 'max_repeats')}, one per batch), "
    "then R copies and an end marker, all scored.")
lines += table(
    "char_lm", "Character language model, King James Bible", "test_bpc",
    lambda v: f"{float(v):.3f}",
    f"Test bits per character after {budget('char_lm')} characters per lane "
    f"({flag('char_lm', 'batch')} lanes). Data: the "
    "`bible` program of Debian's bible-kjv, verses without numbers, split by "
    "chapter (of every 20 chapters, number 18 is validation and 19 test). "
    "Lower is better.")
open(target, "w").write("\n".join(lines))
print("\n".join(lines))
PY
