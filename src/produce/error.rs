//! Errors of the produce core: routing, per-message checks, and what Kafka answered.

use super::{Delivery, MAX_REPORTED};
use crate::kafka::{ErrorClass, KafkaError};

/// The latest record timestamp luka writes (chrono's last time, the end of the year 262142); Kafka's clients refuse
/// negative ones.
pub const LATEST_TIMESTAMP_MS: i64 = rskafka::chrono::DateTime::<rskafka::chrono::Utc>::MAX_UTC.timestamp_millis();

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

    #[error(
        "timestamp {timestamp_ms} is out of range; give milliseconds since 1970-01-01, from 0 to {LATEST_TIMESTAMP_MS}"
    )]
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
    /// delivery of each message that was acknowledged. Its text names them (a handler that catches the error
    /// learns what a retry would write again).
    #[error("{source}{}", written_note(.results, .source))]
    Write {
        source: KafkaError,
        results: Vec<Option<Delivery>>,
    },
}

/// `; messages 1 and 3 of 4 were written (the others were not)`, for a call some of whose messages were written
/// before another part failed; nothing when none were. Names the first [`MAX_REPORTED`] and counts the rest, as a
/// call's invalid messages are listed.
fn written_note(results: &[Option<Delivery>], source: &KafkaError) -> String {
    let written: Vec<usize> = (1..=results.len()).filter(|n| results[n - 1].is_some()).collect();
    let mut named: Vec<String> = written.iter().take(MAX_REPORTED).map(usize::to_string).collect();
    let last = match written.len() {
        0 => return String::new(),
        n if n > MAX_REPORTED => format!("{} more", n - MAX_REPORTED),
        _ => named.pop().expect("one was written"),
    };
    let named = if named.is_empty() {
        format!("message {last}")
    } else {
        format!("messages {} and {last}", named.join(", "))
    };
    let verb = if written.len() == 1 { "was" } else { "were" };
    let others = if matches!(source, KafkaError::InDoubt { .. }) {
        "the others may or may not have been"
    } else {
        "the others were not"
    };
    format!("; {named} of {} {verb} written ({others})", results.len())
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

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::client::error::ProtocolError;

    fn delivered(partition: i32) -> Option<Delivery> {
        Some(Delivery {
            cluster: "c".into(),
            topic: "t".into(),
            partition,
            offset: 7,
            timestamp_ms: 1,
        })
    }

    /// A call refused on one partition after another was written says which messages were: a handler that catches
    /// it (or a REST client reading only the error) would otherwise send them again.
    #[test]
    fn a_partial_write_names_what_was_written() {
        let refused = || KafkaError::Rejected {
            cluster: "c".into(),
            topic: "t".into(),
            partition: 0,
            error: ProtocolError::MessageTooLarge,
        };
        let partial = |results: Vec<Option<Delivery>>, source: KafkaError| ProduceError::Write { source, results };
        let text = partial(vec![delivered(1), None, delivered(1)], refused()).to_string();
        assert!(
            text.starts_with("kafka cluster 'c' rejected the records for 't' partition 0"),
            "{text}"
        );
        assert!(
            text.ends_with("; messages 1 and 3 of 3 were written (the others were not)"),
            "{text}"
        );
        let in_doubt = KafkaError::InDoubt {
            cluster: "c".into(),
            topic: "t".into(),
            partition: 0,
        };
        let text = partial(vec![None, delivered(1)], in_doubt).to_string();
        assert!(
            text.ends_with("; message 2 of 2 was written (the others may or may not have been)"),
            "{text}"
        );
        let many = (0..14).map(|_| delivered(1)).chain([None]).collect();
        let text = partial(many, refused()).to_string();
        assert!(
            text.ends_with(
                "; messages 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 4 more of 15 were written (the others were not)"
            ),
            "{text}"
        );
        assert_eq!(partial(vec![None, None], refused()).to_string(), refused().to_string());
    }
}
