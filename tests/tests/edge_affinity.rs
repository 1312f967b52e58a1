//! Sticky sessions end to end: the real `sluice run` with a route `affinity` in front of three
//! backends that name themselves, driven by the real curl over HTTP/1.1 and HTTP/2 from one
//! client address (so the pool's normal choice, by client address, is one fixed backend and a
//! cookie that sticks elsewhere is visible).
//!
//! Backends go down for real: the VIP's TCP health check sees a stopped backend and the kernel
//! marks it down; `sluice drain` marks one draining, which keeps its sessions; a reload that
//! drops a `[[vip.backend]]` removes one from the pool while it still runs.
//!
//! sluice's own cookie (`mode = "cookie"`) is read from the responses' `Set-Cookie` (curl
//! `-D -`) and sent back as a browser would; forged ones are made from real ones (a flipped
//! bit, another route's) or from nothing.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_affinity -- --test-threads=1`.

#![allow(clippy::float_cmp)] // every metric compared is a small integer count, exact in f64

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use sluice_tests::{
    curl::Curl,
    daemon::{Daemon, Scratch},
    edge_lab::{
        backend_of, edge4, header_echo_backends, LabBase, Listener, BACKEND_PORT, EDGE_PORT,
        SERVER_NAME,
    },
    gateway_config::web_gateway,
    http_headers_backend, require_root,
    topology::{backend_addr4, GW_CLIENT_IFNAME},
    ServerHandle, Topology,
};

const HTTP: [&str; 2] = ["--http1.1", "--http2"];
const BACKENDS: usize = 3;
const MANAGEMENT: &str = "127.0.0.1:9019";
/// How long a backend's state change may take to show (health checks every 200 ms).
const SETTLE: Duration = Duration::from_secs(20);

/// Three header-echo backends behind one listener whose only route is `route_keys` (a
/// `[[edge.route]]` named `kc`), with a TCP health check so a stopped backend goes down.
struct AffLab {
    daemon: Daemon,
    /// `None` while the test has stopped that backend.
    servers: Vec<Option<ServerHandle>>,
    pki: sluice_tests::certs::TestPki,
    topo: Topology,
    _scratch: Scratch,
}

impl AffLab {
    fn start(prefix: &str, affinity: &str) -> AffLab {
        AffLab::start_with(prefix, |_| {
            vec![format!(
                "[[edge.route]]\nname = \"kc\"\npath = \"/\"\naffinity = {affinity}"
            )]
        })
    }

    /// [`AffLab::start`] with the routes `routes` writes, given the scratch directory (for key
    /// files).
    fn start_with(prefix: &str, routes: impl FnOnce(&Path) -> Vec<String>) -> AffLab {
        let base = LabBase::new(prefix, BACKENDS, false);
        let health = format!(
            "[vip.health_check]\nkind = \"tcp\"\nport = {BACKEND_PORT}\ninterval = \"200ms\"\n\
             timeout = \"150ms\"\nrise = 1\nfall = 1\n"
        );
        let mut text = web_gateway(
            &base.instance,
            &[GW_CLIENT_IFNAME],
            base.scratch.path(),
            MANAGEMENT,
            &health,
            BACKENDS,
        );
        // Three backends need a bigger table than the shared gateway's (100 slots each).
        text = text.replace("table_size = 251", "table_size = 307");
        let mut listener = Listener::v4("kc", EDGE_PORT);
        listener.settings = routes(base.scratch.path());
        text.push_str(&listener.toml(&base.pki));
        let daemon = base.start_daemon(&text);
        let LabBase {
            topo, scratch, pki, ..
        } = base;
        let servers = header_echo_backends(&topo, BACKEND_PORT)
            .into_iter()
            .map(Some)
            .collect();
        let lab = AffLab {
            daemon,
            servers,
            pki,
            topo,
            _scratch: scratch,
        };
        // Backends count as down until their first health check passes.
        for i in 0..BACKENDS {
            lab.wait_for_state(i, "up");
        }
        lab
    }

