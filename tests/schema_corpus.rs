//! Property tests of random values: every value generated for a schema validates against it, judged by luka's own
//! validator and by a second, independent one (boon).
//!
//! Two corpora: this project's `tests/schemas/` (47 schemas of the kinds topics use, 1,000 values each), and a
//! sample of the JSON Schema Test Suite (`tests/data/json-schema-suite/`: every draft 2020-12 schema the suite
//! shows a valid instance of), where at least 98% must get values and the rest a refusal naming a keyword.

mod common;

use common::schema::SecondOpinion;
use luka::schema::{OPTIONAL_PROBABILITY, Schema};
use serde_json::{Value, json};

const VALUES_PER_SCHEMA: usize = 1_000;

/// Values asked of each schema of the conformance sample: a schema counts as served when every one comes.
const VALUES_PER_SUITE_SCHEMA: usize = 40;

/// Share of the conformance sample that must get values, in percent.
const SUITE_TARGET_PERCENT: usize = 98;

/// Ok when luka's validator and boon both find `value` valid; else what the first to object said.
fn both_accept(schema: &Schema, second: &SecondOpinion, value: &Value) -> Result<(), String> {
    let violations = schema.violations(value);
    if !violations.is_empty() {
        return Err(format!("is invalid to luka: {violations:?}"));
    }
    second.check(value).map_err(|why| format!("is invalid to boon: {why}"))
}

