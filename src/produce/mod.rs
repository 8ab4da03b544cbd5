//! The produce core shared by the REST API and Lua's `kafka.produce`.
//!
//! Takes [`Message`]s (topic, optional cluster and partition, key and value as bytes, data or "generate one",
//! headers, timestamp), gives one [`Delivery`] per message in the same order. Everything that can be checked before writing is checked for the
//! whole call first (topic routing, partitions, values), so a call with one bad message writes nothing.
//!
//! ```text
//! messages ─> route (config) ─> key and value bytes (payload) ─> partition counts (cached metadata)
//!          ─> choose partitions
//!          ─> group by (cluster, topic, partition), order kept ─> write groups concurrently ─> deliveries
//! ```

mod error;
pub mod partitioner;
mod payload;
mod route;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rskafka::chrono::{TimeZone, Utc};
use rskafka::record::Record;

pub use error::ProduceError;
use payload::ValueError;
pub use payload::{Key, Payload, random_key};
pub use route::resolve;

use crate::config::{Config, Topic};
use crate::context::{RecordAt, RequestContext};
use crate::kafka::{ClusterPool, CreateIfMissing, ErrorClass, KafkaError, TopicRules};

/// One record to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    /// Cluster to write to; `None` routes by the topic's config.
    pub cluster: Option<String>,
    pub partition: Option<i32>,
    pub key: Key,
    pub value: Payload,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch; `None` means now.
    pub timestamp_ms: Option<i64>,
}

/// What was written for one message, for callers that show it back (Lua's `kafka.produce` result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub delivery: Delivery,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In the order written; a name may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Written {
    /// Bytes of key, value and headers.
    pub fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + headers
    }
}

/// Where one message was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub cluster: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
}

#[derive(Debug)]
pub struct Producer {
    config: Arc<Config>,
    pool: Arc<ClusterPool>,
    /// Unkeyed messages of one call go to one partition (so they share a batch); calls take turns.
    next_partition: AtomicUsize,
}

/// A topic named in a call, resolved: its config, partition count and the partition its unkeyed messages take.
struct Destination<'c> {
    topic_name: String,
    asked_cluster: Option<String>,
    topic: &'c Topic,
    count: i32,
    unkeyed: Option<i32>,
    /// What the topic holds records to, and whether sizes can be checked (uncompressed batches only).
    rules: TopicRules,
    sizes_checked: bool,
}

/// A message with its destination decided.
struct Placed {
    cluster: String,
    topic: String,
    partition: i32,
    timestamp_ms: i64,
    /// The topic may be one whose records take the broker's time (`LogAppendTime`, or its rules are not known):
    /// a time in the broker's answer is then the record's. On a `CreateTime` topic the answer carries one too after
    /// a resend the broker found to be a duplicate (the batch's largest timestamp), which is no record's own.
    broker_time: bool,
    record: Record,
}

impl Producer {
    pub fn new(config: Arc<Config>, pool: Arc<ClusterPool>) -> Self {
        Self {
            config,
            pool,
            next_partition: AtomicUsize::new(0),
        }
    }

    pub fn pool(&self) -> &Arc<ClusterPool> {
        &self.pool
    }

    /// The checked config it writes by.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether structured data for `topic` (on `cluster`, if named) is written as its JSON text
    /// ([`Payload::Json`]); false also when the topic does not resolve, which the produce itself then reports.
    pub fn takes_json_as_is(&self, cluster: Option<&str>, topic: &str) -> bool {
        route::resolve(&self.config, cluster, topic).is_ok_and(payload::takes_json_as_is)
    }

    /// Writes every message and returns their deliveries in order, or the first error. Routing and partition
    /// errors are found before anything is written.
    pub async fn produce(&self, messages: Vec<Message>) -> Result<Vec<Delivery>, ProduceError> {
        let context = RequestContext::current();
        let placed = self.place(messages, context.as_deref()).await?;
        self.write(placed, context.as_deref()).await
    }

