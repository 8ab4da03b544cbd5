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
use crate::util::{check_stack, push_string, push_table, stack_as_counted, StackGuard};
use crate::value::Value;

/// The room a new table is made with: most objects and arrays in JSON bodies have a few entries; larger ones grow.
const FIRST_ROOM: usize = 4;

/// The room of the outermost table: one per value built, usually the largest (a webhook's event or order has five
/// to eight fields), and growing from four to eight entries rehashes the table (about 1.2k instructions).
const OUTER_ROOM: usize = 8;

/// How many tables may be open at once (each holds two stack slots: itself and a key waiting for its value).
const MAX_DEPTH: usize = 1000;

/// Entries past which a table's stores are protected even without a memory limit: Luau raises an error ("table
/// overflow") for a table of more than 2^26 entries, as `push_table` assumes for the sizes it is given.
const LARGE_TABLE: c_int = 1 << 25;

/// Slots checked for at a time: pushes between two checks never exceed [`ROOM`], and a protected call takes up to
/// [`SPARE`] more for its own use and the copies it is passed.
const ROOM: c_int = 32;
const SPARE: c_int = 8;

/// Builds one value on the Lua stack: scalars and strings are pushed, tables are opened, filled and closed. Made by
/// [`Lua::build_value`].
///
/// The builder counts the stack itself (stores name open tables by their stack index). Before each push and each
/// raw set it checks that the stack is still as it left it (the same thread, call frame and top), and after any
/// error it does nothing more: closures that also use the `Lua` otherwise, or go on after an error, get errors,
/// never a push or raw set into another slot.
pub struct ValueBuilder<'a> {
    lua: &'a RawLua,
    state: *mut ffi::lua_State,
    /// The tables open, innermost last.
    open: Vec<Open>,
    /// The stack's top before the build, and now.
    base: c_int,
    top: c_int,
    /// Pushes left before the stack is checked for room again.
    room: c_int,
    /// Set by any error: the stack may no longer be as counted.
    broken: bool,
    /// The call depth of the frame the build runs in (`lua_stackdepth`).
    depth: c_int,
}

struct Open {
    array: bool,
    /// The table's stack index.
    table: c_int,
    /// Entries stored so far (an array's last index).
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
                open: Vec::new(),
                base,
                top: base,
                room: 0,
                broken: false,
                depth: ffi::lua_stackdepth(state),
            };
            build(&mut builder)?;
            if builder.broken {
                return Err(Error::runtime("build_value: the build went on after an error"));
            }
            if !builder.open.is_empty() {
                return Err(Error::runtime("build_value: a table was left open"));
            }
            if lua.state() != state || ffi::lua_gettop(state) != base + 1 {
                return Err(Error::runtime("build_value: exactly one value must be built"));
            }
            lua.try_pop_value()
        }
    }
}

