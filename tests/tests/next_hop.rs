//! The per-backend next-hop cache: `sluice_xdp` sends a backend's packets to the next hop the
//! daemon resolved from the kernel's route and neighbour tables, without a route lookup per
//! packet, and falls back to `bpf_fib_lookup` when there is none.
//!
//! - `cached_next_hop_decides_the_frame` (`BPF_PROG_TEST_RUN` in a [`PacketEnv`]): with no
//!   cached entry the route lookup decides (`next_hop_fib`); after the real resolver ran, the
//!   cached entry does (`next_hop_cached`), with `XDP_TX` or `XDP_REDIRECT` by egress; an
//!   entry that disagrees with the kernel's tables wins (so it really is the cache), its MTU is
//!   enforced, and clearing it brings the lookup back.
//! - `packets_follow_neighbour_and_route_changes` (real daemon, real TCP through the VIP): the
//!   backend's MAC changes, then its route moves to another interface, while connections are
//!   open; within [`BOUND`] of each change the daemon's cache says the new next hop, and a
//!   capture on the backend shows every later packet arriving with the new MAC / on the new
//!   interface, none at the old one, and every connection keeps working.
//!
//! - `first_flows_find_the_next_hop_resolved` (real daemon, IPv4 and IPv6 backends behind a
//!   router namespace, the gateway's neighbour tables flushed, no traffic): the daemon makes
//!   the kernel resolve the router itself, so within [`NEIGH_BOUND`] the gateway's entries are
//!   usable and cached, and the very first SYN of each family leaves by the cached next hop
//!   (`next_hop_fib` and `pass_no_neigh` stay 0).
//!
//! Run with `cargo test -p sluice-tests --test next_hop -- --test-threads=1`. Needs root.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lb_common::Counter;
use lb_userspace::config::XdpMode;
use lb_userspace::dataplane::{Decap, Hop, Options};
use nix::sys::socket::{
    recvfrom, setsockopt, socket, sockopt, AddressFamily, LinkAddr, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;
use sluice_tests::daemon::{remove_pins, Daemon, Scratch};
use sluice_tests::gateway_config::backend_tables;
use sluice_tests::packet_builder::{ethernet, tcp, Ipv4, Ipv6, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP};
use sluice_tests::packet_env::{
    PacketEnv, GW0_MAC, GW1, GW1_MAC, NEIGH0_MAC, NEIGH0_V4, NEIGH1_MAC,
};
use sluice_tests::topology::{backend_addr4, GW_CLIENT_IFNAME};
use sluice_tests::{require_root, tcp_echo_backend, EchoConn, NetNs, Topology, VIP4, VIP6};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
const XDP_DROP: u32 = 1;

/// How soon after a route or neighbour change the cache must say the new next hop (the
/// resolver follows rtnetlink events; its periodic re-check is every 2 s).
const BOUND: Duration = Duration::from_secs(1);

const PACKET_CONFIG: &str = r#"
interfaces = ["gw0"]
[encap]
source_v4 = "198.19.255.0/24"
source_v6 = "2001:db8:ffff::/96"
[[vip]]
name = "same-link"
address = "198.19.0.10:80"
[[vip.backend]]
address = "198.18.10.2"
[[vip]]
name = "other-link6"
address = "[2001:db8:ff::10]:80"
[[vip.backend]]
address = "2001:db8:b::2"
[[vip]]
name = "unresolved"
address = "198.19.0.11:80"
[[vip.backend]]
address = "198.18.10.3"
"#;

/// `sll_pkttype` of a frame this host sent.
const PACKET_OUTGOING: u8 = 4;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0c, 0x01];

