//! Reading back what luka wrote, with librdkafka (the `rdkafka` crate): a client independent of luka's own.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

/// How long a read-back waits for records before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

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

/// The record's headers as text, in the order they were written.
pub fn header_texts(record: &ReadRecord) -> Vec<(String, String)> {
    record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.clone().unwrap()).unwrap()))
        .collect()
}

/// The timestamps of the messages of a `/fetch` answer, in order.
pub fn fetched_timestamps(fetched: &Value) -> Vec<i64> {
    fetched
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| m["timestamp"].as_i64().expect("a timestamp"))
        .collect()
}

/// Asserts that `message`, a record as `/fetch` answered it, is `record` as librdkafka read it (a missing key or
/// value reads as an empty string).
pub fn assert_fetched(message: &Value, record: &ReadRecord) {
    let text = |b: &Option<Vec<u8>>| String::from_utf8(b.clone().unwrap_or_default()).unwrap();
    assert_eq!(message["offset"], record.offset);
    assert_eq!(message["timestamp"].as_i64(), record.timestamp_ms);
    assert_eq!(message["key"], text(&record.key));
    assert_eq!(message["value"], text(&record.value));
}

/// The partition's high watermark as librdkafka asks the broker for it (ListOffsets, latest). Asked again for up
/// to ten seconds while the broker cannot say: just after a pause or a restart, the partition may have no leader
/// yet, which librdkafka reports as an unknown partition.
pub async fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("librdkafka consumer");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5)) {
                Ok((_, high)) => return high,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("watermarks of {topic}/{partition}, asking again: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("watermarks of {topic}/{partition}: {e}"),
            }
        }
    })
    .await
    .expect("watermark thread")
}

/// Reads `count` records of `topic`/`partition` from `offset` with the Java consumer (`kafka-clients`, the reference
/// client; `tests/java/KafkaReference.java`).
pub async fn java_read_records(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    count: usize,
) -> Vec<ReadRecord> {
    let args = [
        "read",
        bootstrap,
        topic,
        &partition.to_string(),
        &offset.to_string(),
        &count.to_string(),
    ];
    let out = java_reference(&args).await;
    let b64 = |v: &Value| {
        v.as_str()
            .map(|s| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s).expect("base64"))
    };
    out.lines()
        .map(|line| {
            let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            ReadRecord {
                partition: r["partition"].as_i64().expect("partition") as i32,
                offset: r["offset"].as_i64().expect("offset"),
                key: b64(&r["key"]),
                value: b64(&r["value"]),
                headers: r["headers"]
                    .as_array()
                    .expect("headers")
                    .iter()
                    .map(|h| (h[0].as_str().expect("header name").to_owned(), b64(&h[1])))
                    .collect(),
                timestamp_ms: r["timestamp"].as_i64().filter(|t| *t >= 0),
            }
        })
        .collect()
}

/// The partitions the Java producer (`kafka-clients`, default partitioner) writes `keys` to, in order: it really
/// writes one record per key to `topic`.
pub async fn java_partitions(bootstrap: &str, topic: &str, keys: &[String]) -> Vec<i32> {
    let mut args = vec!["partitions", bootstrap, topic];
    args.extend(keys.iter().map(String::as_str));
    serde_json::from_str(java_reference(&args).await.trim()).expect("a JSON list of partitions")
}

/// Creates `topic` with `partitions` and the topic `configs` (name, value) with the Java admin client.
pub async fn java_create_topic(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let partitions = partitions.to_string();
    let configs: Vec<String> = configs.iter().map(|(name, value)| format!("{name}={value}")).collect();
    let mut args = vec!["create", bootstrap, topic, &partitions];
    args.extend(configs.iter().map(String::as_str));
    java_reference(&args).await;
}

/// Adds partitions to `topic` up to `partitions` with the Java admin client.
pub async fn java_grow_topic(bootstrap: &str, topic: &str, partitions: i32) {
    java_reference(&["grow", bootstrap, topic, &partitions.to_string()]).await;
}

/// Each partition's leader node id, in partition order (-1: none), as the Java admin client sees them.
pub async fn java_leaders(bootstrap: &str, topic: &str) -> Vec<i32> {
    serde_json::from_str(java_reference(&["leaders", bootstrap, topic]).await.trim()).expect("a JSON list of leaders")
}

/// Runs a preferred leader election for every partition of `topic` (Java admin client); gives how many partitions
/// changed leader.
pub async fn java_elect_preferred(bootstrap: &str, topic: &str) -> u64 {
    let answer: Value = serde_json::from_str(java_reference(&["elect-preferred", bootstrap, topic]).await.trim())
        .expect("a JSON answer");
    answer["elected"].as_u64().expect("elected count")
}

/// Writes one record to `topic` with the Java client, `key` as its key and value, and the headers x=1, x=2 and n
/// with a null value (which luka's own API cannot write); gives its partition and offset.
pub async fn java_produce_with_null_header(bootstrap: &str, topic: &str, key: &str) -> (i32, i64) {
    let answer: Value = serde_json::from_str(java_reference(&["produce-headers", bootstrap, topic, key]).await.trim())
        .expect("a JSON answer");
    (
        answer["partition"].as_i64().expect("partition") as i32,
        answer["offset"].as_i64().expect("offset"),
    )
}

