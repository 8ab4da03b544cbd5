//! The REST produce API against a real broker, read back with librdkafka.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use common::read::{assert_no_record, read_records, text};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[server]
max_body_bytes = 4096

[clusters.local]
bootstrap = ["{broker0}"]
produce_timeout_ms = 3000

[topics.greetings]
partitions = 1
[topics.cities]
partitions = 4
[topics."events.*"]
partitions = 2

[[users]]
name = "demo"
password = "demo"
topics = ["*"]

[[users]]
name = "greeter"
password = "hello"
topics = ["greetings"]
"#;

/// The `error` text of an error answer.
fn error_of(answer: &Value) -> &str {
    answer["error"].as_str().expect("an error answer has an error text")
}

fn offset(metadata: &Value) -> i64 {
    metadata["offset"].as_i64().expect("offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_path_message_writes_one_record() {
    let h = Harness::start(1, CONFIG).await;
    let before = chrono_now_ms();
    let (status, answer) = h.get("/produce/greetings/hello%20kafka?key=k1").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.is_object(), "path-only GET answers one object: {answer}");
    assert_eq!(answer["topic"], "greetings");
    assert_eq!(answer["partition"], 0);
    let ts = answer["timestamp"].as_i64().unwrap();
    assert!(ts >= before && ts <= chrono_now_ms(), "timestamp {ts} is now");

    let records = read_records(&h.bootstrap(0), "greetings", 0, offset(&answer), 1).await;
    assert_eq!(text(&records[0]), (Some("k1".into()), Some("hello kafka".into())));
    assert_eq!(records[0].timestamp_ms, Some(ts));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_variants_write_every_field_byte_for_byte() {
    let h = Harness::start(1, CONFIG).await;

    let (status, single) = h.post("/produce/greetings", r#"{"value": "hello_kafka"}"#).await;
    assert_eq!(status, 200, "{single}");
    assert!(
        single.is_array() && single.as_array().unwrap().len() == 1,
        "a single object answers an array: {single}"
    );

    let body = json!([
        {"partition": 1, "timestamp": 1637745834744i64, "key": "city", "value": "Istanbul",
         "headers": [{"key": "expire", "value": "1637745834756"}, {"key": "b", "value": "ü✓"}]},
        {"partition": 2, "timestamp": 1637745823147i64, "key": "city", "value": "London"},
        {"partition": 3, "timestamp": 1637455583829i64, "key": "city", "value": "Tokyo"},
    ]);
    let (status, answer) = h.post("/produce/cities", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let answer = answer.as_array().unwrap().clone();
    assert_eq!(answer.len(), 3);
    for (i, (partition, ts, value)) in [
        (1, 1637745834744i64, "Istanbul"),
        (2, 1637745823147, "London"),
        (3, 1637455583829, "Tokyo"),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(answer[i]["topic"], "cities");
        assert_eq!(answer[i]["partition"], partition);
        assert_eq!(answer[i]["timestamp"], ts);
        let records = read_records(&h.bootstrap(0), "cities", partition, offset(&answer[i]), 1).await;
        assert_eq!(records[0].partition, partition);
        assert_eq!(text(&records[0]), (Some("city".into()), Some(value.into())));
        assert_eq!(records[0].timestamp_ms, Some(ts));
        if i == 0 {
            let mut headers = records[0].headers.clone();
            headers.sort();
            assert_eq!(
                headers,
                vec![
                    ("b".to_owned(), Some("ü✓".as_bytes().to_vec())),
                    ("expire".to_owned(), Some(b"1637745834756".to_vec())),
                ]
            );
        }
    }

    // POST /produce: topic per message, several topics in one request, answered in request order.
    let body = json!([
        {"topic": "greetings", "value": "hello_world"},
        {"topic": "cities", "partition": 1, "value": "Istanbul"},
        {"topic": "greetings", "value": "hello_upstash"},
        {"topic": "events.click", "value": {"x": 1}},
        {"topic": "greetings", "value": null, "key": "gone"},
    ]);
    let (status, answer) = h.post("/produce", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let topics: Vec<&str> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        ["greetings", "cities", "greetings", "events.click", "greetings"]
    );
    let first = offset(&answer[0]);
    assert_eq!(
        offset(&answer[2]),
        first + 1,
        "one request's records for a partition are contiguous"
    );
    let records = read_records(&h.bootstrap(0), "greetings", 0, first, 3).await;
    assert_eq!(text(&records[0]).1.as_deref(), Some("hello_world"));
    assert_eq!(text(&records[1]).1.as_deref(), Some("hello_upstash"));
    assert_eq!(records[2].value, None, "null value is a tombstone");
    assert_eq!(records[2].key.as_deref(), Some(&b"gone"[..]));
    let event = &answer[3];
    let records = read_records(
        &h.bootstrap(0),
        "events.click",
        event["partition"].as_i64().unwrap() as i32,
        offset(event),
        1,
    )
    .await;
    assert_eq!(
        text(&records[0]).1.as_deref(),
        Some(r#"{"x":1}"#),
        "pattern topic created and written"
    );

    // GET with a body works like POST (the hosted API allows both).
    let response = h
        .http
        .get(h.url("/produce/greetings"))
        .basic_auth("demo", Some("demo"))
        .body(r#"[{"value":"via get"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_messages_land_where_javas_partitioner_puts_them() {
    let h = Harness::start(1, CONFIG).await;
    // From Kafka's murmur2 test vectors: toPositive(murmur2(key)) % 4.
    let expected = [("21", 0), ("foobar", 2), ("abc", 3)];
    let body: Vec<Value> = expected
        .iter()
        .map(|(k, _)| json!({"key": k, "value": format!("v-{k}")}))
        .collect();
    let (status, answer) = h.post("/produce/cities", &Value::Array(body).to_string()).await;
    assert_eq!(status, 200, "{answer}");
    for (i, (key, partition)) in expected.iter().enumerate() {
        assert_eq!(answer[i]["partition"], *partition, "key {key}");
        let records = read_records(&h.bootstrap(0), "cities", *partition, offset(&answer[i]), 1).await;
        assert_eq!(text(&records[0]), (Some((*key).to_owned()), Some(format!("v-{key}"))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_right_status_and_say_what_to_fix() {
    let h = Harness::start(1, CONFIG).await;
    let cases: [(&str, &str, u16, &str); 8] = [
        (
            "/produce/greetings",
            r#"{"value":"a","timestamp":-5}"#,
            400,
            "timestamp -5 is not a time Kafka can store",
        ),
        ("/produce/greetings", r#"{"value": "x""#, 400, "malformed JSON"),
        (
            "/produce/greetings",
            r#"[{"value":"a"},{"key":"k"}]"#,
            400,
            "message 2: missing field `value`",
        ),
        ("/produce", r#"{"value":"a"}"#, 400, "missing field `topic`"),
        (
            "/produce/greetings",
            r#"{"value":"x","partition":2147483648}"#,
            400,
            "partition must be an integer from 0 to 2147483647, got 2147483648",
        ),
        ("/produce/nope", r#"{"value":"a"}"#, 404, "kafka topic 'nope' not found"),
        (
            "/produce/cities",
            r#"[{"value":"a"},{"partition":9,"value":"b"}]"#,
            404,
            "message 2: kafka topic 'cities' has no partition 9",
        ),
        (
            "/produce/events.unseen",
            r#"{"partition":5,"value":"a"}"#,
            404,
            "has no partition 5",
        ),
    ];
    for (path, body, status, message) in cases {
        let started = Instant::now();
        let (got, answer) = h.post(path, body).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert_eq!(answer["status"], status);
        let error = error_of(&answer);
        assert!(
            error.contains(message),
            "{path} {body}: expected {message:?} in {error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} answered in {:?}",
            started.elapsed()
        );
    }

    // 401 without credentials or with a wrong password, with a challenge.
    let response = h
        .http
        .post(h.url("/produce/greetings"))
        .body(r#"{"value":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"luka\"");
    let response = h
        .http
        .post(h.url("/produce/greetings"))
        .basic_auth("demo", Some("nope"))
        .body(r#"{"value":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // 403: greeter may write greetings only, and a mixed request is refused whole.
    let response = h
        .http
        .post(h.url("/produce"))
        .basic_auth("greeter", Some("hello"))
        .body(r#"[{"topic":"greetings","value":"ok"},{"topic":"cities","value":"no"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["error"],
        "message 2: user 'greeter' may not write to topic 'cities'"
    );

    // 413 for a body over max_body_bytes.
    let big = format!(r#"{{"value":"{}"}}"#, "x".repeat(5000));
    let (status, answer) = h.post("/produce/greetings", &big).await;
    assert_eq!(status, 413, "{answer}");

    // 405 and 404 for other methods and paths.
    let response = h.http.delete(h.url("/produce/greetings")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let response = h.http.get(h.url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], 404);

    // None of the refused requests wrote anything: the next record of greetings is at offset 0.
    let (status, answer) = h.post("/produce/greetings", r#"{"value":"first"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(offset(&answer[0]), 0, "refused requests wrote nothing");
    for partition in 0..4 {
        assert_no_record(&h.bootstrap(0), "cities", partition, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_writes_to_two_clusters() {
    let config = r#"
[clusters.east]
bootstrap = ["{broker0}"]
default = true
[clusters.west]
bootstrap = ["{broker1}"]

[topics.orders]
partitions = 1
[topics.audit]
cluster = "west"
partitions = 1

[[users]]
name = "demo"
password = "demo"
topics = ["*"]
"#;
    let h = Harness::start(2, config).await;
    let (status, answer) = h
        .post(
            "/produce",
            r#"[{"topic":"orders","value":"o1"},{"topic":"audit","value":"a1"},{"topic":"orders","value":"o2"}]"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let orders = read_records(&h.bootstrap(0), "orders", 0, offset(&answer[0]), 2).await;
    assert_eq!(
        orders.iter().map(|r| text(r).1.unwrap()).collect::<Vec<_>>(),
        ["o1", "o2"]
    );
    let audit = read_records(&h.bootstrap(1), "audit", 0, offset(&answer[1]), 1).await;
    assert_eq!(text(&audit[0]).1.as_deref(), Some("a1"));
    // Each topic exists only on its own cluster.
    let east = h.app.producer.pool().cluster("east").await.unwrap();
    assert!(
        east.partition_count("audit", None).await.is_err(),
        "audit must not be on east"
    );
    let west = h.app.producer.pool().cluster("west").await.unwrap();
    assert!(
        west.partition_count("orders", None).await.is_err(),
        "orders must not be on west"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches_and_get_distinct_offsets() {
    let h = Harness::start(
        1,
        // No linger: batches form only because requests queue while a produce is in flight.
        &CONFIG.replace("produce_timeout_ms = 3000", "produce_timeout_ms = 10000\nlinger_ms = 0"),
    )
    .await;
    // Warm up: connect, create the topic.
    let (status, _) = h.post("/produce/greetings", r#"{"value":"warm"}"#).await;
    assert_eq!(status, 200);
    let cluster = h.app.producer.pool().cluster("local").await.unwrap();
    let requests_before = cluster.counters().requests.load(std::sync::atomic::Ordering::Relaxed);

    let n = 200;
    let calls = (0..n).map(|i| {
        let h = &h;
        async move { h.post("/produce/greetings", &format!(r#"{{"value":"c{i}"}}"#)).await }
    });
    let answers = futures::future::join_all(calls).await;
    let mut by_offset = std::collections::BTreeMap::new();
    for (i, (status, answer)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}: {answer}");
        by_offset.insert(offset(&answer[0]), format!("c{i}"));
    }
    assert_eq!(by_offset.len(), n, "every request got its own offset");
    let first = *by_offset.keys().next().unwrap();
    assert_eq!(
        *by_offset.keys().last().unwrap(),
        first + n as i64 - 1,
        "offsets are contiguous"
    );

    let sent = cluster.counters().requests.load(std::sync::atomic::Ordering::Relaxed) - requests_before;
    assert!(
        sent < n as u64,
        "{n} requests were sent as {sent} produce requests: batching did not happen"
    );
    eprintln!("{n} concurrent requests were sent to Kafka in {sent} produce requests");

    // Each offset holds exactly the value its caller was told.
    let records = read_records(&h.bootstrap(0), "greetings", 0, first, n).await;
    for record in records {
        assert_eq!(
            text(&record).1.as_ref(),
            by_offset.get(&record.offset),
            "offset {}",
            record.offset
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_is_a_503_and_recovery_needs_no_restart() {
    let h = Harness::start(
        1,
        &CONFIG.replace("produce_timeout_ms = 3000", "produce_timeout_ms = 2000"),
    )
    .await;
    let (status, _) = h.post("/produce/greetings", r#"{"value":"before"}"#).await;
    assert_eq!(status, 200);
    let (status, _) = h.get("/readyz").await;
    assert_eq!(status, 200);

    h.brokers[0].stop();
    for attempt in 0..3 {
        let started = Instant::now();
        let (status, answer) = h
            .post("/produce/greetings", &format!(r#"{{"value":"during-{attempt}"}}"#))
            .await;
        assert_eq!(status, 503, "attempt {attempt}: {answer}");
        assert!(
            error_of(&answer).contains("kafka cluster 'local' is unavailable"),
            "{answer}"
        );
        assert!(!error_of(&answer).contains("127.0.0.1"), "no internals leak: {answer}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "503 well under the produce timeout, took {:?}",
            started.elapsed()
        );
    }
    let (status, _) = h.get("/readyz").await;
    assert_eq!(status, 503);

    h.brokers[0].resume().await.unwrap();
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let (status, answer) = h.post("/produce/greetings", r#"{"value":"after"}"#).await;
        if status == 200 {
            break answer;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            Instant::now() < deadline,
            "luka did not recover after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "writes resumed {:?} after the broker came back",
        back.elapsed()
    );
    let records = read_records(&h.bootstrap(0), "greetings", 0, offset(&answer[0]), 1).await;
    assert_eq!(text(&records[0]).1.as_deref(), Some("after"));
    let (status, _) = h.get("/healthz").await;
    assert_eq!(status, 200);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_accepts_but_never_answers_is_a_504() {
    // A "broker" that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let config = format!(
        "[clusters.slow]\nbootstrap = [\"{silent_addr}\"]\nproduce_timeout_ms = 1000\n[topics.t]\n\
         [[users]]\nname = \"demo\"\npassword = \"demo\"\ntopics = [\"*\"]\n"
    );
    let h = Harness::start(0, &config).await;
    let started = Instant::now();
    let (status, answer) = h.post("/produce/t", r#"{"value":"a"}"#).await;
    assert_eq!(status, 504, "{answer}");
    assert!(error_of(&answer).contains("did not acknowledge in time"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_header_names_are_written_in_order() {
    let h = Harness::start(1, CONFIG).await;
    let headers = json!([
        {"key": "trace", "value": "1"},
        {"key": "hop", "value": "a"},
        {"key": "trace", "value": "2"},
        {"key": "trace", "value": "3"}
    ]);
    let body = json!([{"value": "v", "headers": headers}]);
    let (status, answer) = h.post("/produce/greetings", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let records = read_records(&h.bootstrap(0), "greetings", 0, offset(&answer[0]), 1).await;
    let read: Vec<(String, String)> = records[0]
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.clone().unwrap()).unwrap()))
        .collect();
    assert_eq!(
        read,
        [("trace", "1"), ("hop", "a"), ("trace", "2"), ("trace", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
}

/// A request's records for one partition go out as one batch; each of them, the last one included, must be
/// readable as soon as it is acknowledged, with nothing written after it (the development broker once stopped its
/// high watermark at the start of the newest batch and could not fetch from the middle of a batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_record_is_readable_at_once() {
    let h = Harness::start(1, CONFIG).await;
    for round in 0..2 {
        let body: Vec<Value> = (0..5).map(|i| json!({"value": format!("r{round}-{i}")})).collect();
        let (status, answer) = h.post("/produce/greetings", &Value::Array(body).to_string()).await;
        assert_eq!(status, 200, "{answer}");
        let offsets: Vec<i64> = answer.as_array().unwrap().iter().map(offset).collect();
        let first = offsets[0];
        assert_eq!(offsets, (first..first + 5).collect::<Vec<_>>(), "one contiguous batch");

        let bootstrap = h.bootstrap(0);
        assert_eq!(high_watermark(&bootstrap, "greetings", 0).await, first + 5);
        let all = read_records(&bootstrap, "greetings", 0, first, 5).await;
        let values: Vec<String> = all.iter().map(|r| text(r).1.unwrap()).collect();
        assert_eq!(values, (0..5).map(|i| format!("r{round}-{i}")).collect::<Vec<_>>());
        for (i, at) in offsets.iter().enumerate() {
            let one = read_records(&bootstrap, "greetings", 0, *at, 1).await;
            assert_eq!((one[0].offset, text(&one[0]).1), (*at, Some(format!("r{round}-{i}"))));
        }
    }
}

/// The partition's high watermark as librdkafka asks the broker for it (ListOffsets, latest).
async fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("librdkafka consumer");
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(5))
            .expect("watermarks");
        high
    })
    .await
    .expect("watermark thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_cap_a_call_is_a_503_with_retry_after() {
    // A cap of one produce at a time: a request writing two partitions at once finds the cap taken by itself.
    let h = Harness::start(
        1,
        &CONFIG.replace(
            "produce_timeout_ms = 3000",
            "produce_timeout_ms = 3000\nmax_in_flight = 1",
        ),
    )
    .await;
    let (status, _) = h.post("/produce/cities", r#"{"partition":0,"value":"warm"}"#).await;
    assert_eq!(status, 200);
    let response = h
        .http
        .post(h.url("/produce/cities"))
        .basic_auth("demo", Some("demo"))
        .body(r#"[{"partition":1,"value":"a"},{"partition":2,"value":"b"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let answer: Value = response.json().await.unwrap();
    assert!(
        error_of(&answer).contains("kafka cluster 'local' has 1 produce calls waiting already; retry shortly"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plaintext_broker_is_a_quick_503_that_says_tls() {
    // A plaintext Kafka listener reads a TLS ClientHello as an oversized request and closes the connection.
    let plaintext = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plaintext.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = plaintext.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut hello = [0u8; 512];
                let _ = socket.read(&mut hello).await;
            });
        }
    });
    let config = format!(
        "[clusters.local]\nbootstrap = [\"{addr}\"]\nproduce_timeout_ms = 3000\n[clusters.local.tls]\n\n\
         [topics.greetings]\n\n[[users]]\nname = \"demo\"\npassword = \"demo\"\ntopics = [\"*\"]\n"
    );
    let h = Harness::start(0, &config).await;
    for _ in 0..3 {
        let started = Instant::now();
        let (status, answer) = h.post("/produce/greetings", r#"{"value":"x"}"#).await;
        assert_eq!(status, 503, "{answer}");
        assert!(
            error_of(&answer).contains("the TLS handshake with its broker failed"),
            "{answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
}
