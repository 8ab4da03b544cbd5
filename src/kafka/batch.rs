//! Adaptive batching per partition: callers' record lists in, each caller's own offsets out.
//!
//! One writer task per partition keeps at most one produce request in flight. A caller whose partition is idle is
//! sent at once (no linger added to a lone webhook); callers that arrive while a produce is in flight queue up and
//! go together in the next request, up to the record and byte bounds. So batches grow with load by themselves, and
//! records reach the partition in the order their callers queued them.
//!
//! Under load (the partition's last batch carried more than one caller), the writer, woken by a caller, first lets
//! the tasks already waiting to run on its thread have their turn (one `yield_now`): requests that arrived together
//! with the one that woke it queue their records too, and go in the same batch instead of the next one. A lone
//! caller is never made to wait for this. The wait is bounded by the scheduler, which runs a yielded task again
//! once its queue is empty or after a few dozen tasks (tokio's event interval), whichever comes first.
//!
//! ```text
//! caller A: [r1, r2] ─┐ (in flight: nothing) ─> produce [r1 r2]          ─> A: [o, o+1]
//! caller B: [r3]     ─┤ (queued while A's was in flight)                  ┌─> B: [o+2]
//! caller C: [r4, r5] ─┘ ─────────────────────> produce [r3 r4 r5] ───────┴─> C: [o+3, o+4]
//! ```
//!
//! Every caller learns one of three things: its offsets, a refusal (nothing of its records was written), or that
//! its records were sent and their outcome is unknown. A caller that stops waiting can withdraw its records until
//! the writer takes them into a batch; after that they are sent. With idempotence (the default) each writer has
//! its own producer id and numbers its batches, and a batch whose answer was lost or late is sent again, the very
//! same, on a fresh connection until the broker answers or the delivery timeout passes: the broker recognises a
//! batch it already has, so nothing is written twice, and the records' outcome becomes known.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, ProduceBatch, Produced, ProducerIdentity};
use rskafka::record::Record;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::KafkaError;
use crate::metrics::RecordSeries;

/// Callers queued per partition before further callers wait for room (all within their produce timeout).
const QUEUE: usize = 1024;

/// The most bytes a record's timestamp delta and offset delta take (varints of an i64 and an i32).
const MAX_DELTAS: usize = 10 + 5;

/// Pause before a batch whose outcome is unknown is sent again, doubling up to [`MAX_RESEND_PAUSE`]: each resend
/// makes a new connection (two metadata requests), so a cluster in trouble is not flooded by its stuck partitions.
const RESEND_PAUSE: Duration = Duration::from_millis(100);
const MAX_RESEND_PAUSE: Duration = Duration::from_secs(2);

/// Fresh producer ids one batch may ask for (after the broker forgot or refused the writer's): a broker that keeps
/// refusing them refuses the batch.
const MAX_NEW_PRODUCER_IDS: usize = 3;

/// Where a caller's records are: queued (the caller may still withdraw them), taken into a batch (being sent),
/// withdrawn by the caller, or dropped by the writer before any send of them could have reached a broker.
const QUEUED: u8 = 0;
const SENT: u8 = 1;
const WITHDRAWN: u8 = 2;
const NOT_SENT: u8 = 3;

/// Produce requests and records sent to Kafka, for observing how well batching works.
#[derive(Debug, Default)]
pub struct ProduceCounters {
    pub requests: AtomicU64,
    pub records: AtomicU64,
}

/// How a partition's batches are cut and sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    /// Extra wait before each send for more records (0: adaptive batching alone).
    pub linger: Duration,
    pub compression: Compression,
    /// One send that has not answered by then is given up (and, with idempotence, sent again).
    pub timeout: Duration,
    /// Producer id and sequence numbers in every batch.
    pub idempotence: bool,
    /// With idempotence: how long a batch whose outcome is unknown is sent again before it is given up.
    pub delivery_timeout: Duration,
}

/// A new connection to the partition's leader, for sending a batch again.
pub(crate) type Connect = Arc<dyn Fn() -> BoxFuture<'static, Result<PartitionClient, ClientError>> + Send + Sync>;

/// Where one caller's records went: their offsets in order and, on a topic whose record timestamps are the broker's
/// (`message.timestamp.type=LogAppendTime`), the time the broker gave the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub offsets: Vec<i64>,
    pub log_append_time_ms: Option<i64>,
}

/// The outcome of one caller's records, or the refusal shared by everyone in the batch.
type Written = Result<Appended, Arc<ClientError>>;

struct Job {
    records: Vec<Record>,
    bytes: usize,
    stage: Arc<AtomicU8>,
    done: Reply,
}

/// Where a caller's outcome goes; counted among its writer's unanswered callers until it is sent or dropped.
///
/// A caller counts its records' outcome in `luka_records_total` itself ([`super::ClusterClient::produce`]); one that
/// is gone before it got an outcome (its request dropped: the client left) cannot, and the records it had sent may
/// still be written. Their outcome is then counted here, where it is known: written, refused, or in doubt when the
/// writer gives the batch up. Records taken back before they were sent were not written, and are not counted.
struct Reply {
    sender: Option<oneshot::Sender<Written>>,
    unanswered: Arc<AtomicUsize>,
    /// The caller's records and their bytes (as the caller counts them), and its stage.
    tally: (u64, u64),
    stage: Arc<AtomicU8>,
    /// Set by the caller once it has an outcome to count (see [`Ticket::counted`]).
    counted: Arc<AtomicBool>,
    counts: Arc<Counts>,
}

