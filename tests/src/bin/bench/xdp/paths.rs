//! What `bench xdp` measures: the gateway config, the frames of each path, and how each path
//! proves that every run took it.
//!
//! The proofs name `sluice_xdp`'s counters; when a counter is renamed or split, [`PATHS`]'s
//! `proof` column is the one place to follow it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use lb_common::{proxy::ProxyOutcome, Counter};
use sluice_tests::{
    packet_builder::tcp_frame,
    packet_env::{PacketEnv, GW0_MAC},
};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0c, 0x01];
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// New-flow clients count up from here, clear of the established flows' client.
const NEW_CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 2);
const NEW_CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 1, 0, 0, 2);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10);
const EDGE4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 10);
const NOT_A_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 99, 1);
/// The live-frame VIP and its one backend; see [`LIVE_BACKEND`].
pub const LIVE_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 20);
/// Live-frame mode recycles frame pages without restoring their bytes, so from the second use
/// of a page on, `sluice_xdp` reads its own output at the original offsets: the 14 bytes where
/// the Ethernet header was are the tail of the outer IPv4 header it wrote, whose last two
/// bytes (the low half of the backend address) land on the Ethernet type. A backend at
/// `x.x.8.0` makes that type `0x0800`, so the recycled frame is again the same IPv4 flow (inner
/// headers intact), and every frame of the run is a real established-flow forward. Its next
/// hop is a static route and a permanent neighbour on `gw0` (see [`live_next_hop`]).
pub const LIVE_BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 8, 0);
/// MAC of [`LIVE_BACKEND`]'s permanent neighbour entry.
pub const LIVE_BACKEND_MAC: &str = "02:00:00:00:08:02";

/// XDP actions (uapi `enum xdp_action`).
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
const FORWARDED: &[u32] = &[XDP_TX, XDP_REDIRECT];
pub const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// Source ports per client address before the next address is used.
const PORTS: usize = 60_000;

pub const CONFIG: &str = r#"
interfaces = ["gw0"]
[encap]
source_v4 = "198.19.255.0/24"
source_v6 = "2001:db8:ffff::/96"
[[vip]]
name = "web4"
address = "198.19.0.10:80"
[[vip.backend]]
address = "198.18.10.2"
[[vip.backend]]
address = "198.18.11.2"
[[vip]]
name = "proxy4"
address = "198.19.0.10:81"
proxy_protocol = "required"
trusted_proxies = ["198.18.0.0/16"]
[[vip.backend]]
address = "198.18.10.2"
[[vip.backend]]
address = "198.18.11.2"
[[vip]]
name = "web6"
address = "[2001:db8:ff::10]:80"
[[vip.backend]]
address = "2001:db8:a::2"
[[vip.backend]]
address = "2001:db8:b::2"
[[vip]]
name = "live4"
address = "198.19.0.20:80"
[[vip.backend]]
address = "198.18.8.0"
[[edge]]
name = "edge4"
address = "198.19.1.10:443"
pool = "web4"
"#;
/// VIPs in [`CONFIG`]; each takes two Maglev tables of the default size in the ring map.
pub const VIPS: u32 = 4;

/// `ip` commands (in the bench namespace) that give [`LIVE_BACKEND`] a next hop on `gw0`.
pub fn live_next_hop() -> [String; 2] {
    [
        format!("route add {LIVE_BACKEND}/32 dev gw0"),
        format!("neigh add {LIVE_BACKEND} lladdr {LIVE_BACKEND_MAC} dev gw0 nud permanent"),
    ]
}

/// A TCP segment from `src` to `dst` in an Ethernet frame addressed to `gw0`.
pub fn frame(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp_frame(GW0_MAC, CLIENT_MAC, src, dst, sport, dport, flags, payload)
}

/// An established flow's data segment: ACK with 64 bytes of payload (what the independent
/// harness sent too).
pub fn ack64(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    frame(src, dst, 40_000, 80, ACK, &[0u8; 64])
}

/// The live-frame path's SYN (run once, so the flow exists) and data segment.
pub fn live_flow() -> (Vec<u8>, Vec<u8>) {
    let (c, v) = (IpAddr::V4(CLIENT4), IpAddr::V4(LIVE_VIP));
    (frame(c, v, 40_000, 80, SYN, &[]), ack64(c, v))
}

