//! One connected Kafka cluster: its rskafka client, cached topic metadata, and a batching writer per partition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rskafka::client::Client;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{Compression as WireCompression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use tokio::sync::{OnceCell, Semaphore};

use super::KafkaError;
use super::batch::{Appended, BatchLimits, Connect, PartitionWriter, ProduceCounters, WriteError};
use super::reachability::Reachability;
use crate::config::{Cluster, Compression};

/// Whether the current request waits for its records' real outcome rather than answer "in doubt".
fn awaits_outcome() -> bool {
    crate::context::RequestContext::current().is_some_and(|context| context.awaits_outcome())
}

/// An absent topic is looked up again after this long, so a flood of requests for a missing topic costs at
/// most one metadata request per interval, while a topic created meanwhile is found quickly.
const ABSENT_TOPIC_TTL: Duration = Duration::from_secs(1);

/// Extra time past the produce timeout before luka stops waiting on rskafka, whose own deadline should fire first.
const TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

/// How long a produce cut short waits for its partition writer to say whether its records can have been sent.
const WRITER_VERDICT: Duration = Duration::from_millis(250);

/// A full metadata listing younger than this is reused: by `/topics`, and for a topic the listing did not have. A
/// request naming topics that do not exist (new names for a pattern, say) costs the broker at most one metadata
/// request per interval, however many such requests come.
const LISTING_REUSE: Duration = Duration::from_secs(1);

/// Topics remembered as absent at most; past it, absent names are not remembered (the listing's age still bounds
/// the metadata requests they cause).
const MAX_ABSENT_REMEMBERED: usize = 10_000;

/// How often metadata is asked again for a topic just created that brokers do not show yet.
const CREATED_TOPIC_POLL: Duration = Duration::from_millis(50);

/// Partitions whose reading client (one broker connection each) a cluster keeps: a reader of more partitions than
/// this reconnects for the least recently read ones.
const MAX_READERS: u64 = 256;

/// Skip positions remembered per cluster ([`ClusterClient::skipped`]): one per offset a reader is stuck at.
const MAX_SKIPS: u64 = 1024;

/// How long a skip position is kept.
const SKIP_KEPT: Duration = Duration::from_secs(600);

/// A reading client not used for this long is closed (moka drops it at the cache's next use; it runs no thread).
const READER_IDLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct CachedTopic {
    /// `None`: the cluster has no such topic.
    partitions: Option<i32>,
    fetched_at: Instant,
}

/// What to do when a topic is missing: create it with these partitions and replication factor.
#[derive(Debug, Clone, Copy)]
pub struct CreateIfMissing {
    pub partitions: i32,
    pub replication_factor: i16,
}

#[derive(Debug)]
pub struct ClusterClient {
    config: Arc<Cluster>,
    client: Arc<Client>,
    metadata: Mutex<HashMap<String, CachedTopic>>,
    /// One metadata refresh at a time; callers arriving meanwhile reuse its result.
    refresh: tokio::sync::Mutex<()>,
    /// When the last full listing arrived.
    listed_at: Mutex<Option<Instant>>,
    /// When forgetting a topic last forced the next look-up to list the cluster again.
    forced_listing_at: Mutex<Option<Instant>>,
    /// Topics luka created here that the config does not name (by pattern); bounded by `max_created_topics`.
    created_by_pattern: std::sync::atomic::AtomicUsize,
    writers: DashMap<(String, i32), Arc<OnceCell<Arc<PartitionWriter>>>>,
    /// Reading clients, each with its own broker connection: the most recently used [`MAX_READERS`] (a user may read
    /// every partition of a large cluster once); one idle for [`READER_IDLE`] goes at the cache's next use.
    readers: moka::sync::Cache<(String, i32), Arc<OnceCell<Arc<PartitionClient>>>>,
    /// Where reads that began at an offset inside aborted transactions got to (topic, partition, offset → the next
    /// offset to read): a read skips them for a limited time, and the reader asks again from the same offset, so
    /// without it a long enough run of aborted batches would be answered with nothing for good.
    pub(crate) skipped: moka::sync::Cache<(String, i32, i64), super::read::Skip>,
    counters: Arc<ProduceCounters>,
    reachability: Arc<Reachability>,
    /// Produce calls waiting on the cluster; bounded by `max_in_flight`.
    in_flight: Semaphore,
    /// Topics' rules for records, from their configs.
    rules: super::rules::RulesCache,
}

