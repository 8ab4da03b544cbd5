//! `log` (into tracing, with the handler's file name), `time.now_ms()`, `uuid.v4()`, and `print` as `log.info`.

use std::sync::Arc;

use mlua::{Lua, MultiValue, Result, Table, Value};

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
    let enabled = match level {
        Level::Debug => tracing::enabled!(target: "luka::function", tracing::Level::DEBUG),
        Level::Info => tracing::enabled!(target: "luka::function", tracing::Level::INFO),
        Level::Warn => tracing::enabled!(target: "luka::function", tracing::Level::WARN),
        Level::Error => tracing::enabled!(target: "luka::function", tracing::Level::ERROR),
    };
    if !enabled {
        return Ok(());
    }
    let text = joined(&args)?;
    let text = crate::logging::one_line(&text, MAX_LOG_TEXT);
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

/// The arguments as text, separated by spaces, as far as [`crate::logging::one_line`] writes them (a little past, so that it cuts
/// them and says so): this runs outside the VM's memory limit, and thousands of arguments naming one long string
/// would otherwise each be copied whole.
fn joined(args: &MultiValue) -> Result<String> {
    let mut text = String::new();
    for (i, arg) in args.iter().enumerate() {
        if text.len() > MAX_LOG_TEXT {
            break;
        }
        if i > 0 {
            text.push(' ');
        }
        match arg {
            Value::String(s) => {
                let bytes = s.as_bytes_ref();
                let room = (MAX_LOG_TEXT + 8).saturating_sub(text.len());
                text.push_str(&String::from_utf8_lossy(&bytes[..bytes.len().min(room)]));
            }
            other => text.push_str(&other.to_string()?),
        }
    }
    Ok(text)
}

/// Longest handler log text written; the rest is cut (a handler's log line is not a place for a payload).
const MAX_LOG_TEXT: usize = 8 * 1024;

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

#[cfg(test)]
mod tests {
    use super::{MAX_LOG_TEXT, joined};

    fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
        crate::logging::one_line(text, MAX_LOG_TEXT)
    }

    /// Many arguments naming one long string are joined only as far as the line is written, and cut there.
    #[test]
    fn log_arguments_are_joined_only_as_far_as_written() {
        let lua = mlua::Lua::new();
        let long = lua.create_string("y".repeat(1 << 20)).unwrap();
        let args: mlua::MultiValue = (0..1000).map(|_| mlua::Value::String(long.clone())).collect();
        let text = joined(&args).unwrap();
        assert!(text.len() <= MAX_LOG_TEXT + 8, "{} bytes joined", text.len());
        assert!(one_line(&text).ends_with('…'));
        let few: mlua::MultiValue = ["a", "b"]
            .iter()
            .map(|s| mlua::Value::String(lua.create_string(s).unwrap()))
            .collect();
        assert_eq!(joined(&few).unwrap(), "a b");
    }

    #[test]
    fn log_text_stays_on_one_line() {
        assert_eq!(one_line("plain text ü"), "plain text ü");
        assert_eq!(
            one_line("ok\n2026-12-02T00:00:00Z ERROR forged\r\u{1b}[31m"),
            "ok\\n2026-12-02T00:00:00Z ERROR forged\\r\\u{1b}[31m"
        );
        let text = "x".repeat(100_000);
        let long = one_line(&text);
        assert!(long.len() < 9 * 1024 && long.ends_with('…'));
    }
}
