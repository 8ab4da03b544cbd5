//! Content types through the real server and broker: data encoded as text, bytes or Avro (plain and in
//! Confluent's framing), checked against the Avro schema, and random values that fit it.

mod common;

use common::read::{assert_no_record, read_records};
use common::{Harness, Kafka, PRODUCE_OFFSET_FUNCTION, error_of};
use serde_json::{Value, json};

on_both_brokers!(
    content_types_encode_data_and_random_values,
    avro_topics_encode_data_and_random_values_with_and_without_framing
);

const CONFIG: &str = concat!(
    r#"
[clusters.local]
bootstrap = ["{broker0}"]

[topics.notes]
partitions = 1
content_type = "text/plain"

[topics.blobs]
partitions = 1
content_type = "application/octet-stream"

[topics.avro-plain]
partitions = 1
avro_schema = "schemas/order.avsc"

[topics.avro-framed]
partitions = 1
content_type = "avro/binary"
avro_schema = { type = "record", name = "Reading", fields = [ { name = "device", type = "string" }, { name = "celsius", type = "double" }, { name = "ok", type = "boolean" } ] }
schema_id = 258
"#,
    demo_user!()
);

const ORDER_AVRO: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
  {"name": "id", "type": "string"},
  {"name": "quantity", "type": "int"},
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["PLACED", "PAID"]}},
  {"name": "note", "type": ["null", "string"], "default": null}
]}"#;

/// The server on CONFIG, with the `/call` function and the Avro schema file the config names.
async fn start(kafka: Kafka) -> Harness {
    // "../schemas/..." lands beside config.toml, where the config's relative schema paths point.
    Harness::on_with(
        kafka,
        1,
        CONFIG,
        &[PRODUCE_OFFSET_FUNCTION, ("../schemas/order.avsc", ORDER_AVRO)],
    )
    .await
}

/// Decodes with the apache-avro crate directly, after checking and removing the Confluent header if `id` is given.
fn avro_decode(schema: &str, bytes: &[u8], id: Option<u32>) -> Value {
    let mut body = bytes;
    if let Some(id) = id {
        assert_eq!(bytes[0], 0, "magic byte");
        assert_eq!(&bytes[1..5], &id.to_be_bytes(), "schema id");
        body = &bytes[5..];
    }
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    let value = apache_avro::from_avro_datum(&schema, &mut body, None).unwrap();
    Value::try_from(value).unwrap()
}

async fn content_types_encode_data_and_random_values(kafka: Kafka) {
    let h = start(kafka).await;
    let bootstrap = h.bootstrap(0);
    let (status, answer) = h
        .produce(json!({"topic": "notes", "messages": [{"data": "hello"}, {"data": 42}, {"data": true}, {}]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let records = read_records(&bootstrap, "notes", 0, 0, 4).await;
    let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_deref().unwrap()).collect();
    assert_eq!(&values[..3], &[&b"hello"[..], b"42", b"true"]);
    assert!(
        values[3].iter().all(u8::is_ascii_lowercase),
        "a random text value: {:?}",
        values[3]
    );
    let (status, answer) = h
        .produce(json!({"topic": "notes", "messages": [{"data": {"a": 1}}]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["error"],
        "kafka.produce: message 1 of topic 'notes': an object cannot be encoded as text/plain; give a value the \
         content type can carry"
    );
    let (status, _) = h
        .produce(json!({"topic": "blobs", "messages": [{"data": "raw bytes"}]}))
        .await;
    assert_eq!(status, 200);
    let (status, answer) = h.produce(json!({"topic": "blobs", "messages": [{"data": 1}]})).await;
    assert_eq!(status, 400, "{answer}");
    let records = read_records(&bootstrap, "blobs", 0, 0, 1).await;
    assert_eq!(records[0].value.as_deref(), Some(&b"raw bytes"[..]));
    assert_no_record(&bootstrap, "notes", 0, 4).await;
}

async fn avro_topics_encode_data_and_random_values_with_and_without_framing(kafka: Kafka) {
    let h = start(kafka).await;
    let bootstrap = h.bootstrap(0);
    let order = json!({"id": "o-1", "quantity": 3, "status": "PAID", "note": "gift"});
    let (status, answer) = h
        .produce(json!({"topic": "avro-plain", "messages": [{"data": order.clone()}, {"key": "r"}]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let records = read_records(&bootstrap, "avro-plain", 0, 0, 2).await;
    let decoded = avro_decode(ORDER_AVRO, records[0].value.as_ref().unwrap(), None);
    assert_eq!(decoded, order);
    let random = avro_decode(ORDER_AVRO, records[1].value.as_ref().unwrap(), None);
    assert!(
        random["quantity"].is_i64() && ["PLACED", "PAID"].contains(&random["status"].as_str().unwrap()),
        "{random}"
    );

    let (status, answer) = h
        .produce(
            json!({"topic": "avro-framed", "messages": [{"data": {"device": "d-1", "celsius": 21.5, "ok": true}}, {}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let schema = r#"{"type": "record", "name": "Reading", "fields": [{"name": "device", "type": "string"},
        {"name": "celsius", "type": "double"}, {"name": "ok", "type": "boolean"}]}"#;
    let records = read_records(&bootstrap, "avro-framed", 0, 0, 2).await;
    assert_eq!(
        avro_decode(schema, records[0].value.as_ref().unwrap(), Some(258)),
        json!({"device": "d-1", "celsius": 21.5, "ok": true})
    );
    avro_decode(schema, records[1].value.as_ref().unwrap(), Some(258));

    // Data the Avro schema does not allow: nothing of the call is written.
    let (status, answer) = h.produce(
        json!({"topic": "avro-plain", "messages": [{"data": order}, {"data": {"id": "o-2", "quantity": "x", "status": "PAID"}}]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        error_of(&answer).contains("message 2 of topic 'avro-plain' is invalid: /: does not match the Avro schema"),
        "{answer}"
    );
    assert_no_record(&bootstrap, "avro-plain", 0, 2).await;
}
