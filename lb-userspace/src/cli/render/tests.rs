use super::*;
use crate::admin::protocol::from_name;
use crate::admin::protocol::{NextHopView, VipSummary};

fn backend(address: &str, state: &str, health: &str, reason: Option<&str>) -> BackendRow {
    BackendRow {
        vip: "web".into(),
        address: address.parse().unwrap(),
        weight: 100,
        state: from_name(state),
        health: from_name(health),
        health_reason: reason.map(Into::into),
        drained: false,
        unproven: false,
        flows: 0,
        packets: 0,
        bytes: 0,
        new_flows: 0,
        next_hop: None,
    }
}

#[test]
fn backends_table() {
    let rows = [
        BackendRow {
            flows: 1_204,
            packets: 9_812_331,
            bytes: 7_340_032_000,
            new_flows: 48_213,
            next_hop: Some(NextHopView {
                interface: "eth1".into(),
                ifindex: 3,
                dst_mac: "02:00:00:00:0a:01".into(),
                src_mac: "02:00:00:00:00:01".into(),
                mtu: 1500,
                generation: 7,
            }),
            ..backend("198.18.10.1", "up", "healthy", None)
        },
        BackendRow {
            drained: true,
            unproven: false,
            flows: 17,
            packets: 1_200,
            bytes: 1_258_291,
            new_flows: 310,
            ..backend("198.18.10.2", "draining", "healthy", None)
        },
        BackendRow {
            weight: 50,
            ..backend(
                "198.18.10.3",
                "down",
                "unhealthy",
                Some("connect: connection refused"),
            )
        },
    ];
    let text = backends(&rows);
    println!("{text}");
    assert_eq!(
        text,
        "\
VIP  BACKEND      WEIGHT  STATE                HEALTH                                   FLOWS  PACKETS    BYTES  NEW FLOWS  NEXT HOP
web  198.18.10.1     100  up                   healthy                                   1204  9812331  6.8 GiB      48213  eth1 02:00:00:00:0a:01
web  198.18.10.2     100  draining (operator)  healthy                                     17     1200  1.2 MiB        310  route lookup
web  198.18.10.3      50  down                 unhealthy (connect: connection refused)      0        0      0 B          0  route lookup
"
    );
}

#[test]
fn status_summary() {
    let s = Status {
        instance: "lb-1".into(),
        version: "0.1.0".into(),
        pid: 4242,
        uptime_secs: 7_501,
        config: "/etc/sluice/sluice.toml".into(),
        phase: crate::shutdown::NodeState::Serving,
        ready: true,
        interfaces: vec!["eth0".into(), "eth1".into()],
        pin_dir: "/sys/fs/bpf/sluice".into(),
        adopted: true,
        keep_dataplane: false,
        reloads_ok: 3,
        reloads_failed: 1,
        last_reload_error: Some("vip web: backend 198.18.10.9 listed twice".into()),
        vips: vec![
            VipSummary {
                name: "web".into(),
                address: "198.18.0.1:80".parse().unwrap(),
                protocol: "tcp".into(),
                backends_up: 2,
                backends_taking_new_flows: 1,
                backends_ready: 1,
                backends_total: 3,
            },
            VipSummary {
                name: "dns".into(),
                address: "[2001:db8::53]:53".parse().unwrap(),
                protocol: "udp".into(),
                backends_up: 4,
                backends_taking_new_flows: 4,
                backends_ready: 4,
                backends_total: 4,
            },
        ],
        bgp: None,
    };
    let text = status(&s);
    println!("{text}");
    assert_eq!(
        text,
        "\
instance:          lb-1
version:           0.1.0
pid:               4242
uptime:            2h 5m 1s
phase:             serving
ready:             yes
config:            /etc/sluice/sluice.toml
interfaces:        eth0, eth1
pin dir:           /sys/fs/bpf/sluice
dataplane:         adopted from a previous daemon
keep dataplane:    no
reloads:           3 ok, 1 failed
last reload error: vip web: backend 198.18.10.9 listed twice

VIP  ADDRESS            PROTO  BACKENDS UP  TAKING NEW FLOWS
web  198.18.0.1:80      tcp            2/3                 1
dns  [2001:db8::53]:53  udp            4/4                 4
"
    );
}

