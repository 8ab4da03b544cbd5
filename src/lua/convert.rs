//! Lua values to JSON and back.
//!
//! Luau numbers are all doubles, so whole numbers (below 2^63 in size) become JSON integers (`1`, not `1.0`). A
//! table is a JSON array when its keys are exactly 1..n, or when it carries the array marker that `json.decode`
//! puts on arrays (so `[]` survives a round trip); any other table is an object, whose keys must be strings.
//! `json.null` (a null light userdata) is JSON `null`.
//!
//! Conversion runs in Rust, outside the Lua memory limit, so it has its own [`Budget`]: a table that holds one
//! sub-table many times (`t = {t, t}`, forty times over) would otherwise expand to terabytes. It reads tables raw and
//! never calls a metamethod: handler code must not run while the memory limit is lifted.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell, RefCell};
use std::sync::Arc;

use mlua::{Lua, Position, Table, TableView, Value, ValueBuilder, ValueView};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};
use smallvec::SmallVec;

use super::state::VmShared;

mod flat;

/// Deeper nesting than this is almost surely a table that contains itself.
const MAX_DEPTH: usize = 128;

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

/// What `bytes` cost written as a JSON string, at most: their length, and what escaping adds (a control character
/// becomes `\u00XX`, or two bytes for the five with short escapes; a quote or backslash two bytes). Charged as the
/// input's length, a megabyte of control characters took a megabyte of the budget and became six of text.
pub(super) fn text_cost(bytes: &[u8]) -> usize {
    let (mut controls, mut quoted) = (0, 0);
    for &b in bytes {
        controls += usize::from(b < 0x20);
        quoted += usize::from(b == b'"' || b == b'\\');
    }
    bytes.len() + 5 * controls + quoted
}

/// Unmetered (size-bounded only): for conversions outside a request.
pub fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    to_json_within(value, &mut Budget::unmetered())
}

/// Like [`to_json`], spending from a budget shared with other conversions (the messages of one produce call).
pub fn to_json_within(value: &Value, budget: &mut Budget) -> Result<serde_json::Value, String> {
    let budget = RefCell::new(budget);
    serde_json::to_value(LuaJson { value, budget: &budget }).map_err(|e| e.to_string())
}

/// The compact JSON text of `value`, written straight from the Lua values (no intermediate tree); object keys
/// sorted, so the same table always gives the same text.
pub fn encode_within(value: &Value, budget: &mut Budget) -> Result<Vec<u8>, String> {
    if let Value::Table(table) = value
        && let Some(text) = flat::encode(table, budget)
    {
        return text;
    }
    encode_general(value, budget)
}

/// [`encode_within`] for a table where it is on the Lua stack (a handler's answer, read where the coroutine gave it
/// back): no reference is made for it.
pub fn encode_view(table: TableView<'_>, budget: &mut Budget) -> Result<Vec<u8>, String> {
    if let Some(text) = flat::encode_view(&table, budget) {
        return text;
    }
    let budget = RefCell::new(budget);
    let view = ValueView::Table(table);
    let json = ViewJson {
        view: &view,
        depth: 0,
        budget: &budget,
    };
    serde_json::to_vec(&json).map_err(|e| e.to_string())
}

/// [`encode_within`] for any value, through serde.
fn encode_general(value: &Value, budget: &mut Budget) -> Result<Vec<u8>, String> {
    let budget = RefCell::new(budget);
    serde_json::to_vec(&LuaJson { value, budget: &budget }).map_err(|e| e.to_string())
}

/// A Lua value as serde sees it: one traversal that gives JSON text or a `serde_json::Value`. Tables are read
/// through views of the Lua stack ([`Table::read`]): no mlua reference is made for their keys, strings and nested
/// tables.
struct LuaJson<'a, 'b> {
    value: &'a Value,
    budget: &'a RefCell<&'b mut Budget>,
}

