//! A closed node refuses new connections to edge VIPs with a TCP RST that `sluice_xdp` builds
//! itself, and touches nothing else.
//!
//! `node_rst_table` feeds frames to the program with `BPF_PROG_TEST_RUN` and compares each RST
//! with bytes written here from RFC 9293 and RFC 791/8200 (not from sluice's code), verifies
//! its checksums with a sum written here, and checks the exact counter deltas, that no flow is
//! recorded and that the edge's traffic does not move. The other rows show what is not
//! refused: segments that do not open a connection, SYNs to L4 VIPs (forwarded through
//! shutdown) and SYNs while the node is serving or draining.
//!
//! `live_connect_is_refused_once_closed` connects with real sockets through a veth into a
//! gateway namespace that has `sluice_xdp` attached and a listener on the edge addresses: the
//! connection succeeds while serving and fails with `ConnectionRefused` once closed, which only
//! a RST produces (the listener is still there, so the RST can only come from XDP).
//!
//! Needs root. Run with `cargo test -p sluice-tests --test node_rst -- --test-threads=1`.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData};
use lb_common::{names, Counter, FlowKey, NodeEntry};
use lb_userspace::config::{Config, XdpMode};
use lb_userspace::dataplane::{Dataplane, Options};
use lb_userspace::shutdown::NodeState;
use sluice_tests::packet_builder::{
    diff, ethernet_vlan, ext_header, internet_checksum, pad_to_min, Ipv4, Ipv6, ETH_P_8021AD,
    ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_PSH,
    TCP_RST, TCP_SYN,
};
use sluice_tests::packet_check::{
    action_mismatch, check_forward, counters_mismatch, deltas, expected_deltas, flow_key, octets,
    report, row_result, XDP_PASS, XDP_TX,
};
use sluice_tests::packet_env::{PacketEnv, CLIENT4, CLIENT6, CLIENT_MAC, GW0, GW0_MAC, NEIGH0_V4};
use sluice_tests::topology::{GW_CLIENT_ADDR4, GW_CLIENT_ADDR6};
use sluice_tests::{require_root, NetNs, Topology};

/// An L4 VIP whose one backend is behind gw0 (its packets leave by `XDP_TX`).
const L4_VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const EDGE4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 10);
const EDGE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 1, 0, 0, 0, 0x10);
/// An edge with a PROXY policy: serving, its SYNs are tracked; closed, they are not.
const POLICED4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 11);
const EDGE_PORT: u16 = 443;
const ISN: u32 = 0x8765_4321;
const EDGES: [&str; 3] = ["edge4", "edge6", "policed4"];

