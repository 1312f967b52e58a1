//! The lab of the BGP tests (tests/tests/bgp*.rs): a router namespace running a real BGP
//! daemon (FRR or BIRD, behind [`Router`]), a client behind it, three gateway namespaces
//! running sluice with the same VIPs (same seed, table size and backends) and two backends
//! running `sluice_decap` with an echo service on the VIPs.
//!
//! ```text
//!                 {prefix}-rtr (AS 65000, the router daemon)
//!   g0 198.18.100.1 | g1 198.18.101.1 | g2 198.18.102.1     (2001:db8:10{g}::1)
//!        |                  |                  |
//!   {prefix}-gw0 .2    {prefix}-gw1 .2    {prefix}-gw2 .2    (AS 65001, sluice)
//! ```

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use lb_userspace::{config::XdpMode, dataplane::Decap};

use crate::{
    daemon::{Daemon, Scratch},
    tcp_echo_backend, EchoConn, NetNs, ServerHandle, VIP4, VIP6,
};

pub const GATEWAYS: usize = 3;
/// Short, so a killed gateway's routes go quickly: RFC 4271's smallest non-zero hold time.
pub const HOLD_SECS: u64 = 3;
pub const MANAGEMENT: &str = "127.0.0.1:9000";
pub const BACKENDS: usize = 2;
/// Room for the tunnel header on every link the gateways' encapsulated packets cross.
const MTU: u32 = 1600;
/// The echo service on the backends (and the VIPs' port).
pub const PORT: u16 = 80;
/// The router's AS; the gateways are AS 65001.
pub const ROUTER_AS: u32 = 65000;

pub fn router_addr4(g: usize) -> String {
    format!("198.18.{}.1", 100 + g)
}
pub fn gw_addr4(g: usize) -> String {
    format!("198.18.{}.2", 100 + g)
}
pub fn gw_addr6(g: usize) -> String {
    format!("2001:db8:10{g}::2")
}
fn backend_addr4(i: usize) -> String {
    format!("198.18.{}.2", 10 + i)
}
fn backend_addr6(i: usize) -> String {
    format!("2001:db8:{:x}::2", 0xa + i)
}

/// The VIPs' host routes as the routers name them.
pub fn vip4_prefix() -> String {
    format!("{VIP4}/32")
}
pub fn vip6_prefix() -> String {
    format!("{VIP6}/128")
}

/// The BGP daemon in the router namespace.
pub trait Router {
    /// The next hops the router forwards `prefix` to (empty when it has no route).
    fn next_hops(&self, ns: &NetNs, prefix: &str) -> Result<BTreeSet<String>>;
    /// The sessions, for a failure message.
    fn summary(&self, ns: &NetNs) -> String;
}

/// What differs between the gateways of a test, beyond addresses: lines added to `[bgp]` and
/// to its `[[bgp.peer]]`.
#[derive(Debug, Clone, Default)]
pub struct GatewayExtra {
    pub bgp: String,
    pub peer: String,
}

pub struct Lab<R: Router> {
    // Field order is drop order: the daemons, servers and the router daemon stop before
    // their namespaces go.
    pub gateways: Vec<Option<Daemon>>,
    _servers: Vec<ServerHandle>,
    _decaps: Vec<Decap>,
    pub routerd: R,
    _scratch: Vec<Scratch>,
    pub gw_ns: Vec<NetNs>,
    _backends: Vec<NetNs>,
    pub client: NetNs,
    pub router: NetNs,
}

pub fn ip(ns: &NetNs, cmd: &str) -> Result<String> {
    ns.ip(&cmd.split_whitespace().collect::<Vec<_>>())
}

fn host(name: &str) -> Result<NetNs> {
    let ns = NetNs::create(name)?;
    for (k, v) in [
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        ns.sysctl(k, v)?;
    }
    Ok(ns)
}

