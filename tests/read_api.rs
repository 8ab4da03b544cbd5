//! The hosted API's endpoints around produce (`/webhook`, `/topics`, `/offsets`, `/fetch`) against a real broker,
//! checked against what librdkafka reads.

mod common;

use std::time::{Duration, Instant};

use common::read::{
    assert_fetched, fetched_timestamps, header_texts, java_create_topic, java_grow_topic, java_produce_at,
    java_produce_with_null_header, java_produce_zstd, librdkafka_compressed_batch,
    librdkafka_record_with_empty_headers, librdkafka_transaction, read_records,
};
use common::{Harness, Kafka, error_of, json_answer, offset};
use serde_json::{Value, json};

on_both_brokers!(
    webhook_writes_the_raw_body_with_its_headers,
    topics_lists_what_the_user_may_write,
    offsets_and_fetch_give_what_librdkafka_reads,
    read_errors_say_what_is_wrong
);

const CONFIG: &str = concat!(
    example_topics!(),
    r#"
[topics.secret]
partitions = 1

[[users]]
name = "demo"
password = "demo"
topics = ["greetings", "cities"]
read_topics = ["greetings", "cities"]

[[users]]
name = "writer"
password = "w"
topics = ["*"]

[[users]]
name = "reader"
password = "r"
topics = []
read_topics = ["*"]
"#
);

async fn call(h: &Harness, method: &str, path: &str, user: (&str, &str), body: &str) -> (u16, Value) {
    let request = h.http.request(method.parse().unwrap(), h.url(path));
    json_answer(request.basic_auth(user.0, Some(user.1)).body(body.to_owned())).await
}

const DEMO: (&str, &str) = ("demo", "demo");

