#!/usr/bin/env bash
# luka's benchmarks (see bench/README.md for what each measures and the latest results):
#   bench/run.sh compare [--pgo] [--rounds N] [--seconds S] [--http]
#                                                    every stack on pinned cores: HTTP and Lua ceilings beside nginx +
#                                                    lua-nginx-module, Lua webhook vs REST vs Node.js + kafkajs, REST
#                                                    x100 vs librdkafka, targets (--http: the ceilings only; --pgo:
#                                                    luka built by scripts/build-pgo, profile-guided, measured instead of
#                                                    cargo's release build)
#   bench/run.sh schema [--rounds N] [--seconds S]   random values and validations per second for an order schema
#   bench/run.sh lua [--rounds N] [--calls N]        one Lua handler call without HTTP, microseconds per call
#   bench/run.sh                                     all three
# Needs cmake and the curl and zlib headers (to build librdkafka, as the tests do), wrk, taskset, Node.js, npm, nginx,
# libnginx-mod-http-lua and lua-cjson for `compare` (installed here with apt when missing; kafkajs comes from
# bench/node/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/luka-target}"

source bench/lib.sh
mapfile -t need < <(build_packages)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# The peer: nginx with lua-nginx-module (LuaJIT, resty.core) and cjson, as Debian packages them.
mapfile -t -O ${#need[@]} need < <(nginx_packages)
apt_install "${need[@]}"

which="${1:-all}"
[[ $# -gt 0 ]] && shift
if [ "$which" = compare ] && [ "${1:-}" = --pgo ]; then
  shift
  LUKA_BINARY=$(scripts/build-pgo | tail -1)
  export LUKA_BINARY
fi
case "$which" in
  compare) cargo bench --locked --bench compare -- "$@" ;;
  schema) cargo bench --locked --bench schema_speed -- "$@" ;;
  lua) cargo bench --locked --bench lua_call -- "$@" ;;
  all)
    cargo bench --locked --bench compare -- "$@"
    cargo bench --locked --bench schema_speed -- "$@"
    cargo bench --locked --bench lua_call
    ;;
  *) echo "usage: bench/run.sh [compare|schema|lua|all] [--rounds N] [--seconds S | --calls N]" >&2; exit 2 ;;
esac
