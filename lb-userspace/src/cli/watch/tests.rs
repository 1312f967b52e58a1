#![expect(
    clippy::float_cmp,
    reason = "these rates are exact: integer deltas over whole seconds"
)]

use super::*;
use crate::admin::protocol::from_name;
use crate::admin::protocol::NamedCounter;

fn sample(uptime_ms: u64, hits: u64, vip_packets: u64, backends: &[(&str, u64, u64)]) -> Stats {
    Stats {
        uptime_ms,
        counters: vec![NamedCounter {
            name: "conntrack_hit".into(),
            kind: from_name("event"),
            value: hits,
        }],
        vips: vec![TrafficRow {
            vip: "web".into(),
            backend: None,
            packets: vip_packets,
            bytes: vip_packets * 100,
            new_flows: vip_packets / 10,
        }],
        backends: backends
            .iter()
            .map(|&(address, packets, new_flows)| TrafficRow {
                vip: "web".into(),
                backend: Some(address.parse().unwrap()),
                packets,
                bytes: packets * 100,
                new_flows,
            })
            .collect(),
        proxy: vec![],
        edge_proxy: vec![],
    }
}

#[test]
fn rates_are_deltas_over_daemon_time() {
    let prev = sample(10_000, 1_000, 5_000, &[("198.18.10.1", 5_000, 500)]);
    // 2 s of daemon time later; a second backend appeared (reload) with 300 packets so far.
    let cur = sample(
        12_000,
        1_500,
        6_000,
        &[("198.18.10.1", 5_700, 560), ("198.18.10.2", 300, 40)],
    );
    let r = rates(&prev, &cur).unwrap();
    assert_eq!(r.interval_ms, 2_000);
    assert_eq!(r.uptime_ms, 12_000);
    assert_eq!(r.counters[0].per_sec, 250.0);
    assert_eq!(r.counters[0].total, 1_500);
    assert_eq!(r.vips[0].packets_per_sec, 500.0);
    assert_eq!(r.vips[0].bytes_per_sec, 50_000.0);
    assert_eq!(r.vips[0].new_flows_per_sec, 50.0);
    assert_eq!(r.backends[0].packets_per_sec, 350.0);
    assert_eq!(r.backends[0].new_flows_per_sec, 30.0);
    // New rows count from zero.
    assert_eq!(r.backends[1].packets_per_sec, 150.0);
    assert_eq!(r.backends[1].new_flows_per_sec, 20.0);
}

#[test]
fn counter_reset_counts_from_zero() {
    let prev = sample(10_000, 1_000, 5_000, &[]);
    let cur = sample(11_000, 40, 5_000, &[]);
    let r = rates(&prev, &cur).unwrap();
    assert_eq!(r.counters[0].per_sec, 40.0);
    assert_eq!(r.vips[0].packets_per_sec, 0.0);
}

#[test]
fn restarted_daemon_is_a_new_baseline() {
    let prev = sample(10_000, 1_000, 5_000, &[]);
    assert_eq!(rates(&prev, &sample(2_000, 10, 10, &[])), None);
    assert_eq!(rates(&prev, &prev), None);
}

#[test]
fn rates_serialize_one_line() {
    let prev = sample(10_000, 1_000, 5_000, &[("198.18.10.1", 5_000, 500)]);
    let cur = sample(11_000, 1_100, 5_100, &[("198.18.10.1", 5_100, 510)]);
    let line = serde_json::to_string(&rates(&prev, &cur).unwrap()).unwrap();
    assert!(!line.contains('\n'));
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["vips"][0]["packets_per_sec"], 100.0);
    assert!(value["vips"][0].get("backend").is_none());
    assert_eq!(value["backends"][0]["backend"], "198.18.10.1");
    assert_eq!(value["counters"][0]["per_sec"], 100.0);
}

#[test]
fn screen_shows_rates() {
    let prev = sample(10_000, 1_000, 5_000, &[("198.18.10.1", 5_000, 500)]);
    let cur = sample(11_000, 13_345, 17_345, &[("198.18.10.1", 17_345, 510)]);
    let r = rates(&prev, &cur).unwrap();
    let screen = render(Some(&r), Duration::from_secs(1), cur.uptime_ms);
    println!("{screen}");
    assert!(screen.starts_with("sluice stats: per-second rates every 1s"));
    assert!(screen.ends_with(
        "\
VIP  PACKETS/S    BYTES/S  NEW FLOWS/S
web      12.3k  1.2 MiB/s         1.2k

VIP  BACKEND      PACKETS/S    BYTES/S  NEW FLOWS/S
web  198.18.10.1      12.3k  1.2 MiB/s         10.0

COUNTER        KIND   PER SEC  TOTAL
conntrack_hit  event    12.3k  13345
"
    ));
    let first = render(None, Duration::from_secs(1), 1_000);
    assert!(first.ends_with("waiting for a second sample...\n"));
}
