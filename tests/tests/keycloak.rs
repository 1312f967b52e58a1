//! sluice in front of the real Keycloak (issue 20, items 1 to 3): X.509 login through each of
//! the six `client_cert_header` formats, each read by the Keycloak lookup provider of that
//! name; the client address and public URLs Keycloak derives from sluice's `X-Forwarded-*`
//! or `Forwarded` headers, or from its PROXY v2 header, also behind an upstream haproxy.
//!
//! One Keycloak per test (the lookup provider is fixed when Keycloak is built), and every row
//! of a test runs against it: the test fails at the end with every row that failed, so one
//! broken row hides no other. See `sluice_tests::keycloak_lab` for the network and the realms.
//!
//! Needs root and the Keycloak that `cargo xtask setup` fetches and builds; without it every
//! test fails and says why. Run with `cargo test -p sluice-tests --test keycloak`.

use std::fmt::Debug;

use sluice_tests::keycloak_lab::{
    forged_headers, ClientInfo, KcLab, Login, NodeSpec, Via, CLIENT, FORGED, HAPROXY_PORT,
    PUBLIC_BASE,
};
use sluice_tests::require_root;

/// Collects every row's outcome; [`Rows::finish`] fails the test with all failed rows.
struct Rows {
    node: String,
    passed: Vec<String>,
    failed: Vec<String>,
}

impl Rows {
    fn new(lab: &KcLab) -> Rows {
        Rows {
            node: format!(
                "Keycloak {} on Java {}, {} provider, {:?}",
                lab.install.version,
                lab.install.java_version,
                lab.spec.format,
                lab.spec.client_info,
            ),
            passed: Vec::new(),
            failed: Vec::new(),
        }
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "rows read better with the outcomes written out as values"
    )]
    fn expect<T: PartialEq + Debug>(&mut self, row: &str, got: T, want: T) {
        if got == want {
            self.passed.push(row.to_owned());
        } else {
            self.failed
                .push(format!("{row}: got {got:?}, want {want:?}"));
        }
    }

    fn finish(self, lab: &KcLab) {
        eprintln!(
            "[{}] rows: {} passed, {} failed (Keycloak ready after {:.1} s)",
            self.node,
            self.passed.len(),
            self.failed.len(),
            lab.keycloak_start.as_secs_f64()
        );
        for row in &self.passed {
            eprintln!("  ok   {row}");
        }
        for row in &self.failed {
            eprintln!("  FAIL {row}");
        }
        assert!(
            self.failed.is_empty(),
            "[{}] {} of {} rows failed:\n{}\n\n{}",
            self.node,
            self.failed.len(),
            self.failed.len() + self.passed.len(),
            self.failed.join("\n"),
            lab.logs()
        );
    }
}

fn header_args(headers: &[String]) -> Vec<&str> {
    headers.iter().flat_map(|h| ["-H", h.as_str()]).collect()
}

fn token(user: &str) -> Login {
    Login::Token(user.to_owned())
}

const NO_CERT: &str = "X509 client certificate is missing.";

/// Item 1: X.509 logins through sluice in the node's format.
fn x509_rows(lab: &KcLab, rows: &mut Rows) {
    let p = &lab.people;
    let forged = forged_headers(&p.alice);
    let forged = header_args(&forged);
    let d = Via::Direct;
    rows.expect(
        "alice (one intermediate) gets her token, mapped by subject CN",
        lab.login(d, "sluice", Some(&p.alice), &[]),
        token("alice"),
    );
    rows.expect(
        "alice gets her token, mapped by SAN e-mail",
        lab.login(d, "sluice-email", Some(&p.alice), &[]),
        token("alice"),
    );
    rows.expect(
        "carol (two DNS and two URI SANs) gets her token, by CN",
        lab.login(d, "sluice", Some(&p.carol), &[]),
        token("carol"),
    );
    rows.expect(
        "carol (two DNS and two URI SANs) gets her token, by SAN e-mail",
        lab.login(d, "sluice-email", Some(&p.carol), &[]),
        token("carol"),
    );
    rows.expect(
        "dave (three intermediates) gets his token",
        lab.login(d, "sluice", Some(&p.dave), &[]),
        token("dave"),
    );
    rows.expect(
        "no certificate: no token",
        lab.login(d, "sluice", None, &[]),
        Login::Refused(401, NO_CERT.into()),
    );
    rows.expect(
        "no certificate, alice's certificate in forged headers of every format: no token",
        lab.login(d, "sluice", None, &forged),
        Login::Refused(401, NO_CERT.into()),
    );
    rows.expect(
        "carol's certificate, alice's in forged headers of every format: carol's token",
        lab.login(d, "sluice", Some(&p.carol), &forged),
        token("carol"),
    );
}