fn frame(dst: IpAddr, sport: u16) -> Vec<u8> {
    let payload = [0u8; 64];
    match dst {
        IpAddr::V4(d) => {
            let s = Ipv4Addr::new(198, 18, 0, 2);
            let seg = tcp(s.into(), dst, sport, 80, 0x10, &payload);
            ethernet(
                GW0_MAC,
                CLIENT_MAC,
                ETH_P_IP,
                &Ipv4::new(IPPROTO_TCP, s, d).packet(&seg),
            )
        }
        IpAddr::V6(d) => {
            let s: std::net::Ipv6Addr = "2001:db8::2".parse().expect("address");
            let seg = tcp(s.into(), dst, sport, 80, 0x10, &payload);
            ethernet(
                GW0_MAC,
                CLIENT_MAC,
                ETH_P_IPV6,
                &Ipv6::new(IPPROTO_TCP, s, d).packet(&seg),
            )
        }
    }
}

/// Runs one frame; returns the action, the output's (dst, src) MACs and the growth of the two
/// next-hop counters `(cached, fib)`.
fn run(env: &PacketEnv, f: &[u8]) -> (u32, [u8; 6], [u8; 6], (u64, u64)) {
    let c = |k| env.counter(k).expect("counter");
    let (c0, f0) = (c(Counter::NextHopCached), c(Counter::NextHopFib));
    let (action, out) = env.run(f).expect("test run");
    let dst: [u8; 6] = out[..6].try_into().expect("6 bytes");
    let src: [u8; 6] = out[6..12].try_into().expect("6 bytes");
    (
        action,
        dst,
        src,
        (c(Counter::NextHopCached) - c0, c(Counter::NextHopFib) - f0),
    )
}

#[test]
fn cached_next_hop_decides_the_frame() {
    require_root();
    let mut env = PacketEnv::new(
        "slnhpkt",
        &Options::unpinned(4096, 3 * 2 * 65537),
        PACKET_CONFIG,
    )
    .expect("packet environment");
    let v4: IpAddr = "198.19.0.10".parse().expect("vip");
    let v6: IpAddr = "2001:db8:ff::10".parse().expect("vip");
    let unresolved: IpAddr = "198.19.0.11".parse().expect("vip");

    // Nothing cached yet: the route lookup decides, as before the cache existed.
    assert_eq!(
        run(&env, &frame(v4, 1000)),
        (XDP_TX, NEIGH0_MAC, GW0_MAC, (0, 1)),
        "no cached entry: bpf_fib_lookup"
    );

    // The real resolver against the namespace's tables: the two backends with a neighbour get
    // a next hop, 198.18.10.3 (no neighbour entry) does not.
    assert_eq!(env.resolve_next_hops().expect("resolve"), 2);
    assert_eq!(
        run(&env, &frame(v4, 1001)),
        (XDP_TX, NEIGH0_MAC, GW0_MAC, (1, 0)),
        "cached, egress = ingress: XDP_TX"
    );
    assert_eq!(
        run(&env, &frame(v6, 1002)),
        (XDP_REDIRECT, NEIGH1_MAC, GW1_MAC, (1, 0)),
        "cached, another egress: XDP_REDIRECT"
    );
    let before = env.counter(Counter::PassNoNeigh).expect("counter");
    let (action, _, _, grew) = run(&env, &frame(unresolved, 1003));
    assert_eq!(
        (action, grew),
        (XDP_PASS, (0, 1)),
        "unresolved: the route lookup, then the kernel"
    );
    assert_eq!(
        env.counter(Counter::PassNoNeigh).expect("counter") - before,
        1
    );

    // An entry that disagrees with the kernel's tables wins: the frame follows the cache.
    let gw1 = env.ifindex(GW1);
    let fake = Hop {
        ifindex: gw1,
        dst_mac: [0x02, 0xaa, 0, 0, 0, 0x01],
        src_mac: [0x02, 0xbb, 0, 0, 0, 0x01],
        mtu: 1500,
    };
    let backend: IpAddr = NEIGH0_V4.into();
    env.dp
        .set_next_hops(&HashMap::from([(backend, Some(fake))]))
        .expect("write the next hop");
    assert_eq!(
        run(&env, &frame(v4, 1004)),
        (XDP_REDIRECT, fake.dst_mac, fake.src_mac, (1, 0)),
        "the cached entry, not the tables"
    );
    // A rewrite goes to the other slot, and the frame sees it whole.
    let moved = Hop {
        dst_mac: [0x02, 0xaa, 0, 0, 0, 0x02],
        ..fake
    };
    env.dp
        .set_next_hops(&HashMap::from([(backend, Some(moved))]))
        .expect("write the next hop");
    assert_eq!(
        run(&env, &frame(v4, 1005)),
        (XDP_REDIRECT, moved.dst_mac, moved.src_mac, (1, 0))
    );

    // The cached MTU is enforced as the route lookup's is.
    env.dp
        .set_next_hops(&HashMap::from([(backend, Some(Hop { mtu: 100, ..moved }))]))
        .expect("write the next hop");
    let before = env.counter(Counter::DropMtu).expect("counter");
    let (action, _, _, grew) = run(&env, &frame(v4, 1006));
    assert_eq!(
        (action, grew),
        (XDP_DROP, (1, 0)),
        "outer packet over the MTU"
    );
    assert_eq!(env.counter(Counter::DropMtu).expect("counter") - before, 1);

    // Cleared: the route lookup again.
    env.dp
        .set_next_hops(&HashMap::from([(backend, None)]))
        .expect("clear the next hop");
    assert_eq!(
        run(&env, &frame(v4, 1007)),
        (XDP_TX, NEIGH0_MAC, GW0_MAC, (0, 1))
    );
    // The IPv6 backend kept its entry.
    assert_eq!(run(&env, &frame(v6, 1008)).3, (1, 0));
}

