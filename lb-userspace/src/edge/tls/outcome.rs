//! How a server handshake ended, in the classes `/metrics` reports.
//!
//! The client verifier's own error reaches the handshake's result unchanged: rustls returns
//! what [`ChainDepthVerifier`](super::ChainDepthVerifier) (or the `WebPki` verifier inside it)
//! refused with, and tokio-rustls carries that `rustls::Error` inside its `io::Error`. So the
//! class is read from those types, never from message text, and a verifier shared by every
//! connection needs no side channel to tell one connection's failure from another's.

use std::io;

use rustls::{CertificateError, Error};

use super::ChainTooDeep;

/// One class of handshake outcome (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeOutcome {
    /// The handshake completed.
    Ok,
    /// `client_auth = "required"` and the client sent no certificate.
    NoClientCert,
    /// The client certificate (or one in its chain) has expired.
    CertExpired,
    /// The client certificate (or one in its chain) is not valid yet.
    CertNotYetValid,
    /// The client chain does not lead to a `client_ca` certificate.
    UnknownCa,
    /// The client presented more intermediates than `max_chain_depth`.
    ChainTooDeep,
    /// Any other refused client certificate (bad signature, wrong key usage, malformed, ...).
    BadCert,
    /// The client aborted with an alert, usually because it does not trust the server's
    /// certificate.
    ClientAlert,
    /// The client broke the protocol or has nothing in common with the server (versions,
    /// ciphers, ALPN).
    Protocol,
    /// The connection closed or was reset before the handshake completed.
    Eof,
    /// The handshake did not complete in time.
    Timeout,
    /// Another I/O error.
    Io,
}

impl HandshakeOutcome {
    /// Every outcome, in the order of the counters that hold them.
    pub const ALL: [HandshakeOutcome; 12] = [
        HandshakeOutcome::Ok,
        HandshakeOutcome::NoClientCert,
        HandshakeOutcome::CertExpired,
        HandshakeOutcome::CertNotYetValid,
        HandshakeOutcome::UnknownCa,
        HandshakeOutcome::ChainTooDeep,
        HandshakeOutcome::BadCert,
        HandshakeOutcome::ClientAlert,
        HandshakeOutcome::Protocol,
        HandshakeOutcome::Eof,
        HandshakeOutcome::Timeout,
        HandshakeOutcome::Io,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeOutcome::Ok => "ok",
            HandshakeOutcome::NoClientCert => "no_client_cert",
            HandshakeOutcome::CertExpired => "cert_expired",
            HandshakeOutcome::CertNotYetValid => "cert_not_yet_valid",
            HandshakeOutcome::UnknownCa => "unknown_ca",
            HandshakeOutcome::ChainTooDeep => "chain_too_deep",
            HandshakeOutcome::BadCert => "bad_cert",
            HandshakeOutcome::ClientAlert => "client_alert",
            HandshakeOutcome::Protocol => "protocol",
            HandshakeOutcome::Eof => "eof",
            HandshakeOutcome::Timeout => "timeout",
            HandshakeOutcome::Io => "io",
        }
    }

    /// The class of a failed handshake's error, as tokio-rustls returns it.
    pub fn of_io(error: &io::Error) -> HandshakeOutcome {
        if let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
            return HandshakeOutcome::of_rustls(tls);
        }
        match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => HandshakeOutcome::Eof,
            io::ErrorKind::TimedOut => HandshakeOutcome::Timeout,
            _ => HandshakeOutcome::Io,
        }
    }

    /// The class of the error rustls failed a server handshake with.
    pub fn of_rustls(error: &Error) -> HandshakeOutcome {
        match error {
            Error::NoCertificatesPresented => HandshakeOutcome::NoClientCert,
            Error::InvalidCertificate(e) => match e {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    HandshakeOutcome::CertExpired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    HandshakeOutcome::CertNotYetValid
                }
                CertificateError::UnknownIssuer => HandshakeOutcome::UnknownCa,
                CertificateError::Other(other)
                    if other.0.downcast_ref::<ChainTooDeep>().is_some() =>
                {
                    HandshakeOutcome::ChainTooDeep
                }
                _ => HandshakeOutcome::BadCert,
            },
            Error::AlertReceived(_) => HandshakeOutcome::ClientAlert,
            _ => HandshakeOutcome::Protocol,
        }
    }
}

impl std::fmt::Display for HandshakeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
