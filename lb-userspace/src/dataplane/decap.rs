//! `sluice_decap` on a backend host: strips sluice's tunnel header for the VIPs listed here.

use std::net::IpAddr;

use lb_common::{names, DecapCounter, DecapKey};

use super::{
    addr::family_and_words,
    error::map_err,
    kernel_log,
    maps::{attach_xdp, load_xdp, per_cpu_sum, take, Hash, PerCpu},
    DataplaneError,
};
use crate::{
    config::{KernelLog, XdpMode as Mode},
    EBPF_OBJECT,
};

/// A loaded and attached `sluice_decap`; detached when dropped.
pub struct Decap {
    _ebpf: aya::Ebpf,
    vips: Hash<DecapKey, u32>,
    counters: PerCpu<u64>,
}

impl Decap {
    /// Loads `sluice_decap` and attaches it to `iface` in the calling thread's network namespace.
    pub fn attach(iface: &str, mode: Mode, vips: &[IpAddr]) -> Result<Decap, DataplaneError> {
        // The object also holds the gateway's maps; keep them tiny on a backend.
        // Reports are the gateway's; the decap program's one (a failed strip) stays off here.
        let mut ebpf = kernel_log::loader(KernelLog::Off)
            .map_max_entries(names::CONNTRACK, 1)
            .map_max_entries(names::PROXY_FLOWS, 1)
            .map_max_entries(names::RINGS, 1)
            .load(EBPF_OBJECT)?;
        load_xdp(&mut ebpf, names::PROG_DECAP)?;
        attach_xdp(&mut ebpf, names::PROG_DECAP, iface, mode)?;
        let mut decap = Decap {
            vips: take(&mut ebpf, names::DECAP_VIPS)?,
            counters: take(&mut ebpf, names::DECAP_COUNTERS)?,
            _ebpf: ebpf,
        };
        for &vip in vips {
            decap.add_vip(vip)?;
        }
        Ok(decap)
    }

    pub fn add_vip(&mut self, vip: IpAddr) -> Result<(), DataplaneError> {
        let (family, addr_be) = family_and_words(vip);
        let key = DecapKey {
            addr_be,
            family,
            _pad: [0; 3],
        };
        self.vips
            .insert(key, 1, 0)
            .map_err(map_err(names::DECAP_VIPS))
    }

    pub fn counters(&self) -> Result<Vec<(DecapCounter, u64)>, DataplaneError> {
        DecapCounter::ALL
            .iter()
            .map(|&c| {
                Ok((
                    c,
                    per_cpu_sum(&self.counters, c as u32, names::DECAP_COUNTERS)?,
                ))
            })
            .collect()
    }
}