impl ClusterClient {
    pub(crate) fn new(config: Arc<Cluster>, client: Client, reachability: Arc<Reachability>) -> Self {
        Self {
            in_flight: Semaphore::new(config.max_in_flight),
            rules: super::rules::RulesCache::new(config.metadata_max_age),
            reachability,
            config,
            client: Arc::new(client),
            metadata: Mutex::default(),
            refresh: tokio::sync::Mutex::default(),
            listed_at: Mutex::default(),
            forced_listing_at: Mutex::default(),
            created_by_pattern: std::sync::atomic::AtomicUsize::new(0),
            writers: DashMap::new(),
            readers: moka::sync::Cache::builder()
                .max_capacity(MAX_READERS)
                .time_to_idle(READER_IDLE)
                .build(),
            skipped: moka::sync::Cache::builder()
                .max_capacity(MAX_SKIPS)
                .time_to_live(SKIP_KEPT)
                .build(),
            counters: Arc::default(),
        }
    }

    pub fn counters(&self) -> &ProduceCounters {
        &self.counters
    }

    pub(crate) fn config(&self) -> &Cluster {
        &self.config
    }

    /// A new rskafka client for one partition (writers and readers each keep their own).
    pub(crate) async fn partition_client(&self, topic: &str, partition: i32) -> Result<PartitionClient, KafkaError> {
        forgetting(
            &self.client,
            self.client
                .partition_client(topic, partition, UnknownTopicHandling::Error),
        )
        .await
        .map_err(|e| KafkaError::from_client(&self.config.name, topic, partition, &e))
    }

    /// The reading client cell of one partition, made empty if there is none.
    pub(crate) fn reader_cell(&self, topic: &str, partition: i32) -> Arc<OnceCell<Arc<PartitionClient>>> {
        self.readers.get_with((topic.to_owned(), partition), Arc::default)
    }

    /// Drops the reading client of one partition, and with it its connection once no read uses it: a read given up
    /// while the broker still holds it (a fetch's wait) would make the partition's next read queue behind it.
    pub(crate) fn forget_reader(&self, topic: &str, partition: i32) {
        self.readers.invalidate(&(topic.to_owned(), partition));
    }

    /// `work` under the cluster's outage memory and `limit` (see [`Reachability::guard`]).
    pub(crate) async fn guarded<T>(
        &self,
        limit: Duration,
        work: impl std::future::Future<Output = Result<T, KafkaError>>,
    ) -> Result<T, KafkaError> {
        self.reachability.guard(&self.config, limit, work).await
    }

    /// Every topic of the cluster with its partition count (and the metadata cache refreshed with them).
    pub async fn topics(&self) -> Result<Vec<(String, i32)>, KafkaError> {
        let _single_flight = self.listed_unless(|| false).await?;
        let metadata = self.metadata.lock().expect("metadata lock poisoned");
        Ok(metadata
            .iter()
            .filter_map(|(name, entry)| entry.partitions.map(|count| (name.clone(), count)))
            .collect())
    }

    /// Creates the configured development topics that the cluster lacks.
    pub(crate) async fn create_configured_topics(&self) {
        for (topic, partitions, replication_factor) in &self.config.create_topics {
            let create = CreateIfMissing {
                partitions: *partitions,
                replication_factor: *replication_factor,
            };
            if let Err(e) = self.partition_count(topic, Some(create)).await {
                tracing::warn!(cluster = %self.config.name, %topic, error = %e, "could not create configured topic");
            }
        }
    }

    /// Partition count of `topic`, from cache when fresh; creates the topic if it is missing and `create` says so.
    pub async fn partition_count(&self, topic: &str, create: Option<CreateIfMissing>) -> Result<i32, KafkaError> {
        match self.cached(topic) {
            Some(Some(count)) => return Ok(count),
            Some(None) if create.is_none() => return Err(self.unknown_topic(topic)),
            _ => {}
        }
        // Boxed: a look-up is rare, and its deep future would otherwise be part of every produce's.
        Box::pin(self.look_up_partition_count(topic, create)).await
    }

