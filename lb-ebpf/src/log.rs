//! Opt-in kernel diagnostics (aya-log) on rare paths only: drops, PROXY verdicts, unresolved
//! next hops. Never on the established fast path.
//!
//! Each call first reads `AYA_LOG_LEVEL`, a global in `.rodata` that the daemon sets at load
//! (`kernel_log`, off by default). The kernel freezes `.rodata` maps, so the verifier knows the
//! value: with logging off every call here is a branch it proves dead and removes, and the
//! program it runs is as if none were written (`bpftool prog show` reports the same xlated size
//! as without them). Messages are literal per reason: a `&str` argument picked at run time would
//! need a variable-length copy, which BPF has no instruction for.
//!
//! Levels: `info` for what drops or refuses a packet and for neighbours the kernel must
//! resolve; `debug` adds accepted PROXY headers and route lookups taken for lack of a cached
//! next hop (one a packet while it lasts).

use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::{debug, info};
use lb_common::{proxy::ProxyOutcome, AddrBe, Counter, DecapCounter, FAMILY_V4};

/// A packet `sluice_xdp` drops, by its counter.
#[inline(always)]
pub fn dropped(ctx: &XdpContext, reason: Counter) {
    match reason {
        Counter::DropNoBackend => info!(ctx, "drop_no_backend: the VIP has no backend up"),
        Counter::DropEncap => info!(ctx, "drop_encap: growing the packet for the tunnel failed"),
        Counter::DropNoRoute => info!(ctx, "drop_no_route: no route to the backend"),
        Counter::DropMtu => info!(ctx, "drop_mtu: encapsulated packet above the egress MTU"),
        Counter::DropProxy => info!(ctx, "drop_proxy: refused by the VIP's PROXY or client policy"),
        Counter::DropInternal => info!(ctx, "drop_internal: inconsistent maps or failed rewrite"),
        _ => {}
    }
}

/// A packet `sluice_decap` drops.
#[inline(always)]
pub fn decap_dropped(ctx: &XdpContext, reason: DecapCounter) {
    if reason == DecapCounter::DropAdjust {
        info!(ctx, "drop_adjust: stripping the tunnel header failed");
    }
}

/// A PROXY or client-policy verdict: refusals with the outcome (its index in
/// `ProxyOutcome::ALL`; the daemon's log forwarder puts the name in its place) and the TCP
/// peer; accepted headers with the real client they name.
#[inline(always)]
pub fn verdict(
    ctx: &XdpContext,
    outcome: ProxyOutcome,
    peer: (u8, AddrBe),
    client: Option<(u8, AddrBe, u16)>,
) {
    if outcome.refuses() {
        let o = outcome as u32;
        let (family, addr) = peer;
        if family == FAMILY_V4 {
            info!(ctx, "proxy refused: outcome {} from {:i}", o, u32::from_be(addr[0]));
        } else {
            info!(ctx, "proxy refused: outcome {} from {:i}", o, bytes(addr));
        }
    } else if let Some((family, addr, port)) = client {
        let port = u16::from_be(port);
        if family == FAMILY_V4 {
            debug!(ctx, "proxy accepted: client {:i} port {}", u32::from_be(addr[0]), port);
        } else {
            debug!(ctx, "proxy accepted: client {:i} port {}", bytes(addr), port);
        }
    }
}

/// An IPv6 address as the packet holds it.
#[inline(always)]
fn bytes(addr: AddrBe) -> [u8; 16] {
    // SAFETY: four words in memory are sixteen bytes in the same order; any bytes are valid.
    unsafe { core::mem::transmute::<AddrBe, [u8; 16]>(addr) }
}

/// No cached next hop for `backend`: the route lookup decides (`debug`, a packet at a time).
#[inline(always)]
pub fn fib_fallback(ctx: &XdpContext, backend: u32) {
    debug!(ctx, "next hop: none cached for backend {}, route lookup", backend);
}

/// The route's neighbour is unresolved: passed to the stack, which resolves it.
#[inline(always)]
pub fn no_neighbour(ctx: &XdpContext) {
    info!(ctx, "pass_no_neigh: next hop unresolved, passed to the stack to resolve it");
}
