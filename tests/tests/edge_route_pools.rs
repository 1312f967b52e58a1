//! Routes to pools of their own, end to end: the real `sluice run` with one listener whose
//! `/oauth2` route sends to the VIP `auth` (backends 2 and 3) and whose other paths go to the
//! listener's pool `web` (backends 0 and 1), in front of four header-echo backends that name
//! themselves, driven by the real curl over HTTP/1.1 and HTTP/2 and by `openssl s_client` for
//! pipelined requests.
//!
//! Both VIPs have a TCP health check, so a stopped backend goes down for real; `sluice drain`
//! marks one draining; a reload rewrites a VIP's backends while the route table stays.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_route_pools -- --test-threads=1`.

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use sluice_tests::{
    curl::Curl,
    daemon::{Daemon, Scratch},
    edge_lab::{
        backend_of, edge4, header_echo_backends, raw_tls, LabBase, Listener, BACKEND_PORT,
        EDGE_PORT, SERVER_NAME,
    },
    gateway_config::web_gateway,
    require_root,
    topology::{backend_addr4, GW_CLIENT_IFNAME},
    ServerHandle, Topology, VIP4,
};

const HTTP: [&str; 2] = ["--http1.1", "--http2"];
const MANAGEMENT: &str = "127.0.0.1:9019";
/// How long a backend's state change may take to show (health checks every 200 ms).
const SETTLE: Duration = Duration::from_secs(20);
/// Requests per check: enough that a pool of two would show both backends were both allowed.
const TIMES: usize = 12;

/// Backends 0 and 1 of `web`, 2 and 3 of `auth`.
const WEB: [&str; 2] = ["backend-0", "backend-1"];
const AUTH: [&str; 2] = ["backend-2", "backend-3"];

fn health() -> String {
    format!(
        "[vip.health_check]\nkind = \"tcp\"\nport = {BACKEND_PORT}\ninterval = \"200ms\"\n\
         timeout = \"150ms\"\nrise = 1\nfall = 1\n"
    )
}

/// The VIP `auth` over `backends`, on port [`BACKEND_PORT`] (so a route to it needs no
/// `backend_port`: the VIP's port is the default for a pool not the listener's).
fn auth_vip(backends: &[usize]) -> String {
    let mut text = format!(
        "\n[[vip]]\nname = \"auth\"\naddress = \"{VIP4}:{BACKEND_PORT}\"\ntable_size = 251\n{}",
        health()
    );
    for i in backends {
        let _ = write!(
            text,
            "[[vip.backend]]\naddress = \"{}\"\n",
            backend_addr4(*i)
        );
    }
    text
}

struct PoolLab {
    daemon: Daemon,
    /// `None` while the test has stopped that backend.
    servers: Vec<Option<ServerHandle>>,
    pki: sluice_tests::certs::TestPki,
    topo: Topology,
    _scratch: Scratch,
}

impl PoolLab {
    /// Four backends; `oauth2_route` is the `/oauth2` route's extra keys.
    fn start(prefix: &str, oauth2_route: &str, auth_backends: &[usize]) -> PoolLab {
        let base = LabBase::new(prefix, 4, false);
        let mut text = web_gateway(
            &base.instance,
            &[GW_CLIENT_IFNAME],
            base.scratch.path(),
            MANAGEMENT,
            &health(),
            2,
        );
        text.push_str(&auth_vip(auth_backends));
        let mut listener = Listener::v4("rp", EDGE_PORT);
        listener.settings = vec![
            format!("[[edge.route]]\nname = \"oauth2\"\npath = \"/oauth2\"\npool = \"auth\"\n{oauth2_route}"),
            "[[edge.route]]\nname = \"app\"\npath = \"/\"".to_owned(),
        ];
        text.push_str(&listener.toml(&base.pki));
        let daemon = base.start_daemon(&text);
        let LabBase {
            topo, scratch, pki, ..
        } = base;
        let servers = header_echo_backends(&topo, BACKEND_PORT)
            .into_iter()
            .map(Some)
            .collect();
        let lab = PoolLab {
            daemon,
            servers,
            pki,
            topo,
            _scratch: scratch,
        };
        // Backends count as down until their first health check passes.
        for i in [0, 1] {
            lab.wait_for_state("web", i, "up");
        }
        for &i in auth_backends {
            lab.wait_for_state("auth", i, "up");
        }
        lab
    }