impl Serialize for LuaJson<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let json = |view: &ValueView<'_>, serializer: S| {
            ViewJson {
                view,
                depth: 0,
                budget: self.budget,
            }
            .serialize(serializer)
        };
        match self.value {
            Value::Nil => json(&ValueView::Nil, serializer),
            Value::Boolean(b) => json(&ValueView::Boolean(*b), serializer),
            Value::LightUserData(p) => json(&ValueView::LightUserData(*p), serializer),
            // A whole double (mlua gives those as integers) or Luau's 64-bit integer type.
            Value::Integer(i) => json(&ValueView::Integer(*i), serializer),
            Value::Number(n) => json(&ValueView::Number(*n), serializer),
            Value::String(s) => json(&ValueView::String(&s.as_bytes_ref()), serializer),
            Value::Table(table) => table
                .read(|view| json(&ValueView::Table(view), serializer))
                .map_err(S::Error::custom)?,
            other => Err(S::Error::custom(format!(
                "a {} cannot be written as JSON",
                other.type_name()
            ))),
        }
    }
}

/// A value on the Lua stack as serde sees it, `depth` tables down.
struct ViewJson<'a, 'v, 'b> {
    view: &'a ValueView<'v>,
    depth: usize,
    budget: &'a RefCell<&'b mut Budget>,
}

impl<'b> ViewJson<'_, '_, 'b> {
    fn spend<E: serde::ser::Error>(&self, bytes: usize) -> Result<(), E> {
        self.budget.borrow_mut().spend(bytes).map_err(E::custom)
    }

    /// Before a value `depth` tables down is written: the depth limit, and the value's cost.
    fn enter<E: serde::ser::Error>(&self, depth: usize) -> Result<(), E> {
        if depth > MAX_DEPTH {
            return Err(E::custom(format!(
                "nested deeper than {MAX_DEPTH} levels (does a table contain itself?)"
            )));
        }
        self.spend(NODE_COST)
    }

    fn child<'c, 'w>(&'c self, view: &'c ValueView<'w>) -> ViewJson<'c, 'w, 'b> {
        ViewJson {
            view,
            depth: self.depth + 1,
            budget: self.budget,
        }
    }
}

impl Serialize for ViewJson<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.enter(self.depth)?;
        match self.view {
            ValueView::String(bytes) => {
                self.spend(text_cost(bytes))?;
                let text = std::str::from_utf8(bytes).map_err(|_| S::Error::custom("a string is not valid UTF-8"))?;
                serializer.serialize_str(text)
            }
            ValueView::Table(table) => self.table(table, serializer),
            scalar => Scalar::of(scalar).serialize(serializer),
        }
    }
}

/// A whole number as the integer it is (mlua's rule: any double that converts to an `i64` and back exactly).
fn whole(n: f64) -> Option<i64> {
    // 2^63: the first double past `i64::MAX`.
    const I64_END: f64 = 9_223_372_036_854_775_808.0;
    (n.fract() == 0.0 && (-I64_END..I64_END).contains(&n)).then_some(n as i64)
}

