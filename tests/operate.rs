//! What operators rely on: request ids on every response and log line, an access log line per request, and W3C
//! trace context carried into the records a request writes (read back with librdkafka).

mod common;

use common::binary::Binary;
use common::read::{assert_no_record, header_texts, read_records};
use common::{Harness, Kafka, json_answer, offset, sample};
use serde_json::{Value, json};
use std::time::Duration;

on_both_brokers!(
    request_ids_and_trace_context_follow_the_request,
    trace_context_is_not_copied_when_turned_off,
    an_idempotency_key_replays_the_first_answer_without_writing,
    a_lua_route_that_opts_in_replays_its_first_answer_without_running_again
);

const CONFIG: &str = concat!(
    r#"
[clusters.local]
bootstrap = ["{broker0}"]

[topics.traced]
partitions = 1
"#,
    demo_user!()
);

const TRACED: &str = r#"
return function(req)
  local r = kafka.produce{ topic = "traced", messages = { { value = "from lua", headers = { own = "1" } } } }
  return { json = { offset = r.offset } }
end
"#;

/// One message of a string value: the fast path of `kafka.produce`, whose result the handler answers.
const TRACED_ONE: &str = r#"
return function(req)
  local r = kafka.produce{ topic = "traced", messages = { { value = "one" } } }
  return { json = { offset = r.offset, headers = r.messages[1].headers } }
