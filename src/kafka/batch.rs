//! Shared batches per partition.
//!
//! rskafka's `BatchProducer` lingers and aggregates; this module gives it an aggregator whose unit is one
//! caller's list of records, so a request's records for a partition stay contiguous and in order inside one
//! batch, and each caller gets back exactly its own offsets.
//!
//! ```text
//! caller A: [r1, r2] ─┐                    ┌─> A: [o, o+1]
//! caller B: [r3]     ─┼─> one batch [r1 r2 r3] ─> Kafka ─> offsets ─┤
//! caller C: [r4, r5] ─┘                    └─> C: [o+3, o+4]
//! ```

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use rskafka::client::error::Error as ClientError;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::client::producer::ProducerClient;
use rskafka::client::producer::aggregator::{Aggregator, Error as AggregatorError, StatusDeaggregator, TryPush};
use rskafka::record::Record;

/// Aggregates callers' record lists up to a byte budget.
#[derive(Debug)]
pub(crate) struct RequestAggregator {
    max_batch_bytes: usize,
    batch_bytes: usize,
    records: Vec<Record>,
}

impl RequestAggregator {
    pub(crate) fn new(max_batch_bytes: usize) -> Self {
        Self {
            max_batch_bytes,
            batch_bytes: 0,
            records: Vec::new(),
        }
    }
}

impl Aggregator for RequestAggregator {
    type Input = Vec<Record>;
    type Tag = Range<usize>;
    type StatusDeaggregator = OffsetsOfEachCaller;

    fn try_push(&mut self, records: Vec<Record>) -> Result<TryPush<Vec<Record>, Range<usize>>, AggregatorError> {
        let bytes: usize = records.iter().map(Record::approximate_size).sum();
        // An empty batch takes any input: a request larger than the budget goes alone and the broker decides.
        if !self.records.is_empty() && self.batch_bytes + bytes > self.max_batch_bytes {
            return Ok(TryPush::NoCapacity(records));
        }
        let start = self.records.len();
        self.batch_bytes += bytes;
        self.records.extend(records);
        Ok(TryPush::Aggregated(start..self.records.len()))
    }

    fn flush(&mut self) -> Result<(Vec<Record>, OffsetsOfEachCaller), AggregatorError> {
        self.batch_bytes = 0;
        Ok((std::mem::take(&mut self.records), OffsetsOfEachCaller))
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct OffsetsOfEachCaller;

impl StatusDeaggregator for OffsetsOfEachCaller {
    type Status = Vec<i64>;
    type Tag = Range<usize>;

    fn deaggregate(&self, offsets: &[i64], tag: Range<usize>) -> Result<Vec<i64>, AggregatorError> {
        offsets
            .get(tag.clone())
            .map(<[i64]>::to_vec)
            .ok_or_else(|| format!("broker returned {} offsets, caller expected {tag:?}", offsets.len()).into())
    }
}

/// Produce requests and records sent to Kafka, for observing how well batching works.
#[derive(Debug, Default)]
pub struct ProduceCounters {
    pub requests: AtomicU64,
    pub records: AtomicU64,
}

/// A partition client that counts what it sends.
#[derive(Debug)]
pub(crate) struct CountingClient {
    pub(crate) inner: Arc<PartitionClient>,
    pub(crate) counters: Arc<ProduceCounters>,
}

impl ProducerClient for CountingClient {
    fn produce(&self, records: Vec<Record>, compression: Compression) -> BoxFuture<'_, Result<Vec<i64>, ClientError>> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.records.fetch_add(records.len() as u64, Ordering::Relaxed);
        ProducerClient::produce(self.inner.as_ref(), records, compression)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::chrono::{TimeZone, Utc};

    fn record(bytes: usize) -> Record {
        Record {
            key: None,
            value: Some(vec![0; bytes]),
            headers: Default::default(),
            timestamp: Utc.timestamp_millis_opt(0).unwrap(),
        }
    }

    #[test]
    fn callers_get_their_own_contiguous_offsets() {
        let mut agg = RequestAggregator::new(1000);
        let a = agg.try_push(vec![record(1), record(1)]).unwrap().unwrap_tag();
        let b = agg.try_push(vec![record(1)]).unwrap().unwrap_tag();
        let (records, status) = agg.flush().unwrap();
        assert_eq!(records.len(), 3);
        let offsets = [10, 11, 12];
        assert_eq!(status.deaggregate(&offsets, a).unwrap(), [10, 11]);
        assert_eq!(status.deaggregate(&offsets, b).unwrap(), [12]);
    }

    #[test]
    fn full_batches_refuse_more_but_an_empty_one_takes_anything() {
        let mut agg = RequestAggregator::new(100);
        assert!(matches!(
            agg.try_push(vec![record(500)]).unwrap(),
            TryPush::Aggregated(_)
        ));
        assert!(matches!(agg.try_push(vec![record(1)]).unwrap(), TryPush::NoCapacity(_)));
        agg.flush().unwrap();
        assert!(matches!(agg.try_push(vec![record(1)]).unwrap(), TryPush::Aggregated(_)));
    }
}
