//! `kafka.produce` from Lua through the real server and an embedded broker, read back with librdkafka: where
//! messages land, what the call reports, and errors a handler can catch.

mod common;

use common::configs::LUA;
use common::read::{assert_no_record, header_texts, read_records, text};
use common::{Harness, Kafka, PRODUCE_FUNCTION, error_of};
use luka::produce::partitioner::partition_for_key;
use serde_json::{Value, json};

on_both_brokers!(
    produce_places_messages_like_java_and_reports_each,
    random_keys_and_values_tombstones_headers_and_the_deprecated_form,
    produce_errors_are_clear_catchable_and_write_nothing,
    a_one_message_call_reports_what_the_general_reader_reports,
    a_produce_in_a_coroutine_the_handler_made_is_refused_and_writes_nothing
);

/// `kafka.produce` called with what is not a call table; each caught error, typed.
const ARGUMENTS: &str = r#"
return function(req)
  local out = {}
  for _, arg in ipairs({ false, "text", 5, json.null }) do
    local _, e = pcall(kafka.produce, arg)
    table.insert(out, type(e) .. ": " .. tostring(e))
  end
  local _, e = pcall(kafka.produce, nil)
  table.insert(out, type(e) .. ": " .. tostring(e))
  _, e = pcall(kafka.produce)
  table.insert(out, type(e) .. ": " .. tostring(e))
  return { json = out }
end
"#;

/// `kafka.produce` waits by suspending the request's coroutine, so it cannot be called from a coroutine the handler
/// made (which would be suspended instead), nor where Luau cannot yield (a C function's callback); the handler's own
/// `coroutine.yield()` just lets others run, and never sends what such a failed call left.
const NESTED: &str = r#"
local function inside_a_coroutine(form)
  return coroutine.wrap(function()
    local call = { topic = "misc", messages = { { value = "inner" } } }
    if form == "general" then call.messages[1].headers = { h = "v" } end
    local ok, e = pcall(kafka.produce, call)
    return e
  end)()
end

-- Called back by a C function (string.gsub), the call cannot yield: it is refused, saying why.
local function inside_a_callback(form)
  local call = { topic = "misc", messages = { { value = "in-callback" } } }
  if form == "general" then call.messages[1].headers = { h = "v" } end
  local ok, e = pcall(string.gsub, "a", "a", function() kafka.produce(call) end)
  return e
end

return function(req)
  local errors = { inside_a_coroutine("one"), inside_a_coroutine("general") }
  local boundary = { inside_a_callback("one"), inside_a_callback("general") }
  -- The handler's own yield does not send what the failed calls left.
  coroutine.yield()
  local r = kafka.produce{ topic = "misc", messages = { { value = "outer" } } }
  return { json = { errors = errors, boundary = boundary, offset = r.offset } }
end
"#;

async fn start(kafka: Kafka) -> Harness {
    Harness::on_with(
        kafka,
        1,
        LUA,
        &[PRODUCE_FUNCTION, ("arguments.lua", ARGUMENTS), ("nested.lua", NESTED)],
    )
    .await
}