    /// The current request's trace context headers, added to `headers` unless it has them already.
    fn add_trace_context(headers: &mut Vec<(String, Vec<u8>)>, context: Option<&RequestContext>) {
        let Some(context) = context else { return };
        for (name, value) in &context.trace {
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                headers.push((name.clone(), value.clone()));
            }
        }
    }

    /// Like [`Producer::produce`], and also gives the key, value and headers each message was written with (which
    /// the caller may not know: generated keys and values, encoded data).
    pub async fn produce_written(&self, messages: Vec<Message>) -> Result<Vec<Written>, ProduceError> {
        let context = RequestContext::current();
        let placed = self.place(messages, context.as_deref()).await?;
        let records: Vec<Record> = placed.iter().map(|p| p.record.clone()).collect();
        let deliveries = self.write(placed, context.as_deref()).await?;
        Ok(deliveries
            .into_iter()
            .zip(records)
            .map(|(delivery, record)| Written {
                delivery,
                key: record.key,
                value: record.value,
                headers: record.headers,
            })
            .collect())
    }

    /// `context`: the request the messages come from (its trace context goes into their headers).
    async fn place(
        &self,
        messages: Vec<Message>,
        context: Option<&RequestContext>,
    ) -> Result<Vec<Placed>, ProduceError> {
        let now_ms = now_ms();
        // Most calls name one topic many times: it is resolved and counted once per call.
        let mut destinations: Vec<Destination> = Vec::new();
        let mut placed = Vec::with_capacity(messages.len());
        // Data and values are checked for every message, so that one answer names each invalid one.
        let total = messages.len();
        let mut invalid = InvalidMessages::default();
        let mut first_invalid = None;
        let mut messages = messages.into_iter().enumerate();
        while let Some((index, message)) = messages.next() {
            let known = destinations
                .iter()
                .position(|d| d.topic_name == message.topic && d.asked_cluster == message.cluster);
            let at = match known {
                Some(at) => at,
                None => match self.destination(&message, index).await {
                    Ok(destination) => {
                        destinations.push(destination);
                        destinations.len() - 1
                    }
                    Err(e) => {
                        let failed = (message.cluster.as_deref(), message.topic.as_str());
                        return Err(self.refused(e, failed, &placed, messages.map(|(_, m)| m)));
                    }
                },
            };
            let destination = &mut destinations[at];
            let (topic, count) = (destination.topic, destination.count);
            let cluster = topic.cluster.clone();
            let payload = payload::key_bytes(message.key, topic)
                .and_then(|key| Ok((key, payload::value_bytes(message.value, topic)?)))
                .map_err(|e| value_error(e, index, &message.topic));
            let (key, value) = match payload {
                Ok(payload) => payload,
                Err(error) => {
                    invalid.add(index + 1, InvalidMessages::problem_of(&error));
                    first_invalid.get_or_insert(error);
                    continue;
                }
            };
            let partition = match (message.partition, &key) {
                (Some(p), _) if (0..count).contains(&p) => p,
                // The cached count may predate partitions added since: the cluster is asked before a 404.
                (Some(p), _) if self.recounted(destination).await > p => p,
                (Some(p), _) => {
                    let e = KafkaError::UnknownPartition {
                        topic: message.topic.clone(),
                        partition: p,
                        count: destination.count,
                    };
                    let e = ProduceError::from(e).in_message(index);
                    let failed = (message.cluster.as_deref(), message.topic.as_str());
                    return Err(self.refused(e, failed, &placed, messages.map(|(_, m)| m)));
                }
                (None, Some(key)) => partitioner::partition_for_key(key, count),
                (None, None) => *destination.unkeyed.get_or_insert_with(|| {
                    (self.next_partition.fetch_add(1, Ordering::Relaxed) % count as usize) as i32
                }),
            };
            let mut headers = message.headers;
            Self::add_trace_context(&mut headers, context);
            let timestamp_ms = message.timestamp_ms.unwrap_or(now_ms);
            let Some(timestamp) = Utc
                .timestamp_millis_opt(timestamp_ms)
                .single()
                .filter(|_| timestamp_ms >= 0)
            else {
                let error = ProduceError::InvalidTimestamp { timestamp_ms };
                invalid.add(index + 1, InvalidMessages::problem_of(&error));
                first_invalid.get_or_insert(error.in_message(index));
                continue;
            };
            let record = Record {
                key,
                value,
                headers,
                timestamp,
            };
            // What the broker would refuse the whole shared batch for, refused here for this request alone.
            let (rules, sizes_checked) = (destination.rules, destination.sizes_checked);
            if let Some(broken) = broken_rule(&rules, sizes_checked, &record, timestamp_ms, now_ms, &message.topic) {
                // A record too large is a 413 of its own; the other broken rules are invalid messages, named with
                // the rest.
                if broken.class() == ErrorClass::TooLarge {
                    return Err(broken.in_message(index));
                }
                invalid.add(index + 1, InvalidMessages::problem_of(&broken));
                first_invalid.get_or_insert(broken.in_message(index));
                continue;
            }
            placed.push(Placed {
                cluster,
                topic: message.topic,
                partition,
                timestamp_ms,
                broker_time: rules.log_append_time != Some(false),
                record,
            });
        }
        match (first_invalid, invalid.count()) {
            (None, _) => Ok(placed),
            (Some(only), 1) => Err(only),
            (Some(_), _) => Err(ProduceError::InvalidMessages(
                invalid.report(total).expect("invalid messages were noted"),
            )),
        }
    }

    /// `destination`'s partition count asked of its cluster again (at most once a second per cluster; see
    /// [`crate::kafka::ClusterClient::partition_count_now`]), kept as its count; the cached one if that fails.
    async fn recounted(&self, destination: &mut Destination<'_>) -> i32 {
        // Boxed: it is rare, and its deep future would otherwise be part of every produce's.
        if let Ok(client) = self.pool.cluster(&destination.topic.cluster).await
            && let Ok(count) = Box::pin(client.partition_count_now(&destination.topic_name)).await
        {
            destination.count = count;
        }
        destination.count
    }

    /// The destination of `message` (the `index`th), first named in its call: its topic resolved by config, its
    /// cluster's partition count (the topic created if it may be) and the topic's rules.
    async fn destination(&self, message: &Message, index: usize) -> Result<Destination<'_>, ProduceError> {
        let topic =
            resolve(&self.config, message.cluster.as_deref(), &message.topic).map_err(|e| e.in_message(index))?;
        let create = topic.partitions.map(|partitions| CreateIfMissing {
            partitions,
            replication_factor: topic.replication_factor,
        });
        let client = self.pool.cluster(&topic.cluster).await?;
        let count = client
            .partition_count(&message.topic, create)
            .await
            .map_err(|e| e.into_message(index))?;
        let rules = client.topic_rules(&message.topic).await;
        let sizes_checked = self
            .config
            .clusters
            .get(&topic.cluster)
            .is_some_and(|c| c.compression == crate::config::Compression::None);
        Ok(Destination {
            topic_name: message.topic.clone(),
            asked_cluster: message.cluster.clone(),
            topic,
            count,
            unkeyed: None,
            rules,
            sizes_checked,
        })
    }

    /// `error`, met while placing a message for `topic` (on `cluster`, if named), refuses the whole call: nothing is
    /// written. When Kafka answered it (the cluster out of reach, the topic or the partition missing), every record of
    /// the call bound for that cluster is counted in `luka_records_total` under the error's result, as the writers
    /// count theirs: those `placed` already with their bytes, the others (not made yet) with none. Errors of the
    /// request itself (config, values, timestamps) count no records.
    fn refused(
        &self,
        error: ProduceError,
        (cluster, topic): (Option<&str>, &str),
        placed: &[Placed],
        rest: impl Iterator<Item = Message>,
    ) -> ProduceError {
        let (Some(result), Ok(failed)) = (
            error.kafka().map(KafkaError::kind),
            resolve(&self.config, cluster, topic),
        ) else {
            return error;
        };
        let cluster = failed.cluster.as_str();
        let mut counts = BTreeMap::<String, (u64, u64)>::new();
        let mut count = |topic: &str, bytes: usize| {
            let (records, total) = counts.entry(topic.to_owned()).or_default();
            *records += 1;
            *total += bytes as u64;
        };
        count(topic, 0);
        for p in placed.iter().filter(|p| p.cluster == cluster) {
            count(&p.topic, p.record.approximate_size());
        }
        for m in rest {
            if resolve(&self.config, m.cluster.as_deref(), &m.topic).is_ok_and(|t| t.cluster == cluster) {
                count(&m.topic, 0);
            }
        }
        let metrics = crate::metrics::metrics();
        for (topic, (records, bytes)) in counts {
            metrics.record_outcome(cluster, &topic, result, records, bytes);
        }
        error
    }

    /// Writes placed messages: one batch per partition, all partitions at once.
    /// `context`: the request the messages come from (told how many records it wrote, and where).
    async fn write(
        &self,
        placed: Vec<Placed>,
        context: Option<&RequestContext>,
    ) -> Result<Vec<Delivery>, ProduceError> {
        let mut results: Vec<Option<Delivery>> = vec![None; placed.len()];
        let mut meta = Vec::with_capacity(placed.len());
        let mut records = Vec::with_capacity(placed.len());
        for p in placed {
            meta.push((p.cluster, p.topic, p.partition, p.timestamp_ms, p.broker_time));
            records.push(p.record);
        }
        // Grouped under the names `meta` holds (no copies per record); each delivery then takes its names from there.
        let mut groups = BTreeMap::<_, Vec<(usize, Record)>>::new();
        for (index, (record, (cluster, topic, partition, _, _))) in records.into_iter().zip(&meta).enumerate() {
            groups
                .entry((cluster.as_str(), topic.as_str(), *partition))
                .or_default()
                .push((index, record));
        }
        let writes = groups
            .into_iter()
            .map(|((cluster, topic, partition), items)| async move {
                let (indexes, records): (Vec<usize>, Vec<Record>) = items.into_iter().unzip();
                // The cluster's client counts the outcome of what it is given; a cluster out of reach, here.
                let client = match self.pool.cluster(cluster).await {
                    Ok(client) => client,
                    Err(e) => {
                        let (count, bytes) = crate::kafka::tally(&records);
                        crate::metrics::metrics().record_outcome(cluster, topic, e.kind(), count, bytes);
                        return Err(e);
                    }
                };
                let appended = client.produce(topic, partition, records).await?;
                let time = appended.log_append_time_ms;
                Ok::<_, KafkaError>(
                    indexes
                        .into_iter()
                        .zip(appended.offsets)
                        .map(move |(i, o)| (i, o, time)),
                )
            });
        let outcomes = futures::future::join_all(writes).await;
        let mut answering = None;
        for outcome in outcomes {
            match outcome {
                Ok(written) => {
                    for (index, offset, log_append_time_ms) in written {
                        // Each index is in one group and written once: its names are moved out, not copied.
                        let (cluster, topic, partition, timestamp_ms, broker_time) = &mut meta[index];
                        results[index] = Some(Delivery {
                            cluster: std::mem::take(cluster),
                            topic: std::mem::take(topic),
                            partition: *partition,
                            offset,
                            // On a LogAppendTime topic the broker's time is the record's, whatever was sent.
                            timestamp_ms: log_append_time_ms.filter(|_| *broker_time).unwrap_or(*timestamp_ms),
                        });
                    }
                }
                Err(e) => answering = Some(telling(answering.take(), e)),
            }
        }
        if let Some(context) = context {
            if let Some(KafkaError::InDoubt { .. }) = answering {
                context.note_in_doubt();
            }
            context.add_records(results.iter().filter(|d| d.is_some()).count());
            context.note_written(results.iter().flatten().map(|d| RecordAt {
                cluster: d.cluster.clone(),
                topic: d.topic.clone(),
                partition: d.partition,
                offset: d.offset,
            }));
        }
        match answering {
            None => Ok(results
                .into_iter()
                .map(|d| d.expect("every group wrote or failed"))
                .collect()),
            Some(source) => Err(ProduceError::Write { source, results }),
        }
    }
}

