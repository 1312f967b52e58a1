//! A namespace with fixed routing and neighbour tables, and `sluice_xdp` / `sluice_decap` loaded
//! next to it, for `BPF_PROG_TEST_RUN` packet tests.
//!
//! ```text
//!  namespace (e.g. "slpkt"), forwarding on
//!   gw0 02:00:00:00:00:01  198.18.10.1/24 2001:db8:a::1/64  <-veth->  peer0 02:00:00:00:00:02
//!       neighbours 198.18.10.2, 2001:db8:a::2 -> 02:00:00:00:10:02 (permanent)
//!       198.18.10.3: no neighbour entry (NO_NEIGH)
//!   gw1 02:00:00:00:01:01  198.18.11.1/24 2001:db8:b::1/64  <-veth->  peer1 02:00:00:00:01:02
//!       neighbours 198.18.11.2, 2001:db8:b::2 -> 02:00:00:00:11:02 (permanent)
//!   no default route: anything else is unroutable
//! ```
//!
//! The program is never attached for these tests: each frame is fed to it with
//! `BPF_PROG_TEST_RUN`, with an `xdp_md` context naming the ingress interface, from a thread
//! inside the namespace (the kernel resolves the ifindex, and the program's FIB lookups run, in
//! the calling thread's namespace).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, ensure, Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};
use lb_common::{
    names, Counter, DecapCounter, DecapKey, FlowEntry, FlowKey, ProxyFlow, FAMILY_V4, FAMILY_V6,
};
use lb_userspace::config::{Config, KernelLog};
use lb_userspace::dataplane::resolver::{Resolver, Sources};
use lb_userspace::dataplane::{kernel_log, Dataplane, Options};

use crate::netns::NetNs;
use crate::packet_builder::Mac;

/// Gateway interfaces and their peers.
pub const GW0: &str = "gw0";
pub const GW1: &str = "gw1";
pub const GW0_MAC: Mac = [0x02, 0, 0, 0, 0x00, 0x01];
pub const PEER0_MAC: Mac = [0x02, 0, 0, 0, 0x00, 0x02];
pub const GW1_MAC: Mac = [0x02, 0, 0, 0, 0x01, 0x01];
pub const PEER1_MAC: Mac = [0x02, 0, 0, 0, 0x01, 0x02];
/// The static neighbours behind gw0 and gw1.
pub const NEIGH0_MAC: Mac = [0x02, 0, 0, 0, 0x10, 0x02];
pub const NEIGH1_MAC: Mac = [0x02, 0, 0, 0, 0x11, 0x02];
pub const NEIGH0_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
pub const NEIGH1_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 2);
pub const NEIGH0_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 2);
pub const NEIGH1_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 2);
/// On gw0's subnet but without a neighbour entry.
pub const UNRESOLVED_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
/// The client the packet tables send from, on gw0's side.
pub const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0x00, 0xc1];
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// MTU of both gateway interfaces (the veth default).
pub const MTU: usize = 1500;

/// Where the namespace's tables send an outer destination: the model the tests check the
/// program's FIB results against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// Resolved: leaves through `egress` with these MACs.
    Via {
        egress: &'static str,
        dst_mac: Mac,
        src_mac: Mac,
    },
    /// Routed through `egress`, but the neighbour is unknown.
    NoNeigh { egress: &'static str },
    /// No route at all.
    NoRoute,
}

