//! A TCP proxy on 127.0.0.1 in front of a broker that counts the Kafka requests passing through it by API key (to
//! see how many requests luka makes of a broker), and can lose the broker's answers to chosen requests (to see what
//! a client does when an answer never comes), or have the broker refuse a produce as for a partition it does not know
//! (what a broker may answer for a moment after a partition's leader moved). Bootstrap luka at [`KafkaProxy::addr`]. Brokers advertise their own
//! addresses, so only the connections made to the bootstrap address pass through it, unless the broker advertises
//! the proxy ([`crate::common::kafka::ApacheKafka::proxied`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Kafka's API key of Metadata requests.
pub const METADATA: i16 = 3;

/// Kafka's API key of Produce requests.
pub const PRODUCE: i16 = 0;

/// Kafka's API key of InitProducerId requests (one per idempotent writer, and again when its producer id is refused).
pub const INIT_PRODUCER_ID: i16 = 22;

/// Kafka's error code for a batch whose sequence number is not the one the broker expects of its producer id.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

/// The partition a misdirected produce names instead of its own: no topic here has it.
const NO_SUCH_PARTITION: i32 = 0x7fff_0000;

#[derive(Default)]
struct Shared {
    counts: HashMap<i16, usize>,
    /// Answers still to lose, by API key.
    to_lose: HashMap<i16, usize>,
    lost: HashMap<i16, usize>,
    /// Produce requests still to send to a partition the broker does not have (see [`KafkaProxy::misdirect_produces`]).
    to_misdirect: usize,
    misdirected: usize,
    /// How long a misdirected produce is held before it is passed on.
    misdirect_hold: std::time::Duration,
    /// Produce requests still to have their answer's error code replaced (see [`KafkaProxy::recode_produce_answers`]),
    /// with the code, and how many were.
    to_recode: usize,
    recode_to: i16,
    recoded: usize,
    /// Connections opened so far (each is numbered in the order it came).
    opened: u64,
    /// Connections numbered below this get no more answers, and stay open.
    stalled_below: u64,
}

pub struct KafkaProxy {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    accept: tokio::task::JoinHandle<()>,
}

impl KafkaProxy {
    /// Listens on a free port and forwards each connection to `target`.
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Self::on(listener, target)
    }

    /// Listens on `addr` (a port a broker advertises) and forwards each connection to `target`.
    pub async fn start_at(addr: &str, target: String) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind proxy at the advertised port");
        Self::on(listener, target)
    }

    fn on(listener: TcpListener, target: String) -> Self {
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(&target).await else {
                    continue;
                };
                let number = {
                    let mut shared = state.lock().expect("proxy state");
                    shared.opened += 1;
                    shared.opened - 1
                };
                tokio::spawn(forward(client, broker, Arc::clone(&state), number));
            }
        });
        Self { addr, shared, accept }
    }

    /// Requests with `api_key` that have passed so far.
    pub fn requests(&self, api_key: i16) -> usize {
        self.shared
            .lock()
            .expect("proxy state")
            .counts
            .get(&api_key)
            .copied()
            .unwrap_or(0)
    }

    /// The broker's answers to the next `count` requests with `api_key` are lost: the request reaches the broker,
    /// and when its answer comes the proxy closes that connection instead of passing the answer on.
    pub fn lose_answers(&self, api_key: i16, count: usize) {
        *self
            .shared
            .lock()
            .expect("proxy state")
            .to_lose
            .entry(api_key)
            .or_default() += count;
    }

    /// The answers to requests with `api_key` pass again (those [`KafkaProxy::lose_answers`] still had to lose are
    /// not lost).
    pub fn stop_losing(&self, api_key: i16) {
        self.shared.lock().expect("proxy state").to_lose.remove(&api_key);
    }

    /// The connections open now get no more answers, and are kept open: to their client the broker has stopped
    /// answering (stalled, or the connection's state lost on the way) without the connection breaking. Connections
    /// opened later pass as before.
    pub fn stall_open_connections(&self) {
        let mut shared = self.shared.lock().expect("proxy state");
        shared.stalled_below = shared.opened;
    }

    /// The next `count` produce requests reach the broker naming a partition no topic has, so the broker writes
    /// nothing and answers `UNKNOWN_TOPIC_OR_PARTITION`, and its answer is passed on naming the partition asked for:
    /// to the client the broker said it does not know the partition. Only the produce versions rskafka sends (3 to 7,
    /// one topic and partition each) are understood; others pass unchanged. Each is held for `hold` first (the
    /// connection's later requests wait behind it), so that the client's next records queue up meanwhile.
    pub fn misdirect_produces(&self, count: usize, hold: std::time::Duration) {
        let mut shared = self.shared.lock().expect("proxy state");
        shared.to_misdirect += count;
        shared.misdirect_hold = hold;
    }

    /// The broker's answers to the next `count` produce requests (after those whose answers are to be lost, see
    /// [`KafkaProxy::lose_answers`]) are passed on with `error_code` in place of the broker's own: to the client, the
    /// broker refused the batch so, whatever it did with it. Only the produce versions rskafka sends (3 to 7, one topic
    /// and partition each) are understood; others pass unchanged.
    pub fn recode_produce_answers(&self, count: usize, error_code: i16) {
        let mut shared = self.shared.lock().expect("proxy state");
        shared.to_recode += count;
        shared.recode_to = error_code;
    }

    /// Produce answers whose error code was replaced so far.
    pub fn recoded(&self) -> usize {
        self.shared.lock().expect("proxy state").recoded
    }

    /// Produce requests misdirected so far.
    pub fn misdirected(&self) -> usize {
        self.shared.lock().expect("proxy state").misdirected
    }

    /// Answers lost so far to requests with `api_key`.
    pub fn lost(&self, api_key: i16) -> usize {
        self.shared
            .lock()
            .expect("proxy state")
            .lost
            .get(&api_key)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Reads one length-prefixed Kafka frame.
async fn read_frame(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<([u8; 4], Vec<u8>)> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).await.ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    stream.read_exact(&mut frame).await.ok()?;
    Some((size, frame))
}