/// Which of two groups' failures answers the request: the first, unless a later one's records may have been
/// written ([`KafkaError::InDoubt`]). Every other failure says its records were not written, which holds for its
/// own group only: answering one of those ("nothing was written", 503 and its `Retry-After`) for a request whose
/// other group is in doubt would invite a retry that writes that group twice.
fn telling(answering: Option<KafkaError>, failed: KafkaError) -> KafkaError {
    match answering {
        Some(kept) if matches!(kept, KafkaError::InDoubt { .. }) || !matches!(failed, KafkaError::InDoubt { .. }) => {
            kept
        }
        _ => failed,
    }
}

/// The topic rule `record` breaks, if any (see [`TopicRules`]); `now_ms` is luka's clock, which the broker's is taken
/// to match.
fn broken_rule(
    rules: &TopicRules,
    sizes_checked: bool,
    record: &Record,
    timestamp_ms: i64,
    now_ms: i64,
    topic: &str,
) -> Option<ProduceError> {
    if rules.compacted && record.key.is_none() {
        return Some(ProduceError::KeyRequired {
            topic: topic.to_owned(),
        });
    }
    let earliest = rules
        .timestamp_before_ms
        .map_or(i64::MIN, |before| now_ms.saturating_sub(before));
    let latest = rules
        .timestamp_after_ms
        .map_or(i64::MAX, |after| now_ms.saturating_add(after));
    if !(earliest..=latest).contains(&timestamp_ms) {
        return Some(ProduceError::TimestampOutsideWindow {
            topic: topic.to_owned(),
            timestamp_ms,
            earliest: earliest.max(0),
            latest,
        });
    }
    let size = crate::kafka::single_record_batch_size(record);
    match rules.max_message_bytes {
        Some(max) if sizes_checked && size > max => Some(ProduceError::TooLargeForTopic {
            topic: topic.to_owned(),
            size,
            max,
        }),
        _ => None,
    }
}

