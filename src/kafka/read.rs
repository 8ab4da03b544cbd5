//! Reading a partition: topic, partition and a position in, offsets and records out (for the REST `/offsets` and
//! `/fetch` endpoints). Each partition read gets its own rskafka client (and broker connection), apart from the
//! writers', kept for the next read of that partition within the cluster's bounded cache of readers.

use std::sync::Arc;
use std::time::Duration;

use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient};

use super::{ClusterClient, KafkaError};

/// Bytes read to find a timestamp within the batch a broker pointed at (Kafka's default batch bound).
const BATCH_SCAN_BYTES: i32 = 1024 * 1024;

/// What those may take once read (decompressed, their records and headers made): a batch that takes more is not
/// scanned (Kafka's own answer stands).
const BATCH_SCAN_DECODED_BYTES: usize = 16 * 1024 * 1024;

/// How long a fetch goes on past aborted transactions' batches at least, when it was given less time to wait: the
/// reader asking again starts at the same offset, so what is not skipped now is read again next time.
const SKIP_AT_LEAST: Duration = Duration::from_millis(200);

/// Where a read from an offset inside aborted transactions got to ([`ClusterClient::skipped`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Skip {
    /// Where the batches of the first fetch from the offset ended: the same batches are still there if they end there
    /// again (a topic deleted and made again under the same name would have to be written exactly alike).
    first_end: i64,
    /// The next offset to read.
    further: i64,
}

impl Skip {
    /// Whether a read whose first fetch's batches ended at `first_end`, on a partition whose records end at
    /// `high_watermark`, goes on from this skip.
    fn applies(self, first_end: i64, high_watermark: i64) -> bool {
        self.first_end == first_end && self.further > first_end && self.further <= high_watermark
    }
}

/// Where in a partition to look up an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOffset {
    Earliest,
    /// Where committed records end (a `READ_COMMITTED` look-up: the last stable offset): the offset the next record
    /// will get, unless a transaction is open on the partition.
    Latest,
    /// The earliest offset whose record timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