    /// [`ClusterClient::partition_count`] when the cache does not know: asks the cluster, once for concurrent callers.
    async fn look_up_partition_count(&self, topic: &str, create: Option<CreateIfMissing>) -> Result<i32, KafkaError> {
        let _single_flight = self.listed_unless(|| self.cached(topic).is_some()).await?;
        self.remember_absent(topic);
        match self.cached(topic).flatten() {
            Some(count) => Ok(count),
            None => match create {
                Some(create) => self.create_topic(topic, create).await,
                None => Err(self.unknown_topic(topic)),
            },
        }
    }

    /// Partition count of `topic` as the cluster lists it now (or did less than [`LISTING_REUSE`] ago), whatever the
    /// cache holds: partitions may have been added since it was filled.
    pub async fn partition_count_now(&self, topic: &str) -> Result<i32, KafkaError> {
        let _single_flight = self.listed_unless(|| false).await?;
        self.cached(topic).flatten().ok_or_else(|| self.unknown_topic(topic))
    }

    /// Whether the last full listing is younger than [`LISTING_REUSE`].
    fn listed_recently(&self) -> bool {
        let listed_at = *self.listed_at.lock().expect("listing time lock poisoned");
        listed_at.is_some_and(|at| at.elapsed() < LISTING_REUSE.min(self.config.metadata_max_age))
    }

    /// After a listing without `topic`: remember it as absent (as of that listing), within a bound.
    fn remember_absent(&self, topic: &str) {
        let Some(listed_at) = *self.listed_at.lock().expect("listing time lock poisoned") else {
            return;
        };
        let mut metadata = self.metadata.lock().expect("metadata lock poisoned");
        if metadata.len() < MAX_ABSENT_REMEMBERED && !metadata.contains_key(topic) {
            metadata.insert(
                topic.to_owned(),
                CachedTopic {
                    partitions: None,
                    fetched_at: listed_at,
                },
            );
        }
    }

    /// Cached partition count, if the entry is still fresh: `Some(None)` means known to be absent.
    fn cached(&self, topic: &str) -> Option<Option<i32>> {
        let metadata = self.metadata.lock().expect("metadata lock poisoned");
        let entry = metadata.get(topic)?;
        let max_age = if entry.partitions.is_some() {
            self.config.metadata_max_age
        } else {
            ABSENT_TOPIC_TTL
        };
        (entry.fetched_at.elapsed() < max_age).then_some(entry.partitions)
    }

