//! End-to-end L4 load balancing with real sockets: `sluice_xdp` on the gateway encapsulates
//! client flows to the backends, `sluice_decap` on every backend strips the tunnel header, and
//! the backends answer the client directly (DSR) through the gateway's kernel.
//!
//! Each test builds its own topology (unique namespace prefix) with `lb-userspace`'s
//! `Dataplane` loaded in the gateway namespace and a `Decap` on each backend's `eth0`;
//! everything is detached and removed on drop, also when a test fails. Needs root.

use std::fmt::Write as _;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use anyhow::Result;
use lb_common::{Counter, DecapCounter, BACKEND_DOWN, BACKEND_DRAINING, BACKEND_UP};
use lb_userspace::config::{Config, Protocol, XdpMode};
use lb_userspace::dataplane::{expected_shares, flow_key, Dataplane, Decap, Options};
use sluice_tests::topology::{backend_addr4, backend_addr6};
use sluice_tests::{
    backend_index, echo_greetings, http_backend, http_get_many, require_root, tcp_echo_backend,
    udp_ask, udp_backend, EchoConn, NetNs, ServerHandle, Topology, VIP4, VIP6,
};

const HTTP_PORT: u16 = 80;
const UDP_PORT: u16 = 5353;
const ECHO_PORT: u16 = 7;
/// Prime, > 100 × backends; small so that `apply` (one syscall per slot) stays quick.
const TABLE_SIZE: u32 = 4099;
/// The VIPs of [`config_text`]: (name, address, protocol).
const VIPS: [(&str, &str, &str); 5] = [
    ("web4", "198.19.0.10:80", "tcp"),
    ("dns4", "198.19.0.10:5353", "udp"),
    ("web6", "[2001:db8:ff::10]:80", "tcp"),
    ("echo4", "198.19.0.10:7", "tcp"),
    ("echo6", "[2001:db8:ff::10]:7", "tcp"),
];
/// Allowed deviation of a backend's connection count from its Maglev share.
const TOLERANCE: f64 = 0.25;

/// Fails the calling test unless we can create namespaces (CI runs as root).
/// The gateway config for backends `0..backends` (IPv4 VIPs use the backends' IPv4
/// addresses, IPv6 VIPs their IPv6 addresses).
fn config_text(backends: usize) -> String {
    let mut text = String::from(
        "interfaces = [\"gwc\"]\nconntrack_entries = 65536\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n",
    );
    for (name, address, protocol) in VIPS {
        let _ =
            write!(text,
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nprotocol = \"{protocol}\"\n\
             table_size = {TABLE_SIZE}\n"
        );
        for i in 0..backends {
            let backend: IpAddr = if address.starts_with('[') {
                backend_addr6(i).into()
            } else {
                backend_addr4(i).into()
            };
            let _ = write!(text, "[[vip.backend]]\naddress = \"{backend}\"\n");
        }
    }
    text
}

fn config(backends: usize) -> Config {
    let text = config_text(backends);
    Config::parse(&text).unwrap_or_else(|err| panic!("config does not parse: {err}\n{text}"))
}

fn backend_name(i: usize) -> String {
    format!("backend-{i}")
}

/// The address VIP `vip` (a name from [`VIPS`]) uses for backend `i`.
fn backend_addr(vip: &str, i: usize) -> IpAddr {
    if vip.ends_with('6') {
        backend_addr6(i).into()
    } else {
        backend_addr4(i).into()
    }
}

/// A topology with the gateway's `Dataplane` attached to `gwc` and a `Decap` plus http,
/// udp and echo servers on every backend. Fields drop in order: XDP programs and servers
/// go before the namespaces.
struct Lab {
    dp: Dataplane,
    decaps: Vec<Decap>,
    servers: Vec<ServerHandle>,
    topo: Topology,
}

impl Lab {
    fn start(prefix: &str, backends: usize) -> Self {
        let topo = Topology::build(prefix, backends).expect("build topology");
        let config = config(backends);
        let dp = topo
            .gateway()
            .exec(|| -> Result<Dataplane> {
                let mut dp = Dataplane::load(&Options::unpinned(
                    65536,
                    2 * TABLE_SIZE * u32::try_from(VIPS.len())?,
                ))?;
                dp.apply(&config)?;
                dp.attach(topo.gw_client_ifname(), XdpMode::Native)?;
                Ok(dp)
            })
            .and_then(|r| r)
            .expect("load, configure and attach sluice_xdp on the gateway");
        let mut lab = Self {
            dp,
            decaps: Vec::new(),
            servers: Vec::new(),
            topo,
        };
        for i in 0..backends {
            lab.start_backend(i);
        }
        lab
    }

