//! Table-driven `BPF_PROG_TEST_RUN` tests of `sluice_xdp` and `sluice_decap`.
//!
//! Each row is a frame, the XDP action expected for it, the frame expected back (exactly, or
//! unchanged), and the counters expected to grow by exactly one (every other counter must stay
//! put). Expected frames come from `packet_builder`, written from the RFCs and the documented
//! tunnel format, not from sluice's code.
//!
//! Which backend a new flow gets is Maglev's business: for rows that open a flow any backend of
//! the VIP is accepted, but the whole output frame must then be exactly the tunnel frame towards
//! that backend, and later packets of the flow (and ICMP errors about it) must go to the same
//! one. Every row runs and all failures are reported together.
//!
//! Needs root (namespaces, BPF). Run with
//! `cargo test -p sluice-tests --test packets -- --test-threads=1`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{Counter, FlowKey, BACKEND_DOWN, BACKEND_DRAINING};
use lb_userspace::config::XdpMode;
use lb_userspace::dataplane::{Decap, Options};
use sluice_tests::packet_builder::{
    arp_request, diff, ethernet, ethernet_vlan, ext_header, fragment_header, icmp4, icmp6, ip_tos,
    pad_to_min, tcp, udp, Ipv4, Ipv6, Mac, Tunnel, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP,
    ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_GRE, IPPROTO_HOPOPTS, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_IPIP, IPPROTO_NONE, IPPROTO_ROUTING, IPPROTO_SCTP, IPPROTO_TCP,
    IPPROTO_UDP, IP_MF, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
};
use sluice_tests::packet_check::{
    action_mismatch, action_name, check_forward, counters_mismatch, deltas, expected_deltas,
    flow_key, report, row_result, tunnel_destination, XDP_DROP, XDP_PASS,
};
use sluice_tests::packet_env::{
    errno, DecapProgram, PacketEnv, CLIENT4, CLIENT6, CLIENT_MAC, GW0, GW0_MAC, GW1, MTU,
    NEIGH0_V4, NEIGH0_V6, NEIGH1_V4, NEIGH1_V6, UNRESOLVED_V4,
};
use sluice_tests::{require_root, NetNs};

/// A router on the return path that reports errors about VIP flows.
const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10);
const NOT_VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NOT_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xee, 0, 0, 0, 0, 7);
const EMPTY_VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const NONEIGH_VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 12);
const TX_VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 13);
const REDIR_VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 14);
const V4IN6_VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 15);
const NOROUTE_VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 16);
const TX_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x13);
const REDIR_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x14);
const V6IN4_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x15);
/// Outside every prefix of the namespace (which has no default route).
const UNROUTABLE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// The gateway's configuration: what each VIP is for is in its name.
fn gateway_config() -> String {
    let vip = |name: &str, address: String, proto: &str, backends: &[IpAddr]| {
        let list: Vec<String> = backends
            .iter()
            .map(|b| format!("{{ address = \"{b}\" }}"))
            .collect();
        format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nprotocol = \"{proto}\"\n\
             table_size = 251\nbackend = [{}]\n\n",
            list.join(", ")
        )
    };
    let b4 = [IpAddr::V4(NEIGH0_V4), IpAddr::V4(NEIGH1_V4)];
    let b6 = [IpAddr::V6(NEIGH0_V6), IpAddr::V6(NEIGH1_V6)];
    let mut c = String::from(
        "interfaces = [\"gw0\"]\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n\n",
    );
    c += &vip("web4", format!("{VIP4}:80"), "tcp", &b4);
    c += &vip("dns4", format!("{VIP4}:53"), "udp", &b4);
    c += &vip("web6", format!("[{VIP6}]:80"), "tcp", &b6);
    c += &vip("dns6", format!("[{VIP6}]:53"), "udp", &b6);
    c += &vip(
        "noneigh4",
        format!("{NONEIGH_VIP4}:80"),
        "tcp",
        &[UNRESOLVED_V4.into()],
    );
    c += &vip("empty4", format!("{EMPTY_VIP4}:80"), "tcp", &[]);
    c += &vip("tx4", format!("{TX_VIP4}:80"), "tcp", &[NEIGH0_V4.into()]);
    c += &vip(
        "redir4",
        format!("{REDIR_VIP4}:80"),
        "tcp",
        &[NEIGH1_V4.into()],
    );
    c += &vip("tx6", format!("[{TX_VIP6}]:80"), "tcp", &[NEIGH0_V6.into()]);
    c += &vip(
        "redir6",
        format!("[{REDIR_VIP6}]:80"),
        "tcp",
        &[NEIGH1_V6.into()],
    );
    c += &vip(
        "v4in6",
        format!("{V4IN6_VIP4}:80"),
        "tcp",
        &[NEIGH1_V6.into()],
    );
    c += &vip(
        "v6in4",
        format!("[{V6IN4_VIP6}]:80"),
        "tcp",
        &[NEIGH0_V4.into()],
    );
    c += &vip(
        "noroute4",
        format!("{NOROUTE_VIP4}:80"),
        "tcp",
        &[UNROUTABLE_V4.into()],
    );
    c
}

// ---------------------------------------------------------------------------------------------
// Frames

/// A client's flow to a service (addresses of one family).
#[derive(Clone, Copy, Debug)]
struct Flow {
    proto: u8,
    client: IpAddr,
    cport: u16,
    vip: IpAddr,
    vport: u16,
}

fn tcp4(cport: u16, vip: Ipv4Addr) -> Flow {
    Flow {
        proto: IPPROTO_TCP,
        client: CLIENT4.into(),
        cport,
        vip: vip.into(),
        vport: 80,
    }
}

fn tcp6(cport: u16, vip: Ipv6Addr) -> Flow {
    Flow {
        proto: IPPROTO_TCP,
        client: CLIENT6.into(),
        cport,
        vip: vip.into(),
        vport: 80,
    }
}

fn udp4(cport: u16) -> Flow {
    Flow {
        proto: IPPROTO_UDP,
        client: CLIENT4.into(),
        cport,
        vip: VIP4.into(),
        vport: 53,
    }
}

fn udp6(cport: u16) -> Flow {
    Flow {
        proto: IPPROTO_UDP,
        client: CLIENT6.into(),
        cport,
        vip: VIP6.into(),
        vport: 53,
    }
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => panic!("{a} is not IPv4"),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => panic!("{a} is not IPv6"),
    }
}

impl Flow {
    /// The conntrack key, built the documented way (wire-order bytes, `FlowKey::new`).
    fn key(&self) -> FlowKey {
        flow_key(self.proto, self.client, self.cport, self.vip, self.vport)
    }

    fn with_port(mut self, cport: u16) -> Self {
        self.cport = cport;
        self
    }

    /// The client's L4 segment (TCP flags ignored for UDP).
    fn l4(&self, flags: u8, payload: &[u8]) -> Vec<u8> {
        if self.proto == IPPROTO_TCP {
            tcp(
                self.client,
                self.vip,
                self.cport,
                self.vport,
                flags,
                payload,
            )
        } else {
            udp(self.client, self.vip, self.cport, self.vport, payload)
        }
    }

    fn ip4(&self) -> Ipv4 {
        Ipv4::new(self.proto, v4(self.client), v4(self.vip))
    }

    fn ip6(&self, next: u8) -> Ipv6 {
        Ipv6::new(next, v6(self.client), v6(self.vip))
    }

    /// The client's IP packet with a default header.
    fn packet(&self, flags: u8) -> Vec<u8> {
        self.packet_with(flags, b"")
    }

    fn packet_with(&self, flags: u8, payload: &[u8]) -> Vec<u8> {
        let l4 = self.l4(flags, payload);
        if self.client.is_ipv4() {
            self.ip4().packet(&l4)
        } else {
            self.ip6(self.proto).packet(&l4)
        }
    }

