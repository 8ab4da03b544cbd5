//! The REST produce API, wire-compatible with the hosted Producer API (`seeds/002_*`).
//!
//! Takes an authenticated request on `/produce`, `/produce/<topic>` or `/produce/<topic>/<message>`, gives the
//! metadata of every written message in request order. The whole request (JSON, topics, permissions, partitions)
//! is checked before anything is written.

mod auth;
mod message;
pub mod read;
mod shape;
mod webhook;

use serde_json::Value;

use crate::config::User;
use crate::produce::{Delivery, Key, Message, Payload, ProduceError, Producer};

pub use auth::{authenticate, authenticate_webhook};
pub use message::parse_body;
pub use webhook::{NOT_COPIED, webhook};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),

    #[error("authentication required: {0}")]
    Unauthenticated(String),

    /// Credentials were sent and match no user: counted against the client address's failed logins.
    #[error("authentication required: wrong user name or password")]
    WrongCredentials,

    #[error(transparent)]
    RateLimited(#[from] crate::limits::RateLimited),

    #[error(transparent)]
    OverBurst(#[from] crate::limits::OverBurst),

    #[error("message {number}: user '{user}' may not write to topic '{topic}'")]
    Forbidden { number: usize, user: String, topic: String },

    #[error("user '{user}' may not read topic '{topic}' (add it to the user's read_topics in config.toml)")]
    ReadForbidden { user: String, topic: String },

    /// More messages or positions than one request may name (413).
    #[error(
        "{count} {what} in one request; at most {max} are taken (max_{what}_per_request): split them over several requests"
    )]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },

    #[error(transparent)]
    Produce(#[from] ProduceError),

    /// A read (`/topics`, `/offsets`, `/fetch`) the cluster failed: answered like a produce failure of the same
    /// class, in words about reading.
    #[error(transparent)]
    Read(crate::kafka::KafkaError),
}

impl From<crate::limits::RecordsRefused> for ApiError {
    fn from(refused: crate::limits::RecordsRefused) -> Self {
        match refused {
            crate::limits::RecordsRefused::RateLimited(e) => e.into(),
            crate::limits::RecordsRefused::OverBurst(e) => e.into(),
        }
    }
}

/// What the client asked for, once the path is understood.
#[derive(Debug, PartialEq, Eq)]
pub enum ProduceCall {
    /// `GET /produce/<topic>/<message>?key=`: answered with one metadata object.
    Path(Message),
    /// `/produce` or `/produce/<topic>` with a JSON body: answered with an array.
    Body { topic: Option<String> },
}

/// Writes the messages of `call` as `user` (authenticated with [`authenticate`]); gives the JSON answer's bytes.
pub async fn produce(
    producer: &Producer,
    limits: &crate::limits::Limits,
    user: &User,
    call: ProduceCall,
    body: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let (messages, single) = match call {
        ProduceCall::Path(message) => (vec![message], true),
        ProduceCall::Body { topic } => {
            let max = producer.config().server.max_messages_per_request;
            (parse_body(body, topic.as_deref(), max)?, false)
        }
    };
    if let Some((index, m)) = messages.iter().enumerate().find(|(_, m)| !user.may_write(&m.topic)) {
        return Err(ApiError::Forbidden {
            number: index + 1,
            user: user.name.clone(),
            topic: m.topic.clone(),
        });
    }
    limits.records(&user.name, messages.len())?;
    let deliveries = producer.produce(messages).await?;
    let answer: Vec<Metadata> = deliveries.iter().map(Metadata::from).collect();
    let bytes = if single {
        serde_json::to_vec(&answer[0])
    } else {
        serde_json::to_vec(&answer)
    };
    Ok(bytes.expect("metadata serializes"))
}

/// `{topic, partition, offset, timestamp}`, as the hosted API answers.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Metadata<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
}

impl<'a> From<&'a Delivery> for Metadata<'a> {
    fn from(delivery: &'a Delivery) -> Self {
        Self {
            topic: &delivery.topic,
            partition: delivery.partition,
            offset: delivery.offset,
            timestamp: delivery.timestamp_ms,
        }
    }
}

/// The metadata of one delivery as a JSON value (for answers that mix it with other values).
pub fn metadata(delivery: &Delivery) -> Value {
    serde_json::to_value(Metadata::from(delivery)).expect("metadata serializes")
}

/// Splits the part of the path after `/produce` into a call; `None` if the path is not a produce path.
pub fn parse_path(rest: &str, query: Option<&str>) -> Option<ProduceCall> {
    let rest = match rest {
        "" | "/" => return Some(ProduceCall::Body { topic: None }),
        rest => rest.strip_prefix('/')?,
    };
    let (topic, message) = match rest.split_once('/') {
        Some((topic, message)) => (topic, Some(message)),
        None => (rest, None),
    };
    let topic = percent_encoding::percent_decode_str(topic)
        .decode_utf8_lossy()
        .into_owned();
    Some(match message {
        None | Some("") => ProduceCall::Body { topic: Some(topic) },
        Some(message) => ProduceCall::Path(Message {
            topic,
            value: Payload::Checked(Some(percent_decoded(message))),
            key: query_bytes(query, "key").map_or(Key::Null, Key::Bytes),
            ..Message::default()
        }),
    })
}

/// A path segment's bytes once percent-decoded, as they are: `%FF` is the byte 0xFF, not a replacement character.
fn percent_decoded(segment: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(segment).collect()
}

/// The first `name` parameter of a query string, form-decoded (`+` is a space) to its bytes as they are.
/// (`form_urlencoded` gives text only, replacing bytes that are not UTF-8.)
pub(crate) fn query_bytes(query: Option<&str>, name: &str) -> Option<Vec<u8>> {
    query?
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *form(key) == *name.as_bytes())
        .map(|(_, value)| form(value).into_owned())
}

/// A query string part form-decoded to its bytes; most have nothing encoded, and are compared and taken as they are.
fn form(part: &str) -> std::borrow::Cow<'_, [u8]> {
    if part.contains(['%', '+']) {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .collect::<Vec<u8>>()
            .into()
    } else {
        part.as_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_three_variants() {
        assert_eq!(parse_path("", None), Some(ProduceCall::Body { topic: None }));
        assert_eq!(
            parse_path("/greetings", None),
            Some(ProduceCall::Body {
                topic: Some("greetings".into())
            })
        );
        let Some(ProduceCall::Path(m)) = parse_path("/greetings/hello%20kafka", Some("key=a%2Bb&x=1")) else {
            panic!("expected a path message");
        };
        assert_eq!(m.topic, "greetings");
        assert_eq!(m.value, Payload::Checked(Some(b"hello kafka".to_vec())));
        assert_eq!(m.key, Key::Bytes(b"a+b".to_vec()));
        assert_eq!(parse_path("x", None), None);
    }

    /// Percent-encoded bytes are written as sent, UTF-8 or not; `+` in the query is a space, as forms write it.
    #[test]
    fn path_messages_keep_their_bytes() {
        let Some(ProduceCall::Path(m)) = parse_path("/t/%FF%FEa", Some("x=1&key=%C3+%00")) else {
            panic!("expected a path message");
        };
        assert_eq!(m.value, Payload::Checked(Some(vec![0xFF, 0xFE, b'a'])));
        assert_eq!(m.key, Key::Bytes(vec![0xC3, b' ', 0]));
        let Some(ProduceCall::Path(m)) = parse_path("/t/v", Some("keys=1&key")) else {
            panic!("expected a path message");
        };
        assert_eq!(m.key, Key::Bytes(Vec::new()), "a bare key= is an empty key");
    }
}
