//! Sticky sessions on Keycloak's `AUTH_SESSION_ID` against the real Keycloak (issue 20, item
//! 5): two Keycloak nodes clustered on `PostgreSQL`, each named (`kc-0`, `kc-1`) so the route
//! suffix it appends to `AUTH_SESSION_ID` is known, behind one `/realms` route with
//! `affinity = "auth-session-route"` mapping each name to its node. 100 scripted browser logins
//! (authorization request, login form, form post, code, token exchange; a cookie jar each)
//! from eight client addresses; one node drained with logins half done on it.
//!
//! Each node's own access log (a line per request, with the request's `X-Flow` header) is the
//! per-node evidence of where each request of each login went; sluice's affinity counters
//! are the balancer's side.
//!
//! Needs root and the Keycloak that `cargo xtask setup` fetches and builds; without it the
//! test fails and says why. Run with
//! `cargo test -p sluice-tests --test keycloak_sticky -- --test-threads=1`.

#![allow(clippy::float_cmp)] // every metric compared is a small integer count, exact in f64

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_tests::{
    keycloak_browser::{Browser, CodeFlow, LoginPage},
    keycloak_cluster::{node_name, Cluster, EDGE_PORT, NODES},
    keycloak_edge::{access_lines, PASSWORD, REALM, SERVER_NAME, USER, WEB_CLIENT, WEB_REDIRECT},
    require_root,
    topology::{backend_addr4, GW_CLIENT_ADDR4},
};

/// One finished login of the sticky-session test.
#[derive(Debug, Clone)]
struct Done {
    flow: usize,
    source: Ipv4Addr,
    route: String,
}

