//! Handlers past their limits: CPU time, memory and wall clock, and clusters too slow or down to answer.

mod common;

use std::time::{Duration, Instant};

use common::configs::LUA;
use common::read::{read_records, text};
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
  -- `)` and `]` are not special to Luau: a pattern with only those is searched for as plain text, the slow way.
  if mode == "find_paren" then
    local at = string.find(string.rep("a", 2e6), string.rep("a", 1e6) .. ")")
    return { json = { found = at or false } }
  end
  if mode == "sort" then
    local a, b = string.rep("x", 1e6) .. "a", string.rep("x", 1e6) .. "b"
    local t = table.create(100000)
    for i = 1, 100000 do t[i] = i % 2 == 0 and a or b end
    table.sort(t)
  end
  if mode == "csort" then
    local t = table.create(1000000, 0)
    table.sort(t, coroutine.isyieldable)
  end
  if mode == "move" then table.move({}, 1, 0x7ffffffd, 2, {}) return { json = { error = "moved" } } end
  -- Rust-side work has its own bound.
  if mode == "json" then local t = {"x"} for i = 1, 40 do t = {t, t} end return { json = t } end
  local r = kafka.produce{ topic = "load", messages = { { key = req.query.i, value = "v" .. req.query.i } } }
  return { json = { partition = r.partition, offset = r.offset } }
end
"#;

