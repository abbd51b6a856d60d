#!/usr/bin/env bash
# A server started on a gRPC or metrics port that another process is bound to must
# exit with status 1 and a message naming the address, not share the port.
# Usage: port_conflict_test.sh BUILD_DIR
set -euo pipefail
build_dir=$1
work=$(mktemp -d)
first_pid=
cleanup() {
  if [[ -n $first_pid ]]; then kill "$first_pid" 2>/dev/null || true; wait "$first_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$build_dir/services/layer/synthgrad_layer" --port 0 --port_file "$work/grpc.port" \
  --metrics_port 0 --metrics_port_file "$work/metrics.port" >"$work/first.log" 2>&1 &
first_pid=$!
for _ in $(seq 1 100); do
  [[ -s $work/grpc.port && -s $work/metrics.port ]] && break
  sleep 0.1
done
grpc_port=$(cat "$work/grpc.port")
metrics_port=$(cat "$work/metrics.port")

# Exits 0 when `binary args...` fails with status 1 and prints `expected`.
expect_startup_error() {
  local expected=$1
  shift
  local status=0
  timeout 20 "$@" >"$work/second.log" 2>&1 || status=$?
  if [[ $status -ne 1 ]]; then
    echo "FAILED: '$*' exited with $status, expected 1"; cat "$work/second.log"; return 1
  fi
  if ! grep -q "$expected" "$work/second.log"; then
    echo "FAILED: '$*' did not print '$expected'"; cat "$work/second.log"; return 1
  fi
  echo "ok: $* -> $expected"
}

expect_startup_error "cannot listen on 127.0.0.1:$grpc_port" \
  "$build_dir/services/layer/synthgrad_layer" --port "$grpc_port" --metrics_port -1
expect_startup_error "cannot listen on 127.0.0.1:$grpc_port" \
  "$build_dir/services/coordinator/synthgrad_coordinator" --port "$grpc_port" --metrics_port -1
expect_startup_error "cannot serve metrics on 127.0.0.1:$metrics_port" \
  "$build_dir/services/layer/synthgrad_layer" --port 0 --metrics_port "$metrics_port"
expect_startup_error "cannot serve metrics on 127.0.0.1:$metrics_port" \
  "$build_dir/services/coordinator/synthgrad_coordinator" --port 0 --metrics_port "$metrics_port"

# The first server is still running after the attempts.
kill -0 "$first_pid"
echo "PASSED"