async fn webhook_writes_the_raw_body_with_its_headers(kafka: Kafka) {
    let h = Harness::on(kafka, 1, CONFIG).await;
    // Query-parameter credentials, a key, non-standard headers (one repeated, around another: the values of one
    // name are written together), a body that is not JSON.
    let response = h
        .http
        .post(h.url("/webhook?topic=greetings&key=k1&user=demo&pass=demo"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Hop", "1")
        .header("X-Event", "push")
        .header("X-Hop", "2")
        .body("a=1&b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["topic"], "greetings");
    let records = read_records(&h.bootstrap(0), "greetings", 0, offset(&answer), 1).await;
    assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(records[0].value.as_deref(), Some(&b"a=1&b=2"[..]));
    assert_eq!(
        header_texts(&records[0]),
        [("x-hop", "1"), ("x-hop", "2"), ("x-event", "push")].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert_eq!(records[0].timestamp_ms, answer["timestamp"].as_i64());

    // A sender's own bearer token (a push service's, for its receiver) does not hide the query's credentials.
    let response = h
        .http
        .post(h.url("/webhook?topic=greetings&user=demo&pass=demo"))
        .bearer_auth("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
        .body("pushed")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A key that is not UTF-8 is written as its bytes, as `/produce` writes it (not replaced by U+FFFD).
    let (status, answer) = call(&h, "POST", "/webhook?topic=greetings&key=%FF%FEk+1", DEMO, "binary key").await;
    assert_eq!(status, 200, "{answer}");
    let records = read_records(&h.bootstrap(0), "greetings", 0, offset(&answer), 1).await;
    assert_eq!(records[0].key.as_deref(), Some(&b"\xFF\xFEk 1"[..]));

    // GET works too; errors.
    let (status, _) = call(&h, "GET", "/webhook?topic=greetings", DEMO, "").await;
    assert_eq!(status, 200);
    let (status, answer) = call(&h, "POST", "/webhook", DEMO, "x").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("/webhook?topic=NAME"));
    let (status, _) = call(&h, "POST", "/webhook?topic=secret", DEMO, "x").await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &h,
        "POST",
        "/webhook?topic=greetings&user=demo&pass=nope",
        ("demo", "wrong"),
        "x",
    )
    .await;
    assert_eq!(status, 401);
}

async fn topics_lists_what_the_user_may_write(kafka: Kafka) {
    let h = Harness::on(kafka, 1, CONFIG).await;
    // Configured topics are created on first use of the cluster.
    let (status, _) = call(&h, "POST", "/produce/greetings", DEMO, r#"{"value":"x"}"#).await;
    assert_eq!(status, 200);
    let (status, topics) = call(&h, "GET", "/topics", DEMO, "").await;
    assert_eq!(status, 200, "{topics}");
    assert_eq!(topics, json!({"greetings": 1, "cities": 4}));
    let (status, topics) = call(&h, "GET", "/topics", ("writer", "w"), "").await;
    assert_eq!(status, 200, "{topics}");
    assert_eq!(topics, json!({"greetings": 1, "cities": 4, "secret": 1}));
    let (status, _) = call(&h, "POST", "/topics", DEMO, "").await;
    assert_eq!(status, 405);
}

/// A record whose header has a null value (Java's `new RecordHeader("n", null)`) is read like any other, the null
/// as "": it made the whole batch undecodable, and every /fetch that reached it a 503. Apache Kafka only: luka's own
/// API cannot write a null header value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_header_value_is_read_as_empty() {
    let h = Harness::on(Kafka::Apache, 1, CONFIG).await;
    let (status, written) = call(&h, "POST", "/produce/greetings", DEMO, r#"{"value": "first"}"#).await;
    assert_eq!(status, 200, "{written}");
    let (partition, offset) = java_produce_with_null_header(&h.bootstrap(0), "greetings", "k").await;
    let position = json!({"topic": "greetings", "partition": partition, "offset": offset});
    let (status, fetched) = call(&h, "POST", "/fetch", DEMO, &position.to_string()).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(
        fetched[0]["headers"],
        json!([{"key": "x", "value": "1"}, {"key": "x", "value": "2"}, {"key": "n", "value": ""}]),
        "{fetched}"
    );
}

/// Kafka stores any timestamp a producer sends and the topic's window allows, also one past the year 262142 where
/// chrono's dates end: such a record is read with its timestamp as stored, and does not fail the read of the
/// records after it (it did: every /fetch that reached it was a 503). Apache Kafka only: the window is a topic config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_timestamp_past_chronos_dates_is_read_as_stored() {
    let config = format!("{CONFIG}\n[topics.far]\ncluster = \"local\"\n");
    let h = Harness::on(Kafka::Apache, 1, &config).await;
    java_create_topic(
        &h.bootstrap(0),
        "far",
        1,
        &[("message.timestamp.after.max.ms", &i64::MAX.to_string())],
    )
    .await;
    let far = 9_000_000_000_000_000_i64;
    let first = java_produce_at(&h.bootstrap(0), "far", 0, far).await;
    java_produce_at(&h.bootstrap(0), "far", 0, 1_637_745_834_744).await;
    let position = json!({"topic": "far", "partition": 0, "offset": first});
    let (status, fetched) = call(&h, "POST", "/fetch", ("reader", "r"), &position.to_string()).await;
    assert_eq!(status, 200, "{fetched}");
    let times = fetched_timestamps(&fetched);
    assert_eq!(times, [far, 1_637_745_834_744], "{fetched}");
}

/// On a topic whose records take the broker's time (`message.timestamp.type=LogAppendTime`), /fetch gives that time,
/// as the produce answer and Kafka's own consumers do, not the time the producer sent; and /offsets/<time> finds
/// records by it (luka checks Kafka's answer against the records it reads). Apache Kafka only: the development
/// broker has no topic configs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topics_are_read_at_the_brokers_time() {
    let config = format!("{CONFIG}\n[topics.appended]\ncluster = \"local\"\n");
    let h = Harness::on(Kafka::Apache, 1, &config).await;
    java_create_topic(
        &h.bootstrap(0),
        "appended",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let sent = 1_637_745_834_744_i64;
    let body = json!([{"value": "a", "timestamp": sent}, {"value": "b", "timestamp": sent + 1}]);
    let (status, written) = call(&h, "POST", "/produce/appended", ("writer", "w"), &body.to_string()).await;
    assert_eq!(status, 200, "{written}");
    let appended = written[0]["timestamp"].as_i64().expect("a timestamp");
    assert!(appended > sent + 1, "the broker's time: {written}");
    let first = offset(&written[0]);
    let position = json!({"topic": "appended", "partition": 0, "offset": first});
    let (status, fetched) = call(&h, "POST", "/fetch", ("reader", "r"), &position.to_string()).await;
    assert_eq!(status, 200, "{fetched}");
    let times = fetched_timestamps(&fetched);
    assert_eq!(times, [appended, appended], "{fetched}");
    let tp = r#"{"topic": "appended", "partition": 0}"#;
    let (status, at) = call(&h, "GET", &format!("/offsets/{appended}"), ("reader", "r"), tp).await;
    assert_eq!(status, 200, "{at}");
    assert_eq!(at[0]["offset"], first, "the first record written at or after that time");
}

/// Partitions added to a topic can be read at once: a partition past the cached count is looked up again before the
/// answer is a 404 (which would otherwise last until the cache's `metadata_max_age_ms`, 30 s), as for a produce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_to_a_topic_can_be_read_at_once() {
    let config = format!("{CONFIG}\n[topics.grown]\ncluster = \"local\"\n");
    let h = Harness::on(Kafka::Apache, 1, &config).await;
    java_create_topic(&h.bootstrap(0), "grown", 2, &[]).await;
    let latest_of_3 = || {
        call(
            &h,
            "POST",
            "/offsets/latest",
            ("reader", "r"),
            r#"{"topic":"grown","partition":3}"#,
        )
    };
    let (status, answer) = latest_of_3().await;
    assert_eq!(status, 404, "{answer}");
    java_grow_topic(&h.bootstrap(0), "grown", 4).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, answer) = latest_of_3().await;
        if status == 200 {
            assert_eq!(answer[0]["offset"], 0, "{answer}");
            break;
        }
        assert_eq!(status, 404, "{answer}");
        assert!(Instant::now() < deadline, "partition 3 still unknown: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Apache Kafka with `fetch_max_bytes = 1024` (a fetch reads one of the batches below), where luka wrote "first" to
/// greetings/0 (making the topic), then librdkafka `aborted` in an aborted transaction, each value in a batch of its
/// own, and `committed` in a committed one; and the offset after "first".
async fn after_an_aborted_transaction(aborted: Vec<Vec<u8>>, committed: Vec<Vec<u8>>) -> (Harness, i64) {
    let config = format!("[server]\nfetch_max_bytes = 1024\n{CONFIG}");
    let h = Harness::on(Kafka::Apache, 1, &config).await;
    let (status, written) = call(&h, "POST", "/produce/greetings", DEMO, r#"{"value": "first"}"#).await;
    assert_eq!(status, 200, "{written}");
    librdkafka_transaction(&h.bootstrap(0), ("greetings", 0), "none", aborted, false).await;
    librdkafka_transaction(&h.bootstrap(0), ("greetings", 0), "none", committed, true).await;
    let after_first = offset(&written[0]) + 1;
    (h, after_first)
}

/// `count` values "aborted-N-xxx...", each `length` x's long.
fn aborted_values(count: usize, length: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("aborted-{i}-{}", "x".repeat(length)).into_bytes())
        .collect()
}

/// A reader never sees the records of an aborted transaction: Kafka sends them to a `READ_COMMITTED` fetch with the
/// list of aborted transactions, for the reader to drop (luka showed them). And a fetch whose `fetch_max_bytes`
/// holds aborted batches only goes on past them, rather than answer nothing to every fetch from that offset. Apache
/// Kafka only: the development broker has no transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_aborted_transactions_are_never_read() {
    let committed = vec![b"committed-0".to_vec(), b"committed-1".to_vec()];
    let (h, after_first) = after_an_aborted_transaction(aborted_values(3, 2000), committed).await;
    let position = json!({"topic": "greetings", "partition": 0, "offset": after_first});
    let (status, fetched) = call(&h, "POST", "/fetch", DEMO, &position.to_string()).await;
    assert_eq!(status, 200, "{fetched}");
    // The aborted values are long: their first 11 characters say which they are.
    let values: Vec<&str> = fetched
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| m["value"].as_str().expect("a text value"))
        .map(|v| &v[..v.len().min(11)])
        .collect();
    assert_eq!(values, ["committed-0", "committed-1"]);
}

/// An offset inside aborted transactions longer than a fetch skips in one request (200 ms of fetches without a wait,
/// here 4,000 batches, one per fetch) is read past over the reader's next requests, though each asks from the same
/// offset: where a request got to is kept for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_inside_long_aborted_transactions_get_past_them() {
    let committed = vec![b"committed".to_vec()];
    let (h, after_first) = after_an_aborted_transaction(aborted_values(4000, 1024), committed).await;
    // No wait: each request skips for 200 ms (here about 500 of the 4,000 batches).
    let position = json!({"topic": "greetings", "partition": 0, "offset": after_first, "timeout": 0}).to_string();
    for request in 1..=100 {
        let (status, fetched) = call(&h, "POST", "/fetch", DEMO, &position).await;
        assert_eq!(status, 200, "{fetched}");
        let messages = fetched.as_array().expect("a list of messages");
        if let Some(first) = messages.first() {
            assert_eq!(first["value"], "committed", "request {request}: {fetched}");
            assert!(
                request > 1,
                "one request skipped all the aborted batches: the test shows nothing"
            );
            return;
        }
    }
    panic!("100 requests from the same offset never got past the aborted transaction");
}

