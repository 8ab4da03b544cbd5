//! The raw shape of `config.toml`: takes the text through serde, gives its tables as the user wrote them, for the
//! checks to turn into the [`super::checked`] model. Field doc comments are the user documentation.
//!
//! A table whose keys may all be left out is `#[serde(default)]`: a missing key takes the value of the table's
//! `Default`, which reads [`super::defaults`]. `[clusters.<name>]` must name `bootstrap`, which a table-wide default
//! would fill too, so its other keys are `Option`s that the cluster check fills from `defaults`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::choices::{Compression, ContentType, LogFormat, SaslMechanism};
use super::defaults;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub server: ServerConfig,
    pub clusters: BTreeMap<Spanned<String>, RawCluster>,
    pub topics: BTreeMap<Spanned<String>, RawTopic>,
    pub users: Vec<RawUser>,
    pub lua: LuaConfig,
    pub metrics: MetricsConfig,
    pub routes: Vec<RawRoute>,
    /// AsyncAPI 2.x/3.0 documents (a file name or a list), relative to config.toml, whose channels become topics.
    pub asyncapi: Option<Spanned<toml::Value>>,
}

/// `[metrics]`: the Prometheus endpoint `GET /metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (else it is a 404).
    pub enabled: bool,
    /// A `[[users]]` name: when set, `/metrics` needs that user's basic auth credentials.
    pub user: Option<Spanned<String>>,
    /// Topics that get series of their own; records of further topics are counted under `topic="_other"`.
    pub max_topic_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: defaults::METRICS_ENABLED,
            user: None,
            max_topic_series: defaults::MAX_TOPIC_SERIES,
        }
    }
}

/// `[server]`: the HTTP side.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `"127.0.0.1:8080"`; `luka --listen` overrides it.
    pub listen: SocketAddr,
    /// Largest request body accepted; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Time limit for a whole request; past it the client gets 504.
    pub request_timeout_ms: u64,
    /// Connections served at once; further connections wait to be accepted.
    pub max_connections: usize,
    /// Connections one client address may hold; further ones from it are answered 503 and closed.
    pub max_connections_per_address: usize,
    /// Time to send the request body once the headers are in; past it the client gets 408.
    pub body_timeout_ms: u64,
    /// Time a connection may go without a whole request head: a client that sends its headers slowly, or a
    /// keep-alive connection left idle, is closed after it.
    pub header_timeout_ms: u64,
    /// One info line per request (target `luka::access`): method, path, status, duration, function, records.
    pub access_log: bool,
    /// Copy a request's W3C `traceparent` / `tracestate` headers into every record it writes.
    pub propagate_trace_context: bool,
    /// How long a REST produce answer is remembered for its `Idempotency-Key`.
    pub idempotency_window_ms: u64,
    /// Most `Idempotency-Key`s remembered per user (the oldest finished one is forgotten first).
    pub idempotency_capacity: usize,
    /// Most messages one REST produce request, or one `kafka.produce` call, may carry; past it, 413.
    pub max_messages_per_request: usize,
    /// Most partition positions one `/fetch` or `/offsets` request may name (a position named twice counts once);
    /// past it, 413.
    pub max_positions_per_request: usize,
    /// Most records one `/fetch` request answers with.
    pub fetch_max_records: usize,
    /// Most record bytes one `/fetch` request asks each partition for.
    pub fetch_max_bytes: usize,
    /// Most record bytes one `/fetch` request reads and answers, over all its positions.
    pub fetch_max_total_bytes: usize,
    /// Origins (`https://app.example.com`) whose web pages may call the produce and read endpoints (CORS); other
    /// sites' pages are refused 403.
    pub cors_origins: Vec<String>,
    /// Failed logins one client address (IPv4, or IPv6 /64) may make per minute; past it, 429 until its attempts
    /// are back within the rate (one more every minute / this many). 0 turns the limit off.
    pub max_auth_failures_per_minute: u32,
    /// On SIGTERM/ctrl-c, how long in-flight requests may still finish; default `request_timeout_ms`
    /// ([`ServerConfig::shutdown_grace`]).
    pub shutdown_grace_ms: Option<u64>,
    /// `"human"` (default) or `"json"` log lines.
    pub log_format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: defaults::LISTEN,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            request_timeout_ms: defaults::REQUEST_TIMEOUT_MS,
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_address: defaults::MAX_CONNECTIONS_PER_ADDRESS,
            body_timeout_ms: defaults::BODY_TIMEOUT_MS,
            header_timeout_ms: defaults::HEADER_TIMEOUT_MS,
            access_log: defaults::ACCESS_LOG,
            propagate_trace_context: defaults::PROPAGATE_TRACE_CONTEXT,
            idempotency_window_ms: defaults::IDEMPOTENCY_WINDOW_MS,
            idempotency_capacity: defaults::IDEMPOTENCY_CAPACITY,
            max_messages_per_request: defaults::MAX_MESSAGES_PER_REQUEST,
            max_positions_per_request: defaults::MAX_POSITIONS_PER_REQUEST,
            fetch_max_records: defaults::FETCH_MAX_RECORDS,
            fetch_max_bytes: defaults::FETCH_MAX_BYTES,
            fetch_max_total_bytes: defaults::FETCH_MAX_TOTAL_BYTES,
            cors_origins: Vec::new(),
            max_auth_failures_per_minute: defaults::MAX_AUTH_FAILURES_PER_MINUTE,
            shutdown_grace_ms: None,
            log_format: defaults::LOG_FORMAT,
        }
    }
}

