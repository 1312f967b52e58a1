//! The three edges configured for the same job, and the backend behind them.
//!
//! The job: TLS (1.3 with every client here) with the same server certificate; a client
//! certificate required and verified against the same CA; the verified certificate sent to the
//! backend in `X-SSL-Client-Cert`; `X-Forwarded-For/Proto/Host/Port` set; session resumption
//! available (for the resumed-handshake row); kept-alive, reused connections to the backend.
//! Each is left at what its operator's guide would set and otherwise at its defaults (worker
//! processes / threads: one per CPU for all three).

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use sluice_tests::daemon::spawn_tied;
use sluice_tests::{
    certs::TestPki,
    daemon::Daemon,
    topology::{backend_addr4, GW_CLIENT_ADDR4, GW_CLIENT_IFNAME},
    ChildGuard, NetNs, Topology, VIP4,
};

pub const SERVER_NAME: &str = "kc.test";
pub const BACKEND_PORT: u16 = 8080;
/// The backend's `stub_status`, on its loopback so no edge ever reaches it.
const STATUS_PORT: u16 = 8090;
/// The header every edge puts the client certificate in (`HAProxy`'s name, and its base64 DER;
/// nginx has no base64 of the DER, so it sends `$ssl_client_escaped_cert`, as its guide does).
pub const CERT_HEADER: &str = "x-ssl-client-cert";
/// Connections an edge must hold at once: the idle-connection measurement plus headroom.
const MAX_CONNS: usize = 30_000;
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The forward-auth row's auth service: the backend nginx answering as oauth2-proxy's
/// `/oauth2/auth` does (202 with `X-Auth-Request-*` and `Authorization` for the session
/// cookie, 401 without), the same service for every edge.
const AUTH_PORT: u16 = 4180;
/// Routes (nginx: locations) of the forward-auth row's listener, each with cookie-hash
/// affinity and forward auth.
pub const AUTH_ROUTES: usize = 20;
/// What the forward-auth row's client sends: a session cookie the auth service accepts and
/// the affinity cookie.
pub const AUTH_COOKIE: &str = "Cookie: _oauth2_proxy=alice; sid=4f2a9c17";
/// The forward-auth row's path: under the last route, the worst case for a table scanned in
/// order.
pub const AUTH_PATH: &str = "/svc19/x";

/// An edge under test: a process tree in the gateway namespace.
pub struct Front {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// The listener with the forward-auth row's route table, when the edge has one.
    pub auth_addr: Option<SocketAddr>,
    pub pid: u32,
    /// Where its errors go, to show when it does not start.
    pub log: PathBuf,
    _process: Process,
}

/// Kept to stop the edge when it drops.
enum Process {
    Sluice { _daemon: Box<Daemon> },
    Other { _guard: ChildGuard },
}

/// The backend: Debian's nginx answering `/` with a static 200 when the request carries the
/// certificate header (403 without, so a run where the certificate did not get through shows up
/// as errors in the load generator's count), and `/hdr` with the headers the edge set.
pub struct Backend {
    pub pid: u32,
    /// `stub_status` requests so far: each is a connection the counters include.
    queries: std::cell::Cell<u64>,
    _guard: ChildGuard,
}

/// The backend's connection counters (`stub_status`).
#[derive(Clone, Copy, Debug)]
pub struct BackendConns {
    /// Connections accepted since the start.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
}