/// What a writer counts its callers' outcomes with.
#[derive(Debug)]
struct Counts {
    written: RecordSeries,
    cluster: Arc<str>,
    topic: String,
    partition: i32,
}

impl Reply {
    fn send(mut self, written: Written) {
        if let Some(sender) = self.sender.take()
            && let Err(written) = sender.send(written)
            && !self.counted.load(Ordering::Acquire)
        {
            let counts = &self.counts;
            match written {
                Ok(_) => counts.written.add(self.tally.0, self.tally.1),
                Err(refused) => self.count_as(
                    KafkaError::from_client(&counts.cluster, &counts.topic, counts.partition, &refused).kind(),
                ),
            }
        }
    }

    /// Counts the caller's records under `result` (not `ok`, which has its series).
    fn count_as(&self, result: &'static str) {
        let ((records, bytes), counts) = (self.tally, &self.counts);
        crate::metrics::metrics().record_outcome(&counts.cluster, &counts.topic, result, records, bytes);
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // Dropped unanswered (the writer gave its batch up): in doubt if they were sent, for a caller gone too.
        if let Some(sender) = &self.sender
            && sender.is_closed()
            && !self.counted.load(Ordering::Acquire)
            && self.stage.load(Ordering::Acquire) == SENT
        {
            self.count_as("in_doubt");
        }
        self.unanswered.fetch_sub(1, Ordering::Release);
    }
}

/// The sending side of one partition's writer task; the task ends when this is dropped.
#[derive(Debug)]
pub(crate) struct PartitionWriter {
    jobs: mpsc::Sender<Job>,
    /// The partition's `ok` record series (counted by its callers as their records are written) and its labels.
    counts: Arc<Counts>,
    /// Callers queued or in a batch, not answered yet.
    unanswered: Arc<AtomicUsize>,
}

/// Why a caller's records were not (known to be) written.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The broker refused them: nothing of them was written.
    Refused(Arc<ClientError>),
    /// The writer stopped before sending them: nothing of them was written.
    NotSent,
    /// They were sent and no answer came (lost, late, or the writer gave up): they may or may not be written.
    InDoubt,
}

/// A caller's place in the queue: its records' outcome, or a way to take them back before they are sent. Dropped
/// (the caller's request cut short, its client gone), it takes them back if they are not sent yet: nobody waits for
/// their outcome any more, and a client that sends the request again would have them written twice.
pub(crate) struct Ticket {
    stage: Arc<AtomicU8>,
    answer: oneshot::Receiver<Written>,
    counted: Arc<AtomicBool>,
}

impl Ticket {
    /// The caller has an outcome to count (the records' own, or the one it answers when cut short): the writer
    /// must not count them again (see [`Reply`]).
    pub(crate) fn counted(&self) {
        self.counted.store(true, Ordering::Release);
    }

    /// Waits for the records' outcome.
    pub(crate) async fn outcome(&mut self) -> Result<Appended, WriteError> {
        match (&mut self.answer).await {
            Ok(Ok(appended)) => Ok(appended),
            Ok(Err(refused)) => Err(WriteError::Refused(refused)),
            Err(_) if self.stage.load(Ordering::Acquire) == SENT => Err(WriteError::InDoubt),
            Err(_) => Err(WriteError::NotSent),
        }
    }

    /// The outcome if the writer gives it within `grace`: after an outage, the writer drops at once a batch that
    /// cannot have reached a broker.
    pub(crate) async fn outcome_within(&mut self, grace: Duration) -> Result<Appended, WriteError> {
        match tokio::time::timeout(grace, self.outcome()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(WriteError::InDoubt),
        }
    }

    /// Takes the records back unless they were sent: true means they will never be written.
    pub(crate) fn withdraw(&self) -> bool {
        match self
            .stage
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(stage) => stage == WITHDRAWN,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.withdraw();
    }
}

impl PartitionWriter {
    /// Starts the writer task for one partition; without idempotence it stops when `outage` says the cluster is
    /// down, or when a send does not answer in time (so the partition gets a new connection).
    pub(crate) fn start(
        client: PartitionClient,
        connect: Connect,
        limits: BatchLimits,
        counters: Arc<ProduceCounters>,
        outage: watch::Receiver<Option<Arc<str>>>,
        cluster: Arc<str>,
    ) -> Self {
        let counts = Arc::new(Counts {
            written: crate::metrics::metrics().record_series(&cluster, client.topic(), "ok"),
            cluster: Arc::clone(&cluster),
            topic: client.topic().to_owned(),
            partition: client.partition(),
        });
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writer = Writer {
            client,
            connect,
            limits,
            counters,
            outage,
            cluster,
            producer: None,
        };
        tokio::spawn(writer.run(queue));
        Self {
            jobs,
            counts,
            unanswered: Arc::default(),
        }
    }

