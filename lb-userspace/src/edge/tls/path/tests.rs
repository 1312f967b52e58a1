//! The path a verification built, whatever else the client sends: root → intermediate 1 →
//! intermediate 2 → leaf, presented with an unrelated self-signed root, a certificate from an
//! unknown CA, duplicates and in reversed order, before, between and after the real
//! intermediates.

use std::sync::Arc;

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::RootCertStore;

use super::{Paths, TrustPath, CACHE_ENTRIES};
use crate::test_support::ca;

pub(in crate::edge::tls) struct Pki {
    pub(in crate::edge::tls) root: CertificateDer<'static>,
    /// Issued by the root.
    pub(in crate::edge::tls) int1: CertificateDer<'static>,
    /// Issued by `int1`; issues the leaf.
    pub(in crate::edge::tls) int2: CertificateDer<'static>,
    pub(in crate::edge::tls) leaf: CertificateDer<'static>,
    /// A self-signed CA nothing trusts.
    pub(in crate::edge::tls) stranger_root: CertificateDer<'static>,
    /// A CA certificate issued by `stranger_root`.
    pub(in crate::edge::tls) stranger_ca: CertificateDer<'static>,
}

pub(in crate::edge::tls) fn pki() -> Pki {
    let root = ca("path root", None);
    let int1 = ca("path intermediate 1", Some(&root));
    let int2 = ca("path intermediate 2", Some(&int1));
    let mut leaf_params = CertificateParams::new(vec!["client.example".to_owned()]).unwrap();
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf_params
        .signed_by(&KeyPair::generate().unwrap(), &int2)
        .unwrap();
    // Same subject as the real root, other key: it must never pass for it.
    let stranger_root = ca("path root", None);
    let stranger_ca = ca("path intermediate 1", Some(&stranger_root));
    Pki {
        root: root.der().clone(),
        int1: int1.der().clone(),
        int2: int2.der().clone(),
        leaf: leaf.der().clone(),
        stranger_root: stranger_root.der().clone(),
        stranger_ca: stranger_ca.der().clone(),
    }
}

pub(in crate::edge::tls) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Path building for a `client_ca` bundle of `bundle`.
pub(in crate::edge::tls) fn paths(bundle: &[&CertificateDer<'static>]) -> Arc<Paths> {
    let mut roots = RootCertStore::empty();
    for der in bundle {
        roots.add((*der).clone()).unwrap();
    }
    Arc::new(Paths::new(
        Arc::new(roots),
        bundle.iter().map(|d| (*d).clone()).collect(),
        provider().signature_verification_algorithms,
    ))
}

/// Every arrangement of the real intermediates with extras, each named.
pub(in crate::edge::tls) fn arrangements(
    p: &Pki,
) -> Vec<(&'static str, Vec<CertificateDer<'static>>)> {
    let (i1, i2) = (p.int1.clone(), p.int2.clone());
    let (sr, sc, root) = (
        p.stranger_root.clone(),
        p.stranger_ca.clone(),
        p.root.clone(),
    );
    let leaf_copy = p.leaf.clone();
    vec![
        ("as issued", vec![i2.clone(), i1.clone()]),
        ("reversed", vec![i1.clone(), i2.clone()]),
        (
            "stranger root first",
            vec![sr.clone(), i2.clone(), i1.clone()],
        ),
        (
            "unknown CA before",
            vec![sc.clone(), sr.clone(), i2.clone(), i1.clone()],
        ),
        (
            "extras between",
            vec![i2.clone(), sr.clone(), sc.clone(), i1.clone()],
        ),
        (
            "extras after",
            vec![i2.clone(), i1.clone(), sc.clone(), sr.clone()],
        ),
        ("root appended", vec![i2.clone(), i1.clone(), root.clone()]),
        (
            "duplicates",
            vec![i2.clone(), i2.clone(), i1.clone(), i1.clone(), i2.clone()],
        ),
        (
            "everything, reversed, twice",
            vec![
                root.clone(),
                sr.clone(),
                i1.clone(),
                leaf_copy,
                sc.clone(),
                i2.clone(),
                i1.clone(),
                sr,
            ],
        ),
    ]
}

#[test]
fn path_is_the_intermediates_used_leaf_to_anchor_whatever_else_is_presented() {
    let p = pki();
    let paths = paths(&[&p.stranger_root, &p.root]);
    let want = TrustPath {
        intermediates: vec![p.int2.clone(), p.int1.clone()],
        anchor: p.root.clone(),
    };
    for (name, presented) in arrangements(&p) {
        let got = paths
            .verify(&p.leaf, &presented, UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(*got == want, "{name}: {got:?}");
    }
}

#[test]
fn leaf_issued_by_the_anchor_has_an_empty_path() {
    let p = pki();
    // int2 as the anchor: the leaf is one hop from it.
    let paths = paths(&[&p.int2]);
    let got = paths
        .verify(
            &p.leaf,
            &[p.stranger_root.clone(), p.int1.clone()],
            UnixTime::now(),
        )
        .unwrap();
    assert!(got.intermediates.is_empty());
    assert!(got.anchor == p.int2);
}

#[test]
fn unverifiable_chain_has_no_path() {
    let p = pki();
    let paths = paths(&[&p.stranger_root]);
    assert!(paths
        .verify(&p.leaf, &[p.int2.clone(), p.int1.clone()], UnixTime::now())
        .is_err());
    // Without the intermediate the leaf's issuer is unknown.
    let paths = self::paths(&[&p.root]);
    assert!(paths
        .verify(&p.leaf, std::slice::from_ref(&p.int1), UnixTime::now())
        .is_err());
}

#[test]
fn a_miss_builds_the_path_again_and_the_cache_stays_bounded() {
    let p = pki();
    let paths = paths(&[&p.root]);
    let presented = [p.int1.clone(), p.stranger_root.clone(), p.int2.clone()];
    // Never verified through the cache (a resumed session): built now.
    let got = paths.path(&p.leaf, &presented).unwrap();
    assert!(got.intermediates == [p.int2.clone(), p.int1.clone()]);
    assert_eq!(paths.cached(), 0);

    let path = Arc::new(TrustPath {
        intermediates: Vec::new(),
        anchor: p.root.clone(),
    });
    for i in 0..CACHE_ENTRIES + 5 {
        let fake = CertificateDer::from(i.to_be_bytes().to_vec());
        paths.remember(&fake, &[], Arc::clone(&path));
    }
    assert_eq!(paths.cached(), CACHE_ENTRIES);
    // The oldest went first: the first fake leaf is built again (and fails: it is no
    // certificate), the last is remembered.
    let first = CertificateDer::from(0usize.to_be_bytes().to_vec());
    assert!(paths.path(&first, &[]).is_err());
    let last = CertificateDer::from((CACHE_ENTRIES + 4).to_be_bytes().to_vec());
    assert!(paths.path(&last, &[]).is_ok());
}
