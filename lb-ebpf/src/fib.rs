//! Next hop for the encapsulated packet: the backend's cached next hop when userspace has one,
//! else the kernel's own routing and neighbour tables through `bpf_fib_lookup`.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::{Counter, NextHop, FAMILY_V6, NEXT_HOP_HALF0, NEXT_HOP_HALF1};

use crate::{
    encap::Outer,
    log,
    maps::{NEXT_HOPS, NEXT_HOP_LIVE},
    packet::write,
    stats::{count, VipCounters},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Sends the encapsulated packet for `backend` on its way: `XDP_TX` when the next hop is behind
/// the ingress device, `XDP_REDIRECT` to another device, or `XDP_PASS` while the neighbour is
/// unresolved so the kernel resolves it (and forwards this packet) instead of the packet being
/// lost.
///
/// The cached next hop saves the route lookup (160–390 ns a packet); userspace removes it
/// whenever the neighbour is not usable, so the kernel path below still sees those cases.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    outer: &Outer,
    backend: u32,
    stats: VipCounters,
) -> Result<u32, Counter> {
    if let Some(hop) = cached(backend) {
        stats.next_hop(true);
        if u32::from(outer.tot_len) > hop.mtu {
            return Err(Counter::DropMtu);
        }
        return send(ctx, hop.ifindex, hop.macs, stats);
    }
    stats.next_hop(false);
    log::fib_fallback(ctx, backend);
    lookup(ctx, outer, stats)
}

/// The live slot of `backend`'s next hop, copied out (userspace rewrites only the idle slot).
#[inline(always)]
fn cached(backend: u32) -> Option<NextHop> {
    let live = *NEXT_HOP_LIVE.get(backend)?;
    let half = match live {
        NEXT_HOP_HALF0 => 0,
        NEXT_HOP_HALF1 => 1,
        _ => return None,
    };
    NEXT_HOPS.get(backend.checked_mul(2)? + half).copied()
}

/// Writes the MACs and sends the frame out `ifindex`.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    ifindex: u32,
    macs: [u8; 12],
    stats: VipCounters,
) -> Result<u32, Counter> {
    write(ctx, 0, macs).map_err(|_| Counter::DropInternal)?;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "ifindex is a u32 in xdp_md"
    )]
    if ifindex == ctx.ingress_ifindex() as u32 {
        stats.sent(true);
        Ok(xdp_action::XDP_TX)
    } else {
        stats.sent(false);
        // SAFETY: plain helper call; a bad ifindex makes it return XDP_ABORTED.
        #[expect(
            clippy::cast_sign_loss,
            clippy::cast_possible_truncation,
            reason = "xdp action"
        )]
        Ok(unsafe { bpf_redirect(ifindex, 0) } as u32)
    }
}

/// The route lookup the cache saves: the kernel's tables, per packet.
#[inline(always)]
fn lookup(ctx: &XdpContext, outer: &Outer, stats: VipCounters) -> Result<u32, Counter> {
    // SAFETY: an all-zero `bpf_fib_lookup` is a valid (empty) parameter block.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "ifindex is a u32 in xdp_md"
    )]
    let ingress = ctx.ingress_ifindex() as u32;
    fib.ifindex = ingress;
    fib.__bindgen_anon_1.tot_len = outer.tot_len;
    if outer.family == FAMILY_V6 {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = outer.src;
        fib.__bindgen_anon_4.ipv6_dst = outer.dst;
    } else {
        fib.family = AF_INET;
        fib.__bindgen_anon_3.ipv4_src = outer.src[0];
        fib.__bindgen_anon_4.ipv4_dst = outer.dst[0];
    }
    // SAFETY: `fib` is a valid, writable parameter block of the size passed.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "64 bytes"
    )]
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &raw mut fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    #[expect(
        clippy::cast_sign_loss,
        reason = "return codes are small non-negative enums"
    )]
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let mut macs = [0u8; 12];
            macs[..6].copy_from_slice(&fib.dmac);
            macs[6..].copy_from_slice(&fib.smac);
            send(ctx, fib.ifindex, macs, stats)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            count(Counter::PassNoNeigh);
            log::no_neighbour(ctx);
            Ok(xdp_action::XDP_PASS)
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(Counter::DropMtu),
        _ => Err(Counter::DropNoRoute),
    }
}
