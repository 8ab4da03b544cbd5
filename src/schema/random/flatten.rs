//! One plain schema from many: `$ref`, `allOf`, `anyOf`, `oneOf` and `if`/`then`/`else` are resolved into a single
//! keyword map the generator reads as it would a schema without them.
//!
//! `allOf` parts and a `$ref`'s target are met (bounds tightened, types intersected, `required` and `properties`
//! combined); one branch of `anyOf`/`oneOf` is chosen and met; a conditional is satisfied by meeting `if` with
//! `then`, or by meeting `else` and keeping `not: <if>` for the check. Sub-schemas that meet at one place
//! (`properties.x` from two parts) become `{"allOf": [a, b]}`, flattened when the generator reaches them. What a
//! plain schema cannot say (`oneOf` branches that overlap, `not` beyond types) is left to the check that follows
//! every generated value.

use std::borrow::Cow;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

use super::{Generator, MAX_REF_DEPTH};

/// `$ref`s followed while flattening one schema before giving up: a schema that only refers onwards
/// (`{"$ref": "#"}`) has no value to make.
const MAX_REF_CHAIN: usize = 4 * MAX_REF_DEPTH;

/// Keywords flattening resolves: none of them is left in its result.
const COMBINATORS: [&str; 8] = ["$ref", "$dynamicRef", "allOf", "anyOf", "oneOf", "if", "then", "else"];

/// A schema object's keywords.
pub(super) type Keywords = Map<String, Value>;

impl<R: Rng> Generator<'_, R> {
    /// `schema` as one map without combinators (the schema's own map when it has none, which is most of a
    /// schema's parts); `depth` counts the `$ref`s followed so far on this branch and comes back with those
    /// followed here added.
    pub(super) fn flatten<'s>(&mut self, schema: &'s Value, depth: &mut usize) -> Result<Cow<'s, Keywords>, String> {
        let limit = *depth + MAX_REF_CHAIN;
        self.flatten_within(schema, depth, limit)
    }

    fn flatten_within<'s>(
        &mut self,
        schema: &'s Value,
        depth: &mut usize,
        limit: usize,
    ) -> Result<Cow<'s, Keywords>, String> {
        let map = match schema {
            Value::Bool(true) => return Ok(Cow::Owned(Keywords::new())),
            Value::Bool(false) => return Err("the schema `false` allows no value".into()),
            Value::Object(map) => map,
            _ => return Err(format!("{schema} is not a schema")),
        };
        if !map.keys().any(|key| COMBINATORS.contains(&key.as_str())) {
            return Ok(Cow::Borrowed(map));
        }
        let mut out: Keywords = map
            .iter()
            .filter(|(key, _)| !COMBINATORS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        for keyword in ["$ref", "$dynamicRef"] {
            if let Some(Value::String(reference)) = map.get(keyword) {
                *depth += 1;
                if *depth > limit {
                    return Err(format!(
                        "`{keyword}` '{reference}' leads through more than {MAX_REF_CHAIN} references"
                    ));
                }
                let resolver = self.resolver;
                let target = resolver
                    .resolve(reference)
                    .ok_or_else(|| format!("`{keyword}` '{reference}' cannot be resolved"))?;
                out = meet(out, self.flatten_within(target, depth, limit)?.into_owned());
            }
        }
        if let Some(Value::Array(parts)) = map.get("allOf") {
            for part in parts {
                let part = self
                    .flatten_within(part, depth, limit)
                    .map_err(|e| format!("allOf: {e}"))?;
                out = meet(out, part.into_owned());
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = map.get(keyword) {
                let branch = self.choose_branch(branches, *depth, keyword)?;
                out = meet(
                    out,
                    self.flatten_within(branch, depth, limit)
                        .map_err(|e| format!("{keyword}: {e}"))?
                        .into_owned(),
                );
            }
        }
        if let Some(condition) = map.get("if") {
            let met = match condition {
                Value::Bool(met) => *met,
                _ => self.rng.random_bool(0.5),
            };
            let consequence = map.get(if met { "then" } else { "else" }).unwrap_or(&Value::Bool(true));
            if met {
                out = meet(
                    out,
                    self.flatten_within(condition, depth, limit)
                        .map_err(|e| format!("if: {e}"))?
                        .into_owned(),
                );
            } else if condition != &Value::Bool(false) {
                out = meet(out, Keywords::from_iter([("not".to_owned(), condition.clone())]));
            }
            let keyword = if met { "then" } else { "else" };
            out = meet(
                out,
                self.flatten_within(consequence, depth, limit)
                    .map_err(|e| format!("{keyword}: {e}"))?
                    .into_owned(),
            );
        }
        Ok(Cow::Owned(out))
    }

    /// A branch of `anyOf`/`oneOf` at random; past the `$ref` depth bound, one without `$ref` when there is one,
    /// so recursive schemas (a tree's `anyOf: [leaf, {$ref: tree}]`) end.
    fn choose_branch<'s>(&mut self, branches: &'s [Value], depth: usize, keyword: &str) -> Result<&'s Value, String> {
        let open: Vec<&Value> = branches.iter().filter(|b| **b != Value::Bool(false)).collect();
        let leaves: Vec<&Value> = open.iter().copied().filter(|b| !refers(b)).collect();
        let pool = if depth >= MAX_REF_DEPTH && !leaves.is_empty() {
            leaves
        } else {
            open
        };
        pool.choose(self.rng)
            .copied()
            .ok_or_else(|| format!("`{keyword}` has no branch that allows a value"))
    }
}

