//! `sluice_xdp` on the gateway: the program and its maps, loaded (or adopted from pins),
//! attached, pinned and closed, and the node's state in the node map. The writes that make the
//! maps say what the config says are in `writes`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::IterableMap as _,
    programs::{links::FdLink, links::PinnedLink, xdp::XdpLink, Xdp},
};
use lb_common::{
    names, proxy::ProxyOutcome, BackendEntry, FlowEntry, FlowKey, NodeEntry, ProxyFlow, Settings,
    TrafficStats, VipEntry, VipKey, VipStats,
};

use super::{
    error::map_err,
    kernel_log::{self, Reader},
    maps::{attach_xdp, load_xdp, take, xdp_mut, Arr, Cidrs, Hash, PerCpu},
    next_hop::NextHops,
    node::{self, ClosedReply, NodeSwitch},
    pins::{FreshPins, Pins, PreviousBackends},
    plan::{Adopted, State},
    DataplaneError,
};
use crate::{
    config::{KernelLog, XdpMode as Mode},
    shutdown::NodeState,
    EBPF_OBJECT,
};

/// Sizes fixed when the maps are created, and where to pin.
#[derive(Debug, Clone)]
pub struct Options {
    pub conntrack_entries: u32,
    /// Slots in the ring map; each VIP takes `2 × table_size`.
    pub ring_slots: u32,
    /// `(bpffs mount, pin directory)`: pin everything and adopt what a previous daemon left
    /// there. `None` keeps everything private to this process (tests, benchmarks).
    pub pins: Option<(PathBuf, PathBuf)>,
    /// What the program reports through aya-log (`kernel_log`).
    pub kernel_log: KernelLog,
}

impl Default for Options {
    fn default() -> Self {
        Options::unpinned(lb_common::CONNTRACK_ENTRIES, lb_common::DEFAULT_RING_SLOTS)
    }
}

impl Options {
    /// Capacity of the PROXY flow map: a quarter of conntrack. Only PROXY VIPs' flows use it,
    /// and as an LRU it gives up the records of the flows idle longest first (their verdict
    /// stays in conntrack; see `proxy_v2` in lb-ebpf).
    pub fn proxy_flow_entries(&self) -> u32 {
        (self.conntrack_entries / 4).max(1)
    }

