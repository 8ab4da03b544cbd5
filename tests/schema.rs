//! JSON Schemas on topics through the real server and broker: `data` is checked against the topic's value schema
//! (a call with one invalid message writes nothing), REST values on topics that opt in, random keys and values
//! from the schemas, and schemas that stop startup.

mod common;

use common::read::{assert_no_record, read_records};
use common::{Harness, Kafka, PRODUCE_OFFSET_FUNCTION, error_of};
use serde_json::{Value, json};

on_both_brokers!(
    data_is_validated_against_the_topic_schema_before_anything_is_written,
    rest_values_are_checked_on_topics_that_opt_in,
    random_keys_and_values_come_from_the_topic_schemas
);

const CONFIG: &str = concat!(
    r#"
[clusters.local]
bootstrap = ["{broker0}"]

[topics.orders]
partitions = 1
value_schema = { type = "object", required = ["item", "quantity"], properties = { item = { type = "string" }, quantity = { type = "integer", minimum = 1 } } }

[topics.payments]
partitions = 1
value_schema = "schemas/payment.json"

[topics.checked]
partitions = 1
validate = true
value_schema = { type = "object", required = ["id"], properties = { id = { type = "integer" } } }

[topics.events]
partitions = 1
value_schema = "schemas/event.json"
key_schema = { type = "string", pattern = "^evt-[0-9]{4}$" }
"#,
    demo_user!()
);

const PAYMENT: &str = r#"{"type": "object", "required": ["amount"], "properties": {"amount": {"$ref": "money.json"}}}"#;
const MONEY: &str = r#"{"type": "number", "exclusiveMinimum": 0}"#;
const EVENT: &str = r#"{
  "type": "object",
  "required": ["id", "email", "amount", "at", "kind"],
  "properties": {
    "id": {"type": "string", "format": "uuid"},
    "email": {"type": "string", "format": "email"},
    "amount": {"$ref": "money.json"},
    "at": {"type": "string", "format": "date-time"},
    "kind": {"enum": ["created", "paid", "shipped"]},
    "note": {"type": ["string", "null"], "maxLength": 20}
  },
  "additionalProperties": false
}"#;

const GENERATE: &str = r#"
return function(req)
  local messages = {}
  for i = 1, 20 do messages[i] = {} end
  kafka.produce{ topic = "events", messages = messages }
  local one = schema.random("events")
  local ok = schema.validate("events", one)
  return { json = { ok = ok, kind = one.kind } }
end
"#;

const CHECK: &str = r#"
return function(req)
  local ok, violations = schema.validate(req.query.topic, req:json())
  return { json = { ok = ok, violations = violations or {} } }
end
"#;

/// The server on CONFIG, with `functions` and the schema files the config names.
async fn start(kafka: Kafka, functions: &[(&str, &str)]) -> Harness {
    // "../schemas/..." lands beside config.toml, where the config's relative schema paths point.
    let schemas = [
        ("../schemas/payment.json", PAYMENT),
        ("../schemas/money.json", MONEY),
        ("../schemas/event.json", EVENT),
    ];
    let files: Vec<(&str, &str)> = functions.iter().copied().chain(schemas).collect();
    Harness::on_with(kafka, 1, CONFIG, &files).await
}