fn config() -> String {
    format!(
        "interfaces = [\"gw0\"]\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"web4\"\naddress = \"{L4_VIP4}:80\"\nprotocol = \"tcp\"\n\
         table_size = 251\nbackend = [{{ address = \"{NEIGH0_V4}\" }}]\n\n\
         [[edge]]\nname = \"edge4\"\naddress = \"{EDGE4}:{EDGE_PORT}\"\npool = \"web4\"\n\n\
         [[edge]]\nname = \"edge6\"\naddress = \"[{EDGE6}]:{EDGE_PORT}\"\npool = \"web4\"\n\n\
         [[edge]]\nname = \"policed4\"\naddress = \"{POLICED4}:{EDGE_PORT}\"\npool = \"web4\"\n\
         proxy_protocol = \"required\"\ntrusted_proxies = [\"198.18.0.0/15\"]\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Frames, from the RFCs

/// The TCP pseudo-header (RFC 9293 3.1 for IPv4, RFC 8200 8.1 for IPv6).
fn pseudo(src: IpAddr, dst: IpAddr, tcp_len: usize) -> Vec<u8> {
    let mut p = octets(src);
    p.extend(octets(dst));
    let len = u32::try_from(tcp_len).expect("small segment");
    if src.is_ipv4() {
        p.extend([0, IPPROTO_TCP]);
        p.extend(u16::try_from(len).expect("small segment").to_be_bytes());
    } else {
        p.extend(len.to_be_bytes());
        p.extend([0, 0, 0, IPPROTO_TCP]);
    }
    p
}

/// One client segment: ports, sequence, flags, TCP options (a multiple of 4 bytes) and payload.
#[derive(Clone, Copy)]
struct Seg<'a> {
    client: IpAddr,
    vip: IpAddr,
    cport: u16,
    vport: u16,
    flags: u8,
    options: &'a [u8],
    payload: &'a [u8],
}

impl Seg<'_> {
    fn tcp(&self) -> Vec<u8> {
        assert!(self.options.len().is_multiple_of(4) && self.options.len() <= 40);
        let doff = u8::try_from(5 + self.options.len() / 4).expect("data offset");
        let ack = if self.flags & TCP_ACK == 0 {
            0
        } else {
            0x2000_0001
        };
        let seq = if self.flags & TCP_SYN == 0 {
            ISN + 1
        } else {
            ISN
        };
        let mut t = Vec::new();
        t.extend(self.cport.to_be_bytes());
        t.extend(self.vport.to_be_bytes());
        t.extend(seq.to_be_bytes());
        t.extend(u32::to_be_bytes(ack));
        t.extend([doff << 4, self.flags]);
        t.extend(64240u16.to_be_bytes());
        t.extend([0, 0, 0, 0]);
        t.extend(self.options);
        t.extend(self.payload);
        let mut p = pseudo(self.client, self.vip, t.len());
        p.extend(&t);
        t[16..18].copy_from_slice(&internet_checksum(&p).to_be_bytes());
        t
    }

    /// The client's IP packet; `ip_options` (IPv4) or a destination options header of that
    /// many bytes (IPv6) go between the IP and TCP headers.
    fn packet(&self, ip_options: &[u8]) -> Vec<u8> {
        let t = self.tcp();
        match (self.client, self.vip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                Ipv4::new(IPPROTO_TCP, s, d).options(ip_options).packet(&t)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) if ip_options.is_empty() => {
                Ipv6::new(IPPROTO_TCP, s, d).packet(&t)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut p = ext_header(IPPROTO_DSTOPTS, IPPROTO_TCP, ip_options.len());
                p.extend(t);
                Ipv6::new(IPPROTO_DSTOPTS, s, d).packet(&p)
            }
            _ => panic!("one family per segment"),
        }
    }

    fn key(&self) -> FlowKey {
        flow_key(IPPROTO_TCP, self.client, self.cport, self.vip, self.vport)
    }
}

fn ethertype(ip: &[u8]) -> u16 {
    if ip[0] >> 4 == 6 {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    }
}

/// The RST a closed node must send for a SYN of `s` with acknowledgement `ack`: the SYN's MACs
/// swapped and its VLAN tags, then a fresh IP header and a bare TCP header.
fn expected_rst(tags: &[(u16, u16)], s: &Seg, ack: u32) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(s.vport.to_be_bytes());
    t.extend(s.cport.to_be_bytes());
    t.extend([0, 0, 0, 0]); // sequence 0: the SYN carried no ACK
    t.extend(ack.to_be_bytes());
    t.extend([5 << 4, TCP_RST | TCP_ACK]);
    t.extend([0, 0, 0, 0, 0, 0]); // window, checksum, urgent pointer
    let mut p = pseudo(s.vip, s.client, t.len());
    p.extend(&t);
    t[16..18].copy_from_slice(&internet_checksum(&p).to_be_bytes());
    let mut ip = Vec::new();
    if let (IpAddr::V4(vip), IpAddr::V4(client)) = (s.vip, s.client) {
        // Version 4, IHL 5, TOS 0, length 40, id 0, DF, TTL 64, TCP.
        ip.extend([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0]);
        ip.extend(vip.octets());
        ip.extend(client.octets());
        let c = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        // Version 6, traffic class and flow label 0, payload 20, TCP, hop limit 64.
        ip.extend([0x60, 0, 0, 0, 0, 20, IPPROTO_TCP, 64]);
        ip.extend(octets(s.vip));
        ip.extend(octets(s.client));
    }
    ip.extend(t);
    ethernet_vlan(CLIENT_MAC, GW0_MAC, tags, ethertype(&ip), &ip)
}

/// Ones' complement sum of big-endian words (RFC 1071), folded; kept apart from the builders
/// above so a wrong checksum there cannot hide one in the program's output.
fn sum16(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|c| u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).expect("folded")
}

