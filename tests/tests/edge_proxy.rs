//! PROXY protocol in front of the edge listener, from a real, independent sender: Debian's
//! haproxy in TCP mode with `send-proxy-v2` on the proxy host, the real `sluice run` on the
//! gateway, curl on the client, backends that echo the request head they received.
//!
//! ```text
//!  client 198.18.0.2 ── gwc ┐ gateway: sluice, edge listeners on 198.18.0.1:8443 (required)
//!  proxy: haproxy 198.18.1.2 ── gwp ┘          and 198.18.0.1:8444 (optional) ── backends
//! ```
//!
//! curl → haproxy (TLS passes through untouched) → edge: the backend must name curl's own
//! address and port as the client, not haproxy's. curl straight to the edge is an untrusted
//! peer: refused under `required`, served as itself under `optional`, and a PROXY header it
//! sends is never honoured.
//!
//! Needs root and haproxy. Run with `cargo test -p sluice-tests --test edge_proxy`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};

use sluice_tests::{
    certs::TestPki,
    curl::Curl,
    daemon::{Daemon, Scratch},
    edge_lab::LabBase,
    edge_lab::{header_echo_backends, HTTP_VERSIONS},
    haproxy::{Haproxy, HaproxySpec},
    require_root,
    servers::http_proxy_headers_backend,
    topology::{CLIENT_ADDR4, GW_CLIENT_ADDR4, GW_CLIENT_IFNAME, GW_PROXY_IFNAME, PROXY_ADDR4},
    ServerHandle, Topology,
};

const SERVER_NAME: &str = "kc.test";
/// The listener with `proxy_protocol = "required"`, behind haproxy.
const REQUIRED_PORT: u16 = 8443;
/// The listener with `proxy_protocol = "optional"`.
const OPTIONAL_PORT: u16 = 8444;
/// haproxy's frontend, on the proxy host.
const FRONTEND_PORT: u16 = 7443;
const BACKEND_PORT: u16 = 8080;
/// A listener with `send_proxy_protocol = "v2"`, to backends on [`PROXY_BACKEND_PORT`].
const RELAY_PORT: u16 = 8445;
const PROXY_BACKEND_PORT: u16 = 8081;
const MANAGEMENT: &str = "127.0.0.1:9020";
const BACKENDS: usize = 2;
/// What curl's `-w` appends after the body: its own address and port for this transfer.
const MARK: &str = "\n--curl-local--";

/// Fields drop in order: haproxy and the daemon before the namespaces.
struct Lab {
    haproxy: Haproxy,
    daemon: Daemon,
    _servers: Vec<ServerHandle>,
    pki: TestPki,
    topo: Topology,
    _scratch: Scratch,
}

impl Lab {
    fn start(prefix: &str) -> Lab {
        let base = LabBase::new(prefix, BACKENDS, true);
        let pki = &base.pki;
        let mut text = base.gateway_config(&[GW_CLIENT_IFNAME, GW_PROXY_IFNAME], MANAGEMENT);
        for (name, port, policy) in [
            ("required", REQUIRED_PORT, "required"),
            ("optional", OPTIONAL_PORT, "optional"),
        ] {
            let _ = write!(
                text,
                "\n[[edge]]\nname = \"{name}\"\naddress = \"{GW_CLIENT_ADDR4}:{port}\"\n\
                 pool = \"web\"\nbackend_port = {BACKEND_PORT}\n\
                 trusted_proxies = [\"{PROXY_ADDR4}/32\"]\nproxy_protocol = \"{policy}\"\n\n\
                 [edge.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
                pki.server.chain().display(),
                pki.server.key().display(),
            );
        }
        let _ = write!(
            text,
            "\n[[edge]]\nname = \"relay\"\naddress = \"{GW_CLIENT_ADDR4}:{RELAY_PORT}\"\n\
             pool = \"web\"\nbackend_port = {PROXY_BACKEND_PORT}\nsend_proxy_protocol = \"v2\"\n\n\
             [edge.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            pki.server.chain().display(),
            pki.server.key().display(),
        );
        let daemon = base.start_daemon(&text);
        let LabBase {
            topo, scratch, pki, ..
        } = base;
        let mut servers = header_echo_backends(&topo, BACKEND_PORT);
        servers.extend(topo.backends().iter().enumerate().map(|(i, ns)| {
            http_proxy_headers_backend(ns, &format!("backend-{i}"), PROXY_BACKEND_PORT)
                .expect("PROXY-reading header-echo backend")
        }));
        let spec = HaproxySpec {
            frontend: SocketAddr::new(PROXY_ADDR4.into(), FRONTEND_PORT),
            server: SocketAddr::new(GW_CLIENT_ADDR4.into(), REQUIRED_PORT),
            local_checks: None,
        };
        let haproxy = Haproxy::start(topo.proxy(), scratch.path(), &spec).expect("start haproxy");
        Lab {
            haproxy,
            daemon,
            _servers: servers,
            pki,
            topo,
            _scratch: scratch,
        }
    }