/// Flow `i` of a new-flow path: a source port, and a client address once the ports run out,
/// so that no two runs of a bench share a flow.
fn client_port(i: usize) -> (u32, u16) {
    let client = u32::try_from(i / PORTS).expect("fewer than 2^32 × 60000 flows");
    let port = 1024 + u16::try_from(i % PORTS).expect("below 60000");
    (client, port)
}

fn client4(i: usize) -> (IpAddr, u16) {
    let (c, p) = client_port(i);
    (IpAddr::V4(Ipv4Addr::from(u32::from(NEW_CLIENT4) + c)), p)
}

fn client6(i: usize) -> (IpAddr, u16) {
    let (c, p) = client_port(i);
    (
        IpAddr::V6(Ipv6Addr::from(u128::from(NEW_CLIENT6) + u128::from(c))),
        p,
    )
}

/// A PROXY v2 header from a trusted upstream naming a client (TCP4), then 64 bytes of request.
fn proxy_payload(port: u16) -> Vec<u8> {
    let mut h = vec![
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0, 12,
    ];
    h.extend_from_slice(&Ipv4Addr::new(198, 51, 100, 7).octets());
    h.extend_from_slice(&VIP4.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&81u16.to_be_bytes());
    h.extend_from_slice(&[0u8; 64]);
    h
}

/// Which program a path runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prog {
    /// The trivial `XDP_PASS` program every net figure is measured against.
    Baseline,
    Sluice,
}

/// How a path proves that each of its runs took it.
#[derive(Debug, Clone, Copy)]
pub enum Proof {
    /// The baseline: every run returned the expected action (it has no counters).
    Action,
    /// This counter of `sluice_xdp` grew by exactly the number of runs.
    Counter(Counter),
    /// The VIP's `accepted` PROXY outcome grew by exactly the number of runs.
    ProxyAccepted(&'static str),
}

impl Proof {
    pub fn name(self) -> String {
        match self {
            Proof::Action => "action".into(),
            Proof::Counter(c) => c.name().into(),
            Proof::ProxyAccepted(vip) => format!("{vip} accepted"),
        }
    }

    /// The proof's current value (`None` for [`Proof::Action`], which is checked per run).
    pub fn read(self, env: &PacketEnv) -> Result<Option<u64>> {
        Ok(match self {
            Proof::Action => None,
            Proof::Counter(c) => Some(env.counter(c)?),
            Proof::ProxyAccepted(vip) => Some(
                env.dp
                    .proxy_outcomes(vip)?
                    .into_iter()
                    .find(|(o, _)| *o == ProxyOutcome::Accepted)
                    .map_or(0, |(_, n)| n),
            ),
        })
    }
}

/// The bar issue 14 sets for a path's net time.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    None,
    /// Net ns at most this.
    NetAtMost(f64),
    /// Net at most this many times IPv4 established's net.
    TimesEstablished(f64),
}

/// When a path's setup frames run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// All of a chunk's setup frames first, then its measured frames: each measured frame
    /// finds its flow where a few thousand other flows' frames have since been (caches cold).
    Ahead,
    /// Each setup frame right before its measured frame: the flow's entries are still in the
    /// caches, as an established flow's are (the bench sends one established flow over and
    /// over). The stats pass then cannot tell the two frames apart and reports no figure.
    JustBefore,
}

/// One measured run: `setup` runs first, unmeasured (a PROXY flow's SYN), then `frame`.
pub struct Run {
    pub setup: Option<Vec<u8>>,
    pub frame: Vec<u8>,
}

/// One path of the table.
pub struct Path {
    pub name: &'static str,
    pub prog: Prog,
    /// Actions every run must return.
    pub actions: &'static [u32],
    pub proof: Proof,
    pub goal: Goal,
    /// Run once before the first measured run (an established flow's SYN).
    pub prepare: Option<Vec<u8>>,
    /// When the runs' setup frames run.
    pub setup: Setup,
    make: Box<dyn Fn(usize) -> Run + Send + Sync>,
    /// Index of the next run: new flows never repeat across chunks and passes.
    next: usize,
}

impl Path {
    /// The next `n` runs.
    pub fn runs(&mut self, n: usize) -> Vec<Run> {
        let runs = (self.next..self.next + n).map(&self.make).collect();
        self.next += n;
        runs
    }
}

fn same(frame: Vec<u8>) -> Box<dyn Fn(usize) -> Run + Send + Sync> {
    Box::new(move |_| Run {
        setup: None,
        frame: frame.clone(),
    })
}

