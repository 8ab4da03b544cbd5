//! `$ref`s for the random-value generator: a schema document (and the sibling files it names) in, the sub-schema a
//! reference names out.
//!
//! Every `$ref` and `$dynamicRef` is first made absolute against the `$id`s around it, so a sub-schema carried
//! elsewhere (met into another by `allOf`, or reached through a reference) still names the same target. Lookups go
//! through the `referencing` registry the validator is built on, which knows `$id`s, `$anchor`s, `$dynamicAnchor`s
//! and JSON pointers. A `$dynamicRef` is followed as a `$ref` to its anchor in the same resource: the check after
//! generation judges the dynamic scope.

use std::path::Path;

use jsonschema::{Registry, Retrieve, Uri, uri};
use serde_json::Value;

/// Where a schema given inline (not from a file) is taken to live: the validator's own default.
const INLINE_BASE: &str = "json-schema:///";

/// Keywords whose values are data, never schemas: nothing inside them is a reference.
const DATA_KEYWORDS: [&str; 4] = ["const", "enum", "examples", "default"];

pub struct References {
    /// The document with its references made absolute: where generation starts.
    root: Value,
    registry: Registry<'static>,
    base: Uri<String>,
}

impl References {
    /// The registry of `document` (read from `file`, when it was), or why one cannot be made: a reference to a
    /// document that is neither inside it nor a file beside it.
    pub fn new(document: &Value, file: Option<&Path>) -> Result<Self, String> {
        let base = match file {
            Some(file) => {
                let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
                format!("file://{}", absolute.display())
            }
            None => INLINE_BASE.to_owned(),
        };
        let base = uri::from_str(&base).map_err(|e| e.to_string())?;
        let mut document = document.clone();
        absolutize(&mut document, &base);
        let registry = Registry::new()
            .retriever(SiblingFiles)
            .add(base.as_str(), document.clone())
            .and_then(|builder| builder.prepare())
            .map_err(|e| e.to_string())?;
        Ok(Self {
            root: document,
            registry,
            base,
        })
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The sub-schema `reference` (absolute, as the generator's copy of the document carries them) names.
    pub fn resolve(&self, reference: &str) -> Option<&Value> {
        let resolver = self.registry.resolver(self.base.clone());
        resolver.lookup(reference).ok().map(|found| found.contents())
    }
}

/// Every `$ref` and `$dynamicRef` in `schema` rewritten as an absolute URI, resolved against `base` and the `$id`s
/// on the way down.
fn absolutize(schema: &mut Value, base: &Uri<String>) {
    match schema {
        Value::Object(map) => {
            let base = match map.get("$id").and_then(Value::as_str) {
                Some(id) => uri::resolve_against(&base.borrow(), id).unwrap_or_else(|_| base.clone()),
                None => base.clone(),
            };
            for keyword in ["$ref", "$dynamicRef"] {
                if let Some(Value::String(reference)) = map.get_mut(keyword)
                    && let Ok(absolute) = uri::resolve_against(&base.borrow(), reference)
                {
                    *reference = absolute.as_str().to_owned();
                }
            }
            for (key, value) in map.iter_mut() {
                if !DATA_KEYWORDS.contains(&key.as_str()) {
                    absolutize(value, &base);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| absolutize(item, base)),
        _ => {}
    }
}

/// Reads `file://` references (schemas beside the one loaded), made absolute like the schema itself.
struct SiblingFiles;

impl Retrieve for SiblingFiles {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri
            .as_str()
            .strip_prefix("file://")
            .ok_or_else(|| format!("{} is not a file beside the schema; only those are read", uri.as_str()))?;
        let path = percent_encoding::percent_decode_str(path.split('#').next().unwrap_or(path)).decode_utf8()?;
        let mut document: Value = serde_json::from_str(&std::fs::read_to_string(path.as_ref())?)?;
        absolutize(&mut document, uri);
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_resolve_through_ids_and_anchors() {
        let document = json!({
            "$id": "https://example.com/root.json",
            "$defs": {
                "a": {"$id": "nested/a.json", "$defs": {"b": {"$anchor": "here", "type": "integer"}}, "$ref": "#here"},
                "c": {"$ref": "nested/a.json#/$defs/b"}
            },
            "$ref": "#/$defs/c"
        });
        let references = References::new(&document, None).unwrap();
        let root = references.resolve("https://example.com/root.json").unwrap();
        assert_eq!(root["$ref"], json!("https://example.com/root.json#/$defs/c"));
        assert_eq!(
            root["$defs"]["a"]["$ref"],
            json!("https://example.com/nested/a.json#here")
        );
        assert_eq!(
            *references.resolve("https://example.com/nested/a.json#here").unwrap(),
            json!({"$anchor": "here", "type": "integer"})
        );
        assert_eq!(
            references
                .resolve("https://example.com/nested/a.json#/$defs/b")
                .unwrap()["type"],
            json!("integer")
        );
    }
}
