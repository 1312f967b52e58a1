//! Broken inputs: each must fail with an error that names the file (or setting) at fault.

use std::path::Path;

use rcgen::{CertificateParams, KeyPair};

use super::{server_config, Reloadable, TlsError};
use crate::config::tls::{CertFiles, ClientAuth, TlsSettings};
use crate::test_support::{ca, Scratch};

/// A self-signed server certificate for `name`: (cert PEM, key PEM).
fn self_signed(name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn ca_pem() -> String {
    ca("unit test CA", None).pem()
}

/// A directory with a good server certificate and key; returns the settings that use them.
fn good(dir: &Scratch) -> TlsSettings {
    let (cert, key) = self_signed("edge.example.com");
    TlsSettings::new(vec![CertFiles {
        cert: dir.write("server.crt", cert),
        key: dir.write("server.key", key),
    }])
}

fn err(s: &TlsSettings) -> TlsError {
    server_config(s).expect_err("configuration should be refused")
}

fn assert_names(e: &TlsError, path: &Path, what: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name {}: {msg}",
        path.display()
    );
    assert!(msg.contains(what), "error does not say {what:?}: {msg}");
}

#[test]
fn good_settings_build() {
    let dir = Scratch::new();
    let s = good(&dir);
    let config = server_config(&s).unwrap().config();
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn missing_file() {
    let dir = Scratch::new();
    let mut s = good(&dir);
    s.certificates[0].cert = dir.path("nope.crt");
    let e = err(&s);
    assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
    assert_names(&e, &s.certificates[0].cert, "cannot read");

    let mut s = good(&dir);
    s.certificates[0].key = dir.path("nope.key");
    let e = err(&s);
    assert_names(&e, &s.certificates[0].key, "cannot read");
}

#[test]
fn not_pem() {
    let dir = Scratch::new();
    let mut s = good(&dir);
    s.certificates[0].cert = dir.write("garbage.crt", b"\x30\x82\x01\x0a binary DER, not PEM");
    let e = err(&s);
    assert!(matches!(e, TlsError::NotPem { .. }), "{e:?}");
    assert_names(&e, &s.certificates[0].cert, "not PEM");

    // A PEM section whose body is not base64.
    let mut s = good(&dir);
    s.certificates[0].key = dir.write(
        "broken.key",
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    );
    let e = err(&s);
    assert_names(&e, &s.certificates[0].key, "not PEM");
}

#[test]
fn no_certificate_and_no_key() {
    let dir = Scratch::new();
    let (_, key) = self_signed("a.example.com");
    let mut s = good(&dir);
    // The key file given as the certificate: PEM, but no CERTIFICATE in it.
    s.certificates[0].cert = s.certificates[0].key.clone();
    let e = err(&s);
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
    assert_names(&e, &s.certificates[0].cert, "no certificate");

    let mut s = good(&dir);
    s.certificates[0].key = s.certificates[0].cert.clone();
    let e = err(&s);
    assert!(matches!(e, TlsError::NoKey { .. }), "{e:?}");
    assert_names(&e, &s.certificates[0].key, "no private key");
    drop(key);
}

#[test]
fn key_does_not_match_certificate() {
    let dir = Scratch::new();
    let mut s = good(&dir);
    let (_, other_key) = self_signed("other.example.com");
    s.certificates[0].key = dir.write("other.key", other_key);
    let e = err(&s);
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
    assert_names(&e, &s.certificates[0].key, "does not match");
    assert_names(&e, &s.certificates[0].cert, "does not match");
}

#[test]
fn client_auth_needs_client_ca() {
    let dir = Scratch::new();
    for mode in [ClientAuth::Required, ClientAuth::Optional] {
        let mut s = good(&dir);
        s.client_auth = mode;
        let e = err(&s);
        assert!(matches!(e, TlsError::ClientCaMissing { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("client_ca") && msg.contains(mode.as_str()),
            "{msg}"
        );
    }
}

#[test]
fn empty_ca_bundle() {
    let dir = Scratch::new();
    let mut s = good(&dir);
    s.client_auth = ClientAuth::Required;
    // PEM, but only a key in it: no CA certificate.
    let (_, key) = self_signed("x.example.com");
    s.client_ca = Some(dir.write("ca.pem", key));
    let e = err(&s);
    assert!(matches!(e, TlsError::EmptyCaBundle { .. }), "{e:?}");
    assert_names(&e, s.client_ca.as_ref().unwrap(), "CA bundle is empty");

    // An empty file is not PEM at all.
    s.client_ca = Some(dir.write("empty.pem", ""));
    let e = err(&s);
    assert_names(&e, s.client_ca.as_ref().unwrap(), "not PEM");
}

#[test]
fn good_client_ca_builds_and_reload_keeps_old_config_on_error() {
    let dir = Scratch::new();
    let mut s = good(&dir);
    s.client_auth = ClientAuth::Required;
    s.client_ca = Some(dir.write("ca.pem", ca_pem()));
    let r = Reloadable::new(server_config(&s).unwrap());
    let before = r.get().config();
    let mut broken = s.clone();
    broken.certificates[0].key = dir.path("gone.key");
    assert!(r.reload(&broken).is_err());
    assert!(std::sync::Arc::ptr_eq(&before, &r.get().config()));
    r.reload(&s).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&before, &r.get().config()));
}

#[test]
fn no_certificates_and_bad_alpn() {
    let e = err(&TlsSettings::new(Vec::new()));
    assert!(matches!(e, TlsError::NoCertificates), "{e:?}");
    let dir = Scratch::new();
    let mut s = good(&dir);
    s.alpn = vec![Vec::new()];
    assert!(matches!(err(&s), TlsError::BadAlpn { len: 0 }));
}
