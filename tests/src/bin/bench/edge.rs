//! `cargo xtask bench edge`: sluice's edge listener beside Debian's nginx and haproxy doing the
//! same job in the same run: terminate TLS with the same server certificate, require and verify a
//! client certificate against the same CA, put the client certificate in a request header, and
//! proxy to the same plain-HTTP backend (Debian's nginx answering a static `200`).
//!
//! ```text
//!  slbe-client              slbe-gw                                   slbe-b0
//!  load client ──TLS──►  198.18.0.1:8443 sluice run (edge listener)
//!  (tokio + rustls,      198.18.0.1:8444 nginx  (ssl_verify_client on)   ─HTTP─► nginx :8080
//!   hyper client)        198.18.0.1:8445 haproxy (verify required)               return 200
//! ```
//!
//! wrk and h2load cannot present client certificates, so the load comes from a small client
//! here: `CONNS` connections, each either keeping one TLS connection alive and sending requests
//! back to back (requests/s, p99 latency), or opening a new TCP + TLS connection for every
//! request with session resumption off (full handshakes/s). Front ends run A/B/C/A/B/C for a
//! fixed time each; the front end's CPU time (its whole process tree, from `/proc/<pid>/stat`)
//! per request is reported beside the rates, and every ratio is against nginx of the same run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{header, Request};
use hyper_util::rt::TokioIo;
use sluice_tests::{
    certs::TestPki,
    daemon::{Daemon, Scratch},
    topology::{backend_addr4, GW_CLIENT_ADDR4, GW_CLIENT_IFNAME},
    ChildGuard, NetNs, Topology, VIP4,
};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{
    self,
    client::Resumption,
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName},
};
use tokio_rustls::TlsConnector;

const PREFIX: &str = "slbe";
const SERVER_NAME: &str = "kc.test";
const BACKEND_PORT: u16 = 8080;
/// Concurrent client connections.
const CONNS: usize = 16;
/// Measured time per front end, mode and round.
const RUN: Duration = Duration::from_secs(5);
/// Unmeasured load before each measured keep-alive run.
const WARMUP: Duration = Duration::from_secs(1);
const ROUNDS: usize = 2;
const START_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    /// One TLS connection per client, requests back to back.
    KeepAlive,
    /// A new TCP + full TLS handshake (no resumption) for every request.
    NewConnection,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::NewConnection => "new conn",
        }
    }
}

/// One measured run.
struct Sample {
    front: &'static str,
    mode: Mode,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    p99: Duration,
    cpu: Duration,
}

impl Sample {
    fn rate(&self) -> f64 {
        count_f64(self.requests) / self.elapsed.as_secs_f64()
    }

    fn cpu_per_request(&self) -> Duration {
        if self.requests == 0 {
            return Duration::ZERO;
        }
        self.cpu / u32::try_from(self.requests).unwrap_or(u32::MAX)
    }
}

#[expect(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
fn count_f64(n: u64) -> f64 {
    n as f64
}

/// A front end under test: a process tree in the gateway namespace.
struct Front {
    name: &'static str,
    addr: SocketAddr,
    /// The header that must carry the client certificate to the backend.
    cert_header: &'static str,
    pid: u32,
    _process: Process,
}

/// Kept to stop the front end when it drops.
enum Process {
    Sluice { _daemon: Box<Daemon> },
    Other { _guard: ChildGuard },
}