/// The next hop for `addr` per the namespace's fixed tables.
pub fn next_hop(addr: IpAddr) -> NextHop {
    let on = |egress, mac| NextHop::Via {
        egress,
        dst_mac: mac,
        src_mac: if egress == GW0 { GW0_MAC } else { GW1_MAC },
    };
    match addr {
        IpAddr::V4(a) if a == NEIGH0_V4 => on(GW0, NEIGH0_MAC),
        IpAddr::V4(a) if a == NEIGH1_V4 => on(GW1, NEIGH1_MAC),
        IpAddr::V6(a) if a == NEIGH0_V6 => on(GW0, NEIGH0_MAC),
        IpAddr::V6(a) if a == NEIGH1_V6 => on(GW1, NEIGH1_MAC),
        IpAddr::V4(a) if a.octets()[..3] == [198, 18, 10] => NextHop::NoNeigh { egress: GW0 },
        IpAddr::V4(a) if a.octets()[..3] == [198, 18, 11] => NextHop::NoNeigh { egress: GW1 },
        IpAddr::V6(a) if a.segments()[..4] == [0x2001, 0xdb8, 0xa, 0] => {
            NextHop::NoNeigh { egress: GW0 }
        }
        IpAddr::V6(a) if a.segments()[..4] == [0x2001, 0xdb8, 0xb, 0] => {
            NextHop::NoNeigh { egress: GW1 }
        }
        _ => NextHop::NoRoute,
    }
}

/// `[encap]` section every gateway config of these tests uses.
pub const ENCAP_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 0);
pub const ENCAP_SOURCE_V4_PREFIX: u8 = 24;
pub const ENCAP_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0);
pub const ENCAP_SOURCE_V6_PREFIX: u8 = 96;

/// The outer source address for a flow hash, as specified: the host bits of the configured
/// prefix are taken from the hash, applied to the address's in-memory (network order) word.
/// For IPv6 only the last 32-bit word varies.
pub fn tunnel_source(v6: bool, hash: u32) -> IpAddr {
    let word = |b: [u8; 4]| u32::from_ne_bytes(b);
    if v6 {
        let host_bits = 128 - u32::from(ENCAP_SOURCE_V6_PREFIX);
        let mask = if host_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << host_bits) - 1
        };
        let mask_be = mask.to_be();
        let mut o = ENCAP_SOURCE_V6.octets();
        let last = word([o[12], o[13], o[14], o[15]]);
        let last = (last & !mask_be) | (hash & mask_be);
        o[12..].copy_from_slice(&last.to_ne_bytes());
        IpAddr::V6(o.into())
    } else {
        let mask_be = (u32::MAX >> ENCAP_SOURCE_V4_PREFIX).to_be();
        let base = word(ENCAP_SOURCE_V4.octets());
        let src = (base & !mask_be) | (hash & mask_be);
        IpAddr::V4(src.to_ne_bytes().into())
    }
}

/// The errno of a failed test run (`EINVAL` for frames the kernel refuses), if any.
pub fn errno(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
}

/// Runs `prog` once on `frame` with an `xdp_md` context naming `ingress_ifindex` (0: none).
/// Returns the XDP action and the frame as the program left it.
pub fn test_run(prog: &Xdp, frame: &[u8], ingress_ifindex: u32) -> Result<(u32, Vec<u8>)> {
    let (action, out, _) = test_run_repeat(prog, frame, ingress_ifindex, 1)?;
    Ok((action, out))
}

/// Runs `prog` `repeat` times in one `BPF_PROG_TEST_RUN`; also returns the kernel's mean time
/// per run. With `repeat > 1` every run after the first sees what the previous one left in the
/// buffer, so only programs that do not rewrite the packet measure what they seem to.
pub fn test_run_repeat(
    prog: &Xdp,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
) -> Result<(u32, Vec<u8>, std::time::Duration)> {
    let len = u32::try_from(frame.len()).context("frame too long")?;
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }: the kernel requires data_end == the frame length.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&len.to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 128];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        repeat,
        ..TestRunOptions::new()
    };
    let result = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    let size = usize::try_from(result.data_size_out).context("output size")?;
    ensure!(size <= out.len(), "output of {size} bytes truncated");
    out.truncate(size);
    Ok((result.return_value, out, result.duration))
}

