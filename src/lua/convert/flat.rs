//! The JSON text of a small flat table (string keys; booleans, numbers, strings and `json.null` as values), as
//! most handlers answer (`{ partition = r.partition, offset = r.offset }`), written without the general encoder's
//! per-table work (entries collected with `Cow` keys, serde's map serializer): about a fifth fewer instructions
//! for `{ ok = true }`. Any other table, or anything the general encoder ([`super::encode_within`]) would refuse,
//! is left to it; where this one answers, the text and the budget spent are the general encoder's.

use mlua::{Table, TableView, ValueView};
use smallvec::SmallVec;

use super::{Budget, NODE_COST, Scalar, text_cost};

/// Entries a table may have to be written here.
const MAX_ENTRIES: usize = 8;

/// Bytes a key or a string value may have to be written here.
const MAX_STRING: usize = 1024;

/// One entry, kept in the table's text: its key's raw bytes (to sort by, as the general encoder does) and its
/// `"key":value` text.
struct Entry {
    key: (usize, usize),
    text: (usize, usize),
}

/// `None`: not a flat table (or not one this writes), for the general encoder. The cost is spent from `budget` at
/// once, as one step of its clock (the general encoder takes a step per value): the work between two steps stays
/// small, at most [`MAX_ENTRIES`] entries of [`MAX_STRING`] bytes.
pub(super) fn encode(table: &Table, budget: &mut Budget) -> Option<Result<Vec<u8>, String>> {
    table.read(|view| encode_view(&view, budget)).ok()?
}

/// [`encode`] for a table on the stack.
pub(super) fn encode_view(view: &TableView<'_>, budget: &mut Budget) -> Option<Result<Vec<u8>, String>> {
    let mut text: SmallVec<[u8; 256]> = SmallVec::new();
    let mut entries: SmallVec<[Entry; MAX_ENTRIES]> = SmallVec::new();
    let mut cost = NODE_COST;
    let read = (|| {
        // A metatable may be the array marker: the general encoder tells.
        if !view.metatable_pointer().ok()?.is_null() {
            return None;
        }
        let read = view.for_each_entry(|entry| {
            let (ValueView::String(key), true) = (entry.key, entries.len() < MAX_ENTRIES) else {
                return Err(());
            };
            if key.len() > MAX_STRING {
                return Err(());
            }
            let key_start = text.len();
            text.extend_from_slice(key);
            let key_end = text.len();
            cost += text_cost(key) + 3 * NODE_COST;
            let written = write_str(&mut text, std::str::from_utf8(key).map_err(|_| ())?);
            text.push(b':');
            write_value(&mut text, &entry.value, &mut cost)?;
            entries.push(Entry {
                key: (key_start, key_end),
                text: (written, text.len()),
            });
            Ok(())
        });
        match read {
            Ok(Ok(())) if !entries.is_empty() => Some(()),
            _ => None,
        }
    })();
    read?;
    if let Err(e) = budget.spend(cost) {
        return Some(Err(e));
    }
    entries.sort_unstable_by(|a, b| text[a.key.0..a.key.1].cmp(&text[b.key.0..b.key.1]));
    let mut json = Vec::with_capacity(text.len() + 2);
    json.push(b'{');
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(&text[entry.text.0..entry.text.1]);
    }
    json.push(b'}');
    Some(Ok(json))
}

/// Writes `value` as JSON after its key, adding what it costs; `Err` for a value left to the general encoder.
/// Scalars are written by the general encoder's own [`Scalar`] rules (whole numbers as integers, `json.null`), into
/// a serde_json serializer on the same text; one it refuses (infinity, a function) is left to it.
fn write_value(text: &mut SmallVec<[u8; 256]>, value: &ValueView<'_>, cost: &mut usize) -> Result<(), ()> {
    match *value {
        // A long string is left to the general encoder, which charges it before copying it.
        ValueView::String(bytes) if bytes.len() <= MAX_STRING => {
            *cost += text_cost(bytes);
            write_str(text, std::str::from_utf8(bytes).map_err(|_| ())?);
        }
        ValueView::String(_) | ValueView::Table(_) => return Err(()),
        ref scalar => Scalar::of(scalar)
            .serialize(&mut serde_json::Serializer::new(&mut *text))
            .map_err(|_| ())?,
    }
    Ok(())
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it; gives where it starts.
fn write_str(text: &mut SmallVec<[u8; 256]>, s: &str) -> usize {
    let start = text.len();
    // serde_json escapes only control characters, the quote and the backslash; a string without any is written as
    // it is.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        text.push(b'"');
        text.extend_from_slice(s.as_bytes());
        text.push(b'"');
    } else {
        serde_json::to_writer(&mut *text, s).expect("writing to memory cannot fail");
    }
    start
}

#[cfg(test)]
mod tests {
    use mlua::{Lua, Value};

    use super::super::{Budget, encode_general};

    /// Where the flat writer answers, its text and the budget it spent are the general encoder's; the tables it
    /// leaves to the general one are the ones it must.
    #[test]
    fn the_flat_writer_gives_the_general_encoders_text_or_leaves_the_table_to_it() {
        let lua = Lua::new();
        lua.globals().set("null", Value::NULL).unwrap();
        let written = [
            r#"{ partition = 0, offset = 41 }"#,
            r#"{ ok = true, no = false, none = null }"#,
            r#"{ id = 12345, price = 23.23, tiny = 1e-7, big = 2^63, neg = -0.0, huge = -2^62 }"#,
            r#"{ ["é"] = "ü\n\t\"\\\0\127", [""] = "", ["\u{1F600}"] = "</script>" }"#,
            r#"{ del = "\127", ["ünï"] = "c\u{f6}de", quote = "\"", slash = "a/b\\" }"#,
            r#"{ b = 1, a = 2, ["A"] = 3, ["a b"] = 4, aa = 5, ["_"] = 6, ["~"] = 7, ["0"] = 8 }"#,
        ];
        for source in written {
            let value: Value = lua.load(format!("return {source}")).eval().unwrap();
            let Value::Table(table) = &value else { unreachable!() };
            let mut flat_budget = Budget::unmetered();
            let flat = super::encode(table, &mut flat_budget).expect("written flat").unwrap();
            let mut general_budget = Budget::unmetered();
            let general = encode_general(&value, &mut general_budget).unwrap();
            assert_eq!(
                String::from_utf8(flat).unwrap(),
                String::from_utf8(general).unwrap(),
                "{source}"
            );
            assert_eq!(flat_budget.left, general_budget.left, "{source}");
        }
        let long = "x".repeat(super::MAX_STRING + 1);
        lua.globals().set("long", long).unwrap();
        let left = [
            "{}",
            "{ 1, 2 }",
            "{ [1] = 1, a = 2 }",
            "{ a = {} }",
            "{ a = 1/0 }",
            "{ a = print }",
            r#"{ a = "\xff" }"#,
            r#"{ ["\xff"] = 1 }"#,
            "{ a = long }",
            "{ [long] = 1 }",
            "{ a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8, i = 9 }",
            "setmetatable({ a = 1 }, {})",
        ];
        for source in left {
            let table: mlua::Table = lua.load(format!("return {source}")).eval().unwrap();
            assert!(super::encode(&table, &mut Budget::unmetered()).is_none(), "{source}");
        }
    }
}
