//! luka: HTTP requests in, Kafka records out.
//!
//! The path of one request, one module per stage, data flowing one way:
//!
//! ```text
//! config (config.toml, checked at startup)
//!    │
//! server (accept, limits, timeout) ──> router ──> api (REST produce: auth, JSON messages)
//!                                                   │
//!                                           produce (route topic → cluster, partition, check all, write)
//!                                                   │
//!                                           kafka (cluster pool, metadata cache, shared batches) ──> broker
//! ```
//!
//! Errors are typed per module and become HTTP responses in one place, `server::error`.

pub mod api;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod cli;
pub mod config;
pub mod kafka;
pub mod produce;
pub mod server;

use std::sync::Arc;

use config::Config;
use kafka::ClusterPool;
use produce::Producer;

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub producer: Producer,
}

impl App {
    pub fn new(config: Config) -> Arc<Self> {
        let config = Arc::new(config);
        let pool = Arc::new(ClusterPool::new(config.clusters.clone()));
        Arc::new(Self {
            producer: Producer::new(Arc::clone(&config), pool),
            config,
        })
    }
}