    /// curl from the client namespace to `https://kc.test:<port>/` at `ip`; `extra` are more
    /// curl arguments. The body, then [`MARK`] and curl's local `ip:port`.
    fn curl(&self, ip: Ipv4Addr, port: u16, extra: &[&str]) -> anyhow::Result<String> {
        let at = SocketAddr::new(ip.into(), port);
        let write_out = format!("{MARK}%{{local_ip}}:%{{local_port}}");
        Curl::https(SERVER_NAME, at, "/who", self.pki.ca_cert())
            .fail()
            .args(&["-w", &write_out])
            .args(extra)
            .run(self.topo.client())
    }

    fn logs(&self) -> String {
        format!(
            "haproxy:\n{}\nsluice:\n{}",
            self.haproxy.log_text(),
            self.daemon.log_text()
        )
    }

    fn served(&self, ip: Ipv4Addr, port: u16, extra: &[&str]) -> Served {
        let out = self
            .curl(ip, port, extra)
            .unwrap_or_else(|err| panic!("curl {ip}:{port} {extra:?}: {err:#}\n{}", self.logs()));
        let (body, local) = out
            .rsplit_once(MARK)
            .unwrap_or_else(|| panic!("no curl write-out in {out:?}"));
        let local: SocketAddr = local
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("curl's local address {local:?}: {err}"));
        Served {
            headers: headers(body),
            body: body.to_owned(),
            local,
        }
    }
}

/// One response: the backend's echo and curl's own address for that connection.
struct Served {
    body: String,
    headers: Vec<String>,
    local: SocketAddr,
}

impl Served {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter_map(|h| h.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
            .collect()
    }
}

/// The request head lines the backend echoed, lowercased names, as `name: value`.
fn headers(body: &str) -> Vec<String> {
    body.lines()
        .skip(2) // the backend's name, the request line
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| format!("{}: {}", n.trim().to_ascii_lowercase(), v.trim()))
        .collect()
}