async fn produce_places_messages_like_java_and_reports_each(kafka: Kafka) {
    let h = start(kafka).await;
    let bootstrap = h.bootstrap(0);
    let (status, result) = h
        .produce(json!({"topic": "multi", "messages": [
            {"partition": 2, "key": "k-explicit", "value": "one", "timestamp": 1_700_000_000_000_i64},
            {"key": "alpha", "value": "two"},
            {"key": "beta", "data": {"n": 1, "tags": ["x"]}},
            {"key": "alpha", "value": 42},
            {"partition": 2, "key": "k-explicit-2", "value": true},
        ]}))
        .await;
    assert_eq!(status, 200, "{result}");
    let alpha = partition_for_key(b"alpha", 4);
    let beta = partition_for_key(b"beta", 4);
    let messages = result["messages"].as_array().unwrap_or_else(|| panic!("{result}"));
    let partitions: Vec<i64> = messages
        .iter()
        .map(|m| m["partition"].as_i64().expect("partition"))
        .collect();
    assert_eq!(partitions, vec![2, alpha as i64, beta as i64, alpha as i64, 2]);
    assert_eq!(
        (result["cluster"].as_str(), result["topic"].as_str()),
        (Some("local"), Some("multi"))
    );
    assert_eq!(result["partition"], 2);
    assert_eq!(result["offset"], messages[0]["offset"]);
    assert_eq!(
        (result["key"].as_str(), result["value"].as_str()),
        (Some("k-explicit"), Some("one"))
    );
    assert_eq!(messages[0]["timestamp"], 1_700_000_000_000_i64);
    assert_eq!(messages[2]["value"], r#"{"n":1,"tags":["x"]}"#);
    assert!(messages[4]["offset"].as_i64() > messages[0]["offset"].as_i64());

    // Read every partition back and compare with where each message should be, in order.
    let sent = [
        ("k-explicit", "one"),
        ("alpha", "two"),
        ("beta", r#"{"n":1,"tags":["x"]}"#),
        ("alpha", "42"),
        ("k-explicit-2", "true"),
    ];
    for partition in 0..4 {
        let expected: Vec<(Option<String>, Option<String>)> = sent
            .iter()
            .zip(&partitions)
            .filter(|(_, p)| **p == i64::from(partition))
            .map(|((k, v), _)| (Some(k.to_string()), Some(v.to_string())))
            .collect();
        let records = read_records(&bootstrap, "multi", partition, 0, expected.len()).await;
        assert_eq!(
            records.iter().map(text).collect::<Vec<_>>(),
            expected,
            "partition {partition}"
        );
        assert_no_record(&bootstrap, "multi", partition, expected.len() as i64).await;
        if partition == 2 {
            assert_eq!(records[0].timestamp_ms, Some(1_700_000_000_000));
        }
    }
}

async fn random_keys_and_values_tombstones_headers_and_the_deprecated_form(kafka: Kafka) {
    let h = start(kafka).await;
    let bootstrap = h.bootstrap(0);
    let (status, result) = h
        .produce(json!({"topic": "random", "messages": [{}, {}, {"key": "k"}]}))
        .await;
    assert_eq!(status, 200, "{result}");
    let records = read_records(&bootstrap, "random", 0, 0, 3).await;
    for (record, reported) in records.iter().zip(result["messages"].as_array().unwrap()) {
        let key = String::from_utf8(record.key.clone().unwrap()).unwrap();
        assert_eq!(reported["key"], key.as_str());
        let value: Value = serde_json::from_slice(record.value.as_ref().unwrap()).expect("random values are JSON");
        assert_eq!(reported["value"], value.to_string());
    }
    for record in &records[..2] {
        let key = record.key.as_ref().unwrap();
        assert_eq!(key.len(), 9, "{key:?}");
        assert!(key.iter().all(u8::is_ascii_lowercase), "{key:?}");
    }
    assert_eq!(records[2].key.as_deref(), Some(&b"k"[..]));

    // Tombstone (json.null is how JSON null arrives in Lua) and both header forms.
    let code = r#"{"topic": "misc", "messages": [
        {"key": "gone", "value": null},
        {"key": "h1", "value": "x", "headers": {"trace": "abc", "retries": 3, "ok": true}},
        {"key": "h2", "value": "y", "headers": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]},
        {"key": "h3", "value": "z", "headers": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}, {"key": "a", "value": "3"}]}
    ]}"#;
    let (status, result) = h.send("/call", &[], code).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["messages"][0]["value"], Value::Null);
    let records = read_records(&bootstrap, "misc", 0, 0, 4).await;
    assert_eq!(records[0].key.as_deref(), Some(&b"gone"[..]));
    assert_eq!(records[0].value, None);
    assert_eq!(
        header_texts(&records[1]),
        vec![
            ("ok".into(), "true".into()),
            ("retries".into(), "3".into()),
            ("trace".into(), "abc".into())
        ]
    );
    assert_eq!(
        header_texts(&records[2]),
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    // A repeated name is written as given, in order, and reported back in the list form.
    assert_eq!(
        header_texts(&records[3]),
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into())
        ]
    );
    assert_eq!(
        result["messages"][3]["headers"],
        json!([{"key": "a", "value": "1"}, {"key": "b", "value": "2"}, {"key": "a", "value": "3"}])
    );

    // The deprecated single-message form.
    let (status, result) = h
        .produce(json!({"topic": "misc", "key": "old", "value": "style"}))
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        (result["offset"].as_i64(), result["key"].as_str()),
        (Some(4), Some("old"))
    );
    let records = read_records(&bootstrap, "misc", 0, 4, 1).await;
    assert_eq!(text(&records[0]), (Some("old".into()), Some("style".into())));
}