    /// The partition's `ok` record series.
    pub(crate) fn written(&self) -> &RecordSeries {
        &self.counts.written
    }

    /// Whether the task is still serving.
    pub(crate) fn is_open(&self) -> bool {
        !self.jobs.is_closed()
    }

    /// Whether every caller it took has been answered (nothing queued or in a batch).
    pub(crate) fn is_idle(&self) -> bool {
        self.unanswered.load(Ordering::Acquire) == 0
    }

    /// Queues `records` (waiting for room in the queue); the ticket gives their outcome.
    /// `tally`: the records and their bytes as the caller counts them ([`super::cluster::tally`]), for the writer to
    /// count with should the caller be gone (see [`Reply`]).
    pub(crate) async fn queue(&self, records: Vec<Record>, tally: (u64, u64)) -> Result<Ticket, WriteError> {
        let bytes = records.iter().map(encoded_size).sum();
        let (sender, answer) = oneshot::channel();
        let stage = Arc::new(AtomicU8::new(QUEUED));
        let counted = Arc::new(AtomicBool::new(false));
        self.unanswered.fetch_add(1, Ordering::Relaxed);
        let done = Reply {
            sender: Some(sender),
            unanswered: Arc::clone(&self.unanswered),
            tally,
            stage: Arc::clone(&stage),
            counted: Arc::clone(&counted),
            counts: Arc::clone(&self.counts),
        };
        let job = Job {
            records,
            bytes,
            stage: Arc::clone(&stage),
            done,
        };
        self.jobs.send(job).await.map_err(|_| WriteError::NotSent)?;
        Ok(Ticket { stage, answer, counted })
    }
}

/// A caller in a batch: where its records are in the batch, and where its answer goes.
type Caller = (std::ops::Range<usize>, Reply);

/// What became of a batch.
enum Delivered {
    /// The broker's answer, for every caller in the batch.
    Answer(Result<Produced, ClientError>),
    /// The broker refused the batch and wrote none of it (the batch is given back, to send parts of it again).
    Refused { error: ClientError, batch: ProduceBatch },
    /// No answer. `in_doubt`: a send may have reached a broker (its callers are told the records may or may not be
    /// written), else none did (they are told nothing was written). `stop`: the writer ends too (its connection or
    /// sequence is in question).
    Dropped { in_doubt: bool, stop: bool },
}