/// Whether `schema` has a `$ref` or `$dynamicRef` anywhere inside.
fn refers(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.contains_key("$ref") || map.contains_key("$dynamicRef") || map.values().any(refers),
        Value::Array(items) => items.iter().any(refers),
        _ => false,
    }
}

/// `a` and `b` both: bounds tightened, types intersected, names required by either required, sub-schemas that meet
/// kept as `allOf`. Where two values cannot be combined (two `pattern`s, two `format`s) `a`'s stays; the check
/// after generation catches a value that breaks `b`'s.
pub(super) fn meet(mut a: Keywords, b: Keywords) -> Keywords {
    for (key, theirs) in b {
        let Some(mine) = a.get_mut(&key) else {
            a.insert(key, theirs);
            continue;
        };
        match key.as_str() {
            "type" => *mine = meet_types(mine, &theirs),
            "minimum" | "exclusiveMinimum" | "minLength" | "minItems" | "minProperties" | "minContains" => {
                if let (Some(m), Some(t)) = (mine.as_f64(), theirs.as_f64())
                    && t > m
                {
                    *mine = theirs;
                }
            }
            "maximum" | "exclusiveMaximum" | "maxLength" | "maxItems" | "maxProperties" | "maxContains" => {
                if let (Some(m), Some(t)) = (mine.as_f64(), theirs.as_f64())
                    && t < m
                {
                    *mine = theirs;
                }
            }
            "required" => {
                if let (Value::Array(mine), Value::Array(theirs)) = (mine, theirs) {
                    for name in theirs {
                        if !mine.contains(&name) {
                            mine.push(name);
                        }
                    }
                }
            }
            "properties" | "patternProperties" | "dependentSchemas" | "$defs" | "definitions" => {
                if let (Value::Object(mine), Value::Object(theirs)) = (mine, theirs) {
                    for (name, schema) in theirs {
                        let merged = match mine.get(&name) {
                            Some(existing) => both(existing, &schema),
                            None => schema,
                        };
                        mine.insert(name, merged);
                    }
                }
            }
            "dependentRequired" => {
                if let (Value::Object(mine), Value::Object(theirs)) = (mine, theirs) {
                    for (name, names) in theirs {
                        let entry = mine.entry(name).or_insert_with(|| json!([]));
                        if let (Value::Array(entry), Value::Array(names)) = (entry, names) {
                            entry.extend(names);
                        }
                    }
                }
            }
            "prefixItems" => {
                if let (Value::Array(mine), Value::Array(theirs)) = (mine, theirs) {
                    for (index, schema) in theirs.into_iter().enumerate() {
                        match mine.get_mut(index) {
                            Some(existing) => *existing = both(existing, &schema),
                            None => mine.push(schema),
                        }
                    }
                }
            }
            "items"
            | "additionalItems"
            | "additionalProperties"
            | "unevaluatedItems"
            | "unevaluatedProperties"
            | "contains"
            | "propertyNames" => *mine = both(mine, &theirs),
            // Neither `a` nor `b`: not (A or B).
            "not" => *mine = json!({"anyOf": [mine.clone(), theirs]}),
            "enum" => {
                if let (Value::Array(mine), Value::Array(theirs)) = (mine, &theirs) {
                    mine.retain(|value| theirs.contains(value));
                }
            }
            "uniqueItems" => *mine = Value::Bool(mine == &Value::Bool(true) || theirs == Value::Bool(true)),
            "multipleOf" => {
                if let (Some(m), Some(t)) = (mine.as_f64(), theirs.as_f64())
                    && let Some(both) = common_multiple(m, t)
                {
                    *mine = super::number_value(both, false);
                }
            }
            _ => {}
        }
    }
    a
}