async fn produce_errors_are_clear_catchable_and_write_nothing(kafka: Kafka) {
    let h = start(kafka).await;
    let bootstrap = h.bootstrap(0);
    let cases = [
        (
            json!({"topic": "nope", "messages": [{"value": "x"}]}),
            "kafka topic 'nope' not found",
        ),
        (
            json!({"cluster": "elsewhere", "topic": "misc", "messages": [{"value": "x"}]}),
            "kafka cluster 'elsewhere' not found",
        ),
        (
            json!({"topic": "amb.amb", "messages": [{"value": "x"}]}),
            "specify the cluster",
        ),
        (
            json!({"topic": "misc", "messages": [{"value": "ok"}, {"partition": 7, "value": "x"}]}),
            "message 2: kafka topic 'misc' has no partition 7",
        ),
        (
            json!({"topic": "misc", "messages": [{"value": "ok"}, {"data": {}, "value": "x"}]}),
            "message 2: give data",
        ),
        (
            json!({"topic": "misc", "messages": [{"valu": "x"}]}),
            "unknown field 'valu'",
        ),
        (
            json!({"topic": "misc", "messages": [{"partition": -1, "value": "x"}]}),
            "partition must be an integer from 0 to 2147483647, got -1",
        ),
        (
            json!({"topic": "misc", "messages": [{"value": "ok"}, {"partition": 1.5, "value": "x"}, "text", {"valu": 1}]}),
            "3 of 4 messages are invalid (nothing was written): message 2: partition must be an integer from 0 to \
             2147483647, got 1.5; message 3: expected a table, got string; message 4: unknown field 'valu'",
        ),
        (json!({"messages": [{"value": "x"}]}), "give a topic"),
        (json!({"topic": "misc", "messages": []}), "non-empty list"),
    ];
    for (call, expected) in cases {
        let (status, answer) = h.produce(call.clone()).await;
        assert_eq!(status, 400, "{call}: {answer}");
        let error = error_of(&answer);
        assert!(error.contains(expected), "{call}: expected '{expected}' in '{error}'");
        assert!(error.starts_with("kafka.produce: "), "{error}");
    }
    // A topic name of any length is refused once, cut, before the messages are read (each took a copy of it).
    let long = "a".repeat(100_000);
    let (status, answer) = h
        .produce(json!({"topic": long, "messages": [{"value": "x"}, {"value": "y"}]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    let error = error_of(&answer);
    assert!(
        error.contains("is not a valid kafka topic name") && error.len() < 1000,
        "{error}"
    );
    assert_no_record(&bootstrap, "misc", 0, 0).await;
    // Whatever the argument, a caught error is a plain string.
    let (status, errors) = h.send("/arguments", &[], "").await;
    assert_eq!(status, 200, "{errors}");
    for error in errors.as_array().unwrap() {
        let error = error.as_str().unwrap();
        assert!(
            error.starts_with("string: kafka.produce: expected a table: kafka.produce{topic = "),
            "{error}"
        );
    }
    // With the cluster named, the ambiguous topic is fine.
    let (status, result) = h
        .produce(json!({"cluster": "other", "topic": "amb.amb", "messages": [{"value": "x"}]}))
        .await;
    assert_eq!((status, result["cluster"].as_str()), (200, Some("other")), "{result}");
}

async fn a_one_message_call_reports_what_the_general_reader_reports(kafka: Kafka) {
    let h = start(kafka).await;
    // One message of a key and a value or data takes the fast path; `headers` sends the same through the general
    // reader. Both must answer the same fields, key and value (offsets and partitions aside), and the topic written
    // (its Lua string is made once per VM and kept: the topics alternate so a wrong one kept would show).
    for (i, message) in [
        json!({"key": "k1", "value": "v"}),
        json!({"key": "k2", "data": {"a": 1, "list": [1, 2]}}),
        json!({"value": "no key"}),
        json!({"data": {"b": true}}),
        // A number key (an id read from JSON) is written as its JSON text, on either path.
        json!({"key": 12345, "data": {"id": 12345}}),
        json!({"key": 1.5, "value": "v"}),
        // The partition and timestamp given are the ones written, on either path.
        json!({"key": "k3", "value": "v", "partition": 3, "timestamp": 1_700_000_000_000_i64}),
    ]
    .into_iter()
    .enumerate()
    {
        let topic = ["multi", "misc"][i % 2];
        let mut general = message.clone();
        general["headers"] = json!({});
        let (status, fast) = h.produce(json!({"topic": topic, "messages": [message]})).await;
        assert_eq!(status, 200, "{fast}");
        let (status, slow) = h.produce(json!({"topic": topic, "messages": [general]})).await;
        assert_eq!(status, 200, "{slow}");
        assert_eq!(
            (fast["topic"].as_str(), slow["topic"].as_str()),
            (Some(topic), Some(topic))
        );
        let fields = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(fields(&fast), fields(&slow), "{message}");
        assert_eq!(fields(&fast["messages"][0]), fields(&slow["messages"][0]), "{message}");
        assert_eq!(fast["value"], slow["value"], "{message}");
        assert_eq!(fast["messages"][0]["value"], fast["value"], "{message}");
        if let Some(partition) = message.get("partition") {
            assert_eq!(
                (&fast["partition"], &slow["partition"]),
                (partition, partition),
                "{message}"
            );
            let timestamp = &message["timestamp"];
            assert_eq!(
                (&fast["messages"][0]["timestamp"], &slow["messages"][0]["timestamp"]),
                (timestamp, timestamp),
                "{message}"
            );
        }
        if let Some(key) = message.get("key") {
            let key = match key {
                Value::Number(n) => Value::String(n.to_string()),
                key => key.clone(),
            };
            assert_eq!((&fast["key"], &slow["key"]), (&key, &key), "{message}");
            assert_eq!(fast["messages"][0]["key"], key, "{message}");
        } else {
            assert!(
                fast["key"].as_str().is_some_and(|k| k.len() == 9),
                "a generated key: {fast}"
            );
        }
    }
}

async fn a_produce_in_a_coroutine_the_handler_made_is_refused_and_writes_nothing(kafka: Kafka) {
    let h = start(kafka).await;
    let bootstrap = h.bootstrap(0);
    let (status, answer) = h.send("/nested", &[], "").await;
    assert_eq!(status, 200, "{answer}");
    let errors = answer["errors"].as_array().unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(errors.len(), 2, "{answer}");
    for error in errors {
        assert!(
            error.as_str().is_some_and(|e| e.starts_with("kafka.produce: ")
                && e.contains("must be called by the handler itself, not inside a coroutine")),
            "{answer}"
        );
    }
    for error in answer["boundary"].as_array().unwrap_or_else(|| panic!("{answer}")) {
        assert!(
            error.as_str().is_some_and(|e| e.ends_with(
                "kafka.produce: it waits for Kafka, so it cannot be called where Lua cannot pause (inside a \
                 string.gsub or table.sort callback, or a metamethod); call it from the handler's own code"
            )),
            "{answer}"
        );
    }
    assert_eq!(
        answer["offset"], 0,
        "nothing written before the handler's own: {answer}"
    );
    let records = read_records(&bootstrap, "misc", 0, 0, 1).await;
    assert_eq!(text(&records[0]).1.as_deref(), Some("outer"));
    assert_no_record(&bootstrap, "misc", 0, 1).await;
}
