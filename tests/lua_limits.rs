//! Handlers past their limits: CPU time, memory and wall clock, and clusters too slow or down to answer.

mod common;

use std::time::{Duration, Instant};

use common::configs::LUA;
use common::read::read_records;
use common::{Harness, error_of, json_answer};

const LIMITS: &str = r#"
return function(req)
  local mode = req.query.mode
  if mode == "loop" then while true do end end
  if mode == "pcall" then while true do pcall(function() while true do end end) end end
  if mode == "memory" then
    local t = {}
    for i = 1, 1e9 do t[i] = buffer.create(1000000) end
  end
  -- Single C calls that Luau would run without reaching the interrupt.
  if mode == "find" then
    local at = string.find(string.rep("a", 2e6), string.rep("a", 1e6) .. "b", 1, true)
    return { json = { found = at or false } }
  end
  if mode == "sort" then
    local a, b = string.rep("x", 1e6) .. "a", string.rep("x", 1e6) .. "b"
    local t = table.create(100000)
    for i = 1, 100000 do t[i] = i % 2 == 0 and a or b end
    table.sort(t)
  end
  if mode == "move" then table.move({}, 1, 0x7ffffffd, 2, {}) return { json = { error = "moved" } } end
  -- Rust-side work has its own bound.
  if mode == "json" then local t = {"x"} for i = 1, 40 do t = {t, t} end return { json = t } end
  local r = kafka.produce{ topic = "load", messages = { { key = req.query.i, value = "v" .. req.query.i } } }
  return { json = { partition = r.partition, offset = r.offset } }
end
"#;

async fn start() -> Harness {
    Harness::start_with(
        1,
        &LUA.replace("[lua]\n", "[lua]\ncpu_ms = 50\n"),
        &[("limits.lua", LIMITS)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_handlers_are_stopped_while_others_carry_on() {
    let h = start().await;
    let bootstrap = h.bootstrap(0);
    let normal = (0..100).map(|i| {
        let request = h.http.get(h.url(&format!("/limits?i={i}")));
        json_answer(request)
    });
    let runaway = ["loop", "pcall", "memory", "find", "sort", "move", "json"].map(|mode| {
        let request = h.http.get(h.url(&format!("/limits?mode={mode}")));
        async move {
            let started = Instant::now();
            let (status, answer) = json_answer(request).await;
            (mode, status, started.elapsed(), answer)
        }
    });
    let (normal, runaway) = tokio::join!(futures::future::join_all(normal), futures::future::join_all(runaway));
    for (status, answer) in &normal {
        assert_eq!(*status, 200, "{answer}");
    }
    for (mode, status, elapsed, answer) in &runaway {
        // A plain find is linear here: it finishes (or, on a slow debug build, reaches the CPU limit) instead of
        // holding the VM for minutes.
        if *mode == "find" && *status == 200 {
            assert_eq!(answer["found"], false, "{answer}");
            assert!(*elapsed < Duration::from_secs(3), "find took {elapsed:?}");
            continue;
        }
        // table.move over an empty source is fast once Luau's fix is on; the rest are stopped.
        assert_eq!(*status, if *mode == "move" { 200 } else { 500 }, "{mode}: {answer}");
        let error = error_of(answer);
        let expected: &[&str] = match *mode {
            "memory" => &["out of memory"],
            // Stopped by the size bound or the CPU budget, whichever comes first on this build.
            "json" => &["the function failed", "50 ms of CPU time"],
            "move" => &["moved"],
            _ => &["50 ms of CPU time"],
        };
        assert!(expected.iter().any(|e| error.contains(e)), "{mode}: {error}");
        // Far below the 3 s wall-clock limit: the CPU and memory limits stopped them, not the timeout.
        assert!(*elapsed < Duration::from_secs(3), "{mode} took {elapsed:?}");
    }
    let written: usize = [0, 1]
        .iter()
        .map(|p| normal.iter().filter(|(_, a)| a["partition"] == *p).count())
        .sum();
    assert_eq!(written, 100);
    let on_zero = normal.iter().filter(|(_, a)| a["partition"] == 0).count();
    let records = read_records(&bootstrap, "load", 0, 0, on_zero).await;
    assert_eq!(records.len(), on_zero);
    // The replaced VMs serve again.
    let (status, _) = h.get("/limits?i=after").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_unreachable_clusters_answer_504_and_503() {
    // A listener that accepts and never answers, and an address nobody listens on.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = common::free_addr();
    let config = format!(
        r#"
[clusters.slow]
bootstrap = ["{}"]
produce_timeout_ms = 10000
[clusters.down]
bootstrap = ["{down}"]
produce_timeout_ms = 500
[topics.s]
cluster = "slow"
[topics.d]
cluster = "down"
[lua]
timeout_ms = 1000
"#,
        silent.local_addr().unwrap()
    );
    let function = "return function(req) kafka.produce{ topic = req.query.t, messages = { { value = 'x' } } } end";
    let h = Harness::start_with(0, &config, &[("write.lua", function)]).await;
    let started = Instant::now();
    let (status, answer) = h.get("/write?t=s").await;
    assert_eq!(status, 504, "{answer}");
    assert!(error_of(&answer).contains("within 1000 ms"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the Lua timeout, not the produce timeout, answered"
    );
    let (status, answer) = h.get("/write?t=d").await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "kafka cluster 'down' is unavailable");
    drop(silent);
}
