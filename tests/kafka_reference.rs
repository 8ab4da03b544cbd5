//! Apache Kafka's own Java client as the reference: keyed records land where the Java producer puts the same keys,
//! and what luka writes with each compression codec reads back the same in the Java consumer and in librdkafka
//! (keys, null keys, tombstones, repeated headers in order, timestamps).

mod common;

use common::read::{ReadRecord, java_partitions, java_read_records, read_records};
use common::{Harness, Kafka, PRODUCE_FUNCTION};
use serde_json::{Value, json};

on_both_brokers!(keyed_records_land_where_the_java_producer_puts_them);
on_both_brokers!(every_codec_reads_back_the_same_in_java_and_librdkafka);

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// One cluster per codec, all on the same broker, each with its own topic `codec-<codec>`; and `keys`, 6 partitions.
fn config() -> String {
    let mut config = String::from("[clusters.local]\nbootstrap = [\"{broker0}\"]\ndefault = true\n\n");
    config.push_str("[topics.keys]\npartitions = 6\n\n");
    for codec in CODECS {
        config.push_str(&format!(
            "[clusters.{codec}]\nbootstrap = [\"{{broker0}}\"]\ncompression = \"{codec}\"\n\n\
             [topics.codec-{codec}]\ncluster = \"{codec}\"\npartitions = 1\n\n"
        ));
    }
    config.push_str(demo_user!());
    config
}

async fn keyed_records_land_where_the_java_producer_puts_them(kafka: Kafka) {
    let h = Harness::on(kafka, 1, &config()).await;
    let mut keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    keys.extend(["", "ü✓", "a much longer key, past one murmur2 block of four bytes"].map(String::from));
    let body: Vec<Value> = keys.iter().map(|k| json!({"key": k, "value": "v"})).collect();
    let (status, answer) = h.post("/produce/keys", &Value::from(body).to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let luka: Vec<i32> = answer
        .as_array()
        .expect("an array of metadata")
        .iter()
        .map(|m| m["partition"].as_i64().expect("partition") as i32)
        .collect();
    let java = java_partitions(&h.bootstrap(0), "keys", &keys).await;
    assert_eq!(luka, java, "luka and the Java producer place the same keys alike");
    assert!(
        (0..6).all(|p| luka.contains(&p)),
        "200 keys reach all 6 partitions: {luka:?}"
    );
}

async fn every_codec_reads_back_the_same_in_java_and_librdkafka(kafka: Kafka) {
    let h = Harness::on_with(kafka, 1, &config(), &[PRODUCE_FUNCTION]).await;
    let long = "compressible ".repeat(2_000);
    for codec in CODECS {
        let topic = format!("codec-{codec}");
        let call = json!({"topic": topic, "messages": [
            {"key": "k1", "value": "v1", "timestamp": 1_700_000_000_123_i64,
             "headers": [{"key": "h", "value": "1"}, {"key": "other", "value": ""}, {"key": "h", "value": "2"}]},
            {"key": json!(null), "value": "no key"},
            {"key": "gone", "value": json!(null)},
            {"key": "long", "value": long},
        ]});
        let (status, result) = h.produce(call).await;
        assert_eq!(status, 200, "{codec}: {result}");
        assert_eq!(result["messages"][0]["offset"], 0, "{codec}: {result}");

        let librdkafka = read_records(&h.bootstrap(0), &topic, 0, 0, 4).await;
        let java = java_read_records(&h.bootstrap(0), &topic, 0, 0, 4).await;
        assert_eq!(
            java, librdkafka,
            "{codec}: the Java consumer and librdkafka read the same records"
        );
        let expected = [
            record(0, Some("k1"), Some("v1"), &[("h", "1"), ("other", ""), ("h", "2")]),
            record(1, None, Some("no key"), &[]),
            record(2, Some("gone"), None, &[]),
            record(3, Some("long"), Some(&long), &[]),
        ];
        for (read, expected) in java.iter().zip(&expected) {
            assert_eq!(
                (&read.key, &read.value, &read.headers, read.offset),
                (&expected.key, &expected.value, &expected.headers, expected.offset),
                "{codec}"
            );
        }
        assert_eq!(java[0].timestamp_ms, Some(1_700_000_000_123), "{codec}");
        assert_eq!(
            java[1].timestamp_ms,
            result["messages"][1]["timestamp"].as_i64(),
            "{codec}"
        );
    }
}

fn record(offset: i64, key: Option<&str>, value: Option<&str>, headers: &[(&str, &str)]) -> ReadRecord {
    let bytes = |s: &str| s.as_bytes().to_vec();
    ReadRecord {
        partition: 0,
        offset,
        key: key.map(bytes),
        value: value.map(bytes),
        headers: headers.iter().map(|(k, v)| ((*k).to_owned(), Some(bytes(v)))).collect(),
        timestamp_ms: None,
    }
}
