//! The standard test network: one client, one load-balancing gateway, N backends.
//!
//! ```text
//!  {p}-client            {p}-gw                      {p}-b{i}
//!  eth0 198.18.0.2 ---- gwc 198.18.0.1
//!       2001:db8::2         2001:db8::1
//!                           gwb{i} 198.18.{10+i}.1 ---- eth0 198.18.{10+i}.2
//!                                  2001:db8:{a+i}::1         2001:db8:{a+i}::2
//!                                                           lo   VIP4/32, VIP6/128
//!
//!  {p}-proxy (optional, [`Topology::add_proxy`]: an upstream balancer in front of sluice)
//!  eth0 198.18.1.2 ---- gwp 198.18.1.1
//!       2001:db8:0:1::2     2001:db8:0:1::1
//! ```
//!
//! The address plan is fixed (other code relies on it) and exposed as constants and
//! functions. Everything uses the benchmarking ranges `198.18.0.0/15` and `2001:db8::/32`.
//! The gateway routes between its subnets but has no route for the VIPs: steering VIP
//! traffic is the job of the XDP program under test.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};
use lb_userspace::config::XdpMode;
use lb_userspace::dataplane::Decap;

use crate::netns::NetNs;

/// IPv4 virtual service address; present on every backend's `lo`.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// IPv6 virtual service address; present on every backend's `lo`.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10);

/// The client's address on its link to the gateway.
pub const CLIENT_ADDR4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The client's IPv6 address on its link to the gateway.
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The gateway's address facing the client (the client's default route).
pub const GW_CLIENT_ADDR4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The gateway's IPv6 address facing the client (the client's default route).
pub const GW_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// The proxy host's address on its link to the gateway (see [`Topology::add_proxy`]).
pub const PROXY_ADDR4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The proxy host's IPv6 address on its link to the gateway.
pub const PROXY_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2);
/// The gateway's address facing the proxy host (the proxy's default route).
pub const GW_PROXY_ADDR4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The gateway's IPv6 address facing the proxy host (the proxy's default route).
pub const GW_PROXY_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1);

/// The client's interface towards the gateway.
pub const CLIENT_IFNAME: &str = "eth0";
/// The gateway's interface towards the client.
pub const GW_CLIENT_IFNAME: &str = "gwc";
/// The gateway's interface towards the proxy host.
pub const GW_PROXY_IFNAME: &str = "gwp";
/// The proxy host's interface towards the gateway.
pub const PROXY_IFNAME: &str = "eth0";
/// Each backend's interface towards the gateway.
pub const BACKEND_IFNAME: &str = "eth0";

/// MTU of the client link.
pub const CLIENT_MTU: u32 = 1500;
/// MTU of the backend links: room for the 20/40-byte tunnel header the gateway adds.
pub const BACKEND_MTU: u32 = 1600;

/// Backend indices must keep `10 + i` within an IPv4 octet.
pub const MAX_BACKENDS: usize = 200;

/// IPv4 address of backend `i` (`198.18.{10+i}.2`).
///
/// # Panics
/// If `i >= MAX_BACKENDS`.
pub fn backend_addr4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, backend_octet(i), 2)
}

/// The gateway's IPv4 address towards backend `i` (`198.18.{10+i}.1`).
///
/// # Panics
/// If `i >= MAX_BACKENDS`.
pub fn gw_backend_addr4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, backend_octet(i), 1)
}

/// IPv6 address of backend `i` (`2001:db8:{a+i}::2`, hex).
///
/// # Panics
/// If `i >= MAX_BACKENDS`.
pub fn backend_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, backend_hextet(i), 0, 0, 0, 0, 2)
}

/// The gateway's IPv6 address towards backend `i` (`2001:db8:{a+i}::1`, hex).
///
/// # Panics
/// If `i >= MAX_BACKENDS`.
pub fn gw_backend_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, backend_hextet(i), 0, 0, 0, 0, 1)
}

/// The gateway's interface towards backend `i` (`gwb{i}`).
pub fn gw_backend_ifname(i: usize) -> String {
    format!("gwb{i}")
}

