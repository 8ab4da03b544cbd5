//! The JSON shape of the REST produce API (`seeds/002_*`): request body in, produce-core [`Message`]s out.
//!
//! The body is read once: an array is split into its raw items, and each item is deserialized into a typed message
//! whose strings borrow from the body, so the only copies made are the record's own key, value and headers. Every
//! invalid message is reported ([`InvalidMessages`]), each error in the API's words with echoed input cut short.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::ApiError;
use super::shape::{self, ECHO_CHARS, Field, Kind, echo, kind_of as type_name};
use crate::produce::{InvalidMessages, Key, Message, Payload};

const HEADER_FIELDS: &[Field] = &[
    Field {
        name: "key",
        kind: Kind::Text,
        required: true,
        rule: "must be a string",
    },
    Field {
        name: "value",
        kind: Kind::Text,
        required: true,
        rule: "must be a string",
    },
];

/// A message's fields as the API names them; `topic` is required unless the URL names the topic.
const fn message_fields(topic_required: bool) -> [Field; 6] {
    [
        Field {
            name: "topic",
            kind: Kind::Text,
            required: topic_required,
            rule: "names the topic to write to (a string; or POST to /produce/<topic>)",
        },
        Field {
            name: "partition",
            kind: Kind::Whole {
                min: 0,
                max: i32::MAX as i64,
                null_ok: true,
            },
            required: false,
            rule: "must be an integer from 0 to 2147483647",
        },
        Field {
            name: "timestamp",
            kind: Kind::Whole {
                min: i64::MIN,
                max: i64::MAX,
                null_ok: true,
            },
            required: false,
            rule: "must be an integer number of milliseconds since 1970-01-01T00:00:00Z",
        },
        Field {
            name: "key",
            kind: Kind::TextOrNull,
            required: false,
            rule: "must be a string (or null for no key)",
        },
        Field {
            name: "value",
            kind: Kind::Any,
            required: true,
            rule: "holds the record's value (null for a tombstone)",
        },
        Field {
            name: "headers",
            kind: Kind::List {
                fields: HEADER_FIELDS,
                null_ok: true,
            },
            required: false,
            rule: "must be a list of {\"key\", \"value\"} objects with string values (or null for none)",
        },
    ]
}

/// One message as the hosted Producer API defines it; unknown fields are refused so typos are caught.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "V: Deserialize<'de>"))]
struct RestMessage<'a, V = RestValue<'a>> {
    #[serde(borrow, default)]
    topic: Option<Text<'a>>,
    #[serde(default, deserialize_with = "partition")]
    partition: Option<i32>,
    #[serde(default, deserialize_with = "timestamp")]
    timestamp: Option<i64>,
    #[serde(borrow, default)]
    key: Option<Text<'a>>,
    /// `Some(Null)` (an explicit `null`) is a tombstone; a missing `value` is an error.
    #[serde(default, deserialize_with = "present")]
    value: Option<V>,
    /// `null` (as Go and Jackson write an empty list) is no headers, as a missing field is.
    #[serde(borrow, default)]
    headers: Option<Vec<RestHeader<'a>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestHeader<'a> {
    #[serde(borrow)]
    key: Text<'a>,
    #[serde(borrow)]
    value: Text<'a>,
}

/// A JSON string, borrowed from the body unless it had escapes.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// A message value: a string is written as its text, `null` is a tombstone, anything else as its JSON text, compact.
#[derive(Debug)]
enum RestValue<'a> {
    Null,
    Text(Cow<'a, str>),
    /// The value's text as sent (checked JSON), not parsed into a tree: a tree would sort the object's keys and
    /// round numbers beyond `f64` (`12345678901234567890123`, `1.10`), and building it and writing it out again was
    /// most of the REST path's work per record.
    Json(&'a RawValue),
}

impl<'de: 'a, 'a> Deserialize<'de> for RestValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        let text = raw.get();
        Ok(match text.as_bytes().first() {
            Some(b'n') => RestValue::Null,
            // Checked JSON: a string without escapes is the text between its quotes.
            Some(b'"') if !text.contains('\\') => RestValue::Text(Cow::Borrowed(&text[1..text.len() - 1])),
            Some(b'"') => {
                let Text(text) = serde_json::from_str(text).map_err(de::Error::custom)?;
                RestValue::Text(text)
            }
            _ => RestValue::Json(raw),
        })
    }
}

/// The one-pass reading takes a message value as a string (read once, into the reader's own buffer when it has
/// escapes) or `null` (`None`). Any other value fails that reading, and the body is read item by item, where
/// [`RestValue`] keeps the value's text.
type StringValue<'a> = Option<Text<'a>>;