/// The name of a value's type, as `type()` says it in Lua (Luau's 64-bit integers named as numbers).
fn view_type(view: &ValueView<'_>) -> &'static str {
    match view {
        ValueView::Nil => "nil",
        ValueView::Boolean(_) => "boolean",
        ValueView::LightUserData(_) => "lightuserdata",
        ValueView::Number(_) | ValueView::Integer(_) => "number",
        ValueView::String(_) => "string",
        ValueView::Table(_) => "table",
        ValueView::Other(name) => name,
    }
}

/// A table's key as the encoder sorts it.
enum Key {
    /// A whole number: an array index when the table is a sequence, else an object key written as text.
    Whole(i64),
    /// Object key text, a range of the table's text.
    Text(Range),
    /// A key that cannot be an object key (by its type's name).
    Other(&'static str),
}

/// A table's value as the encoder keeps it between reading and writing: scalars and strings (in the table's
/// text) copied, a nested table by where it is, to be read when it is written.
#[derive(Clone, Copy)]
enum Item {
    View(Scalar),
    Text(Range),
    Table(Position),
}

/// A scalar, or a value that cannot be JSON (by its type's name).
#[derive(Clone, Copy)]
enum Scalar {
    Null,
    Boolean(bool),
    Integer(i64),
    Number(f64),
    Other(&'static str),
}

/// Where a key or a string is in the table's text.
#[derive(Clone, Copy)]
struct Range(u32, u32);

/// The keys and strings of one table, copied as it is read: their views of Lua's strings last only while their
/// entry is on the stack.
#[derive(Default)]
struct TableText {
    bytes: SmallVec<[u8; TABLE_TEXT]>,
}

impl TableText {
    fn add<E: serde::ser::Error>(&mut self, bytes: &[u8]) -> Result<Range, E> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        match (u32::try_from(start), u32::try_from(self.bytes.len())) {
            (Ok(start), Ok(end)) => Ok(Range(start, end)),
            _ => Err(E::custom("a table's keys and strings are too long")),
        }
    }

    /// The text as `&str` when it is all UTF-8: checked once for the whole table.
    fn checked(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// The text at `range`, or `None` where it is not UTF-8. A non-empty range of checked text is UTF-8 when it
    /// begins and ends between characters (a piece that is not UTF-8 alone cannot do both).
    fn get<'t>(&'t self, checked: Option<&'t str>, range: Range) -> Option<&'t str> {
        let (start, end) = (range.0 as usize, range.1 as usize);
        if start == end {
            // Between two pieces that join into a character an empty string is not at a character's boundary.
            return Some("");
        }
        match checked {
            Some(text) => text.get(start..end),
            None => std::str::from_utf8(&self.bytes[start..end]).ok(),
        }
    }
}

impl ViewJson<'_, '_, '_> {
    fn table<S: Serializer>(&self, table: &TableView<'_>, serializer: S) -> Result<S::Ok, S::Error> {
        // Read once: keys, scalars and strings copied (and charged as they are), nested tables by position (read
        // again when written). A table decoded from a JSON array writes only its elements 1..n: its other entries
        // are counted, not copied.
        let marked = self.marked(table)?;
        let mut text = TableText::default();
        let mut entries: SmallVec<[(Key, Item); SMALL_TABLE]> = SmallVec::new();
        let mut dropped = 0;
        let read = table.for_each_entry(|entry| {
            // Charged as it is read: a table of millions of entries is stopped by the budget (and the clock) while
            // it is walked, not after.
            self.spend(2 * NODE_COST)?;
            let key = match entry.key {
                ValueView::Integer(i) => Some(Key::Whole(i)),
                // Past the range of `i64` a whole number's text is `i64`'s bound, as it always was here.
                ValueView::Number(n) if n.fract() == 0.0 => Some(Key::Whole(n as i64)),
                _ if marked => None,
                ValueView::String(bytes) => {
                    self.spend(text_cost(bytes))?;
                    Some(Key::Text(text.add(bytes)?))
                }
                ref other => Some(Key::Other(view_type(other))),
            };
            let Some(key) = key.filter(|key| !marked || matches!(key, Key::Whole(i) if *i >= 1)) else {
                dropped += 1;
                return Ok(());
            };
            let item = match entry.value {
                ValueView::String(bytes) => {
                    self.spend(text_cost(bytes))?;
                    Item::Text(text.add(bytes)?)
                }
                ValueView::Table(_) => Item::Table(entry.position),
                ref scalar => Item::View(Scalar::of(scalar)),
            };
            entries.push((key, item));
            Ok(())
        });
        read.map_err(S::Error::custom)??;
        let len = entries.len() + dropped;
        let checked = text.checked();
        let written = |item: &Item| ItemJson {
            item: *item,
            text: &text,
            checked,
            table,
            parent: self,
        };
        // An array when the keys are exactly 1..n, or when the table was decoded from a JSON array.
        let sequence = dropped == 0
            && len > 0
            && entries
                .iter()
                .all(|(key, _)| matches!(key, Key::Whole(i) if index(*i, len).is_some()));
        if sequence || marked {
            let mut items: SmallVec<[(usize, &Item); SMALL_TABLE]> = entries
                .iter()
                .filter_map(|(key, item)| match key {
                    Key::Whole(i) => index(*i, usize::MAX).map(|i| (i, item)),
                    _ => None,
                })
                .collect();
            items.sort_unstable_by_key(|(i, _)| *i);
            if !sequence {
                // A decoded array the handler changed: its elements 1..n up to the first hole, as Lua's `#` counts.
                let end = items.iter().enumerate().take_while(|(at, (i, _))| *i == at + 1).count();
                items.truncate(end);
            }
            let mut seq = serializer.serialize_seq(Some(items.len()))?;
            for (_, item) in items {
                seq.serialize_element(&written(item))?;
            }
            return seq.end();
        }
        let mut object: SmallVec<[(Cow<'_, str>, &Item); SMALL_TABLE]> = SmallVec::with_capacity(len);
        for (key, item) in &entries {
            let key = match key {
                Key::Text(range) => Cow::Borrowed(
                    text.get(checked, *range)
                        .ok_or_else(|| S::Error::custom("a key is not valid UTF-8"))?,
                ),
                Key::Whole(i) => {
                    let text = i.to_string();
                    self.spend(text.len())?;
                    Cow::Owned(text)
                }
                Key::Other(name) => {
                    return Err(S::Error::custom(format!(
                        "a table key of type {name} cannot be a JSON object key"
                    )));
                }
            };
            object.push((key, item));
        }
        object.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        // A number key and a string key with the same text (`[1]` and `["1"]`), or numbers beyond ±2^63 (written as
        // `i64`'s bounds), would be one key written twice, and which value a reader keeps depends on the reader.
        if let Some(pair) = object.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(S::Error::custom(format!(
                "two keys of one table are both the JSON key \"{}\" (a number key and a string key, or numbers \
                 beyond ±2^63)",
                pair[0].0
            )));
        }
        let mut map = serializer.serialize_map(Some(object.len()))?;
        for (key, item) in &object {
            map.serialize_entry(key, &written(item))?;
        }
        map.end()
    }

    /// Whether `table` carries the array marker, compared by address (a look-up by name would make a string).
    fn marked<E: serde::ser::Error>(&self, table: &TableView<'_>) -> Result<bool, E> {
        let metatable = table.metatable_pointer().map_err(E::custom)?;
        if metatable.is_null() {
            return Ok(false);
        }
        let lua = table.lua();
        Ok(lua
            .app_data_ref::<ArrayMarker>()
            .is_some_and(|marker| marker.0.to_pointer() == metatable))
    }
}

impl Scalar {
    fn of(view: &ValueView<'_>) -> Self {
        match view {
            ValueView::Nil => Scalar::Null,
            ValueView::LightUserData(p) if p.0.is_null() => Scalar::Null,
            ValueView::Boolean(b) => Scalar::Boolean(*b),
            ValueView::Integer(i) => Scalar::Integer(*i),
            ValueView::Number(n) => Scalar::Number(*n),
            other => Scalar::Other(view_type(other)),
        }
    }

    fn serialize<S: Serializer>(self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Null => serializer.serialize_unit(),
            Scalar::Boolean(b) => serializer.serialize_bool(b),
            Scalar::Integer(i) => serializer.serialize_i64(i),
            Scalar::Number(n) => match whole(n) {
                Some(i) => serializer.serialize_i64(i),
                None if n.is_finite() => serializer.serialize_f64(n),
                None => Err(S::Error::custom(format!("{n} is not a JSON number"))),
            },
            Scalar::Other(name) => Err(S::Error::custom(format!("a {name} cannot be written as JSON"))),
        }
    }
}

/// A table's value as serde sees it, from what [`ViewJson::table`] kept of it.
struct ItemJson<'a, 'v, 'b> {
    item: Item,
    text: &'a TableText,
    checked: Option<&'a str>,
    table: &'a TableView<'v>,
    parent: &'a ViewJson<'a, 'v, 'b>,
}

impl Serialize for ItemJson<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.item {
            // The nested table's own `ViewJson` enters its level.
            Item::Table(at) => {
                let written = self
                    .table
                    .value_at(at, |value| self.parent.child(&value).serialize(serializer));
                written.map_err(S::Error::custom)?
            }
            Item::Text(range) => {
                self.parent.enter(self.parent.depth + 1)?;
                let text = self
                    .text
                    .get(self.checked, range)
                    .ok_or_else(|| S::Error::custom("a string is not valid UTF-8"))?;
                serializer.serialize_str(text)
            }
            Item::View(scalar) => {
                self.parent.enter(self.parent.depth + 1)?;
                scalar.serialize(serializer)
            }
        }
    }
}