/// Checks the IP header checksum (IPv4) and the TCP checksum over the pseudo-header of a
/// frame whose IP header starts at `l3`.
fn checksums_verify(frame: &[u8], l3: usize) -> Result<(), String> {
    let ip = frame.get(l3..).ok_or("frame shorter than its L2 header")?;
    let (src, dst, seg) = match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if sum16(&[&ip[..ihl]]) != 0xffff {
                return Err("IPv4 header checksum does not verify".into());
            }
            let s: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
            let d: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
            (IpAddr::from(s), IpAddr::from(d), &ip[ihl..])
        }
        Some(6) => {
            let s: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
            let d: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
            (IpAddr::from(s), IpAddr::from(d), &ip[40..])
        }
        v => return Err(format!("IP version {v:?}")),
    };
    if sum16(&[&pseudo(src, dst, seg.len()), seg]) == 0xffff {
        Ok(())
    } else {
        Err("TCP checksum does not verify".into())
    }
}

// ---------------------------------------------------------------------------------------------
// The table

enum Want {
    /// `XDP_TX` with the RST acknowledging `ack`; only `tx_rst_closed` moves.
    Rst { ack: u32 },
    /// `XDP_PASS`, frame unchanged, exactly these counters.
    Pass(&'static [Counter]),
    /// Steered to the L4 VIP's backend as a new flow.
    Forward,
}

struct Row<'a> {
    name: &'static str,
    state: NodeState,
    tags: &'a [(u16, u16)],
    seg: Seg<'a>,
    ip_options: &'a [u8],
    /// Ethernet padding to the 60-byte minimum.
    padded: bool,
    want: Want,
}

impl Row<'_> {
    fn frame(&self) -> Vec<u8> {
        let ip = self.seg.packet(self.ip_options);
        let f = ethernet_vlan(GW0_MAC, CLIENT_MAC, self.tags, ethertype(&ip), &ip);
        if self.padded {
            pad_to_min(f)
        } else {
            f
        }
    }

    fn edge(&self) -> Option<&'static str> {
        match self.seg.vip {
            IpAddr::V4(a) if a == EDGE4 => Some("edge4"),
            IpAddr::V6(a) if a == EDGE6 => Some("edge6"),
            IpAddr::V4(a) if a == POLICED4 => Some("policed4"),
            _ => None,
        }
    }
}

/// MSS, SACK permitted, timestamps, NOP, window scale: what Linux puts in a SYN.
const SYN_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7,
];
/// MSS, a TCP Fast Open cookie (kind 34, RFC 7413), two NOPs.
const TFO_OPTIONS: [u8; 16] = [2, 4, 0x05, 0xb4, 34, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1];
/// IPv4 router alert (RFC 2113).
const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0, 0];