const ECHO_PORT: u16 = 7;
const MANAGEMENT: &str = "127.0.0.1:9041";
/// The second link between gateway and backend the route moves to.
const ALT_GW_IF: &str = "gwx";
const ALT_BACKEND_IF: &str = "eth1";
const ALT_GW_ADDR: &str = "198.18.250.1";
const ALT_BACKEND_ADDR: &str = "198.18.250.2";
const NEW_MAC: &str = "02:00:00:5e:00:22";

fn daemon_config(instance: &str, scratch: &Scratch) -> String {
    let mut text = format!(
        "instance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\n\
         conntrack_entries = 4096\n\n[admin]\nsocket = \"{}\"\n\n\
         [management]\naddress = \"{MANAGEMENT}\"\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\n\
         [[vip]]\nname = \"echo\"\naddress = \"{VIP4}:{ECHO_PORT}\"\ntable_size = 251\n",
        Daemon::socket_in(scratch.path()).display()
    );
    text.push_str(&backend_tables(1));
    text
}

fn mac_of(ns: &NetNs, ifname: &str) -> String {
    ns.run(&["cat", &format!("/sys/class/net/{ifname}/address")])
        .expect("read the MAC")
        .trim()
        .to_owned()
}

fn ifindex_of(ns: &NetNs, ifname: &str) -> usize {
    ns.run(&["cat", &format!("/sys/class/net/{ifname}/ifindex")])
        .expect("read the ifindex")
        .trim()
        .parse()
        .expect("an ifindex")
}

/// The backend's next hop as `sluice backends --json` shows it: `(interface, dst_mac)`.
fn next_hop(daemon: &Daemon) -> Option<(String, String)> {
    let rows = daemon.cli_json(&["backends"]).expect("sluice backends");
    let hop = rows.get(0)?.get("next_hop")?;
    Some((
        hop.get("interface")?.as_str()?.to_owned(),
        hop.get("dst_mac")?.as_str()?.to_owned(),
    ))
}

/// Polls until the cache says `want`; returns how long that took after `since`, or `None` if it
/// did not within `limit`.
fn wait_for(
    daemon: &Daemon,
    want: &(String, String),
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    loop {
        if next_hop(daemon).as_ref() == Some(want) {
            return Some(since.elapsed());
        }
        if since.elapsed() > limit {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn event(daemon: &Daemon, gateway: &NetNs, name: &str) -> u64 {
    let v = daemon
        .metric(
            gateway,
            MANAGEMENT.parse().expect("address"),
            "sluice_xdp_events_total",
            &[("event", name)],
        )
        .expect("metrics");
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "counts"
    )]
    let n = v as u64;
    n
}

/// A frame the backend received for the echo service (after its decap program): when, on
/// which interface, and to which MAC.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    ifindex: usize,
    dst_mac: [u8; 6],
}

