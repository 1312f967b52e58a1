//! Table-driven `BPF_PROG_TEST_RUN` tests of `sluice_xdp`'s PROXY protocol v2 policing.
//!
//! Each row is one TCP flow (its own client port) going through one or more connection
//! attempts. An attempt is: the SYN (forwarded, recorded in conntrack as awaiting its header),
//! the first payload segment (the verdict: forwarded or `XDP_DROP`, exactly one per-VIP
//! `ProxyOutcome` counter up by one, the flow entry and `flows()` showing the verdict and the
//! real client), a later data segment and a retransmission of the first segment (both with the
//! same verdict, no outcome counted again). Every global counter must move exactly as the
//! packet implies (`drop_proxy` once per dropped packet). PROXY headers are written here by
//! hand from the spec (haproxy's proxy-protocol.txt), not from sluice's code.
//!
//! `proxy_differential` then runs a few thousand generated and mutated first segments through
//! the kernel and through the userspace parser's `segment_verdict`, and reports every
//! disagreement.
//!
//! Every row runs and all failures are reported together. Needs root (namespaces, BPF). Run
//! with `cargo test -p sluice-tests --test proxy_packets -- --test-threads=1`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::proxy::parse::{segment_verdict, SegmentVerdict};
use lb_common::proxy::{ProxyOutcome, FLOW_ALLOWED, FLOW_AWAIT_HEADER, FLOW_REFUSED};
use lb_common::{Counter, FlowKey, ProxyFlow, FAMILY_V4};
use lb_userspace::dataplane::Options;
use sluice_tests::packet_builder::{
    diff, ethernet, tcp_seq, Ipv4, Ipv6, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, TCP_ACK, TCP_PSH,
    TCP_SYN,
};
use sluice_tests::packet_check::{
    action_mismatch, action_name, check_forward, counters_mismatch, deltas, expected_deltas,
    flow_key, octets, report, row_result, XDP_DROP, XDP_PASS,
};
use sluice_tests::packet_env::{
    PacketEnv, CLIENT4, CLIENT6, CLIENT_MAC, GW0, GW0_MAC, NEIGH0_V4, NEIGH0_V6, NEIGH1_V4,
};
use sluice_tests::{require_root, NetNs};

/// Upstream balancers listed in every VIP's `trusted_proxies`: the tables' client.
const PROXY4: Ipv4Addr = CLIENT4;
const PROXY6: Ipv6Addr = CLIENT6;
/// A host that is in no `trusted_proxies`.
const UNTRUSTED4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

const REQ4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 20);
const REQ6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x20);
const OPT4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 21);
const DENY4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 22);
const ALLOW4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 23);
const DIFF4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 24);
const DIFF6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x24);

/// Real clients named in headers.
const REAL4: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 7);
const REAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 7);
/// Inside `deny_clients` of "deny4".
const DENIED4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 9);
/// Outside `allow_clients` of "allow4".
const OUTSIDE4: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 7);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 6, 0, 0, 0, 0, 7);

const TRUSTED: &str = "trusted_proxies = [\"198.18.0.2/32\", \"2001:db8::2/128\"]\n";

fn vip(name: &str, address: &str, backend: IpAddr, policy: &str, extra: &str) -> String {
    format!(
        "[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nprotocol = \"tcp\"\n\
         table_size = 251\nbackend = [{{ address = \"{backend}\" }}]\n\
         proxy_protocol = \"{policy}\"\n{TRUSTED}{extra}\n"
    )
}

fn gateway_config() -> String {
    let b4 = IpAddr::V4(NEIGH0_V4);
    let b6 = IpAddr::V6(NEIGH0_V6);
    let mut c = String::from(
        "interfaces = [\"gw0\"]\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n\n",
    );
    c += &vip("req4", &format!("{REQ4}:80"), b4, "required", "");
    c += &vip("req6", &format!("[{REQ6}]:80"), b6, "required", "");
    // Behind gw1: its packets leave by XDP_REDIRECT.
    c += &vip(
        "opt4",
        &format!("{OPT4}:80"),
        IpAddr::V4(NEIGH1_V4),
        "optional",
        "",
    );
    c += &vip(
        "deny4",
        &format!("{DENY4}:80"),
        b4,
        "required",
        "deny_clients = [\"198.18.7.0/24\", \"2001:db8:7::/48\"]\n",
    );
    c += &vip(
        "allow4",
        &format!("{ALLOW4}:80"),
        b4,
        "required",
        "allow_clients = [\"198.18.5.0/24\", \"2001:db8:5::/48\"]\n",
    );
    c += &vip("diff4", &format!("{DIFF4}:80"), b4, "required", "");
    c += &vip("diff6", &format!("[{DIFF6}]:80"), b6, "required", "");
    c
}

// ---------------------------------------------------------------------------------------------
// PROXY headers, from the spec

const SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Version 2, LOCAL / PROXY.
const LOCAL: u8 = 0x20;
const PROXY: u8 = 0x21;
const AF_UNSPEC: u8 = 0x00;
const TCP4: u8 = 0x11;
const UDP4: u8 = 0x12;
const TCP6: u8 = 0x21;
const PP2_TYPE_ALPN: u8 = 0x01;
const PP2_TYPE_NOOP: u8 = 0x04;
const HTTP_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";

/// Signature, version/command, family, `len` (big-endian), then `rest` (which `len` may or may
/// not describe truthfully).
fn v2_len(ver_cmd: u8, fam: u8, len: u16, rest: &[u8]) -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.push(ver_cmd);
    h.push(fam);
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(rest);
    h
}

/// A header whose length covers exactly `rest`.
fn v2(ver_cmd: u8, fam: u8, rest: &[u8]) -> Vec<u8> {
    v2_len(ver_cmd, fam, u16::try_from(rest.len()).expect("fits"), rest)
}

/// The address block: source address, destination address, source port, destination port.
fn addrs(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut a = octets(src.ip());
    a.extend(octets(dst.ip()));
    a.extend_from_slice(&src.port().to_be_bytes());
    a.extend_from_slice(&dst.port().to_be_bytes());
    a
}

