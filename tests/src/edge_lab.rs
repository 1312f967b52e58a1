//! The edge lab: the real `sluice run` in the gateway namespace with some `[[edge]]`
//! listeners (TLS with the test PKI, client certificates, header formats) in front of
//! header-echoing backends, and the curl / `openssl s_client` clients the edge tests drive it
//! with from the client namespace.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Output, Stdio};

use crate::{
    certs::{Identity, TestPki},
    curl::Curl,
    daemon::{Daemon, Scratch},
    gateway_config::web_gateway,
    http_headers_backend,
    servers::silent_backend,
    topology::{GW_CLIENT_ADDR4, GW_CLIENT_IFNAME},
    NetNs, ServerHandle, Topology,
};

pub const SERVER_NAME: &str = "kc.test";
pub const EDGE_PORT: u16 = 8443;
pub const BACKEND_PORT: u16 = 8080;
pub const BACKENDS: usize = 2;
/// The HTTP versions every edge request is tried over, as curl flags.
pub const HTTP_VERSIONS: [&str; 2] = ["--http1.1", "--http2"];
/// Every client certificate header format sluice knows.
pub const ALL_FORMATS: [&str; 6] = ["rfc9440", "nginx", "apache", "haproxy", "traefik", "envoy"];

/// The certificate headers sluice sets, under their default names, for a client with a
/// verified certificate when every format in [`ALL_FORMATS`] is selected: the leaf's (chain
/// headers come with intermediates).
pub const LEAF_CERT_HEADERS: [&str; 9] = [
    "client-cert",
    "ssl-client-cert",
    "ssl-client-verify",
    "ssl-client-subject-dn",
    "ssl-client-issuer-dn",
    "ssl_client_cert",
    "x-ssl-client-cert",
    "x-forwarded-tls-client-cert",
    "x-forwarded-client-cert",
];
/// The forwarding headers sluice sets on every request (no path prefix).
pub const FORWARDED_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

/// One `[[edge]]` listener of a lab.
pub struct Listener {
    pub name: &'static str,
    pub address: SocketAddr,
    /// `none`, `optional` or `required`.
    pub client_auth: &'static str,
    /// `client_cert_header`.
    pub formats: &'static [&'static str],
    /// `trusted_proxies` (CIDRs).
    pub trusted_proxies: Vec<String>,
    /// More `key = value` lines of the `[[edge]]` table.
    pub settings: Vec<String>,
}

impl Listener {
    /// On the gateway's IPv4 address facing the client, port `port`: optional client auth with
    /// the rfc9440 and nginx headers, nobody trusted.
    pub fn v4(name: &'static str, port: u16) -> Listener {
        Listener {
            name,
            address: SocketAddr::new(IpAddr::V4(GW_CLIENT_ADDR4), port),
            client_auth: "optional",
            formats: &["rfc9440", "nginx"],
            trusted_proxies: Vec::new(),
            settings: Vec::new(),
        }
    }

    pub fn toml(&self, pki: &TestPki) -> String {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let formats: Vec<String> = self.formats.iter().map(|f| (*f).to_owned()).collect();
        let mut text = format!(
            "\n[[edge]]\nname = \"{}\"\naddress = \"{}\"\npool = \"web\"\n\
             backend_port = {BACKEND_PORT}\nclient_cert_header = [{}]\n\
             trusted_proxies = [{}]\n\n[edge.tls]\n\
             certificates = [{{ cert = \"{}\", key = \"{}\" }}]\nclient_auth = \"{}\"\n",
            self.name,
            self.address,
            list(&formats),
            list(&self.trusted_proxies),
            pki.server.chain().display(),
            pki.server.key().display(),
            self.client_auth,
        );
        if self.client_auth != "none" {
            let _ = writeln!(text, "client_ca = \"{}\"", pki.ca_cert().display());
        }
        if !self.settings.is_empty() {
            let at = text.find("\n[edge.tls]").expect("the TLS table");
            text.insert_str(at, &format!("{}\n", self.settings.join("\n")));
        }
        text
    }
}