struct Writer {
    client: PartitionClient,
    connect: Connect,
    limits: BatchLimits,
    counters: Arc<ProduceCounters>,
    outage: watch::Receiver<Option<Arc<str>>>,
    cluster: Arc<str>,
    /// With idempotence: the writer's producer id and the partition's next sequence number under it (asked for
    /// before the first batch, and again when the broker no longer knows it).
    producer: Option<(ProducerIdentity, i32)>,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut carried: Option<Job> = None;
        // The last batch carried more than one caller: others are likely on their way.
        let mut busy = false;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match queue.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            if !self.limits.linger.is_zero() {
                tokio::time::sleep(self.limits.linger).await;
            } else if busy {
                tokio::task::yield_now().await;
            }
            let (mut batch, next) = gather(first, &mut queue, &self.limits);
            carried = next;
            busy = batch.len() > 1;
            // From here the records are sent; callers that withdrew them (timeout, client gone) are left out.
            batch.retain(|job| {
                job.stage
                    .compare_exchange(QUEUED, SENT, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            });
            if batch.is_empty() {
                continue;
            }
            let mut records = Vec::with_capacity(batch.iter().map(|j| j.records.len()).sum());
            let mut callers = Vec::with_capacity(batch.len());
            let mut stages = Vec::with_capacity(batch.len());
            for job in batch {
                let start = records.len();
                records.extend(job.records);
                callers.push((start..records.len(), job.done));
                stages.push(job.stage);
            }
            let keep_going = match self.deliver(records).await {
                // One caller's records broke a rule the broker applies to the whole batch (a timestamp out of the
                // topic's window, a keyless record on a compacted topic, a record too large): nothing was written,
                // and each caller's records go again on their own, so only the offending caller is refused.
                Delivered::Refused { error, batch } if callers.len() > 1 && refused_for_a_record(&error) => {
                    // The refused batch is a produce request of its own, besides each caller's that follow.
                    let kind =
                        KafkaError::from_client(&self.cluster, self.client.topic(), self.client.partition(), &error)
                            .kind();
                    self.observe(kind, callers.last().map_or(0, |(range, _)| range.end));
                    self.split(batch.into_records(), callers, stages).await
                }
                delivered => self.settle(delivered, callers, &stages),
            };
            if !keep_going {
                return;
            }
        }
    }

    /// Sends a batch as the cluster's settings say.
    async fn deliver(&mut self, records: Vec<Record>) -> Delivered {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.records.fetch_add(records.len() as u64, Ordering::Relaxed);
        if self.limits.idempotence {
            self.deliver_idempotent(records).await
        } else {
            self.deliver_once(records).await
        }
    }

    /// Sends each caller's records as a batch of its own, in queue order, and answers each; false if the writer
    /// must stop (the callers not sent yet are told nothing of theirs was written).
    async fn split(&mut self, records: Vec<Record>, callers: Vec<Caller>, stages: Vec<Arc<AtomicU8>>) -> bool {
        let mut records = records.into_iter();
        let mut waiting = callers.into_iter().zip(stages);
        while let Some(((range, done), stage)) = waiting.next() {
            let part: Vec<Record> = records.by_ref().take(range.len()).collect();
            let count = part.len();
            let delivered = self.deliver(part).await;
            if !self.settle(delivered, vec![(0..count, done)], &[stage]) {
                for (_, stage) in waiting {
                    stage.store(NOT_SENT, Ordering::Release);
                }
                return false;
            }
        }
        true
    }

    /// Answers the callers of a batch with what became of it; false if the writer must stop.
    fn settle(&self, delivered: Delivered, callers: Vec<Caller>, stages: &[Arc<AtomicU8>]) -> bool {
        let batch_size = callers.last().map_or(0, |(range, _)| range.end);
        let result = match delivered {
            Delivered::Answer(result) => result,
            Delivered::Refused { error, .. } => Err(error),
            Delivered::Dropped { in_doubt, stop } => {
                self.observe(if in_doubt { "in_doubt" } else { "not_sent" }, batch_size);
                if !in_doubt {
                    for stage in stages {
                        stage.store(NOT_SENT, Ordering::Release);
                    }
                }
                // Dropping the callers' senders tells them: in doubt (taken), or nothing written (not sent).
                drop(callers);
                return !stop;
            }
        };
        self.observe(
            match &result {
                Ok(_) => "ok",
                Err(e) => {
                    KafkaError::from_client(&self.cluster, self.client.topic(), self.client.partition(), e).kind()
                }
            },
            batch_size,
        );
        let result = result.map_err(Arc::new);
        for (range, done) in callers {
            let answer = match &result {
                Ok(produced) => produced
                    .offsets
                    .get(range.clone())
                    .map(|offsets| Appended {
                        offsets: offsets.to_vec(),
                        log_append_time_ms: produced.log_append_time_ms,
                    })
                    .ok_or_else(|| {
                        Arc::new(ClientError::InvalidResponse(format!(
                            "broker returned {} offsets, caller expected {range:?}",
                            produced.offsets.len()
                        )))
                    }),
                Err(e) => Err(Arc::clone(e)),
            };
            done.send(answer);
        }
        true
    }

    fn observe(&self, result: &'static str, batch_size: usize) {
        crate::metrics::metrics().produce_request(&self.cluster, self.client.topic(), result, batch_size);
    }

    /// Without idempotence: one send (rskafka's own retries inside); a send that does not answer in time, or an
    /// outage, stops the writer.
    async fn deliver_once(&mut self, records: Vec<Record>) -> Delivered {
        let batch = self.client.batch(records, self.limits.compression);
        let produce = tokio::time::timeout(self.limits.timeout, self.client.produce_batch(&batch));
        let produced = tokio::select! {
            biased;
            produced = produce => produced,
            _ = self.outage.wait_for(Option::is_some) => {
                // Its callers have been answered; rskafka would otherwise retry until its deadline.
                tracing::warn!(topic = self.client.topic(), partition = self.client.partition(), "cluster down; dropping the produce in flight");
                return Delivered::Dropped { in_doubt: batch.may_have_arrived(), stop: true };
            }
        };
        match produced {
            Err(_) => {
                // rskafka has no request timeout: a broker that stopped answering would hold every later produce
                // on this connection. Stopping the writer (and its client) makes the next caller connect afresh.
                tracing::warn!(
                    topic = self.client.topic(),
                    partition = self.client.partition(),
                    "produce did not answer in time; reconnecting"
                );
                Delivered::Dropped {
                    in_doubt: batch.may_have_arrived(),
                    stop: true,
                }
            }
            Ok(Err(e)) if batch.may_have_arrived() || maybe_appended(&e) => Delivered::Dropped {
                in_doubt: true,
                stop: false,
            },
            Ok(Err(error)) => Delivered::Refused { error, batch },
            Ok(Ok(produced)) => Delivered::Answer(Ok(produced)),
        }
    }

    /// With idempotence: sends the batch under the writer's producer id and the partition's next sequence number,
    /// and sends it again, the same, until its outcome is known or the delivery timeout passes. While no send can
    /// have reached a broker, an outage drops it (its callers are told nothing was written).
    async fn deliver_idempotent(&mut self, records: Vec<Record>) -> Delivered {
        let deadline = Instant::now() + self.limits.delivery_timeout;
        let count = records.len();
        let mut batch = self.client.batch(records, self.limits.compression);
        let mut new_ids = 0;
        // Once a send may have reached the broker, a refusal of a later one no longer means "not written".
        let mut in_doubt = false;
        let mut outage = self.outage.clone();
        let mut pause = RESEND_PAUSE;
        loop {
            let (identity, sequence) = match self.producer {
                Some(producer) => producer,
                None => {
                    let asking = tokio::time::timeout_at(
                        (Instant::now() + self.limits.timeout).min(deadline),
                        self.client.init_producer_id(),
                    );
                    let asked = tokio::select! {
                        biased;
                        asked = asking => asked,
                        _ = outage.wait_for(Option::is_some), if !in_doubt => {
                            return Delivered::Dropped { in_doubt: false, stop: true };
                        }
                    };
                    match asked {
                        Ok(Ok(identity)) => *self.producer.insert((identity, 0)),
                        Ok(Err(e)) if !in_doubt => return Delivered::Answer(Err(e)),
                        Ok(Err(_)) | Err(_) if Instant::now() + pause >= deadline => return self.give_up(in_doubt),
                        // Asked again after the pause a resend takes: a refusal that comes at once (a missing
                        // permission, say) would otherwise be asked again in a busy loop until the deadline.
                        Ok(Err(_)) | Err(_) => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(MAX_RESEND_PAUSE);
                            continue;
                        }
                    }
                }
            };
            batch.set_producer(identity, sequence);
            let send = tokio::time::timeout_at(
                (Instant::now() + self.limits.timeout).min(deadline),
                self.client.produce_batch(&batch),
            );
            let sent = tokio::select! {
                biased;
                sent = send => sent,
                // Dropped only while no send of it can have reached a broker.
                _ = outage.wait_for(Option::is_some), if !in_doubt => {
                    if !batch.may_have_arrived() {
                        return Delivered::Dropped { in_doubt: false, stop: true };
                    }
                    in_doubt = true;
                    continue;
                }
            };
            in_doubt |= batch.may_have_arrived();
            match sent {
                Ok(Ok(produced)) => {
                    self.advance(count);
                    return Delivered::Answer(Ok(produced));
                }
                // A send whose first try was appended but whose answer was lost (the broker no longer has where).
                Ok(Err(e)) if protocol_error(&e) == Some(ProtocolError::DuplicateSequenceNumber) => {
                    self.advance(count);
                    return Delivered::Answer(Ok(Produced {
                        offsets: vec![-1; count],
                        log_append_time_ms: None,
                    }));
                }
                // An earlier send may have been appended under this producer id: sent again under a new one, the broker
                // could not tell it is the same batch and would write it a second time. It ends in doubt; the writer
                // stops, and the next batch gets a new writer with a new producer id.
                Ok(Err(error)) if needs_new_producer_id(&error) && in_doubt => {
                    tracing::warn!(
                        topic = self.client.topic(),
                        partition = self.client.partition(),
                        %error,
                        "the broker no longer accepts this writer's producer id for a batch that may already be \
                         written; giving it up as in doubt rather than write it again under a new one"
                    );
                    return Delivered::Dropped {
                        in_doubt: true,
                        stop: true,
                    };
                }
                Ok(Err(e)) if needs_new_producer_id(&e) && new_ids < MAX_NEW_PRODUCER_IDS => {
                    tracing::warn!(
                        topic = self.client.topic(),
                        partition = self.client.partition(),
                        error = %e,
                        "the broker no longer accepts this writer's producer id; asking for a new one"
                    );
                    new_ids += 1;
                    self.producer = None;
                    continue;
                }
                Ok(Err(error)) if (!in_doubt || refused_for_its_bytes(&error)) && !maybe_appended(&error) => {
                    return Delivered::Refused { error, batch };
                }
                // A refusal that sending again cannot change, of a batch an earlier send of which may have been
                // appended: it ends in doubt now, rather than be sent again until the delivery timeout with the
                // partition's later records waiting behind it.
                Ok(Err(error)) if in_doubt && refused_for_good(&error) => {
                    tracing::warn!(
                        topic = self.client.topic(),
                        partition = self.client.partition(),
                        %error,
                        "the broker refuses a batch that may already be written; giving it up as in doubt"
                    );
                    return Delivered::Dropped {
                        in_doubt: true,
                        stop: true,
                    };
                }
                Ok(Err(_)) | Err(_) => {}
            }
            in_doubt |= matches!(sent, Ok(Err(ref e)) if maybe_appended(e));
            if Instant::now() + pause >= deadline {
                return self.give_up(in_doubt);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RESEND_PAUSE);
            // A fresh connection: the old one may be stalled. If none can be made now, the next round tries again.
            let connecting = (Instant::now() + self.limits.timeout).min(deadline);
            if let Ok(Ok(client)) = tokio::time::timeout_at(connecting, (self.connect)()).await {
                self.client = client;
            }
        }
    }

    /// The partition's sequence moves past an acknowledged batch (wrapping to 0 past `i32::MAX`, as Kafka's does).
    fn advance(&mut self, count: usize) {
        if let Some((_, sequence)) = &mut self.producer {
            *sequence = ((i64::from(*sequence) + count as i64) % (i64::from(i32::MAX) + 1)) as i32;
        }
    }

    /// A batch with no answer past the delivery timeout: its callers are told what is known, and the writer stops
    /// (its sequence may be in question); the next caller gets a new writer with a new producer id.
    fn give_up(&self, in_doubt: bool) -> Delivered {
        tracing::warn!(
            topic = self.client.topic(),
            partition = self.client.partition(),
            in_doubt,
            "no answer for a batch within the delivery timeout; giving it up"
        );
        Delivered::Dropped { in_doubt, stop: true }
    }
}