/// Passes the client's requests frame by frame (counting each) and the broker's answers frame by frame, but for
/// answers to lose (then both sides are closed) and answers on a stalled connection, `number` (dropped unsent).
async fn forward(client: TcpStream, broker: TcpStream, shared: Arc<Mutex<Shared>>, number: u64) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut broker_read, mut broker_write) = broker.into_split();
    // Correlation ids (request header bytes 4..8) of requests whose answers are lost, with their API key.
    let doomed: Arc<Mutex<HashSet<(i32, i16)>>> = Arc::default();
    let marked = Arc::clone(&doomed);
    // Correlation ids of produce requests sent to a partition the broker does not have, with the partition asked for.
    let misdirected: Arc<Mutex<HashMap<i32, [u8; 4]>>> = Arc::default();
    let to_restore = Arc::clone(&misdirected);
    // Correlation ids of produce requests whose answers get another error code, with the code.
    let recode: Arc<Mutex<HashMap<i32, i16>>> = Arc::default();
    let to_recode = Arc::clone(&recode);
    let state = Arc::clone(&shared);
    let answers = tokio::spawn(async move {
        while let Some((size, mut frame)) = read_frame(&mut broker_read).await {
            let correlation = frame
                .get(..4)
                .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")));
            let asked_for = correlation.and_then(|id| to_restore.lock().expect("misdirected").remove(&id));
            if let (Some(partition), Some(at)) = (asked_for, one_partition(&frame, 4)) {
                frame[at..at + 4].copy_from_slice(&partition);
            }
            let new_code = correlation.and_then(|id| to_recode.lock().expect("recode").remove(&id));
            // The partition's error code follows its index.
            if let (Some(code), Some(at)) = (new_code, one_partition(&frame, 4))
                && frame.len() >= at + 6
            {
                frame[at + 4..at + 6].copy_from_slice(&code.to_be_bytes());
                state.lock().expect("proxy state").recoded += 1;
            }
            let lost = {
                let mut doomed = marked.lock().expect("doomed");
                let hit = doomed.iter().find(|(id, _)| Some(*id) == correlation).copied();
                hit.inspect(|entry| {
                    doomed.remove(entry);
                })
            };
            if let Some((_, api_key)) = lost {
                *state.lock().expect("proxy state").lost.entry(api_key).or_default() += 1;
                return; // dropping both halves closes the client's connection, the answer unsent
            }
            if number < state.lock().expect("proxy state").stalled_below {
                continue;
            }
            if client_write.write_all(&size).await.is_err() || client_write.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    while let Some((size, mut frame)) = read_frame(&mut client_read).await {
        if frame.len() >= 8 {
            let api_key = i16::from_be_bytes([frame[0], frame[1]]);
            let correlation = i32::from_be_bytes(frame[4..8].try_into().expect("4 bytes"));
            let hold = {
                let mut state = shared.lock().expect("proxy state");
                *state.counts.entry(api_key).or_default() += 1;
                if let Some(left) = state.to_lose.get_mut(&api_key).filter(|left| **left > 0) {
                    *left -= 1;
                    doomed.lock().expect("doomed").insert((correlation, api_key));
                } else if api_key == PRODUCE && state.to_recode > 0 && produce_request_partition(&frame).is_some() {
                    state.to_recode -= 1;
                    recode.lock().expect("recode").insert(correlation, state.recode_to);
                }
                let partition = (api_key == PRODUCE && state.to_misdirect > 0)
                    .then(|| produce_request_partition(&frame))
                    .flatten();
                if let Some(at) = partition {
                    state.to_misdirect -= 1;
                    state.misdirected += 1;
                    let asked_for: [u8; 4] = frame[at..at + 4].try_into().expect("4 bytes");
                    misdirected.lock().expect("misdirected").insert(correlation, asked_for);
                    frame[at..at + 4].copy_from_slice(&NO_SUCH_PARTITION.to_be_bytes());
                    Some(state.misdirect_hold)
                } else {
                    None
                }
            };
            if let Some(hold) = hold {
                tokio::time::sleep(hold).await;
            }
        }
        if broker_write.write_all(&size).await.is_err() || broker_write.write_all(&frame).await.is_err() {
            break;
        }
        if answers.is_finished() {
            break;
        }
    }
    answers.abort();
}

/// Where the partition index of a produce request (versions 3 to 7, one topic with one partition) is in its frame.
fn produce_request_partition(frame: &[u8]) -> Option<usize> {
    if !(3..=7).contains(&int16(frame, 2)?) {
        return None;
    }
    // The header's client id, then the transactional id, acks and timeout, then the topics.
    let after_client_id = 10 + usize::try_from(int16(frame, 8)?).unwrap_or(0);
    let after_transactional_id = after_client_id + 2 + usize::try_from(int16(frame, after_client_id)?).unwrap_or(0);
    one_partition(frame, after_transactional_id + 6)
}

/// Where the partition index is in an array of one topic with one partition that begins at `at` (as in produce
/// requests and answers, versions 3 to 7).
fn one_partition(frame: &[u8], at: usize) -> Option<usize> {
    let topics = int32(frame, at)?;
    let name = usize::try_from(int16(frame, at + 4)?).ok()?;
    let partitions_at = at + 6 + name;
    let index = partitions_at + 4;
    (topics == 1 && int32(frame, partitions_at)? == 1 && frame.len() >= index + 4).then_some(index)
}

fn int16(frame: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?))
}

fn int32(frame: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}
