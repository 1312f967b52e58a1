//! A client certificate verifier that limits how many intermediates a client may present and
//! remembers the path each accepted chain was verified by (see [`super::path`]).

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};

use super::path::Paths;

/// Wraps a client certificate verifier (rustls' `WebPkiClientVerifier`) and refuses a
/// presented chain that is deeper than allowed, before the inner verifier builds a path.
///
/// "Depth" counts the intermediate certificates the client sent after its leaf, not the
/// leaf and not the trust anchor: a certificate the client sends that is byte-for-byte one
/// of the `client_ca` certificates is not counted (some clients append the root). So with
/// `max_chain_depth = 0` only leaves issued directly by a `client_ca` certificate are
/// accepted; with 1, leaves under one intermediate; and so on. Everything else (signatures,
/// validity, issuer, key usage) is decided as the inner verifier decides it.
///
/// A chain within the depth is verified once, through [`Paths::verify`], which makes exactly
/// the webpki call the inner `WebPkiClientVerifier` makes (the listener uses no CRLs), so the
/// path webpki built can be remembered for the connection's headers. Only when that fails is
/// the inner verifier asked, to refuse with rustls' own error: the handshake outcome metrics
/// classify those errors, and a refused chain costs the second verification, an accepted one
/// does not.
pub struct ChainDepthVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    max_depth: u8,
    paths: Arc<Paths>,
}

impl ChainDepthVerifier {
    /// `inner` must be rustls' `WebPkiClientVerifier` for the roots and crypto provider `paths`
    /// was made with, without CRLs.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, max_depth: u8, paths: Arc<Paths>) -> Self {
        ChainDepthVerifier {
            inner,
            max_depth,
            paths,
        }
    }

    /// The depth of a presented chain, as described on the type.
    pub fn depth(&self, intermediates: &[CertificateDer<'_>]) -> usize {
        intermediates
            .iter()
            .filter(|c| !self.paths.bundle().iter().any(|a| a.as_ref() == c.as_ref()))
            .count()
    }
}

impl fmt::Debug for ChainDepthVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainDepthVerifier")
            .field("inner", &self.inner)
            .field("max_depth", &self.max_depth)
            .field("paths", &self.paths)
            .finish()
    }
}

/// The error a too-deep chain is refused with (inside `CertificateError::Other`; the client
/// gets a `certificate_unknown` alert). rustls prints it with `Debug` inside its own message,
/// so `Debug` shows the same text as `Display`.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "client certificate chain too deep: {presented} intermediate certificates, max_chain_depth is {max}"
)]
pub struct ChainTooDeep {
    pub presented: usize,
    pub max: u8,
}

impl fmt::Debug for ChainTooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl ClientCertVerifier for ChainDepthVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = self.depth(intermediates);
        if presented > usize::from(self.max_depth) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(ChainTooDeep {
                    presented,
                    max: self.max_depth,
                })),
            )));
        }
        match self.paths.verify(end_entity, intermediates, now) {
            Ok(path) => {
                self.paths.remember(end_entity, intermediates, path);
                Ok(ClientCertVerified::assertion())
            }
            // Same call, same answer: this only turns the refusal into rustls' error.
            Err(_) => self
                .inner
                .verify_client_cert(end_entity, intermediates, now),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}
