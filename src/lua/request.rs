//! The `req` table a handler receives: method, path, params, query, headers (case-insensitive), body (raw bytes),
//! remote_addr, user, and `req:json()`.

use std::net::SocketAddr;

use bytes::Bytes;
use mlua::{Function, Lua, Result, Table};

use super::routes::Target;

/// An HTTP request as the server hands it to a function.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names, in arrival order; repeated names appear repeatedly.
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
    pub remote_addr: SocketAddr,
    /// The `[[users]]` name, on routes with `auth = true`.
    pub user: Option<String>,
}

/// Per-VM pieces every `req` shares.
#[derive(Debug)]
pub struct RequestParts {
    /// Makes `req.headers["Content-Type"]` find `content-type`.
    pub headers_meta: Table,
    pub json: Function,
}

impl RequestParts {
    pub fn new(lua: &Lua, json: Function) -> Result<Self> {
        let lower: Function = lua
            .load("local t, k = ... if type(k) == 'string' then return rawget(t, string.lower(k)) end return nil")
            .set_name("=luka.headers")
            .into_function()?;
        let headers_meta = lua.create_table()?;
        headers_meta.set("__index", lower)?;
        headers_meta.set_readonly(true);
        Ok(Self { headers_meta, json })
    }
}

pub fn build(lua: &Lua, parts: &RequestParts, request: &HttpRequest, target: &Target) -> Result<Table> {
    let req = lua.create_table_with_capacity(0, 10)?;
    req.raw_set("method", request.method.as_str())?;
    req.raw_set("path", request.path.as_str())?;
    let params = lua.create_table()?;
    for (name, value) in &target.params {
        params.raw_set(name.as_str(), value.as_str())?;
    }
    req.raw_set("params", params)?;
    let query = lua.create_table()?;
    if let Some(text) = &request.query {
        for (name, value) in form_urlencoded::parse(text.as_bytes()) {
            query.raw_set(&*name, &*value)?;
        }
    }
    req.raw_set("query", query)?;
    let headers = lua.create_table()?;
    for (name, value) in &request.headers {
        // Repeated headers join with ", " as HTTP defines for list-valued fields.
        let joined = match headers.raw_get::<Option<mlua::LuaString>>(name.as_str())? {
            Some(previous) => {
                let mut bytes = previous.as_bytes().to_vec();
                bytes.extend_from_slice(b", ");
                bytes.extend_from_slice(value);
                lua.create_string(bytes)?
            }
            None => lua.create_string(value)?,
        };
        headers.raw_set(name.as_str(), joined)?;
    }
    headers.set_metatable(Some(parts.headers_meta.clone()))?;
    req.raw_set("headers", headers)?;
    req.raw_set("body", lua.create_string(&request.body)?)?;
    req.raw_set("remote_addr", request.remote_addr.to_string())?;
    if let Some(user) = &request.user {
        req.raw_set("user", user.as_str())?;
    }
    req.raw_set("json", parts.json.clone())?;
    Ok(req)
}
