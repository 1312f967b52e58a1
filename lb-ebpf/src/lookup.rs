//! Backend choice: conntrack first, Maglev on a miss.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{
    flow_hash::flow_hash, BackendEntry, Counter, FlowEntry, FlowKey, VipEntry, BACKEND_UP,
    NO_BACKEND, RING_PROBES,
};

use crate::{
    maps::{BACKENDS, CONNTRACK, RINGS},
    stats::count,
};

pub struct Choice {
    pub id: u32,
    pub backend: BackendEntry,
    pub new_flow: bool,
}

/// The backend for `key`. `create` is true for packets that open a flow (TCP SYN, any UDP
/// datagram); only those are recorded, so a stray mid-stream packet after a restart is steered
/// by the table without polluting conntrack (as Katran does).
#[inline(always)]
pub fn backend(vip: &VipEntry, key: &FlowKey, create: bool) -> Result<Choice, Counter> {
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(e) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: the LRU map returned a valid value pointer; a concurrent eviction may recycle
        // it, which at worst steers this one packet by a stale entry.
        let id = unsafe {
            (*e).last_seen_ns = now;
            (*e).backend
        };
        let backend = *BACKENDS.get(id).ok_or(Counter::DropInternal)?;
        // An established flow keeps its backend whatever its state, so draining never breaks a
        // connection. A new SYN on a recycled tuple whose backend left is steered afresh.
        if !(create && backend.state != BACKEND_UP) {
            count(Counter::ConntrackHit);
            return Ok(Choice {
                id,
                backend,
                new_flow: false,
            });
        }
    }
    count(Counter::ConntrackMiss);
    let (id, backend) = maglev(vip, key)?;
    if create {
        let entry = FlowEntry {
            backend: id,
            vip_index: vip.index,
            created_ns: now,
            last_seen_ns: now,
            ..FlowEntry::default()
        };
        if CONNTRACK.insert(key, &entry, 0).is_ok() {
            count(Counter::FlowCreated);
        } else {
            count(Counter::FlowInsertFailed);
        }
    }
    Ok(Choice {
        id,
        backend,
        new_flow: create,
    })
}

/// `ring[hash % M]`, probing the next few slots when that backend is not `up` (userspace
/// rebuilds the table without it; this covers the moment in between).
#[inline(always)]
fn maglev(vip: &VipEntry, key: &FlowKey) -> Result<(u32, BackendEntry), Counter> {
    let m = vip.ring_size;
    if m == 0 {
        return Err(Counter::DropNoBackend);
    }
    let mut slot = flow_hash(key, vip.hash_key) % m;
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
