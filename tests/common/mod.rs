//! Test harness: real embedded brokers on free ports, the real HTTP server on port 0, and read-back through
//! librdkafka (the `rdkafka` crate), a client independent of luka's own.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use luka::App;
use luka::broker::EmbeddedBroker;
use luka::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::oneshot;

/// How long a read-back waits for records before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

pub struct Harness {
    pub base: String,
    /// The folder config.toml is read from; its `functions/` holds the test's handlers.
    pub dir: std::path::PathBuf,
    pub app: Arc<App>,
    pub brokers: Vec<EmbeddedBroker>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl Harness {
    /// Starts `broker_count` brokers and luka on `config`, where `{broker0}`, `{broker1}`... stand for the
    /// brokers' addresses.
    pub async fn start(broker_count: usize, config: &str) -> Self {
        Self::start_with(broker_count, config, &[]).await
    }

    /// Like [`Harness::start`], with `functions` (path, source) written under `functions/` beside the config.
    pub async fn start_with(broker_count: usize, config: &str, functions: &[(&str, &str)]) -> Self {
        let dir = temp_dir();
        for (path, source) in functions {
            write_function(&dir, path, source);
        }
        let mut brokers = Vec::new();
        let mut text = config.to_owned();
        for i in 0..broker_count {
            let broker = EmbeddedBroker::start(free_addr()).await.expect("start embedded broker");
            text = text.replace(&format!("{{broker{i}}}"), &broker.addr().to_string());
            brokers.push(broker);
        }
        let config = Config::from_toml(&text, &dir, |name| std::env::var(name).ok())
            .unwrap_or_else(|problems| panic!("test config is invalid: {problems:?}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = App::new(config).expect("functions load");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(luka::server::run(listener, Arc::clone(&app), async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        Self {
            base,
            dir,
            app,
            brokers,
            http,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn bootstrap(&self, broker: usize) -> String {
        self.brokers[broker].addr().to_string()
    }

    /// POST `body` to `path` as user demo; gives status and JSON answer.
    pub async fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url(path))
            .basic_auth("demo", Some("demo"))
            .body(body.to_owned())
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(self.url(path))
            .basic_auth("demo", Some("demo"))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh, empty folder for one test's config and functions.
pub fn temp_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("luka-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("functions")).expect("create test folder");
    dir
}

/// Writes `functions/<path>` under `dir`.
pub fn write_function(dir: &std::path::Path, path: &str, source: &str) {
    let file = dir.join("functions").join(path);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("create function folder");
    std::fs::write(file, source).expect("write function");
}

/// A record as librdkafka read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_ms: Option<i64>,
}

/// Reads `count` records of `topic`/`partition` starting at `offset`, with librdkafka.
pub async fn read_records(bootstrap: &str, topic: &str, partition: i32, offset: i64, count: usize) -> Vec<ReadRecord> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_blocking(&bootstrap, &topic, partition, offset, count))
        .await
        .expect("reader thread")
}

fn read_blocking(bootstrap: &str, topic: &str, partition: i32, offset: i64, count: usize) -> Vec<ReadRecord> {
    let consumer = assigned_consumer(bootstrap, topic, partition, offset);
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {count} records from {topic}/{partition} at {offset} before timing out: {records:?}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => panic!("librdkafka error reading {topic}/{partition}: {e}"),
            Some(Ok(m)) => records.push(ReadRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default(),
                timestamp_ms: m.timestamp().to_millis(),
            }),
        }
    }
    records
}

/// Asserts that `topic`/`partition` has no record at `offset` (waits a moment for one to show up).
pub async fn assert_no_record(bootstrap: &str, topic: &str, partition: i32, offset: i64) {
    let (bootstrap, owned_topic) = (bootstrap.to_owned(), topic.to_owned());
    let found = tokio::task::spawn_blocking(move || {
        let consumer = assigned_consumer(&bootstrap, &owned_topic, partition, offset);
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                return Some((m.offset(), m.payload().map(<[u8]>::to_vec)));
            }
        }
        None
    })
    .await
    .expect("reader thread");
    assert_eq!(found, None, "expected nothing at {topic}/{partition} offset {offset}");
}

/// A librdkafka consumer reading `topic`/`partition` from `offset` (assigned, not subscribed: no group rebalance).
fn assigned_consumer(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "luka-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("librdkafka consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    consumer
}

pub fn text(record: &ReadRecord) -> (Option<String>, Option<String>) {
    let s = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    (s(&record.key), s(&record.value))
}