/// Runs `prog` `repeat` times in live-frame mode (`BPF_F_TEST_XDP_LIVE_FRAMES`): each frame
/// the program returns `XDP_TX` or `XDP_REDIRECT` for is really sent (`XDP_TX` out of
/// `ingress_ifindex`), `XDP_PASS` goes up that interface's stack, in batches of `batch`
/// (at most 256). Returns the kernel's mean time per frame, sending included.
///
/// The kernel recycles the frame pages without copying `frame` into them again: a program
/// that rewrites the frame sees its own output (at the original offsets) on later runs.
pub fn test_run_live(
    prog: &Xdp,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
    batch: u32,
) -> Result<std::time::Duration> {
    let len = u32::try_from(frame.len()).context("frame too long")?;
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&len.to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    let opts = TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat,
        attrs: TestRunAttrs::new().xdp_live_frames(batch),
        ..TestRunOptions::new()
    };
    let result = prog
        .test_run(opts)
        .context("BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES")?;
    Ok(result.duration)
}

/// The namespace plus a loaded (not attached) `sluice_xdp` configured from a TOML text.
///
/// Dropping it unloads the program and deletes the namespace (also while a test unwinds).
pub struct PacketEnv {
    pub dp: Dataplane,
    pub config: Config,
    ifindexes: BTreeMap<&'static str, u32>,
    /// The program's conntrack map, opened by id for reading whole entries.
    conntrack: BpfHashMap<MapData, FlowKey, FlowEntry>,
    /// Its PROXY flow map, the same way.
    proxy_flows: BpfHashMap<MapData, FlowKey, ProxyFlow>,
    // Declared last: dropped after the program and its maps.
    ns: NetNs,
}

impl PacketEnv {
    /// Builds the namespace `ns_name`, loads `sluice_xdp` and applies `config_toml`.
    pub fn new(ns_name: &str, options: &Options, config_toml: &str) -> Result<Self> {
        let ns = setup_namespace(ns_name)?;
        let config = Config::parse(config_toml).context("parsing the test config")?;
        let mut dp = Dataplane::load(options).context("loading sluice_xdp")?;
        dp.apply(&config).context("applying the test config")?;
        let ifindexes = ns.exec(|| -> Result<BTreeMap<&'static str, u32>> {
            let mut m = BTreeMap::new();
            for name in [GW0, GW1] {
                let idx = nix::net::if_::if_nametoindex(name)
                    .with_context(|| format!("ifindex of {name}"))?;
                m.insert(name, idx);
            }
            Ok(m)
        })??;
        let conntrack = map_of(dp.program()?, names::CONNTRACK)?;
        let proxy_flows = map_of(dp.program()?, names::PROXY_FLOWS)?;
        Ok(Self {
            dp,
            config,
            ifindexes,
            conntrack,
            proxy_flows,
            ns,
        })
    }

    /// The whole conntrack entry of a flow (policy fields included), if there is one.
    pub fn flow_entry(&self, key: &FlowKey) -> Option<FlowEntry> {
        self.conntrack.get(key, 0).ok()
    }

    /// The PROXY record of a flow (real client, where its stream starts), if there is one.
    pub fn proxy_flow(&self, key: &FlowKey) -> Option<ProxyFlow> {
        self.proxy_flows.get(key, 0).ok()
    }

    /// Removes a flow's PROXY record, as the LRU does when it evicts it.
    pub fn forget_proxy_flow(&self, key: &FlowKey) -> Result<()> {
        let mut map: BpfHashMap<MapData, FlowKey, ProxyFlow> =
            map_of(self.dp.program()?, names::PROXY_FLOWS)?;
        map.remove(key).context("removing the PROXY record")?;
        Ok(())
    }

    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The ifindex of `gw0` or `gw1` in the namespace.
    ///
    /// # Panics
    /// For any other name.
    pub fn ifindex(&self, name: &str) -> u32 {
        self.ifindexes[name]
    }

    /// Runs `sluice_xdp` on `frame` as received on `gw0`.
    pub fn run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.run_on(GW0, frame)
    }

    /// Runs `sluice_xdp` on `frame` as received on `ingress`, inside the namespace.
    pub fn run_on(&self, ingress: &str, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let ifindex = *self
            .ifindexes
            .get(ingress)
            .with_context(|| format!("no interface {ingress}"))?;
        let prog = self.dp.program()?;
        self.ns.exec(|| test_run(prog, frame, ifindex))?
    }

    /// Every counter of `sluice_xdp` that says what happened to a packet, summed over CPUs.
    ///
    /// Leaves out `next_hop_cached` / `next_hop_fib`, which say only how the next hop was
    /// found (the same frame leaves either way): the packet tables assert exact deltas of what
    /// a frame did, whichever way. Read those two with [`PacketEnv::counter`].
    pub fn counters(&self) -> Result<BTreeMap<&'static str, u64>> {
        Ok(self
            .dp
            .counters()?
            .into_iter()
            .filter(|(c, _)| !matches!(c, Counter::NextHopCached | Counter::NextHopFib))
            .map(|(c, v)| (c.name(), v))
            .collect())
    }

    /// Fills the next-hop cache the way the daemon does: the real rtnetlink resolver, run
    /// against the namespace's tables. Without it (the default) every frame takes the
    /// `bpf_fib_lookup` path. Returns how many backends got a next hop.
    pub fn resolve_next_hops(&mut self) -> Result<usize> {
        let mut resolver = self.ns.exec(Resolver::new)??;
        let sources = Sources {
            v4: self.config.encap.source_v4.map(|p| p.network()),
            v6: self.config.encap.source_v6.map(|p| p.network()),
        };
        let found = resolver.resolve(&self.dp.backend_addresses(), sources)?;
        self.dp.set_next_hops(&found)?;
        Ok(found.values().filter(|h| h.is_some()).count())
    }

    pub fn counter(&self, c: Counter) -> Result<u64> {
        Ok(self.dp.counter(c)?)
    }
}

