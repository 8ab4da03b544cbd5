//! The `req` table a handler receives: method, path, params, query, headers (case-insensitive), body (raw bytes),
//! remote_addr, user, and `req:json()`.
//!
//! Only `method`, `path` and a small body (once the file's handler has read one: `Compiled::reads_body`) are set
//! when the handler starts; every other field is made from the request the first time the handler reads it (the
//! metatable's `__index` asks Rust, then stores the value in `req`), so a handler pays only for what it uses.
//! `pairs(req)` therefore shows the fields set or read so far. The method `json` is answered by the metatable
//! itself, without a call into Rust, and is never stored in `req`; `body`, when it is made on first read, has a
//! Rust function of its own that takes no key.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mlua::{Function, Lua, Result, Table, Value};

use super::state::{HttpRequest, RequestState, VmShared, unlimited};

/// The metatable of `req`; `lazy` is the Rust side of the lazily made fields, `body` of `req.body`. `req:json()` is on
/// every webhook's path, so its look-up stays in Lua (a call into Rust and back costs more than the rest of the
/// look-up); `req.body` is on most, and a call without an argument saves passing the key and reading its bytes back.
const REQ_META: &str = r#"
local lazy, body, rawset, json = ...
return { __index = function(req, key)
  if key == "json" then return json end
  local value
  if key == "body" then value = body() else value = lazy(key) end
  if value ~= nil then rawset(req, key, value) end
  return value
end }
"#;

/// The metatable every `req` of a VM shares; `json` is the `req:json()` method.
pub fn metatable(lua: &Lua, shared: &Arc<VmShared>, json: Function) -> Result<Table> {
    let headers_meta = headers_metatable(lua)?;
    let for_body = Arc::clone(shared);
    let body_field = lua.create_function(move |lua, ()| match for_body.current() {
        Some(state) => {
            if let Some(reads_body) = &state.reads_body {
                reads_body.store(true, Ordering::Relaxed);
            }
            unlimited(lua, state.request.body.len(), || body(lua, &state.request))
        }
        None => Ok(Value::Nil),
    })?;
    let shared = Arc::clone(shared);
    let lazy = lua.create_function(move |lua, key: Value| {
        let (Value::String(key), Some(state)) = (key, shared.current()) else {
            return Ok(Value::Nil);
        };
        // Read once: each read of a Lua string's bytes goes through the VM's lock.
        let key = key.as_bytes_ref();
        // What the field takes in Lua, roughly (its text, and as much again for the table it goes in).
        let request = &state.request;
        let size = match &*key {
            b"body" => request.body.len(),
            b"headers" => {
                2 * request
                    .headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len())
                    .sum::<usize>()
            }
            b"query" => 2 * request.query().map_or(0, str::len),
            b"params" => 2 * state.params.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
            _ => 0,
        };
        unlimited(lua, size, || field(lua, &state, &key, &headers_meta, &shared))
    })?;
    let rawset = lua.globals().raw_get::<Function>("rawset")?;
    let meta: Table = lua
        .load(REQ_META)
        .set_name("=luka.req")
        .call((lazy, body_field, rawset, json))?;
    meta.set_readonly(true);
    Ok(meta)
}

/// The fields of `req` made on first use (besides `method` and `path`, set at the start, and the method `json`; a
/// small `body` may be set at the start too, see the module doc); `field` answers each.
#[cfg_attr(not(test), allow(dead_code))] // read by the types test and the test below
pub(super) const LAZY_FIELDS: [&str; 6] = ["body", "headers", "query", "params", "remote_addr", "user"];