#[allow(clippy::too_many_lines)]
fn rows(tfo_data: &[u8]) -> Vec<Row<'_>> {
    use Counter::{ConntrackMiss, FlowCreated, PassEdge};
    use NodeState::{Closed, Draining, Serving};
    let (c4, c6) = (IpAddr::V4(CLIENT4), IpAddr::V6(CLIENT6));
    let seg = |client, vip, cport, flags| Seg {
        client,
        vip,
        cport,
        vport: EDGE_PORT,
        flags,
        options: &[],
        payload: &[],
    };
    let row = |name, state, seg, want| Row {
        name,
        state,
        tags: &[],
        seg,
        ip_options: &[],
        padded: false,
        want,
    };
    let (e4, e6) = (IpAddr::V4(EDGE4), IpAddr::V6(EDGE6));
    vec![
        row(
            "IPv4 SYN, closed: RST",
            Closed,
            seg(c4, e4, 50001, TCP_SYN),
            Want::Rst { ack: ISN + 1 },
        ),
        row(
            "IPv6 SYN, closed: RST",
            Closed,
            seg(c6, e6, 50002, TCP_SYN),
            Want::Rst { ack: ISN + 1 },
        ),
        Row {
            tags: &[(ETH_P_8021Q, 0x0064)],
            ..row(
                "802.1Q-tagged SYN, closed: RST keeps the tag",
                Closed,
                seg(c4, e4, 50003, TCP_SYN),
                Want::Rst { ack: ISN + 1 },
            )
        },
        Row {
            tags: &[(ETH_P_8021AD, 0x0010), (ETH_P_8021Q, 0x2064)],
            ..row(
                "QinQ IPv6 SYN, closed: RST keeps both tags",
                Closed,
                seg(c6, e6, 50004, TCP_SYN),
                Want::Rst { ack: ISN + 1 },
            )
        },
        row(
            "SYN with TCP options, closed: RST without options",
            Closed,
            Seg {
                options: &SYN_OPTIONS,
                ..seg(c4, e4, 50005, TCP_SYN)
            },
            Want::Rst { ack: ISN + 1 },
        ),
        row(
            "TFO SYN with data, closed: RST acknowledges the data",
            Closed,
            Seg {
                options: &TFO_OPTIONS,
                payload: tfo_data,
                ..seg(c4, e4, 50006, TCP_SYN)
            },
            Want::Rst {
                ack: ISN + 1 + u32::try_from(tfo_data.len()).expect("small"),
            },
        ),
        row(
            "IPv6 TFO SYN with data, closed: RST acknowledges the data",
            Closed,
            Seg {
                options: &TFO_OPTIONS,
                payload: tfo_data,
                ..seg(c6, e6, 50007, TCP_SYN)
            },
            Want::Rst {
                ack: ISN + 1 + u32::try_from(tfo_data.len()).expect("small"),
            },
        ),
        Row {
            ip_options: &ROUTER_ALERT,
            ..row(
                "IPv4 SYN with IP options, closed: RST with IHL 5",
                Closed,
                seg(c4, e4, 50008, TCP_SYN),
                Want::Rst { ack: ISN + 1 },
            )
        },
        Row {
            ip_options: &[0; 16],
            ..row(
                "IPv6 SYN with a destination options header, closed: RST without it",
                Closed,
                seg(c6, e6, 50009, TCP_SYN),
                Want::Rst { ack: ISN + 1 },
            )
        },
        Row {
            padded: true,
            ..row(
                "SYN in a padded 60-byte frame, closed: RST without the padding",
                Closed,
                seg(c4, e4, 50010, TCP_SYN),
                Want::Rst { ack: ISN + 1 },
            )
        },
        row(
            "SYN+FIN, closed: RST acknowledges the FIN too",
            Closed,
            seg(c4, e4, 50011, TCP_SYN | TCP_FIN),
            Want::Rst { ack: ISN + 2 },
        ),
        row(
            "SYN to an edge with a PROXY policy, closed: RST, no flow, no policy",
            Closed,
            seg(c4, IpAddr::V4(POLICED4), 50012, TCP_SYN),
            Want::Rst { ack: ISN + 1 },
        ),
        row(
            "ACK, closed: passed",
            Closed,
            seg(c4, e4, 50013, TCP_ACK),
            Want::Pass(&[PassEdge]),
        ),
        row(
            "data segment, closed: passed",
            Closed,
            Seg {
                payload: b"GET / HTTP/1.1\r\n\r\n",
                ..seg(c6, e6, 50014, TCP_ACK | TCP_PSH)
            },
            Want::Pass(&[PassEdge]),
        ),
        row(
            "SYN+ACK, closed: passed",
            Closed,
            seg(c4, e4, 50015, TCP_SYN | TCP_ACK),
            Want::Pass(&[PassEdge]),
        ),
        row(
            "SYN+RST, closed: passed, a RST is never answered",
            Closed,
            seg(c4, e4, 50016, TCP_SYN | TCP_RST),
            Want::Pass(&[PassEdge]),
        ),
        row(
            "SYN to an L4 VIP, closed: forwarded",
            Closed,
            Seg {
                vport: 80,
                ..seg(c4, IpAddr::V4(L4_VIP4), 50017, TCP_SYN)
            },
            Want::Forward,
        ),
        row(
            "IPv4 SYN, serving: passed",
            Serving,
            seg(c4, e4, 50018, TCP_SYN),
            Want::Pass(&[PassEdge]),
        ),
        row(
            "IPv6 SYN, draining: passed",
            Draining,
            seg(c6, e6, 50019, TCP_SYN),
            Want::Pass(&[PassEdge]),
        ),
        row(
            "SYN to an edge with a PROXY policy, draining: tracked and passed",
            Draining,
            seg(c4, IpAddr::V4(POLICED4), 50020, TCP_SYN),
            Want::Pass(&[ConntrackMiss, FlowCreated, PassEdge]),
        ),
    ]
}

/// Every edge's traffic counters, by edge.
fn edge_traffic(env: &PacketEnv) -> Result<BTreeMap<&'static str, (u64, u64)>, String> {
    EDGES
        .iter()
        .map(|e| {
            let t = env.dp.edge_traffic(e).map_err(|e| e.to_string())?;
            Ok((*e, (t.packets, t.new_flows)))
        })
        .collect()
}

