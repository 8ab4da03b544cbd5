#!/usr/bin/env bash
# A/B two luka binaries on one machine: bench/ab.sh OLD_BINARY NEW_BINARY
# Each round serves PATHS with one binary, then the other; luka and a fresh `luka broker` (from NEW) share CPU 1,
# wrk runs on CPU 0 (-t1 -cCONNECTIONS, 2 s warm-up, then SECS seconds measured). Prints one line per measurement:
# round, binary, path, requests/s, luka's CPU microseconds per request (from /proc) and wrk's p99.
#   ROUNDS (default 4), SECS (default 8), CONNECTIONS (default 32)
#   PATHS: any of orders (functions/orders.lua: JSON in, uuid, time, `data` to Kafka, JSON out), healthz, and
#          compare's handlers: constant, json (req:json(), one field), webhook (one keyed record, answers the
#          offset; served at /hook, as /webhook is luka's own); default "orders healthz"
#   PER_CORE=1: as compare's per-core rows: one tokio worker, one Lua VM, access log on (to a file)
#   UNPINNED=1: as compare's 2-core rows: nothing pinned (wrk, luka and the broker share both CPUs), luka's defaults
#          with its access log on; e.g. NEW_ENV="TOKIO_WORKER_THREADS=1" with the same binary twice
#   NEW_ENV="NAME=value ...": extra environment for NEW only; with the same binary twice it A/Bs a setting, e.g.
#          NEW_ENV="RUST_LOG=info,luka::access=off" for the access log off
#   BROKER_FROM=old: the broker from OLD instead, for a NEW built otherwise than OLD (scripts/build-pgo's: its
#          broker code is optimised by a profile of luka serving, which never ran it); BROKER_FROM=each: each
#          binary's own broker, for a change to the broker itself
#   WAKEUPS=1: also counts, machine-wide, wake-ups and inter-processor interrupts per request (`perf stat -a`)
# Needs wrk, taskset and curl (and perf for WAKEUPS).
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2")
ROUNDS=${ROUNDS:-4}; SECS=${SECS:-8}; CONNECTIONS=${CONNECTIONS:-32}; PATHS=${PATHS:-orders healthz}
dir=$(mktemp -d); luka=""; broker=""
# Stops what it started, by id, also when a step fails.
trap 'kill $luka $broker 2>/dev/null || true; rm -rf "$dir"' EXIT
source "$(dirname "$0")/lib.sh"
access_log=false; vms=0; environment=(env RUST_LOG=error)
if [ "${PER_CORE:-0}" = 1 ]; then access_log=true; vms=1; environment=(env TOKIO_WORKER_THREADS=1); fi
if [ "${PER_CORE:-0}" = 1 ] && [ "${UNPINNED:-0}" = 1 ]; then echo "PER_CORE=1 and UNPINNED=1 exclude each other" >&2; exit 2; fi
stack_cpu=(taskset -c 1); load_cpu=(taskset -c 0)
if [ "${UNPINNED:-0}" = 1 ]; then access_log=true; environment=(env); stack_cpu=(); load_cpu=(); fi
write_luka_site "$dir" "$access_log" "$vms"
write_json_post "$dir/post.lua" '{"item":"book","quantity":2}'
write_order_request "$dir/order.lua"
ticks=$(getconf CLK_TCK)
for round in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    binary=$old; [ "$which" = new ] && binary=$new
    broker_binary=$new
    case "${BROKER_FROM:-new}" in old) broker_binary=$old ;; each) broker_binary=$binary ;; esac
    "${stack_cpu[@]}" "$broker_binary" broker --listen 127.0.0.1:19092 >/dev/null 2>&1 & broker=$!
    sleep 1
    run_with=("${environment[@]}")
    if [ "$which" = new ] && [ -n "${NEW_ENV:-}" ]; then read -r -a extra <<< "$NEW_ENV"; run_with+=("${extra[@]}"); fi
    "${run_with[@]}" "${stack_cpu[@]}" "$binary" --config "$dir/config.toml" >"$dir/access.log" 2>&1 & luka=$!
    for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:18080/healthz && break; sleep 0.1; done
    still_running "$broker" "the broker"; still_running "$luka" luka
    for path in $PATHS; do
      script=()
      case "$path" in
        orders) script=(-s "$dir/post.lua") ;;
        json|webhook) script=(-s "$dir/order.lua") ;;
      esac
      url="http://127.0.0.1:18080/$path"; [ "$path" = webhook ] && url="http://127.0.0.1:18080/hook"
      "${load_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d2s "${script[@]}" "$url" >/dev/null 2>&1
      before=$(awk '{print $14 + $15}' "/proc/$luka/stat")
      measure=("${load_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"${SECS}s" --latency "${script[@]}" "$url")
      if [ "${WAKEUPS:-0}" = 1 ]; then
        measure=(perf stat -a -x, -o "$dir/wakeups" -e sched:sched_wakeup,irq_vectors:call_function_single_entry
          -- "${measure[@]}")
      fi
      "${measure[@]}" > "$dir/wrk.out" 2>/dev/null
      after=$(awk '{print $14 + $15}' "/proc/$luka/stat")
      rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.out")
      requests=$(awk '/requests in/ {print $1}' "$dir/wrk.out")
      p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk.out")
      cpu=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$ticks" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
      extra=""
      if [ "${WAKEUPS:-0}" = 1 ]; then
        extra=$(awk -F, -v n="$requests" '/sched_wakeup/ {w = $1} /call_function_single/ {i = $1}
          END {printf " wakeups/req %.2f ipi/req %.2f", w / n, i / n}' "$dir/wakeups")
      fi
      echo "$round $which $path $rps cpu_us/req $cpu p99 $p99$extra"
    done
    kill "$luka" "$broker"; wait "$luka" "$broker" 2>/dev/null || true
  done
done
