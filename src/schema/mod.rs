//! Topic schemas: a JSON Schema document in, a compiled validator out; a value in, every violation out.
//!
//! Schemas come from config.toml (inline tables or files beside it) and are compiled once, at startup, with the
//! `jsonschema` crate (drafts 4 to 2020-12; `$ref` within the document and, for schemas from files, to sibling
//! files). A violation names where (a JSON pointer into the value) and what was expected.

mod avro;
mod error;
mod random;
mod refs;

pub use avro::AvroCodec;
pub use error::SchemaError;

use std::fmt;
use std::path::Path;

use rand::Rng;
use serde_json::Value;

/// Values tried before generation gives up: enough for `oneOf` branches that overlap, few enough to answer fast.
/// Measured on `allOf: [anyOf: [integer, string], oneOf: [{minimum: 5}, {maxLength: 2}]]` (a value made for one
/// branch often meets the other too): 22% of single attempts are valid, so 25 attempts refused about one value in
/// 440 (a test asking for 200 values failed in CI), 100 about one in 3 * 10^10.
const RANDOM_ATTEMPTS: usize = 100;

/// Violations listed for one value; more are counted.
const MAX_VIOLATIONS: usize = 100;

/// JSON values (of any depth) in a value whose violations are all looked for (see [`Schema::violations`]).
const FULL_REPORT_NODES: usize = 10_000;

/// Whether `value` holds at most `limit` JSON values, itself included (stops counting past it).
fn nodes_at_most(value: &Value, limit: usize) -> bool {
    fn count(value: &Value, seen: &mut usize, limit: usize) -> bool {
        *seen += 1;
        if *seen > limit {
            return false;
        }
        match value {
            Value::Array(items) => items.iter().all(|item| count(item, seen, limit)),
            Value::Object(fields) => fields.values().all(|field| count(field, seen, limit)),
            _ => true,
        }
    }
    count(value, &mut 0, limit)
}

/// Chance that an optional property appears in a generated object, unless the caller (a topic's
/// `optional_probability`) gives its own: half, so documents vary without being sparse.
pub const OPTIONAL_PROBABILITY: f64 = 0.5;

/// A compiled JSON Schema.
pub struct Schema {
    document: Value,
    validator: jsonschema::Validator,
    /// Where the generator's `$ref`s lead, or why they lead nowhere (a document it cannot read).
    references: Result<refs::References, String>,
    patterns: random::Patterns,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("document", &self.document)
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// Compiles `document`; `file` (when the schema came from one) is where relative `$ref`s are looked up.
    pub fn compile(document: Value, file: Option<&Path>) -> Result<Self, SchemaError> {
        // Formats (email, date-time, uuid...) are checked, not just annotations: a schema that names one means it.
        let mut options = jsonschema::options().should_validate_formats(true);
        if let Some(file) = file {
            // A file URI must be absolute for relative `$ref`s to resolve against it.
            let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
            options = options.with_base_uri(format!("file://{}", absolute.display()));
        }
        let validator = options.build(&document).map_err(|e| SchemaError::Invalid {
            at: e.instance_path().as_str().to_owned(),
            message: e.to_string(),
        })?;
        let references = refs::References::new(&document, file);
        Ok(Self {
            document,
            validator,
            references,
            patterns: random::Patterns::default(),
        })
    }

    /// Reads and compiles a schema file (JSON).
    pub fn load(file: &Path) -> Result<Self, SchemaError> {
        Self::compile(read_document(file)?, Some(file))
    }

    /// A random value valid against the schema, or why none could be made, naming the keyword that stopped it.
    pub fn random(&self, rng: &mut impl Rng, optional_probability: f64) -> Result<Value, SchemaError> {
        let mut last_problem = None;
        for _ in 0..RANDOM_ATTEMPTS {
            let mut generator = random::Generator {
                resolver: self,
                patterns: &self.patterns,
                rng: &mut *rng,
                optional_probability,
            };
            let root = self.references.as_ref().map_or(&self.document, refs::References::root);
            let problem = match generator.value(root) {
                Ok(value) => {
                    let broken = self
                        .validator
                        .iter_errors(&value)
                        .next()
                        .map(|error| Unsatisfied::Broken {
                            keyword: error.kind().keyword().to_owned(),
                            at: pointer_or_root(error.instance_path().as_str()),
                            message: error.to_string(),
                        });
                    match broken {
                        None => return Ok(value),
                        Some(broken) => broken,
                    }
                }
                // The generator's reasons are about the schema, not chance: another attempt could only pick another
                // branch, so it is tried, and the reason kept if none works.
                Err(reason) => Unsatisfied::Refused(reason),
            };
            last_problem = Some(problem);
        }
        Err(match last_problem {
            Some(Unsatisfied::Refused(reason)) => SchemaError::Generate(reason),
            Some(Unsatisfied::Broken { keyword, at, message }) => SchemaError::Unsatisfiable {
                attempts: RANDOM_ATTEMPTS,
                keyword,
                violation: format!("{at}: {message}"),
            },
            None => SchemaError::Generate("no attempt was made".into()),
        })
    }

