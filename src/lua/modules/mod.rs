//! The modules a handler sees, installed as globals of every VM before it is sandboxed (which makes them
//! read-only): `kafka`, `json`, `schema`, `crypto`, `base64`, `hex`, `webhook`, `log`, `time`, `uuid`, and `print`
//! (as `log.info`). `env` is per route, so it is set in each request's own environment instead.

mod bounded;
mod codec;
pub mod kafka;
mod misc;
mod schema;
mod webhook;

use std::sync::Arc;

use mlua::{Function, IntoLua, Lua, Result, Value};

pub use kafka::KafkaContext;

use super::state::VmShared;

pub fn install(lua: &Lua, context: &Arc<KafkaContext>, shared: &Arc<VmShared>) -> Result<()> {
    let globals = lua.globals();
    globals.set("kafka", kafka::module(lua, Arc::clone(context), Arc::clone(shared))?)?;
    globals.set("json", codec::json(lua, shared)?)?;
    globals.set("schema", schema::module(lua, Arc::clone(context), Arc::clone(shared))?)?;
    globals.set("crypto", codec::crypto(lua)?)?;
    globals.set("base64", codec::base64(lua)?)?;
    globals.set("hex", codec::hex(lua)?)?;
    globals.set("webhook", webhook::module(lua)?)?;
    globals.set("log", misc::log(lua, shared)?)?;
    globals.set("time", misc::time(lua)?)?;
    globals.set("uuid", misc::uuid(lua)?)?;
    globals.set("print", misc::print(lua, shared)?)?;
    bounded::install(lua, shared)
}

/// Module functions give `(true, result)` or `(false, message)`; this shim raises the message as a plain string
/// error at the caller's line, as Lua's own functions do, so `pcall` hands the handler a string (an error raised in
/// Rust would arrive as a userdata carrying a Rust-side traceback).
const RAISE: &str = "local f = ... return function(...) local ok, r = f(...) if ok then return r end error(r, 2) end";

/// `f` (a Rust function answering with [`answer`]) as a Lua function that raises on failure.
pub fn raising(lua: &Lua, f: Function) -> Result<Function> {
    lua.load(RAISE).set_name("=luka").call(f)
}

/// The `(ok, result or message)` pair [`raising`] expects.
pub fn answer(lua: &Lua, result: std::result::Result<impl IntoLua, String>) -> Result<(bool, Value)> {
    match result {
        Ok(value) => Ok((true, value.into_lua(lua)?)),
        Err(message) => Ok((false, Value::String(lua.create_string(message)?))),
    }
}