/// Items 2 and 3: the address Keycloak records for a login is the client's. `extra` are
/// forged forwarded headers the client adds.
fn recorded_address(lab: &KcLab, rows: &mut Rows, row: &str, via: Via, extra: &[&str]) {
    let before = match lab.login_events("sluice") {
        Ok(events) => events.len(),
        Err(err) => {
            rows.expect(row, Err::<(), _>(format!("{err:#}")), Ok(()));
            return;
        }
    };
    let login = lab.login(via, "sluice", Some(&lab.people.alice), extra);
    if login != token("alice") {
        rows.expect(row, login, token("alice"));
        return;
    }
    let got = lab.login_events("sluice").map(|events| {
        (
            events.len() - before,
            events.first().map(|(user, ip)| (user.clone(), ip.clone())),
        )
    });
    rows.expect(
        row,
        got.map_err(|err| format!("{err:#}")),
        Ok((1, Some(("alice".to_owned(), CLIENT.to_string())))),
    );
}

/// Forwarded headers a client forges to change what Keycloak sees.
fn forged_forwarding() -> Vec<String> {
    vec![
        format!("X-Forwarded-For: {FORGED}"),
        "X-Forwarded-Host: evil.example:444".into(),
        "X-Forwarded-Proto: http".into(),
        "X-Forwarded-Port: 444".into(),
        format!("Forwarded: for={FORGED};host=evil.example;proto=http"),
        format!("X-Real-IP: {FORGED}"),
    ]
}