impl Backend {
    pub fn start(topo: &Topology, dir: &Path) -> Result<Self> {
        let conf = format!(
            "http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n\
             \x20 server {{\n    listen {be}:{BACKEND_PORT} reuseport;\n\
             \x20   location / {{\n      if ($http_x_ssl_client_cert = \"\") {{ return 403 \"no {CERT_HEADER}\\n\"; }}\n\
             \x20     return 200 \"ok\\n\";\n    }}\n\
             \x20   location = /hdr {{ return 200 \"{CERT_HEADER}=$http_x_ssl_client_cert\\n\
             x-forwarded-for=$http_x_forwarded_for\\nx-forwarded-proto=$http_x_forwarded_proto\\n\
             x-forwarded-host=$http_x_forwarded_host\\nx-forwarded-port=$http_x_forwarded_port\\n\"; }}\n\
             \x20   location /svc {{\n\
             \x20     if ($http_x_ssl_client_cert = \"\") {{ return 403 \"no {CERT_HEADER}\\n\"; }}\n\
             \x20     if ($http_x_auth_request_user != \"alice\") {{ return 403 \"no identity\\n\"; }}\n\
             \x20     return 200 \"ok\\n\";\n    }}\n\
             \x20 }}\n  server {{\n    listen {be}:{AUTH_PORT} reuseport;\n\
             \x20   location = /oauth2/auth {{\n\
             \x20     if ($cookie__oauth2_proxy != \"alice\") {{ return 401; }}\n\
             \x20     add_header X-Auth-Request-User alice always;\n\
             \x20     add_header X-Auth-Request-Email alice@example.test always;\n\
             \x20     add_header X-Auth-Request-Groups admins always;\n\
             \x20     add_header X-Auth-Request-Preferred-Username alice always;\n\
             \x20     add_header X-Auth-Request-Access-Token token-alice always;\n\
             \x20     add_header Authorization \"Bearer token-alice\" always;\n\
             \x20     return 202;\n    }}\n  }}\n\
             \x20 server {{\n    listen 127.0.0.1:{STATUS_PORT};\n    location / {{ stub_status; }}\n  }}\n}}\n",
            be = backend_addr4(0),
        );
        let ns = topo.backend(0);
        let guard = spawn_nginx(ns, &dir.join("backend"), &conf)?;
        let pid = guard.id().context("the backend nginx has no pid")?;
        let backend = Self {
            pid,
            queries: std::cell::Cell::new(0),
            _guard: guard,
        };
        wait_listening(ns, SocketAddr::new(backend_addr4(0).into(), BACKEND_PORT))?;
        wait_listening(ns, SocketAddr::new(backend_addr4(0).into(), AUTH_PORT))?;
        wait_listening(ns, SocketAddr::from(([127, 0, 0, 1], STATUS_PORT)))?;
        Ok(backend)
    }

