//! Tables read through views of the Lua stack, with no reference made per key or value (luka's patch 5, see
//! `PATCHES.md`), and the values a coroutine gave back read the same way ([`Returns`], patch 6).
//!
//! [`Table::for_each`] hands each key and value over as a [`Value`]: every string and nested table becomes a
//! reference (made in the auxiliary thread, dropped after). Here the table being read stays on the stack, and each
//! entry is looked at where `lua_rawiter` pushed it, until the closure looking at it returns: scalars by value,
//! strings as borrowed bytes, nested tables as views of their stack slot. Reading runs no Lua code (no metamethod)
//! and allocates nothing in Lua but stack room (`lua_checkstack`, 32 slots at a time; under a memory limit
//! that can fail, as a stack error).

use std::cell::Cell;
use std::ffi::CStr;
use std::os::raw::{c_int, c_void};

use crate::error::{Error, Result};
use crate::state::{Lua, RawLua};
use crate::table::Table;
use crate::traits::FromLuaMulti;
use crate::types::LightUserData;
use crate::util::{check_stack, stack_as_counted, StackGuard};

/// A value as it sits on the Lua stack, for as long as the closure it was handed to runs.
#[derive(Debug)]
pub enum ValueView<'a> {
    Nil,
    Boolean(bool),
    LightUserData(LightUserData),
    Number(f64),
    /// Luau's 64-bit integer type.
    Integer(i64),
    /// A string's bytes, borrowed from Lua.
    String(&'a [u8]),
    Table(TableView<'a>),
    /// A value of any other type, by its type's name in Luau (`function`, `userdata`, `thread`, `vector`,
    /// `buffer`...).
    Other(&'static str),
}

/// A table on the Lua stack, read by [`Table::read`] (or handed over by [`Returns::view`]).
pub struct TableView<'a> {
    reader: &'a Reader<'a>,
    /// The table's stack index.
    slot: c_int,
    /// The table's address (`lua_topointer`), which names it in the positions of its entries.
    pointer: *const c_void,
}

/// One entry of a table, where [`TableView::for_each_entry`] pushed it.
#[derive(Debug)]
pub struct EntryView<'a> {
    pub key: ValueView<'a>,
    pub value: ValueView<'a>,
    /// Where the entry is in its table, to look at its value again with [`TableView::value_at`].
    pub position: Position,
}

/// Where an entry is in its table: its slot, meaningful within the read that gave it while the table is not changed.
/// [`TableView::value_at`] refuses a position of another table or of an empty slot; a slot refilled after a change to
/// the table gives the entry now there, and a position kept past its read may name a table made since at the same
/// address (wrong values, never a read of memory that is not a table's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    table: *const c_void,
    at: c_int,
}

/// The stack as the reader counts it. Every step checks that the stack is still as the reader left it (the same
/// thread, call frame and top): a closure may use the `Lua` otherwise, and a Rust callback of a Lua call it makes
/// runs in another frame, where the same stack index names another slot.
struct Reader<'a> {
    lua: &'a RawLua,
    state: *mut ffi::lua_State,
    depth: c_int,
    top: Cell<c_int>,
    /// The top up to which the stack is known to have room.
    room: Cell<c_int>,
}

/// Slots checked for at a time (each entry looked at takes two).
const ROOM: c_int = 32;

impl Table {
    /// Reads this table through views of the Lua stack (see [`TableView`]).
    pub fn read<R>(&self, read: impl FnOnce(TableView<'_>) -> R) -> Result<R> {
        let lua = self.0.lua.lock();
        let state = lua.state();
        unsafe {
            let _sg = StackGuard::new(state);
            check_stack(state, 1)?;
            lua.push_ref(&self.0);
            let reader = Reader::at_top(&lua, state);
            Ok(read(reader.table(reader.top.get())))
        }
    }
}

/// The values a coroutine gave back, where they are on the Lua stack, as [`crate::Thread::resume_read`] hands them
/// over (luka's patch 6): each looked at as a [`ValueView`], or all made into values as [`crate::Thread::resume`]
/// makes them.
pub struct Returns<'a> {
    reader: Reader<'a>,
    /// The stack index of the first value.
    first: c_int,
    count: c_int,
}

impl<'a> Returns<'a> {
    /// The `count` values at the top of `state`'s stack, which is `lua`'s current one.
    pub(crate) unsafe fn new(lua: &'a RawLua, state: *mut ffi::lua_State, count: c_int) -> Self {
        let reader = Reader::at_top(lua, state);
        let first = reader.top.get() - count + 1;
        Returns {
            reader,
            first,
            count,
        }
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A view of value `index` (from 0); [`ValueView::Nil`] past the last, as a missing value reads in Lua.
    pub fn view(&self, index: usize) -> Result<ValueView<'_>> {
        self.reader.unchanged()?;
        Ok(match c_int::try_from(index) {
            Ok(index) if index < self.count => unsafe { self.reader.view(self.first + index) },
            _ => ValueView::Nil,
        })
    }

    /// All the values, made as [`crate::Thread::resume`] makes them.
    pub fn into_values<R: FromLuaMulti>(self) -> Result<R> {
        self.reader.unchanged()?;
        unsafe { R::from_stack_multi(self.count, self.reader.lua) }
    }
}

impl std::fmt::Debug for TableView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableView").field("slot", &self.slot).finish()
    }
}