fn check(env: &mut PacketEnv, row: &Row) -> Result<(), String> {
    env.dp
        .set_node_state(row.state)
        .map_err(|e| e.to_string())?;
    let read = env.dp.node_state().map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    if read != row.state {
        errors.push(format!("node state reads {read}, want {}", row.state));
    }
    let frame = row.frame();
    let counters_before = env.counters().map_err(|e| format!("{e:#}"))?;
    let traffic_before = edge_traffic(env)?;
    let (action, out) = env.run(&frame).map_err(|e| format!("{e:#}"))?;
    let got = deltas(
        &counters_before,
        &env.counters().map_err(|e| format!("{e:#}"))?,
    );
    let traffic = edge_traffic(env)?;
    let flow = env.dp.flow_backend(&row.seg.key());
    let mut want_action = XDP_PASS;
    let want_counters = match row.want {
        Want::Rst { ack } => {
            want_action = XDP_TX;
            let want = expected_rst(row.tags, &row.seg, ack);
            if out != want {
                errors.push(format!("RST differs: {}", diff(&out, &want)));
            }
            if let Err(e) = checksums_verify(&out, 14 + 4 * row.tags.len()) {
                errors.push(e);
            }
            if traffic != traffic_before {
                errors.push(format!(
                    "edge traffic moved: {traffic_before:?} -> {traffic:?}"
                ));
            }
            if flow.is_some() {
                errors.push("a flow was recorded for the refused SYN".into());
            }
            expected_deltas([Counter::TxRstClosed.name()])
        }
        Want::Pass(counters) => {
            if out != frame {
                errors.push(format!("frame changed: {}", diff(&out, &frame)));
            }
            let edge = row.edge().ok_or("pass rows go to edges")?;
            let moved = traffic[edge].0 - traffic_before[edge].0;
            if moved != 1 {
                errors.push(format!("{edge} traffic moved by {moved} packets, want 1"));
            }
            expected_deltas(counters.iter().map(|c| c.name()))
        }
        Want::Forward => {
            let ip = row.seg.packet(row.ip_options);
            let (verdict, more) = check_forward(
                &frame,
                GW0,
                &row.seg.key(),
                &ip,
                IpAddr::V4(NEIGH0_V4),
                action,
                &out,
            );
            want_action = action;
            errors.extend(more);
            if flow.is_none() {
                errors.push("no flow recorded for the forwarded SYN".into());
            }
            expected_deltas(
                [Counter::ConntrackMiss, Counter::FlowCreated, verdict].map(Counter::name),
            )
        }
    };
    errors.extend(action_mismatch(action, want_action));
    errors.extend(counters_mismatch(&got, &want_counters));
    row_result(&errors)
}

#[test]
fn node_rst_table() {
    require_root();
    let ns = "slrst";
    let tfo_data: Vec<u8> = (0..200u8).collect();
    let rows = rows(&tfo_data);
    let results = {
        let mut env = PacketEnv::new(ns, &Options::unpinned(4096, 2 * 251), &config())
            .expect("set up the namespace and sluice_xdp");
        assert_eq!(
            env.dp.node_state().expect("node state"),
            NodeState::Serving,
            "a freshly loaded dataplane must serve"
        );
        rows.iter()
            .map(|r| (r.name, check(&mut env, r)))
            .collect::<Vec<_>>()
    };
    assert!(!NetNs::exists(ns), "namespace {ns} left behind");
    report("node RST", &results);
}

// ---------------------------------------------------------------------------------------------
// A restarted daemon serves again

/// Removes a pin directory on drop (also when the test fails).
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
        let _ = std::fs::remove_dir("/sys/fs/bpf/sluice");
    }
}

fn pinned_node_state(dir: &std::path::Path) -> Result<u8> {
    let data = MapData::from_pin(dir.join(names::NODE)).context("opening the pinned node map")?;
    let map: Array<MapData, NodeEntry> = Array::try_from(Map::Array(data))?;
    Ok(map.get(&0, 0)?.state)
}

