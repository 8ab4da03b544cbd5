//! Topic schemas through the real server and broker: `data` is checked against the topic's value schema, and a
//! call with one invalid message writes nothing.

mod common;

use common::Harness;
use common::read::{assert_no_record, read_records};
use serde_json::{Value, json};

const CONFIG: &str = r#"
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

[topics.notes]
partitions = 1
content_type = "text/plain"

[topics.blobs]
partitions = 1
content_type = "application/octet-stream"

[topics.events]
partitions = 1
value_schema = "schemas/event.json"
key_schema = { type = "string", pattern = "^evt-[0-9]{4}$" }

[topics.avro-plain]
partitions = 1
avro_schema = "schemas/order.avsc"

[topics.avro-framed]
partitions = 1
content_type = "avro/binary"
avro_schema = { type = "record", name = "Reading", fields = [ { name = "device", type = "string" }, { name = "celsius", type = "double" }, { name = "ok", type = "boolean" } ] }
schema_id = 258

[[users]]
name = "demo"
password = "demo"
topics = ["*"]
"#;

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

const PRODUCE: &str = r#"
return function(req)
  local ok, result = pcall(kafka.produce, req:json())
  if not ok then return { status = 400, json = { error = result } } end
  return { json = { offset = result.offset } }
end
"#;

const CHECK: &str = r#"
return function(req)
  local ok, violations = schema.validate(req.query.topic, req:json())
  return { json = { ok = ok, violations = violations or {} } }
end
"#;

/// The server on CONFIG, with `functions` and the schema files the config names.
async fn start(functions: &[(&str, &str)]) -> Harness {
    // "../schemas/..." lands beside config.toml, where the config's relative schema paths point.
    let schemas = [
        ("../schemas/payment.json", PAYMENT),
        ("../schemas/money.json", MONEY),
        ("../schemas/event.json", EVENT),
        ("../schemas/order.avsc", ORDER_AVRO),
    ];
    let files: Vec<(&str, &str)> = functions.iter().copied().chain(schemas).collect();
    Harness::start_with(1, CONFIG, &files).await
}

