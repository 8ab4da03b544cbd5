//! The embedded development broker: a listen address in, a running Kafka-protocol broker (tansu, in-memory
//! storage) out. Behind the default `embedded-broker` feature; luka works against external clusters without it.
//!
//! The broker can be stopped and started again on the same address with its data kept, which is how the tests
//! take a broker away from a running luka and bring it back.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

/// How long `start` waits for the broker to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the broker must still be running after its address first accepts a connection: its bind, the first
/// thing it does, has failed by then if it was going to.
const BIND_SETTLE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded broker cannot listen on {addr}: {source} (is another broker running there?)")]
    Bind { addr: SocketAddr, source: std::io::Error },

    #[error("embedded broker on {addr} failed to start: {detail}")]
    Start { addr: SocketAddr, detail: String },
}

type ListenFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// tansu's broker over in-memory storage, the type its builder produces.
type EmbeddedTansu = tansu_broker::broker::Broker<
    tansu_broker::coordinator::group::administrator::Controller<tansu_storage::StorageContainer>,
    tansu_storage::StorageContainer,
>;

/// A running in-process broker.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    /// Starts the broker's accept loop on the shared storage; called again to restart after `stop`.
    listen: Arc<dyn Fn() -> ListenFuture + Send + Sync>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// Starts a broker listening (and advertising itself) on `addr`, and waits until it accepts connections.
    pub async fn start(addr: SocketAddr) -> Result<Self, BrokerError> {
        keep_off_huge_pages();
        let url = |scheme_and_rest: String| {
            url::Url::parse(&scheme_and_rest).map_err(|e| BrokerError::Start {
                addr,
                detail: e.to_string(),
            })
        };
        let listener = url(format!("tcp://{addr}"))?;
        let mut broker = EmbeddedTansu::builder()
            .node_id(tansu_broker::NODE_ID)
            .cluster_id("luka-embedded")
            .incarnation_id(uuid::Uuid::new_v4())
            .advertised_listener(listener.clone())
            .storage(url("memory://tansu/".to_owned())?)
            .listener(listener)
            .silent(true)
            .build()
            .await
            .map_err(|e| BrokerError::Start {
                addr,
                detail: format!("{e:?}"),
            })?;
        broker.register().await.map_err(|e| BrokerError::Start {
            addr,
            detail: format!("{e:?}"),
        })?;
        let listen: Arc<dyn Fn() -> ListenFuture + Send + Sync> = Arc::new(move || {
            let broker = broker.clone();
            Box::pin(async move {
                if let Err(e) = broker.listen(tokio::time::Instant::now()).await {
                    tracing::error!(error = ?e, "embedded broker stopped");
                }
            })
        });
        let embedded = Self {
            addr,
            listen,
            task: Mutex::new(None),
        };
        embedded.resume().await?;
        Ok(embedded)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and drops every connection; the stored topics and records stay for [`Self::resume`].
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().expect("broker task lock poisoned").take() {
            task.abort();
        }
    }

    /// Listens again on the same address, after [`Self::stop`].
    pub async fn resume(&self) -> Result<(), BrokerError> {
        self.stop();
        // Bind once ourselves: tansu reports a failed bind only in its log, and the caller deserves an error.
        let probe = bind_with_retry(self.addr).await?;
        drop(probe);
        let task = tokio::spawn((self.listen)());
        if let Err(e) = wait_listening(self.addr, &task).await {
            task.abort();
            return Err(e);
        }
        *self.task.lock().expect("broker task lock poisoned") = Some(task);
        tracing::info!(addr = %self.addr, "embedded kafka broker listening");
        Ok(())
    }
}

/// Waits until `addr` accepts connections while `listening` (the broker's task) runs, or says why not.
///
/// tansu binds first thing, and its listening ends at once when the bind fails. A connection that succeeds proves
/// only that something listens on the address: another process may have taken the port after the caller's probe
/// let it go, so the broker must also still be running a moment after.
async fn wait_listening(addr: SocketAddr, listening: &JoinHandle<()>) -> Result<(), BrokerError> {
    let taken = || BrokerError::Bind {
        addr,
        source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "taken as the broker started"),
    };
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if listening.is_finished() {
            return Err(taken());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BrokerError::Start {
                addr,
                detail: "not accepting connections".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(BIND_SETTLE).await;
    if listening.is_finished() {
        return Err(taken());
    }
    Ok(())
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The broker keeps its log in this process's memory, which grows with every record. With transparent huge pages
/// (which mimalloc asks for) each step of that growth zeroes 2 MiB at once inside some produce request: under a
/// steady load, bursts of 2 to 5 ms of CPU every 0.1 to 0.3 s, which became the p99 of every request waiting on
/// the broker (bench/README.md, point 27). Small pages spread the same zeroing evenly. The setting is the whole
/// process's; luka's own serving measured the same with and without huge pages.
fn keep_off_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(error = %e, "embedded broker: cannot turn transparent huge pages off; latency may have spikes");
    }
}

/// A just-aborted broker may hold its port for a moment while its task unwinds.
async fn bind_with_retry(addr: SocketAddr) -> Result<std::net::TcpListener, BrokerError> {
    let mut attempts = 0;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) if attempts < 50 && e.kind() == std::io::ErrorKind::AddrInUse => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(source) => return Err(BrokerError::Bind { addr, source }),
        }
    }
}

/// Starts a broker for every cluster configured with `embedded = true`.
pub async fn start_configured(config: &crate::config::Config) -> Result<Vec<EmbeddedBroker>, BrokerError> {
    let mut brokers = Vec::new();
    for cluster in config.clusters.values() {
        if let Some(addr) = cluster.embedded {
            brokers.push(EmbeddedBroker::start(addr).await?);
        }
    }
    Ok(brokers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker whose listening ended (its bind failed) is not listening, though its address accepts connections
    /// (another process took the port after the probe let it go); one still running is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_is_listening_only_while_its_listening_runs() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        let failed = tokio::spawn(async {});
        let answer = wait_listening(addr, &failed).await;
        assert!(matches!(answer, Err(BrokerError::Bind { .. })), "{answer:?}");
        let running = tokio::spawn(std::future::pending::<()>());
        assert!(wait_listening(addr, &running).await.is_ok());
        running.abort();
    }
}
