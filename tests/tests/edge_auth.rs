//! Forward authentication end to end: the real `sluice run` with `auth` routes in front of
//! body-echoing backends, asking a stand-in for oauth2-proxy's `/oauth2/auth`
//! (`sluice_tests::auth_service`) that records every subrequest, driven by the real curl over
//! HTTP/1.1 and HTTP/2, and one pipelined HTTP/1.1 connection (`openssl s_client`).
//!
//! That a request never reached a backend is read from `sluice_edge_backend_requests_total`,
//! which counts every request sent to one.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_auth -- --test-threads=1`.

#![allow(clippy::float_cmp)] // every metric compared is a small integer count, exact in f64

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_tests::{
    auth_service::{
        body_echo_backend, AuthService, Seen, ALICE, ALICE_SET_COOKIE, AUTH_PORT,
        EXPIRED_SET_COOKIE, SLOW,
    },
    edge_lab::{edge4, headers, values, Lab, Listener, BACKEND_PORT, EDGE_PORT, SERVER_NAME},
    require_root,
    topology::{backend_addr4, CLIENT_ADDR4},
};

const HTTP: [&str; 2] = ["--http1.1", "--http2"];
/// The sluice-side timeout of every auth route here.
const AUTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Every client copy the tests forge of the names an auth service vouches for, in the
/// spellings a backend might read as them.
const FORGED: [&str; 9] = [
    "X-Auth-Request-User: forged",
    "X-Auth-Request-Email: forged@evil.test",
    "X-Auth-Request-Groups: forged-admins",
    "X-Auth-Request-Preferred-Username: forged",
    "X-Auth-Request-Access-Token: forged-token",
    "X_Auth_Request_User: forged",
    "x-auth-request_email: forged@evil.test",
    "Authorization: Bearer forged",
    "X-Forwarded-For: 203.0.113.66",
];

/// The lab: the stand-in on backend 0's namespace, body-echo backends, and a listener whose
/// routes are the oauth2-proxy layout: `/oauth2` to the pool without auth, `/api` with auth
/// passing 401s through, everything else with auth redirecting 401s to sign in.
struct AuthLab {
    lab: Lab,
    auth: AuthService,
}

fn start(prefix: &str) -> AuthLab {
    let url = format!("http://{}:{AUTH_PORT}/oauth2/auth", backend_addr4(0));
    let timeout = format!("{}ms", AUTH_TIMEOUT.as_millis());
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.settings = vec![
        "[[edge.route]]".into(),
        "name = \"oauth2\"".into(),
        "path = \"/oauth2\"".into(),
        "[[edge.route]]".into(),
        "name = \"api\"".into(),
        "path = \"/api\"".into(),
        format!(
            "auth = {{ url = \"{url}\", on_unauthorized = \"pass\", timeout = \"{timeout}\" }}"
        ),
        "[[edge.route]]".into(),
        "name = \"app\"".into(),
        "path = \"/\"".into(),
        format!(
            "auth = {{ url = \"{url}\", signin_url = \"/oauth2/start\", timeout = \
             \"{timeout}\", pass_set_cookie = true }}"
        ),
    ];
    let mut lab = Lab::start(prefix, &[listener]);
    lab.replace_backends(|ns, i| {
        body_echo_backend(ns, &format!("backend-{i}"), BACKEND_PORT).expect("body-echo backend")
    });
    let auth = AuthService::start(lab.topo.backend(0), AUTH_PORT).expect("auth stand-in");
    AuthLab { lab, auth }
}

impl AuthLab {
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let management: SocketAddr = "127.0.0.1:9019".parse().expect("management address");
        self.lab
            .daemon
            .metric(self.lab.topo.gateway(), management, name, labels)
            .unwrap_or_else(|e| panic!("scrape /metrics: {e:#}"))
    }

    fn backend_requests(&self) -> f64 {
        self.metric("sluice_edge_backend_requests_total", &[("edge", "kc")])
    }

    fn outcome(&self, route: &str, outcome: &str) -> f64 {
        self.metric(
            "sluice_edge_route_auth_total",
            &[("edge", "kc"), ("route", route), ("outcome", outcome)],
        )
    }

    /// curl `path` with `args`, showing the response head (`-D -`): the status, the response
    /// head's lines (names lowercased) and the body.
    fn fetch(&self, path: &str, args: &[&str]) -> (u16, Vec<String>, String) {
        let mut all = vec!["-D", "-"];
        all.extend_from_slice(args);
        let (code, out) = self.lab.fetch(edge4(), path, &all);
        // The head ends at the first blank line; curl writes it with CRLFs.
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let head = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| format!("{}: {}", n.trim().to_ascii_lowercase(), v.trim()))
            .collect();
        (code, head, body.to_owned())
    }

    /// The only subrequest the stand-in received since the last call.
    fn one_subrequest(&self, what: &str) -> Seen {
        let seen = self.auth.take_seen();
        assert_eq!(seen.len(), 1, "{what}: subrequests {seen:#?}");
        seen.into_iter().next().unwrap_or_else(|| unreachable!())
    }
}

