//! One caller's refused record must not fail another caller's write. Requests to one partition share a produce
//! request, and Kafka refuses a whole batch for one record that breaks a topic rule: a timestamp outside the topic's
//! window (INVALID_TIMESTAMP), a record without a key on a compacted topic (INVALID_RECORD), a record larger than
//! the topic's `max.message.bytes` (MESSAGE_TOO_LARGE). luka reads the topics' rules and refuses such a request
//! before its records join a batch; what it cannot check in advance (the size of a compressed batch) the broker
//! refuses, and luka then sends each caller's records on their own. Either way the valid records are written and
//! only the offending request is refused, with its own reason.
//!
//! On Apache Kafka the topics carry those rules. The embedded development broker enforces none of them: there the
//! same traffic is all written, and the test checks just that the valid records are.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::kafka::Kafka;
use common::read::{high_watermark, java_create_topic, read_records, text};
use common::{Harness, error_of};
use serde_json::{Value, json};

const CONFIG: &str = concat!(
    r#"
[server]
max_body_bytes = 2097152

[clusters.local]
bootstrap = ["{broker0}"]
produce_timeout_ms = 10000
# Requests that arrive within 200 ms share a produce request.
linger_ms = 200

# The same broker with compression, where record sizes cannot be checked in advance.
[clusters.zipped]
bootstrap = ["{broker0}"]
compression = "gzip"
linger_ms = 200

[topics.window]
cluster = "local"
[topics.compacted]
cluster = "local"
[topics.small]
cluster = "local"
[topics.zipped]
cluster = "zipped"
"#,
    demo_user!()
);

/// The topics and their rules (Apache Kafka), each one partition.
const TOPICS: [(&str, (&str, &str)); 4] = [
    ("window", ("message.timestamp.before.max.ms", "3600000")),
    ("compacted", ("cleanup.policy", "compact")),
    ("small", ("max.message.bytes", "50000")),
    ("zipped", ("max.message.bytes", "50000")),
];

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The offending message for `topic`: two days old, keyless, with 40,000 empty headers (about 160 KB encoded,
/// though its key and value are a few bytes), or 150 KB of hex digits of random bytes (about 75 KB gzipped).
fn offending(topic: &str) -> Value {
    match topic {
        "window" => json!({ "key": "k", "value": "too-old", "timestamp": now_ms() - 2 * 24 * 3600 * 1000 }),
        "compacted" => json!({ "value": "no-key" }),
        "small" => {
            json!({ "key": "k", "value": "many-headers", "headers": vec![json!({"key": "h", "value": ""}); 40_000] })
        }
        _ => json!({ "key": "k", "value": common::random_hex(75_000) }),
    }
}

async fn one_refused_record_fails_only_its_own_request(kafka: Kafka) {
    let mut config = CONFIG.to_owned();
    if kafka == Kafka::Embedded {
        // The embedded broker has no topic configs: luka creates the topics, with no rules.
        config = config.replace("[topics.window]", "[topics.window]\npartitions = 1");
        config = config.replace("[topics.compacted]", "[topics.compacted]\npartitions = 1");
        config = config.replace("[topics.small]", "[topics.small]\npartitions = 1");
        config = config.replace("[topics.zipped]", "[topics.zipped]\npartitions = 1");
    }
    let h = Harness::on(kafka, 1, &config).await;
    let bootstrap = h.bootstrap(0);
    if kafka == Kafka::Apache {
        for (topic, (name, value)) in TOPICS {
            java_create_topic(&bootstrap, topic, 1, &[(name, value)]).await;
        }
    }
    for (topic, _) in TOPICS {
        // Ten valid requests and the offending one at once: they share the partition's next produce request.
        let path = format!("/produce/{topic}");
        let bodies: Vec<String> = (0..10)
            .map(|i| json!({ "key": format!("k{i}"), "value": format!("{topic}-valid-{i}") }).to_string())
            .collect();
        let valid = bodies.iter().map(|body| h.post(&path, body));
        let bad_body = offending(topic).to_string();
        let bad = h.post(&path, &bad_body);
        let (answers, (status, answer)) = tokio::join!(futures::future::join_all(valid), bad);
        for (i, (status, answer)) in answers.iter().enumerate() {
            assert_eq!(
                *status, 200,
                "{topic}: valid request {i} failed with another's record: {answer}"
            );
        }
        let written: Vec<String> = read_records(
            &bootstrap,
            topic,
            0,
            0,
            high_watermark(&bootstrap, topic, 0).await as usize,
        )
        .await
        .iter()
        .filter_map(|record| text(record).1)
        .collect();
        for i in 0..10 {
            assert!(
                written.contains(&format!("{topic}-valid-{i}")),
                "{topic}: valid record {i} missing: {written:?}"
            );
        }
        match kafka {
            Kafka::Embedded => {
                println!("{topic}: the embedded broker does not enforce the rule; the request was answered {status}");
                assert_eq!(status, 200, "{answer}");
            }
            _ => {
                let (expected_status, reason) = match topic {
                    "window" => (400, "is outside what topic 'window' accepts now"),
                    "compacted" => (400, "topic 'compacted' is compacted (cleanup.policy=compact)"),
                    "small" => (413, "more than topic 'small' takes (max.message.bytes = 50000)"),
                    // Compressed: only the broker knows the size; its refusal of the shared batch is split.
                    _ => (
                        413,
                        "MessageTooLarge (a record is larger than the topic's max.message.bytes)",
                    ),
                };
                assert_eq!(status, expected_status, "{topic}: {answer}");
                assert!(error_of(&answer).contains(reason), "{topic}: its own reason: {answer}");
                assert_eq!(written.len(), 10, "{topic}: only the valid records: {written:?}");
            }
        }
    }
}

on_both_brokers!(one_refused_record_fails_only_its_own_request);
