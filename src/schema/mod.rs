//! Topic schemas: a JSON Schema document in, a compiled validator out; a value in, every violation out.
//!
//! Schemas come from config.toml (inline tables or files beside it) and are compiled once, at startup, with the
//! `jsonschema` crate (drafts 4 to 2020-12; `$ref` within the document and, for schemas from files, to sibling
//! files). A violation names where (a JSON pointer into the value) and what was expected.

use std::fmt;
use std::path::Path;

use serde_json::Value;

/// A compiled JSON Schema.
pub struct Schema {
    document: Value,
    validator: jsonschema::Validator,
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
    pub fn compile(document: Value, file: Option<&Path>) -> Result<Self, String> {
        let mut options = jsonschema::options();
        if let Some(file) = file {
            options = options.with_base_uri(format!("file://{}", file.display()));
        }
        let validator = options.build(&document).map_err(|e| {
            let at = e.instance_path().as_str();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })?;
        Ok(Self { document, validator })
    }

    /// Reads and compiles a schema file (JSON).
    pub fn load(file: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let document: Value =
            serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
        Self::compile(document, Some(file))
    }

    pub fn document(&self) -> &Value {
        &self.document
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
    fn bad_schemas_say_why() {
        let error = Schema::compile(json!({"type": "strange"}), None).unwrap_err();
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
