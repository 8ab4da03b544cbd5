//! Lua values to JSON and back.
//!
//! Luau numbers are all doubles, so whole numbers within ±2^53 become JSON integers (`1`, not `1.0`). A table is
//! a JSON array when its keys are exactly 1..n, or when it carries the array marker that `json.decode` puts on
//! arrays (so `[]` survives a round trip); any other table is an object, whose keys must be strings. `json.null`
//! (a null light userdata) is JSON `null`.
//!
//! Conversion runs in Rust, outside the Lua memory limit, so it has its own [`Budget`]: a table that holds one
//! sub-table many times (`t = {t, t}`, forty times over) would otherwise expand to terabytes. It reads tables raw and
//! never calls a metamethod: handler code must not run while the memory limit is lifted.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

use mlua::{Lua, StrRef, Table, Value, ValueBuilder};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};
use smallvec::SmallVec;

use super::state::VmShared;

/// Deeper nesting than this is almost surely a table that contains itself.
const MAX_DEPTH: usize = 128;

/// 2^53: doubles above it are not exact integers any more.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// The field that marks the metatable of tables decoded from JSON arrays.
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
    let budget = RefCell::new(budget);
    serde_json::to_value(LuaJson {
        value,
        depth: 0,
        budget: &budget,
    })
    .map_err(|e| e.to_string())
}

/// The compact JSON text of `value`, written straight from the Lua values (no intermediate tree); object keys
/// sorted, so the same table always gives the same text.
pub fn encode_within(value: &Value, budget: &mut Budget) -> Result<Vec<u8>, String> {
    let budget = RefCell::new(budget);
    serde_json::to_vec(&LuaJson {
        value,
        depth: 0,
        budget: &budget,
    })
    .map_err(|e| e.to_string())
}

/// A Lua value as serde sees it: one traversal that gives JSON text or a `serde_json::Value`.
struct LuaJson<'a, 'b> {
    value: &'a Value,
    depth: usize,
    budget: &'a RefCell<&'b mut Budget>,
}

impl<'a, 'b> LuaJson<'a, 'b> {
    fn spend<E: serde::ser::Error>(&self, bytes: usize) -> Result<(), E> {
        self.budget.borrow_mut().spend(bytes).map_err(E::custom)
    }

    fn child<'c>(&'c self, value: &'c Value) -> LuaJson<'c, 'b> {
        LuaJson {
            value,
            depth: self.depth + 1,
            budget: self.budget,
        }
    }
}

impl Serialize for LuaJson<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.depth > MAX_DEPTH {
            return Err(S::Error::custom(format!(
                "nested deeper than {MAX_DEPTH} levels (does a table contain itself?)"
            )));
        }
        self.spend(NODE_COST)?;
        match self.value {
            Value::Nil => serializer.serialize_unit(),
            Value::LightUserData(p) if p.0.is_null() => serializer.serialize_unit(),
            Value::Boolean(b) => serializer.serialize_bool(*b),
            Value::Integer(i) => serializer.serialize_i64(*i),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < MAX_EXACT_INTEGER => serializer.serialize_i64(*n as i64),
            Value::Number(n) if n.is_finite() => serializer.serialize_f64(*n),
            Value::Number(n) => Err(S::Error::custom(format!("{n} is not a JSON number"))),
            Value::String(s) => {
                let bytes = s.as_bytes_ref();
                self.spend(bytes.len())?;
                let text = std::str::from_utf8(&bytes).map_err(|_| S::Error::custom("a string is not valid UTF-8"))?;
                serializer.serialize_str(text)
            }
            Value::Table(table) => self.table(table, serializer),
            other => Err(S::Error::custom(format!(
                "a {} cannot be written as JSON",
                other.type_name()
            ))),
        }
    }
}

