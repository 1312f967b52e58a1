//! Backend choice: conntrack first, Maglev on a miss.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use lb_common::{
    flow_hash::{five_tuple_hash, source_ip_hash},
    proxy::{FLOW_ALLOWED, FLOW_REFUSED, FLOW_UNPOLICED},
    BackendEntry, Counter, FlowEntry, FlowKey, VipEntry, BACKEND_DOWN, BACKEND_UP, HASH_SOURCE_IP,
    NO_BACKEND, PROXY_OFF, RING_PROBES,
};

/// `BPF_NOEXIST`: insert only when the key is absent.
const BPF_NOEXIST: u64 = 1;
/// The error an insert with `BPF_NOEXIST` returns for a key that exists.
const EEXIST: i32 = 17;

use crate::{
    maps::{BACKENDS, CONNTRACK, RINGS},
    proxy_v2,
    stats::VipCounters,
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
/// `opening` fills a new flow's policy fields and says
/// whether the flow may go on; a refused flow is still recorded, so its retransmissions are
/// refused by one lookup.
#[inline(always)]
pub fn backend(
    vip: &VipEntry,
    key: &FlowKey,
    opens: Opens,
    stats: VipCounters,
    opening: impl FnOnce(&mut FlowEntry) -> bool,
) -> Result<Choice, Counter> {
    let now = now();
    if opens == Opens::Syn && !proxy_v2::policed(vip) {
        if let Some(choice) = syn_insert(vip, key, now, stats) {
            return Ok(choice);
        }
    }
    if let Some(e) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: the LRU map returned a valid value pointer; a concurrent eviction may recycle
        // it, which at worst steers this one packet by a stale entry.
        let (id, proxy_state) = unsafe {
            refresh(&mut (*e).last_seen_ns, now);
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
            stats.hit();
            return Ok(Choice {
                id,
                backend,
                new_flow: false,
                flow: e,
            });
        }
    }
    stats.miss();
    let (id, backend) = maglev(vip, key)?;
    let create = opens != Opens::No;
    if create {
        let mut entry = FlowEntry {
            backend: id,
            // Below MAX_VIPS (256), see `FlowEntry::vip_index`.
            vip_index: vip.index as u8,
            flags: 0,
            proxy_state: FLOW_UNPOLICED,
            proxy_outcome: 0,
            created_ns: now,
            last_seen_ns: now,
        };
        let allowed = opening(&mut entry);
        record(key, &entry, stats);
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

/// The clock conntrack stamps flows with: CLOCK_MONOTONIC at jiffy granularity, a few
/// nanoseconds where `bpf_ktime_get_ns` costs tens on every packet. Idle times are judged in
/// minutes, so being up to a tick behind the precise clock userspace reads does not matter.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: `bpf_ktime_get_coarse_ns` has no preconditions (kernel 5.11+).
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Stamps a flow as seen now. The coarse clock moves once a tick, so most packets of a busy
/// flow find the stamp current and leave the cache line clean.
#[inline(always)]
pub fn refresh(last_seen_ns: &mut u64, now: u64) {
    if *last_seen_ns != now {
        *last_seen_ns = now;
    }
}

/// A SYN of a VIP without policy is almost always a new flow: it is recorded at once, since an
/// insert looks the key up anyway. `None` when the flow exists (a retransmitted SYN, or a
/// tuple reused), which the lookup then treats as before, and when the table has no usable
/// backend (an existing flow's backend may still be `up`). A policed VIP's SYN takes the
/// lookup first: a header it carries (TCP Fast Open) is judged only on a flow known to be new.
#[inline(always)]
fn syn_insert(vip: &VipEntry, key: &FlowKey, now: u64, stats: VipCounters) -> Option<Choice> {
    let (id, backend) = maglev(vip, key).ok()?;
    let entry = FlowEntry {
        backend: id,
        // Below MAX_VIPS (256), see `FlowEntry::vip_index`.
        vip_index: vip.index as u8,
        flags: 0,
        proxy_state: FLOW_UNPOLICED,
        proxy_outcome: 0,
        created_ns: now,
        last_seen_ns: now,
    };
    let inserted = CONNTRACK.insert(key, &entry, BPF_NOEXIST);
    if inserted.is_err_and(|e| e == -EEXIST) {
        return None;
    }
    stats.miss();
    stats.recorded(inserted.is_ok());
    Some(Choice {
        id,
        backend,
        new_flow: true,
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
pub fn record(key: &FlowKey, entry: &FlowEntry, stats: VipCounters) {
    stats.recorded(CONNTRACK.insert(key, entry, 0).is_ok());
}

/// `ring[hash % M]`, probing the next few slots when that backend is not `up` (userspace
/// rebuilds the table without it; this covers the moment in between). Only flows conntrack
/// does not steer get here, so only they pay for the hash.
#[inline(always)]
fn maglev(vip: &VipEntry, key: &FlowKey) -> Result<(u32, BackendEntry), Counter> {
    let m = vip.ring_size;
    if m == 0 {
        return Err(Counter::DropNoBackend);
    }
    let hash = if vip.hash_key == HASH_SOURCE_IP {
        source_ip_hash(key)
    } else {
        five_tuple_hash(key)
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