/// Captures, in `ns`, every IPv4 TCP frame to `VIP4:7` that arrives, until `stop`.
fn capture(ns: &NetNs, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Seen>> {
    let handle = ns
        .enter(move || {
            let fd = socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::EthAll,
            )
            .expect("packet socket");
            setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))
                .expect("receive timeout");
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, Some(addr))) = recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) else {
                    continue;
                };
                let f = &buf[..n];
                // Incoming (not our own replies), IPv4, TCP, to VIP4:7.
                if addr.pkttype() == PACKET_OUTGOING || n < 14 + 20 + 4 {
                    continue;
                }
                let ip = &f[14..];
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                if f[12..14] != [0x08, 0x00]
                    || ip[9] != 6
                    || ip[16..20] != VIP4.octets()
                    || ip.len() < ihl + 4
                    || ip[ihl + 2..ihl + 4] != ECHO_PORT.to_be_bytes()
                {
                    continue;
                }
                seen.push(Seen {
                    at: Instant::now(),
                    ifindex: addr.ifindex(),
                    dst_mac: f[..6].try_into().expect("6 bytes"),
                });
            }
            seen
        })
        .expect("capture thread");
    // Give the socket time to open before traffic that must be seen.
    thread::sleep(Duration::from_millis(100));
    handle
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).expect("hex"))
        .collect();
    v.try_into().expect("6 bytes")
}

/// Exchanges on every connection from another thread until `stop`: traffic flowing through a
/// change. Returns the connections and how many exchanges each did.
fn traffic(
    mut conns: Vec<EchoConn>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(Vec<EchoConn>, usize)> {
    thread::spawn(move || {
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            for c in &mut conns {
                c.exchange()
                    .expect("a connection keeps working through the change");
            }
            rounds += 1;
        }
        (conns, rounds)
    })
}