/// The least number that is a multiple of both `a` and `b`, when one divides the other or both are whole.
fn common_multiple(a: f64, b: f64) -> Option<f64> {
    let (small, large) = if a < b { (a, b) } else { (b, a) };
    if (large / small).fract() == 0.0 {
        return Some(large);
    }
    if a.fract() != 0.0 || b.fract() != 0.0 || a <= 0.0 || b <= 0.0 || large > 1e15 {
        return None;
    }
    let (mut x, mut y) = (a as u64, b as u64);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    let lcm = (a as u64 / x).checked_mul(b as u64)?;
    Some(lcm as f64)
}

/// One schema meaning both; `true` is no constraint.
pub(super) fn both(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Bool(true), other) | (other, Value::Bool(true)) => other.clone(),
        _ if a == b => a.clone(),
        _ => json!({"allOf": [a, b]}),
    }
}

/// The types both allow; `integer` is the `number`s that are whole. Empty when they share none.
fn meet_types(a: &Value, b: &Value) -> Value {
    let list = |types: &Value| -> Vec<String> {
        match types {
            Value::String(t) => vec![t.clone()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    let (a, b) = (list(a), list(b));
    let allows = |types: &[String], t: &str| {
        types.iter().any(|x| x == t) || (t == "integer" && types.iter().any(|x| x == "number"))
    };
    let mut shared: Vec<Value> = Vec::new();
    for t in a.iter().chain(&b) {
        let t = t.as_str();
        if allows(&a, t) && allows(&b, t) && !shared.iter().any(|s| s == t) {
            shared.push(Value::from(t));
        }
    }
    Value::Array(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keywords(value: Value) -> Keywords {
        value.as_object().cloned().unwrap()
    }

    struct NoReferences;

    impl super::super::Resolve for NoReferences {
        fn resolve(&self, _: &str) -> Option<&Value> {
            None
        }
    }

    #[test]
    fn a_schema_without_combinators_is_read_in_place_and_one_with_them_is_met() {
        let mut rng = rand::rng();
        let patterns = super::super::Patterns::default();
        let mut generator = Generator {
            resolver: &NoReferences,
            rng: &mut rng,
            optional_probability: 0.5,
            patterns: &patterns,
        };
        // Generating a value flattens every part of the schema once: a plain part must not be copied.
        let plain = json!({"type": "object", "properties": {"big": {"type": "string", "maxLength": 3}}});
        let flat = generator.flatten(&plain, &mut 0).unwrap();
        assert!(matches!(flat, Cow::Borrowed(map) if std::ptr::eq(map, plain.as_object().unwrap())));
        let combined = json!({"type": "integer", "allOf": [{"minimum": 3}, {"maximum": 5}]});
        let flat = generator.flatten(&combined, &mut 0).unwrap();
        assert!(matches!(flat, Cow::Owned(_)));
        assert_eq!(
            Value::Object(flat.into_owned()),
            json!({"type": "integer", "minimum": 3, "maximum": 5})
        );
    }

    #[test]
    fn meeting_tightens_bounds_and_intersects_types() {
        let met = meet(
            keywords(json!({"type": ["number", "string"], "minimum": 1, "maximum": 10, "required": ["a"]})),
            keywords(json!({"type": "integer", "minimum": 3, "maximum": 20, "required": ["b"]})),
        );
        assert_eq!(
            Value::Object(met),
            json!({"type": ["integer"], "minimum": 3, "maximum": 10, "required": ["a", "b"]})
        );
    }

    #[test]
    fn sub_schemas_that_meet_become_all_of() {
        let met = meet(
            keywords(json!({"properties": {"a": {"type": "string"}, "b": true}})),
            keywords(json!({"properties": {"a": {"maxLength": 2}, "b": {"type": "null"}}, "not": {"type": "null"}})),
        );
        assert_eq!(
            Value::Object(met),
            json!({
                "properties": {"a": {"allOf": [{"type": "string"}, {"maxLength": 2}]}, "b": {"type": "null"}},
                "not": {"type": "null"}
            })
        );
    }

    #[test]
    fn multiples_meet_at_their_least_common_multiple() {
        assert_eq!(common_multiple(2.0, 3.0), Some(6.0));
        assert_eq!(common_multiple(4.0, 6.0), Some(12.0));
        assert_eq!(common_multiple(0.5, 1.5), Some(1.5));
        assert_eq!(common_multiple(0.4, 1.5), None);
    }

    #[test]
    fn no_shared_type_is_an_empty_list() {
        assert_eq!(meet_types(&json!("string"), &json!(["integer", "null"])), json!([]));
        assert_eq!(
            meet_types(&json!(["integer", "null"]), &json!("number")),
            json!(["integer"])
        );
    }
}