end
"#;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn request_ids_and_trace_context_follow_the_request(kafka: Kafka) {
    let h = Harness::on_with(
        kafka,
        1,
        CONFIG,
        &[("traced.lua", TRACED), ("traced_one.lua", TRACED_ONE)],
    )
    .await;
    // The caller's id is echoed; without one, a new id is made.
    let given = h
        .http
        .get(h.url("/healthz"))
        .header("X-Request-Id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-42");
    let made = h.http.get(h.url("/nowhere")).send().await.unwrap();
    assert_eq!(made.status(), 404);
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");

    // REST: traceparent and tracestate travel into the record, after the message's own headers.
    let response = h
        .http
        .post(h.url("/produce/traced"))
        .basic_auth("demo", Some("demo"))
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "vendor=x")
        .body(r#"{"value":"rest","headers":[{"key":"own","value":"1"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let records = read_records(&h.bootstrap(0), "traced", 0, offset(&answer[0]), 1).await;
    assert_eq!(
        header_texts(&records[0]),
        [("own", "1"), ("traceparent", TRACEPARENT), ("tracestate", "vendor=x")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );

    // Lua: the same for records kafka.produce writes.
    let lua_answer = |path: &'static str| {
        let request = h.http.post(h.url(path)).header("traceparent", TRACEPARENT);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let answer = lua_answer("/traced").await;
    let records = read_records(&h.bootstrap(0), "traced", 0, offset(&answer), 1).await;
    assert_eq!(
        header_texts(&records[0]),
        [("own", "1"), ("traceparent", TRACEPARENT)].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    // The result of a one-message call names the headers written, the trace context among them.
    let answer = lua_answer("/traced_one").await;
    assert_eq!(
        answer["headers"],
        serde_json::json!({ "traceparent": TRACEPARENT }),
        "{answer}"
    );
    let records = read_records(&h.bootstrap(0), "traced", 0, offset(&answer), 1).await;
    assert_eq!(
        header_texts(&records[0]),
        [("traceparent".to_owned(), TRACEPARENT.to_owned())]
    );
}

/// Header (name, value) pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_trace_context_and_request_ids_are_taken() {
    let h = Harness::start(1, CONFIG).await;
    let long_state: String = (0..40).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
    let cases: [(Headers, Headers); 4] = [
        (&[("traceparent", "00-xyz-forged"), ("tracestate", "a=1")], &[]),
        (
            &[("traceparent", TRACEPARENT), ("tracestate", &long_state)],
            &[("traceparent", TRACEPARENT)],
        ),
        (&[("tracestate", "a=1")], &[]),
        (
            &[("traceparent", TRACEPARENT), ("tracestate", "rojo=00f067aa0ba902b7")],
            &[("traceparent", TRACEPARENT), ("tracestate", "rojo=00f067aa0ba902b7")],
        ),
    ];
    // REST and /webhook (which copies the request's other headers, but the trace context only as checked here).
    for path in ["/produce/traced", "/webhook?topic=traced"] {
        for (sent, kept) in cases {
            let mut request = h.http.post(h.url(path)).basic_auth("demo", Some("demo"));
            for (name, value) in sent {
                request = request.header(*name, *value);
            }
            let response = request.body(r#"{"value":"v"}"#).send().await.unwrap();
            let answer: Value = response.json().await.unwrap();
            let written = if answer.is_array() { &answer[0] } else { &answer };
            let records = read_records(&h.bootstrap(0), "traced", 0, offset(written), 1).await;
            let kept: Vec<(String, String)> = kept.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            assert_eq!(header_texts(&records[0]), kept, "{path}: sent {sent:?}");
        }
    }
    // A request id that is too long or not printable is replaced.
    for given in ["x".repeat(200), "two words".to_owned()] {
        let response = h
            .http
            .get(h.url("/healthz"))
            .header("X-Request-Id", &given)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{given} became {id}"
        );
    }
}

async fn trace_context_is_not_copied_when_turned_off(kafka: Kafka) {
    let config = format!("[server]\npropagate_trace_context = false\n{CONFIG}");
    let h = Harness::on(kafka, 1, &config).await;
    let response = h
        .http
        .post(h.url("/produce/traced"))
        .basic_auth("demo", Some("demo"))
        .header("traceparent", TRACEPARENT)
        .body(r#"{"value":"plain"}"#)
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    let records = read_records(&h.bootstrap(0), "traced", 0, offset(&answer[0]), 1).await;
    assert!(records[0].headers.is_empty(), "{:?}", records[0].headers);
    let response = h
        .http
        .post(h.url("/webhook?topic=traced"))
        .basic_auth("demo", Some("demo"))
        .header("traceparent", TRACEPARENT)
        .body("plain")
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    let records = read_records(&h.bootstrap(0), "traced", 0, offset(&answer), 1).await;
    assert!(records[0].headers.is_empty(), "/webhook: {:?}", records[0].headers);
}

/// A config for [`Binary::serve`]: JSON logs, an embedded broker with `topic` (one partition), and the user demo, who
/// may write and read every topic.
fn json_logging(http: std::net::SocketAddr, broker: std::net::SocketAddr, topic: &str) -> String {
    format!(
        "[server]\nlisten = \"{http}\"\nlog_format = \"json\"\n\n[clusters.local]\nbootstrap = [\"{broker}\"]\n\
         embedded = true\n\n[topics.{topic}]\npartitions = 1\n\n[[users]]\nname = \"demo\"\npassword = \"demo\"\n\
         topics = [\"*\"]\nread_topics = [\"*\"]\n"
    )
}

/// The access log lines of the request `request_id` in luka's JSON log `text`.
fn access_lines(text: &str, request_id: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "luka::access" && l["fields"]["request_id"] == request_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_json_access_log_line_with_its_id() {
    let dir = common::temp_dir();
    let luka = Binary::serve(&dir, |http, broker| json_logging(http, broker, "traced")).await;
    let http = luka.http;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{http}/produce/traced"))
        .basic_auth("demo", Some("demo"))
        .header("X-Request-Id", "access-log-test")
        .body(r#"[{"value":"a"},{"value":"b"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = luka.stop_and_read_log().await;
    let lines = access_lines(&text, "access-log-test");
    assert_eq!(lines.len(), 1, "{text}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["method"], "POST");
    assert_eq!(fields["path"], "/produce/traced");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["records"], 2);
    assert!(fields["duration_ms"].as_f64().is_some(), "{fields}");
}

/// A request whose client leaves before the answer is made still gets its access log line, with nginx's 499 ("client
/// closed request"): here a `/fetch` waiting for records that do not come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_left_is_logged_as_499() {
    use tokio::io::AsyncWriteExt;

    let dir = common::temp_dir();
    let luka = Binary::serve(&dir, |http, broker| json_logging(http, broker, "quiet")).await;
    // The partition's end, where a fetch waits for the next record.
    let (status, end) = json_answer(
        reqwest::Client::new()
            .post(format!("http://{}/offsets/latest", luka.http))
            .basic_auth("demo", Some("demo"))
            .body(r#"{"topic": "quiet", "partition": 0}"#),
    )
    .await;
    assert_eq!(status, 200, "{end}");
    let body = json!({"topic": "quiet", "partition": 0, "offset": end[0]["offset"], "timeout": 5000}).to_string();
    let mut socket = tokio::net::TcpStream::connect(luka.http).await.unwrap();
    let request = format!(
        "POST /fetch HTTP/1.1\r\nHost: luka\r\nAuthorization: Basic ZGVtbzpkZW1v\r\nX-Request-Id: left-early\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(socket);
    // Give luka a moment to see the connection close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = luka.stop_and_read_log().await;
    let lines = access_lines(&text, "left-early");
    assert_eq!(lines.len(), 1, "{text}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["path"], "/fetch");
    assert_eq!(fields["status"], 499, "{fields}");
    let waited = fields["duration_ms"].as_f64().expect("a duration");
    assert!(
        waited < 4000.0,
        "logged when the client left, not at the fetch's end: {fields}"
    );
}

/// SIGTERM stops luka as its README says: the listener closes, a keep-alive connection waiting for its next request
/// is closed at once, a request in progress is finished and answered, and the process exits as soon as that is
/// done (well within `shutdown_grace_ms`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_progress_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = common::temp_dir();
    let config = |http, broker| {
        format!(
            "[server]\nlisten = \"{http}\"\nshutdown_grace_ms = 20000\nbody_timeout_ms = 20000\n\n\
             [clusters.local]\nbootstrap = [\"{broker}\"]\nembedded = true\n\n[topics.traced]\npartitions = 1\n\n\
             [[users]]\nname = \"demo\"\npassword = \"demo\"\ntopics = [\"*\"]\n"
        )
    };
    let mut luka = Binary::serve(&dir, config).await;
    let http = luka.http;
    // Served once, then left waiting for its next request.
    let mut idle = tokio::net::TcpStream::connect(http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: luka\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = idle.read(&mut buffer).await.unwrap();
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buffer[..n])
    );
    // A produce whose body is half sent when the signal comes.
    let body = br#"[{"value":"sent before and after SIGTERM"}]"#;
    let mut in_progress = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST /produce/traced HTTP/1.1\r\nhost: luka\r\nauthorization: Basic ZGVtbzpkZW1v\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    in_progress.write_all(head.as_bytes()).await.unwrap();
    in_progress.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = std::time::Instant::now();
    luka.terminate();
    let closed = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buffer)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the idle connection is closed: {closed:?}"
    );
    assert!(
        luka.exited_within(Duration::from_millis(500)).await.is_none(),
        "luka waits for the request in progress"
    );

    in_progress.write_all(&body[10..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), in_progress.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""offset":0"#), "{answer}");
    let status = luka.exited_within(Duration::from_secs(10)).await.expect("luka exits");
    assert!(status.success(), "{status}\n{}", luka.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "took {:?}",
        signalled.elapsed()
    );
}

/// A request with an Idempotency-Key runs on after its client has gone, to learn its outcome; SIGTERM waits for it
/// as for a request in progress (here: until the paused broker resumes and acknowledges), rather than exit with its
/// record sent and its outcome unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_keyed_requests_whose_client_has_gone() {
    let broker = Binary::broker(&common::temp_dir()).await;
    let dir = common::temp_dir();
    let bootstrap = broker.broker;
    let config = move |http, _| {
        format!(
            "[server]\nlisten = \"{http}\"\nshutdown_grace_ms = 20000\n\n\
             [clusters.local]\nbootstrap = [\"{bootstrap}\"]\n\n[topics.kept]\npartitions = 1\n\n\
             [[users]]\nname = \"demo\"\npassword = \"demo\"\ntopics = [\"*\"]\n"
        )
    };
    let mut luka = Binary::serve(&dir, config).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/produce/kept", luka.http);
    let post = |value: &str| {
        client
            .post(&url)
            .basic_auth("demo", Some("demo"))
            .body(format!(r#"{{"value":"{value}"}}"#))
    };
    assert_eq!(post("warm").send().await.unwrap().status(), 200);
    broker.pause();
    let gone = post("keyed")
        .header("idempotency-key", "k-1")
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up: {gone:?}");

    luka.terminate();
    assert!(
        luka.exited_within(Duration::from_secs(1)).await.is_none(),
        "luka waits for the keyed request"
    );
    broker.resume();
    let status = luka.exited_within(Duration::from_secs(15)).await.expect("luka exits");
    assert!(status.success(), "{status}\n{}", luka.log());
}

/// With the default grace, SIGTERM waits for a request stuck on a slow cluster until it is answered: its produce
/// times out (the default 10 s and luka's margin) and the client gets the 504 that says what became of its record,
/// not a connection closed without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_by_default_waits_for_a_request_on_a_slow_cluster_to_be_answered() {
    let broker = Binary::broker(&common::temp_dir()).await;
    let dir = common::temp_dir();
    let bootstrap = broker.broker;
    let config = move |http, _| {
        format!(
            "[server]\nlisten = \"{http}\"\n\n[clusters.local]\nbootstrap = [\"{bootstrap}\"]\n\n\
             [topics.slow]\npartitions = 1\n\n[[users]]\nname = \"demo\"\npassword = \"demo\"\ntopics = [\"*\"]\n"
        )
    };
    let mut luka = Binary::serve(&dir, config).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/produce/slow", luka.http);
    let post = |value: &str| {
        client
            .post(&url)
            .basic_auth("demo", Some("demo"))
            .body(format!(r#"{{"value":"{value}"}}"#))
            .send()
    };
    assert_eq!(post("warm").await.unwrap().status(), 200);
    broker.pause();
    let waiting = tokio::spawn(post("stuck"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    luka.terminate();
    let answer = waiting.await.unwrap().expect("an answer, not a closed connection");
    let status = answer.status();
    let body = answer.text().await.unwrap();
    // Sent and not acknowledged: in doubt (or, if the outage was seen before it was sent, not written).
    assert!(
        (status == 504 && body.contains("may or may not have been written"))
            || (status == 503 && body.contains("nothing was written")),
        "{status} {body}"
    );
    let status = luka.exited_within(Duration::from_secs(5)).await.expect("luka exits");
    assert!(status.success(), "{status}\n{}", luka.log());
    broker.resume();
}

/// Started with a soft open-file limit below what `max_connections` needs (a shell's or systemd's 1024 against the
/// default 1,024 connections and the brokers'), luka raises it to the hard limit, which needs no privilege; past the
/// soft limit accepting clients and connecting to brokers would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_to_make_room_for_every_connection() {
    let dir = common::temp_dir();
    let config = |http, broker| {
        format!(
            "[server]\nlisten = \"{http}\"\n\n[clusters.local]\nbootstrap = [\"{broker}\"]\nembedded = true\n\n\
             [topics.quiet]\npartitions = 1\n"
        )
    };
    let luka = Binary::serve_with_open_files(&dir, 256, config).await;
    let (soft, hard) = luka.open_file_limits();
    let wanted = 1024 + 256;
    assert!(
        hard.is_some_and(|hard| hard < wanted) || soft.is_none_or(|soft| soft >= wanted),
        "soft {soft:?}, hard {hard:?}"
    );
    assert_eq!(soft, hard.or(Some(wanted)), "raised to the hard limit");
    let response = reqwest::get(format!("http://{}/healthz", luka.http)).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// `RUST_LOG=luka::access=off` silences the access log and nothing else (the writer is installed only when the
/// filter lets the line through, so the router asks no filter per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_can_silence_the_access_log_alone() {
    let dir = common::temp_dir();
    let config = |http, broker| {
        format!(
            "[server]\nlisten = \"{http}\"\n\n[clusters.local]\nbootstrap = [\"{broker}\"]\nembedded = true\n\n\
             [topics.quiet]\npartitions = 1\n"
        )
    };
    let luka = Binary::serve_with_env(&dir, &[("RUST_LOG", "warn,luka=info,luka::access=off")], config).await;
    let response = reqwest::get(format!("http://{}/healthz", luka.http)).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = luka.stop_and_read_log().await;
    assert!(text.contains("luka listening on"), "{text}");
    assert!(!text.contains("luka::access"), "{text}");
}

const METERED: &str = r#"
return function(req)
  if req.query.spin then while true do end end
  local r = kafka.produce{ topic = "metered", messages = { { value = "m" } } }
  return { json = { offset = r.offset } }
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_requests_are_served() {
    let config = format!("{CONFIG}\n[topics.metered]\npartitions = 1\n\n[lua]\ncpu_ms = 50\n");
    let h = Harness::start_with(1, &config, &[("metered.lua", METERED)]).await;
    let before = h.scrape_metrics().await;
    let rest = r#"[{"value":"a"},{"value":"b"},{"value":"c"}]"#;
    let response = h
        .http
        .post(h.url("/produce/metered"))
        .basic_auth("demo", Some("demo"))
        .body(rest)
        .send()
        .await;
    assert_eq!(response.unwrap().status(), 200);
    assert_eq!(h.http.post(h.url("/metered")).send().await.unwrap().status(), 200);
    assert_eq!(
        h.http.post(h.url("/metered?spin=1")).send().await.unwrap().status(),
        500
    );
    let after = h.scrape_metrics().await;

    let delta = |name: &str, labels: &[&str]| sample(&after, name, labels) - sample(&before, name, labels);
    let metered = ["topic=\"metered\"", "result=\"ok\""];
    assert_eq!(delta("luka_records_total", &metered), 4.0, "{after}");
    assert!(delta("luka_record_bytes_total", &metered) >= 4.0, "{after}");
    assert!(delta("luka_produce_requests_total", &metered) >= 1.0, "{after}");
    let function = ["kind=\"function\"", "function=\"metered.lua\""];
    assert_eq!(
        delta("luka_http_requests_total", &[function[0], function[1], "class=\"2xx\""]),
        1.0
    );
    assert_eq!(
        delta("luka_http_requests_total", &[function[0], function[1], "class=\"5xx\""]),
        1.0
    );
    assert!(delta("luka_http_requests_total", &["kind=\"rest\"", "class=\"2xx\""]) >= 1.0);
    assert!(delta("luka_lua_limit_hits_total", &["kind=\"cpu\""]) >= 1.0);
    assert!(delta("luka_http_request_duration_seconds_count", &["kind=\"function\""]) >= 2.0);
    assert!(sample(&after, "luka_produce_batch_records_count", &[]) >= 1.0);
    assert_eq!(
        sample(&after, "luka_kafka_cluster_reachable", &["cluster=\"local\""]),
        1.0
    );
    assert!(sample(&after, "luka_lua_vm_memory_bytes", &["vm=\""]) > 0.0, "{after}");
    assert!(after.contains("# TYPE luka_http_in_flight_requests gauge"), "{after}");
}

/// `/metrics` is what its Content-Type says, as Prometheus's own Python client parses it: the classic text format
/// (0.0.4, counters typed under their `_total` names; served OpenMetrics text, every counter sample would be untyped)
/// by default, OpenMetrics to a scraper that asks for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_the_format_they_claim() {
    let h = Harness::start(1, CONFIG).await;
    assert_eq!(h.http.get(h.url("/healthz")).send().await.unwrap().status(), 200);

    let classic = h.scrape_metrics().await;
    let families = common::parse_metrics(&classic, "classic").unwrap_or_else(|e| panic!("{e}:\n{classic}"));
    let untyped: Vec<_> = families.iter().filter(|(_, kind, _)| kind == "unknown").collect();
    assert!(untyped.is_empty(), "untyped families: {untyped:?}\n{classic}");
    let requests = families
        .iter()
        .find(|(name, _, _)| name == "luka_http_requests")
        .expect("requests");
    assert_eq!((requests.1.as_str(), requests.2 > 0), ("counter", true), "{classic}");

    let response = h
        .http
        .get(h.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let families = common::parse_metrics(&text, "openmetrics").unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let requests = families
        .iter()
        .find(|(name, _, _)| name == "luka_http_requests")
        .expect("requests");
    assert_eq!((requests.1.as_str(), requests.2 > 0), ("counter", true), "{text}");
    let duration = families
        .iter()
        .find(|(name, _, _)| name == "luka_http_request_duration_seconds")
        .expect("durations");
    assert_eq!(duration.1, "histogram");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_protected_or_turned_off() {
    let protected =
        format!("[metrics]\nuser = \"ops\"\n{CONFIG}\n[[users]]\nname = \"ops\"\npassword = \"o\"\ntopics = []\n");
    let h = Harness::start(1, &protected).await;
    let anonymous = h.http.get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let other = h
        .http
        .get(h.url("/metrics"))
        .basic_auth("demo", Some("demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401);
    let ops = h
        .http
        .get(h.url("/metrics"))
        .basic_auth("ops", Some("o"))
        .send()
        .await
        .unwrap();
    assert_eq!(ops.status(), 200);

    let off = Harness::start(1, &format!("[metrics]\nenabled = false\n{CONFIG}")).await;
    assert_eq!(off.http.get(off.url("/metrics")).send().await.unwrap().status(), 404);
}

async fn an_idempotency_key_replays_the_first_answer_without_writing(kafka: Kafka) {
    let h = Harness::on(kafka, 1, CONFIG).await;
    let send = |key: &'static str, body: &'static str| {
        h.http
            .post(h.url("/produce/traced"))
            .basic_auth("demo", Some("demo"))
            .header("Idempotency-Key", key)
            .body(body)
            .send()
    };
    let first = send("order-1", r#"{"value":"once"}"#).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send("order-1", r#"{"value":"once"}"#).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let offset = offset(&first[0]);
    assert_no_record(&h.bootstrap(0), "traced", 0, offset + 1).await;

    let other = send("order-1", r#"{"value":"different"}"#).await.unwrap();
    assert_eq!(other.status(), 422);
    // Another key writes again.
    let new = send("order-2", r#"{"value":"once"}"#).await.unwrap();
    assert_eq!(new.status(), 200);
    let new: Value = new.json().await.unwrap();
    assert_eq!(new[0]["offset"], offset + 1);
    let records = read_records(&h.bootstrap(0), "traced", 0, offset, 2).await;
    assert_eq!(records.len(), 2);
}

const PAY: &str = r#"
return function(req)
  if req.body == "refuse" then return { status = 400, json = { error = "refused" } } end
  local r = kafka.produce{ topic = "traced", messages = { { value = req.body } } }
  return { status = 201, headers = { ["x-paid"] = "yes" }, json = { offset = r.offset } }
end
"#;

async fn a_lua_route_that_opts_in_replays_its_first_answer_without_running_again(kafka: Kafka) {
    let config = format!(
        "{CONFIG}\n[[routes]]\npath = \"/pay\"\nfunction = \"pay.lua\"\nmethods = [\"POST\"]\nidempotency = true\n\
         [[routes]]\npath = \"/plain\"\nfunction = \"pay.lua\"\nmethods = [\"POST\"]\n"
    );
    let h = Harness::on_with(kafka, 1, &config, &[("pay.lua", PAY)]).await;
    let send = |path: &'static str, key: &'static str, body: &'static str| {
        h.http
            .post(h.url(path))
            .header("Idempotency-Key", key)
            .body(body)
            .send()
    };
    let first = send("/pay", "p-1", "ten").await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let offset = first["offset"].as_i64().unwrap();

    let again = send("/pay", "p-1", "ten").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["x-paid"], "yes");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_no_record(&h.bootstrap(0), "traced", 0, offset + 1).await;
    assert_eq!(send("/pay", "p-1", "eleven").await.unwrap().status(), 422);

    // An unsuccessful answer is not remembered: the repeat runs the handler again.
    assert_eq!(send("/pay", "p-2", "refuse").await.unwrap().status(), 400);
    let retried = send("/pay", "p-2", "refuse").await.unwrap();
    assert_eq!(retried.status(), 400);
    assert!(retried.headers().get("idempotent-replayed").is_none());

    // A route that does not opt in runs every time, key or not.
    for _ in 0..2 {
        let plain = send("/plain", "p-1", "ten").await.unwrap();
        assert!(plain.headers().get("idempotent-replayed").is_none());
        assert_eq!(plain.status(), 201);
    }
    let records = read_records(&h.bootstrap(0), "traced", 0, offset, 3).await;
    let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(
        values,
        vec![b"ten".to_vec(); 3],
        "one write through /pay, two through /plain"
    );
}

/// Server errors are logged once per distinct error per 10 s, not once per kind: a function failing again and again
/// does not hide another function's error, nor its own different one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_functions_distinct_errors_reach_the_log() {
    let dir = common::temp_dir();
    let config = |http, broker| {
        format!(
            "[server]\nlisten = \"{http}\"\nlog_format = \"json\"\n\n[clusters.local]\nbootstrap = [\"{broker}\"]\n\
         embedded = true\n\n[[routes]]\npath = \"/noisy\"\nfunction = \"noisy.lua\"\n\n[[routes]]\npath = \"/quiet\"\n\
         function = \"quiet.lua\"\n"
        )
    };
    common::write_function(
        &dir,
        "noisy.lua",
        r#"return function(req) error("boom " .. req.query.n) end"#,
    );
    common::write_function(&dir, "quiet.lua", r#"return function(req) error("SEKRIT-42") end"#);
    let luka = Binary::serve(&dir, config).await;
    let http = luka.http;
    let client = reqwest::Client::new();
    let long = format!("/noisy?n={}", "x".repeat(20_000));
    for path in [
        "/noisy?n=1",
        "/noisy?n=1",
        "/noisy?n=1",
        "/quiet",
        "/noisy?n=2",
        "/quiet",
        // Request data in a handler's error: one line in the log (a forged line in the human format otherwise),
        // and cut.
        "/noisy?n=3%0A2026-01-01T00:00:00Z%20INFO%20luka::access:%20forged",
        &long,
    ] {
        let response = client.get(format!("http://{http}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 500, "{path}");
    }
    // A request luka does not serve (501) is the client's doing, in words it chooses: nothing is logged for it.
    for request in [
        "POST /quiet HTTP/1.1\r\nHost: luka\r\nTransfer-Encoding: zz-7, chunked\r\n\r\n0\r\n\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 501", "{request:?}");
    }
    let text = luka.stop_and_read_log().await;
    let failures: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "request failed")
        .map(|l| l["fields"]["error"].as_str().unwrap_or_default().to_owned())
        .collect();
    let count = |needle: &str| failures.iter().filter(|e| e.contains(needle)).count();
    assert_eq!(count("boom 1"), 1, "a repeat is suppressed: {failures:?}");
    assert_eq!(
        count("boom 2"),
        1,
        "another message of the same function is logged: {failures:?}"
    );
    assert_eq!(
        count("SEKRIT-42"),
        1,
        "another function's error is logged: {failures:?}"
    );
    assert_eq!(count("boom 3\\n2026-01-01T00:00:00Z INFO"), 1, "{failures:?}");
    assert!(failures.iter().all(|e| !e.contains('\n')), "{failures:?}");
    assert_eq!(count("is not supported"), 0, "501s are not failures: {failures:?}");
    let cut = failures
        .iter()
        .find(|e| e.contains("boom xxx"))
        .expect("the long error is logged");
    assert!(cut.len() < 5 * 1024 && cut.ends_with('…'), "{} bytes", cut.len());
}