/// The LRU hash map `name` that `prog` uses, found among its maps by name (the kernel keeps the
/// first 15 bytes of a map's name).
fn map_of<V: aya::Pod>(prog: &Xdp, name: &str) -> Result<BpfHashMap<MapData, FlowKey, V>> {
    let full = name;
    let name = name.as_bytes();
    let short = &name[..name.len().min(15)];
    let ids = prog
        .info()?
        .map_ids()?
        .context("the kernel does not list a program's maps")?;
    for id in ids {
        let map = MapData::from_id(id)?;
        if map.info()?.name() == short {
            return Ok(Map::LruHashMap(map).try_into()?);
        }
    }
    bail!("sluice_xdp uses no map named {full}")
}

/// A namespace with `gw0` and `gw1` (veth pairs, forwarding on) and permanent neighbours for
/// the backends 198.18.10.2 and 198.18.11.2 (and their IPv6 twins), so `sluice_xdp`'s FIB
/// lookups succeed for frames test-run as received on `gw0`.
pub fn setup_namespace(name: &str) -> Result<NetNs> {
    let ns = NetNs::create(name)?;
    let ip = |cmd: &str| ns.ip(&cmd.split_whitespace().collect::<Vec<_>>());
    let macs = [
        (GW0, GW0_MAC),
        ("peer0", PEER0_MAC),
        (GW1, GW1_MAC),
        ("peer1", PEER1_MAC),
    ];
    ip("link add gw0 type veth peer name peer0")?;
    ip("link add gw1 type veth peer name peer1")?;
    for (dev, mac) in macs {
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ip(&format!("link set dev {dev} address {mac}"))?;
        ip(&format!("link set dev {dev} up"))?;
    }
    // Addresses on up links, without DAD: the prefix routes exist when `ip` returns.
    ip("addr add 198.18.10.1/24 dev gw0")?;
    ip("-6 addr add 2001:db8:a::1/64 dev gw0 nodad")?;
    ip("addr add 198.18.11.1/24 dev gw1")?;
    ip("-6 addr add 2001:db8:b::1/64 dev gw1 nodad")?;
    for (addr, mac, dev) in [
        ("198.18.10.2", "02:00:00:00:10:02", GW0),
        ("2001:db8:a::2", "02:00:00:00:10:02", GW0),
        ("198.18.11.2", "02:00:00:00:11:02", GW1),
        ("2001:db8:b::2", "02:00:00:00:11:02", GW1),
    ] {
        ip(&format!(
            "neigh add {addr} lladdr {mac} dev {dev} nud permanent"
        ))?;
    }
    // bpf_fib_lookup answers FWD_DISABLED unless the ingress device forwards.
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    for (dst, dev) in [
        ("198.18.10.2", GW0),
        ("198.18.11.2", GW1),
        ("2001:db8:a::2", GW0),
        ("2001:db8:b::2", GW1),
    ] {
        let route = ip(&format!("route get {dst}"))?;
        if !route.contains(&format!("dev {dev}")) {
            bail!("route to {dst} in {name} is not via {dev}: {route}");
        }
    }
    Ok(ns)
}