fn backend_octet(i: usize) -> u8 {
    assert!(i < MAX_BACKENDS, "backend index {i} out of range");
    // Cannot fail: i < 200, so 10 + i <= 209.
    u8::try_from(10 + i).unwrap_or(u8::MAX)
}

fn backend_hextet(i: usize) -> u16 {
    assert!(i < MAX_BACKENDS, "backend index {i} out of range");
    // Cannot fail: i < 200.
    u16::try_from(0xa + i).unwrap_or(u16::MAX)
}

/// Client, gateway and backends in their own namespaces, wired per the address plan.
///
/// Dropping it deletes every namespace (the veths go with them), also on unwind.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    client: NetNs,
    gateway: NetNs,
    backends: Vec<NetNs>,
    proxy: Option<NetNs>,
}

impl Topology {
    /// Builds the network with namespaces `{prefix}-client`, `{prefix}-gw` and
    /// `{prefix}-b{i}`. Use a short prefix that is unique per test (e.g. "slt1") so
    /// tests can run in parallel.
    pub fn build(prefix: &str, backends: usize) -> Result<Self> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 16
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            bail!("topology prefix {prefix:?} must be 1-16 characters of [A-Za-z0-9_-]");
        }
        let client = host_ns(&format!("{prefix}-client"))?;
        let gateway = host_ns(&format!("{prefix}-gw"))?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ] {
            gateway.sysctl(key, value)?;
        }

        add_veth(
            &client,
            CLIENT_IFNAME,
            &gateway,
            GW_CLIENT_IFNAME,
            CLIENT_MTU,
        )?;
        configure_link(&client, CLIENT_IFNAME, CLIENT_ADDR4, CLIENT_ADDR6)?;
        configure_link(&gateway, GW_CLIENT_IFNAME, GW_CLIENT_ADDR4, GW_CLIENT_ADDR6)?;
        // A veth offloads TX checksums: the client's TCP/UDP packets would carry only the
        // pseudo-header sum plus skb metadata (CHECKSUM_PARTIAL) saying "finish me". XDP
        // frames have no such metadata, so once the gateway's XDP program redirects a
        // packet the backend sees a bad checksum and drops it. Real NICs deliver complete
        // checksums; make the client's veth do the same.
        client.run(&["ethtool", "-K", CLIENT_IFNAME, "tx", "off"])?;
        ip(&client, &format!("route add default via {GW_CLIENT_ADDR4}"))?;
        ip(
            &client,
            &format!("-6 route add default via {GW_CLIENT_ADDR6}"),
        )?;

        let mut topology = Self {
            prefix: prefix.to_owned(),
            client,
            gateway,
            backends: Vec::new(),
            proxy: None,
        };
        for _ in 0..backends {
            topology.add_backend()?;
        }
        Ok(topology)
    }

    /// Adds backend number `backend_count()` with the same plan and returns its index.
    pub fn add_backend(&mut self) -> Result<usize> {
        let i = self.backends.len();
        if i >= MAX_BACKENDS {
            bail!("at most {MAX_BACKENDS} backends fit the address plan");
        }
        let backend = host_ns(&format!("{}-b{i}", self.prefix))?;
        // Usual direct-server-return settings: only answer ARP for addresses on the
        // receiving interface, so the VIPs on `lo` are never announced.
        backend.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        backend.sysctl("net.ipv4.conf.all.arp_announce", "2")?;

        let gw_if = gw_backend_ifname(i);
        add_veth(&self.gateway, &gw_if, &backend, BACKEND_IFNAME, BACKEND_MTU)?;
        let (gw4, gw6) = (gw_backend_addr4(i), gw_backend_addr6(i));
        configure_link(&self.gateway, &gw_if, gw4, gw6)?;
        configure_link(&backend, BACKEND_IFNAME, backend_addr4(i), backend_addr6(i))?;
        ip(&backend, &format!("addr add {VIP4}/32 dev lo"))?;
        ip(&backend, &format!("-6 addr add {VIP6}/128 dev lo nodad"))?;
        ip(&backend, &format!("route add default via {gw4}"))?;
        ip(&backend, &format!("-6 route add default via {gw6}"))?;

        self.backends.push(backend);
        Ok(i)
    }

    /// Adds the proxy host `{prefix}-proxy` on its own link to the gateway (`gwp`), for an
    /// upstream balancer in front of sluice. Traffic from it to the VIPs enters the gateway on
    /// `gwp`, so the load balancer must be attached there too; the backends answer it directly
    /// through their default route, as they answer the client.
    pub fn add_proxy(&mut self) -> Result<&NetNs> {
        if self.proxy.is_some() {
            bail!("the topology has a proxy host already");
        }
        let proxy = host_ns(&format!("{}-proxy", self.prefix))?;
        add_veth(
            &proxy,
            PROXY_IFNAME,
            &self.gateway,
            GW_PROXY_IFNAME,
            CLIENT_MTU,
        )?;
        configure_link(&proxy, PROXY_IFNAME, PROXY_ADDR4, PROXY_ADDR6)?;
        configure_link(
            &self.gateway,
            GW_PROXY_IFNAME,
            GW_PROXY_ADDR4,
            GW_PROXY_ADDR6,
        )?;
        // Complete checksums, as on the client's link (see `build`).
        proxy.run(&["ethtool", "-K", PROXY_IFNAME, "tx", "off"])?;
        ip(&proxy, &format!("route add default via {GW_PROXY_ADDR4}"))?;
        ip(
            &proxy,
            &format!("-6 route add default via {GW_PROXY_ADDR6}"),
        )?;
        Ok(self.proxy.insert(proxy))
    }

    /// The proxy host, once [`Topology::add_proxy`] made it.
    ///
    /// # Panics
    /// If there is no proxy host.
    pub fn proxy(&self) -> &NetNs {
        self.proxy
            .as_ref()
            .expect("Topology::add_proxy was not called")
    }

    /// Adds another IPv4 address (a /32 next to the client's /24) to the client's interface, so
    /// one client namespace can act as several clients by binding to one of them.
    pub fn add_client_addr4(&self, addr: Ipv4Addr) -> Result<()> {
        ip(
            &self.client,
            &format!("addr add {addr}/32 dev {CLIENT_IFNAME}"),
        )
        .map(drop)
    }

    /// The prefix the namespace names start with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The client host.
    pub fn client(&self) -> &NetNs {
        &self.client
    }

    /// Attaches an `XDP_PASS` program to the client's interface (detached when the returned
    /// object drops). Frames the gateway answers with `XDP_TX` (the kernel-built RST of a
    /// closed node) reach the client's end of the veth pair only when that end runs an XDP
    /// program of its own; a real NIC needs nothing of the kind.
    pub fn client_xdp_pass(&self) -> Result<aya::Ebpf> {
        self.client.exec(|| -> Result<aya::Ebpf> {
            let mut ebpf = aya::EbpfLoader::new().load(lb_userspace::BASELINE_OBJECT)?;
            let prog: &mut aya::programs::Xdp = ebpf
                .program_mut("baseline_pass")
                .ok_or_else(|| anyhow::anyhow!("no baseline_pass program"))?
                .try_into()?;
            prog.load()?;
            prog.attach(CLIENT_IFNAME, aya::programs::XdpMode::Driver)?;
            Ok(ebpf)
        })?
    }

    /// The gateway, where the load balancer's XDP program runs.
    pub fn gateway(&self) -> &NetNs {
        &self.gateway
    }

    /// Backend `i`.
    ///
    /// # Panics
    /// If `i >= backend_count()`.
    pub fn backend(&self, i: usize) -> &NetNs {
        &self.backends[i]
    }

    /// `sluice_decap` in native mode on backend `i`'s [`BACKEND_IFNAME`] for `vips`, as the
    /// daemon's `sluice decap attach` does; detached when dropped. Panics if it cannot attach.
    pub fn attach_decap(&self, i: usize, vips: &[IpAddr]) -> Decap {
        self.backends[i]
            .exec(|| Decap::attach(BACKEND_IFNAME, XdpMode::Native, vips))
            .and_then(|r| Ok(r?))
            .unwrap_or_else(|err| panic!("attach sluice_decap on backend {i}: {err:#}"))
    }

    /// All backends, in index order.
    pub fn backends(&self) -> &[NetNs] {
        &self.backends
    }

    /// Number of backends.
    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// IPv4 address of backend `i`, see [`backend_addr4`].
    pub fn backend_addr4(&self, i: usize) -> Ipv4Addr {
        backend_addr4(i)
    }

    /// IPv6 address of backend `i`, see [`backend_addr6`].
    pub fn backend_addr6(&self, i: usize) -> Ipv6Addr {
        backend_addr6(i)
    }

    /// The gateway's interface towards the client (`gwc`).
    pub fn gw_client_ifname(&self) -> &'static str {
        GW_CLIENT_IFNAME
    }

    /// Each backend's interface towards the gateway (`eth0`).
    pub fn backend_ifname(&self) -> &'static str {
        BACKEND_IFNAME
    }
}

