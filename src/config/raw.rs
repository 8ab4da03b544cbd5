//! The raw shape of `config.toml`: takes the text through serde, gives its tables as the user wrote them, for the
//! checks to turn into the [`super::checked`] model. Field doc comments are the user documentation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::defaults;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub clusters: BTreeMap<Spanned<String>, RawCluster>,
    #[serde(default)]
    pub topics: BTreeMap<Spanned<String>, RawTopic>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub lua: LuaConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// AsyncAPI 2.x/3.0 documents (a file name or a list), relative to config.toml, whose channels become topics.
    pub asyncapi: Option<Spanned<toml::Value>>,
}

/// `[metrics]`: the Prometheus endpoint `GET /metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (else it is a 404).
    #[serde(default = "defaults::on")]
    pub enabled: bool,
    /// A `[[users]]` name: when set, `/metrics` needs that user's basic auth credentials.
    pub user: Option<Spanned<String>>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: defaults::on(),
            user: None,
        }
    }
}

/// `[server]`: the HTTP side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `"127.0.0.1:8080"`; `luka --listen` overrides it.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted; larger bodies get 413.
    #[serde(default = "max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time limit for a whole request; past it the client gets 504.
    #[serde(default = "request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Connections served at once; further connections wait to be accepted.
    #[serde(default = "max_connections")]
    pub max_connections: usize,
    /// Connections one client address may hold; further ones from it are answered 503 and closed.
    #[serde(default = "max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Time to send the request body once the headers are in; past it the client gets 408.
    #[serde(default = "body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// One info line per request (target `luka::access`): method, path, status, duration, function, records.
    #[serde(default = "defaults::on")]
    pub access_log: bool,
    /// Copy a request's W3C `traceparent` / `tracestate` headers into every record it writes.
    #[serde(default = "defaults::on")]
    pub propagate_trace_context: bool,
    /// How long a REST produce answer is remembered for its `Idempotency-Key`.
    #[serde(default = "idempotency_window_ms")]
    pub idempotency_window_ms: u64,
    /// Most `Idempotency-Key`s remembered at once (the oldest is forgotten first).
    #[serde(default = "idempotency_capacity")]
    pub idempotency_capacity: usize,
    /// Most records one `/fetch` request answers with.
    #[serde(default = "fetch_max_records")]
    pub fetch_max_records: usize,
    /// Most record bytes one `/fetch` request asks each partition for.
    #[serde(default = "fetch_max_bytes")]
    pub fetch_max_bytes: usize,
    /// On SIGTERM/ctrl-c, how long in-flight requests may still finish.
    #[serde(default = "shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// `"human"` (default) or `"json"` log lines.
    #[serde(default)]
    pub log_format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            max_body_bytes: defaults::MAX_BODY_BYTES,
            request_timeout_ms: defaults::REQUEST_TIMEOUT_MS,
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_address: defaults::MAX_CONNECTIONS_PER_ADDRESS,
            body_timeout_ms: defaults::BODY_TIMEOUT_MS,
            access_log: defaults::on(),
            propagate_trace_context: defaults::on(),
            idempotency_window_ms: defaults::IDEMPOTENCY_WINDOW_MS,
            idempotency_capacity: defaults::IDEMPOTENCY_CAPACITY,
            fetch_max_records: defaults::FETCH_MAX_RECORDS,
            fetch_max_bytes: defaults::FETCH_MAX_BYTES,
            shutdown_grace_ms: defaults::SHUTDOWN_GRACE_MS,
            log_format: LogFormat::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// `[lua]`: the edge functions and the limits every handler runs under.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuaConfig {
    /// Folder of handler files, relative to config.toml; `functions/hooks/github.lua` serves `/hooks/github`.
    /// Default `functions`, which may be absent (no handlers); a folder named here must exist.
    pub functions: Option<PathBuf>,
    /// Folder of `*_test.lua` files that `luka test` runs, relative to config.toml; default: the functions folder.
    pub tests: Option<PathBuf>,
    /// Lua execution time one request may use (time spent waiting on Kafka does not count).
    #[serde(default = "lua_cpu_ms")]
    pub cpu_ms: u64,
    /// Wall-clock limit for one handler, waiting on Kafka included; past it the client gets 504.
    #[serde(default = "lua_timeout_ms")]
    pub timeout_ms: u64,
    /// Memory one Lua VM may use, for all the requests it runs at once.
    #[serde(default = "lua_memory_mb")]
    pub memory_mb: usize,
    /// Number of Lua VMs; 0 means one per worker thread (one per CPU core unless `TOKIO_WORKER_THREADS` says
    /// otherwise), so each thread runs its requests on its own VM.
    #[serde(default)]
    pub vms: usize,
    /// Reload changed files under `functions` without a restart.
    #[serde(default = "watch")]
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
            vms: 0,
            watch: true,
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
    /// Honour an `Idempotency-Key` header: a repeat answers the first successful response again without running
    /// the handler.
    #[serde(default)]
    pub idempotency: bool,
    /// Values the handler reads as `env.NAME` (use `${VAR}` to take them from the environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `[clusters.<name>]`: one Kafka cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Bootstrap brokers, `host:port`.
    pub bootstrap: Vec<String>,
    /// Kafka client id sent with every request.
    #[serde(default = "client_id")]
    pub client_id: String,
    /// Record batch compression: none, gzip, lz4, snappy or zstd.
    #[serde(default)]
    pub compression: Compression,
    /// Extra wait before each produce request for more records. 0 (the default): a partition with nothing in
    /// flight sends at once, and records that arrive while a request is in flight go together in the next one.
    #[serde(default = "linger_ms")]
    pub linger_ms: u64,
    /// Time limit for one produce, retries included; past it the caller gets an error (503 or 504).
    #[serde(default = "produce_timeout_ms")]
    pub produce_timeout_ms: u64,
    /// Largest record batch sent in one produce request.
    #[serde(default = "max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Most records sent in one produce request.
    #[serde(default = "max_batch_records")]
    pub max_batch_records: usize,
    /// Produce calls (REST requests, `kafka.produce` calls) waiting on this cluster at once; past it, 503 with
    /// `Retry-After`.
    #[serde(default = "max_in_flight")]
    pub max_in_flight: usize,
    /// Age after which cached topic metadata is fetched again.
    #[serde(default = "metadata_max_age_ms")]
    pub metadata_max_age_ms: u64,
    /// Topics that name no cluster go to the default cluster (or to the only cluster, when there is one).
    #[serde(default)]
    pub default: bool,
    /// Start an in-process development broker listening on the (single) bootstrap address.
    #[serde(default)]
    pub embedded: bool,
    pub sasl: Option<SaslConfig>,
    pub tls: Option<TlsConfig>,
}

