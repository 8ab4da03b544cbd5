//! The modules a handler sees, installed as globals of every VM before it is sandboxed (which makes them
//! read-only): `kafka`, `json`, `crypto`, `base64`, `hex`, `webhook`, `log`, `time`, `uuid`, and `print` (as
//! `log.info`). `env` is per route, so it is set in each request's own environment instead.

mod codec;
pub mod kafka;
mod misc;
mod webhook;

use std::sync::Arc;

use mlua::{Lua, Result};

pub use kafka::KafkaContext;

use super::state::VmShared;

pub fn install(lua: &Lua, context: &Arc<KafkaContext>, shared: &Arc<VmShared>) -> Result<()> {
    let globals = lua.globals();
    globals.set("kafka", kafka::module(lua, Arc::clone(context), Arc::clone(shared))?)?;
    globals.set("json", codec::json(lua)?)?;
    globals.set("crypto", codec::crypto(lua)?)?;
    globals.set("base64", codec::base64(lua)?)?;
    globals.set("hex", codec::hex(lua)?)?;
    globals.set("webhook", webhook::module(lua)?)?;
    globals.set("log", misc::log(lua, shared)?)?;
    globals.set("time", misc::time(lua)?)?;
    globals.set("uuid", misc::uuid(lua)?)?;
    globals.set("print", misc::print(lua, shared)?)?;
    Ok(())
}