/// Creates a namespace with the sysctls every host of the plan shares. They are set
/// before any interface exists, so new interfaces inherit them through `default`.
fn host_ns(name: &str) -> Result<NetNs> {
    let ns = NetNs::create(name)?;
    for (key, value) in [
        // IPv6 addresses must be usable at once, not after duplicate address detection.
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        // The load balancer forwards asymmetrically (DSR); reverse-path filtering
        // would drop legitimate packets.
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        ns.sysctl(key, value)?;
    }
    Ok(ns)
}

/// Addresses an interface (/24 and /64) and brings it up; settings that only take
/// effect per interface are repeated here in case `default` was not inherited.
fn configure_link(ns: &NetNs, ifname: &str, addr4: Ipv4Addr, addr6: Ipv6Addr) -> Result<()> {
    ns.sysctl(&format!("net.ipv4.conf.{ifname}.rp_filter"), "0")?;
    ns.sysctl(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0")?;
    ip(ns, &format!("addr add {addr4}/24 dev {ifname}"))?;
    ip(ns, &format!("-6 addr add {addr6}/64 dev {ifname} nodad"))?;
    ip(ns, &format!("link set {ifname} up"))?;
    Ok(())
}

/// Creates a veth pair with one end in each namespace. It is made inside `a` with the
/// peer placed directly in `b`, never in the root namespace, so the short fixed names
/// (`eth0`, `gwc`, ...) cannot clash there or between topologies.
fn add_veth(a: &NetNs, name_a: &str, b: &NetNs, name_b: &str, mtu: u32) -> Result<()> {
    let peer = format!("peer name {name_b} mtu {mtu} netns {}", b.name());
    ip(a, &format!("link add {name_a} mtu {mtu} type veth {peer}")).map(drop)
}

/// `ip -n <ns> <cmd>` with `cmd` written as one line (no argument contains spaces).
fn ip(ns: &NetNs, cmd: &str) -> Result<String> {
    ns.ip(&cmd.split_whitespace().collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan() {
        assert_eq!(backend_addr4(0).to_string(), "198.18.10.2");
        assert_eq!(gw_backend_addr4(3).to_string(), "198.18.13.1");
        assert_eq!(backend_addr6(0).to_string(), "2001:db8:a::2");
        assert_eq!(backend_addr6(1).to_string(), "2001:db8:b::2");
        assert_eq!(gw_backend_addr6(6).to_string(), "2001:db8:10::1");
        assert_eq!(backend_addr4(MAX_BACKENDS - 1).to_string(), "198.18.209.2");
        assert_eq!(gw_backend_ifname(12), "gwb12");
        assert_eq!(VIP4.to_string(), "198.19.0.10");
        assert_eq!(VIP6.to_string(), "2001:db8:ff::10");
        assert_eq!(CLIENT_ADDR6.to_string(), "2001:db8::2");
        assert_eq!(GW_CLIENT_ADDR4.to_string(), "198.18.0.1");
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn backend_index_bounded() {
        let _ = backend_addr4(MAX_BACKENDS);
    }
}