/// How a topic's structured values (`data`, generated values) become record bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ContentType {
    /// Compact JSON.
    #[default]
    #[serde(rename = "application/json")]
    Json,
    /// Strings as their text, numbers and booleans as text; no objects, arrays or null.
    #[serde(rename = "text/plain")]
    Text,
    /// Strings as their bytes; nothing else.
    #[serde(rename = "application/octet-stream")]
    OctetStream,
    /// Avro binary by the topic's `avro_schema`, optionally with Confluent framing (`schema_id`).
    #[serde(rename = "avro/binary")]
    Avro,
}

impl ContentType {
    pub const ALL: [ContentType; 4] = [Self::Json, Self::Text, Self::OctetStream, Self::Avro];

    /// The content type named `name` (as config.toml spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Text => "text/plain",
            Self::OctetStream => "application/octet-stream",
            Self::Avro => "avro/binary",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Lz4,
    Snappy,
    Zstd,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopic {
    /// Cluster holding the topic; without it, the default cluster.
    pub cluster: Option<Spanned<String>>,
    /// Development convenience: create the topic with this many partitions when the cluster lacks it.
    pub partitions: Option<i32>,
    /// Replication factor used when creating the topic.
    #[serde(default = "replication_factor")]
    pub replication_factor: i16,
    /// JSON Schema of the values: an inline table, or a JSON file relative to config.toml. `data` given to
    /// `kafka.produce` is checked against it before anything is written.
    pub value_schema: Option<Spanned<toml::Value>>,
    /// JSON Schema of the keys, same forms.
    pub key_schema: Option<Spanned<toml::Value>>,
    /// Check REST `value`s as JSON against `value_schema` (Lua's `data` is always checked, its `value` never).
    #[serde(default)]
    pub validate: bool,
    /// How `data` and generated values are encoded: `application/json` (the default), `text/plain`,
    /// `application/octet-stream` or `avro/binary` (the default when `avro_schema` is set).
    pub content_type: Option<ContentType>,
    /// Avro schema of the values (an inline table, or a `.avsc` JSON file relative to config.toml).
    pub avro_schema: Option<Spanned<toml::Value>>,
    /// Confluent wire format for Avro values: magic byte 0 and this schema id (4 bytes, big-endian) first.
    pub schema_id: Option<u32>,
    /// Chance that a generated object has each of its optional properties.
    #[serde(default = "optional_probability")]
    pub optional_probability: f64,
    /// Schemas taken from an AsyncAPI document (JSON, which TOML cannot always hold: it has no null).
    #[serde(skip)]
    pub imported: Option<ImportedSchemas>,
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
}

fn max_body_bytes() -> usize {
    defaults::MAX_BODY_BYTES
}
fn request_timeout_ms() -> u64 {
    defaults::REQUEST_TIMEOUT_MS
}
fn max_connections() -> usize {
    defaults::MAX_CONNECTIONS
}
fn max_connections_per_address() -> usize {
    defaults::MAX_CONNECTIONS_PER_ADDRESS
}
fn body_timeout_ms() -> u64 {
    defaults::BODY_TIMEOUT_MS
}
fn idempotency_window_ms() -> u64 {
    defaults::IDEMPOTENCY_WINDOW_MS
}
fn idempotency_capacity() -> usize {
    defaults::IDEMPOTENCY_CAPACITY
}
fn fetch_max_records() -> usize {
    defaults::FETCH_MAX_RECORDS
}
fn fetch_max_bytes() -> usize {
    defaults::FETCH_MAX_BYTES
}
fn shutdown_grace_ms() -> u64 {
    defaults::SHUTDOWN_GRACE_MS
}
fn client_id() -> String {
    defaults::CLIENT_ID.to_owned()
}
fn linger_ms() -> u64 {
    defaults::LINGER_MS
}
fn produce_timeout_ms() -> u64 {
    defaults::PRODUCE_TIMEOUT_MS
}
fn max_batch_bytes() -> usize {
    defaults::MAX_BATCH_BYTES
}
fn max_in_flight() -> usize {
    defaults::MAX_IN_FLIGHT
}
fn max_batch_records() -> usize {
    defaults::MAX_BATCH_RECORDS
}
fn metadata_max_age_ms() -> u64 {
    defaults::METADATA_MAX_AGE_MS
}
fn lua_cpu_ms() -> u64 {
    defaults::LUA_CPU_MS
}
fn lua_timeout_ms() -> u64 {
    defaults::LUA_TIMEOUT_MS
}
fn lua_memory_mb() -> usize {
    defaults::LUA_MEMORY_MB
}
fn watch() -> bool {
    true
}
fn optional_probability() -> f64 {
    defaults::OPTIONAL_PROBABILITY
}
fn replication_factor() -> i16 {
    defaults::REPLICATION_FACTOR
}
