//! Lua values to JSON and back.
//!
//! Luau numbers are all doubles, so whole numbers within ±2^53 become JSON integers (`1`, not `1.0`). A table is
//! a JSON array when its keys are exactly 1..n, or when it carries the array marker that `json.decode` puts on
//! arrays (so `[]` survives a round trip); any other table is an object, whose keys must be strings. `json.null`
//! (a null light userdata) is JSON `null`.
//!
//! Conversion runs in Rust, outside the Lua memory limit and the CPU interrupt, so it has its own [`Budget`]: a
//! table that holds one sub-table many times (`t = {t, t}`, forty times over) would otherwise expand to terabytes.
//!
//! Conversion runs in Rust, outside the Lua memory limit and the CPU interrupt, so it has its own [`Budget`]: a
//! table that holds one sub-table many times (`t = {t, t}`, forty times over) would otherwise expand to terabytes.

use std::sync::Arc;

use mlua::{Lua, Table, Value};

use super::state::VmShared;
use serde_json::{Map, Number};

/// Deeper nesting than this is almost surely a table that contains itself.
const MAX_DEPTH: usize = 128;

/// 2^53: doubles above it are not exact integers any more.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Registry name of the metatable that marks tables decoded from JSON arrays.
const ARRAY_MARKER: &str = "luka.json.array";

/// How much JSON a conversion may build, estimated as it goes (each value costs [`NODE_COST`] plus its text), and,
/// when metered, the request's CPU budget, checked every [`CLOCK_EVERY`] steps.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    left: usize,
    clock: Option<Arc<VmShared>>,
    steps: u32,
}

/// Steps between clock reads: a read costs about as much as converting a few values.
const CLOCK_EVERY: u32 = 256;

/// Rough size of one `serde_json::Value` in memory.
const NODE_COST: usize = 32;

/// 64 MiB: far above any record Kafka accepts by default (1 MiB), far below what hurts the server.
pub const MAX_JSON_BYTES: usize = 64 * 1024 * 1024;

impl Budget {
    /// [`MAX_JSON_BYTES`], no clock.
    pub fn unmetered() -> Self {
        Self {
            left: MAX_JSON_BYTES,
            ..Self::default()
        }
    }

    /// [`MAX_JSON_BYTES`] and the CPU budget of the request running on `clock`'s VM.
    pub fn metered(clock: &Arc<VmShared>) -> Self {
        Self {
            left: MAX_JSON_BYTES,
            clock: Some(Arc::clone(clock)),
            steps: 0,
        }
    }

    /// Takes `bytes` from the budget; an error once it is spent.
    pub fn spend(&mut self, bytes: usize) -> Result<(), String> {
        self.left = self.left.checked_sub(bytes).ok_or_else(|| {
            format!(
                "larger than {} MiB (does a table repeat a large sub-table?)",
                MAX_JSON_BYTES >> 20
            )
        })?;
        self.steps = self.steps.wrapping_add(1);
        if self.steps.is_multiple_of(CLOCK_EVERY) && self.clock.as_ref().is_some_and(|c| c.out_of_time()) {
            return Err("stopped: the request used up its CPU time".into());
        }
        Ok(())
    }
}

/// Unmetered (size-bounded only): for conversions outside a request.
pub fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    to_json_within(value, &mut Budget::unmetered())
}

/// Like [`to_json`], spending from a budget shared with other conversions (the messages of one produce call).
pub fn to_json_within(value: &Value, budget: &mut Budget) -> Result<serde_json::Value, String> {
    to_json_at(value, 0, budget)
}

fn to_json_at(value: &Value, depth: usize, budget: &mut Budget) -> Result<serde_json::Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "nested deeper than {MAX_DEPTH} levels (does a table contain itself?)"
        ));
    }
    budget.spend(NODE_COST)?;
    if let Value::String(s) = value {
        budget.spend(s.as_bytes().len())?;
    }
    Ok(match value {
        Value::Nil => serde_json::Value::Null,
        Value::LightUserData(p) if p.0.is_null() => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Number(n) => number(*n)?,
        Value::String(s) => {
            serde_json::Value::String(s.to_str().map_err(|_| "a string is not valid UTF-8")?.to_owned())
        }
        Value::Table(table) => table_to_json(table, depth, budget)?,
        other => return Err(format!("a {} cannot be written as JSON", other.type_name())),
    })
}

fn number(n: f64) -> Result<serde_json::Value, String> {
    if n.fract() == 0.0 && n.abs() < MAX_EXACT_INTEGER {
        return Ok(serde_json::Value::from(n as i64));
    }
    Number::from_f64(n)
        .map(serde_json::Value::Number)
        .ok_or_else(|| format!("{n} is not a JSON number"))
}