impl<'a> From<StringValue<'a>> for RestValue<'a> {
    fn from(value: StringValue<'a>) -> Self {
        match value {
            None => RestValue::Null,
            Some(Text(text)) => RestValue::Text(text),
        }
    }
}

/// A JSON text without the whitespace between its tokens (a value the body spread over lines or indented); the text
/// itself, key order, numbers and escapes, stays as sent.
fn compact(json: &str) -> Vec<u8> {
    let bytes = json.as_bytes();
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    if !bytes.iter().any(is_space) {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            in_string = escaped || b != b'"';
            escaped = !escaped && b == b'\\';
            out.push(b);
        } else if !is_space(&b) {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

fn present<'de, D: Deserializer<'de>, V: Deserialize<'de>>(d: D) -> Result<Option<V>, D::Error> {
    V::deserialize(d).map(Some)
}

/// An optional whole number within `range`, named in the error as the API defines it.
struct Whole {
    field: &'static str,
    rule: &'static str,
    min: i64,
    max: i64,
}

impl<'de> Visitor<'de> for Whole {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} {}", self.field, self.rule)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if (self.min..=self.max).contains(&v) {
            Ok(Some(v))
        } else {
            Err(E::custom(format!("{} {}, got {v}", self.field, self.rule)))
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(format!("{} {}, got {v}", self.field, self.rule))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!("{} {}, got {v}", self.field, self.rule)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "{} {}, got the string {}",
            self.field,
            self.rule,
            echo(v)
        )))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(E::custom(format!("{} {}, got {v}", self.field, self.rule)))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(format!("{} {}, got an array", self.field, self.rule)))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(format!(
            "{} {}, got an object",
            self.field, self.rule
        )))
    }
}

fn partition<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let rule = Whole {
        field: "partition",
        rule: "must be an integer from 0 to 2147483647",
        min: 0,
        max: i64::from(i32::MAX),
    };
    let partition = d.deserialize_any(rule)?;
    Ok(partition.map(|p| i32::try_from(p).expect("checked range")))
}

fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(Whole {
        field: "timestamp",
        rule: "must be an integer number of milliseconds since 1970-01-01T00:00:00Z",
        min: i64::MIN,
        max: i64::MAX,
    })
}

/// Parses a request body: one message object or an array of at most `max` of them. `path_topic` is the topic of
/// `/produce/<topic>`; without it every message must name its topic.
pub fn parse_body(body: &[u8], path_topic: Option<&str>, max: usize) -> Result<Vec<Message>, ApiError> {
    if let Some(messages) = parse_valid(body, path_topic, max) {
        return Ok(messages);
    }
    let items = split_items(body)?;
    if items.len() > max {
        return Err(ApiError::TooMany {
            what: "messages",
            count: items.len(),
            max,
        });
    }
    let mut messages = Vec::with_capacity(items.len());
    let mut invalid = InvalidMessages::default();
    for (index, item) in items.iter().enumerate() {
        match to_message(item, path_topic) {
            Ok(message) => messages.push(message),
            Err(e) => invalid.add(index + 1, e),
        }
    }
    match invalid.report(items.len()) {
        None => Ok(messages),
        Some(report) => Err(ApiError::BadRequest(report)),
    }
}

/// A body whose every message is valid with a string or `null` value (the API's own form), read in one pass; `None`
/// for anything else (an empty or too long array, another kind of value, a message to explain), which [`parse_body`]
/// then reads item by item: to keep a JSON value's text, or to say what is wrong with each message.
fn parse_valid(body: &[u8], path_topic: Option<&str>, max: usize) -> Option<Vec<Message>> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    let parsed = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Bounded::deserialize(&mut reader, max).ok()?,
        Some(b'{') => vec![RestMessage::<StringValue>::deserialize(&mut reader).ok()?],
        _ => return None,
    };
    reader.end().ok()?;
    if parsed.is_empty() {
        return None;
    }
    parsed.into_iter().map(|m| into_message(m, path_topic).ok()).collect()
}

/// An array of at most `max` messages.
struct Bounded {
    max: usize,
}

impl Bounded {
    fn deserialize<'de>(
        reader: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
        max: usize,
    ) -> serde_json::Result<Vec<RestMessage<'de, StringValue<'de>>>> {
        reader.deserialize_seq(Self { max })
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = Vec<RestMessage<'de, StringValue<'de>>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of at most {} messages", self.max)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut messages = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(message) = seq.next_element()? {
            if messages.len() == self.max {
                return Err(de::Error::custom("too many messages"));
            }
            messages.push(message);
        }
        Ok(messages)
    }
}

