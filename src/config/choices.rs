//! The closed sets a key of `config.toml` chooses from: how a topic's values are encoded (`content_type`), record
//! batch compression, the log line format and the SASL mechanism. Takes nothing; gives the enums that both the raw
//! tables and the checked model hold. Which one a key takes when left out is in [`super::defaults`].

use serde::Deserialize;

/// How a topic's structured values (`data`, generated values) become record bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ContentType {
    /// Compact JSON.
    #[serde(rename = "application/json")]
    Json,
    /// Strings as their text, numbers and booleans as text; no objects, arrays or null.
    #[serde(rename = "text/plain")]
    Text,
    /// Strings as their bytes; nothing else.
    #[serde(rename = "application/octet-stream")]
    OctetStream,
    /// Avro binary by the topic's `avro_schema`, optionally with Confluent framing (`schema_id`).
    #[serde(rename = "avro/binary")]
    Avro,
}

impl ContentType {
    pub const ALL: [ContentType; 4] = [Self::Json, Self::Text, Self::OctetStream, Self::Avro];

    /// The content type named `name` (as config.toml spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Text => "text/plain",
            Self::OctetStream => "application/octet-stream",
            Self::Avro => "avro/binary",
        }
    }
}

/// `[clusters.<name>] compression`: how record batches are compressed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Lz4,
    Snappy,
    Zstd,
}

/// `[server] log_format`: how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// `[clusters.<name>.sasl] mechanism`: how luka proves the cluster's username and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}
