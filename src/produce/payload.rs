//! What a message asks to write, before the topic's configuration turns it into bytes.
//!
//! Takes a [`Key`] and a [`Payload`] as the caller gave them (bytes, structured `data`, or nothing, meaning "make
//! one up"), gives the bytes of the record. `data` is checked against the topic's value schema and encoded by its
//! content type. Random keys and values come from the topic's key and value schemas; without a key schema a key is
//! 9 lower-case letters, without a value schema a value is any small JSON value.

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value};

use crate::config::{ContentType, Topic};

/// The key of a message to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Key {
    /// A Kafka null key (REST messages without `key`).
    #[default]
    Null,
    Bytes(Vec<u8>),
    /// Generated for the topic (Lua messages without `key`).
    Random,
}

/// The value of a message to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Written as given; `None` is a Kafka null value (a tombstone).
    Bytes(Option<Vec<u8>>),
    /// Written as given, but read as JSON and checked against the topic's value schema when the topic sets
    /// `validate = true` (REST values).
    Checked(Option<Vec<u8>>),
    /// Structured data, encoded by the topic's content type.
    Data(Value),
    /// Structured data already written as compact JSON, for a topic that
    /// [takes JSON as is](super::Producer::takes_json_as_is): its bytes are the record's (Lua's `data`, which would
    /// otherwise be built into a `Value` only to be written out). Given for any other topic, it is read back and
    /// handled as `Data`.
    Json(Vec<u8>),
    /// Generated for the topic, then encoded like `Data`.
    Random,
}

impl Default for Payload {
    fn default() -> Self {
        Self::Bytes(None)
    }
}

/// Length of a generated key: as in the mock server the API comes from.
const RANDOM_KEY_LEN: usize = 9;

/// Deepest nesting of a generated value, so a random document stays small.
const RANDOM_MAX_DEPTH: usize = 2;

/// The key's bytes; a random key comes from the topic's key schema (strings as their bytes, other values as JSON),
/// or is 9 lower-case letters.
pub(super) fn key_bytes(key: Key, topic: &Topic) -> Result<Option<Vec<u8>>, ValueError> {
    match (key, &topic.key_schema) {
        (Key::Null, _) => Ok(None),
        (Key::Bytes(bytes), _) => Ok(Some(bytes)),
        (Key::Random, None) => Ok(Some(random_key().into_bytes())),
        (Key::Random, Some(schema)) => match schema.random(&mut rand::rng(), topic.optional_probability) {
            Ok(Value::String(key)) => Ok(Some(key.into_bytes())),
            Ok(other) => Ok(Some(other.to_string().into_bytes())),
            Err(e) => Err(ValueError::Encode(format!("cannot generate a key: {e}"))),
        },
    }
}

/// Why a value could not be written.
#[derive(Debug)]
pub(super) enum ValueError {
    /// Every violation of the topic's value schema.
    Invalid(Vec<String>),
    /// The topic's content type cannot carry this value.
    Encode(String),
}

/// Whether structured data for `topic` is written as its compact JSON text: a JSON topic without a value schema
/// (nothing to check, nothing to re-encode).
pub(super) fn takes_json_as_is(topic: &Topic) -> bool {
    topic.content_type == ContentType::Json && topic.value_schema.is_none()
}

