//! Edge VIPs: connections for the daemon's own TLS listener. They are policed like an L4 VIP's
//! (PROXY header trust, client lists) and then passed to the local stack, so a forged header
//! or a refused client never costs the listener a socket or a handshake.
//!
//! Only a VIP with a policy tracks its flows: the verdict must outlive the first segment.

use lb_common::{proxy::FLOW_UNPOLICED, Counter, FlowEntry, VipEntry, NO_BACKEND};

use crate::{
    headers::{TCP_ACK, TCP_SYN},
    lookup::{judged_afresh, now, record, refresh},
    maps::CONNTRACK,
    parsed::Parsed,
    proxy_v2,
    stats::VipCounters,
};

/// Whether the packet may go on to the listener. `Err` is the drop reason.
#[inline(always)]
pub fn police(
    ctx: &aya_ebpf::programs::XdpContext,
    p: &Parsed,
    vip: &VipEntry,
    stats: VipCounters,
) -> Result<(), Counter> {
    if !proxy_v2::policed(vip) || p.icmp_error {
        return Ok(());
    }
    let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let now = now();
    // `Some(policed)` for a recorded flow; `false` means police it as untracked after all.
    let mut tracked = None;
    if let Some(e) = CONNTRACK.get_ptr_mut(&p.key) {
        // SAFETY: as in `lookup::backend`: a valid value pointer, at worst recycled by a
        // concurrent eviction.
        let state = unsafe {
            refresh(&mut (*e).last_seen_ns, now);
            (*e).proxy_state
        };
        if !(syn && judged_afresh(vip, state)) {
            stats.hit();
            tracked = Some(proxy_v2::established(ctx, p, vip, e)?);
        }
    }
    match tracked {
        Some(true) => return Ok(()),
        Some(false) => {}
        None => stats.miss(),
    }
    // One call site, so the policy code is inlined once.
    if !syn || tracked.is_some() {
        return proxy_v2::untracked(ctx, p, vip);
    }
    let mut entry = FlowEntry {
        backend: NO_BACKEND,
        // Below MAX_VIPS (256), see `FlowEntry::vip_index`.
        vip_index: vip.index as u8,
        flags: 0,
        proxy_state: FLOW_UNPOLICED,
        proxy_outcome: 0,
        created_ns: now,
        last_seen_ns: now,
    };
    let allowed = proxy_v2::opening(ctx, p, vip, &mut entry);
    record(&p.key, &entry, stats);
    if allowed {
        Ok(())
    } else {
        Err(Counter::DropProxy)
    }
}
