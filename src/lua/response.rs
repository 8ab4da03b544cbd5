//! What a handler returns, turned into an HTTP answer: `{status=, headers=, body=}`, `{status=, json=}`, a string
//! (200 text/plain), or nothing (204).

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use mlua::{Table, Value};
use smallvec::{SmallVec, smallvec};

use super::convert::{self, Budget};

/// A handler's answer, ready for the server to send (its headers checked and parsed once, when it was read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Bytes,
}

/// An answer's headers: most answers have one (the content type, of a `json` answer), kept inline rather than in a
/// list allocated for it.
pub type Headers = SmallVec<[(HeaderName, HeaderValue); 1]>;

pub(super) const FIELDS: [&str; 4] = ["status", "headers", "body", "json"];

/// Headers luka sets itself: a handler's value would desynchronise the connection (framing) or the protocol.
const RESERVED_HEADERS: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// More headers than this is a runaway loop, not a response.
const MAX_HEADERS: usize = 100;

/// Total size of the response headers: what common proxies accept (nginx's default buffers are 4-8 KiB each).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What the runner (see `vm.rs`) hands back: the handler's table already split into its fields in Lua, where
/// walking it costs nothing like doing it through the API.
///
/// - `(true, json, body, headers, status)`: the handler returned a table with only known fields (those left out at
///   the end are nil: a table with `json` alone comes as `(true, json)`);
/// - `(false, key)`: the table has the unknown field `key`;
/// - `(nil, value)`: the handler returned something other than a table.
pub type Returned = (Value, Value, Value, Value, Value);

/// A problem with the returned value, for the log (the client gets a generic 500).
pub fn read(returned: Returned, budget: &mut Budget) -> Result<HandlerResponse, String> {
    match returned {
        (Value::Boolean(true), json, body, headers, status) => from_fields(status, headers, body, json, budget),
        (Value::Boolean(false), key, ..) => Err(format!(
            "the response table has an {}",
            convert::unknown_field(&key, &FIELDS)
        )),
        (_, Value::Nil, ..) => Ok(HandlerResponse {
            status: 204,
            headers: Headers::new(),
            body: Bytes::new(),
        }),
        (_, Value::String(s), ..) => Ok(HandlerResponse {
            status: 200,
            headers: smallvec![(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))],
            body: Bytes::copy_from_slice(&s.as_bytes_ref()),
        }),
        (_, other, ..) => Err(format!(
            "the handler returned a {}; return a string or a table {{status=, headers=, body=}} or {{status=, json=}}",
            other.type_name()
        )),
    }
}

fn from_fields(
    status: Value,
    headers: Value,
    body: Value,
    json: Value,
    budget: &mut Budget,
) -> Result<HandlerResponse, String> {
    let status = match status {
        Value::Nil => 200,
        // 1xx would switch the connection's protocol handling; a handler answers with a final status.
        Value::Integer(n) if (200..=599).contains(&n) => n as u16,
        Value::Number(n) if n.fract() == 0.0 && (200.0..=599.0).contains(&n) => n as u16,
        other => {
            return Err(format!(
                "status must be a number from 200 to 599, not {}",
                shown(&other)
            ));
        }
    };
    let mut headers = match headers {
        Value::Nil => Headers::new(),
        Value::Table(given) => read_headers(&given)?,
        _ => return Err("headers must be a table".into()),
    };
    let body = match (body, json) {
        (Value::Nil, Value::Nil) => Bytes::new(),
        (Value::String(s), Value::Nil) => Bytes::copy_from_slice(&s.as_bytes_ref()),
        (Value::Nil, json) => json_body(&mut headers, convert::encode_within(&json, budget))?,
        (Value::String(_), _) => return Err("the response has both body and json; give one".into()),
        (other, _) => return Err(format!("body must be a string, not a {}", other.type_name())),
    };
    Ok(HandlerResponse { status, headers, body })
}

/// The answer to a table with `json` alone, from the JSON text of that field (or why it has none), written where
/// the coroutine gave it back ([`convert::encode_view`]): what [`read`] answers for `(true, json)`.
pub fn read_json(text: Result<Vec<u8>, String>) -> Result<HandlerResponse, String> {
    let mut headers = Headers::new();
    let body = json_body(&mut headers, text)?;
    Ok(HandlerResponse {
        status: 200,
        headers,
        body,
    })
}