/// Item 5: 100 scripted browser logins through a route with `affinity = "auth-session-route"`
/// over two clustered Keycloak nodes; one node drained in the middle.
#[test]
fn auth_session_route_keeps_100_browser_logins_on_their_node_through_a_drain() {
    require_root();
    let routes: Vec<String> = (0..NODES)
        .map(|i| format!("\"{}\" = \"{}\"", node_name(i), backend_addr4(i)))
        .collect();
    let settings = vec![
        format!(
            "[[edge.route]]\nname = \"realms\"\npath = \"/realms\"\n\
             affinity = {{ mode = \"auth-session-route\", routes = {{ {} }} }}",
            routes.join(", ")
        ),
        "[[edge.route]]\nname = \"resources\"\npath = \"/resources\"".into(),
    ];
    let started = Instant::now();
    let cluster = Cluster::start_with("kr2", &settings);
    eprintln!("cluster up after {:.1} s", started.elapsed().as_secs_f64());
    let sources: Vec<Ipv4Addr> = (21..29).map(|d| Ipv4Addr::new(198, 18, 0, d)).collect();
    for source in &sources {
        cluster
            .topo
            .add_client_addr4(*source)
            .expect("another client address");
    }
    let client = cluster.topo.client().name().to_owned();
    let ca = cluster.pki.ca_cert().to_path_buf();
    let jars = cluster.scratch.path().join("jars");
    std::fs::create_dir_all(&jars).expect("jar directory");
    let base = format!("https://{SERVER_NAME}:{EDGE_PORT}");
    let browser = |flow: usize, source: Ipv4Addr| {
        Browser::new(&client, jars.join(format!("{flow}.jar")), &ca)
            .resolve(SERVER_NAME, EDGE_PORT, GW_CLIENT_ADDR4)
            .source(source)
            .header(&format!("X-Flow: f{flow}"))
    };
    let code_flow = CodeFlow {
        base: &base,
        realm: REALM,
        client_id: WEB_CLIENT,
        redirect_uri: WEB_REDIRECT,
        user: USER,
        password: PASSWORD,
    };
    let run_flow = |flow: usize| -> Result<Done, String> {
        let source = sources[flow % sources.len()];
        let b = browser(flow, source);
        let page = code_flow
            .open(&b, &format!("s{flow}"))
            .map_err(|e| format!("flow {flow} from {source}: {e:#}"))?;
        finish(&code_flow, &b, &page, flow, source)
    };
    // Flows 0..48 and 52..100 in four threads each; 48..52 are held open across the drain.
    let run_many = |range: std::ops::Range<usize>| -> Vec<Result<Done, String>> {
        let next = Arc::new(Mutex::new(range.clone()));
        let results = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (next, results) = (next.clone(), results.clone());
                let run_flow = &run_flow;
                s.spawn(move || loop {
                    let Some(flow) = next.lock().expect("lock").next() else {
                        break;
                    };
                    let outcome = run_flow(flow);
                    results.lock().expect("lock").push(outcome);
                });
            }
        });
        let mut out = results.lock().expect("lock").clone();
        out.sort_by_key(|r| r.as_ref().map_or(usize::MAX, |d| d.flow));
        out
    };

    let flows_started = Instant::now();
    let mut outcomes = run_many(0..48);
    let before: Vec<Done> = outcomes.iter().filter_map(|r| r.clone().ok()).collect();
    // The node to drain: the one whose sessions the first flows from the first source got.
    let by_source: BTreeMap<Ipv4Addr, String> =
        before.iter().map(|d| (d.source, d.route.clone())).collect();
    let drained_route = by_source.get(&sources[0]).cloned().unwrap_or_else(|| {
        panic!(
            "no flow from {} finished: {outcomes:?}\n{}",
            sources[0],
            cluster.logs()
        )
    });
    let drained = (0..NODES)
        .find(|&i| node_name(i) == drained_route)
        .unwrap_or_else(|| panic!("AUTH_SESSION_ID route {drained_route:?} names no node"));
    let other_route = node_name(1 - drained);
    // Four logins left half done on the node about to be drained: login page served, the
    // session (and its cookie) on that node, the password not posted yet.
    let open: Vec<(usize, Browser, LoginPage)> = (48..52)
        .map(|flow| {
            let b = browser(flow, sources[0]);
            let page = code_flow
                .open(&b, &format!("s{flow}"))
                .unwrap_or_else(|e| panic!("flow {flow}: {e:#}\n{}", cluster.logs()));
            (flow, b, page)
        })
        .collect();
    for (flow, _, page) in &open {
        assert_eq!(
            page.route(),
            drained_route,
            "flow {flow} from {}",
            sources[0]
        );
    }
    let addr = backend_addr4(drained).to_string();
    cluster
        .daemon
        .cli_ok(&["drain", "web", &addr])
        .unwrap_or_else(|e| panic!("sluice drain: {e:#}"));
    assert!(
        cluster.wait_backend_state(drained, "draining"),
        "node {drained} not draining\n{}",
        cluster.logs()
    );
    for (flow, b, page) in &open {
        outcomes.push(finish(&code_flow, b, page, *flow, sources[0]));
    }
    let after = run_many(52..100);
    outcomes.extend(after.iter().cloned());
    let took = flows_started.elapsed();

    let failed: Vec<&String> = outcomes.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 100 logins failed:\n{}\n{}",
        failed.len(),
        failed
            .iter()
            .take(10)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        cluster.logs()
    );
    let done: Vec<Done> = outcomes.into_iter().filter_map(Result::ok).collect();
    assert_eq!(done.len(), 100);
    let per_route = |flows: &[Done]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for d in flows {
            *m.entry(d.route.clone()).or_default() += 1;
        }
        m
    };
    eprintln!(
        "100 logins in {:.1} s; before the drain {:?}; after {:?}; drained {drained_route}",
        took.as_secs_f64(),
        per_route(&before),
        per_route(
            &after
                .iter()
                .filter_map(|r| r.clone().ok())
                .collect::<Vec<_>>()
        )
    );
    // Before the drain both nodes got sessions (the pool spreads clients by address).
    assert_eq!(per_route(&before).len(), 2, "{:?}", per_route(&before));
    // After it, every new session is on the other node.
    for d in after.iter().filter_map(|r| r.as_ref().ok()) {
        assert_eq!(d.route, other_route, "flow {} from {}", d.flow, d.source);
    }

    // Each node's own access log: every request a flow made with its cookie (the form post
    // and the token exchange) reached the node the cookie names, and no other node.
    // Keycloak writes a line as it finishes the response: wait for the last ones.
    let read_logs = || -> Vec<Vec<(String, String, String, String)>> {
        (0..NODES)
            .map(|i| access_lines(&cluster.node_log(i)))
            .collect()
    };
    let exchanges = |logs: &[Vec<(String, String, String, String)>]| {
        logs.iter()
            .flatten()
            .filter(|l| {
                l.0.starts_with('f') && l.2 == "/realms/sluice/protocol/openid-connect/token"
            })
            .count()
    };
    let mut logs = read_logs();
    let deadline = Instant::now() + Duration::from_secs(10);
    while exchanges(&logs) < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        logs = read_logs();
    }
    for d in &done {
        let tag = format!("f{}", d.flow);
        let node = (0..NODES).find(|&i| node_name(i) == d.route).expect("node");
        for (what, path) in [
            ("form post", "/realms/sluice/login-actions/authenticate"),
            (
                "token exchange",
                "/realms/sluice/protocol/openid-connect/token",
            ),
        ] {
            let on = |i: usize| {
                logs[i]
                    .iter()
                    .filter(|l| l.0 == tag && l.1 == "POST" && l.2.split('?').next() == Some(path))
                    .count()
            };
            let seen = |i: usize| -> Vec<&(String, String, String, String)> {
                logs[i].iter().filter(|l| l.0 == tag).collect()
            };
            assert_eq!(
                (on(node), on(1 - node)),
                (1, 0),
                "flow {} ({} from {}): its {what} on {} and {} times elsewhere; its lines \
                 on {}: {:?}; elsewhere: {:?} (of {} and {} lines)",
                d.flow,
                d.route,
                d.source,
                node_name(node),
                on(1 - node),
                node_name(node),
                seen(node),
                seen(1 - node),
                logs[node].len(),
                logs[1 - node].len()
            );
        }
    }
    // sluice's count: every cookie-carrying request a hit, every flow's first request without
    // a cookie; nothing fell back.
    let management: SocketAddr = "127.0.0.1:9019".parse().expect("management address");
    let affinity = |outcome: &str| {
        cluster
            .daemon
            .metric(
                cluster.topo.gateway(),
                management,
                "sluice_edge_route_affinity_total",
                &[("edge", "kc"), ("route", "realms"), ("outcome", outcome)],
            )
            .unwrap_or_else(|e| panic!("scrape /metrics: {e:#}"))
    };
    assert_eq!(
        [
            affinity("hit"),
            affinity("no_cookie"),
            affinity("fallback_down"),
            affinity("invalid")
        ],
        [200.0, 100.0, 0.0, 0.0]
    );
    eprintln!(
        "sticky-session test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

/// Steps 2 and 3 of a login whose page `page` was served: post the password, exchange the
/// code; the token must be erin's.
fn finish(
    code_flow: &CodeFlow<'_>,
    b: &Browser,
    page: &LoginPage,
    flow: usize,
    source: Ipv4Addr,
) -> Result<Done, String> {
    let fail = |e: anyhow::Error| format!("flow {flow} from {source} ({}): {e:#}", page.route());
    let code = code_flow.submit(b, page).map_err(fail)?;
    let user = code_flow.exchange(b, &code).map_err(fail)?;
    if user != USER {
        return Err(format!("flow {flow}: a token for {user}"));
    }
    Ok(Done {
        flow,
        source,
        route: page.route().to_owned(),
    })
}
