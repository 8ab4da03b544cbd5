//! The reading side of the hosted REST API (`seeds/002_*`'s service): `/topics`, `/offsets/...` and `/fetch`.
//!
//! Takes an authenticated user and the request (path part, query, JSON body), gives the JSON answer's bytes.
//! Topics route to clusters as for produce; reading needs the user's `read_topics`, listing needs `topics`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiError;
use super::shape::{self, Field, Kind};
use crate::config::{Config, User};
use crate::kafka::{ClusterClient, FetchedRecord, KafkaError, ListOffset};
use crate::produce::{Producer, resolve};

/// `GET /topics`: `{topic: partitions}` for every topic the user may write that exists on its cluster. Only the
/// clusters that may hold such a topic are asked: one down or slow does not fail the list of a user who writes
/// elsewhere.
pub async fn topics(config: &Config, producer: &Producer, user: &User) -> Result<Vec<u8>, ApiError> {
    let mut answer = serde_json::Map::new();
    for name in producer.pool().names() {
        // Some topic matches both one of the cluster's `[topics]` entries and one of the user's patterns.
        let may_hold = config
            .topics
            .iter()
            .filter(|t| t.cluster == name)
            .any(|t| user.topics.iter().any(|mine| mine.overlaps(&t.pattern)));
        if !may_hold {
            continue;
        }
        let cluster = producer.pool().cluster(name).await.map_err(ApiError::Read)?;
        for (topic, partitions) in cluster.topics().await.map_err(ApiError::Read)? {
            let routed_here = resolve(config, None, &topic).is_ok_and(|t| t.cluster == name);
            if routed_here && user.may_write(&topic) {
                answer.insert(topic, Value::from(partitions));
            }
        }
    }
    Ok(serde_json::to_vec(&answer).expect("a map serializes"))
}

/// One topic-partition named in a request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicPartition {
    topic: String,
    partition: i32,
}

#[derive(Debug, Serialize)]
struct OffsetAnswer<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

/// The last millisecond of the year 9999: later timestamps are no dates (and negative ones are what Kafka's
/// ListOffsets takes for "latest" and "earliest", so they are refused rather than sent).
const LAST_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// `/offsets/{earliest|latest|<timestamp ms>}`: body `{topic, partition}` or an array of them; answers
/// `[{topic, partition, offset}]` in request order.
pub async fn offsets(
    config: &Config,
    producer: &Producer,
    user: &User,
    which: &str,
    body: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let at = match which {
        "earliest" => ListOffset::Earliest,
        "latest" => ListOffset::Latest,
        ms => ListOffset::Timestamp(
            ms.parse()
                .ok()
                .filter(|ms| (0..=LAST_TIMESTAMP_MS).contains(ms))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "'{}' is not earliest, latest or a timestamp in ms from 0 (1970-01-01) to {LAST_TIMESTAMP_MS} \
                         (9999-12-31): /offsets/earliest, /offsets/latest or /offsets/1700000000000",
                        ms.chars().take(40).collect::<String>()
                    ))
                })?,
        ),
    };
    let wanted: Vec<TopicPartition> = one_or_many(body, "{\"topic\": \"...\", \"partition\": 0}", TOPIC_PARTITION)?;
    let distinct: HashSet<(&str, i32)> = wanted.iter().map(|tp| (tp.topic.as_str(), tp.partition)).collect();
    check_position_count(config, distinct.len())?;
    // Each distinct position is looked up once; a position named twice is answered twice.
    let mut found = HashMap::with_capacity(distinct.len());
    let mut answer = Vec::with_capacity(wanted.len());
    for tp in &wanted {
        let key = (tp.topic.as_str(), tp.partition);
        let offset = match found.get(&key) {
            Some(offset) => *offset,
            None => {
                let client = checked_reader(config, producer, user, &tp.topic, tp.partition).await?;
                let offset = client
                    .offset(&tp.topic, tp.partition, at)
                    .await
                    .map_err(ApiError::Read)?;
                found.insert(key, offset);
                offset
            }
        };
        answer.push(OffsetAnswer {
            topic: &tp.topic,
            partition: tp.partition,
            offset,
        });
    }
    Ok(serde_json::to_vec(&answer).expect("offsets serialize"))
}