fn table_to_json(table: &Table, depth: usize, budget: &mut Budget) -> Result<serde_json::Value, String> {
    let marked = table
        .metatable()
        .and_then(|mt| mt.raw_get::<bool>(ARRAY_MARKER).ok())
        .unwrap_or(false);
    let len = table.raw_len();
    let pairs = table.pairs::<Value, Value>().count();
    budget.spend(pairs * NODE_COST)?;
    budget.spend(pairs * NODE_COST)?;
    if marked || (len > 0 && pairs == len) {
        let mut items = Vec::with_capacity(len);
        for i in 1..=len {
            let item: Value = table.raw_get(i).map_err(|e| e.to_string())?;
            items.push(to_json_at(&item, depth + 1, budget)?);
        }
        return Ok(serde_json::Value::Array(items));
    }
    let mut object = Map::new();
    for pair in table.pairs::<Value, Value>() {
        let (key, item) = pair.map_err(|e| e.to_string())?;
        let key = match &key {
            Value::String(s) => s.to_str().map_err(|_| "a key is not valid UTF-8")?.to_owned(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) if n.fract() == 0.0 => (*n as i64).to_string(),
            other => {
                return Err(format!(
                    "a table key of type {} cannot be a JSON object key",
                    other.type_name()
                ));
            }
        };
        budget.spend(key.len())?;
        object.insert(key, to_json_at(&item, depth + 1, budget)?);
    }
    Ok(serde_json::Value::Object(object))
}

/// Refuses unknown (misspelt) fields of a table that stands for a fixed record (a produce call, a message, a
/// response), naming the ones expected.
pub fn check_fields(table: &Table, allowed: &[&str]) -> Result<(), String> {
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair.map_err(|e| e.to_string())?;
        let known = matches!(&key, Value::String(s) if allowed.contains(&s.to_string_lossy().as_str()));
        if !known {
            let name = match &key {
                Value::String(s) => format!("'{}'", s.to_string_lossy()),
                other => format!("[{}]", other.to_string().unwrap_or_default()),
            };
            return Err(format!("unknown field {name} (expected {})", allowed.join(", ")));
        }
    }
    Ok(())
}

/// The metatable that marks arrays, one per VM, kept in the registry.
fn array_marker(lua: &Lua) -> mlua::Result<Table> {
    if let Ok(mt) = lua.named_registry_value::<Table>(ARRAY_MARKER) {
        return Ok(mt);
    }
    let mt = lua.create_table()?;
    mt.raw_set(ARRAY_MARKER, true)?;
    mt.set_readonly(true);
    lua.set_named_registry_value(ARRAY_MARKER, &mt)?;
    Ok(mt)
}

pub fn from_json(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    Ok(match value {
        serde_json::Value::Null => Value::NULL,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                table.raw_set(i + 1, from_json(lua, item)?)?;
            }
            table.set_metatable(Some(array_marker(lua)?))?;
            Value::Table(table)
        }
        serde_json::Value::Object(map) => {
            let table = lua.create_table_with_capacity(0, map.len())?;
            for (key, item) in map {
                table.raw_set(key.as_str(), from_json(lua, item)?)?;
            }
            Value::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(lua: &Lua, json: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let lua_value = from_json(lua, &value).unwrap();
        to_json(&lua_value).unwrap().to_string()
    }

    #[test]
    fn json_survives_a_round_trip() {
        let lua = Lua::new();
        for json in [
            r#"{"a":[1,2.5,"x",null,true],"b":{}}"#,
            "[]",
            r#"[[],{}]"#,
            "null",
            r#""s""#,
        ] {
            assert_eq!(round_trip(&lua, json), json);
        }
    }

    #[test]
    fn lua_tables_become_arrays_or_objects() {
        let lua = Lua::new();
        let value: Value = lua
            .load(r#"return {list = {1, 2, 3}, map = {x = 1}, n = 3, f = 0.5, empty = {}}"#)
            .eval()
            .unwrap();
        let json = to_json(&value).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"list": [1, 2, 3], "map": {"x": 1}, "n": 3, "f": 0.5, "empty": {}})
        );
    }

    #[test]
    fn shared_sub_tables_cannot_expand_without_bound() {
        let lua = Lua::new();
        let doubling: Value = lua
            .load("local t = {'x'} for i = 1, 40 do t = {t, t} end return t")
            .eval()
            .unwrap();
        assert!(to_json(&doubling).unwrap_err().contains("larger than 64 MiB"));
    }

    #[test]
    fn cycles_and_functions_are_refused() {
        let lua = Lua::new();
        let cyclic: Value = lua.load("local t = {} t.t = t return t").eval().unwrap();
        assert!(to_json(&cyclic).unwrap_err().contains("contain itself"));
        let f: Value = lua.load("return {f = print}").eval().unwrap();
        assert!(to_json(&f).unwrap_err().contains("function"));
    }
}
