//! Errors of the Kafka side, with the cluster, topic and partition they concern.

use std::time::Duration;

use rskafka::client::error::{Error as ClientError, ProtocolError};

use super::security::SecurityCause;

#[derive(Debug, Clone, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka cluster '{cluster}' is unavailable: {detail}")]
    Unavailable { cluster: String, detail: String },

    /// The broker said it timed out, or it answered nothing within the limit (`limit` when luka's own clock ran out).
    #[error("kafka cluster '{cluster}' did not answer in time{}", .limit.map(|l| format!(" (limit {} ms)", l.as_millis())).unwrap_or_default())]
    Timeout { cluster: String, limit: Option<Duration> },

    /// luka's TLS or SASL settings do not match the broker's listener: the cause says which, the detail is
    /// rskafka's own (for the log), and the message ends with what to change.
    #[error("kafka cluster '{cluster}' is unavailable: {}: {detail}; {}", .cause.summary(), .cause.fix(cluster))]
    Security {
        cluster: String,
        cause: SecurityCause,
        detail: String,
    },

    /// Records were sent and no answer came in time (lost, late, or given up after resending): they may or may not
    /// be written.
    #[error(
        "kafka cluster '{cluster}' did not acknowledge the records for '{topic}' partition {partition} in time; they \
         may or may not have been written"
    )]
    InDoubt {
        cluster: String,
        topic: String,
        partition: i32,
    },

    /// The partition has fewer in-sync replicas than the topic's `min.insync.replicas`: the broker refused the
    /// records (none written).
    #[error(
        "kafka cluster '{cluster}' has too few in-sync replicas of '{topic}' partition {partition} to accept writes \
         (min.insync.replicas)"
    )]
    NotEnoughReplicas {
        cluster: String,
        topic: String,
        partition: i32,
    },

    #[error("kafka cluster '{cluster}' has {limit} produce calls waiting already; retry shortly")]
    Busy { cluster: String, limit: usize },

    #[error("kafka topic '{topic}' not found on cluster '{cluster}'")]
    UnknownTopic { cluster: String, topic: String },

    /// A topic a pattern would create, past the cluster's `max_created_topics`.
    #[error(
        "kafka topic '{topic}' not found on cluster '{cluster}', and luka creates at most {limit} topics by pattern \
         there (max_created_topics); create it on the cluster or raise the limit"
    )]
    CreateLimit {
        cluster: String,
        topic: String,
        limit: usize,
    },

    #[error("kafka topic '{topic}' has no partition {partition} (it has {count}: 0 to {})", .count - 1)]
    UnknownPartition { topic: String, partition: i32, count: i32 },

    #[error("kafka cluster '{cluster}' rejected the records for '{topic}' partition {partition}: {error:?}{}", rejection_words(*.error))]
    Rejected {
        cluster: String,
        topic: String,
        partition: i32,
        error: ProtocolError,
    },

    #[error("kafka cluster '{cluster}' could not create topic '{topic}': {detail}")]
    CreateTopic {
        cluster: String,
        topic: String,
        detail: String,
    },

    #[error("kafka cluster '{cluster}' is misconfigured: {detail}")]
    Setup { cluster: String, detail: String },

    /// The record batch at `offset` takes more than a read may hold once read (decompressed, its records and headers
    /// made): a batch is read whole.
    #[error(
        "the records at offset {offset} of topic '{topic}' partition {partition} take more than {limit} bytes once \
         read (decompressed), more than one /fetch may read (fetch_max_total_bytes); read them with a Kafka client, \
         or raise the limit"
    )]
    TooLargeToRead {
        cluster: String,
        topic: String,
        partition: i32,
        offset: i64,
        limit: usize,
    },

    /// A read at an offset the partition does not hold (past its end, or before its start after retention).
    #[error(
        "offset {offset} is outside topic '{topic}' partition {partition}, which holds offsets {earliest} to {} \
         (see /offsets/earliest and /offsets/latest)",
        .latest - 1
    )]
    OffsetOutOfRange {
        cluster: String,
        topic: String,
        partition: i32,
        offset: i64,
        earliest: i64,
        latest: i64,
    },
}

/// What a failure means for the caller, decided once from the error's variant: the REST API and a Lua handler
/// that lets a `kafka.produce` failure through are answered from it alike (`server::error` maps it to a status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A topic, partition or cluster the call named does not exist (404).
    NotFound,
    /// The call itself is wrong: its data, topic name or timestamp, or records the broker refused as malformed (400).
    BadRequest,
    /// Records too large: the broker refused them, or a read cannot hold them (413).
    TooLarge,
    /// The cluster cannot take writes now: it is down, busy, or refuses luka's TLS or SASL (503; retry).
    Unavailable,
    /// The cluster did not answer in time (504): before the records were sent (nothing was written), or after
    /// ([`KafkaError::InDoubt`]: they may or may not have been written).
    Timeout,
    /// The broker failed the call in a way the caller cannot fix (502).
    Upstream,
    /// luka's own setup of the cluster is wrong (500).
    Internal,
}

impl ErrorClass {
    /// The cluster was down or slow, as opposed to a mistake in the call.
    pub fn is_outage(self) -> bool {
        matches!(self, Self::Unavailable | Self::Timeout)
    }
}

