//! Edge routes end to end: the real `sluice run` with route tables (the Keycloak preset, custom
//! `[[edge.route]]`s, host routes) in front of header-echoing backends, driven by the real curl
//! (`--path-as-is`, so curl sends each spelling as written) over HTTP/1.1 and HTTP/2, and by
//! `openssl s_client` for pipelined requests.
//!
//! What a backend received is read from its echo (the request line it saw); that a request
//! never reached one is read from `sluice_edge_backend_requests_total`, which counts every
//! request sent to a backend whether its connection was opened for it or reused.
//!
//! The `ck` tests take the paths routes had not been tried on (upgrades, trailers, the
//! `Connection` header, pipelining across routes) through a route with a stripped prefix, to
//! backends that echo the raw request and name themselves, and a client behind a PROXY v2
//! sender ([`ProxyRelay`], which can name any client) through a `cookie-hash` route. `fa6`
//! takes a WebSocket upgrade through a forward-auth route (the stand-in auth service).
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_routes -- --test-threads=1`.

#![allow(clippy::float_cmp)] // every metric compared is a small integer count, exact in f64

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};
use std::thread;
use std::time::Duration;

use lb_common::proxy::parse::{write_v2, Command};
use sluice_tests::{
    auth_service::{AuthService, AUTH_PORT},
    edge_lab::{
        backend_of, edge4, headers, single, values, Lab, Listener, BACKEND_PORT, EDGE_PORT,
        SERVER_NAME,
    },
    require_root,
    servers::tcp_server,
    topology::{backend_addr4, CLIENT_ADDR4},
    NetNs,
};

const HTTP: [&str; 2] = ["--http1.1", "--http2"];

fn lab(prefix: &str, settings: &[&str]) -> Lab {
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.settings = settings.iter().map(|s| (*s).to_owned()).collect();
    Lab::start(prefix, &[listener])
}

/// A sample of the lab daemon's `/metrics` (summed over the samples whose labels include
/// `labels`; 0 when there is none).
fn metric(lab: &Lab, name: &str, labels: &[(&str, &str)]) -> f64 {
    let management: SocketAddr = "127.0.0.1:9019".parse().expect("management address");
    lab.daemon
        .metric(lab.topo.gateway(), management, name, labels)
        .unwrap_or_else(|e| panic!("scrape /metrics: {e:#}"))
}

/// Requests sluice sent to a backend so far.
fn backend_requests(lab: &Lab) -> f64 {
    metric(lab, "sluice_edge_backend_requests_total", &[("edge", "kc")])
}

fn unrouted(lab: &Lab, outcome: &str) -> f64 {
    metric(
        lab,
        "sluice_edge_unrouted_requests_total",
        &[("edge", "kc"), ("outcome", outcome)],
    )
}

fn route_hits(lab: &Lab, route: &str) -> f64 {
    metric(
        lab,
        "sluice_edge_route_requests_total",
        &[("edge", "kc"), ("route", route)],
    )
}

/// The request line the backend received.
fn request_line(body: &str) -> &str {
    body.lines().nth(1).unwrap_or_default()
}

/// Spellings of Keycloak's hidden paths, each sent as written, and sluice's answer: none of
/// them may reach a backend.
const BYPASS: [(&str, u16); 19] = [
    ("//admin/", 404),
    ("/realms//../admin/", 404),
    ("/admin/master/console/", 404),
    ("/admin", 404),
    ("/metrics", 404),
    ("/health/ready", 404),
    ("/", 404),
    ("/realmsx/../admin/", 404),
    ("/Realms/x", 404),
    ("/realms/../admin/", 404),
    ("/realms/%2e%2e/admin/", 404),
    ("/realms/./%2E%2e/admin/", 404),
    ("/%61dmin/master/console/", 404),
    ("/realms/..;/admin/", 400),
    ("/admin;jsessionid=x/", 400),
    ("/realms/%2e%2e%2fadmin/", 400),
    ("/realms%2f..%2fadmin/", 400),
    ("/realms/..%5cadmin/", 400),
    ("/realms/../../admin/", 400),
];

#[test]
fn keycloak_preset_exposes_only_public_paths_and_no_spelling_reaches_the_rest() {
    require_root();
    let lab = lab("rte1", &["preset = \"keycloak\""]);
    for http in HTTP {
        let exposed = [
            ("/realms/main/account?x=1", "/realms/main/account?x=1"),
            (
                "/resources/abc/login/style.css",
                "/resources/abc/login/style.css",
            ),
            (
                "/.well-known/openid-configuration",
                "/.well-known/openid-configuration",
            ),
            // Normalised, and the backend receives the normal form it matched.
            ("/%2e%77ell-known//x/./y", "/.well-known/x/y"),
            ("/realms/a/../main", "/realms/main"),
        ];
        for (path, seen) in exposed {
            let (code, body) = lab.fetch(edge4(), path, &[http, "--path-as-is"]);
            assert_eq!(code, 200, "{http} {path}: {body}");
            assert_eq!(
                request_line(&body),
                format!("GET {seen} HTTP/1.1"),
                "{http} {path}: {body}"
            );
        }
    }
    let sent = backend_requests(&lab);
    assert_eq!(sent, 10.0, "the exposed requests reached a backend");
    let (mut not_found, mut bad) = (0.0, 0.0);
    for http in HTTP {
        for (path, want) in BYPASS {
            let (code, body) = lab.fetch(edge4(), path, &[http, "--path-as-is"]);
            assert_eq!(code, want, "{http} {path}: {body}");
            assert!(!body.contains("backend-"), "{http} {path}: {body}");
            if want == 404 {
                not_found += 1.0;
            } else {
                bad += 1.0;
            }
        }
    }
    assert_eq!(
        backend_requests(&lab),
        sent,
        "a hidden path reached a backend"
    );
    assert_eq!(unrouted(&lab, "no_route"), not_found);
    assert_eq!(unrouted(&lab, "bad_path"), bad);
    assert_eq!(route_hits(&lab, "realms"), 4.0);
    assert_eq!(route_hits(&lab, "resources"), 2.0);
    assert_eq!(route_hits(&lab, "well-known"), 4.0);
}

#[test]
fn routes_strip_prefixes_redirect_answer_and_refuse_in_order() {
    require_root();
    let lab = lab(
        "rte2",
        &[
            "[[edge.route]]\nname = \"auth\"\npath = \"/auth\"\nstrip_prefix = true",
            "[[edge.route]]\nname = \"old\"\npath = \"/old\"\naction = \"redirect\"\n\
             status = 308\nlocation = \"https://kc.test:8443/auth/\"",
            "[[edge.route]]\nname = \"blocked\"\npath = \"/blocked\"\naction = \"status\"\n\
             status = 403",
        ],
    );
    for http in HTTP {
        let (code, body) = lab.fetch(
            edge4(),
            "/auth/realms/x?y=1",
            &[http, "-H", "X-Forwarded-Prefix: /forged"],
        );
        assert_eq!(code, 200, "{http}: {body}");
        assert_eq!(request_line(&body), "GET /realms/x?y=1 HTTP/1.1", "{body}");
        assert_eq!(
            values(&headers(&body), "x-forwarded-prefix"),
            ["/auth"],
            "{http}: {body}"
        );
        let (code, body) = lab.fetch(edge4(), "/auth", &[http]);
        assert_eq!(code, 200, "{http}: {body}");
        assert_eq!(request_line(&body), "GET / HTTP/1.1", "{body}");

        let sent = backend_requests(&lab);
        let (code, out) = lab.fetch(edge4(), "/old/x", &[http, "-D", "-"]);
        assert_eq!(code, 308, "{http}: {out}");
        assert!(
            out.to_ascii_lowercase()
                .contains("location: https://kc.test:8443/auth/"),
            "{http}: {out}"
        );
        let (code, body) = lab.fetch(edge4(), "/blocked/x", &[http]);
        assert_eq!(code, 403, "{http}: {body}");
        for outside in ["/other", "/authx/realms", "/"] {
            let (code, body) = lab.fetch(edge4(), outside, &[http]);
            assert_eq!(code, 404, "{http} {outside}: {body}");
        }
        assert_eq!(
            backend_requests(&lab),
            sent,
            "{http}: an answered request reached a backend"
        );
    }
    assert_eq!(route_hits(&lab, "auth"), 4.0);
    assert_eq!(route_hits(&lab, "old"), 2.0);
    assert_eq!(route_hits(&lab, "blocked"), 2.0);
    assert_eq!(unrouted(&lab, "no_route"), 6.0);
}

#[test]
fn host_routes_need_sni_and_host_to_agree() {
    require_root();
    let lab = lab(
        "rte3",
        &["[[edge.route]]\nname = \"kc\"\npath = \"/realms\"\nhost = \"kc.test\""],
    );
    for http in HTTP {
        let (code, body) = lab.fetch(edge4(), "/realms/x", &[http]);
        assert_eq!(code, 200, "{http}: {body}");
        let sent = backend_requests(&lab);
        // SNI kc.test, Host (HTTP/2: :authority) other.test.
        let (code, body) = lab.fetch(edge4(), "/realms/x", &[http, "-H", "Host: other.test"]);
        assert_eq!(code, 421, "{http}: {body}");
        assert_eq!(backend_requests(&lab), sent, "{http}");
    }
    assert_eq!(unrouted(&lab, "misdirected"), 2.0);
    assert_eq!(route_hits(&lab, "kc"), 2.0);
}

#[test]
fn pipelined_requests_and_upgrades_are_routed_one_by_one() {
    require_root();
    let lab = lab("rte4", &["preset = \"keycloak\""]);
    // Three requests in one write: each is routed on its own.
    let requests = format!(
        "GET /realms/x HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n\
         GET /realms/../admin/ HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n\
         GET /resources/y HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n"
    );
    let out = lab.raw_tls(&requests, false);
    let statuses: Vec<&str> = out.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
    assert_eq!(
        statuses.len(),
        3,
        "three answers, in order:\n{out}\nsluice:\n{}",
        lab.daemon.log_text()
    );
    assert!(statuses[0].starts_with("HTTP/1.1 200"), "{out}");
    assert!(statuses[1].starts_with("HTTP/1.1 404"), "{out}");
    assert!(statuses[2].starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("GET /realms/x HTTP/1.1"), "{out}");
    assert!(out.contains("GET /resources/y HTTP/1.1"), "{out}");
    assert_eq!(backend_requests(&lab), 2.0);

    // A WebSocket upgrade is routed on its upgrade request.
    let (code, body) = lab.fetch(
        edge4(),
        "/realms/../admin/ws",
        &[
            "--http1.1",
            "--path-as-is",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
    );
    assert_eq!(code, 404, "{body}");
    assert_eq!(backend_requests(&lab), 2.0, "the upgrade reached a backend");
}

/// Reads one request: the head, then a `Content-Length` or chunked body with its trailers.
/// `None` when the connection ended first.
fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let body = &raw[end + 4..];
            let complete = if head.contains("transfer-encoding: chunked") {
                // The last chunk, then trailer lines, then an empty line.
                find(body, b"0\r\n").is_some_and(|zero| {
                    body[zero..].starts_with(b"0\r\n\r\n")
                        || find(&body[zero..], b"\r\n\r\n").is_some()
                })
            } else {
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                body.len() >= len
            };
            if complete {
                return Ok(Some(raw));
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A keep-alive backend that names itself: each request gets `200` with `<name>\n` and the raw
/// request (head, body and trailers) as its body, except `GET /trailer`, answered chunked with
/// the name in the body and in an `X-Checksum` trailer; a request with an `Upgrade` header gets `101`
/// to what it asked, naming the backend and the request line it received in `X-Backend` and
/// `X-Request-Line`, after which every byte is echoed back prefixed with `TUNNEL:`.
fn named_raw_backend(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    while let Some(raw) = read_request(&mut stream)? {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let upgrade = text
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case("upgrade"))
            })
            .map(|(_, v)| v.trim().to_owned());
        if let Some(to) = upgrade {
            let line = text.lines().next().unwrap_or_default().trim();
            // Who the upgrade said the user was, for the forward-auth test.
            let users: Vec<&str> = text
                .lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-auth-request-user"))
                .map(|(_, v)| v.trim())
                .collect();
            write!(
                stream,
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {to}\r\n\
                 X-Backend: {name}\r\nX-Request-Line: {line}\r\nX-Users-Seen: {}\r\n\r\n",
                users.join(",")
            )?;
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                stream.write_all(b"TUNNEL:")?;
                stream.write_all(&buf[..n])?;
            }
        }
        if text.starts_with("GET /trailer ") {
            // A chunked answer whose trailer names the backend.
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
                 {:x}\r\n{name}\r\n0\r\nX-Checksum: {name}\r\n\r\n",
                name.len()
            )?;
            continue;
        }
        let body = format!("{name}\n{text}");
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
    }
    Ok(())
}

/// The bodies of the `200` answers in `raw` (a connection's responses, in order).
fn answers(raw: &str) -> Vec<&str> {
    raw.split("HTTP/1.1 200 OK\r\n")
        .skip(1)
        .map(|a| &a[a.find("\r\n\r\n").map_or(a.len(), |i| i + 4)..])
        .collect()
}

/// A lab whose listener has the non-default routes `/app` (prefix stripped), `/one` and
/// `/two` (prefix stripped, each keeping the Keycloak route `n` on its own backend: 0 and 1),
/// in front of [`named_raw_backend`]s.
fn routed_lab(prefix: &str) -> Lab {
    let (b0, b1) = (backend_addr4(0), backend_addr4(1));
    let mut lab = lab(
        prefix,
        &[
            "[[edge.route]]\nname = \"app\"\npath = \"/app\"\nstrip_prefix = true",
            &format!(
                "[[edge.route]]\nname = \"one\"\npath = \"/one\"\nstrip_prefix = true\n\
                 affinity = {{ mode = \"auth-session-route\", routes = {{ \"n\" = \"{b0}\" }} }}"
            ),
            &format!(
                "[[edge.route]]\nname = \"two\"\npath = \"/two\"\nstrip_prefix = true\n\
                 affinity = {{ mode = \"auth-session-route\", routes = {{ \"n\" = \"{b1}\" }} }}"
            ),
        ],
    );
    lab.replace_backends(|ns, i| {
        tcp_server(ns, &format!("backend-{i}"), BACKEND_PORT, named_raw_backend)
            .expect("named raw backend")
    });
    lab
}

#[test]
fn upgrades_on_a_stripped_route_reach_its_backend_with_the_routed_path() {
    require_root();
    let lab = routed_lab("ck3");
    // h2c: the upgrade is dropped, the request reaches the backend on the stripped path as a
    // plain one, and the connection goes on carrying HTTP/1.1 (the next request is routed too).
    let h2c =
        "GET /app/h2c?q=1 HTTP/1.1\r\nHost: kc.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
               Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n\
               GET /app/after HTTP/1.1\r\nHost: kc.test\r\nConnection: close\r\n\r\n";
    let got = lab.raw_tls(h2c, false);
    let bodies = answers(&got);
    assert_eq!(
        bodies.len(),
        2,
        "two answers:\n{got}\n{}",
        lab.daemon.log_text()
    );
    assert_eq!(
        request_line(bodies[0]).trim(),
        "GET /h2c?q=1 HTTP/1.1",
        "{got}"
    );
    assert_eq!(
        request_line(bodies[1]).trim(),
        "GET /after HTTP/1.1",
        "{got}"
    );
    let h = headers(bodies[0]);
    assert!(values(&h, "upgrade").is_empty(), "{got}");
    assert!(values(&h, "http2-settings").is_empty(), "{got}");
    assert_eq!(values(&h, "x-forwarded-prefix"), ["/app"], "{got}");
    assert!(!got.contains("TUNNEL:"), "a tunnel opened:\n{got}");

    // WebSocket: the upgrade reaches the backend on the stripped path, and bytes sent after
    // the head travel through the tunnel both ways.
    let ws = "GET /app/chat?room=1 HTTP/1.1\r\nHost: kc.test\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nping";
    let got = lab.raw_tls(ws, false);
    assert!(
        got.starts_with("HTTP/1.1 101 "),
        "{got}\n{}",
        lab.daemon.log_text()
    );
    let lower = got.to_ascii_lowercase();
    assert!(
        lower.contains("x-request-line: get /chat?room=1 http/1.1\r\n"),
        "{got}"
    );
    assert!(got.contains("TUNNEL:ping"), "{got}");
    assert_eq!(route_hits(&lab, "app"), 3.0);
}

/// A WebSocket upgrade on a forward-auth route is judged before any tunnel opens: without a
/// session it gets the sign-in redirect and the backend never sees it; with one, the upgrade
/// reaches the backend carrying exactly the auth service's identity.
#[test]
fn websocket_upgrades_on_an_auth_route_are_authorised_first() {
    require_root();
    let url = format!("http://{}:{AUTH_PORT}/oauth2/auth", backend_addr4(0));
    let mut lab = lab(
        "fa6",
        &[&format!(
            "[[edge.route]]\nname = \"ws\"\npath = \"/ws\"\n\
             auth = {{ url = \"{url}\", signin_url = \"/oauth2/start\" }}"
        )],
    );
    lab.replace_backends(|ns, i| {
        tcp_server(ns, &format!("backend-{i}"), BACKEND_PORT, named_raw_backend)
            .expect("named raw backend")
    });
    let auth = AuthService::start(lab.topo.backend(0), AUTH_PORT).expect("auth stand-in");
    let upgrade = |cookie: &str| {
        format!(
            "GET /ws/chat HTTP/1.1\r\nHost: kc.test\r\n{cookie}X-Auth-Request-User: forged\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nping"
        )
    };
    let got = lab.raw_tls(&upgrade(""), false);
    assert!(
        got.starts_with("HTTP/1.1 302 "),
        "{got}\n{}",
        lab.daemon.log_text()
    );
    assert!(!got.contains("TUNNEL:"), "a tunnel opened:\n{got}");
    assert_eq!(route_hits(&lab, "ws"), 1.0);
    assert_eq!(metric(&lab, "sluice_edge_backend_requests_total", &[]), 0.0);

    let got = lab.raw_tls(&upgrade("Cookie: _oauth2_proxy=alice\r\n"), false);
    assert!(
        got.starts_with("HTTP/1.1 101 "),
        "{got}\n{}",
        lab.daemon.log_text()
    );
    assert!(
        got.to_ascii_lowercase().contains("x-users-seen: alice\r\n"),
        "the backend saw another identity:\n{got}"
    );
    assert!(got.contains("TUNNEL:ping"), "{got}");
    let asked: Vec<String> = auth
        .take_seen()
        .iter()
        .map(|s| s.values("x-forwarded-uri").join(","))
        .collect();
    assert_eq!(
        asked,
        ["/ws/chat", "/ws/chat"],
        "one subrequest per upgrade"
    );
}

#[test]
fn trailers_and_the_connection_header_on_a_stripped_route() {
    require_root();
    let lab = routed_lab("ck4");
    // A chunked body with trailers passes to the routed backend on the stripped path; its
    // trailer fields stay behind (they would be headers the client set).
    let request = "POST /app/t HTTP/1.1\r\nHost: kc.test\r\nTransfer-Encoding: chunked\r\n\
                   TE: trailers\r\nTrailer: X-Forwarded-For, X-Forwarded-Prefix, X-Trailer\r\n\
                   Connection: close\r\n\r\n\
                   5\r\nhello\r\n6\r\n world\r\n0\r\nX-Forwarded-For: 203.0.113.66\r\n\
                   X-Forwarded-Prefix: /forged\r\nX-Trailer: 1\r\n\r\n";
    let got = lab.raw_tls(request, false);
    let bodies = answers(&got);
    assert_eq!(bodies.len(), 1, "{got}\n{}", lab.daemon.log_text());
    assert_eq!(request_line(bodies[0]).trim(), "POST /t HTTP/1.1", "{got}");
    let h = headers(bodies[0]);
    assert_eq!(
        values(&h, "x-forwarded-for"),
        [CLIENT_ADDR4.to_string()],
        "{got}"
    );
    assert_eq!(values(&h, "x-forwarded-prefix"), ["/app"], "{got}");
    assert!(bodies[0].contains("hello\r\n"), "the body arrives:\n{got}");
    assert!(bodies[0].contains(" world\r\n"), "the body arrives:\n{got}");
    for forged in ["203.0.113.66", "/forged", "X-Trailer", "x-trailer"] {
        assert!(
            !bodies[0].contains(forged),
            "{forged} crossed in a trailer:\n{got}"
        );
    }

    // A backend's response trailers reach the client, over HTTP/2 and over HTTP/1.1 when the
    // client accepts them (`TE: trailers`).
    for http in HTTP {
        let out = lab
            .https(edge4(), "/app/trailer")
            .fail()
            .args(&[http, "-D", "-", "-H", "TE: trailers"])
            .run(lab.topo.client())
            .unwrap_or_else(|e| panic!("curl {http}: {e:#}\n{}", lab.daemon.log_text()));
        let (head, rest) = out
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{out}"));
        // curl writes the trailer among the body bytes (HTTP/1.1 after them, HTTP/2 before).
        let at = rest
            .to_ascii_lowercase()
            .find("x-checksum: ")
            .unwrap_or_else(|| panic!("{http}: no trailer in\n{out}"));
        let line_end = rest[at..].find("\r\n").map_or(rest.len(), |e| at + e);
        let trailer = rest[at + "x-checksum: ".len()..line_end].trim();
        let body = format!("{}{}", &rest[..at], &rest[line_end..]);
        assert_eq!(body.trim(), trailer, "{http}: {out}");
        assert!(trailer.starts_with("backend-"), "{http}: {out}");
        assert!(
            !head.to_ascii_lowercase().contains("x-checksum: "),
            "{http}: {out}"
        );
    }

    // Naming sluice's own headers in `Connection` removes none of them (the client's
    // hop-by-hop headers go before sluice adds its own), on the routed path too.
    let body = lab
        .https(edge4(), "/app/x?y=1")
        .fail()
        .identity(&lab.pki.client)
        .args(&[
            "--http1.1",
            "-H",
            "Connection: keep-alive, X-Forwarded-For, X-Client-Cert, Client-Cert, \
             X-Forwarded-Prefix, ssl-client-cert, ssl-client-verify, X-Forwarded-Proto, X-Gone",
            "-H",
            "X-Gone: 1",
        ])
        .run(lab.topo.client())
        .unwrap_or_else(|e| panic!("curl: {e:#}\n{}", lab.daemon.log_text()));
    assert_eq!(request_line(&body).trim(), "GET /x?y=1 HTTP/1.1", "{body}");
    let h = headers(&body);
    assert_eq!(
        single(&h, "x-forwarded-for", &body),
        CLIENT_ADDR4.to_string()
    );
    assert_eq!(single(&h, "x-forwarded-prefix", &body), "/app");
    assert_eq!(single(&h, "x-forwarded-proto", &body), "https");
    assert_eq!(single(&h, "ssl-client-verify", &body), "SUCCESS");
    assert!(single(&h, "client-cert", &body).starts_with(':'), "{body}");
    assert!(!single(&h, "ssl-client-cert", &body).is_empty(), "{body}");
    assert!(values(&h, "x-gone").is_empty(), "{body}");
    assert!(values(&h, "connection").is_empty(), "{body}");
}

#[test]
fn pipelined_requests_for_two_routes_each_go_where_their_route_sends_them() {
    require_root();
    let lab = routed_lab("ck5");
    // One connection, one write, two routes whose affinity sends the same session to
    // different backends: each request is routed, stripped and placed on its own.
    let pipelined = "GET /one/x HTTP/1.1\r\nHost: kc.test\r\nCookie: AUTH_SESSION_ID=s.n\r\n\r\n\
                     GET /two/y HTTP/1.1\r\nHost: kc.test\r\nCookie: AUTH_SESSION_ID=s.n\r\n\r\n\
                     GET /one/z HTTP/1.1\r\nHost: kc.test\r\nCookie: AUTH_SESSION_ID=s.n\r\n\
                     Connection: close\r\n\r\n";
    let got = lab.raw_tls(pipelined, false);
    let bodies = answers(&got);
    assert_eq!(
        bodies.len(),
        3,
        "three answers:\n{got}\n{}",
        lab.daemon.log_text()
    );
    let seen: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| (backend_of(b), request_line(b).trim()))
        .collect();
    assert_eq!(
        seen,
        [
            ("backend-0", "GET /x HTTP/1.1"),
            ("backend-1", "GET /y HTTP/1.1"),
            ("backend-0", "GET /z HTTP/1.1"),
        ],
        "{got}"
    );
    assert_eq!(route_hits(&lab, "one"), 2.0);
    assert_eq!(route_hits(&lab, "two"), 1.0);
}

/// A PROXY v2 sender in the client namespace: each connection to `addr` is relayed to the
/// edge after a v2 header naming `source` (which the test may change between connections)
/// as the client.
struct ProxyRelay {
    addr: SocketAddr,
    source: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
}

impl ProxyRelay {
    fn start(ns: &NetNs, to: SocketAddr) -> ProxyRelay {
        let listener = ns
            .exec(|| TcpListener::bind("127.0.0.1:0"))
            .expect("enter the client namespace")
            .expect("bind the relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("relay address");
        let source = Arc::new(Mutex::new(SocketAddr::from((CLIENT_ADDR4, 40000))));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (Arc::clone(&source), Arc::clone(&stop));
        // The thread, and every thread it starts, connects from the client namespace.
        ns.enter(move || {
            while !halt.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let from = *s.lock().expect("source");
                thread::spawn(move || relay(client, to, from));
            }
        })
        .expect("start the relay");
        ProxyRelay { addr, source, stop }
    }

    fn set_source(&self, source: SocketAddr) {
        *self.source.lock().expect("source") = source;
    }
}

impl Drop for ProxyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, to: SocketAddr, source: SocketAddr) {
    let _ = client.set_nonblocking(false);
    let Ok(mut edge) = TcpStream::connect(to) else {
        return;
    };
    let mut header = [0u8; 64];
    let Ok(n) = write_v2(&mut header, Command::Proxy, source, to, &[], false) else {
        return;
    };
    if edge.write_all(&header[..n]).is_err() {
        return;
    }
    let (Ok(mut edge_r), Ok(mut client_w)) = (edge.try_clone(), client.try_clone()) else {
        return;
    };
    let back = thread::spawn(move || {
        let _ = std::io::copy(&mut edge_r, &mut client_w);
        let _ = client_w.shutdown(std::net::Shutdown::Write);
    });
    let mut client_r = client;
    let _ = std::io::copy(&mut client_r, &mut edge);
    let _ = edge.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}

#[test]
fn behind_a_proxy_header_cookie_hash_sticks_by_cookie_not_by_the_proxied_client() {
    require_root();
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.trusted_proxies = vec![format!("{CLIENT_ADDR4}/32")];
    listener.settings = vec![
        "proxy_protocol = \"required\"".to_owned(),
        "[[edge.route]]\nname = \"kc\"\npath = \"/\"\n\
         affinity = { mode = \"cookie-hash\", cookie = \"sid\" }"
            .to_owned(),
    ];
    let lab = Lab::start("ck6", &[listener]);
    let relay = ProxyRelay::start(lab.topo.client(), edge4());
    let fetch = |source: u8, http: &str, cookie: Option<&str>| {
        relay.set_source(SocketAddr::from((
            Ipv4Addr::new(203, 0, 113, source),
            50000,
        )));
        let mut curl =
            sluice_tests::curl::Curl::https(SERVER_NAME, relay.addr, "/x", lab.pki.ca_cert())
                .fail()
                .args(&[http]);
        let header = cookie.map(|c| format!("Cookie: a=1; sid={c}"));
        if let Some(h) = &header {
            curl = curl.args(&["-H", h]);
        }
        let body = curl
            .run(lab.topo.client())
            .unwrap_or_else(|e| panic!("curl via the relay: {e:#}\n{}", lab.daemon.log_text()));
        let h = headers(&body);
        // The proxied client is the client: the PROXY header's source, not the relay.
        assert_eq!(
            single(&h, "x-forwarded-for", &body),
            format!("203.0.113.{source}"),
            "{body}"
        );
        backend_of(&body).to_owned()
    };
    // Without a cookie the pool picks by the proxied client's address: sixteen clients land
    // on both backends.
    let by_client: Vec<String> = (1..=16).map(|s| fetch(s, "--http1.1", None)).collect();
    let mut spread = by_client.clone();
    spread.sort();
    spread.dedup();
    assert_eq!(spread.len(), 2, "{by_client:?}");
    // With one: the cookie decides, whichever client the PROXY header names.
    for value in ["alpha", "beta", "gamma", "delta"] {
        let want = fetch(1, "--http1.1", Some(value));
        for http in HTTP {
            for source in 1..=16 {
                assert_eq!(
                    fetch(source, http, Some(value)),
                    want,
                    "{http} sid={value} from 203.0.113.{source}"
                );
            }
        }
    }
    assert_eq!(
        metric(
            &lab,
            "sluice_edge_route_affinity_total",
            &[("edge", "kc"), ("outcome", "hit")]
        ),
        4.0 * 33.0
    );
}

/// Behind a trusted PROXY v2 sender, the forward-auth subrequest names the client the PROXY
/// header names (as the backend's `X-Forwarded-For` does), not the sender, and a client's own
/// `X-Forwarded-For` is no part of it.
#[test]
fn behind_a_proxy_header_the_auth_service_is_told_the_proxied_client() {
    require_root();
    let url = format!("http://{}:{AUTH_PORT}/oauth2/auth", backend_addr4(0));
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.trusted_proxies = vec![format!("{CLIENT_ADDR4}/32")];
    listener.settings = vec![
        "proxy_protocol = \"required\"".to_owned(),
        format!(
            "[[edge.route]]\nname = \"app\"\npath = \"/\"\n\
             auth = {{ url = \"{url}\", on_unauthorized = \"pass\" }}"
        ),
    ];
    let lab = Lab::start("fa7", &[listener]);
    let auth = AuthService::start(lab.topo.backend(0), AUTH_PORT).expect("auth stand-in");
    let relay = ProxyRelay::start(lab.topo.client(), edge4());
    relay.set_source(SocketAddr::from((Ipv4Addr::new(203, 0, 113, 7), 50000)));
    for http in HTTP {
        let body =
            sluice_tests::curl::Curl::https(SERVER_NAME, relay.addr, "/x", lab.pki.ca_cert())
                .fail()
                .args(&[
                    http,
                    "-H",
                    "Cookie: _oauth2_proxy=alice",
                    "-H",
                    "X-Forwarded-For: 198.51.100.66",
                ])
                .run(lab.topo.client())
                .unwrap_or_else(|e| panic!("curl via the relay: {e:#}\n{}", lab.daemon.log_text()));
        let h = headers(&body);
        assert_eq!(
            single(&h, "x-forwarded-for", &body),
            "203.0.113.7",
            "{http}"
        );
        assert_eq!(single(&h, "x-auth-request-user", &body), "alice", "{http}");
        let seen = auth.take_seen();
        assert_eq!(seen.len(), 1, "{http}: {seen:#?}");
        assert_eq!(
            seen[0].values("x-forwarded-for"),
            ["203.0.113.7"],
            "{http}: {seen:#?}"
        );
    }
}
