//! TLS for edge listeners: the rustls server configuration built from certificate and key
//! files, SNI certificate selection, client certificate verification with a chain depth limit,
//! a reloadable handle that swaps the configuration on SIGHUP, and the listener's handshake,
//! bounded in time and classified by how it ended ([`HandshakeOutcome`]), and the verified
//! path of a client certificate ([`ServerTls::peer_chain`]).
//!
//! [`server_config`] reads every file named in [`TlsSettings`] and either returns a complete
//! [`ServerTls`] or a [`TlsError`] that names the file (or setting) and says what is wrong;
//! nothing is half-built. Connections that are already established keep the configuration
//! they started with; [`Reloadable`] only changes what new handshakes use.

mod check;
mod depth;
mod files;
mod outcome;
mod path;
mod sni;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub use check::check_files;
pub use depth::{ChainDepthVerifier, ChainTooDeep};
pub use outcome::HandshakeOutcome;
pub use path::{PathError, Paths, TrustPath, VerifiedChain};
pub use sni::SniResolver;

use crate::config::tls::{ClientAuth, TlsSettings};

/// Why a TLS configuration could not be built. Every variant names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: not PEM ({reason})", path.display())]
    NotPem { path: PathBuf, reason: String },
    #[error("{}: no certificate in it (expected a PEM `CERTIFICATE` section)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: certificate {index} is not valid X.509: {reason}", path.display())]
    BadCertificate {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error(
        "{}: no private key in it (expected PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("{}: unusable private key: {error}", path.display())]
    BadKey { path: PathBuf, error: rustls::Error },
    #[error("{}: key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: CA bundle is empty (no PEM `CERTIFICATE` section)", path.display())]
    EmptyCaBundle { path: PathBuf },
    #[error("{}: CA certificate {index} is not usable as a trust anchor: {error}", path.display())]
    BadCa {
        path: PathBuf,
        index: usize,
        error: rustls::Error,
    },
    #[error("client_auth = \"{}\" needs client_ca (a PEM CA bundle)", mode.as_str())]
    ClientCaMissing { mode: ClientAuth },
    #[error("certificates: at least one server certificate is needed")]
    NoCertificates,
    #[error("alpn: protocol names must be 1 to 255 bytes, got {len}")]
    BadAlpn { len: usize },
    #[error("{}: cannot verify clients with this CA bundle: {error}", path.display())]
    Verifier {
        path: PathBuf,
        error: rustls::server::VerifierBuilderError,
    },
    #[error("TLS configuration: {error}")]
    Rustls { error: rustls::Error },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's rustls configuration and, when it verifies client certificates, the path
/// building that goes with it: the two are made together and replaced together, so a
/// connection's path is always built against the roots its handshake was verified with.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    paths: Option<Arc<Paths>>,
}

impl ServerTls {
    /// The rustls configuration, for a handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The client certificate a handshake made with [`ServerTls::config`] established:
    /// `None` when the client presented none, else the leaf and the path verification built
    /// (never a certificate the client sent that the path does not use).
    ///
    /// rustls only completes a handshake whose client chain the verifier accepted; the path is
    /// the one that verification remembered, or, when it is gone (a resumed session, or many
    /// handshakes since), built again now, which can fail (`Some(Err)`).
    pub fn peer_chain(&self, conn: &ServerConnection) -> Option<Result<VerifiedChain, PathError>> {
        let (leaf, rest) = conn.peer_certificates()?.split_first()?;
        let Some(paths) = &self.paths else {
            return Some(Err(PathError::NotVerifying));
        };
        Some(paths.path(leaf, rest).map(|path| VerifiedChain {
            leaf: leaf.clone(),
            path,
        }))
    }

    /// The path building, when the listener verifies client certificates.
    pub fn paths(&self) -> Option<&Arc<Paths>> {
        self.paths.as_ref()
    }
}

/// Reads every file and builds the server config; every error names the file and says what
/// is wrong. Nothing is half-built: `Err` means nothing changed.
pub fn server_config(s: &TlsSettings) -> Result<ServerTls, TlsError> {
    if s.certificates.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    if let Some(p) = s.alpn.iter().find(|p| p.is_empty() || p.len() > 255) {
        return Err(TlsError::BadAlpn { len: p.len() });
    }
    let provider = provider();
    let keys = s
        .certificates
        .iter()
        .map(|c| files::certified_key(&c.cert, &c.key))
        .collect::<Result<Vec<_>, _>>()?;
    let resolver = SniResolver::new(keys);

    let roots = s.client_ca.as_deref().map(files::ca_bundle).transpose()?;
    let (verifier, paths) = client_verifier(s, roots, &provider)?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Rustls { error })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols.clone_from(&s.alpn);
    Ok(ServerTls {
        config: Arc::new(config),
        paths,
    })
}