/// The body's messages as raw JSON texts: the items of an array, or the one object.
fn split_items(body: &[u8]) -> Result<Vec<&RawValue>, ApiError> {
    let malformed = |e: serde_json::Error| {
        if body.iter().all(u8::is_ascii_whitespace) {
            ApiError::BadRequest("the request body is empty; send a JSON message object or an array of them".into())
        } else {
            ApiError::BadRequest(shape::not_json(&e))
        }
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let items: Vec<&RawValue> = match first {
        Some(b'[') => serde_json::from_slice(body).map_err(malformed)?,
        Some(b'{') => vec![serde_json::from_slice(body).map_err(malformed)?],
        _ => {
            let value: Value = serde_json::from_slice(body).map_err(malformed)?;
            return Err(ApiError::BadRequest(format!(
                "expected a JSON message object or an array of them, got {}",
                type_name(&value)
            )));
        }
    };
    if items.is_empty() {
        return Err(ApiError::BadRequest(
            "the message array is empty; send at least one message".into(),
        ));
    }
    Ok(items)
}

fn to_message(item: &RawValue, path_topic: Option<&str>) -> Result<Message, String> {
    let text = item.get();
    if !text.starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| clean(&e))?;
        return Err(format!("expected a JSON object, got {}", type_name(&value)));
    }
    let m: RestMessage = serde_json::from_str(text).map_err(|e| explain(text, path_topic, &e))?;
    into_message(m, path_topic).map_err(|problem| match problem {
        Unwritable::Said(said) => said,
        Unwritable::Missing(field) => explain(text, path_topic, &de::Error::custom(field)),
    })
}

/// Why a message that parsed cannot be written: said in full, or a missing field, explained from the message's text.
enum Unwritable {
    Said(String),
    Missing(&'static str),
}

fn into_message<'a, V: Into<RestValue<'a>>>(
    m: RestMessage<'a, V>,
    path_topic: Option<&str>,
) -> Result<Message, Unwritable> {
    let topic = match (path_topic, m.topic) {
        (Some(path), Some(Text(body))) if path != body => {
            return Err(Unwritable::Said(format!(
                "topic {} differs from the topic {} in the URL; drop one of them",
                echo(&body),
                echo(path)
            )));
        }
        (Some(path), _) => path.to_owned(),
        (None, Some(Text(body))) => body.into_owned(),
        (None, None) => return Err(Unwritable::Missing("topic")),
    };
    let value = match m.value.map(Into::into) {
        None => return Err(Unwritable::Missing("value")),
        Some(RestValue::Null) => None,
        Some(RestValue::Text(s)) => Some(s.into_owned().into_bytes()),
        // Not a string: written as its JSON text, which is what a JSON value in a Kafka record means.
        Some(RestValue::Json(raw)) => Some(compact(raw.get())),
    };
    Ok(Message {
        topic,
        cluster: None,
        partition: m.partition,
        key: m
            .key
            .map_or(Key::Null, |Text(k)| Key::Bytes(k.into_owned().into_bytes())),
        value: Payload::Checked(value),
        headers: m
            .headers
            .unwrap_or_default()
            .into_iter()
            .map(|h| (h.key.0.into_owned(), h.value.0.into_owned().into_bytes()))
            .collect(),
        timestamp_ms: m.timestamp,
    })
}

/// What is wrong with a message that did not parse, in the API's words (serde's own, cleaned, if the checker
/// finds nothing).
fn explain(text: &str, path_topic: Option<&str>, error: &serde_json::Error) -> String {
    let fields = message_fields(path_topic.is_none());
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|value| shape::problem(&value, "a message", &fields))
        .unwrap_or_else(|| clean(error))
}

/// A serde_json error without its position (which counts within one message, not the body) and with any quoted
/// input cut short.
fn clean(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let text = text.strip_suffix(&position).unwrap_or(&text);
    shorten_quotes(text)
}