/// A record batch is read whole, and compressed it can hold far more than it takes on the broker (a few hundred bytes
/// of zstd can hold gigabytes): one position's read decompresses at most `fetch_max_total_bytes`. The records
/// before such a batch are answered; the batch itself is a 413 that says where it is and which setting limits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_decompresses_past_the_read_limit_is_refused() {
    const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];
    let config = format!("[server]\nfetch_max_total_bytes = 1048576\n{CONFIG}\n[topics.packed]\npartitions = 4\n");
    let h = &Harness::on(Kafka::Apache, 1, &config).await;
    for (partition, codec) in CODECS.into_iter().enumerate() {
        let small = json!({"value": "small", "partition": partition}).to_string();
        let (status, written) = call(h, "POST", "/produce/packed", ("writer", "w"), &small).await;
        assert_eq!(status, 200, "{written}");
        let first = offset(&written[0]);
        librdkafka_compressed_batch(
            &h.bootstrap(0),
            "packed",
            partition as i32,
            vec![vec![b'x'; 1 << 20]; 4],
            codec,
        )
        .await;
        let fetch = |offset: i64| {
            let position = json!({"topic": "packed", "partition": partition, "offset": offset});
            async move { call(h, "POST", "/fetch", ("reader", "r"), &position.to_string()).await }
        };
        let (status, fetched) = fetch(first).await;
        assert_eq!(status, 200, "{codec}: {fetched}");
        let values: Vec<&str> = fetched
            .as_array()
            .expect("a list of messages")
            .iter()
            .map(|m| &m["value"].as_str().expect("a text value")[..5])
            .collect();
        assert_eq!(values, ["small"], "{codec}: the batch past the limit is not read");
        let (status, refused) = fetch(first + 1).await;
        assert_eq!(status, 413, "{codec}: {refused}");
        let error = error_of(&refused);
        assert!(
            error.contains(&format!("offset {}", first + 1)) && error.contains("fetch_max_total_bytes"),
            "{codec}: {error}"
        );
    }
    // A batch past the limit that belongs to an aborted transaction is dropped unread, as aborted batches are: the
    // read goes on past it.
    let (status, written) = call(h, "POST", "/produce/packed", ("writer", "w"), r#"{"value": "small"}"#).await;
    assert_eq!(status, 200, "{written}");
    let partition = written[0]["partition"].as_i64().unwrap() as i32;
    let packed = ("packed", partition);
    librdkafka_transaction(&h.bootstrap(0), packed, "zstd", vec![vec![b'x'; 4 << 20]], false).await;
    librdkafka_transaction(&h.bootstrap(0), packed, "none", vec![b"after".to_vec()], true).await;
    let position = json!({"topic": "packed", "partition": partition, "offset": offset(&written[0]) + 1});
    let (status, fetched) = call(h, "POST", "/fetch", ("reader", "r"), &position.to_string()).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched[0]["value"], "after", "{fetched}");
    // Uncompressed too, what records take once read counts: 50,000 empty headers are 100 KB on the broker and about
    // 2.4 MB once read.
    let after = offset(&fetched[0]);
    librdkafka_record_with_empty_headers(&h.bootstrap(0), "packed", partition, 50_000).await;
    let position = json!({"topic": "packed", "partition": partition, "offset": after + 1});
    let (status, refused) = call(h, "POST", "/fetch", ("reader", "r"), &position.to_string()).await;
    assert_eq!(status, 413, "{}", start_of(&refused));
    // zstd makes the window a frame asks for before it decodes anything: at level 22 that is 128 MiB for a record of
    // 100 KB. A read allows at most 8 MiB here (its budget rounded up to a power of two, at least 2^23).
    let packed = java_produce_zstd(&h.bootstrap(0), "packed", partition, 22, 100_000).await;
    let position = json!({"topic": "packed", "partition": partition, "offset": packed});
    let (status, refused) = call(h, "POST", "/fetch", ("reader", "r"), &position.to_string()).await;
    assert_eq!(status, 413, "{}", start_of(&refused));
    let modest = java_produce_zstd(&h.bootstrap(0), "packed", partition, 19, 100_000).await;
    let position = json!({"topic": "packed", "partition": partition, "offset": modest});
    let (status, fetched) = call(h, "POST", "/fetch", ("reader", "r"), &position.to_string()).await;
    assert_eq!(status, 200, "{}", start_of(&fetched));
}

