//! Per-CPU counters: plain adds, no atomics needed.

use lb_common::{proxy::ProxyOutcome, Counter, DecapCounter, TrafficStats};

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

#[inline(always)]
pub fn traffic(vip_index: u32, backend: u32, bytes: u64, new_flow: bool) {
    let add = |s: *mut TrafficStats| {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*s).packets += 1;
            (*s).bytes += bytes;
            (*s).new_flows += u64::from(new_flow);
        }
    };
    if let Some(s) = VIP_STATS.get_ptr_mut(vip_index) {
        add(s);
    }
    if let Some(s) = BACKEND_STATS.get_ptr_mut(backend) {
        add(s);
    }
}
