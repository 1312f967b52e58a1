//! `sluice_xdp`: parse, find the VIP, choose the backend, encapsulate, forward.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{flow_hash::encap_hash, Counter, VipKey, NO_BACKEND, PROTO_UDP, VIP_KIND_EDGE};

use crate::{
    edge, encap, fib,
    headers::{TCP_ACK, TCP_SYN},
    log,
    lookup::{self, Opens},
    maps::VIPS,
    packet::len,
    parse, proxy_v2, rst,
    stats::{count, VipCounters},
};

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    match steer(ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            if reason.is_drop() {
                log::dropped(ctx, reason);
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            }
        }
    }
}

#[inline(always)]
fn steer(ctx: &XdpContext) -> Result<u32, Counter> {
    let p = parse::parse(ctx)?;
    let vip_key = VipKey {
        addr_be: p.key.dst_be,
        port_be: p.key.dport_be,
        proto: p.key.proto,
        family: p.key.family,
    };
    // SAFETY: the value is copied out at once; userspace replaces entries whole.
    let vip = *unsafe { VIPS.get(&vip_key) }.ok_or(if p.icmp_error {
        Counter::PassIcmpNotVip
    } else {
        Counter::PassNotVip
    })?;
    let stats = VipCounters::of(vip.index);
    if vip.kind == VIP_KIND_EDGE {
        // Before policing: a refused connection records no flow and judges no header.
        if rst::refuses(p) {
            return rst::reply(ctx, p);
        }
        edge::police(ctx, &p, &vip, stats)?;
        let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        stats.traffic(NO_BACKEND, len(ctx) as u64, syn && !p.icmp_error);
        return Err(Counter::PassEdge);
    }
    let opens = if p.icmp_error {
        Opens::No
    } else if p.key.proto == PROTO_UDP {
        Opens::Datagram
    } else if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        Opens::Syn
    } else {
        Opens::No
    };
    let choice = lookup::backend(&vip, &p.key, opens, stats, |e| {
        proxy_v2::opening(ctx, &p, &vip, e)
    })?;
    let untracked = if choice.flow.is_null() {
        !choice.new_flow
    } else {
        !proxy_v2::established(ctx, p, &vip, choice.flow)?
    };
    if untracked {
        proxy_v2::untracked(ctx, p, &vip)?;
    }
    stats.traffic(choice.id, len(ctx) as u64, choice.new_flow);
    if p.icmp_error {
        count(Counter::IcmpSteered);
    }
    let outer = encap::encap(ctx, &p, &choice.backend, encap_hash(&p.key))?;
    fib::forward(ctx, &outer, choice.id, stats)
}