impl KafkaError {
    /// What the failure means for the caller.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable { .. } | Self::Busy { .. } | Self::Security { .. } | Self::NotEnoughReplicas { .. } => {
                ErrorClass::Unavailable
            }
            Self::Timeout { .. } | Self::InDoubt { .. } => ErrorClass::Timeout,
            Self::UnknownTopic { .. } | Self::UnknownPartition { .. } | Self::CreateLimit { .. } => {
                ErrorClass::NotFound
            }
            Self::Rejected { error, .. } => match error {
                ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge => ErrorClass::TooLarge,
                ProtocolError::InvalidRecord
                | ProtocolError::CorruptMessage
                | ProtocolError::InvalidTimestamp
                | ProtocolError::InvalidTopicException => ErrorClass::BadRequest,
                _ => ErrorClass::Upstream,
            },
            Self::TooLargeToRead { .. } => ErrorClass::TooLarge,
            Self::CreateTopic { .. } => ErrorClass::Upstream,
            Self::Setup { .. } => ErrorClass::Internal,
            Self::OffsetOutOfRange { .. } => ErrorClass::BadRequest,
        }
    }

    /// The cluster the failure happened on (an unknown partition names only its topic).
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Self::Unavailable { cluster, .. }
            | Self::Timeout { cluster, .. }
            | Self::InDoubt { cluster, .. }
            | Self::NotEnoughReplicas { cluster, .. }
            | Self::Security { cluster, .. }
            | Self::Busy { cluster, .. }
            | Self::UnknownTopic { cluster, .. }
            | Self::CreateLimit { cluster, .. }
            | Self::Rejected { cluster, .. }
            | Self::CreateTopic { cluster, .. }
            | Self::Setup { cluster, .. }
            | Self::OffsetOutOfRange { cluster, .. }
            | Self::TooLargeToRead { cluster, .. } => Some(cluster),
            Self::UnknownPartition { .. } => None,
        }
    }

    /// A short name of the kind of failure, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::Security { cause, .. } => cause.kind(),
            Self::Busy { .. } => "busy",
            Self::Timeout { .. } => "timeout",
            Self::InDoubt { .. } => "in_doubt",
            Self::NotEnoughReplicas { .. } => "not_enough_replicas",
            Self::UnknownTopic { .. } => "unknown_topic",
            Self::CreateLimit { .. } => "create_limit",
            Self::UnknownPartition { .. } => "unknown_partition",
            Self::Rejected { .. } => "rejected",
            Self::CreateTopic { .. } => "create_topic",
            Self::Setup { .. } => "setup",
            Self::OffsetOutOfRange { .. } => "offset_out_of_range",
            Self::TooLargeToRead { .. } => "too_large_to_read",
        }
    }

    /// Turns an rskafka error into the variant that says what happened: unreachable brokers, broker-side
    /// rejections and timeouts are different answers for the caller ([`KafkaError::class`]).
    pub(crate) fn from_client(cluster: &str, topic: &str, partition: i32, error: &ClientError) -> Self {
        if let Some((cause, detail)) = SecurityCause::of(error) {
            return Self::Security {
                cluster: cluster.to_owned(),
                cause,
                detail,
            };
        }
        match error {
            ClientError::ServerError { protocol_error, .. } => match protocol_error {
                ProtocolError::UnknownTopicOrPartition => Self::UnknownTopic {
                    cluster: cluster.to_owned(),
                    topic: topic.to_owned(),
                },
                ProtocolError::RequestTimedOut => Self::Timeout {
                    cluster: cluster.to_owned(),
                    limit: None,
                },
                ProtocolError::NotEnoughReplicas => Self::NotEnoughReplicas {
                    cluster: cluster.to_owned(),
                    topic: topic.to_owned(),
                    partition,
                },
                ProtocolError::NotEnoughReplicasAfterAppend
                | ProtocolError::LeaderNotAvailable
                | ProtocolError::NotLeaderOrFollower
                | ProtocolError::BrokerNotAvailable
                | ProtocolError::NetworkException
                | ProtocolError::CoordinatorNotAvailable => Self::Unavailable {
                    cluster: cluster.to_owned(),
                    detail: format!("{protocol_error:?}"),
                },
                other => Self::Rejected {
                    cluster: cluster.to_owned(),
                    topic: topic.to_owned(),
                    partition,
                    error: *other,
                },
            },
            ClientError::RetryFailed(rskafka::BackoffError::DeadlineExceded { source, .. }) => {
                match source.downcast_ref::<ClientError>() {
                    Some(inner) => Self::from_client(cluster, topic, partition, inner),
                    None => Self::Unavailable {
                        cluster: cluster.to_owned(),
                        detail: source.to_string(),
                    },
                }
            }
            ClientError::Timeout => Self::Timeout {
                cluster: cluster.to_owned(),
                limit: None,
            },
            other => Self::Unavailable {
                cluster: cluster.to_owned(),
                detail: other.to_string(),
            },
        }
    }
}

/// What a refusal of records means, for the codes a caller can do something about.
fn rejection_words(error: ProtocolError) -> &'static str {
    match error {
        ProtocolError::InvalidTimestamp => {
            " (a record's timestamp is outside what the topic accepts: message.timestamp.before.max.ms and \
             message.timestamp.after.max.ms; send a current timestamp or none)"
        }
        ProtocolError::InvalidRecord => {
            " (a record breaks a rule of the topic: on a compacted topic every record needs a key)"
        }
        ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge => {
            " (a record is larger than the topic's max.message.bytes)"
        }
        _ => "",
    }
}