    /// Takes the turn to refresh the metadata (one at a time) and lists the cluster, unless it was listed less than
    /// [`LISTING_REUSE`] ago or `cached` (asked once the turn is taken: a refresh before it may have filled the
    /// cache) says the cache will do; gives the turn, held while the caller reads what was listed. All within the
    /// produce timeout, the wait for the turn included: a caller queued behind refreshes that each take their whole
    /// time would otherwise wait for all of them.
    async fn listed_unless(
        &self,
        cached: impl FnOnce() -> bool,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, KafkaError> {
        let deadline = Instant::now() + self.config.produce_timeout;
        let turn = tokio::time::timeout_at(deadline.into(), self.refresh.lock())
            .await
            .map_err(|_| KafkaError::Timeout {
                cluster: self.config.name.clone(),
                limit: Some(self.config.produce_timeout),
            })?;
        if !cached() && !self.listed_recently() {
            self.refresh_metadata(deadline).await?;
        }
        Ok(turn)
    }

    /// Lists the cluster's topics into the cache, by `deadline`.
    async fn refresh_metadata(&self, deadline: Instant) -> Result<(), KafkaError> {
        let topics = self
            .guarded(deadline.saturating_duration_since(Instant::now()), async {
                forgetting(&self.client, self.client.list_topics())
                    .await
                    .map_err(|e| KafkaError::from_client(&self.config.name, "", -1, &e))
            })
            .await?;
        let now = Instant::now();
        *self.listed_at.lock().expect("listing time lock poisoned") = Some(now);
        let mut metadata = self.metadata.lock().expect("metadata lock poisoned");
        // Absent names are forgotten at each listing, so that what is remembered stays bounded by recent requests.
        metadata.retain(|_, entry| entry.partitions.is_some());
        for entry in metadata.values_mut() {
            *entry = CachedTopic {
                partitions: None,
                fetched_at: now,
            };
        }
        for topic in topics {
            let partitions = i32::try_from(topic.partitions.len()).ok().filter(|n| *n > 0);
            metadata.insert(
                topic.name,
                CachedTopic {
                    partitions,
                    fetched_at: now,
                },
            );
        }
        Ok(())
    }

    async fn create_topic(&self, topic: &str, create: CreateIfMissing) -> Result<i32, KafkaError> {
        let configured = self.config.create_topics.iter().any(|(name, _, _)| name == topic);
        let limit = self.config.max_created_topics;
        if !configured {
            use std::sync::atomic::Ordering;
            let taken = self
                .created_by_pattern
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1));
            if taken.is_err() {
                return Err(KafkaError::CreateLimit {
                    cluster: self.config.name.clone(),
                    topic: topic.to_owned(),
                    limit,
                });
            }
        }
        // Topics luka did not create after all are not counted against max_created_topics.
        let give_back = || {
            if !configured {
                self.created_by_pattern
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let controller = self.client.controller_client().map_err(|e| {
            give_back();
            self.create_error(topic, &e)
        })?;
        let timeout_ms = i32::try_from(self.config.produce_timeout.as_millis()).unwrap_or(i32::MAX);
        self.guarded(self.config.produce_timeout, async {
            // The controller is found by a metadata request over the cluster's metadata connection.
            let creating = controller.create_topic(topic, create.partitions, create.replication_factor, timeout_ms);
            let created = forgetting(&self.client, creating).await;
            match created {
                Ok(()) => {
                    tracing::info!(cluster = %self.config.name, %topic, partitions = create.partitions, "created topic");
                    Ok(())
                }
                // Another luka (or client) created it first: fine, and not one luka created.
                Err(ClientError::ServerError {
                    protocol_error: ProtocolError::TopicAlreadyExists,
                    ..
                }) => {
                    give_back();
                    Ok(())
                }
                Err(e) => Err(self.create_error(topic, &e)),
            }
        })
        .await
        // A creation that failed does not count against max_created_topics. Nor does one that timed out, though the
        // topic may have been made: kept, a stalled controller would use the limit up for good on names never made.
        .inspect_err(|_| give_back())?;
        // The controller answers once the topic is committed; a broker's metadata can show it a moment later (Apache
        // Kafka applies it asynchronously). Look again briefly rather than report a topic just created as unknown.
        let deadline = Instant::now() + self.config.produce_timeout;
        loop {
            self.refresh_metadata(deadline).await?;
            if let Some(count) = self.cached(topic).flatten() {
                return Ok(count);
            }
            if Instant::now() >= deadline {
                return Err(self.unknown_topic(topic));
            }
            tokio::time::sleep(CREATED_TOPIC_POLL).await;
        }
    }

    /// Writes `records` to one partition, sharing a batch with concurrent callers; gives their offsets in order (and
    /// the broker's append time, on a `LogAppendTime` topic).
    ///
    /// An answer is always true: records withdrawn before they were sent are "not written" (503, or 504 that says
    /// so); records that were sent and not acknowledged in time are in doubt (504, "may or may not"), unless the
    /// request waits for the real outcome ([`RequestContext::awaits_outcome`], an `Idempotency-Key`): then it waits
    /// for the writer, which resends until the broker answers or the delivery timeout passes.
    ///
    /// Every outcome is counted in `luka_records_total` and `luka_record_bytes_total`: records written in the
    /// partition writer's own series, the rest by label set; by the writer, for a caller gone (its client left) after
    /// its records were sent.
    pub async fn produce(&self, topic: &str, partition: i32, records: Vec<Record>) -> Result<Appended, KafkaError> {
        let (count, bytes) = tally(&records);
        let result = self.write(topic, partition, records, (count, bytes)).await;
        match &result {
            Ok((_, writer)) => writer.written().add(count, bytes),
            Err(e) => crate::metrics::metrics().record_outcome(&self.config.name, topic, e.kind(), count, bytes),
        }
        result.map(|(appended, _)| appended)
    }

    /// [`Self::produce`], uncounted; the records' outcome and the writer that took them.
    async fn write(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
        tally: (u64, u64),
    ) -> Result<(Appended, Arc<PartitionWriter>), KafkaError> {
        let Ok(_in_flight) = self.in_flight.try_acquire() else {
            return Err(KafkaError::Busy {
                cluster: self.config.name.clone(),
                limit: self.config.max_in_flight,
            });
        };
        let deadline = Instant::now() + self.config.produce_timeout + TIMEOUT_MARGIN;
        let queued = async {
            let writer = self.writer(topic, partition).await?;
            let ticket = writer
                .queue(records, tally)
                .await
                .map_err(|e| self.write_error(topic, partition, e))?;
            Ok((writer, ticket))
        };
        let (writer, mut ticket) = self.guarded(deadline - Instant::now(), queued).await.inspect_err(|e| {
            if let KafkaError::UnknownTopic { .. } = e {
                self.forget_topic(topic);
            }
        })?;
        let limit = deadline.saturating_duration_since(Instant::now());
        let written = match self.guarded(limit, async { Ok(ticket.outcome().await) }).await {
            Ok(written) => written,
            // Cut short (time, outage): true as it stands if the records were not sent yet.
            Err(cut) if ticket.withdraw() => return Err(cut),
            Err(_) if awaits_outcome() => ticket.outcome().await,
            // The writer has them: it drops at once, on the same outage, a batch no send of which can have reached
            // a broker ("nothing was written"); otherwise they are in doubt.
            Err(cut) => match ticket.outcome_within(WRITER_VERDICT).await {
                Err(WriteError::NotSent) => return Err(cut),
                outcome => outcome,
            },
        };
        // This caller counts the outcome (see `produce`); the writer counts only for callers gone before theirs.
        ticket.counted();
        let result = written.map_err(|e| self.write_error(topic, partition, e));
        if let Err(KafkaError::UnknownTopic { .. }) = &result {
            self.forget_topic(topic);
        }
        result.map(|appended| (appended, writer))
    }

    /// The writer of one partition, connecting on first use and again after its writer stopped.
    async fn writer(&self, topic: &str, partition: i32) -> Result<Arc<PartitionWriter>, KafkaError> {
        let key = (topic.to_owned(), partition);
        // Most calls find the writer running: a shared look-up, without taking the map's shard for writing.
        let running = self
            .writers
            .get(&key)
            .and_then(|cell| cell.get().filter(|w| w.is_open()).cloned());
        if let Some(writer) = running {
            return Ok(writer);
        }
        let cell = self.writers.entry(key.clone()).or_default().clone();
        match cell.get() {
            Some(writer) if writer.is_open() => return Ok(Arc::clone(writer)),
            Some(_) => {
                self.writers.remove_if(&key, |_, current| Arc::ptr_eq(current, &cell));
                return Box::pin(self.writer(topic, partition)).await;
            }
            None => {}
        }
        // Boxed: starting a writer is rare, and its deep future would otherwise be part of every produce's.
        Box::pin(self.start_writer(&cell, topic, partition)).await
    }

    /// Starts the partition's writer in `cell`, unless a concurrent caller did.
    async fn start_writer(
        &self,
        cell: &OnceCell<Arc<PartitionWriter>>,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionWriter>, KafkaError> {
        cell.get_or_try_init(|| async {
            let client = self.partition_client(topic, partition).await?;
            let limits = BatchLimits {
                max_records: self.config.max_batch_records,
                max_bytes: self.config.max_batch_bytes,
                linger: self.config.linger,
                compression: wire_compression(self.config.compression),
                timeout: self.config.produce_timeout,
                idempotence: self.config.idempotence,
                delivery_timeout: self.config.delivery_timeout,
            };
            let (rskafka, topic_name) = (Arc::clone(&self.client), topic.to_owned());
            let connect: Connect = Arc::new(move || {
                let (rskafka, topic) = (Arc::clone(&rskafka), topic_name.clone());
                Box::pin(async move {
                    forgetting(
                        &rskafka,
                        rskafka.partition_client(topic, partition, UnknownTopicHandling::Error),
                    )
                    .await
                })
            });
            Ok(Arc::new(PartitionWriter::start(
                client,
                connect,
                limits,
                Arc::clone(&self.counters),
                self.reachability.subscribe(),
                Arc::from(self.config.name.as_str()),
            )))
        })
        .await
        .cloned()
    }

    /// Drops the cached partition count of a topic after Kafka says it does not know it, so the next request looks
    /// again (and gets a 404, or the topic created, if it is gone). The topic's writers that still have callers stay
    /// (as do those still starting): a broker may say so for a moment after a leader moved, and the writer's client
    /// looks its leader up again by itself; a second writer started beside one with records queued would write the
    /// partition under another producer id at the same time, and their records could interleave. Idle ones go, so
    /// the writers of deleted topics do not stay for good.
    fn forget_topic(&self, topic: &str) {
        self.metadata.lock().expect("metadata lock poisoned").remove(topic);
        // The next look-up lists the cluster again rather than take the topic for absent from a listing that had it;
        // forcing a listing at most once per [`LISTING_REUSE`], as failed batches may come one after another.
        let mut forced = self.forced_listing_at.lock().expect("listing time lock poisoned");
        if forced.is_none_or(|at| at.elapsed() >= LISTING_REUSE) {
            *forced = Some(Instant::now());
            *self.listed_at.lock().expect("listing time lock poisoned") = None;
        }
        drop(forced);
        // A cell still starting its writer is held by the caller starting it; one left empty by a start that failed
        // is not.
        self.writers.retain(|(t, _), cell| {
            t != topic
                || match cell.get() {
                    Some(writer) => !writer.is_idle(),
                    None => Arc::strong_count(cell) > 1,
                }
        });
    }

    /// The rules `topic` holds its records to (see [`super::rules`]); unknown rules check nothing.
    pub async fn topic_rules(&self, topic: &str) -> super::TopicRules {
        self.rules.rules(&self.client, topic).await
    }

    /// Whether the cluster answers a metadata request (unbounded: callers set the deadline).
    pub async fn ping(&self) -> Result<(), KafkaError> {
        forgetting(&self.client, self.client.list_topics())
            .await
            .map(|_| ())
            .map_err(|e| KafkaError::from_client(&self.config.name, "", -1, &e))
    }

    fn write_error(&self, topic: &str, partition: i32, error: WriteError) -> KafkaError {
        match error {
            WriteError::Refused(e) => KafkaError::from_client(&self.config.name, topic, partition, &e),
            WriteError::NotSent => KafkaError::Unavailable {
                cluster: self.config.name.clone(),
                detail: format!("the connection to the leader of '{topic}' partition {partition} was lost"),
            },
            WriteError::InDoubt => KafkaError::InDoubt {
                cluster: self.config.name.clone(),
                topic: topic.to_owned(),
                partition,
            },
        }
    }

    fn unknown_topic(&self, topic: &str) -> KafkaError {
        KafkaError::UnknownTopic {
            cluster: self.config.name.clone(),
            topic: topic.to_owned(),
        }
    }

    fn create_error(&self, topic: &str, error: &ClientError) -> KafkaError {
        KafkaError::CreateTopic {
            cluster: self.config.name.clone(),
            topic: topic.to_owned(),
            detail: error.to_string(),
        }
    }
}

fn wire_compression(compression: Compression) -> WireCompression {
    match compression {
        Compression::None => WireCompression::NoCompression,
        Compression::Gzip => WireCompression::Gzip,
        Compression::Lz4 => WireCompression::Lz4,
        Compression::Snappy => WireCompression::Snappy,
        Compression::Zstd => WireCompression::Zstd,
    }
}

/// How many records, and their bytes (key, value and headers), as the record metrics count them.
pub(crate) fn tally(records: &[Record]) -> (u64, u64) {
    let bytes: usize = records.iter().map(Record::approximate_size).sum();
    (records.len() as u64, bytes as u64)
}

/// `work`, a request that waits on the cluster's metadata connection (a listing, a topic's configs, a partition's
/// leader look-up): should its caller give up on it (drop it unfinished: its time ran out), that connection is
/// forgotten, and the next such request connects afresh. rskafka replaces the connection only when it breaks, and a
/// broker that accepts connections but never answers (stopped, stalled) would otherwise hold every metadata request
/// of the cluster, the look-ups of new leaders after a failover among them, for as long as it lasts.
pub(crate) async fn forgetting<T>(client: &Client, work: impl std::future::Future<Output = T>) -> T {
    /// Set while `work` runs; taken once it has finished.
    struct Unfinished<'a>(Option<&'a Client>);

    impl Drop for Unfinished<'_> {
        fn drop(&mut self) {
            if let Some(client) = self.0 {
                client.forget_metadata_broker();
            }
        }
    }

    let mut unfinished = Unfinished(Some(client));
    let output = work.await;
    unfinished.0 = None;
    output
}