/// The client certificate verifier, and its path building when it verifies.
type Verifier = (Arc<dyn ClientCertVerifier>, Option<Arc<Paths>>);

fn client_verifier(
    s: &TlsSettings,
    roots: Option<(RootCertStore, Vec<CertificateDer<'static>>)>,
    provider: &Arc<CryptoProvider>,
) -> Result<Verifier, TlsError> {
    if s.client_auth == ClientAuth::None {
        return Ok((WebPkiClientVerifier::no_client_auth(), None));
    }
    let Some((roots, anchors)) = roots else {
        return Err(TlsError::ClientCaMissing {
            mode: s.client_auth,
        });
    };
    let roots = Arc::new(roots);
    let paths = Arc::new(Paths::new(
        Arc::clone(&roots),
        anchors,
        provider.signature_verification_algorithms,
    ));
    // No CRLs: `Paths` verifies with exactly what this builder is given.
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if s.client_auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    let inner = builder.build().map_err(|error| TlsError::Verifier {
        path: s.client_ca.clone().unwrap_or_default(),
        error,
    })?;
    let verifier = ChainDepthVerifier::new(inner, s.max_chain_depth, Arc::clone(&paths));
    Ok((Arc::new(verifier), Some(paths)))
}

/// How long a client has to complete its TLS handshake once the listener starts it (after
/// any PROXY header): a client that stalls must not hold a connection and a task forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a server handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed ({outcome}): {error}")]
    Failed {
        outcome: HandshakeOutcome,
        error: std::io::Error,
    },
}

impl HandshakeError {
    /// The class `/metrics` counts the failure under.
    pub fn outcome(&self) -> HandshakeOutcome {
        match self {
            HandshakeError::Timeout(_) => HandshakeOutcome::Timeout,
            HandshakeError::Failed { outcome, .. } => *outcome,
        }
    }
}

/// Completes a server handshake on `io` with `config` within `limit`.
pub async fn handshake<IO>(
    config: Arc<ServerConfig>,
    io: IO,
    limit: Duration,
) -> Result<TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, TlsAcceptor::from(config).accept(io)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(HandshakeError::Failed {
            outcome: HandshakeOutcome::of_io(&error),
            error,
        }),
        Err(_) => Err(HandshakeError::Timeout(limit)),
    }
}

/// The current server configuration of a listener, replaced as a whole on reload.
///
/// Each handshake takes the configuration current when it starts; connections keep theirs,
/// so a reload never drops a connection.
#[derive(Debug)]
pub struct Reloadable {
    current: RwLock<ServerTls>,
}

impl Reloadable {
    pub fn new(config: ServerTls) -> Self {
        Reloadable {
            current: RwLock::new(config),
        }
    }

    /// The configuration new handshakes use.
    pub fn get(&self) -> ServerTls {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `new` the configuration for handshakes that start from now on.
    pub fn replace(&self, new: ServerTls) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = new;
    }

    /// Re-reads every file of `settings` and swaps the configuration in only if all of it is
    /// good; on `Err` the previous configuration stays in use.
    pub fn reload(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        self.replace(server_config(settings)?);
        Ok(())
    }

    /// Completes a server handshake on `io` within `limit` with the configuration current
    /// now (a reload from here on applies to the next connection), and returns that
    /// configuration too, for [`ServerTls::peer_chain`]. This is how a listener accepts.
    pub async fn handshake<IO>(
        &self,
        io: IO,
        limit: Duration,
    ) -> Result<(TlsStream<IO>, ServerTls), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = self.get();
        let stream = handshake(tls.config(), io, limit).await?;
        Ok((stream, tls))
    }
}