/// A `/fetch` body: one position, a list of them, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FetchRequest {
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    timeout: Option<u64>,
    #[serde(default)]
    topic_partition_offsets: Vec<Position>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Position {
    topic: String,
    partition: i32,
    offset: i64,
}

/// One message of a `/fetch` answer, as the hosted API renders it: text fields, `""` for a missing key or value.
#[derive(Debug, Serialize)]
struct FetchedMessage<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: String,
    value: String,
    headers: Vec<HeaderAnswer>,
}

#[derive(Debug, Serialize)]
struct HeaderAnswer {
    key: String,
    value: String,
}

/// `/fetch`: the records at each requested position, up to the configured bounds, waiting at most `timeout` ms
/// (default 1,000) for data.
pub async fn fetch(config: &Config, producer: &Producer, user: &User, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let request: FetchRequest = serde_json::from_slice(body).map_err(|e| {
        let value = match serde_json::from_slice::<Value>(body) {
            Ok(value) => value,
            Err(e) => return ApiError::BadRequest(shape::not_json(&e)),
        };
        let problem = shape::problem(&value, "a fetch", FETCH).unwrap_or_else(|| e.to_string());
        ApiError::BadRequest(format!(
            "{problem} (send {{\"topic\", \"partition\", \"offset\", \"timeout\"?}} and/or \
             {{\"topicPartitionOffsets\": [...]}})"
        ))
    })?;
    let mut positions = Vec::new();
    match (request.topic, request.partition, request.offset) {
        (Some(topic), Some(partition), Some(offset)) => positions.push(Position {
            topic,
            partition,
            offset,
        }),
        (None, None, None) => {}
        _ => {
            return Err(ApiError::BadRequest(
                "give topic, partition and offset together (or use topicPartitionOffsets)".into(),
            ));
        }
    }
    positions.extend(request.topic_partition_offsets);
    // A position named twice is read once.
    let mut seen = HashSet::new();
    positions.retain(|p| seen.insert((p.topic.clone(), p.partition, p.offset)));
    check_position_count(config, positions.len())?;
    if positions.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to fetch: give {\"topic\", \"partition\", \"offset\"} or topicPartitionOffsets".into(),
        ));
    }
    let wait = Duration::from_millis(
        request
            .timeout
            .unwrap_or(crate::config::defaults::FETCH_TIMEOUT_MS)
            .min(config.server.request_timeout_ms / 2),
    );
    let mut clusters = Vec::with_capacity(positions.len());
    for p in &positions {
        if p.offset < 0 {
            return Err(ApiError::BadRequest(format!(
                "offset must be an integer from 0, got {}",
                p.offset
            )));
        }
        clusters.push(checked_reader(config, producer, user, &p.topic, p.partition).await?);
    }
    // First every position as it is now, without waiting (a long poll of one position would hold up the others
    // behind it on the same connection); only when none has records, again, waiting for the first to get some.
    let messages = read_positions(config, &positions, &clusters, Instant::now()).await?;
    let messages = if messages.is_empty() && !wait.is_zero() {
        read_positions(config, &positions, &clusters, Instant::now() + wait).await?
    } else {
        messages
    };
    Ok(serde_json::to_vec(&messages).expect("messages serialize"))
}

/// Positions one `/fetch` reads at once.
const MAX_READS_AT_ONCE: usize = 4;

