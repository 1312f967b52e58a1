use crate::admin::protocol::from_name;
use crate::admin::protocol::Health;
use std::net::IpAddr;

use prometheus_parse::{Scrape, Value};

use super::encode;
use crate::admin::protocol::{
    BackendRow, NamedCounter, ProxyRow, Stats, Status, TrafficRow, VipSummary,
};
use crate::edge::stats::{Durations, EdgeCounts, TlsCounts, DURATION_BUCKETS};
use crate::edge::tls::HandshakeOutcome;
use crate::observe::{ConntrackWalk, HealthTransitions, Snapshot};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn backend(vip: &str, address: &str, state: &str, flows: u64, packets: u64) -> BackendRow {
    BackendRow {
        vip: vip.into(),
        address: ip(address),
        weight: 1,
        state: from_name(state),
        health: Health::Healthy,
        health_reason: None,
        drained: state == "draining",
        unproven: false,
        flows,
        packets,
        bytes: packets * 100,
        new_flows: packets / 10,
        next_hop: None,
    }
}

fn counter(name: &str, kind: &str, value: u64) -> NamedCounter {
    NamedCounter {
        name: name.into(),
        kind: from_name(kind),
        value,
    }
}

/// Two VIPs: `web` with one backend up and one draining, `dns` with its only backend down.
pub(crate) fn snapshot() -> Snapshot {
    let vip = |name: &str, address: &str, up, total| VipSummary {
        name: name.into(),
        address: address.parse().unwrap(),
        protocol: "tcp".into(),
        backends_up: up,
        backends_total: total,
        backends_taking_new_flows: up,
        backends_ready: up,
    };
    let traffic = |vip: &str, packets| TrafficRow {
        vip: vip.into(),
        backend: None,
        packets,
        bytes: packets * 100,
        new_flows: packets / 10,
    };
    Snapshot {
        status: Status {
            instance: "edge1".into(),
            version: "0.1.0".into(),
            pid: 42,
            uptime_secs: 60,
            config: "/etc/sluice.toml".into(),
            phase: crate::shutdown::NodeState::Serving,
            ready: true,
            interfaces: vec!["eth0".into()],
            pin_dir: "/sys/fs/bpf/sluice/edge1".into(),
            adopted: false,
            keep_dataplane: false,
            reloads_ok: 3,
            reloads_failed: 1,
            last_reload_error: Some("bad weight".into()),
            vips: vec![
                vip("web", "198.18.0.10:80", 1, 2),
                vip("dns", "[2001:db8::53]:53", 0, 1),
            ],
            bgp: None,
        },
        backends: vec![
            backend("web", "198.18.10.2", "up", 7, 1000),
            backend("web", "198.18.10.3", "draining", 2, 500),
            backend("dns", "2001:db8::2", "down", 0, 30),
        ],
        stats: Stats {
            uptime_ms: 60_000,
            counters: vec![
                counter("tx", "event", 1500),
                counter("conntrack_hit", "event", 1400),
                counter("conntrack_miss", "event", 150),
                counter("pass_not_vip", "pass", 99),
                counter("drop_no_backend", "drop", 5),
            ],
            vips: vec![traffic("web", 1500), traffic("dns", 30)],
            backends: vec![],
            proxy: vec![
                ProxyRow {
                    vip: "web".into(),
                    outcome: "accepted".into(),
                    flows: 40,
                },
                ProxyRow {
                    vip: "web".into(),
                    outcome: "untrusted".into(),
                    flows: 2,
                },
            ],
            edge_proxy: vec![ProxyRow {
                vip: "idp".into(),
                outcome: "missing".into(),
                flows: 4,
            }],
        },
        health_transitions: vec![HealthTransitions {
            vip: "dns".into(),
            backend: ip("2001:db8::2"),
            to_healthy: 2,
            to_unhealthy: 3,
        }],
        edges: edges(),
        maps_written: true,
        attached: true,
        shutting_down: false,
        conntrack: Some(ConntrackWalk {
            entries: 9,
            took_seconds: 0.25,
            age_seconds: 3.5,
        }),
        neighbour_resolves: 4,
    }
}

