//! `sluice_xdp` on the gateway: the program, its maps, and the bookkeeping that maps config names
//! to kernel indexes.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use aya::{programs::Xdp, EbpfLoader};
use lb_common::{
    names, BackendEntry, Counter, FlowEntry, FlowKey, Settings, TrafficStats, VipEntry, VipKey,
    BACKEND_DOWN, BACKEND_UP, HASH_FIVE_TUPLE, HASH_SOURCE_IP, MAX_BACKENDS, MAX_VIPS, VIP_KIND_L4,
};

use super::{
    addr::{family_and_words, vip_key, words_to_ip},
    error::map_err,
    maps::{attach_xdp, load_xdp, per_cpu_sum, per_cpu_values, take, Arr, Hash, PerCpu},
    rings::{build, Member, Regions},
    DataplaneError,
};
use crate::{
    config::{Config, Encap, HashKey, Vip, XdpMode as Mode},
    EBPF_OBJECT,
};

/// Sizes fixed when the maps are created.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub conntrack_entries: u32,
    /// Slots in the ring map; each VIP takes `2 × table_size`.
    pub ring_slots: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            conntrack_entries: lb_common::CONNTRACK_ENTRIES,
            ring_slots: lb_common::DEFAULT_RING_SLOTS,
        }
    }
}

/// What userspace remembers about a VIP; the kernel only sees indexes.
#[derive(Debug, Clone)]
struct VipState {
    config: Vip,
    key: VipKey,
    index: u32,
    region: u32,
    /// Which half of the region is live (0 or 1).
    live: u32,
    backends: Vec<BackendState>,
}

#[derive(Debug, Clone)]
struct BackendState {
    address: IpAddr,
    weight: u32,
    id: u32,
    state: u8,
}

/// Bookkeeping cloned before a change and committed only when every map write succeeded.
#[derive(Debug, Clone)]
struct State {
    vips: BTreeMap<String, VipState>,
    regions: Regions,
    free_vip_indexes: Vec<u32>,
    /// Backend ids are handed out once: conntrack entries may still name a removed backend's id,
    /// and reusing it would send those flows to a stranger.
    next_backend_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    pub vip: String,
    pub address: IpAddr,
    pub weight: u32,
    pub state: u8,
    pub traffic: TrafficStats,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub protocol: u8,
    pub backend: Option<IpAddr>,
    pub age: Duration,
}

pub struct Dataplane {
    ebpf: aya::Ebpf,
    vips: Hash<VipKey, VipEntry>,
    backends: Arr<BackendEntry>,
    rings: Arr<u32>,
    conntrack: Hash<FlowKey, FlowEntry>,
    settings: Arr<Settings>,
    vip_stats: PerCpu<TrafficStats>,
    backend_stats: PerCpu<TrafficStats>,
    counters: PerCpu<u64>,
    state: State,
}

