//! The unmodified `@upstash/kafka` 1.3.5 npm client (the hosted service's own client) against luka:
//! `admin().topics()`, `consumer().fetch()`, `producer().produce()` and `admin().topicPartitionOffsets()`. Installs the client from `tests/fixtures/upstash/package-lock.json`
//! with `npm ci`; Node.js and npm are installed by `scripts/test` when missing.

mod common;

use std::path::Path;
use std::process::Command;

use common::read::{assert_fetched, read_records};
use common::{Harness, Kafka, offset};
use serde_json::{Value, json};

on_both_brokers!(the_upstash_npm_client_lists_topics_and_fetches);

const CONFIG: &str = r#"
[clusters.local]
bootstrap = ["{broker0}"]

[topics.orders]
partitions = 2

[[users]]
name = "shop"
password = "s3cret"
topics = ["orders"]
read_topics = ["orders"]
"#;

fn fixture() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upstash"))
}

/// Installs the fixture's packages once per test process: both variants of the test run at once, and two `npm ci`
/// in one folder at the same time remove each other's files.
fn install_fixture() {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(fixture())
            .status()
            .expect("npm is needed (scripts/test installs it)")
            .success()
    });
    assert!(installed, "npm ci in tests/fixtures/upstash failed");
}

async fn the_upstash_npm_client_lists_topics_and_fetches(kafka: Kafka) {
    tokio::task::spawn_blocking(install_fixture)
        .await
        .expect("npm ci thread");

    let h = Harness::on(kafka, 1, CONFIG).await;
    let body = json!([
        {"partition": 1, "key": "o-1", "value": "{\"id\":1}", "headers": [{"key": "source", "value": "shop"}]},
        {"partition": 1, "value": "second"},
    ]);
    let written = h
        .http
        .post(h.url("/produce/orders"))
        .basic_auth("shop", Some("s3cret"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200);
    let written: Value = written.json().await.unwrap();
    let first = offset(&written[0]);

    let base = h.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(fixture().join("client.mjs"))
            .env("URL", base)
            .env("USERNAME", "shop")
            .env("PASSWORD", "s3cret")
            .env("TOPIC", "orders")
            .env("PARTITION", "1")
            .env("OFFSET", first.to_string())
            .env("TIMEOUT", "500")
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    assert_eq!(result["topics"], json!({"orders": 2}));
    let messages = result["messages"].as_array().unwrap();
    let records = read_records(&h.bootstrap(0), "orders", 1, first, 2).await;
    assert_eq!(messages.len(), 2, "{result}");
    for (message, record) in messages.iter().zip(&records) {
        assert_fetched(message, record);
    }
    assert_eq!(messages[0]["headers"], json!([{"key": "source", "value": "shop"}]));

    // Written after the fetch: the produce answer, and the earliest offset at or after time 0.
    assert_eq!(result["produced"]["topic"], "orders");
    assert_eq!(result["produced"]["offset"], first + 2);
    let records = read_records(&h.bootstrap(0), "orders", 1, first + 2, 1).await;
    assert_eq!(records[0].value.as_deref(), Some(&b"from-npm"[..]));
    assert_eq!(
        result["offsets"],
        json!([{"topic": "orders", "partition": 1, "offset": first}])
    );
}