/// Keys whose `__tostring` allocates past the 32 MiB memory limit, or never returns, where luka reads a call or a
/// response in Rust with the VM's memory limit lifted.
const METAMETHODS: &str = r#"
return function(req)
  if req.query.mode == "produce" then
    local key = setmetatable({}, { __tostring = function() return "ran " .. #string.rep("x", 48 * 1024 * 1024) end })
    local _, err = pcall(kafka.produce, { topic = "load", [key] = 1 })
    local message = setmetatable({}, { __tostring = function() return "ran " .. #string.rep("y", 48 * 1024 * 1024) end })
    local _, err2 = pcall(kafka.produce, { topic = "load", messages = { { value = "v", [message] = 1 } } })
    return { json = { call = err, message = err2 } }
  end
  return { [setmetatable({}, { __tostring = function() while true do end end })] = 1 }
end
"#;

async fn start() -> Harness {
    Harness::start_with(
        1,
        &LUA.replace("[lua]\n", "[lua]\ncpu_ms = 50\n"),
        &[("limits.lua", LIMITS), ("meta.lua", METAMETHODS)],
    )
    .await
}

/// [`LIMITS`] with a CPU budget of 5 s: for handlers that must reach the limit or the call they test, however slow the
/// build.
async fn with_cpu_to_spare() -> Harness {
    Harness::start_with(
        1,
        &LUA.replace("[lua]\n", "[lua]\ncpu_ms = 5000\n"),
        &[("limits.lua", LIMITS)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metamethods_never_run_where_luka_lifts_the_memory_limit() {
    let h = start().await;
    let (status, answer) = h.get("/meta?mode=produce").await;
    assert_eq!(status, 200, "{answer}");
    for field in ["call", "message"] {
        let error = answer[field].as_str().unwrap_or_else(|| panic!("{answer}"));
        assert!(error.contains("unknown field [table]"), "{error}");
        assert!(
            !error.contains("ran"),
            "__tostring ran with the memory limit off: {error}"
        );
    }
    let started = Instant::now();
    let (status, answer) = h.get("/meta?mode=response").await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(
        error_of(&answer),
        "the function failed; the server log has the details",
        "the response's key is named by its type, its __tostring never runs"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

/// With CPU to spare, a handler that allocates without end is stopped by its VM's memory limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_memory_is_stopped() {
    let h = with_cpu_to_spare().await;
    let started = Instant::now();
    let (status, answer) = h.get("/limits?mode=memory").await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(error_of(&answer), "the function ran out of memory");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

/// A pattern whose only punctuation is `)` or `]` has no special character to Luau, which searches for it as plain
/// text with its quadratic search, in one C call the CPU limit cannot stop (23 s for this one in a debug build): it is
/// searched for in linear time, as a plain needle is. With CPU to spare, so that the search itself is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_without_luaus_special_characters_is_searched_for_in_linear_time() {
    let h = with_cpu_to_spare().await;
    let started = Instant::now();
    let (status, answer) = h.get("/limits?mode=find_paren").await;
    assert_eq!((status, &answer["found"]), (200, &serde_json::json!(false)), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_handlers_are_stopped_while_others_carry_on() {
    let h = start().await;
    let bootstrap = h.bootstrap(0);
    let normal = (0..100).map(|i| {
        let request = h.http.get(h.url(&format!("/limits?i={i}")));
        json_answer(request)
    });
    let runaway = ["loop", "pcall", "memory", "find", "sort", "csort", "move", "json"].map(|mode| {
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
            // Allocating takes time too: in an unoptimised build the CPU limit can stop it before the memory limit
            // does. Either stops it; the memory limit alone is `a_handler_past_its_memory_is_stopped`.
            "memory" => &["out of memory", "50 ms of CPU time"],
            // Stopped by the size bound or the CPU budget, whichever comes first on this build.
            "json" => &["the function failed", "50 ms of CPU time"],
            "move" => &["moved"],
            _ => &["50 ms of CPU time"],
        };
        assert!(expected.iter().any(|e| error.contains(e)), "{mode}: {error}");
        // Far below the 3 s wall-clock limit: the CPU and memory limits stopped them, not the timeout.
        assert!(*elapsed < Duration::from_secs(3), "{mode} took {elapsed:?}");
        // Sorting with a C comparator ran here for about 1.4 s (debug build) before the limit could look: it is
        // stopped with the others (about 0.2 s).
        if *mode == "csort" {
            assert!(*elapsed < Duration::from_secs(1), "csort took {elapsed:?}");
        }
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

/// Writes a record with the mode it is asked for as its value, then fails as that mode says.
const WRITE_THEN_FAIL: &str = r#"
return function(req)
  local mode = req.query.mode
  if mode == "before" then error("nothing written yet") end
  local r = kafka.produce{ topic = "w", messages = { { value = mode } } }
  if mode == "error" then error("after the write") end
  if mode == "loop" then while true do end end
  if mode == "down" then kafka.produce{ topic = "d", messages = { { value = "x" } } } end
  return { json = { offset = r.offset } }
end
"#;

/// A handler that fails after its request wrote a record (an error it raises, its CPU limit, a later produce to a
/// cluster that is down) is answered 500, never 503 with Retry-After, in words that say the record was written and
/// that sending the request again writes it again; the record is in Kafka. One that fails before writing is
/// answered as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_after_writing_says_what_it_wrote() {
    let config = format!(
        r#"
[clusters.local]
bootstrap = ["{{broker0}}"]
[clusters.down]
bootstrap = ["{}"]
produce_timeout_ms = 500
[topics.w]
cluster = "local"
partitions = 1
[topics.d]
cluster = "down"
[lua]
cpu_ms = 50
"#,
        common::free_addr()
    );
    let h = Harness::start_with(1, &config, &[("write.lua", WRITE_THEN_FAIL)]).await;
    let (status, answer) = h.get("/write?mode=before").await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(error_of(&answer), "the function failed; the server log has the details");
    assert!(answer.get("records_written").is_none(), "{answer}");

    const WRITTEN: &str = "; 1 record of this request was written before it failed, so sending the request again \
                           writes it again";
    for (mode, error) in [
        ("error", "the function failed; the server log has the details"),
        ("loop", "the function used more than its 50 ms of CPU time"),
        ("down", "kafka cluster 'down' is unavailable"),
    ] {
        let response = h.http.get(h.url(&format!("/write?mode={mode}"))).send().await.unwrap();
        assert_eq!(response.status(), 500, "{mode}");
        assert!(response.headers().get("retry-after").is_none(), "{mode}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error_of(&answer), format!("{error}{WRITTEN}"), "{mode}");
        assert_eq!(answer["records_written"], 1, "{mode}");
    }
    let values: Vec<_> = read_records(&h.bootstrap(0), "w", 0, 0, 3)
        .await
        .into_iter()
        .map(|r| text(&r).1.expect("a value"))
        .collect();
    assert_eq!(values, ["error", "loop", "down"]);
}

/// One `kafka.produce` call of 300 messages whose values luka makes from the topic's schema.
const GENERATE: &str = r#"
return function(req)
  local messages = table.create(300)
  for i = 1, 300 do messages[i] = {} end
  kafka.produce{ topic = "generated", messages = messages }
  return { json = { ok = true } }
end
"#;

/// Work done in Rust on a handler's behalf counts against its CPU time like its own Lua: here one `kafka.produce`
/// call for which luka makes 300 values from the topic's schema (150,000 strings to a pattern, each checked), far
/// past the handler's 50 ms, for a few microseconds of Lua. The work cannot stop midway, so the records are written;
/// the handler is then stopped rather than resumed, and the answer says what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_done_in_rust_for_a_handler_counts_against_its_cpu_time() {
    let config = format!(
        "{}\n[topics.generated]\npartitions = 1\nvalue_schema = {{ type = \"array\", minItems = 500, maxItems = 500, \
         items = {{ type = \"string\", pattern = \"^[a-z]{{8}}$\" }} }}\n",
        LUA.replace("[lua]\n", "[lua]\ncpu_ms = 50\n")
    );
    let h = Harness::start_with(1, &config, &[("generate.lua", GENERATE)]).await;
    let (status, answer) = h.get("/generate").await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(
        error_of(&answer),
        "the function used more than its 50 ms of CPU time; 300 records of this request were written before it \
         failed, so sending the request again writes them again"
    );
    assert_eq!(answer["records_written"], 300, "{answer}");
}

/// One record with 60,000 headers, and how many its produce result gives back.
const MANY_HEADERS: &str = r#"
return function(req)
  local headers = {}
  for i = 1, 60000 do headers["h" .. i] = "" end
  local r = kafka.produce{ topic = "load", messages = { { value = "v", headers = headers } } }
  local n = 0
  for _ in pairs(r.messages[1].headers) do n += 1 end
  return { json = { headers = n } }
end
"#;

/// A record may carry tens of thousands of headers within Kafka's megabyte; the produce result gives them back with
/// work in proportion (it looked for a repeated name by comparing each with every one before it: 1.8 billion
/// comparisons here, in Rust, where no limit can stop them, until the handler was charged for all of them at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_many_headers_is_answered_in_proportion() {
    let config = LUA.replace("[lua]\n", "[lua]\ncpu_ms = 2000\n");
    let h = Harness::start_with(1, &config, &[("many.lua", MANY_HEADERS)]).await;
    let (status, answer) = h.get("/many").await;
    assert_eq!((status, &answer), (200, &serde_json::json!({ "headers": 60000 })));
}

/// Counts the keys of the JSON object it is sent.
const COUNT_KEYS: &str = r#"
return function(req)
  local n = 0
  for _ in pairs(req:json()) do n += 1 end
  return { json = { keys = n } }
end
"#;

/// Luau's string hash of `key`, as `luaS_hash` computes it for keys under 32 bytes: seeded with the length, the
/// bytes mixed in from last to first.
fn luau_hash(key: &[u8]) -> u32 {
    let mut h = key.len() as u32;
    for &c in key.iter().rev() {
        h ^= (h << 5).wrapping_add(h >> 2).wrapping_add(u32::from(c));
    }
    h
}

/// `count` eight-byte keys whose Luau hashes share their low `bits` bits: bytes 1 to 7 count up, and byte 0, mixed
/// in last, is solved for (kept when it is a plain printable character).
fn colliding_keys(count: usize, bits: u32) -> Vec<String> {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mask = (1u32 << bits) - 1;
    let mut keys = Vec::with_capacity(count);
    let mut n = 0u64;
    while keys.len() < count {
        let mut key = [0u8; 8];
        let mut rest = n;
        for byte in key[1..].iter_mut().rev() {
            *byte = DIGITS[(rest % 62) as usize];
            rest /= 62;
        }
        n += 1;
        let mut h = 8u32;
        for &c in key[1..].iter().rev() {
            h ^= (h << 5).wrapping_add(h >> 2).wrapping_add(u32::from(c));
        }
        let base = (h << 5).wrapping_add(h >> 2);
        let first = (h & mask).wrapping_sub(base) & mask; // makes the final hash's low bits 0
        if (0x20..0x7f).contains(&first) && first != u32::from(b'"') && first != u32::from(b'\\') {
            key[0] = first as u8;
            debug_assert_eq!(luau_hash(&key) & mask, 0);
            keys.push(String::from_utf8(key.to_vec()).expect("ASCII"));
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_keys_that_collide_in_luaus_hash_cannot_outlast_the_cpu_limit() {
    let h = Harness::start_with(
        1,
        &LUA.replace("[lua]\n", "[lua]\ncpu_ms = 300\n"),
        &[("count.lua", COUNT_KEYS)],
    )
    .await;
    let keys = colliding_keys(32_768, 15);
    assert!(keys.iter().all(|k| luau_hash(k.as_bytes()) & 0x7fff == 0));
    let flood: String = format!(
        "{{{}}}",
        keys.iter().map(|k| format!("\"{k}\":0")).collect::<Vec<_>>().join(",")
    );
    let plain: String = format!(
        "{{{}}}",
        (0..32_768)
            .map(|i| format!("\"k{i:07}\":0"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(flood.len(), plain.len());

    let (status, answer) = h.send("/count", &[], &plain).await;
    assert_eq!((status, answer["keys"].as_u64()), (200, Some(32_768)), "{answer}");

    // Three floods at once, and a client that only wants /healthz meanwhile.
    let floods = (0..3).map(|_| async {
        let started = Instant::now();
        let (status, answer) = h.send("/count", &[], &flood).await;
        (status, answer, started.elapsed())
    });
    let healthz = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let (status, _) = h.get("/healthz").await;
        (status, started.elapsed())
    };
    let (floods, (health, waited)) = tokio::join!(futures::future::join_all(floods), healthz);
    assert_eq!(health, 200);
    assert!(
        waited < Duration::from_secs(1),
        "/healthz waited {waited:?} behind the floods"
    );
    for (status, answer, took) in floods {
        assert!(
            status == 200 || error_of(&answer) == "the function used more than its 300 ms of CPU time",
            "{status} {answer}"
        );
        // 300 ms of CPU time each, two VMs for three floods: a thread that shares its core with the other tests
        // and the brokers gets less than all of it, and the budget counts only what it got.
        assert!(took < Duration::from_secs(3), "a flood took {took:?}");
    }
}

/// Runs for `?seconds=` of wall time (Luau's `os.clock` is a wall clock).
const SPIN: &str = "return function(req)
  local seconds = tonumber(req.query.seconds)
  local start = os.clock()
  while os.clock() - start < seconds do end
  return { json = { ran = os.clock() - start } }
end";

/// luka serving [`SPIN`] at `/spin` with `cpu_ms`, the handler loaded and compiled by a first request (so the next
/// starts at once); and its folder, which must outlive it (luka watches its functions).
async fn spin_server(cpu_ms: u64) -> (common::binary::Binary, common::TestDir) {
    let dir = common::temp_dir();
    common::write_function(&dir, "spin.lua", SPIN);
    let functions = dir.join("functions");
    let luka = common::binary::Binary::serve(&dir, |http, broker| {
        format!(
            "[server]\nlisten = \"{http}\"\n\n[clusters.local]\nbootstrap = [\"{broker}\"]\nembedded = true\n\n\
             [lua]\nfunctions = \"{}\"\ncpu_ms = {cpu_ms}\n",
            functions.display()
        )
    })
    .await;
    assert_eq!(spin(&luka, 0.01).await.0, 200);
    (luka, dir)
}

/// `/spin` for `seconds` of wall time: its status and answer.
fn spin(
    luka: &common::binary::Binary,
    seconds: f64,
) -> impl std::future::Future<Output = (u16, serde_json::Value)> + 'static {
    json_answer(reqwest::Client::new().get(format!("http://{}/spin?seconds={seconds}", luka.http)))
}

/// The CPU budget keeps time with the kernel's coarse clock, not a thread of its own: nothing wakes every
/// millisecond while a handler runs, to take the core from it (the ticker thread this replaced did, a thousand
/// times a second), and the budget still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_limit_wakes_no_thread_while_lua_runs() {
    let (luka, _dir) = spin_server(2000).await;
    let spin = |seconds: f64| spin(&luka, seconds);
    let before = luka.sleeps();
    let (status, answer) = spin(0.4).await;
    // (A thread that ended meanwhile takes its count along: saturating, not overflowing.)
    let slept = luka.sleeps().saturating_sub(before);
    assert_eq!(status, 200, "0.4 s of a 2 s budget: {answer}");
    // Room for the request's own hand-offs between threads and the embedded broker's timers (none, as a rule);
    // the ticker slept more than a hundred times in those 400 ms.
    assert!(
        slept < 40,
        "luka's threads slept {slept} times while a handler ran for 400 ms"
    );
    // And the budget holds: a handler that would run for 10 s is stopped after its 2 s, not before.
    let started = Instant::now();
    let (status, answer) = spin(10.0).await;
    let took = started.elapsed();
    assert_eq!(status, 500, "{answer}");
    assert!(error_of(&answer).contains("2000 ms of CPU time"), "{answer}");
    // Below the 15 s wall-clock limit: the CPU limit stopped it, even with its thread sharing a core with other
    // tests (the budget counts only the CPU time the thread got).
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(12),
        "stopped after {took:?}"
    );
}

/// The budget is CPU time: a handler held back while it runs (the whole process stopped, as the kernel stops a
/// container that used up its CPU quota) is not charged the time it did not run, and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_the_process_is_held_back_is_not_charged_to_the_cpu_limit() {
    let (luka, _dir) = spin_server(500).await;
    let spin = tokio::spawn(spin(&luka, 0.4));
    // Well inside the 400 ms the handler runs for, the process is held back for 1.5 s: three times its budget.
    tokio::time::sleep(Duration::from_millis(150)).await;
    luka.pause();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    luka.resume();
    let (status, answer) = spin.await.unwrap();
    assert_eq!(status, 200, "held back for 1.5 s with 500 ms of CPU time: {answer}");
    // The handler was running when the process was held back (not yet started, it would have run 0.4 s after).
    let ran = answer["ran"].as_f64().expect("the handler's wall time");
    assert!(ran >= 1.5, "the handler ran for {ran} s: held back before it started?");
}
