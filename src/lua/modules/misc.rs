//! `log` (into tracing, with the handler's file name), `time.now_ms()`, `uuid.v4()`, and `print` as `log.info`.

use std::sync::Arc;

use mlua::{Lua, MultiValue, Result, Table};

use crate::context::RequestContext;
use crate::lua::state::VmShared;

#[derive(Clone, Copy)]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

fn emit(shared: &VmShared, level: Level, args: MultiValue) -> Result<()> {
    let mut text = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&arg.to_string()?);
    }
    let function = shared.current().map(|s| Arc::clone(&s.function));
    let function = function.as_deref().unwrap_or("?");
    let context = RequestContext::current();
    let request_id = context.as_ref().map_or("", |c| c.id.as_str());
    match level {
        Level::Debug => tracing::debug!(target: "luka::function", request_id, function, "{text}"),
        Level::Info => tracing::info!(target: "luka::function", request_id, function, "{text}"),
        Level::Warn => tracing::warn!(target: "luka::function", request_id, function, "{text}"),
        Level::Error => tracing::error!(target: "luka::function", request_id, function, "{text}"),
    }
    Ok(())
}

fn logger(lua: &Lua, shared: &Arc<VmShared>, level: Level) -> Result<mlua::Function> {
    let shared = Arc::clone(shared);
    lua.create_function(move |_, args: MultiValue| emit(&shared, level, args))
}

pub fn log(lua: &Lua, shared: &Arc<VmShared>) -> Result<Table> {
    let table = lua.create_table()?;
    table.set("debug", logger(lua, shared, Level::Debug)?)?;
    table.set("info", logger(lua, shared, Level::Info)?)?;
    table.set("warn", logger(lua, shared, Level::Warn)?)?;
    table.set("error", logger(lua, shared, Level::Error)?)?;
    Ok(table)
}

pub fn print(lua: &Lua, shared: &Arc<VmShared>) -> Result<mlua::Function> {
    logger(lua, shared, Level::Info)
}

pub fn time(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.set(
        "now_ms",
        lua.create_function(|_, ()| {
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Ok(since_epoch.as_millis() as f64)
        })?,
    )?;
    Ok(table)
}

pub fn uuid(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.set("v4", lua.create_function(|_, ()| Ok(uuid::Uuid::new_v4().to_string()))?)?;
    Ok(table)
}