/// The broker's error code, if the error is one.
fn protocol_error(error: &ClientError) -> Option<ProtocolError> {
    match error {
        ClientError::ServerError { protocol_error, .. } => Some(*protocol_error),
        ClientError::RetryFailed(rskafka::BackoffError::DeadlineExceded { source, .. }) => {
            source.downcast_ref::<ClientError>().and_then(protocol_error)
        }
        _ => None,
    }
}

/// Whether the broker refused a whole batch for what one of its records is: then the other callers' records in it
/// are fine on their own.
fn refused_for_a_record(error: &ClientError) -> bool {
    matches!(
        protocol_error(error),
        Some(
            ProtocolError::InvalidTimestamp
                | ProtocolError::InvalidRecord
                | ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::CorruptMessage
        )
    )
}

/// A refusal of the batch's own bytes against the topic's rules: its size (`max.message.bytes`) or a record the
/// topic cannot take (a keyless one on a compacted topic). Kafka checks these before it looks for the batch among the
/// producer's last ones (`UnifiedLog.append` validates, then `analyzeAndValidateProducerState`), so an earlier send of
/// the same batch whose answer was lost met the same refusal and was not written either: the batch is refused, and
/// split among its callers, rather than sent again until the delivery timeout. Not a timestamp: the broker's clock
/// moves, so an earlier send may have been in the topic's window. (This takes the topic's rules to be the same for
/// both sends: an operator changing `max.message.bytes` or `cleanup.policy` in between could make it wrong.)
fn refused_for_its_bytes(error: &ClientError) -> bool {
    matches!(
        protocol_error(error),
        Some(ProtocolError::InvalidRecord | ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge)
    )
}

