//! Isolation between requests to Lua handlers: a request sees nothing another left behind, on a fresh or a
//! recycled coroutine, and cannot escape its sandbox.

mod common;

use common::configs::LUA;
use common::{Harness, json_answer};
use serde_json::{Value, json};

const SANDBOX: &str = r#"
local counter = 0
return function(req)
  counter = counter + 1
  local seen = leaked
  leaked = req.query.n
  local escapes = {}
  for _, name in ipairs({ "require", "loadstring", "load", "dofile", "debug", "io", "getfenv", "setfenv", "package" }) do
    if _G[name] ~= nil then table.insert(escapes, name) end
  end
  local ok = pcall(function() string.upper = nil end)
  -- The random generator is the VM's: seeding it would choose what later requests get.
  local seeded, seed_error = pcall(math.randomseed, 42)
  return { json = { seen = seen or json.null, counter = counter, escapes = escapes, string_writable = ok,
    seeded = seeded, seed_error = tostring(seed_error), random = math.random(1, 1000000000) } }
end
"#;

/// Writes a global, a global function and a top-level local, then reports what it found from earlier requests;
/// `fail` dies half-way, `wait` yields on Kafka first, so every way a coroutine can end is recycled.
const RECYCLED: &str = r##"
local top = 0
local chunk_args = select("#", ...)
return function(req, ...)
  top = top + 1
  local seen = { global = left_behind or json.null, fn = type(left_fn), top = top, args = chunk_args + select("#", ...) }
  left_behind = req.query.n
  function left_fn() end
  if req.query.mode == "wait" then kafka.produce{ topic = "misc", messages = { { value = "x" } } } end
  if req.query.mode == "fail" then error("stopped half-way") end
  seen.thread = tostring(coroutine.running())
  seen.req_fields = 0
  for _ in pairs(req) do seen.req_fields = seen.req_fields + 1 end
  return { json = seen }
end
"##;

/// A top level with nothing to do but return the handler, which captures nothing: luka keeps the handler between
/// requests (`Compiled::handler_kept`); what the handler writes must still go with its request.
const KEPT: &str = r##"
return function(req)
  local seen = { global = left_behind or json.null, fn = type(left_fn) }
  left_behind = req.query.n
  function left_fn() end
  if req.query.mode == "wait" then kafka.produce{ topic = "misc", messages = { { value = "x" } } } end
  if req.query.mode == "fail" then error("stopped half-way") end
  return { json = seen }
end
"##;

/// Top levels whose handler must not be kept: one picks its handler by the route's `env`, one leaves a global its
/// handler reads.
const BY_ROUTE: &str = r#"
if env.MODE == "a" then
  return function(req) return { json = { mode = "a" } } end
end
return function(req) return { json = { mode = "other" } } end
"#;
const TOP_GLOBAL: &str = r#"
greeting = "hello"
return function(req) return { json = { greeting = greeting or json.null } } end
"#;

const BY_ROUTE_ROUTES: &str = r#"
[[routes]]
path = "/mode/a"
function = "by_route.lua"
env = { MODE = "a" }

[[routes]]
path = "/mode/b"
function = "by_route.lua"
env = { MODE = "b" }
"#;

async fn start() -> Harness {
    let config = [LUA, BY_ROUTE_ROUTES].concat();
    let functions = [
        ("sandbox.lua", SANDBOX),
        ("recycled.lua", RECYCLED),
        ("kept.lua", KEPT),
        ("by_route.lua", BY_ROUTE),
        ("top_global.lua", TOP_GLOBAL),
    ];
    Harness::start_with(1, &config, &functions).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_do_not_share_globals_and_cannot_escape_the_sandbox() {
    let h = start().await;
    let mut randoms = std::collections::BTreeSet::new();
    for n in 0..20 {
        let (_, answer) = json_answer(h.http.get(h.url(&format!("/sandbox?n={n}")))).await;
        assert_eq!(
            answer["seen"],
            Value::Null,
            "request {n} saw a global of an earlier request"
        );
        assert_eq!(answer["counter"], 1, "top-level state is per request");
        assert_eq!(answer["escapes"], json!({}), "{answer}");
        assert_eq!(answer["string_writable"], false);
        assert_eq!(answer["seeded"], false, "{answer}");
        assert!(
            answer["seed_error"]
                .as_str()
                .unwrap()
                .contains("math.randomseed is not available"),
            "{answer}"
        );
        randoms.insert(answer["random"].to_string());
    }
    assert_eq!(
        randoms.len(),
        20,
        "no request chose the numbers of the next: {randoms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycled_coroutine_and_environment_carry_nothing_to_the_next_request() {
    let h = start().await;
    let mut threads = std::collections::BTreeSet::new();
    for (n, mode) in [
        "plain", "wait", "fail", "plain", "wait", "plain", "fail", "fail", "plain",
    ]
    .iter()
    .enumerate()
    {
        let (status, seen) = json_answer(h.http.get(h.url(&format!("/recycled?n={n}&mode={mode}")))).await;
        if *mode == "fail" {
            assert_eq!(status, 500, "{seen}");
            continue;
        }
        assert_eq!(status, 200, "{seen}");
        assert_eq!(
            seen["global"],
            Value::Null,
            "request {n} saw a global of an earlier one: {seen}"
        );
        assert_eq!(
            seen["fn"], "nil",
            "request {n} saw a function of an earlier one: {seen}"
        );
        assert_eq!(seen["top"], 1, "request {n}: top-level locals are per request: {seen}");
        assert_eq!(
            seen["args"], 0,
            "request {n}: nothing left on the coroutine's stack: {seen}"
        );
        // method and path, plus the query this handler read: nothing cached from another request's `req`.
        assert_eq!(seen["req_fields"], 3, "request {n}: {seen}");
        threads.insert(seen["thread"].as_str().unwrap().to_owned());
    }
    // One request at a time reuses the same few coroutines; the checks above ran on recycled ones.
    assert!(threads.len() < 5, "coroutines were not reused: {threads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_handler_leaves_nothing_to_the_next_request() {
    let h = start().await;
    for (n, mode) in ["plain", "wait", "fail", "plain", "plain", "wait", "fail", "plain"]
        .iter()
        .enumerate()
    {
        let (status, seen) = json_answer(h.http.get(h.url(&format!("/kept?n={n}&mode={mode}")))).await;
        if *mode == "fail" {
            assert_eq!(status, 500, "{seen}");
            continue;
        }
        assert_eq!(status, 200, "{seen}");
        assert_eq!(seen, json!({"global": null, "fn": "nil"}), "request {n} ({mode})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_level_that_reads_env_or_writes_a_global_runs_for_every_request() {
    let h = start().await;
    // The same file behind two routes: its top level picks the handler by the route's `env`, so a handler made
    // for one route must never answer the other's requests.
    for round in 0..4 {
        for (path, mode) in [("/mode/a", "a"), ("/mode/b", "other")] {
            let (status, answer) = json_answer(h.http.get(h.url(path))).await;
            assert_eq!(
                (status, &answer),
                (200, &json!({ "mode": mode })),
                "round {round}, {path}"
            );
        }
        let (status, answer) = json_answer(h.http.get(h.url("/top_global"))).await;
        assert_eq!((status, &answer), (200, &json!({"greeting": "hello"})), "round {round}");
    }
}
