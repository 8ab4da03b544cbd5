//! Whether a cluster's bootstrap brokers accept connections, remembered: a Kafka operation and its time limit in,
//! its result out, or at once a 503 while the cluster is known to be down.
//!
//! rskafka retries a refused connection until its deadline, so without this every caller would wait out the whole
//! produce timeout during an outage. Instead:
//! - **up**: operations run. One still waiting after [`SUSPECT_AFTER`] probes the bootstrap brokers (a TCP
//!   connect; one probe at a time per cluster, its result shared for [`PROBE_INTERVAL`]). If none accepts, the
//!   cluster is marked down and every waiting operation, and each partition writer's produce in flight, gives up.
//! - **down**: operations are refused at once. A background task probes every [`PROBE_INTERVAL`]; the first broker
//!   that accepts marks the cluster up again, and the next operation finds out whether Kafka answers (half-open).
//!
//! A broker that accepts connections but does not answer (paused, overloaded) is slow, not down: operations keep
//! waiting until their limit and then time out (504).

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::KafkaError;
use super::deadline::{any_broker_accepts, ran_out};
use crate::config::Cluster;

/// An operation waiting this long makes luka look whether the cluster is still there.
const SUSPECT_AFTER: Duration = Duration::from_millis(200);

/// Probes are at least this far apart; while the cluster is down, this is how soon its return is noticed.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub(crate) struct Reachability {
    cluster: String,
    bootstrap: Vec<String>,
    /// `Some(why)` while no bootstrap broker accepts connections.
    down: watch::Sender<Option<Arc<str>>>,
    last_probe: Mutex<Option<(Instant, bool)>>,
    probing: tokio::sync::Mutex<()>,
}

impl Reachability {
    pub(crate) fn new(config: &Cluster) -> Arc<Self> {
        crate::metrics::metrics().set_reachable(&config.name, true);
        Arc::new(Self {
            cluster: config.name.clone(),
            bootstrap: config.bootstrap.clone(),
            down: watch::Sender::new(None),
            last_probe: Mutex::default(),
            probing: tokio::sync::Mutex::default(),
        })
    }

    /// Why the cluster is down, if it is.
    pub(crate) fn outage(&self) -> Option<Arc<str>> {
        self.down.borrow().clone()
    }

    /// Notified when the cluster goes down or comes back.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.down.subscribe()
    }

    /// Runs `work` until it finishes, the cluster is found down (503), or `limit` passes (504, or 503 if no broker
    /// accepts connections by then).
    pub(crate) async fn guard<T>(
        self: &Arc<Self>,
        config: &Cluster,
        limit: Duration,
        work: impl Future<Output = Result<T, KafkaError>>,
    ) -> Result<T, KafkaError> {
        if let Some(why) = self.outage() {
            return Err(self.unavailable(&why));
        }
        let mut work = pin!(work);
        // Most operations that finish at once need no timer and no watch.
        if let Poll::Ready(result) = futures::poll!(work.as_mut()) {
            return result;
        }
        let deadline = Instant::now() + limit;
        let mut changes = self.subscribe();
        let wake = sleep_until((Instant::now() + SUSPECT_AFTER).min(deadline));
        let mut wake = pin!(wake);
        loop {
            tokio::select! {
                biased;
                result = work.as_mut() => return result,
                Ok(()) = changes.changed() => {
                    if let Some(why) = changes.borrow_and_update().clone() {
                        return Err(self.unavailable(&why));
                    }
                }
                () = wake.as_mut() => {
                    if Instant::now() >= deadline {
                        return Err(ran_out(config, limit).await);
                    }
                    if let Some(why) = self.check().await {
                        return Err(self.unavailable(&why));
                    }
                    wake.as_mut().reset((Instant::now() + PROBE_INTERVAL).min(deadline));
                }
            }
        }
    }

    /// Probes (or reuses a fresh probe) and marks the cluster down if no broker accepts; gives why it is down.
    pub(crate) async fn check(self: &Arc<Self>) -> Option<Arc<str>> {
        if self.probe().await {
            return None;
        }
        let why: Arc<str> = Arc::from(format!(
            "no bootstrap broker accepts connections ({})",
            self.bootstrap.join(", ")
        ));
        let newly_down = self.down.send_if_modified(|down| {
            let newly = down.is_none();
            if newly {
                *down = Some(Arc::clone(&why));
            }
            newly
        });
        if newly_down {
            crate::metrics::metrics().set_reachable(&self.cluster, false);
            tracing::warn!(cluster = %self.cluster, "kafka cluster unreachable; answering 503 until a broker accepts connections again");
            let this = Arc::clone(self);
            tokio::spawn(async move { this.watch_recovery().await });
        }
        self.outage()
    }

    async fn watch_recovery(&self) {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            if self.probe().await {
                self.down.send_replace(None);
                crate::metrics::metrics().set_reachable(&self.cluster, true);
                tracing::info!(cluster = %self.cluster, "kafka cluster accepts connections again");
                return;
            }
        }
    }

    /// Whether any bootstrap broker accepts a connection; one probe at a time, a fresh result reused.
    async fn probe(&self) -> bool {
        let _one_at_a_time = self.probing.lock().await;
        let last = *self.last_probe.lock().expect("probe lock poisoned");
        if let Some((_, up)) = last.filter(|(at, _)| at.elapsed() < PROBE_INTERVAL) {
            return up;
        }
        let up = any_broker_accepts(&self.bootstrap).await;
        *self.last_probe.lock().expect("probe lock poisoned") = Some((Instant::now(), up));
        up
    }

    fn unavailable(&self, why: &str) -> KafkaError {
        KafkaError::Unavailable {
            cluster: self.cluster.clone(),
            detail: why.to_owned(),
        }
    }
}