impl KafkaError {
    fn into_message(self, index: usize) -> ProduceError {
        ProduceError::from(self).in_message(index)
    }
}

fn value_error(error: ValueError, index: usize, topic: &str) -> ProduceError {
    match error {
        ValueError::Invalid(violations) => ProduceError::InvalidData {
            number: index + 1,
            topic: topic.to_owned(),
            violations,
        },
        ValueError::Encode(problem) => ProduceError::Encode {
            number: index + 1,
            topic: topic.to_owned(),
            problem,
        },
    }
}

/// Invalid messages listed in one error; the rest are counted.
pub const MAX_REPORTED: usize = 10;

/// Collects the problems of a call's messages: every one is checked, the first [`MAX_REPORTED`] are listed.
#[derive(Debug, Default)]
pub struct InvalidMessages {
    listed: Vec<String>,
    unlisted: usize,
}

impl InvalidMessages {
    /// Notes the problem of message `number` (counted from 1).
    pub fn add(&mut self, number: usize, problem: impl std::fmt::Display) {
        if self.listed.len() < MAX_REPORTED {
            self.listed.push(format!("message {number}: {problem}"));
        } else {
            self.unlisted += 1;
        }
    }

    /// How many messages were noted.
    pub fn count(&self) -> usize {
        self.listed.len() + self.unlisted
    }