impl LuaJson<'_, '_> {
    fn table<S: Serializer>(&self, table: &Table, serializer: S) -> Result<S::Ok, S::Error> {
        // One walk through the API (`for_each` takes the VM's lock once, `pairs` once per entry), kept on the stack
        // for the small tables most answers are.
        let mut pairs: SmallVec<[(Value, Value); SMALL_TABLE]> = SmallVec::new();
        table
            .for_each::<Value, Value>(|key, value| {
                pairs.push((key, value));
                Ok(())
            })
            .map_err(S::Error::custom)?;
        self.spend(pairs.len() * NODE_COST * 2)?;
        // An array when the keys are exactly 1..n, or when the table was decoded from a JSON array (asked only when
        // the keys alone do not tell, as the metatable costs a call).
        let sequence = !pairs.is_empty() && pairs.iter().all(|(key, _)| index(key, pairs.len()).is_some());
        if sequence || self.marked(table) {
            let mut items: SmallVec<[(usize, &Value); SMALL_TABLE]> = pairs
                .iter()
                .filter_map(|(key, item)| index(key, usize::MAX).map(|i| (i, item)))
                .collect();
            items.sort_unstable_by_key(|(i, _)| *i);
            if !sequence {
                // A decoded array the handler changed: its elements 1..n up to the first hole, as Lua's `#` counts.
                let end = items.iter().enumerate().take_while(|(at, (i, _))| *i == at + 1).count();
                items.truncate(end);
            }
            let mut seq = serializer.serialize_seq(Some(items.len()))?;
            for (_, item) in items {
                seq.serialize_element(&self.child(item))?;
            }
            return seq.end();
        }
        let mut entries: SmallVec<[(KeyText<'_>, &Value); SMALL_TABLE]> = SmallVec::with_capacity(pairs.len());
        for (key, item) in &pairs {
            let key = match key {
                Value::String(s) => KeyText::Lua(
                    s.to_str_ref()
                        .map_err(|_| S::Error::custom("a key is not valid UTF-8"))?,
                ),
                Value::Integer(i) => KeyText::Number(i.to_string()),
                Value::Number(n) if n.fract() == 0.0 => KeyText::Number((*n as i64).to_string()),
                other => {
                    return Err(S::Error::custom(format!(
                        "a table key of type {} cannot be a JSON object key",
                        other.type_name()
                    )));
                }
            };
            self.spend(key.as_str().len())?;
            entries.push((key, item));
        }
        entries.sort_unstable_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        let mut map = serializer.serialize_map(Some(entries.len()))?;
        for (key, item) in &entries {
            map.serialize_entry(key.as_str(), &self.child(item))?;
        }
        map.end()
    }
}

/// Entries of a table kept on the stack while it is written; larger tables spill to the heap.
const SMALL_TABLE: usize = 8;

/// An object key's text: borrowed from Lua for a string key (no copy), made for a number key.
enum KeyText<'a> {
    Lua(StrRef<'a>),
    Number(String),
}

impl KeyText<'_> {
    fn as_str(&self) -> &str {
        match self {
            KeyText::Lua(text) => text,
            KeyText::Number(text) => text,
        }
    }
}

/// Refuses unknown (misspelt) fields of a table that stands for a fixed record (a produce call, a message, a
/// response), naming the ones expected.
pub fn check_fields(table: &Table, allowed: &[&str]) -> Result<(), String> {
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair.map_err(|e| e.to_string())?;
        let known = matches!(&key, Value::String(s) if allowed.contains(&s.to_string_lossy().as_str()));
        if !known {
            return Err(unknown_field(&key, allowed));
        }
    }
    Ok(())
}

/// `unknown field 'x' (expected a, b)`, for a key that is not one of `allowed`.
pub fn unknown_field(key: &Value, allowed: &[&str]) -> String {
    // Never `Value::to_string` here: it runs a `__tostring` metamethod, handler code, and luka reads call and
    // response tables with the VM's memory limit lifted.
    let name = match key {
        Value::String(s) => format!("'{}'", cut(&s.to_string_lossy(), 64)),
        Value::Integer(i) => format!("[{i}]"),
        Value::Number(n) => format!("[{n}]"),
        Value::Boolean(b) => format!("[{b}]"),
        other => format!("[{}]", other.type_name()),
    };
    format!("unknown field {name} (expected {})", allowed.join(", "))
}

/// `text`, cut to `max` characters with `…` when longer: error messages echo keys, which a handler may make huge.
fn cut(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((at, _)) => Cow::Owned(format!("{}…", &text[..at])),
        None => Cow::Borrowed(text),
    }
}

/// The metatable that marks arrays, one per VM, kept in the VM's app data: each decoded array needs it, and a
/// registry look-up by name costs a string and a reference each time.
fn array_marker(lua: &Lua) -> mlua::Result<Table> {
    if let Some(marker) = lua.app_data_ref::<ArrayMarker>() {
        return Ok(marker.0.clone());
    }
    let mt = lua.create_table()?;
    mt.raw_set(ARRAY_MARKER, true)?;
    mt.set_readonly(true);
    lua.set_app_data(ArrayMarker(mt.clone()));
    Ok(mt)
}