#[test]
fn packets_follow_neighbour_and_route_changes() {
    require_root();
    let prefix = "slnh";
    let instance = format!("test-{prefix}");
    remove_pins(&instance);
    let topo = Topology::build(prefix, 1).expect("build topology");
    let (gw, b) = (topo.gateway(), topo.backend(0));
    // The second link, the backend's other way in (its own decap program: a redirect into a
    // veth needs XDP on the peer).
    gw.ip(&[
        "link",
        "add",
        ALT_GW_IF,
        "mtu",
        "1600",
        "type",
        "veth",
        "peer",
        "name",
        ALT_BACKEND_IF,
        "mtu",
        "1600",
        "netns",
        b.name(),
    ])
    .expect("second link");
    gw.ip(&[
        "addr",
        "add",
        &format!("{ALT_GW_ADDR}/24"),
        "dev",
        ALT_GW_IF,
    ])
    .expect("address");
    gw.ip(&["link", "set", ALT_GW_IF, "up"]).expect("up");
    b.ip(&[
        "addr",
        "add",
        &format!("{ALT_BACKEND_ADDR}/24"),
        "dev",
        ALT_BACKEND_IF,
    ])
    .expect("address");
    b.ip(&["link", "set", ALT_BACKEND_IF, "up"]).expect("up");
    b.sysctl(&format!("net.ipv4.conf.{ALT_BACKEND_IF}.rp_filter"), "0")
        .expect("rp_filter");
    let _decaps: Vec<Decap> = ["eth0", ALT_BACKEND_IF]
        .iter()
        .map(|i| {
            b.exec(|| Decap::attach(i, XdpMode::Native, &[VIP4.into()]))
                .and_then(|r| Ok(r?))
                .expect("attach sluice_decap")
        })
        .collect();
    let _echo = tcp_echo_backend(b, "backend-0", ECHO_PORT).expect("echo backend");
    let scratch = Scratch::create(prefix).expect("scratch directory");
    let daemon = Daemon::start(
        gw,
        scratch.path(),
        &instance,
        &daemon_config(&instance, &scratch),
    )
    .expect("start sluice run");
    let (eth0, eth1) = (ifindex_of(b, "eth0"), ifindex_of(b, ALT_BACKEND_IF));
    let old_mac = mac_of(b, "eth0");
    let alt_mac = mac_of(b, ALT_BACKEND_IF);

    let vip = SocketAddr::new(VIP4.into(), ECHO_PORT);
    let mut conns: Vec<EchoConn> = (0..3)
        .map(|_| EchoConn::open(topo.client(), vip).expect("echo connection"))
        .collect();
    // The daemon had the kernel resolve the backend at start (or the first packets did): the
    // cache fills from the neighbour event that followed.
    let start = Instant::now();
    assert!(
        wait_for(&daemon, &("gwb0".into(), old_mac.clone()), start, 3 * BOUND).is_some(),
        "the cache takes the resolved neighbour: {:?}\n{}",
        next_hop(&daemon),
        daemon.log_text()
    );
    let (cached, fib) = (
        event(&daemon, gw, "next_hop_cached"),
        event(&daemon, gw, "next_hop_fib"),
    );
    for c in &mut conns {
        c.exchange().expect("exchange");
    }
    assert!(event(&daemon, gw, "next_hop_cached") > cached);
    assert_eq!(
        event(&daemon, gw, "next_hop_fib"),
        fib,
        "no route lookup while the entry is valid"
    );

    // 1. The backend's MAC changes (a replaced NIC); the gateway learns the new one (here:
    //    `ip neigh replace`, as an ARP reply would), with traffic flowing.
    let stop_capture = Arc::new(AtomicBool::new(false));
    let captured = capture(b, stop_capture.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let flowing = traffic(conns, stop.clone());
    thread::sleep(Duration::from_millis(200));
    b.ip(&["link", "set", "eth0", "address", NEW_MAC])
        .expect("new MAC");
    gw.ip(&[
        "neigh",
        "replace",
        &backend_addr4(0).to_string(),
        "lladdr",
        NEW_MAC,
        "dev",
        "gwb0",
        "nud",
        "reachable",
    ])
    .expect("neighbour replaced");
    let mac_changed = Instant::now();
    let took = wait_for(
        &daemon,
        &("gwb0".into(), NEW_MAC.into()),
        mac_changed,
        BOUND,
    );
    assert!(
        took.is_some(),
        "the cache has the new MAC within {BOUND:?}: {:?}",
        next_hop(&daemon)
    );
    thread::sleep(BOUND + Duration::from_millis(300));

    // 2. The backend's route moves to the other link (via its address there).
    let route_moving = Instant::now();
    gw.ip(&[
        "neigh",
        "replace",
        ALT_BACKEND_ADDR,
        "lladdr",
        &alt_mac,
        "dev",
        ALT_GW_IF,
    ])
    .expect("neighbour on the second link");
    gw.ip(&[
        "route",
        "replace",
        &format!("{}/32", backend_addr4(0)),
        "via",
        ALT_BACKEND_ADDR,
        "dev",
        ALT_GW_IF,
    ])
    .expect("route moved");
    let route_moved = Instant::now();
    let took2 = wait_for(
        &daemon,
        &(ALT_GW_IF.into(), alt_mac.clone()),
        route_moved,
        BOUND,
    );
    assert!(
        took2.is_some(),
        "the cache follows the route within {BOUND:?}: {:?}",
        next_hop(&daemon)
    );
    thread::sleep(BOUND + Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut conns, rounds) = flowing.join().expect("connections kept working");
    // After the bounds, a last clean round on every connection.
    let fib = event(&daemon, gw, "next_hop_fib");
    for c in &mut conns {
        c.exchange().expect("exchange after the changes");
    }
    assert_eq!(
        event(&daemon, gw, "next_hop_fib"),
        fib,
        "the moved route is cached too"
    );
    stop_capture.store(true, Ordering::Relaxed);
    let seen = captured.join().expect("capture");
    println!(
        "MAC followed in {took:?}, route in {took2:?}; {rounds} rounds while changing, \
         {} frames captured",
        seen.len()
    );

    let (new_mac, old, alt) = (parse_mac(NEW_MAC), parse_mac(&old_mac), parse_mac(&alt_mac));
    let after_mac = mac_changed + BOUND;
    let after_route = route_moved + BOUND;
    // Between the MAC bound and the route change: all to the new MAC on eth0, none to the old.
    let window: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > after_mac && s.at < route_moving)
        .collect();
    assert!(!window.is_empty(), "traffic flowed after the MAC change");
    assert!(
        window
            .iter()
            .all(|s| s.dst_mac == new_mac && s.ifindex == eth0),
        "after {BOUND:?} every frame carries the new MAC: {:?}",
        window
            .iter()
            .filter(|s| s.dst_mac != new_mac)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        seen.iter()
            .filter(|s| s.at > after_mac)
            .all(|s| s.dst_mac != old),
        "nothing goes to the old MAC after the bound"
    );
    // After the route bound: all on the second link, to its MAC; nothing on eth0.
    let moved: Vec<&Seen> = seen.iter().filter(|s| s.at > after_route).collect();
    assert!(!moved.is_empty(), "traffic flowed after the route change");
    assert!(
        moved.iter().all(|s| s.ifindex == eth1 && s.dst_mac == alt),
        "after {BOUND:?} every frame arrives on {ALT_BACKEND_IF}: {} of {} did not",
        moved
            .iter()
            .filter(|s| s.ifindex != eth1 || s.dst_mac != alt)
            .count(),
        moved.len()
    );
    drop(daemon);
}