    /// Every violation of `value`, as `<JSON pointer>: <what was expected>`, up to [`MAX_VIOLATIONS`] (then a
    /// count of the rest); empty when valid. A value of more than [`FULL_REPORT_NODES`] JSON values gets its first
    /// violation only: `jsonschema` makes every error before it gives the first, so a 1 MiB array of empty objects
    /// would cost hundreds of megabytes to report in full.
    pub fn violations(&self, value: &Value) -> Vec<String> {
        let said = |e: jsonschema::ValidationError<'_>| format!("{}: {e}", pointer_or_root(e.instance_path().as_str()));
        if self.validator.is_valid(value) {
            return Vec::new();
        }
        if !nodes_at_most(value, FULL_REPORT_NODES) {
            return match self.validator.validate(value) {
                Ok(()) => Vec::new(),
                Err(first) => vec![format!("{} (a large value: its first violation only)", said(first))],
            };
        }
        let mut errors = self.validator.iter_errors(value);
        let mut listed: Vec<String> = errors.by_ref().take(MAX_VIOLATIONS).map(said).collect();
        let rest = errors.count();
        if rest > 0 {
            listed.push(format!("and {rest} more violations"));
        }
        listed
    }
}

/// A JSON document from a file (a JSON Schema, an Avro schema), or why it could not be read.
pub fn read_document(file: &Path) -> Result<Value, SchemaError> {
    let text = std::fs::read_to_string(file).map_err(|source| SchemaError::Read {
        path: file.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| SchemaError::NotJson {
        path: file.to_owned(),
        source,
    })
}

/// Why one attempt at a random value failed.
enum Unsatisfied {
    /// The generator could not follow the schema (an empty `enum`, a `false` required property...).
    Refused(String),
    /// The value it made broke `keyword` at `at`.
    Broken {
        keyword: String,
        at: String,
        message: String,
    },
}

/// A JSON pointer into a value, `/` for the value itself.
fn pointer_or_root(pointer: &str) -> String {
    if pointer.is_empty() {
        "/".to_owned()
    } else {
        pointer.to_owned()
    }
}

impl random::Resolve for Schema {
    fn resolve(&self, reference: &str) -> Option<&Value> {
        self.references.as_ref().ok()?.resolve(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> Schema {
        Schema::compile(
            json!({
                "type": "object",
                "required": ["item", "quantity"],
                "properties": {
                    "item": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}}
                },
                "$defs": {"tag": {"type": "string", "maxLength": 3}}
            }),
            None,
        )
        .unwrap()
    }

    /// Reporting stays bounded whatever the value: at most a hundred listed, and a large value's first only.
    #[test]
    fn many_violations_are_counted_and_a_large_values_first_is_given() {
        let schema = order();
        let tags = |n: usize| json!({"item": "book", "quantity": 1, "tags": vec!["toolong"; n]});
        let some = schema.violations(&tags(150));
        assert_eq!(some.len(), MAX_VIOLATIONS + 1, "{:?}", some.last());
        assert_eq!(some.last().unwrap(), "and 50 more violations");
        let large = schema.violations(&tags(50_000));
        assert_eq!(large.len(), 1, "{large:?}");
        assert!(
            large[0].ends_with("(a large value: its first violation only)"),
            "{large:?}"
        );
        assert!(schema.violations(&tags(0)).is_empty());
    }

    #[test]
    fn every_violation_is_listed_with_its_pointer() {
        let schema = order();
        assert!(schema.violations(&json!({"item": "book", "quantity": 1})).is_empty());
        let violations = schema.violations(&json!({"quantity": -1, "tags": ["ok", "toolong"]}));
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(
            violations.contains(&"/quantity: -1 is less than the minimum of 1".to_owned()),
            "{violations:?}"
        );
        assert!(
            violations
                .iter()
                .any(|v| v.starts_with("/: ") && v.contains("\"item\" is a required property"))
        );
        assert!(violations.iter().any(|v| v.starts_with("/tags/1: ")), "{violations:?}");
    }

    #[test]
    fn random_values_follow_the_schema() {
        let schema = order();
        let mut rng = rand::rng();
        for _ in 0..200 {
            let value = schema.random(&mut rng, OPTIONAL_PROBABILITY).unwrap();
            assert!(schema.violations(&value).is_empty(), "{value}");
        }
        let impossible = Schema::compile(json!({"type": "integer", "minimum": 5, "maximum": 1}), None).unwrap();
        assert!(impossible.random(&mut rng, 0.5).is_err());
        let contradictory = Schema::compile(json!({"allOf": [{"type": "string"}, {"type": "integer"}]}), None).unwrap();
        assert!(
            contradictory
                .random(&mut rng, 0.5)
                .unwrap_err()
                .to_string()
                .contains("`type`: the parts of the schema allow no type in common")
        );
    }

    #[test]
    fn bad_schemas_say_why() {
        let error = Schema::compile(json!({"type": "strange"}), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("strange"), "{error}");
    }

    #[test]
    fn files_can_refer_to_siblings() {
        let dir = std::env::temp_dir().join(format!("luka-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("money.json"), r#"{"type": "number", "exclusiveMinimum": 0}"#).unwrap();
        std::fs::write(
            dir.join("order.json"),
            r#"{"type": "object", "properties": {"price": {"$ref": "money.json"}}}"#,
        )
        .unwrap();
        let schema = Schema::load(&dir.join("order.json")).unwrap();
        assert!(schema.violations(&json!({"price": 2.5})).is_empty());
        assert_eq!(schema.violations(&json!({"price": 0})).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