    /// Backend `i`'s state in the kernel (`sluice backends`).
    fn state(&self, i: usize) -> String {
        self.daemon
            .backend_state("web", backend_addr4(i).into())
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn wait_for_state(&self, i: usize, state: &str) {
        wait_until(&format!("backend {i} {state}"), self, || {
            self.state(i) == state
        });
    }

    fn curl(&self, extra: &[&str]) -> Curl {
        Curl::https(SERVER_NAME, edge4(), "/x", self.pki.ca_cert()).args(extra)
    }

    /// The backend of each of `times` requests over one connection, each of which must be
    /// answered 200 by a backend.
    fn backends(&self, times: usize, extra: &[&str]) -> Vec<String> {
        let out = self
            .curl(extra)
            .fail()
            .run_times(self.topo.client(), times)
            .unwrap_or_else(|e| panic!("curl {extra:?}: {e:#}\n{}", self.daemon.log_text()));
        let names: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("backend-"))
            .map(str::to_owned)
            .collect();
        assert_eq!(names.len(), times, "{extra:?}: {out}");
        names
    }

    /// The backend of one request, which must be answered 200; and the echo.
    fn one(&self, extra: &[&str]) -> (String, String) {
        let (code, body) = self
            .curl(extra)
            .status_and_body(self.topo.client())
            .unwrap_or_else(|e| panic!("curl {extra:?}: {e:#}\n{}", self.daemon.log_text()));
        assert_eq!(code, 200, "{extra:?}: {body}");
        (backend_of(&body).to_owned(), body)
    }

    fn affinity(&self, outcome: &str) -> f64 {
        self.affinity_on("kc", outcome)
    }

    /// Route `route`'s affinity outcomes counted as `outcome` on `/metrics`.
    fn affinity_on(&self, route: &str, outcome: &str) -> f64 {
        let management: SocketAddr = MANAGEMENT.parse().expect("management address");
        self.daemon
            .metric(
                self.topo.gateway(),
                management,
                "sluice_edge_route_affinity_total",
                &[("edge", "kc"), ("route", route), ("outcome", outcome)],
            )
            .unwrap_or_else(|e| panic!("scrape /metrics: {e:#}"))
    }

    /// One request for `path`, which must be answered 200 by a backend: the backend, and the
    /// `Set-Cookie` header values of the response.
    fn answer(&self, path: &str, extra: &[&str]) -> Answer {
        let out = Curl::https(SERVER_NAME, edge4(), path, self.pki.ca_cert())
            .fail()
            .args(&["-D", "-"])
            .args(extra)
            .run(self.topo.client())
            .unwrap_or_else(|e| panic!("curl {path} {extra:?}: {e:#}\n{}", self.daemon.log_text()));
        let (head, body) = out
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {out}"));
        Answer {
            backend: backend_of(body).to_owned(),
            set_cookies: set_cookies(head),
        }
    }

