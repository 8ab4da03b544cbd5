//! Random values from a JSON Schema: a schema in, a value valid against it out (or why none could be made).
//!
//! Each schema is first flattened ([`flatten`]: `$ref`, `allOf`, a branch of `anyOf`/`oneOf`, a side of
//! `if`/`then`/`else`, met into one keyword map); the generator then follows the keywords (type or the type the
//! keywords imply, `enum`, `const`, `examples`, `default`, string lengths, `pattern`, `format`, numeric bounds and
//! `multipleOf`, `items`/`prefixItems`/`unevaluatedItems`, `contains`, item counts and `uniqueItems`,
//! `properties`/`patternProperties`/`additionalProperties`/`unevaluatedProperties`, `propertyNames`,
//! `required`/`dependentRequired`/`dependentSchemas`, property counts, `nullable` and type lists) and makes values
//! look real where the schema leaves room ([`text`]: a string property called `email` gets an email, `city` a
//! city). What it cannot express (`not` beyond types, `oneOf` branches that overlap) is caught by
//! [`Schema::random`](super::Schema::random), which checks every value and tries again, and gives up naming the
//! keyword that failed after a few attempts instead of looping.

mod flatten;
mod patterns;
mod text;

pub use patterns::Patterns;

use std::borrow::Cow;

use fake::Fake;
use fake::faker::lorem::en::Word;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Number, Value};

/// `$ref`s followed in one branch before the generator takes the shortest way out (no optional properties, the
/// fewest items), so recursive schemas (trees, linked lists) end.
const MAX_REF_DEPTH: usize = 6;

/// Items and extra properties when the schema gives no bounds.
const DEFAULT_MAX_ITEMS: usize = 3;

/// Where `$ref`s point: the schema's own document, and (for schemas from files) the sibling files it names.
pub trait Resolve {
    fn resolve(&self, reference: &str) -> Option<&Value>;
}

pub struct Generator<'a, R: Rng> {
    pub resolver: &'a dyn Resolve,
    /// The schema's regular expressions, compiled on first use.
    pub patterns: &'a Patterns,
    pub rng: &'a mut R,
    /// Chance that an optional property is present.
    pub optional_probability: f64,
}