impl ServerConfig {
    /// How long shutdown waits for requests in progress: `shutdown_grace_ms`, by default the request timeout, by
    /// which every request is answered (one waiting on a slow cluster gets its 504 after the produce timeout). luka
    /// exits as soon as they all are, so a long grace costs nothing when requests are quick.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shutdown_grace_ms.unwrap_or(self.request_timeout_ms))
    }
}

/// `[lua]`: the edge functions and the limits every handler runs under.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LuaConfig {
    /// Folder of handler files, relative to config.toml; `functions/hooks/github.lua` serves `/hooks/github`.
    /// Default `functions`, which may be absent (no handlers); a folder named here must exist.
    pub functions: Option<PathBuf>,
    /// Folder of `*_test.lua` files that `luka test` runs, relative to config.toml; default: the functions folder.
    pub tests: Option<PathBuf>,
    /// CPU time one request may spend running Lua (its thread's CPU clock: time waiting on Kafka, or not running at
    /// all, does not count).
    pub cpu_ms: u64,
    /// Wall-clock limit for one handler, waiting on Kafka included; past it the client gets 504.
    pub timeout_ms: u64,
    /// Memory one Lua VM may use, for all the requests it runs at once.
    pub memory_mb: usize,
    /// Number of Lua VMs; 0 means one per worker thread (one per CPU core unless `TOKIO_WORKER_THREADS` says
    /// otherwise), so each thread runs its requests on its own VM.
    pub vms: usize,
    /// Reload changed files under `functions` without a restart.
    pub watch: bool,
}

impl Default for LuaConfig {
    fn default() -> Self {
        Self {
            functions: None,
            tests: None,
            cpu_ms: defaults::LUA_CPU_MS,
            timeout_ms: defaults::LUA_TIMEOUT_MS,
            memory_mb: defaults::LUA_MEMORY_MB,
            vms: defaults::LUA_VMS,
            watch: defaults::LUA_WATCH,
        }
    }
}

/// `[[routes]]`: an explicit route to a function, with parameters, methods, auth and environment values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Path with `{name}` segments for parameters, e.g. `"/orders/{id}"`.
    pub path: Spanned<String>,
    /// Handler file, relative to the functions folder, e.g. `"orders.lua"`.
    pub function: Spanned<String>,
    /// Methods served; empty (the default) serves every method.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Require HTTP basic auth against `[[users]]`.
    #[serde(default)]
    pub auth: bool,
    /// Honour an `Idempotency-Key` header: a repeat answers the first response again without running the handler,
    /// if that was a success or a failure after which its records may be in Kafka (one that wrote nothing may be
    /// tried again).
    #[serde(default)]
    pub idempotency: bool,
    /// Values the handler reads as `env.NAME` (use `${VAR}` to take them from the environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Requests this route may serve per second, from all callers together; unlimited unless set. Each entry counts
    /// its own, also when several name one function file.
    pub requests_per_second: Option<u32>,
    /// Records this route's requests may write per second with `kafka.produce`, from all callers together;
    /// unlimited unless set.
    pub records_per_second: Option<u32>,
    /// How many seconds' worth of requests or records may come at once (the burst).
    pub burst_seconds: Option<u32>,
}

