//! Adaptive batching per partition: callers' record lists in, each caller's own offsets out.
//!
//! One writer task per partition keeps at most one produce request in flight. A caller whose partition is idle is
//! sent at once (no linger added to a lone webhook); callers that arrive while a produce is in flight queue up and
//! go together in the next request, up to the record and byte bounds. So batches grow with load by themselves, and
//! records reach the partition in the order their callers queued them.
//!
//! ```text
//! caller A: [r1, r2] ─┐ (in flight: nothing) ─> produce [r1 r2]          ─> A: [o, o+1]
//! caller B: [r3]     ─┤ (queued while A's was in flight)                  ┌─> B: [o+2]
//! caller C: [r4, r5] ─┘ ─────────────────────> produce [r3 r4 r5] ───────┴─> C: [o+3, o+4]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rskafka::client::error::Error as ClientError;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::Record;

use super::KafkaError;
use tokio::sync::{mpsc, oneshot, watch};

/// Callers queued per partition before further callers wait for room (all within their produce timeout).
const QUEUE: usize = 1024;

/// What the record batch adds per record beyond key, value and headers (length, delta and attribute varints).
const RECORD_OVERHEAD: usize = 20;

/// Produce requests and records sent to Kafka, for observing how well batching works.
#[derive(Debug, Default)]
pub struct ProduceCounters {
    pub requests: AtomicU64,
    pub records: AtomicU64,
}

/// How a partition's batches are cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    /// Extra wait before each send for more records (0: adaptive batching alone).
    pub linger: Duration,
    pub compression: Compression,
    /// A produce that has not answered by then is abandoned and its connection dropped.
    pub timeout: Duration,
}

/// The outcome of one caller's records: their offsets in order, or the error shared by everyone in the batch.
pub(crate) type Written = Result<Vec<i64>, Arc<ClientError>>;

struct Job {
    records: Vec<Record>,
    bytes: usize,
    done: oneshot::Sender<Written>,
}

/// The sending side of one partition's writer task; the task ends when this is dropped.
#[derive(Debug)]
pub(crate) struct PartitionWriter {
    jobs: mpsc::Sender<Job>,
}

/// Why a caller's records were not written.
#[derive(Debug)]
pub(crate) enum WriteError {
    Client(Arc<ClientError>),
    /// The writer gave up on a produce that never answered, or stopped; the records may or may not be written.
    Abandoned,
}

impl PartitionWriter {
    /// Starts the writer task for one partition.
    /// Starts the writer task for one partition; it stops when `outage` says the cluster is down.
    pub(crate) fn start(
        client: PartitionClient,
        limits: BatchLimits,
        counters: Arc<ProduceCounters>,
        outage: watch::Receiver<Option<Arc<str>>>,
        cluster: Arc<str>,
    ) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(client, limits, counters, queue, outage, cluster));
        Self { jobs }
    }

    /// Whether the task is still serving (it stops after abandoning a produce, so the partition gets a new
    /// connection).
    pub(crate) fn is_open(&self) -> bool {
        !self.jobs.is_closed()
    }

    /// Queues `records` and waits for their offsets.
    pub(crate) async fn write(&self, records: Vec<Record>) -> Result<Vec<i64>, WriteError> {
        let bytes = records.iter().map(|r| r.approximate_size() + RECORD_OVERHEAD).sum();
        let (done, answer) = oneshot::channel();
        let job = Job { records, bytes, done };
        self.jobs.send(job).await.map_err(|_| WriteError::Abandoned)?;
        match answer.await {
            Ok(Ok(offsets)) => Ok(offsets),
            Ok(Err(e)) => Err(WriteError::Client(e)),
            Err(_) => Err(WriteError::Abandoned),
        }
    }
}

async fn run(
    client: PartitionClient,
    limits: BatchLimits,
    counters: Arc<ProduceCounters>,
    mut queue: mpsc::Receiver<Job>,
    mut outage: watch::Receiver<Option<Arc<str>>>,
    cluster: Arc<str>,
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match queue.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        if !limits.linger.is_zero() {
            tokio::time::sleep(limits.linger).await;
        }
        let (batch, next) = gather(first, &mut queue, &limits);
        carried = next;
        // Callers that gave up (timeout, client gone) while queued are not written.
        let batch: Vec<Job> = batch.into_iter().filter(|job| !job.done.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        let mut records = Vec::with_capacity(batch.iter().map(|j| j.records.len()).sum());
        let mut callers = Vec::with_capacity(batch.len());
        for job in batch {
            let start = records.len();
            records.extend(job.records);
            callers.push((start..records.len(), job.done));
        }
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.records.fetch_add(records.len() as u64, Ordering::Relaxed);
        let batch_size = records.len();
        let observe = |result: &'static str| {
            crate::metrics::metrics().produce_request(&cluster, client.topic(), result, batch_size);
        };
        let produce = tokio::time::timeout(limits.timeout, client.produce(records, limits.compression));
        let produced = tokio::select! {
            biased;
            produced = produce => produced,
            _ = outage.wait_for(Option::is_some) => {
                observe("unavailable");
                // Its callers have been answered 503; rskafka would otherwise retry until its deadline.
                tracing::warn!(topic = client.topic(), partition = client.partition(), "cluster down; dropping the produce in flight");
                return;
            }
        };
        let Ok(result) = produced else {
            observe("timeout");
            // rskafka has no request timeout: a broker that stopped answering would hold every later produce on
            // this connection. Dropping the writer (and its client) makes the next caller connect afresh.
            tracing::warn!(
                topic = client.topic(),
                partition = client.partition(),
                "produce did not answer in time; reconnecting"
            );
            return;
        };
        observe(match &result {
            Ok(_) => "ok",
            Err(e) => KafkaError::from_client(&cluster, client.topic(), client.partition(), e).kind(),
        });
        let result = result.map_err(Arc::new);
        for (range, done) in callers {
            let answer = match &result {
                Ok(offsets) => offsets.get(range.clone()).map(<[i64]>::to_vec).ok_or_else(|| {
                    Arc::new(ClientError::InvalidResponse(format!(
                        "broker returned {} offsets, caller expected {range:?}",
                        offsets.len()
                    )))
                }),
                Err(e) => Err(Arc::clone(e)),
            };
            let _ = done.send(answer);
        }
    }
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
            done: oneshot::channel().0,
        }
    }

    fn limits(max_records: usize, max_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_records,
            max_bytes,
            linger: Duration::ZERO,
            compression: Compression::NoCompression,
            timeout: Duration::from_secs(1),
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

    #[test]
    fn a_first_job_over_the_bounds_goes_alone() {
        let (_send, mut queue) = mpsc::channel(1);
        let (batch, carried) = gather(job(50, 100), &mut queue, &limits(10, 100));
        assert_eq!(batch[0].records.len(), 50);
        assert!(carried.is_none());
    }
}
