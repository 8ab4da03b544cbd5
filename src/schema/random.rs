//! Random values from a JSON Schema: a schema in, a value valid against it out (or why none could be made).
//!
//! The generator follows the keywords (type or the type the keywords imply, `enum`, `const`, `examples`,
//! `default`, string lengths, `pattern`, `format`, numeric bounds and `multipleOf`, `items`/`prefixItems`, item
//! counts and `uniqueItems`, `properties`/`required`/`additionalProperties`, property counts, `anyOf`/`oneOf`/
//! `allOf`, `$ref` with a depth bound, `nullable` and type lists) and makes values look real where the schema
//! leaves room: a string property called `email` gets an email, `city` a city, `price` a price. What it cannot
//! express (say `not`, or `oneOf` branches that overlap) is caught by [`Schema::random`], which checks every value
//! against the schema and tries again, and gives up with the reason after a few attempts instead of looping.

use fake::Fake;
use fake::faker::address::en::{CityName, CountryName, StreetName, ZipCode};
use fake::faker::company::en::CompanyName;
use fake::faker::internet::en::{DomainSuffix, SafeEmail, Username};
use fake::faker::lorem::en::{Sentence, Word};
use fake::faker::name::en::{FirstName, LastName, Name};
use fake::faker::phone_number::en::PhoneNumber;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Number, Value};

/// `$ref`s followed in one branch before the generator takes the shortest way out (no optional properties, the
/// fewest items), so recursive schemas (trees, linked lists) end.
const MAX_REF_DEPTH: usize = 6;

/// Longest run a `pattern` repetition (`*`, `+`, `{n,}`) is expanded to.
const MAX_PATTERN_REPEAT: u32 = 8;

/// Items and extra properties when the schema gives no bounds.
const DEFAULT_MAX_ITEMS: usize = 3;

/// Where `$ref`s point: the schema's own document, and (for schemas from files) the sibling files it names.
pub trait Resolve {
    fn resolve(&self, reference: &str) -> Option<Value>;
}

pub struct Generator<'a, R: Rng> {
    pub resolver: &'a dyn Resolve,
    pub rng: &'a mut R,
    /// Chance that an optional property is present.
    pub optional_probability: f64,
}

