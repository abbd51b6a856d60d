#!/usr/bin/env bash
# Runs the main job on this machine: three synthgrad_layer services and a
# synthgrad_coordinator on free loopback ports, then `synthgradctl train` on
# a job spec (default: the three-group DNI MLP on Fashion-MNIST). A group
# that exits on its own is started again on the same port, and the
# coordinator restores the job from its latest checkpoint. Every process it
# starts is stopped on exit, on failure and on Ctrl-C, the coordinator first
# so that it writes a final checkpoint.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
usage() {
  cat <<USAGE
Usage: deploy/local/run.sh [--spec FILE] [--build_dir DIR] [--skip_setup] [--prometheus]
                           [--link_latency_ms N] [--checkpoint_dir DIR] [--resume]
                           [-- SYNTHGRADCTL_FLAGS...]

  --spec FILE      job spec (Protobuf text format); default configs/fashion_mnist_dni.textproto
  --build_dir DIR  build folder; default build/ at the top of this repository
  --skip_setup     do not install packages or build; use the binaries in --build_dir
  --link_latency_ms N
                   milliseconds each group adds to every message it sends to a
                   neighbouring group, to emulate a slower link (default 0)
  --checkpoint_dir DIR
                   folder for the checkpoints of every process; default
                   BUILD_DIR/checkpoints. The spec's checkpoint_interval_shards
                   sets how often they are written.
  --resume         continue the job with this spec from its latest checkpoint in
                   --checkpoint_dir (after run.sh was stopped or the machine restarted)
  --prometheus     also start Debian's prometheus on a free loopback port, scraping
                   every process with deploy/prometheus/rules.yml; its URL is printed
                   and it keeps running until you press Enter after training
  --               pass the remaining flags to 'synthgradctl train' (for example --mode=cdni --epochs=3)

Service logs go to BUILD_DIR/run-logs/.
USAGE
}