impl<R: Rng> Generator<'_, R> {
    pub fn value(&mut self, schema: &Value) -> Result<Value, String> {
        self.generate(schema, None, 0)
    }

    /// `name` is the property the value is for, which picks realistic strings and numbers; `depth` counts the
    /// `$ref`s followed on the way here.
    fn generate(&mut self, schema: &Value, name: Option<&str>, depth: usize) -> Result<Value, String> {
        if schema == &Value::Bool(true) {
            return Ok(self.any_scalar());
        }
        let mut depth = depth;
        let schema = self.flatten(schema, &mut depth)?;
        if let Some(value) = schema.get("const") {
            return Ok(value.clone());
        }
        if let Some(Value::Array(values)) = schema.get("enum") {
            return values
                .choose(self.rng)
                .cloned()
                .ok_or_else(|| "`enum` has no value that every part of the schema allows".to_owned());
        }
        if let Some(Value::Array(examples)) = schema.get("examples")
            && self.rng.random_bool(0.5)
            && let Some(example) = examples.choose(self.rng)
        {
            return Ok(example.clone());
        }
        if let Some(default) = schema.get("default")
            && self.rng.random_bool(0.2)
        {
            return Ok(default.clone());
        }
        let nullable = schema.get("nullable") == Some(&Value::Bool(true));
        match self.pick_type(&schema, nullable)?.as_str() {
            "null" => Ok(Value::Null),
            "boolean" => Ok(Value::Bool(self.rng.random_bool(0.5))),
            "integer" => self.number(&schema, name, true),
            "number" => self.number(&schema, name, false),
            "string" => self.string(&schema, name),
            "array" => self.array(&schema, depth),
            "object" => self.object(&schema, depth),
            _ => Ok(self.any_scalar()),
        }
    }

    fn pick_type(&mut self, schema: &Map<String, Value>, nullable: bool) -> Result<String, String> {
        let mut types: Vec<String> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => vec![implied_type(schema).to_owned()],
        };
        if types.is_empty() {
            return Err("`type`: the parts of the schema allow no type in common".into());
        }
        // `not: {type: ...}` rules those types out; with no type given, the others remain.
        if let Some(excluded) = schema.get("not").and_then(|not| not.get("type")) {
            let excluded: Vec<&str> = match excluded {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if types == ["any"] {
                types = ["null", "boolean", "integer", "number", "string", "array", "object"]
                    .map(str::to_owned)
                    .to_vec();
            }
            // A number excludes integers too; integers are numbers.
            let ruled_out = |t: &str| excluded.contains(&t) || (t == "integer" && excluded.contains(&"number"));
            types.retain(|t| !ruled_out(t));
            if types.is_empty() {
                return Err("`not` rules out every type the schema allows".into());
            }
        }
        // Null only now and then, so most generated documents carry data.
        if (nullable || types.len() > 1) && types.iter().any(|t| t == "null") && !self.rng.random_bool(0.2) {
            types.retain(|t| t != "null");
        }
        if nullable && self.rng.random_bool(0.1) {
            return Ok("null".into());
        }
        Ok(types.choose(self.rng).cloned().unwrap_or_else(|| "any".into()))
    }

    fn any_scalar(&mut self) -> Value {
        match self.rng.random_range(0..3) {
            0 => Value::from(Word().fake_with_rng::<String, _>(self.rng)),
            1 => Value::from(self.rng.random_range(0..1000)),
            _ => Value::Bool(self.rng.random_bool(0.5)),
        }
    }

    fn string(&mut self, schema: &Map<String, Value>, name: Option<&str>) -> Result<Value, String> {
        let min = count(schema, "minLength").unwrap_or(0);
        let max = count(schema, "maxLength");
        if max.is_some_and(|max| max < min) {
            return Err(format!("maxLength {} is below minLength {min}", max.unwrap_or(0)));
        }
        let mut text = if let Some(Value::String(pattern)) = schema.get("pattern") {
            let regex = self.patterns.generator(pattern)?;
            self.rng.sample::<String, _>(&*regex)
        } else if let Some(Value::String(format)) = schema.get("format") {
            self.formatted(format)
        } else {
            self.named_string(name)
        };
        if schema.get("pattern").is_none() && schema.get("format").is_none() {
            let chars = text.chars().count();
            if chars < min {
                text.extend((chars..min).map(|_| self.rng.random_range(b'a'..=b'z') as char));
            }
            if let Some(max) = max {
                text = text.chars().take(max).collect();
            }
        }
        Ok(Value::String(text))
    }

    fn number(&mut self, schema: &Map<String, Value>, name: Option<&str>, integer: bool) -> Result<Value, String> {
        let get = |key: &str| schema.get(key).and_then(Value::as_f64);
        // Draft 4 writes exclusive bounds as `exclusiveMinimum: true` beside `minimum`; later drafts as numbers.
        let flag = |key: &str| schema.get(key) == Some(&Value::Bool(true));
        let step = if integer { 1.0 } else { 0.01 };
        let lower = [
            get("minimum").map(|min| if flag("exclusiveMinimum") { min + step } else { min }),
            get("exclusiveMinimum").map(|min| min + step),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::max);
        let upper = [
            get("maximum").map(|max| if flag("exclusiveMaximum") { max - step } else { max }),
            get("exclusiveMaximum").map(|max| max - step),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::min);
        // Where the schema leaves a side open, the range the property's name suggests, at least 100 wide.
        let (usual_low, usual_high) = default_range(name, integer);
        let (low, high) = match (lower, upper) {
            (Some(low), Some(high)) => (low, high),
            (Some(low), None) => (low, usual_high.max(low + 100.0)),
            (None, Some(high)) => (usual_low.min(high - 100.0), high),
            (None, None) => (usual_low, usual_high),
        };
        if let Some(multiple) = get("multipleOf").filter(|m| *m > 0.0) {
            let first = (low / multiple).ceil() as i64;
            let last = (high / multiple).floor() as i64;
            if last < first {
                return Err(format!("no multiple of {multiple} lies between {low} and {high}"));
            }
            // A multiple whose quotient is whole in floating point too, as float-based validators compute it
            // (`152.3209 / 0.0001` is not): tried at random, then from the low end.
            let exact = |k: i64| {
                let n = k as f64 * multiple;
                ((n / multiple).fract() == 0.0 && (!integer || n.fract() == 0.0)).then_some(n)
            };
            let tries = (0..20).map(|_| self.rng.random_range(first..=last));
            let found = tries
                .chain(first..=last.min(first.saturating_add(1000)))
                .find_map(exact);
            return match found {
                Some(n) => Ok(number_value(n, integer)),
                None => Err(format!(
                    "no multiple of {multiple} between {low} and {high} divides exactly"
                )),
            };
        }
        if integer {
            let (low, high) = (low.ceil() as i64, high.floor() as i64);
            if high < low {
                return Err(format!("no integer lies between {low} and {high}"));
            }
            return Ok(Value::from(self.rng.random_range(low..=high)));
        }
        if high < low {
            return Err(format!("no number lies between {low} and {high}"));
        }
        let n = if high > low {
            self.rng.random_range(low..high)
        } else {
            low
        };
        Ok(number_value((n * 100.0).round() / 100.0, false))
    }

    fn array(&mut self, schema: &Map<String, Value>, depth: usize) -> Result<Value, String> {
        let min = count(schema, "minItems").unwrap_or(0);
        let mut max = count(schema, "maxItems");
        let prefix: &[Value] = match schema
            .get("prefixItems")
            .or_else(|| schema.get("items").filter(|i| i.is_array()))
        {
            Some(Value::Array(prefix)) => prefix,
            _ => &[],
        };
        let contains = schema.get("contains").filter(|c| **c != Value::Bool(false));
        // Items past the prefix: `items`, else (old-style tuples) `additionalItems`, else `unevaluatedItems`, which an
        // item matching `contains` also satisfies, being evaluated by it.
        let any = Value::Bool(true);
        let rest = match schema.get("items") {
            Some(items) if !items.is_array() => items,
            Some(_) => schema.get("additionalItems").unwrap_or(&any),
            None => match (schema.get("unevaluatedItems"), contains) {
                (Some(Value::Bool(false)), Some(contains)) => contains,
                (Some(unevaluated), _) => unevaluated,
                (None, _) => &any,
            },
        };
        // A `false` prefix item allows no item at that place: the array ends before it.
        if let Some(at) = prefix.iter().position(|item| item == &Value::Bool(false)) {
            max = Some(max.map_or(at, |m| m.min(at)));
        }
        if rest == &Value::Bool(false) {
            max = Some(max.map_or(prefix.len(), |m| m.min(prefix.len())));
        }
        let wanted_matches = match contains {
            Some(_) => count(schema, "minContains").unwrap_or(1),
            None => 0,
        };
        let upper = max.unwrap_or(min.max(DEFAULT_MAX_ITEMS).max(prefix.len()).max(wanted_matches));
        if upper < min {
            return Err(format!("`maxItems` {upper} is below `minItems` {min}"));
        }
        if upper < wanted_matches {
            return Err(format!(
                "`minContains` {wanted_matches} is more than the {upper} items allowed"
            ));
        }
        let shortest = depth >= MAX_REF_DEPTH;
        let low = min.max(wanted_matches);
        let count = if shortest {
            low
        } else {
            self.rng.random_range(low.max(1).min(upper)..=upper)
        };
        let unique = schema.get("uniqueItems") == Some(&Value::Bool(true));
        let mut items: Vec<Value> = Vec::with_capacity(count);
        let mut attempts = 0;
        while items.len() < count {
            let index = items.len();
            let mut item_schema = Cow::Borrowed(prefix.get(index).unwrap_or(rest));
            // The last `minContains` places hold items that match `contains`.
            if let Some(contains) = contains
                && index >= count - wanted_matches
            {
                item_schema = Cow::Owned(flatten::both(&item_schema, contains));
            }
            let item = self.generate(&item_schema, None, depth)?;
            if unique && items.contains(&item) {
                attempts += 1;
                if attempts > 50 {
                    break; // The item schema has too few distinct values; the check reports it if minItems fails.
                }
                continue;
            }
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn object(&mut self, schema: &Map<String, Value>, depth: usize) -> Result<Value, String> {
        let shortest = depth >= MAX_REF_DEPTH;
        let schema = self.with_dependencies(schema, shortest)?;
        let no_properties = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&no_properties);
        let mut required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let max = count(&schema, "maxProperties");
        let min = count(&schema, "minProperties").unwrap_or(0);
        let mut object = Map::new();
        for (name, property) in properties {
            // `false`: the property must be absent.
            if property == &Value::Bool(false) {
                if required.contains(name) {
                    return Err(format!("property '{name}' is required but its schema is false"));
                }
                continue;
            }
            let wanted = required.contains(name)
                || (!shortest
                    && self.rng.random_bool(self.optional_probability)
                    && max.is_none_or(|m| object.len() < m));
            if wanted {
                object.insert(name.clone(), self.generate(property, Some(name), depth)?);
            }
        }
        // A property present may require others (`dependentRequired`), which may require more.
        if let Some(Value::Object(dependents)) = schema.get("dependentRequired") {
            let mut index = 0;
            let mut present: Vec<String> = object.keys().cloned().chain(required.iter().cloned()).collect();
            while index < present.len() {
                if let Some(Value::Array(names)) = dependents.get(&present[index]) {
                    for name in names.iter().filter_map(Value::as_str) {
                        if !present.iter().any(|p| p == name) {
                            present.push(name.to_owned());
                            required.push(name.to_owned());
                        }
                    }
                }
                index += 1;
            }
        }
        let additional = schema
            .get("additionalProperties")
            .or_else(|| schema.get("unevaluatedProperties"))
            .cloned()
            .unwrap_or(Value::Bool(!shortest));
        for name in &required {
            if !object.contains_key(name) {
                let property = self.property_schema(&schema, name, &additional);
                if property == Value::Bool(false) {
                    return Err(format!("property '{name}' is required but no schema keyword allows it"));
                }
                let value = self.generate(&property, Some(name), depth)?;
                object.insert(name.clone(), value);
            }
        }
        let mut extra = 0;
        while object.len() < min && extra < min + 10 {
            extra += 1;
            let Some(key) = self.extra_name(&schema, &additional)? else {
                break;
            };
            let property = self.property_schema(&schema, &key, &additional);
            let value = self.generate(&property, Some(&key), depth)?;
            object.entry(key).or_insert(value);
        }
        Ok(Value::Object(object))
    }

    /// The object schema with the `dependentSchemas` of the properties it will have met into it: a required
    /// property's always, an optional one's when chance includes it (and then it is required).
    fn with_dependencies<'m>(
        &mut self,
        schema: &'m Map<String, Value>,
        shortest: bool,
    ) -> Result<Cow<'m, Map<String, Value>>, String> {
        let Some(Value::Object(dependents)) = schema.get("dependentSchemas") else {
            return Ok(Cow::Borrowed(schema));
        };
        let mut out = schema.clone();
        out.remove("dependentSchemas");
        for (name, dependent) in dependents {
            let required = |s: &Map<String, Value>| {
                s.get("required")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|n| n == name))
            };
            let include = required(&out) || (!shortest && self.rng.random_bool(self.optional_probability));
            if !include {
                let absent = Map::from_iter([(
                    "properties".to_owned(),
                    Value::Object(Map::from_iter([(name.clone(), Value::Bool(false))])),
                )]);
                out = flatten::meet(out, absent);
                continue;
            }
            let mut refs = 0;
            let dependent = self.flatten(dependent, &mut refs)?;
            let present = Map::from_iter([("required".to_owned(), Value::Array(vec![Value::from(name.as_str())]))]);
            out = flatten::meet(flatten::meet(out, dependent.into_owned()), present);
        }
        Ok(Cow::Owned(out))
    }

    /// The schema a property called `name` is checked against: its `properties` entry, else every matching
    /// `patternProperties` entry, else `additional`.
    fn property_schema(&self, schema: &Map<String, Value>, name: &str, additional: &Value) -> Value {
        if let Some(property) = schema.get("properties").and_then(|p| p.get(name)) {
            return property.clone();
        }
        let matching: Vec<&Value> = schema
            .get("patternProperties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(pattern, _)| self.patterns.matches(pattern, name))
            .map(|(_, schema)| schema)
            .collect();
        match matching.as_slice() {
            [] => additional.clone(),
            [one] => (*one).clone(),
            many => serde_json::json!({ "allOf": many }),
        }
    }

    /// A name for a property beyond those listed, as `propertyNames` or a `patternProperties` pattern allows; `None`
    /// when nothing allows one.
    fn extra_name(&mut self, schema: &Map<String, Value>, additional: &Value) -> Result<Option<String>, String> {
        if additional == &Value::Bool(false) {
            let patterns: Vec<&String> = schema
                .get("patternProperties")
                .and_then(Value::as_object)
                .map(|p| p.keys().collect())
                .unwrap_or_default();
            let Some(pattern) = patterns.choose(self.rng) else {
                return Ok(None);
            };
            return self
                .string(
                    &Map::from_iter([("pattern".to_owned(), Value::from(pattern.as_str()))]),
                    None,
                )
                .map(|name| name.as_str().map(str::to_owned));
        }
        if let Some(names) = schema.get("propertyNames") {
            let name = self.generate(names, None, MAX_REF_DEPTH)?;
            return Ok(name.as_str().map(str::to_owned));
        }
        Ok(Some(Word().fake_with_rng(self.rng)))
    }
}

