//! Avro topics: an Avro schema (JSON) in, a codec out that turns JSON data into Avro binary (checked by the Avro
//! schema as it is encoded), optionally in Confluent's wire format (magic byte 0, 4-byte big-endian schema id), and
//! that makes random values by way of a JSON Schema derived from the Avro one.

use std::fmt;

use apache_avro::types::Value as AvroValue;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::{Schema, SchemaError};

/// An Avro schema compiled for encoding.
pub struct AvroCodec {
    schema: apache_avro::Schema,
    /// Confluent framing: the registry id written after the magic byte.
    schema_id: Option<u32>,
    /// The same shapes as a JSON Schema, for random values.
    derived: Schema,
}

impl fmt::Debug for AvroCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvroCodec")
            .field("schema", &self.schema)
            .field("schema_id", &self.schema_id)
            .finish_non_exhaustive()
    }
}

impl AvroCodec {
    pub fn new(document: &Value, schema_id: Option<u32>) -> Result<Self, SchemaError> {
        let schema = apache_avro::Schema::parse(document).map_err(SchemaError::NotAvro)?;
        let mut definitions = Map::new();
        let root = to_json_schema(document, None, &mut definitions).map_err(SchemaError::AvroShape)?;
        let derived = json!({ "$defs": definitions, "allOf": [root] });
        let derived = Schema::compile(derived, None)?;
        Ok(Self {
            schema,
            schema_id,
            derived,
        })
    }

    /// `data` as Avro binary (framed when a schema id is set); an error says how it does not fit the schema.
    pub fn encode(&self, data: &Value) -> Result<Vec<u8>, SchemaError> {
        let value = AvroValue::from(data.clone())
            .resolve(&self.schema)
            .map_err(SchemaError::AvroMismatch)?;
        let datum = apache_avro::to_avro_datum(&self.schema, value).map_err(SchemaError::AvroEncode)?;
        Ok(match self.schema_id {
            Some(id) => [&[0u8][..], &id.to_be_bytes(), &datum].concat(),
            None => datum,
        })
    }

    /// Avro binary (framed or not, as configured) back to JSON: what a consumer does, for the round-trip tests.
    #[cfg(test)]
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let mut body = bytes;
        if let Some(id) = self.schema_id {
            let framed = bytes.get(..5).ok_or("shorter than the Confluent header")?;
            if framed[0] != 0 || framed[1..5] != id.to_be_bytes() {
                return Err(format!("not framed with magic byte 0 and schema id {id}"));
            }
            body = &bytes[5..];
        }
        let value = apache_avro::from_avro_datum(&self.schema, &mut body, None).map_err(|e| e.to_string())?;
        Value::try_from(value).map_err(|e| e.to_string())
    }

    /// A random value that fits the Avro schema, as JSON.
    pub fn random(&self, rng: &mut impl Rng, optional_probability: f64) -> Result<Value, SchemaError> {
        for _ in 0..super::RANDOM_ATTEMPTS {
            let value = self.derived.random(rng, optional_probability)?;
            if self.encode(&value).is_ok() {
                return Ok(value);
            }
        }
        Err(SchemaError::NoAvroValue)
    }
}