struct ArrayMarker(Table);

impl LuaJson<'_, '_> {
    fn marked(&self, table: &Table) -> bool {
        table
            .metatable()
            .and_then(|mt| mt.raw_get::<bool>(ARRAY_MARKER).ok())
            .unwrap_or(false)
    }
}

/// `key` as an array index from 1 to `len`.
fn index(key: &Value, len: usize) -> Option<usize> {
    let i = match key {
        Value::Integer(i) => usize::try_from(*i).ok()?,
        Value::Number(n) if n.fract() == 0.0 && *n >= 1.0 && *n <= len as f64 => *n as usize,
        _ => return None,
    };
    (1..=len).contains(&i).then_some(i)
}

/// A JSON value already parsed (e.g. a generated one) as Lua values.
pub fn from_json(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    match decode_with(lua, None, |seed| seed.deserialize(value)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(mlua::Error::runtime(e)),
        Err(e) => Err(e),
    }
}

/// JSON text straight to Lua values (no intermediate tree). The outer error is Lua's own (out of memory, or the
/// request's CPU time spent: `clock` is the running request's, checked every [`DECODE_CLOCK_EVERY`] values); the
/// inner one says why the text is not JSON.
///
/// Why so often: keys chosen to collide in Luau's (unseeded) string hash make each insert walk a chain as long as
/// the object, so one megabyte of JSON can cost seconds; the clock stops it within the handler's budget.
pub fn decode_json(lua: &Lua, clock: Option<&VmShared>, text: &[u8]) -> mlua::Result<Result<Value, serde_json::Error>> {
    decode_with(lua, clock, |seed| {
        let mut reader = serde_json::Deserializer::from_slice(text);
        seed.deserialize(&mut reader)?;
        reader.end()
    })
}

/// Values looked at between two looks at the request's CPU clock while decoding.
const DECODE_CLOCK_EVERY: usize = 16;

fn decode_with<E>(
    lua: &Lua,
    clock: Option<&VmShared>,
    decode: impl FnOnce(LuaSeed<'_, '_>) -> Result<(), E>,
) -> mlua::Result<Result<Value, E>> {
    let marker = array_marker(lua)?;
    let shared = Decoding {
        marker,
        failure: Cell::new(None),
        clock,
        values: Cell::new(0),
    };
    let mut invalid = None;
    let built = lua.build_value(|builder| {
        match decode(LuaSeed {
            builder,
            shared: &shared,
        }) {
            Ok(()) => Ok(()),
            Err(e) => {
                invalid = Some(e);
                // Only to leave the build; the Lua error kept in `failure`, or `invalid`, is what is answered.
                Err(mlua::Error::runtime("JSON decoding stopped"))
            }
        }
    });
    if let Some(error) = shared.failure.into_inner() {
        return Err(error);
    }
    match (built, invalid) {
        (_, Some(e)) => Ok(Err(e)),
        (built, None) => built.map(Ok),
    }
}

/// What every level of a decode shares.
struct Decoding<'a> {
    /// The metatable that marks a table as a JSON array.
    marker: Table,
    /// A Lua error met while building (kept, since serde's error type can only carry text).
    failure: Cell<Option<mlua::Error>>,
    /// The running request's CPU clock.
    clock: Option<&'a VmShared>,
    /// Values decoded so far.
    values: Cell<usize>,
}

/// Builds Lua values on the Lua stack as serde reads JSON (mlua's `build_value`, vendored patch 3: each entry is
/// stored in its table as soon as its value is complete, with no reference per nested table); arrays get the array
/// marker, `null` is `json.null`, numbers are doubles.
struct LuaSeed<'a, 'b> {
    builder: &'a mut ValueBuilder<'b>,
    shared: &'a Decoding<'a>,
}