#[test]
fn edge_takes_the_client_from_a_trusted_proxys_header_and_from_no_one_else() {
    require_root();
    let lab = Lab::start("slep1");

    // Through haproxy (TLS passes through it): the client is curl's own address and port, as
    // haproxy's PROXY v2 header named it; haproxy's address is nowhere.
    // haproxy passes the client's bytes through: forwarded headers in them are the client's
    // own, judged by the client the PROXY header names (untrusted), never by haproxy.
    let forged = [
        "-H",
        "X-Forwarded-For: 203.0.113.66",
        "-H",
        "X-Forwarded-Proto: http",
        "-H",
        "X-Forwarded-Port: 1",
        "-H",
        "Forwarded: for=203.0.113.66",
    ];
    for http in HTTP_VERSIONS {
        let s = lab.served(PROXY_ADDR4, FRONTEND_PORT, &[&[http][..], &forged].concat());
        assert_eq!(
            s.values("x-forwarded-proto"),
            ["https"],
            "{http}: {}",
            s.body
        );
        // The port the client connected to: haproxy's frontend, from the PROXY header.
        assert_eq!(
            s.values("x-forwarded-port"),
            [FRONTEND_PORT.to_string().as_str()],
            "{http}: {}",
            s.body
        );
        assert!(!s.body.contains("203.0.113.66"), "{http}: {}", s.body);
        assert!(s.body.starts_with("backend-"), "{http}: {}", s.body);
        assert_eq!(s.local.ip(), CLIENT_ADDR4, "{http}: curl's own address");
        assert_eq!(
            s.values("x-forwarded-for"),
            [CLIENT_ADDR4.to_string().as_str()],
            "{http}: {}",
            s.body
        );
        assert_eq!(
            s.values("forwarded"),
            [format!(
                "for=\"{}\";by=\"{GW_CLIENT_ADDR4}:{REQUIRED_PORT}\";proto=https;host=\"{SERVER_NAME}:{FRONTEND_PORT}\"",
                s.local
            )
            .as_str()],
            "{http}: the header's source port is curl's: {}",
            s.body
        );
        assert!(
            !s.body.contains(&PROXY_ADDR4.to_string()),
            "{http}: haproxy named as the client: {}",
            s.body
        );
    }

    // Straight to the `required` listener: an untrusted peer gets no HTTP response, with or
    // without a (forged) PROXY header of its own.
    // The kernel drops them (no header: `missing`; a header from outside trusted_proxies:
    // `untrusted`), so curl waits for its own timeout.
    let quick = ["--max-time", "2"];
    for extra in [&[][..], &["--haproxy-protocol"], &["--http1.1"]] {
        let direct = lab.curl(
            GW_CLIENT_ADDR4,
            REQUIRED_PORT,
            &[extra, &quick[..]].concat(),
        );
        assert!(
            direct.is_err(),
            "untrusted client {extra:?} served under required: {direct:?}"
        );
    }

    // The `optional` listener serves an untrusted client as itself...
    let s = lab.served(GW_CLIENT_ADDR4, OPTIONAL_PORT, &["--http1.1"]);
    assert_eq!(
        s.values("x-forwarded-for"),
        [CLIENT_ADDR4.to_string().as_str()],
        "{}",
        s.body
    );
    assert!(
        s.values("forwarded")
            .first()
            .is_some_and(|f| f.starts_with(&format!("for=\"{}\"", s.local))),
        "{}",
        s.body
    );
    // ...but never reads a PROXY header from it: the header is the start of its TLS stream,
    // and the handshake fails.
    let forged = lab.curl(
        GW_CLIENT_ADDR4,
        OPTIONAL_PORT,
        &["--haproxy-protocol", "--max-time", "2"],
    );
    assert!(
        forged.is_err(),
        "an untrusted client's PROXY header was taken: {forged:?}"
    );

    // The kernel judged every connection before the listener saw a byte.
    let kernel = |edge: &str, outcome: &str| {
        lab.daemon
            .metric(
                lab.topo.gateway(),
                MANAGEMENT.parse().expect("address"),
                "sluice_edge_proxy_flows_total",
                &[("edge", edge), ("outcome", outcome)],
            )
            .expect("scrape /metrics")
    };
    let want = [
        ("required", "accepted", 2.0),
        ("required", "missing", 2.0),
        ("required", "untrusted", 1.0),
        ("optional", "absent", 1.0),
        ("optional", "untrusted", 1.0),
        ("optional", "accepted", 0.0),
    ];
    for (edge, outcome, n) in want {
        assert!(
            (kernel(edge, outcome) - n).abs() < 0.5,
            "{edge}/{outcome}: {} connections, want {n}\n{}",
            kernel(edge, outcome),
            lab.logs()
        );
    }
}

