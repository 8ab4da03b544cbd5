//! Lua values to JSON and back.
//!
//! Luau numbers are all doubles, so whole numbers within ±2^53 become JSON integers (`1`, not `1.0`). A table is
//! a JSON array when its keys are exactly 1..n, or when it carries the array marker that `json.decode` puts on
//! arrays (so `[]` survives a round trip); any other table is an object, whose keys must be strings. `json.null`
//! (a null light userdata) is JSON `null`.

use mlua::{Lua, Table, Value};
use serde_json::{Map, Number};

/// Deeper nesting than this is almost surely a table that contains itself.
const MAX_DEPTH: usize = 128;

/// 2^53: doubles above it are not exact integers any more.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Registry name of the metatable that marks tables decoded from JSON arrays.
const ARRAY_MARKER: &str = "luka.json.array";

pub fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    to_json_at(value, 0)
}

fn to_json_at(value: &Value, depth: usize) -> Result<serde_json::Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "nested deeper than {MAX_DEPTH} levels (does a table contain itself?)"
        ));
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
        Value::Table(table) => table_to_json(table, depth)?,
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

fn table_to_json(table: &Table, depth: usize) -> Result<serde_json::Value, String> {
    let marked = table
        .metatable()
        .and_then(|mt| mt.raw_get::<bool>(ARRAY_MARKER).ok())
        .unwrap_or(false);
    let len = table.raw_len();
    let pairs = table.pairs::<Value, Value>().count();
    if marked || (len > 0 && pairs == len) {
        let mut items = Vec::with_capacity(len);
        for i in 1..=len {
            let item: Value = table.raw_get(i).map_err(|e| e.to_string())?;
            items.push(to_json_at(&item, depth + 1)?);
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
        object.insert(key, to_json_at(&item, depth + 1)?);
    }
    Ok(serde_json::Value::Object(object))
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
    fn cycles_and_functions_are_refused() {
        let lua = Lua::new();
        let cyclic: Value = lua.load("local t = {} t.t = t return t").eval().unwrap();
        assert!(to_json(&cyclic).unwrap_err().contains("contain itself"));
        let f: Value = lua.load("return {f = print}").eval().unwrap();
        assert!(to_json(&f).unwrap_err().contains("function"));
    }
}
