//! Each backend's next hop from the kernel's own tables over rtnetlink: the route the kernel
//! would take to the backend (`RTM_GETROUTE` with the tunnel's destination and, when the
//! kernel accepts it, its source, so policy routing on the source is honoured), the
//! neighbour entry of that route's gateway (or of the backend itself on a direct route), and
//! the egress link's own MAC and MTU. No `ip` is spawned.
//!
//! Only what `bpf_fib_lookup` would also use becomes a cached next hop: a unicast route with a
//! single next hop on an Ethernet link that is up, and a neighbour whose link-layer address
//! is usable (`REACHABLE`, `STALE`, `DELAY`, `PROBE`, `PERMANENT`, `NOARP`). Anything else
//! (no route, multipath, `INCOMPLETE`/`FAILED` neighbour, no entry yet) is `None`, and the
//! kernel keeps looking the route up per packet, passing packets to the stack while the
//! neighbour is unresolved.
//!
//! Passing is not enough to get the neighbour resolved: the stack does not forward VIP traffic,
//! so nothing would ever ask for that address (the first flows of a fresh gateway failed until
//! something else, a ping, resolved it). So the resolver asks the kernel itself: a next hop
//! with no entry, or a `NONE`/`FAILED`/`STALE` one, gets an `RTM_NEWNEIGH` with `NTF_USE` (what
//! `ip neigh replace ... use` sends), the kernel's "a packet wants this neighbour" trigger. It
//! creates a missing entry and sends the ARP request / neighbour solicitation; a `STALE` entry
//! (which XDP traffic never confirms: the kernel does not see those packets) goes through
//! `DELAY`/`PROBE` back to `REACHABLE` instead of aging out. The answer arrives as a neighbour
//! event, which makes the caller resolve again. `INCOMPLETE` is left alone: the kernel is
//! resolving it already (a trigger would do nothing), and it ends `REACHABLE` or `FAILED`.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_MULTIPART, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::{
    link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::next_hop::Hop;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("rtnetlink socket: {0} (is this a Linux kernel with rtnetlink?)")]
    Socket(io::Error),
    #[error("rtnetlink answer to {request} could not be parsed: {error}")]
    Decode {
        request: &'static str,
        error: netlink_packet_core::DecodeError,
    },
    #[error("the kernel refused {request}: {error}")]
    Kernel {
        request: &'static str,
        error: io::Error,
    },
}

/// The tunnel's outer source for each family (the base of `encap.source_v4/v6`), asked along
/// with the destination so source-based policy routing picks what it picks for the packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// One rtnetlink request socket.
pub struct Resolver {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Sources the kernel refused in a route request (an IPv4 source that is not a local
    /// address is refused): asked without them from then on.
    refused_sources: Sources,
    /// Neighbour resolutions this resolver made the kernel start (`NTF_USE` requests it
    /// acknowledged), since it was created.
    triggered: u64,
}

/// One neighbour entry: its state and link-layer address, if it has one.
#[derive(Debug, Clone, Copy)]
struct Neighbour {
    state: NeighbourState,
    mac: Option<[u8; 6]>,
}

/// A link's own data, from one dump.
#[derive(Debug, Clone)]
struct Link {
    mac: Option<[u8; 6]>,
    mtu: u32,
    usable: bool,
}

impl Resolver {
    pub fn new() -> Result<Resolver, ResolveError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(ResolveError::Socket)?;
        socket.bind_auto().map_err(ResolveError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(ResolveError::Socket)?;
        Ok(Resolver {
            socket,
            seq: 0,
            buf: vec![0; 1 << 16],
            refused_sources: Sources::default(),
            triggered: 0,
        })
    }

    /// Neighbour resolutions started so far (see the module's documentation).
    pub fn triggered(&self) -> u64 {
        self.triggered
    }

