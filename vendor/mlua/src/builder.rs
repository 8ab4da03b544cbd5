//! Values built on the Lua stack from a stream of events, such as a parser's, with no reference made per value
//! (luka's patch 3, see `PATCHES.md`).
//!
//! [`Lua::create_table_from`] wants each nested table as a finished [`Table`]: a reference made for it in the
//! auxiliary thread, pushed back to the stack by its parent and dropped. Here an open table stays on the stack,
//! and each entry is stored in it by one raw set as soon as its value is complete (a nested table when it closes),
//! as a streaming parser such as lua-cjson builds its tables; only the finished value becomes a reference.

use std::os::raw::c_int;

use crate::error::{Error, Result};
use crate::state::{Lua, RawLua};
use crate::table::Table;
use crate::util::{check_stack, push_string, push_table, StackGuard};
use crate::value::Value;

/// The room a new table is made with: most objects and arrays in JSON bodies have a few entries; larger ones grow.
const FIRST_ROOM: usize = 4;

/// How many tables may be open at once (each holds two stack slots: itself and a key waiting for its value).
const MAX_DEPTH: usize = 1000;

/// Slots checked for at a time: pushes between two checks never exceed [`ROOM`], and a protected call takes up to
/// [`SPARE`] more for its own use and the copies it is passed.
const ROOM: c_int = 32;
const SPARE: c_int = 8;

/// Builds one value on the Lua stack: scalars and strings are pushed, tables are opened, filled and closed. Made by
/// [`Lua::build_value`].
pub struct ValueBuilder<'a> {
    lua: &'a RawLua,
    state: *mut ffi::lua_State,
    /// Whether an allocation may fail (a memory limit is set): each one then runs in a protected call.
    protect: bool,
    /// The tables open, innermost last.
    open: Vec<Open>,
    /// The stack's top before the build, and now.
    base: c_int,
    top: c_int,
    /// Pushes left before the stack is checked for room again.
    room: c_int,
}

struct Open {
    array: bool,
    /// The table's stack index.
    table: c_int,
    /// Values an array has stored so far.
    stored: c_int,
}

impl Lua {
    /// Builds one value with `build`, which must push exactly one value (a scalar, a string, or a table it opens
    /// and closes). Anything else is an error, as is a key that cannot index a table (nil, NaN).
    ///
    /// `build` may use this `Lua` otherwise too; values it makes that way are pushed with
    /// [`ValueBuilder::push_value`].
    pub fn build_value(&self, build: impl FnOnce(&mut ValueBuilder<'_>) -> Result<()>) -> Result<Value> {
        let lua = self.lock();
        unsafe {
            let state = lua.state();
            let _sg = StackGuard::new(state);
            let base = ffi::lua_gettop(state);
            let mut builder = ValueBuilder {
                lua: &lua,
                state,
                protect: !lua.unlikely_memory_error(),
                open: Vec::new(),
                base,
                top: base,
                room: 0,
            };
            build(&mut builder)?;
            if !builder.open.is_empty() {
                return Err(Error::runtime("build_value: a table was left open"));
            }
            if ffi::lua_gettop(state) != base + 1 {
                return Err(Error::runtime("build_value: exactly one value must be built"));
            }
            lua.try_pop_value()
        }
    }
}

impl ValueBuilder<'_> {
    pub fn push_nil(&mut self) -> Result<()> {
        self.reserve()?;
        unsafe { ffi::lua_pushnil(self.state) };
        self.pushed()
    }

    pub fn push_boolean(&mut self, b: bool) -> Result<()> {
        self.reserve()?;
        unsafe { ffi::lua_pushboolean(self.state, b as c_int) };
        self.pushed()
    }

    pub fn push_number(&mut self, n: f64) -> Result<()> {
        self.reserve()?;
        unsafe { ffi::lua_pushnumber(self.state, n) };
        self.pushed()
    }

    pub fn push_string(&mut self, s: impl AsRef<[u8]>) -> Result<()> {
        self.reserve()?;
        unsafe { push_string(self.state, s.as_ref(), self.protect)? };
        self.pushed()
    }

    /// Pushes a value made otherwise (a table, a light userdata...).
    pub fn push_value(&mut self, value: &Value) -> Result<()> {
        self.reserve()?;
        unsafe { self.lua.push_value(value)? };
        self.pushed()
    }

    /// Opens a table whose entries follow as key, value, key, value...
    pub fn begin_object(&mut self) -> Result<()> {
        self.begin(false)
    }

    /// Opens a table whose entries follow as values, stored at 1, 2, 3...
    pub fn begin_array(&mut self) -> Result<()> {
        self.begin(true)
    }

    /// Closes the innermost open table (giving it `metatable`): it becomes the value just pushed.
    pub fn end(&mut self, metatable: Option<&Table>) -> Result<()> {
        let Some(open) = self.open.last() else {
            return Err(Error::runtime("build_value: no table is open"));
        };
        if self.top != open.table {
            return Err(Error::runtime("build_value: an object's last key has no value"));
        }
        self.open.pop();
        if let Some(metatable) = metatable {
            self.reserve()?;
            unsafe {
                self.lua.push_ref(&metatable.0);
                ffi::lua_setmetatable(self.state, -2);
            }
        }
        // The table was counted on the stack when it was opened.
        self.store()
    }

    fn begin(&mut self, array: bool) -> Result<()> {
        if self.open.len() >= MAX_DEPTH {
            return Err(Error::runtime(format!("build_value: more than {MAX_DEPTH} tables open")));
        }
        let (narr, nrec) = if array { (FIRST_ROOM, 0) } else { (0, FIRST_ROOM) };
        self.reserve()?;
        unsafe { push_table(self.state, narr, nrec, self.protect)? };
        self.top += 1;
        self.open.push(Open {
            array,
            table: self.top,
            stored: 0,
        });
        Ok(())
    }

    /// Room for one more value on the stack.
    fn reserve(&mut self) -> Result<()> {
        if self.room == 0 {
            unsafe { check_stack(self.state, ROOM + SPARE)? };
            self.room = ROOM;
        }
        self.room -= 1;
        Ok(())
    }

    /// After a value was pushed.
    fn pushed(&mut self) -> Result<()> {
        self.top += 1;
        self.store()
    }

    /// The value on top is stored in the innermost open table when it completes an entry.
    fn store(&mut self) -> Result<()> {
        let (state, protect) = (self.state, self.protect);
        let Some(open) = self.open.last_mut() else {
            if self.top > self.base + 1 {
                return Err(Error::runtime("build_value: exactly one value must be built"));
            }
            return Ok(());
        };
        let table = open.table;
        unsafe {
            if open.array {
                let Some(index) = open.stored.checked_add(1) else {
                    return Err(Error::runtime("build_value: too many array values"));
                };
                if protect {
                    ffi::lua_pushvalue(state, table);
                    ffi::lua_insert(state, -2);
                    protect_lua!(state, 2, 0, |state| ffi::lua_rawseti(state, -2, index.into()))?;
                } else {
                    ffi::lua_rawseti(state, table, index.into());
                }
                open.stored = index;
                self.top -= 1;
            } else if self.top == table + 2 {
                if !Table::is_valid_key(state, -2) {
                    return Err(Error::runtime("build_value: a key is nil or NaN"));
                }
                if protect {
                    ffi::lua_pushvalue(state, table);
                    ffi::lua_insert(state, -3);
                    protect_lua!(state, 3, 0, |state| ffi::lua_rawset(state, -3))?;
                } else {
                    ffi::lua_rawset(state, table);
                }
                self.top -= 2;
            }
        }
        Ok(())
    }
}