/// The broker forgot or refused the producer id (its state expired, it was fenced, or the log lost its sequence).
fn needs_new_producer_id(error: &ClientError) -> bool {
    matches!(
        protocol_error(error),
        Some(
            ProtocolError::OutOfOrderSequenceNumber
                | ProtocolError::UnknownProducerId
                | ProtocolError::InvalidProducerEpoch
                | ProtocolError::ProducerFenced
        )
    )
}

/// Whether the broker will go on refusing a batch sent again with `error` for longer than resending it is worth: a
/// timestamp that has left the topic's window only gets older, an authorization removed stays so until an operator
/// acts, and too few in-sync replicas (Kafka checks them before it looks for a duplicate, so even a batch it already
/// has is refused) until a replica has come back and caught up. Meanwhile the partition's later records would wait
/// behind the batch, each answered 504, where on their own they are refused at once (503, nothing written).
fn refused_for_good(error: &ClientError) -> bool {
    matches!(
        protocol_error(error),
        Some(
            ProtocolError::InvalidTimestamp
                | ProtocolError::TopicAuthorizationFailed
                | ProtocolError::ClusterAuthorizationFailed
                | ProtocolError::NotEnoughReplicas
        )
    )
}

/// Whether records refused with `error` may have been appended all the same: the broker timed out waiting for its
/// replicas or appended before finding too few, its partition went offline while the produce waited for its
/// replicas (Kafka's `DelayedProduce` answers `KAFKA_STORAGE_ERROR` then, after the leader's append; Kafka's own
/// producer retries it), or its answer was unreadable. (A connection that broke after sending is
/// `ProduceBatch::may_have_arrived`; one that could not be made sent nothing.)
fn maybe_appended(error: &ClientError) -> bool {
    match error {
        ClientError::ServerError { protocol_error, .. } => matches!(
            protocol_error,
            ProtocolError::RequestTimedOut
                | ProtocolError::NotEnoughReplicasAfterAppend
                | ProtocolError::NetworkException
                | ProtocolError::KafkaStorageError
        ),
        ClientError::RetryFailed(rskafka::BackoffError::DeadlineExceded { source, .. }) => {
            source.downcast_ref::<ClientError>().is_some_and(maybe_appended)
        }
        ClientError::InvalidResponse(_) | ClientError::Timeout => true,
        _ => false,
    }
}

/// The bytes `record` takes in a record batch (v2), exactly but for its deltas, which are counted at their largest:
/// length, attributes, deltas, key, value and every header with their own lengths.
fn encoded_size(record: &Record) -> usize {
    let bytes = |b: Option<&[u8]>| b.map_or(varint_len(-1), |b| varint_len(b.len() as i64) + b.len());
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| bytes(Some(name.as_bytes())) + bytes(Some(value)))
        .sum();
    let body = 1
        + MAX_DELTAS
        + bytes(record.key.as_deref())
        + bytes(record.value.as_deref())
        + varint_len(record.headers.len() as i64)
        + headers;
    varint_len(body as i64) + body
}

/// What Kafka adds to a record batch besides its records (the v2 batch header).
const BATCH_OVERHEAD: usize = 61;

/// The bytes of a record batch holding `record` alone, as a topic's `max.message.bytes` counts them (uncompressed).
pub(crate) fn single_record_batch_size(record: &Record) -> usize {
    BATCH_OVERHEAD + encoded_size(record)
}

