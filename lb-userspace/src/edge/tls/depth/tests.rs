//! The verifier on the same chains as `path`'s tests: it verifies exactly as rustls does and
//! leaves the path it verified by for the connection.

use std::sync::Arc;

use rustls::pki_types::UnixTime;
use rustls::server::danger::ClientCertVerifier as _;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::super::path::{
    tests::{arrangements, paths, pki, provider},
    TrustPath,
};
use super::ChainDepthVerifier;

#[test]
fn verifier_hands_its_path_to_the_connection_and_refuses_like_rustls() {
    let p = pki();
    let paths = paths(&[&p.root]);
    let mut roots = RootCertStore::empty();
    roots.add(p.root.clone()).unwrap();
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    let verifier = ChainDepthVerifier::new(Arc::clone(&inner), 10, Arc::clone(&paths));
    let want = TrustPath {
        intermediates: vec![p.int2.clone(), p.int1.clone()],
        anchor: p.root.clone(),
    };
    let now = UnixTime::now();
    for (name, presented) in arrangements(&p) {
        verifier
            .verify_client_cert(&p.leaf, &presented, now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The inner verifier agrees.
        inner
            .verify_client_cert(&p.leaf, &presented, now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(*paths.path(&p.leaf, &presented).unwrap() == want, "{name}");
    }
    assert_eq!(paths.cached(), arrangements(&p).len());

    // Refused: exactly rustls' error, and nothing remembered.
    let bad = [p.stranger_ca.clone()];
    let ours = verifier.verify_client_cert(&p.leaf, &bad, now).unwrap_err();
    let rustls = inner.verify_client_cert(&p.leaf, &bad, now).unwrap_err();
    assert_eq!(ours, rustls);
    assert_eq!(paths.cached(), arrangements(&p).len());
}