/// What records take once read counts over all of a request's positions, not only within each one's read: records
/// of 15,000 empty headers (30 KB each on the broker, about 700 KB once read and answered) at ten positions are
/// answered up to `fetch_max_total_bytes`, the record that crosses it the last. Counted by their key, value and header
/// bytes alone (7 bytes each), all ten were held and answered: 150,000 headers, 3 MB of JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_records_take_once_read_counts_over_all_positions() {
    let config = format!("[server]\nfetch_max_total_bytes = 1048576\n{CONFIG}\n[topics.headers]\npartitions = 1\n");
    let h = &Harness::on(Kafka::Apache, 1, &config).await;
    let (status, written) = call(h, "POST", "/produce/headers", ("writer", "w"), r#"{"value": "first"}"#).await;
    assert_eq!(status, 200, "{written}");
    let first = offset(&written[0]) + 1;
    for _ in 0..10 {
        librdkafka_record_with_empty_headers(&h.bootstrap(0), "headers", 0, 15_000).await;
    }
    let positions: Vec<Value> = (0..10)
        .map(|i| json!({"topic": "headers", "partition": 0, "offset": first + i}))
        .collect();
    let body = json!({ "topicPartitionOffsets": positions }).to_string();
    let (status, fetched) = call(h, "POST", "/fetch", ("reader", "r"), &body).await;
    assert_eq!(status, 200, "{}", start_of(&fetched));
    let messages = fetched.as_array().expect("a list of messages");
    let offsets: Vec<i64> = messages.iter().map(offset).collect();
    assert_eq!(
        offsets,
        [first, first + 1],
        "the second record crosses 1 MiB and is the last"
    );
    assert!(
        messages
            .iter()
            .all(|m| m["headers"].as_array().map(Vec::len) == Some(15_000))
    );
}