/// `idp` terminates TLS and reads PROXY headers; `plain` does neither.
fn edges() -> Vec<EdgeCounts> {
    // 3 requests within 1 ms, 1 in (0.25, 0.5], 1 slower than a minute.
    let mut buckets = vec![0; DURATION_BUCKETS.len() + 1];
    buckets[0] = 3;
    buckets[8] = 1;
    buckets[15] = 1;
    let handshakes = HandshakeOutcome::ALL
        .iter()
        .map(|o| {
            let n = match o {
                HandshakeOutcome::Ok => 6,
                HandshakeOutcome::UnknownCa => 2,
                HandshakeOutcome::Timeout => 1,
                _ => 0,
            };
            (*o, n)
        })
        .collect();
    vec![
        EdgeCounts {
            edge: "idp".into(),
            responses: vec![(200, 3), (404, 1), (502, 1)],
            durations: Durations {
                buckets,
                sum_seconds: 61.5,
            },
            in_flight: 2,
            connections_open: 4,
            tls: Some(TlsCounts {
                handshakes,
                verified: 5,
                none: 1,
            }),
            proxy_headers: Some(vec![
                ("accepted", 7),
                ("local", 1),
                ("invalid", 2),
                ("untrusted", 3),
            ]),
            timeouts: vec![("request_header", 9), ("idle", 4)],
            refused: vec![("limit", 11)],
            backend: vec![("opened", 5), ("reused", 95)],
            routes: vec![("realms".into(), 8), ("admin".into(), 2)],
            unrouted: vec![("bad_path", 3), ("misdirected", 1), ("no_route", 6)],
            affinity: vec![("kc".into(), "hit", 4), ("kc".into(), "fallback_down", 1)],
            auth: vec![("app".into(), "allowed", 7), ("app".into(), "timeout", 2)],
        },
        EdgeCounts {
            edge: "plain".into(),
            responses: vec![],
            durations: Durations {
                buckets: vec![0; DURATION_BUCKETS.len() + 1],
                sum_seconds: 0.0,
            },
            in_flight: 0,
            connections_open: 0,
            tls: None,
            proxy_headers: None,
            timeouts: vec![("request_header", 0), ("idle", 0)],
            refused: vec![("limit", 0)],
            backend: vec![("opened", 0), ("reused", 0)],
            routes: vec![("all".into(), 0)],
            unrouted: vec![("bad_path", 0), ("misdirected", 0), ("no_route", 0)],
            affinity: vec![],
            auth: vec![],
        },
    ]
}

fn parse(text: &str) -> Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines).expect("valid exposition")
}

/// The value of the sample `name` whose labels include all of `labels`.
///
/// Counters come back untyped: the parser looks the type up under the sample's name, which
/// `OpenMetrics` suffixes with `_total` but the `# TYPE` line does not.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected {other:?}"),
        })
        .collect();
    assert_eq!(matching.len(), 1, "{name}{labels:?}: {matching:?}");
    matching[0]
}

#[test]
#[allow(clippy::float_cmp)] // a small integer, exact in f64
fn encode_counts_the_neighbour_resolutions() {
    let s = parse(&encode(&snapshot()).unwrap());
    assert_eq!(
        value(&s, "sluice_next_hop_neighbour_resolves_total", &[]),
        4.0
    );
}

#[test]
#[allow(clippy::float_cmp)] // every value is exact in f64
fn encode_exposes_the_last_conntrack_walk() {
    let s = parse(&encode(&snapshot()).unwrap());
    assert_eq!(value(&s, "sluice_conntrack_entries", &[]), 9.0);
    assert_eq!(
        value(&s, "sluice_conntrack_walk_duration_seconds", &[]),
        0.25
    );
    assert_eq!(value(&s, "sluice_conntrack_walk_age_seconds", &[]), 3.5);
    // Before the first walk there is nothing to say.
    let mut before = snapshot();
    before.conntrack = None;
    let text = encode(&before).unwrap();
    assert!(!text.contains("sluice_conntrack_entries"), "{text}");
}

