//! JSON into Lua values: JSON text (`req:json()`, `json.decode`) or an already parsed `serde_json::Value`
//! (`schema.random`) in, one Lua value out. Objects become tables, arrays become tables with the array marker
//! ([`super::convert`] reads it back), `null` is `json.null`, numbers are doubles.
//!
//! ```text
//! text ─> serde_json reader ─> each value pushed on the Luau stack as it is read ─> each table made at its size
//! ```
//!
//! Why `unsafe`: through mlua's safe API every table is a separate call (its lock, a stack check, a reference made
//! and released), which was about half of what `req:json()` cost a webhook in the profile (bench/README.md). Here
//! one protected call ([`Lua::exec_raw`]) builds the whole value with Luau's C API on that call's own stack. What
//! keeps it sound:
//! - every slot is reserved (`lua_checkstack`) before it is pushed, and the stack is left holding exactly the
//!   result (or nothing);
//! - strings are pushed from `&str`s that outlive the push (Luau copies them);
//! - a Luau error (out of memory under the VM's limit) unwinds to `exec_raw`'s protected call, which returns it;
//!   the Rust frames in between own only plain memory (serde_json's buffers), freed as they unwind.

#![allow(unsafe_code)] // Luau's C API, confined to this module; see above for why and what keeps it sound.

use std::cell::Cell;
use std::ffi::c_int;

use mlua::{Lua, Value, ffi};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::convert::array_marker;
use super::state::{CpuLimitHit, VmShared};

/// Entries of one table kept on the stack before they are set: a table is made at its size when it has at most
/// this many, and grows from there when it has more.
const PENDING: c_int = 256;

/// Table entries between looks at the request's CPU clock: keys chosen to collide in Luau's (unseeded) string
/// hash make each insert walk a chain as long as the object, so one megabyte of JSON could cost seconds.
const CLOCK_EVERY: usize = 16;

/// JSON text straight to Lua values (no intermediate tree). The outer error is Lua's own (out of memory, or the
/// request's CPU time spent: `clock` is the running request's); the inner one says why the text is not JSON.
pub fn decode_json(lua: &Lua, clock: Option<&VmShared>, text: &[u8]) -> mlua::Result<Result<Value, serde_json::Error>> {
    decode_with(lua, clock, |seed| {
        let mut reader = serde_json::Deserializer::from_slice(text);
        seed.deserialize(&mut reader)?;
        reader.end()
    })
}

/// A JSON value already parsed (e.g. a generated one) as Lua values.
pub fn from_json(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    match decode_with(lua, None, |seed| seed.deserialize(value)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(mlua::Error::runtime(e)),
        Err(e) => Err(e),
    }
}

fn decode_with<E>(
    lua: &Lua,
    clock: Option<&VmShared>,
    decode: impl FnOnce(StackSeed<'_>) -> Result<(), E>,
) -> mlua::Result<Result<Value, E>> {
    let meter = Meter {
        clock,
        entries: Cell::new(0),
        spent: Cell::new(false),
    };
    let mut failed = None;
    // SAFETY: the closure runs inside exec_raw's protected call, on that call's stack, whose slot 1 is the
    // marker passed here; it leaves the decoded value alone in slot 1, or an empty stack (see the module's doc).
    let value: Value = unsafe {
        lua.exec_raw(array_marker(lua)?, |state| {
            let seed = StackSeed { state, meter: &meter };
            match decode(seed) {
                Ok(()) => ffi::lua_replace(state, MARKER),
                Err(e) => {
                    ffi::lua_settop(state, 0);
                    failed = Some(e);
                }
            }
        })?
    };
    if meter.spent.get() {
        return Err(mlua::Error::external(CpuLimitHit));
    }
    Ok(match failed {
        Some(e) => Err(e),
        None => Ok(value),
    })
}

/// Where the array marker sits on the protected call's stack.
const MARKER: c_int = 1;

/// The request's CPU clock, looked at every [`CLOCK_EVERY`] table entries.
struct Meter<'a> {
    clock: Option<&'a VmShared>,
    entries: Cell<usize>,
    spent: Cell<bool>,
}

impl Meter<'_> {
    fn entry<E: serde::de::Error>(&self) -> Result<(), E> {
        let entries = self.entries.get() + 1;
        self.entries.set(entries);
        if entries.is_multiple_of(CLOCK_EVERY) && self.clock.is_some_and(VmShared::out_of_time) {
            self.spent.set(true);
            return Err(E::custom("stopped: the request used up its CPU time"));
        }
        Ok(())
    }
}

/// Reads one JSON value and pushes it on `state`'s stack.
#[derive(Clone, Copy)]
struct StackSeed<'a> {
    state: *mut ffi::lua_State,
    meter: &'a Meter<'a>,
}