/// The header lines of the backend's echo (its first line is its name, the second the
/// request line; the body follows the blank line).
fn backend_headers(body: &str) -> Vec<String> {
    let head = body.split("\r\n\r\n").next().unwrap_or_default();
    headers(head)
}

#[test]
fn allowed_requests_carry_exactly_the_auth_services_identity() {
    require_root();
    let t = start("fa1");
    for http in HTTP {
        // alice: every identity header comes from the stand-in, none from the client.
        let mut args = vec![http, "-H", "Cookie: _oauth2_proxy=alice; theme=dark"];
        for f in FORGED {
            args.extend(["-H", f]);
        }
        let (code, head, body) = t.fetch("/app/x?y=1&z=a%20b", &args);
        assert_eq!(code, 200, "{http}: {body}");
        assert!(
            !body.contains("forged"),
            "{http}: a forged header passed:\n{body}"
        );
        let h = backend_headers(&body);
        for (name, value) in ALICE {
            assert_eq!(values(&h, name), [value], "{http}: {name}:\n{body}");
        }
        assert_eq!(
            values(&h, "cookie"),
            ["_oauth2_proxy=alice; theme=dark"],
            "{http}: the backend gets the client's cookies:\n{body}"
        );
        assert_eq!(values(&h, "x-forwarded-for"), [CLIENT_ADDR4.to_string()]);
        assert_eq!(
            values(&head, "set-cookie"),
            [ALICE_SET_COOKIE],
            "{http}: the refreshed cookie reaches the client"
        );
        // The subrequest: GET to the auth path, what the client asked for in X-Forwarded-*,
        // its cookies and credentials, no body.
        let sub = t.one_subrequest(http);
        assert_eq!(sub.request_line, "GET /oauth2/auth HTTP/1.1");
        let backend_host = values(&h, "x-forwarded-host");
        let (auth_host, client) = (
            format!("{}:{AUTH_PORT}", backend_addr4(0)),
            CLIENT_ADDR4.to_string(),
        );
        let expect: [(&str, Vec<&str>); 9] = [
            ("host", vec![auth_host.as_str()]),
            ("x-forwarded-method", vec!["GET"]),
            ("x-forwarded-uri", vec!["/app/x?y=1&z=a%20b"]),
            ("x-forwarded-host", vec!["kc.test:8443"]),
            ("x-forwarded-proto", vec!["https"]),
            ("x-forwarded-for", vec![client.as_str()]),
            ("cookie", vec!["_oauth2_proxy=alice; theme=dark"]),
            ("authorization", vec!["Bearer forged"]),
            ("content-length", vec![]),
        ];
        for (name, want) in &expect {
            assert_eq!(
                &sub.values(name),
                want,
                "{http}: subrequest {name}: {sub:#?}"
            );
        }
        assert_eq!(backend_host, ["kc.test:8443"], "{http}: {body}");

        // bob: the stand-in vouches for his user name only; every other forged name is gone
        // all the same, Authorization included.
        let mut args = vec![http, "-H", "Cookie: _oauth2_proxy=bob"];
        for f in FORGED {
            args.extend(["-H", f]);
        }
        let (code, head, body) = t.fetch("/app/", &args);
        assert_eq!(code, 200, "{http}: {body}");
        assert!(
            !body.contains("forged"),
            "{http}: a forged header passed:\n{body}"
        );
        let h = backend_headers(&body);
        assert_eq!(values(&h, "x-auth-request-user"), ["bob"], "{http}: {body}");
        for (name, _) in &ALICE[1..] {
            assert!(
                values(&h, name).is_empty(),
                "{http}: {name} reached the backend:\n{body}"
            );
        }
        assert!(values(&head, "set-cookie").is_empty(), "{http}: {head:?}");
        t.one_subrequest(http);

        // A bearer token instead of a cookie reaches the auth service, and a 202 for it lets
        // the request through, without the client's token (the auth service sent none).
        let (code, _, body) = t.fetch("/api/v1", &[http, "-H", "Authorization: Bearer svc-token"]);
        assert_eq!(code, 200, "{http}: {body}");
        let h = backend_headers(&body);
        assert_eq!(values(&h, "x-auth-request-user"), ["svc"]);
        assert!(values(&h, "authorization").is_empty(), "{http}: {body}");
        let sub = t.one_subrequest(http);
        assert_eq!(sub.values("authorization"), ["Bearer svc-token"]);
        assert!(sub.values("cookie").is_empty());
    }
    assert_eq!(t.outcome("app", "allowed"), 4.0);
    assert_eq!(t.outcome("api", "allowed"), 2.0);
    assert_eq!(t.backend_requests(), 6.0);
}