#[test]
#[allow(clippy::float_cmp)] // every value is a small integer, exact in f64
fn encode_exposes_the_snapshot() {
    let text = encode(&snapshot()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE sluice_vip_packets counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE sluice_backend_up gauge\n"), "{text}");
    let s = parse(&text);

    assert_eq!(
        value(
            &s,
            "sluice_info",
            &[("version", "0.1.0"), ("instance", "edge1")]
        ),
        1.0
    );
    assert_eq!(value(&s, "sluice_ready", &[]), 1.0);
    assert_eq!(value(&s, "sluice_phase", &[("phase", "serving")]), 1.0);
    assert_eq!(value(&s, "sluice_phase", &[("phase", "draining")]), 0.0);
    assert_eq!(value(&s, "sluice_phase", &[("phase", "closed")]), 0.0);
    assert_eq!(
        value(&s, "sluice_reloads_total", &[("outcome", "success")]),
        3.0
    );
    assert_eq!(
        value(&s, "sluice_reloads_total", &[("outcome", "failure")]),
        1.0
    );

    let web = [("vip", "web")];
    assert_eq!(value(&s, "sluice_vip_packets_total", &web), 1500.0);
    assert_eq!(value(&s, "sluice_vip_bytes_total", &web), 150_000.0);
    assert_eq!(value(&s, "sluice_vip_new_flows_total", &web), 150.0);
    assert_eq!(
        value(&s, "sluice_vip_packets_total", &[("vip", "dns")]),
        30.0
    );

    let up = [("vip", "web"), ("backend", "198.18.10.2")];
    assert_eq!(value(&s, "sluice_backend_packets_total", &up), 1000.0);
    assert_eq!(value(&s, "sluice_backend_bytes_total", &up), 100_000.0);
    assert_eq!(value(&s, "sluice_backend_new_flows_total", &up), 100.0);
    assert_eq!(value(&s, "sluice_backend_flows", &up), 7.0);
    assert_eq!(value(&s, "sluice_backend_up", &up), 1.0);
    let draining = [("vip", "web"), ("backend", "198.18.10.3")];
    assert_eq!(value(&s, "sluice_backend_up", &draining), 0.0);
    for (state, expected) in [("up", 0.0), ("draining", 1.0), ("down", 0.0)] {
        let labels = [draining[0], draining[1], ("state", state)];
        assert_eq!(
            value(&s, "sluice_backend_state", &labels),
            expected,
            "{state}"
        );
    }

    let v6 = [("vip", "dns"), ("backend", "2001:db8::2")];
    assert_eq!(value(&s, "sluice_backend_up", &v6), 0.0);
    assert_eq!(
        value(
            &s,
            "sluice_backend_state",
            &[v6[0], v6[1], ("state", "down")]
        ),
        1.0
    );
    let to = |to| [v6[0], v6[1], ("to", to)];
    assert_eq!(
        value(
            &s,
            "sluice_backend_health_transitions_total",
            &to("healthy")
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "sluice_backend_health_transitions_total",
            &to("unhealthy")
        ),
        3.0
    );

    assert_eq!(
        value(&s, "sluice_xdp_drops_total", &[("reason", "no_backend")]),
        5.0
    );
    assert_eq!(
        value(&s, "sluice_xdp_passes_total", &[("reason", "not_vip")]),
        99.0
    );
    assert_eq!(
        value(&s, "sluice_xdp_events_total", &[("event", "tx")]),
        1500.0
    );
    assert_eq!(
        value(&s, "sluice_xdp_events_total", &[("event", "conntrack_hit")]),
        1400.0
    );
    assert_eq!(value(&s, "sluice_conntrack_hits_total", &[]), 1400.0);
    assert_eq!(value(&s, "sluice_conntrack_misses_total", &[]), 150.0);
}

#[test]
#[allow(clippy::float_cmp)] // small integers, exact in f64
fn encode_of_an_empty_daemon_keeps_the_daemon_metrics() {
    let mut empty = snapshot();
    empty.backends.clear();
    empty.stats.counters.clear();
    empty.stats.vips.clear();
    empty.health_transitions.clear();
    let text = encode(&empty).unwrap();
    let s = parse(&text);
    assert_eq!(value(&s, "sluice_conntrack_hits_total", &[]), 0.0);
    assert_eq!(value(&s, "sluice_ready", &[]), 1.0);
    // prometheus-client leaves out families without samples; Prometheus reads absence as such.
    assert!(!text.contains("sluice_backend_up"), "{text}");
}

#[test]
#[allow(clippy::float_cmp)] // small integers, exact in f64
fn encode_counts_proxy_outcomes_per_vip() {
    let s = parse(&encode(&snapshot()).unwrap());
    let outcome = |o| [("vip", "web"), ("outcome", o)];
    assert_eq!(
        value(&s, "sluice_vip_proxy_flows_total", &outcome("accepted")),
        40.0
    );
    assert_eq!(
        value(&s, "sluice_vip_proxy_flows_total", &outcome("untrusted")),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "sluice_edge_proxy_flows_total",
            &[("edge", "idp"), ("outcome", "missing")]
        ),
        4.0
    );
}

/// The value of the histogram sample `name` (`_sum`, `_count` or `_bucket`) with exactly
/// `labels` (in any order), read from the text: prometheus-parse folds histogram lines into
/// one value. No label value here contains `,` or `"`.
fn histogram_line(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (set, value) = rest.split_once("} ")?;
            let mut have: Vec<String> = set.split(',').map(str::to_owned).collect();
            have.sort();
            (have == want).then(|| value.parse().unwrap())
        })
        .collect();
    assert_eq!(values.len(), 1, "{name}{labels:?}: {values:?}\n{text}");
    values[0]
}

