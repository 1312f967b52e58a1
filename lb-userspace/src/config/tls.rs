//! `[edge.tls]`: the certificate files, client authentication and chain depth of a TLS edge
//! listener, as settings. The files are read when the listener starts or reloads
//! (`edge::tls::server_config`), so `sluice check` can tell a broken file from a broken text.

use std::path::PathBuf;

/// Whether the listener asks for a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is requested (the `CertificateRequest` message is not sent).
    #[default]
    None,
    /// A certificate is requested; a client without one is let in, a client with one must
    /// present a chain that verifies against `client_ca`.
    Optional,
    /// A certificate that verifies against `client_ca` is required for the handshake.
    Required,
}

impl ClientAuth {
    /// The configuration spelling (`none`, `optional`, `required`).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

/// One server certificate: its chain and private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first, then the intermediates the server presents.
    pub cert: PathBuf,
    /// PEM private key of the leaf: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or
    /// SEC1 (`EC PRIVATE KEY`).
    pub key: PathBuf,
}

/// The default for [`TlsSettings::max_chain_depth`], and `max_chain_depth` when an
/// `[edge.tls]` leaves it out (one value: they once said 4 and 3).
pub const DEFAULT_MAX_CHAIN_DEPTH: u8 = 3;

/// The TLS part of an edge listener's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Server certificates, chosen by SNI (see `edge::tls::SniResolver`); the first one is the
    /// default for clients that send no SNI name or one that no certificate covers.
    pub certificates: Vec<CertFiles>,
    /// Whether a client certificate is requested or required.
    pub client_auth: ClientAuth,
    /// PEM bundle of the CAs client certificates must chain to. Needed unless `client_auth`
    /// is [`ClientAuth::None`]; read and checked whenever it is set.
    pub client_ca: Option<PathBuf>,
    /// The most intermediate certificates a client may present; see `edge::tls::ChainDepthVerifier`
    /// for exactly what is counted.
    pub max_chain_depth: u8,
    /// ALPN protocols in the server's order of preference.
    pub alpn: Vec<Vec<u8>>,
}

impl TlsSettings {
    /// Settings for these certificates with no client authentication, the default chain
    /// depth and the default ALPN list.
    pub fn new(certificates: Vec<CertFiles>) -> Self {
        TlsSettings {
            certificates,
            client_auth: ClientAuth::None,
            client_ca: None,
            max_chain_depth: DEFAULT_MAX_CHAIN_DEPTH,
            alpn: default_alpn(),
        }
    }
}

/// `h2`, then `http/1.1`.
pub fn default_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}