    pub fn unpinned(conntrack_entries: u32, ring_slots: u32) -> Options {
        Options {
            conntrack_entries,
            ring_slots,
            pins: None,
            kernel_log: KernelLog::Off,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    pub vip: String,
    pub address: IpAddr,
    pub weight: u32,
    pub state: u8,
    pub id: u32,
    pub traffic: TrafficStats,
    pub next_hop: Option<super::CachedNextHop>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub client: SocketAddr,
    pub vip: SocketAddr,
    /// The VIP's name, when the VIP is still configured.
    pub vip_name: Option<String>,
    pub protocol: u8,
    pub backend: Option<IpAddr>,
    pub backend_id: u32,
    pub age: Duration,
    pub idle: Duration,
    /// The client a trusted PROXY header named (the TCP peer is then the proxy).
    pub real_client: Option<SocketAddr>,
    /// What the VIP's PROXY or client policy decided, once it has.
    pub proxy: Option<ProxyOutcome>,
}

pub struct Dataplane {
    ebpf: aya::Ebpf,
    pub(super) vips: Hash<VipKey, VipEntry>,
    pub(super) backends: Arr<BackendEntry>,
    pub(super) rings: Arr<u32>,
    pub(super) conntrack: Hash<FlowKey, FlowEntry>,
    pub(super) proxy_flows: Hash<FlowKey, ProxyFlow>,
    pub(super) settings: Arr<Settings>,
    pub(super) node: Arr<NodeEntry>,
    pub(super) cidrs: Cidrs,
    pub(super) proxy_stats: PerCpu<u64>,
    pub(super) vip_stats: PerCpu<VipStats>,
    pub(super) backend_stats: PerCpu<TrafficStats>,
    pub(super) counters: PerCpu<u64>,
    /// Each backend's cached next hop (see `next_hop`).
    pub(super) next_hops: NextHops,
    pub(super) state: State,
    pins: Option<Pins>,
    /// Links this daemon attached or adopted (pinned mode only).
    links: Vec<(String, FdLink)>,
    adopted: bool,
    /// Who refuses a closed node's SYNs, from the interfaces attached so far.
    pub(super) closed_reply: ClosedReply,
    /// The reports' reader until the daemon takes it (`kernel_log` on).
    kernel_log: Option<Reader>,
}

impl Dataplane {
    /// Creates (or, when pinned, reuses) the maps and loads `sluice_xdp`; nothing is attached
    /// yet, so a failure here leaves a running dataplane untouched.
    pub fn load(opts: &Options) -> Result<Dataplane, DataplaneError> {
        let pins = match &opts.pins {
            Some((bpffs, dir)) => Some(Pins::prepare(bpffs, dir.clone())?),
            None => None,
        };
        let vip_indexes = match &pins {
            Some(p) => p.previous_vip_indexes()?,
            None => HashMap::new(),
        };
        let mut loader = kernel_log::loader(opts.kernel_log);
        loader
            .map_max_entries(names::CONNTRACK, opts.conntrack_entries)
            .map_max_entries(names::PROXY_FLOWS, opts.proxy_flow_entries())
            .map_max_entries(names::RINGS, opts.ring_slots);
        let reused = pins.as_ref().map(|p| {
            (
                p.path(names::CONNTRACK),
                p.path(names::PROXY_FLOWS),
                p.path(names::BACKENDS),
            )
        });
        let fresh = match &reused {
            Some((conntrack, proxy_flows, backends)) => FreshPins::among(&[
                conntrack.as_path(),
                proxy_flows.as_path(),
                backends.as_path(),
            ]),
            None => FreshPins::among(&[]),
        };
        if let Some((conntrack, proxy_flows, backends)) = &reused {
            // Opened when present, created and pinned when not: flows and backend ids outlive
            // the daemon. A pin of an older layout has another name (`names::RETIRED`), so it
            // is never opened as this one; a previous daemon of that layout leaves its flows
            // behind, and `finish_pinning` removes its pin.
            loader
                .map_pin_path(names::CONNTRACK, conntrack.as_path())
                .map_pin_path(names::PROXY_FLOWS, proxy_flows.as_path())
                .map_pin_path(names::BACKENDS, backends.as_path());
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        load_xdp(&mut ebpf, names::PROG_XDP)?;
        let kernel_log = match opts.kernel_log {
            KernelLog::Off => None,
            _ => Some(Reader::take(&mut ebpf).map_err(DataplaneError::KernelLog)?),
        };
        let backends: Arr<BackendEntry> = take(&mut ebpf, names::BACKENDS)?;
        let previous = if pins.is_some() {
            PreviousBackends::from_entries(
                backends
                    .iter()
                    .filter_map(Result::ok)
                    .enumerate()
                    .map(|(i, e)| (u32::try_from(i).unwrap_or(u32::MAX), e)),
            )
        } else {
            PreviousBackends::default()
        };
        let adopted = !vip_indexes.is_empty() || previous.next_id > 0;
        let mut dp = Dataplane {
            vips: take(&mut ebpf, names::VIPS)?,
            backends,
            rings: take(&mut ebpf, names::RINGS)?,
            conntrack: take(&mut ebpf, names::CONNTRACK)?,
            proxy_flows: take(&mut ebpf, names::PROXY_FLOWS)?,
            settings: take(&mut ebpf, names::SETTINGS)?,
            node: take(&mut ebpf, names::NODE)?,
            cidrs: take(&mut ebpf, names::CIDRS)?,
            proxy_stats: take(&mut ebpf, names::PROXY_STATS)?,
            vip_stats: take(&mut ebpf, names::VIP_STATS)?,
            backend_stats: take(&mut ebpf, names::BACKEND_STATS)?,
            counters: take(&mut ebpf, names::COUNTERS)?,
            next_hops: NextHops::new(
                take(&mut ebpf, names::NEXT_HOPS)?,
                take(&mut ebpf, names::NEXT_HOP_LIVE)?,
            )?,
            ebpf,
            state: State::new(
                opts.ring_slots,
                Adopted {
                    vip_indexes,
                    backends: previous,
                },
            ),
            pins,
            links: Vec::new(),
            adopted,
            closed_reply: ClosedReply::Xdp,
            kernel_log,
        };
        // The node map is this daemon's own (never adopted from pins): a daemon started after
        // a shutdown that closed the node serves again.
        dp.set_node_state(NodeState::Serving)?;
        fresh.keep();
        Ok(dp)
    }

    /// The reader of the program's aya-log reports, when `kernel_log` is on; the caller runs
    /// its `forward` on the runtime.
    pub fn take_kernel_log(&mut self) -> Option<Reader> {
        self.kernel_log.take()
    }

    /// A previous daemon's pinned dataplane was found and is being taken over.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(Pins::dir)
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> Result<&Xdp, DataplaneError> {
        self.ebpf
            .program(names::PROG_XDP)
            .ok_or(DataplaneError::MissingProgram(names::PROG_XDP))?
            .try_into()
            .map_err(|error| DataplaneError::Program {
                name: names::PROG_XDP,
                error,
            })
    }

    /// Attaches `sluice_xdp` to `iface` in the calling thread's network namespace. Unpinned, it
    /// is detached when the `Dataplane` is dropped. Pinned, an interface that already has a
    /// pinned link gets the new program through that link, atomically; otherwise a new link is
    /// created and pinned.
    pub fn attach(&mut self, iface: &str, mode: Mode) -> Result<(), DataplaneError> {
        let reply = ClosedReply::for_interface(iface, mode == Mode::Native);
        if reply == ClosedReply::Kernel {
            tracing::info!(
                iface,
                "virtual interface in native mode: a closed node's SYNs are refused by the \
                 kernel (XDP_TX frames reach a veth peer only if it runs XDP too)"
            );
        }
        self.closed_reply = self.closed_reply.and(reply);
        self.set_node_state(self.node_state()?)?;
        let Some(pins) = &self.pins else {
            return attach_xdp(&mut self.ebpf, names::PROG_XDP, iface, mode);
        };
        let path = pins.link_path(iface, mode);
        let link_err = |error: String| DataplaneError::Link {
            iface: iface.to_string(),
            error,
        };
        let pinned = path.exists();
        let other = match mode {
            Mode::Native => Mode::Skb,
            Mode::Skb => Mode::Native,
        };
        if !pinned && pins.link_path(iface, other).exists() {
            // A kept dataplane attached in the other mode: the kernel runs one mode at a time,
            // so the old link goes first and XDP pauses on this interface until the new one is
            // attached (conntrack, and so every flow, stays).
            tracing::warn!(
                iface,
                from = other.name(),
                to = mode.name(),
                "re-attaching in the configured xdp_mode"
            );
            pins.unlink(iface, other)?;
        }
        let prog = xdp_mut(&mut self.ebpf, names::PROG_XDP)?;
        let program_err = |error| DataplaneError::Program {
            name: names::PROG_XDP,
            error,
        };
        let id = if pinned {
            let link = PinnedLink::from_pin(&path).map_err(|e| link_err(e.to_string()))?;
            let link =
                XdpLink::try_from(FdLink::from(link)).map_err(|e| link_err(e.to_string()))?;
            prog.attach_to_link(link).map_err(program_err)?
        } else {
            let kernel_mode = match mode {
                Mode::Native => aya::programs::XdpMode::Driver,
                Mode::Skb => aya::programs::XdpMode::Skb,
            };
            attach_retrying(prog, iface, kernel_mode)?
        };
        let link = FdLink::try_from(prog.take_link(id).map_err(program_err)?).map_err(|_| {
            link_err("the kernel attached without a bpf_link, which pinning needs".into())
        })?;
        let link = if pinned {
            link
        } else {
            FdLink::from(link.pin(&path).map_err(|e| link_err(e.to_string()))?)
        };
        self.links.push((iface.to_string(), link));
        Ok(())
    }

    /// Pins the program and the maps created by this daemon, replacing a previous daemon's
    /// (call after every interface is attached, so the old ones are no longer in use), and
    /// detaches interfaces that a previous daemon linked but the config no longer names.
    pub fn finish_pinning(&mut self, interfaces: &[String]) -> Result<(), DataplaneError> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        for (iface, mode) in pins.linked_interfaces() {
            if !interfaces.contains(&iface) {
                tracing::info!(iface, "detaching an interface the config no longer names");
                pins.unlink(&iface, mode)?;
            }
        }
        let prog = xdp_mut(&mut self.ebpf, names::PROG_XDP)?;
        pins.replace(names::PROG_XDP, |p| prog.pin(p))?;
        pins.replace(names::VIPS, |p| self.vips.map().pin(p))?;
        pins.replace(names::RINGS, |p| self.rings.map().pin(p))?;
        pins.replace(names::SETTINGS, |p| self.settings.map().pin(p))?;
        pins.replace(names::NODE, |p| self.node.map().pin(p))?;
        pins.replace(names::VIP_STATS, |p| self.vip_stats.map().pin(p))?;
        pins.replace(names::BACKEND_STATS, |p| self.backend_stats.map().pin(p))?;
        pins.replace(names::COUNTERS, |p| self.counters.map().pin(p))?;
        pins.replace(names::CIDRS, |p| self.cidrs.map().pin(p))?;
        pins.replace(names::PROXY_STATS, |p| self.proxy_stats.map().pin(p))?;
        pins.replace(names::NEXT_HOPS, |p| self.next_hops.hops_map().map().pin(p))?;
        pins.replace(names::NEXT_HOP_LIVE, |p| {
            self.next_hops.live_map().map().pin(p)
        })?;
        // No program uses an older layout's conntrack any more: free its memory.
        for name in names::RETIRED {
            pins.remove(name)?;
        }
        Ok(())
    }

    /// Stops this daemon's ownership. With `keep`, everything stays pinned and XDP keeps
    /// forwarding without a daemon; without, the pins are removed, which detaches the program
    /// and frees the maps (conntrack included). Afterwards this `Dataplane` owns nothing.
    pub fn close(&mut self, keep: bool) -> Result<(), DataplaneError> {
        let links = std::mem::take(&mut self.links);
        self.next_hops.freeze();
        let Some(pins) = self.pins.take() else {
            return Ok(());
        };
        if keep {
            // Nobody follows route and neighbour changes without a daemon: the kept program
            // looks routes up itself until the next daemon resolves them again.
            return self.next_hops.clear_all();
        }
        let result = pins.remove_all();
        // Closing the last descriptor of an unpinned link detaches it.
        drop(links);
        result
    }

    /// Tells `sluice_xdp` the node's state; takes effect with the next packet.
    pub fn set_node_state(&mut self, state: NodeState) -> Result<(), DataplaneError> {
        self.node
            .set(0, node::entry(state, self.closed_reply), 0)
            .map_err(map_err(names::NODE))
    }

    /// The node's state as the kernel map holds it.
    pub fn node_state(&self) -> Result<NodeState, DataplaneError> {
        let entry = self.node.get(&0, 0).map_err(map_err(names::NODE))?;
        node::from_code(entry.state).ok_or(DataplaneError::BadNodeState(entry.state))
    }

    /// A handle on the node map for [`NodeSwitch::set`]; take it once every interface is
    /// attached (who answers a closed node's SYNs depends on them).
    pub fn node_switch(&self) -> Result<NodeSwitch, DataplaneError> {
        NodeSwitch::open(&self.node, self.closed_reply)
    }
}

/// Attaches `prog` to `iface`. Right after another mode's link was unpinned the kernel may not
/// have released it yet (a link's last reference is dropped asynchronously), which it reports
/// as busy: tried again for up to a second.
fn attach_retrying(
    prog: &mut aya::programs::Xdp,
    iface: &str,
    mode: aya::programs::XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId, DataplaneError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match prog.attach(iface, mode) {
            Ok(id) => return Ok(id),
            Err(error) if std::time::Instant::now() < deadline && is_busy(&error) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => {
                return Err(DataplaneError::Attach {
                    iface: iface.to_string(),
                    error,
                })
            }
        }
    }
}

fn is_busy(error: &aya::programs::ProgramError) -> bool {
    let text = error.to_string();
    let source = std::error::Error::source(error).map(ToString::to_string);
    [Some(text), source]
        .iter()
        .flatten()
        .any(|t| t.contains("busy") || t.contains("exists") || t.contains("EEXIST"))
}
