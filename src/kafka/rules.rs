//! The rules a topic holds its records to, read from the broker's topic configs (`DescribeConfigs`) and cached: a
//! topic name in, [`TopicRules`] out. Kafka refuses a whole batch for one record that breaks them, so the produce
//! core checks each request against them before its records share a batch with anyone else's.
//!
//! A broker that does not answer (an older or partial Kafka implementation, missing ACLs) leaves the rules unknown:
//! nothing is checked in advance, and a refused batch is still split so that only the offending caller fails.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rskafka::client::Client;

/// The configs read.
const KEYS: [&str; 5] = [
    "cleanup.policy",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
];

/// The longest wait for a broker's answer: past it the rules are taken as unknown for a while.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Topics remembered at once; past it the memory starts over.
const MAX_REMEMBERED: usize = 10_000;

/// A topic's rules for records, as far as luka knows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicRules {
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub compacted: bool,
    /// `max.message.bytes`: the largest record batch the topic takes.
    pub max_message_bytes: Option<usize>,
    /// With `message.timestamp.type=CreateTime`: how far before and after the broker's clock a record's timestamp may
    /// be, in milliseconds (Kafka's defaults allow any).
    pub timestamp_before_ms: Option<i64>,
    pub timestamp_after_ms: Option<i64>,
    /// `message.timestamp.type` is `LogAppendTime` (the broker's time is each record's), `CreateTime` (false), or
    /// not known.
    pub log_append_time: Option<bool>,
}

impl TopicRules {
    fn from_configs(configs: &[(String, Option<String>)]) -> Self {
        let value = |key: &str| {
            configs
                .iter()
                .find(|(name, _)| name == key)
                .and_then(|(_, value)| value.as_deref())
        };
        let number = |key: &str| value(key).and_then(|v| v.parse::<i64>().ok());
        let create_time = value("message.timestamp.type").is_none_or(|t| t == "CreateTime");
        // Kafka's default (Long.MAX_VALUE) allows any timestamp.
        let window = |key: &str| number(key).filter(|ms| create_time && *ms >= 0 && *ms < i64::MAX);
        Self {
            compacted: value("cleanup.policy").is_some_and(|p| p.split(',').any(|p| p.trim() == "compact")),
            max_message_bytes: number("max.message.bytes").and_then(|n| usize::try_from(n).ok()),
            timestamp_before_ms: window("message.timestamp.before.max.ms"),
            timestamp_after_ms: window("message.timestamp.after.max.ms"),
            log_append_time: value("message.timestamp.type").map(|t| t == "LogAppendTime"),
        }
    }
}

/// Rules per topic, each kept for `max_age`.
#[derive(Debug)]
pub(crate) struct RulesCache {
    max_age: Duration,
    topics: Mutex<HashMap<String, (Instant, TopicRules)>>,
}

impl RulesCache {
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            topics: Mutex::default(),
        }
    }

    /// `topic`'s rules, from the cache or asked of the cluster.
    pub(crate) async fn rules(&self, client: &Client, topic: &str) -> TopicRules {
        let cached = self.topics.lock().expect("rules lock poisoned").get(topic).copied();
        if let Some((_, rules)) = cached.filter(|(at, _)| at.elapsed() < self.max_age) {
            return rules;
        }
        // Boxed: asking is rare, and its deep future would otherwise be part of every produce's.
        Box::pin(self.ask(client, topic)).await
    }

    async fn ask(&self, client: &Client, topic: &str) -> TopicRules {
        let asking = super::cluster::forgetting(client, client.describe_topic_configs(topic, &KEYS));
        let rules = match tokio::time::timeout(ASK_TIMEOUT, asking).await {
            Ok(Ok(configs)) => TopicRules::from_configs(&configs),
            Ok(Err(e)) => {
                tracing::debug!(%topic, error = %e, "topic configs unknown; records are not checked against them");
                TopicRules::default()
            }
            Err(_) => TopicRules::default(),
        };
        let mut topics = self.topics.lock().expect("rules lock poisoned");
        if topics.len() >= MAX_REMEMBERED {
            topics.clear();
        }
        topics.insert(topic.to_owned(), (Instant::now(), rules));
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
            .collect()
    }

    #[test]
    fn configs_become_rules() {
        let defaults = configs(&[
            ("cleanup.policy", "delete"),
            ("max.message.bytes", "1048588"),
            ("message.timestamp.type", "CreateTime"),
            ("message.timestamp.before.max.ms", "9223372036854775807"),
            ("message.timestamp.after.max.ms", "9223372036854775807"),
        ]);
        assert_eq!(
            TopicRules::from_configs(&defaults),
            TopicRules {
                max_message_bytes: Some(1_048_588),
                log_append_time: Some(false),
                ..TopicRules::default()
            }
        );
        let strict = configs(&[
            ("cleanup.policy", "compact,delete"),
            ("message.timestamp.before.max.ms", "3600000"),
        ]);
        let rules = TopicRules::from_configs(&strict);
        assert!(rules.compacted);
        assert_eq!(rules.timestamp_before_ms, Some(3_600_000));
        assert_eq!(rules.log_append_time, None, "not known");
        let append_time = configs(&[
            ("message.timestamp.type", "LogAppendTime"),
            ("message.timestamp.before.max.ms", "3600000"),
        ]);
        assert_eq!(TopicRules::from_configs(&append_time).timestamp_before_ms, None);
        assert_eq!(TopicRules::from_configs(&append_time).log_append_time, Some(true));
    }
}