/// Entries of a table kept on the stack while it is written; larger tables spill to the heap.
const SMALL_TABLE: usize = 8;

/// Bytes of a table's keys and strings kept on the stack while it is written; more spill to the heap.
const TABLE_TEXT: usize = 256;

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
pub(crate) fn cut(text: &str, max: usize) -> Cow<'_, str> {
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

/// `key` as an array index from 1 to `len`.
fn index(key: i64, len: usize) -> Option<usize> {
    usize::try_from(key).ok().filter(|i| (1..=len).contains(i))
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
    let shared = Decoding {
        lua,
        marker: OnceCell::new(),
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
    lua: &'a Lua,
    /// The metatable that marks a table as a JSON array, looked up at the first array: many bodies have none, and
    /// the look-up in the VM's app data cost about 140 instructions per decode (1.4% of compare's order).
    marker: OnceCell<Table>,
    /// A Lua error met while building (kept, since serde's error type can only carry text).
    failure: Cell<Option<mlua::Error>>,
    /// The running request's CPU clock.
    clock: Option<&'a VmShared>,
    /// Values decoded so far.
    values: Cell<usize>,
}

impl Decoding<'_> {
    fn marker(&self) -> mlua::Result<&Table> {
        if self.marker.get().is_none() {
            let _ = self.marker.set(array_marker(self.lua)?);
        }
        Ok(self.marker.get().expect("set above"))
    }
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

    fn lua<T, E: serde::de::Error>(&self, result: mlua::Result<T>) -> Result<T, E> {
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
        let shared = self.shared;
        let marker = self.lua(shared.marker())?;
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

    /// A table encoded where it is on the stack (a handler's answer) gives the text, or the error, and spends the
    /// budget that encoding it as a value does.
    #[test]
    fn a_table_read_where_it_is_encodes_as_its_value_does() {
        let lua = Lua::new();
        for source in [
            "{ ok = true }",
            "{ a = { 1, 2 }, b = 'x' }",
            "{ 1, 2, 3 }",
            "{}",
            "{ f = print }",
            "{ a = { b = math.huge } }",
            "setmetatable({}, { __index = function() return 1 end })",
        ] {
            let table: Table = lua.load(format!("return {source}")).eval().unwrap();
            let (mut as_value, mut as_view) = (Budget::unmetered(), Budget::unmetered());
            let by_value = encode_within(&Value::Table(table.clone()), &mut as_value);
            let by_view = table.read(|view| encode_view(view, &mut as_view)).unwrap();
            assert_eq!(by_view, by_value, "{source}");
            assert_eq!(as_view.left, as_value.left, "{source}");
        }
    }

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

    /// Keys and strings are copied into one text per table and checked as UTF-8 at once; a piece that is not
    /// UTF-8 is refused even where it joins its neighbour into UTF-8 (`\xC3` then `\xA9` is `é`).
    #[test]
    fn strings_that_are_not_utf8_are_refused_even_where_the_pieces_join() {
        let lua = Lua::new();
        for (lua_text, error) in [
            (r#"return { ["\xC3"] = "\xA9" }"#, "a key is not valid UTF-8"),
            (r#"return { a = "\xC3", b = "\xA9" }"#, "a string is not valid UTF-8"),
            (r#"return { "\xC3\xA9", "\xff" }"#, "a string is not valid UTF-8"),
            (r#"return { "\xC3", "\xA9" }"#, "a string is not valid UTF-8"),
        ] {
            let table: Value = lua.load(lua_text).eval().unwrap();
            assert_eq!(
                encode_within(&table, &mut Budget::unmetered()).unwrap_err(),
                error,
                "{lua_text}"
            );
        }
        let fine: Value = lua.load(r#"return { ["\xC3\xA9"] = { "\xC3\xA9" } }"#).eval().unwrap();
        assert_eq!(
            encode_within(&fine, &mut Budget::unmetered()).unwrap(),
            r#"{"é":["é"]}"#.as_bytes()
        );
        // An empty string is UTF-8 wherever it sits.
        let empty: Value = lua.load(r#"return { "", "é", "" }"#).eval().unwrap();
        assert_eq!(
            encode_within(&empty, &mut Budget::unmetered()).unwrap(),
            r#"["","é",""]"#.as_bytes()
        );
    }

    /// What the encoder kept from before it read tables through views: whole numbers as integers (a top-level one
    /// too), whole-number keys past `i64` as its bound, the depth limit for scalars as for tables, and a decoded
    /// array's other keys neither written nor charged.
    #[test]
    fn numbers_depth_and_decoded_arrays_are_encoded_as_they_always_were() {
        let lua = Lua::new();
        let text = |value: &Value| encode_within(value, &mut Budget::unmetered());
        assert_eq!(text(&Value::Integer(i64::MAX)).unwrap(), b"9223372036854775807");
        let big_key: Value = lua.load("return { [1e20] = 1 }").eval().unwrap();
        assert_eq!(text(&big_key).unwrap(), br#"{"9223372036854775807":1}"#);
        let nested = |levels: usize| -> Value {
            lua.load(format!("local t = 1 for i = 1, {levels} do t = {{t}} end return t"))
                .eval()
                .unwrap()
        };
        assert!(text(&nested(MAX_DEPTH)).is_ok());
        assert!(text(&nested(MAX_DEPTH + 1)).unwrap_err().contains("deeper than"));
        let array = decode_json(&lua, None, b"[1]").unwrap().unwrap();
        let key = "k".repeat(MAX_JSON_BYTES + 1);
        let with_key: Value = lua
            .load("local a, k = ... a[k] = 'x' a.n = 2 return a")
            .call((array, key))
            .unwrap();
        assert_eq!(text(&with_key).unwrap(), b"[1]");
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
    fn the_deepest_json_is_decoded_and_encoded_within_a_worker_s_stack() {
        let deepest = "{\"a\":".repeat(127) + "1" + "}".repeat(127).as_str();
        let in_thread = |kib: usize, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .stack_size(kib * 1024)
                .spawn(work)
                .unwrap()
                .join()
                .expect("ran out of stack");
        };
        let text = deepest.clone();
        in_thread(
            512,
            Box::new(move || {
                let lua = Lua::new();
                assert!(decode_json(&lua, None, text.as_bytes()).unwrap().is_ok());
            }),
        );
        // Encoding, to the encoder's depth limit (a table that contains itself), in half a worker's stack: this
        // runs unoptimized, where each level's frames are several times larger than in a release build.
        in_thread(
            1024,
            Box::new(move || {
                let lua = Lua::new();
                let value = decode_json(&lua, None, deepest.as_bytes()).unwrap().unwrap();
                let text = encode_within(&value, &mut Budget::unmetered()).unwrap();
                assert_eq!(String::from_utf8(text).unwrap(), deepest);
                let cyclic: Value = lua.load("local t = {} t.t = t return t").eval().unwrap();
                let error = encode_within(&cyclic, &mut Budget::unmetered()).unwrap_err();
                assert!(error.contains("contain itself"), "{error}");
            }),
        );
    }

    /// The table reader (vendor/mlua patch 5) refuses what would read another slot, and the VM carries on.
    #[test]
    fn the_table_reader_refuses_misuse() {
        let lua = Lua::new();
        let (outer, inner): (Table, Table) = lua.load("t = {x = 1, y = 2} return {t = t}, t").eval().unwrap();
        let first_position = |view: &TableView<'_>| {
            let mut first = None;
            view.for_each_entry(|entry| {
                first.get_or_insert(entry.position);
                Ok::<_, ()>(())
            })
            .unwrap()
            .unwrap();
            first.unwrap()
        };
        // A position in another table.
        let elsewhere = outer
            .read(|o| inner.read(|i| o.value_at(first_position(&i), |_| ())))
            .unwrap()
            .unwrap();
        assert!(elsewhere.is_err(), "a position in another table");
        // The entry at a position removed by Lua code run during the read.
        let changed = inner
            .read(|view| {
                let at = first_position(&view);
                lua.load("t.x = nil t.y = nil").exec().unwrap();
                view.value_at(at, |_| ())
            })
            .unwrap();
        assert!(changed.is_err(), "a position whose entry was removed");
        // A view used inside a nested read (the stack's top is then not where the outer reader left it).
        let nested = outer
            .read(|o| inner.read(|_| o.for_each_entry(|_| Ok::<_, ()>(()))))
            .unwrap()
            .unwrap();
        assert!(nested.is_err(), "a stack changed under the reader");
        // A view used from a Rust callback of a Lua call made during the read: another call frame, where the
        // table's stack index names another slot.
        let from_callback = outer
            .read(|view| {
                lua.scope(|scope| {
                    let f = scope.create_function(|_, ()| {
                        view.for_each_entry(|_| Ok::<_, ()>(()))?.unwrap();
                        Ok(())
                    })?;
                    f.call::<()>(())
                })
            })
            .unwrap();
        assert!(from_callback.is_err(), "a reader used from another call frame");
        // Reading as meant: each key and value where it is, nested tables included, and again by position.
        let table: Table = lua
            .load("return {s = 'text', n = 2.5, b = true, t = {1}}")
            .eval()
            .unwrap();
        let seen = table
            .read(|view| {
                let mut seen = Vec::new();
                view.for_each_entry(|entry| {
                    let again = view.value_at(entry.position, |again| format!("{again:?}"));
                    let value = match entry.value {
                        ValueView::Table(t) => {
                            let mut items = Vec::new();
                            t.for_each_entry(|e| {
                                items.push(format!("{:?}={:?}", e.key, e.value));
                                Ok::<_, ()>(())
                            })
                            .unwrap()
                            .unwrap();
                            items.join(",")
                        }
                        ref other => format!("{other:?}"),
                    };
                    seen.push(format!("{:?}={value} {}", entry.key, again.is_ok()));
                    Ok::<_, ()>(())
                })
                .unwrap()
                .unwrap();
                seen.sort();
                seen
            })
            .unwrap();
        assert_eq!(
            seen,
            [
                r#"String([110])=Number(2.5) true"#,
                r#"String([115])=String([116, 101, 120, 116]) true"#,
                r#"String([116])=Number(1.0)=Number(1.0) true"#,
                r#"String([98])=Boolean(true) true"#,
            ]
        );
        assert_eq!(decoded(&lua, "[1]"), "[1]", "the VM still works");
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
    fn a_key_written_twice_is_refused() {
        let lua = Lua::new();
        for table in ["{ [1] = 'a', ['1'] = 'b', x = 1 }", "{ [1e20] = 1, [1e21] = 2 }"] {
            let value: Value = lua.load(format!("return {table}")).eval().unwrap();
            let error = encode_within(&value, &mut Budget::unmetered()).expect_err(table);
            assert!(
                error.contains("two keys of one table are both the JSON key"),
                "{table}: {error}"
            );
            assert!(to_json(&value).is_err(), "{table}");
        }
        let value: Value = lua.load("return { [2] = 'a', ['1'] = 'b' }").eval().unwrap();
        assert_eq!(
            encode_within(&value, &mut Budget::unmetered()).unwrap(),
            br#"{"1":"b","2":"a"}"#
        );
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

    /// The budget counts the text a string becomes: 12 MiB of control characters are 72 MiB of JSON, refused, as
    /// the same number of plain letters are not.
    #[test]
    fn the_budget_counts_the_text_a_string_becomes() {
        let lua = Lua::new();
        for (byte, refused) in [("\\1", true), ("a", false)] {
            let table: Value = lua
                .load(format!("return {{ string.rep('{byte}', 12 * 1024 * 1024) }}"))
                .eval()
                .unwrap();
            let encoded = encode_within(&table, &mut Budget::unmetered());
            assert_eq!(encoded.is_err(), refused, "{byte}");
            if refused {
                assert!(encoded.unwrap_err().contains("larger than 64 MiB"));
            }
        }
        // Seven bytes; a quote and a backslash one more each, two control characters five more each.
        assert_eq!(text_cost(b"a\"b\\c\n\x01"), 7 + 2 + 2 * 5);
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