/// The value's bytes; `data` is checked against the topic's value schema first, then encoded by its content type.
pub(super) fn value_bytes(payload: Payload, topic: &Topic) -> Result<Option<Vec<u8>>, ValueError> {
    let schema = topic.value_schema.as_deref();
    let check = |value: &Value| match schema.map(|s| s.violations(value)) {
        Some(violations) if !violations.is_empty() => Err(ValueError::Invalid(violations)),
        _ => Ok(()),
    };
    match payload {
        Payload::Bytes(bytes) => Ok(bytes),
        Payload::Checked(Some(bytes)) if topic.validate => match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => check(&value).map(|()| Some(bytes)),
            Err(e) => Err(ValueError::Invalid(vec![format!(
                "/: the value is not JSON (at line {}, column {})",
                e.line(),
                e.column()
            )])),
        },
        Payload::Checked(bytes) => Ok(bytes),
        Payload::Json(json) if takes_json_as_is(topic) => Ok(Some(json)),
        Payload::Json(json) => {
            let data = serde_json::from_slice::<Value>(&json)
                .map_err(|e| ValueError::Encode(format!("data is not JSON: {e}")))?;
            check(&data)?;
            encode(&data, topic).map(Some)
        }
        Payload::Data(data) => {
            check(&data)?;
            encode(&data, topic).map(Some)
        }
        Payload::Random => {
            let value = match (schema, topic.content_type) {
                (Some(schema), _) => schema
                    .random(&mut rand::rng(), topic.optional_probability)
                    .map_err(|e| ValueError::Encode(format!("cannot generate a value: {e}")))?,
                (None, ContentType::Avro) => match &topic.avro {
                    Some(codec) => codec
                        .random(&mut rand::rng(), topic.optional_probability)
                        .map_err(|e| ValueError::Encode(format!("cannot generate a value: {e}")))?,
                    None => return Err(ValueError::Encode("the topic has no Avro schema".into())),
                },
                (None, ContentType::Json) => random_value(&mut rand::rng(), 0),
                (None, ContentType::Text | ContentType::OctetStream) => Value::from(random_word(&mut rand::rng())),
            };
            encode(&value, topic).map(Some)
        }
    }
}

/// Structured data as record bytes, by the topic's content type.
fn encode(data: &Value, topic: &Topic) -> Result<Vec<u8>, ValueError> {
    let content_type = topic.content_type;
    if content_type == ContentType::Avro {
        let codec = topic
            .avro
            .as_ref()
            .ok_or_else(|| ValueError::Encode("the topic has no Avro schema".into()))?;
        return codec
            .encode(data)
            .map_err(|e| ValueError::Invalid(vec![format!("/: {e}")]));
    }
    let refuse = |what: &str| {
        ValueError::Encode(format!(
            "{what} cannot be encoded as {}; give a value the content type can carry",
            content_type.as_str()
        ))
    };
    match (content_type, data) {
        (ContentType::Json, data) => {
            Ok(serde_json::to_vec(data).unwrap_or_else(|_| unreachable!("a Value serializes")))
        }
        (ContentType::Text | ContentType::OctetStream, Value::String(s)) => Ok(s.clone().into_bytes()),
        (ContentType::Text, Value::Number(n)) => Ok(n.to_string().into_bytes()),
        (ContentType::Text, Value::Bool(b)) => Ok(b.to_string().into_bytes()),
        (_, Value::Object(_)) => Err(refuse("an object")),
        (_, Value::Array(_)) => Err(refuse("an array")),
        (_, Value::Null) => Err(refuse("null")),
        (ContentType::OctetStream, _) => Err(refuse("a number or boolean")),
        (ContentType::Avro, _) => unreachable!("encoded above"),
    }
}

/// 9 random lower-case letters.
pub fn random_key() -> String {
    let mut rng = rand::rng();
    (0..RANDOM_KEY_LEN)
        .map(|_| rng.random_range(b'a'..=b'z') as char)
        .collect()
}

/// Any JSON value: scalars, or a small array or object of them.
fn random_value(rng: &mut impl Rng, depth: usize) -> Value {
    let kinds = if depth >= RANDOM_MAX_DEPTH { 4 } else { 6 };
    match rng.random_range(0..kinds) {
        0 => Value::from(random_word(rng)),
        1 => Value::from(rng.random_range(-1000..=1000)),
        2 => Value::from((rng.random_range(0.0..1000.0_f64) * 100.0).round() / 100.0),
        3 => Value::from(rng.random_bool(0.5)),
        4 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut object = Map::new();
            for _ in 0..rng.random_range(1..5) {
                object.insert(random_word(rng), random_value(rng, depth + 1));
            }
            Value::Object(object)
        }
    }
}

