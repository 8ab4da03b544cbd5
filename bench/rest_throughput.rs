//! REST produce throughput against a native librdkafka producer, same broker, same run.
//!
//! Starts `luka broker` (the standalone embedded broker) and `luka` serving a config that points at it, then
//! alternates three measurements for several rounds and prints medians:
//! - native: librdkafka producer, acks=all, linger 5 ms, ~100-byte JSON values;
//! - REST x1: `POST /produce/bench` with 1 record per request, 64 keep-alive connections;
//! - REST x100: the same with 100 records per request.
//!
//! Run: `bench/run.sh` (or `cargo bench --bench rest_throughput -- [--rounds N] [--seconds S]`).

#[path = "common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Children, LoadResult, free_port, load, median, wait_for};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

const CONNECTIONS: usize = 64;
const TOPIC: &str = "bench";
const PARTITIONS: usize = 4;

struct Options {
    rounds: usize,
    seconds: u64,
    native_records: usize,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 3,
        seconds: 5,
        native_records: 200_000,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--rounds" => o.rounds = pair[1].parse().expect("--rounds N"),
            "--seconds" => o.seconds = pair[1].parse().expect("--seconds S"),
            "--native-records" => o.native_records = pair[1].parse().expect("--native-records N"),
            _ => {}
        }
    }
    o
}

/// A ~100-byte JSON event, different per index.
fn value(i: u64) -> String {
    format!(
        r#"{{"id":{i:08},"user":"user-{i:08}","email":"user{i:08}@example.com","amount":{}.{:02},"ok":true}}"#,
        i % 1000,
        i % 100
    )
}

#[derive(Default)]
struct Counting {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl rdkafka::ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// librdkafka with acks=all and linger 5 ms: messages per second until every record is acknowledged.
fn native(bootstrap: &str, records: usize) -> f64 {
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create_with_context(Counting::default())
        .expect("librdkafka producer");
    let started = Instant::now();
    for i in 0..records as u64 {
        let payload = value(i);
        let mut record = BaseRecord::to(TOPIC).payload(&payload).key("");
        record.key = None;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
    let context = producer.context();
    while context.ok.load(Ordering::Relaxed) + context.failed.load(Ordering::Relaxed) < records as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(context.failed.load(Ordering::Relaxed), 0, "native deliveries failed");
    producer.flush(Duration::from_secs(10)).expect("flush");
    records as f64 / elapsed
}

/// 64 connections sending `per_request` records per POST for `seconds`.
async fn rest(base: &str, per_request: usize, seconds: u64) -> LoadResult {
    let url = format!("{base}/produce/{TOPIC}");
    let result = load(&url, CONNECTIONS, seconds, Some(("bench", "bench")), move |n| {
        let body: Vec<serde_json::Value> = (0..per_request as u64)
            .map(|i| serde_json::json!({ "value": value(n * per_request as u64 + i) }))
            .collect();
        serde_json::to_vec(&body).unwrap()
    })
    .await;
    LoadResult {
        requests_per_s: result.requests_per_s * per_request as f64,
        ..result
    }
}

fn main() {
    let o = options();
    let luka = env!("CARGO_BIN_EXE_luka");
    let broker = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let dir = std::env::temp_dir().join(format!("luka-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{http}\"\n\n[clusters.bench]\nbootstrap = [\"{broker}\"]\n\n\
             [topics.{TOPIC}]\npartitions = {PARTITIONS}\n\n[[users]]\nname = \"bench\"\npassword = \"bench\"\ntopics = [\"{TOPIC}\"]\n"
        ),
    )
    .unwrap();
    let quiet = || Stdio::null();
    let mut children = Children(Vec::new());
    children.0.push(
        Command::new(luka)
            .args(["broker", "--listen", &broker])
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .unwrap(),
    );
    wait_for(&broker);
    children.0.push(
        Command::new(luka)
            .arg("--config")
            .arg(&config)
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .unwrap(),
    );
    wait_for(&http);
    let base = format!("http://{http}");
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Warm-up: luka creates the topic and connects; librdkafka learns the metadata.
    runtime.block_on(rest(&base, 10, 1));
    native(&broker, 10_000);

    println!(
        "luka REST vs native librdkafka, {} rounds; REST: {CONNECTIONS} keep-alive connections, {}s per run; \
         native: {} records; acks=all, ~100-byte JSON values, topic with {PARTITIONS} partitions, {} cores",
        o.rounds,
        o.seconds,
        o.native_records,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let (mut nat, mut one, mut hundred) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        let n = native(&broker, o.native_records);
        let r1 = runtime.block_on(rest(&base, 1, o.seconds));
        let r100 = runtime.block_on(rest(&base, 100, o.seconds));
        println!(
            "round {round}: native {n:>9.0} msg/s | REST x1 {:>8.0} msg/s (p50 {:.1} ms, p99 {:.1} ms) | \
             REST x100 {:>9.0} msg/s (p50 {:.1} ms, p99 {:.1} ms)",
            r1.requests_per_s, r1.p50_ms, r1.p99_ms, r100.requests_per_s, r100.p50_ms, r100.p99_ms
        );
        nat.push(n);
        one.push(r1.requests_per_s);
        hundred.push(r100.requests_per_s);
    }
    let (n, r1, r100) = (median(nat), median(one), median(hundred));
    println!("median: native {n:.0} msg/s, REST x1 {r1:.0} msg/s, REST x100 {r100:.0} msg/s");
    println!(
        "ratio to native: REST x1 {:.2}, REST x100 {:.2} (target for x100: 0.70)",
        r1 / n,
        r100 / n
    );
    let _ = std::fs::remove_dir_all(&dir);
}