/// Bytes of `n` as Kafka's zig-zag varint.
fn varint_len(n: i64) -> usize {
    let zigzag = ((n << 1) ^ (n >> 63)) as u64;
    (64 - zigzag.leading_zeros() as usize).div_ceil(7).max(1)
}

/// The next batch: `first` and whatever is already queued, up to the limits; the job that did not fit is carried.
fn gather(first: Job, queue: &mut mpsc::Receiver<Job>, limits: &BatchLimits) -> (Vec<Job>, Option<Job>) {
    let (mut records, mut bytes) = (first.records.len(), first.bytes);
    let mut batch = vec![first];
    while let Ok(job) = queue.try_recv() {
        // A batch always takes its first job, however large: the broker decides about an oversized request.
        if records + job.records.len() > limits.max_records || bytes + job.bytes > limits.max_bytes {
            return (batch, Some(job));
        }
        records += job.records.len();
        bytes += job.bytes;
        batch.push(job);
    }
    (batch, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::chrono::{TimeZone, Utc};

    fn job(records: usize, bytes: usize) -> Job {
        let record = Record {
            key: None,
            value: Some(vec![0; bytes]),
            headers: Vec::new(),
            timestamp: Utc.timestamp_millis_opt(0).unwrap(),
        };
        Job {
            records: vec![record; records],
            bytes: records * bytes,
            stage: Arc::default(),
            done: Reply {
                sender: Some(oneshot::channel().0),
                unanswered: Arc::default(),
                tally: (records as u64, (records * bytes) as u64),
                stage: Arc::default(),
                counted: Arc::default(),
                counts: Arc::new(Counts {
                    written: crate::metrics::metrics().record_series("test", "t", "ok"),
                    cluster: Arc::from("test"),
                    topic: "t".into(),
                    partition: 0,
                }),
            },
        }
    }

    fn limits(max_records: usize, max_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_records,
            max_bytes,
            linger: Duration::ZERO,
            compression: Compression::NoCompression,
            timeout: Duration::from_secs(1),
            idempotence: true,
            delivery_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn batches_take_what_is_queued_up_to_the_bounds() {
        let (send, mut queue) = mpsc::channel(8);
        for n in [2, 3, 4] {
            send.try_send(job(n, 10)).unwrap();
        }
        let (batch, carried) = gather(job(1, 10), &mut queue, &limits(6, 1000));
        assert_eq!(batch.iter().map(|j| j.records.len()).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            carried.map(|j| j.records.len()),
            Some(4),
            "the job over the record bound waits"
        );
        let (batch, carried) = gather(job(1, 600), &mut queue, &limits(100, 1000));
        assert_eq!(batch.len(), 1, "the byte bound holds too");
        assert!(carried.is_none() && queue.try_recv().is_err());
    }

    /// Refusals that may come after the leader appended the records leave the batch in doubt (it is sent again
    /// rather than answered as refused); refusals of the records themselves do not.
    #[test]
    fn refusals_after_an_append_leave_the_batch_in_doubt() {
        let refused = |protocol_error| ClientError::ServerError {
            protocol_error,
            error_message: None,
            request: rskafka::client::error::RequestContext::Partition("t".into(), 0),
            response: None,
            is_virtual: false,
        };
        for after_append in [
            ProtocolError::RequestTimedOut,
            ProtocolError::NotEnoughReplicasAfterAppend,
            ProtocolError::KafkaStorageError,
        ] {
            assert!(maybe_appended(&refused(after_append)), "{after_append:?}");
        }
        for before in [
            ProtocolError::NotEnoughReplicas,
            ProtocolError::MessageTooLarge,
            ProtocolError::InvalidRecord,
        ] {
            assert!(!maybe_appended(&refused(before)), "{before:?}");
        }
    }

    #[test]
    fn sizes_count_every_length_field() {
        assert_eq!(
            (varint_len(0), varint_len(-1), varint_len(63), varint_len(64)),
            (1, 1, 1, 2)
        );
        assert_eq!(varint_len(i64::from(i32::MAX)), 5);
        let bare = Record {
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: Utc.timestamp_millis_opt(0).unwrap(),
        };
        // length, attributes, deltas, null key, null value, no headers
        assert_eq!(encoded_size(&bare), 1 + 1 + MAX_DELTAS + 1 + 1 + 1);
        // 40,000 empty headers are 80,000 bytes of lengths, not nothing.
        let headers = Record {
            headers: vec![(String::new(), Vec::new()); 40_000],
            ..bare
        };
        assert!(encoded_size(&headers) > 80_000, "{}", encoded_size(&headers));
    }

    #[test]
    fn a_first_job_over_the_bounds_goes_alone() {
        let (_send, mut queue) = mpsc::channel(1);
        let (batch, carried) = gather(job(50, 100), &mut queue, &limits(10, 100));
        assert_eq!(batch[0].records.len(), 50);
        assert!(carried.is_none());
    }
}

/// The writer against a real broker (the embedded one, run on a runtime of its own): in what batches callers' records
/// go, which depends on the order tasks run in, so the writer runs on a single-threaded runtime here.
#[cfg(all(test, feature = "embedded-broker"))]
mod scheduling_tests {
    use super::*;
    use crate::broker::EmbeddedBroker;
    use rskafka::client::ClientBuilder;
    use rskafka::client::partition::UnknownTopicHandling;

    fn record() -> Record {
        Record {
            key: None,
            value: Some(b"x".to_vec()),
            headers: Vec::new(),
            timestamp: rskafka::chrono::Utc::now(),
        }
    }

    struct Setup {
        writer: Arc<PartitionWriter>,
        counters: Arc<ProduceCounters>,
        _outage: watch::Sender<Option<Arc<str>>>,
        _broker: EmbeddedBroker,
        _broker_runtime: tokio::runtime::Runtime,
    }

    /// A writer (with the default limits: no linger, idempotence) for the one partition of a new topic.
    fn setup(runtime: &tokio::runtime::Runtime) -> Setup {
        let broker_runtime = tokio::runtime::Runtime::new().unwrap();
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap();
        let broker = broker_runtime.block_on(EmbeddedBroker::start(address)).unwrap();
        let (outage, watching) = watch::channel(None);
        let counters = Arc::new(ProduceCounters::default());
        let writer = runtime.block_on(async {
            let client = Arc::new(ClientBuilder::new(vec![address.to_string()]).build().await.unwrap());
            client
                .controller_client()
                .unwrap()
                .create_topic("batches", 1, 1, 5_000)
                .await
                .unwrap();
            let partition = client
                .partition_client("batches", 0, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            let connect: Connect = Arc::new(move || {
                let client = Arc::clone(&client);
                Box::pin(async move { client.partition_client("batches", 0, UnknownTopicHandling::Error).await })
            });
            let limits = BatchLimits {
                max_records: 10_000,
                max_bytes: 1 << 20,
                linger: Duration::ZERO,
                compression: Compression::NoCompression,
                timeout: Duration::from_secs(5),
                idempotence: true,
                delivery_timeout: Duration::from_secs(10),
            };
            let counters = Arc::clone(&counters);
            PartitionWriter::start(partition, connect, limits, counters, watching, Arc::from("test"))
        });
        Setup {
            writer: Arc::new(writer),
            counters,
            _outage: outage,
            _broker: broker,
            _broker_runtime: broker_runtime,
        }
    }

    /// One caller queues a record (waking the writer), then a task spawned after that wake-up queues another; how
    /// many produce requests carried the two, which were written one after the other.
    async fn requests_for_a_caller_and_one_right_behind(setup: &Setup) -> u64 {
        let before = setup.counters.requests.load(Ordering::Relaxed);
        let mut first = setup.writer.queue(vec![record()], (1, 0)).await.unwrap();
        let writer = Arc::clone(&setup.writer);
        let behind = tokio::spawn(async move { writer.queue(vec![record()], (1, 0)).await.unwrap().outcome().await });
        let first = first.outcome().await.unwrap();
        let behind = behind.await.unwrap().unwrap();
        assert_eq!(behind.offsets[0], first.offsets[0] + 1);
        setup.counters.requests.load(Ordering::Relaxed) - before
    }

    fn single_threaded() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_lone_caller_is_sent_at_once() {
        let runtime = single_threaded();
        let setup = setup(&runtime);
        runtime.block_on(async {
            let mut alone = setup.writer.queue(vec![record()], (1, 0)).await.unwrap();
            alone.outcome().await.unwrap();
            assert_eq!(
                requests_for_a_caller_and_one_right_behind(&setup).await,
                2,
                "after a batch of one caller, the next caller is not held back for the one behind it"
            );
        });
    }

    #[test]
    fn records_whose_caller_went_away_before_they_were_sent_are_not_written() {
        let runtime = single_threaded();
        let setup = setup(&runtime);
        runtime.block_on(async {
            // Both queued before the writer runs (one thread): the first caller's request is dropped meanwhile.
            drop(setup.writer.queue(vec![record()], (1, 0)).await.unwrap());
            let mut kept = setup.writer.queue(vec![record()], (1, 0)).await.unwrap();
            let written = kept.outcome().await.unwrap();
            assert_eq!(
                written.offsets,
                [0],
                "the dropped caller's record was not written before it"
            );
            let mut next = setup.writer.queue(vec![record()], (1, 0)).await.unwrap();
            assert_eq!(next.outcome().await.unwrap().offsets, [1], "nor after it");
        });
    }

    #[test]
    fn under_load_the_callers_ready_to_run_go_in_the_same_batch() {
        let runtime = single_threaded();
        let setup = setup(&runtime);
        runtime.block_on(async {
            let mut one = setup.writer.queue(vec![record()], (1, 0)).await.unwrap();
            let mut two = setup.writer.queue(vec![record()], (1, 0)).await.unwrap();
            one.outcome().await.unwrap();
            two.outcome().await.unwrap();
            assert_eq!(
                setup.counters.requests.load(Ordering::Relaxed),
                1,
                "the two queued together"
            );
            assert_eq!(
                requests_for_a_caller_and_one_right_behind(&setup).await,
                1,
                "after a batch of two callers, the writer let the task behind the first caller queue its record"
            );
        });
    }
}
