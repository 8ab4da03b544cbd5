//! Standard-library functions that Luau runs as one long C call, out of reach of the CPU interrupt, replaced by
//! bounded versions: a handler must not be able to hold its VM for minutes with a few megabytes.
//!
//! - `string.find` with a plain needle (or a pattern without Luau's special characters, which `)` and `]` are not)
//!   and `string.split`: Luau compares the needle at every position (quadratic on `("a"):rep(8e6)` /
//!   `("a"):rep(4e6) .. "b"`); here they use `memchr::memmem`, linear in the haystack.
//! - `table.sort` without a comparator compares long strings with one `memcmp` per step, no interrupt between, and
//!   with a C function as comparator (`coroutine.isyieldable`) calls it millions of times without one; here it
//!   always sorts with a Lua comparator (one of its own, or one that calls the handler's), so the interrupt runs at
//!   every comparison. `table.foreach` and `table.foreachi` call theirs through Lua too.
//! - `string.split` makes and charges its pieces one at a time (not all of them first, outside the memory limit).
//! - `table.move` over a huge sparse range: Luau's own fix is behind a flag, turned on here.

use std::sync::Arc;

use mlua::{Lua, LuaString, Result, Table, Value};

use crate::lua::state::VmShared;

const WRAPPERS: &str = r#"
local string, table, find_plain, split = ...
local find, sort = string.find, table.sort
-- Exactly Luau's own (`lstrlib.cpp`, SPECIALS): a pattern without any of these is searched for as plain text by
-- Luau's quadratic search, `)` and `]` included.
local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]"
string.find = function(s, pattern, init, plain)
  if type(s) == "string" and type(pattern) == "string" and (plain or not find(pattern, SPECIALS)) then
    return find_plain(s, pattern, init)
  end
  return find(s, pattern, init, plain)
end
string.split = split
local function less(a, b) return a < b end
-- `original(t, f)` with the handler's `f` called from a Lua function, where the interrupt runs; anything but a
-- function is left to the original's own argument check.
local function through_lua(original)
  return function(t, f)
    if type(f) ~= "function" then return original(t, f) end
    return original(t, function(a, b) return f(a, b) end)
  end
end
local sort_through_lua = through_lua(sort)
table.sort = function(t, comp)
  if comp == nil then return sort(t, less) end
  return sort_through_lua(t, comp)
end
if table.foreach then table.foreach = through_lua(table.foreach) end
if table.foreachi then table.foreachi = through_lua(table.foreachi) end
"#;

/// `shared` is the VM's: `string.split` charges the parts it makes to the running request's CPU budget.
pub fn install(lua: &Lua, shared: &Arc<VmShared>) -> Result<()> {
    if Lua::set_fflag("LuauTableMoveTimeoutFix", true).is_err() {
        tracing::warn!("this Luau has no LuauTableMoveTimeoutFix flag; table.move over huge ranges is unbounded");
    }
    let globals = lua.globals();
    let string: Table = globals.get("string")?;
    let table: Table = globals.get("table")?;
    let find_plain = lua.create_function(|_, (s, needle, init): (LuaString, LuaString, Option<i64>)| {
        // Two results when found, `nil` otherwise, as string.find gives them.
        Ok(
            match find_plain(&s.as_bytes_ref(), &needle.as_bytes_ref(), init.unwrap_or(1)) {
                Some((start, end)) => {
                    mlua::MultiValue::from_iter([Value::Number(start as f64), Value::Number(end as f64)])
                }
                None => mlua::MultiValue::from_iter([Value::Nil]),
            },
        )
    })?;
    let shared = Arc::clone(shared);
    let split = lua.create_function(move |lua, (s, separator): (LuaString, Option<LuaString>)| {
        let haystack = s.as_bytes_ref();
        let separator = separator.map_or_else(|| b",".to_vec(), |sep| sep.as_bytes_ref().to_vec());
        let parts = lua.create_table()?;
        for (i, part) in split(&haystack, &separator).enumerate() {
            // Each part is hashed and interned: parts made to collide in Luau's string hash cost more each.
            shared.charge_step(i + 1)?;
            parts.raw_set(i + 1, lua.create_string(part)?)?;
        }
        Ok(Value::Table(parts))
    })?;
    lua.load(WRAPPERS)
        .set_name("=luka.bounded")
        .call::<()>((string, table, find_plain, split))
}

