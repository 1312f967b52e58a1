//! Real TLS handshakes against the edge TLS configuration (`lb_userspace::edge::tls`) on
//! loopback, without network namespaces (no root needed): a tokio listener on `127.0.0.1:0`
//! accepting through `Reloadable::handshake`, as the edge listener does, and as clients rustls
//! (tokio-rustls), the real `openssl s_client` and the real `curl`.
//!
//! The server side records what every handshake established (or why it failed), so refusals
//! are asserted where they are decided: in the server's verifier. Clients add their own view
//! (curl's exit status and body, the certificate `s_client` saw). Time limits are generous
//! safety nets only.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lb_userspace::config::tls::{CertFiles, ClientAuth, TlsSettings};
use lb_userspace::edge::tls::{server_config, Reloadable};
use sluice_tests::certs::{Identity, TestPki};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const LIMIT: Duration = Duration::from_secs(90);
const BODY: &str = "edge tls ok";

/// A scratch directory with a fresh PKI, removed on drop.
struct Fixture {
    dir: TempDir,
    pki: TestPki,
    /// A second server certificate ("beta.test", "*.wild.test").
    beta: Identity,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sluice-edge-tls-{tag}-"))
            .tempdir()
            .unwrap();
        let pki = TestPki::generate(dir.path(), &["alpha.test", "localhost", "127.0.0.1"]).unwrap();
        let beta = pki
            .issue_server("beta", &["beta.test", "*.wild.test"])
            .unwrap();
        Fixture { dir, pki, beta }
    }

    /// Alpha (the default) and beta as server certificates, with `client_auth`.
    fn settings(&self, client_auth: ClientAuth, max_chain_depth: u8) -> TlsSettings {
        let mut s = TlsSettings::new(vec![
            CertFiles {
                cert: self.pki.server_cert().to_path_buf(),
                key: self.pki.server_key().to_path_buf(),
            },
            CertFiles {
                cert: self.beta.chain().to_path_buf(),
                key: self.beta.key().to_path_buf(),
            },
        ]);
        s.client_auth = client_auth;
        s.client_ca = Some(self.pki.ca_cert().to_path_buf());
        s.max_chain_depth = max_chain_depth;
        s
    }
}

/// What one server-side handshake established.
#[derive(Debug)]
struct Handshake {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    peer: Option<(CertificateDer<'static>, Vec<CertificateDer<'static>>)>,
    /// A resumed session (its client certificate was not verified again).
    resumed: bool,
}