/// `/topics` asks only the clusters that may hold a topic the user may write: another cluster being down does not
/// fail the list (it was a 503 naming that cluster); the user's own cluster being down still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_asks_only_the_clusters_of_the_users_topics() {
    let config = r#"
[clusters.up]
bootstrap = ["{broker0}"]

[clusters.down]
bootstrap = ["127.0.0.1:1"]

[topics.here]
cluster = "up"
partitions = 2

[topics.there]
cluster = "down"

[topics."logs.*"]
cluster = "down"

[[users]]
name = "near"
password = "n"
topics = ["here"]

[[users]]
name = "far"
password = "f"
topics = ["there"]
"#;
    let h = &Harness::on(Kafka::Embedded, 1, config).await;
    let (status, written) = call(h, "POST", "/produce/here", ("near", "n"), r#"{"value": "x"}"#).await;
    assert_eq!(status, 200, "{written}");
    let (status, topics) = call(h, "GET", "/topics", ("near", "n"), "").await;
    assert_eq!((status, &topics), (200, &json!({"here": 2})));
    let (status, answer) = call(h, "GET", "/topics", ("far", "f"), "").await;
    assert_eq!(status, 503, "{answer}");
}

/// The first 300 characters of an answer, for an assertion's message.
fn start_of(answer: &Value) -> String {
    answer.to_string().chars().take(300).collect()
}

