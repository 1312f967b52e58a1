//! Backend choice: conntrack first, Maglev on a miss.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{
    flow_hash::source_ip_hash,
    proxy::{FLOW_ALLOWED, FLOW_REFUSED},
    BackendEntry, Counter, FlowEntry, FlowKey, VipEntry, BACKEND_DOWN, BACKEND_UP, HASH_SOURCE_IP,
    NO_BACKEND, PROXY_OFF, RING_PROBES,
};

use crate::{
    maps::{BACKENDS, CONNTRACK, RINGS},
    stats::count,
};

pub struct Choice {
    pub id: u32,
    pub backend: BackendEntry,
    pub new_flow: bool,
    /// The conntrack entry on a hit (null otherwise), for the PROXY policy to read and update.
    pub flow: *mut FlowEntry,
}

/// How a packet relates to its flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Opens {
    /// Mid-stream (TCP without SYN, ICMP errors): steered by conntrack or the table, never
    /// recorded, so a stray packet after a restart does not pollute conntrack (as Katran does).
    No,
    /// A UDP datagram: recorded on a miss; an existing flow keeps its backend unless it is down.
    Datagram,
    /// A TCP SYN: recorded on a miss; a SYN reusing the tuple of a flow whose backend is no
    /// longer `up` starts a new connection, so it is steered afresh.
    Syn,
}

/// The backend for `key`.
///
/// `tuple_hash` is the flow's 5-tuple hash, which the caller also needs for the tunnel header,
/// so it is computed once per packet. `opening` fills a new flow's policy fields and says
/// whether the flow may go on; a refused flow is still recorded, so its retransmissions are
/// refused by one lookup.
#[inline(always)]
pub fn backend(
    vip: &VipEntry,
    key: &FlowKey,
    tuple_hash: u32,
    opens: Opens,
    opening: impl FnOnce(&mut FlowEntry) -> bool,
) -> Result<Choice, Counter> {
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(e) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: the LRU map returned a valid value pointer; a concurrent eviction may recycle
        // it, which at worst steers this one packet by a stale entry.
        let (id, proxy_state) = unsafe {
            (*e).last_seen_ns = now;
            ((*e).backend, (*e).proxy_state)
        };
        let backend = *BACKENDS.get(id).ok_or(Counter::DropInternal)?;
        // An established flow keeps its backend while it drains, so draining never breaks a
        // connection. A SYN after the flow's verdict is a new connection reusing the tuple: it
        // is judged afresh.
        let leave = match opens {
            Opens::No => false,
            Opens::Datagram => backend.state == BACKEND_DOWN,
            Opens::Syn => backend.state != BACKEND_UP || judged_afresh(vip, proxy_state),
        };
        if !leave {
            count(Counter::ConntrackHit);
            return Ok(Choice {
                id,
                backend,
                new_flow: false,
                flow: e,
            });
        }
    }
    count(Counter::ConntrackMiss);
    let (id, backend) = maglev(vip, key, tuple_hash)?;
    let create = opens != Opens::No;
    if create {
        let mut entry = FlowEntry {
            backend: id,
            vip_index: vip.index,
            created_ns: now,
            last_seen_ns: now,
            ..FlowEntry::default()
        };
        let allowed = opening(&mut entry);
        record(key, &entry);
        if !allowed {
            return Err(Counter::DropProxy);
        }
    }
    Ok(Choice {
        id,
        backend,
        new_flow: create,
        flow: core::ptr::null_mut(),
    })
}

/// Whether a SYN on a recorded flow is a new connection reusing the tuple after the flow's
/// verdict, to be judged afresh.
#[inline(always)]
pub fn judged_afresh(vip: &VipEntry, proxy_state: u8) -> bool {
    proxy_state == FLOW_REFUSED || (proxy_state == FLOW_ALLOWED && vip.proxy_policy != PROXY_OFF)
}

#[inline(always)]
pub fn record(key: &FlowKey, entry: &FlowEntry) {
    if CONNTRACK.insert(key, entry, 0).is_ok() {
        count(Counter::FlowCreated);
    } else {
        count(Counter::FlowInsertFailed);
    }
}

/// `ring[hash % M]`, probing the next few slots when that backend is not `up` (userspace
/// rebuilds the table without it; this covers the moment in between).
#[inline(always)]
fn maglev(vip: &VipEntry, key: &FlowKey, tuple_hash: u32) -> Result<(u32, BackendEntry), Counter> {
    let m = vip.ring_size;
    if m == 0 {
        return Err(Counter::DropNoBackend);
    }
    let hash = if vip.hash_key == HASH_SOURCE_IP {
        source_ip_hash(key)
    } else {
        tuple_hash
    };
    let mut slot = hash % m;
    for _ in 0..RING_PROBES {
        let id = *RINGS
            .get(vip.ring_offset.wrapping_add(slot))
            .ok_or(Counter::DropInternal)?;
        if id == NO_BACKEND {
            return Err(Counter::DropNoBackend);
        }
        let backend = BACKENDS.get(id).ok_or(Counter::DropInternal)?;
        if backend.state == BACKEND_UP {
            return Ok((id, *backend));
        }
        slot += 1;
        if slot == m {
            slot = 0;
        }
    }
    Err(Counter::DropNoBackend)
}