    /// Backend `i`'s state in VIP `vip` (`sluice backends`).
    fn state(&self, vip: &str, i: usize) -> String {
        self.daemon
            .backend_state(vip, backend_addr4(i).into())
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn wait_for_state(&self, vip: &str, i: usize, state: &str) {
        let deadline = Instant::now() + SETTLE;
        while self.state(vip, i) != state {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for backend {i} of {vip} to be {state}\n{}",
                self.daemon.log_text()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn curl(&self, path: &str, extra: &[&str]) -> Curl {
        Curl::https(SERVER_NAME, edge4(), path, self.pki.ca_cert()).args(extra)
    }

    /// The backend of each of [`TIMES`] requests for `path` over one connection, each of which
    /// must be answered 200 by a backend that received `path`.
    fn served(&self, path: &str, extra: &[&str]) -> Vec<String> {
        let out = self
            .curl(path, extra)
            .fail()
            .run_times(self.topo.client(), TIMES)
            .unwrap_or_else(|e| panic!("curl {path} {extra:?}: {e:#}\n{}", self.daemon.log_text()));
        let names: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("backend-"))
            .map(str::to_owned)
            .collect();
        assert_eq!(names.len(), TIMES, "{path} {extra:?}: {out}");
        let want = format!("GET {path} HTTP/1.1");
        assert_eq!(
            out.lines().filter(|l| l.trim() == want).count(),
            TIMES,
            "{path} {extra:?}: every backend received {want}: {out}"
        );
        names
    }

    /// The status of one request for `path`.
    fn status(&self, path: &str, extra: &[&str]) -> (u16, String) {
        self.curl(path, extra)
            .status_and_body(self.topo.client())
            .unwrap_or_else(|e| panic!("curl {path} {extra:?}: {e:#}\n{}", self.daemon.log_text()))
    }

    fn reload_with(&self, edit: impl FnOnce(String) -> String) {
        self.daemon
            .reload_with(edit)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// Every name in `seen` is one of `allowed`.
fn all_in(seen: &[String], allowed: &[&str], what: &str) {
    assert!(
        seen.iter().all(|b| allowed.contains(&b.as_str())),
        "{what}: {seen:?} not all in {allowed:?}"
    );
}

/// `seen` is `name` each time.
fn all_are(seen: &[String], name: &str, what: &str) {
    assert!(
        seen.iter().all(|b| b == name),
        "{what}: {seen:?}, want only {name}"
    );
}

#[test]
fn rp_routes_reach_their_own_pools_over_h1_h2_and_one_pipelined_connection() {
    require_root();
    let lab = PoolLab::start("rp1", "", &[2, 3]);
    for http in HTTP {
        let auth = lab.served("/oauth2/start?rd=%2Fapp", &[http]);
        all_in(&auth, &AUTH, &format!("/oauth2, {http}"));
        let app = lab.served("/app/x", &[http]);
        all_in(&app, &WEB, &format!("/app, {http}"));
        // The route path itself (no prefix strip: the backend sees the path as sent).
        let (code, body) = lab.status("/oauth2", &[http]);
        assert_eq!(code, 200, "{http}: {body}");
        assert!(AUTH.contains(&backend_of(&body)), "{http}: {body}");
    }
    // One connection, one write, two pools: each request goes to its route's pool, the
    // connection's earlier request deciding nothing for the next.
    let requests = format!(
        "GET /oauth2/auth HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n\
         GET /app/a HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n\
         GET /oauth2/callback HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n\
         GET /app/b HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n"
    );
    let out = raw_tls(&lab.topo, &lab.pki, &requests, false);
    let statuses: Vec<&str> = out.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 200 OK"; 4],
        "four answers:\n{out}\nsluice:\n{}",
        lab.daemon.log_text()
    );
    let seen: Vec<(String, String)> = out
        .lines()
        .filter(|l| l.starts_with("backend-"))
        .map(str::to_owned)
        .zip(
            out.lines()
                .filter(|l| l.starts_with("GET "))
                .map(|l| l.trim().to_owned()),
        )
        .collect();
    let paths: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        paths,
        [
            "GET /oauth2/auth HTTP/1.1",
            "GET /app/a HTTP/1.1",
            "GET /oauth2/callback HTTP/1.1",
            "GET /app/b HTTP/1.1",
        ],
        "{out}"
    );
    for (i, (backend, line)) in seen.iter().enumerate() {
        let pool: &[&str] = if i % 2 == 0 { &AUTH } else { &WEB };
        assert!(
            pool.contains(&backend.as_str()),
            "{line} went to {backend}: {out}"
        );
    }
}

#[test]
fn rp_a_drained_or_down_backend_falls_back_within_its_own_pool_only() {
    require_root();
    let mut lab = PoolLab::start("rp2", "", &[2, 3]);
    lab.daemon
        .cli_ok(&["drain", "auth", &backend_addr4(2).to_string()])
        .expect("drain backend 2 of auth");
    lab.daemon
        .cli_ok(&["drain", "web", &backend_addr4(0).to_string()])
        .expect("drain backend 0 of web");
    for http in HTTP {
        all_are(&lab.served("/oauth2/x", &[http]), "backend-3", http);
        all_are(&lab.served("/x", &[http]), "backend-1", http);
    }
    // The auth pool's last backend goes down: its route has no backend left, and answers
    // 503 rather than borrowing one of the other pool's; the other route is served as before.
    lab.servers[3] = None;
    lab.wait_for_state("auth", 3, "down");
    for http in HTTP {
        for _ in 0..4 {
            let (code, body) = lab.status("/oauth2/x", &[http]);
            assert_eq!(code, 503, "{http}: {body}\n{}", lab.daemon.log_text());
        }
        all_are(&lab.served("/x", &[http]), "backend-1", http);
    }
    // Undrained, backend 2 serves its own route again.
    lab.daemon
        .cli_ok(&["undrain", "auth", &backend_addr4(2).to_string()])
        .expect("undrain backend 2 of auth");
    for http in HTTP {
        all_are(&lab.served("/oauth2/x", &[http]), "backend-2", http);
    }
}

#[test]
fn rp_affinity_on_a_route_of_the_second_pool_sticks_to_that_pools_backends() {
    require_root();
    let routes = format!(
        "affinity = {{ mode = \"auth-session-route\", routes = {{ \"kc-2\" = \"{}\", \
         \"kc-3\" = \"{}\" }} }}",
        backend_addr4(2),
        backend_addr4(3)
    );
    let lab = PoolLab::start("rp3", &routes, &[2, 3]);
    for http in HTTP {
        for i in [2, 3] {
            let cookie = format!("AUTH_SESSION_ID=abc.kc-{i}");
            let seen = lab.served("/oauth2/x", &[http, "-H", &format!("Cookie: {cookie}")]);
            all_are(&seen, &format!("backend-{i}"), &format!("{cookie}, {http}"));
        }
        // A suffix the table does not name (a web backend's, say): the pool's normal choice,
        // within the auth pool.
        let seen = lab.served(
            "/oauth2/x",
            &[http, "-H", "Cookie: AUTH_SESSION_ID=abc.kc-0"],
        );
        all_in(&seen, &AUTH, &format!("unknown route, {http}"));
    }
}

#[test]
fn rp_a_reload_that_changes_a_pools_backends_takes_effect_for_its_route() {
    require_root();
    let lab = PoolLab::start("rp4", "", &[2]);
    for http in HTTP {
        all_are(&lab.served("/oauth2/x", &[http]), "backend-2", http);
        all_in(&lab.served("/x", &[http]), &WEB, http);
    }
    let before = auth_vip(&[2]);
    lab.reload_with(|text| text.replace(&before, &auth_vip(&[3])));
    lab.wait_for_state("auth", 3, "up");
    for http in HTTP {
        all_are(&lab.served("/oauth2/x", &[http]), "backend-3", http);
        all_in(&lab.served("/x", &[http]), &WEB, http);
    }
}
