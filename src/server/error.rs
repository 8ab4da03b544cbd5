//! The one place where errors become HTTP responses.
//!
//! Client errors (4xx) say what was wrong and how to fix it. Server-side errors (5xx) say which cluster failed
//! and nothing more; the detail goes to the log.

use std::borrow::Cow;

use crate::limits::RecordsRefused;
use hyper::StatusCode;
use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use super::{Response, json_response};
use crate::api::{self, ApiError};
use crate::kafka::{ErrorClass, KafkaError, SecurityCause};
use crate::lua::LuaError;
use crate::produce::ProduceError;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },

    #[error("method {method} is not allowed on {path}; use {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },

    #[error("{0}")]
    NotImplemented(String),

    #[error("a request with this Idempotency-Key is still running; retry when it has finished")]
    IdempotencyInProgress,

    #[error("this Idempotency-Key was used for a different request; use a new key for a new request")]
    IdempotencyMismatch,

    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },

    #[error("could not read the request body")]
    BodyRead,

    #[error("the request body did not arrive within {ms} ms of the headers; send it without pausing")]
    BodyTimeout { ms: u64 },

    #[error(
        "the request did not complete within {ms} ms (one sent with an Idempotency-Key keeps it until its outcome is known: retry with the same key to learn it)"
    )]
    Timeout { ms: u128 },

    #[error(transparent)]
    RateLimited(#[from] crate::limits::RateLimited),

    /// A browser request from another site's page to the produce or read endpoints.
    #[error(
        "browser request from {from} refused: the produce and read endpoints take requests from other sites' pages \
         only from the origins in [server] cors_origins"
    )]
    CrossSite { from: String },

    #[error(transparent)]
    Api(#[from] ApiError),

    #[error(transparent)]
    Lua(#[from] LuaError),

    /// A bug: the request's work panicked (the panic is in the log).
    #[error("the request stopped on an internal error")]
    Internal,
}

/// What a function route's request had written when it failed (a handler stopped or raising an error after a produce
/// returned, or caught): nothing elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    /// Records acknowledged.
    pub records: usize,
    /// A produce ended with records that may or may not have been written.
    pub in_doubt: bool,
}

/// The response for `error`; server errors are logged with the request's id. `written`: what a function route's
/// request wrote before it failed. `keyed`: the request came with an `Idempotency-Key`, under which this answer is
/// kept for its retries when records may have been written (so it says so, rather than advise sending a key).
pub fn into_response(error: &RequestError, request_id: &str, written: Written, keyed: bool) -> Response {
    let results = partial_results(error);
    let own_status = status_of(error);
    let message = if own_status.is_server_error() {
        public_message(error, results.is_some(), keyed)
    } else {
        error.to_string()
    };
    // An uncaught produce cut short says "did not acknowledge in time" itself, and is a 504 already.
    let says_in_doubt = matches!(
        error,
        RequestError::Lua(LuaError::Kafka {
            class: ErrorClass::Timeout,
            ..
        })
    );
    let in_doubt = written.in_doubt;
    let status = if (written.records > 0 || in_doubt || results.is_some())
        && matches!(
            own_status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
        // Both would say that nothing was done and invite sending the request again, which writes those records
        // again (a REST produce's written records are listed in `results`).
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        own_status
    };
    // A 501 is a request luka does not serve (CONNECT, a transfer coding, consumer groups): nothing failed here, and
    // its text is the client's to vary at will.
    if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
        // Limited per distinct error (its full text: the function and its message, the cluster and its cause), so
        // that one function failing often cannot hide another's error.
        // A handler's error text is its own (and may carry request data): one line, cut.
        let text = error.to_string();
        // A partial write's text ends by naming the messages written, which differ from request to request: its
        // repeats are the same failure all the same.
        let key: Cow<'_, str> = match error {
            RequestError::Api(ApiError::Produce(ProduceError::Write { source, .. })) => source.to_string().into(),
            _ => Cow::Borrowed(&text),
        };
        if let Some(suppressed) = repeats::allow(cut(&key, MAX_LOG_KEY)) {
            let records_written = written.records;
            let error = crate::logging::one_line(&text, MAX_LOGGED_ERROR);
            tracing::warn!(request_id, %status, %error, suppressed, records_written, in_doubt, "request failed");
        }
    }
    let mut body = json!({ "error": message, "status": status.as_u16() });
    if written.records > 0 {
        body["error"] = format!("{message}; {}", written_before(written.records, keyed)).into();
        body["records_written"] = written.records.into();
    }
    if in_doubt && !says_in_doubt {
        let retry = if keyed {
            KEPT_FOR_THE_KEY
        } else {
            "so sending the request again may write them twice"
        };
        body["error"] = format!(
            "{}; records of this request that Kafka did not acknowledge in time may or may not have been written, \
             {retry}",
            body["error"].as_str().unwrap_or_default()
        )
        .into();
    }
    if in_doubt {
        body["records_in_doubt"] = true.into();
    }
    if let Some(results) = results {
        body["results"] = results;
    }
    let mut response = json_response(status, &body);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"luka\""));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Outages are probed several times a second and a full in-flight queue drains quickly.
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let RequestError::RateLimited(limited)
    | RequestError::Api(ApiError::RateLimited(limited))
    | RequestError::Lua(LuaError::RecordsRefused(RecordsRefused::RateLimited(limited))) = error
        && status == StatusCode::TOO_MANY_REQUESTS
    {
        let seconds = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let RequestError::MethodNotAllowed { allowed, .. } = error {
        response.headers_mut().insert(
            hyper::header::ALLOW,
            HeaderValue::from_str(allowed).unwrap_or(HeaderValue::from_static("")),
        );
    }
    response
}

