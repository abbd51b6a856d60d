#!/usr/bin/env bash
# Trains the LSTM of bench/train_rnn with truncated BPTT, DNI and DNI+Aux at
# truncation T in {2, 3, 5, 8} on Copy, Repeat Copy and King James Bible
# character modelling (12 runs per task, the flags in configs/rnn_*.flags)
# and writes docs/results-rnn.md. Runs `--jobs` trainings at a time
# (default 2).
#
# Every run's RESULT line is kept in docs/results-rnn-runs.txt. With
# `--tasks`, only the named tasks run again; their lines replace the old
# ones, and the page is rebuilt from all lines.
#
# Usage: bench/rnn_results.sh [--build_dir DIR] [--jobs N]
#            [--tasks "copy repeat_copy char_lm"]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$root/build
jobs=2
tasks="char_lm repeat_copy copy"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build_dir) build_dir=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    *) echo "rnn_results.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
for task in $tasks; do
  if [[ ! -f $root/configs/rnn_$task.flags ]]; then
    echo "rnn_results.sh: unknown task '$task'; use copy, repeat_copy or char_lm" >&2
    exit 2
  fi
done
if [[ ! -x $build_dir/bench/train_rnn ]]; then
  echo "rnn_results.sh: $build_dir/bench/train_rnn not found; build the project first" >&2
  exit 1
fi

out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT
# A private copy, so a rebuild during the runs cannot change later runs.
trainer=$out_dir/train_rnn
cp "$build_dir/bench/train_rnn" "$trainer"
# One line per run: task, mode, truncation. The slowest task goes first so
# the job slots finish close together.
for task in $tasks; do
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

python3 - "$out_dir" "$root" "$elapsed" "$jobs" "$tasks" <<'PY'
import datetime, os, platform, sys

out_dir, root, elapsed, jobs, tasks = sys.argv[1:]
tasks = tasks.split()
runs_path = os.path.join(root, "docs", "results-rnn-runs.txt")
target = os.path.join(root, "docs", "results-rnn.md")

# Keep the lines of tasks that did not run this time, add the new ones.
kept = []
if os.path.exists(runs_path):
    for line in open(runs_path):
        fields = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
        if line.startswith("BATCH "):
            # Drop the record of an earlier run whose tasks all run again.
            if set(fields["tasks"].split(",")) <= set(tasks):
                continue
        elif fields.get("task") in tasks:
            continue
        kept.append(line.rstrip("\n"))
today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
kept.append(f"BATCH tasks={','.join(tasks)} minutes={int(elapsed) / 60:.1f} "
            f"jobs={jobs} finished={today.replace(' ', '_')}")
for name in sorted(os.listdir(out_dir)):
    if name.endswith(".result"):
        kept += [l.rstrip("\n") for l in open(os.path.join(out_dir, name))
                 if l.startswith("RESULT ")]
open(runs_path, "w").write("\n".join(kept) + "\n")

runs, batches = {}, []
for line in kept:
    fields = dict(p.split("=", 1) for p in line.split()[1:])
    if line.startswith("RESULT "):
        runs[(fields["task"], fields["mode"], int(fields["T"]))] = fields
    elif line.startswith("BATCH "):
        batches.append(fields)

def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()

def flag(task, name):
    for line in open(os.path.join(root, "configs", f"rnn_{task}.flags")):
        if line.startswith(f"--{name}="):
            return line.strip().split("=", 1)[1]

def budget(task):
    values = {run["budget_steps"] for key, run in runs.items() if key[0] == task}
    return " and ".join(sorted(values)) if values else "?"

modes = [("bptt", "BPTT"), ("dni", "DNI"), ("dni_aux", "DNI+Aux")]
truncations = [2, 3, 5, 8]
lines = [
    "# Recurrent DNI: truncated BPTT against DNI and DNI+Aux",
    "",
    "Written by `bench/rnn_results.sh` from the RESULT lines in "
    "`docs/results-rnn-runs.txt`; do not edit by hand.",
    "",
    f"- Command: `bench/rnn_results.sh --build_dir <build> --jobs {jobs}`, "
    "which runs `bench/train_rnn` in one thread per run.",
    f"- Machine: {cpu()}, {os.cpu_count()} cores, {jobs} runs at a time. "
    "Other work shared the machine, so run times are indicative.",
]
for i, b in enumerate(batches):
    later = {t for other in batches[i + 1:] for t in other["tasks"].split(",")}
    kept_tasks = [t for t in b["tasks"].split(",") if t not in later]
    lines.append(f"- A run of the script for {b['tasks'].replace(',', ', ')} "
                 f"took {b['minutes']} minutes of wall time and finished "
                 f"{b['finished'].replace('_', ' ')}. Results shown from it: "
                 f"{', '.join(kept_tasks) or 'none'}.")
lines += [
    "- Model: one LSTM layer with a linear readout, Adam, gradients clipped "
    "to global norm 1. DNI: a linear synthetic-gradient model on (h, c), "
    "zero-initialised, injected at every chunk boundary scaled by "
    f"{flag('copy', 'sg_scale')}. DNI+Aux adds a linear head on every h_t "
    "that predicts the synthetic gradient injected at the chunk's end.",
    "- The budget counts time steps per lane, the same for every T, so a "
    "larger T makes fewer, longer updates.",
    "- Flags per task: `configs/rnn_copy.flags`, "
    "`configs/rnn_repeat_copy.flags`, `configs/rnn_char_lm.flags`; one seed "
    "(1) per cell, so differences of one length step, or of a few "
    "thousandths of a bit per character, can be noise.",
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
                         fmt(run) + f" ({float(run['seconds']):.0f} s)")
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    return out + [""]

lines += table(
    "copy", "Copy", "solved_length", lambda r: r["solved_length"],
    f"Longest sequence length solved within {budget('copy')} time steps per "
    f"lane (batch {flag('copy', 'batch')}, {flag('copy', 'units')} LSTM "
    "units): the curriculum starts at length 1 and adds one when the mean "
    f"error of the last {flag('copy', 'window')} batches falls below "
    f"{flag('copy', 'threshold')} bits per sequence. Sequences: L random "
    "8-bit vectors, a delimiter, then L scored output steps. Training "
    "seconds in brackets.")
lines += table(
    "repeat_copy", "Repeat Copy", "solved_length",
    lambda r: r["solved_length"],
    f"Longest length L solved within {budget('repeat_copy')} time steps per "
    f"lane (batch {flag('repeat_copy', 'batch')}), with the same curriculum. "
    "Sequences: L random 8-bit vectors, a delimiter carrying the repeat count "
    f"R (uniform in 1..{flag('repeat_copy', 'max_repeats')}, one per batch), "
    "then R copies and an end marker, all scored.")
lines += table(
    "char_lm", "Character language model, King James Bible", "test_bpc",
    lambda r: f"{float(r['test_bpc']):.4f}",
    f"Test bits per character after {budget('char_lm')} characters per lane "
    f"({flag('char_lm', 'batch')} lanes), lower is better. Data: the "
    "`bible` program of Debian's bible-kjv, verses without numbers, split by "
    "chapter (of every 20 chapters, number 18 is validation and 19 test).")
lines += ["Validation bits per character of the same runs:", "",
          "| T | " + " | ".join(name for _, name in modes) + " |",
          "|---|" + "---|" * len(modes)]
for t in truncations:
    cells = [f"{float(runs[('char_lm', m, t)]['validation_bpc']):.4f}"
             if ('char_lm', m, t) in runs else "missing" for m, _ in modes]
    lines.append(f"| {t} | " + " | ".join(cells) + " |")
open(target, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