#[test]
fn flows_table() {
    let rows = [
        FlowRow {
            client: "203.0.113.7:51234".parse().unwrap(),
            vip: "198.18.0.1:80".parse().unwrap(),
            vip_name: Some("web".into()),
            protocol: "tcp".into(),
            backend: Some("198.18.10.1".parse().unwrap()),
            age_ms: 187_900,
            idle_ms: 350,
            real_client: Some("198.51.100.20:40112".parse().unwrap()),
            proxy: Some("accepted".into()),
        },
        FlowRow {
            client: "[2001:db8:1::9]:40000".parse().unwrap(),
            vip: "[2001:db8::53]:53".parse().unwrap(),
            vip_name: None,
            protocol: "udp".into(),
            backend: None,
            age_ms: 4_250,
            idle_ms: 4_250,
            real_client: None,
            proxy: None,
        },
    ];
    let text = flows(&rows);
    println!("{text}");
    assert_eq!(
        text,
        "\
CLIENT                 REAL CLIENT          VIP                PROTO  BACKEND      PROXY       AGE   IDLE
203.0.113.7:51234      198.51.100.20:40112  web                tcp    198.18.10.1  accepted  3m 7s  350ms
[2001:db8:1::9]:40000  -                    [2001:db8::53]:53  udp    -            -          4.2s   4.2s
"
    );
    assert_eq!(flows_truncated(2, 100), None);
    assert!(flows_truncated(100, 100).unwrap().contains("--limit"));
}

#[test]
fn stats_hide_zero_counters() {
    let s = Stats {
        uptime_ms: 10_000,
        counters: vec![
            NamedCounter {
                name: "conntrack_hit".into(),
                kind: from_name("event"),
                value: 1_000,
            },
            NamedCounter {
                name: "drop_no_backend".into(),
                kind: from_name("drop"),
                value: 0,
            },
        ],
        vips: vec![TrafficRow {
            vip: "web".into(),
            backend: None,
            packets: 1_010,
            bytes: 2_048,
            new_flows: 10,
        }],
        backends: vec![TrafficRow {
            vip: "web".into(),
            backend: Some("198.18.10.1".parse().unwrap()),
            packets: 1_010,
            bytes: 2_048,
            new_flows: 10,
        }],
        proxy: vec![
            ProxyRow {
                vip: "web".into(),
                outcome: "accepted".into(),
                flows: 9,
            },
            ProxyRow {
                vip: "web".into(),
                outcome: "untrusted".into(),
                flows: 0,
            },
        ],
        edge_proxy: vec![ProxyRow {
            vip: "idp".into(),
            outcome: "untrusted".into(),
            flows: 3,
        }],
    };
    let text = stats(&s);
    println!("{text}");
    assert_eq!(
        text,
        "\
COUNTER        KIND   VALUE
conntrack_hit  event   1000

VIP  PACKETS    BYTES  NEW FLOWS
web     1010  2.0 KiB         10

VIP  BACKEND      PACKETS    BYTES  NEW FLOWS
web  198.18.10.1     1010  2.0 KiB         10

VIP       PROXY OUTCOME  FLOWS
web       accepted           9
edge/idp  untrusted          3
"
    );
    let quiet = Stats {
        counters: vec![],
        ..s
    };
    assert!(stats(&quiet).starts_with("(every counter is zero)\n"));
}

#[test]
fn status_shows_each_bgp_peer_and_what_it_has() {
    let s = Status {
        instance: "gw".into(),
        version: "0.1.0".into(),
        pid: 1,
        uptime_secs: 1,
        config: "/etc/sluice/sluice.toml".into(),
        phase: crate::shutdown::NodeState::Serving,
        ready: true,
        interfaces: vec!["eth0".into()],
        pin_dir: "/sys/fs/bpf/sluice/gw".into(),
        adopted: false,
        keep_dataplane: false,
        reloads_ok: 0,
        reloads_failed: 0,
        last_reload_error: None,
        vips: Vec::new(),
        bgp: Some(crate::bgp::BgpStatus {
            wanted: vec!["198.51.100.10".parse().unwrap()],
            withdrawn_by_hand: vec!["web6".into()],
            peers: vec![
                crate::bgp::BgpPeerRow {
                    peer: "10.0.0.1:179".parse().unwrap(),
                    remote_as: 65000,
                    state: "established".into(),
                    established_secs: Some(61),
                    announced: vec!["198.51.100.10".parse().unwrap()],
                    last_error: None,
                },
                crate::bgp::BgpPeerRow {
                    peer: "10.0.0.9:179".parse().unwrap(),
                    remote_as: 65000,
                    state: "connect".into(),
                    established_secs: None,
                    announced: Vec::new(),
                    last_error: Some("connecting: connection refused".into()),
                },
            ],
        }),
    };
    let text = status(&s);
    let mut tail: Vec<&str> = text.lines().rev().take(6).collect();
    tail.reverse();
    assert_eq!(
        tail.join("\n"),
        "\
bgp wanted:            198.51.100.10
bgp withdrawn by hand: web6

BGP PEER         AS  STATE           UP  ANNOUNCED      LAST ERROR
10.0.0.1:179  65000  established  1m 1s  198.51.100.10  -
10.0.0.9:179  65000  connect          -  -              connecting: connection refused",
        "{text}"
    );
}