fn random_word(rng: &mut impl Rng) -> String {
    const WORDS: [&str; 12] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
    ];
    WORDS.choose(rng).copied().unwrap_or("alpha").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(content_type: ContentType) -> Topic {
        Topic {
            pattern: crate::config::TopicPattern::parse("t").unwrap(),
            cluster: "c".into(),
            partitions: None,
            replication_factor: 1,
            value_schema: None,
            key_schema: None,
            validate: false,
            content_type,
            avro: None,
            optional_probability: 0.5,
        }
    }

    #[test]
    fn content_types_encode_what_they_can_carry() {
        let text = topic(ContentType::Text);
        let bytes = |v: serde_json::Value, t: &Topic| value_bytes(Payload::Data(v), t);
        assert_eq!(bytes(serde_json::json!("hi"), &text).unwrap().unwrap(), b"hi");
        assert_eq!(bytes(serde_json::json!(2.5), &text).unwrap().unwrap(), b"2.5");
        assert_eq!(bytes(serde_json::json!(true), &text).unwrap().unwrap(), b"true");
        let Err(ValueError::Encode(e)) = bytes(serde_json::json!({"a": 1}), &text) else {
            panic!()
        };
        assert!(e.contains("an object cannot be encoded as text/plain"), "{e}");
        let octets = topic(ContentType::OctetStream);
        assert_eq!(bytes(serde_json::json!("raw"), &octets).unwrap().unwrap(), b"raw");
        assert!(matches!(
            bytes(serde_json::json!(1), &octets),
            Err(ValueError::Encode(_))
        ));
        for t in [&text, &octets] {
            let random = value_bytes(Payload::Random, t).unwrap().unwrap();
            assert!(random.iter().all(u8::is_ascii_lowercase), "{random:?}");
        }
    }

    #[test]
    fn json_text_is_written_as_is_only_where_nothing_checks_or_re_encodes_it() {
        let json = |text: &str| Payload::Json(text.as_bytes().to_vec());
        let plain = topic(ContentType::Json);
        assert!(takes_json_as_is(&plain));
        assert_eq!(value_bytes(json(r#"{"a":1}"#), &plain).unwrap().unwrap(), br#"{"a":1}"#);
        // A topic with a value schema checks it, as it checks `Data`.
        let mut checked = topic(ContentType::Json);
        checked.value_schema = Some(std::sync::Arc::new(
            crate::schema::Schema::compile(serde_json::json!({"type": "object", "required": ["id"]}), None).unwrap(),
        ));
        assert!(!takes_json_as_is(&checked));
        assert!(matches!(
            value_bytes(json(r#"{"a":1}"#), &checked),
            Err(ValueError::Invalid(_))
        ));
        assert_eq!(
            value_bytes(json(r#"{"id":7}"#), &checked).unwrap().unwrap(),
            br#"{"id":7}"#
        );
        // Another content type encodes the data by its own rules.
        let text = topic(ContentType::Text);
        assert!(!takes_json_as_is(&text));
        assert_eq!(value_bytes(json(r#""hi""#), &text).unwrap().unwrap(), b"hi");
    }

    #[test]
    fn random_keys_are_nine_lower_case_letters() {
        for _ in 0..100 {
            let key = random_key();
            assert_eq!(key.len(), 9);
            assert!(key.bytes().all(|b| b.is_ascii_lowercase()), "{key}");
        }
    }

    #[test]
    fn data_is_compact_json_and_random_values_are_json() {
        let data = serde_json::json!({"a": [1, "x"], "b": null});
        assert_eq!(
            value_bytes(Payload::Data(data), &topic(ContentType::Json))
                .unwrap()
                .unwrap(),
            br#"{"a":[1,"x"],"b":null}"#
        );
        for _ in 0..100 {
            let bytes = value_bytes(Payload::Random, &topic(ContentType::Json))
                .unwrap()
                .unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap();
        }
    }
}