/// Writes one record of `bytes` zero bytes to `topic`/`partition` with the Java client, compressed with zstd at
/// `level` (at 20 and above zstd frames ask the reader for a window of 32 to 128 MiB, whatever the data); gives its
/// offset.
pub async fn java_produce_zstd(bootstrap: &str, topic: &str, partition: i32, level: i32, bytes: usize) -> i64 {
    let (partition, level, bytes) = (partition.to_string(), level.to_string(), bytes.to_string());
    let answer = java_reference(&["produce-zstd", bootstrap, topic, &partition, &level, &bytes]).await;
    let answer: Value = serde_json::from_str(answer.trim()).expect("a JSON answer");
    answer["offset"].as_i64().expect("offset")
}

/// Writes one record (value "at") to `topic`/`partition` with the Java client at `timestamp_ms`, which luka's own
/// API may not write; gives its offset.
pub async fn java_produce_at(bootstrap: &str, topic: &str, partition: i32, timestamp_ms: i64) -> i64 {
    let (partition, timestamp) = (partition.to_string(), timestamp_ms.to_string());
    let answer = java_reference(&["produce-at", bootstrap, topic, &partition, &timestamp]).await;
    let answer: Value = serde_json::from_str(answer.trim()).expect("a JSON answer");
    answer["offset"].as_i64().expect("offset")
}

/// Runs `tests/java/KafkaReference.java` with `args` through `scripts/kafka java`; its standard output.
async fn java_reference(args: &[&str]) -> String {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/KafkaReference.java");
    let mut command = vec!["java".to_owned(), file.to_owned()];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    super::kafka::script(command).await
}

/// Writes `values` to `topic`/`partition` in one transaction of librdkafka's, each value in a batch of its own
/// (compressed with `codec`, or "none"), and then commits it or aborts it: records a `READ_COMMITTED` reader must
/// show or drop.
pub async fn librdkafka_transaction(
    bootstrap: &str,
    (topic, partition): (&str, i32),
    codec: &str,
    values: Vec<Vec<u8>>,
    commit: bool,
) {
    let settings = [
        ("transactional.id", "luka-tests"),
        ("compression.codec", codec),
        ("message.max.bytes", "100000000"),
        // A batch per value without waiting for each (a flush per value took about 70 ms on Apache Kafka).
        ("batch.num.messages", "1"),
    ];
    let topic = topic.to_owned();
    librdkafka_writes(bootstrap, &settings, move |producer| {
        producer.init_transactions(READ_TIMEOUT).expect("init_transactions");
        producer.begin_transaction().expect("begin_transaction");
        for value in &values {
            let record = BaseRecord::<(), [u8]>::to(&topic).partition(partition).payload(value);
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        // Written before the transaction ends (an abort does not wait for them).
        producer.flush(READ_TIMEOUT).expect("flush");
        let ended = if commit {
            producer.commit_transaction(READ_TIMEOUT)
        } else {
            producer.abort_transaction(READ_TIMEOUT)
        };
        ended.expect("the transaction ends");
    })
    .await;
}

/// Writes `values` to `topic`/`partition` with librdkafka as one record batch compressed with `codec`: values of
/// a megabyte each, which compress to a few hundred bytes on the broker.
pub async fn librdkafka_compressed_batch(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    values: Vec<Vec<u8>>,
    codec: &str,
) {
    let settings = [
        ("compression.codec", codec),
        // Held until all are queued (flushed below), and room for all of them in one batch.
        ("linger.ms", "10000"),
        ("message.max.bytes", "100000000"),
        ("batch.size", "100000000"),
    ];
    let topic = topic.to_owned();
    librdkafka_writes(bootstrap, &settings, move |producer| {
        for value in &values {
            let record = BaseRecord::<(), [u8]>::to(&topic).partition(partition).payload(value);
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(READ_TIMEOUT).expect("flush");
    })
    .await;
}

/// Runs `write` on a thread of its own with a librdkafka producer for `bootstrap`, set up with `settings`.
async fn librdkafka_writes(
    bootstrap: &str,
    settings: &[(&str, &str)],
    write: impl FnOnce(BaseProducer) + Send + 'static,
) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    tokio::task::spawn_blocking(move || write(config.create().expect("a librdkafka producer")))
        .await
        .expect("writer thread");
}

/// Creates `topic` with `partitions` partitions through librdkafka's admin client (as another client of the cluster
/// would, unknown to luka).
pub async fn librdkafka_create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("an admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&new], &AdminOptions::new().operation_timeout(Some(READ_TIMEOUT)))
        .await
        .expect("create_topics");
    for result in results {
        result.expect("the topic is created");
    }
}

/// Writes one record with `count` empty headers to `topic`/`partition` with librdkafka: a few bytes each on the wire,
/// far more once read.
pub async fn librdkafka_record_with_empty_headers(bootstrap: &str, topic: &str, partition: i32, count: usize) {
    use rdkafka::message::{Header, OwnedHeaders};
    let topic = topic.to_owned();
    librdkafka_writes(bootstrap, &[], move |producer| {
        let headers = (0..count).fold(OwnedHeaders::new_with_capacity(count), |headers, _| {
            headers.insert(Header {
                key: "",
                value: Some(&[] as &[u8]),
            })
        });
        let record = BaseRecord::<(), [u8]>::to(&topic)
            .partition(partition)
            .payload(b"headers")
            .headers(headers);
        producer.send(record).map_err(|(e, _)| e).expect("send");
        producer.flush(READ_TIMEOUT).expect("flush");
    })
    .await;
}
