//! luka: HTTP requests in, Kafka records out.
//!
//! The path of one request, one module per stage, data flowing one way:
//!
//! ```text
//! config (config.toml, checked at startup)
//!    │
//! server (accept, limits, timeout) ──> router ──> api (REST produce: auth, JSON messages)
//!                                       │           │
//!                                       └──> lua (edge functions: VM pool, sandbox, kafka.produce)
//!                                                   │
//!                                           produce (route topic → cluster, key/value, partition, check all, write)
//!                                                   │
//!                                           kafka (cluster pool, metadata cache, shared batches) ──> broker
//! ```
//!
//! Errors are typed per module and become HTTP responses in one place, `server::error`. Beside the path: `context`
//! (what a request carries down it), `idempotency` (answers remembered by `Idempotency-Key`), `logging` (log lines
//! written in batches off the request path), `metrics`, and
//! `testing` (`luka test`, which drives the router in memory).

pub mod api;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod cli;
pub mod config;
pub mod context;
pub mod idempotency;
pub mod kafka;
pub mod limits;
pub mod logging;
pub mod lua;
pub mod metrics;
pub mod produce;
pub mod schema;
pub mod server;
#[cfg(feature = "embedded-broker")]
pub mod testing;
pub mod timeout;

use std::sync::Arc;

use config::Config;
use kafka::ClusterPool;
use lua::{Functions, LoadErrors};
use produce::Producer;

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub producer: Arc<Producer>,
    pub functions: Arc<Functions>,
    /// REST produce answers remembered by `Idempotency-Key`.
    pub idempotency: Arc<idempotency::Idempotency>,
    /// Rate limits per user and per client address.
    pub limits: Arc<limits::Limits>,
    /// Requests with an `Idempotency-Key` still running, per client: they run on after their client leaves, so the
    /// connection limits do not bound them.
    pub keyed_requests: Arc<limits::PerClient>,
}

impl App {
    /// Compiles the functions and starts their VMs (inside the tokio runtime); a function that does not load
    /// stops startup.
    pub fn new(config: Config) -> Result<Arc<Self>, LoadErrors> {
        let config = Arc::new(config);
        metrics::metrics().limit_topic_series(config.metrics.max_topic_series);
        metrics::metrics().reserve_topic_series(
            config
                .topics
                .iter()
                .filter(|t| t.pattern.is_exact())
                .map(|t| t.pattern.as_str().to_owned()),
        );
        let producer = producer(&config);
        let limits = Arc::new(limits::Limits::new(&config));
        let functions = Functions::start(Arc::clone(&config), Arc::clone(&producer), Arc::clone(&limits))?;
        let idempotency = idempotency::Idempotency::new(
            std::time::Duration::from_millis(config.server.idempotency_window_ms),
            config.server.idempotency_capacity,
        );
        Ok(Arc::new(Self {
            config,
            producer,
            functions,
            idempotency,
            limits,
            keyed_requests: Arc::default(),
        }))
    }
}

/// The produce core for `config`'s clusters (which it connects to on first use).
pub fn producer(config: &Arc<Config>) -> Arc<Producer> {
    let pool = Arc::new(ClusterPool::new(config.clusters.clone()));
    Arc::new(Producer::new(Arc::clone(config), pool))
}
