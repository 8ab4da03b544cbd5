#!/usr/bin/env bash
# REST produce throughput vs a native librdkafka producer, against luka's standalone broker, in one run.
# Needs what the tests need (scripts/test installs it: cmake, libcurl and zlib headers).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/luka-target}"
cargo bench --locked --bench rest_throughput -- "$@"