/// The JSON Schema of the JSON that [`AvroCodec::encode`] accepts for `avro`. Named types go to `definitions`.
fn to_json_schema(
    avro: &Value,
    namespace: Option<&str>,
    definitions: &mut Map<String, Value>,
) -> Result<Value, String> {
    Ok(match avro {
        Value::String(name) => match name.as_str() {
            "null" => json!({"type": "null"}),
            "boolean" => json!({"type": "boolean"}),
            "int" => json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX}),
            "long" => json!({"type": "integer", "minimum": -(1_i64 << 53), "maximum": 1_i64 << 53}),
            "float" | "double" => json!({"type": "number"}),
            "string" | "bytes" => json!({"type": "string"}),
            named => json!({"$ref": format!("#/$defs/{}", full_name(named, namespace))}),
        },
        Value::Array(branches) => {
            let any_of = branches
                .iter()
                .map(|b| to_json_schema(b, namespace, definitions))
                .collect::<Result<Vec<_>, _>>()?;
            json!({ "anyOf": any_of })
        }
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
            let name = map.get("name").and_then(Value::as_str);
            let own_namespace = map.get("namespace").and_then(Value::as_str).or(namespace);
            let schema = match kind {
                "record" | "error" => {
                    let mut properties = Map::new();
                    let mut required = Vec::new();
                    for field in map.get("fields").and_then(Value::as_array).into_iter().flatten() {
                        let field_name = field
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or("a record field has no name")?;
                        let field_type = field.get("type").ok_or("a record field has no type")?;
                        properties.insert(
                            field_name.to_owned(),
                            to_json_schema(field_type, own_namespace, definitions)?,
                        );
                        if field.get("default").is_none() {
                            required.push(Value::from(field_name));
                        }
                    }
                    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
                }
                "enum" => json!({"enum": map.get("symbols").cloned().unwrap_or(json!([]))}),
                "array" => {
                    json!({"type": "array", "items": to_json_schema(map.get("items").unwrap_or(&json!("null")), own_namespace, definitions)?})
                }
                "map" => {
                    json!({"type": "object", "additionalProperties": to_json_schema(map.get("values").unwrap_or(&json!("null")), own_namespace, definitions)?})
                }
                "fixed" => {
                    let size = map.get("size").and_then(Value::as_u64).unwrap_or(0);
                    json!({"type": "string", "minLength": size, "maxLength": size, "pattern": "^[a-z]*$"})
                }
                primitive => to_json_schema(&Value::from(primitive), own_namespace, definitions)?,
            };
            match name {
                Some(name) => {
                    let full = full_name(name, own_namespace);
                    definitions.insert(full.clone(), schema);
                    json!({"$ref": format!("#/$defs/{full}")})
                }
                None => schema,
            }
        }
        other => return Err(format!("{other} is not an Avro schema")),
    })
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) if !name.contains('.') && !namespace.is_empty() => format!("{namespace}.{name}"),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Value {
        json!({
            "type": "record", "name": "Order", "namespace": "shop",
            "fields": [
                {"name": "id", "type": "string"},
                {"name": "quantity", "type": "int"},
                {"name": "price", "type": "double"},
                {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["PLACED", "PAID"]}},
                {"name": "note", "type": ["null", "string"], "default": null},
                {"name": "tags", "type": {"type": "array", "items": "string"}}
            ]
        })
    }

    #[test]
    fn data_round_trips_framed_and_plain() {
        let data = json!({"id": "o-1", "quantity": 2, "price": 9.5, "status": "PAID", "note": null, "tags": ["a"]});
        for id in [None, Some(42)] {
            let codec = AvroCodec::new(&order(), id).unwrap();
            let bytes = codec.encode(&data).unwrap();
            if id.is_some() {
                assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42]);
            }
            let back = codec.decode(&bytes).unwrap();
            assert_eq!(back["id"], "o-1");
            assert_eq!(back["quantity"], 2);
        }
    }

    #[test]
    fn data_that_does_not_fit_is_refused() {
        let codec = AvroCodec::new(&order(), None).unwrap();
        let error = codec
            .encode(&json!({"id": "o-1", "quantity": "two"}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("does not match the Avro schema"), "{error}");
        assert!(AvroCodec::new(&json!({"type": "record"}), None).is_err());
    }

    #[test]
    fn random_values_fit() {
        let codec = AvroCodec::new(&order(), Some(7)).unwrap();
        let mut rng = rand::rng();
        for _ in 0..200 {
            let value = codec.random(&mut rng, 0.5).unwrap();
            codec.encode(&value).unwrap();
        }
    }
}
