//! Conntrack read off the daemon's lock: a handle of its own on the map (a duplicate of the
//! map's fd), walked with batch syscalls, and one on the PROXY flow map, which holds the real
//! client of a PROXY VIP's flows (`FLOW_FLAG_PROXY`).
//!
//! A full table holds a million entries. Walked key by key under the daemon's one lock, every
//! probe, scrape and `sluice backends` took seconds and SIGTERM waited behind them. Through
//! this handle one walk costs a few hundred syscalls and holds nothing anyone else waits for.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd as _, OwnedFd},
    time::Duration,
};

use aya::maps::IterableMap as _;
use lb_common::{
    names,
    proxy::{ProxyOutcome, FLOW_ALLOWED, FLOW_REFUSED},
    FlowEntry, FlowKey, ProxyFlow, FLOW_FLAG_PROXY,
};

use super::{addr::words_to_ip, gateway::FlowInfo, sys, Dataplane, DataplaneError};

/// Entries per batch syscall: 4096 × 64 bytes of buffers, a few hundred calls for a full table.
const BATCH: usize = 4096;

/// A handle on the conntrack map that needs no lock of the daemon's.
#[derive(Debug)]
pub struct Conntrack {
    fd: OwnedFd,
    proxy_fd: OwnedFd,
}

/// What a walk needs to name what it finds: VIP and edge names by index, backend addresses by
/// id. Taken from the dataplane's state in a moment, so a walk runs without it.
#[derive(Debug, Clone, Default)]
pub struct FlowLabels {
    pub names: BTreeMap<u32, String>,
    pub ids: BTreeMap<u32, IpAddr>,
}

impl Dataplane {
    /// A second handle on conntrack for walks that must not hold the daemon's lock.
    pub fn conntrack(&self) -> Result<Conntrack, DataplaneError> {
        let dup = |fd: std::os::fd::BorrowedFd<'_>, name| {
            fd.try_clone_to_owned()
                .map_err(|error| DataplaneError::MapIo {
                    name,
                    what: "duplicating its fd",
                    error,
                })
        };
        Ok(Conntrack {
            fd: dup(self.conntrack.map().fd().as_fd(), names::CONNTRACK)?,
            proxy_fd: dup(self.proxy_flows.map().fd().as_fd(), names::PROXY_FLOWS)?,
        })
    }

    /// VIP and edge names and backend addresses, for naming what a walk finds.
    pub fn flow_labels(&self) -> FlowLabels {
        FlowLabels {
            names: self
                .state
                .vips
                .values()
                .map(|v| (v.index, v.config.name.clone()))
                .chain(self.state.edges.iter().map(|(n, e)| (e.index, n.clone())))
                .collect(),
            ids: self
                .state
                .vips
                .values()
                .flat_map(|v| v.backends.iter().map(|b| (b.id, b.address)))
                .collect(),
        }
    }

    /// Up to `limit` conntrack entries (of one VIP when `vip` is given), walked through a
    /// handle of their own (tests and tools; the daemon walks off its lock instead).
    pub fn flows(&self, vip: Option<&str>, limit: usize) -> Result<Vec<FlowInfo>, DataplaneError> {
        let only = vip.map(|v| self.vip_index_of(v)).transpose()?;
        let labels = self.flow_labels();
        let now = sys::monotonic_ns();
        let mut out = Vec::new();
        let ct = self.conntrack()?;
        ct.for_each(|k, e| {
            if out.len() < limit && only.is_none_or(|i| i == u32::from(e.vip_index)) {
                out.push(flow_info(&labels, now, k, e, ct.proxy_flow(k, e)));
            }
        })?;
        Ok(out)
    }

    /// The index of a configured VIP.
    pub fn vip_index_of(&self, vip: &str) -> Result<u32, DataplaneError> {
        self.state
            .vips
            .get(vip)
            .map(|v| v.index)
            .ok_or_else(|| DataplaneError::UnknownVip(vip.into()))
    }
}