    /// [`AffLab::backends`] for `times` requests over one connection, and how many
    /// `Set-Cookie` headers their responses carried.
    fn sticky_run(&self, times: usize, extra: &[&str]) -> (Vec<String>, usize) {
        let out = self
            .curl(extra)
            .fail()
            .args(&["-D", "-"])
            .run_times(self.topo.client(), times)
            .unwrap_or_else(|e| panic!("curl {extra:?}: {e:#}\n{}", self.daemon.log_text()));
        let names: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("backend-"))
            .map(str::to_owned)
            .collect();
        assert_eq!(names.len(), times, "{extra:?}: {out}");
        (names, set_cookies(&out).len())
    }

    /// Rewrites the daemon's config file with `edit` and reloads it, which must succeed.
    fn reload_with(&self, edit: impl FnOnce(String) -> String) {
        self.daemon
            .reload_with(edit)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    fn stop(&mut self, i: usize) {
        // Dropping the handle stops the server and closes its socket.
        self.servers[i] = None;
    }

    fn restart(&mut self, i: usize) {
        let server =
            http_headers_backend(self.topo.backend(i), &format!("backend-{i}"), BACKEND_PORT)
                .expect("restart the header-echo backend");
        self.servers[i] = Some(server);
    }

    fn reload_unchanged(&self) {
        let out = self.daemon.cli(&["reload"]).expect("run sluice reload");
        assert!(
            out.status.success(),
            "reload of the same config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What one response said about the session.
struct Answer {
    backend: String,
    /// Its `Set-Cookie` values.
    set_cookies: Vec<String>,
}

impl Answer {
    /// The value of the one `Set-Cookie` for `cookie`, which must carry exactly `attributes`.
    fn placed(&self, cookie: &str, attributes: &str) -> String {
        let [one] = &self.set_cookies[..] else {
            panic!("want one Set-Cookie, got {:?}", self.set_cookies)
        };
        let rest = one
            .strip_prefix(&format!("{cookie}="))
            .unwrap_or_else(|| panic!("not {cookie}: {one}"));
        let (value, attrs) = rest.split_once(';').unwrap_or((rest, ""));
        assert_eq!(attrs, attributes, "{one}");
        value.to_owned()
    }
}

/// The `Set-Cookie` values among response head lines (any case, HTTP/1.1 or HTTP/2).
fn set_cookies(heads: &str) -> Vec<String> {
    heads
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn name(i: usize) -> String {
    format!("backend-{i}")
}

/// Polls until `f` holds, for at most [`SETTLE`].
fn wait_until(what: &str, lab: &AffLab, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            lab.daemon.log_text()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn session_table() -> String {
    let routes: Vec<String> = (0..BACKENDS)
        .map(|i| format!("\"kc-{i}\" = \"{}\"", backend_addr4(i)))
        .collect();
    format!(
        "{{ mode = \"auth-session-route\", routes = {{ {} }} }}",
        routes.join(", ")
    )
}

#[test]
fn auth_session_route_sticks_survives_drain_and_reload_falls_back_when_down() {
    require_root();
    let mut lab = AffLab::start("aff1", &session_table());
    // The pool's normal choice for this client, and a session that lives elsewhere.
    let (normal, _) = lab.one(&[]);
    let normal_index: usize = normal["backend-".len()..].parse().expect("backend index");
    let t = (normal_index + 1) % BACKENDS;
    let cookie = format!("Cookie: AUTH_SESSION_ID=abc-123.kc-{t}");
    for http in HTTP {
        let seen = lab.backends(100, &[http, "-H", &cookie]);
        assert!(seen.iter().all(|b| *b == name(t)), "{http}: {seen:?}");
        // Split over two cookie headers (as HTTP/2 clients may send them), and the cookie
        // reaches the backend as sent.
        let (backend, body) = lab.one(&[http, "-H", "Cookie: theme=dark", "-H", &cookie]);
        assert_eq!(backend, name(t), "{http}: {body}");
        assert!(
            body.contains(&format!("AUTH_SESSION_ID=abc-123.kc-{t}")),
            "{body}"
        );
        // The legacy name of older Keycloak versions.
        let legacy = format!("Cookie: AUTH_SESSION_ID_LEGACY=abc-123.kc-{t}");
        assert_eq!(lab.one(&[http, "-H", &legacy]).0, name(t), "{http}");
    }
    assert_eq!(lab.affinity("hit"), 204.0);
    assert_eq!(lab.affinity("no_cookie"), 1.0);

    // Forged and malformed: never an error, always the pool's normal choice.
    let forged = [
        "Cookie: AUTH_SESSION_ID=".to_owned(),
        "Cookie: AUTH_SESSION_ID=no-dot".to_owned(),
        "Cookie: AUTH_SESSION_ID=abc.kc-9".to_owned(),
        "Cookie: AUTH_SESSION_ID=abc.198.18.99.2".to_owned(),
        format!("Cookie: AUTH_SESSION_ID=abc.{}", backend_addr4(t)),
        format!("Cookie: AUTH_SESSION_ID=abc.kc-{t}.x"),
        format!("Cookie: AUTH_SESSION_ID=\"abc.kc-{t}"),
        format!("Cookie: AUTH_SESSION_ID=abc.KC-{t}"),
        format!("Cookie: AUTH_SESSION_ID=abc.{}", "x".repeat(4000)),
        format!("Cookie: auth_session_id=abc.kc-{t}"),
    ];
    for http in HTTP {
        for c in &forged {
            let (backend, body) = lab.one(&[http, "-H", c]);
            assert_eq!(backend, normal, "{http} {c}: {body}");
        }
    }
    assert_eq!(lab.affinity("invalid"), 16.0);

    // Draining keeps the session; so does a reload that changes nothing.
    let addr = backend_addr4(t).to_string();
    lab.daemon
        .cli_ok(&["drain", "web", &addr])
        .unwrap_or_else(|e| panic!("{e:#}"));
    for http in HTTP {
        let seen = lab.backends(20, &[http, "-H", &cookie]);
        assert!(
            seen.iter().all(|b| *b == name(t)),
            "draining, {http}: {seen:?}"
        );
    }
    lab.daemon
        .cli_ok(&["undrain", "web", &addr])
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab.reload_unchanged();
    for http in HTTP {
        let seen = lab.backends(100, &[http, "-H", &cookie]);
        assert!(
            seen.iter().all(|b| *b == name(t)),
            "reloaded, {http}: {seen:?}"
        );
    }

    // Down: the pool's normal choice, counted as fallback_down.
    lab.stop(t);
    lab.wait_for_state(t, "down");
    for http in HTTP {
        let seen = lab.backends(20, &[http, "-H", &cookie]);
        assert!(seen.iter().all(|b| *b == normal), "down, {http}: {seen:?}");
    }
    assert_eq!(lab.affinity("fallback_down"), 40.0);
    // Back: it sticks again.
    lab.restart(t);
    lab.wait_for_state(t, "up");
    for http in HTTP {
        let seen = lab.backends(100, &[http, "-H", &cookie]);
        assert!(seen.iter().all(|b| *b == name(t)), "back, {http}: {seen:?}");
    }
}

#[test]
fn cookie_hash_sticks_per_value_over_both_protocols_and_a_reload() {
    require_root();
    let lab = AffLab::start("aff2", "{ mode = \"cookie-hash\", cookie = \"sid\" }");
    let (normal, _) = lab.one(&[]);
    let values: Vec<String> = (0..12).map(|i| format!("session-{i}")).collect();
    let mut chosen = Vec::new();
    for v in &values {
        let cookie = format!("Cookie: a=1; sid={v}; b=2");
        let mut first = None;
        for http in HTTP {
            let seen = lab.backends(100, &[http, "-H", &cookie]);
            let one = first.get_or_insert_with(|| seen[0].clone()).clone();
            assert!(seen.iter().all(|b| *b == one), "{v} {http}: {seen:?}");
        }
        chosen.push(first.expect("a backend"));
    }
    // Values spread: more than one backend serves them.
    let mut distinct = chosen.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 1, "every value on one backend: {chosen:?}");
    assert_eq!(lab.affinity("hit"), 2400.0);

    // Quoted, split over headers: the same value, the same backend.
    for http in HTTP {
        let quoted = format!("Cookie: sid=\"{}\"", values[0]);
        assert_eq!(lab.one(&[http, "-H", &quoted]).0, chosen[0], "{http}");
        let split = format!("Cookie: sid={}", values[1]);
        assert_eq!(
            lab.one(&[http, "-H", "Cookie: x=y", "-H", &split]).0,
            chosen[1],
            "{http}"
        );
        // No cookie (or another name): the pool's normal choice.
        assert_eq!(lab.one(&[http, "-H", "Cookie: SID=x"]).0, normal, "{http}");
    }
    assert_eq!(lab.affinity("no_cookie"), 3.0);

    lab.reload_unchanged();
    for (v, want) in values.iter().zip(&chosen) {
        let cookie = format!("Cookie: sid={v}");
        let seen = lab.backends(10, &["--http2", "-H", &cookie]);
        assert!(seen.iter().all(|b| b == want), "reloaded {v}: {seen:?}");
    }
}

/// What sluice's cookie carries on the `kc` route (path `/`), after its value.
const KC_ATTRIBUTES: &str = " Path=/; Secure; HttpOnly; SameSite=Lax";

/// A route `other` on `/other` and the route `kc` on everything else, both with sluice's own
/// cookie under one key file (written into `scratch`, mode 600).
fn own_cookie_routes(scratch: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let key = scratch.join("affinity.key");
    std::fs::write(&key, [0x5a; 32]).expect("write the key file");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    let affinity = format!("{{ mode = \"cookie\", key_file = \"{}\" }}", key.display());
    vec![
        format!("[[edge.route]]\nname = \"other\"\npath = \"/other\"\naffinity = {affinity}"),
        format!("[[edge.route]]\nname = \"kc\"\npath = \"/\"\naffinity = {affinity}"),
    ]
}

fn index(backend: &str) -> usize {
    backend["backend-".len()..].parse().expect("backend index")
}

/// `value` with one bit of its MAC flipped (the last byte of the tag).
fn flipped(value: &str) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let mut bytes = URL_SAFE_NO_PAD
        .decode(value)
        .expect("a base64url cookie value");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn own_cookie_places_sticks_moves_when_down_and_cannot_be_forged() {
    require_root();
    let mut lab = AffLab::start_with("ck1", own_cookie_routes);
    let cookie = |v: &str| format!("Cookie: SLUICE_AFFINITY={v}");

    // No cookie: the pool's normal choice, and a cookie that places the session there, the
    // same over both protocols (the value depends on key, route and backend only).
    let first = lab.answer("/x", &["--http1.1"]);
    let normal = first.backend.clone();
    let c_normal = first.placed("SLUICE_AFFINITY", KC_ATTRIBUTES);
    assert_eq!(c_normal.len(), 23, "{c_normal}");
    let again = lab.answer("/x", &["--http2"]);
    assert_eq!(again.backend, normal);
    assert_eq!(again.placed("SLUICE_AFFINITY", KC_ATTRIBUTES), c_normal);
    assert_eq!(lab.affinity("no_cookie"), 2.0);

    // Its backend goes down: the pool's choice, and a new cookie for the backend that answered.
    let n = index(&normal);
    lab.stop(n);
    lab.wait_for_state(n, "down");
    let mut c_moved = None;
    for http in HTTP {
        let a = lab.answer("/x", &[http, "-H", &cookie(&c_normal)]);
        assert_ne!(a.backend, normal, "{http}: answered by a down backend");
        let v = a.placed("SLUICE_AFFINITY", KC_ATTRIBUTES);
        let (backend, value) = c_moved.get_or_insert((a.backend.clone(), v.clone()));
        assert_eq!((&a.backend, &v), (&*backend, &*value), "{http}");
    }
    let (moved, c_moved) = c_moved.expect("a fallback");
    assert_ne!(c_moved, c_normal);
    assert_eq!(lab.affinity("fallback_down"), 2.0);

    // It comes back: the new cookie sticks to the backend it names (not the pool's normal
    // choice, which is up again), 100 requests over one connection, no new cookie; a client
    // that still holds the old cookie sticks to its backend again.
    lab.restart(n);
    lab.wait_for_state(n, "up");
    for http in HTTP {
        let (seen, set) = lab.sticky_run(100, &[http, "-H", &cookie(&c_moved)]);
        assert!(seen.iter().all(|b| *b == moved), "back, {http}: {seen:?}");
        assert_eq!(set, 0, "{http}: a hit sets no cookie");
        // Split over two cookie headers, as HTTP/2 clients may send them.
        let a = lab.answer(
            "/x",
            &[http, "-H", "Cookie: theme=dark", "-H", &cookie(&c_moved)],
        );
        assert_eq!(
            (a.backend.as_str(), a.set_cookies.len()),
            (moved.as_str(), 0)
        );
        let a = lab.answer("/x", &[http, "-H", &cookie(&c_normal)]);
        assert_eq!(
            (a.backend.as_str(), a.set_cookies.len()),
            (normal.as_str(), 0)
        );
    }
    assert_eq!(lab.affinity("hit"), 204.0);

    // A reload of the same config (the key file read again) keeps every session; so does
    // draining the session's backend.
    lab.reload_unchanged();
    for http in HTTP {
        let (seen, set) = lab.sticky_run(100, &[http, "-H", &cookie(&c_moved)]);
        assert!(
            seen.iter().all(|b| *b == moved),
            "reloaded, {http}: {seen:?}"
        );
        assert_eq!(set, 0, "reloaded, {http}");
    }
    let moved_addr = backend_addr4(index(&moved)).to_string();
    lab.daemon
        .cli_ok(&["drain", "web", &moved_addr])
        .unwrap_or_else(|e| panic!("{e:#}"));
    for http in HTTP {
        let (seen, set) = lab.sticky_run(20, &[http, "-H", &cookie(&c_moved)]);
        assert!(
            seen.iter().all(|b| *b == moved),
            "draining, {http}: {seen:?}"
        );
        assert_eq!(set, 0, "draining, {http}");
    }
    lab.daemon
        .cli_ok(&["undrain", "web", &moved_addr])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(lab.affinity("hit"), 444.0);

    // Forged and malformed: never an error, never steered: the pool's normal choice, and
    // the cookie for it.
    let forged = [
        flipped(&c_moved),
        "A".repeat(23),
        moved_addr.clone(),
        format!("{c_moved}x"),
        c_moved[..22].to_owned(),
        format!("\"{c_moved}"),
        "x".repeat(4000),
        "not-a-cookie".to_owned(),
    ];
    for http in HTTP {
        for v in &forged {
            let a = lab.answer("/x", &[http, "-H", &cookie(v)]);
            assert_eq!(a.backend, normal, "{http} {v}");
            assert_eq!(
                a.placed("SLUICE_AFFINITY", KC_ATTRIBUTES),
                c_normal,
                "{http} {v}"
            );
        }
        // An empty value is no cookie.
        let a = lab.answer("/x", &[http, "-H", "Cookie: SLUICE_AFFINITY="]);
        assert_eq!(
            a.placed("SLUICE_AFFINITY", KC_ATTRIBUTES),
            c_normal,
            "{http}"
        );
    }
    assert_eq!(lab.affinity("invalid"), 16.0);
    assert_eq!(lab.affinity("no_cookie"), 4.0);

    // Another route's cookie: the other route places its own (under its own path), and a kc
    // cookie sent to it is no session there.
    for http in HTTP {
        let a = lab.answer("/other/y", &[http, "-H", &cookie(&c_moved)]);
        assert_eq!(a.backend, normal, "{http}: a kc cookie steered route other");
        let c_other = a.placed(
            "SLUICE_AFFINITY",
            " Path=/other; Secure; HttpOnly; SameSite=Lax",
        );
        assert_ne!(
            c_other, c_normal,
            "{http}: cookies are bound to their route"
        );
    }
    assert_eq!(lab.affinity_on("other", "invalid"), 2.0);

    // A reload that removes the session's backend from the pool: its cookie is stale and
    // never reaches it, although it still runs and answers.
    let table = format!("[[vip.backend]]\naddress = \"{moved_addr}\"\n");
    lab.reload_with(|text| {
        assert!(text.contains(&table), "{text}");
        text.replace(&table, "")
    });
    for http in HTTP {
        let a = lab.answer("/x", &[http, "-H", &cookie(&c_moved)]);
        assert_ne!(a.backend, moved, "{http}: a removed backend was reached");
        let v = a.placed("SLUICE_AFFINITY", KC_ATTRIBUTES);
        assert_ne!(v, c_moved, "{http}");
        if a.backend == normal {
            assert_eq!(v, c_normal, "{http}");
        }
    }
    assert_eq!(lab.affinity("invalid"), 18.0);
    assert_eq!(lab.affinity("fallback_down"), 2.0);
}

#[test]
fn own_cookie_with_a_random_key_survives_a_reload_but_not_a_restart() {
    require_root();
    let mut lab = AffLab::start(
        "ck2",
        "{ mode = \"cookie\", cookie = \"kc_route\", max_age = \"8h\", same_site = \"Strict\" }",
    );
    let attributes = " Path=/; Max-Age=28800; Secure; HttpOnly; SameSite=Strict";
    let first = lab.answer("/x", &["--http2"]);
    let value = first.placed("kc_route", attributes);
    let held = format!("Cookie: kc_route={value}");
    lab.reload_unchanged();
    for http in HTTP {
        let (seen, set) = lab.sticky_run(10, &[http, "-H", &held]);
        assert!(seen.iter().all(|b| *b == first.backend), "{http}: {seen:?}");
        assert_eq!(set, 0, "{http}");
    }
    assert_eq!(lab.affinity("hit"), 20.0);
    // A restart makes a new key: the old cookie is honoured no more, and the same backend
    // gets another value.
    lab.daemon.stop().unwrap_or_else(|e| panic!("stop: {e:#}"));
    lab.daemon
        .restart(lab.topo.gateway())
        .unwrap_or_else(|e| panic!("restart: {e:#}"));
    for i in 0..BACKENDS {
        lab.wait_for_state(i, "up");
    }
    let a = lab.answer("/x", &["--http1.1", "-H", &held]);
    assert_eq!(a.backend, first.backend);
    assert_ne!(a.placed("kc_route", attributes), value);
    assert_eq!(lab.affinity("invalid"), 1.0);
}