    /// The counters now, not counting the connections that asked for them.
    pub fn conns(&self, topo: &Topology) -> Result<BackendConns> {
        let ns = topo.backend(0);
        self.queries.set(self.queries.get() + 1);
        let text = ns.exec(|| -> Result<String> {
            use std::io::{Read as _, Write as _};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", STATUS_PORT))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })??;
        let raw =
            parse_stub_status(&text).with_context(|| format!("reading stub_status:\n{text}"))?;
        Ok(BackendConns {
            accepted: raw.accepted.saturating_sub(self.queries.get()),
            // This query's connection is the only one of them still open.
            open: raw.open.saturating_sub(1),
        })
    }
}

/// `Active connections: 3 \nserver accepts handled requests\n 10 10 25 \n...`, as nginx counts
/// them.
fn parse_stub_status(text: &str) -> Result<BackendConns> {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or(text);
    let mut lines = body.lines();
    let open: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("Active connections:"))
        .and_then(|n| n.trim().parse().ok())
        .context("no `Active connections:` line")?;
    let accepted: u64 = lines
        .nth(1)
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("no accepts count")?;
    Ok(BackendConns { accepted, open })
}

pub fn start_sluice(topo: &Topology, dir: &Path, pki: &TestPki, instance: &str) -> Result<Front> {
    let addr = SocketAddr::new(GW_CLIENT_ADDR4.into(), 8443);
    let auth_addr = SocketAddr::new(GW_CLIENT_ADDR4.into(), 8446);
    let sdir = dir.join("sluice");
    fs::create_dir_all(&sdir)?;
    let text = format!(
        "instance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\n\
         conntrack_entries = 65536\n\n[admin]\nsocket = \"{}\"\n\n[management]\n\
         address = \"127.0.0.1:9019\"\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n\n[[vip]]\nname = \"web\"\n\
         address = \"{VIP4}:80\"\n[[vip.backend]]\naddress = \"{}\"\n\n\
         [[edge]]\nname = \"bench\"\naddress = \"{addr}\"\npool = \"web\"\n\
         backend_port = {BACKEND_PORT}\nclient_cert_header = [\"haproxy\"]\n\
         forwarded_headers = [\"x-forwarded\"]\nmax_connections = {MAX_CONNS}\n\n[edge.tls]\n\
         certificates = [{{ cert = \"{}\", key = \"{}\" }}]\nclient_auth = \"required\"\n\
         client_ca = \"{}\"\n{}",
        Daemon::socket_in(&sdir).display(),
        backend_addr4(0),
        pki.server_cert().display(),
        pki.server_key().display(),
        pki.ca_cert().display(),
        sluice_auth_listener(auth_addr, pki),
    );
    let daemon = Daemon::start(topo.gateway(), &sdir, instance, &text)?;
    let pid = daemon.pid().context("sluice has no pid")?;
    Ok(Front {
        name: "sluice",
        addr,
        auth_addr: Some(auth_addr),
        pid,
        log: sdir.join("sluice.log"),
        _process: Process::Sluice {
            _daemon: Box::new(daemon),
        },
    })
}

pub fn start_nginx(topo: &Topology, dir: &Path, pki: &TestPki) -> Result<Front> {
    let addr = SocketAddr::new(GW_CLIENT_ADDR4.into(), 8444);
    let auth_addr = SocketAddr::new(GW_CLIENT_ADDR4.into(), 8447);
    // nginx 1.22: `http2` on `listen`; keepalive_requests also bounds HTTP/2 streams per
    // connection (1000 by default, which would reconnect every 1000 requests). `keepalive`:
    // idle backend connections each worker keeps, above the most requests ever in flight
    // (50 connections × 10 streams), so none is closed in steady state.
    let conf = format!(
        "http {{\n  access_log off;\n\
         \x20 upstream be {{ server {be}:{BACKEND_PORT}; keepalive 512; }}\n\
         \x20 ssl_session_cache shared:bench:20m;\n  ssl_session_tickets on;\n\
         \x20 server {{\n    listen {addr} ssl http2;\n    server_name {SERVER_NAME};\n\
         \x20   ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20   ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
         \x20   ssl_client_certificate {ca};\n    ssl_verify_client on;\n    ssl_verify_depth 3;\n\
         \x20   keepalive_requests 1000000;\n    keepalive_timeout 75s;\n\
         \x20   location / {{\n      proxy_pass http://be;\n      proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n      proxy_set_header Host $http_host;\n\
         \x20     proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;\n\
         \x20     proxy_set_header X-Forwarded-For $remote_addr;\n\
         \x20     proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20     proxy_set_header X-Forwarded-Host $host;\n\
         \x20     proxy_set_header X-Forwarded-Port $server_port;\n    }}\n  }}\n{auth}}}\n",
        be = backend_addr4(0),
        cert = pki.server_cert().display(),
        key = pki.server_key().display(),
        ca = pki.ca_cert().display(),
        auth = nginx_auth_server(auth_addr, pki),
    );
    let guard = spawn_nginx(topo.gateway(), &dir.join("nginx-front"), &conf)?;
    let pid = guard.id().context("nginx has no pid")?;
    Ok(Front {
        name: "nginx",
        addr,
        auth_addr: Some(auth_addr),
        pid,
        log: dir.join("nginx-front/logs/error.log"),
        _process: Process::Other { _guard: guard },
    })
}

