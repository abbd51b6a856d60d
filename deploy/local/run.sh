#!/usr/bin/env bash
# Runs the main job on this machine: three synthgrad_layer services and a
# synthgrad_coordinator on free loopback ports, then `synthgradctl train` on
# a job spec (default: the three-group DNI MLP on Fashion-MNIST). Every
# process it starts is stopped on exit, on failure and on Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
usage() {
  cat <<USAGE
Usage: deploy/local/run.sh [--spec FILE] [--build_dir DIR] [--skip_setup] [-- SYNTHGRADCTL_FLAGS...]

  --spec FILE      job spec (Protobuf text format); default configs/fashion_mnist_dni.textproto
  --build_dir DIR  build folder; default ./build
  --skip_setup     do not install packages or build; use the binaries in --build_dir
  --               pass the remaining flags to 'synthgradctl train' (for example --mode=cdni --epochs=3)

Service logs go to BUILD_DIR/run-logs/.
USAGE
}

spec=$root/configs/fashion_mnist_dni.textproto
build_dir=$root/build
skip_setup=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --spec) spec=$2; shift 2 ;;
    --build_dir) build_dir=$2; shift 2 ;;
    --skip_setup) skip_setup=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if [[ ! -f $spec ]]; then
  echo "run.sh: spec file $spec not found" >&2
  exit 2
fi

if [[ $skip_setup -eq 0 ]]; then
  "$root/deploy/local/install-deps.sh"
  "$root/deploy/local/build.sh" "$build_dir"
fi

layer=$build_dir/services/layer/synthgrad_layer
coordinator=$build_dir/services/coordinator/synthgrad_coordinator
ctl=$build_dir/services/ctl/synthgradctl
for binary in "$layer" "$coordinator" "$ctl"; do
  if [[ ! -x $binary ]]; then
    echo "run.sh: $binary is missing; build first or drop --skip_setup" >&2
    exit 2
  fi
done

logs=$build_dir/run-logs
mkdir -p "$logs"
run_dir=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$run_dir"
  if [[ $status -ne 0 ]]; then
    echo "run.sh: failed with status $status; service logs are in $logs" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits for a server to write its port file and prints the port.
wait_for_port() {
  local file=$1 pid=$2 name=$3
  for _ in $(seq 1 100); do
    if [[ -s $file ]]; then
      cat "$file"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: $name exited at start-up; see $logs/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "run.sh: $name did not start within 10 s; see $logs/$name.log" >&2
  return 1
}

group_count=$(grep -c '^groups {' "$spec")
addresses=()
for ((i = 0; i < group_count; i++)); do
  "$layer" --port 0 --port_file "$run_dir/group-$i.port" >"$logs/group-$i.log" 2>&1 &
  pids+=($!)
  port=$(wait_for_port "$run_dir/group-$i.port" "$!" "group-$i")
  addresses+=("127.0.0.1:$port")
done
"$coordinator" --port 0 --port_file "$run_dir/coordinator.port" >"$logs/coordinator.log" 2>&1 &
pids+=($!)
coordinator_port=$(wait_for_port "$run_dir/coordinator.port" "$!" coordinator)

echo "groups: ${addresses[*]}; coordinator: 127.0.0.1:$coordinator_port"
"$ctl" train --spec "$spec" --coordinator "127.0.0.1:$coordinator_port" \
  --group_addresses "$(IFS=,; echo "${addresses[*]}")" "${extra[@]}"
"$ctl" status --coordinator "127.0.0.1:$coordinator_port"