/// Gateway `g`'s config: instance `{prefix}-gw{g}`, the two VIPs, `[bgp]` peering with the
/// router on its link, plus `extra`.
pub fn gateway_config(prefix: &str, g: usize, scratch: &Scratch, extra: &GatewayExtra) -> String {
    format!(
        "instance = \"{prefix}-gw{g}\"\ninterfaces = [\"eth0\"]\nconntrack_entries = 65536\n\
         xdp_mode = \"skb\"\nshutdown_delay = \"4s\"\n\n\
         [admin]\nsocket = \"{socket}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP4}:{PORT}\"\ntable_size = 251\nseed = 7\n\
         [[vip.backend]]\naddress = \"{b0}\"\n[[vip.backend]]\naddress = \"{b1}\"\n\n\
         [[vip]]\nname = \"web6\"\naddress = \"[{VIP6}]:{PORT}\"\ntable_size = 251\nseed = 7\n\
         [[vip.backend]]\naddress = \"{b6_0}\"\n[[vip.backend]]\naddress = \"{b6_1}\"\n\n\
         [bgp]\nlocal_as = 65001\nrouter_id = \"{nh4}\"\nnext_hop_v4 = \"{nh4}\"\n\
         next_hop_v6 = \"{nh6}\"\n{bgp_extra}\n\
         [[bgp.peer]]\naddress = \"{peer}\"\nas = {ROUTER_AS}\nhold_time = {HOLD_SECS}\n{peer_extra}",
        socket = Daemon::socket_in(scratch.path()).display(),
        nh4 = gw_addr4(g),
        nh6 = gw_addr6(g),
        peer = router_addr4(g),
        b0 = backend_addr4(0),
        b1 = backend_addr4(1),
        b6_0 = backend_addr6(0),
        b6_1 = backend_addr6(1),
        bgp_extra = extra.bgp,
        peer_extra = extra.peer,
    )
}

/// A veth from the router (`rtr_if`, `.1` / `::1`) to `ns` (`eth0`, `.2` / `::2`), both up;
/// `ns` routes everything through the router.
fn link(router: &NetNs, rtr_if: &str, ns: &NetNs, net4: &str, net6: &str, mtu: u32) -> Result<()> {
    ip(
        router,
        &format!(
            "link add {rtr_if} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {}",
            ns.name()
        ),
    )?;
    ip(router, &format!("addr add {net4}.1/24 dev {rtr_if}"))?;
    ip(
        router,
        &format!("-6 addr add {net6}::1/64 dev {rtr_if} nodad"),
    )?;
    ip(router, &format!("link set {rtr_if} up"))?;
    ip(ns, &format!("addr add {net4}.2/24 dev eth0"))?;
    ip(ns, &format!("-6 addr add {net6}::2/64 dev eth0 nodad"))?;
    ip(ns, "link set eth0 up")?;
    ip(ns, &format!("route add default via {net4}.1"))?;
    ip(ns, &format!("-6 route add default via {net6}::1"))?;
    Ok(())
}

impl<R: Router> Lab<R> {
    /// The router, a client and two backends running `sluice_decap` and an echo service on
    /// the VIPs behind it, the router daemon (`start_router`), and the three gateways
    /// running sluice, each with `extra(g)` in its config. Namespaces are `{prefix}-...`.
    pub fn build(
        prefix: &str,
        start_router: impl FnOnce(&NetNs) -> Result<R>,
        extra: impl Fn(usize) -> GatewayExtra,
    ) -> Result<Lab<R>> {
        let router = host(&format!("{prefix}-rtr"))?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // ECMP by the 5-tuple, so the flows of one client spread over the gateways.
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        router.sysctl("net.ipv6.fib_multipath_hash_policy", "1")?;
        let client = host(&format!("{prefix}-cl"))?;
        link(&router, "cl", &client, "198.18.99", "2001:db8:99", 1500)?;
        // No TSO: segments stay MTU-sized, so each one fits the tunnel.
        client.run(&["ethtool", "-K", "eth0", "tx", "off"])?;
        let mut backends = Vec::new();
        let mut decaps = Vec::new();
        let mut servers = Vec::new();
        for i in 0..BACKENDS {
            let ns = host(&format!("{prefix}-b{i}"))?;
            ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            link(
                &router,
                &format!("b{i}"),
                &ns,
                &format!("198.18.{}", 10 + i),
                &format!("2001:db8:{:x}", 0xa + i),
                MTU,
            )?;
            ip(&ns, &format!("addr add {VIP4}/32 dev lo"))?;
            ip(&ns, &format!("-6 addr add {VIP6}/128 dev lo nodad"))?;
            let vips = [VIP4.into(), VIP6.into()];
            decaps.push(ns.exec(|| Decap::attach("eth0", XdpMode::Native, &vips))??);
            servers.push(tcp_echo_backend(&ns, &format!("backend-{i}"), PORT)?);
            backends.push(ns);
        }
        let mut gw_ns = Vec::new();
        for g in 0..GATEWAYS {
            let ns = host(&format!("{prefix}-gw{g}"))?;
            link(
                &router,
                &format!("g{g}"),
                &ns,
                &format!("198.18.{}", 100 + g),
                &format!("2001:db8:10{g}"),
                MTU,
            )?;
            gw_ns.push(ns);
        }
        let routerd = start_router(&router)?;
        let mut scratch = Vec::new();
        let mut gateways = Vec::new();
        for (g, ns) in gw_ns.iter().enumerate() {
            let instance = format!("{prefix}-gw{g}");
            let dir = Scratch::create(&instance)?;
            let config = gateway_config(prefix, g, &dir, &extra(g));
            gateways.push(Some(Daemon::start(ns, dir.path(), &instance, &config)?));
            scratch.push(dir);
        }
        Ok(Lab {
            gateways,
            _servers: servers,
            _decaps: decaps,
            routerd,
            _scratch: scratch,
            gw_ns,
            _backends: backends,
            client,
            router,
        })
    }