#[test]
fn unauthorized_requests_are_sent_to_sign_in_or_get_the_401() {
    require_root();
    let t = start("fa2");
    for http in HTTP {
        let (code, head, body) = t.fetch("/app/x/../y?next=/a%20b&c=%2F", &[http, "--path-as-is"]);
        assert_eq!(code, 302, "{http}: {body}");
        // rd= is the URL the client asked for (normalised as the route matched it), encoded.
        assert_eq!(
            values(&head, "location"),
            ["/oauth2/start?rd=https%3A%2F%2Fkc.test%3A8443%2Fapp%2Fy%3Fnext%3D%2Fa%2520b%26c%3D%252F"],
            "{http}"
        );
        assert!(values(&head, "set-cookie").is_empty(), "{http}: {head:?}");
        let sub = t.one_subrequest(http);
        assert_eq!(sub.values("x-forwarded-uri"), ["/app/y?next=/a%20b&c=%2F"]);

        // An expired session: the stand-in's clearing cookie rides on the redirect.
        let (code, head, _) = t.fetch("/", &[http, "-H", "Cookie: _oauth2_proxy=expired"]);
        assert_eq!(code, 302);
        assert_eq!(
            values(&head, "location"),
            ["/oauth2/start?rd=https%3A%2F%2Fkc.test%3A8443%2F"]
        );
        assert_eq!(values(&head, "set-cookie"), [EXPIRED_SET_COOKIE], "{http}");
        t.one_subrequest(http);

        // /api passes the 401 through (and passes no cookie: pass_set_cookie is off there).
        let (code, head, _) = t.fetch(
            "/api/v1?q=1",
            &[http, "-H", "Cookie: _oauth2_proxy=expired"],
        );
        assert_eq!(code, 401, "{http}");
        assert!(values(&head, "location").is_empty());
        assert!(values(&head, "set-cookie").is_empty());
        t.one_subrequest(http);

        // The sign-in paths themselves are an ordinary route: no auth asked.
        let (code, _, body) = t.fetch("/oauth2/start?rd=%2F", &[http]);
        assert_eq!(code, 200, "{http}: {body}");
        assert!(t.auth.take_seen().is_empty());
    }
    assert_eq!(t.outcome("app", "unauthorized"), 4.0);
    assert_eq!(t.outcome("api", "unauthorized"), 2.0);
    // Only the two /oauth2 requests reached a backend.
    assert_eq!(t.backend_requests(), 2.0);
}

#[test]
fn forbidden_slow_and_missing_auth_services_never_open_the_door() {
    require_root();
    let mut t = start("fa3");
    for http in HTTP {
        let (code, _, body) = t.fetch("/app", &[http, "-H", "Cookie: _oauth2_proxy=forbidden"]);
        assert_eq!(code, 403, "{http}: {body}");
        t.one_subrequest(http);

        let started = Instant::now();
        let (code, _, body) = t.fetch("/app", &[http, "-H", "Cookie: _oauth2_proxy=slow"]);
        let took = started.elapsed();
        assert_eq!(code, 503, "{http}: {body}");
        // The route's timeout decides, not the auth service's eventual 202.
        assert!(
            took >= AUTH_TIMEOUT && took < SLOW,
            "{http}: answered after {took:?}"
        );
        t.one_subrequest(http);
    }
    assert_eq!(t.outcome("app", "forbidden"), 2.0);
    assert_eq!(t.outcome("app", "timeout"), 2.0);
    // Down: nothing listens, and the kept connections are closed.
    t.auth.stop();
    for http in HTTP {
        for path in ["/app", "/api/v1"] {
            let (code, _, body) = t.fetch(path, &[http, "-H", "Cookie: _oauth2_proxy=alice"]);
            assert_eq!(code, 503, "{http} {path}: {body}");
        }
    }
    assert_eq!(t.outcome("app", "error"), 2.0);
    assert_eq!(t.outcome("api", "error"), 2.0);
    assert_eq!(t.backend_requests(), 0.0);
}

