//! Topic schemas: a JSON Schema document in, a compiled validator out; a value in, every violation out.
//!
//! Schemas come from config.toml (inline tables or files beside it) and are compiled once, at startup, with the
//! `jsonschema` crate (drafts 4 to 2020-12; `$ref` within the document and, for schemas from files, to sibling
//! files). A violation names where (a JSON pointer into the value) and what was expected.

mod avro;
mod error;
mod random;

pub use avro::AvroCodec;
pub use error::SchemaError;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rand::Rng;
use serde_json::Value;

/// Values tried before generation gives up: enough for `oneOf` branches that overlap, few enough to answer fast.
const RANDOM_ATTEMPTS: usize = 25;

/// Chance that an optional property appears in a generated object, unless the caller (a topic's
/// `optional_probability`) gives its own: half, so documents vary without being sparse.
pub const OPTIONAL_PROBABILITY: f64 = 0.5;

/// A compiled JSON Schema.
pub struct Schema {
    document: Value,
    validator: jsonschema::Validator,
    /// Folder of the schema's file, where relative `$ref`s point.
    dir: Option<PathBuf>,
    /// Sibling documents read for `$ref`s while generating.
    siblings: Mutex<HashMap<PathBuf, Value>>,
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
        Ok(Self {
            document,
            validator,
            dir: file.and_then(Path::parent).map(Path::to_owned),
            siblings: Mutex::default(),
        })
    }

    /// Reads and compiles a schema file (JSON).
    pub fn load(file: &Path) -> Result<Self, SchemaError> {
        Self::compile(read_document(file)?, Some(file))
    }

    /// A random value valid against the schema, or why none could be made.
    pub fn random(&self, rng: &mut impl Rng, optional_probability: f64) -> Result<Value, SchemaError> {
        let mut last_problem = String::new();
        for _ in 0..RANDOM_ATTEMPTS {
            let mut generator = random::Generator {
                resolver: self,
                rng: &mut *rng,
                optional_probability,
            };
            let value = generator.value(&self.document).map_err(SchemaError::Generate)?;
            match self.violations(&value).into_iter().next() {
                None => return Ok(value),
                Some(problem) => last_problem = problem,
            }
        }
        Err(SchemaError::Unsatisfiable {
            attempts: RANDOM_ATTEMPTS,
            violation: last_problem,
        })
    }

    /// Every violation of `value`, as `<JSON pointer>: <what was expected>`; empty when valid.
    pub fn violations(&self, value: &Value) -> Vec<String> {
        self.validator
            .iter_errors(value)
            .map(|e| {
                let at = e.instance_path().as_str().to_owned();
                format!("{}: {e}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect()
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

impl random::Resolve for Schema {
    /// `#/pointer` in this document, or `file.json[#/pointer]` beside this schema's file.
    fn resolve(&self, reference: &str) -> Option<Value> {
        let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let pointer = percent_encoding::percent_decode_str(pointer).decode_utf8_lossy();
        if file.is_empty() {
            return self.document.pointer(&pointer).cloned();
        }
        let path = self.dir.as_ref()?.join(file);
        let mut siblings = self.siblings.lock().unwrap_or_else(PoisonError::into_inner);
        if !siblings.contains_key(&path) {
            let text = std::fs::read_to_string(&path).ok()?;
            siblings.insert(path.clone(), serde_json::from_str(&text).ok()?);
        }
        siblings.get(&path)?.pointer(&pointer).cloned()
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
                .contains("is the schema satisfiable")
        );
    }

    /// Families the generator used to refuse (issue 20 item 6), each made from the schema's meaning: counts written
    /// as decimals, more formats (checked by the validator, which validates formats), exact multiples, `false`
    /// sub-schemas, `not` of types.
    #[test]
    fn random_values_for_more_schema_families() {
        let families = [
            json!({"type": "string", "minLength": 1.0, "maxLength": 2.0}),
            json!({"type": "object", "minProperties": 1.0, "additionalProperties": {"type": "integer"}}),
            json!({"type": "array", "minItems": 2.0, "maxItems": 2.0, "items": {"type": "boolean"}}),
            json!({"type": "string", "format": "json-pointer"}),
            json!({"type": "string", "format": "relative-json-pointer"}),
            json!({"type": "string", "format": "duration"}),
            json!({"type": "number", "multipleOf": 0.0001, "minimum": 100, "maximum": 200}),
            json!({"type": "number", "multipleOf": 0.01}),
            json!({"type": "integer", "multipleOf": 0.5}),
            json!({"type": "object", "properties": {"gone": false, "here": {"type": "string"}}, "required": ["here"]}),
            json!({"type": "array", "prefixItems": [{"type": "integer"}, false], "minItems": 1}),
            json!({"not": {"type": "string"}}),
            json!({"not": {"type": ["string", "number", "null", "boolean"]}}),
        ];
        let mut rng = rand::rng();
        for schema in families {
            let compiled = Schema::compile(schema.clone(), None).unwrap();
            for _ in 0..50 {
                let value = compiled
                    .random(&mut rng, 0.5)
                    .unwrap_or_else(|e| panic!("{schema}: {e}"));
                assert!(compiled.violations(&value).is_empty(), "{schema}: {value}");
                if let (Some(multiple), Some(n)) = (schema["multipleOf"].as_f64(), value.as_f64()) {
                    assert_eq!(
                        (n / multiple).fract(),
                        0.0,
                        "{n} is a multiple of {multiple} in floating point too"
                    );
                }
            }
        }
        let impossible = json!({"type": "object", "properties": {"gone": false}, "required": ["gone"]});
        let error = Schema::compile(impossible, None)
            .unwrap()
            .random(&mut rng, 0.5)
            .unwrap_err();
        assert!(
            error.to_string().contains("'gone' is required but its schema is false"),
            "{error}"
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