impl<R: Rng> Generator<'_, R> {
    pub fn value(&mut self, schema: &Value) -> Result<Value, String> {
        self.generate(schema, None, 0)
    }

    /// `name` is the property the value is for, which picks realistic strings and numbers.
    fn generate(&mut self, schema: &Value, name: Option<&str>, depth: usize) -> Result<Value, String> {
        let schema = match schema {
            Value::Bool(true) => return Ok(self.any_scalar()),
            Value::Bool(false) => return Err("the schema `false` allows no value".into()),
            Value::Object(map) => map,
            _ => return Err(format!("{schema} is not a schema")),
        };
        if let Some(Value::String(reference)) = schema.get("$ref") {
            let target = self
                .resolver
                .resolve(reference)
                .ok_or_else(|| format!("cannot resolve $ref '{reference}'"))?;
            return self.generate(
                &merge(&target, &Value::Object(schema.clone()), &["$ref"]),
                name,
                depth + 1,
            );
        }
        if let Some(value) = schema.get("const") {
            return Ok(value.clone());
        }
        if let Some(Value::Array(values)) = schema.get("enum") {
            return values
                .choose(self.rng)
                .cloned()
                .ok_or_else(|| "enum is empty".to_owned());
        }
        if let Some(Value::Array(parts)) = schema.get("allOf") {
            let mut merged = Value::Object(schema.clone());
            for part in parts {
                let part = match part.get("$ref").and_then(Value::as_str) {
                    Some(reference) => self.resolver.resolve(reference).unwrap_or(Value::Bool(true)),
                    None => part.clone(),
                };
                merged = merge(&merged, &part, &[]);
            }
            if let Value::Object(map) = &mut merged {
                map.remove("allOf");
            }
            return self.generate(&merged, name, depth);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(Value::Array(branches)) = schema.get(key) {
                let branch = branches.choose(self.rng).ok_or_else(|| format!("{key} is empty"))?;
                return self.generate(&merge(&Value::Object(schema.clone()), branch, &[key]), name, depth);
            }
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
        match self.pick_type(schema, nullable).as_str() {
            "null" => Ok(Value::Null),
            "boolean" => Ok(Value::Bool(self.rng.random_bool(0.5))),
            "integer" => self.number(schema, name, true),
            "number" => self.number(schema, name, false),
            "string" => self.string(schema, name),
            "array" => self.array(schema, depth),
            "object" => self.object(schema, depth),
            _ => Ok(self.any_scalar()),
        }
    }

    fn pick_type(&mut self, schema: &Map<String, Value>, nullable: bool) -> String {
        let mut types: Vec<String> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => vec![implied_type(schema).to_owned()],
        };
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
        }
        // Null only now and then, so most generated documents carry data.
        if (nullable || types.len() > 1) && types.iter().any(|t| t == "null") && !self.rng.random_bool(0.2) {
            types.retain(|t| t != "null");
        }
        if nullable && self.rng.random_bool(0.1) {
            return "null".into();
        }
        types.choose(self.rng).cloned().unwrap_or_else(|| "any".into())
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
            let anchored = pattern.trim_start_matches('^').trim_end_matches('$');
            let regex = rand_regex::Regex::compile(anchored, MAX_PATTERN_REPEAT)
                .map_err(|e| format!("cannot generate strings for pattern '{pattern}': {e}"))?;
            self.rng.sample::<String, _>(&regex)
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

    fn formatted(&mut self, format: &str) -> String {
        let rng = &mut *self.rng;
        match format {
            "date" => format!(
                "20{:02}-{:02}-{:02}",
                rng.random_range(0..30),
                rng.random_range(1..=12),
                rng.random_range(1..=28)
            ),
            "time" => format!(
                "{:02}:{:02}:{:02}Z",
                rng.random_range(0..24),
                rng.random_range(0..60),
                rng.random_range(0..60)
            ),
            "date-time" => format!(
                "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                rng.random_range(0..30),
                rng.random_range(1..=12),
                rng.random_range(1..=28),
                rng.random_range(0..24),
                rng.random_range(0..60),
                rng.random_range(0..60)
            ),
            "email" => SafeEmail().fake_with_rng(rng),
            "uuid" => uuid::Builder::from_random_bytes(rng.random()).into_uuid().to_string(),
            "uri" | "url" | "iri" => format!(
                "https://{}/{}",
                self.hostname(),
                Word().fake_with_rng::<String, _>(self.rng)
            ),
            "hostname" | "idn-hostname" => self.hostname(),
            "ipv4" => format!(
                "{}.{}.{}.{}",
                rng.random_range(1..=223),
                rng.random::<u8>(),
                rng.random::<u8>(),
                rng.random_range(1..=254)
            ),
            "json-pointer" => format!(
                "/{}/{}",
                Word().fake_with_rng::<String, _>(rng),
                rng.random_range(0..10)
            ),
            "relative-json-pointer" => format!("{}/{}", rng.random_range(0..3), Word().fake_with_rng::<String, _>(rng)),
            "duration" => format!(
                "P{}DT{}H{}M",
                rng.random_range(0..30),
                rng.random_range(0..24),
                rng.random_range(0..60)
            ),
            "ipv6" => (0..8)
                .map(|_| format!("{:x}", rng.random::<u16>()))
                .collect::<Vec<_>>()
                .join(":"),
            _ => Word().fake_with_rng(rng),
        }
    }

    fn hostname(&mut self) -> String {
        let word: String = Word().fake_with_rng(self.rng);
        let suffix: String = DomainSuffix().fake_with_rng(self.rng);
        format!("{}.{suffix}", word.to_lowercase())
    }

    /// A string that fits the property's name: `email`, `city`, `name`...
    fn named_string(&mut self, name: Option<&str>) -> String {
        let name = name.unwrap_or("").to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
        let rng = &mut *self.rng;
        if has(&["email", "mail"]) {
            SafeEmail().fake_with_rng(rng)
        } else if has(&["firstname", "first_name", "given"]) {
            FirstName().fake_with_rng(rng)
        } else if has(&["lastname", "last_name", "surname", "family"]) {
            LastName().fake_with_rng(rng)
        } else if has(&["user", "login", "handle"]) {
            Username().fake_with_rng(rng)
        } else if has(&["name", "customer", "author", "owner"]) {
            Name().fake_with_rng(rng)
        } else if has(&["city", "town"]) {
            CityName().fake_with_rng(rng)
        } else if has(&["country"]) {
            CountryName().fake_with_rng(rng)
        } else if has(&["street", "address"]) {
            StreetName().fake_with_rng(rng)
        } else if has(&["zip", "postal"]) {
            ZipCode().fake_with_rng(rng)
        } else if has(&["phone", "mobile", "tel"]) {
            PhoneNumber().fake_with_rng(rng)
        } else if has(&["company", "organization", "organisation"]) {
            CompanyName().fake_with_rng(rng)
        } else if has(&["url", "uri", "link", "website"]) {
            self.formatted("uri")
        } else if name == "id" || name.ends_with("_id") || name.ends_with("id") && name.len() > 2 {
            uuid::Builder::from_random_bytes(rng.random()).into_uuid().to_string()
        } else if has(&["description", "comment", "message", "text", "note"]) {
            Sentence(3..8).fake_with_rng(rng)
        } else {
            Word().fake_with_rng(rng)
        }
    }

    fn number(&mut self, schema: &Map<String, Value>, name: Option<&str>, integer: bool) -> Result<Value, String> {
        let (mut low, mut high) = default_range(name, integer);
        let get = |key: &str| schema.get(key).and_then(Value::as_f64);
        let step = if integer { 1.0 } else { 0.01 };
        if let Some(min) = get("minimum") {
            low = min;
            if schema.get("exclusiveMinimum") == Some(&Value::Bool(true)) {
                low += step;
            }
            high = high.max(low + 100.0);
        }
        if let Some(max) = get("maximum") {
            high = max;
            if schema.get("exclusiveMaximum") == Some(&Value::Bool(true)) {
                high -= step;
            }
            if get("minimum").is_none() {
                low = low.min(high - 100.0);
            }
        }
        if let Some(min) = get("exclusiveMinimum") {
            low = low.max(min + step);
            high = high.max(low + 100.0);
        }
        if let Some(max) = get("exclusiveMaximum") {
            high = high.min(max - step);
        }
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
        let prefix: Vec<Value> = match schema
            .get("prefixItems")
            .or_else(|| schema.get("items").filter(|i| i.is_array()))
        {
            Some(Value::Array(prefix)) => prefix.clone(),
            _ => Vec::new(),
        };
        let rest = match schema.get("items") {
            Some(items) if !items.is_array() => Some(items.clone()),
            _ if !prefix.is_empty() => schema.get("additionalItems").cloned(),
            _ => Some(Value::Bool(true)),
        };
        // A `false` prefix item allows no item at that place: the array ends before it.
        if let Some(at) = prefix.iter().position(|item| item == &Value::Bool(false)) {
            max = Some(max.map_or(at, |m| m.min(at)));
        }
        let upper = max.unwrap_or(min.max(DEFAULT_MAX_ITEMS).max(prefix.len()));
        if upper < min {
            return Err(format!("maxItems {upper} is below minItems {min}"));
        }
        let shortest = depth >= MAX_REF_DEPTH;
        let count = if shortest {
            min
        } else {
            self.rng.random_range(min.max(1).min(upper)..=upper)
        };
        let unique = schema.get("uniqueItems") == Some(&Value::Bool(true));
        let mut items: Vec<Value> = Vec::with_capacity(count);
        let mut attempts = 0;
        while items.len() < count {
            let index = items.len();
            let item_schema = match (prefix.get(index), &rest) {
                (Some(schema), _) => schema.clone(),
                (None, Some(rest)) if rest != &Value::Bool(false) => rest.clone(),
                _ => break,
            };
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
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let max = count(schema, "maxProperties");
        let min = count(schema, "minProperties").unwrap_or(0);
        let shortest = depth >= MAX_REF_DEPTH;
        let mut object = Map::new();
        for (name, property) in &properties {
            // `false`: the property must be absent.
            if property == &Value::Bool(false) {
                if required.contains(&name.as_str()) {
                    return Err(format!("property '{name}' is required but its schema is false"));
                }
                continue;
            }
            let wanted = required.contains(&name.as_str())
                || (!shortest
                    && self.rng.random_bool(self.optional_probability)
                    && max.is_none_or(|m| object.len() < m));
            if wanted {
                object.insert(name.clone(), self.generate(property, Some(name), depth)?);
            }
        }
        for name in required {
            if !object.contains_key(name) {
                // Required but not described: any value will do.
                let value = self.any_scalar();
                object.insert(name.to_owned(), value);
            }
        }
        let additional = schema
            .get("additionalProperties")
            .cloned()
            .unwrap_or(Value::Bool(!shortest));
        let mut extra = 0;
        while object.len() < min && additional != Value::Bool(false) && extra < min + 10 {
            let key: String = Word().fake_with_rng(self.rng);
            let value = self.generate(&additional, Some(&key), depth)?;
            object.entry(key).or_insert(value);
            extra += 1;
        }
        Ok(Value::Object(object))
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

/// `base` with `extra`'s keywords laid over it (`properties` and `required` combined), minus `drop`.
fn merge(base: &Value, extra: &Value, drop: &[&str]) -> Value {
    let mut out = base.as_object().cloned().unwrap_or_default();
    for key in drop {
        out.remove(*key);
    }
    if let Some(extra) = extra.as_object() {
        for (key, value) in extra {
            if drop.contains(&key.as_str()) {
                continue;
            }
            match (key.as_str(), out.get_mut(key), value) {
                ("properties", Some(Value::Object(mine)), Value::Object(theirs)) => {
                    for (name, schema) in theirs {
                        mine.insert(name.clone(), schema.clone());
                    }
                }
                ("required", Some(Value::Array(mine)), Value::Array(theirs)) => {
                    for name in theirs {
                        if !mine.contains(name) {
                            mine.push(name.clone());
                        }
                    }
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
    }
    Value::Object(out)
}