/// The records at `positions`, waiting for data until `deadline` at most, and no longer once one position gave
/// records (as a Kafka fetch answers once it has its minimum bytes).
///
/// At most `fetch_max_total_bytes` of records (counted as [`record_bytes`] counts them) are read and answered:
/// positions are read a few at a time (as many as that holds whole fetches of `fetch_max_bytes`, at most
/// [`MAX_READS_AT_ONCE`]), and none is started once the budget is spent. Records take more room once read than on the
/// wire (compressed, or many small ones): each position's read takes at most `fetch_max_total_bytes` once read (a
/// batch that would take more is a 413), so a request holds at most [`MAX_READS_AT_ONCE`] + 1 times that (the reads
/// running, and the records kept).
async fn read_positions<'a>(
    config: &Config,
    positions: &'a [Position],
    clusters: &[Arc<ClusterClient>],
    deadline: Instant,
) -> Result<Vec<FetchedMessage<'a>>, ApiError> {
    let (total, per_position) = (config.server.fetch_max_total_bytes, config.server.fetch_max_bytes);
    let found = tokio::sync::watch::Sender::new(false);
    let reads: Vec<_> = positions
        .iter()
        .zip(clusters)
        .map(|(p, cluster)| read_position(cluster, p, per_position.min(total), total, deadline, &found))
        .collect();
    let mut reads = futures::stream::iter(reads).buffered((total / per_position).clamp(1, MAX_READS_AT_ONCE));
    let (mut messages, mut bytes) = (Vec::new(), 0);
    'positions: while let Some((p, fetched)) = reads.next().await {
        for record in fetched.map_err(ApiError::Read)? {
            if messages.len() == config.server.fetch_max_records || bytes >= total {
                break 'positions;
            }
            bytes += record_bytes(&record);
            messages.push(message(&p.topic, p.partition, record));
        }
    }
    Ok(messages)
}

/// The records at `p`, up to `max_bytes` (taking at most `max_decoded_bytes` once read), waiting for data until
/// `deadline` at most, and no longer once another position of the request has `found` records (this one's are read
/// at the client's next fetch).
async fn read_position<'a>(
    cluster: &ClusterClient,
    p: &'a Position,
    max_bytes: usize,
    max_decoded_bytes: usize,
    deadline: Instant,
    found: &tokio::sync::watch::Sender<bool>,
) -> (&'a Position, Result<Vec<FetchedRecord>, KafkaError>) {
    let mut answered = found.subscribe();
    let wait = if *answered.borrow() {
        Duration::ZERO
    } else {
        deadline.saturating_duration_since(Instant::now())
    };
    let fetch = cluster.fetch(&p.topic, p.partition, p.offset, max_bytes, max_decoded_bytes, wait);
    let result = tokio::select! {
        result = fetch => result,
        // Given up, the fetch drops its reader (the broker holds it for the rest of its wait).
        _ = answered.wait_for(|found| *found), if !wait.is_zero() => Ok(Vec::new()),
    };
    if matches!(&result, Ok(records) if !records.is_empty()) {
        found.send_replace(true);
    }
    (p, result)
}

/// What a record costs to hold and answer: its key, value and header bytes, and what its message and each header of
/// the answer take in memory besides (as a position's read counts what it reads, by rskafka's records and headers).
/// Counted by bytes alone, records with nothing in them (a record with thousands of empty headers) cost nothing, and a
/// request of many positions held each one's read in full.
fn record_bytes(record: &FetchedRecord) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| HEADER_COST + k.len() + v.len())
        .sum();
    MESSAGE_COST + record.key.as_ref().map_or(0, Vec::len) + record.value.as_ref().map_or(0, Vec::len) + headers
}

/// What a message of the answer takes in memory, its texts aside.
const MESSAGE_COST: usize = std::mem::size_of::<FetchedMessage<'static>>();

/// What a header of the answer takes in memory, its texts aside.
const HEADER_COST: usize = std::mem::size_of::<HeaderAnswer>();

/// 413 when a request names more distinct positions than `[server] max_positions_per_request`.
fn check_position_count(config: &Config, count: usize) -> Result<(), ApiError> {
    let max = config.server.max_positions_per_request;
    if count > max {
        return Err(ApiError::TooMany {
            what: "positions",
            count,
            max,
        });
    }
    Ok(())
}