#[test]
fn a_request_body_reaches_the_backend_intact_after_the_auth_call() {
    require_root();
    let t = start("fa4");
    // 100 KiB, larger than any single read or frame on the way; printable, as curl's output
    // is read as text.
    let payload: Vec<u8> = (0..100 * 1024u32)
        .map(|i| b'!' + u8::try_from(i * 7 % 94).unwrap_or(0))
        .collect();
    let file = std::env::temp_dir().join("sluice-test-fa4-body.bin");
    std::fs::write(&file, &payload).expect("write the request body");
    for http in HTTP {
        let data = format!("@{}", file.display());
        let (code, _, body) = t.fetch(
            "/app/upload",
            &[
                http,
                "-H",
                "Cookie: _oauth2_proxy=alice",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &data,
            ],
        );
        assert_eq!(code, 200, "{http}");
        let (head, received) = body.split_once("\r\n\r\n").expect("the echo's head");
        assert!(
            head.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("POST /app/upload ")),
            "{head}"
        );
        assert_eq!(received.len(), payload.len(), "{http}: body length");
        assert!(
            received.as_bytes() == payload.as_slice(),
            "{http}: body differs"
        );
        let sub = t.one_subrequest(http);
        assert_eq!(sub.values("x-forwarded-method"), ["POST"]);
        assert!(
            sub.values("content-length").is_empty() && sub.values("transfer-encoding").is_empty()
        );
    }
    let _ = std::fs::remove_file(&file);
}

/// Each request on a kept-alive HTTP/1.1 connection is judged on its own: a session on one
/// pipelined request does not carry over to the next without one, and no forged identity on
/// any of them reaches the backend.
#[test]
fn pipelined_requests_are_each_judged_on_their_own() {
    require_root();
    let t = start("fa5");
    let request = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}:{EDGE_PORT}\r\n{extra}\r\n")
    };
    let pipelined = [
        request(
            "/app/one",
            "Cookie: _oauth2_proxy=alice\r\nX-Auth-Request-User: forged\r\n",
        ),
        request("/app/two", "X-Auth-Request-User: forged\r\n"),
        request(
            "/app/three",
            "Cookie: _oauth2_proxy=alice\r\nConnection: close\r\n",
        ),
    ]
    .concat();
    let got = t.lab.raw_tls(&pipelined, false);
    let answers: Vec<&str> = got.split("HTTP/1.1 ").skip(1).collect();
    let statuses: Vec<&str> = answers
        .iter()
        .map(|a| a.lines().next().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["200 OK", "302 Found", "200 OK"], "{got}");
    assert!(!got.contains("forged"), "a forged identity passed:\n{got}");
    for (answer, path) in [(answers[0], "/app/one"), (answers[2], "/app/three")] {
        assert!(
            answer.contains(&format!("GET {path} HTTP/1.1")),
            "{path}:\n{answer}"
        );
        let lower = answer.to_ascii_lowercase();
        for (name, value) in ALICE {
            assert_eq!(
                lower
                    .matches(&format!("{name}: {}", value.to_ascii_lowercase()))
                    .count(),
                1,
                "{path}: {name}:\n{answer}"
            );
        }
    }
    assert!(
        answers[1]
            .to_ascii_lowercase()
            .contains("location: /oauth2/start?rd=https%3a%2f%2fkc.test%3a8443%2fapp%2ftwo\r\n"),
        "{}",
        answers[1]
    );
    let seen = t.auth.take_seen();
    let asked: Vec<(Vec<&str>, Vec<&str>)> = seen
        .iter()
        .map(|s| (s.values("x-forwarded-uri"), s.values("cookie")))
        .collect();
    assert_eq!(
        asked,
        [
            (vec!["/app/one"], vec!["_oauth2_proxy=alice"]),
            (vec!["/app/two"], vec![]),
            (vec!["/app/three"], vec!["_oauth2_proxy=alice"]),
        ],
        "one subrequest per request, each with that request's own cookie"
    );
    assert_eq!(t.outcome("app", "allowed"), 2.0);
    assert_eq!(t.outcome("app", "unauthorized"), 1.0);
    assert_eq!(t.backend_requests(), 2.0);
}
