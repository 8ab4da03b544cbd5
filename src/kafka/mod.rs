//! The Kafka side: cluster name in, connected [`ClusterClient`] out.
//!
//! One client per cluster, created on first use and shared by every request; each holds its topic metadata
//! cache and a batching producer per partition ([`batch`]).
//!
//! ```text
//! produce core ──(cluster, topic, partition, records)──> ClusterPool ──> ClusterClient ──> BatchProducer ──> broker
//! ```

mod batch;
mod cluster;
mod connect;
mod deadline;
mod error;
mod reachability;
mod read;
mod rules;
mod security;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::OnceCell;

pub(crate) use batch::single_record_batch_size;
pub use batch::{Appended, ProduceCounters};
pub(crate) use cluster::tally;
pub use cluster::{ClusterClient, CreateIfMissing};
pub use error::{ErrorClass, KafkaError};
use reachability::Reachability;
pub use read::{FetchedRecord, ListOffset};
pub use rules::TopicRules;
pub use security::SecurityCause;

use crate::config::Cluster;

/// After a failed connection attempt, callers within this window get the same error at once instead of each
/// waiting out a full connect timeout in turn.
const CONNECT_FAILURE_MEMORY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ClusterPool {
    configs: BTreeMap<String, Arc<Cluster>>,
    clients: DashMap<String, Arc<OnceCell<Arc<ClusterClient>>>>,
    reachability: BTreeMap<String, Arc<Reachability>>,
    last_failure: Mutex<BTreeMap<String, (Instant, KafkaError)>>,
    /// The last readiness answer and when it was made: `/readyz` is open to anyone, so it asks the brokers at most
    /// once per [`READINESS_REUSE`], one check at a time.
    readiness: tokio::sync::Mutex<Option<(Instant, Readiness)>>,
}

/// Each cluster's readiness, by name.
pub type Readiness = Vec<(String, Result<(), KafkaError>)>;

/// How long a readiness answer is reused.
const READINESS_REUSE: Duration = Duration::from_secs(1);

impl ClusterPool {
    pub fn new(configs: BTreeMap<String, Arc<Cluster>>) -> Self {
        let reachability = configs
            .iter()
            .map(|(name, config)| (name.clone(), Reachability::new(config)))
            .collect();
        Self {
            configs,
            reachability,
            clients: DashMap::new(),
            last_failure: Mutex::default(),
            readiness: tokio::sync::Mutex::default(),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.configs.keys().map(String::as_str)
    }

    /// The shared client of cluster `name`, connecting (and creating configured topics) on first use.
    pub async fn cluster(&self, name: &str) -> Result<Arc<ClusterClient>, KafkaError> {
        // Connected already (nearly every call): a shared look-up by the borrowed name, nothing allocated.
        if let Some(client) = self.clients.get(name).and_then(|cell| cell.get().cloned()) {
            return Ok(client);
        }
        let config = self.configs.get(name).ok_or_else(|| KafkaError::Setup {
            cluster: name.to_owned(),
            detail: "no such cluster in config".to_owned(),
        })?;
        let cell = self.clients.entry(name.to_owned()).or_default().clone();
        if let Some(client) = cell.get() {
            return Ok(Arc::clone(client));
        }
        if let Some(error) = self.recent_failure(name) {
            return Err(error);
        }
        let reachability = &self.reachability[name];
        let result: Result<Arc<ClusterClient>, KafkaError> = cell
            // Boxed: connecting happens once, and its deep future would otherwise be part of every request's.
            .get_or_try_init(|| {
                Box::pin(async {
                    let connecting = connect::connect(config);
                    let client = reachability.guard(config, config.produce_timeout, connecting).await?;
                    let cluster = ClusterClient::new(Arc::clone(config), client, Arc::clone(reachability));
                    cluster.create_configured_topics().await;
                    tracing::info!(cluster = %name, bootstrap = ?config.bootstrap, "connected to kafka cluster");
                    Ok(Arc::new(cluster))
                })
            })
            .await
            .cloned();
        if let Err(e) = &result {
            self.last_failure
                .lock()
                .expect("failure lock poisoned")
                .insert(name.to_owned(), (Instant::now(), e.clone()));
        }
        result
    }

    fn recent_failure(&self, name: &str) -> Option<KafkaError> {
        let failures = self.last_failure.lock().expect("failure lock poisoned");
        let (at, error) = failures.get(name)?;
        (at.elapsed() < CONNECT_FAILURE_MEMORY).then(|| error.clone())
    }

    /// Connects every cluster in the background, so configured topics exist before the first request.
    pub fn warm_up(self: &Arc<Self>) {
        for name in self.configs.keys() {
            let (pool, name) = (Arc::clone(self), name.clone());
            tokio::spawn(async move {
                if let Err(e) = pool.cluster(&name).await {
                    tracing::warn!(cluster = %name, error = %e, "kafka cluster not reachable yet; will retry on use");
                }
            });
        }
    }

    /// Whether each cluster answers within `within`, by name (an answer up to [`READINESS_REUSE`] old).
    pub async fn readiness(&self, within: Duration) -> Readiness {
        let mut last = self.readiness.lock().await;
        // A cluster known to be down since (its outage memory) is news the reused answer may not have.
        let news = |answer: &Readiness| {
            answer.iter().any(|(name, result)| {
                result.is_ok() && self.reachability.get(name).is_some_and(|r| r.outage().is_some())
            })
        };
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < READINESS_REUSE
            && !news(answer)
        {
            return answer.clone();
        }
        let checks = self.configs.iter().map(|(name, config)| async move {
            let ping = async { self.cluster(name).await?.ping().await };
            (name.clone(), deadline::within(config, within, ping).await)
        });
        let answer = futures::future::join_all(checks).await;
        // Logged as checked, not as answered: an answer reused is no news, and `/readyz` is anyone's to call.
        for (name, result) in &answer {
            if let Err(e) = result {
                tracing::warn!(cluster = %name, error = %e, "readiness check failed");
                // A failed check is also news for the cluster's outage state (and its reachability metric), which
                // otherwise only a produce or read probes: a cluster with no traffic stayed "reachable" while down.
                if let Some(reachability) = self.reachability.get(name) {
                    reachability.check().await;
                }
            }
        }
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}