impl Conntrack {
    /// Calls `f` with every entry; an entry added or evicted during the walk may or may not be
    /// seen, as with any walk of a live map. Returns how many entries were seen.
    pub fn for_each(
        &self,
        mut f: impl FnMut(&FlowKey, &FlowEntry),
    ) -> Result<usize, DataplaneError> {
        let mut keys = vec![FlowKey::default(); BATCH];
        let mut values = vec![FlowEntry::default(); BATCH];
        let mut cursor = sys::BatchCursor::default();
        let mut seen = 0;
        while !cursor.done() {
            let n = sys::lookup_batch(self.fd.as_fd(), &mut cursor, &mut keys, &mut values)
                .map_err(|error| DataplaneError::MapIo {
                    name: names::CONNTRACK,
                    what: "batch lookup",
                    error,
                })?;
            for (k, e) in keys.iter().zip(&values).take(n) {
                f(k, e);
            }
            seen += n;
        }
        Ok(seen)
    }

    /// The PROXY record of a flow that has one (`FLOW_FLAG_PROXY`); `None` for other flows and
    /// when it is gone (evicted from its smaller map, or the flow ended in between). A read
    /// error is taken as gone: the record only adds the real client to what is shown.
    pub fn proxy_flow(&self, k: &FlowKey, e: &FlowEntry) -> Option<ProxyFlow> {
        if e.flags & FLOW_FLAG_PROXY == 0 {
            return None;
        }
        sys::lookup(self.proxy_fd.as_fd(), k).ok().flatten()
    }

    /// Removes `keys` (those already gone are skipped), and the PROXY records of `proxy_keys`
    /// (the flows among them flagged `FLOW_FLAG_PROXY`); returns how many flows it removed.
    pub fn remove(
        &self,
        keys: &[FlowKey],
        proxy_keys: &[FlowKey],
    ) -> Result<usize, DataplaneError> {
        let removed =
            sys::delete_batch(self.fd.as_fd(), keys).map_err(|error| DataplaneError::MapIo {
                name: names::CONNTRACK,
                what: "batch delete",
                error,
            })?;
        sys::delete_batch(self.proxy_fd.as_fd(), proxy_keys).map_err(|error| {
            DataplaneError::MapIo {
                name: names::PROXY_FLOWS,
                what: "batch delete",
                error,
            }
        })?;
        Ok(removed)
    }
}

/// One conntrack entry (with its PROXY record, if it has one) as `sluice flows` shows it;
/// `now_ns` is `sys::monotonic_ns()`.
pub fn flow_info(
    labels: &FlowLabels,
    now_ns: u64,
    k: &FlowKey,
    e: &FlowEntry,
    proxy: Option<ProxyFlow>,
) -> FlowInfo {
    FlowInfo {
        client: SocketAddr::new(words_to_ip(k.family, k.src_be), u16::from_be(k.sport_be)),
        vip: SocketAddr::new(words_to_ip(k.family, k.dst_be), u16::from_be(k.dport_be)),
        vip_name: labels.names.get(&u32::from(e.vip_index)).cloned(),
        protocol: k.proto,
        backend: labels.ids.get(&e.backend).copied(),
        backend_id: e.backend,
        age: Duration::from_nanos(now_ns.saturating_sub(e.created_ns)),
        idle: Duration::from_nanos(now_ns.saturating_sub(e.last_seen_ns)),
        real_client: proxy.filter(|p| p.client_family != 0).map(|p| {
            SocketAddr::new(
                words_to_ip(p.client_family, p.client_be),
                u16::from_be(p.client_port_be),
            )
        }),
        proxy: [FLOW_ALLOWED, FLOW_REFUSED]
            .contains(&e.proxy_state)
            .then(|| ProxyOutcome::from_u8(e.proxy_outcome))
            .flatten(),
    }
}