/// One record as read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ClusterClient {
    /// The offset of `topic`/`partition` at `at`.
    pub async fn offset(&self, topic: &str, partition: i32, at: ListOffset) -> Result<i64, KafkaError> {
        let at = match at {
            ListOffset::Earliest => OffsetAt::Earliest,
            ListOffset::Latest => OffsetAt::Latest,
            ListOffset::Timestamp(ms) => OffsetAt::Timestamp(
                Utc.timestamp_millis_opt(ms)
                    .single()
                    .ok_or_else(|| self.setup_error(format!("timestamp {ms} is out of range")))?,
            ),
        };
        let target = match at {
            OffsetAt::Timestamp(ts) => Some(ts.timestamp_millis()),
            _ => None,
        };
        let work = async {
            let reader = self.reader(topic, partition).await?;
            let client_error = |e| KafkaError::from_client(&self.config().name, topic, partition, &e);
            let offset = reader.get_offset(at).await.map_err(client_error)?;
            let Some(target) = target else {
                return Ok(offset);
            };
            if offset < 0 {
                // No record at or after the timestamp: the end of the log, where the next one will be.
                return reader.get_offset(OffsetAt::Latest).await.map_err(client_error);
            }
            // Some brokers (the development broker among them) answer with the start of the batch that holds the
            // record; the first record at or after the timestamp may be further into that batch.
            let records = match reader
                .fetch_committed(offset, 1..BATCH_SCAN_BYTES, 0, Some(BATCH_SCAN_DECODED_BYTES))
                .await
            {
                Ok(fetched) => fetched.records,
                Err(e) if e.decoded_over_budget().is_some() => Vec::new(),
                Err(e) => return Err(client_error(e)),
            };
            let scanned: Vec<_> = records.iter().filter(|r| r.offset >= offset).collect();
            let first_after = scanned.iter().find(|r| r.timestamp_millis >= target).map(|r| r.offset);
            // None in what was scanned (the development broker answers a time past every record with an earlier
            // batch): the first record after them is the first at or after the timestamp.
            Ok(first_after.unwrap_or_else(|| scanned.last().map_or(offset, |r| r.offset + 1)))
        };
        let read = self.guarded(self.config().produce_timeout, work).await;
        self.forget_stuck_reader(&read, topic, partition);
        read
    }

    /// After a read that ran out of time: the partition's reading connection may be one the broker no longer
    /// answers on (rskafka keeps it until it breaks), and every read of the partition touches it, so it would never
    /// be idle long enough to be evicted; the next read gets a new one.
    fn forget_stuck_reader<T>(&self, read: &Result<T, KafkaError>, topic: &str, partition: i32) {
        if let Err(KafkaError::Timeout { limit: Some(_), .. }) = read {
            self.forget_reader(topic, partition);
        }
    }

    /// Records of `topic`/`partition` from `offset` on, at most about `max_bytes` of them (as stored: compressed,
    /// if they are) taking at most `max_decoded_bytes` once read, waiting up to `wait` for the first one.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        max_decoded_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<FetchedRecord>, KafkaError> {
        let max_bytes = i32::try_from(max_bytes).unwrap_or(i32::MAX);
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let work = async {
            let reader = self.reader(topic, partition).await?;
            let client_error = |e| KafkaError::from_client(&self.config().name, topic, partition, &e);
            let out_of_range = || async {
                // The client's mistake: it is told what the partition holds.
                Err(KafkaError::OffsetOutOfRange {
                    cluster: self.config().name.clone(),
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    earliest: reader.get_offset(OffsetAt::Earliest).await.map_err(client_error)?,
                    latest: reader.get_offset(OffsetAt::Latest).await.map_err(client_error)?,
                })
            };
            // Batches of aborted transactions and transaction markers give no record: a fetch that read only those
            // goes on from where they end, else a reader asking again from `offset` would be given the same nothing
            // for as long as they are all `max_bytes` holds. Each fetch after the first waits only for what is left
            // of the one wait, and the skipping stops (answering nothing) once the wait, or at least
            // `SKIP_AT_LEAST`, is spent; where it got to is kept for the reader's next request, which asks from
            // `offset` again (`ClusterClient::skipped`).
            let started = tokio::time::Instant::now();
            let (wait_until, skip_until) = (started + wait, started + wait.max(SKIP_AT_LEAST));
            let (mut from, mut first_end) = (offset, offset);
            let (records, high_watermark) = loop {
                let wait_ms = if from == offset {
                    wait_ms
                } else {
                    let left = wait_until.saturating_duration_since(tokio::time::Instant::now());
                    i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
                };
                let fetched = match reader
                    .fetch_committed(from, 1..max_bytes, wait_ms, Some(max_decoded_bytes))
                    .await
                {
                    Ok(fetched) => fetched,
                    Err(ClientError::ServerError {
                        protocol_error: ProtocolError::OffsetOutOfRange,
                        ..
                    }) => {
                        self.skipped.invalidate(&(topic.to_owned(), partition, offset));
                        return out_of_range().await;
                    }
                    Err(e) if e.decoded_over_budget().is_some() => {
                        return Err(KafkaError::TooLargeToRead {
                            cluster: self.config().name.clone(),
                            topic: topic.to_owned(),
                            partition,
                            offset: from,
                            limit: max_decoded_bytes,
                        });
                    }
                    Err(e) => return Err(client_error(e)),
                };
                match fetched.next_offset {
                    Some(next) if next > from && !fetched.records.iter().any(|r| r.offset >= offset) => {
                        // Only aborted batches and markers, which stay so: once the first fetch shows that `offset`
                        // is among them, a read of it that got further before goes on from there.
                        let key = || (topic.to_owned(), partition, offset);
                        if from == offset {
                            first_end = next;
                            if let Some(skip) = self.skipped.get(&key())
                                && skip.applies(next, fetched.high_watermark)
                            {
                                from = skip.further;
                                continue;
                            }
                        }
                        if tokio::time::Instant::now() >= skip_until {
                            // The furthest any read got: another read of the same offset may have gone further.
                            let skip = Skip {
                                first_end,
                                further: next,
                            };
                            self.skipped.entry(key()).and_upsert_with(|kept| match kept {
                                Some(kept) if kept.value().applies(first_end, fetched.high_watermark) => {
                                    let kept = *kept.value();
                                    Skip {
                                        further: kept.further.max(next),
                                        ..kept
                                    }
                                }
                                _ => skip,
                            });
                            break (fetched.records, fetched.high_watermark);
                        }
                        from = next;
                    }
                    _ => break (fetched.records, fetched.high_watermark),
                }
            };
            // Kafka refuses an offset past the end; the development broker answers nothing instead.
            if records.is_empty() && offset > high_watermark {
                return out_of_range().await;
            }
            Ok(records
                .into_iter()
                // A fetch starts at the batch holding `offset`; the records before it are not asked for.
                .filter(|r| r.offset >= offset)
                .map(|r| FetchedRecord {
                    offset: r.offset,
                    timestamp_ms: r.timestamp_millis,
                    key: r.record.key,
                    value: r.record.value,
                    headers: r.record.headers,
                })
                .collect())
        };
        // A fetch given up during its wait (another position answered, the client left, a timeout) is still held by
        // the broker for the rest of that wait, on the partition's one connection: its next read gets a new one.
        let given_up = ForgetReaderOnDrop {
            cluster: self,
            topic,
            partition,
            armed: !wait.is_zero(),
        };
        let fetched = self.guarded(self.config().produce_timeout + wait, work).await;
        given_up.disarm();
        self.forget_stuck_reader(&fetched, topic, partition);
        fetched
    }

    /// The cached reading client of one partition.
    async fn reader(&self, topic: &str, partition: i32) -> Result<Arc<PartitionClient>, KafkaError> {
        let cell = self.reader_cell(topic, partition);
        cell.get_or_try_init(|| async { self.partition_client(topic, partition).await.map(Arc::new) })
            .await
            .cloned()
    }

    fn setup_error(&self, detail: String) -> KafkaError {
        KafkaError::Setup {
            cluster: self.config().name.clone(),
            detail,
        }
    }
}

/// Drops the reading client of a partition when dropped armed: see [`ClusterClient::fetch`].
struct ForgetReaderOnDrop<'a> {
    cluster: &'a ClusterClient,
    topic: &'a str,
    partition: i32,
    armed: bool,
}

impl ForgetReaderOnDrop<'_> {
    /// The fetch finished: nothing is left at the broker.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ForgetReaderOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cluster.forget_reader(self.topic, self.partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Skip;

    /// A kept skip is followed only from a read whose first fetch's batches end where they ended then, and only to
    /// where the partition's records still reach: a topic deleted and made again under its name would differ in one
    /// or both.
    #[test]
    fn a_skip_applies_only_to_the_batches_it_was_made_over() {
        let skip = Skip {
            first_end: 20,
            further: 3000,
        };
        assert!(skip.applies(20, 5000));
        assert!(skip.applies(20, 3000));
        assert!(!skip.applies(21, 5000), "another first batch");
        assert!(!skip.applies(20, 2999), "past the partition's end");
        let backwards = Skip {
            first_end: 20,
            further: 20,
        };
        assert!(!backwards.applies(20, 5000), "no further than the first batch");
    }
}
