//! `GET|POST /webhook?topic=T[&key=K]`: a request's raw body in as one record's value, its metadata out.
//!
//! For senders that can only be given a URL: credentials may come as `user` and `pass` query parameters, and the
//! request's own headers travel with the record, except the standard HTTP ones in [`NOT_COPIED`].

use bytes::Bytes;
use hyper::HeaderMap;

use super::{ApiError, Metadata};
use crate::config::User;
use crate::limits::Limits;
use crate::produce::{Key, Message, Payload, Producer};

/// Headers that describe the HTTP exchange rather than the event, so they are not copied into the record
/// (compared without case). Every other header is copied, in the order received, repeats included. The W3C trace
/// context (`traceparent`, `tracestate`) is not copied as it came either: the produce core adds it, checked and
/// bounded, when `[server] propagate_trace_context` is on, as for every other way of producing.
pub const NOT_COPIED: [&str; 26] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "authorization",
    "cache-control",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "expect",
    "forwarded",
    "host",
    "keep-alive",
    "origin",
    "pragma",
    "proxy-authorization",
    "proxy-connection",
    "referer",
    "te",
    "trailer",
    "traceparent",
    "tracestate",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
];

/// Writes `body` to the `topic` query parameter's topic as `user`, within the user's `records_per_second`; gives `{topic, partition, offset, timestamp}`.
pub async fn webhook(
    producer: &Producer,
    limits: &Limits,
    user: &User,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Vec<u8>, ApiError> {
    let param = |wanted: &str| {
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == wanted)
            .map(|(_, v)| v.into_owned())
    };
    let topic = param("topic")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::BadRequest("give the topic: /webhook?topic=NAME".into()))?;
    if !user.may_write(&topic) {
        return Err(ApiError::Forbidden {
            number: 1,
            user: user.name.clone(),
            topic,
        });
    }
    limits.records(&user.name, 1)?;
    let message = Message {
        topic,
        // As `/produce` takes it: bytes as they are (`%FF` is 0xFF), where text would replace what is not UTF-8.
        key: super::query_bytes(query, "key").map_or(Key::Null, Key::Bytes),
        value: Payload::Checked(Some(body.to_vec())),
        headers: record_headers(headers),
        ..Message::default()
    };
    let deliveries = producer.produce(vec![message]).await?;
    Ok(serde_json::to_vec(&Metadata::from(&deliveries[0])).expect("metadata serializes"))
}

fn record_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .filter(|(name, _)| !NOT_COPIED.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}