impl ValueBuilder<'_> {
    pub fn push_nil(&mut self) -> Result<()> {
        self.step(|b| b.push(|state| unsafe { ffi::lua_pushnil(state) }))
    }

    pub fn push_boolean(&mut self, v: bool) -> Result<()> {
        self.step(|b| b.push(|state| unsafe { ffi::lua_pushboolean(state, v as c_int) }))
    }

    pub fn push_number(&mut self, n: f64) -> Result<()> {
        self.step(|b| b.push(|state| unsafe { ffi::lua_pushnumber(state, n) }))
    }

    pub fn push_string(&mut self, s: impl AsRef<[u8]>) -> Result<()> {
        self.step(|b| {
            b.reserve()?;
            unsafe { push_string(b.state, s.as_ref(), b.protect(0))? };
            b.pushed()
        })
    }

    /// Pushes a value made otherwise (a table, a light userdata...).
    pub fn push_value(&mut self, value: &Value) -> Result<()> {
        self.step(|b| {
            b.reserve()?;
            unsafe { b.lua.push_value(value)? };
            b.pushed()
        })
    }

    /// Opens a table whose entries follow as key, value, key, value...
    pub fn begin_object(&mut self) -> Result<()> {
        self.step(|b| b.begin(false))
    }

    /// Opens a table whose entries follow as values, stored at 1, 2, 3...
    pub fn begin_array(&mut self) -> Result<()> {
        self.step(|b| b.begin(true))
    }

    /// Closes the innermost open table (giving it `metatable`): it becomes the value just pushed.
    pub fn end(&mut self, metatable: Option<&Table>) -> Result<()> {
        self.step(|b| {
            let Some(open) = b.open.last() else {
                return Err(Error::runtime("build_value: no table is open"));
            };
            if b.top != open.table {
                return Err(Error::runtime("build_value: an object's last key has no value"));
            }
            b.unchanged()?;
            if let Some(metatable) = metatable {
                b.reserve()?;
                unsafe {
                    b.lua.push_ref(&metatable.0);
                    ffi::lua_setmetatable(b.state, -2);
                }
            }
            b.open.pop();
            // The table was counted on the stack when it was opened.
            b.store()
        })
    }

    /// Runs one public step; any error stops the builder.
    #[inline(always)]
    fn step(&mut self, step: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let result = if self.broken {
            Err(Error::runtime("build_value: the builder stopped at an earlier error"))
        } else {
            step(self)
        };
        self.broken |= result.is_err();
        result
    }

    /// Before a raw set into an open table, named by its stack index, or a change to the value on top: the stack
    /// must be as the builder left it. The same thread and call frame (`build` may call Lua, and a Rust callback
    /// there could use the builder, where the same index names another slot), and the same top: a nested build
    /// can only pop what this builder pushed (its stack guard, its value), so the top this builder counted is then
    /// above the real one for good.
    fn unchanged(&self) -> Result<()> {
        if !unsafe { stack_as_counted(self.lua, self.state, self.depth, self.top) } {
            return Err(Error::runtime("build_value: the Lua stack was changed under the builder"));
        }
        Ok(())
    }

    /// Whether an allocation for a table of `entries` (or not for a table: 0) must run in a protected call: when
    /// a memory limit is set (asked every time: `build` may set one), or the table is very large.
    #[inline(always)]
    fn protect(&self, entries: c_int) -> bool {
        entries >= LARGE_TABLE || unsafe { !self.lua.unlikely_memory_error() }
    }

    #[inline(always)]
    fn push(&mut self, push: impl FnOnce(*mut ffi::lua_State)) -> Result<()> {
        self.reserve()?;
        push(self.state);
        self.pushed()
    }

    fn begin(&mut self, array: bool) -> Result<()> {
        if self.open.len() >= MAX_DEPTH {
            return Err(Error::runtime(format!("build_value: more than {MAX_DEPTH} tables open")));
        }
        let room = if self.open.is_empty() { OUTER_ROOM } else { FIRST_ROOM };
        let (narr, nrec) = if array { (room, 0) } else { (0, room) };
        self.reserve()?;
        unsafe { push_table(self.state, narr, nrec, self.protect(0))? };
        self.top += 1;
        self.open.push(Open {
            array,
            table: self.top,
            stored: 0,
        });
        Ok(())
    }

    /// Room for one more value on the stack, once the stack is as the builder left it: checked before every push,
    /// as a push into another call frame (a Rust callback of a Lua call made during the build) would land where the
    /// room counted here does not hold.
    fn reserve(&mut self) -> Result<()> {
        self.unchanged()?;
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
        let state = self.state;
        let Some(open) = self.open.last() else {
            if self.top > self.base + 1 {
                return Err(Error::runtime("build_value: exactly one value must be built"));
            }
            return Ok(());
        };
        let (array, table, stored) = (open.array, open.table, open.stored);
        if !array && self.top != table + 2 {
            return Ok(());
        }
        // The stack was checked before the value just pushed (`reserve`) or the table just closed (`end`), and
        // nothing else has run since.
        let protect = self.protect(stored);
        unsafe {
            if array {
                let Some(index) = stored.checked_add(1) else {
                    return Err(Error::runtime("build_value: too many array values"));
                };
                if protect {
                    ffi::lua_pushvalue(state, table);
                    ffi::lua_insert(state, -2);
                    protect_lua!(state, 2, 0, |state| ffi::lua_rawseti(state, -2, index.into()))?;
                } else {
                    ffi::lua_rawseti(state, table, index.into());
                }
                self.top -= 1;
            } else {
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
        if let Some(open) = self.open.last_mut() {
            open.stored = stored.saturating_add(1);
        }
        Ok(())
    }
}
