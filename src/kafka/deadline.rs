//! Deadlines for Kafka operations: an operation and its time limit in, its result or a classified timeout out.
//!
//! rskafka's retries hide why an operation ran out of time, so when a limit passes the bootstrap brokers are probed
//! with a TCP connect: nobody accepts means the cluster is down (503), someone accepts means it is slow (504).

use std::future::Future;
use std::time::Duration;

use super::KafkaError;
use crate::config::Cluster;

/// How long a reachability probe waits for a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Runs `work` for at most `limit`; past it, the error says whether `cluster` is unreachable or only slow.
pub(crate) async fn within<T>(
    cluster: &Cluster,
    limit: Duration,
    work: impl Future<Output = Result<T, KafkaError>>,
) -> Result<T, KafkaError> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(ran_out(cluster, limit).await),
    }
}

/// The error for an operation on `cluster` that ran out of `limit`: unavailable if no broker accepts a connection.
pub(crate) async fn ran_out(cluster: &Cluster, limit: Duration) -> KafkaError {
    if any_broker_accepts(&cluster.bootstrap).await {
        KafkaError::Timeout {
            cluster: cluster.name.clone(),
            limit: Some(limit),
        }
    } else {
        KafkaError::Unavailable {
            cluster: cluster.name.clone(),
            detail: "no bootstrap broker accepts connections".into(),
        }
    }
}

pub(crate) async fn any_broker_accepts(bootstrap: &[String]) -> bool {
    for broker in bootstrap {
        let connect = tokio::net::TcpStream::connect(broker.as_str());
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            return true;
        }
    }
    false
}