#[test]
#[allow(clippy::float_cmp)] // small integers, exact in f64
fn encode_exposes_each_edge_listener() {
    let text = encode(&snapshot()).unwrap();
    let s = parse(&text);
    let code = |edge, code| {
        value(
            &s,
            "sluice_edge_requests_total",
            &[("edge", edge), ("code", code)],
        )
    };
    assert_eq!(code("idp", "200"), 3.0);
    assert_eq!(code("idp", "404"), 1.0);
    assert_eq!(code("idp", "502"), 1.0);
    assert!(
        !text.contains("sluice_edge_requests_total{edge=\"plain\""),
        "codes never answered are left out:\n{text}"
    );
    for (edge, in_flight, open) in [("idp", 2.0, 4.0), ("plain", 0.0, 0.0)] {
        let e = [("edge", edge)];
        assert_eq!(value(&s, "sluice_edge_requests_in_flight", &e), in_flight);
        assert_eq!(value(&s, "sluice_edge_connections_open", &e), open);
    }

    assert!(
        text.contains("# TYPE sluice_edge_request_duration_seconds histogram\n"),
        "{text}"
    );
    let h = "sluice_edge_request_duration_seconds";
    assert_eq!(
        histogram_line(&text, &format!("{h}_count"), &[("edge", "idp")]),
        5.0
    );
    assert_eq!(
        histogram_line(&text, &format!("{h}_sum"), &[("edge", "idp")]),
        61.5
    );
    let bucket = |edge: &str, le: &str| {
        histogram_line(&text, &format!("{h}_bucket"), &[("edge", edge), ("le", le)])
    };
    // Cumulative: each bucket counts every faster request too.
    for (le, n) in [
        ("0.001", 3.0),
        ("0.25", 3.0),
        ("0.5", 4.0),
        ("60.0", 4.0),
        ("+Inf", 5.0),
    ] {
        assert_eq!(bucket("idp", le), n, "le={le}");
    }
    assert_eq!(bucket("plain", "+Inf"), 0.0);
    assert_eq!(
        histogram_line(&text, &format!("{h}_count"), &[("edge", "plain")]),
        0.0
    );

    let outcome =
        |family, edge, outcome| value(&s, family, &[("edge", edge), ("outcome", outcome)]);
    let handshakes = "sluice_edge_tls_handshakes_total";
    assert_eq!(outcome(handshakes, "idp", "ok"), 6.0);
    assert_eq!(outcome(handshakes, "idp", "unknown_ca"), 2.0);
    assert_eq!(outcome(handshakes, "idp", "timeout"), 1.0);
    // Every outcome is there from the start, so a rate over it never starts from nothing.
    for o in HandshakeOutcome::ALL {
        outcome(handshakes, "idp", o.as_str());
    }
    assert_eq!(
        outcome("sluice_edge_client_certs_total", "idp", "verified"),
        5.0
    );
    assert_eq!(
        outcome("sluice_edge_client_certs_total", "idp", "none"),
        1.0
    );
    for (o, n) in [
        ("accepted", 7.0),
        ("local", 1.0),
        ("invalid", 2.0),
        ("untrusted", 3.0),
    ] {
        assert_eq!(
            outcome("sluice_edge_proxy_headers_total", "idp", o),
            n,
            "{o}"
        );
    }
    // A plain listener without PROXY headers has neither TLS nor header counts.
    for family in [
        "sluice_edge_tls_handshakes_total",
        "sluice_edge_client_certs_total",
        "sluice_edge_proxy_headers_total",
    ] {
        assert!(
            !text.contains(&format!("{family}{{edge=\"plain\"")),
            "{family}:\n{text}"
        );
    }
}

#[test]
#[allow(clippy::float_cmp)] // every value is a small integer, exact in f64
fn encode_exposes_cut_and_refused_edge_connections() {
    let text = encode(&snapshot()).unwrap();
    let s = parse(&text);
    for (kind, n) in [("request_header", 9.0), ("idle", 4.0)] {
        let labels = [("edge", "idp"), ("kind", kind)];
        assert_eq!(
            value(&s, "sluice_edge_timeouts_total", &labels),
            n,
            "{kind}"
        );
    }
    let labels = [("edge", "idp"), ("reason", "limit")];
    assert_eq!(
        value(&s, "sluice_edge_connections_refused_total", &labels),
        11.0
    );
    // A listener that cut and refused nothing says so with zeros.
    let labels = [("edge", "plain"), ("kind", "idle")];
    assert_eq!(value(&s, "sluice_edge_timeouts_total", &labels), 0.0);
}

