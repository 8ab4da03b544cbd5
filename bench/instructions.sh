#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind: bench/instructions.sh BINARY [BINARY...]
# For machines without hardware counters (this project's virtual machine has none, so `perf stat` cannot count), and
# for A/B of small changes that rates on a shared machine cannot separate. Each BINARY serves PATHS under
# `valgrind --tool=callgrind` with counting off; after a warm-up, counting is switched on for SECS seconds of
# `wrk -t1 -cCONNECTIONS`, and the instructions counted are divided by the requests wrk made. Kernel work is not
# counted; the rate under valgrind means nothing. luka runs as compare's per-core rows do (one tokio worker, one Lua
# VM, access log on, to a file; a CPU budget of 5 s, as valgrind is slow) with a fresh `luka broker` from the first
# BINARY beside it, not counted.
#   PATHS: any of healthz, constant, constant_post (compare's constant row: the order POSTed to the constant
#          handler, which does not read it), json (req:json(), one field), webhook (compare's: one keyed record; needs the
#          broker), orders (the shipped functions/orders.lua: its order produced as `data`, encoded to JSON, and a
#          JSON answer), rest1 (compare's REST x1: the example order as one keyed record through `POST /produce/bench`,
#          with basic auth; needs the broker); default "healthz constant json"
#   ORDER=compare: json, webhook and constant_post send compare's order (five fields, as bench/compare.rs and the orders path do)
#          instead of the default, larger one with a nested array (bench/ab.sh's)
#   NGINX=1: also nginx + lua-nginx-module (bench/nginx/nginx.conf, master process off): static, constant, json
#   SECS (default 4), CONNECTIONS (default 16), ROUNDS (default 2, the binaries interleaved)
#   KEEP=DIR: keeps each count's callgrind profile in DIR (for callgrind_annotate)
# Needs valgrind, wrk and curl (and nginx-light, libnginx-mod-http-lua, lua-cjson for NGINX=1); apt-installs them.
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,20p "$0" >&2; exit 2; }
bench=$(cd "$(dirname "$0")" && pwd)
binaries=(); for b in "$@"; do binaries+=("$(realpath "$b")"); done
SECS=${SECS:-4}; CONNECTIONS=${CONNECTIONS:-16}; ROUNDS=${ROUNDS:-2}; PATHS=${PATHS:-healthz constant json}
source "$bench/lib.sh"
need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if [ "${NGINX:-0}" = 1 ]; then mapfile -t -O ${#need[@]} need < <(nginx_packages); fi
apt_install "${need[@]}"

dir=$(mktemp -d); server=""; broker=""
# Stops what it started, by id, also when a step fails.
trap 'kill $server $broker 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir "$dir/nginx"
write_luka_site "$dir" true 1
# Under valgrind a request runs about fifty times slower, and the first after counting is switched on pays for
# instrumenting the code again (tens of milliseconds of its thread's CPU time): the default 50 ms would stop it.
sed -i 's/^\[lua\]$/[lua]\ncpu_ms = 5000/' "$dir/config.toml"
sed -e "s#@PREFIX@#$dir/nginx#g" -e "s#@PORT@#18090#g" -e 's/master_process on;/master_process off;/' \
  "$bench/nginx/nginx.conf" > "$dir/nginx/nginx.conf"
write_order_request "$dir/order.lua"
write_example_order "$dir/example.lua"
write_rest_order "$dir/rest1.lua"
[ "${ORDER:-}" = compare ] && cp "$dir/example.lua" "$dir/order.lua"

# count NAME URL [wrk script]: the server in $server is under callgrind; prints its instructions per request.
count() {
  local name=$1 url=$2; shift 2
  local script=(); [ $# -gt 0 ] && script=(-s "$1")
  wrk -t1 -c"$CONNECTIONS" -d2s "${script[@]}" "$url" >/dev/null 2>&1
  rm -f "$dir"/callgrind.out.*.*
  callgrind_control -i on "$server" >/dev/null 2>&1
  wrk -t1 -c"$CONNECTIONS" -d"${SECS}s" "${script[@]}" "$url" > "$dir/wrk.out" 2>&1
  callgrind_control -i off "$server" >/dev/null 2>&1
  callgrind_control -d "$server" >/dev/null 2>&1
  # KEEP=DIR keeps each count's profile, for callgrind_annotate.
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cat "$dir"/callgrind.out.*.* > "$KEEP/${name// /-}.callgrind"; fi
  # An answer that is not 2xx (a refused login, a broker gone) would count another path's instructions.
  if grep -q "Non-2xx" "$dir/wrk.out"; then echo "$name: $(grep Non-2xx "$dir/wrk.out")" >&2; exit 1; fi
  local requests instructions
  requests=$(awk '/requests in/ {print $1}' "$dir/wrk.out")
  # A dump on request goes to a file of its own (callgrind.out.PID.N).
  instructions=$(cat "$dir"/callgrind.out.*.* | awk '/^totals:/ {if ($2 > m) m = $2} END {print m + 0}')
  awk -v name="$name" -v i="$instructions" -v n="$requests" \
    'BEGIN {printf "%-28s %8d requests  %7.0f instructions/request\n", name, n, i / n}'
}

# wait_for URL: until the server answers (valgrind starts slowly).
wait_for() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return; sleep 0.2; done; echo "no answer from $1" >&2; exit 1; }

callgrind=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out.%p")
for round in $(seq 1 "$ROUNDS"); do
  if [ "${NGINX:-0}" = 1 ]; then
    "${callgrind[@]}" nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/error.log" 2>/dev/null &
    server=$!
    wait_for http://127.0.0.1:18090/static
    count "$round nginx static" http://127.0.0.1:18090/static
    count "$round nginx constant" http://127.0.0.1:18090/lua/constant
    count "$round nginx json" http://127.0.0.1:18090/lua/json "$dir/order.lua"
    kill -TERM "$server"; wait "$server" 2>/dev/null || true
  fi
  for binary in "${binaries[@]}"; do
    "${binaries[0]}" broker --listen 127.0.0.1:19092 >/dev/null 2>&1 & broker=$!
    (cd "$dir" && TOKIO_WORKER_THREADS=1 exec "${callgrind[@]}" "$binary" --config config.toml >access.log 2>/dev/null) &
    server=$!
    wait_for http://127.0.0.1:18080/healthz
    still_running "$broker" "the broker"; still_running "$server" luka
    # The valgrind process is the subshell's exec, so $server is luka itself.
    for path in $PATHS; do
      case "$path" in
        healthz|constant) count "$round $(basename "$binary") $path" "http://127.0.0.1:18080/$path" ;;
        constant_post) count "$round $(basename "$binary") constant_post" http://127.0.0.1:18080/constant "$dir/order.lua" ;;
        json) count "$round $(basename "$binary") json" http://127.0.0.1:18080/json "$dir/order.lua" ;;
        webhook) count "$round $(basename "$binary") webhook" http://127.0.0.1:18080/hook "$dir/order.lua" ;;
        orders) count "$round $(basename "$binary") orders" http://127.0.0.1:18080/orders "$dir/example.lua" ;;
        rest1) count "$round $(basename "$binary") rest1" http://127.0.0.1:18080/produce/bench "$dir/rest1.lua" ;;
        *) echo "unknown path $path" >&2; exit 2 ;;
      esac
    done
    kill "$server" "$broker"; wait "$server" "$broker" 2>/dev/null || true
  done
done
