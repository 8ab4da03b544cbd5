//! Every default value of `config.toml`, in one place, each with the reason for its value. Takes the closed sets
//! of [`super::choices`] and the schema generator's own default; gives the values that the raw tables' `Default`s
//! (which serde fills a missing key from) and the checks read. Nothing else defines a default.
//!
//! Keys that are off or empty unless set (`auth`, `validate`, `embedded`, lists, optional files and names) take
//! their type's own default and are not listed.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::choices::{Compression, ContentType, LogFormat};

// `[server]`

/// Loopback, so a fresh install is not reachable from the network until the user says so.
pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

/// 1 MiB: Kafka's default `max.message.bytes`, so a body that fits is a record the broker accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Whole request, including Kafka acknowledgement; above the produce timeout so a slow broker yields its own 504.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Open connections at once; a new one waits for a free slot, so memory stays bounded under a flood.
pub const MAX_CONNECTIONS: usize = 1024;

/// A client gets this long to send a request body once its headers are in; past it, 408. Far below the request
/// timeout, so a client that announces a body and sends nothing cannot hold a connection slot for long.
pub const BODY_TIMEOUT_MS: u64 = 5_000;

/// A connection gets this long to send a whole request head, counted from when it opened or its last request was
/// answered: slow headers and idle keep-alive connections cannot pin connection slots.
pub const HEADER_TIMEOUT_MS: u64 = 10_000;

/// Connections one client address may hold at once: a quarter of the default slots, so one address cannot take
/// every slot. Behind a reverse proxy every client shares the proxy's address: raise it to `max_connections`.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

/// A day: long enough for any sender's retries (Stripe keeps its keys 24 hours).
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// Keys remembered at once; with answers of a few hundred bytes this stays within a few MiB.
pub const IDEMPOTENCY_CAPACITY: usize = 10_000;

/// Messages in one REST request or one `kafka.produce` call: the largest call the README and the event-generator
/// example make. Each message costs a copy through every stage and a row in the answer; 1 MiB of `{"value":""}`
/// would otherwise be 80,000 of them.
pub const MAX_MESSAGES_PER_REQUEST: usize = 1000;

/// Positions one `/fetch` or `/offsets` request names: each is a broker round trip (and, for `/fetch`, up to
/// `fetch_max_bytes` held), so a 60 KB body must not ask for 20,000 of them.
pub const MAX_POSITIONS_PER_REQUEST: usize = 100;

/// Record bytes one `/fetch` reads and answers over all its positions: a page of a few MiB, whatever it names.
pub const FETCH_MAX_TOTAL_BYTES: usize = 4 * 1024 * 1024;

/// Records one `/fetch` answers with: a page a client can hold and a JSON answer that stays a few MiB at most.
pub const FETCH_MAX_RECORDS: usize = 1000;

/// Record bytes one `/fetch` asks each partition for: Kafka's default `max.partition.fetch.bytes`.
pub const FETCH_MAX_BYTES: usize = 1024 * 1024;

/// Failed logins per client address and minute: more than a person mistyping, far too few to guess a password.
pub const MAX_AUTH_FAILURES_PER_MINUTE: u32 = 30;

/// One second's worth of requests or records may come at once.
pub const BURST_SECONDS: u32 = 1;

/// On: operators expect an access log.
pub const ACCESS_LOG: bool = true;

/// On: a consumer can join the producer's trace at no cost to anyone who does not look.
pub const PROPAGATE_TRACE_CONTEXT: bool = true;

// Shutdown's grace defaults to the request timeout: `ServerConfig::shutdown_grace`.

/// Lines for a person at a terminal, where a first run is read; `json` is for a log pipeline.
pub const LOG_FORMAT: LogFormat = LogFormat::Human;

// `[metrics]`

/// On: a Prometheus scraper finds `/metrics` with no setup; `[metrics] user` closes it to all but one user.
pub const METRICS_ENABLED: bool = true;

/// Topics with series of their own in `/metrics`: far more than a config names, few enough that writers naming new
/// topics (pattern topics) cannot grow the scrape without bound. Topics past it are counted under `topic="_other"`.
pub const MAX_TOPIC_SERIES: usize = 1000;

// `[clusters.<name>]`

/// The name brokers log and apply quotas to; one for every luka, as it is one kind of client.
pub const CLIENT_ID: &str = "luka";

