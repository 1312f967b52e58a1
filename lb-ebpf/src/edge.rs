//! Edge VIPs: connections for the daemon's own TLS listener. They are policed like an L4 VIP's
//! (PROXY header trust, client lists) and then passed to the local stack, so a forged header
//! or a refused client never costs the listener a socket or a handshake.
//!
//! Only a VIP with a policy tracks its flows: the verdict must outlive the first segment.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{Counter, FlowEntry, VipEntry, NO_BACKEND};

use crate::{
    lookup::{judged_afresh, record},
    maps::CONNTRACK,
    parse::{Parsed, TCP_ACK, TCP_SYN},
    proxy_v2,
    stats::count,
};

/// Whether the packet may go on to the listener. `Err` is the drop reason.
#[inline(always)]
pub fn police(
    ctx: &aya_ebpf::programs::XdpContext,
    p: &Parsed,
    vip: &VipEntry,
) -> Result<(), Counter> {
    if !proxy_v2::policed(vip) || p.icmp_error {
        return Ok(());
    }
    let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(e) = CONNTRACK.get_ptr_mut(&p.key) {
        // SAFETY: as in `lookup::backend`: a valid value pointer, at worst recycled by a
        // concurrent eviction.
        let state = unsafe {
            (*e).last_seen_ns = now;
            (*e).proxy_state
        };
        if !(syn && judged_afresh(vip, state)) {
            count(Counter::ConntrackHit);
            return proxy_v2::established(ctx, p, vip, e);
        }
    }
    count(Counter::ConntrackMiss);
    if !syn {
        return proxy_v2::untracked(ctx, p, vip);
    }
    let mut entry = FlowEntry {
        backend: NO_BACKEND,
        vip_index: vip.index,
        created_ns: now,
        last_seen_ns: now,
        ..FlowEntry::default()
    };
    let allowed = proxy_v2::opening(ctx, p, vip, &mut entry);
    record(&p.key, &entry);
    if allowed {
        Ok(())
    } else {
        Err(Counter::DropProxy)
    }
}