/// Whether records of a request that failed with `error` may be in Kafka: some were written (by a function, or listed
/// in a REST produce's `results`) or some are in doubt. A repeat of such a request's `Idempotency-Key` must get this
/// answer again: running the request again would write those records again.
pub fn may_have_written(error: &RequestError, written: Written) -> bool {
    let in_doubt = matches!(error, RequestError::Api(ApiError::Produce(e)) if matches!(e.kafka(), Some(KafkaError::InDoubt { .. })));
    written.records > 0 || written.in_doubt || in_doubt || partial_results(error).is_some()
}

/// What a failed function route's answer adds when the request had written records: they are in Kafka, and a client
/// that sends the request again (as after any failure) writes them again; unless it was `keyed`: a retry with its
/// `Idempotency-Key` is answered from the key (this answer, or the outcome once known) and writes nothing.
fn written_before(written: usize, keyed: bool) -> String {
    let (what, it) = if written == 1 {
        ("1 record of this request was".to_owned(), "it")
    } else {
        (format!("{written} records of this request were"), "them")
    };
    if keyed {
        format!("{what} written before it failed; a retry with its Idempotency-Key writes nothing again")
    } else {
        format!("{what} written before it failed, so sending the request again writes {it} again")
    }
}

/// Longest error text written to the log; the rest is cut.
const MAX_LOGGED_ERROR: usize = 4 * 1024;

/// Bytes of an error's text that tell errors apart for the log limit.
const MAX_LOG_KEY: usize = 256;

/// `text` up to `max` bytes, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One log line per distinct server error per interval, with the count of lines left out since: an outage answers
/// every request with the same error, and a line per request would bury everything else in the log; errors that
/// differ (another function, another message) each get their own line.
mod repeats {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    const INTERVAL: Duration = Duration::from_secs(10);
    /// Kinds remembered at once; past it the memory starts over (errors are few kinds, so this is a safety bound).
    const KINDS: usize = 1024;

    static SEEN: OnceLock<Mutex<HashMap<String, (Instant, u64)>>> = OnceLock::new();

