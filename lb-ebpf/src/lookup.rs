//! Backend choice: conntrack first, Maglev on a miss.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{
    flow_hash::source_ip_hash, BackendEntry, Counter, FlowEntry, FlowKey, VipEntry, BACKEND_DOWN,
    BACKEND_UP, HASH_SOURCE_IP, NO_BACKEND, RING_PROBES,
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
#[inline(always)]
///
/// `tuple_hash` is the flow's 5-tuple hash, which the caller also needs for the tunnel header,
/// so it is computed once per packet.
pub fn backend(
    vip: &VipEntry,
    key: &FlowKey,
    tuple_hash: u32,
    opens: Opens,
) -> Result<Choice, Counter> {
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
        // An established flow keeps its backend while it drains, so draining never breaks a
        // connection.
        let leave = match opens {
            Opens::No => false,
            Opens::Datagram => backend.state == BACKEND_DOWN,
            Opens::Syn => backend.state != BACKEND_UP,
        };
        if !leave {
            count(Counter::ConntrackHit);
            return Ok(Choice {
                id,
                backend,
                new_flow: false,
            });
        }
    }
    count(Counter::ConntrackMiss);
    let (id, backend) = maglev(vip, key, tuple_hash)?;
    let create = opens != Opens::No;
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