/// How soon after the daemon answers its next-hop neighbours must be resolved with no traffic
/// at all: one ARP or neighbour-solicitation round trip on a veth, plus IPv6's slower first
/// solicitation (up to a second seen), with room for a loaded machine.
const NEIGH_BOUND: Duration = Duration::from_secs(3);
/// The gateway's link to the router, and the router's to the backend.
const RTR_GW_IF: &str = "gwr";
const GW_RTR4: &str = "198.18.200.1";
const RTR_GW4: &str = "198.18.200.2";
const GW_RTR6: &str = "2001:db8:c8::1";
const RTR_GW6: &str = "2001:db8:c8::2";
const RTR_B4: &str = "198.18.201.1";
const B_RTR4: &str = "198.18.201.2";
const RTR_B6: &str = "2001:db8:c9::1";
const B_RTR6: &str = "2001:db8:c9::2";
const ROUTED_MANAGEMENT: &str = "127.0.0.1:9042";

fn routed_config(instance: &str, scratch: &Scratch) -> String {
    format!(
        "instance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\nxdp_mode = \"skb\"\n\
         conntrack_entries = 4096\n\n[admin]\nsocket = \"{}\"\n\n\
         [management]\naddress = \"{ROUTED_MANAGEMENT}\"\n\n[encap]\n\
         source_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"echo4\"\naddress = \"{VIP4}:{ECHO_PORT}\"\ntable_size = 251\n\
         [[vip.backend]]\naddress = \"{B_RTR4}\"\n\n\
         [[vip]]\nname = \"echo6\"\naddress = \"[{VIP6}]:{ECHO_PORT}\"\ntable_size = 251\n\
         [[vip.backend]]\naddress = \"{B_RTR6}\"\n",
        Daemon::socket_in(scratch.path()).display()
    )
}

/// A namespace with the settings of the topology's hosts (no DAD, no reverse-path filter).
fn routed_host(name: &str) -> NetNs {
    let ns = NetNs::create(name).expect("namespace");
    for (key, value) in [
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        ns.sysctl(key, value).expect("sysctl");
    }
    ns
}