    /// The next hop of every address in `backends` (`None`: not usable from XDP now). A next
    /// hop whose neighbour is not resolved (or is `STALE`) is handed to the kernel to resolve.
    pub fn resolve(
        &mut self,
        backends: &[IpAddr],
        sources: Sources,
    ) -> Result<HashMap<IpAddr, Option<Hop>>, ResolveError> {
        let links = self.links()?;
        let neighbours = self.neighbours()?;
        let mut out = HashMap::with_capacity(backends.len());
        let mut to_resolve: Vec<(u32, IpAddr)> = Vec::new();
        for &backend in backends {
            let hop = self.route(backend, sources)?.and_then(|(oif, via, mtu)| {
                let link = links.get(&oif).filter(|l| l.usable)?;
                let neighbour = neighbours.get(&(oif, via));
                if neighbour.is_none_or(|n| needs_use(n.state)) && !to_resolve.contains(&(oif, via))
                {
                    to_resolve.push((oif, via));
                }
                let src_mac = link.mac?;
                let dst_mac = neighbour.filter(|n| usable(n.state))?.mac?;
                let mtu = match mtu {
                    Some(m) if m > 0 => m.min(link.mtu),
                    _ => link.mtu,
                };
                Some(Hop {
                    ifindex: oif,
                    dst_mac,
                    src_mac,
                    mtu,
                })
            });
            out.insert(backend, hop);
        }
        for (ifindex, address) in to_resolve {
            match self.use_neighbour(ifindex, address) {
                Ok(()) => self.triggered += 1,
                // Refused for this one next hop (e.g. the link went away meanwhile): the next
                // event or re-check tries again; the other next hops are not held up.
                Err(ResolveError::Kernel { error, .. }) => {
                    tracing::debug!(%address, ifindex, %error, "the kernel refused to resolve a next hop");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Makes the kernel resolve `address` on `ifindex` now (`NTF_USE`), creating the entry if
    /// there is none. The state is `NONE`, not the `PERMANENT` `ip neigh` sends by default: a
    /// new entry stays an ordinary one the kernel may age out.
    fn use_neighbour(&mut self, ifindex: u32, address: IpAddr) -> Result<(), ResolveError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = match address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.ifindex = ifindex;
        msg.header.state = NeighbourState::None;
        msg.header.flags = NeighbourFlags::Use;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                address,
            )));
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            "a neighbour resolution (NTF_USE)",
        )?;
        Ok(())
    }

    /// `(egress ifindex, next-hop address, route MTU)` for `dst`, or `None` when the kernel
    /// has no single-path unicast route for it.
    fn route(
        &mut self,
        dst: IpAddr,
        sources: Sources,
    ) -> Result<Option<(u32, IpAddr, Option<u32>)>, ResolveError> {
        let src = match dst {
            IpAddr::V4(_) if self.refused_sources.v4 != sources.v4 => sources.v4.map(IpAddr::V4),
            IpAddr::V6(_) if self.refused_sources.v6 != sources.v6 => sources.v6.map(IpAddr::V6),
            _ => None,
        };
        let mut answer = self.route_get(dst, src);
        if src.is_some() && matches!(answer, Err(ResolveError::Kernel { .. })) {
            // The kernel refuses an output route from an address that is not local (IPv4
            // answers ENETUNREACH or EINVAL); the tunnel source usually is not. Asked again
            // for the destination alone, and remembered while the source stays the same.
            answer = self.route_get(dst, None);
            if answer.is_ok() {
                tracing::debug!(
                    ?src,
                    "the kernel refuses route requests from this tunnel source (not a local \
                     address): next hops follow the routes for the destination alone"
                );
                match dst {
                    IpAddr::V4(_) => self.refused_sources.v4 = sources.v4,
                    IpAddr::V6(_) => self.refused_sources.v6 = sources.v6,
                }
            }
        }
        let route = match answer {
            Ok(route) => route,
            // No route (ENETUNREACH, EHOSTUNREACH), or a prohibit/blackhole route: the kernel
            // path drops such packets and counts them; nothing to cache.
            Err(ResolveError::Kernel { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(route) = route else {
            return Ok(None);
        };
        if route.header.kind != RouteType::Unicast {
            return Ok(None);
        }
        let mut oif = None;
        let mut gateway = None;
        let mut mtu = None;
        for a in &route.attributes {
            match a {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => {
                    gateway = Some(IpAddr::V6(*g));
                }
                // IPv4 via an IPv6 gateway, or several next hops: the per-packet lookup
                // handles them.
                RouteAttribute::Via(_) | RouteAttribute::MultiPath(_) => return Ok(None),
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        if let RouteMetric::Mtu(v) = m {
                            mtu = Some(*v);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(oif.map(|oif| (oif, gateway.unwrap_or(dst), mtu)))
    }

    fn route_get(
        &mut self,
        dst: IpAddr,
        src: Option<IpAddr>,
    ) -> Result<Option<RouteMessage>, ResolveError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match dst {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        if let Some(src) = src {
            msg.header.source_prefix_length = if src.is_ipv4() { 32 } else { 128 };
            msg.attributes
                .push(RouteAttribute::Source(RouteAddress::from(src)));
        }
        let answers = self.request(
            RouteNetlinkMessage::GetRoute(msg),
            NLM_F_REQUEST,
            "a route request",
        )?;
        Ok(answers.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        }))
    }

    /// Every link's MAC, MTU and whether it can carry redirected Ethernet frames.
    fn links(&mut self) -> Result<HashMap<u32, Link>, ResolveError> {
        let answers = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
            "a link dump",
        )?;
        let mut out = HashMap::new();
        for m in answers {
            let RouteNetlinkMessage::NewLink(l) = m else {
                continue;
            };
            let mut mac = None;
            let mut mtu = 0;
            for a in &l.attributes {
                match a {
                    LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(&bytes[..]).ok(),
                    LinkAttribute::Mtu(m) => mtu = *m,
                    _ => {}
                }
            }
            let usable = l.header.link_layer_type == LinkLayerType::Ether
                && l.header.flags.contains(LinkFlags::Up);
            out.insert(l.header.index, Link { mac, mtu, usable });
        }
        Ok(out)
    }

    /// Every neighbour entry's state and link-layer address, by `(ifindex, address)`.
    fn neighbours(&mut self) -> Result<HashMap<(u32, IpAddr), Neighbour>, ResolveError> {
        let answers = self.request(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
            "a neighbour dump",
        )?;
        let mut out = HashMap::new();
        for m in answers {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            let mut dst = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        dst = Some(IpAddr::V4(*v4));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        dst = Some(IpAddr::V6(*v6));
                    }
                    NeighbourAttribute::LinkLayerAddress(bytes) => {
                        mac = <[u8; 6]>::try_from(&bytes[..]).ok();
                    }
                    _ => {}
                }
            }
            if let Some(dst) = dst {
                let state = n.header.state;
                out.insert((n.header.ifindex, dst), Neighbour { state, mac });
            }
        }
        Ok(out)
    }