/// None: no CPU spent on either side, and every broker reads it; pick a codec where bandwidth costs more than CPU.
pub const COMPRESSION: Compression = Compression::None;

/// No added wait: a lone request is sent at once, and concurrent requests share a batch anyway, because whatever
/// arrives while a partition's produce is in flight goes in its next one (and, under load, so do the requests
/// already waiting to run on the writer's thread: `kafka::batch`).
pub const LINGER_MS: u64 = 0;

/// Upper bound for one produce, retries for leader changes and reconnects included (rskafka retries forever
/// unless given a deadline).
pub const PRODUCE_TIMEOUT_MS: u64 = 10_000;

/// On: like Kafka's own clients (Java since 3.0, librdkafka 2.x), so a batch sent again after a lost answer or a
/// leader change is recognised by the broker instead of written twice.
pub const IDEMPOTENCE: bool = true;

/// How long a partition keeps resending a batch whose outcome is not known (its answer was lost, its broker
/// stalled) before giving it up: Kafka's own `delivery.timeout.ms` default. Never shorter than the produce timeout.
pub const DELIVERY_TIMEOUT_MS: u64 = 120_000;

/// A broker connection's setup (TCP, TLS handshake, ApiVersions, SASL) takes milliseconds, a hosted cluster's
/// across a continent well under a second: past 5 s it has stalled (a TLS client at a plaintext port waits for ever).
/// Never longer than the produce timeout.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Batches are cut at 1 MiB, Kafka's default `max.message.bytes` for a record batch.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Records per batch: with ~100-byte records the byte bound comes first; this bounds the per-record work (and
/// the offsets list) of one request when records are tiny.
pub const MAX_BATCH_RECORDS: usize = 10_000;

/// Produce calls waiting on one cluster at once (one per partition a call writes); past it, 503 with `Retry-After`
/// instead of an unbounded queue.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// Topics created by pattern per cluster: each costs the cluster a topic, luka a writer per partition and metric
/// series; a writer allowed `events.*` must not be able to make thousands.
pub const MAX_CREATED_TOPICS: usize = 100;

/// Cached topic metadata (partition counts) is refreshed after this age, and at once after an error.
pub const METADATA_MAX_AGE_MS: u64 = 30_000;

// `[topics.<name>]`

/// A single development broker has one replica to give.
pub const REPLICATION_FACTOR: i16 = 1;

/// Compact JSON, the form luka checks and generates values in; a topic with an `avro_schema` is `avro/binary`
/// instead, since that schema is only of use to Avro.
pub const CONTENT_TYPE: ContentType = ContentType::Json;

/// Chance that a generated object has each optional property: the schema generator's own default, whose reason
/// stands with it.
pub use crate::schema::OPTIONAL_PROBABILITY;

/// Partitions of a topic imported from an AsyncAPI channel without `bindings.kafka.partitions`: it is created with
/// one when missing, as a mock server would, so such a document still works against a fresh development broker.
pub const IMPORTED_PARTITIONS: i32 = 1;

// `[lua]`

/// Handler files live beside config.toml, in the folder the README's examples use.
pub const FUNCTIONS_DIR: &str = "functions";

/// A webhook handler parses, checks a signature and builds a record in well under a millisecond; 50 ms of pure
/// Lua is a runaway loop, not work, and stopping it early keeps one VM's other requests moving.
pub const LUA_CPU_MS: u64 = 50;

/// Wall clock for one handler, Kafka waits included: above the produce timeout so a slow broker yields its own
/// error first, below the request timeout.
pub const LUA_TIMEOUT_MS: u64 = 15_000;

/// Per VM, for every request it runs at once: thousands of typical requests fit, a runaway allocation does not
/// take the machine.
pub const LUA_MEMORY_MB: usize = 64;

/// 0, one VM per worker thread: each thread runs its requests on a VM of its own, and no thread waits for another's.
pub const LUA_VMS: usize = 0;

/// On: an edited handler serves its next request without a restart, and an edit that does not load leaves the
/// previous version serving, so watching costs a running server nothing.
pub const LUA_WATCH: bool = true;

// Requests that leave a parameter out

/// How long a `/fetch` without `timeout` waits for records (the hosted API's default).
pub const FETCH_TIMEOUT_MS: u64 = 1000;