/// `sluice_decap` loaded from sluice's object with its own (small) maps, for test runs.
///
/// `lb_userspace::dataplane::Decap` attaches the program but exposes no handle on it, so this
/// loads the same object the same way (gateway maps shrunk to one entry).
pub struct DecapProgram {
    ebpf: aya::Ebpf,
    vips: BpfHashMap<MapData, DecapKey, u32>,
    counters: PerCpuArray<MapData, u64>,
}

impl DecapProgram {
    pub fn load(vips: &[IpAddr]) -> Result<Self> {
        let mut ebpf = kernel_log::loader(KernelLog::Off)
            .map_max_entries(names::CONNTRACK, 1)
            .map_max_entries(names::PROXY_FLOWS, 1)
            .map_max_entries(names::RINGS, 1)
            .load(lb_userspace::EBPF_OBJECT)
            .context("loading sluice's object")?;
        let prog: &mut Xdp = ebpf
            .program_mut(names::PROG_DECAP)
            .context("no sluice_decap in the object")?
            .try_into()?;
        prog.load().context("loading sluice_decap")?;
        let vips_map = ebpf
            .take_map(names::DECAP_VIPS)
            .context("no decap VIP map")?;
        let counters = ebpf
            .take_map(names::DECAP_COUNTERS)
            .context("no decap counters")?;
        let mut d = Self {
            vips: vips_map.try_into()?,
            counters: counters.try_into()?,
            ebpf,
        };
        for &vip in vips {
            d.add_vip(vip)?;
        }
        Ok(d)
    }

    pub fn add_vip(&mut self, vip: IpAddr) -> Result<()> {
        let (family, bytes) = match vip {
            IpAddr::V4(a) => (FAMILY_V4, a.octets().to_vec()),
            IpAddr::V6(a) => (FAMILY_V6, a.octets().to_vec()),
        };
        let key = DecapKey {
            addr_be: lb_common::flow_hash::addr_words(&bytes),
            family,
            _pad: [0; 3],
        };
        self.vips.insert(key, 1, 0)?;
        Ok(())
    }

    /// Runs `sluice_decap` on `frame` (no ingress interface needed).
    pub fn run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let prog: &Xdp = self
            .ebpf
            .program(names::PROG_DECAP)
            .context("no sluice_decap")?
            .try_into()?;
        test_run(prog, frame, 0)
    }

    pub fn counters(&self) -> Result<BTreeMap<&'static str, u64>> {
        DecapCounter::ALL
            .iter()
            .map(|&c| Ok((c.name(), self.counters.get(&(c as u32), 0)?.iter().sum())))
            .collect()
    }
}