#[test]
fn every_generated_value_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "the corpus has {} schemas", files.len());
    let mut rng = rand::rng();
    let mut failures = Vec::new();
    for file in &files {
        let schema = Schema::load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let second = SecondOpinion::file(file).unwrap_or_else(|e| panic!("{}: boon: {e}", file.display()));
        for _ in 0..VALUES_PER_SCHEMA {
            match schema.random(&mut rng, OPTIONAL_PROBABILITY) {
                Ok(value) => {
                    if let Err(why) = both_accept(&schema, &second, &value) {
                        failures.push(format!("{}: {value} {why}", file.display()));
                        break;
                    }
                }
                Err(e) => {
                    failures.push(format!("{}: {e}", file.display()));
                    break;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_conformance_suite_sample_gets_valid_values() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/json-schema-suite/draft2020-12.json");
    let sample: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(sample.len() >= 300, "the sample has {} schemas", sample.len());
    let mut rng = rand::rng();
    let (mut served, mut refused, mut invalid) = (0, Vec::new(), Vec::new());
    for entry in &sample {
        let name = format!(
            "{} / {}",
            entry["file"].as_str().unwrap(),
            entry["description"].as_str().unwrap()
        );
        let document = &entry["schema"];
        let schema = Schema::compile(document.clone(), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let second = SecondOpinion::inline(document).unwrap_or_else(|e| panic!("{name}: boon: {e}"));
        let mut all_came = true;
        for _ in 0..VALUES_PER_SUITE_SCHEMA {
            match schema.random(&mut rng, OPTIONAL_PROBABILITY) {
                Ok(value) => {
                    if let Err(why) = both_accept(&schema, &second, &value) {
                        invalid.push(format!("{name}: {value} {why}"));
                    }
                }
                Err(e) => {
                    refused.push(format!("{name}: {e}"));
                    all_came = false;
                    break;
                }
            }
        }
        served += usize::from(all_came);
    }
    println!(
        "values for {served} of {} schemas ({:.1}%); refused:\n{}",
        sample.len(),
        100.0 * served as f64 / sample.len() as f64,
        refused.join("\n")
    );
    assert!(invalid.is_empty(), "invalid values:\n{}", invalid.join("\n"));
    assert!(
        served * 100 >= sample.len() * SUITE_TARGET_PERCENT,
        "values for only {served} of {} schemas; refused:\n{}",
        sample.len(),
        refused.join("\n")
    );
    let unnamed: Vec<&String> = refused.iter().filter(|r| !r.contains('`')).collect();
    assert!(unnamed.is_empty(), "refusals that name no keyword: {unnamed:?}");
}

/// Families the generator once refused, each made from the schema's meaning, and each value judged by both
/// validators: counts written as decimals, formats, exact decimal multiples, `false` sub-schemas, `not`,
/// references through `$id`, `$anchor` and relative URIs, conditionals, nested combinators, `unevaluatedItems`
/// beside `anyOf`/`oneOf`, dependencies and `contains`.
#[test]
fn random_values_for_each_schema_family() {
    let families = [
        json!({"type": "string", "minLength": 1.0, "maxLength": 2.0}),
        json!({"type": "object", "minProperties": 1.0, "additionalProperties": {"type": "integer"}}),
        json!({"type": "array", "minItems": 2.0, "maxItems": 2.0, "items": {"type": "boolean"}}),
        json!({"type": "string", "format": "json-pointer"}),
        json!({"type": "string", "format": "relative-json-pointer"}),
        json!({"type": "string", "format": "duration"}),
        json!({"type": "string", "format": "idn-email"}),
        json!({"type": "string", "format": "uri-reference"}),
        json!({"type": "number", "multipleOf": 0.0001, "minimum": 100, "maximum": 200}),
        json!({"type": "number", "multipleOf": 0.01}),
        json!({"type": "integer", "multipleOf": 0.5}),
        json!({"allOf": [{"multipleOf": 2}], "anyOf": [{"multipleOf": 3}], "oneOf": [{"multipleOf": 5}]}),
        json!({"type": "object", "properties": {"gone": false, "here": {"type": "string"}}, "required": ["here"]}),
        json!({"type": "array", "prefixItems": [{"type": "integer"}, false], "minItems": 1}),
        json!({"not": {"type": "string"}}),
        json!({"not": {"type": ["string", "number", "null", "boolean"]}}),
        // References: `$id` changes the base, `$anchor` names a place, relative URIs resolve against the base.
        json!({
            "$id": "https://example.com/root.json",
            "properties": {"price": {"$ref": "money.json"}, "tag": {"$ref": "#short"}},
            "required": ["price", "tag"],
            "$defs": {
                "money": {"$id": "money.json", "type": "number", "exclusiveMinimum": 0, "maximum": 10},
                "tag": {"$anchor": "short", "type": "string", "maxLength": 3}
            }
        }),
        json!({
            "$id": "urn:example:root",
            "$ref": "urn:example:leaf",
            "$defs": {"leaf": {"$id": "urn:example:leaf", "type": "integer", "minimum": 7}}
        }),
        json!({
            "$id": "https://example.com/tree",
            "type": "object",
            "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "tree"}}},
            "required": ["value"]
        }),
        // Conditionals, boolean ones included.
        json!({"if": {"minimum": 10}, "then": {"multipleOf": 5}, "else": {"maximum": 3}, "type": "integer"}),
        json!({"if": true, "then": {"const": "yes"}, "else": {"const": "no"}}),
        json!({"if": false, "then": {"const": "yes"}, "else": {"const": "no"}}),
        json!({"if": {"const": 1}, "then": false}),
        json!({"type": "object", "if": {"required": ["kind"]}, "then": {"properties": {"kind": {"enum": ["a", "b"]}}}}),
        // Combinators inside combinators.
        json!({"allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"oneOf": [{"minimum": 5}, {"maxLength": 2}]}]}),
        json!({"anyOf": [{"allOf": [{"type": "string"}, {"minLength": 3}]}, {"oneOf": [{"type": "null"}, {"const": 4}]}]}),
        // `unevaluatedItems` beside `anyOf`/`oneOf`.
        json!({
            "prefixItems": [{"const": "foo"}],
            "anyOf": [{"prefixItems": [true, {"const": "bar"}]}, {"prefixItems": [true, true, {"const": "baz"}]}],
            "unevaluatedItems": false,
            "type": "array"
        }),
        json!({
            "type": "array",
            "oneOf": [{"prefixItems": [{"const": "a"}]}, {"prefixItems": [{"const": "b"}, {"type": "integer"}]}],
            "unevaluatedItems": false
        }),
        // Dependencies, `contains`, `propertyNames`, `patternProperties`.
        json!({"type": "object", "properties": {"card": {"type": "string"}}, "dependentRequired": {"card": ["billing"]}}),
        json!({"type": "object", "dependentSchemas": {"card": {"required": ["billing"], "properties": {"billing": {"type": "integer"}}}}}),
        json!({"type": "array", "contains": {"const": 7}, "minContains": 2, "maxContains": 3, "items": {"type": "integer"}}),
        json!({"type": "object", "propertyNames": {"pattern": "^[a-c]+$"}, "minProperties": 2}),
        json!({"type": "object", "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": false, "minProperties": 1}),
    ];
    let mut rng = rand::rng();
    for schema in families {
        let compiled = Schema::compile(schema.clone(), None).unwrap();
        let second = SecondOpinion::inline(&schema).unwrap_or_else(|e| panic!("{schema}: boon: {e}"));
        for _ in 0..200 {
            let value = compiled
                .random(&mut rng, 0.5)
                .unwrap_or_else(|e| panic!("{schema}: {e}"));
            both_accept(&compiled, &second, &value).unwrap_or_else(|why| panic!("{schema}: {value} {why}"));
            if let (Some(multiple), Some(n)) = (schema["multipleOf"].as_f64(), value.as_f64()) {
                assert_eq!(
                    (n / multiple).fract(),
                    0.0,
                    "{n} is a multiple of {multiple} in floating point too"
                );
            }
        }
    }
}

/// What cannot be satisfied is refused, naming the keyword that stopped it.
#[test]
fn refusals_name_the_keyword() {
    let cases = [
        (
            json!({"type": "object", "properties": {"gone": false}, "required": ["gone"]}),
            "'gone' is required but its schema is false",
        ),
        (json!({"allOf": [{"type": "string"}, {"type": "integer"}]}), "`type`"),
        (json!({"allOf": [{"enum": [1, 2]}, {"enum": [3]}]}), "`enum`"),
        (
            json!({"type": "integer", "minimum": 5, "maximum": 1}),
            "no integer lies between 5 and 1",
        ),
        (json!({"not": {"anyOf": [true]}}), "`not`"),
        (
            json!({"type": "array", "contains": {"type": "integer"}, "minContains": 3, "maxItems": 2}),
            "`minContains`",
        ),
    ];
    let mut rng = rand::rng();
    for (schema, expected) in cases {
        let error = Schema::compile(schema.clone(), None)
            .unwrap()
            .random(&mut rng, 0.5)
            .map(|value| panic!("{schema} gave {value}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{schema}: {error}");
    }
}