spec=$root/configs/fashion_mnist_dni.textproto
build_dir=$root/build
skip_setup=0
with_prometheus=0
link_latency_ms=0
checkpoint_dir=
resume=()
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --spec) spec=${2:?--spec needs a file}; shift 2 ;;
    --spec=*) spec=${1#--spec=}; shift ;;
    --build_dir) build_dir=${2:?--build_dir needs a folder}; shift 2 ;;
    --build_dir=*) build_dir=${1#--build_dir=}; shift ;;
    --skip_setup) skip_setup=1; shift ;;
    --prometheus) with_prometheus=1; shift ;;
    --link_latency_ms) link_latency_ms=${2:?--link_latency_ms needs a value}; shift 2 ;;
    --link_latency_ms=*) link_latency_ms=${1#--link_latency_ms=}; shift ;;
    --checkpoint_dir) checkpoint_dir=${2:?--checkpoint_dir needs a folder}; shift 2 ;;
    --checkpoint_dir=*) checkpoint_dir=${1#--checkpoint_dir=}; shift ;;
    --resume) resume=(--resume); shift ;;
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
checkpoint_dir=$(realpath -m "${checkpoint_dir:-$build_dir/checkpoints}")
mkdir -p "$logs" "$checkpoint_dir"
run_dir=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # In start order reversed: synthgradctl, the coordinator (which drains the
  # batches in flight and writes a final checkpoint while the groups still
  # run), then the groups and prometheus.
  local index
  for ((index = ${#pids[@]} - 1; index >= 0; index--)); do
    kill -TERM "${pids[$index]}" 2>/dev/null || true
    if [[ ${pids[$index]} == "${coordinator_pid:-}" ]]; then
      wait "${pids[$index]}" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$run_dir"
  if [[ $status -ne 0 && ${#pids[@]} -gt 0 ]]; then
    echo "run.sh: failed with status $status; service logs are in $logs" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# synthgradctl runs in the background and the script waits for it, so a
# SIGTERM to this script runs the trap at once instead of after training.

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

# Runs group $1 and starts it again, on the ports it first bound, whenever
# it exits before cleanup stops it. Runs in a background subshell,
# whose TERM handler stops the group.
supervise_group() {
  local i=$1 port=0 metrics_port=0 child= exit_status
  trap 'touch "$run_dir/stopping-$i"; [[ -n $child ]] && kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' TERM
  while true; do
    "$layer" --port "$port" --port_file "$run_dir/group-$i.port" \
      --link_latency_ms "$link_latency_ms" --checkpoint_dir "$checkpoint_dir/group-$i" \
      --metrics_port "$metrics_port" --metrics_port_file "$run_dir/group-$i.metrics" \
      >>"$logs/group-$i.log" 2>&1 &
    child=$!
    echo "$child" >"$run_dir/group-$i.pid"
    exit_status=0
    wait "$child" || exit_status=$?
    [[ -f $run_dir/stopping-$i ]] && exit 0
    port=$(cat "$run_dir/group-$i.port")
    metrics_port=$(cat "$run_dir/group-$i.metrics")
    echo "run.sh: group-$i (pid $child) exited with status $exit_status; starting it again on port $port" >&2
    sleep 1
  done
}

# Checks the spec with the same flags before any service starts.
validated=$("$ctl" validate --spec "$spec" "${extra[@]}") || exit 2
group_count=${validated#groups: }
addresses=()
metrics_ports=()
for ((i = 0; i < group_count; i++)); do
  supervise_group "$i" &
  pids+=($!)
  port=$(wait_for_port "$run_dir/group-$i.port" "$!" "group-$i")
  addresses+=("127.0.0.1:$port")
  metrics_ports+=("$(wait_for_port "$run_dir/group-$i.metrics" "$!" "group-$i")")
done
"$coordinator" --port 0 --port_file "$run_dir/coordinator.port" \
  --checkpoint_dir "$checkpoint_dir/coordinator" \
  --metrics_port 0 --metrics_port_file "$run_dir/coordinator.metrics" >"$logs/coordinator.log" 2>&1 &
coordinator_pid=$!
pids+=($!)
coordinator_port=$(wait_for_port "$run_dir/coordinator.port" "$!" coordinator)
coordinator_metrics=$(wait_for_port "$run_dir/coordinator.metrics" "$!" coordinator)

if [[ $with_prometheus -eq 1 ]]; then
  if ! command -v prometheus >/dev/null; then
    echo "run.sh: prometheus is not installed; apt-get install prometheus" >&2
    exit 2
  fi
  prometheus_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cp "$root/deploy/prometheus/rules.yml" "$run_dir/rules.yml"
  {
    printf 'global:\n  scrape_interval: 2s\n  evaluation_interval: 15s\n'
    printf 'rule_files:\n  - rules.yml\nscrape_configs:\n'
    printf '  - job_name: synthgrad-coordinator\n    static_configs:\n'
    printf "      - targets: ['127.0.0.1:%s']\n" "$coordinator_metrics"
    printf '  - job_name: synthgrad-group\n    static_configs:\n'
    for ((i = 0; i < group_count; i++)); do
      printf "      - targets: ['127.0.0.1:%s']\n        labels: {group: '%s'}\n" "${metrics_ports[$i]}" "$i"
    done
  } >"$run_dir/prometheus.yml"
  prometheus --config.file="$run_dir/prometheus.yml" --storage.tsdb.path="$run_dir/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" >"$logs/prometheus.log" 2>&1 &
  pids+=($!)
  echo "prometheus: http://127.0.0.1:$prometheus_port (config $run_dir/prometheus.yml)"
fi

echo "groups: ${addresses[*]}; coordinator: 127.0.0.1:$coordinator_port"
echo "metrics: coordinator http://127.0.0.1:$coordinator_metrics/metrics, groups ports ${metrics_ports[*]}"
echo "checkpoints: $checkpoint_dir"
"$ctl" train --spec "$spec" --coordinator "127.0.0.1:$coordinator_port" \
  --group_addresses "$(IFS=,; echo "${addresses[*]}")" "${resume[@]}" "${extra[@]}" &
ctl_pid=$!
pids+=("$ctl_pid")
wait "$ctl_pid"
"$ctl" status --coordinator "127.0.0.1:$coordinator_port"
# Peak resident memory (VmHWM) of each service, read before they stop. A
# group that was started again reports its latest process only.
for ((i = 0; i < group_count; i++)); do
  pid=$(cat "$run_dir/group-$i.pid")
  printf 'peak memory: group-%d %s\n' "$i" "$(awk '/^VmHWM/ {print $2, $3}' "/proc/$pid/status" 2>/dev/null)"
done
printf 'peak memory: coordinator %s\n' "$(awk '/^VmHWM/ {print $2, $3}' "/proc/$coordinator_pid/status" 2>/dev/null)"
if [[ $with_prometheus -eq 1 && -t 0 ]]; then
  read -r -p "Training done; Prometheus stays up at http://127.0.0.1:$prometheus_port until you press Enter. "
fi
