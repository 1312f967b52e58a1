//! The bench's own rustls + hyper client, for what wrk and h2load cannot do: handshakes with
//! session resumption switched on or off and counted (h2load never resumes, wrk reconnects only
//! on errors), holding thousands of idle connections, and checking each edge's headers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{header, Request};
use hyper_util::rt::TokioIo;
use sluice_tests::{certs::TestPki, NetNs};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::{
    self,
    client::Resumption,
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName},
    HandshakeKind,
};
use tokio_rustls::TlsConnector;

use super::fronts::{Front, CERT_HEADER, SERVER_NAME};
use super::Latency;

/// How each connection of a handshake run presents itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshakes {
    /// Resumption off: every connection is a full handshake with the client certificate.
    Full,
    /// Resumption on (TLS 1.3 tickets): after each client's first, handshakes resume.
    Resumed,
}

/// A client configuration with the client certificate (or without, `with_cert` false). A new
/// one per run: resumption tickets are kept per server name, and all three edges have the same.
pub fn config(
    pki: &TestPki,
    with_cert: bool,
    resumption: bool,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.ca_cert())? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots);
    let mut config = if with_cert {
        let chain =
            CertificateDer::pem_file_iter(pki.client.chain())?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(pki.client.key())?;
        builder.with_client_auth_cert(chain, key)?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = if resumption {
        Resumption::in_memory_sessions(1024)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<(Sender, Option<HandshakeKind>)> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(config.clone())
        .connect(ServerName::try_from(SERVER_NAME)?, tcp)
        .await?;
    let kind = tls.get_ref().1.handshake_kind();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, kind))
}

