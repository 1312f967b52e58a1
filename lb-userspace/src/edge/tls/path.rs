//! The certification path a client certificate was verified by, so that the backend headers
//! carry exactly the certificates verification used (issue 12, item 3) rather than whatever
//! the client sent after its leaf.
//!
//! [`Paths`] verifies a presented chain the way rustls' `WebPkiClientVerifier` does (same
//! webpki call, same signature algorithms, roots and client-auth usage, no CRLs) and keeps the
//! path webpki built: the intermediates it used, in order from the leaf towards the anchor, and
//! the CA bundle certificate of the trust anchor. The verifier wrapper
//! ([`super::ChainDepthVerifier`]) verifies once per handshake through it and remembers the
//! path in a small bounded cache keyed by a hash of the presented chain; the connection looks
//! the path up after the handshake. A miss (a resumed session, whose chain rustls does not
//! verify again, or an entry evicted under load) builds the path afresh, now.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use rustls::RootCertStore;
use sha2::{Digest as _, Sha256};

/// How many presented chains' paths are remembered. A path is only needed between the
/// handshake's verification and the end of the handshake, so this only has to cover the
/// handshakes in flight at once; beyond it the oldest entries go (and a connection that
/// finds its entry gone builds the path again).
pub const CACHE_ENTRIES: usize = 1024;

/// The part of a verified chain beyond the leaf, as verification built it.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustPath {
    /// The intermediates the path goes through, in order: the leaf's issuer first, the one the
    /// anchor issued last. Never a certificate the path does not use, never one twice.
    pub intermediates: Vec<CertificateDer<'static>>,
    /// The `client_ca` certificate of the trust anchor the path ends at.
    pub anchor: CertificateDer<'static>,
}

impl fmt::Debug for TrustPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustPath")
            .field("intermediates", &self.intermediates.len())
            .finish_non_exhaustive()
    }
}

/// A client certificate as verified: the leaf and its [`TrustPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChain {
    pub leaf: CertificateDer<'static>,
    pub path: Arc<TrustPath>,
}

/// Why no path could be given for a connection's client certificate.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Building the path again after the handshake failed (e.g. a resumed session whose
    /// certificate expired since it was first verified).
    #[error("client certificate path cannot be built now: {0}")]
    Unverifiable(webpki::Error),
    /// webpki ended the path at an anchor none of the `client_ca` certificates makes. Cannot
    /// happen: every anchor comes from one of them.
    #[error("client certificate path ends at a trust anchor that is not in client_ca")]
    UnknownAnchor,
    /// The listener does not verify client certificates, yet one was presented.
    #[error("client certificate presented to a listener that does not verify them")]
    NotVerifying,
}

/// Path building for one server configuration: its roots, and the paths of recent handshakes.
pub struct Paths {
    roots: Arc<RootCertStore>,
    /// The `client_ca` certificates, as read.
    bundle: Vec<CertificateDer<'static>>,
    /// For each of `roots.roots`, the index in `bundle` of the certificate it was made from.
    anchor_of: Vec<Option<usize>>,
    algs: WebPkiSupportedAlgorithms,
    cache: Mutex<Cache>,
}

impl Paths {
    /// `roots` are the anchors made from `bundle` (the `client_ca` certificates); `algs` the
    /// crypto provider's signature verification algorithms, as rustls' verifier uses them.
    pub fn new(
        roots: Arc<RootCertStore>,
        bundle: Vec<CertificateDer<'static>>,
        algs: WebPkiSupportedAlgorithms,
    ) -> Self {
        let made: Vec<Option<TrustAnchor<'_>>> = bundle
            .iter()
            .map(|der| webpki::anchor_from_trusted_cert(der).ok())
            .collect();
        let anchor_of = roots
            .roots
            .iter()
            .map(|root| {
                made.iter().position(|m| {
                    m.as_ref().is_some_and(|m| {
                        m.subject.as_ref() == root.subject.as_ref()
                            && m.subject_public_key_info.as_ref()
                                == root.subject_public_key_info.as_ref()
                    })
                })
            })
            .collect();
        Paths {
            roots,
            bundle,
            anchor_of,
            algs,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The `client_ca` certificates.
    pub fn bundle(&self) -> &[CertificateDer<'static>] {
        &self.bundle
    }

    /// Verifies `end_entity` with the `intermediates` the client presented, exactly as rustls'
    /// `WebPkiClientVerifier` (without CRLs) does, and returns the path webpki built.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Arc<TrustPath>, PathError> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(PathError::Unverifiable)?;
        let verified = cert
            .verify_for_usage(
                self.algs.all,
                &self.roots.roots,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(PathError::Unverifiable)?;
        let anchor = verified.anchor();
        let index = self
            .roots
            .roots
            .iter()
            .position(|root| {
                root.subject.as_ref() == anchor.subject.as_ref()
                    && root.subject_public_key_info.as_ref()
                        == anchor.subject_public_key_info.as_ref()
            })
            .and_then(|i| self.anchor_of.get(i).copied().flatten())
            .ok_or(PathError::UnknownAnchor)?;
        Ok(Arc::new(TrustPath {
            // webpki yields the path from the end entity towards the anchor.
            intermediates: verified
                .intermediate_certificates()
                .map(|c| c.der().into_owned())
                .collect(),
            anchor: self.bundle[index].clone(),
        }))
    }

    /// Remembers the path verification built for this presented chain.
    pub fn remember(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        path: Arc<TrustPath>,
    ) {
        let key = key(end_entity, intermediates);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, path);
    }

    /// The path of a chain this configuration accepted: the one its verification remembered,
    /// or, when there is none, one built now.
    pub fn path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<TrustPath>, PathError> {
        let key = key(end_entity, intermediates);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key);
        match cached {
            Some(path) => Ok(path),
            None => self.verify(end_entity, intermediates, UnixTime::now()),
        }
    }

    /// How many paths are remembered (for tests).
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}

impl fmt::Debug for Paths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paths")
            .field("anchors", &self.roots.roots.len())
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

type Key = [u8; 32];

/// SHA-256 over the presented chain, each certificate length-prefixed so that no two
/// different chains hash the same input.
fn key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Key {
    let mut hash = Sha256::new();
    for der in std::iter::once(end_entity).chain(intermediates) {
        hash.update((der.len() as u64).to_be_bytes());
        hash.update(der.as_ref());
    }
    hash.finalize().into()
}

/// At most [`CACHE_ENTRIES`] paths; the oldest inserted goes first.
#[derive(Default)]
struct Cache {
    map: HashMap<Key, Arc<TrustPath>>,
    order: VecDeque<Key>,
}

impl Cache {
    fn insert(&mut self, key: Key, path: Arc<TrustPath>) {
        if self.map.insert(key, path).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CACHE_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn get(&self, key: &Key) -> Option<Arc<TrustPath>> {
        self.map.get(key).cloned()
    }
}

#[cfg(test)]
pub(super) mod tests;