/// A `json` field's body: its text, with `application/json` as the content type unless the handler gave one.
fn json_body(headers: &mut Headers, text: Result<Vec<u8>, String>) -> Result<Bytes, String> {
    let text = text.map_err(|e| format!("json: {e}"))?;
    if !headers.iter().any(|(n, _)| n == CONTENT_TYPE) {
        headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    }
    Ok(Bytes::from(text))
}

/// Characters of a handler's value an error message shows.
const SHOWN_CHARS: usize = 64;

/// A wrong `status` as its error shows it: a string cut (a handler may make it huge; its bytes are never copied
/// whole), another value by its type.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let bytes = s.as_bytes();
            let start = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN_CHARS * 4)]);
            let cut = convert::cut(&start, SHOWN_CHARS);
            if cut.len() < bytes.len() && !cut.ends_with('…') {
                format!("{:?}", format!("{cut}…"))
            } else {
                format!("{cut:?}")
            }
        }
        Value::Integer(n) => n.to_string(),
        Value::Number(n) => n.to_string(),
        other => format!("a {}", other.type_name()),
    }
}

fn read_headers(given: &Table) -> Result<Headers, String> {
    let mut headers = Headers::new();
    let mut header_bytes = 0;
    let too_large = || format!("the headers are larger than {MAX_HEADER_BYTES} bytes");
    for pair in given.pairs::<Value, Value>() {
        // Read as any value: mlua would turn a number key (`headers = { "text/plain" }`) into the name "1".
        let (Value::String(name), value) = pair.map_err(|e| e.to_string())? else {
            return Err("header names must be strings".into());
        };
        let name = name
            .to_str()
            .map_err(|_| "header names must be UTF-8".to_owned())?
            .to_string();
        if header_bytes + name.len() > MAX_HEADER_BYTES {
            return Err(too_large());
        }
        if headers.len() == MAX_HEADERS {
            return Err(format!("more than {MAX_HEADERS} headers"));
        }
        let shown_name = convert::cut(&name, SHOWN_CHARS);
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("header {shown_name} is set by luka, not by handlers"));
        }
        let value = match value {
            Value::String(s) if header_bytes + name.len() + s.as_bytes().len() > MAX_HEADER_BYTES => {
                return Err(too_large());
            }
            Value::String(s) => s
                .to_str_ref()
                .map_err(|_| format!("header {shown_name} is not UTF-8"))?
                .to_owned(),
            Value::Integer(_) | Value::Number(_) | Value::Boolean(_) => convert::to_json(&value)
                .map_err(|e| format!("header {shown_name}: {e}"))?
                .to_string(),
            other => {
                return Err(format!(
                    "header {shown_name} must be a string or number, not a {}",
                    other.type_name()
                ));
            }
        };
        // Counted before anything else is done with them: an error below echoes them (cut).
        header_bytes += name.len() + value.len();
        if header_bytes > MAX_HEADER_BYTES {
            return Err(too_large());
        }
        // HeaderName lower-cases the name, as HTTP/2 needs and as luka's other answers write them.
        let (Ok(parsed_name), Ok(parsed_value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        else {
            return Err(format!(
                "header {shown_name}: {:?} is not a valid HTTP header",
                convert::cut(&value, SHOWN_CHARS)
            ));
        };
        headers.push((parsed_name, parsed_value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler's wrong status or header is echoed cut: escaped whole, a string of a megabyte became six in the
    /// error text, and again in each copy of it.
    #[test]
    fn errors_echo_a_handlers_values_cut() {
        let lua = mlua::Lua::new();
        let huge = lua.create_string(vec![0x7f_u8; 1 << 20]).unwrap();
        let status = shown(&Value::String(huge.clone()));
        assert!(status.len() < 8 * SHOWN_CHARS, "{status}");
        assert!(status.ends_with("…\""), "{status}");
        for value in [huge, lua.create_string(vec![0x7f_u8; 60_000]).unwrap()] {
            let headers = lua.create_table().unwrap();
            headers.raw_set("x-bad", value).unwrap();
            let error = read_headers(&headers).unwrap_err();
            assert!(error.len() < 8 * SHOWN_CHARS, "{} bytes", error.len());
        }
        assert_eq!(shown(&Value::Boolean(true)), "a boolean");
        assert_eq!(shown(&Value::Integer(99)), "99");
    }
}
