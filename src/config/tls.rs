//! A cluster's `[tls]` files made into a rustls client configuration: at startup, so `luka check` and `serve` name a
//! file that holds no certificate or key, and again when the cluster's client is made (at its first use), for the
//! client's whole life: renewed files are used after a restart.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use super::TlsConfig;

impl TlsConfig {
    /// The client configuration these files give (with their paths already resolved), or what is wrong with them.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let certs = read_pem_certs(path)?;
                // A file of no PEM certificate (a DER file, or the key) would trust nothing, and every handshake
                // would fail saying the broker's certificate is not signed by a trusted CA.
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
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_pem_certs(cert)?;
                if chain.is_empty() {
                    return Err(format!(
                        "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----) to present",
                        cert.display()
                    ));
                }
                let file = std::fs::File::open(key).map_err(|e| format!("{}: {e}", key.display()))?;
                let key_der = rustls_pemfile::private_key(&mut BufReader::new(file))
                    .map_err(|e| format!("{}: {e}", key.display()))?
                    .ok_or_else(|| format!("{} holds no PEM private key", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}