    /// Attaches `sluice_decap` and starts the servers on backend `i`.
    fn start_backend(&mut self, i: usize) {
        let ns = self.topo.backend(i);
        let decap = self.topo.attach_decap(i, &[VIP4.into(), VIP6.into()]);
        self.decaps.push(decap);
        let name = backend_name(i);
        for server in [
            http_backend(ns, &name, HTTP_PORT),
            udp_backend(ns, &name, UDP_PORT),
            tcp_echo_backend(ns, &name, ECHO_PORT),
        ] {
            self.servers
                .push(server.unwrap_or_else(|err| panic!("servers on backend {i}: {err:#}")));
        }
    }

    /// Adds a backend to the topology, attaches `sluice_decap` and starts its servers, and
    /// applies the config that lists it on every VIP. Returns its index.
    fn add_backend(&mut self) -> usize {
        let i = self.topo.add_backend().expect("add a backend");
        self.start_backend(i);
        let config = config(self.topo.backend_count());
        self.dp
            .apply(&config)
            .expect("apply config with the new backend");
        i
    }

    fn client(&self) -> &NetNs {
        self.topo.client()
    }

    fn counter(&self, c: Counter) -> u64 {
        self.dp.counter(c).expect("read gateway counter")
    }

    fn decap_counter(&self, i: usize, c: DecapCounter) -> u64 {
        let counters = self.decaps[i].counters().expect("read decap counters");
        counters
            .into_iter()
            .find(|&(k, _)| k == c)
            .map_or(0, |(_, v)| v)
    }

    fn set_state(&mut self, vip: &str, i: usize, state: u8) {
        self.dp
            .set_backend_state(vip, backend_addr(vip, i), state)
            .unwrap_or_else(|err| panic!("set backend {i} of {vip} to {state}: {err}"));
    }

    /// The backend id conntrack holds for the client side `local` of a flow to `vip`.
    fn conntrack_backend(&self, local: SocketAddr, vip: SocketAddr) -> Option<u32> {
        let key = flow_key(
            local.ip(),
            local.port(),
            vip.ip(),
            vip.port(),
            Protocol::Tcp,
        );
        self.dp.flow_backend(&key)
    }

    /// Every drop counter of the gateway must be zero (a healthy run drops nothing).
    fn assert_no_drops(&self) {
        let counters = self.dp.counters().expect("read gateway counters");
        let drops: Vec<_> = counters
            .iter()
            .filter(|(c, v)| c.is_drop() && *v > 0)
            .map(|(c, v)| format!("{}={v}", c.name()))
            .collect();
        assert!(drops.is_empty(), "gateway dropped packets: {drops:?}");
    }

    fn print_counters(&self) {
        let counters = self.dp.counters().expect("read gateway counters");
        let shown: Vec<String> = counters
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(c, v)| format!("{}={v}", c.name()))
            .collect();
        println!("gateway counters: {}", shown.join(" "));
    }
}

/// Opens `count` HTTP connections to `vip` and checks that every one is answered, that each
/// backend's count is within [`TOLERANCE`] of its Maglev share, and that the gateway's own
/// per-backend new-flow counters agree with who answered.
fn check_spread(lab: &Lab, vip_name: &str, vip: SocketAddr, count: usize) {
    let flows_before = lab.counter(Counter::FlowCreated);
    let tally = http_get_many(lab.client(), vip, count, 16)
        .unwrap_or_else(|err| panic!("HTTP to {vip}: {err:#}"));
    let answered: usize = tally.values().sum();
    assert_eq!(answered, count, "answers {tally:?}");

    let config = config(lab.topo.backend_count());
    let vip_config = config
        .vips
        .iter()
        .find(|v| v.name == vip_name)
        .expect("VIP in config");
    let shares = expected_shares(vip_config).expect("expected shares");
    let statuses = lab.dp.backends().expect("backend status");
    println!("{vip_name} ({vip}), {count} connections:");
    println!(
        "  {:<10} {:<16} {:>6} {:>8} {:>9} {:>9}",
        "backend", "address", "conns", "share", "expected", "new_flows"
    );
    let mut failures = Vec::new();
    for (i, &(address, share)) in shares.iter().enumerate() {
        let name = backend_name(i);
        let got = tally.get(&name).copied().unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        let (got_f, want) = (got as f64, share * count as f64);
        let new_flows = statuses
            .iter()
            .find(|s| s.vip == vip_name && s.address == address)
            .map_or(0, |s| s.traffic.new_flows);
        println!(
            "  {name:<10} {address:<16} {got:>6} {:>7.1}% {:>8.1}% {new_flows:>9}",
            100.0 * got_f / f64::from(u32::try_from(count).unwrap_or(u32::MAX)),
            100.0 * share
        );
        if (got_f - want).abs() > TOLERANCE * want {
            failures.push(format!(
                "{name}: {got} connections, expected {want:.0} ± {:.0}",
                TOLERANCE * want
            ));
        }
        // Every flow the gateway recorded for a backend is a connection that backend
        // answered. The client may reuse a source port of an earlier connection (the
        // backend closes first, so the client keeps no TIME_WAIT); that SYN hits the old
        // entry and goes to the same backend without counting a new flow, so fewer is fine.
        if new_flows > got as u64 {
            failures.push(format!(
                "{name}: gateway counted {new_flows} new flows, backend answered only {got}"
            ));
        }
    }
    let unknown: Vec<&String> = tally
        .keys()
        .filter(|n| backend_index(n) >= shares.len())
        .collect();
    assert!(
        unknown.is_empty(),
        "answers from unknown backends {unknown:?}"
    );
    assert!(failures.is_empty(), "uneven spread: {failures:#?}");

    lab.print_counters();
    let created = lab.counter(Counter::FlowCreated) - flows_before;
    // Source-port reuse (see above) is rare: at most a tenth of the connections.
    assert!(
        created >= count as u64 * 9 / 10,
        "FlowCreated rose by {created}, expected nearly {count}"
    );
    assert_eq!(lab.counter(Counter::DropNoBackend), 0);
    lab.assert_no_drops();
    for i in 0..lab.topo.backend_count() {
        let decapsulated = lab.decap_counter(i, DecapCounter::Decapsulated);
        println!("  backend-{i} decapsulated {decapsulated} packets");
        assert!(decapsulated > 0, "backend {i} decapsulated nothing");
        assert_eq!(lab.decap_counter(i, DecapCounter::DropAdjust), 0);
    }
}