pub fn start_haproxy(topo: &Topology, dir: &Path, pki: &TestPki) -> Result<Front> {
    let addr = SocketAddr::new(GW_CLIENT_ADDR4.into(), 8445);
    let hdir = dir.join("haproxy");
    fs::create_dir_all(&hdir)?;
    // haproxy wants the chain and its key in one file.
    let crt = hdir.join("server.pem");
    let mut pem = fs::read_to_string(pki.server_cert())?;
    pem.push_str(&fs::read_to_string(pki.server_key())?);
    fs::write(&crt, pem)?;
    // Session cache and tickets at their defaults (on); `http-reuse always` shares idle backend
    // connections between client connections; keep-alive timeouts as nginx's and sluice's.
    // haproxy wants two descriptors per `maxconn`, more than a machine with a hard limit of
    // 20000 gives; `no strict-limits` runs it with what there is (one per idle connection).
    let conf = format!(
        "global\n    maxconn {MAX_CONNS}\n    no strict-limits\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 75s\n\
         \x20   timeout server 30s\n    timeout http-keep-alive 75s\n    option http-keep-alive\n\n\
         frontend fe\n    bind {addr} ssl crt {crt} ca-file {ca} verify required alpn h2,http/1.1\n\
         \x20   http-request set-header X-SSL-Client-Cert %[ssl_c_der,base64]\n\
         \x20   http-request set-header X-Forwarded-For %[src]\n\
         \x20   http-request set-header X-Forwarded-Proto https\n\
         \x20   http-request set-header X-Forwarded-Host %[req.hdr(host)]\n\
         \x20   http-request set-header X-Forwarded-Port %[dst_port]\n\
         \x20   default_backend be\n\n\
         backend be\n    http-reuse always\n    server s1 {be}:{BACKEND_PORT}\n",
        crt = crt.display(),
        ca = pki.ca_cert().display(),
        be = backend_addr4(0),
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
        auth_addr: None,
        pid,
        log: hdir.join("haproxy.log"),
        _process: Process::Other { _guard: guard },
    })
}

/// sluice's listener for the forward-auth row: the same TLS and headers as the bench
/// listener, and [`AUTH_ROUTES`] routes, each with cookie-hash affinity and forward auth (the
/// 401 passed through, as nginx's `auth_request` does).
fn sluice_auth_listener(addr: SocketAddr, pki: &TestPki) -> String {
    let mut text = format!(
        "\n[[edge]]\nname = \"bench-auth\"\naddress = \"{addr}\"\npool = \"web\"\n\
         backend_port = {BACKEND_PORT}\nclient_cert_header = [\"haproxy\"]\n\
         forwarded_headers = [\"x-forwarded\"]\nmax_connections = 1000\n"
    );
    for i in 0..AUTH_ROUTES {
        let _ = write!(
            text,
            "[[edge.route]]\nname = \"svc{i:02}\"\npath = \"/svc{i:02}\"\n\
             affinity = {{ mode = \"cookie-hash\", cookie = \"sid\" }}\n\
             auth = {{ url = \"http://{be}:{AUTH_PORT}/oauth2/auth\", on_unauthorized = \"pass\" }}\n",
            be = backend_addr4(0),
        );
    }
    let _ = write!(
        text,
        "[edge.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
         client_auth = \"required\"\nclient_ca = \"{}\"\n",
        pki.server_cert().display(),
        pki.server_key().display(),
        pki.ca_cert().display(),
    );
    text
}