    /// `Some(lines suppressed since the last one)` if a line for `kind` may be written now.
    pub(super) fn allow(kind: &str) -> Option<u64> {
        let mut seen = SEEN.get_or_init(Mutex::default).lock().expect("log limiter poisoned");
        if seen.len() >= KINDS && !seen.contains_key(kind) {
            seen.clear();
        }
        let now = Instant::now();
        match seen.get_mut(kind) {
            Some((last, suppressed)) if now.duration_since(*last) < INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                seen.insert(kind.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

fn status_of(error: &RequestError) -> StatusCode {
    match error {
        RequestError::NotFound { .. } => StatusCode::NOT_FOUND,
        RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        RequestError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        RequestError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        RequestError::IdempotencyInProgress => StatusCode::CONFLICT,
        RequestError::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        RequestError::BodyRead => StatusCode::BAD_REQUEST,
        RequestError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        RequestError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        RequestError::CrossSite { .. } => StatusCode::FORBIDDEN,
        RequestError::Api(ApiError::BadRequest(_)) => StatusCode::BAD_REQUEST,
        RequestError::Api(ApiError::Unauthenticated(_) | ApiError::WrongCredentials) => StatusCode::UNAUTHORIZED,
        RequestError::RateLimited(_) | RequestError::Api(ApiError::RateLimited(_)) => StatusCode::TOO_MANY_REQUESTS,
        RequestError::Api(ApiError::Forbidden { .. } | ApiError::ReadForbidden { .. }) => StatusCode::FORBIDDEN,
        RequestError::Api(ApiError::TooMany { .. } | ApiError::OverBurst(_)) => StatusCode::PAYLOAD_TOO_LARGE,
        RequestError::Api(ApiError::Produce(e)) => class_status(e.class()),
        RequestError::Api(ApiError::Read(e)) => class_status(e.class()),
        RequestError::Lua(e) => lua_status(e),
        RequestError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn lua_status(error: &LuaError) -> StatusCode {
    match error {
        LuaError::BadRequest(_) => StatusCode::BAD_REQUEST,
        LuaError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        LuaError::Kafka { class, .. } => class_status(*class),
        LuaError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        LuaError::RecordsRefused(RecordsRefused::RateLimited(_)) => StatusCode::TOO_MANY_REQUESTS,
        LuaError::RecordsRefused(RecordsRefused::OverBurst(_)) | LuaError::TooManyMessages(_) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        LuaError::Runtime { .. }
        | LuaError::BadResponse { .. }
        | LuaError::CpuLimit { .. }
        | LuaError::MemoryLimit { .. }
        | LuaError::Setup { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of a produce failure, from the REST API or a Lua handler alike.
fn class_status(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorClass::Upstream => StatusCode::BAD_GATEWAY,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What an answer after which records may be in Kafka says of a retry under its `Idempotency-Key`.
const KEPT_FOR_THE_KEY: &str = "and this answer is kept for the request's Idempotency-Key: a retry with it gets this answer again, writing nothing";

/// A 5xx message that names the failing cluster but none of the internals (addresses, OS errors). `listed`: the
/// answer lists the messages that were written (`results`), so "nothing was written" holds for the others only.
/// `keyed`: see [`into_response`].
fn public_message(error: &RequestError, listed: bool, keyed: bool) -> String {
    let nothing = if listed {
        "nothing was written unless listed in results"
    } else {
        "nothing was written"
    };
    let kafka = match error {
        RequestError::Api(ApiError::Produce(e)) => e.kafka(),
        RequestError::Timeout { .. } | RequestError::NotImplemented(_) => return error.to_string(),
        RequestError::Lua(e) => return lua_public_message(e),
        RequestError::Api(ApiError::Read(e)) => return read_public_message(e),
        _ => None,
    };
    match kafka {
        Some(KafkaError::Unavailable { cluster, .. }) => {
            format!("kafka cluster '{cluster}' is unavailable; {nothing}")
        }
        Some(busy @ KafkaError::Busy { .. }) => format!("{busy}; {nothing}"),
        Some(few @ KafkaError::NotEnoughReplicas { .. }) => {
            format!("{few}; {nothing}")
        }
        Some(KafkaError::Security { cluster, cause, .. }) => security_message(cluster, *cause),
        Some(KafkaError::Timeout { cluster, .. }) => {
            format!("kafka cluster '{cluster}' did not answer in time; {nothing}")
        }
        Some(KafkaError::InDoubt { cluster, .. }) if keyed => format!(
            "kafka cluster '{cluster}' did not acknowledge in time; the records may or may not have been written, \
             {KEPT_FOR_THE_KEY}"
        ),
        Some(KafkaError::InDoubt { cluster, .. }) => format!(
            "kafka cluster '{cluster}' did not acknowledge in time; the records may or may not have been written \
             (send an Idempotency-Key to retry without writing twice)"
        ),
        Some(KafkaError::Rejected {
            cluster,
            topic,
            partition,
            error,
        }) => {
            format!("kafka cluster '{cluster}' rejected the records for '{topic}' partition {partition}: {error:?}")
        }
        Some(KafkaError::CreateTopic { cluster, topic, .. }) => {
            format!("kafka cluster '{cluster}' could not create topic '{topic}'")
        }
        _ => "internal error".to_owned(),
    }
}

/// A cluster that refuses luka's TLS or SASL: what is wrong, without the details (they are in the log).
fn security_message(cluster: &str, cause: SecurityCause) -> String {
    format!(
        "kafka cluster '{cluster}' is unavailable: {} (see the server log)",
        cause.summary()
    )
}

/// A failed read's 5xx message: which cluster, and that reading failed (nothing about writes).
fn read_public_message(error: &KafkaError) -> String {
    match error {
        KafkaError::Unavailable { cluster, .. } | KafkaError::Busy { cluster, .. } => {
            format!("kafka cluster '{cluster}' is unavailable; retry shortly")
        }
        KafkaError::Security { cluster, cause, .. } => security_message(cluster, *cause),
        KafkaError::Timeout { cluster, .. } | KafkaError::InDoubt { cluster, .. } => {
            format!("kafka cluster '{cluster}' did not answer in time; retry")
        }
        KafkaError::Rejected {
            cluster,
            topic,
            partition,
            error,
        } => format!("kafka cluster '{cluster}' refused to read '{topic}' partition {partition}: {error:?}"),
        _ => "internal error".to_owned(),
    }
}

/// What a client of a failing function may know: which limit stopped it, never the Lua error or its location.
fn lua_public_message(error: &LuaError) -> String {
    match error {
        LuaError::CpuLimit { limit_ms, .. } => format!("the function used more than its {limit_ms} ms of CPU time"),
        LuaError::MemoryLimit { .. } => "the function ran out of memory".to_owned(),
        LuaError::Timeout { limit_ms, .. } => format!("the function did not finish within {limit_ms} ms"),
        LuaError::Kafka {
            cluster,
            class: ErrorClass::Timeout,
            ..
        } => format!("kafka cluster '{cluster}' did not acknowledge in time"),
        LuaError::Kafka { cluster, .. } => format!("kafka cluster '{cluster}' is unavailable"),
        LuaError::ShuttingDown => "the server is shutting down; retry".to_owned(),
        _ => "the function failed; the server log has the details".to_owned(),
    }
}

/// For a write that failed part-way: the metadata of each message that was written, `null` for the rest.
fn partial_results(error: &RequestError) -> Option<Value> {
    let RequestError::Api(ApiError::Produce(ProduceError::Write { results, .. })) = error else {
        return None;
    };
    results.iter().any(Option::is_some).then(|| {
        Value::Array(
            results
                .iter()
                .map(|d| d.as_ref().map_or(Value::Null, api::metadata))
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn function() -> String {
        "functions/f.lua".into()
    }

    fn answer(error: RequestError) -> (StatusCode, hyper::HeaderMap, Value) {
        answer_after(error, 0)
    }

    fn down() -> KafkaError {
        KafkaError::Unavailable {
            cluster: "c".into(),
            detail: "connect to 10.0.0.1: boom".into(),
        }
    }

    /// The answer to `error` on a function route whose request wrote `written` records.
    fn answer_after(error: RequestError, written: usize) -> (StatusCode, hyper::HeaderMap, Value) {
        answer_with(
            error,
            Written {
                records: written,
                in_doubt: false,
            },
        )
    }

    fn answer_with(error: RequestError, written: Written) -> (StatusCode, hyper::HeaderMap, Value) {
        let response = into_response(&error, "test", written, false);
        let (parts, body) = response.into_parts();
        let body = futures::executor::block_on(body.collect()).unwrap().to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&body).unwrap())
    }

    /// A function that fails after its request wrote records is never answered with a status that says nothing was
    /// done (503, 429, both with Retry-After), and the answer says how many were written; with none written, the
    /// answer is as it always was.
    #[test]
    fn a_function_that_failed_after_writing_says_so() {
        let down = || {
            RequestError::Lua(LuaError::Kafka {
                function: function(),
                cluster: "c".into(),
                class: ErrorClass::Unavailable,
            })
        };
        let (status, headers, body) = answer_after(down(), 0);
        assert_eq!(
            (status, body["error"].as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("kafka cluster 'c' is unavailable")
            )
        );
        assert!(headers.contains_key(hyper::header::RETRY_AFTER));
        assert!(body.get("records_written").is_none(), "{body}");

        let (status, headers, body) = answer_after(down(), 1);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!headers.contains_key(hyper::header::RETRY_AFTER));
        assert_eq!(
            body,
            json!({
                "error": "kafka cluster 'c' is unavailable; 1 record of this request was written before it failed, \
                          so sending the request again writes it again",
                "status": 500,
                "records_written": 1,
            })
        );

        let limited = RequestError::Lua(LuaError::RecordsRefused(RecordsRefused::RateLimited(
            crate::limits::RateLimited {
                what: "x".into(),
                retry_after: std::time::Duration::from_secs(2),
            },
        )));
        let (status, headers, body) = answer_after(limited, 3);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!headers.contains_key(hyper::header::RETRY_AFTER));
        assert_eq!(body["records_written"], 3);
        assert!(error_text(&body).ends_with("3 records of this request were written before it failed, so sending the request again writes them again"), "{body}");

        // A client error stays the client's, and says what was written too.
        let (status, _, body) = answer_after(RequestError::Lua(LuaError::BadRequest("not JSON".into())), 1);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            error_text(&body).starts_with("not JSON; 1 record of this request"),
            "{body}"
        );
        let cpu = RequestError::Lua(LuaError::CpuLimit {
            function: function(),
            limit_ms: 50,
        });
        let (status, _, body) = answer_after(cpu, 1);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            error_text(&body).starts_with("the function used more than its 50 ms of CPU time; 1 record"),
            "{body}"
        );
    }

    /// A function whose request had a produce end in doubt (the handler caught it) says so when it then fails, and
    /// is never answered with a status that says nothing was done; an uncaught in-doubt produce says so itself.
    #[test]
    fn a_function_that_failed_after_a_produce_in_doubt_says_so() {
        let kafka = |class| {
            RequestError::Lua(LuaError::Kafka {
                function: function(),
                cluster: "c".into(),
                class,
            })
        };
        let doubt = Written {
            records: 0,
            in_doubt: true,
        };
        let (status, headers, body) = answer_with(kafka(ErrorClass::Unavailable), doubt);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!headers.contains_key(hyper::header::RETRY_AFTER));
        assert_eq!(body["records_in_doubt"], true);
        assert_eq!(
            error_text(&body),
            "kafka cluster 'c' is unavailable; records of this request that Kafka did not acknowledge in time may or \
             may not have been written, so sending the request again may write them twice"
        );
        let (status, _, body) = answer_with(kafka(ErrorClass::Timeout), doubt);
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(error_text(&body), "kafka cluster 'c' did not acknowledge in time");
        assert_eq!(body["records_in_doubt"], true);
        let both = Written {
            records: 2,
            in_doubt: true,
        };
        let (_, _, body) = answer_with(kafka(ErrorClass::Unavailable), both);
        assert!(
            error_text(&body).contains("2 records of this request were written")
                && error_text(&body).contains("may or may not"),
            "{body}"
        );
    }

    fn error_text(body: &Value) -> &str {
        body["error"].as_str().expect("an error text")
    }

    /// "Unless listed in results" only where the answer lists results, which is then no 503.
    #[test]
    fn nothing_written_is_said_plainly_without_results() {
        let (status, _, body) = answer(RequestError::Api(ApiError::Produce(ProduceError::Kafka(down()))));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            error_text(&body),
            "kafka cluster 'c' is unavailable; nothing was written"
        );
        assert!(body.get("results").is_none(), "{body}");
        let written = crate::produce::Delivery {
            cluster: "c".into(),
            topic: "t".into(),
            partition: 0,
            offset: 7,
            timestamp_ms: 1,
        };
        let partial = ProduceError::Write {
            source: down(),
            results: vec![Some(written), None],
        };
        let (status, headers, body) = answer(RequestError::Api(ApiError::Produce(partial)));
        // Not a 503 (nor a Retry-After) once records are written: a retry would write them again.
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(headers.get(hyper::header::RETRY_AFTER).is_none());
        assert_eq!(
            error_text(&body),
            "kafka cluster 'c' is unavailable; nothing was written unless listed in results"
        );
        assert_eq!(body["results"][0]["offset"], 7);
        assert_eq!(body["results"][1], Value::Null);
    }

    /// A failed read says the cluster is down, and nothing about writes.
    #[test]
    fn read_failures_speak_of_reading() {
        let (status, _, body) = answer(RequestError::Api(ApiError::Read(down())));
        assert_eq!(status, 503);
        assert_eq!(body["error"], "kafka cluster 'c' is unavailable; retry shortly");
        let (_, _, produce) = answer(RequestError::Api(ApiError::Produce(ProduceError::Kafka(down()))));
        assert!(
            produce["error"].as_str().unwrap().contains("nothing was written"),
            "{produce}"
        );
    }

    #[test]
    fn every_request_error_has_its_status() {
        let kafka = |class| {
            RequestError::Lua(LuaError::Kafka {
                function: function(),
                cluster: "c".into(),
                class,
            })
        };
        let cases = [
            (
                RequestError::NotFound {
                    method: "GET".into(),
                    path: "/x".into(),
                },
                404,
            ),
            (
                RequestError::MethodNotAllowed {
                    method: "PUT".into(),
                    path: "/x".into(),
                    allowed: "GET".into(),
                },
                405,
            ),
            (RequestError::NotImplemented("no".into()), 501),
            (RequestError::IdempotencyInProgress, 409),
            (RequestError::IdempotencyMismatch, 422),
            (RequestError::BodyTooLarge { limit: 1 }, 413),
            (RequestError::BodyRead, 400),
            (RequestError::BodyTimeout { ms: 1 }, 408),
            (
                RequestError::CrossSite {
                    from: "origin 'x'".into(),
                },
                403,
            ),
            (RequestError::Api(ApiError::WrongCredentials), 401),
            (
                RequestError::RateLimited(crate::limits::RateLimited {
                    what: "x".into(),
                    retry_after: std::time::Duration::from_millis(1500),
                }),
                429,
            ),
            (RequestError::Timeout { ms: 1 }, 504),
            (RequestError::Api(ApiError::BadRequest("bad".into())), 400),
            (RequestError::Api(ApiError::Unauthenticated("who".into())), 401),
            (
                RequestError::Api(ApiError::Forbidden {
                    number: 1,
                    user: "u".into(),
                    topic: "t".into(),
                }),
                403,
            ),
            (
                RequestError::Api(ApiError::ReadForbidden {
                    user: "u".into(),
                    topic: "t".into(),
                }),
                403,
            ),
            (
                RequestError::Api(ApiError::TooMany {
                    what: "messages",
                    count: 2,
                    max: 1,
                }),
                413,
            ),
            (
                RequestError::Api(ApiError::Produce(ProduceError::TopicNotConfigured {
                    topic: "t".into(),
                })),
                404,
            ),
            (
                RequestError::Api(ApiError::Produce(ProduceError::InvalidTopicName { topic: "/".into() })),
                400,
            ),
            (
                RequestError::Api(ApiError::Produce(ProduceError::Kafka(KafkaError::Unavailable {
                    cluster: "c".into(),
                    detail: "connection refused by 10.0.0.1:9092".into(),
                }))),
                503,
            ),
            (RequestError::Lua(LuaError::BadRequest("not JSON".into())), 400),
            (
                RequestError::Lua(LuaError::Runtime {
                    function: function(),
                    message: "f.lua:3: boom".into(),
                }),
                500,
            ),
            (
                RequestError::Lua(LuaError::BadResponse {
                    function: function(),
                    problem: "status".into(),
                }),
                500,
            ),
            (
                RequestError::Lua(LuaError::CpuLimit {
                    function: function(),
                    limit_ms: 50,
                }),
                500,
            ),
            (
                RequestError::Lua(LuaError::MemoryLimit {
                    function: function(),
                    limit_mb: 64,
                }),
                500,
            ),
            (
                RequestError::Lua(LuaError::Timeout {
                    function: function(),
                    limit_ms: 10,
                }),
                504,
            ),
            (
                RequestError::Lua(LuaError::Setup {
                    function: function(),
                    message: "oom".into(),
                }),
                500,
            ),
            (RequestError::Lua(LuaError::ShuttingDown), 503),
            (kafka(ErrorClass::NotFound), 404),
            (kafka(ErrorClass::BadRequest), 400),
            (kafka(ErrorClass::TooLarge), 413),
            (kafka(ErrorClass::Unavailable), 503),
            (kafka(ErrorClass::Timeout), 504),
            (kafka(ErrorClass::Upstream), 502),
            (kafka(ErrorClass::Internal), 500),
            (RequestError::Api(ApiError::Read(down())), 503),
            (
                RequestError::Api(ApiError::Read(KafkaError::OffsetOutOfRange {
                    cluster: "c".into(),
                    topic: "t".into(),
                    partition: 0,
                    offset: 9,
                    earliest: 0,
                    latest: 3,
                })),
                400,
            ),
        ];
        for (error, status) in cases {
            let described = format!("{error:?}");
            let (got, headers, body) = answer(error);
            assert_eq!(got.as_u16(), status, "{described}");
            assert_eq!(body["status"], status, "{described}");
            assert_eq!(headers.contains_key("www-authenticate"), status == 401, "{described}");
            assert_eq!(
                headers.contains_key("retry-after"),
                status == 503 || status == 429,
                "{described}"
            );
            assert_eq!(headers.contains_key("allow"), status == 405, "{described}");
            let message = body["error"].as_str().unwrap();
            assert!(
                !message.contains("10.0.0.1") && !message.contains("boom"),
                "{described}: {message}"
            );
        }
    }
}
