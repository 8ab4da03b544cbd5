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

/// Connects and fetches metadata once. rskafka's retries end at the produce timeout; the caller bounds the whole
/// attempt with the cluster's outage memory ([`super::reachability::Reachability::guard`]).
pub(crate) async fn connect(cluster: &Cluster) -> Result<Client, KafkaError> {
    let mut builder = ClientBuilder::new(cluster.bootstrap.clone())
        .client_id(cluster.client_id.as_str())
        .backoff_config(backoff(cluster.produce_timeout))
        .connect_timeout(cluster.connect_timeout);
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
    builder
        .build()
        .await
        .map_err(|e| KafkaError::from_client(&cluster.name, "", -1, &e))
}

fn tls_client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = read_pem_certs(path)?;
            // A file of no PEM certificate (a DER file, or the key) would trust nothing, and every handshake would
            // fail saying the broker's certificate is not signed by a trusted CA.
            if certs.is_empty() {
                return Err(format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----) to trust",
                    path.display()
                ));
            }
            for cert in certs {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `ca_file` of no PEM certificate (here a key) is refused saying so, not taken as trusting nothing.
    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("luka-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let tls = TlsConfig {
            ca_file: Some(path.clone()),
            ..TlsConfig::default()
        };
        let error = tls_client_config(&tls).expect_err("refused");
        assert!(error.contains("holds no PEM certificate"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