/// `string.find(s, needle, init, true)`: 1-based start and end of the first match at or after `init`.
fn find_plain(haystack: &[u8], needle: &[u8], init: i64) -> Option<(i64, i64)> {
    let len = haystack.len() as i64;
    let start = match init {
        i if i < 0 => (len + i + 1).max(1),
        0 => 1,
        i => i,
    };
    if start > len + 1 {
        return None;
    }
    let from = (start - 1) as usize;
    let at = memchr::memmem::find(&haystack[from..], needle)? as i64 + start;
    Some((at, at + needle.len() as i64 - 1))
}

/// `string.split(s, separator)`: the pieces between separators, one at a time; an empty separator splits into bytes.
fn split<'a>(haystack: &'a [u8], separator: &'a [u8]) -> Box<dyn Iterator<Item = &'a [u8]> + 'a> {
    if separator.is_empty() {
        return Box::new(haystack.chunks(1));
    }
    let mut rest = Some(0);
    let mut found = memchr::memmem::find_iter(haystack, separator);
    Box::new(std::iter::from_fn(move || {
        let start = rest?;
        match found.next() {
            Some(at) => {
                rest = Some(at + separator.len());
                Some(&haystack[start..at])
            }
            None => {
                rest = None;
                Some(&haystack[start..])
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_find_matches_lua() {
        assert_eq!(find_plain(b"hello world", b"o", 1), Some((5, 5)));
        assert_eq!(find_plain(b"hello world", b"o", 6), Some((8, 8)));
        assert_eq!(find_plain(b"hello world", b"o", -3), None);
        assert_eq!(find_plain(b"hello", b"", 3), Some((3, 2)));
        assert_eq!(find_plain(b"hello", b"x", 1), None);
        assert_eq!(find_plain(b"hello", b"lo", 99), None);
    }

    #[test]
    fn split_keeps_empty_pieces() {
        let pieces = |s, sep| split(s, sep).collect::<Vec<_>>();
        assert_eq!(pieces(b"a,,b,", b","), vec![&b"a"[..], b"", b"b", b""]);
        assert_eq!(pieces(b"ab", b""), vec![&b"a"[..], b"b"]);
        assert_eq!(pieces(b"", b","), vec![&b""[..]]);
        assert_eq!(pieces(b"a--b", b"--"), vec![&b"a"[..], b"b"]);
    }

    /// A split past the request's CPU budget stops inside the one Rust call, not after it.
    #[test]
    fn split_stops_when_the_budget_is_spent() {
        let lua = Lua::new();
        let shared = Arc::new(VmShared::default());
        install(&lua, &shared).unwrap();
        let request = crate::lua::state::tests_support::request();
        shared.enter(&request, std::ptr::null(), std::time::Duration::ZERO);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let split = lua.load("return #string.split(('a,'):rep(100))").eval::<i64>();
        shared.leave();
        assert!(
            split.is_err_and(|e| e.to_string().contains("CPU")),
            "a split past the budget must fail"
        );
        assert_eq!(lua.load("return #string.split('a,b')").eval::<i64>().unwrap(), 2);
    }

    #[test]
    fn wrapped_functions_behave_like_the_originals() {
        let lua = Lua::new();
        install(&lua, &Arc::default()).unwrap();
        let (a, b, c, d): (i64, Option<i64>, String, i64) = lua
            .load(
                r#"local t = {3, 1, 2} table.sort(t)
                local s, e = ("a.b"):find(".", 1, true)
                return s, ("x"):find("%a+z"), table.concat(string.split("a,b", ","), "|") .. table.concat(t), e"#,
            )
            .eval()
            .unwrap();
        assert_eq!((a, b, c.as_str(), d), (2, None, "a|b123", 2));
    }
}
