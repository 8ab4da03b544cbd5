//! Errors of the schema stage: reading and compiling a schema, making a random value, encoding Avro.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("{} is not JSON: {source}", path.display())]
    NotJson { path: PathBuf, source: serde_json::Error },

    /// The document is not a JSON Schema the validator accepts; `at` is the JSON pointer of the problem, empty
    /// when it is the document itself.
    #[error("{at}{}{message}", if at.is_empty() { "" } else { ": " })]
    Invalid { at: String, message: String },

    /// The generator cannot make a value of this schema (an empty `enum`, bounds that leave no value, ...).
    #[error("{0}")]
    Generate(String),

    /// Generated values kept breaking the schema: the last one broke `keyword`, as `violation` says.
    #[error(
        "no random value valid against the schema after {attempts} attempts: the last one broke `{keyword}` \
         ({violation}); is the schema satisfiable?"
    )]
    Unsatisfiable {
        attempts: usize,
        keyword: String,
        violation: String,
    },

    #[error("not a valid Avro schema: {0}")]
    NotAvro(apache_avro::Error),

    /// An Avro schema apache-avro parsed but whose shape luka cannot follow to make random values.
    #[error("{0}")]
    AvroShape(String),

    #[error("does not match the Avro schema: {0}")]
    AvroMismatch(apache_avro::Error),

    #[error("cannot encode as Avro: {0}")]
    AvroEncode(apache_avro::Error),

    #[error("no random value fits the Avro schema")]
    NoAvroValue,
}
