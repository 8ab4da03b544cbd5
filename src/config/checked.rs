//! The checked configuration, the only form of config.toml the rest of luka reads: [`Config`] with its
//! [`Cluster`]s, [`Topic`]s and [`User`]s. Takes the value types of the raw tables and the function settings; gives
//! the model the checks ([`super::check`], [`super::topics`]) build, in which every name resolves, every default is
//! applied and every schema is compiled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::choices::{Compression, ContentType};
use super::functions::{LuaSettings, Route};
use super::pattern::TopicPattern;
use super::raw::{SaslConfig, ServerConfig, TlsConfig};
use crate::schema::{AvroCodec, Schema};

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub metrics: MetricsSettings,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Most specific first: exact names, then patterns by literal length.
    pub topics: Vec<Topic>,
    pub users: Vec<User>,
    pub lua: LuaSettings,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub compression: Compression,
    pub linger: Duration,
    pub produce_timeout: Duration,
    /// Setup of one broker connection (TCP, TLS, ApiVersions, SASL).
    pub connect_timeout: Duration,
    /// Producer ids and sequence numbers in every batch.
    pub idempotence: bool,
    /// How long a batch whose outcome is unknown is resent (with idempotence).
    pub delivery_timeout: Duration,
    pub max_batch_bytes: usize,
    pub max_batch_records: usize,
    pub max_in_flight: usize,
    pub metadata_max_age: Duration,
    /// Topics luka may create by pattern.
    pub max_created_topics: usize,
    /// Listen address of the in-process development broker, when `embedded = true`.
    pub embedded: Option<SocketAddr>,
    pub sasl: Option<SaslConfig>,
    /// With file paths made absolute.
    pub tls: Option<TlsConfig>,
    /// Topics to create when missing, with their partition count and replication factor.
    pub create_topics: Vec<(String, i32, i16)>,
}

#[derive(Debug, Clone)]
pub struct Topic {
    pub pattern: TopicPattern,
    pub cluster: String,
    pub partitions: Option<i32>,
    pub replication_factor: i16,
    pub value_schema: Option<Arc<Schema>>,
    pub key_schema: Option<Arc<Schema>>,
    /// REST values are checked against `value_schema`.
    pub validate: bool,
    pub content_type: ContentType,
    /// The codec of `avro/binary` topics.
    pub avro: Option<Arc<AvroCodec>>,
    /// Chance that a generated object has each optional property.
    pub optional_probability: f64,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    pub topics: Vec<TopicPattern>,
    pub read_topics: Vec<TopicPattern>,
    pub requests_per_second: Option<u32>,
    pub records_per_second: Option<u32>,
    pub burst_seconds: u32,
}

/// The checked `[metrics]` section.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub enabled: bool,
    /// The only user whose credentials open `/metrics`; `None`: open to anyone who can reach the server.
    pub user: Option<String>,
    /// Topics with series of their own (past it: `topic="_other"`).
    pub max_topic_series: usize,
}

impl User {
    pub fn may_write(&self, topic: &str) -> bool {
        self.topics.iter().any(|p| p.matches(topic))
    }

    pub fn may_read(&self, topic: &str) -> bool {
        self.read_topics.iter().any(|p| p.matches(topic))
    }
}
