//! The writes that make `sluice_xdp`'s maps say what the config says: a whole config
//! ([`Dataplane::apply`]), one backend's state, the resolver's next hops. Tables are staged
//! in their VIP's inactive ring half first; the live writes go through [`Commit`] and are
//! rolled back as a whole if one fails.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use lb_common::{
    names, BackendEntry, Settings, VipEntry, VipKey, BACKEND_DOWN, HASH_FIVE_TUPLE, HASH_SOURCE_IP,
    PROXY_OFF, PROXY_OPTIONAL, PROXY_REQUIRED, VIP_FLAG_ACCEPT_V1, VIP_FLAG_ALLOW_CLIENTS,
    VIP_FLAG_DENY_CLIENTS, VIP_KIND_EDGE, VIP_KIND_L4,
};

use super::{
    addr::family_and_words,
    commit::{Commit, Live},
    error::map_err,
    gateway::Dataplane,
    next_hop::{Cached, Hop},
    plan::{
        cidr_keys, edge_cidr_keys, plan_edges, plan_vip, table_for, CidrKey, EdgeState, VipState,
    },
    DataplaneError,
};
use crate::config::{Config, Encap, HashKey, ProxyProtocol};

impl Dataplane {
    /// Makes the maps say what `config` says, all or nothing. Every table is computed and
    /// written to its VIP's inactive half before anything live changes; the live writes then
    /// go in an order that keeps every table pointing at valid backends, and are undone if one
    /// fails. Drain/down states of backends that stay are kept.
    pub fn apply(&mut self, config: &Config) -> Result<(), DataplaneError> {
        let mut next = self.state.clone();
        let keep: Vec<&str> = config.vips.iter().map(|v| v.name.as_str()).collect();
        let gone: Vec<String> = next
            .vips
            .keys()
            .filter(|n| !keep.contains(&n.as_str()))
            .cloned()
            .collect();
        let removed: Vec<VipState> = gone
            .into_iter()
            .filter_map(|n| next.vips.remove(&n))
            .collect();
        // Regions given up in this change are freed only after every new one is allocated, so
        // no new table is written over one that packets may still be reading.
        let mut released: Vec<(u32, u32)> = Vec::new();
        let mut planned = Vec::with_capacity(config.vips.len());
        for vip in &config.vips {
            let state = plan_vip(&mut next, vip, &mut released)?;
            let table = table_for(&state)?;
            planned.push((state, table));
        }
        let removed_edges = plan_edges(&mut next, &config.edges)?;
        for v in &removed {
            released.push((v.region, 2 * v.config.table_size));
            next.free_vip_indexes.push(v.index);
        }
        next.free_vip_indexes
            .extend(removed_edges.iter().map(|e| e.index));
        for (offset, len) in released {
            next.regions.release(offset, len);
        }
        for (state, table) in &planned {
            self.write_staging(state, table)?;
        }
        let settings = settings_for(&config.encap);
        // Keys written before this change and not by it: removed VIPs and edges, and the old
        // addresses of moved ones.
        let new_keys: HashSet<VipKey> = planned
            .iter()
            .map(|(s, _)| s.key)
            .chain(next.edges.values().map(|e| e.key))
            .collect();
        let stale_keys: HashSet<VipKey> = self
            .state
            .vips
            .values()
            .map(|v| v.key)
            .chain(self.state.edges.values().map(|e| e.key))
            .filter(|k| !new_keys.contains(k))
            .collect();
        next.cidrs = planned
            .iter()
            .flat_map(|(s, _)| cidr_keys(s))
            .chain(next.edges.values().flat_map(edge_cidr_keys))
            .collect();
        let added: Vec<CidrKey> = next.cidrs.difference(&self.state.cidrs).copied().collect();
        let stale: Vec<CidrKey> = self.state.cidrs.difference(&next.cidrs).copied().collect();
        self.clear_moved_next_hops(planned.iter().map(|(s, _)| s))?;
        let mut commit = self.commit();
        let result = (|| {
            commit.settings(settings)?;
            for (state, _) in &planned {
                for b in &state.backends {
                    commit.backend(b.id, backend_entry(b.address, b.state, state.index))?;
                }
            }
            // Lists grow before a VIP entry can start using them and shrink after, so a VIP
            // that turns its PROXY policy on already trusts its proxies.
            for key in added {
                commit.add_cidr(key)?;
            }
            for (state, _) in &mut planned {
                commit.vip(state.key, flip(state))?;
            }
            for e in next.edges.values() {
                commit.vip(e.key, edge_entry(e))?;
            }
            for key in stale_keys {
                commit.remove_vip(key)?;
            }
            for v in &removed {
                for b in &v.backends {
                    commit.backend(b.id, backend_entry(b.address, BACKEND_DOWN, v.index))?;
                }
            }
            for key in stale {
                commit.remove_cidr(key)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            commit.rollback();
            return Err(DataplaneError::RolledBack(Box::new(e)));
        }
        for (mut state, table) in planned {
            state.table = Arc::new(table);
            next.vips.insert(state.config.name.clone(), state);
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
        if b.state == state {
            return Ok(());
        }
        b.state = state;
        let (id, address) = (b.id, b.address);
        let table = table_for(&v)?;
        self.write_staging(&v, &table)?;
        let mut commit = self.commit();
        let result = commit
            .backend(id, backend_entry(address, state, v.index))
            .and_then(|()| commit.vip(v.key, flip(&mut v)));
        if let Err(e) = result {
            commit.rollback();
            return Err(DataplaneError::RolledBack(Box::new(e)));
        }
        v.table = Arc::new(table);
        self.state.vips.insert(vip.to_string(), v);
        Ok(())
    }

    fn commit(&mut self) -> Commit<'_> {
        Commit::new(Live {
            vips: &mut self.vips,
            backends: &mut self.backends,
            settings: &mut self.settings,
            cidrs: &mut self.cidrs,
        })
    }

    /// Writes `table` to the VIP's inactive half; packets do not read it until the VIP entry
    /// points there.
    fn write_staging(&mut self, v: &VipState, table: &[u32]) -> Result<(), DataplaneError> {
        let base = v.region + (1 - v.live) * v.config.table_size;
        for (i, &id) in (0u32..).zip(table) {
            self.rings
                .set(base + i, id, 0)
                .map_err(map_err(names::RINGS))?;
        }
        Ok(())
    }
}

impl Dataplane {
    /// Every configured backend's tunnel destination (what the resolver resolves).
    pub fn backend_addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .state
            .vips
            .values()
            .flat_map(|v| v.backends.iter().map(|b| b.address))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Writes what the resolver found: every backend id whose address is in `resolved` gets
    /// that next hop (`None`: the kernel looks the route up itself). Runs under the daemon's
    /// lock, so an id always pairs with the address the backend map has for it. Returns how
    /// many entries changed.
    pub fn set_next_hops(
        &mut self,
        resolved: &HashMap<IpAddr, Option<Hop>>,
    ) -> Result<usize, DataplaneError> {
        let ids: Vec<(u32, IpAddr)> = self
            .state
            .vips
            .values()
            .flat_map(|v| v.backends.iter().map(|b| (b.id, b.address)))
            .collect();
        let mut changed = 0;
        for (id, address) in ids {
            if let Some(hop) = resolved.get(&address) {
                changed += usize::from(self.next_hops.set(id, *hop)?);
            }
        }
        Ok(changed)
    }

    /// Before `apply` writes the backend map: a backend id that leaves, or comes back for
    /// another address, must not keep the old address's next hop. Left cleared if the change
    /// rolls back (the resolver fills it again).
    pub(super) fn clear_moved_next_hops<'a>(
        &mut self,
        planned: impl Iterator<Item = &'a VipState>,
    ) -> Result<(), DataplaneError> {
        let new_ids: HashMap<u32, IpAddr> = planned
            .flat_map(|s| s.backends.iter().map(|b| (b.id, b.address)))
            .collect();
        let old_ids: Vec<(u32, IpAddr)> = self
            .state
            .vips
            .values()
            .flat_map(|v| v.backends.iter().map(|b| (b.id, b.address)))
            .collect();
        for (id, address) in old_ids {
            if new_ids.get(&id) != Some(&address) {
                self.next_hops.clear(id)?;
            }
        }
        Ok(())
    }

    /// The cached next hop of backend `id`, if one is live.
    pub fn next_hop(&self, id: u32) -> Option<Cached> {
        self.next_hops.get(id)
    }

    /// Forgets every cached next hop: the kernel looks routes up again (used when nothing
    /// will follow route changes any more, e.g. a dataplane kept running without a daemon).
    pub fn clear_next_hops(&mut self) -> Result<(), DataplaneError> {
        self.next_hops.clear_all()
    }
}

/// The VIP entry that makes the staging half live (and records the flip in `v`).
fn flip(v: &mut VipState) -> VipEntry {
    let size = v.config.table_size;
    let staging = 1 - v.live;
    v.live = staging;
    VipEntry {
        index: v.index,
        ring_offset: v.region + staging * size,
        ring_size: size,
        kind: VIP_KIND_L4,
        hash_key: match v.config.hash {
            HashKey::FiveTuple => HASH_FIVE_TUPLE,
            HashKey::SourceIp => HASH_SOURCE_IP,
        },
        proxy_policy: proxy_policy(v.config.proxy_protocol),
        flags: if v.config.allow_clients.is_empty() {
            0
        } else {
            VIP_FLAG_ALLOW_CLIENTS
        } | if v.config.deny_clients.is_empty() {
            0
        } else {
            VIP_FLAG_DENY_CLIENTS
        },
    }
}

/// An edge listener's entry: no table, its policy, and v1 headers accepted from trusted
/// proxies (the listener reads them).
fn edge_entry(e: &EdgeState) -> VipEntry {
    VipEntry {
        index: e.index,
        ring_offset: 0,
        ring_size: 0,
        kind: VIP_KIND_EDGE,
        hash_key: HASH_SOURCE_IP,
        proxy_policy: proxy_policy(e.proxy_protocol),
        flags: VIP_FLAG_ACCEPT_V1,
    }
}

fn proxy_policy(p: ProxyProtocol) -> u8 {
    match p {
        ProxyProtocol::Off => PROXY_OFF,
        ProxyProtocol::Optional => PROXY_OPTIONAL,
        ProxyProtocol::Required => PROXY_REQUIRED,
    }
}

fn backend_entry(address: IpAddr, state: u8, vip_index: u32) -> BackendEntry {
    let (family, addr_be) = family_and_words(address);
    BackendEntry {
        addr_be,
        family,
        state,
        vip_index: u16::try_from(vip_index).unwrap_or(u16::MAX),
    }
}

/// The tunnel source prefixes as the kernel reads them; a family without a prefix has no
/// backends, so its zeros are never used.
fn settings_for(encap: &Encap) -> Settings {
    let (src4_base_be, src4_host_mask_be) = encap.source_v4.map_or((0, 0), |p| {
        let mask = u32::MAX.checked_shr(u32::from(p.prefix_len())).unwrap_or(0);
        (u32::from_ne_bytes(p.network().octets()), mask.to_be())
    });
    let (src6_base_be, src6_host_mask_be) = encap.source_v6.map_or(([0; 4], 0), |p| {
        let host_bits = 128 - u32::from(p.prefix_len());
        let mask = if host_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << host_bits) - 1
        };
        let (_, base) = family_and_words(IpAddr::V6(p.network()));
        (base, mask.to_be())
    });
    Settings {
        src4_base_be,
        src4_host_mask_be,
        src6_base_be,
        src6_host_mask_be,
        _pad: 0,
    }
}