fn field(lua: &Lua, state: &RequestState, key: &[u8], headers_meta: &Table, clock: &VmShared) -> Result<Value> {
    let request = &state.request;
    Ok(match key {
        b"body" => body(lua, request)?,
        b"headers" => Value::Table(headers(lua, request, headers_meta)?),
        b"query" => Value::Table(query(lua, request, clock)?),
        b"params" => Value::Table(lua.create_table_from(state.params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?),
        b"remote_addr" => Value::String(lua.create_string(request.remote_addr.to_string())?),
        b"user" => match &request.user {
            Some(user) => Value::String(lua.create_string(user)?),
            None => Value::Nil,
        },
        _ => Value::Nil,
    })
}

/// `req.body`: the raw bytes as a Lua string.
fn body(lua: &Lua, request: &HttpRequest) -> Result<Value> {
    Ok(Value::String(lua.create_string(&request.body)?))
}

/// Makes `req.headers["Content-Type"]` find `content-type`.
fn headers_metatable(lua: &Lua) -> Result<Table> {
    let lower: Function = lua
        .load("local t, k = ... if type(k) == 'string' then return rawget(t, string.lower(k)) end return nil")
        .set_name("=luka.headers")
        .into_function()?;
    let meta = lua.create_table()?;
    meta.set("__index", lower)?;
    meta.set_readonly(true);
    Ok(meta)
}

fn headers(lua: &Lua, request: &HttpRequest, meta: &Table) -> Result<Table> {
    let table = lua.create_table_with_capacity(0, request.headers.keys_len())?;
    for name in request.headers.keys() {
        let mut values = request.headers.get_all(name).iter();
        let first = values.next().map_or(&[][..], |v| v.as_bytes());
        let value = match values.next() {
            None => lua.create_string(first)?,
            Some(second) => {
                // Repeated headers join with ", " as HTTP defines for list-valued fields.
                let mut joined = [first, second.as_bytes()].join(&b", "[..]);
                for more in values {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(more.as_bytes());
                }
                lua.create_string(joined)?
            }
        };
        table.raw_set(name.as_str(), value)?;
    }
    table.set_metatable(Some(meta.clone()))?;
    Ok(table)
}

/// The query parameters, charged to the request's CPU time as they are made (a 64 KiB query holds thousands, and
/// names made to collide in Luau's string hash cost more each).
fn query(lua: &Lua, request: &HttpRequest, clock: &VmShared) -> Result<Table> {
    let table = lua.create_table()?;
    if let Some(text) = request.query() {
        for (i, (name, value)) in form_urlencoded::parse(text.as_bytes()).enumerate() {
            clock.charge_step(i + 1)?;
            table.raw_set(&*name, &*value)?;
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lazy_field_is_answered_and_nothing_else() {
        let lua = Lua::new();
        let request = HttpRequest {
            method: hyper::Method::POST,
            uri: hyper::Uri::from_static("/p?a=1"),
            headers: hyper::HeaderMap::new(),
            body: bytes::Bytes::from_static(b"{}"),
            remote_addr: "127.0.0.1:1".parse().unwrap(),
            user: Some("demo".into()),
        };
        let state = RequestState::new("f.lua".into(), request, Vec::new());
        let meta = lua.create_table().unwrap();
        let clock = VmShared::default();
        let answer = |name: &str| field(&lua, &state, name.as_bytes(), &meta, &clock).unwrap();
        for name in LAZY_FIELDS {
            assert!(!answer(name).is_nil(), "req.{name} is listed but not answered");
        }
        assert!(answer("nope").is_nil());
    }

    /// Making `req.query` stops inside the one Rust call once the request's CPU time is spent.
    #[test]
    fn a_long_query_is_charged_to_the_budget() {
        let lua = Lua::new();
        let mut request = crate::lua::state::tests_support::request().request.clone();
        let query = (0..100).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join("&");
        request.uri = format!("/?{query}").parse().unwrap();
        let state = Arc::new(RequestState::new("f.lua".into(), request, Vec::new()));
        let (meta, clock) = (lua.create_table().unwrap(), VmShared::default());
        let query = || field(&lua, &state, b"query", &meta, &clock);
        assert!(query().is_ok());
        clock.enter(&state, std::ptr::null(), std::time::Duration::ZERO);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(query().is_err_and(|e| e.to_string().contains("CPU")));
        clock.leave();
    }
}