async fn produce(h: &Harness, call: Value) -> (u16, Value) {
    let response = h.http.post(h.url("/call")).body(call.to_string()).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_validated_against_the_topic_schema_before_anything_is_written() {
    let h = start(&[("call.lua", PRODUCE), ("check.lua", CHECK)]).await;
    let bootstrap = h.bootstrap(0);
    let (status, answer) = produce(
        &h,
        json!({"topic": "orders", "messages": [
            {"key": "a", "data": {"item": "book", "quantity": 1}},
            {"key": "b", "data": {"item": "pen", "quantity": -1}},
        ]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "kafka.produce: message 2 of topic 'orders' is invalid: /quantity: -1 is less than the minimum of 1"
    );
    let (status, answer) = produce(
        &h,
        json!({"topic": "orders", "messages": [{"data": {"quantity": 0, "item": 7}}]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    for expected in [
        "/quantity: 0 is less than the minimum of 1",
        "/item: 7 is not of type \"string\"",
    ] {
        assert!(error.contains(expected), "{error}");
    }
    assert_no_record(&bootstrap, "orders", 0, 0).await;

    let (status, answer) = produce(
        &h,
        json!({"topic": "orders", "messages": [{"key": "a", "data": {"item": "book", "quantity": 2}}]}),
    )
    .await;
    assert_eq!((status, &answer), (200, &json!({"offset": 0})));
    // `value` is written as given, without validation.
    let (status, _) = produce(&h, json!({"topic": "orders", "messages": [{"value": "not an order"}]})).await;
    assert_eq!(status, 200);
    let records = read_records(&bootstrap, "orders", 0, 0, 2).await;
    let order: Value = serde_json::from_slice(records[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(order, json!({"item": "book", "quantity": 2}));

    // A schema from a file, with a $ref to a sibling file.
    let (status, answer) = produce(&h, json!({"topic": "payments", "messages": [{"data": {"amount": 0}}]})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("/amount: 0 is less than or equal to the minimum of 0"),
        "{answer}"
    );
    let (status, _) = produce(
        &h,
        json!({"topic": "payments", "messages": [{"data": {"amount": 9.5}}]}),
    )
    .await;
    assert_eq!(status, 200);

    // schema.validate from Lua, without producing.
    let check = |topic: &str, body: &str| {
        h.http
            .post(h.url(&format!("/check?topic={topic}")))
            .body(body.to_owned())
            .send()
    };
    let valid: Value = check("orders", r#"{"item": "x", "quantity": 3}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(valid, json!({"ok": true, "violations": {}}));
    let invalid: Value = check("orders", r#"{"item": "x", "quantity": 0}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        invalid,
        json!({"ok": false, "violations": ["/quantity: 0 is less than the minimum of 1"]})
    );
    assert_eq!(check("nope", "{}").await.unwrap().status(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_values_are_checked_on_topics_that_opt_in() {
    let h = start(&[]).await;
    let bootstrap = h.bootstrap(0);
    let (status, answer) = h
        .post(
            "/produce/checked",
            r#"[{"value": "{\"id\": 1}"}, {"value": "{\"id\": \"x\"}"}, {"value": "nope"}]"#,
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("message 2 of topic 'checked' is invalid: /id: \"x\" is not of type \"integer\""),
        "{error}"
    );
    assert_no_record(&bootstrap, "checked", 0, 0).await;
    let (status, answer) = h.post("/produce/checked", r#"{"value": "nope"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("the value is not JSON"),
        "{answer}"
    );
    let (status, answer) = h.post("/produce/checked", r#"{"value": {"id": 7}}"#).await;
    assert_eq!(status, 200, "{answer}");
    let records = read_records(&bootstrap, "checked", 0, 0, 1).await;
    assert_eq!(records[0].value.as_deref(), Some(&br#"{"id":7}"#[..]));
    // Topics that do not opt in take any REST value.
    let (status, _) = h.post("/produce/orders", r#"{"value": "anything"}"#).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_types_encode_data_and_random_values() {
    let h = start(&[("call.lua", PRODUCE)]).await;
    let bootstrap = h.bootstrap(0);
    let (status, answer) = produce(
        &h,
        json!({"topic": "notes", "messages": [{"data": "hello"}, {"data": 42}, {"data": true}, {}]}),
    )
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
    let (status, answer) = produce(&h, json!({"topic": "notes", "messages": [{"data": {"a": 1}}]})).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["error"],
        "kafka.produce: message 1 of topic 'notes': an object cannot be encoded as text/plain; give a value the \
         content type can carry"
    );
    let (status, _) = produce(&h, json!({"topic": "blobs", "messages": [{"data": "raw bytes"}]})).await;
    assert_eq!(status, 200);
    let (status, answer) = produce(&h, json!({"topic": "blobs", "messages": [{"data": 1}]})).await;
    assert_eq!(status, 400, "{answer}");
    let records = read_records(&bootstrap, "blobs", 0, 0, 1).await;
    assert_eq!(records[0].value.as_deref(), Some(&b"raw bytes"[..]));
    assert_no_record(&bootstrap, "notes", 0, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_keys_and_values_come_from_the_topic_schemas() {
    let h = start(&[("generate.lua", GENERATE)]).await;
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

const ORDER_AVRO: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
  {"name": "id", "type": "string"},
  {"name": "quantity", "type": "int"},
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["PLACED", "PAID"]}},
  {"name": "note", "type": ["null", "string"], "default": null}
]}"#;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_topics_encode_data_and_random_values_with_and_without_framing() {
    let h = start(&[("call.lua", PRODUCE)]).await;
    let bootstrap = h.bootstrap(0);
    let order = json!({"id": "o-1", "quantity": 3, "status": "PAID", "note": "gift"});
    let (status, answer) = produce(
        &h,
        json!({"topic": "avro-plain", "messages": [{"data": order.clone()}, {"key": "r"}]}),
    )
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

    let (status, answer) = produce(
        &h,
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
    let (status, answer) = produce(
        &h,
        json!({"topic": "avro-plain", "messages": [{"data": order}, {"data": {"id": "o-2", "quantity": "x", "status": "PAID"}}]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("message 2 of topic 'avro-plain' is invalid: /: does not match the Avro schema"),
        "{answer}"
    );
    assert_no_record(&bootstrap, "avro-plain", 0, 2).await;
}

/// `seeds/000_*`'s kafka.yaml, as written there.
const SEED_ASYNCAPI: &str = include_str!("fixtures/kafka.yaml");

/// The seed's kafka.js, in Lua.
const SEED_PRODUCE: &str = r#"
return function(req)
  local r = kafka.produce{ topic = "orders", messages = {
    { key = "foo-1", data = { foo = "bar-1" } },
    { key = "foo-2", value = "hello mokapi" },
    {},
  } }
  local ok, err = pcall(kafka.produce, { topic = "orders", messages = { { data = { foo = 1 } } } })
  return { json = { cluster = r.cluster, offset = r.offset, error = err } }
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_asyncapi_document_declares_a_working_topic() {
    // The document names server `mokapi` at localhost:9092; config.toml points that cluster at the test broker.
    let config = "asyncapi = \"kafka.yaml\"\n\n[clusters.mokapi]\nbootstrap = [\"{broker0}\"]\n";
    let h = Harness::start_with(
        1,
        config,
        &[("../kafka.yaml", SEED_ASYNCAPI), ("seed.lua", SEED_PRODUCE)],
    )
    .await;
    let answer: Value = h.http.get(h.url("/seed")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (answer["cluster"].as_str(), answer["offset"].as_i64()),
        (Some("mokapi"), Some(0)),
        "{answer}"
    );
    assert_eq!(
        answer["error"],
        "kafka.produce: message 1 of topic 'orders' is invalid: /foo: 1 is not of type \"string\""
    );
    let records = read_records(&h.bootstrap(0), "orders", 0, 0, 3).await;
    assert_eq!(records[0].value.as_deref(), Some(&br#"{"foo":"bar-1"}"#[..]));
    assert_eq!(records[1].value.as_deref(), Some(&b"hello mokapi"[..]));
    let random: Value = serde_json::from_slice(records[2].value.as_ref().unwrap()).unwrap();
    assert!(
        random.is_object() && random.get("foo").is_none_or(Value::is_string),
        "{random}"
    );
    assert_no_record(&h.bootstrap(0), "orders", 0, 3).await;
}

#[test]
fn asyncapi_servers_become_clusters_unless_config_defines_them() {
    let dir = common::temp_dir();
    std::fs::write(dir.join("kafka.yaml"), SEED_ASYNCAPI).unwrap();
    let config = luka::config::Config::from_toml("asyncapi = [\"kafka.yaml\"]\n", &dir, |_| None).unwrap();
    assert_eq!(config.clusters["mokapi"].bootstrap, vec!["localhost:9092".to_owned()]);
    let orders = &config.topics[0];
    assert_eq!((orders.pattern.as_str(), orders.cluster.as_str()), ("orders", "mokapi"));
    assert!(orders.value_schema.is_some());

    // config.toml wins over the document, and a broken document names the asyncapi line.
    let own = "asyncapi = \"kafka.yaml\"\n[clusters.mokapi]\nbootstrap = [\"10.0.0.1:9092\"]\n[topics.orders]\ncluster = \"mokapi\"\n";
    let config = luka::config::Config::from_toml(own, &dir, |_| None).unwrap();
    assert_eq!(config.clusters["mokapi"].bootstrap, vec!["10.0.0.1:9092".to_owned()]);
    assert!(config.topics[0].value_schema.is_none());
    std::fs::write(
        dir.join("broken.yaml"),
        "asyncapi: 2.0.0\nchannels: { a: { publish: { message: { $ref: '#/x' } } } }",
    )
    .unwrap();
    let problems = luka::config::Config::from_toml("\nasyncapi = \"broken.yaml\"\n", &dir, |_| None).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].to_string().starts_with("line 2: asyncapi: "),
        "{}",
        problems[0]
    );
    assert!(problems[0].to_string().contains("points nowhere"), "{}", problems[0]);
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