impl StackSeed<'_> {
    /// Makes room for `slots` more values on the stack.
    fn reserve<E: serde::de::Error>(&self, slots: c_int) -> Result<(), E> {
        // SAFETY: `state` is the protected call's (see `decode_with`).
        if unsafe { ffi::lua_checkstack(self.state, slots) } == 0 {
            return Err(E::custom("nested too deeply or too large to decode"));
        }
        Ok(())
    }

    fn push_number(&self, n: f64) {
        // SAFETY: as for `push_str`.
        unsafe { ffi::lua_pushnumber(self.state, n) };
    }

    fn push_str(&self, s: &str) {
        // SAFETY: a slot was reserved by the caller's container (or is the protected call's own minimum).
        unsafe { ffi::lua_pushlstring(self.state, s.as_ptr().cast(), s.len()) };
    }

    /// Sets the entries pushed above `base` into the table made for them: `width` slots per entry (2 for a key
    /// and value, 1 for an array item). The table is made the first time (`set`, how many entries it already has,
    /// is 0), at the size of the entries pending, and stays at `base + 1`. Needs `width + 1` free slots.
    fn flush(&self, base: c_int, pending: c_int, width: c_int, set: &mut i64) {
        let state = self.state;
        // SAFETY: above `base` are the table (once made) and the pending entries; the caller reserved `width + 1`
        // free slots: one for the new table (moved under the entries), `width` for each entry's copies, which the
        // `rawset` that follows pops.
        unsafe {
            let table = base + 1;
            if *set == 0 {
                if width == 2 {
                    ffi::lua_createtable(state, 0, pending);
                } else {
                    ffi::lua_createtable(state, pending, 0);
                }
                ffi::lua_insert(state, table);
            }
            let first = table + 1;
            for i in 0..pending {
                if width == 2 {
                    ffi::lua_pushvalue(state, first + 2 * i);
                    ffi::lua_pushvalue(state, first + 2 * i + 1);
                    ffi::lua_rawset(state, table);
                } else {
                    ffi::lua_pushvalue(state, first + i);
                    ffi::lua_rawseti(state, table, *set + 1);
                }
                *set += 1;
            }
            ffi::lua_settop(state, table);
        }
    }
}

impl<'de> DeserializeSeed<'de> for StackSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// An object key, pushed as it is read.
struct KeySeed<'a>(StackSeed<'a>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.0.push_str(s);
        Ok(())
    }
}

impl<'de> Visitor<'de> for StackSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    // SAFETY (every push below): the slot was reserved by the container being read, or is the protected call's
    // own minimum for the top-level value.
    fn visit_unit<E>(self) -> Result<(), E> {
        unsafe { ffi::lua_pushlightuserdata(self.state, std::ptr::null_mut()) };
        Ok(())
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        unsafe { ffi::lua_pushboolean(self.state, c_int::from(b)) };
        Ok(())
    }

    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.push_number(n as f64);
        Ok(())
    }

    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.push_number(n as f64);
        Ok(())
    }

    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        self.push_number(n);
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.push_str(s);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // SAFETY: the protected call's stack (see `decode_with`).
        let base = unsafe { ffi::lua_gettop(self.state) };
        let (mut pending, mut set) = (0, 0);
        loop {
            // The item, then what `flush` needs.
            self.reserve(1 + 2)?;
            if seq.next_element_seed(self)?.is_none() {
                break;
            }
            self.meter.entry()?;
            pending += 1;
            if pending == PENDING {
                self.flush(base, pending, 1, &mut set);
                pending = 0;
            }
        }
        self.flush(base, pending, 1, &mut set);
        // SAFETY: the table is on top; the marker is in its slot for the whole call.
        unsafe {
            ffi::lua_pushvalue(self.state, MARKER);
            ffi::lua_setmetatable(self.state, -2);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // SAFETY: the protected call's stack (see `decode_with`).
        let base = unsafe { ffi::lua_gettop(self.state) };
        let (mut pending, mut set) = (0, 0);
        loop {
            // The key and value, then what `flush` needs.
            self.reserve(2 + 3)?;
            if map.next_key_seed(KeySeed(self))?.is_none() {
                break;
            }
            map.next_value_seed(self)?;
            self.meter.entry()?;
            pending += 1;
            if pending == PENDING {
                self.flush(base, pending, 2, &mut set);
                pending = 0;
            }
        }
        self.flush(base, pending, 2, &mut set);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lua::convert::to_json;

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

    #[test]
    fn a_repeated_key_keeps_its_last_value_as_serde_json_does() {
        let lua = Lua::new();
        assert_eq!(decoded(&lua, r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn bad_text_is_the_inner_error_and_leaves_nothing_behind() {
        let lua = Lua::new();
        for bad in [r#"{"a":[1,2"#, r#"{"a":1}x"#, "[1,]", ""] {
            assert!(decode_json(&lua, None, bad.as_bytes()).unwrap().is_err(), "{bad}");
        }
        let nested = "[".repeat(200) + "]".repeat(200).as_str();
        assert!(decode_json(&lua, None, nested.as_bytes()).unwrap().is_err());
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
}