async fn data_is_validated_against_the_topic_schema_before_anything_is_written(kafka: Kafka) {
    let h = start(kafka, &[PRODUCE_OFFSET_FUNCTION, ("check.lua", CHECK)]).await;
    let bootstrap = h.bootstrap(0);
    let (status, answer) = h
        .produce(json!({"topic": "orders", "messages": [
            {"key": "a", "data": {"item": "book", "quantity": 1}},
            {"key": "b", "data": {"item": "pen", "quantity": -1}},
        ]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "kafka.produce: message 2 of topic 'orders' is invalid: /quantity: -1 is less than the minimum of 1"
    );
    let (status, answer) = h
        .produce(json!({"topic": "orders", "messages": [{"data": {"quantity": 0, "item": 7}}]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    let error = error_of(&answer);
    for expected in [
        "/quantity: 0 is less than the minimum of 1",
        "/item: 7 is not of type \"string\"",
    ] {
        assert!(error.contains(expected), "{error}");
    }
    // Every invalid message of the call is named, each with all its violations.
    let (status, answer) = h
        .produce(json!({"topic": "orders", "messages": [
            {"data": {"item": 1, "quantity": 0}},
            {"data": {"item": "fine", "quantity": 1}},
            {"data": {"item": 2, "quantity": 1}},
        ]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "kafka.produce: 2 of 3 messages are invalid (nothing was written): message 1: topic 'orders': /item: 1 is \
         not of type \"string\"; /quantity: 0 is less than the minimum of 1; message 3: topic 'orders': /item: 2 is \
         not of type \"string\""
    );
    assert_no_record(&bootstrap, "orders", 0, 0).await;

    let (status, answer) = h
        .produce(json!({"topic": "orders", "messages": [{"key": "a", "data": {"item": "book", "quantity": 2}}]}))
        .await;
    assert_eq!((status, &answer), (200, &json!({"offset": 0})));
    // `value` is written as given, without validation.
    let (status, _) = h
        .produce(json!({"topic": "orders", "messages": [{"value": "not an order"}]}))
        .await;
    assert_eq!(status, 200);
    let records = read_records(&bootstrap, "orders", 0, 0, 2).await;
    let order: Value = serde_json::from_slice(records[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(order, json!({"item": "book", "quantity": 2}));

    // A schema from a file, with a $ref to a sibling file.
    let (status, answer) = h
        .produce(json!({"topic": "payments", "messages": [{"data": {"amount": 0}}]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        error_of(&answer).contains("/amount: 0 is less than or equal to the minimum of 0"),
        "{answer}"
    );
    let (status, _) = h
        .produce(json!({"topic": "payments", "messages": [{"data": {"amount": 9.5}}]}))
        .await;
    assert_eq!(status, 200);

    // schema.validate from Lua, without producing.
    let check = async |topic: &str, body: &str| h.send(&format!("/check?topic={topic}"), &[], body).await;
    let (_, valid) = check("orders", r#"{"item": "x", "quantity": 3}"#).await;
    assert_eq!(valid, json!({"ok": true, "violations": {}}));
    let (_, invalid) = check("orders", r#"{"item": "x", "quantity": 0}"#).await;
    assert_eq!(
        invalid,
        json!({"ok": false, "violations": ["/quantity: 0 is less than the minimum of 1"]})
    );
    assert_eq!(check("nope", "{}").await.0, 500);
}

async fn rest_values_are_checked_on_topics_that_opt_in(kafka: Kafka) {
    let h = start(kafka, &[]).await;
    let bootstrap = h.bootstrap(0);
    let (status, answer) = h
        .post(
            "/produce/checked",
            r#"[{"value": "{\"id\": 1}"}, {"value": "{\"id\": \"x\"}"}, {"value": "nope"}]"#,
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let error = error_of(&answer);
    // Each invalid message is named, not only the first.
    for expected in [
        "2 of 3 messages are invalid (nothing was written)",
        "message 2: topic 'checked': /id: \"x\" is not of type \"integer\"",
        "message 3: topic 'checked': /: the value is not JSON (at line 1, column 2)",
    ] {
        assert!(error.contains(expected), "{error}");
    }
    assert_no_record(&bootstrap, "checked", 0, 0).await;
    let (status, answer) = h.post("/produce/checked", r#"{"value": "nope"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(error_of(&answer).contains("the value is not JSON"), "{answer}");
    let (status, answer) = h.post("/produce/checked", r#"{"value": {"id": 7}}"#).await;
    assert_eq!(status, 200, "{answer}");
    let records = read_records(&bootstrap, "checked", 0, 0, 1).await;
    assert_eq!(records[0].value.as_deref(), Some(&br#"{"id":7}"#[..]));
    // Topics that do not opt in take any REST value.
    let (status, _) = h.post("/produce/orders", r#"{"value": "anything"}"#).await;
    assert_eq!(status, 200);
}

async fn random_keys_and_values_come_from_the_topic_schemas(kafka: Kafka) {
    let h = start(kafka, &[("generate.lua", GENERATE)]).await;
    let response = h.http.get(h.url("/generate")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let schema = luka::schema::Schema::load(&h.dir.join("schemas/event.json")).unwrap();
    let records = read_records(&h.bootstrap(0), "events", 0, 0, 20).await;
    for record in &records {
        let key = String::from_utf8(record.key.clone().unwrap()).unwrap();
        assert!(
            key.len() == 8 && key.starts_with("evt-") && key[4..].bytes().all(|b| b.is_ascii_digit()),
            "{key}"
        );
        let value: Value = serde_json::from_slice(record.value.as_ref().unwrap()).unwrap();
        assert_eq!(schema.violations(&value), Vec::<String>::new(), "{value}");
    }
}

#[test]
fn bad_schemas_stop_startup_naming_the_topic_and_line() {
    let dir = common::temp_dir();
    let config = [
        "[clusters.local]",
        "bootstrap = [\"127.0.0.1:9\"]",
        "",
        "[topics.orders]",
        "value_schema = { type = \"strange\" }", // line 5
        "",
        "[topics.other]",
        "value_schema = \"missing.json\"", // line 8
        "",
        "[topics.third]", // line 10
        "validate = true",
        "",
        "[topics.fourth]", // line 13
        "content_type = \"avro/binary\"",
        "",
        "[topics.fifth]",
        "content_type = \"text/plain\"",
        "avro_schema = { type = \"string\" }", // line 18
    ]
    .join("\n");
    let problems = luka::config::Config::from_toml(&config, &dir, |_| None).unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |line: &str, words: &str| text.iter().any(|p| p.starts_with(line) && p.contains(words));
    assert!(has("line 5:", "[topics.\"orders\"] value_schema:"), "{text:?}");
    assert!(has("line 8:", "cannot read"), "{text:?}");
    assert!(has("line 10:", "needs a value_schema"), "{text:?}");
    assert!(has("line 13:", "avro/binary needs an avro_schema"), "{text:?}");
    assert!(has("line 18:", "use avro/binary"), "{text:?}");
}