/// Items 2 and 3: client addresses, direct and (when the lab has it) through haproxy, with and
/// without forged forwarded headers; issuer and redirect URLs.
fn client_rows(lab: &KcLab, rows: &mut Rows) {
    let forged = forged_forwarding();
    let forged = header_args(&forged);
    let how = format!("{:?}", lab.spec.client_info);
    recorded_address(
        lab,
        rows,
        &format!("{how}: a direct client's login is recorded with its address"),
        Via::Direct,
        &[],
    );
    recorded_address(
        lab,
        rows,
        &format!("{how}: a direct client's forged forwarded headers change no recorded address"),
        Via::Direct,
        &forged,
    );
    let issuer = format!("{PUBLIC_BASE}/realms/sluice");
    let urls = |extra: &[&str]| {
        lab.openid_configuration(Via::Direct, "sluice", extra)
            .map(|c| {
                (
                    c["issuer"].as_str().unwrap_or("?").to_owned(),
                    c["token_endpoint"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .map_err(|err| format!("{err:#}"))
    };
    let want = Ok((
        issuer.clone(),
        format!("{issuer}/protocol/openid-connect/token"),
    ));
    rows.expect(
        &format!("{how}: issuer and endpoints carry the public scheme, host and port"),
        urls(&[]),
        want.clone(),
    );
    rows.expect(
        &format!("{how}: forged forwarded headers change no issuer or endpoint"),
        urls(&forged),
        want,
    );
    let console = Ok(format!("{PUBLIC_BASE}/admin/master/console/"));
    rows.expect(
        &format!("{how}: redirects carry the public scheme, host and port"),
        lab.admin_redirect(Via::Direct, &[])
            .map_err(|err| format!("{err:#}")),
        console.clone(),
    );
    rows.expect(
        &format!("{how}: forged forwarded headers change no redirect"),
        lab.admin_redirect(Via::Direct, &forged)
            .map_err(|err| format!("{err:#}")),
        console,
    );
    if lab.haproxy.is_some() {
        recorded_address(
            lab,
            rows,
            &format!(
                "{how}: through haproxy (PROXY v2 to sluice) the login is recorded with the \
                 client's address, not haproxy's"
            ),
            Via::Haproxy,
            &[],
        );
        recorded_address(
            lab,
            rows,
            &format!(
                "{how}: through haproxy, the client's forged forwarded headers change no \
                 recorded address"
            ),
            Via::Haproxy,
            &forged,
        );
        // Behind haproxy the public port is haproxy's; with PROXY protocol to Keycloak there
        // are no forwarded headers and the public URL is Keycloak's configured hostname.
        let (what, public) = if lab.spec.client_info == ClientInfo::ProxyProtocol {
            (
                "the configured public URL",
                format!("{PUBLIC_BASE}/realms/sluice"),
            )
        } else {
            (
                "haproxy's public port",
                format!("https://kc.test:{HAPROXY_PORT}/realms/sluice"),
            )
        };
        rows.expect(
            &format!("{how}: through haproxy, the issuer carries {what}"),
            lab.openid_configuration(Via::Haproxy, "sluice", &[])
                .map(|c| c["issuer"].as_str().unwrap_or("?").to_owned())
                .map_err(|err| format!("{err:#}")),
            Ok(public),
        );
        rows.expect(
            &format!("{how}: through haproxy, alice's X.509 login works"),
            lab.login(Via::Haproxy, "sluice", Some(&lab.people.alice), &[]),
            token("alice"),
        );
    }
}

fn run(spec: NodeSpec) {
    require_root();
    let lab = KcLab::start(spec);
    let mut rows = Rows::new(&lab);
    x509_rows(&lab, &mut rows);
    client_rows(&lab, &mut rows);
    rows.finish(&lab);
}

#[test]
fn rfc9440_headers_and_x_forwarded_behind_haproxy() {
    run(NodeSpec {
        prefix: "slkc9440",
        format: "rfc9440",
        client_info: ClientInfo::XForwarded,
        upstream_haproxy: true,
    });
}

#[test]
fn nginx_headers_and_forwarded_behind_haproxy() {
    run(NodeSpec {
        prefix: "slkcngx",
        format: "nginx",
        client_info: ClientInfo::Forwarded,
        upstream_haproxy: true,
    });
}

#[test]
fn apache_headers_and_proxy_protocol_to_keycloak_behind_haproxy() {
    run(NodeSpec {
        prefix: "slkcapa",
        format: "apache",
        client_info: ClientInfo::ProxyProtocol,
        upstream_haproxy: true,
    });
}

#[test]
fn haproxy_headers_and_x_forwarded() {
    run(NodeSpec {
        prefix: "slkchap",
        format: "haproxy",
        client_info: ClientInfo::XForwarded,
        upstream_haproxy: false,
    });
}

#[test]
fn traefik_headers_and_x_forwarded() {
    run(NodeSpec {
        prefix: "slkctfk",
        format: "traefik",
        client_info: ClientInfo::XForwarded,
        upstream_haproxy: false,
    });
}

#[test]
fn envoy_headers_and_x_forwarded() {
    run(NodeSpec {
        prefix: "slkcenv",
        format: "envoy",
        client_info: ClientInfo::XForwarded,
        upstream_haproxy: false,
    });
}

/// Item 7: two clustered Keycloak nodes restart one after the other under a steady password
/// login load through sluice, which health-checks each node's `/health/ready` (port 9000).
/// Keycloak's `shutdown-delay` reports not ready while still serving; sluice must take the
/// node out in that window (drain follows readiness) and back in once it is ready again, and
/// no login may fail.
#[test]
fn rolling_restart_of_two_keycloak_nodes_loses_no_login() {
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use sluice_tests::keycloak_cluster::{login, Cluster, NODES};

    require_root();
    let mut cluster = Cluster::start("slkcroll");
    let sources: Vec<Ipv4Addr> = (11..15).map(|d| Ipv4Addr::new(198, 18, 0, d)).collect();
    for source in &sources {
        cluster
            .topo
            .add_client_addr4(*source)
            .expect("another client address");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let load: Vec<_> = sources
        .iter()
        .map(|source| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            // The cluster changes under the restarts below: take what a login needs.
            let client = cluster.topo.client().name().to_owned();
            let ca = cluster.pki.ca_cert().to_path_buf();
            let source = *source;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match login(&client, &ca, source) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => failures
                            .lock()
                            .expect("failures lock")
                            .push(format!("from {source}: {err:#}")),
                    }
                }
            })
        })
        .collect();

    let mut report = Vec::new();
    let mut problems = Vec::new();
    for i in 0..NODES {
        let before = ok.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut down_while_running = false;
        {
            let node = cluster.nodes[i].as_mut().expect("node running");
            node.begin_stop().expect("SIGTERM Keycloak");
        }
        loop {
            let exited = cluster.nodes[i]
                .as_mut()
                .expect("node")
                .has_exited()
                .expect("wait for Keycloak");
            if exited {
                break;
            }
            if cluster.backend_state(i).is_ok_and(|s| s == "down") {
                down_while_running = true;
            }
            assert!(
                started.elapsed() < Duration::from_mins(3),
                "Keycloak node {i} did not stop\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let stopped_after = started.elapsed();
        cluster.nodes[i] = None;
        let node = cluster.spawn_node(i);
        cluster.nodes[i] = Some(node);
        cluster.wait_node_ready(i);
        let up_again = cluster.wait_backend_state(i, "up");
        let during = ok.load(Ordering::Relaxed) - before;
        report.push(format!(
            "node {i}: stopped after {:.1} s, back after {:.1} s, {during} logins meanwhile",
            stopped_after.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ));
        if !down_while_running {
            problems.push(format!(
                "node {i}: sluice never took it out while it drained (not ready, still serving)"
            ));
        }
        if !up_again {
            problems.push(format!(
                "node {i}: sluice did not take it back once it was ready"
            ));
        }
        if during == 0 {
            problems.push(format!("node {i}: no login succeeded during its restart"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().expect("load thread");
    }
    let failures = failures.lock().expect("failures lock").clone();
    eprintln!(
        "rolling restart: {} logins, {} failed; {}",
        ok.load(Ordering::Relaxed),
        failures.len(),
        report.join("; ")
    );
    if !failures.is_empty() {
        problems.push(format!(
            "{} failed logins, e.g.:\n{}",
            failures.len(),
            failures
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n{}\n\n{}",
        problems.join("\n"),
        report.join("\n"),
        cluster.logs()
    );
}
