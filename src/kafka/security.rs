//! Why a broker connection failed its TLS or SASL setup, read off rskafka's connection error: a cause that names TLS
//! or SASL in words a client may see, and what to change in `config.toml`, for the log.

use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::{ConnectionError, SaslError, SetupStage};

/// A TLS or SASL setting that does not match the broker's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityCause {
    /// The broker's certificate is not signed by a CA luka trusts.
    UntrustedCertificate,
    /// The broker's certificate does not name the host luka connected to.
    WrongHostName,
    /// The TLS handshake failed otherwise (a plaintext listener closes it at once).
    TlsHandshake,
    /// The TLS handshake did not finish within `connect_timeout_ms`.
    TlsStalled,
    /// The broker closed a plaintext connection at its first request, as a TLS listener does.
    TlsRequired,
    /// The broker refused luka's SASL credentials.
    SaslRefused,
    /// The listener does not enable luka's SASL mechanism.
    SaslMechanism,
    /// luka tried SASL on a listener without it.
    SaslNotUsed,
    /// The broker closed the connection before authentication, as a SASL listener does with a client without it.
    SaslRequired,
}

impl SecurityCause {
    /// Reads the cause off a connection failure, with the detail worth logging; `None` if it was not TLS or SASL.
    pub fn of(error: &ClientError) -> Option<(Self, String)> {
        let ClientError::Connection(connection) = error else {
            return None;
        };
        let cause = match connection {
            ConnectionError::Transport { error, .. } => tls_failure(error)?,
            ConnectionError::SetupTimedOut {
                stage: SetupStage::Tls, ..
            } => Self::TlsStalled,
            ConnectionError::ClosedAtFirstRequest { tls: false, .. } => Self::TlsRequired,
            ConnectionError::ClosedBeforeAuthentication { .. } => Self::SaslRequired,
            ConnectionError::SaslFailed(sasl) => sasl_failure(sasl),
            _ => return None,
        };
        Some((cause, connection.to_string()))
    }

    /// TLS or SASL, for metrics labels.
    pub fn kind(self) -> &'static str {
        match self {
            Self::UntrustedCertificate
            | Self::WrongHostName
            | Self::TlsHandshake
            | Self::TlsStalled
            | Self::TlsRequired => "tls",
            Self::SaslRefused | Self::SaslMechanism | Self::SaslNotUsed | Self::SaslRequired => "authentication",
        }
    }

    /// What happened, in words a client may see (no addresses, no library errors).
    pub fn summary(self) -> &'static str {
        match self {
            Self::UntrustedCertificate => "TLS: its broker's certificate is not signed by a CA luka trusts",
            Self::WrongHostName => "TLS: its broker's certificate does not name the host luka connected to",
            Self::TlsHandshake => "the TLS handshake with its broker failed",
            Self::TlsStalled => "the TLS handshake with its broker did not finish in time",
            Self::TlsRequired => {
                "its broker closed the connection at the first request, as a TLS listener does with a plaintext client"
            }
            Self::SaslRefused => "it refused luka's SASL authentication",
            Self::SaslMechanism => "its listener does not enable luka's SASL mechanism",
            Self::SaslNotUsed => "luka tried SASL authentication on a listener that does not use SASL",
            Self::SaslRequired => {
                "its broker closed the connection before authentication, as a SASL listener does with a client that \
                 sends no credentials"
            }
        }
    }

    /// What to change, for the log line of cluster `cluster`.
    pub fn fix(self, cluster: &str) -> String {
        match self {
            Self::UntrustedCertificate => {
                format!(
                    "set [clusters.{cluster}.tls] ca_file to the PEM of the CA that signed the broker's certificate"
                )
            }
            Self::WrongHostName => format!(
                "list the brokers in [clusters.{cluster}] bootstrap by a host name their certificate names, or reissue \
                 the certificate with that name"
            ),
            Self::TlsHandshake => format!(
                "if the listener is plaintext (PLAINTEXT or SASL_PLAINTEXT), remove [clusters.{cluster}.tls]; else \
                 check its certificate against [clusters.{cluster}.tls]"
            ),
            Self::TlsStalled => format!(
                "check that the port is a TLS listener (SSL or SASL_SSL): a plaintext listener waits for a request \
                 instead of answering the handshake; connect_timeout_ms of [clusters.{cluster}] bounds the wait"
            ),
            Self::TlsRequired => {
                format!(
                    "if the listener is SSL or SASL_SSL, add [clusters.{cluster}.tls] (with ca_file for a private CA)"
                )
            }
            Self::SaslRefused => format!("check username and password in [clusters.{cluster}.sasl]"),
            Self::SaslMechanism => format!(
                "set [clusters.{cluster}.sasl] mechanism to one the listener enables (PLAIN, SCRAM-SHA-256 or \
                 SCRAM-SHA-512; see the broker's sasl.enabled.mechanisms)"
            ),
            Self::SaslNotUsed => {
                format!("remove [clusters.{cluster}.sasl], or list a SASL_PLAINTEXT or SASL_SSL listener in bootstrap")
            }
            Self::SaslRequired => {
                format!("add [clusters.{cluster}.sasl] with the mechanism and credentials the listener takes")
            }
        }
    }
}

/// A TLS handshake failure: rustls reports its errors as invalid data (the certificate problems among them), and a
/// plaintext listener answering a ClientHello closes the connection mid-handshake.
fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<SecurityCause> {
    let io = error.source()?.downcast_ref::<std::io::Error>()?;
    if !matches!(
        io.kind(),
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
    ) {
        return None;
    }
    let text = io.to_string();
    Some(if text.contains("UnknownIssuer") {
        SecurityCause::UntrustedCertificate
    } else if text.contains("not valid for name") || text.contains("NotValidForName") {
        SecurityCause::WrongHostName
    } else {
        SecurityCause::TlsHandshake
    })
}

fn sasl_failure(error: &SaslError) -> SecurityCause {
    match error {
        SaslError::UnsupportedSaslMechanism | SaslError::ApiError(ProtocolError::UnsupportedSaslMechanism) => {
            SecurityCause::SaslMechanism
        }
        SaslError::ApiError(ProtocolError::IllegalSaslState) => SecurityCause::SaslNotUsed,
        _ => SecurityCause::SaslRefused,
    }
}