#[test]
fn ipv4_tcp_spreads_by_maglev() {
    require_root();
    let lab = Lab::start("sll1", 3);
    check_spread(&lab, "web4", SocketAddr::new(VIP4.into(), HTTP_PORT), 500);
}

#[test]
fn ipv6_tcp_spreads_by_maglev() {
    require_root();
    let lab = Lab::start("sll2", 3);
    check_spread(&lab, "web6", SocketAddr::new(VIP6.into(), HTTP_PORT), 500);
}

#[test]
fn established_flows_survive_backend_changes() {
    require_root();
    let mut lab = Lab::start("sll3", 3);
    let vips = [
        ("echo4", SocketAddr::new(VIP4.into(), ECHO_PORT)),
        ("echo6", SocketAddr::new(VIP6.into(), ECHO_PORT)),
    ];
    let mut conns: Vec<EchoConn> = vips
        .iter()
        .map(|&(name, vip)| {
            EchoConn::open(lab.client(), vip).unwrap_or_else(|err| panic!("{name}: {err:#}"))
        })
        .collect();
    for ((name, _), conn) in vips.iter().zip(&conns) {
        println!(
            "{name}: long-lived connection from {} on backend-{}",
            conn.local, conn.backend
        );
        let id = lab.dp.backend_id(name, backend_addr(name, conn.backend));
        assert!(id.is_some());
        assert_eq!(
            lab.conntrack_backend(conn.local, conn.vip),
            id,
            "{name}: conntrack disagrees with the backend that answered"
        );
    }

    // A fourth backend joins, and a backend serving neither connection goes down.
    let added = lab.add_backend();
    assert_eq!(added, 3);
    let serving: BTreeSet<usize> = conns.iter().map(|c| c.backend).collect();
    let down = (0..3)
        .find(|i| !serving.contains(i))
        .expect("3 backends, at most 2 serving");
    println!("added backend-{added}, marking backend-{down} down");
    for (name, _) in vips {
        lab.set_state(name, down, BACKEND_DOWN);
    }
    let statuses = lab.dp.backends().expect("backend status");
    for (name, _) in vips {
        let mine: Vec<_> = statuses.iter().filter(|s| s.vip == name).collect();
        assert_eq!(mine.len(), 4, "{name}: {mine:?}");
        for s in mine {
            let want = if s.address == backend_addr(name, down) {
                BACKEND_DOWN
            } else {
                BACKEND_UP
            };
            assert_eq!(s.state, want, "{name}: {s:?}");
        }
    }

    for ((name, _), conn) in vips.iter().zip(&mut conns) {
        let before = conn.backend;
        conn.exchange()
            .unwrap_or_else(|err| panic!("{name}: established connection broke: {err:#}"));
        assert_eq!(
            lab.conntrack_backend(conn.local, conn.vip),
            lab.dp.backend_id(name, backend_addr(name, before)),
            "{name}: the established flow moved"
        );
    }

    for (name, vip) in vips {
        let tally = echo_greetings(lab.client(), vip, 100)
            .unwrap_or_else(|err| panic!("{name}: new connections: {err:#}"));
        println!("{name}: 100 new connections after the change: {tally:?}");
        assert_eq!(tally.values().sum::<usize>(), 100);
        assert!(
            !tally.contains_key(&down),
            "{name}: new connections reached the down backend-{down}: {tally:?}"
        );
        assert!(
            tally.get(&added).copied().unwrap_or(0) > 0,
            "{name}: the new backend-{added} got no connections: {tally:?}"
        );
    }
    // The old connections still work after all that traffic.
    for ((name, _), conn) in vips.iter().zip(&mut conns) {
        conn.exchange()
            .unwrap_or_else(|err| panic!("{name}: established connection broke: {err:#}"));
    }
    lab.print_counters();
    lab.assert_no_drops();
    drop(conns);
}

