# Shell helpers the bench scripts share (sourced, not run): bench/run.sh, bench/ab.sh, bench/instructions.sh.

# apt_install PACKAGE...: installs the packages given, if any (with sudo unless root).
apt_install() {
  [ $# -gt 0 ] || return 0
  local sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}

# build_packages: what building luka's tests and benchmarks needs and the machine lacks (librdkafka, the tests'
# read-back client and the native row, is built from source by the rdkafka crate: cmake and the curl and zlib
# headers). scripts/test and bench/run.sh use it.
build_packages() {
  command -v cmake >/dev/null || echo cmake
  [ -e /usr/include/curl/curl.h ] || [ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] || echo libcurl4-openssl-dev
  [ -e /usr/include/zlib.h ] || echo zlib1g-dev
}

# nginx_packages: the peer's Debian packages that are missing (nginx with lua-nginx-module, LuaJIT and cjson).
nginx_packages() {
  command -v nginx >/dev/null || echo nginx-light
  [ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || echo libnginx-mod-http-lua
  ls /usr/lib/*/lua/5.1/cjson.so >/dev/null 2>&1 || echo lua-cjson
}

# still_running PID WHAT: stops the script when process PID has exited. A bench server or broker that cannot listen
# exits at once, and the load would then go to whatever already holds the port (a broker left from another run).
still_running() {
  kill -0 "$1" 2>/dev/null && return 0
  echo "$2 (pid $1) is not running: does another process hold its port? (ss -ltnp shows which)" >&2
  exit 1
}

# write_luka_site DIR ACCESS_LOG VMS: DIR/config.toml (luka on 127.0.0.1:18080, its broker on 127.0.0.1:19092) and
# DIR/functions, serving /constant, /json and /hook (the handlers bench/compare.rs and bench/common/mod.rs measure,
# word for word; /hook is compare's webhook, as /webhook is luka's own) and /orders (functions/orders.lua); the user
# bench (password bench) may write the topic bench through REST, as in compare's REST rows.
write_luka_site() {
  local dir=$1 access_log=$2 vms=$3
  mkdir -p "$dir/functions"
  cp "$(dirname "${BASH_SOURCE[0]}")/../functions/orders.lua" "$dir/functions/"
  echo 'return function(req) return { json = { ok = true } } end' > "$dir/functions/constant.lua"
  echo 'return function(req) local order = req:json() return { json = { id = order.id } } end' > "$dir/functions/json.lua"
  cat > "$dir/functions/webhook.lua" <<'LUA'
return function(req)
  local order = req:json()
  local r = kafka.produce{ topic = "bench", messages = { { key = tostring(order.id), value = req.body } } }
  return { json = { partition = r.partition, offset = r.offset } }
end
LUA
  cat > "$dir/config.toml" <<TOML
[server]
listen = "127.0.0.1:18080"
access_log = $access_log
[clusters.local]
bootstrap = ["127.0.0.1:19092"]
[topics.orders]
partitions = 4
[topics.bench]
partitions = 4
[lua]
watch = false
vms = $vms
[[users]]
name = "bench"
password = "bench"
topics = ["bench"]
[[routes]]
path = "/constant"
function = "constant.lua"
[[routes]]
path = "/json"
function = "json.lua"
[[routes]]
path = "/hook"
function = "webhook.lua"
[[routes]]
path = "/orders"
function = "orders.lua"
methods = ["POST"]
TOML
}

# write_example_order FILE: a wrk script POSTing one order as functions/orders.lua takes it (compare's order form:
# item and quantity, an id, which the function keeps as the key).
write_example_order() {
  write_json_post "$1" '{"id":123,"item":"book-0123","quantity":4,"price":23.23,"email":"buyer123@example.com"}'
}

# write_rest_order FILE: a wrk script POSTing write_example_order's order to /produce/bench as compare's REST x1
# row does: one record, keyed by the order id, the order as its string value, as the user bench.
write_rest_order() {
  write_json_post "$1" \
    '{"key":"123","value":"{\\"id\\":123,\\"item\\":\\"book-0123\\",\\"quantity\\":4,\\"price\\":23.23,\\"email\\":\\"buyer123@example.com\\"}"}' \
    'wrk.headers["Authorization"] = "Basic YmVuY2g6YmVuY2g="'
}

# write_order_request FILE: a wrk script POSTing one JSON order, for the json and webhook handlers.
write_order_request() {
  write_json_post "$1" '{"id":12345,"customer":"c-42","items":[{"sku":"A1","qty":2},{"sku":"B7","qty":1}],"total":49.95}'
}

# write_json_post FILE BODY [HEADER_LINE...]: a wrk script POSTing the JSON BODY (no single quotes in it), with
# each extra header given as a Lua line, e.g. 'wrk.headers["Authorization"] = "Basic ..."'.
write_json_post() {
  local file=$1 body=$2; shift 2
  {
    printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'$body'"
    [ $# -eq 0 ] || printf '%s\n' "$@"
  } > "$file"
}
