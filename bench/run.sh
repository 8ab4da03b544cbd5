#!/usr/bin/env bash
# luka's benchmarks, each against luka's standalone broker, comparisons measured in the same run:
#   bench/run.sh rest [--rounds N] [--seconds S]   REST produce throughput vs a native librdkafka producer
#   bench/run.sh lua  [--rounds N] [--seconds S]   Lua webhook function vs luka REST vs Node.js http + kafkajs
#   bench/run.sh schema [--rounds N] [--seconds S] random values and validations per second for an order schema
#   bench/run.sh                                   all three
# Needs what the tests need (scripts/test installs it: cmake, libcurl and zlib headers); `lua` also needs Node.js
# and npm (kafkajs is installed from bench/node/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/luka-target}"
which="${1:-all}"
[[ $# -gt 0 ]] && shift
case "$which" in
  rest) cargo bench --locked --bench rest_throughput -- "$@" ;;
  lua) cargo bench --locked --bench lua_webhook -- "$@" ;;
  schema) cargo bench --locked --bench schema_speed -- "$@" ;;
  all)
    cargo bench --locked --bench rest_throughput -- "$@"
    cargo bench --locked --bench lua_webhook -- "$@"
    cargo bench --locked --bench schema_speed -- "$@"
    ;;
  *) echo "usage: bench/run.sh [rest|lua|schema|all] [--rounds N] [--seconds S]" >&2; exit 2 ;;
esac