pub fn run() -> Result<()> {
    let topo = Topology::build(PREFIX, 1).context("build the namespaces")?;
    let scratch = Scratch::create("bench-edge")?;
    let dir = scratch.path();
    let pki = TestPki::generate(&dir.join("pki"), &[SERVER_NAME])?;

    let backend = spawn_nginx(topo.backend(0), &dir.join("backend"), &backend_nginx_conf())?;
    wait_listening(
        topo.client(),
        SocketAddr::new(backend_addr4(0).into(), BACKEND_PORT),
    )?;

    let fronts = vec![
        start_sluice(&topo, dir, &pki)?,
        start_nginx_front(&topo, dir, &pki)?,
        start_haproxy_front(&topo, dir, &pki)?,
    ];
    let client = Arc::new(client_config(&pki, true)?);
    let anonymous = Arc::new(client_config(&pki, false)?);
    for front in &fronts {
        wait_listening(topo.client(), front.addr)?;
        check_front(topo.client(), front, &client, &anonymous)?;
    }
    println!(
        "edge bench: {CONNS} connections, {}s per run after {}s warm-up, {ROUNDS} rounds; \
         backend: Debian nginx `return 200` (keep-alive upstream)",
        RUN.as_secs(),
        WARMUP.as_secs()
    );

    let mut samples = Vec::new();
    for round in 1..=ROUNDS {
        for front in &fronts {
            for mode in [Mode::KeepAlive, Mode::NewConnection] {
                if mode == Mode::KeepAlive {
                    load(topo.client(), front.addr, &client, mode, WARMUP)?;
                }
                let before = tree_cpu(front.pid)?;
                let result = load(topo.client(), front.addr, &client, mode, RUN)?;
                let cpu = tree_cpu(front.pid)?.saturating_sub(before);
                let sample = Sample {
                    front: front.name,
                    mode,
                    requests: result.requests,
                    errors: result.errors,
                    elapsed: result.elapsed,
                    p99: result.p99,
                    cpu,
                };
                eprintln!(
                    "round {round} {:<8} {:<10} {:>9.0}/s p99 {:>6.2} ms cpu {:>6.1} µs/req errors {}",
                    sample.front,
                    mode.name(),
                    sample.rate(),
                    ms(sample.p99),
                    micros(sample.cpu_per_request()),
                    sample.errors
                );
                samples.push(sample);
            }
        }
    }
    print_table(&samples);
    drop(fronts);
    drop(backend);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_table(samples: &[Sample]) {
    let mean = |front: &str, mode: Mode, f: &dyn Fn(&Sample) -> f64| -> f64 {
        let picked: Vec<f64> = samples
            .iter()
            .filter(|s| s.front == front && s.mode == mode)
            .map(f)
            .collect();
        #[expect(clippy::cast_precision_loss, reason = "a handful of rounds")]
        let n = picked.len().max(1) as f64;
        picked.iter().sum::<f64>() / n
    };
    let mut fronts: Vec<&str> = Vec::new();
    for s in samples {
        if !fronts.contains(&s.front) {
            fronts.push(s.front);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<8} {:<10} {:>10} {:>8} {:>11} {:>8} {:>8} {:>9} {:>7}",
        "front", "mode", "req/s", "p99 ms", "cpu µs/req", "× req/s", "× p99", "× cpu/req", "errors"
    );
    for mode in [Mode::KeepAlive, Mode::NewConnection] {
        let base_rate = mean("nginx", mode, &Sample::rate);
        let base_p99 = mean("nginx", mode, &|s| ms(s.p99));
        let base_cpu = mean("nginx", mode, &|s| micros(s.cpu_per_request()));
        for front in &fronts {
            let rate = mean(front, mode, &Sample::rate);
            let p99 = mean(front, mode, &|s| ms(s.p99));
            let cpu = mean(front, mode, &|s| micros(s.cpu_per_request()));
            let errors: u64 = samples
                .iter()
                .filter(|s| s.front == *front && s.mode == mode)
                .map(|s| s.errors)
                .sum();
            let _ = writeln!(
                out,
                "{:<8} {:<10} {:>10.0} {:>8.2} {:>11.1} {:>8.2} {:>8.2} {:>9.2} {:>7}",
                front,
                mode.name(),
                rate,
                p99,
                cpu,
                rate / base_rate,
                p99 / base_p99,
                cpu / base_cpu,
                errors
            );
        }
    }
    let _ = writeln!(
        out,
        "(means of {ROUNDS} A/B/C rounds; × = ratio to nginx in this run; \"new conn\" = one \
         request per full TLS 1.3 handshake with a client certificate, no resumption; cpu = the \
         front end's process tree, user + system)"
    );
    print!("{out}");
}

// ---- front ends ------------------------------------------------------------------------------

fn start_sluice(topo: &Topology, dir: &Path, pki: &TestPki) -> Result<Front> {
    let addr = SocketAddr::new(GW_CLIENT_ADDR4.into(), 8443);
    let sdir = dir.join("sluice");
    fs::create_dir_all(&sdir)?;
    let instance = "bench-edge";
    let text = format!(
        "instance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\n\
         conntrack_entries = 65536\n\n[admin]\nsocket = \"{}\"\n\n[management]\n\
         address = \"127.0.0.1:9019\"\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n\n[[vip]]\nname = \"web\"\n\
         address = \"{VIP4}:80\"\n[[vip.backend]]\naddress = \"{}\"\n\n\
         [[edge]]\nname = \"bench\"\naddress = \"{addr}\"\npool = \"web\"\n\
         backend_port = {BACKEND_PORT}\nclient_cert_header = [\"nginx\"]\n\n[edge.tls]\n\
         certificates = [{{ cert = \"{}\", key = \"{}\" }}]\nclient_auth = \"required\"\n\
         client_ca = \"{}\"\n",
        Daemon::socket_in(&sdir).display(),
        backend_addr4(0),
        pki.server_cert().display(),
        pki.server_key().display(),
        pki.ca_cert().display(),
    );
    let daemon = Daemon::start(topo.gateway(), &sdir, instance, &text)?;
    let pid = daemon.pid().context("sluice has no pid")?;
    Ok(Front {
        name: "sluice",
        addr,
        cert_header: "ssl-client-cert",
        pid,
        _process: Process::Sluice {
            _daemon: Box::new(daemon),
        },
    })
}

fn start_nginx_front(topo: &Topology, dir: &Path, pki: &TestPki) -> Result<Front> {
    let addr = SocketAddr::new(GW_CLIENT_ADDR4.into(), 8444);
    let conf = format!(
        "http {{\n  access_log off;\n  upstream be {{ server {}:{BACKEND_PORT}; keepalive 64; }}\n\
         \x20 server {{\n    listen {addr} ssl;\n    server_name {SERVER_NAME};\n\
         \x20   ssl_certificate {};\n    ssl_certificate_key {};\n\
         \x20   ssl_client_certificate {};\n    ssl_verify_client on;\n    ssl_verify_depth 3;\n\
         \x20   ssl_session_cache off;\n    ssl_session_tickets off;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   location / {{\n      proxy_pass http://be;\n      proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         \x20     proxy_set_header ssl-client-cert $ssl_client_escaped_cert;\n\
         \x20     proxy_set_header ssl-client-verify $ssl_client_verify;\n\
         \x20     proxy_set_header X-Forwarded-For $remote_addr;\n\
         \x20     proxy_set_header X-Forwarded-Proto https;\n    }}\n  }}\n}}\n",
        backend_addr4(0),
        pki.server_cert().display(),
        pki.server_key().display(),
        pki.ca_cert().display(),
    );
    let guard = spawn_nginx(topo.gateway(), &dir.join("nginx-front"), &conf)?;
    let pid = guard.id().context("nginx has no pid")?;
    Ok(Front {
        name: "nginx",
        addr,
        cert_header: "ssl-client-cert",
        pid,
        _process: Process::Other { _guard: guard },
    })
}

fn start_haproxy_front(topo: &Topology, dir: &Path, pki: &TestPki) -> Result<Front> {
    let addr = SocketAddr::new(GW_CLIENT_ADDR4.into(), 8445);
    let hdir = dir.join("haproxy");
    fs::create_dir_all(&hdir)?;
    // haproxy wants the chain and its key in one file.
    let crt = hdir.join("server.pem");
    let mut pem = fs::read_to_string(pki.server_cert())?;
    pem.push_str(&fs::read_to_string(pki.server_key())?);
    fs::write(&crt, pem)?;
    let conf = format!(
        "global\n    maxconn 4096\n    tune.ssl.cachesize 0\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n\
         \x20   timeout server 30s\n    option http-keep-alive\n\n\
         frontend fe\n    bind {addr} ssl crt {} ca-file {} verify required alpn http/1.1 no-tls-tickets\n\
         \x20   http-request set-header X-SSL-Client-Cert %[ssl_c_der,base64]\n\
         \x20   http-request set-header X-Forwarded-Proto https\n    option forwardfor\n\
         \x20   default_backend be\n\n\
         backend be\n    http-reuse always\n    server s1 {}:{BACKEND_PORT}\n",
        crt.display(),
        pki.ca_cert().display(),
        backend_addr4(0),
    );
    let cfg = hdir.join("haproxy.cfg");
    fs::write(&cfg, conf)?;
    let guard = spawn_in(
        topo.gateway(),
        &["haproxy", "-db", "-f", &cfg.display().to_string()],
        &hdir.join("haproxy.log"),
    )?;
    let pid = guard.id().context("haproxy has no pid")?;
    Ok(Front {
        name: "haproxy",
        addr,
        cert_header: "x-ssl-client-cert",
        pid,
        _process: Process::Other { _guard: guard },
    })
}

/// The backend: answers `/` with a static 200 and `/hdr` with the certificate headers it got.
fn backend_nginx_conf() -> String {
    format!(
        "http {{\n  access_log off;\n  server {{\n    listen {}:{BACKEND_PORT} reuseport;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   location / {{ return 200 \"ok\\n\"; }}\n\
         \x20   location /hdr {{ return 200 \"ssl-client-cert=$http_ssl_client_cert\\n\
         x-ssl-client-cert=$http_x_ssl_client_cert\\n\"; }}\n  }}\n}}\n",
        backend_addr4(0)
    )
}

/// Debian's nginx in `ns` with `http_block` as its `http {}` (and a prefix of its own).
fn spawn_nginx(ns: &NetNs, prefix: &Path, http_block: &str) -> Result<ChildGuard> {
    fs::create_dir_all(prefix.join("logs"))?;
    let conf = format!(
        "daemon off;\nuser root;\nworker_processes auto;\npid {}/nginx.pid;\n\
         error_log {}/logs/error.log warn;\nevents {{ worker_connections 4096; }}\n{}",
        prefix.display(),
        prefix.display(),
        http_block.replace(
            "http {\n",
            &format!(
                "http {{\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
                 \x20 fastcgi_temp_path {p}/fcgi;\n  uwsgi_temp_path {p}/uwsgi;\n\
                 \x20 scgi_temp_path {p}/scgi;\n",
                p = prefix.display()
            )
        ),
    );
    let path = prefix.join("nginx.conf");
    fs::write(&path, conf)?;
    spawn_in(
        ns,
        &[
            "nginx",
            "-p",
            &prefix.display().to_string(),
            "-c",
            &path.display().to_string(),
        ],
        &prefix.join("logs/stderr.log"),
    )
}

/// Starts `args` in `ns` (`ip netns exec` execs it, so the pid is the program's), output to
/// `log`; it gets SIGTERM if this process dies.
fn spawn_in(ns: &NetNs, args: &[&str], log: &Path) -> Result<ChildGuard> {
    let out = fs::File::create(log)?;
    let mut cmd: Command = ns.command(args);
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {args:?} in {}", ns.name()))?;
    Ok(ChildGuard::new(child))
}

/// Waits until `addr` accepts TCP connections from `ns`.
fn wait_listening(ns: &NetNs, addr: SocketAddr) -> Result<()> {
    ns.exec(|| {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nothing listens on {addr} after {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })?
}

/// Proves the front end does the job: with the client certificate the backend receives it in
/// `cert_header`; without one the front end serves nothing.
fn check_front(
    ns: &NetNs,
    front: &Front,
    client: &Arc<rustls::ClientConfig>,
    anonymous: &Arc<rustls::ClientConfig>,
) -> Result<()> {
    let (addr, client, anonymous) = (front.addr, client.clone(), anonymous.clone());
    let (with, without) = ns.exec(move || {
        runtime(1)?.block_on(async move {
            let with = one_request(addr, &client, "/hdr").await;
            let without = one_request(addr, &anonymous, "/hdr").await;
            Ok::<_, anyhow::Error>((with, without))
        })
    })??;
    let body =
        with.with_context(|| format!("{}: request with the client certificate", front.name))?;
    let line = body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{}=", front.cert_header)))
        .unwrap_or_default();
    ensure!(
        line.len() > 100,
        "{}: the backend got no certificate in {}: {body:?}",
        front.name,
        front.cert_header
    );
    ensure!(
        without.is_err(),
        "{}: served a client without a certificate: {without:?}",
        front.name
    );
    Ok(())
}

// ---- load client ----------------------------------------------------------------------------

fn client_config(pki: &TestPki, with_cert: bool) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.ca_cert())? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
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
    // Every new connection is a full handshake with the client certificate.
    config.resumption = Resumption::disabled();
    Ok(config)
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(config.clone())
        .connect(ServerName::try_from(SERVER_NAME)?, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send(sender: &mut Sender, path: &str) -> Result<Bytes> {
    let req = Request::get(path)
        .header(header::HOST, SERVER_NAME)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    ensure!(status.is_success(), "status {status}");
    Ok(body)
}

async fn one_request(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<String> {
    let work = async {
        let mut sender = connect(addr, config).await?;
        let body = send(&mut sender, path).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("timed out")?
}

struct LoadResult {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    p99: Duration,
}

/// `CONNS` clients against `addr` for `duration`, from inside `ns`.
fn load(
    ns: &NetNs,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    mode: Mode,
    duration: Duration,
) -> Result<LoadResult> {
    let config = config.clone();
    ns.exec(move || {
        runtime(2)?.block_on(async move {
            let start = Instant::now();
            let deadline = start + duration;
            let tasks: Vec<_> = (0..CONNS)
                .map(|_| tokio::spawn(worker(addr, config.clone(), mode, deadline)))
                .collect();
            let (mut requests, mut errors, mut latencies) = (0, 0, Vec::new());
            for task in tasks {
                let (lat, errs) = task.await?;
                requests += lat.len() as u64;
                errors += errs;
                latencies.extend(lat);
            }
            let elapsed = start.elapsed();
            latencies.sort_unstable();
            let p99 = latencies
                .get(latencies.len() * 99 / 100)
                .copied()
                .unwrap_or_default();
            Ok(LoadResult {
                requests,
                errors,
                elapsed,
                p99,
            })
        })
    })?
}

/// One client: its latencies and its error count.
async fn worker(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    mode: Mode,
    deadline: Instant,
) -> (Vec<Duration>, u64) {
    let (mut latencies, mut errors) = (Vec::with_capacity(1 << 16), 0u64);
    let mut sender: Option<Sender> = None;
    while Instant::now() < deadline {
        let t = Instant::now();
        let result = async {
            let mut s = match sender.take() {
                Some(s) if mode == Mode::KeepAlive => s,
                _ => connect(addr, &config).await?,
            };
            send(&mut s, "/").await?;
            Ok::<_, anyhow::Error>(s)
        };
        match tokio::time::timeout(Duration::from_secs(10), result).await {
            Ok(Ok(s)) => {
                latencies.push(t.elapsed());
                if mode == Mode::KeepAlive {
                    sender = Some(s);
                }
            }
            _ => errors += 1,
        }
    }
    (latencies, errors)
}

// ---- CPU time from /proc -------------------------------------------------------------------

/// User + system CPU time of `root` and all its descendants (threads included).
fn tree_cpu(root: u32) -> Result<Duration> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue; // exited meanwhile
        };
        // Fields after the command name, which may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(ppid), Some(u), Some(s)) = (field(4), field(14), field(15)) {
            parent.insert(pid, u32::try_from(ppid).unwrap_or(0));
            ticks.insert(pid, u + s);
        }
    }
    let in_tree = |mut pid: u32| loop {
        if pid == root {
            return true;
        }
        match parent.get(&pid) {
            Some(&p) if p != 0 && p != pid => pid = p,
            _ => return false,
        }
    };
    let total: u64 = ticks
        .iter()
        .filter(|(pid, _)| in_tree(**pid))
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    Ok(Duration::from_micros(total * 1_000_000 / hz.max(1)))
}