impl<'b> LuaSeed<'_, 'b> {
    /// The seed for a value inside this one.
    fn inner(&mut self) -> LuaSeed<'_, 'b> {
        LuaSeed {
            builder: &mut *self.builder,
            shared: self.shared,
        }
    }

    fn lua<E: serde::de::Error>(&self, result: mlua::Result<()>) -> Result<(), E> {
        result.map_err(|e| {
            let message = e.to_string();
            self.shared.failure.set(Some(e));
            E::custom(message)
        })
    }

    /// Counts a value; every [`DECODE_CLOCK_EVERY`] the request's CPU clock is looked at.
    fn tick<E: serde::de::Error>(&self) -> Result<(), E> {
        let values = self.shared.values.get() + 1;
        self.shared.values.set(values);
        if values.is_multiple_of(DECODE_CLOCK_EVERY) && self.shared.clock.is_some_and(VmShared::out_of_time) {
            return self.lua(Err(mlua::Error::external(super::state::CpuLimitHit)));
        }
        Ok(())
    }

    fn push<E: serde::de::Error>(self, push: impl FnOnce(&mut ValueBuilder<'b>) -> mlua::Result<()>) -> Result<(), E> {
        let result = push(self.builder);
        self.lua(result)?;
        self.tick()
    }
}

impl<'de> DeserializeSeed<'de> for LuaSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// An object key, pushed as it is read.
struct KeySeed<'a, 'b>(LuaSeed<'a, 'b>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self.0)
    }
}