    pub fn gw(&self, g: usize) -> &Daemon {
        self.gateways[g].as_ref().expect("gateway stopped")
    }

    /// Waits (up to `limit`) until the router's next hops for both VIPs are exactly those of
    /// `gateways`; returns how long it took.
    pub fn wait_for(&self, gateways: &[usize], limit: Duration) -> Result<Duration> {
        let want4: BTreeSet<String> = gateways.iter().map(|&g| gw_addr4(g)).collect();
        let want6: BTreeSet<String> = gateways.iter().map(|&g| gw_addr6(g)).collect();
        let start = Instant::now();
        loop {
            let got4 = self.routerd.next_hops(&self.router, &vip4_prefix())?;
            let got6 = self.routerd.next_hops(&self.router, &vip6_prefix())?;
            if got4 == want4 && got6 == want6 {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                bail!(
                    "after {limit:?} the router has {got4:?} and {got6:?}, expected {want4:?} \
                     and {want6:?}; sessions: {}",
                    self.routerd.summary(&self.router)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// New flows `vip` took on each gateway still running (0 for a stopped one).
    pub fn new_flows(&self, vip: &str) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for d in &self.gateways {
            let Some(d) = d else {
                out.push(0);
                continue;
            };
            let stats = d.cli_json(&["stats"])?;
            let n = stats["vips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["vip"] == vip)
                .filter_map(|r| r["new_flows"].as_u64())
                .sum();
            out.push(n);
        }
        Ok(out)
    }

    /// Opens 300 echo connections from the client, two in three to the IPv4 VIP, and checks
    /// that every gateway took some of each family and every backend served some.
    pub fn open_spread_connections(&self) -> Result<Vec<EchoConn>> {
        use anyhow::Context as _;
        let v4: SocketAddr = (VIP4, PORT).into();
        let v6: SocketAddr = (VIP6, PORT).into();
        let mut conns = Vec::new();
        for k in 0..300 {
            let vip = if k % 3 == 2 { v6 } else { v4 };
            conns.push(
                EchoConn::open(&self.client, vip).with_context(|| format!("connection {k}"))?,
            );
        }
        let flows4 = self.new_flows("web")?;
        let flows6 = self.new_flows("web6")?;
        eprintln!("new flows per gateway: IPv4 {flows4:?}, IPv6 {flows6:?}");
        assert_eq!(flows4.iter().sum::<u64>(), 200, "{flows4:?}");
        assert_eq!(flows6.iter().sum::<u64>(), 100, "{flows6:?}");
        assert!(
            flows4.iter().chain(&flows6).all(|&n| n > 0),
            "{flows4:?} {flows6:?}"
        );
        for b in 0..BACKENDS {
            let served = conns.iter().filter(|c| c.backend == b).count();
            eprintln!("backend {b} serves {served} connections");
            assert!(served > 0, "backend {b} served none");
        }
        Ok(conns)
    }
}

/// One echo exchange on every connection; the number that failed.
pub fn broken(conns: &mut [EchoConn]) -> usize {
    conns
        .iter_mut()
        .map(EchoConn::exchange)
        .filter(Result::is_err)
        .count()
}
