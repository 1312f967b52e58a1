//! Opt-in kernel diagnostics (aya-log) on rare paths only: drops by reason and next hops the
//! kernel must resolve. Never on the established fast path.
//!
//! PROXY verdicts are reported only as the drop they cause (`drop_proxy`; the outcome is in
//! `sluice_vip_proxy_flows_total` / `sluice_edge_proxy_flows_total`). A report inside the
//! policy code does not load: with the outcome alone the main frame grows to 496 bytes and the
//! report's two frames on top of it exceed the verifier's 512-byte stack ("combined stack size
//! of 3 calls is 528"); with the TCP peer's address as well, the verifier walks the report on
//! every path through the policy and stops at its limit ("processed 1000001 insns").
//!
//! Each call first reads `AYA_LOG_LEVEL`, a global in `.rodata` that the daemon sets at load
//! (`kernel_log`, off by default). The kernel freezes `.rodata` maps, so the verifier knows the
//! value: with logging off every call here is a branch it proves dead and removes; what is
//! left is the level's load and the drop-reason dispatch, on these rare paths only (10,109
//! xlated instructions against 10,074 without the reports; 12,103 at `info`). Messages are literal per reason: a `&str` argument picked at run time would
//! need a variable-length copy, which BPF has no instruction for.
//!
//! Levels: `info` for drops and for neighbours the kernel must resolve; `debug` adds the route
//! lookups taken for lack of a cached next hop (one a packet while it lasts).

use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::{debug, info};
use lb_common::{Counter, DecapCounter};

/// A packet `sluice_xdp` drops, by its counter.
#[inline(always)]
pub fn dropped(ctx: &XdpContext, reason: Counter) {
    match reason {
        Counter::DropNoBackend => info!(ctx, "drop_no_backend: the VIP has no backend up"),
        Counter::DropEncap => info!(ctx, "drop_encap: growing the packet for the tunnel failed"),
        Counter::DropNoRoute => info!(ctx, "drop_no_route: no route to the backend"),
        Counter::DropMtu => info!(ctx, "drop_mtu: encapsulated packet above the egress MTU"),
        Counter::DropProxy => info!(
            ctx,
            "drop_proxy: refused by the VIP's PROXY or client policy"
        ),
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

/// No cached next hop for `backend`: the route lookup decides (`debug`, a packet at a time).
#[inline(always)]
pub fn fib_fallback(ctx: &XdpContext, backend: u32) {
    debug!(
        ctx,
        "next hop: none cached for backend {}, route lookup", backend
    );
}

/// The route's neighbour is unresolved: passed to the stack, which resolves it.
#[inline(always)]
pub fn no_neighbour(ctx: &XdpContext) {
    info!(
        ctx,
        "pass_no_neigh: next hop unresolved, passed to the stack to resolve it"
    );
}
