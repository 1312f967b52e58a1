use std::net::IpAddr;

use prometheus_parse::{Scrape, Value};

use super::encode;
use crate::admin::protocol::{
    BackendRow, NamedCounter, ProxyRow, Stats, Status, TrafficRow, VipSummary,
};
use crate::observe::{HealthTransitions, Snapshot};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn backend(vip: &str, address: &str, state: &str, flows: u64, packets: u64) -> BackendRow {
    BackendRow {
        vip: vip.into(),
        address: ip(address),
        weight: 1,
        state: state.into(),
        health: "healthy".into(),
        health_reason: None,
        drained: state == "draining",
        flows,
        packets,
        bytes: packets * 100,
        new_flows: packets / 10,
    }
}

fn counter(name: &str, kind: &str, value: u64) -> NamedCounter {
    NamedCounter {
        name: name.into(),
        kind: kind.into(),
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
            phase: "serving".into(),
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
        maps_written: true,
        attached: true,
        shutting_down: false,
    }
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