    /// Sends one request and collects its answers (all parts of a dump).
    fn request(
        &mut self,
        payload: RouteNetlinkMessage,
        flags: u16,
        request: &'static str,
    ) -> Result<Vec<RouteNetlinkMessage>, ResolveError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(payload));
        msg.finalize();
        let mut out_buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut out_buf);
        self.socket
            .send(&out_buf, 0)
            .map_err(ResolveError::Socket)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let size = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(ResolveError::Socket)?;
            let mut offset = 0;
            let mut more = dump;
            while offset < size {
                let parsed =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..size])
                        .map_err(|error| ResolveError::Decode { request, error })?;
                let len = parsed.header.length as usize;
                let ours = parsed.header.sequence_number == self.seq;
                let multipart = parsed.header.flags & NLM_F_MULTIPART != 0;
                match parsed.payload {
                    _ if !ours => {}
                    NetlinkPayload::Done(_) => more = false,
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(ResolveError::Kernel {
                                request,
                                error: io::Error::from_raw_os_error(-code.get()),
                            });
                        }
                        more = false;
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        answers.push(m);
                        if !multipart {
                            more = false;
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
            if !more {
                return Ok(answers);
            }
        }
    }
}

/// States whose link-layer address the kernel itself would send to.
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// States the resolver asks the kernel to resolve: no usable address (`NONE`, `FAILED`), or
/// `STALE`, which nothing else would confirm (the packets XDP sends never reach the kernel's
/// neighbour code) and which the kernel may drop. Not `INCOMPLETE` (being resolved already).
fn needs_use(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::None | NeighbourState::Failed | NeighbourState::Stale
    )
}

/// rtnetlink multicast groups (the legacy `RTMGRP_*` bind mask): links, neighbours, and IPv4
/// and IPv6 routes and addresses (an address change adds or removes connected routes).
const GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_NEIGH
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_ROUTE
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV6_IFADDR) as u32;

/// A socket subscribed to the changes that can move a next hop.
pub struct Events {
    socket: Socket,
    buf: Vec<u8>,
}

impl Events {
    pub fn subscribe() -> Result<Events, ResolveError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(ResolveError::Socket)?;
        socket
            .bind(&SocketAddr::new(0, GROUPS))
            .map_err(ResolveError::Socket)?;
        socket
            .set_non_blocking(true)
            .map_err(ResolveError::Socket)?;
        Ok(Events {
            socket,
            buf: vec![0; 1 << 16],
        })
    }

    /// Waits up to `timeout` for a change; drains every queued message. Returns whether there
    /// was any (an overrun of the socket's queue counts as one: something changed).
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, ResolveError> {
        let fd = std::os::fd::AsFd::as_fd(&self.socket);
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(ResolveError::Socket(e.into())),
        }
        loop {
            match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Err(ResolveError::Socket(e)),
            }
        }
    }
}
