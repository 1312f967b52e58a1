//! Per-CPU counters: plain adds, no atomics needed.

use lb_common::{proxy::ProxyOutcome, Counter, DecapCounter, TrafficStats, VipStats};

use crate::maps::{BACKEND_STATS, COUNTERS, DECAP_COUNTERS, PROXY_STATS, VIP_STATS};

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn count_decap(c: DecapCounter) {
    if let Some(p) = DECAP_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: as in `count`.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn count_outcome(vip_index: u32, o: ProxyOutcome) {
    if let Some(p) = PROXY_STATS.get_ptr_mut(o.stats_index(vip_index)) {
        // SAFETY: as in `count`.
        unsafe { *p += 1 };
    }
}

/// One VIP's per-CPU counters, looked up once per packet: its traffic and its conntrack hits,
/// misses and new flows all go there (userspace adds the conntrack ones up into the global
/// counters of the same names).
#[derive(Clone, Copy)]
pub struct VipCounters(*mut VipStats);

impl VipCounters {
    #[inline(always)]
    pub fn of(vip_index: u32) -> VipCounters {
        VipCounters(
            VIP_STATS
                .get_ptr_mut(vip_index)
                .unwrap_or(core::ptr::null_mut()),
        )
    }

    #[inline(always)]
    fn add(self, f: impl FnOnce(&mut VipStats)) {
        if !self.0.is_null() {
            // SAFETY: a per-CPU slot of this VIP, only this CPU writes it while the program
            // runs.
            f(unsafe { &mut *self.0 });
        }
    }

    #[inline(always)]
    pub fn hit(self) {
        self.add(|s| s.conntrack_hit += 1);
    }

    #[inline(always)]
    pub fn miss(self) {
        self.add(|s| s.conntrack_miss += 1);
    }

    /// A new flow recorded in conntrack (`false`: the insert failed).
    #[inline(always)]
    pub fn recorded(self, ok: bool) {
        self.add(|s| {
            if ok {
                s.flow_created += 1;
            } else {
                s.flow_insert_failed += 1;
            }
        });
    }

    /// A frame sent back out the ingress device (`true`) or redirected to another.
    #[inline(always)]
    pub fn sent(self, tx: bool) {
        self.add(|s| {
            if tx {
                s.tx += 1;
            } else {
                s.redirect += 1;
            }
        });
    }

    /// Whether the next hop came from userspace's cache (`true`) or a route lookup.
    #[inline(always)]
    pub fn next_hop(self, cached: bool) {
        self.add(|s| {
            if cached {
                s.next_hop_cached += 1;
            } else {
                s.next_hop_fib += 1;
            }
        });
    }

    /// A packet the VIP forwards (or, for an edge VIP, passes to its listener).
    #[inline(always)]
    pub fn traffic(self, backend: u32, bytes: u64, new_flow: bool) {
        let add = |s: &mut TrafficStats| {
            s.packets += 1;
            s.bytes += bytes;
            s.new_flows += u64::from(new_flow);
        };
        self.add(|s| add(&mut s.traffic));
        if let Some(s) = BACKEND_STATS.get_ptr_mut(backend) {
            // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
            add(unsafe { &mut *s });
        }
    }
}