#[test]
fn restarted_dataplane_does_not_inherit_closed() {
    require_root();
    let pins = Pins(PathBuf::from("/sys/fs/bpf/sluice/test-noderst"));
    let options = Options {
        pins: Some((PathBuf::from("/sys/fs/bpf"), pins.0.clone())),
        ..Options::unpinned(4096, 2 * 251)
    };
    let config = Config::parse(&config()).expect("config");
    let mut first = Dataplane::load(&options).expect("load");
    first.apply(&config).expect("apply");
    first.finish_pinning(&[]).expect("pin");
    first.set_node_state(NodeState::Closed).expect("close");
    assert_eq!(pinned_node_state(&pins.0).expect("read pin"), 2);
    // Like a daemon that shut down with keep_dataplane: everything stays pinned.
    first.close(true).expect("keep the pins");
    drop(first);
    assert_eq!(pinned_node_state(&pins.0).expect("read pin"), 2);

    let mut second = Dataplane::load(&options).expect("load again");
    assert!(
        second.adopted(),
        "the second load must adopt the first one's pins"
    );
    assert_eq!(second.node_state().expect("state"), NodeState::Serving);
    second.apply(&config).expect("apply");
    second.finish_pinning(&[]).expect("pin");
    assert_eq!(pinned_node_state(&pins.0).expect("read pin"), 0);
    second.close(false).expect("remove the pins");
    assert!(!pins.0.exists(), "pins left behind");
}

// ---------------------------------------------------------------------------------------------
// Live: real sockets through a veth

const LIVE_PORT: u16 = 8443;

fn live_config() -> String {
    format!(
        "interfaces = [\"gwc\"]\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"web4\"\naddress = \"{L4_VIP4}:80\"\nprotocol = \"tcp\"\n\
         table_size = 251\nbackend = [{{ address = \"198.18.10.2\" }}]\n\n\
         [[edge]]\nname = \"live4\"\naddress = \"{GW_CLIENT_ADDR4}:{LIVE_PORT}\"\npool = \"web4\"\n\n\
         [[edge]]\nname = \"live6\"\naddress = \"[{GW_CLIENT_ADDR6}]:{LIVE_PORT}\"\npool = \"web4\"\n"
    )
}

/// Connects from the client namespace; the timeout only bounds a broken run (the assertions
/// are on the outcome, never on the time).
fn connect_from(topo: &Topology, to: SocketAddr) -> std::io::Result<Duration> {
    topo.client()
        .exec(move || {
            let start = Instant::now();
            TcpStream::connect_timeout(&to, Duration::from_secs(10)).map(|_| start.elapsed())
        })
        .expect("run in the client namespace")
}

#[test]
fn live_connect_is_refused_once_closed() {
    require_root();
    let topo = Topology::build("slrstl", 0).expect("build topology");
    // Generic (skb) mode: its XDP_TX reaches the veth's peer whether the peer runs XDP or not.
    // (In native mode on a veth the kernel refuses instead; see shutdown_rst.rs.)
    let config = Config::parse(&live_config()).expect("config");
    let targets = [
        SocketAddr::new(GW_CLIENT_ADDR4.into(), LIVE_PORT),
        SocketAddr::new(GW_CLIENT_ADDR6.into(), LIVE_PORT),
    ];
    // Listeners stay open throughout: a refusal can only come from XDP.
    let listeners: Vec<TcpListener> = topo
        .gateway()
        .exec(|| {
            targets
                .iter()
                .map(TcpListener::bind)
                .collect::<std::io::Result<Vec<_>>>()
        })
        .expect("gateway namespace")
        .expect("listen on the edge addresses");
    let mut dp = topo
        .gateway()
        .exec(|| -> Result<Dataplane> {
            let mut dp = Dataplane::load(&Options::unpinned(4096, 2 * 251))?;
            dp.apply(&config)?;
            dp.attach(topo.gw_client_ifname(), XdpMode::Skb)?;
            Ok(dp)
        })
        .and_then(|r| r)
        .expect("load, configure and attach sluice_xdp on the gateway");
    let rst = |dp: &Dataplane| dp.counter(Counter::TxRstClosed).expect("counter");

    for to in targets {
        let took = connect_from(&topo, to).unwrap_or_else(|e| panic!("serving: {to}: {e}"));
        eprintln!("serving: connected to {to} in {took:?}");
    }
    assert_eq!(rst(&dp), 0);

    dp.set_node_state(NodeState::Closed)
        .expect("close the node");
    for (i, to) in targets.into_iter().enumerate() {
        let start = Instant::now();
        let err = connect_from(&topo, to).expect_err("closed: connect must fail");
        eprintln!("closed: {to} refused in {:?}: {err}", start.elapsed());
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{to}: {err}");
        assert_eq!(rst(&dp), i as u64 + 1, "one RST per refused SYN");
    }

    dp.set_node_state(NodeState::Serving).expect("serve again");
    for to in targets {
        connect_from(&topo, to).unwrap_or_else(|e| panic!("serving again: {to}: {e}"));
    }
    assert_eq!(rst(&dp), 2);
    drop(dp);
    drop(listeners);
}