/// A path with setup frames (if any) [`Setup::Ahead`].
fn path(
    name: &'static str,
    prog: Prog,
    actions: &'static [u32],
    proof: Proof,
    goal: Goal,
    prepare: Option<Vec<u8>>,
    make: Box<dyn Fn(usize) -> Run + Send + Sync>,
) -> Path {
    Path {
        name,
        prog,
        actions,
        proof,
        goal,
        prepare,
        setup: Setup::Ahead,
        make,
        next: 0,
    }
}

/// One flow from `client` to `vip`, its SYN sent once ahead, then its data segments.
fn established(name: &'static str, client: IpAddr, vip: IpAddr) -> Path {
    path(
        name,
        Prog::Sluice,
        FORWARDED,
        Proof::Counter(Counter::ConntrackHit),
        Goal::NetAtMost(90.0),
        Some(frame(client, vip, 40_000, 80, SYN, &[])),
        same(ack64(client, vip)),
    )
}

/// A SYN of a flow never seen on each run, from `client(i)` to `vip`.
fn new_flow(name: &'static str, client: fn(usize) -> (IpAddr, u16), vip: IpAddr) -> Path {
    path(
        name,
        Prog::Sluice,
        FORWARDED,
        Proof::Counter(Counter::FlowCreated),
        Goal::NetAtMost(350.0),
        None,
        Box::new(move |i| {
            let (c, p) = client(i);
            Run {
                setup: None,
                frame: frame(c, vip, p, 80, SYN, &[]),
            }
        }),
    )
}

/// A new flow's first segment to the PROXY VIP, a trusted sender's v2 header in front of its
/// data; its SYN is the setup frame.
fn proxy_first(name: &'static str, setup: Setup) -> Path {
    let vip = IpAddr::V4(VIP4);
    Path {
        setup,
        ..path(
            name,
            Prog::Sluice,
            FORWARDED,
            Proof::ProxyAccepted("proxy4"),
            Goal::TimesEstablished(1.5),
            None,
            Box::new(move |i| {
                let (c, p) = client4(i);
                Run {
                    setup: Some(frame(c, vip, p, 81, SYN, &[])),
                    frame: frame(c, vip, p, 81, ACK | PSH, &proxy_payload(p)),
                }
            }),
        )
    }
}

/// Every path, the baseline first. IPv4 established must stay in (PROXY's goal refers to it).
pub fn paths() -> Vec<Path> {
    let (c4, v4) = (IpAddr::V4(CLIENT4), IpAddr::V4(VIP4));
    vec![
        path(
            "baseline XDP_PASS",
            Prog::Baseline,
            &[XDP_PASS],
            Proof::Action,
            Goal::None,
            None,
            same(ack64(c4, v4)),
        ),
        path(
            "non-VIP pass",
            Prog::Sluice,
            &[XDP_PASS],
            Proof::Counter(Counter::PassNotVip),
            Goal::NetAtMost(40.0),
            None,
            same(ack64(c4, IpAddr::V4(NOT_A_VIP))),
        ),
        established("IPv4 established", c4, v4),
        new_flow("IPv4 new flow (SYN)", client4, v4),
        established("IPv6 established", IpAddr::V6(CLIENT6), IpAddr::V6(VIP6)),
        new_flow("IPv6 new flow (SYN)", client6, IpAddr::V6(VIP6)),
        proxy_first("PROXY v2 first segment", Setup::Ahead),
        // The same, its SYN just before it: the PROXY work alone, caches as warm as
        // established's (the row above adds what cold conntrack and PROXY-map entries cost).
        proxy_first("PROXY v2 first, warm", Setup::JustBefore),
        // Each run gets the SYN afresh (one syscall per run), so rewriting it into the RST
        // is fine.
        path(
            "edge SYN refused (RST)",
            Prog::Sluice,
            &[XDP_TX],
            Proof::Counter(Counter::TxRstClosed),
            Goal::None,
            None,
            same(frame(c4, IpAddr::V4(EDGE4), 40_000, 443, SYN, &[])),
        ),
    ]
}

/// The baseline's frame (IPv4 established's), for the `repeat` cross-check.
pub fn baseline_frame() -> Vec<u8> {
    ack64(IpAddr::V4(CLIENT4), IpAddr::V4(VIP4))
}

/// The non-VIP frame, for the `repeat` cross-check (a pass path leaves the frame alone).
pub fn non_vip_frame() -> Vec<u8> {
    ack64(IpAddr::V4(CLIENT4), IpAddr::V4(NOT_A_VIP))
}
