//! What a handler returns, turned into an HTTP answer: `{status=, headers=, body=}`, `{status=, json=}`, a string
//! (200 text/plain), or nothing (204).

use bytes::Bytes;
use mlua::{Table, Value};

use super::convert;

/// A handler's answer, ready for the server to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

const FIELDS: [&str; 4] = ["status", "headers", "body", "json"];

/// A problem with the returned value, for the log (the client gets a generic 500).
pub fn from_lua(value: Value) -> Result<HandlerResponse, String> {
    match value {
        Value::Nil => Ok(HandlerResponse {
            status: 204,
            headers: Vec::new(),
            body: Bytes::new(),
        }),
        Value::String(s) => Ok(HandlerResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::from(s.as_bytes().to_vec()),
        }),
        Value::Table(table) => from_table(&table),
        other => Err(format!(
            "the handler returned a {}; return a string or a table {{status=, headers=, body=}} or {{status=, json=}}",
            other.type_name()
        )),
    }
}

fn from_table(table: &Table) -> Result<HandlerResponse, String> {
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair.map_err(|e| e.to_string())?;
        let known = matches!(&key, Value::String(s) if FIELDS.contains(&s.to_string_lossy().as_str()));
        if !known {
            return Err(format!(
                "the response table has an unknown field {}; use {}",
                key.to_string().unwrap_or_default(),
                FIELDS.join(", ")
            ));
        }
    }
    let status = match table.raw_get::<Value>("status").map_err(|e| e.to_string())? {
        Value::Nil => 200,
        Value::Integer(n) if (100..=599).contains(&n) => n as u16,
        Value::Number(n) if n.fract() == 0.0 && (100.0..=599.0).contains(&n) => n as u16,
        other => return Err(format!("status must be a number from 100 to 599, not {other:?}")),
    };
    let mut headers = Vec::new();
    if let Some(given) = table
        .raw_get::<Option<Table>>("headers")
        .map_err(|_| "headers must be a table")?
    {
        for pair in given.pairs::<String, Value>() {
            let (name, value) = pair.map_err(|_| "header names must be strings")?;
            let value = match value {
                Value::String(s) => s
                    .to_str()
                    .map_err(|_| format!("header {name} is not UTF-8"))?
                    .to_owned(),
                Value::Integer(_) | Value::Number(_) | Value::Boolean(_) => convert::to_json(&value)
                    .map_err(|e| format!("header {name}: {e}"))?
                    .to_string(),
                other => {
                    return Err(format!(
                        "header {name} must be a string or number, not a {}",
                        other.type_name()
                    ));
                }
            };
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || hyper::header::HeaderValue::from_str(&value).is_err()
            {
                return Err(format!("header {name}: {value:?} is not a valid HTTP header"));
            }
            headers.push((name.to_ascii_lowercase(), value));
        }
    }
    let body = table.raw_get::<Value>("body").map_err(|e| e.to_string())?;
    let json = table.raw_get::<Value>("json").map_err(|e| e.to_string())?;
    let body = match (body, json) {
        (Value::Nil, Value::Nil) => Bytes::new(),
        (Value::String(s), Value::Nil) => Bytes::from(s.as_bytes().to_vec()),
        (Value::Nil, json) => {
            let text = convert::to_json(&json).map_err(|e| format!("json: {e}"))?.to_string();
            if !headers.iter().any(|(n, _)| n == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Bytes::from(text)
        }
        (Value::String(_), _) => return Err("the response has both body and json; give one".into()),
        (other, _) => return Err(format!("body must be a string, not a {}", other.type_name())),
    };
    Ok(HandlerResponse { status, headers, body })
}