/// `sys::monotonic_ns`, for callers outside the dataplane (the clock conntrack stamps with).
pub fn now_ns() -> u64 {
    sys::monotonic_ns()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::Options;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn key(i: u32) -> FlowKey {
        FlowKey {
            src_be: [i.to_be(), 0, 0, 0],
            sport_be: 1000u16.to_be(),
            family: 4,
            ..FlowKey::default()
        }
    }

    /// The batch syscalls against the real map: more entries than one batch holds, every one
    /// seen once, and a delete that meets keys already gone skips them and goes on.
    #[test]
    fn batch_walk_sees_every_entry_and_batch_delete_skips_missing_keys() {
        if !is_root() {
            eprintln!("skipped: loading sluice_xdp needs root");
            return;
        }
        let mut dp = Dataplane::load(&Options::unpinned(1 << 16, lb_common::DEFAULT_RING_SLOTS))
            .expect("loading sluice_xdp (needs root)");
        let n = u32::try_from(BATCH).unwrap() * 2 + 123;
        for i in 0..n {
            let entry = FlowEntry {
                backend: i % 3,
                last_seen_ns: u64::from(i),
                ..FlowEntry::default()
            };
            dp.conntrack.insert(key(i), entry, 0).unwrap();
        }
        let ct = dp.conntrack().unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut per_backend = [0u32; 3];
        let walked = ct
            .for_each(|k, e| {
                assert!(seen.insert(u32::from_be(k.src_be[0])), "seen twice: {k:?}");
                assert_eq!(e.last_seen_ns, u64::from(u32::from_be(k.src_be[0])));
                per_backend[e.backend as usize] += 1;
            })
            .unwrap();
        assert_eq!(walked, n as usize);
        assert_eq!(seen.len(), n as usize);
        assert_eq!(per_backend.iter().sum::<u32>(), n);

        // Every even key, with some already removed in between.
        let doomed: Vec<FlowKey> = (0..n).step_by(2).map(key).collect();
        for k in doomed.iter().step_by(100) {
            dp.conntrack.remove(k).unwrap();
        }
        let gone_before = doomed.iter().step_by(100).count();
        assert_eq!(ct.remove(&doomed, &[]).unwrap(), doomed.len() - gone_before);
        let mut left = 0;
        ct.for_each(|k, _| {
            assert_eq!(u32::from_be(k.src_be[0]) % 2, 1, "{k:?} was deleted");
            left += 1;
        })
        .unwrap();
        assert_eq!(left, n as usize - doomed.len());
    }

    /// A PROXY VIP's flow: `flows()` names the real client from its PROXY record, and removing
    /// the flow as idle removes that record too.
    #[test]
    fn proxy_records_are_joined_and_removed_with_their_flow() {
        if !is_root() {
            eprintln!("skipped: loading sluice_xdp needs root");
            return;
        }
        let mut dp = Dataplane::load(&Options::unpinned(1 << 12, lb_common::DEFAULT_RING_SLOTS))
            .expect("loading sluice_xdp (needs root)");
        let now = now_ns();
        let flow = |flags| FlowEntry {
            flags,
            created_ns: now,
            last_seen_ns: now,
            ..FlowEntry::default()
        };
        dp.conntrack
            .insert(key(1), flow(FLOW_FLAG_PROXY), 0)
            .unwrap();
        dp.conntrack.insert(key(2), flow(0), 0).unwrap();
        let record = ProxyFlow {
            client_be: [u32::from_ne_bytes([203, 0, 113, 7]), 0, 0, 0],
            client_port_be: 5555u16.to_be(),
            client_family: lb_common::FAMILY_V4,
            ..ProxyFlow::default()
        };
        dp.proxy_flows.insert(key(1), record, 0).unwrap();
        let mut real: Vec<_> = dp
            .flows(None, 10)
            .unwrap()
            .into_iter()
            .map(|f| (f.client.port(), f.real_client))
            .collect();
        real.sort();
        assert_eq!(
            real,
            [
                (1000, None),
                (1000, Some("203.0.113.7:5555".parse().unwrap()))
            ]
        );
        let ct = dp.conntrack().unwrap();
        assert_eq!(ct.remove(&[key(1), key(2)], &[key(1)]).unwrap(), 2);
        assert!(dp.proxy_flows.get(&key(1), 0).is_err(), "record removed");
    }
}
