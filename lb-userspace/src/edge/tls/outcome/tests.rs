//! Each class from the error it stands for, and from real handshakes on loopback against the
//! listener's own configuration ([`server_config`]: the `WebPki` verifier inside
//! [`ChainDepthVerifier`](super::super::ChainDepthVerifier)).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, Error, OtherError, PeerIncompatible};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

use super::super::{handshake, server_config, ChainTooDeep, HandshakeError};
use super::HandshakeOutcome;
use crate::config::tls::{CertFiles, ClientAuth, TlsSettings};
use crate::test_support::{ca, Ca, Scratch};

fn of(e: Error) -> HandshakeOutcome {
    HandshakeOutcome::of_io(&io::Error::new(io::ErrorKind::InvalidData, e))
}

fn cert(e: CertificateError) -> HandshakeOutcome {
    of(Error::InvalidCertificate(e))
}

#[test]
fn rustls_errors_map_to_their_class() {
    let t = |s| UnixTime::since_unix_epoch(Duration::from_secs(s));
    assert_eq!(
        of(Error::NoCertificatesPresented),
        HandshakeOutcome::NoClientCert
    );
    assert_eq!(
        cert(CertificateError::Expired),
        HandshakeOutcome::CertExpired
    );
    assert_eq!(
        cert(CertificateError::ExpiredContext {
            time: t(2),
            not_after: t(1)
        }),
        HandshakeOutcome::CertExpired
    );
    assert_eq!(
        cert(CertificateError::NotValidYet),
        HandshakeOutcome::CertNotYetValid
    );
    assert_eq!(
        cert(CertificateError::NotValidYetContext {
            time: t(1),
            not_before: t(2)
        }),
        HandshakeOutcome::CertNotYetValid
    );
    assert_eq!(
        cert(CertificateError::UnknownIssuer),
        HandshakeOutcome::UnknownCa
    );
    let too_deep = ChainTooDeep {
        presented: 5,
        max: 4,
    };
    assert_eq!(
        cert(CertificateError::Other(OtherError(Arc::new(too_deep)))),
        HandshakeOutcome::ChainTooDeep
    );
    // Another verifier's own error is a refused certificate, not a chain depth.
    assert_eq!(
        cert(CertificateError::Other(OtherError(Arc::new(
            io::Error::other("x")
        )))),
        HandshakeOutcome::BadCert
    );
    for e in [
        CertificateError::BadSignature,
        CertificateError::BadEncoding,
        CertificateError::InvalidPurpose,
        CertificateError::Revoked,
    ] {
        assert_eq!(cert(e.clone()), HandshakeOutcome::BadCert, "{e:?}");
    }
    assert_eq!(
        of(Error::AlertReceived(AlertDescription::UnknownCA)),
        HandshakeOutcome::ClientAlert
    );
    assert_eq!(
        of(Error::PeerIncompatible(
            PeerIncompatible::NoCipherSuitesInCommon
        )),
        HandshakeOutcome::Protocol
    );
    assert_eq!(of(Error::NoApplicationProtocol), HandshakeOutcome::Protocol);
}

#[test]
fn io_errors_map_to_their_class() {
    let io = |kind| HandshakeOutcome::of_io(&io::Error::new(kind, "tls handshake eof"));
    assert_eq!(io(io::ErrorKind::UnexpectedEof), HandshakeOutcome::Eof);
    assert_eq!(io(io::ErrorKind::ConnectionReset), HandshakeOutcome::Eof);
    assert_eq!(io(io::ErrorKind::TimedOut), HandshakeOutcome::Timeout);
    assert_eq!(io(io::ErrorKind::PermissionDenied), HandshakeOutcome::Io);
    // A message that merely mentions a certificate is still an I/O error.
    let text = io::Error::new(io::ErrorKind::InvalidData, "certificate expired");
    assert_eq!(HandshakeOutcome::of_io(&text), HandshakeOutcome::Io);
}

#[test]
fn every_class_has_its_own_label() {
    let mut labels: Vec<&str> = HandshakeOutcome::ALL.iter().map(|o| o.as_str()).collect();
    for (i, o) in HandshakeOutcome::ALL.iter().enumerate() {
        // The counters are indexed by discriminant.
        assert_eq!(*o as usize, i, "{o}");
    }
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), HandshakeOutcome::ALL.len());
}

// ---- real handshakes -------------------------------------------------------------------