fn message(topic: &str, partition: i32, record: FetchedRecord) -> FetchedMessage<'_> {
    let text = |bytes: Option<Vec<u8>>| bytes.map(lossy).unwrap_or_default();
    FetchedMessage {
        topic,
        partition,
        offset: record.offset,
        timestamp: record.timestamp_ms,
        key: text(record.key),
        value: text(record.value),
        headers: record
            .headers
            .into_iter()
            .map(|(key, value)| HeaderAnswer {
                key,
                value: lossy(value),
            })
            .collect(),
    }
}

/// Bytes as text: UTF-8 as is, anything else with U+FFFD in place of each invalid sequence.
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The client of `topic`'s cluster, once the user may read it and the partition exists.
async fn checked_reader(
    config: &Config,
    producer: &Producer,
    user: &User,
    topic: &str,
    partition: i32,
) -> Result<Arc<ClusterClient>, ApiError> {
    if !user.may_read(topic) {
        return Err(ApiError::ReadForbidden {
            user: user.name.clone(),
            topic: topic.to_owned(),
        });
    }
    let cluster = &resolve(config, None, topic)?.cluster;
    let client = producer.pool().cluster(cluster).await.map_err(ApiError::Read)?;
    let mut count = client.partition_count(topic, None).await.map_err(ApiError::Read)?;
    if partition >= count {
        // Partitions may have been added since the count was cached: asked of the cluster again, as a produce does
        // (at most once a second per cluster), before the partition is said not to exist. Boxed: it is rare.
        count = Box::pin(client.partition_count_now(topic)).await.unwrap_or(count);
    }
    if !(0..count).contains(&partition) {
        let e = KafkaError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            count,
        };
        return Err(ApiError::Read(e));
    }
    Ok(client)
}

/// A JSON body holding one `T` (an object with `fields`, shown to clients as `example`) or an array of them.
fn one_or_many<T: for<'de> Deserialize<'de>>(body: &[u8], example: &str, fields: &[Field]) -> Result<Vec<T>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(shape::not_json(&e)))?;
    let items = match value {
        Value::Array(items) if !items.is_empty() => items,
        Value::Array(_) => return Err(ApiError::BadRequest(format!("the array is empty; send {example}"))),
        one => vec![one],
    };
    items
        .into_iter()
        .map(|item| {
            let problem = shape::problem(&item, "a position", fields);
            serde_json::from_value(item).map_err(|e| {
                let problem = problem.unwrap_or_else(|| e.to_string());
                ApiError::BadRequest(format!("{problem} (send {example} or an array of them)"))
            })
        })
        .collect()
}

const TOPIC_FIELD: Field = Field {
    name: "topic",
    kind: Kind::Text,
    required: true,
    rule: "names a topic (a string)",
};
const PARTITION_FIELD: Field = Field {
    name: "partition",
    kind: Kind::Whole {
        min: 0,
        max: i32::MAX as i64,
        null_ok: false,
    },
    required: true,
    rule: "must be an integer from 0 to 2147483647",
};
const OFFSET_FIELD: Field = Field {
    name: "offset",
    kind: Kind::Whole {
        min: 0,
        max: i64::MAX,
        null_ok: false,
    },
    required: true,
    rule: "must be a whole number of 0 or more",
};

/// `/offsets`: one position.
const TOPIC_PARTITION: &[Field] = &[TOPIC_FIELD, PARTITION_FIELD];

/// `/fetch`: a position with its offset, or a list of them.
const POSITION: &[Field] = &[TOPIC_FIELD, PARTITION_FIELD, OFFSET_FIELD];
const FETCH: &[Field] = &[
    Field {
        required: false,
        ..TOPIC_FIELD
    },
    Field {
        required: false,
        ..PARTITION_FIELD
    },
    Field {
        required: false,
        ..OFFSET_FIELD
    },
    Field {
        name: "timeout",
        kind: Kind::Whole {
            min: 0,
            max: i64::MAX,
            null_ok: true,
        },
        required: false,
        rule: "must be a whole number of milliseconds",
    },
    Field {
        name: "topicPartitionOffsets",
        kind: Kind::List {
            fields: POSITION,
            null_ok: false,
        },
        required: false,
        rule: "must be a list of {\"topic\", \"partition\", \"offset\"} objects",
    },
];