/// A TLS listener on loopback that reports every handshake and answers HTTP/1.1 requests
/// with [`BODY`].
struct Server {
    addr: SocketAddr,
    tls: Arc<Reloadable>,
    outcomes: mpsc::UnboundedReceiver<Result<Handshake, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(settings: &TlsSettings) -> Server {
        let tls = Arc::new(Reloadable::new(server_config(settings).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, outcomes) = mpsc::unbounded_channel();
        let tls2 = tls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(tls2.clone(), tcp, tx.clone()));
            }
        });
        Server {
            addr,
            tls,
            outcomes,
            task,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The outcome of the next handshake.
    async fn next(&mut self) -> Result<Handshake, String> {
        tokio::time::timeout(LIMIT, self.outcomes.recv())
            .await
            .expect("no handshake reported in time")
            .expect("server gone")
    }

    async fn accepted(&mut self) -> Handshake {
        self.next().await.expect("handshake should succeed")
    }

    async fn refused(&mut self) -> String {
        match self.next().await {
            Ok(h) => panic!("handshake should be refused, got {h:?}"),
            Err(e) => e,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    tls: Arc<Reloadable>,
    tcp: TcpStream,
    tx: mpsc::UnboundedSender<Result<Handshake, String>>,
) {
    let stream = match tls.handshake(tcp, LIMIT).await {
        Err(e) => {
            let _ = tx.send(Err(e.to_string()));
            return;
        }
        Ok(accepted) => accepted,
    };
    let (mut stream, config) = stream;
    let (_, conn) = stream.get_ref();
    // The leaf and the intermediates of the path the verifier built.
    let peer = match config.peer_chain(conn) {
        None => None,
        Some(Ok(chain)) => Some((chain.leaf, chain.path.intermediates.clone())),
        Some(Err(e)) => {
            let _ = tx.send(Err(format!("no verified path: {e}")));
            return;
        }
    };
    let handshake = Handshake {
        sni: conn.server_name().map(str::to_owned),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        peer,
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    };
    let h2 = handshake.alpn.as_deref() == Some(b"h2");
    let _ = tx.send(Ok(handshake));
    if h2 {
        // Not an HTTP/2 server: the tests only look at what was negotiated.
        let _ = stream.shutdown().await;
        return;
    }
    // Read one request head (or EOF), answer it, close.
    let _ = tokio::time::timeout(LIMIT, async {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

// ---- clients ---------------------------------------------------------------------------

/// What a rustls client saw: the server's leaf and the negotiated ALPN protocol.
struct ClientView {
    server_leaf: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
}

async fn rustls_client(
    port: u16,
    sni: &str,
    ca: &Path,
    alpn: &[&[u8]],
    identity: Option<&Identity>,
) -> Result<ClientView, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_file_iter(id.chain())
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(id.key()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let stream = tokio::time::timeout(LIMIT, connector.connect(name, tcp))
        .await
        .map_err(|_| "client handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (_, conn) = stream.get_ref();
    Ok(ClientView {
        server_leaf: conn.peer_certificates().unwrap()[0].clone(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
    })
}

/// Runs a client binary in a blocking task, bounded by coreutils `timeout`.
async fn run(program: &str, args: Vec<String>) -> Output {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg(LIMIT.as_secs().to_string())
            .arg(&program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    })
    .await
    .unwrap()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `curl https://localhost:<port>/` trusting the test root, optionally with a client identity.
async fn curl(port: u16, identity: Option<&Identity>, ca: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "-sS".to_owned(),
        "-v".to_owned(),
        "--max-time".to_owned(),
        "30".to_owned(),
        "--cacert".to_owned(),
        p(ca),
        "--resolve".to_owned(),
        format!("localhost:{port}:127.0.0.1"),
    ];
    if let Some(id) = identity {
        args.extend([
            "--cert".to_owned(),
            p(id.chain()),
            "--key".to_owned(),
            p(id.key()),
        ]);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(format!("https://localhost:{port}/"));
    run("curl", args).await
}

/// `openssl s_client` with the test root as CA and, optionally, a client identity (leaf via
/// `-cert`, intermediates via `-cert_chain`). `servername = None` sends no SNI.
async fn s_client(
    port: u16,
    servername: Option<&str>,
    identity: Option<&Identity>,
    ca: &Path,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "s_client".to_owned(),
        "-connect".to_owned(),
        format!("127.0.0.1:{port}"),
        "-CAfile".to_owned(),
        p(ca),
    ];
    match servername {
        Some(name) => args.extend(["-servername".to_owned(), name.to_owned()]),
        None => args.push("-noservername".to_owned()),
    }
    if let Some(id) = identity {
        args.extend([
            "-cert".to_owned(),
            p(id.leaf()),
            "-key".to_owned(),
            p(id.key()),
        ]);
        // s_client refuses an empty -cert_chain file.
        if !id.intermediates().is_empty() {
            args.extend(["-cert_chain".to_owned(), p(id.intermediates_pem())]);
        }
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    run("openssl", args).await
}

fn text(out: &Output) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

/// The leaf certificate `s_client` printed, as DER.
fn s_client_leaf(out: &Output) -> CertificateDer<'static> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    CertificateDer::from_pem_slice(stdout.as_bytes()).unwrap_or_else(|e| {
        panic!(
            "no server certificate in s_client output ({e}):\n{}",
            text(out)
        )
    })
}

fn assert_refused(reason: &str, expect: &[&str]) {
    let lower = reason.to_ascii_lowercase();
    assert!(
        expect.iter().any(|e| lower.contains(e)),
        "refusal reason {reason:?} mentions none of {expect:?}"
    );
}

/// curl over HTTP/1.1, then `openssl s_client`, each presenting `client` (or no certificate):
/// the server refuses both handshakes for a reason that mentions one of `reasons`, and curl
/// fails.
async fn assert_curl_and_s_client_refused(
    server: &mut Server,
    ca: &Path,
    client: Option<&Identity>,
    reasons: &[&str],
) {
    let out = curl(server.port(), client, ca, &["--http1.1"]).await;
    assert_refused(&server.refused().await, reasons);
    assert!(!out.status.success(), "{}", text(&out));
    let _ = s_client(server.port(), Some("localhost"), client, ca, &[]).await;
    assert_refused(&server.refused().await, reasons);
}

// ---- tests -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_matching_certificate() {
    let f = Fixture::new("sni");
    let mut server = Server::start(&f.settings(ClientAuth::None, 4)).await;
    let ca = f.pki.ca_cert();
    for (sni, want) in [
        ("alpha.test", f.pki.server.der()),
        ("beta.test", f.beta.der()),
        ("BETA.test", f.beta.der()),
        ("x.wild.test", f.beta.der()),
        ("localhost", f.pki.server.der()),
    ] {
        let seen = rustls_client(server.port(), sni, ca, &[], None).await;
        let seen = seen.unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert!(seen.server_leaf == *want, "{sni}: wrong server certificate");
        let h = server.accepted().await;
        assert_eq!(h.sni.as_deref(), Some(sni.to_ascii_lowercase().as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_unknown_or_absent_falls_back_to_the_first_certificate() {
    let f = Fixture::new("sni-fallback");
    let mut server = Server::start(&f.settings(ClientAuth::None, 4)).await;
    let ca = f.pki.ca_cert();
    for (servername, want) in [
        (Some("beta.test"), f.beta.der()),
        (Some("a.b.wild.test"), f.pki.server.der()),
        (Some("unknown.test"), f.pki.server.der()),
        (None, f.pki.server.der()),
    ] {
        let out = s_client(server.port(), servername, None, ca, &[]).await;
        let h = server.accepted().await;
        assert_eq!(h.sni.as_deref(), servername, "{}", text(&out));
        assert!(
            s_client_leaf(&out) == *want,
            "{servername:?}: wrong certificate\n{}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alpn_h2_when_offered_http11_otherwise() {
    let f = Fixture::new("alpn");
    let mut server = Server::start(&f.settings(ClientAuth::None, 4)).await;
    let ca = f.pki.ca_cert();
    for (offer, want) in [
        (&[&b"h2"[..], b"http/1.1"][..], Some(&b"h2"[..])),
        (&[&b"http/1.1"[..], b"h2"][..], Some(&b"h2"[..])),
        (&[&b"http/1.1"[..]][..], Some(&b"http/1.1"[..])),
        (&[][..], None),
    ] {
        let seen = rustls_client(server.port(), "alpha.test", ca, offer, None)
            .await
            .unwrap();
        assert_eq!(seen.alpn.as_deref(), want, "offer {offer:?}");
        assert_eq!(server.accepted().await.alpn.as_deref(), want);
    }

    // curl: HTTP/1.1 gets a real answer; with --http2 h2 is negotiated.
    let out = curl(server.port(), None, ca, &["--http1.1"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);
    assert_eq!(
        server.accepted().await.alpn.as_deref(),
        Some(&b"http/1.1"[..])
    );
    let out = curl(server.port(), None, ca, &["--http2"]).await;
    assert_eq!(
        server.accepted().await.alpn.as_deref(),
        Some(&b"h2"[..]),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ALPN: server accepted h2"),
        "{}",
        text(&out)
    );

    // openssl s_client -alpn.
    let out = s_client(
        server.port(),
        Some("alpha.test"),
        None,
        ca,
        &["-alpn", "h2,http/1.1"],
    )
    .await;
    assert_eq!(server.accepted().await.alpn.as_deref(), Some(&b"h2"[..]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ALPN protocol: h2"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn required_valid_client_certificate_is_verified_and_exposed() {
    let f = Fixture::new("required-ok");
    let mut server = Server::start(&f.settings(ClientAuth::Required, 4)).await;
    let ca = f.pki.ca_cert();
    let want = (
        f.pki.client.der().clone(),
        vec![f.pki.intermediate.der().clone()],
    );

    let out = curl(server.port(), Some(&f.pki.client), ca, &["--http1.1"]).await;
    let h = server.accepted().await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);
    assert!(h.peer == Some(want.clone()), "curl: peer_chain {h:?}");

    let out = s_client(
        server.port(),
        Some("localhost"),
        Some(&f.pki.client),
        ca,
        &[],
    )
    .await;
    let h = server.accepted().await;
    assert!(
        h.peer == Some(want.clone()),
        "s_client: peer_chain {h:?}\n{}",
        text(&out)
    );

    let seen = rustls_client(server.port(), "localhost", ca, &[], Some(&f.pki.client)).await;
    assert!(seen.is_ok());
    assert!(server.accepted().await.peer == Some(want));
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_without_certificate_is_let_in_with_none() {
    let f = Fixture::new("optional");
    let mut server = Server::start(&f.settings(ClientAuth::Optional, 4)).await;
    let ca = f.pki.ca_cert();

    let out = curl(server.port(), None, ca, &["--http1.1"]).await;
    let h = server.accepted().await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(h.peer.is_none(), "{h:?}");

    let _ = s_client(server.port(), Some("localhost"), None, ca, &[]).await;
    assert!(server.accepted().await.peer.is_none());

    // A certificate that is offered is still verified and exposed...
    let out = curl(server.port(), Some(&f.pki.client), ca, &["--http1.1"]).await;
    let h = server.accepted().await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(h.peer.is_some_and(|(leaf, _)| leaf == *f.pki.client.der()));
    // ...and a bad one is refused, not downgraded to "no certificate".
    let expired = Some(&f.pki.expired_client);
    assert_curl_and_s_client_refused(&mut server, ca, expired, &["expired"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn required_without_certificate_is_refused() {
    let f = Fixture::new("required-none");
    let mut server = Server::start(&f.settings(ClientAuth::Required, 4)).await;
    assert_curl_and_s_client_refused(&mut server, f.pki.ca_cert(), None, &["no certificate"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_client_is_refused() {
    let f = Fixture::new("expired");
    let mut server = Server::start(&f.settings(ClientAuth::Required, 4)).await;
    let (ca, client) = (f.pki.ca_cert(), Some(&f.pki.expired_client));
    assert_curl_and_s_client_refused(&mut server, ca, client, &["expired"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ca_client_is_refused() {
    let f = Fixture::new("unknown-ca");
    let mut server = Server::start(&f.settings(ClientAuth::Required, 4)).await;
    let (ca, client) = (f.pki.ca_cert(), Some(&f.pki.unknown_ca_client));
    let reasons = ["unknownissuer", "unknown issuer"];
    assert_curl_and_s_client_refused(&mut server, ca, client, &reasons).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chain_deeper_than_max_chain_depth_is_refused() {
    let f = Fixture::new("depth");
    let ca = f.pki.ca_cert();
    {
        let mut server = Server::start(&f.settings(ClientAuth::Required, 1)).await;
        let deep = Some(&f.pki.deep_client);
        assert_curl_and_s_client_refused(&mut server, ca, deep, &["too deep"]).await;
        // One intermediate is within the limit.
        let out = curl(server.port(), Some(&f.pki.client), ca, &["--http1.1"]).await;
        assert!(server.accepted().await.peer.is_some());
        assert!(out.status.success(), "{}", text(&out));
    }
    {
        let mut server = Server::start(&f.settings(ClientAuth::Required, 2)).await;
        let out = curl(server.port(), Some(&f.pki.deep_client), ca, &["--http1.1"]).await;
        let h = server.accepted().await;
        assert!(out.status.success(), "{}", text(&out));
        let (leaf, chain) = h.peer.unwrap();
        assert!(leaf == *f.pki.deep_client.der());
        assert!(chain == f.pki.deep_client.intermediates());
        assert_eq!(chain.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_to_new_handshakes_only_when_valid() {
    let f = Fixture::new("reload");
    let settings = f.settings(ClientAuth::None, 4);
    let mut server = Server::start(&settings).await;
    let ca = f.pki.ca_cert();
    let before = rustls_client(server.port(), "alpha.test", ca, &[], None)
        .await
        .unwrap();
    server.accepted().await;
    assert!(before.server_leaf == *f.pki.server.der());

    // Swap in beta only: alpha.test now falls back to it.
    let mut beta_only = settings.clone();
    beta_only.certificates.remove(0);
    let mut broken = beta_only.clone();
    broken.certificates[0].key = f.dir.path().join("missing.key");
    assert!(server.tls.reload(&broken).is_err());
    let out = s_client(server.port(), Some("alpha.test"), None, ca, &[]).await;
    server.accepted().await;
    assert!(
        s_client_leaf(&out) == *f.pki.server.der(),
        "failed reload changed the config"
    );

    server.tls.reload(&beta_only).unwrap();
    let out = s_client(server.port(), Some("alpha.test"), None, ca, &[]).await;
    server.accepted().await;
    assert!(s_client_leaf(&out) == *f.beta.der(), "{}", text(&out));
}

/// A rustls client presenting `chain` (leaf first, in this order) that sends one request and
/// reads the answer to the end, so that it takes the session tickets the server sends.
async fn rustls_request(port: u16, config: &Arc<rustls::ClientConfig>) -> String {
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = tokio::time::timeout(LIMIT, connector.connect(name, tcp))
        .await
        .expect("client handshake in time")
        .expect("client handshake");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn verified_path_without_extras_also_for_a_resumed_session() {
    let f = Fixture::new("resumed");
    let mut server = Server::start(&f.settings(ClientAuth::Required, 10)).await;
    let pki = &f.pki;
    // The deep client's leaf, then an unrelated root, its two intermediates reversed, a
    // certificate of an unknown CA and a copy of the trusted root.
    let presented = vec![
        pki.deep_client.der().clone(),
        pki.other_root.der().clone(),
        pki.intermediate.der().clone(),
        pki.unknown_ca_client.der().clone(),
        pki.sub_intermediate.der().clone(),
        pki.root.der().clone(),
    ];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root.der().clone()).unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.deep_client.key()).unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(presented, key)
        .unwrap(),
    );
    let want = (
        pki.deep_client.der().clone(),
        vec![
            pki.sub_intermediate.der().clone(),
            pki.intermediate.der().clone(),
        ],
    );
    for round in ["full", "resumed"] {
        let answer = rustls_request(server.port(), &config).await;
        let h = server.accepted().await;
        assert!(answer.ends_with(BODY), "{round}: {answer}");
        assert_eq!(h.resumed, round == "resumed", "{round}");
        assert!(
            h.peer.as_ref() == Some(&want),
            "{round}: the path is not the verified one: {h:?}"
        );
    }
}