/// Each partition read keeps its own client and broker connection for the next read; a user who may read every
/// topic can read every partition of a large cluster, so the kept ones are bounded (256 per cluster: luka's
/// `MAX_READERS`) rather than one connection per partition ever read, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_many_partitions_keeps_a_bounded_number_of_connections() {
    const PARTITIONS: i32 = 600;
    let config = format!("{CONFIG}\n[topics.wide]\npartitions = {PARTITIONS}\n");
    let h = Harness::on(Kafka::Embedded, 1, &config).await;
    let broker_port: u16 = h.bootstrap(0).rsplit(':').next().unwrap().parse().unwrap();
    for partition in 0..PARTITIONS {
        let position = json!({"topic": "wide", "partition": partition});
        let (status, answer) = call(&h, "POST", "/offsets/latest", ("reader", "r"), &position.to_string()).await;
        assert_eq!(status, 200, "partition {partition}: {answer}");
    }
    // Closed connections leave ESTABLISHED at once; give the last evictions a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut open = established_to(broker_port);
    while open > 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = established_to(broker_port);
    }
    assert!(
        open <= 400,
        "{open} connections to the broker after reading {PARTITIONS} partitions"
    );
}

/// ESTABLISHED TCP connections (IPv4, this network namespace) whose remote end is `port` on this machine.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            fields[3] == "01" && remote_port == Some(port)
        })
        .count()
}

/// A partition's reading connection that stops answering without breaking (every connection open through the proxy
/// in front of the broker stalls): rskafka keeps it until it breaks, and each read of the partition touched it, so
/// it was never idle long enough to be evicted. The read that runs out of time drops it; a later one gets a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_connection_that_stops_answering_is_replaced() {
    let config = CONFIG
        .replace("{broker0}", "{broker0:PROXIED}")
        .replace("produce_timeout_ms = 3000", "produce_timeout_ms = 1000");
    let h = Harness::on(Kafka::Apache, 1, &config).await;
    let (status, written) = call(&h, "POST", "/produce/greetings", DEMO, r#"{"value":"kept"}"#).await;
    assert_eq!(status, 200, "{written}");
    let tp = r#"{"topic": "greetings", "partition": 0}"#;
    let (status, latest) = call(&h, "POST", "/offsets/latest", DEMO, tp).await;
    assert_eq!(status, 200, "{latest}");
    h.proxies[0].stall_open_connections();
    let (status, answer) = call(&h, "POST", "/offsets/latest", DEMO, tp).await;
    assert_eq!(status, 504, "the read waited on the stalled connection: {answer}");
    // The next reads connect afresh (a metadata look-up on the stalled metadata connection may cost one more).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, again) = call(&h, "POST", "/offsets/latest", DEMO, tp).await;
        if status == 200 {
            assert_eq!(again, latest);
            break;
        }
        assert!(Instant::now() < deadline, "still {status}: {again}");
    }
}

