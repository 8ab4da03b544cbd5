//! What one request may cost: messages per REST request and per `kafka.produce` call, positions per `/fetch` and
//! `/offsets`, and the bytes one `/fetch` reads and answers, each answered 413 (or cut) in the API's words.

mod common;

use common::proxy::{KafkaProxy, METADATA};
use common::read::{assert_no_record, librdkafka_create_topic};
use common::{Harness, PRODUCE_FUNCTION, error_of};
use serde_json::{Value, json};

const CONFIG: &str = concat!(
    r#"
[server]
max_messages_per_request = 5
fetch_max_total_bytes = 1048576
max_body_bytes = 4194304
"#,
    example_topics!(),
    r#"
[[users]]
name = "demo"
password = "demo"
topics = ["*"]
read_topics = ["*"]
"#
);

/// The `[server]` keys' share of process memory a `/fetch` may take: well under what 1,000 fetches of one
/// 900 KB record held at once (about 900 MB) would.
const FETCH_MEMORY_BOUND: u64 = 150 * 1024 * 1024;

/// A handler that passes its request's messages to `kafka.produce` without catching what it raises.
const FORWARD_FUNCTION: (&str, &str) = (
    "forward.lua",
    r#"
return function(req)
  kafka.produce{ topic = "cities", messages = req:json() }
  return "written"
end
"#,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_the_cap_are_a_413_and_nothing_is_written() {
    let h = Harness::start_with(1, CONFIG, &[PRODUCE_FUNCTION, FORWARD_FUNCTION]).await;
    let six: Vec<Value> = (0..6).map(|i| json!({"value": format!("m{i}")})).collect();
    let (status, answer) = h
        .post("/produce/greetings", &Value::from(six.clone()).to_string())
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        error_of(&answer),
        "6 messages in one request; at most 5 are taken (max_messages_per_request): split them over several requests"
    );
    assert_no_record(&h.bootstrap(0), "greetings", 0, 0).await;
    let (status, answer) = h
        .post("/produce/greetings", &Value::from(six[..5].to_vec()).to_string())
        .await;
    assert_eq!(status, 200, "five are taken: {answer}");

    let (status, answer) = h.produce(json!({"topic": "cities", "messages": six})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        error_of(&answer).contains("6 messages in one call; at most 5 are taken ([server] max_messages_per_request)"),
        "{answer}"
    );
    // Uncaught, the call's cap is the client's 413 too (not the 500 of a failing function), in the same words.
    let (status, answer) = h.post("/forward", &Value::from(six.clone()).to_string()).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        error_of(&answer).contains("6 messages in one call; at most 5 are taken ([server] max_messages_per_request)"),
        "{answer}"
    );
    for partition in 0..4 {
        assert_no_record(&h.bootstrap(0), "cities", partition, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_are_read_once_capped_and_fetches_bounded_in_bytes() {
    let h = Harness::start(1, CONFIG).await;
    // 600 KB on each of the four partitions of cities.
    let big = "x".repeat(600 * 1024);
    for partition in 0..4 {
        let (status, answer) = h
            .post(
                "/produce/cities",
                &json!({"partition": partition, "value": big}).to_string(),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    // A position named 50 times is read once.
    let same: Vec<Value> = (0..50)
        .map(|_| json!({"topic": "cities", "partition": 2, "offset": 0}))
        .collect();
    let (status, fetched) = h
        .post("/fetch", &json!({"topicPartitionOffsets": same}).to_string())
        .await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched.as_array().expect("records").len(), 1, "one record, once");

    // Four positions of 600 KB against a 1 MiB budget: reading stops once the budget is spent.
    let four: Vec<Value> = (0..4)
        .map(|p| json!({"topic": "cities", "partition": p, "offset": 0}))
        .collect();
    let (status, fetched) = h
        .post("/fetch", &json!({"topicPartitionOffsets": four}).to_string())
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        fetched.as_array().expect("records").len(),
        2,
        "the record that crosses 1 MiB is the last"
    );

    // 101 distinct positions: refused before anything is read.
    let many: Vec<Value> = (0..101)
        .map(|o| json!({"topic": "cities", "partition": 0, "offset": o}))
        .collect();
    let (status, answer) = h
        .post("/fetch", &json!({"topicPartitionOffsets": many}).to_string())
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        error_of(&answer),
        "101 positions in one request; at most 100 are taken (max_positions_per_request): split them over several \
         requests"
    );
    let partitions: Vec<Value> = (0..101).map(|p| json!({"topic": "cities", "partition": p})).collect();
    let (status, answer) = h.post("/offsets/latest", &Value::from(partitions).to_string()).await;
    assert_eq!(status, 413, "{answer}");
    // A position named twice in /offsets is looked up once and answered twice.
    let twice = json!([{"topic": "cities", "partition": 1}, {"topic": "cities", "partition": 1}]);
    let (status, offsets) = h.post("/offsets/latest", &twice.to_string()).await;
    assert_eq!(status, 200, "{offsets}");
    assert_eq!(
        offsets,
        json!([{"topic": "cities", "partition": 1, "offset": 1}, {"topic": "cities", "partition": 1, "offset": 1}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_naming_one_position_a_thousand_times_stays_small() {
    let h = Harness::start(
        1,
        &CONFIG.replace("max_body_bytes = 4194304", "max_body_bytes = 1048576"),
    )
    .await;
    let (status, answer) = h
        .post(
            "/produce/greetings",
            &json!({"value": "y".repeat(900 * 1024)}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let before = peak_memory();
    let same: Vec<Value> = (0..1000)
        .map(|_| json!({"topic": "greetings", "partition": 0, "offset": 0}))
        .collect();
    let (status, fetched) = h
        .post("/fetch", &json!({"topicPartitionOffsets": same}).to_string())
        .await;
    assert_eq!(status, 200);
    assert_eq!(fetched.as_array().expect("records").len(), 1);
    let grown = peak_memory().saturating_sub(before);
    assert!(
        grown < FETCH_MEMORY_BOUND,
        "peak memory grew by {} MB",
        grown / (1024 * 1024)
    );
}

/// This process's peak resident memory (VmHWM), in bytes: the server runs in the test process.
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("kB");
    kb * 1024
}

/// A topic a pattern names that another client created between luka's listing and its own creation
/// (`TopicAlreadyExists`) is not one luka created: it does not count against `max_created_topics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_first_by_another_client_is_not_counted_as_created() {
    let broker = common::embedded_broker().await;
    let config = format!(
        "[clusters.local]\nbootstrap = [\"{}\"]\nmax_created_topics = 1\n\n[topics.\"made.*\"]\npartitions = 1\n\
         [topics.\"events.*\"]\n\n{}",
        broker.addr(),
        demo_user!()
    );
    let h = Harness::start(0, &config).await;
    // luka lists the cluster (no such topic: 404, nothing created), and trusts that listing for a second.
    let (status, answer) = h.post("/produce/events.none", r#"{"value":"x"}"#).await;
    assert_eq!(status, 404, "{answer}");
    let listed = std::time::Instant::now();
    librdkafka_create_topic(&broker.addr().to_string(), "made.elsewhere", 1).await;
    let (status, answer) = h.post("/produce/made.elsewhere", r#"{"value":"x"}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        listed.elapsed() < std::time::Duration::from_secs(1),
        "luka listed the cluster again: the test did not make it create a topic that exists"
    );
    let (status, answer) = h.post("/produce/made.here", r#"{"value":"x"}"#).await;
    assert_eq!(status, 200, "the one topic luka may create: {answer}");
    let (status, answer) = h.post("/produce/made.more", r#"{"value":"x"}"#).await;
    assert_eq!(status, 404, "{answer}");
}

/// What anonymous or careless requests cost the broker: names that no topic has (new ones for a pattern each time),
/// `/topics` and the unauthenticated `/readyz` ask it for metadata at most about once a second, and a pattern with
/// `partitions` creates at most `max_created_topics` topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_missing_topics_topics_and_readyz_do_not_amplify_to_the_broker() {
    let broker = common::embedded_broker().await;
    let proxy = KafkaProxy::start(broker.addr().to_string()).await;
    let config = format!(
        "[clusters.local]\nbootstrap = [\"{}\"]\nmax_created_topics = 2\n\n[topics.greetings]\npartitions = 1\n\
         [topics.\"events.*\"]\n[topics.\"made.*\"]\npartitions = 1\n\n{}",
        proxy.addr,
        demo_user!()
    );
    let h = Harness::start(0, &config).await;
    let (status, answer) = h.post("/produce/greetings", r#"{"value":"warm"}"#).await;
    assert_eq!(status, 200, "{answer}");

    let before = proxy.requests(METADATA);
    let started = std::time::Instant::now();
    for i in 0..100 {
        let (status, answer) = h.post(&format!("/produce/events.nope-{i}"), r#"{"value":"x"}"#).await;
        assert_eq!(status, 404, "{answer}");
        // A partition past the cached count is looked up again (partitions may have been added), within the same
        // bound.
        let (status, answer) = h.post("/produce/greetings", r#"{"value":"x","partition":7}"#).await;
        assert_eq!(status, 404, "{answer}");
    }
    for _ in 0..30 {
        assert_eq!(h.get("/topics").await.0, 200);
        assert_eq!(h.http.get(h.url("/readyz")).send().await.unwrap().status(), 200);
    }
    let asked = proxy.requests(METADATA) - before;
    let allowed = 2 * (started.elapsed().as_secs() as usize + 2);
    assert!(asked <= allowed, "{asked} metadata requests (at most {allowed})");

    for i in 1..=2 {
        let (status, answer) = h.post(&format!("/produce/made.{i}"), r#"{"value":"x"}"#).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = h.post("/produce/made.3", r#"{"value":"x"}"#).await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        error_of(&answer).contains("luka creates at most 2 topics by pattern there (max_created_topics)"),
        "{answer}"
    );
}
