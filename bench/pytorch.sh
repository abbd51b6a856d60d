#!/usr/bin/env bash
# Compares the in-process trainer (bench/train_in_process, backprop) with
# the PyTorch peer (bench/pytorch_peer.py, one thread, same shapes, Adam,
# batch 256) on the wide MLP and the 784-256x3-10 MLP, alternating them for
# --repeats rounds, and writes the "PyTorch peer" section of
# docs/benchmarks.md. Run it after bench/throughput.sh, which rewrites the
# whole page. Installs python3-torch and libopenblas0-openmp when missing.
#
# Usage: bench/pytorch.sh [--build_dir DIR] [--repeats N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$root/build
repeats=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build_dir) build_dir=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    *) echo "pytorch.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
for package in python3-torch libopenblas0-openmp; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    sudo=(); [[ $(id -u) -ne 0 ]] && sudo=(sudo)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "$package"
  fi
done

out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT
# The in-process trainer reads every example of the spec: 10240 for the
# wide spec and all 60000 for the MLP spec. The peer uses the same counts.
for ((round = 1; round <= repeats; round++)); do
  echo "== round $round of $repeats"
  "$build_dir/bench/train_in_process" --spec "$root/configs/fashion_mnist_wide.textproto" \
    --mode backprop --epochs 2 >"$out_dir/ours_wide-$round.txt"
  /usr/bin/python3 "$root/bench/pytorch_peer.py" wide 10240 >"$out_dir/torch_wide-$round.txt"
  "$build_dir/bench/train_in_process" --spec "$root/configs/fashion_mnist_dni.textproto" \
    --mode backprop --epochs 2 >"$out_dir/ours_mlp-$round.txt"
  /usr/bin/python3 "$root/bench/pytorch_peer.py" mlp 60000 >"$out_dir/torch_mlp-$round.txt"
done

blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)
python3 - "$out_dir" "$root/docs/benchmarks.md" "$repeats" "$blas" "$root/bench" <<'PY'
import glob, re, statistics, sys

out_dir, target, repeats, blas, bench_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]

def second_epoch(path):
    return float(re.findall(r"epoch 2: .*?([0-9.]+) samples/s", open(path).read())[-1])

torch_version = re.search(r"torch (\S+),", open(glob.glob(f"{out_dir}/torch_wide-*.txt")[0]).read()).group(1)
lines = ["", "## PyTorch peer", "",
         f"Written by `bench/pytorch.sh --repeats {repeats}`: the in-process trainer "
         "(backprop, one thread) against `bench/pytorch_peer.py` (PyTorch "
         f"{torch_version} from Debian, `torch.set_num_threads(1)`, BLAS `{blas}`), "
         "same layers (Linear, LayerNorm, ReLU), Adam, batch 256; second-epoch "
         "training examples per second, median over alternating rounds.", "",
         "| model | synthgrad in-process | PyTorch, 1 thread | ratio |", "|---|---|---|---|"]
for model, name in (("wide", "784-1024x6-10"), ("mlp", "784-256x3-10")):
    ours = statistics.median(second_epoch(p) for p in glob.glob(f"{out_dir}/ours_{model}-*.txt"))
    theirs = statistics.median(second_epoch(p) for p in glob.glob(f"{out_dir}/torch_{model}-*.txt"))
    lines.append(f"| {name} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x |")
sys.path.insert(0, bench_dir)
from replace_section import replace_section
replace_section(target, "## PyTorch peer", "\n".join(lines[1:]) + "\n")
print("\n".join(lines))
PY
