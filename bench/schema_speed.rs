//! Random values generated and values validated per second, for the realistic order schema of
//! `examples/event-generator` (nested customer through a sibling-file `$ref`, an array of items, formats, patterns,
//! enums). Each round generates for a fixed time, then validates the values it generated; medians are printed.
//!
//! Run: `bench/run.sh schema` (or `cargo bench --bench schema_speed -- [--rounds N] [--seconds S]`).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{median, option};
use luka::schema::{OPTIONAL_PROBABILITY, Schema};

fn main() {
    let rounds = option("--rounds", 5) as usize;
    let seconds = option("--seconds", 2);
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/event-generator/schemas/order.json"
    );
    let schema = Schema::load(std::path::Path::new(file)).expect("the example's order schema");
    let mut rng = rand::rng();
    println!(
        "schema: examples/event-generator/schemas/order.json; {rounds} rounds of {seconds}s; one thread of {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let (mut generated, mut validated) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut values = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(seconds) {
            values.push(schema.random(&mut rng, OPTIONAL_PROBABILITY).expect("a valid value"));
        }
        let generate_rate = values.len() as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut invalid = 0;
        for value in &values {
            invalid += usize::from(!schema.violations(value).is_empty());
        }
        let validate_rate = values.len() as f64 / started.elapsed().as_secs_f64();
        assert_eq!(invalid, 0, "generated values must validate");
        println!("round {round}: generated {generate_rate:>9.0} values/s | validated {validate_rate:>9.0} values/s");
        generated.push(generate_rate);
        validated.push(validate_rate);
    }
    println!(
        "median: {:.0} random values/s (each checked against the schema before it is returned), {:.0} validations/s",
        median(generated),
        median(validated)
    );
}
