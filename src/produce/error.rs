//! Errors of the produce core: routing, per-message checks, and what Kafka answered.

use super::Delivery;
use crate::kafka::{ErrorClass, KafkaError};

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka topic '{topic}' not found (configure it under [topics] in config.toml)")]
    TopicNotConfigured { topic: String },

    #[error("kafka topic '{topic}' not found on cluster '{cluster}'")]
    TopicNotOnCluster { topic: String, cluster: String },

    #[error("kafka cluster '{cluster}' not found (defined clusters: {defined})")]
    ClusterNotFound { cluster: String, defined: String },

    #[error(
        "kafka topic '{topic}' is configured on several clusters ({clusters}); specify the cluster \
         (kafka.produce{{cluster = ...}}), or give this exact name its own [topics] entry in config.toml"
    )]
    AmbiguousTopic { topic: String, clusters: String },

    #[error("'{topic}' is not a valid kafka topic name (letters, digits, '.', '_' and '-', at most 249)")]
    InvalidTopicName { topic: String },

    #[error("timestamp {timestamp_ms} is not a time Kafka can store; give milliseconds since 1970-01-01")]
    InvalidTimestamp { timestamp_ms: i64 },

    /// `data` that does not match the topic's value schema; every violation, each with its JSON pointer.
    #[error("message {number} of topic '{topic}' is invalid: {}", violations.join("; "))]
    InvalidData {
        number: usize,
        topic: String,
        violations: Vec<String>,
    },

    /// A keyless record for a compacted topic.
    #[error("topic '{topic}' is compacted (cleanup.policy=compact): every record needs a key")]
    KeyRequired { topic: String },

    /// A timestamp outside the topic's window.
    #[error(
        "timestamp {timestamp_ms} is outside what topic '{topic}' accepts now, {earliest} to {latest} \
         (message.timestamp.before.max.ms and message.timestamp.after.max.ms); send a current timestamp or none"
    )]
    TimestampOutsideWindow {
        topic: String,
        timestamp_ms: i64,
        earliest: i64,
        latest: i64,
    },

    /// A record larger than the topic takes.
    #[error("the record takes {size} bytes, more than topic '{topic}' takes (max.message.bytes = {max})")]
    TooLargeForTopic { topic: String, size: usize, max: usize },

    #[error("message {number} of topic '{topic}': {problem}")]
    Encode {
        number: usize,
        topic: String,
        problem: String,
    },

    #[error("message {number}: {source}")]
    InMessage { number: usize, source: Box<ProduceError> },

    /// Several messages whose data or value could not be made into a record, each named (see
    /// [`super::InvalidMessages`]).
    #[error("{0}")]
    InvalidMessages(String),

    #[error(transparent)]
    Kafka(#[from] KafkaError),

    /// Some messages may have been written before the failure: `results` holds, in request order, the
    /// delivery of each message that was acknowledged.
    #[error("{source}")]
    Write {
        source: KafkaError,
        results: Vec<Option<Delivery>>,
    },
}

impl ProduceError {
    pub(crate) fn in_message(self, index: usize) -> Self {
        Self::InMessage {
            number: index + 1,
            source: Box::new(self),
        }
    }

    /// The innermost error, past message numbers and partial-write wrappers.
    pub fn root(&self) -> &ProduceError {
        match self {
            Self::InMessage { source, .. } => source.root(),
            other => other,
        }
    }

    /// What Kafka answered, when the failure came from there.
    pub fn kafka(&self) -> Option<&KafkaError> {
        match self.root() {
            Self::Kafka(error) | Self::Write { source: error, .. } => Some(error),
            _ => None,
        }
    }

    /// What the failure means for the caller; a Kafka failure is classed by [`KafkaError::class`].
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::TopicNotConfigured { .. } | Self::TopicNotOnCluster { .. } | Self::ClusterNotFound { .. } => {
                ErrorClass::NotFound
            }
            Self::AmbiguousTopic { .. }
            | Self::InvalidTopicName { .. }
            | Self::InvalidTimestamp { .. }
            | Self::InvalidData { .. }
            | Self::InvalidMessages(_)
            | Self::KeyRequired { .. }
            | Self::TimestampOutsideWindow { .. }
            | Self::Encode { .. } => ErrorClass::BadRequest,
            Self::TooLargeForTopic { .. } => ErrorClass::TooLarge,
            Self::InMessage { source, .. } => source.class(),
            Self::Kafka(error) | Self::Write { source: error, .. } => error.class(),
        }
    }
}
