//! Builds an rskafka client from a checked [`Cluster`] config: TLS, SASL and a retry deadline.

use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};

use super::KafkaError;
use crate::config::{Cluster, SaslMechanism, TlsConfig};

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

/// Connects and fetches metadata once; fails within the cluster's produce timeout.
pub(crate) async fn connect(cluster: &Cluster) -> Result<Client, KafkaError> {
    let mut builder = ClientBuilder::new(cluster.bootstrap.clone())
        .client_id(cluster.client_id.as_str())
        .backoff_config(backoff(cluster.produce_timeout));
    if let Some(tls) = &cluster.tls {
        builder = builder.tls_config(Arc::new(tls_client_config(tls).map_err(|detail| {
            KafkaError::Setup {
                cluster: cluster.name.clone(),
                detail,
            }
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
    let attempt = tokio::time::timeout(cluster.produce_timeout, builder.build()).await;
    match attempt {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(KafkaError::from_client(&cluster.name, "", -1, &e)),
        Err(_) => Err(timed_out(cluster).await),
    }
}

fn tls_client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in read_pem_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // Explicit provider: several rustls providers may be compiled in, and the process default is not ours to set.
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_pem_certs(cert)?;
            let mut reader = BufReader::new(std::fs::File::open(key).map_err(|e| format!("{}: {e}", key.display()))?);
            let key_der = rustls_pemfile::private_key(&mut reader)
                .map_err(|e| format!("{}: {e}", key.display()))?
                .ok_or_else(|| format!("{} holds no private key", key.display()))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| e.to_string())
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn read_pem_certs(path: &std::path::Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// How long a reachability probe waits for a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Whether any bootstrap broker accepts a TCP connection: tells "the cluster is down" (503) from "the cluster is
/// slow" (504) when a produce runs out of time, since rskafka's retries hide which one happened.
pub(crate) async fn any_broker_accepts(bootstrap: &[String]) -> bool {
    for broker in bootstrap {
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(broker.as_str())).await {
            return true;
        }
    }
    false
}

/// The error for an operation on `cluster` that ran out of time.
pub(crate) async fn timed_out(cluster: &Cluster) -> KafkaError {
    if any_broker_accepts(&cluster.bootstrap).await {
        KafkaError::Timeout {
            cluster: cluster.name.clone(),
            limit: Some(cluster.produce_timeout),
        }
    } else {
        KafkaError::Unavailable {
            cluster: cluster.name.clone(),
            detail: "no bootstrap broker accepts connections".into(),
        }
    }
}