impl Dataplane {
    /// Creates the maps and loads `sluice_xdp` (not yet attached anywhere).
    pub fn load(opts: Options) -> Result<Dataplane, DataplaneError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::CONNTRACK, opts.conntrack_entries)
            .map_max_entries(names::RINGS, opts.ring_slots)
            .load(EBPF_OBJECT)?;
        load_xdp(&mut ebpf, names::PROG_XDP)?;
        Ok(Dataplane {
            vips: take(&mut ebpf, names::VIPS)?,
            backends: take(&mut ebpf, names::BACKENDS)?,
            rings: take(&mut ebpf, names::RINGS)?,
            conntrack: take(&mut ebpf, names::CONNTRACK)?,
            settings: take(&mut ebpf, names::SETTINGS)?,
            vip_stats: take(&mut ebpf, names::VIP_STATS)?,
            backend_stats: take(&mut ebpf, names::BACKEND_STATS)?,
            counters: take(&mut ebpf, names::COUNTERS)?,
            ebpf,
            state: State {
                vips: BTreeMap::new(),
                regions: Regions::new(opts.ring_slots),
                free_vip_indexes: (0..MAX_VIPS).rev().collect(),
                next_backend_id: 0,
            },
        })
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> Result<&Xdp, DataplaneError> {
        self.ebpf
            .program(names::PROG_XDP)
            .ok_or(DataplaneError::MissingProgram(names::PROG_XDP))?
            .try_into()
            .map_err(|error| DataplaneError::Program {
                name: names::PROG_XDP,
                error,
            })
    }

    /// Attaches `sluice_xdp` to `iface` in the calling thread's network namespace. Detached when
    /// the `Dataplane` is dropped.
    pub fn attach(&mut self, iface: &str, mode: Mode) -> Result<(), DataplaneError> {
        attach_xdp(&mut self.ebpf, names::PROG_XDP, iface, mode)
    }

    /// Makes the maps say what `config` says. Every table is computed before the first write;
    /// backend drain/down states of backends that stay are kept.
    pub fn apply(&mut self, config: &Config) -> Result<(), DataplaneError> {
        let mut next = self.state.clone();
        let mut planned = Vec::with_capacity(config.vips.len());
        let removed: Vec<VipState> = {
            let keep: Vec<&str> = config.vips.iter().map(|v| v.name.as_str()).collect();
            let gone: Vec<String> = next
                .vips
                .keys()
                .filter(|n| !keep.contains(&n.as_str()))
                .cloned()
                .collect();
            gone.into_iter()
                .filter_map(|n| next.vips.remove(&n))
                .collect()
        };
        // Regions given up in this change are freed only after every new one is allocated, so
        // no new table is written over one that packets may still be reading.
        let mut released: Vec<(u32, u32)> = Vec::new();
        for vip in &config.vips {
            let state = plan_vip(&mut next, vip, &mut released)?;
            let table = table_for(&state)?;
            planned.push((state, table));
        }
        for v in &removed {
            released.push((v.region, 2 * v.config.table_size));
            next.free_vip_indexes.push(v.index);
        }
        for (offset, len) in released {
            next.regions.release(offset, len);
        }
        self.write_settings(&config.encap)?;
        for v in &removed {
            self.vips.remove(&v.key).map_err(map_err(names::VIPS))?;
            for b in &v.backends {
                self.write_backend(b.id, b.address, BACKEND_DOWN)?;
            }
        }
        for (state, table) in &mut planned {
            if let Some(old) = self.state.vips.get(&state.config.name) {
                if old.key != state.key {
                    self.vips.remove(&old.key).map_err(map_err(names::VIPS))?;
                }
            }
            for b in &state.backends {
                self.write_backend(b.id, b.address, b.state)?;
            }
            self.flip(state, table)?;
            next.vips.insert(state.config.name.clone(), state.clone());
        }
        self.state = next;
        Ok(())
    }

    /// Sets a backend `up`, `draining` or `down` and rebuilds its VIP's table. Established
    /// flows keep their backend; only new flows follow the new table.
    pub fn set_backend_state(
        &mut self,
        vip: &str,
        backend: IpAddr,
        state: u8,
    ) -> Result<(), DataplaneError> {
        let mut v = self
            .state
            .vips
            .get(vip)
            .cloned()
            .ok_or_else(|| DataplaneError::UnknownVip(vip.into()))?;
        let b = v
            .backends
            .iter_mut()
            .find(|b| b.address == backend)
            .ok_or_else(|| DataplaneError::UnknownBackend {
                vip: vip.into(),
                backend,
            })?;
        b.state = state;
        let (id, address) = (b.id, b.address);
        let mut table = table_for(&v)?;
        self.write_backend(id, address, state)?;
        self.flip(&mut v, &mut table)?;
        self.state.vips.insert(vip.to_string(), v);
        Ok(())
    }

    /// Writes `table` to the VIP's staging half, then makes it live with one VIP entry write.
    fn flip(&mut self, v: &mut VipState, table: &mut [u32]) -> Result<(), DataplaneError> {
        let size = v.config.table_size;
        let staging = 1 - v.live;
        let base = v.region + staging * size;
        for (i, &id) in (0u32..).zip(table.iter()) {
            self.rings
                .set(base + i, id, 0)
                .map_err(map_err(names::RINGS))?;
        }
        let entry = VipEntry {
            index: v.index,
            ring_offset: base,
            ring_size: size,
            kind: VIP_KIND_L4,
            hash_key: match v.config.hash {
                HashKey::FiveTuple => HASH_FIVE_TUPLE,
                HashKey::SourceIp => HASH_SOURCE_IP,
            },
            proxy_policy: lb_common::PROXY_OFF,
            flags: 0,
        };
        self.vips
            .insert(v.key, entry, 0)
            .map_err(map_err(names::VIPS))?;
        v.live = staging;
        Ok(())
    }

    fn write_backend(&mut self, id: u32, address: IpAddr, state: u8) -> Result<(), DataplaneError> {
        let (family, addr_be) = family_and_words(address);
        let entry = BackendEntry {
            addr_be,
            family,
            state,
            _pad: [0; 2],
        };
        self.backends
            .set(id, entry, 0)
            .map_err(map_err(names::BACKENDS))
    }

    fn write_settings(&mut self, encap: &Encap) -> Result<(), DataplaneError> {
        let v4_mask = u32::MAX
            .checked_shr(u32::from(encap.source_v4.prefix_len()))
            .unwrap_or(0);
        let v6_host_bits = 128 - u32::from(encap.source_v6.prefix_len());
        let v6_mask = if v6_host_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << v6_host_bits) - 1
        };
        let (_, src6) = family_and_words(IpAddr::V6(encap.source_v6.network()));
        let settings = Settings {
            src4_base_be: u32::from_ne_bytes(encap.source_v4.network().octets()),
            src4_host_mask_be: v4_mask.to_be(),
            src6_base_be: src6,
            src6_host_mask_be: v6_mask.to_be(),
            _pad: 0,
        };
        self.settings
            .set(0, settings, 0)
            .map_err(map_err(names::SETTINGS))
    }

    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DataplaneError> {
        Counter::ALL
            .iter()
            .map(|&c| Ok((c, per_cpu_sum(&self.counters, c as u32, names::COUNTERS)?)))
            .collect()
    }

    pub fn counter(&self, c: Counter) -> Result<u64, DataplaneError> {
        per_cpu_sum(&self.counters, c as u32, names::COUNTERS)
    }

    /// Backends of every VIP with their state and traffic.
    pub fn backends(&self) -> Result<Vec<BackendStatus>, DataplaneError> {
        let mut out = Vec::new();
        for v in self.state.vips.values() {
            for b in &v.backends {
                out.push(BackendStatus {
                    vip: v.config.name.clone(),
                    address: b.address,
                    weight: b.weight,
                    state: b.state,
                    traffic: sum_traffic(&per_cpu_values(
                        &self.backend_stats,
                        b.id,
                        names::BACKEND_STATS,
                    )?),
                });
            }
        }
        Ok(out)
    }

    pub fn vip_traffic(&self, vip: &str) -> Result<TrafficStats, DataplaneError> {
        let v = self
            .state
            .vips
            .get(vip)
            .ok_or_else(|| DataplaneError::UnknownVip(vip.into()))?;
        Ok(sum_traffic(&per_cpu_values(
            &self.vip_stats,
            v.index,
            names::VIP_STATS,
        )?))
    }

    /// Up to `limit` conntrack entries. `now_ns` is `CLOCK_MONOTONIC` (what `bpf_ktime_get_ns` reads).
    pub fn flows(&self, limit: usize, now_ns: u64) -> Result<Vec<FlowInfo>, DataplaneError> {
        let ids: BTreeMap<u32, IpAddr> = self
            .state
            .vips
            .values()
            .flat_map(|v| v.backends.iter().map(|b| (b.id, b.address)))
            .collect();
        let mut out = Vec::new();
        for item in self.conntrack.iter().take(limit) {
            let (k, e) = item.map_err(map_err(names::CONNTRACK))?;
            out.push(FlowInfo {
                client: SocketAddr::new(words_to_ip(k.family, k.src_be), u16::from_be(k.sport_be)),
                vip: SocketAddr::new(words_to_ip(k.family, k.dst_be), u16::from_be(k.dport_be)),
                protocol: k.proto,
                backend: ids.get(&e.backend).copied(),
                age: Duration::from_nanos(now_ns.saturating_sub(e.created_ns)),
            });
        }
        Ok(out)
    }

    /// The backend conntrack holds for a flow, if any.
    pub fn flow_backend(&self, key: &FlowKey) -> Option<u32> {
        self.conntrack.get(key, 0).ok().map(|e| e.backend)
    }

    /// Kernel id of a backend (what conntrack entries and `flow_backend` name).
    pub fn backend_id(&self, vip: &str, backend: IpAddr) -> Option<u32> {
        self.state
            .vips
            .get(vip)?
            .backends
            .iter()
            .find(|b| b.address == backend)
            .map(|b| b.id)
    }
}

