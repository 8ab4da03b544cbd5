//! The JSON shape of the REST produce API (`seeds/002_*`): request body in, produce-core [`Message`]s out.

use serde::Deserialize;
use serde_json::Value;

use super::ApiError;
use crate::produce::{Key, Message, Payload};

/// One message as the hosted Producer API defines it; unknown fields are refused so typos are caught.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestMessage {
    topic: Option<String>,
    partition: Option<i32>,
    timestamp: Option<i64>,
    key: Option<String>,
    /// `Some(Null)` (an explicit `null`) is a tombstone; a missing `value` is an error.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    #[serde(default)]
    headers: Vec<RestHeader>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestHeader {
    key: String,
    value: String,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Parses a request body: one message object or an array of them. `path_topic` is the topic of
/// `/produce/<topic>`; without it every message must name its topic.
pub fn parse_body(body: &[u8], path_topic: Option<&str>) -> Result<Vec<Message>, ApiError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        if body.iter().all(u8::is_ascii_whitespace) {
            ApiError::BadRequest("the request body is empty; send a JSON message object or an array of them".into())
        } else {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        }
    })?;
    let items = match json {
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::BadRequest(
                "the message array is empty; send at least one message".into(),
            ));
        }
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        other => {
            return Err(ApiError::BadRequest(format!(
                "expected a JSON message object or an array of them, got {}",
                type_name(&other)
            )));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            to_message(item, path_topic).map_err(|e| ApiError::BadRequest(format!("message {}: {e}", index + 1)))
        })
        .collect()
}

fn to_message(item: Value, path_topic: Option<&str>) -> Result<Message, String> {
    if !item.is_object() {
        return Err(format!("expected a JSON object, got {}", type_name(&item)));
    }
    let m: RestMessage = serde_json::from_value(item).map_err(|e| e.to_string())?;
    let topic = match (path_topic, m.topic) {
        (Some(path), Some(body)) if path != body => {
            return Err(format!(
                "topic '{body}' differs from the topic '{path}' in the URL; drop one of them"
            ));
        }
        (Some(path), _) => path.to_owned(),
        (None, Some(body)) => body,
        (None, None) => return Err("missing field `topic` (required by POST /produce)".into()),
    };
    let value = match m.value {
        None => return Err("missing field `value`".into()),
        Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.into_bytes()),
        // Not a string: written as its compact JSON text, which is what a JSON value in a Kafka record means.
        Some(other) => Some(other.to_string().into_bytes()),
    };
    Ok(Message {
        topic,
        cluster: None,
        partition: m.partition,
        key: m.key.map_or(Key::Null, |k| Key::Bytes(k.into_bytes())),
        value: Payload::Checked(value),
        headers: m.headers.into_iter().map(|h| (h.key, h.value.into_bytes())).collect(),
        timestamp_ms: m.timestamp,
    })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str, topic: Option<&str>) -> String {
        parse_body(body.as_bytes(), topic).unwrap_err().to_string()
    }

    #[test]
    fn single_object_and_arrays_with_every_field() {
        let one = parse_body(br#"{"value":"hello_kafka"}"#, Some("greetings")).unwrap();
        assert_eq!(one[0].topic, "greetings");
        assert_eq!(one[0].value, Payload::Checked(Some(b"hello_kafka".to_vec())));
        let many = parse_body(
            br#"[{"topic":"cities","partition":1,"timestamp":1637745834744,"key":"city","value":"Istanbul",
                 "headers":[{"key":"expire","value":"1637745834756"}]},{"topic":"t","value":null}]"#,
            None,
        )
        .unwrap();
        assert_eq!(many[0].partition, Some(1));
        assert_eq!(many[0].timestamp_ms, Some(1_637_745_834_744));
        assert_eq!(many[0].key, Key::Bytes(b"city".to_vec()));
        assert_eq!(many[0].headers, vec![("expire".to_owned(), b"1637745834756".to_vec())]);
        assert_eq!(many[1].value, Payload::Checked(None), "null is a tombstone");
    }

    #[test]
    fn errors_name_the_message_and_field() {
        assert_eq!(
            err(r#"[{"value":"a"},{"key":"k"}]"#, Some("t")),
            "message 2: missing field `value`"
        );
        assert!(err(r#"{"vaule":"a"}"#, Some("t")).contains("unknown field `vaule`"));
        assert!(err(r#"{"value":"a"}"#, None).contains("missing field `topic`"));
        assert!(err(r#"{"value": "a""#, Some("t")).starts_with("malformed JSON"));
        assert!(err("[]", Some("t")).contains("empty"));
        assert!(err("42", Some("t")).contains("got a number"));
        assert!(err(r#"{"topic":"b","value":"x"}"#, Some("a")).contains("differs"));
    }

    #[test]
    fn non_string_values_are_written_as_json() {
        let m = parse_body(br#"{"value":{"a":1}}"#, Some("t")).unwrap();
        assert_eq!(m[0].value, Payload::Checked(Some(br#"{"a":1}"#.to_vec())));
    }
}