async fn offsets_and_fetch_give_what_librdkafka_reads(kafka: Kafka) {
    let h = Harness::on(kafka, 1, CONFIG).await;
    let body = json!([
        {"partition": 2, "timestamp": 1_700_000_000_000i64, "key": "k", "value": "first",
         "headers": [{"key": "h", "value": "1"}, {"key": "h", "value": "2"}]},
        {"partition": 2, "timestamp": 1_700_000_001_000i64, "value": "second"},
        {"partition": 2, "timestamp": 1_700_000_002_000i64, "key": "k3", "value": null},
    ]);
    let (status, written) = call(&h, "POST", "/produce/cities", DEMO, &body.to_string()).await;
    assert_eq!(status, 200, "{written}");
    let first = offset(&written[0]);

    let tp = r#"{"topic": "cities", "partition": 2}"#;
    let (status, earliest) = call(&h, "POST", "/offsets/earliest", DEMO, tp).await;
    assert_eq!(status, 200, "{earliest}");
    assert_eq!(earliest, json!([{"topic": "cities", "partition": 2, "offset": first}]));
    let (_, latest) = call(&h, "POST", "/offsets/latest", DEMO, &format!("[{tp}, {tp}]")).await;
    assert_eq!(latest[0]["offset"], first + 3);
    assert_eq!(latest.as_array().unwrap().len(), 2);
    let (_, at) = call(&h, "GET", "/offsets/1700000000500", DEMO, tp).await;
    assert_eq!(at[0]["offset"], first + 1, "first record at or after the timestamp");
    // Later than every record: the end of the log (Kafka itself answers -1).
    let (status, after) = call(&h, "GET", "/offsets/4102444800000", DEMO, tp).await;
    assert_eq!((status, &after[0]["offset"]), (200, &json!(first + 3)), "{after}");
    // Past the end: the client's mistake, told what the partition holds.
    let (status, beyond) = call(
        &h,
        "POST",
        "/fetch",
        DEMO,
        &json!({"topic": "cities", "partition": 2, "offset": first + 10}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{beyond}");
    assert_eq!(
        error_of(&beyond),
        format!(
            "offset {} is outside topic 'cities' partition 2, which holds offsets {first} to {} (see \
             /offsets/earliest and /offsets/latest)",
            first + 10,
            first + 2
        )
    );

    // /fetch from the middle of the batch, and the whole batch through topicPartitionOffsets.
    let (status, fetched) = call(
        &h,
        "POST",
        "/fetch",
        DEMO,
        &json!({"topic": "cities", "partition": 2, "offset": first + 1, "timeout": 500}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched.as_array().unwrap().len(), 2, "{fetched}");
    assert_eq!(fetched[0]["value"], "second");
    assert_eq!(fetched[0]["key"], "", "no key reads as an empty string");
    let (_, all) = call(
        &h,
        "POST",
        "/fetch",
        DEMO,
        &json!({"topicPartitionOffsets": [{"topic": "cities", "partition": 2, "offset": first}]}).to_string(),
    )
    .await;
    let records = read_records(&h.bootstrap(0), "cities", 2, first, 3).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3);
    for (message, record) in all.iter().zip(&records) {
        assert_eq!(message["topic"], "cities");
        assert_eq!(message["partition"], 2);
        assert_fetched(message, record);
        let headers: Vec<Value> = header_texts(record)
            .into_iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        assert_eq!(message["headers"], Value::Array(headers));
    }
    assert_eq!(
        all[0]["headers"],
        json!([{"key": "h", "value": "1"}, {"key": "h", "value": "2"}])
    );

    // Nothing past the end: the timeout is honoured, then an empty list.
    let started = Instant::now();
    let (status, none) = call(
        &h,
        "POST",
        "/fetch",
        DEMO,
        &json!({"topic": "cities", "partition": 2, "offset": first + 3, "timeout": 400}).to_string(),
    )
    .await;
    assert_eq!((status, none), (200, json!([])));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );

    // Positions at the end of two partitions, then one with records: the records are answered without waiting out
    // the timeout for the empty ones (a Kafka fetch returns once it has data; it waited the whole 5 s, also when
    // the waiting position was on the same partition, whose connection the broker serves in order).
    let (_, end) = call(
        &h,
        "POST",
        "/offsets/latest",
        DEMO,
        r#"{"topic": "cities", "partition": 1}"#,
    )
    .await;
    let started = Instant::now();
    let positions = json!({"timeout": 5000, "topicPartitionOffsets": [
        {"topic": "cities", "partition": 2, "offset": first + 3},
        {"topic": "cities", "partition": 1, "offset": end[0]["offset"]},
        {"topic": "cities", "partition": 2, "offset": first},
    ]});
    let (status, some) = call(&h, "POST", "/fetch", DEMO, &positions.to_string()).await;
    assert_eq!(status, 200, "{some}");
    assert_eq!(some.as_array().map(Vec::len), Some(3), "{some}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(2500), "waited {waited:?}");

    // Nothing at either position when asked: the fetch waits, and answers once a record arrives at one of them...
    let ends = r#"[{"topic": "cities", "partition": 1}, {"topic": "cities", "partition": 2}]"#;
    let (_, ends) = call(&h, "POST", "/offsets/latest", DEMO, ends).await;
    let (one, two) = (&ends[0]["offset"], &ends[1]["offset"]);
    let waiting = json!({"timeout": 5000, "topicPartitionOffsets": [
        {"topic": "cities", "partition": 1, "offset": one},
        {"topic": "cities", "partition": 2, "offset": two},
    ]});
    let late = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        call(
            &h,
            "POST",
            "/produce/cities",
            DEMO,
            r#"{"partition": 2, "value": "late"}"#,
        )
        .await
    };
    let started = Instant::now();
    let waiting = waiting.to_string();
    let ((status, got), (wrote, written)) = tokio::join!(call(&h, "POST", "/fetch", DEMO, &waiting), late);
    assert_eq!((status, wrote), (200, 200), "{got} {written}");
    assert_eq!(
        (&got[0]["partition"], &got[0]["value"]),
        (&json!(2), &json!("late")),
        "{got}"
    );
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(2500), "waited {waited:?}");
    // ...and the partition whose wait it gave up is read at once next, not behind the broker's hold on that wait.
    let started = Instant::now();
    let now = json!({"topic": "cities", "partition": 1, "offset": one, "timeout": 0});
    let (status, none) = call(&h, "POST", "/fetch", DEMO, &now.to_string()).await;
    assert_eq!((status, none), (200, json!([])));
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(2500), "waited {waited:?}");
}