    /// The backend's reply (VIP -> client) as an ICMP error quotes it: IP header + 8 bytes.
    fn quoted_reply(&self) -> Vec<u8> {
        let l4 = if self.proto == IPPROTO_TCP {
            tcp(self.vip, self.client, self.vport, self.cport, TCP_ACK, b"")
        } else {
            udp(self.vip, self.client, self.vport, self.cport, b"0123456789")
        };
        let ip = match (self.vip, self.client) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4::new(self.proto, s, d).packet(&l4),
            (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6::new(self.proto, s, d).packet(&l4),
            _ => unreachable!(),
        };
        let hlen = if self.vip.is_ipv4() { 20 } else { 40 };
        ip[..hlen + 8].to_vec()
    }
}

/// An untagged frame from the client to gw0.
fn eth(ip: &[u8]) -> Vec<u8> {
    let ethertype = if ip.first().map(|b| b >> 4) == Some(6) {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    ethernet(GW0_MAC, CLIENT_MAC, ethertype, ip)
}

fn eth_type(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(GW0_MAC, CLIENT_MAC, ethertype, payload)
}

fn tagged(tags: &[(u16, u16)], ip: &[u8]) -> Vec<u8> {
    let ethertype = if ip[0] >> 4 == 6 {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    ethernet_vlan(GW0_MAC, CLIENT_MAC, tags, ethertype, ip)
}

/// An `ICMPv4` error from a router on the return path to `flow`'s VIP, quoting the reply.
fn icmp4_error(flow: &Flow, ty: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    let msg = icmp4(ty, code, rest, &flow.quoted_reply());
    Ipv4::new(IPPROTO_ICMP, ROUTER4, v4(flow.vip)).packet(&msg)
}

fn icmp6_error(flow: &Flow, ty: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    let msg = icmp6(ROUTER6, v6(flow.vip), ty, code, rest, &flow.quoted_reply());
    Ipv6::new(IPPROTO_ICMPV6, ROUTER6, v6(flow.vip)).packet(&msg)
}

/// `ip` with its IPv4 total length field set to `len` (header checksum kept valid).
fn with_tot_len(mut ip: Vec<u8>, len: u16) -> Vec<u8> {
    ip[2..4].copy_from_slice(&len.to_be_bytes());
    refresh_ipv4_checksum(&mut ip);
    ip
}

fn refresh_ipv4_checksum(ip: &mut [u8]) {
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    ip[10..12].copy_from_slice(&[0, 0]);
    let end = hlen.clamp(20, ip.len());
    let c = sluice_tests::packet_builder::internet_checksum(&ip[..end]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------------------------
// The table

#[derive(Debug, Clone, Copy)]
enum Pin {
    /// Any backend of the VIP.
    Any,
    /// The backend a previous row remembered under this name.
    SameAs(&'static str),
    /// A backend other than that one.
    Other(&'static str),
    Is(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ct {
    Unchecked,
    /// After the row, conntrack maps the key to the chosen backend.
    Chosen,
    /// After the row, conntrack has no entry for the key.
    Absent,
}

/// Encapsulated towards a backend of `vip`: the verdict (TX / REDIRECT / PASS for an
/// unresolved neighbour / DROP without route or over the MTU) follows from the chosen backend
/// and the namespace's tables.
#[derive(Debug, Clone)]
struct Steer {
    vip: &'static str,
    /// The flow key whose hash picks the outer source (the client's flow).
    key: FlowKey,
    /// The inner IP packet, untouched.
    inner: Vec<u8>,
    pin: Pin,
    remember: Option<&'static str>,
    /// Counters besides the forwarding verdict.
    counters: Vec<Counter>,
    ct: Ct,
}

impl Steer {
    fn new(vip: &'static str, flow: &Flow, inner: Vec<u8>) -> Self {
        Self {
            vip,
            key: flow.key(),
            inner,
            pin: Pin::Any,
            remember: None,
            counters: vec![],
            ct: Ct::Unchecked,
        }
    }

    /// A packet that opens a flow: conntrack miss, new entry.
    fn opens(mut self) -> Self {
        self.counters = vec![Counter::ConntrackMiss, Counter::FlowCreated];
        self.ct = Ct::Chosen;
        self
    }

    /// A packet of a recorded flow.
    fn hit(mut self, flow: &'static str) -> Self {
        self.counters = vec![Counter::ConntrackHit];
        self.pin = Pin::SameAs(flow);
        self.ct = Ct::Chosen;
        self
    }

    /// A mid-stream packet of an unknown flow: steered by the table, not recorded.
    fn stray(mut self) -> Self {
        self.counters = vec![Counter::ConntrackMiss];
        self.ct = Ct::Absent;
        self
    }

    /// An ICMP error about a recorded flow.
    fn icmp_about(mut self, flow: &'static str) -> Self {
        self.counters = vec![Counter::ConntrackHit, Counter::IcmpSteered];
        self.pin = Pin::SameAs(flow);
        self
    }

    fn pin(mut self, pin: Pin) -> Self {
        self.pin = pin;
        self
    }

    fn remember(mut self, name: &'static str) -> Self {
        self.remember = Some(name);
        self
    }
}

#[derive(Debug, Clone)]
enum Output {
    Unchanged,
    Exact(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Expect {
    /// `BPF_PROG_TEST_RUN` itself refuses the input with this errno (frames < 14 bytes).
    KernelRejects(i32),
    Verdict {
        action: u32,
        output: Output,
        counters: Vec<Counter>,
    },
    Steer(Steer),
}

fn pass(counter: Counter) -> Expect {
    Expect::Verdict {
        action: XDP_PASS,
        output: Output::Unchanged,
        counters: vec![counter],
    }
}

#[derive(Debug, Clone, Copy)]
enum BackendSel {
    /// The backend a previous row remembered.
    OfFlow(&'static str),
}

/// Runs before a row.
#[derive(Debug, Clone, Copy)]
enum Step {
    SetState {
        vip: &'static str,
        backend: BackendSel,
        state: u8,
    },
}

#[derive(Debug, Clone)]
struct Row {
    name: &'static str,
    before: Option<Step>,
    ingress: &'static str,
    frame: Vec<u8>,
    expect: Expect,
}

fn row(name: &'static str, frame: Vec<u8>, expect: Expect) -> Row {
    Row {
        name,
        before: None,
        ingress: GW0,
        frame,
        expect,
    }
}

fn steer(name: &'static str, frame: Vec<u8>, s: Steer) -> Row {
    row(name, frame, Expect::Steer(s))
}

impl Row {
    fn on(mut self, ingress: &'static str) -> Self {
        self.ingress = ingress;
        self
    }

    fn before(mut self, step: Step) -> Self {
        self.before = Some(step);
        self
    }
}

/// The flows that the first rows open and later rows (ICMP errors, backend state) refer back
/// to by the names the rows remember them under.
#[derive(Clone, Copy)]
struct Flows {
    t4: Flow,
    u4: Flow,
    t6: Flow,
    u6: Flow,
}

impl Flows {
    fn new() -> Self {
        Self {
            t4: tcp4(40000, VIP4),
            u4: udp4(5353),
            t6: tcp6(40000, VIP6),
            u6: udp6(5353),
        }
    }
}

/// Every row of the `sluice_xdp` table, in the order they run: later groups refer to flows
/// that earlier ones opened.
fn gateway_rows() -> Vec<Row> {
    let flows = Flows::new();
    [
        flow_rows(flows),
        header_variant_rows(flows),
        fragment_rows(flows),
        icmp_error_rows(flows),
        not_for_sluice_rows(flows),
        hostile_rows(flows),
        verdict_rows(flows),
        backend_state_rows(flows),
    ]
    .concat()
}

/// A flow's life in conntrack (SYN, data, FIN, RST, strays) over IPv4 and IPv6, TCP and UDP.
fn flow_rows(flows: Flows) -> Vec<Row> {
    let Flows { t4, u4, t6, u6 } = flows;
    let mut rows = Vec::new();
    let mut add = |r: Row| rows.push(r);

    // --- IPv4 TCP: a flow's life --------------------------------------------------------------
    let p = t4.packet(TCP_SYN);
    add(steer(
        "v4 tcp SYN opens a flow",
        eth(&p),
        Steer::new("web4", &t4, p).opens().remember("t4"),
    ));
    let p = t4.packet(TCP_ACK);
    add(steer(
        "v4 tcp ACK after the SYN: conntrack hit, same backend",
        eth(&p),
        Steer::new("web4", &t4, p).hit("t4"),
    ));
    let p = t4.packet_with(TCP_PSH | TCP_ACK, b"GET / HTTP/1.0\r\n\r\n");
    add(steer(
        "v4 tcp data segment of the flow",
        eth(&p),
        Steer::new("web4", &t4, p).hit("t4"),
    ));
    let p = t4.packet(TCP_SYN);
    add(steer(
        "v4 tcp retransmitted SYN hits conntrack",
        eth(&p),
        Steer::new("web4", &t4, p).hit("t4"),
    ));
    let p = t4.packet(TCP_FIN | TCP_ACK);
    add(steer(
        "v4 tcp FIN of the flow",
        eth(&p),
        Steer::new("web4", &t4, p).hit("t4"),
    ));
    let p = t4.packet(TCP_RST);
    add(steer(
        "v4 tcp RST of the flow",
        eth(&p),
        Steer::new("web4", &t4, p).hit("t4"),
    ));
    let stray = t4.with_port(40001);
    let p = stray.packet(TCP_ACK);
    add(steer(
        "v4 tcp ACK without SYN: steered, not recorded",
        eth(&p),
        Steer::new("web4", &stray, p).stray().remember("stray4"),
    ));
    let p = stray.packet(TCP_ACK);
    add(steer(
        "v4 tcp second stray ACK: same backend, still not recorded",
        eth(&p),
        Steer::new("web4", &stray, p)
            .stray()
            .pin(Pin::SameAs("stray4")),
    ));
    let synack = t4.with_port(40002);
    let p = synack.packet(TCP_SYN | TCP_ACK);
    add(steer(
        "v4 tcp SYN|ACK does not open a flow",
        eth(&p),
        Steer::new("web4", &synack, p).stray(),
    ));

    // --- IPv4 UDP -----------------------------------------------------------------------------
    let p = u4.packet_with(0, b"query");
    add(steer(
        "v4 udp first datagram opens a flow",
        eth(&p),
        Steer::new("dns4", &u4, p).opens().remember("u4"),
    ));
    let p = u4.packet_with(0, b"query 2");
    add(steer(
        "v4 udp next datagram: conntrack hit",
        eth(&p),
        Steer::new("dns4", &u4, p).hit("u4"),
    ));

    // --- IPv6 ---------------------------------------------------------------------------------
    let p = t6.packet(TCP_SYN);
    add(steer(
        "v6 tcp SYN opens a flow",
        eth(&p),
        Steer::new("web6", &t6, p).opens().remember("t6"),
    ));
    let p = t6.packet(TCP_ACK);
    add(steer(
        "v6 tcp ACK after the SYN: same backend",
        eth(&p),
        Steer::new("web6", &t6, p).hit("t6"),
    ));
    let p = t6.packet(TCP_FIN | TCP_ACK);
    add(steer(
        "v6 tcp FIN of the flow",
        eth(&p),
        Steer::new("web6", &t6, p).hit("t6"),
    ));
    let stray6 = t6.with_port(40001);
    let p = stray6.packet(TCP_ACK);
    add(steer(
        "v6 tcp ACK without SYN: steered, not recorded",
        eth(&p),
        Steer::new("web6", &stray6, p).stray(),
    ));
    let p = u6.packet_with(0, b"query");
    add(steer(
        "v6 udp first datagram opens a flow",
        eth(&p),
        Steer::new("dns6", &u6, p).opens().remember("u6"),
    ));
    let p = u6.packet_with(0, b"query 2");
    add(steer(
        "v6 udp next datagram: conntrack hit",
        eth(&p),
        Steer::new("dns6", &u6, p).hit("u6"),
    ));
    let tc6 = t6.with_port(40002);
    let p = tc6
        .ip6(IPPROTO_TCP)
        .traffic_class(0xb9)
        .flow_label(0xabcde)
        .packet(&tc6.l4(TCP_SYN, b""));
    add(steer(
        "v6 traffic class copied to the outer header",
        eth(&p),
        Steer::new("web6", &tc6, p).opens(),
    ));

    rows
}

/// VLAN tags, IPv4 options and IPv6 extension headers in front of the transport header.
fn header_variant_rows(flows: Flows) -> Vec<Row> {
    use Counter::{PassBadL2, PassBadL3, PassNotIp};
    let Flows { t4, t6, .. } = flows;
    let mut rows = Vec::new();
    let mut add = |r: Row| rows.push(r);

    // --- VLAN tags: the output is untagged ------------------------------------------------------
    let vl = t4.with_port(40010);
    let p = vl.packet(TCP_SYN);
    add(steer(
        "v4 SYN with one 802.1Q tag",
        tagged(&[(ETH_P_8021Q, 100)], &p),
        Steer::new("web4", &vl, p).opens().remember("vlan4"),
    ));
    let p = vl.packet(TCP_ACK);
    add(steer(
        "v4 ACK with two tags (802.1ad + 802.1Q)",
        tagged(&[(ETH_P_8021AD, 200), (ETH_P_8021Q, 100)], &p),
        Steer::new("web4", &vl, p).hit("vlan4"),
    ));
    let vl6 = t6.with_port(40010);
    let p = vl6.packet(TCP_SYN);
    add(steer(
        "v6 SYN with two tags (802.1Q + 802.1Q)",
        tagged(&[(ETH_P_8021Q, 300), (ETH_P_8021Q, 7)], &p),
        Steer::new("web6", &vl6, p).opens(),
    ));
    let p = vl.packet(TCP_ACK);
    add(row(
        "three VLAN tags",
        tagged(&[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)], &p),
        pass(PassBadL2),
    ));
    add(row(
        "VLAN-tagged ARP",
        ethernet_vlan(
            GW0_MAC,
            CLIENT_MAC,
            &[(ETH_P_8021Q, 100)],
            ETH_P_ARP,
            &arp_request(CLIENT_MAC, CLIENT4, VIP4),
        ),
        pass(PassNotIp),
    ));

    // --- IPv4 header variants -------------------------------------------------------------------
    let o = t4.with_port(40020);
    let p = o.ip4().options(&[1, 1, 1, 0]).packet(&o.l4(TCP_SYN, b""));
    add(steer(
        "v4 with options, IHL 6",
        eth(&p),
        Steer::new("web4", &o, p).opens(),
    ));
    let o = t4.with_port(40021);
    let mut rr = vec![7, 39, 4];
    rr.resize(39, 0);
    rr.push(0);
    let p = o.ip4().options(&rr).packet(&o.l4(TCP_SYN, b""));
    add(steer(
        "v4 with 40 bytes of options, IHL 15",
        eth(&p),
        Steer::new("web4", &o, p).opens(),
    ));
    let o = t4.with_port(40022);
    let p = o.ip4().tos(0xb8).packet(&o.l4(TCP_SYN, b""));
    add(steer(
        "v4 TOS copied to the outer header",
        eth(&p),
        Steer::new("web4", &o, p).opens(),
    ));
    let o = t4.with_port(40023);
    let p = o.ip4().frag(0).id(0).packet(&o.l4(TCP_SYN, b""));
    add(steer(
        "v4 without DF, id 0: not a fragment",
        eth(&p),
        Steer::new("web4", &o, p).opens(),
    ));

    // --- IPv6 extension headers -----------------------------------------------------------------
    let ext = |port: u16, chain: &[u8], tcp_flags: u8| {
        // `chain`: the extension header kinds, in order, followed by TCP.
        let f = t6.with_port(port);
        let mut payload = Vec::new();
        for (i, &kind) in chain.iter().enumerate() {
            let next = chain.get(i + 1).copied().unwrap_or(IPPROTO_TCP);
            payload.extend(ext_header(kind, next, if i % 2 == 0 { 8 } else { 16 }));
        }
        payload.extend(f.l4(tcp_flags, b""));
        let first = chain.first().copied().unwrap_or(IPPROTO_TCP);
        (f, f.ip6(first).packet(&payload))
    };
    let (f, p) = ext(40030, &[IPPROTO_HOPOPTS], TCP_SYN);
    add(steer(
        "v6 hop-by-hop options then TCP",
        eth(&p),
        Steer::new("web6", &f, p).opens(),
    ));
    let (f, p) = ext(40031, &[IPPROTO_DSTOPTS], TCP_SYN);
    add(steer(
        "v6 destination options then TCP",
        eth(&p),
        Steer::new("web6", &f, p).opens(),
    ));
    let (f, p) = ext(40032, &[IPPROTO_ROUTING], TCP_SYN);
    add(steer(
        "v6 routing header then TCP",
        eth(&p),
        Steer::new("web6", &f, p).opens(),
    ));
    let (f, p) = ext(
        40033,
        &[
            IPPROTO_HOPOPTS,
            IPPROTO_DSTOPTS,
            IPPROTO_ROUTING,
            IPPROTO_DSTOPTS,
        ],
        TCP_SYN,
    );
    add(steer(
        "v6 four extension headers (the most followed)",
        eth(&p),
        Steer::new("web6", &f, p).opens(),
    ));
    let (_, p) = ext(
        40034,
        &[
            IPPROTO_HOPOPTS,
            IPPROTO_DSTOPTS,
            IPPROTO_ROUTING,
            IPPROTO_DSTOPTS,
            IPPROTO_DSTOPTS,
        ],
        TCP_SYN,
    );
    add(row(
        "v6 five extension headers: too many",
        eth(&p),
        pass(PassBadL3),
    ));
    let f = t6.with_port(40035);
    let mut ah = vec![IPPROTO_TCP, 4, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 1];
    ah.extend([0xaa; 12]);
    ah.extend(f.l4(TCP_SYN, b""));
    let p = f.ip6(51).packet(&ah);
    add(steer(
        "v6 authentication header then TCP",
        eth(&p),
        Steer::new("web6", &f, p).opens(),
    ));
    let f = t6.with_port(40036);
    let mut e = ext_header(IPPROTO_HOPOPTS, IPPROTO_TCP, 8);
    e[1] = 20; // claims 168 bytes
    e.extend(f.l4(TCP_SYN, b""));
    let p = f.ip6(IPPROTO_HOPOPTS).packet(&e);
    add(row(
        "v6 extension header longer than the payload",
        eth(&p),
        pass(PassBadL3),
    ));

    rows
}

/// Fragments: never steered, whatever their offset or extension headers.
fn fragment_rows(flows: Flows) -> Vec<Row> {
    use Counter::PassFragment;
    let Flows { t4, t6, .. } = flows;
    let mut rows = Vec::new();
    let mut add = |r: Row| rows.push(r);

    // --- Fragments are never steered ------------------------------------------------------------
    let fr = t4.with_port(40040);
    let l4 = fr.l4(TCP_SYN, &[0x55; 32]);
    add(row(
        "v4 first fragment (MF set)",
        eth(&fr.ip4().frag(IP_MF).packet(&l4[..24])),
        pass(PassFragment),
    ));
    add(row(
        "v4 middle fragment (MF, offset 3)",
        eth(&fr.ip4().frag(IP_MF | 3).packet(&l4[24..48])),
        pass(PassFragment),
    ));
    add(row(
        "v4 last fragment (offset 185, no MF)",
        eth(&fr.ip4().frag(185).packet(&l4)),
        pass(PassFragment),
    ));
    let fr6 = t6.with_port(40040);
    let mut fp = fragment_header(IPPROTO_TCP, 0, true, 0xdead_beef);
    fp.extend(fr6.l4(TCP_SYN, b""));
    add(row(
        "v6 fragment header (first fragment)",
        eth(&fr6.ip6(IPPROTO_FRAGMENT).packet(&fp)),
        pass(PassFragment),
    ));
    let mut fp = ext_header(IPPROTO_HOPOPTS, IPPROTO_FRAGMENT, 8);
    fp.extend(fragment_header(IPPROTO_TCP, 100, false, 0xdead_beef));
    fp.extend([0x55; 16]);
    add(row(
        "v6 fragment header after hop-by-hop (later fragment)",
        eth(&fr6.ip6(IPPROTO_HOPOPTS).packet(&fp)),
        pass(PassFragment),
    ));

    rows
}

/// ICMP errors about VIP flows follow the flow (RFC 792, RFC 4443).
fn icmp_error_rows(flows: Flows) -> Vec<Row> {
    use Counter::{ConntrackMiss, PassBadL4, PassIcmpNotVip, PassOtherL4};
    let Flows { t4, u4, t6, u6 } = flows;
    let mut rows = Vec::new();
    let mut add = |r: Row| rows.push(r);

    // --- ICMP errors about VIP flows follow the flow ------------------------------------------------
    let p = icmp4_error(&t4, 3, 4, [0, 0, 0x05, 0x78]);
    add(steer(
        "icmp4 frag-needed about the v4 tcp flow: its backend",
        eth(&p),
        Steer::new("web4", &t4, p).icmp_about("t4"),
    ));
    let p = icmp4_error(&t4, 11, 0, [0; 4]);
    add(steer(
        "icmp4 time-exceeded about the v4 tcp flow",
        eth(&p),
        Steer::new("web4", &t4, p).icmp_about("t4"),
    ));
    let p = icmp4_error(&u4, 3, 3, [0; 4]);
    add(steer(
        "icmp4 port-unreachable about the v4 udp flow",
        eth(&p),
        Steer::new("dns4", &u4, p).icmp_about("u4"),
    ));
    let p = icmp6_error(&t6, 2, 0, 1280u32.to_be_bytes());
    add(steer(
        "icmpv6 packet-too-big about the v6 tcp flow: its backend",
        eth(&p),
        Steer::new("web6", &t6, p).icmp_about("t6"),
    ));
    let p = icmp6_error(&u6, 1, 4, [0; 4]);
    add(steer(
        "icmpv6 port-unreachable about the v6 udp flow",
        eth(&p),
        Steer::new("dns6", &u6, p).icmp_about("u6"),
    ));
    let unknown = t4.with_port(40050);
    let p = icmp4_error(&unknown, 3, 4, [0, 0, 0x05, 0x78]);
    let s = Steer {
        counters: vec![ConntrackMiss, Counter::IcmpSteered],
        ct: Ct::Absent,
        ..Steer::new("web4", &unknown, p.clone())
    };
    add(steer(
        "icmp4 error about an unrecorded VIP flow: by the table, not recorded",
        eth(&p),
        s,
    ));
    let not_vip = Flow {
        vip: NOT_VIP4.into(),
        ..t4
    };
    add(row(
        "icmp4 error about a non-VIP flow",
        eth(&icmp4_error(&not_vip, 3, 4, [0, 0, 5, 0x78])),
        pass(PassIcmpNotVip),
    ));
    let other_port = Flow { vport: 81, ..t4 };
    add(row(
        "icmp4 error quoting the VIP on a port without service",
        eth(&icmp4_error(&other_port, 3, 4, [0, 0, 5, 0x78])),
        pass(PassIcmpNotVip),
    ));
    let not_vip6 = Flow {
        vip: NOT_VIP6.into(),
        ..t6
    };
    add(row(
        "icmpv6 packet-too-big about a non-VIP flow",
        eth(&icmp6_error(&not_vip6, 2, 0, 1280u32.to_be_bytes())),
        pass(PassIcmpNotVip),
    ));
    let short_quote = icmp4(3, 4, [0, 0, 5, 0x78], &t4.quoted_reply()[..12]);
    add(row(
        "icmp4 error with a truncated quote",
        eth(&Ipv4::new(IPPROTO_ICMP, ROUTER4, VIP4).packet(&short_quote)),
        pass(PassIcmpNotVip),
    ));
    add(row(
        "icmp4 with a 1-byte ICMP header",
        eth(&Ipv4::new(IPPROTO_ICMP, ROUTER4, VIP4).packet(&[3])),
        pass(PassBadL4),
    ));
    let mut quote = t4.quoted_reply();
    quote[0] = 0x44;
    add(row(
        "icmp4 error quoting a header with IHL 4",
        eth(&Ipv4::new(IPPROTO_ICMP, ROUTER4, VIP4).packet(&icmp4(3, 4, [0, 0, 5, 0x78], &quote))),
        pass(PassIcmpNotVip),
    ));
    let echo = icmp4(8, 0, [0x12, 0x34, 0, 1], b"ping");
    add(row(
        "icmp4 echo request to the VIP",
        eth(&Ipv4::new(IPPROTO_ICMP, CLIENT4, VIP4).packet(&echo)),
        pass(PassOtherL4),
    ));
    let echo6 = icmp6(CLIENT6, VIP6, 128, 0, [0x12, 0x34, 0, 1], b"ping");
    add(row(
        "icmpv6 echo request to the VIP",
        eth(&Ipv6::new(IPPROTO_ICMPV6, CLIENT6, VIP6).packet(&echo6)),
        pass(PassOtherL4),
    ));
    let mut ns_body = VIP6.octets().to_vec();
    ns_body.extend([1, 1, 0x02, 0, 0, 0, 0, 0xc1]);
    let sol = icmp6(CLIENT6, VIP6, 135, 0, [0; 4], &ns_body);
    add(row(
        "icmpv6 neighbour solicitation",
        eth(&Ipv6::new(IPPROTO_ICMPV6, CLIENT6, VIP6).packet(&sol)),
        pass(PassOtherL4),
    ));

    rows
}

/// Traffic that is not for a VIP passes to the stack untouched.
fn not_for_sluice_rows(flows: Flows) -> Vec<Row> {
    use Counter::{PassNotIp, PassNotVip, PassOtherL4};
    let Flows { t4, .. } = flows;
    let mut rows = Vec::new();
    let mut add = |r: Row| rows.push(r);

    // --- Not for sluice ---------------------------------------------------------------------------
    add(row(
        "v4 to a non-VIP address",
        eth(&tcp4(40060, NOT_VIP4).packet(TCP_SYN)),
        pass(PassNotVip),
    ));
    add(row(
        "v4 to the VIP on a port without service",
        eth(&Flow { vport: 81, ..t4 }.packet(TCP_SYN)),
        pass(PassNotVip),
    ));
    add(row(
        "v4 udp to a tcp-only VIP port",
        eth(&Flow {
            proto: IPPROTO_UDP,
            ..t4
        }
        .packet(0)),
        pass(PassNotVip),
    ));
    add(row(
        "v6 to a non-VIP address",
        eth(&tcp6(40060, NOT_VIP6).packet(TCP_SYN)),
        pass(PassNotVip),
    ));
    add(row(
        "ARP request for the VIP",
        eth_type(ETH_P_ARP, &arp_request(CLIENT_MAC, CLIENT4, VIP4)),
        pass(PassNotIp),
    ));
    add(row(
        "LLDP frame",
        ethernet(
            [0x01, 0x80, 0xc2, 0, 0, 0x0e],
            CLIENT_MAC,
            0x88cc,
            &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1],
        ),
        pass(PassNotIp),
    ));
    add(row(
        "SCTP to the VIP",
        eth(&Ipv4::new(IPPROTO_SCTP, CLIENT4, VIP4)
            .packet(&[0x9c, 0x40, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0])),
        pass(PassOtherL4),
    ));
    add(row(
        "GRE to the VIP",
        eth(&Ipv4::new(IPPROTO_GRE, CLIENT4, VIP4).packet(&[0, 0, 0x08, 0])),
        pass(PassOtherL4),
    ));
    add(row(
        "v6 no-next-header to the VIP",
        eth(&Ipv6::new(IPPROTO_NONE, CLIENT6, VIP6).packet(&[])),
        pass(PassOtherL4),
    ));

    rows
}

/// Truncated, inconsistent and hostile frames: passed or dropped, never steered.
fn hostile_rows(flows: Flows) -> Vec<Row> {
    use Counter::{PassBadL2, PassBadL3, PassBadL4};
    let Flows { t4, u4, t6, u6 } = flows;
    let mut rows = Vec::new();
    let mut add = |r: Row| rows.push(r);

    // --- Hostile input -------------------------------------------------------------------------------
    let einval = Expect::KernelRejects(libc::EINVAL);
    add(row(
        "empty frame (kernel refuses < 14 bytes)",
        vec![],
        einval.clone(),
    ));
    add(row(
        "1-byte frame (kernel refuses < 14 bytes)",
        vec![0x02],
        einval.clone(),
    ));
    add(row(
        "13-byte frame (kernel refuses < 14 bytes)",
        eth_type(ETH_P_IP, &[])[..13].to_vec(),
        einval,
    ));
    add(row(
        "14-byte IPv4 frame without IP header",
        eth_type(ETH_P_IP, &[]),
        pass(PassBadL3),
    ));
    add(row(
        "14-byte IPv6 frame without IP header",
        eth_type(ETH_P_IPV6, &[]),
        pass(PassBadL3),
    ));
    add(row(
        "truncated Ethernet: 802.1Q ethertype, no tag",
        eth_type(ETH_P_8021Q, &[]),
        pass(PassBadL2),
    ));
    add(row(
        "truncated Ethernet: tag without inner ethertype",
        eth_type(ETH_P_8021Q, &[0, 100]),
        pass(PassBadL2),
    ));
    let full = t4.packet(TCP_SYN);
    add(row(
        "truncated IPv4 header (10 of 20 bytes)",
        eth(&full[..10]),
        pass(PassBadL3),
    ));
    let full6 = t6.packet(TCP_SYN);
    add(row(
        "truncated IPv6 header (30 of 40 bytes)",
        eth(&full6[..30]),
        pass(PassBadL3),
    ));
    let mut bad = full.clone();
    bad[0] = 0x44;
    refresh_ipv4_checksum(&mut bad);
    add(row("IPv4 IHL 4", eth(&bad), pass(PassBadL3)));
    let mut bad = full.clone();
    bad[0] = 0x40;
    add(row("IPv4 IHL 0", eth(&bad), pass(PassBadL3)));
    add(row(
        "IPv4 total length beyond the frame",
        eth(&with_tot_len(full.clone(), 41)),
        pass(PassBadL3),
    ));
    add(row(
        "IPv4 total length below the header (19)",
        eth(&with_tot_len(full.clone(), 19)),
        pass(PassBadL3),
    ));
    let o = t4.with_port(40070);
    let p = o.ip4().options(&[1; 40]).packet(&o.l4(TCP_SYN, b""));
    add(row(
        "IPv4 IHL 15, frame ends inside the options",
        eth(&p[..50]),
        pass(PassBadL3),
    ));
    let mut bad = full.clone();
    bad[0] = 0x65;
    add(row(
        "IP version 6 in an IPv4 frame",
        eth(&bad),
        pass(PassBadL3),
    ));
    add(row(
        "IP version 4 in an IPv6 frame",
        eth_type(ETH_P_IPV6, &{
            let mut b = full6.clone();
            b[0] = 0x40 | (b[0] & 0x0f);
            b
        }),
        pass(PassBadL3),
    ));
    let mut bad = full6.clone();
    bad[4..6].copy_from_slice(&21u16.to_be_bytes());
    add(row(
        "IPv6 payload length beyond the frame",
        eth(&bad),
        pass(PassBadL3),
    ));
    add(row(
        "truncated TCP: IP length covers 10 bytes of it",
        eth(&with_tot_len(full[..30].to_vec(), 30)),
        pass(PassBadL4),
    ));
    add(row(
        "truncated TCP: frame ends, IP length claims all",
        eth(&full[..30]),
        pass(PassBadL3),
    ));
    let u = u4.packet_with(0, b"");
    add(row(
        "truncated UDP: IP length covers 4 bytes of it",
        eth(&with_tot_len(u[..24].to_vec(), 24)),
        pass(PassBadL4),
    ));
    add(row(
        "TCP header outside the IP total length (in the padding)",
        pad_to_min(eth(&with_tot_len(full.clone(), 28))),
        pass(PassBadL4),
    ));
    let mut bad = full6.clone();
    bad[4..6].copy_from_slice(&12u16.to_be_bytes());
    add(row(
        "v6 TCP header outside the payload length",
        eth(&bad),
        pass(PassBadL4),
    ));
    let mut bad = u6.packet_with(0, b"");
    bad[4..6].copy_from_slice(&6u16.to_be_bytes());
    add(row(
        "v6 truncated UDP: payload length 6",
        eth(&bad),
        pass(PassBadL4),
    ));

    rows
}

/// The forwarding verdict follows from the chosen backend and the namespace's tables.
fn verdict_rows(flows: Flows) -> Vec<Row> {
    use Counter::{ConntrackMiss, DropNoBackend};
    let Flows { t4, .. } = flows;
    let mut rows = Vec::new();
    let mut add = |r: Row| rows.push(r);

    // --- Forwarding verdicts ------------------------------------------------------------------------
    let f = tcp4(40100, TX_VIP4);
    let p = f.packet(TCP_SYN);
    add(steer(
        "backend behind the ingress interface: XDP_TX",
        eth(&p),
        Steer::new("tx4", &f, p)
            .opens()
            .pin(Pin::Is(NEIGH0_V4.into())),
    ));
    let f = tcp4(40101, REDIR_VIP4);
    let p = f.packet(TCP_SYN);
    add(steer(
        "backend behind another interface: XDP_REDIRECT",
        eth(&p),
        Steer::new("redir4", &f, p)
            .opens()
            .pin(Pin::Is(NEIGH1_V4.into()))
            .remember("r4"),
    ));
    let p = f.packet(TCP_ACK);
    add(steer(
        "same flow received on gw1: XDP_TX",
        eth(&p),
        Steer::new("redir4", &f, p).hit("r4"),
    )
    .on(GW1));
    let f = tcp6(40100, TX_VIP6);
    let p = f.packet(TCP_SYN);
    add(steer(
        "v6 backend behind the ingress interface: XDP_TX",
        eth(&p),
        Steer::new("tx6", &f, p)
            .opens()
            .pin(Pin::Is(NEIGH0_V6.into())),
    ));
    let f = tcp6(40101, REDIR_VIP6);
    let p = f.packet(TCP_SYN);
    add(steer(
        "v6 backend behind another interface: XDP_REDIRECT",
        eth(&p),
        Steer::new("redir6", &f, p)
            .opens()
            .pin(Pin::Is(NEIGH1_V6.into())),
    ));
    let f = tcp4(40102, V4IN6_VIP4);
    let p = f.ip4().tos(0x28).packet(&f.l4(TCP_SYN, b""));
    add(steer(
        "4in6: v4 VIP, v6 backend",
        eth(&p),
        Steer::new("v4in6", &f, p)
            .opens()
            .pin(Pin::Is(NEIGH1_V6.into())),
    ));
    let f = tcp6(40102, V6IN4_VIP6);
    let p = f
        .ip6(IPPROTO_TCP)
        .traffic_class(0x28)
        .packet(&f.l4(TCP_SYN, b""));
    add(steer(
        "6in4: v6 VIP, v4 backend",
        eth(&p),
        Steer::new("v6in4", &f, p)
            .opens()
            .pin(Pin::Is(NEIGH0_V4.into())),
    ));
    let f = tcp4(40103, NONEIGH_VIP4);
    let p = f.packet(TCP_SYN);
    add(steer(
        "unresolved neighbour: XDP_PASS, encapsulated, original MACs",
        eth(&p),
        Steer::new("noneigh4", &f, p)
            .opens()
            .pin(Pin::Is(UNRESOLVED_V4.into())),
    ));
    let f = tcp4(40104, NOROUTE_VIP4);
    let p = f.packet(TCP_SYN);
    add(steer(
        "no route to the backend: XDP_DROP",
        eth(&p),
        Steer::new("noroute4", &f, p)
            .opens()
            .pin(Pin::Is(UNROUTABLE_V4.into())),
    ));
    add(row(
        "VIP without backends: XDP_DROP",
        eth(&tcp4(40105, EMPTY_VIP4).packet(TCP_SYN)),
        Expect::Verdict {
            action: XDP_DROP,
            output: Output::Unchanged,
            counters: vec![ConntrackMiss, DropNoBackend],
        },
    ));
    let f = tcp4(40106, TX_VIP4);
    let p = f.packet_with(TCP_SYN, &[0x61; MTU - 20 - 20 - 20]);
    add(steer(
        "outer packet exactly at the MTU: sent",
        eth(&p),
        Steer::new("tx4", &f, p).opens(),
    ));
    let f = tcp4(40107, TX_VIP4);
    let p = f.packet_with(TCP_SYN, &[0x62; MTU - 20 - 20 - 20 + 1]);
    add(steer(
        "outer packet one byte over the MTU: XDP_DROP",
        eth(&p),
        Steer::new("tx4", &f, p).opens(),
    ));
    let f = t4.with_port(40108);
    let p = f.packet(TCP_SYN);
    add(steer(
        "minimum-size frame: Ethernet padding is not tunnelled",
        pad_to_min(eth(&p)),
        Steer::new("web4", &f, p).opens(),
    ));

    rows
}

/// A backend goes down, another drains: established flows stay, new ones avoid them.
fn backend_state_rows(flows: Flows) -> Vec<Row> {
    let Flows { t4, u4, .. } = flows;
    let mut rows = Vec::new();
    let mut add = |r: Row| rows.push(r);

    // --- A backend goes down; another drains -------------------------------------------------------
    let down = Step::SetState {
        vip: "web4",
        backend: BackendSel::OfFlow("t4"),
        state: BACKEND_DOWN,
    };
    let p = t4.packet(TCP_ACK);
    add(steer(
        "established flow keeps its backend after it went down",
        eth(&p),
        Steer::new("web4", &t4, p).hit("t4"),
    )
    .before(down));
    for (name, port) in [
        ("new SYN avoids the down backend (1)", 41000),
        ("new SYN avoids the down backend (2)", 41001),
        ("new SYN avoids the down backend (3)", 41002),
    ] {
        let f = t4.with_port(port);
        let p = f.packet(TCP_SYN);
        add(steer(
            name,
            eth(&p),
            Steer::new("web4", &f, p).opens().pin(Pin::Other("t4")),
        ));
    }
    let p = t4.packet(TCP_SYN);
    add(steer(
        "SYN reusing the tuple of a flow on the down backend: steered afresh",
        eth(&p),
        Steer::new("web4", &t4, p)
            .opens()
            .pin(Pin::Other("t4"))
            .remember("t4 again"),
    ));
    let p = t4.packet(TCP_ACK);
    add(steer(
        "its ACK follows the new entry",
        eth(&p),
        Steer::new("web4", &t4, p).hit("t4 again"),
    ));
    let drain = Step::SetState {
        vip: "dns4",
        backend: BackendSel::OfFlow("u4"),
        state: BACKEND_DRAINING,
    };
    let p = u4.packet_with(0, b"query 3");
    add(steer(
        "udp flow keeps its draining backend",
        eth(&p),
        Steer::new("dns4", &u4, p).hit("u4"),
    )
    .before(drain));
    let f = u4.with_port(5400);
    let p = f.packet_with(0, b"query");
    add(steer(
        "new udp flow avoids the draining backend",
        eth(&p),
        Steer::new("dns4", &f, p).opens().pin(Pin::Other("u4")),
    ));

    rows
}

// ---------------------------------------------------------------------------------------------
// Running the table

struct Runner<'a> {
    env: &'a mut PacketEnv,
    /// Backends remembered by name for later rows.
    chosen: HashMap<&'static str, IpAddr>,
    /// Every backend each VIP steered to.
    seen: BTreeMap<&'static str, BTreeSet<IpAddr>>,
}

impl Runner<'_> {
    fn step(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::SetState {
                vip,
                backend: BackendSel::OfFlow(flow),
                state,
            } => {
                let addr = *self
                    .chosen
                    .get(flow)
                    .ok_or(format!("no backend remembered for {flow}"))?;
                self.env
                    .dp
                    .set_backend_state(vip, addr, state)
                    .map_err(|e| format!("set_backend_state: {e}"))
            }
        }
    }

    fn row(&mut self, row: &Row) -> Result<(), String> {
        if let Some(step) = row.before {
            self.step(step)?;
        }
        let vip_before = match &row.expect {
            Expect::Steer(s) => Some(self.env.dp.vip_traffic(s.vip).map_err(|e| e.to_string())?),
            _ => None,
        };
        let before = self.env.counters().map_err(|e| format!("{e:#}"))?;
        let result = self.env.run_on(row.ingress, &row.frame);
        let after = self.env.counters().map_err(|e| format!("{e:#}"))?;
        let got = deltas(&before, &after);
        let check_counters = |want: BTreeMap<&'static str, i128>| {
            if got == want {
                Ok(())
            } else {
                Err(format!("counter deltas {got:?}, want {want:?}"))
            }
        };
        match &row.expect {
            Expect::KernelRejects(want) => match result {
                Ok((action, _)) => Err(format!("kernel ran it: {}", action_name(action))),
                Err(e) if errno(&e) == Some(*want) => check_counters(BTreeMap::new()),
                Err(e) => Err(format!("wrong error: {e:#}")),
            },
            Expect::Verdict {
                action,
                output,
                counters,
            } => {
                let (got_action, out) = result.map_err(|e| format!("test run failed: {e:#}"))?;
                let mut errors = Vec::new();
                errors.extend(action_mismatch(got_action, *action));
                let want_out = match output {
                    Output::Unchanged => &row.frame,
                    Output::Exact(b) => b,
                };
                if &out != want_out {
                    errors.push(format!("output differs: {}", diff(&out, want_out)));
                }
                if let Err(e) = check_counters(expected_deltas(counters.iter().map(|c| c.name()))) {
                    errors.push(e);
                }
                row_result(&errors)
            }
            Expect::Steer(s) => {
                let (got_action, out) = result.map_err(|e| format!("test run failed: {e:#}"))?;
                self.check_steer(row, s, got_action, &out, &got)?;
                let vip_after = self.env.dp.vip_traffic(s.vip).map_err(|e| e.to_string())?;
                let vb = vip_before.unwrap_or_default();
                let frame_len = u64::try_from(row.frame.len()).unwrap_or(u64::MAX);
                if vip_after.packets != vb.packets + 1 || vip_after.bytes != vb.bytes + frame_len {
                    return Err(format!(
                        "VIP {} traffic went from {vb:?} to {vip_after:?}",
                        s.vip
                    ));
                }
                Ok(())
            }
        }
    }

    fn check_steer(
        &mut self,
        row: &Row,
        s: &Steer,
        action: u32,
        out: &[u8],
        got: &BTreeMap<&'static str, i128>,
    ) -> Result<(), String> {
        let Some(outer_dst) = tunnel_destination(out) else {
            return Err(format!(
                "{}, output is not a tunnel frame: {}",
                action_name(action),
                diff(out, &row.frame)
            ));
        };
        let vip = self
            .env
            .config
            .vips
            .iter()
            .find(|v| v.name == s.vip)
            .ok_or("unknown VIP")?;
        if !vip.backends.iter().any(|b| b.address == outer_dst) {
            return Err(format!(
                "outer destination {outer_dst} is not a backend of {}",
                s.vip
            ));
        }
        let mut errors = Vec::new();
        let remembered = |n: &str| {
            self.chosen
                .get(n)
                .copied()
                .ok_or(format!("nothing remembered as {n}"))
        };
        match s.pin {
            Pin::Any => {}
            Pin::Is(a) if a == outer_dst => {}
            Pin::Is(a) => errors.push(format!("went to {outer_dst}, want {a}")),
            Pin::SameAs(n) => {
                let want = remembered(n)?;
                if want != outer_dst {
                    errors.push(format!("went to {outer_dst}, want {want} (as {n})"));
                }
            }
            Pin::Other(n) => {
                if remembered(n)? == outer_dst {
                    errors.push(format!(
                        "went to {outer_dst}, the backend of {n}; want another"
                    ));
                }
            }
        }

        let (verdict, more) = check_forward(
            &row.frame,
            row.ingress,
            &s.key,
            &s.inner,
            outer_dst,
            action,
            out,
        );
        errors.extend(more);
        let want_counters = expected_deltas(s.counters.iter().chain([&verdict]).map(|c| c.name()));
        errors.extend(counters_mismatch(got, &want_counters));
        let ct = self.env.dp.flow_backend(&s.key);
        match s.ct {
            Ct::Unchecked => {}
            Ct::Absent if ct.is_none() => {}
            Ct::Absent => errors.push(format!(
                "conntrack has an entry (backend id {ct:?}), want none"
            )),
            Ct::Chosen => {
                let id = self.env.dp.backend_id(s.vip, outer_dst);
                if ct.is_none() || ct != id {
                    errors.push(format!(
                        "conntrack backend id {ct:?}, want {id:?} ({outer_dst})"
                    ));
                }
            }
        }
        if let Some(name) = s.remember {
            self.chosen.insert(name, outer_dst);
        }
        self.seen.entry(s.vip).or_default().insert(outer_dst);
        row_result(&errors)
    }
}

#[test]
fn sluice_xdp_table() {
    require_root();
    let ns_name = "slpkt";
    let results = {
        let mut env = PacketEnv::new(
            ns_name,
            &Options::unpinned(4096, 4 * 251 * 8),
            &gateway_config(),
        )
        .expect("set up the namespace and sluice_xdp");
        let rows = gateway_rows();
        let names: std::collections::HashSet<_> = rows.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), rows.len(), "row names must be unique");
        let mut runner = Runner {
            env: &mut env,
            chosen: HashMap::new(),
            seen: BTreeMap::new(),
        };
        let mut results: Vec<(&str, Result<(), String>)> =
            rows.iter().map(|r| (r.name, runner.row(r))).collect();
        // The rows of the two-backend VIPs must have reached both backends (and so both
        // XDP_TX and XDP_REDIRECT through Maglev's choice, not only through pinned VIPs).
        for vip in ["web4", "web6", "dns4"] {
            let seen = runner.seen.get(vip).map_or(0, BTreeSet::len);
            let name = match vip {
                "web4" => "web4 flows reached both backends",
                "web6" => "web6 flows reached both backends",
                _ => "dns4 flows reached both backends",
            };
            results.push((
                name,
                if seen == 2 {
                    Ok(())
                } else {
                    Err(format!("{seen} backend(s) seen"))
                },
            ));
        }
        results
    };
    assert!(!NetNs::exists(ns_name), "namespace {ns_name} left behind");
    report("sluice_xdp", &results);
}

// ---------------------------------------------------------------------------------------------
// sluice_decap

struct DecapRow {
    name: &'static str,
    frame: Vec<u8>,
    /// `None`: the kernel refuses the frame (EINVAL).
    action: Option<u32>,
    output: Output,
    counter: &'static str,
}

fn decap_row(
    name: &'static str,
    frame: Vec<u8>,
    output: Output,
    counter: lb_common::DecapCounter,
) -> DecapRow {
    DecapRow {
        name,
        frame,
        action: Some(XDP_PASS),
        output,
        counter: counter.name(),
    }
}

#[allow(clippy::too_many_lines)]
fn decap_rows() -> Vec<DecapRow> {
    use lb_common::DecapCounter::{Decapsulated, PassMalformed, PassNotLocalVip, PassNotTunnel};
    const GW_MAC: Mac = [0x02, 0, 0, 0, 0x00, 0x01];
    const BACKEND_MAC: Mac = [0x02, 0, 0, 0, 0x10, 0x02];
    let outer4_src = Ipv4Addr::new(198, 19, 255, 77);
    let outer6_src: Ipv6Addr = "2001:db8:ffff::4d".parse().expect("address");
    let tunnel = |src: IpAddr, dst: IpAddr, inner: &[u8]| {
        Tunnel {
            dst_mac: BACKEND_MAC,
            src_mac: GW_MAC,
            src,
            dst,
            tos: ip_tos(inner),
            flow_label: 0x4d,
        }
        .frame(inner)
    };
    let inner_frame = |inner: &[u8]| {
        let ethertype = if inner[0] >> 4 == 6 {
            ETH_P_IPV6
        } else {
            ETH_P_IP
        };
        ethernet(BACKEND_MAC, GW_MAC, ethertype, inner)
    };
    let b4: IpAddr = NEIGH0_V4.into();
    let b6: IpAddr = NEIGH0_V6.into();
    let inner4 = tcp4(40000, VIP4).packet_with(TCP_PSH | TCP_ACK, b"hello");
    let inner6 = tcp6(40000, VIP6).packet_with(TCP_PSH | TCP_ACK, b"hello");
    let other4 = tcp4(40000, NOT_VIP4).packet(TCP_SYN);
    let other6 = tcp6(40000, NOT_VIP6).packet(TCP_SYN);
    let ipip = tunnel(outer4_src.into(), b4, &inner4);
    let mut rows = vec![
        decap_row(
            "IPIP to a local VIP: the inner frame",
            ipip.clone(),
            Output::Exact(inner_frame(&inner4)),
            Decapsulated,
        ),
        decap_row(
            "IP6IP6 to a local VIP: the inner frame",
            tunnel(outer6_src.into(), b6, &inner6),
            Output::Exact(inner_frame(&inner6)),
            Decapsulated,
        ),
        decap_row(
            "4in6 to a local VIP",
            tunnel(outer6_src.into(), b6, &inner4),
            Output::Exact(inner_frame(&inner4)),
            Decapsulated,
        ),
        decap_row(
            "6in4 to a local VIP",
            tunnel(outer4_src.into(), b4, &inner6),
            Output::Exact(inner_frame(&inner6)),
            Decapsulated,
        ),
        decap_row(
            "IPIP with outer IPv4 options (IHL 6)",
            ethernet(
                BACKEND_MAC,
                GW_MAC,
                ETH_P_IP,
                &Ipv4::new(IPPROTO_IPIP, outer4_src, NEIGH0_V4)
                    .options(&[1, 1, 1, 0])
                    .packet(&inner4),
            ),
            Output::Exact(inner_frame(&inner4)),
            Decapsulated,
        ),
        decap_row(
            "IPIP to a non-local VIP: unchanged",
            tunnel(outer4_src.into(), b4, &other4),
            Output::Unchanged,
            PassNotLocalVip,
        ),
        decap_row(
            "IP6IP6 to a non-local VIP: unchanged",
            tunnel(outer6_src.into(), b6, &other6),
            Output::Unchanged,
            PassNotLocalVip,
        ),
        decap_row(
            "plain TCP to the VIP: not a tunnel",
            inner_frame(&inner4),
            Output::Unchanged,
            PassNotTunnel,
        ),
        decap_row(
            "plain IPv6 TCP: not a tunnel",
            inner_frame(&inner6),
            Output::Unchanged,
            PassNotTunnel,
        ),
        decap_row(
            "ARP: not a tunnel",
            ethernet(
                BACKEND_MAC,
                GW_MAC,
                ETH_P_ARP,
                &arp_request(GW_MAC, NEIGH0_V4, VIP4),
            ),
            Output::Unchanged,
            PassNotTunnel,
        ),
        decap_row(
            "VLAN-tagged IPIP: not handled",
            ethernet_vlan(
                BACKEND_MAC,
                GW_MAC,
                &[(ETH_P_8021Q, 5)],
                ETH_P_IP,
                &ipip[14..],
            ),
            Output::Unchanged,
            PassNotTunnel,
        ),
        decap_row(
            "IPIP with the inner header truncated",
            ipip[..14 + 20 + 12].to_vec(),
            Output::Unchanged,
            PassMalformed,
        ),
        decap_row(
            "IPIP outer fragment",
            ethernet(
                BACKEND_MAC,
                GW_MAC,
                ETH_P_IP,
                &Ipv4::new(IPPROTO_IPIP, outer4_src, NEIGH0_V4)
                    .frag(IP_MF)
                    .packet(&inner4),
            ),
            Output::Unchanged,
            PassMalformed,
        ),
        decap_row(
            "truncated outer IPv4 header",
            ipip[..14 + 12].to_vec(),
            Output::Unchanged,
            PassMalformed,
        ),
        decap_row(
            "14-byte IPv4 frame",
            ipip[..14].to_vec(),
            Output::Unchanged,
            PassMalformed,
        ),
        decap_row(
            "IPIP whose inner packet is IPv6",
            ethernet(
                BACKEND_MAC,
                GW_MAC,
                ETH_P_IP,
                &Ipv4::new(IPPROTO_IPIP, outer4_src, NEIGH0_V4).packet(&inner6),
            ),
            Output::Unchanged,
            PassMalformed,
        ),
        decap_row(
            "outer IPv6 cut after 8 bytes",
            tunnel(outer6_src.into(), b6, &inner6)[..14 + 8].to_vec(),
            Output::Unchanged,
            PassMalformed,
        ),
        decap_row(
            "IPv6 ethertype with version nibble 4 carrying a tunnel",
            {
                let mut f = tunnel(outer6_src.into(), b6, &inner6);
                f[14] = 0x40 | (f[14] & 0x0f);
                f
            },
            Output::Unchanged,
            PassMalformed,
        ),
    ];
    rows.push(DecapRow {
        name: "13-byte frame (kernel refuses < 14 bytes)",
        frame: ipip[..13].to_vec(),
        action: None,
        output: Output::Unchanged,
        counter: "",
    });
    rows
}

#[test]
fn sluice_decap_table() {
    require_root();
    let vips = [IpAddr::V4(VIP4), IpAddr::V6(VIP6)];

    // The production path: Decap::attach on a veth in a namespace.
    let ns_name = "slpktd";
    {
        let ns = NetNs::create(ns_name).expect("namespace");
        ns.ip(&["link", "add", "be0", "type", "veth", "peer", "name", "be0p"])
            .expect("veth");
        ns.ip(&["link", "set", "be0", "up"]).expect("up");
        ns.ip(&["link", "set", "be0p", "up"]).expect("up");
        let counters = ns
            .exec(|| -> Result<Vec<u64>, String> {
                let d = Decap::attach("be0", XdpMode::Native, &vips).map_err(|e| e.to_string())?;
                // The link's own IPv6 neighbour discovery may already have been counted as
                // not-a-tunnel; nothing else can have happened on a fresh veth.
                Ok(d.counters()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|(c, _)| *c != lb_common::DecapCounter::PassNotTunnel)
                    .map(|(_, v)| v)
                    .collect())
            })
            .expect("exec")
            .expect("Decap::attach in native mode on a veth");
        assert!(
            counters.iter().all(|&v| v == 0),
            "fresh decap counters {counters:?}"
        );
    }
    assert!(!NetNs::exists(ns_name), "namespace {ns_name} left behind");

    let prog = DecapProgram::load(&vips).expect("load sluice_decap");
    let mut results = Vec::new();
    for r in decap_rows() {
        let before = prog.counters().expect("counters");
        let res = prog.run(&r.frame);
        let after = prog.counters().expect("counters");
        let got = deltas(&before, &after);
        let outcome = match (r.action, res) {
            (None, Err(e)) if errno(&e) == Some(libc::EINVAL) && got.is_empty() => Ok(()),
            (None, other) => Err(format!(
                "want EINVAL and no counter, got {other:?}, counters {got:?}"
            )),
            (Some(_), Err(e)) => Err(format!("test run failed: {e:#}")),
            (Some(want), Ok((action, out))) => {
                let mut errors = Vec::new();
                errors.extend(action_mismatch(action, want));
                let want_out = match &r.output {
                    Output::Unchanged => &r.frame,
                    Output::Exact(b) => b,
                };
                if &out != want_out {
                    errors.push(format!("output differs: {}", diff(&out, want_out)));
                }
                let want_counters = expected_deltas([r.counter]);
                errors.extend(counters_mismatch(&got, &want_counters));
                row_result(&errors)
            }
        };
        results.push((r.name, outcome));
    }
    report("sluice_decap", &results);
}