fn sum_traffic(per_cpu: &[TrafficStats]) -> TrafficStats {
    per_cpu
        .iter()
        .fold(TrafficStats::default(), |a, s| TrafficStats {
            packets: a.packets + s.packets,
            bytes: a.bytes + s.bytes,
            new_flows: a.new_flows + s.new_flows,
        })
}

/// The VIP's next state: same index/region when it stays the same size, kept backend ids and
/// states, fresh ids for new backends.
fn plan_vip(
    next: &mut State,
    vip: &Vip,
    released: &mut Vec<(u32, u32)>,
) -> Result<VipState, DataplaneError> {
    let old = next.vips.get(&vip.name).cloned();
    let (index, region, live) = match &old {
        Some(o) if o.config.table_size == vip.table_size => (o.index, o.region, o.live),
        Some(o) => {
            released.push((o.region, 2 * o.config.table_size));
            (o.index, next.regions.alloc(2 * vip.table_size)?, 0)
        }
        None => {
            let index = next
                .free_vip_indexes
                .pop()
                .ok_or(DataplaneError::TooManyVips { max: MAX_VIPS })?;
            (index, next.regions.alloc(2 * vip.table_size)?, 1)
        }
    };
    let mut backends = Vec::with_capacity(vip.backends.len());
    for b in &vip.backends {
        let kept = old
            .as_ref()
            .and_then(|o| o.backends.iter().find(|ob| ob.address == b.address));
        let (id, state) = if let Some(k) = kept {
            (k.id, k.state)
        } else {
            if next.next_backend_id >= MAX_BACKENDS {
                return Err(DataplaneError::TooManyBackends { max: MAX_BACKENDS });
            }
            next.next_backend_id += 1;
            (next.next_backend_id - 1, BACKEND_UP)
        };
        backends.push(BackendState {
            address: b.address,
            weight: b.weight,
            id,
            state,
        });
    }
    Ok(VipState {
        key: vip_key(vip.address, vip.port, vip.protocol),
        config: vip.clone(),
        index,
        region,
        live,
        backends,
    })
}

fn table_for(v: &VipState) -> Result<Vec<u32>, DataplaneError> {
    let members: Vec<Member> = v
        .backends
        .iter()
        .filter(|b| b.state == BACKEND_UP)
        .map(|b| Member {
            address: b.address,
            weight: b.weight,
            id: b.id,
        })
        .collect();
    build(&v.config.name, &members, v.config.seed, v.config.table_size)
}