/// A client leaf: its chain (leaf, then `presented`) and key.
struct Client {
    chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
}

fn client(signer: &Ca, presented: &[&Ca], expired: bool) -> Client {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, signer).unwrap();
    let mut chain = vec![leaf.der().clone()];
    chain.extend(presented.iter().map(|ca| ca.der().clone()));
    Client { chain, key }
}

/// A root CA with a server leaf for `localhost`; `client_ca` is the root.
struct Pki {
    _dir: Scratch,
    root: Ca,
    settings: TlsSettings,
}

impl Pki {
    fn new(client_auth: ClientAuth) -> Pki {
        let dir = Scratch::new();
        let root = ca("unit root", None);
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let server = params.signed_by(&key, &root).unwrap();
        let mut settings = TlsSettings::new(vec![CertFiles {
            cert: dir.write("server.crt", server.pem()),
            key: dir.write("server.key", key.serialize_pem()),
        }]);
        settings.client_auth = client_auth;
        settings.client_ca = Some(dir.write("ca.crt", root.pem()));
        settings.max_chain_depth = 0;
        Pki {
            _dir: dir,
            root,
            settings,
        }
    }

    /// The listener's side of one handshake with a rustls client presenting `id`, which
    /// trusts the server's root only with `trust_server`.
    async fn outcome(&self, id: Option<&Client>, trust_server: bool) -> HandshakeOutcome {
        let config = server_config(&self.settings).unwrap().config();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        if trust_server {
            roots.add(self.root.der().clone()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let client_config = match id {
            Some(c) => builder
                .with_client_auth_cert(
                    c.chain.clone(),
                    PrivateKeyDer::try_from(c.key.serialize_der()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            // Kept open until the server has decided (TLS 1.3 clients finish first).
            let stream = connector.connect(name, tcp).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let result = handshake(config, tcp, Duration::from_secs(20)).await;
        client.abort();
        match result {
            Ok(_) => HandshakeOutcome::Ok,
            Err(e) => e.outcome(),
        }
    }
}

#[tokio::test]
async fn the_listeners_verifier_refusals_are_classified() {
    let pki = Pki::new(ClientAuth::Required);
    let good = client(&pki.root, &[], false);
    assert_eq!(pki.outcome(Some(&good), true).await, HandshakeOutcome::Ok);
    assert_eq!(
        pki.outcome(None, true).await,
        HandshakeOutcome::NoClientCert
    );
    let expired = client(&pki.root, &[], true);
    assert_eq!(
        pki.outcome(Some(&expired), true).await,
        HandshakeOutcome::CertExpired
    );
    let other = ca("other root", None);
    let stranger = client(&other, &[], false);
    assert_eq!(
        pki.outcome(Some(&stranger), true).await,
        HandshakeOutcome::UnknownCa
    );
    // max_chain_depth = 0: a leaf under an intermediate is one too deep.
    let intermediate = ca("unit intermediate", Some(&pki.root));
    let deep = client(&intermediate, &[&intermediate], false);
    assert_eq!(
        pki.outcome(Some(&deep), true).await,
        HandshakeOutcome::ChainTooDeep
    );
    // The client refuses the server's certificate and says so.
    assert_eq!(
        pki.outcome(Some(&good), false).await,
        HandshakeOutcome::ClientAlert
    );
}

#[tokio::test]
async fn a_client_that_stalls_times_out_and_one_that_leaves_is_eof() {
    let pki = Pki::new(ClientAuth::None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // Connected, never sends a byte.
    let silent = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let config = server_config(&pki.settings).unwrap().config();
    let limit = Duration::from_millis(200);
    let e = handshake(config.clone(), tcp, limit).await.err().unwrap();
    assert!(
        matches!(e, HandshakeError::Timeout(l) if l == limit),
        "{e:?}"
    );
    assert_eq!(e.outcome(), HandshakeOutcome::Timeout);
    drop(silent);

    // Connects and closes.
    let mut gone = TcpStream::connect(addr).await.unwrap();
    gone.shutdown().await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let e = handshake(config.clone(), tcp, Duration::from_secs(20))
        .await
        .err()
        .unwrap();
    assert_eq!(e.outcome(), HandshakeOutcome::Eof, "{e}");

    // Speaks plain HTTP to a TLS port.
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let e = handshake(config, tcp, Duration::from_secs(20))
        .await
        .err()
        .unwrap();
    assert_eq!(e.outcome(), HandshakeOutcome::Protocol, "{e}");
}