async fn read_errors_say_what_is_wrong(kafka: Kafka) {
    let h = Harness::on(kafka, 1, CONFIG).await;
    let cases = [
        (
            "/offsets/latest",
            r#"{"topic": "nope", "partition": 0}"#,
            ("reader", "r"),
            404,
            "nope",
        ),
        (
            "/offsets/latest",
            r#"{"topic": "cities", "partition": 9}"#,
            DEMO,
            404,
            "has no partition 9",
        ),
        (
            "/offsets/latest",
            r#"{"topic": "secret", "partition": 0}"#,
            DEMO,
            403,
            "may not read topic 'secret'",
        ),
        (
            "/offsets/latest",
            r#"{"topic": "greetings", "partition": 0}"#,
            ("writer", "w"),
            403,
            "read_topics",
        ),
        (
            "/offsets/soon",
            r#"{"topic": "greetings", "partition": 0}"#,
            DEMO,
            400,
            "earliest, latest or a timestamp",
        ),
        // Past any date, and below zero (where Kafka reads -1 as "latest"): the client's mistake, not a 500.
        (
            "/offsets/9000000000000000",
            r#"{"topic": "greetings", "partition": 0}"#,
            DEMO,
            400,
            "a timestamp in ms from 0 (1970-01-01) to 253402300799999",
        ),
        (
            "/offsets/-1",
            r#"{"topic": "greetings", "partition": 0}"#,
            DEMO,
            400,
            "a timestamp in ms from 0",
        ),
        (
            "/offsets/latest",
            r#"{"topic": 5}"#,
            DEMO,
            400,
            "topic names a topic (a string), got 5 (send {\"topic\": \"...\", \"partition\": 0} or an array of them)",
        ),
        (
            "/fetch",
            r#"{"topicPartitionOffsets": {"topic": "cities"}}"#,
            DEMO,
            400,
            "topicPartitionOffsets must be a list of {\"topic\", \"partition\", \"offset\"} objects, got an object",
        ),
        (
            "/fetch",
            r#"{"topic": "cities", "partition": 9, "offset": 0}"#,
            DEMO,
            404,
            "has no partition 9",
        ),
        (
            "/fetch",
            r#"{"topic": "secret", "partition": 0, "offset": 0}"#,
            DEMO,
            403,
            "may not read",
        ),
        ("/fetch", r#"{"topic": "cities"}"#, DEMO, 400, "together"),
        ("/fetch", "{}", DEMO, 400, "nothing to fetch"),
        ("/fetch", "[", DEMO, 400, "the body is not JSON: it ends too early"),
        ("/consume/group/instance", "{}", DEMO, 501, "not served by luka"),
        ("/commit/group/instance", "{}", DEMO, 501, "not served by luka"),
    ];
    for (path, body, user, status, message) in cases {
        let (got, answer) = call(&h, "POST", path, user, body).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        let error = error_of(&answer);
        assert!(
            error.contains(message),
            "{path} {body}: expected '{message}' in {answer}"
        );
        assert_eq!(answer["status"], status);
    }
    let (status, _) = call(&h, "POST", "/fetch", ("demo", "wrong"), "{}").await;
    assert_eq!(status, 401);
}