/// A count keyword (`minLength`, `maxItems`, ...): a non-negative whole number, written `2` or `2.0` (both are valid
/// JSON Schema).
fn count(schema: &Map<String, Value>, key: &str) -> Option<usize> {
    let value = schema.get(key)?;
    value
        .as_u64()
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        })
        .map(|n| n as usize)
}

/// The type a schema without `type` implies from its other keywords.
fn implied_type(schema: &Map<String, Value>) -> &'static str {
    let has = |keys: &[&str]| keys.iter().any(|k| schema.contains_key(*k));
    if has(&[
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
    ]) {
        "object"
    } else if has(&["items", "prefixItems", "minItems", "maxItems", "uniqueItems"]) {
        "array"
    } else if has(&["minLength", "maxLength", "pattern", "format"]) {
        "string"
    } else if has(&[
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]) {
        "number"
    } else {
        "any"
    }
}

/// Plausible bounds for a number the schema leaves open, from the property's name.
fn default_range(name: Option<&str>, integer: bool) -> (f64, f64) {
    let name = name.unwrap_or("").to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
    if has(&["price", "amount", "total", "cost"]) {
        (1.0, if integer { 1000.0 } else { 500.0 })
    } else if has(&["quantity", "count", "qty"]) {
        (1.0, 10.0)
    } else if has(&["age"]) {
        (18.0, 90.0)
    } else if has(&["year"]) {
        (1990.0, 2030.0)
    } else if has(&["lat"]) {
        (-90.0, 90.0)
    } else if has(&["lon", "lng"]) {
        (-180.0, 180.0)
    } else if has(&["percent", "ratio", "rate"]) {
        (0.0, 100.0)
    } else {
        (0.0, 1000.0)
    }
}

fn number_value(n: f64, integer: bool) -> Value {
    if integer || (n.fract() == 0.0 && n.abs() < 9.0e15) {
        Value::from(n as i64)
    } else {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}