#[test]
fn udp_flows_stick_to_one_backend() {
    require_root();
    let lab = Lab::start("sll4", 3);
    let vip = SocketAddr::new(VIP4.into(), UDP_PORT);
    let replies = udp_ask(lab.client(), vip, 50).expect("50 datagrams on one flow");
    assert_eq!(replies.len(), 50);
    let one: BTreeSet<&String> = replies.iter().collect();
    println!("one flow, 50 datagrams: answered by {one:?}");
    assert_eq!(one.len(), 1, "one UDP flow was answered by {one:?}");

    // Different client sockets are different flows, spread over the backends.
    let mut flows = BTreeMap::<String, usize>::new();
    for _ in 0..12 {
        let replies = udp_ask(lab.client(), vip, 3).expect("3 datagrams on a new flow");
        let names: BTreeSet<&String> = replies.iter().collect();
        assert_eq!(names.len(), 1, "one UDP flow was answered by {names:?}");
        *flows.entry(replies[0].clone()).or_default() += 1;
    }
    println!("12 flows: {flows:?}");
    assert!(flows.len() > 1, "12 UDP flows all went to {flows:?}");
    let created = lab.counter(Counter::FlowCreated);
    assert!(
        created >= 13,
        "FlowCreated = {created}, expected >= 13 flows"
    );
    lab.assert_no_drops();
}

#[test]
fn draining_backend_keeps_its_connections() {
    require_root();
    let mut lab = Lab::start("sll5", 3);
    let vip = SocketAddr::new(VIP4.into(), ECHO_PORT);
    let mut conn = EchoConn::open(lab.client(), vip).expect("open echo connection");
    let drained = conn.backend;
    println!(
        "connection from {} on backend-{drained}; draining it",
        conn.local
    );
    lab.set_state("echo4", drained, BACKEND_DRAINING);
    let status = lab.dp.backends().expect("backend status");
    let entry = status
        .iter()
        .find(|s| s.vip == "echo4" && s.address == backend_addr("echo4", drained))
        .expect("drained backend listed");
    assert_eq!(entry.state, BACKEND_DRAINING);

    conn.exchange()
        .expect("the connection to the draining backend keeps working");
    let tally = echo_greetings(lab.client(), vip, 60).expect("new connections");
    println!("60 new connections while backend-{drained} drains: {tally:?}");
    assert_eq!(tally.values().sum::<usize>(), 60);
    assert!(
        !tally.contains_key(&drained),
        "new connections reached the draining backend-{drained}: {tally:?}"
    );
    conn.exchange()
        .expect("the connection to the draining backend still works");
    assert_eq!(
        lab.conntrack_backend(conn.local, vip),
        lab.dp.backend_id("echo4", backend_addr("echo4", drained)),
    );
    // Back up: it takes new flows again.
    lab.set_state("echo4", drained, BACKEND_UP);
    let tally = echo_greetings(lab.client(), vip, 60).expect("new connections");
    println!("60 new connections after backend-{drained} is up again: {tally:?}");
    assert!(tally.contains_key(&drained), "{tally:?}");
    lab.assert_no_drops();
    drop(conn);
}

/// Dropping a `Lab` removes its namespaces (and with them the XDP programs and veths), and
/// nothing is ever attached in the root namespace. (That no test at all leaves anything
/// behind can only be checked after the whole run: `ip netns list` must be empty.)
#[test]
fn nothing_left_in_root_namespace() {
    require_root();
    {
        let _lab = Lab::start("sll6", 1);
    }
    let netns = Command::new("ip").args(["netns", "list"]).output();
    let netns = String::from_utf8_lossy(&netns.expect("ip netns list").stdout).into_owned();
    assert!(
        !netns.lines().any(|l| l.starts_with("sll6-")),
        "left behind: {netns}"
    );
    let links = Command::new("ip").args(["link"]).output().expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("xdp"),
        "XDP attached in the root namespace: {links}"
    );
}