/// nginx's server for the forward-auth row: [`AUTH_ROUTES`] locations, each with
/// `auth_request` (the subrequest as oauth2-proxy's guide writes it, over kept-alive
/// connections), the six identity headers copied with `auth_request_set`, and an upstream
/// hashed on the affinity cookie.
fn nginx_auth_server(addr: SocketAddr, pki: &TestPki) -> String {
    let be = backend_addr4(0);
    let copied = [
        ("au_user", "x_auth_request_user", "X-Auth-Request-User"),
        ("au_email", "x_auth_request_email", "X-Auth-Request-Email"),
        (
            "au_groups",
            "x_auth_request_groups",
            "X-Auth-Request-Groups",
        ),
        (
            "au_name",
            "x_auth_request_preferred_username",
            "X-Auth-Request-Preferred-Username",
        ),
        (
            "au_token",
            "x_auth_request_access_token",
            "X-Auth-Request-Access-Token",
        ),
        ("au_authz", "authorization", "Authorization"),
    ];
    let mut text = format!(
        "  upstream be_aff {{ hash $cookie_sid consistent; server {be}:{BACKEND_PORT}; \
         keepalive 512; }}\n\
         \x20 upstream auth {{ server {be}:{AUTH_PORT}; keepalive 512; }}\n\
         \x20 server {{\n    listen {addr} ssl http2;\n    server_name {SERVER_NAME};\n\
         \x20   ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20   ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
         \x20   ssl_client_certificate {ca};\n    ssl_verify_client on;\n    ssl_verify_depth 3;\n\
         \x20   keepalive_requests 1000000;\n    keepalive_timeout 75s;\n\
         \x20   location = /oauth2/auth {{\n      internal;\n      proxy_pass http://auth;\n\
         \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         \x20     proxy_pass_request_body off;\n      proxy_set_header Content-Length \"\";\n\
         \x20     proxy_set_header Host {be}:{AUTH_PORT};\n\
         \x20     proxy_set_header X-Forwarded-Method $request_method;\n\
         \x20     proxy_set_header X-Forwarded-Uri $request_uri;\n\
         \x20     proxy_set_header X-Forwarded-Host $host;\n\
         \x20     proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20     proxy_set_header X-Forwarded-For $remote_addr;\n    }}\n",
        cert = pki.server_cert().display(),
        key = pki.server_key().display(),
        ca = pki.ca_cert().display(),
    );
    for i in 0..AUTH_ROUTES {
        let _ = writeln!(
            text,
            "    location /svc{i:02}/ {{\n      auth_request /oauth2/auth;"
        );
        for (var, upstream, _) in copied {
            let _ = writeln!(
                text,
                "      auth_request_set ${var} $upstream_http_{upstream};"
            );
        }
        text.push_str(
            "      proxy_pass http://be_aff;\n      proxy_http_version 1.1;\n\
             \x20     proxy_set_header Connection \"\";\n      proxy_set_header Host $http_host;\n\
             \x20     proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;\n\
             \x20     proxy_set_header X-Forwarded-For $remote_addr;\n\
             \x20     proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20     proxy_set_header X-Forwarded-Host $host;\n\
             \x20     proxy_set_header X-Forwarded-Port $server_port;\n",
        );
        for (var, _, header) in copied {
            let _ = writeln!(text, "      proxy_set_header {header} ${var};");
        }
        text.push_str("    }\n");
    }
    text.push_str("  }\n");
    text
}

/// Debian's nginx in `ns` with `http_block` as its `http {}` (and a prefix of its own).
fn spawn_nginx(ns: &NetNs, prefix: &Path, http_block: &str) -> Result<ChildGuard> {
    fs::create_dir_all(prefix.join("logs"))?;
    let conf = format!(
        "daemon off;\nuser root;\nworker_processes auto;\nworker_rlimit_nofile {};\n\
         pid {}/nginx.pid;\nerror_log {}/logs/error.log warn;\n\
         events {{ worker_connections {}; }}\n{}",
        nofile_limit(),
        prefix.display(),
        prefix.display(),
        MAX_CONNS,
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

/// This process's descriptor limit, which the edges inherit.
pub fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is valid for writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r) } != 0 {
        return 1024;
    }
    r.rlim_cur
}

/// Starts `args` in `ns` (`ip netns exec` execs it, so the pid is the program's), output to
/// `log`; it gets SIGTERM if this process dies.
fn spawn_in(ns: &NetNs, args: &[&str], log: &Path) -> Result<ChildGuard> {
    let out = fs::File::create(log)?;
    let mut cmd: Command = ns.command(args);
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = spawn_tied(&mut cmd, None)
        .with_context(|| format!("starting {args:?} in {}", ns.name()))?;
    Ok(ChildGuard::new(child))
}

/// Waits until `addr` accepts TCP connections from `ns`.
pub fn wait_listening(ns: &NetNs, addr: SocketAddr) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_status() {
        let text = "HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\nActive connections: 53 \n\
                    server accepts handled requests\n 120 120 90000 \n\
                    Reading: 0 Writing: 1 Waiting: 52 \n";
        let c = parse_stub_status(text).unwrap();
        assert_eq!((c.accepted, c.open), (120, 53));
    }
}
