#!/usr/bin/env bash
# A/B two luka binaries on one machine: bench/ab.sh OLD_BINARY NEW_BINARY
# Each round serves functions/orders.lua (JSON in, uuid, time, `data` to Kafka, JSON out) and /healthz with one
# binary, then the other; luka and a fresh `luka broker` (from NEW) share CPU 1, wrk runs on CPU 0 (-t1 -c32,
# 2 s warm-up, then SECS seconds measured). Prints one line per measurement: round, binary, path, requests/s.
# ROUNDS (default 4) and SECS (default 8) set the length. Needs wrk, taskset and curl.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2")
ROUNDS=${ROUNDS:-4}; SECS=${SECS:-8}
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
mkdir "$dir/functions"; cp "$(dirname "$0")/../functions/orders.lua" "$dir/functions/"
cat > "$dir/config.toml" <<'TOML'
[server]
listen = "127.0.0.1:18080"
access_log = false
[clusters.local]
bootstrap = ["127.0.0.1:19092"]
[topics.orders]
partitions = 4
[[routes]]
path = "/orders"
function = "orders.lua"
methods = ["POST"]
TOML
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' \
  "'{\"item\":\"book\",\"quantity\":2}'" > "$dir/post.lua"
for round in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    binary=$old; [ "$which" = new ] && binary=$new
    taskset -c 1 "$new" broker --listen 127.0.0.1:19092 >/dev/null 2>&1 & broker=$!
    sleep 1
    RUST_LOG=error taskset -c 1 "$binary" --config "$dir/config.toml" >/dev/null 2>&1 & luka=$!
    for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:18080/healthz && break; sleep 0.1; done
    for path in orders healthz; do
      script=(); [ "$path" = orders ] && script=(-s "$dir/post.lua")
      taskset -c 0 wrk -t1 -c32 -d2s "${script[@]}" "http://127.0.0.1:18080/$path" >/dev/null 2>&1
      rps=$(taskset -c 0 wrk -t1 -c32 -d"${SECS}s" "${script[@]}" "http://127.0.0.1:18080/$path" 2>/dev/null |
        awk '/Requests\/sec/ {print $2}')
      echo "$round $which $path $rps"
    done
    kill "$luka" "$broker"; wait "$luka" "$broker" 2>/dev/null || true
  done
done
