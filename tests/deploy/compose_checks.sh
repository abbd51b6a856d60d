#!/usr/bin/env bash
# Checks deploy/docker-compose.yml with docker-compose (Debian 12 package
# docker-compose, version 1.29) without a Docker engine.
#
# Usage: compose_checks.sh config SOURCE_DIR
#          `docker-compose config -q`: the file is valid
#        compose_checks.sh typos SOURCE_DIR
#          copies with injected typos are rejected
#        compose_checks.sh prometheus SOURCE_DIR
#          promtool accepts deploy/docker/prometheus.yml with the rules file
#          that compose mounts next to it
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: compose_checks.sh config|typos|prometheus SOURCE_DIR" >&2
  exit 2
fi
mode=$1
source_dir=$2
compose_file=$source_dir/deploy/docker-compose.yml

require() {
  if ! command -v "$1" >/dev/null; then
    echo "compose_checks.sh: $1 not found; install the Debian package $2" >&2
    exit 1
  fi
}

work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

case $mode in
  config)
    require docker-compose docker-compose
    docker-compose version --short
    timeout 60 docker-compose -f "$compose_file" config -q
    echo "PASSED: $compose_file is valid"
    ;;

  typos)
    require docker-compose docker-compose
    # Each case: a description, a sed expression that changes the first
    # match only, and a fragment of the expected error.
    cases=(
      "unknown service option|0,/    healthcheck:/s//    healthchek:/|Unsupported config option for services.coordinator: 'healthchek'"
      "boolean as a word|0,/  read_only: true/s//  read_only: sometimes/|is not a valid boolean value"
      "integer as a word|0,/      retries: 12/s//      retries: twelve/|is not a valid integer"
      "named container port|s/\"127.0.0.1:9090:9090\"/\"127.0.0.1:9090:prometheus\"/|services.prometheus.ports contains an invalid type"
    )
    # The copy sits at the same depth as the original, so that relative
    # paths resolve alike.
    mkdir -p "$work_dir/deploy"
    failures=0
    for entry in "${cases[@]}"; do
      IFS='|' read -r name expression expected <<<"$entry"
      copy=$work_dir/deploy/docker-compose.yml
      sed "$expression" "$compose_file" >"$copy"
      if cmp -s "$copy" "$compose_file"; then
        echo "FAILED $name: '$expression' changed nothing; update the case" >&2
        failures=$((failures + 1))
        continue
      fi
      if output=$(timeout 60 docker-compose -f "$copy" config -q 2>&1); then
        echo "FAILED $name: docker-compose accepted the file" >&2
        failures=$((failures + 1))
      elif [[ $output != *"$expected"* ]]; then
        echo "FAILED $name: expected an error containing '$expected', got: $output" >&2
        failures=$((failures + 1))
      else
        echo "ok $name: rejected with: $(tail -n 1 <<<"$output")"
      fi
    done
    if [[ $failures -gt 0 ]]; then
      echo "$failures of ${#cases[@]} typo cases failed" >&2
      exit 1
    fi
    echo "PASSED"
    ;;

  prometheus)
    require promtool prometheus
    cp "$source_dir/deploy/docker/prometheus.yml" "$source_dir/deploy/prometheus/rules.yml" "$work_dir/"
    timeout 60 promtool check config "$work_dir/prometheus.yml"
    echo "PASSED"
    ;;

  *)
    echo "compose_checks.sh: unknown mode '$mode'; expected config, typos or prometheus" >&2
    exit 2
    ;;
esac