/// `a`'s `a_if` (`a4`, `a6`) to `b`'s `b_if` (`b4`, `b6`), /24 and /64, MTU 1600, both up.
fn routed_link(
    a: &NetNs,
    a_if: &str,
    (a4, a6): (&str, &str),
    b: &NetNs,
    b_if: &str,
    (b4, b6): (&str, &str),
) {
    a.ip(&[
        "link",
        "add",
        a_if,
        "mtu",
        "1600",
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "mtu",
        "1600",
        "netns",
        b.name(),
    ])
    .expect("veth");
    for (ns, ifname, v4, v6) in [(a, a_if, a4, a6), (b, b_if, b4, b6)] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])
            .expect("address");
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            ifname,
            "nodad",
        ])
        .expect("address");
        ns.ip(&["link", "set", ifname, "up"]).expect("up");
    }
}

/// The gateway's neighbour entry for `address` on the router link: its state, or `None`.
fn neighbour_state(gw: &NetNs, address: &str) -> Option<String> {
    let out = gw
        .ip(&["neigh", "show", address, "dev", RTR_GW_IF])
        .expect("ip neigh show");
    out.split_whitespace().last().map(str::to_owned)
}

/// Every backend's cached next hop as `sluice backends --json` shows it: address → dst MAC.
fn cached_hops(daemon: &Daemon) -> HashMap<String, String> {
    let rows = daemon.cli_json(&["backends"]).expect("sluice backends");
    rows.as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| {
            let mac = r.get("next_hop")?.get("dst_mac")?.as_str()?.to_owned();
            Some((r["address"].as_str()?.to_owned(), mac))
        })
        .collect()
}

fn routed_counter(daemon: &Daemon, gw: &NetNs, name: &str, labels: &[(&str, &str)]) -> u64 {
    let v = daemon
        .metric(
            gw,
            ROUTED_MANAGEMENT.parse().expect("address"),
            name,
            labels,
        )
        .expect("metrics");
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "counts"
    )]
    let n = v as u64;
    n
}