/// `[clusters.<name>]`: one Kafka cluster. Its `Default` is a cluster that gives nothing but what it is built with.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Bootstrap brokers, `host:port`.
    pub bootstrap: Vec<String>,
    /// Kafka client id sent with every request.
    pub client_id: Option<String>,
    /// Record batch compression: none, gzip, lz4, snappy or zstd.
    pub compression: Option<Compression>,
    /// Extra wait before each produce request for more records. 0 (the default): a partition with nothing in
    /// flight sends at once, and records that arrive while a request is in flight go together in the next one.
    pub linger_ms: Option<u64>,
    /// Time limit for one produce, retries included; past it the caller gets an error (503 or 504).
    pub produce_timeout_ms: Option<u64>,
    /// Idempotent produce (on by default): producer id, epoch and sequence numbers in every batch, so a batch sent
    /// again is recognised by the broker. Off only for brokers without `InitProducerId`.
    pub idempotence: Option<bool>,
    /// With idempotence: how long a partition keeps resending a batch whose outcome is unknown before giving it up.
    pub delivery_timeout_ms: Option<u64>,
    /// Time limit for setting up one broker connection: TCP connect, TLS handshake, ApiVersions and SASL. A TLS
    /// handshake that stalls past it is a 503 that says TLS.
    pub connect_timeout_ms: Option<u64>,
    /// Largest record batch sent in one produce request.
    pub max_batch_bytes: Option<usize>,
    /// Most records sent in one produce request.
    pub max_batch_records: Option<usize>,
    /// Produce calls waiting on this cluster at once, one per partition a call writes (a REST request or a
    /// `kafka.produce` call over three partitions holds three); past it, 503 with `Retry-After`.
    pub max_in_flight: Option<usize>,
    /// Age after which cached topic metadata is fetched again.
    pub metadata_max_age_ms: Option<u64>,
    /// Topics luka may create on this cluster for names that only a pattern topic (with `partitions`) matches.
    pub max_created_topics: Option<usize>,
    /// Topics that name no cluster go to the default cluster (or to the only cluster, when there is one).
    #[serde(default)]
    pub default: bool,
    /// Start an in-process development broker listening on the (single) bootstrap address.
    #[serde(default)]
    pub embedded: bool,
    pub sasl: Option<SaslConfig>,
    pub tls: Option<TlsConfig>,
}

/// `[clusters.<name>.sasl]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `"PLAIN"`, `"SCRAM-SHA-256"` or `"SCRAM-SHA-512"`.
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

/// `[clusters.<name>.tls]`: present means TLS is on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of trusted CA certificates; without it the Mozilla root store is used.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// `[topics.<name or pattern>]`
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTopic {
    /// Cluster holding the topic; without it, the default cluster.
    pub cluster: Option<Spanned<String>>,
    /// Development convenience: create the topic with this many partitions when the cluster lacks it.
    pub partitions: Option<i32>,
    /// Replication factor used when creating the topic.
    pub replication_factor: i16,
    /// JSON Schema of the values: an inline table, or a JSON file relative to config.toml. `data` given to
    /// `kafka.produce` is checked against it before anything is written.
    pub value_schema: Option<Spanned<toml::Value>>,
    /// JSON Schema of the keys, same forms.
    pub key_schema: Option<Spanned<toml::Value>>,
    /// Check REST `value`s as JSON against `value_schema` (Lua's `data` is always checked, its `value` never).
    pub validate: bool,
    /// How `data` and generated values are encoded: `application/json` (the default), `text/plain`,
    /// `application/octet-stream` or `avro/binary` (the default when `avro_schema` is set).
    pub content_type: Option<ContentType>,
    /// Avro schema of the values (an inline table, or a `.avsc` JSON file relative to config.toml).
    pub avro_schema: Option<Spanned<toml::Value>>,
    /// Confluent wire format for Avro values: magic byte 0 and this schema id (4 bytes, big-endian) first.
    pub schema_id: Option<u32>,
    /// Chance that a generated object has each of its optional properties.
    pub optional_probability: f64,
    /// Schemas taken from an AsyncAPI document (JSON, which TOML cannot always hold: it has no null).
    #[serde(skip)]
    pub imported: Option<ImportedSchemas>,
}

impl Default for RawTopic {
    fn default() -> Self {
        Self {
            cluster: None,
            partitions: None,
            replication_factor: defaults::REPLICATION_FACTOR,
            value_schema: None,
            key_schema: None,
            validate: false,
            content_type: None,
            avro_schema: None,
            schema_id: None,
            optional_probability: defaults::OPTIONAL_PROBABILITY,
            imported: None,
        }
    }
}

/// A topic's schemas as an AsyncAPI document gave them.
#[derive(Debug, Default, Clone)]
pub struct ImportedSchemas {
    /// The document, for messages.
    pub origin: String,
    pub value_schema: Option<serde_json::Value>,
    pub key_schema: Option<serde_json::Value>,
}

/// `[[users]]`: credentials for the REST produce API (HTTP basic auth).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Spanned<String>,
    pub password: String,
    /// Topics (names or `*` patterns) this user may write.
    pub topics: Vec<Spanned<String>>,
    /// Topics this user may read with `/offsets` and `/fetch`; none unless listed.
    #[serde(default)]
    pub read_topics: Vec<Spanned<String>>,
    /// Requests this user may send per second (every authenticated request); unlimited unless set.
    pub requests_per_second: Option<u32>,
    /// Records this user may write per second through the REST API; unlimited unless set.
    pub records_per_second: Option<u32>,
    /// How many seconds' worth of requests or records may come at once (the burst).
    pub burst_seconds: Option<u32>,
}