#[test]
#[allow(clippy::float_cmp)] // every value is a small integer, exact in f64
fn encode_exposes_backend_connections_opened_and_reused() {
    let s = parse(&encode(&snapshot()).unwrap());
    for (edge, connection, n) in [
        ("idp", "opened", 5.0),
        ("idp", "reused", 95.0),
        ("plain", "opened", 0.0),
    ] {
        let labels = [("edge", edge), ("connection", connection)];
        assert_eq!(
            value(&s, "sluice_edge_backend_requests_total", &labels),
            n,
            "{edge} {connection}"
        );
    }
}

#[test]
#[allow(clippy::float_cmp)] // every value is a small integer, exact in f64
fn encode_exposes_requests_by_route_and_unrouted_outcome() {
    let s = parse(&encode(&snapshot()).unwrap());
    for (edge, route, n) in [
        ("idp", "realms", 8.0),
        ("idp", "admin", 2.0),
        ("plain", "all", 0.0),
    ] {
        let labels = [("edge", edge), ("route", route)];
        assert_eq!(
            value(&s, "sluice_edge_route_requests_total", &labels),
            n,
            "{edge} {route}"
        );
    }
    for (outcome, n) in [("bad_path", 3.0), ("misdirected", 1.0), ("no_route", 6.0)] {
        let labels = [("edge", "idp"), ("outcome", outcome)];
        assert_eq!(
            value(&s, "sluice_edge_unrouted_requests_total", &labels),
            n,
            "{outcome}"
        );
    }
}

#[test]
#[allow(clippy::float_cmp)] // every value is a small integer, exact in f64
fn encode_exposes_forward_auth_outcomes_by_route() {
    let s = parse(&encode(&snapshot()).unwrap());
    for (outcome, n) in [("allowed", 7.0), ("timeout", 2.0)] {
        let labels = [("edge", "idp"), ("route", "app"), ("outcome", outcome)];
        assert_eq!(
            value(&s, "sluice_edge_route_auth_total", &labels),
            n,
            "{outcome}"
        );
    }
}

#[test]
fn encode_without_edges_has_no_edge_families() {
    let mut none = snapshot();
    none.edges.clear();
    let text = encode(&none).unwrap();
    for family in [
        "sluice_edge_requests",
        "sluice_edge_request_duration_seconds",
        "sluice_edge_requests_in_flight",
        "sluice_edge_connections_open",
        "sluice_edge_tls_handshakes",
        "sluice_edge_client_certs",
        "sluice_edge_proxy_headers",
        "sluice_edge_timeouts",
        "sluice_edge_connections_refused",
        "sluice_edge_route_requests",
        "sluice_edge_unrouted_requests",
        "sluice_edge_backend_requests",
    ] {
        assert!(
            !text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }
}

#[test]
#[allow(clippy::float_cmp)] // every value is exact in f64
fn encode_exposes_bgp_sessions_and_announced_prefixes_only_with_bgp() {
    let text = encode(&snapshot()).unwrap();
    assert!(!text.contains("sluice_bgp_"), "{text}");
    let mut with = snapshot();
    let row = |peer: &str, state: &str, announced: &[&str]| crate::bgp::BgpPeerRow {
        peer: peer.parse().unwrap(),
        remote_as: 65000,
        state: state.into(),
        established_secs: None,
        announced: announced.iter().map(|a| ip(a)).collect(),
        last_error: None,
    };
    with.status.bgp = Some(crate::bgp::BgpStatus {
        wanted: vec![ip("198.18.0.10"), ip("2001:db8::53")],
        withdrawn_by_hand: Vec::new(),
        peers: vec![
            row(
                "10.0.0.1:179",
                "established",
                &["198.18.0.10", "2001:db8::53"],
            ),
            row("10.0.0.9:179", "connect", &[]),
        ],
    });
    let scrape = parse(&encode(&with).unwrap());
    let up = |peer| value(&scrape, "sluice_bgp_session_up", &[("peer", peer)]);
    assert_eq!((up("10.0.0.1:179"), up("10.0.0.9:179")), (1.0, 0.0));
    let count = |peer| value(&scrape, "sluice_bgp_announced_prefixes", &[("peer", peer)]);
    assert_eq!((count("10.0.0.1:179"), count("10.0.0.9:179")), (2.0, 0.0));
    for prefix in ["198.18.0.10/32", "2001:db8::53/128"] {
        let labels = [("peer", "10.0.0.1:179"), ("prefix", prefix)];
        assert_eq!(value(&scrape, "sluice_bgp_announced", &labels), 1.0);
    }
}