/// What every edge lab starts from: the topology, a scratch directory with the test PKI for
/// [`SERVER_NAME`] in it, and the daemon's instance name.
pub struct LabBase {
    pub topo: Topology,
    pub scratch: Scratch,
    pub pki: TestPki,
    /// `test-<prefix>`.
    pub instance: String,
}

impl LabBase {
    /// A topology of `backends` backends named by `prefix`, with the proxy host if `proxy`.
    pub fn new(prefix: &str, backends: usize, proxy: bool) -> LabBase {
        let mut topo = Topology::build(prefix, backends).expect("build topology");
        if proxy {
            topo.add_proxy().expect("add the proxy host");
        }
        let scratch = Scratch::create(prefix).expect("scratch directory");
        let pki = TestPki::generate(&scratch.path().join("pki"), &[SERVER_NAME])
            .expect("generate the test PKI");
        LabBase {
            topo,
            scratch,
            pki,
            instance: format!("test-{prefix}"),
        }
    }

    /// [`web_gateway`] for this lab: on `interfaces`, with the management port at
    /// `management`, the VIP over every backend.
    pub fn gateway_config(&self, interfaces: &[&str], management: &str) -> String {
        let backends = self.topo.backends().len();
        web_gateway(
            &self.instance,
            interfaces,
            self.scratch.path(),
            management,
            "",
            backends,
        )
    }

    /// `sluice run` with the configuration `text` in the gateway.
    pub fn start_daemon(&self, text: &str) -> Daemon {
        Daemon::start(
            self.topo.gateway(),
            self.scratch.path(),
            &self.instance,
            text,
        )
        .expect("start sluice run with edge listeners")
    }
}

/// Client, gateway running sluice with some edge listeners, header-echoing backends
/// (`backend-<i>`).
pub struct Lab {
    pub daemon: Daemon,
    pub servers: Vec<ServerHandle>,
    pub pki: TestPki,
    pub topo: Topology,
    _scratch: Scratch,
}

impl Lab {
    pub fn start(prefix: &str, listeners: &[Listener]) -> Lab {
        let base = LabBase::new(prefix, BACKENDS, false);
        let mut text = base.gateway_config(&[GW_CLIENT_IFNAME], "127.0.0.1:9019");
        for listener in listeners {
            text.push_str(&listener.toml(&base.pki));
        }
        let daemon = base.start_daemon(&text);
        let LabBase {
            topo, scratch, pki, ..
        } = base;
        let servers = header_echo_backends(&topo, BACKEND_PORT);
        Lab {
            daemon,
            servers,
            pki,
            topo,
            _scratch: scratch,
        }
    }

    /// Connections the backends accepted so far, all together.
    pub fn backend_connections(&self) -> u64 {
        self.servers.iter().map(ServerHandle::served).sum()
    }

    /// curl from the client namespace to the listener at `at` (by name, resolved to `at`);
    /// `extra` are more curl arguments. Returns the body, or curl's failure.
    pub fn try_curl(&self, at: SocketAddr, extra: &[&str]) -> anyhow::Result<String> {
        self.https(at, "/realms/x?y=1")
            .fail()
            .args(extra)
            .run(self.topo.client())
    }

    /// curl from the client namespace to `path` at the listener at `at`, by name.
    pub fn https(&self, at: SocketAddr, path: &str) -> Curl {
        Curl::https(SERVER_NAME, at, path, self.pki.ca_cert())
    }

    /// [`Lab::try_curl`] that must succeed.
    pub fn curl(&self, at: SocketAddr, extra: &[&str]) -> String {
        self.try_curl(at, extra).unwrap_or_else(|err| {
            panic!(
                "curl {extra:?} to {at}: {err:#}\nsluice:\n{}",
                self.daemon.log_text()
            )
        })
    }

    /// curl presenting `id` (its whole chain file).
    pub fn try_curl_as(
        &self,
        id: &Identity,
        at: SocketAddr,
        extra: &[&str],
    ) -> anyhow::Result<String> {
        self.https(at, "/realms/x?y=1")
            .fail()
            .identity(id)
            .args(extra)
            .run(self.topo.client())
    }