/// IPv4 and IPv6 backends behind a router, the gateway's neighbour tables flushed, the daemon
/// started with no traffic at all: the daemon makes the kernel resolve the router (it used to
/// wait for a packet to do it, and the packets it passed to the stack for that were dropped),
/// so within [`NEIGH_BOUND`] the gateway's entries are usable and cached, and the very first
/// SYN of each family leaves by the cached next hop: no route lookup, nothing passed.
#[test]
fn first_flows_find_the_next_hop_resolved() {
    require_root();
    let prefix = "dn";
    let instance = format!("test-{prefix}");
    remove_pins(&instance);
    let topo = Topology::build(prefix, 0).expect("build topology");
    let gw = topo.gateway();
    let router = routed_host(&format!("{prefix}-rtr"));
    router.sysctl("net.ipv4.ip_forward", "1").expect("sysctl");
    router
        .sysctl("net.ipv6.conf.all.forwarding", "1")
        .expect("sysctl");
    let backend = routed_host(&format!("{prefix}-b0"));
    backend
        .sysctl("net.ipv4.conf.all.arp_ignore", "1")
        .expect("sysctl");
    backend
        .sysctl("net.ipv4.conf.all.arp_announce", "2")
        .expect("sysctl");
    routed_link(
        gw,
        RTR_GW_IF,
        (GW_RTR4, GW_RTR6),
        &router,
        "eth0",
        (RTR_GW4, RTR_GW6),
    );
    routed_link(
        &router,
        "rb0",
        (RTR_B4, RTR_B6),
        &backend,
        "eth0",
        (B_RTR4, B_RTR6),
    );
    for args in [
        vec!["route", "add", "198.18.201.0/24", "via", RTR_GW4],
        vec!["-6", "route", "add", "2001:db8:c9::/64", "via", RTR_GW6],
    ] {
        gw.ip(&args).expect("gateway route");
    }
    for args in [
        vec!["route", "add", "default", "via", GW_RTR4],
        vec!["-6", "route", "add", "default", "via", GW_RTR6],
    ] {
        router.ip(&args).expect("router route");
    }
    let (vip4, vip6) = (format!("{VIP4}/32"), format!("{VIP6}/128"));
    for args in [
        vec!["addr", "add", &vip4, "dev", "lo"],
        vec!["-6", "addr", "add", &vip6, "dev", "lo", "nodad"],
        vec!["route", "add", "default", "via", RTR_B4],
        vec!["-6", "route", "add", "default", "via", RTR_B6],
    ] {
        backend.ip(&args).expect("backend address or route");
    }
    let _decap = backend
        .exec(|| Decap::attach("eth0", XdpMode::Native, &[VIP4.into(), VIP6.into()]))
        .and_then(|r| Ok(r?))
        .expect("attach sluice_decap");
    let _echo = tcp_echo_backend(&backend, "backend-0", ECHO_PORT).expect("echo backend");

    // Nothing on the gateway knows the router's MAC, and no traffic will ask for it.
    gw.ip(&["neigh", "flush", "all"]).expect("flush");
    gw.ip(&["-6", "neigh", "flush", "all"]).expect("flush");
    for a in [RTR_GW4, RTR_GW6] {
        let state = neighbour_state(gw, a);
        assert!(
            matches!(state.as_deref(), None | Some("FAILED" | "INCOMPLETE")),
            "flushed: {a} is {state:?}"
        );
    }
    let scratch = Scratch::create(prefix).expect("scratch directory");
    let daemon = Daemon::start(
        gw,
        scratch.path(),
        &instance,
        &routed_config(&instance, &scratch),
    )
    .expect("start sluice run");
    let started = Instant::now();
    let router_mac = mac_of(&router, "eth0");
    let want: HashMap<String, String> = [
        (B_RTR4.to_owned(), router_mac.clone()),
        (B_RTR6.to_owned(), router_mac.clone()),
    ]
    .into();
    let took = loop {
        if cached_hops(&daemon) == want {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < NEIGH_BOUND,
            "no traffic, and after {NEIGH_BOUND:?} the cache has {:?} (want {want:?}); the \
             gateway has {RTR_GW4} {:?}, {RTR_GW6} {:?}\n{}",
            cached_hops(&daemon),
            neighbour_state(gw, RTR_GW4),
            neighbour_state(gw, RTR_GW6),
            daemon.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    };
    for a in [RTR_GW4, RTR_GW6] {
        let state = neighbour_state(gw, a);
        assert!(
            matches!(
                state.as_deref(),
                Some("REACHABLE" | "STALE" | "DELAY" | "PROBE")
            ),
            "the gateway resolved {a}: {state:?}"
        );
    }
    let resolves = routed_counter(&daemon, gw, "sluice_next_hop_neighbour_resolves_total", &[]);
    assert!(
        resolves >= 2,
        "one resolution asked per family at least: {resolves}"
    );

    // The first connection of each family, and nothing before it: its SYN (and everything
    // after) left by the cached next hop.
    let mut v4 = EchoConn::open(topo.client(), SocketAddr::new(VIP4.into(), ECHO_PORT))
        .unwrap_or_else(|e| panic!("first IPv4 connection: {e:#}\n{}", daemon.log_text()));
    let mut v6 = EchoConn::open(topo.client(), SocketAddr::new(VIP6.into(), ECHO_PORT))
        .unwrap_or_else(|e| panic!("first IPv6 connection: {e:#}\n{}", daemon.log_text()));
    v4.exchange().expect("IPv4 exchange");
    v6.exchange().expect("IPv6 exchange");
    let events = |e: &str| routed_counter(&daemon, gw, "sluice_xdp_events_total", &[("event", e)]);
    let passed_no_neigh = routed_counter(
        &daemon,
        gw,
        "sluice_xdp_passes_total",
        &[("reason", "no_neigh")],
    );
    let (cached, fib) = (events("next_hop_cached"), events("next_hop_fib"));
    println!(
        "next hops cached {took:?} after the start with no traffic; {resolves} resolutions \
         asked; first connections: {cached} packets by the cache, {fib} by the route lookup"
    );
    assert_eq!(
        (fib, passed_no_neigh),
        (0, 0),
        "no packet fell back to the route lookup or was passed for want of a neighbour"
    );
    assert!(cached >= 2, "both SYNs by the cached next hop: {cached}");
    drop(daemon);
}