    /// What is wrong with a message, without its number (which [`InvalidMessages::add`] puts first).
    fn problem_of(error: &ProduceError) -> String {
        match error {
            ProduceError::InvalidData { topic, violations, .. } => {
                format!("topic '{topic}': {}", violations.join("; "))
            }
            ProduceError::Encode { topic, problem, .. } => format!("topic '{topic}': {problem}"),
            other => other.to_string(),
        }
    }

    /// `None` if every message was fine, else one text naming each problem, for a call of `total` messages.
    pub fn report(self, total: usize) -> Option<String> {
        let count = self.listed.len() + self.unlisted;
        if count == 0 {
            return None;
        }
        let mut text = self.listed.join("; ");
        if self.unlisted > 0 {
            text.push_str(&format!("; and {} more invalid messages", self.unlisted));
        }
        if count > 1 {
            text = format!("{count} of {total} messages are invalid (nothing was written): {text}");
        }
        Some(text)
    }
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_whose_records_may_be_written_is_answered_so() {
        let down = || KafkaError::Unavailable {
            cluster: "c".into(),
            detail: "down".into(),
        };
        let doubt = |partition| KafkaError::InDoubt {
            cluster: "c".into(),
            topic: "t".into(),
            partition,
        };
        let refused = || KafkaError::UnknownTopic {
            cluster: "c".into(),
            topic: "t".into(),
        };
        let answer = |failures: Vec<KafkaError>| failures.into_iter().fold(None, |a, f| Some(telling(a, f))).unwrap();
        assert!(matches!(answer(vec![down(), doubt(1)]), KafkaError::InDoubt { .. }));
        assert!(matches!(
            answer(vec![refused(), doubt(1), down()]),
            KafkaError::InDoubt { .. }
        ));
        assert!(matches!(
            answer(vec![doubt(0), doubt(1)]),
            KafkaError::InDoubt { partition: 0, .. }
        ));
        assert!(matches!(
            answer(vec![down(), refused()]),
            KafkaError::Unavailable { .. }
        ));
    }

    /// A request's future holds the produce future, and each move of it copies its whole state. The rare steps
    /// (metadata look-ups, topic creation, asking a topic's rules, starting a partition's writer) are boxed so it
    /// stays small: before they were, it was about 13.6 KiB and copying it took a tenth of a Lua webhook's time.
    #[test]
    fn the_produce_futures_stay_small() {
        let config = Config::from_toml(
            "[clusters.a]\nbootstrap = [\"127.0.0.1:1\"]\n[topics.t]\n",
            std::path::Path::new("."),
            |_| None,
        )
        .expect("valid config");
        let producer = crate::producer(&Arc::new(config));
        let produce = producer.produce(Vec::new());
        let produce_written = producer.produce_written(Vec::new());
        for (name, size) in [
            ("produce", std::mem::size_of_val(&produce)),
            ("produce_written", std::mem::size_of_val(&produce_written)),
        ] {
            assert!(size <= 2048, "the {name} future takes {size} bytes");
        }
    }
}