    /// curl presenting the valid client certificate; must succeed.
    pub fn with_client_cert(&self, at: SocketAddr, extra: &[&str]) -> String {
        self.try_curl_as(&self.pki.client, at, extra)
            .unwrap_or_else(|err| {
                panic!(
                    "curl with the client certificate {extra:?} to {at}: {err:#}\nsluice:\n{}",
                    self.daemon.log_text()
                )
            })
    }

    /// curl over `http` to the listener at `at`, presenting `id` if given, with more curl
    /// arguments (headers a client forges): the backend's echo and its header lines. The
    /// request must be served, and nothing the client sent with "forged" in it may reach the
    /// backend.
    pub fn echo<S: AsRef<str>>(
        &self,
        at: SocketAddr,
        http: &str,
        id: Option<&Identity>,
        extra: &[S],
    ) -> (String, Vec<String>) {
        let mut args = vec![http];
        args.extend(extra.iter().map(AsRef::as_ref));
        let body = match id {
            Some(id) => self.try_curl_as(id, at, &args),
            None => self.try_curl(at, &args),
        }
        .unwrap_or_else(|err| {
            panic!(
                "curl {args:?} to {at}: {err:#}\nsluice:\n{}",
                self.daemon.log_text()
            )
        });
        assert!(
            !body.contains("forged"),
            "{http}: a forged header passed:\n{body}"
        );
        let h = headers(&body);
        (body, h)
    }

    /// The same request over `http` from each client that required client auth refuses: none,
    /// an expired certificate, a certificate of an unknown CA; by who they are.
    pub fn refused_clients(&self, http: &str) -> [(&'static str, anyhow::Result<String>); 3] {
        let at = edge4();
        [
            ("no certificate", self.try_curl(at, &[http])),
            (
                "expired",
                self.try_curl_as(&self.pki.expired_client, at, &[http]),
            ),
            (
                "unknown CA",
                self.try_curl_as(&self.pki.unknown_ca_client, at, &[http]),
            ),
        ]
    }

    /// `openssl s_client` from the client namespace presenting `id`, over TLS 1.2 so a refused
    /// client certificate fails the handshake itself; sends a request and prints what came back.
    pub fn s_client_tls12(&self, id: &Identity, at: SocketAddr) -> Output {
        let connect = at.to_string();
        let ca = self.pki.ca_cert().display().to_string();
        let (leaf, key) = (id.leaf().display(), id.key().display());
        let mut script = format!(
            "printf 'GET / HTTP/1.1\\r\\nHost: {SERVER_NAME}\\r\\nConnection: close\\r\\n\\r\\n' | \
             timeout 10 openssl s_client -ign_eof -tls1_2 -connect {connect} -servername {SERVER_NAME} \
             -CAfile {ca} -cert {leaf} -key {key}"
        );
        if !id.intermediates().is_empty() {
            let _ = write!(script, " -cert_chain {}", id.intermediates_pem().display());
        }
        self.topo
            .client()
            .command(&["sh", "-c", &script])
            .output()
            .expect("run openssl s_client")
    }

    /// The DER of the leaf certificate the edge presents for [`SERVER_NAME`], as base64.
    pub fn served_leaf(&self) -> String {
        let connect = edge4();
        let pem = self
            .topo
            .client()
            .run(&[
                "sh",
                "-c",
                &format!(
                    "openssl s_client -connect {connect} -servername {SERVER_NAME} </dev/null \
                     2>/dev/null | openssl x509 -outform DER | base64 -w0"
                ),
            ])
            .expect("openssl s_client");
        pem.trim().to_owned()
    }

    /// curl `path` (with its query) at the listener at `at`, without `--fail`: the status and
    /// the body.
    pub fn fetch(&self, at: SocketAddr, path: &str, extra: &[&str]) -> (u16, String) {
        self.https(at, path)
            .args(extra)
            .status_and_body(self.topo.client())
            .unwrap_or_else(|err| {
                panic!(
                    "curl {extra:?} {path} at {at}: {err:#}\nsluice:\n{}",
                    self.daemon.log_text()
                )
            })
    }

    /// Replaces the header-echo backends with ones that accept and never answer, on the same
    /// port.
    pub fn silence_backends(&mut self) {
        self.replace_backends(|ns, i| {
            silent_backend(ns, &format!("silent-{i}"), BACKEND_PORT).expect("silent backend")
        });
    }

    /// Replaces the backends with what `start(namespace, index)` starts on [`BACKEND_PORT`].
    pub fn replace_backends(&mut self, start: impl Fn(&NetNs, usize) -> ServerHandle) {
        // Dropping a handle stops its server and closes its socket, freeing the port.
        self.servers.clear();
        self.servers = self
            .topo
            .backends()
            .iter()
            .enumerate()
            .map(|(i, ns)| start(ns, i))
            .collect();
    }

    pub fn reload(&self) -> std::process::Output {
        self.daemon.cli(&["reload"]).expect("run sluice reload")
    }

    /// [`raw_tls`] to this lab's edge.
    pub fn raw_tls(&self, request: &str, cert: bool) -> String {
        raw_tls(&self.topo, &self.pki, request, cert)
    }
}

/// A header-echo backend `backend-<i>` on `port` in each backend namespace of `topo`.
pub fn header_echo_backends(topo: &Topology, port: u16) -> Vec<ServerHandle> {
    topo.backends()
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            http_headers_backend(ns, &format!("backend-{i}"), port).expect("header-echo backend")
        })
        .collect()
}