fn tlv(ty: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![ty];
    t.extend_from_slice(&u16::try_from(value.len()).expect("fits").to_be_bytes());
    t.extend_from_slice(value);
    t
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

// ---------------------------------------------------------------------------------------------
// Frames

/// One TCP connection from `client` to a VIP's port 80.
#[derive(Clone, Copy, Debug)]
struct Conn {
    client: IpAddr,
    cport: u16,
    vip: IpAddr,
    isn: u32,
}

const SERVER_ISN: u32 = 0x2000_0000;
const VPORT: u16 = 80;

impl Conn {
    fn key(&self) -> FlowKey {
        flow_key(IPPROTO_TCP, self.client, self.cport, self.vip, VPORT)
    }

    /// The client's IP packet.
    fn packet(&self, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let l4 = tcp_seq(
            self.client,
            self.vip,
            self.cport,
            VPORT,
            flags,
            seq,
            ack,
            payload,
        );
        match (self.client, self.vip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4::new(IPPROTO_TCP, s, d).packet(&l4),
            (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6::new(IPPROTO_TCP, s, d).packet(&l4),
            _ => panic!("client and VIP of different families"),
        }
    }

    fn syn(&self) -> Vec<u8> {
        self.packet(TCP_SYN, self.isn, 0, b"")
    }

    /// A data segment `offset` bytes into the client's stream.
    fn data(&self, offset: usize, payload: &[u8]) -> Vec<u8> {
        let off = u32::try_from(offset).expect("small offset");
        self.packet(
            TCP_ACK | TCP_PSH,
            self.isn.wrapping_add(1).wrapping_add(off),
            SERVER_ISN + 1,
            payload,
        )
    }
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let ethertype = if ip[0] >> 4 == 6 {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    ethernet(GW0_MAC, CLIENT_MAC, ethertype, ip)
}

// ---------------------------------------------------------------------------------------------
// The table

/// One connection attempt: its first payload segment and what the policy must decide.
#[derive(Debug, Clone)]
struct Attempt {
    first: Vec<u8>,
    outcome: ProxyOutcome,
    /// What `flows()` must show as the real client once the flow is decided.
    real_client: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
struct Row {
    name: &'static str,
    vip: &'static str,
    client: IpAddr,
    vip_addr: IpAddr,
    attempts: Vec<Attempt>,
}

fn attempt(first: Vec<u8>, outcome: ProxyOutcome, real_client: Option<SocketAddr>) -> Attempt {
    Attempt {
        first,
        outcome,
        real_client,
    }
}

fn row(
    name: &'static str,
    vip: &'static str,
    client: impl Into<IpAddr>,
    vip_addr: impl Into<IpAddr>,
    first: Vec<u8>,
    outcome: ProxyOutcome,
    real_client: Option<SocketAddr>,
) -> Row {
    Row {
        name,
        vip,
        client: client.into(),
        vip_addr: vip_addr.into(),
        attempts: vec![attempt(first, outcome, real_client)],
    }
}

/// The real clients the upstream balancer reports, and the valid header that carries the
/// first: what the groups of rows share.
struct Given {
    real4: SocketAddr,
    real6: SocketAddr,
    valid4: Vec<u8>,
}

fn to4(vip: Ipv4Addr) -> SocketAddr {
    sa(vip, VPORT)
}

/// A PROXY TCP4 header from `src` to `vip`.
fn tcp4_hdr(src: SocketAddr, vip: Ipv4Addr) -> Vec<u8> {
    v2(PROXY, TCP4, &addrs(src, to4(vip)))
}

/// `h` followed by an HTTP request.
fn with_http(mut h: Vec<u8>) -> Vec<u8> {
    h.extend_from_slice(HTTP_GET);
    h
}

/// Every row of the `proxy_v2` table, grouped by what they exercise.
fn rows() -> Vec<Row> {
    let real4 = sa(REAL4, 51000);
    let given = Given {
        real4,
        real6: sa(REAL6, 51001),
        valid4: tcp4_hdr(real4, REQ4),
    };
    [
        valid_rows(&given),
        untrusted_rows(&given),
        malformed_rows(&given),
        missing_rows(&given),
        client_policy_rows(&given),
        split_rows(&given),
        tuple_reuse_rows(&given),
    ]
    .concat()
}

/// Valid headers from a trusted upstream: the real client is recorded (LOCAL: none).
fn valid_rows(given: &Given) -> Vec<Row> {
    use ProxyOutcome::{Accepted, Local};
    let real4 = given.real4;
    let real6 = given.real6;
    let valid4 = &given.valid4;
    vec![
        row(
            "valid TCP4 header: Accepted, real client recorded",
            "req4",
            PROXY4,
            REQ4,
            with_http(valid4.clone()),
            Accepted,
            Some(real4),
        ),
        row(
            "valid TCP4 header alone in the first segment",
            "req4",
            PROXY4,
            REQ4,
            valid4.clone(),
            Accepted,
            Some(real4),
        ),
        row(
            "valid TCP6 header on the IPv6 VIP",
            "req6",
            PROXY6,
            REQ6,
            with_http(v2(PROXY, TCP6, &addrs(real6, sa(REQ6, VPORT)))),
            Accepted,
            Some(real6),
        ),
        row(
            "TCP4 header from an IPv6 upstream on the IPv6 VIP",
            "req6",
            PROXY6,
            REQ6,
            with_http(v2(PROXY, TCP4, &addrs(real4, to4(REQ4)))),
            Accepted,
            Some(real4),
        ),
        row(
            "LOCAL command (UNSPEC, no addresses): Local, no client",
            "req4",
            PROXY4,
            REQ4,
            with_http(v2(LOCAL, AF_UNSPEC, b"")),
            Local,
            None,
        ),
        row(
            "LOCAL command with a TCP4 address block: still no client",
            "req4",
            PROXY4,
            REQ4,
            v2(LOCAL, TCP4, &addrs(real4, to4(REQ4))),
            Local,
            None,
        ),
        row(
            "TLVs after the addresses (ALPN, NOOP), length covers them",
            "req4",
            PROXY4,
            REQ4,
            with_http(v2(
                PROXY,
                TCP4,
                &cat(&[
                    &addrs(real4, to4(REQ4)),
                    &tlv(PP2_TYPE_ALPN, b"h2"),
                    &tlv(PP2_TYPE_NOOP, &[0, 0, 0]),
                ]),
            )),
            Accepted,
            Some(real4),
        ),
        row(
            "TLVs after TCP6 addresses on the IPv6 VIP",
            "req6",
            PROXY6,
            REQ6,
            v2(
                PROXY,
                TCP6,
                &cat(&[
                    &addrs(real6, sa(REQ6, VPORT)),
                    &tlv(PP2_TYPE_NOOP, &[0; 7]),
                    &tlv(PP2_TYPE_ALPN, b"http/1.1"),
                ]),
            ),
            Accepted,
            Some(real6),
        ),
    ]
}

/// A valid header from a sender outside `trusted_proxies`.
fn untrusted_rows(given: &Given) -> Vec<Row> {
    use ProxyOutcome::Untrusted;
    let real4 = given.real4;
    let valid4 = &given.valid4;
    vec![
        row(
            "valid header from an untrusted sender: Untrusted",
            "req4",
            UNTRUSTED4,
            REQ4,
            with_http(valid4.clone()),
            Untrusted,
            None,
        ),
        row(
            "valid header from an untrusted sender under optional: Untrusted",
            "opt4",
            UNTRUSTED4,
            OPT4,
            with_http(tcp4_hdr(real4, OPT4)),
            Untrusted,
            None,
        ),
    ]
}

/// Malformed binary headers: each field the parser checks (RFC: PROXY protocol v2, section 2.2).
fn malformed_rows(given: &Given) -> Vec<Row> {
    use ProxyOutcome::{BadCommand, BadFamily, BadVersion, ShortAddress, Truncated};
    let real4 = given.real4;
    vec![
        row(
            "version 1 in the binary header (0x11): BadVersion",
            "req4",
            PROXY4,
            REQ4,
            v2(0x11, TCP4, &addrs(real4, to4(REQ4))),
            BadVersion,
            None,
        ),
        row(
            "version 3 (0x31): BadVersion",
            "req4",
            PROXY4,
            REQ4,
            v2(0x31, TCP4, &addrs(real4, to4(REQ4))),
            BadVersion,
            None,
        ),
        row(
            "command 2 (0x22): BadCommand",
            "req4",
            PROXY4,
            REQ4,
            v2(0x22, TCP4, &addrs(real4, to4(REQ4))),
            BadCommand,
            None,
        ),
        row(
            "UNSPEC family with the PROXY command: BadFamily",
            "req4",
            PROXY4,
            REQ4,
            with_http(v2(PROXY, AF_UNSPEC, b"")),
            BadFamily,
            None,
        ),
        row(
            "UDP over IPv4 with the PROXY command: BadFamily",
            "req4",
            PROXY4,
            REQ4,
            v2(PROXY, UDP4, &addrs(real4, to4(REQ4))),
            BadFamily,
            None,
        ),
        row(
            "TCP4 with length 8: ShortAddress",
            "req4",
            PROXY4,
            REQ4,
            v2_len(PROXY, TCP4, 8, &addrs(real4, to4(REQ4))),
            ShortAddress,
            None,
        ),
        row(
            "TCP6 with length 12 (an IPv4-sized block): ShortAddress",
            "req6",
            PROXY6,
            REQ6,
            v2(PROXY, TCP6, &addrs(real4, to4(REQ4))),
            ShortAddress,
            None,
        ),
        row(
            "length larger than the segment: Truncated",
            "req4",
            PROXY4,
            REQ4,
            v2_len(PROXY, TCP4, 200, &addrs(real4, to4(REQ4))),
            Truncated,
            None,
        ),
        row(
            "length one byte beyond the segment: Truncated",
            "req4",
            PROXY4,
            REQ4,
            v2_len(PROXY, TCP4, 13, &addrs(real4, to4(REQ4))),
            Truncated,
            None,
        ),
    ]
}

/// No v2 header at the stream's start: a near-miss signature, a v1 line, plain HTTP.
fn missing_rows(given: &Given) -> Vec<Row> {
    use ProxyOutcome::{Absent, Missing, V1};
    let mut off_by_one = given.valid4.clone();
    off_by_one[11] = 0x0B;
    let v1_line = format!("PROXY TCP4 {REAL4} {REQ4} 51000 80\r\n");
    vec![
        row(
            "signature off by one byte under required: Missing",
            "req4",
            PROXY4,
            REQ4,
            off_by_one.clone(),
            Missing,
            None,
        ),
        row(
            "signature off by one byte under optional: Absent, forwarded",
            "opt4",
            PROXY4,
            OPT4,
            off_by_one,
            Absent,
            None,
        ),
        row(
            "v1 text header under required: V1",
            "req4",
            PROXY4,
            REQ4,
            with_http(v1_line.clone().into_bytes()),
            V1,
            None,
        ),
        row(
            "v1 text header under optional: V1",
            "opt4",
            PROXY4,
            OPT4,
            with_http(v1_line.into_bytes()),
            V1,
            None,
        ),
        row(
            "no header (HTTP request) under optional: Absent, forwarded",
            "opt4",
            PROXY4,
            OPT4,
            HTTP_GET.to_vec(),
            Absent,
            None,
        ),
        row(
            "no header (HTTP request) under required: Missing",
            "req4",
            PROXY4,
            REQ4,
            HTTP_GET.to_vec(),
            Missing,
            None,
        ),
        row(
            "no header from an untrusted peer under required: Missing",
            "req4",
            UNTRUSTED4,
            REQ4,
            HTTP_GET.to_vec(),
            Missing,
            None,
        ),
    ]
}

/// `allow_clients` and `deny_clients` judge the real client the header names.
fn client_policy_rows(given: &Given) -> Vec<Row> {
    use ProxyOutcome::{Accepted, ClientDenied};
    let real4 = given.real4;
    let real6 = given.real6;
    vec![
        row(
            "real client inside deny_clients: ClientDenied",
            "deny4",
            PROXY4,
            DENY4,
            with_http(tcp4_hdr(sa(DENIED4, 51002), DENY4)),
            ClientDenied,
            Some(sa(DENIED4, 51002)),
        ),
        row(
            "real client outside deny_clients: Accepted",
            "deny4",
            PROXY4,
            DENY4,
            with_http(tcp4_hdr(real4, DENY4)),
            Accepted,
            Some(real4),
        ),
        row(
            "real client inside allow_clients: Accepted",
            "allow4",
            PROXY4,
            ALLOW4,
            with_http(tcp4_hdr(real4, ALLOW4)),
            Accepted,
            Some(real4),
        ),
        row(
            "real IPv6 client inside allow_clients: Accepted",
            "allow4",
            PROXY4,
            ALLOW4,
            v2(PROXY, TCP6, &addrs(real6, sa(REQ6, VPORT))),
            Accepted,
            Some(real6),
        ),
        row(
            "real client outside allow_clients: ClientDenied",
            "allow4",
            PROXY4,
            ALLOW4,
            with_http(tcp4_hdr(sa(OUTSIDE4, 51003), ALLOW4)),
            ClientDenied,
            Some(sa(OUTSIDE4, 51003)),
        ),
        row(
            "real IPv6 client outside allow_clients: ClientDenied",
            "allow4",
            PROXY4,
            ALLOW4,
            v2(PROXY, TCP6, &addrs(sa(OUTSIDE6, 51004), sa(REQ6, VPORT))),
            ClientDenied,
            Some(sa(OUTSIDE6, 51004)),
        ),
    ]
}

/// A header cut short by the segment boundary.
fn split_rows(given: &Given) -> Vec<Row> {
    use ProxyOutcome::Truncated;
    let valid4 = &given.valid4;
    vec![
        row(
            "header split: first segment holds 8 signature bytes: Truncated",
            "req4",
            PROXY4,
            REQ4,
            SIG[..8].to_vec(),
            Truncated,
            None,
        ),
        row(
            "header split under optional: Truncated too",
            "opt4",
            PROXY4,
            OPT4,
            SIG[..8].to_vec(),
            Truncated,
            None,
        ),
        row(
            "signature and version only (13 bytes): Truncated",
            "req4",
            PROXY4,
            REQ4,
            valid4[..13].to_vec(),
            Truncated,
            None,
        ),
    ]
}

/// A new SYN on the tuple of a judged flow is judged afresh.
fn tuple_reuse_rows(given: &Given) -> Vec<Row> {
    use ProxyOutcome::{Accepted, BadCommand, Missing};
    let real4 = given.real4;
    let valid4 = &given.valid4;
    vec![
        Row {
            name: "new SYN reusing the tuple of a refused flow is judged afresh",
            vip: "req4",
            client: PROXY4.into(),
            vip_addr: REQ4.into(),
            attempts: vec![
                attempt(HTTP_GET.to_vec(), Missing, None),
                attempt(with_http(valid4.clone()), Accepted, Some(real4)),
            ],
        },
        Row {
            name: "new SYN reusing the tuple of an accepted flow is judged afresh",
            vip: "req4",
            client: PROXY4.into(),
            vip_addr: REQ4.into(),
            attempts: vec![
                attempt(with_http(valid4.clone()), Accepted, Some(real4)),
                attempt(v2(0x22, TCP4, &addrs(real4, to4(REQ4))), BadCommand, None),
            ],
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Running the table

type Outcomes = BTreeMap<(String, &'static str), u64>;

struct Runner<'a> {
    env: &'a PacketEnv,
    vips: Vec<String>,
}

impl Runner<'_> {
    fn outcomes(&self) -> Result<Outcomes, String> {
        let mut m = BTreeMap::new();
        for v in &self.vips {
            for (o, n) in self.env.dp.proxy_outcomes(v).map_err(|e| e.to_string())? {
                m.insert((v.clone(), o.name()), n);
            }
        }
        Ok(m)
    }

    fn backend(&self, vip: &str) -> Result<IpAddr, String> {
        self.env
            .config
            .vips
            .iter()
            .find(|v| v.name == vip)
            .and_then(|v| v.backends.first())
            .map(|b| b.address)
            .ok_or(format!("no backend configured for {vip}"))
    }

    /// Runs one packet; checks the action, the output frame and the counters for a packet of
    /// `conn` that is forwarded (`forward`) or dropped by the policy, after `lookup` (the
    /// conntrack counters it counts). `outcome`: the one per-VIP outcome it must count.
    #[allow(clippy::too_many_arguments)]
    fn packet(
        &self,
        step: &str,
        vip: &str,
        conn: &Conn,
        ip: &[u8],
        lookup: &[Counter],
        forward: bool,
        outcome: Option<ProxyOutcome>,
    ) -> Vec<String> {
        let frame = eth(ip);
        let snapshot = || -> Result<_, String> {
            Ok((
                self.env.counters().map_err(|e| format!("{e:#}"))?,
                self.outcomes()?,
            ))
        };
        let before = match snapshot() {
            Ok(s) => s,
            Err(e) => return vec![format!("{step}: {e}")],
        };
        let result = self.env.run(&frame);
        let after = match snapshot() {
            Ok(s) => s,
            Err(e) => return vec![format!("{step}: {e}")],
        };
        let (action, out) = match result {
            Ok(r) => r,
            Err(e) => return vec![format!("{step}: test run failed: {e:#}")],
        };
        let mut errors = Vec::new();
        let verdict = if forward {
            let backend = match self.backend(vip) {
                Ok(b) => b,
                Err(e) => return vec![e],
            };
            let (verdict, more) =
                check_forward(&frame, GW0, &conn.key(), ip, backend, action, &out);
            errors.extend(more);
            verdict
        } else {
            if action != XDP_DROP {
                errors.push(format!("action {}, want XDP_DROP", action_name(action)));
            }
            if out != frame {
                errors.push(format!("dropped frame changed: {}", diff(&out, &frame)));
            }
            Counter::DropProxy
        };
        let got = deltas(&before.0, &after.0);
        let want = expected_deltas(lookup.iter().chain([&verdict]).map(|c| c.name()));
        errors.extend(counters_mismatch(&got, &want));
        let got: BTreeMap<_, i128> = after
            .1
            .iter()
            .filter_map(|(k, &n)| {
                let d = i128::from(n) - i128::from(before.1.get(k).copied().unwrap_or(0));
                (d != 0).then(|| (format!("{}/{}", k.0, k.1), d))
            })
            .collect();
        let want: BTreeMap<_, i128> = outcome
            .map(|o| (format!("{vip}/{}", o.name()), 1))
            .into_iter()
            .collect();
        if got != want {
            errors.push(format!("outcome counter deltas {got:?}, want {want:?}"));
        }
        errors.into_iter().map(|e| format!("{step}: {e}")).collect()
    }

    /// The flow's conntrack entry and `flows()` line after a step.
    fn check_flow(
        &self,
        step: &str,
        vip: &str,
        conn: &Conn,
        state: u8,
        outcome: Option<ProxyOutcome>,
        real_client: Option<SocketAddr>,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        match self.env.flow_entry(&conn.key()) {
            None => errors.push("no conntrack entry".into()),
            Some(e) => {
                if e.proxy_state != state {
                    errors.push(format!(
                        "conntrack proxy_state {}, want {state}",
                        e.proxy_state
                    ));
                }
                if let Some(o) = outcome {
                    if e.proxy_outcome != o as u8 {
                        errors.push(format!(
                            "conntrack proxy_outcome {:?}, want {o:?}",
                            ProxyOutcome::from_u8(e.proxy_outcome)
                        ));
                    }
                }
            }
        }
        let peer = SocketAddr::new(conn.client, conn.cport);
        match self.env.dp.flows(Some(vip), 1 << 16) {
            Err(e) => errors.push(format!("flows(): {e}")),
            Ok(flows) => match flows.iter().find(|f| f.client == peer) {
                None => errors.push(format!("flows() has no flow from {peer}")),
                Some(f) => {
                    if f.proxy != outcome {
                        errors.push(format!("flows() proxy {:?}, want {outcome:?}", f.proxy));
                    }
                    if f.real_client != real_client {
                        errors.push(format!(
                            "flows() real_client {:?}, want {real_client:?}",
                            f.real_client
                        ));
                    }
                }
            },
        }
        errors.into_iter().map(|e| format!("{step}: {e}")).collect()
    }

    fn row(&self, row: &Row, cport: u16) -> Result<(), String> {
        use Counter::{ConntrackHit, ConntrackMiss, FlowCreated};
        let mut errors = Vec::new();
        for (i, a) in row.attempts.iter().enumerate() {
            let conn = Conn {
                client: row.client,
                cport,
                vip: row.vip_addr,
                isn: 0x1000_0000 + 0x0100_0000 * u32::try_from(i).unwrap_or(0),
            };
            let n = if row.attempts.len() > 1 {
                format!("attempt {}: ", i + 1)
            } else {
                String::new()
            };
            let forward = !a.outcome.refuses();
            let step = format!("{n}SYN");
            errors.extend(self.packet(
                &step,
                row.vip,
                &conn,
                &conn.syn(),
                &[ConntrackMiss, FlowCreated],
                true,
                None,
            ));
            errors.extend(self.check_flow(&step, row.vip, &conn, FLOW_AWAIT_HEADER, None, None));

            let first = conn.data(0, &a.first);
            let step = format!("{n}first segment");
            errors.extend(self.packet(
                &step,
                row.vip,
                &conn,
                &first,
                &[ConntrackHit],
                forward,
                Some(a.outcome),
            ));
            let state = if forward { FLOW_ALLOWED } else { FLOW_REFUSED };
            errors.extend(self.check_flow(
                &step,
                row.vip,
                &conn,
                state,
                Some(a.outcome),
                a.real_client,
            ));

            let later = conn.data(a.first.len(), b"more data from the client\r\n");
            errors.extend(self.packet(
                &format!("{n}later segment"),
                row.vip,
                &conn,
                &later,
                &[ConntrackHit],
                forward,
                None,
            ));
            let step = format!("{n}retransmitted first segment");
            errors.extend(self.packet(
                &step,
                row.vip,
                &conn,
                &first,
                &[ConntrackHit],
                forward,
                None,
            ));
            errors.extend(self.check_flow(
                &step,
                row.vip,
                &conn,
                state,
                Some(a.outcome),
                a.real_client,
            ));
        }
        row_result(&errors)
    }
}

fn vip_names(env: &PacketEnv) -> Vec<String> {
    env.config.vips.iter().map(|v| v.name.clone()).collect()
}

/// Runs `f` against `sluice_xdp` loaded in a fresh namespace `ns_name` with the gateway config
/// (`conntrack` entries), and checks that the namespace is gone afterwards.
fn in_gateway<T>(ns_name: &str, conntrack: u32, f: impl FnOnce(&Runner) -> T) -> T {
    let out = {
        let env = PacketEnv::new(
            ns_name,
            &Options::unpinned(conntrack, 16 * 251),
            &gateway_config(),
        )
        .expect("set up the namespace and sluice_xdp");
        f(&Runner {
            env: &env,
            vips: vip_names(&env),
        })
    };
    assert!(!NetNs::exists(ns_name), "namespace {ns_name} left behind");
    out
}

#[test]
fn proxy_v2_table() {
    require_root();
    let rows = rows();
    let names: std::collections::HashSet<_> = rows.iter().map(|r| r.name).collect();
    assert_eq!(names.len(), rows.len(), "row names must be unique");
    let results = in_gateway("slproxy", 4096, |runner| {
        rows.iter()
            .zip(42000u16..)
            .map(|(r, port)| (r.name, runner.row(r, port)))
            .collect::<Vec<_>>()
    });
    report("PROXY v2", &results);
}

/// A flow whose PROXY record is gone (the PROXY flow map, a quarter of conntrack, evicts on its
/// own) is policed like one conntrack does not know: a header is judged as on a first segment,
/// so an untrusted sender's forged header is still dropped and a trusted proxy's is accepted,
/// and the flow's verdict in conntrack is left as it was (awaiting its header).
#[test]
fn a_flow_without_its_proxy_record_is_policed_as_untracked() {
    require_root();
    let errors = in_gateway("slpxlost", 4096, |r| {
        let forged = Conn {
            client: IpAddr::V4(UNTRUSTED4),
            cport: 43100,
            vip: IpAddr::V4(OPT4),
            isn: 7000,
        };
        let trusted = Conn {
            client: IpAddr::V4(PROXY4),
            cport: 43101,
            vip: IpAddr::V4(REQ4),
            isn: 9000,
        };
        let mut errors = Vec::new();
        for (c, vip, verdict) in [
            (&forged, "opt4", ProxyOutcome::Untrusted),
            (&trusted, "req4", ProxyOutcome::Accepted),
        ] {
            let lookup = [Counter::ConntrackMiss, Counter::FlowCreated];
            errors.extend(r.packet("SYN", vip, c, &c.syn(), &lookup, true, None));
            if r.env.proxy_flow(&c.key()).is_none() {
                errors.push(format!("{vip}: the SYN left no PROXY record"));
            }
            if let Err(e) = r.env.forget_proxy_flow(&c.key()) {
                errors.push(format!("{vip}: {e:#}"));
            }
            let header = v2(PROXY, TCP4, &addrs(sa(REAL4, 5555), sa(c.vip, VPORT)));
            let first = c.data(0, &cat(&[&header, HTTP_GET]));
            let forward = verdict == ProxyOutcome::Accepted;
            errors.extend(r.packet(
                &format!("{vip} first segment"),
                vip,
                c,
                &first,
                &[Counter::ConntrackHit],
                forward,
                Some(verdict),
            ));
            errors.extend(r.check_flow(
                &format!("{vip} after"),
                vip,
                c,
                FLOW_AWAIT_HEADER,
                None,
                None,
            ));
        }
        errors
    });
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Stream position: the segment judged is the one the backend reads first

/// One step of a flow: a packet, whether it is forwarded, the outcome it counts, and the flow's
/// state afterwards.
struct Step {
    name: &'static str,
    ip: Vec<u8>,
    forward: bool,
    outcome: Option<ProxyOutcome>,
    state: u8,
    real_client: Option<SocketAddr>,
}

fn step(
    name: &'static str,
    ip: Vec<u8>,
    forward: bool,
    outcome: Option<ProxyOutcome>,
    state: u8,
) -> Step {
    Step {
        name,
        ip,
        forward,
        outcome,
        state,
        real_client: None,
    }
}

impl Runner<'_> {
    /// Runs `steps` on one flow of `vip`; the first must be its SYN (a conntrack miss), every
    /// other a conntrack hit.
    fn steps(&self, vip: &str, conn: &Conn, steps: &[Step]) -> Result<(), String> {
        use Counter::{ConntrackHit, ConntrackMiss, FlowCreated};
        let mut errors = Vec::new();
        for (i, st) in steps.iter().enumerate() {
            let lookup: &[Counter] = if i == 0 {
                &[ConntrackMiss, FlowCreated]
            } else {
                &[ConntrackHit]
            };
            errors.extend(self.packet(st.name, vip, conn, &st.ip, lookup, st.forward, st.outcome));
            // Only a decided flow names its outcome; the last one decided is what it shows.
            let decided = steps[..=i].iter().rev().find_map(|s| s.outcome);
            errors.extend(self.check_flow(
                st.name,
                vip,
                conn,
                st.state,
                decided.filter(|_| st.state != FLOW_AWAIT_HEADER),
                st.real_client,
            ));
        }
        row_result(&errors)
    }
}

/// Retransmissions, overlaps and reordering: whatever bytes end up first in the backend's
/// stream were judged, so no segment can put a header there after the verdict.
#[test]
fn proxy_v2_stream_position() {
    use ProxyOutcome::{Absent, Accepted, Overlap, Untrusted};
    require_root();
    let results = in_gateway("slproxyseq", 4096, |runner| {
        let real4 = sa(REAL4, 51000);
        let conn = |client: Ipv4Addr, cport: u16, vip: Ipv4Addr| Conn {
            client: client.into(),
            cport,
            vip: vip.into(),
            isn: 0x3000_0000,
        };
        let valid =
            |vip: Ipv4Addr| cat(&[&v2(PROXY, TCP4, &addrs(real4, sa(vip, VPORT))), HTTP_GET]);
        let mut results = Vec::new();

        // Under `optional` a direct client's first segment carries no header and is allowed;
        // a second copy of the stream's start that does carry one must not reach the backend
        // (the first copy might have been discarded there, e.g. for its checksum).
        let c = conn(UNTRUSTED4, 43001, OPT4);
        results.push((
            "optional: a header resent at the stream's start after an absent verdict",
            runner.steps(
                "opt4",
                &c,
                &[
                    step("SYN", c.syn(), true, None, FLOW_AWAIT_HEADER),
                    step(
                        "first segment, no header",
                        c.data(0, HTTP_GET),
                        true,
                        Some(Absent),
                        FLOW_ALLOWED,
                    ),
                    step(
                        "same start, same bytes",
                        c.data(0, HTTP_GET),
                        true,
                        None,
                        FLOW_ALLOWED,
                    ),
                    step(
                        "same start, forged header",
                        c.data(0, &valid(OPT4)),
                        false,
                        Some(Untrusted),
                        FLOW_REFUSED,
                    ),
                    step(
                        "later data",
                        c.data(HTTP_GET.len(), b"more"),
                        false,
                        None,
                        FLOW_REFUSED,
                    ),
                ],
            ),
        ));

        // A segment starting one byte before the stream: the backend trims that byte and would
        // read a header hidden behind it.
        let c = conn(PROXY4, 43002, REQ4);
        let mut hidden = vec![b'Z'];
        hidden.extend(valid(REQ4));
        let overlap = c.packet(TCP_ACK | TCP_PSH, c.isn, SERVER_ISN + 1, &hidden);
        results.push((
            "required: a segment overlapping the SYN is refused",
            runner.steps(
                "req4",
                &c,
                &[
                    step("SYN", c.syn(), true, None, FLOW_AWAIT_HEADER),
                    step(
                        "segment from one byte before the stream",
                        overlap,
                        false,
                        Some(Overlap),
                        FLOW_REFUSED,
                    ),
                ],
            ),
        ));

        // Data ahead of a lost first segment cannot be read before it: forwarded undecided,
        // and the first segment decides when it comes.
        let c = conn(PROXY4, 43003, REQ4);
        let first = valid(REQ4);
        let mut accepted = step(
            "the first segment",
            c.data(0, &first),
            true,
            Some(Accepted),
            FLOW_ALLOWED,
        );
        accepted.real_client = Some(real4);
        let mut later = step(
            "later data again",
            c.data(first.len(), b"tail"),
            true,
            None,
            FLOW_ALLOWED,
        );
        later.real_client = Some(real4);
        results.push((
            "required: reordered data waits for the stream's start",
            runner.steps(
                "req4",
                &c,
                &[
                    step("SYN", c.syn(), true, None, FLOW_AWAIT_HEADER),
                    step(
                        "data ahead of the first segment",
                        c.data(first.len(), b"tail"),
                        true,
                        None,
                        FLOW_AWAIT_HEADER,
                    ),
                    accepted,
                    later,
                ],
            ),
        ));

        // TCP Fast Open: the header rides on the SYN and is judged there.
        let c = conn(PROXY4, 43004, REQ4);
        let mut tfo = step(
            "SYN with the header",
            c.packet(TCP_SYN, c.isn, 0, &valid(REQ4)),
            true,
            Some(Accepted),
            FLOW_ALLOWED,
        );
        tfo.real_client = Some(real4);
        let mut more = step(
            "data after it",
            c.data(valid(REQ4).len(), b"more"),
            true,
            None,
            FLOW_ALLOWED,
        );
        more.real_client = Some(real4);
        results.push((
            "required: a header on the SYN (TCP Fast Open)",
            runner.steps("req4", &c, &[tfo, more]),
        ));
        results
    });
    report("PROXY v2 stream position", &results);
}

// ---------------------------------------------------------------------------------------------
// Differential test: the kernel against `lb_common::proxy::parse::segment_verdict`

/// xorshift64: deterministic, good enough to spread cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// An address in the test ranges (`198.18.0.0/15`, `2001:db8::/32`).
    fn addr(&mut self, v6: bool) -> IpAddr {
        if v6 {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            o[4..].copy_from_slice(&self.bytes(12));
            IpAddr::V6(o.into())
        } else {
            let b = self.bytes(3);
            IpAddr::V4(Ipv4Addr::new(198, 0x12 | (b[0] & 1), b[1], b[2]))
        }
    }

    fn port(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
}

/// A valid header (TCP4, TCP6 or LOCAL) with random addresses and TLV bytes, maybe followed by
/// application bytes.
fn valid_header(rng: &mut Rng) -> Vec<u8> {
    let kind = rng.below(3);
    let v6 = kind == 1 || (kind == 2 && rng.chance(50));
    let block = addrs(
        SocketAddr::new(rng.addr(v6), rng.port()),
        SocketAddr::new(rng.addr(v6), rng.port()),
    );
    let mut rest = if kind == 2 && rng.chance(30) {
        Vec::new()
    } else {
        block
    };
    for _ in 0..rng.below(4) {
        let len = rng.below(24);
        let ty = rng.byte();
        rest.extend(tlv(ty, &rng.bytes(len)));
    }
    if rng.chance(10) {
        // Random bytes the length still covers (TLVs the kernel never reads).
        let n = rng.below(16);
        rest.extend(rng.bytes(n));
    }
    let (cmd, fam) = match kind {
        0 => (PROXY, TCP4),
        1 => (PROXY, TCP6),
        _ => (
            LOCAL,
            match (rest.is_empty(), v6) {
                (true, _) => AF_UNSPEC,
                (false, false) => TCP4,
                (false, true) => TCP6,
            },
        ),
    };
    let mut h = v2(cmd, fam, &rest);
    if rng.chance(50) {
        let n = rng.below(64);
        h.extend(rng.bytes(n));
    }
    h
}

fn v1_text(rng: &mut Rng) -> Vec<u8> {
    let line = match rng.below(4) {
        0 => format!(
            "PROXY TCP4 {} {} {} 80\r\n",
            rng.addr(false),
            rng.addr(false),
            rng.port()
        ),
        1 => format!(
            "PROXY TCP6 {} {} {} 80\r\n",
            rng.addr(true),
            rng.addr(true),
            rng.port()
        ),
        2 => "PROXY UNKNOWN\r\n".to_string(),
        _ => "PROXY ".to_string(),
    };
    let mut b = line.into_bytes();
    if rng.chance(50) {
        b.extend_from_slice(HTTP_GET);
    }
    b
}

/// Deterministic first segments: valid headers, then mutations of them, garbage and v1 text.
fn differential_cases(n: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut cases = Vec::with_capacity(n);
    while cases.len() < n {
        let mut seg = valid_header(&mut rng);
        match rng.below(10) {
            // Unchanged.
            0 | 1 => {}
            // Flip a bit, or overwrite a byte, in the fixed header.
            2 => {
                let i = rng.below(16);
                seg[i] ^= 1 << rng.below(8);
            }
            3 => {
                let i = rng.below(16);
                seg[i] = rng.byte();
            }
            // A random length field, often near the true one.
            4 => {
                let true_len = usize::from(u16::from_be_bytes([seg[14], seg[15]]));
                let len = match rng.below(3) {
                    0 => (true_len + rng.below(9)).saturating_sub(4),
                    // Around the address block sizes (12, 36).
                    1 => rng.below(40),
                    _ => rng.below(0x1_0000),
                };
                seg[14..16].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            }
            // Cut anywhere, often inside the fixed header or the signature.
            5 => {
                let end = if rng.chance(50) {
                    1 + rng.below(16)
                } else {
                    1 + rng.below(seg.len())
                };
                seg.truncate(end);
            }
            6 => {
                let i = rng.below(16);
                seg[i] = rng.byte();
                let end = 1 + rng.below(seg.len());
                seg.truncate(end);
            }
            // Garbage, sometimes starting like a signature.
            7 => {
                let keep = rng.below(13);
                let len = 1 + rng.below(64);
                let mut g = SIG[..keep].to_vec();
                g.extend(rng.bytes(len));
                seg = g;
            }
            8 => seg = v1_text(&mut rng),
            // Family/command byte from a small set of interesting values.
            _ => {
                seg[12] = [0x20, 0x21, 0x22, 0x2f, 0x11, 0x01][rng.below(6)];
                seg[13] = [0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0xff][rng.below(8)];
            }
        }
        if !seg.is_empty() {
            cases.push(seg);
        }
    }
    cases
}

/// What the kernel must decide on a `required` VIP from a trusted sender, per the parser.
fn expected_outcome(v: SegmentVerdict) -> (ProxyOutcome, Option<SocketAddr>) {
    use ProxyOutcome as O;
    match v {
        SegmentVerdict::Absent => (O::Missing, None),
        SegmentVerdict::V1 => (O::V1, None),
        SegmentVerdict::Truncated => (O::Truncated, None),
        SegmentVerdict::BadVersion => (O::BadVersion, None),
        SegmentVerdict::BadCommand => (O::BadCommand, None),
        SegmentVerdict::BadFamily => (O::BadFamily, None),
        SegmentVerdict::ShortAddress => (O::ShortAddress, None),
        SegmentVerdict::Local => (O::Local, None),
        SegmentVerdict::Proxy { source, .. } => (O::Accepted, Some(source)),
    }
}

fn entry_client(e: &ProxyFlow) -> Option<SocketAddr> {
    let words = e.client_be;
    let mut b = Vec::with_capacity(16);
    for w in words {
        b.extend_from_slice(&w.to_ne_bytes());
    }
    let ip = match e.client_family {
        0 => return None,
        FAMILY_V4 => IpAddr::V4(<[u8; 4]>::try_from(&b[..4]).ok()?.into()),
        _ => IpAddr::V6(<[u8; 16]>::try_from(&b[..]).ok()?.into()),
    };
    Some(SocketAddr::new(ip, u16::from_be(e.client_port_be)))
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

const DIFF_CASES: u16 = 3000;

#[test]
fn proxy_differential() {
    require_root();
    let cases = differential_cases(usize::from(DIFF_CASES));
    let (disagreements, outcome_counts) =
        in_gateway("slproxyd", 2 * u32::from(DIFF_CASES), |runner| {
            run_differential(runner.env, &cases)
        });
    eprintln!("{} cases; kernel outcomes: {outcome_counts:?}", cases.len());
    assert!(
        disagreements.is_empty(),
        "{} of {} segments judged differently by the kernel and segment_verdict:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}

fn run_differential(
    env: &PacketEnv,
    cases: &[Vec<u8>],
) -> (Vec<String>, BTreeMap<&'static str, usize>) {
    let mut disagreements = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, seg) in cases.iter().enumerate() {
        // Alternate families; each case is its own flow.
        let (vip, client, vip_addr) = if i % 2 == 0 {
            ("diff4", IpAddr::V4(PROXY4), IpAddr::V4(DIFF4))
        } else {
            ("diff6", IpAddr::V6(PROXY6), IpAddr::V6(DIFF6))
        };
        let conn = Conn {
            client,
            cport: 10000 + u16::try_from(i / 2).expect("fewer than 110k cases"),
            vip: vip_addr,
            isn: 0x3000_0000,
        };
        let mut problem = |what: String| {
            disagreements.push(format!("case {i} ({vip}) {}: {what}", hex(seg)));
        };
        let expected = std::panic::catch_unwind(|| segment_verdict(seg)).map(expected_outcome);
        let Ok((want, want_client)) = expected else {
            problem("segment_verdict panicked".into());
            continue;
        };
        match env.run(&eth(&conn.syn())) {
            Ok((XDP_DROP, _)) => problem("SYN dropped".into()),
            Ok(_) => {}
            Err(e) => problem(format!("SYN test run failed: {e:#}")),
        }
        let before = env.dp.proxy_outcomes(vip).expect("outcome counters");
        let result = env.run(&eth(&conn.data(0, seg)));
        let after = env.dp.proxy_outcomes(vip).expect("outcome counters");
        let counted: Vec<ProxyOutcome> = before
            .iter()
            .zip(&after)
            .filter(|((_, b), (_, a))| a != b)
            .map(|((o, _), _)| *o)
            .collect();
        let &[got] = counted.as_slice() else {
            problem(format!(
                "want {want:?}; outcome counters moved for {counted:?}"
            ));
            continue;
        };
        *seen.entry(got.name()).or_insert(0) += 1;
        let got_client = env.proxy_flow(&conn.key()).and_then(|e| entry_client(&e));
        let action = match result {
            Ok((a, _)) => a,
            Err(e) => {
                problem(format!("test run failed: {e:#}"));
                continue;
            }
        };
        if got != want || got_client != want_client {
            problem(format!(
                "kernel {got:?} (real client {got_client:?}), segment_verdict says {want:?} \
                 ({want_client:?})"
            ));
        } else if (action == XDP_DROP) != got.refuses() {
            problem(format!(
                "kernel counted {got:?} but answered {}",
                action_name(action)
            ));
        }
    }
    (disagreements, seen)
}

// ---------------------------------------------------------------------------------------------
// Edge VIPs: policed like L4 VIPs, then passed to the local listener unchanged

const EDGE_REQ4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 20);
const EDGE_OPT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 1, 0, 0, 0, 0x21);
const EDGE_OFF4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 22);

fn edge_config() -> String {
    let edge = |name: &str, address: String, policy: &str| {
        format!(
            "[[edge]]\nname = \"{name}\"\naddress = \"{address}\"\npool = \"req4\"\n\
             proxy_protocol = \"{policy}\"\n{}\n",
            if policy == "off" { "" } else { TRUSTED }
        )
    };
    let mut c = gateway_config();
    c += &edge("edgereq", format!("{EDGE_REQ4}:{VPORT}"), "required");
    c += &edge("edgeopt", format!("[{EDGE_OPT6}]:{VPORT}"), "optional");
    c += &edge("edgeoff", format!("{EDGE_OFF4}:{VPORT}"), "off");
    c
}

/// One packet to an edge VIP: passed to the stack unchanged or dropped, with exactly the
/// given global counters and per-edge outcome moving.
struct EdgeStep {
    name: &'static str,
    ip: Vec<u8>,
    pass: bool,
    counters: &'static [Counter],
    outcome: Option<ProxyOutcome>,
}

/// (name, edge, connection, steps, real client the flow must name afterwards)
type EdgeCase = (
    &'static str,
    &'static str,
    Conn,
    Vec<EdgeStep>,
    Option<SocketAddr>,
);

fn edge_outcomes(env: &PacketEnv) -> Result<BTreeMap<String, u64>, String> {
    let mut m = BTreeMap::new();
    for e in ["edgereq", "edgeopt", "edgeoff"] {
        for (o, n) in env.dp.edge_proxy_outcomes(e).map_err(|e| e.to_string())? {
            m.insert(format!("{e}/{}", o.name()), n);
        }
    }
    Ok(m)
}

fn edge_step(env: &PacketEnv, edge: &str, st: &EdgeStep) -> Vec<String> {
    let frame = eth(&st.ip);
    let snapshot = || -> Result<_, String> {
        Ok((
            env.counters().map_err(|e| format!("{e:#}"))?,
            edge_outcomes(env)?,
        ))
    };
    let run = || -> Result<Vec<String>, String> {
        let before = snapshot()?;
        let (action, out) = env.run(&frame).map_err(|e| format!("{e:#}"))?;
        let after = snapshot()?;
        let mut errors = Vec::new();
        let want_action = if st.pass { XDP_PASS } else { XDP_DROP };
        errors.extend(action_mismatch(action, want_action));
        if out != frame {
            errors.push(format!("frame changed: {}", diff(&out, &frame)));
        }
        let got = deltas(&before.0, &after.0);
        let want = expected_deltas(st.counters.iter().map(|c| c.name()));
        errors.extend(counters_mismatch(&got, &want));
        let got: BTreeMap<&String, u64> = after
            .1
            .iter()
            .filter(|(k, n)| before.1.get(*k) != Some(n))
            .map(|(k, n)| (k, n - before.1.get(k).copied().unwrap_or(0)))
            .collect();
        let want_key = st.outcome.map(|o| format!("{edge}/{}", o.name()));
        let want: BTreeMap<&String, u64> = want_key.iter().map(|k| (k, 1)).collect();
        if got != want {
            errors.push(format!("outcome deltas {got:?}, want {want:?}"));
        }
        Ok(errors)
    };
    match run() {
        Ok(errors) => errors,
        Err(e) => vec![e],
    }
    .into_iter()
    .map(|e| format!("{}: {e}", st.name))
    .collect()
}

#[test]
#[allow(clippy::too_many_lines)]
fn edge_vips_are_policed_then_passed_to_the_listener() {
    use Counter::{ConntrackHit, ConntrackMiss, DropProxy, FlowCreated, PassEdge};
    use ProxyOutcome::{Absent, Accepted, Missing, Untrusted};
    require_root();
    let ns = "sledge";
    let results = {
        let env = PacketEnv::new(ns, &Options::unpinned(4096, 16 * 251), &edge_config())
            .expect("set up the namespace and sluice_xdp");
        let real4 = sa(REAL4, 51000);
        let to_edge = sa(EDGE_REQ4, VPORT);
        let header = v2(PROXY, TCP4, &addrs(real4, to_edge));
        let tls_hello: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03];
        let conn = |client: IpAddr, cport: u16, vip: IpAddr| Conn {
            client,
            cport,
            vip,
            isn: 0x1000_0000,
        };
        let syn_tracked = |c: &Conn| EdgeStep {
            name: "SYN",
            ip: c.syn(),
            pass: true,
            counters: &[ConntrackMiss, FlowCreated, PassEdge],
            outcome: None,
        };
        let hit = |name, ip, pass, outcome| EdgeStep {
            name,
            ip,
            pass,
            counters: if pass {
                &[ConntrackHit, PassEdge]
            } else {
                &[ConntrackHit, DropProxy]
            },
            outcome,
        };
        let mut cases: Vec<EdgeCase> = Vec::new();
        let c = conn(PROXY4.into(), 43000, EDGE_REQ4.into());
        cases.push((
            "trusted proxy's v2 header: accepted, real client recorded",
            "edgereq",
            c,
            vec![
                syn_tracked(&c),
                hit(
                    "header",
                    c.data(0, &cat(&[&header, tls_hello])),
                    true,
                    Some(Accepted),
                ),
                hit(
                    "later",
                    c.data(header.len() + tls_hello.len(), tls_hello),
                    true,
                    None,
                ),
            ],
            Some(real4),
        ));
        let c = conn(PROXY4.into(), 43001, EDGE_REQ4.into());
        let v1 = format!("PROXY TCP4 {REAL4} {EDGE_REQ4} 51000 {VPORT}\r\n");
        cases.push((
            "trusted proxy's v1 line: accepted for the listener to read",
            "edgereq",
            c,
            vec![
                syn_tracked(&c),
                hit("v1 line", c.data(0, v1.as_bytes()), true, Some(Accepted)),
            ],
            None,
        ));
        let c = conn(UNTRUSTED4.into(), 43002, EDGE_REQ4.into());
        cases.push((
            "forged header from an untrusted client: dropped before the listener",
            "edgereq",
            c,
            vec![
                syn_tracked(&c),
                hit("header", c.data(0, &header), false, Some(Untrusted)),
                hit("later", c.data(header.len(), tls_hello), false, None),
            ],
            None,
        ));
        let c = conn(PROXY4.into(), 43003, EDGE_REQ4.into());
        cases.push((
            "no header under required: dropped",
            "edgereq",
            c,
            vec![
                syn_tracked(&c),
                hit("hello", c.data(0, tls_hello), false, Some(Missing)),
            ],
            None,
        ));
        let c = conn(UNTRUSTED4.into(), 43004, EDGE_REQ4.into());
        cases.push((
            "untracked mid-stream forged header: dropped",
            "edgereq",
            c,
            vec![EdgeStep {
                name: "header without SYN",
                ip: c.data(0, &header),
                pass: false,
                counters: &[ConntrackMiss, DropProxy],
                outcome: Some(Untrusted),
            }],
            None,
        ));
        let c6 = conn(
            Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9).into(),
            43005,
            EDGE_OPT6.into(),
        );
        cases.push((
            "IPv6 direct client under optional: absent, passed",
            "edgeopt",
            c6,
            vec![
                syn_tracked(&c6),
                hit("hello", c6.data(0, tls_hello), true, Some(Absent)),
            ],
            None,
        ));
        let c = conn(UNTRUSTED4.into(), 43006, EDGE_OFF4.into());
        let pass_untracked = |name, ip| EdgeStep {
            name,
            ip,
            pass: true,
            counters: &[PassEdge],
            outcome: None,
        };
        cases.push((
            "edge without a policy: passed untracked, whatever it carries",
            "edgeoff",
            c,
            vec![
                pass_untracked("SYN", c.syn()),
                pass_untracked("header", c.data(0, &header)),
            ],
            None,
        ));
        let mut results = Vec::new();
        for (name, edge, c, steps, real_client) in &cases {
            let traffic_before = env.dp.edge_traffic(edge).expect("edge traffic");
            let mut errors: Vec<String> = steps
                .iter()
                .flat_map(|st| edge_step(&env, edge, st))
                .collect();
            let traffic = env.dp.edge_traffic(edge).expect("edge traffic");
            let passed = steps.iter().filter(|s| s.pass).count() as u64;
            let syns = u64::from(steps[0].name == "SYN");
            if traffic.packets - traffic_before.packets != passed
                || traffic.new_flows - traffic_before.new_flows != syns
            {
                errors.push(format!(
                    "edge traffic moved by {} packets and {} new flows, want {passed} and {syns}",
                    traffic.packets - traffic_before.packets,
                    traffic.new_flows - traffic_before.new_flows
                ));
            }
            let tracked = *edge != "edgeoff" && steps[0].name == "SYN";
            let peer = SocketAddr::new(c.client, c.cport);
            let flow = env
                .dp
                .flows(None, 1 << 16)
                .expect("flows")
                .into_iter()
                .find(|f| f.client == peer);
            match (tracked, flow) {
                (false, None) => {}
                (false, Some(f)) => errors.push(format!("untracked flow recorded: {f:?}")),
                (true, None) => errors.push("no flow recorded".into()),
                (true, Some(f)) => {
                    if f.vip_name.as_deref() != Some(*edge) || f.backend.is_some() {
                        errors.push(format!(
                            "flow names VIP {:?} and backend {:?}, want {edge} and none",
                            f.vip_name, f.backend
                        ));
                    }
                    if f.real_client != *real_client {
                        errors.push(format!(
                            "real client {:?}, want {real_client:?}",
                            f.real_client
                        ));
                    }
                }
            }
            let result = if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            };
            results.push((*name, result));
        }
        results
    };
    assert!(!NetNs::exists(ns), "namespace {ns} left behind");
    report("edge VIPs", &results);
}
