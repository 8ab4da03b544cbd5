//! The REST produce API writing to a real broker, read back with librdkafka: every field byte for byte, where
//! keyed messages land, several topics and clusters in one request, and batching under concurrency.

mod common;

use common::configs::REST;
use common::read::{header_texts, high_watermark, java_create_topic, read_records, text};
use common::{Harness, Kafka, offset};
use serde_json::{Value, json};

on_both_brokers!(
    get_with_path_message_writes_one_record,
    body_variants_write_every_field_byte_for_byte,
    keyed_messages_land_where_javas_partitioner_puts_them,
    one_request_writes_to_two_clusters,
    concurrent_requests_share_batches_and_get_distinct_offsets,
    repeated_header_names_are_written_in_order,
    every_acknowledged_record_is_readable_at_once
);

/// On a topic whose record timestamps are the broker's (`message.timestamp.type=LogAppendTime`), the answer gives the
/// time the broker wrote, not the one sent: the timestamp a consumer reads. Apache Kafka only: the development
/// broker has no topic configs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_give_the_brokers_timestamp_on_log_append_time_topics() {
    let config = format!("{REST}\n[topics.appended]\ncluster = \"local\"\n");
    let h = Harness::on(Kafka::Apache, 1, &config).await;
    java_create_topic(
        &h.bootstrap(0),
        "appended",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let sent = 1_637_745_834_744_i64;
    let before = chrono_now_ms();
    let (status, answer) = h
        .post(
            "/produce/appended",
            &json!({ "value": "v", "timestamp": sent }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let reported = answer[0]["timestamp"].as_i64().unwrap();
    assert!(
        reported >= before && reported <= chrono_now_ms(),
        "{reported} is the broker's now, not {sent}"
    );
    let records = read_records(&h.bootstrap(0), "appended", 0, offset(&answer[0]), 1).await;
    assert_eq!(records[0].timestamp_ms, Some(reported));
}

async fn get_with_path_message_writes_one_record(kafka: Kafka) {
    let h = Harness::on(kafka, 1, REST).await;
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

async fn body_variants_write_every_field_byte_for_byte(kafka: Kafka) {
    let h = Harness::on(kafka, 1, REST).await;

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
    // A JSON value is written as sent, its whitespace dropped: keys in their order, numbers digit for digit.
    let body = r#"[
        {"topic": "greetings", "value": "hello_world"},
        {"topic": "cities", "partition": 1, "value": "Istanbul"},
        {"topic": "greetings", "value": "hello_upstash"},
        {"topic": "events.click", "value": {"y": [1.10, 12345678901234567890123], "x": "a \" b"}},
        {"topic": "greetings", "value": null, "key": "gone"}
    ]"#;
    let (status, answer) = h.post("/produce", body).await;
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
        Some(r#"{"y":[1.10,12345678901234567890123],"x":"a \" b"}"#),
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

async fn keyed_messages_land_where_javas_partitioner_puts_them(kafka: Kafka) {
    let h = Harness::on(kafka, 1, REST).await;
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

async fn one_request_writes_to_two_clusters(kafka: Kafka) {
    let config = concat!(
        r#"
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
"#,
        demo_user!()
    );
    let h = Harness::on(kafka, 2, config).await;
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

async fn concurrent_requests_share_batches_and_get_distinct_offsets(kafka: Kafka) {
    let h = Harness::on(
        kafka,
        1,
        // No linger: batches form only because requests queue while a produce is in flight.
        &REST.replace("produce_timeout_ms = 3000", "produce_timeout_ms = 10000\nlinger_ms = 0"),
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

async fn repeated_header_names_are_written_in_order(kafka: Kafka) {
    let h = Harness::on(kafka, 1, REST).await;
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
    assert_eq!(
        header_texts(&records[0]),
        [("trace", "1"), ("hop", "a"), ("trace", "2"), ("trace", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
}

/// A request's records for one partition go out as one batch; each of them, the last one included, must be
/// readable as soon as it is acknowledged, with nothing written after it (the development broker once stopped its
/// high watermark at the start of the newest batch and could not fetch from the middle of a batch).
async fn every_acknowledged_record_is_readable_at_once(kafka: Kafka) {
    let h = Harness::on(kafka, 1, REST).await;
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

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
