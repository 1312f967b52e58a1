//! Edge routes end to end: the real `sluice run` with route tables (the Keycloak preset, custom
//! `[[edge.route]]`s, host routes) in front of header-echoing backends, driven by the real curl
//! (`--path-as-is`, so curl sends each spelling as written) over HTTP/1.1 and HTTP/2, and by
//! `openssl s_client` for pipelined requests.
//!
//! What a backend received is read from its echo (the request line it saw); that a request
//! never reached one is read from `sluice_edge_backend_requests_total`, which counts every
//! request sent to a backend whether its connection was opened for it or reused.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_routes -- --test-threads=1`.

#![allow(clippy::float_cmp)] // every metric compared is a small integer count, exact in f64

use std::net::SocketAddr;

use sluice_tests::{
    edge_lab::{edge4, headers, values, Lab, Listener, EDGE_PORT, SERVER_NAME},
    require_root,
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
        "GET /realms/x HTTP/1.1\\r\\nHost: {SERVER_NAME}\\r\\n\\r\\n\
         GET /realms/../admin/ HTTP/1.1\\r\\nHost: {SERVER_NAME}\\r\\n\\r\\n\
         GET /resources/y HTTP/1.1\\r\\nHost: {SERVER_NAME}\\r\\nConnection: close\\r\\n\\r\\n"
    );
    let ca = lab.pki.ca_cert().display().to_string();
    let script = format!(
        "printf '{requests}' | timeout 10 openssl s_client -quiet -ign_eof -alpn http/1.1 \
         -connect {} -servername {SERVER_NAME} -CAfile {ca} 2>/dev/null",
        edge4()
    );
    let out = lab
        .topo
        .client()
        .run(&["sh", "-c", &script])
        .expect("openssl s_client");
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