impl<'de> Visitor<'de> for LuaSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.push(|b| b.push_value(&Value::NULL))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.push(|b| b.push_boolean(v))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<(), E> {
        self.push(|b| b.push_number(n as f64))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<(), E> {
        self.push(|b| b.push_number(n as f64))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<(), E> {
        self.push(|b| b.push_number(n))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.push(|b| b.push_string(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let begun = self.builder.begin_array();
        self.lua(begun)?;
        while seq.next_element_seed(self.inner())?.is_some() {}
        let marker = &self.shared.marker;
        self.push(|b| b.end(Some(marker)))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let begun = self.builder.begin_object();
        self.lua(begun)?;
        while map.next_key_seed(KeySeed(self.inner()))?.is_some() {
            map.next_value_seed(self.inner())?;
        }
        self.push(|b| b.end(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(lua: &Lua, json: &str) -> String {
        let value = decode_json(lua, None, json.as_bytes()).unwrap().unwrap();
        to_json(&value).unwrap().to_string()
    }

    #[test]
    fn json_survives_a_round_trip_from_text_and_from_a_parsed_value() {
        let lua = Lua::new();
        let large_object = format!(
            "{{{}}}",
            (0..1000)
                .map(|i| format!("\"k{i:04}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let large_array = format!("[{}]", (0..1000).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        for json in [
            r#"{"a":[1,2.5,"x",null,true],"b":{},"c":"é\n"}"#,
            "[]",
            r#"[[],{}]"#,
            "null",
            r#""s""#,
            &large_object,
            &large_array,
        ] {
            assert_eq!(decoded(&lua, json), json);
            let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(to_json(&from_json(&lua, &parsed).unwrap()).unwrap(), parsed);
        }
    }

    /// Number keys that are not 1..n are object keys written as text, sorted with the string keys as text.
    #[test]
    fn a_table_with_number_keys_that_is_not_a_sequence_is_an_object() {
        let lua = Lua::new();
        let table: Value = lua
            .load(r#"return { [1] = "a", [3] = "c", b = true, [10] = 0 }"#)
            .eval()
            .unwrap();
        let text = encode_within(&table, &mut Budget::unmetered()).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), r#"{"1":"a","10":0,"3":"c","b":true}"#);
        let bad: Value = lua.load("return { [true] = 1 }").eval().unwrap();
        let error = encode_within(&bad, &mut Budget::unmetered()).unwrap_err();
        assert_eq!(error, "a table key of type boolean cannot be a JSON object key");
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_as_serde_json_does() {
        let lua = Lua::new();
        assert_eq!(decoded(&lua, r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn bad_text_is_the_inner_error_and_the_vm_carries_on() {
        let lua = Lua::new();
        for bad in [r#"{"a":[1,2"#, r#"{"a":1}x"#, "[1,]", ""] {
            assert!(decode_json(&lua, None, bad.as_bytes()).unwrap().is_err(), "{bad}");
        }
        let nested = "[".repeat(200) + "]".repeat(200).as_str();
        assert!(decode_json(&lua, None, nested.as_bytes()).unwrap().is_err());
        assert_eq!(decoded(&lua, "[1]"), "[1]", "the VM still works");
    }

    /// Decoding recurses once per nesting level (serde's visitors): the deepest JSON serde reads (127 levels of
    /// objects) must still fit well inside a worker thread's stack (tokio's default is 2 MiB), in an unoptimised
    /// build too.
    #[test]
    fn the_deepest_json_fits_in_a_quarter_of_a_worker_s_stack() {
        let deepest = "{\"a\":".repeat(127) + "1" + "}".repeat(127).as_str();
        let decoded = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let lua = Lua::new();
                decode_json(&lua, None, deepest.as_bytes()).unwrap().is_ok()
            })
            .unwrap()
            .join()
            .expect("decoding ran out of stack");
        assert!(decoded);
    }

    /// The stack builder (vendor/mlua patch 3) refuses what would leave the stack broken, and the VM carries on.
    #[test]
    fn the_value_builder_refuses_misuse() {
        let lua = Lua::new();
        type Build = fn(&mut ValueBuilder<'_>) -> mlua::Result<()>;
        let misuses: [(&str, Build); 6] = [
            ("nothing", |_| Ok(())),
            ("two values", |b| {
                b.push_number(1.0)?;
                b.push_number(2.0)
            }),
            ("a table left open", |b| b.begin_object()),
            ("a key without a value", |b| {
                b.begin_object()?;
                b.push_string("k")?;
                b.end(None)
            }),
            ("a nil key", |b| {
                b.begin_object()?;
                b.push_nil()?;
                b.push_number(1.0)?;
                b.end(None)
            }),
            ("an end without a table", |b| b.end(None)),
        ];
        for (what, build) in misuses {
            assert!(lua.build_value(build).is_err(), "{what}");
        }
        // A nested build handed the outer builder (the inner one then takes the outer's table as its value).
        let nested = lua.build_value(|outer| {
            outer.begin_array()?;
            let _ = lua.build_value(|_| outer.begin_array());
            outer.push_number(1.0)?;
            outer.end(None)
        });
        assert!(nested.is_err(), "a stack changed under the builder");
        // The builder used from a Rust callback of a Lua call made during the build: another call frame, where the
        // open table's stack index names another slot (mlua's own value at the bottom of the callback's stack), at the
        // same top as the builder counts: only the call depth tells.
        let from_callback = lua.build_value(|b| {
            b.begin_object()?;
            lua.scope(|scope| {
                let f = scope.create_function_mut(|_, ()| {
                    b.push_string("k")?;
                    b.push_number(1.0)
                })?;
                f.call::<()>(())
            })?;
            b.end(None)
        });
        assert!(from_callback.is_err(), "a builder used from another call frame");
        // Going on after an error that was ignored: nothing more is done, and the build fails.
        let ignored = lua.build_value(|b| {
            let _ = b.end(None);
            let _ = b.push_number(1.0);
            Ok(())
        });
        assert!(ignored.is_err(), "a builder that met an error");
        // A memory limit set during the build: the builder's allocations are protected from then on, so running
        // out is Lua's error, not an abort.
        let limited = lua.build_value(|b| {
            lua.set_memory_limit(lua.used_memory() + 256 * 1024)?;
            b.begin_array()?;
            for i in 0..100_000 {
                b.push_string(format!("value number {i}"))?;
            }
            b.end(None)
        });
        lua.set_memory_limit(0).unwrap();
        assert!(matches!(limited, Err(mlua::Error::MemoryError(_))), "{limited:?}");
        let value = lua
            .build_value(|b| {
                b.begin_array()?;
                for i in 0..100 {
                    b.push_number(f64::from(i))?;
                }
                b.end(None)
            })
            .unwrap();
        let sum: f64 = lua
            .load("local t = ... local s = 0 for _, v in ipairs(t) do s = s + v end return #t, s")
            .call::<(usize, f64)>(value)
            .map(|(n, s)| n as f64 * 10_000.0 + s)
            .unwrap();
        assert_eq!(
            sum,
            100.0 * 10_000.0 + 4950.0,
            "100 values stored in order, across several stores"
        );
        assert_eq!(decoded(&lua, "[1]"), "[1]", "the VM still works");
    }

    #[test]
    fn running_out_of_memory_is_lua_s_error() {
        let lua = Lua::new();
        let array = format!("[{}]", vec!["\"xxxxxxxxxxxxxxxx\""; 100_000].join(","));
        lua.set_memory_limit(lua.used_memory() + 512 * 1024).unwrap();
        let error = decode_json(&lua, None, array.as_bytes()).unwrap_err();
        assert!(matches!(error, mlua::Error::MemoryError(_)), "{error:?}");
        lua.set_memory_limit(0).unwrap();
        assert_eq!(decoded(&lua, "[1]"), "[1]", "the VM still works");
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