/// The gateway address of the default listener.
pub fn edge4() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(GW_CLIENT_ADDR4), EDGE_PORT)
}

/// The request head lines the backend echoed, lowercased names, as `name: value`.
pub fn headers(body: &str) -> Vec<String> {
    body.lines()
        .skip(2) // the backend's name, the request line
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| format!("{}: {}", n.trim().to_ascii_lowercase(), v.trim()))
        .collect()
}

pub fn values<'a>(headers: &'a [String], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter_map(|h| h.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .collect()
}

/// The only value of `name`; panics unless there is exactly one.
pub fn single<'a>(h: &'a [String], name: &str, body: &str) -> &'a str {
    match values(h, name)[..] {
        [one] => one,
        ref other => panic!("{name}: want exactly one value, got {other:?}:\n{body}"),
    }
}

/// Curl arguments sending each `(name, value)` header.
pub fn header_args(headers: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    headers
        .into_iter()
        .flat_map(|(name, value)| ["-H".to_owned(), format!("{name}: {value}")])
        .collect()
}

/// How a header format turns a header value back into DER.
pub type Decode = fn(&str) -> Vec<u8>;

/// Each `(name, decode, want, what)`: the only value of `name` decodes to exactly `want`.
pub fn assert_decoded(
    h: &[String],
    body: &str,
    http: &str,
    expect: &[(&str, Decode, &[u8], &str)],
) {
    for (name, decode, want, what) in expect {
        assert_eq!(
            decode(single(h, name, body)),
            *want,
            "{http}: {what} ({name})"
        );
    }
}

/// The backend that answered (the echo body's first line).
pub fn backend_of(body: &str) -> &str {
    body.lines().next().unwrap_or_default()
}

/// Sends `request` as is over TLS to the edge at [`edge4`] (with the client certificate when `cert`) and returns all
/// that came back until the server closed or 5 s passed.
pub fn raw_tls(topo: &Topology, pki: &TestPki, request: &str, cert: bool) -> String {
    let connect = edge4().to_string();
    let ca = pki.ca_cert().display().to_string();
    let id = &pki.client;
    let (leaf, key, chain) = (
        id.leaf().display().to_string(),
        id.key().display().to_string(),
        id.intermediates_pem().display().to_string(),
    );
    let mut args = vec![
        "timeout",
        "5",
        "openssl",
        "s_client",
        "-quiet",
        "-ign_eof",
        "-alpn",
        "http/1.1",
        "-connect",
        &connect,
        "-servername",
        SERVER_NAME,
        "-CAfile",
        &ca,
    ];
    if cert {
        args.extend(["-cert", &leaf, "-key", &key, "-cert_chain", &chain]);
    }
    let mut child = topo
        .client()
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    // s_client reads stdin only once the handshake is done; the pipe holds the request.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("write the request");
    let out = child.wait_with_output().expect("openssl s_client output");
    if out.stdout.is_empty() {
        eprintln!("openssl s_client: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
