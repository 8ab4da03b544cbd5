//! Builds an rskafka client from a checked [`Cluster`] config: TLS, SASL and a retry deadline.

use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};

use super::KafkaError;
use crate::config::{Cluster, SaslMechanism};

/// Reconnect attempts back off up to this: a broker that comes back is found again within a second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub(crate) fn backoff(deadline: Duration) -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: MAX_BACKOFF,
        base: 2.,
        deadline: Some(deadline),
    }
}

/// Connects and fetches metadata once. rskafka's retries end at the produce timeout; the caller bounds the whole
/// attempt with the cluster's outage memory ([`super::reachability::Reachability::guard`]).
pub(crate) async fn connect(cluster: &Cluster) -> Result<Client, KafkaError> {
    let mut builder = ClientBuilder::new(cluster.bootstrap.clone())
        .client_id(cluster.client_id.as_str())
        .backoff_config(backoff(cluster.produce_timeout))
        .connect_timeout(cluster.connect_timeout);
    if let Some(tls) = &cluster.tls {
        builder = builder.tls_config(Arc::new(tls.client_config().map_err(|detail| KafkaError::Setup {
            cluster: cluster.name.clone(),
            detail,
        })?));
    }
    if let Some(sasl) = &cluster.sasl {
        let credentials = Credentials::new(sasl.username.clone(), sasl.password.clone());
        builder = builder.sasl_config(match sasl.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        });
    }
    builder
        .build()
        .await
        .map_err(|e| KafkaError::from_client(&cluster.name, "", -1, &e))
}