async fn send(sender: &mut Sender, path: &str) -> Result<Bytes> {
    let req = Request::get(path)
        .header(header::HOST, SERVER_NAME)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    ensure!(
        status.is_success(),
        "status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(body)
}

async fn one_request(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<String> {
    let work = async {
        let (mut sender, _) = connect(addr, config).await?;
        let body = send(&mut sender, path).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("timed out")?
}

/// Proves the edge does the job: with the client certificate the backend receives it in
/// `X-SSL-Client-Cert` with all four `X-Forwarded-*`; without one the edge serves nothing.
pub fn check_front(ns: &NetNs, front: &Front, pki: &TestPki) -> Result<()> {
    let addr = front.addr;
    let (client, anonymous) = (config(pki, true, false)?, config(pki, false, false)?);
    let (with, without) = ns.exec(move || {
        runtime(1)?.block_on(async move {
            let with = one_request(addr, &client, "/hdr").await;
            let without = one_request(addr, &anonymous, "/hdr").await;
            Ok::<_, anyhow::Error>((with, without))
        })
    })??;
    let body =
        with.with_context(|| format!("{}: request with the client certificate", front.name))?;
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    ensure!(
        value(CERT_HEADER).len() > 100,
        "{}: the backend got no certificate in {CERT_HEADER}: {body:?}",
        front.name
    );
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
    ] {
        ensure!(
            !value(name).is_empty(),
            "{}: the backend got no {name}: {body:?}",
            front.name
        );
    }
    ensure!(
        without.is_err(),
        "{}: served a client without a certificate: {without:?}",
        front.name
    );
    Ok(())
}

/// What a handshake run measured.
pub struct HandshakeRun {
    /// Connections that completed a handshake and one request.
    pub connections: u64,
    pub errors: u64,
    /// Of `connections`, those whose handshake resumed a session.
    pub resumed: u64,
    pub elapsed: Duration,
    pub latency: Latency,
}

/// One client per config against `addr` for `duration`, from inside `ns`, each opening a new
/// TCP + TLS connection for every request and closing it after the response. Each client has
/// a config (and so a ticket store) of its own, so that with resumption on every handshake
/// after its first can resume: clients sharing one store would race for its few tickets.
pub fn handshakes(
    ns: &NetNs,
    addr: SocketAddr,
    configs: Vec<Arc<rustls::ClientConfig>>,
    duration: Duration,
) -> Result<HandshakeRun> {
    ns.exec(move || {
        runtime(2)?.block_on(async move {
            let start = Instant::now();
            let deadline = start + duration;
            let tasks: Vec<_> = configs
                .into_iter()
                .map(|config| tokio::spawn(handshake_client(addr, config, deadline)))
                .collect();
            let (mut latencies, mut errors, mut resumed) = (Vec::new(), 0, 0);
            for task in tasks {
                let (lat, errs, res) = task.await?;
                latencies.extend(lat);
                errors += errs;
                resumed += res;
            }
            let elapsed = start.elapsed();
            latencies.sort_unstable();
            let at = |q: usize| {
                latencies
                    .get(latencies.len().saturating_sub(1) * q / 100)
                    .copied()
                    .unwrap_or_default()
            };
            Ok(HandshakeRun {
                connections: latencies.len() as u64,
                errors,
                resumed,
                elapsed,
                latency: Latency {
                    p50: at(50),
                    p99: at(99),
                },
            })
        })
    })?
}

/// One client: latencies, errors, resumed handshakes.
async fn handshake_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    deadline: Instant,
) -> (Vec<Duration>, u64, u64) {
    let (mut latencies, mut errors, mut resumed) = (Vec::with_capacity(1 << 14), 0u64, 0u64);
    while Instant::now() < deadline {
        let t = Instant::now();
        let result = async {
            let (mut s, kind) = connect(addr, &config).await?;
            send(&mut s, "/").await?;
            Ok::<_, anyhow::Error>(kind)
        };
        match tokio::time::timeout(Duration::from_secs(10), result).await {
            Ok(Ok(kind)) => {
                latencies.push(t.elapsed());
                if kind == Some(HandshakeKind::Resumed) {
                    resumed += 1;
                }
            }
            _ => errors += 1,
        }
    }
    (latencies, errors, resumed)
}

/// What holding many idle connections cost an edge.
pub struct IdleRun {
    pub opened: usize,
    pub errors: usize,
    pub took: Duration,
    /// The edge's resident memory with them all open, KiB.
    pub rss_kb: u64,
}

/// Opens `count` TLS connections to `addr` from `ns` (at most `parallel` handshakes at a time,
/// giving up after `limit`), sends one request on each and keeps them open and idle; then
/// `measure` reads the edge's memory, and they all close.
pub fn idle_connections(
    ns: &NetNs,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    count: usize,
    limit: Duration,
    measure: impl FnOnce() -> Result<u64> + Send + 'static,
) -> Result<IdleRun> {
    const PARALLEL: usize = 64;
    ns.exec(move || {
        runtime(2)?.block_on(async move {
            let start = Instant::now();
            let deadline = start + limit;
            let held = Arc::new(Mutex::new(Vec::with_capacity(count)));
            let gate = Arc::new(Semaphore::new(PARALLEL));
            let mut tasks = Vec::with_capacity(count);
            for _ in 0..count {
                let permit = gate.clone().acquire_owned().await?;
                if Instant::now() > deadline {
                    break;
                }
                let (held, config) = (held.clone(), config.clone());
                tasks.push(tokio::spawn(async move {
                    let _permit = permit;
                    let work = async {
                        let (mut s, _) = connect(addr, &config).await?;
                        send(&mut s, "/").await?;
                        Ok::<_, anyhow::Error>(s)
                    };
                    match tokio::time::timeout(Duration::from_secs(10), work).await {
                        Ok(Ok(s)) => {
                            held.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(s);
                            true
                        }
                        _ => false,
                    }
                }));
            }
            let mut errors = 0;
            for t in tasks {
                if !t.await? {
                    errors += 1;
                }
            }
            let took = start.elapsed();
            // Let the edge settle (buffers released after the last response).
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rss_kb = tokio::task::spawn_blocking(measure).await??;
            let opened = held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len();
            Ok(IdleRun {
                opened,
                errors,
                took,
                rss_kb,
            })
        })
    })?
}