/// `"…"` spans longer than [`ECHO_CHARS`] cut to that many characters.
fn shorten_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(256));
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        let (mut kept, mut escaped) = (0, false);
        for c in chars.by_ref() {
            let closing = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            if closing {
                if kept > ECHO_CHARS {
                    out.push('…');
                }
                out.push('"');
                break;
            }
            kept += 1;
            if kept <= ECHO_CHARS {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str, topic: Option<&str>) -> String {
        parse_body(body.as_bytes(), topic, 1000).unwrap_err().to_string()
    }

    #[test]
    fn single_object_and_arrays_with_every_field() {
        let one = parse_body(br#"{"value":"hello_kafka"}"#, Some("greetings"), 1000).unwrap();
        assert_eq!(one[0].topic, "greetings");
        assert_eq!(one[0].value, Payload::Checked(Some(b"hello_kafka".to_vec())));
        let many = parse_body(
            br#"[{"topic":"cities","partition":1,"timestamp":1637745834744,"key":"city","value":"Istanbul",
                 "headers":[{"key":"expire","value":"1637745834756"}]},{"topic":"t","value":null}]"#,
            None,
            1000,
        )
        .unwrap();
        assert_eq!(many[0].partition, Some(1));
        assert_eq!(many[0].timestamp_ms, Some(1_637_745_834_744));
        assert_eq!(many[0].key, Key::Bytes(b"city".to_vec()));
        assert_eq!(many[0].headers, vec![("expire".to_owned(), b"1637745834756".to_vec())]);
        assert_eq!(many[1].value, Payload::Checked(None), "null is a tombstone");
    }

    /// Optional fields given as `null`, as Go (a nil slice) and Jackson (a null field) write them, mean "none".
    #[test]
    fn optional_fields_may_be_null() {
        let one = parse_body(
            br#"{"value":"v","key":null,"partition":null,"timestamp":null,"headers":null}"#,
            Some("t"),
            1000,
        )
        .unwrap();
        assert_eq!(
            (&one[0].key, one[0].partition, one[0].timestamp_ms, one[0].headers.len()),
            (&Key::Null, None, None, 0)
        );
    }

    #[test]
    fn errors_name_the_message_and_field() {
        assert_eq!(
            err(r#"[{"value":"a"},{"key":"k"}]"#, Some("t")),
            "message 2: a message needs \"value\", which holds the record's value (null for a tombstone)"
        );
        assert!(err(r#"{"vaule":"a"}"#, Some("t")).contains("a message has no field 'vaule'; its fields are"));
        assert!(err(r#"{"value":"a"}"#, None).contains("a message needs \"topic\""));
        assert_eq!(
            err(r#"{"value": "a""#, Some("t")),
            "the body is not JSON: it ends too early (line 1, column 13)"
        );
        // The words of the API for each field, never serde's.
        assert_eq!(
            err(r#"{"value":"x","key":5}"#, Some("t")),
            "message 1: key must be a string (or null for no key), got 5"
        );
        assert_eq!(
            err(r#"{"value":"x","headers":{"a":"b"}}"#, Some("t")),
            "message 1: headers must be a list of {\"key\", \"value\"} objects with string values (or null for none), \
             got an object"
        );
        assert_eq!(
            err(r#"{"value":5}"#, None),
            "message 1: a message needs \"topic\", which names the topic to write to (a string; or POST to \
             /produce/<topic>)"
        );
        assert_eq!(
            err(r#"{"value":"x","topic":7}"#, None),
            "message 1: topic names the topic to write to (a string; or POST to /produce/<topic>), got 7"
        );
        assert!(err("[]", Some("t")).contains("empty"));
        assert!(err("42", Some("t")).contains("got a number"));
        assert!(err(r#"{"topic":"b","value":"x"}"#, Some("a")).contains("differs"));
    }

    #[test]
    fn every_invalid_message_is_reported_in_the_apis_words() {
        let report = err(
            r#"[{"value":"ok"},{"value":"x","partition":2147483648},{"value":"y","timestamp":1.5},{"key":"k"}]"#,
            Some("t"),
        );
        assert!(report.starts_with("3 of 4 messages are invalid"), "{report}");
        assert!(
            report.contains("message 2: partition must be an integer from 0 to 2147483647, got 2147483648"),
            "{report}"
        );
        assert!(
            report.contains("message 3: timestamp must be an integer number of milliseconds"),
            "{report}"
        );
        assert!(report.contains("got 1.5"), "{report}");
        assert!(report.contains("message 4: a message needs \"value\""), "{report}");
        assert!(
            !report.contains("i32") && !report.contains("i64") && !report.contains("column"),
            "{report}"
        );

        let many: Vec<String> = (0..25).map(|_| r#"{"key":"k"}"#.to_owned()).collect();
        let report = err(&format!("[{}]", many.join(",")), Some("t"));
        assert!(report.starts_with("25 of 25 messages are invalid"), "{report}");
        assert!(
            report.contains("message 10:") && !report.contains("message 11:"),
            "{report}"
        );
        assert!(report.ends_with("and 15 more invalid messages"), "{report}");
    }

    #[test]
    fn echoed_input_is_cut_short() {
        let long = "x".repeat(100_000);
        let report = err(&format!(r#"{{"value":"v","headers":"{long}"}}"#), Some("t"));
        assert!(report.len() < 200, "{report}");
        assert!(report.contains(&format!("'{}…'", "x".repeat(ECHO_CHARS))), "{report}");
        let report = err(&format!(r#"{{"value":"v","partition":"{long}"}}"#), Some("t"));
        assert!(report.len() < 200, "{report}");
    }

    #[test]
    fn strings_without_escapes_borrow_from_the_body() {
        let m: RestMessage = serde_json::from_str(r#"{"key":"plain","value":"a\"b"}"#).unwrap();
        assert!(matches!(m.key, Some(Text(Cow::Borrowed("plain")))));
        assert!(matches!(m.value, Some(RestValue::Text(Cow::Owned(ref v))) if v == "a\"b"));
        let m: RestMessage = serde_json::from_str(r#"{"value":"plain é"}"#).unwrap();
        assert!(matches!(m.value, Some(RestValue::Text(Cow::Borrowed("plain é")))));
    }

    #[test]
    fn non_string_values_are_written_as_json() {
        let m = parse_body(br#"{"value":{"a":1}}"#, Some("t"), 1000).unwrap();
        assert_eq!(m[0].value, Payload::Checked(Some(br#"{"a":1}"#.to_vec())));
    }

    /// What the one-pass reading of a body turns down is read item by item, and answered as before it.
    #[test]
    fn bodies_not_read_in_one_pass_get_the_item_by_item_answer() {
        let valid = br#"[{"value":"a"}, {"value":"b\"","key":"k"}]"#;
        assert_eq!(
            parse_valid(valid, Some("t"), 2),
            Some(parse_body(valid, Some("t"), 2).unwrap())
        );
        assert_eq!(parse_valid(valid, Some("t"), 2).map(|m| m.len()), Some(2));
        // A JSON value: read item by item, to keep its text.
        let json = br#"[{"value":"a"}, {"value":{"b":1},"key":"k"}]"#;
        assert_eq!(parse_valid(json, Some("t"), 2), None);
        let m = parse_body(json, Some("t"), 2).unwrap();
        assert_eq!(m[1].value, Payload::Checked(Some(br#"{"b":1}"#.to_vec())));
        assert_eq!(parse_valid(valid, Some("t"), 1), None);
        assert!(matches!(
            parse_body(valid, Some("t"), 1),
            Err(ApiError::TooMany { count: 2, max: 1, .. })
        ));
        for (body, answer) in [
            ("[]", "the message array is empty; send at least one message"),
            (
                r#"[{"value":"a"}] x"#,
                "the body is not JSON: it is not valid JSON (line 1, column 17)",
            ),
            (
                r#"[{"value":"a","topic":"u"}]"#,
                "message 1: topic 'u' differs from the topic 't' in the URL; drop one of them",
            ),
            (
                r#"[{"value":"a"},{"key":"k"}]"#,
                "message 2: a message needs \"value\", which holds the record's value (null for a tombstone)",
            ),
        ] {
            assert_eq!(parse_valid(body.as_bytes(), Some("t"), 2), None, "{body}");
            assert_eq!(err(body, Some("t")), answer, "{body}");
        }
    }

    /// As sent, less the whitespace between tokens: not sorted, not rounded, escapes and spaces in strings kept.
    #[test]
    fn json_values_keep_their_text() {
        let body = "{\"value\": {\n  \"b\": [1.10, 12345678901234567890123, -0.0, 1E5],\n  \"a\": \"x \\\" y\\\\\", \"\\u00e9\": true\n}}";
        let m = parse_body(body.as_bytes(), Some("t"), 1000).unwrap();
        let expected = r#"{"b":[1.10,12345678901234567890123,-0.0,1E5],"a":"x \" y\\","\u00e9":true}"#;
        assert_eq!(m[0].value, Payload::Checked(Some(expected.as_bytes().to_vec())));
        for (value, written) in [("7", "7"), ("false", "false"), ("[ ]", "[]"), ("\"a b\"", "a b")] {
            let m = parse_body(format!("{{\"value\": {value}}}").as_bytes(), Some("t"), 1000).unwrap();
            assert_eq!(
                m[0].value,
                Payload::Checked(Some(written.as_bytes().to_vec())),
                "{value}"
            );
        }
        let m = parse_body(br#"{"value": null}"#, Some("t"), 1000).unwrap();
        assert_eq!(m[0].value, Payload::Checked(None));
    }
}
