//! Reading certificate chains, private keys and CA bundles from PEM files, with errors that
//! name the file.

use std::path::Path;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};

use super::TlsError;

/// Every PEM section of a file, in order. A file without any section (or with a malformed
/// one) is "not PEM".
fn sections(path: &Path) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if sections.is_empty() {
        return Err(TlsError::NotPem {
            path: path.to_path_buf(),
            reason: "no -----BEGIN CERTIFICATE/PRIVATE KEY----- section or similar".to_owned(),
        });
    }
    Ok(sections)
}

/// All `CERTIFICATE` sections of a file (possibly none), each checked to be X.509.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = sections(path)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    for (index, cert) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            index,
            reason: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// A certificate chain (leaf first) and the first private key of `key`, checked to belong
/// together.
pub(super) fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let der = sections(key)?
        .into_iter()
        .find_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der))
        .ok_or_else(|| TlsError::NoKey {
            path: key.to_path_buf(),
        })?;
    let signing_key = any_supported_type(&der).map_err(|error| TlsError::BadKey {
        path: key.to_path_buf(),
        error,
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // ring's keys all know their public key; "unknown" cannot be checked, so it passes.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => Err(TlsError::BadCertificate {
            path: cert.to_path_buf(),
            index: 0,
            reason: e.to_string(),
        }),
    }
}

/// A CA bundle as trust anchors, and the certificates themselves.
pub(super) fn ca_bundle(
    path: &Path,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
    let certs = certificates(path)?;
    if certs.is_empty() {
        return Err(TlsError::EmptyCaBundle {
            path: path.to_path_buf(),
        });
    }
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|error| TlsError::BadCa {
            path: path.to_path_buf(),
            index,
            error,
        })?;
    }
    Ok((roots, certs))
}