impl<'a> TableView<'a> {
    /// Each entry, in the table's own order, until `each` returns an error (which is then the inner result).
    pub fn for_each_entry<E>(
        &self,
        mut each: impl FnMut(EntryView<'_>) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<(), E>> {
        let mut at = 0;
        loop {
            let Some(next) = self.push_entry(at)? else {
                return Ok(Ok(()));
            };
            let result = each(self.entry(next - 1));
            self.pop_entry()?;
            if result.is_err() {
                return Ok(result);
            }
            at = next;
        }
    }

    /// The value of the entry at `position` (given by [`TableView::for_each_entry`] for this table) again.
    pub fn value_at<R>(&self, position: Position, look: impl FnOnce(ValueView<'_>) -> R) -> Result<R> {
        if position.table != self.pointer {
            return Err(Error::runtime("TableView::value_at: a position in another table"));
        }
        let found = self.push_entry(position.at)?;
        if found != Some(position.at + 1) {
            if found.is_some() {
                self.pop_entry()?;
            }
            return Err(Error::runtime("TableView::value_at: the table was changed"));
        }
        let result = look(unsafe { self.reader.view(self.reader.top.get()) });
        self.pop_entry()?;
        Ok(result)
    }

    /// The address of the table's metatable (null when it has none), to compare with [`Table::to_pointer`].
    pub fn metatable_pointer(&self) -> Result<*const c_void> {
        self.reader.unchanged()?;
        Ok(unsafe { ffi::lua_getmetatablepointer(self.reader.state, self.slot) })
    }

    /// The table's address, as [`Table::to_pointer`] gives it.
    pub fn to_pointer(&self) -> *const c_void {
        self.pointer
    }

    /// The `Lua` the table belongs to (for its app data, say).
    pub fn lua(&self) -> Lua {
        self.reader.lua.weak().upgrade()
    }

    /// Pushes the first entry at or after place `at` (`lua_rawiter`'s iteration index) and gives the place after
    /// it, or `None` (nothing pushed) past the last entry.
    fn push_entry(&self, at: c_int) -> Result<Option<c_int>> {
        let reader = self.reader;
        reader.unchanged()?;
        unsafe {
            reader.reserve(2)?;
            let next = ffi::lua_rawiter(reader.state, self.slot, at);
            if next < 0 {
                return Ok(None);
            }
            reader.top.set(reader.top.get() + 2);
            Ok(Some(next))
        }
    }

    /// Views of the entry just pushed, which is at place `at`.
    fn entry(&self, at: c_int) -> EntryView<'_> {
        let top = self.reader.top.get();
        EntryView {
            key: unsafe { self.reader.view(top - 1) },
            value: unsafe { self.reader.view(top) },
            position: Position {
                table: self.pointer,
                at,
            },
        }
    }

    fn pop_entry(&self) -> Result<()> {
        let reader = self.reader;
        reader.unchanged()?;
        unsafe { ffi::lua_pop(reader.state, 2) };
        reader.top.set(reader.top.get() - 2);
        Ok(())
    }
}

impl<'a> Reader<'a> {
    /// A reader of `state`'s stack (`lua`'s current one) as it is now, with room checked up to its top.
    unsafe fn at_top(lua: &'a RawLua, state: *mut ffi::lua_State) -> Self {
        let top = ffi::lua_gettop(state);
        Reader {
            lua,
            state,
            depth: ffi::lua_stackdepth(state),
            top: Cell::new(top),
            room: Cell::new(top),
        }
    }

    fn unchanged(&self) -> Result<()> {
        if !unsafe { stack_as_counted(self.lua, self.state, self.depth, self.top.get()) } {
            return Err(Error::runtime(
                "Table::read or Thread::resume_read: the Lua stack was changed under the reader",
            ));
        }
        Ok(())
    }

    /// Room on the stack for `slots` more values.
    fn reserve(&self, slots: c_int) -> Result<()> {
        let top = self.top.get();
        if top + slots > self.room.get() {
            unsafe { check_stack(self.state, ROOM)? };
            self.room.set(top + ROOM);
        }
        Ok(())
    }

    fn table(&self, slot: c_int) -> TableView<'_> {
        TableView {
            reader: self,
            slot,
            pointer: unsafe { ffi::lua_topointer(self.state, slot) },
        }
    }

    /// A view of the value at stack index `index`, valid while it stays there.
    unsafe fn view<'v>(&'v self, index: c_int) -> ValueView<'v> {
        let state = self.state;
        match ffi::lua_type(state, index) {
            ffi::LUA_TNIL => ValueView::Nil,
            ffi::LUA_TBOOLEAN => ValueView::Boolean(ffi::lua_toboolean(state, index) != 0),
            ffi::LUA_TLIGHTUSERDATA => ValueView::LightUserData(LightUserData(ffi::lua_touserdata(state, index))),
            ffi::LUA_TNUMBER => ValueView::Number(ffi::lua_tonumber(state, index)),
            ffi::LUA_TINTEGER => ValueView::Integer(ffi::lua_tointeger64(state, index, std::ptr::null_mut())),
            ffi::LUA_TSTRING => {
                let mut len = 0;
                let data = ffi::lua_tolstring(state, index, &mut len);
                ValueView::String(std::slice::from_raw_parts(data as *const u8, len))
            }
            ffi::LUA_TTABLE => ValueView::Table(self.table(index)),
            other => ValueView::Other(
                CStr::from_ptr(ffi::lua_typename(state, other))
                    .to_str()
                    .unwrap_or("value"),
            ),
        }
    }
}
