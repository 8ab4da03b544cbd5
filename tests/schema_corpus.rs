//! Property test: for every schema in `tests/schemas/`, 1,000 generated values all validate against it.

use luka::schema::{OPTIONAL_PROBABILITY, Schema};

const VALUES_PER_SCHEMA: usize = 1_000;

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
        for _ in 0..VALUES_PER_SCHEMA {
            match schema.random(&mut rng, OPTIONAL_PROBABILITY) {
                Ok(value) => {
                    let violations = schema.violations(&value);
                    if !violations.is_empty() {
                        failures.push(format!("{}: {value} {violations:?}", file.display()));
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