#[test]
fn backends_that_ask_for_it_get_a_proxy_header_naming_the_client_on_every_connection() {
    require_root();
    let lab = Lab::start("slep2");
    let gateway = SocketAddr::new(GW_CLIENT_ADDR4.into(), RELAY_PORT);
    let url = format!("https://{SERVER_NAME}:{RELAY_PORT}/who");
    // Two requests on one client connection: the backend closes after each answer, so each
    // needs a backend connection of its own, and each starts with the header.
    for http in HTTP_VERSIONS {
        let out = lab
            .curl(GW_CLIENT_ADDR4, RELAY_PORT, &[http, &url])
            .unwrap_or_else(|e| panic!("{http}: {e:#}\n{}", lab.logs()));
        let parts: Vec<&str> = out.split(MARK).collect();
        assert_eq!(parts.len(), 3, "{http}: two transfers in {out:?}");
        let (local1, body2) = parts[1]
            .split_once("backend-")
            .unwrap_or_else(|| panic!("{http}: no second body in {out:?}"));
        let local2 = parts[2].trim();
        assert_eq!(local1.trim(), local2, "{http}: curl reused its connection");
        for body in [parts[0], &format!("backend-{body2}")] {
            let proxy_line = body.lines().nth(1).unwrap_or_default();
            assert_eq!(
                proxy_line,
                format!("proxy {local2} {gateway}"),
                "{http}: the header names curl's address and the listener: {body}"
            );
            let request = body.lines().nth(2).unwrap_or_default();
            assert_eq!(request, "GET /who HTTP/1.1", "{http}: {body}");
        }
    }
}

#[test]
#[allow(clippy::float_cmp)] // every value is a small integer, exact in f64
fn the_listener_counts_the_proxy_headers_it_read() {
    require_root();
    let lab = Lab::start("slep3");
    let management: SocketAddr = MANAGEMENT.parse().expect("address");
    let metric = |name: &str, labels: &[(&str, &str)]| {
        lab.daemon
            .metric(lab.topo.gateway(), management, name, labels)
            .unwrap_or_else(|e| panic!("scrape /metrics: {e:#}"))
    };
    for http in HTTP_VERSIONS {
        let s = lab.served(PROXY_ADDR4, FRONTEND_PORT, &[http]);
        assert!(s.body.starts_with("backend-"), "{http}: {}", s.body);
    }
    // An untrusted client straight to `optional` is served as itself: no header is read.
    lab.served(GW_CLIENT_ADDR4, OPTIONAL_PORT, &["--http1.1"]);
    // Straight to `required`: the kernel drops its first segment, and the listener, which
    // accepted the TCP connection, closes it without reading: an untrusted peer.
    let direct = lab.curl(GW_CLIENT_ADDR4, REQUIRED_PORT, &["--max-time", "2"]);
    assert!(direct.is_err(), "untrusted client served: {direct:?}");

    let headers = |edge, outcome| {
        metric(
            "sluice_edge_proxy_headers_total",
            &[("edge", edge), ("outcome", outcome)],
        )
    };
    for (edge, outcome, n) in [
        ("required", "accepted", 2.0),
        ("required", "local", 0.0),
        ("required", "invalid", 0.0),
        ("required", "untrusted", 1.0),
        ("optional", "accepted", 0.0),
        ("optional", "local", 0.0),
        ("optional", "invalid", 0.0),
        ("optional", "untrusted", 0.0),
    ] {
        assert_eq!(
            headers(edge, outcome),
            n,
            "{edge}/{outcome}\n{}",
            lab.logs()
        );
    }
    // The relay reads no PROXY headers, so it has no such counts at all.
    let (_, text) = lab
        .daemon
        .management_get(lab.topo.gateway(), management, "/metrics")
        .expect("GET /metrics");
    assert!(
        !text.contains("sluice_edge_proxy_headers_total{edge=\"relay\""),
        "{text}"
    );
    // TLS passes through haproxy: the listener's handshakes are curl's.
    let ok = |edge| {
        metric(
            "sluice_edge_tls_handshakes_total",
            &[("edge", edge), ("outcome", "ok")],
        )
    };
    assert_eq!(
        (ok("required"), ok("optional"), ok("relay")),
        (2.0, 1.0, 0.0)
    );
    let answered = |edge| {
        metric(
            "sluice_edge_requests_total",
            &[("edge", edge), ("code", "200")],
        )
    };
    assert_eq!((answered("required"), answered("optional")), (2.0, 1.0));
}
