//! Userspace bookkeeping of what the kernel maps hold, and the pure planning of a change: which
//! VIP index, ring region and backend ids a config gets. Nothing here touches a map.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use lb_common::{
    CidrData, VipKey, BACKEND_UP, CIDR_SCOPE_BITS, LIST_ALLOW_CLIENTS, LIST_DENY_CLIENTS,
    LIST_TRUSTED_PROXIES, MAX_BACKENDS, MAX_VIPS,
};

use super::{
    addr::{family_and_words, vip_key},
    pins::PreviousBackends,
    rings::{build, Member, Regions},
    DataplaneError,
};
use crate::config::{Edge, Protocol, ProxyProtocol, Vip};

/// What userspace remembers about a VIP; the kernel only sees indexes.
#[derive(Debug, Clone)]
pub struct VipState {
    pub config: Vip,
    pub key: VipKey,
    pub index: u32,
    pub region: u32,
    /// Which half of the region is live (0 or 1).
    pub live: u32,
    pub backends: Vec<BackendState>,
    /// The live table (backend ids), as last written; shared, since states are cloned for
    /// every change and edge pools read it after each one.
    pub table: Arc<Vec<u32>>,
}

#[derive(Debug, Clone)]
pub struct BackendState {
    pub address: IpAddr,
    pub weight: u32,
    pub id: u32,
    pub state: u8,
}

/// An edge listener's entry in the VIP map: the kernel polices its connections and passes
/// them to the local stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeState {
    pub key: VipKey,
    pub index: u32,
    pub proxy_protocol: ProxyProtocol,
    pub trusted_proxies: Vec<IpNet>,
}

/// Bookkeeping cloned before a change and committed only when every map write succeeded.
#[derive(Debug, Clone)]
pub struct State {
    pub vips: BTreeMap<String, VipState>,
    /// Edge listeners by name (a namespace of their own, apart from VIP names).
    pub edges: BTreeMap<String, EdgeState>,
    pub regions: Regions,
    pub free_vip_indexes: Vec<u32>,
    /// Backend ids are handed out once: conntrack entries may still name a removed backend's id,
    /// and reusing it would send those flows to a stranger.
    pub next_backend_id: u32,
    /// What a previous daemon left pinned, consulted when a VIP is first planned.
    pub adopted: Adopted,
    /// Keys of the CIDR trie (prefix length, data), so a change writes only the difference.
    pub cidrs: BTreeSet<CidrKey>,
}

/// A key of the CIDR trie: full prefix length (scope included) and data.
pub type CidrKey = (u32, CidrData);

/// The trie keys of a VIP's `trusted_proxies`, `allow_clients` and `deny_clients`.
pub fn cidr_keys(v: &VipState) -> impl Iterator<Item = CidrKey> + '_ {
    let c = &v.config;
    list_keys(
        v.index,
        [
            (LIST_TRUSTED_PROXIES, c.trusted_proxies.as_slice()),
            (LIST_ALLOW_CLIENTS, c.allow_clients.as_slice()),
            (LIST_DENY_CLIENTS, c.deny_clients.as_slice()),
        ],
    )
}

/// The trie keys of an edge listener's `trusted_proxies`.
pub fn edge_cidr_keys(e: &EdgeState) -> impl Iterator<Item = CidrKey> + '_ {
    list_keys(
        e.index,
        [(LIST_TRUSTED_PROXIES, e.trusted_proxies.as_slice())],
    )
}

fn list_keys<const N: usize>(
    index: u32,
    lists: [(u8, &[IpNet]); N],
) -> impl Iterator<Item = CidrKey> + '_ {
    lists.into_iter().flat_map(move |(list, nets)| {
        nets.iter().map(move |net| {
            let (family, addr_be) = family_and_words(net.network());
            let data = CidrData {
                // VIP indexes are below MAX_VIPS (256).
                vip_index: u16::try_from(index).unwrap_or(u16::MAX),
                list,
                family,
                addr_be,
            };
            (CIDR_SCOPE_BITS + u32::from(net.prefix_len()), data)
        })
    })
}

impl State {
    pub fn backend(&self, vip: &str, address: IpAddr) -> Option<&BackendState> {
        self.vips
            .get(vip)?
            .backends
            .iter()
            .find(|b| b.address == address)
    }
}

/// VIP indexes and backend ids of the daemon that ran before, so flows it recorded keep their
/// meaning.
#[derive(Debug, Clone, Default)]
pub struct Adopted {
    pub vip_indexes: HashMap<VipKey, u32>,
    pub backends: PreviousBackends,
}

impl State {
    pub fn new(ring_slots: u32, adopted: Adopted) -> State {
        let taken: Vec<u32> = adopted.vip_indexes.values().copied().collect();
        State {
            vips: BTreeMap::new(),
            edges: BTreeMap::new(),
            regions: Regions::new(ring_slots),
            // Indexes a previous daemon used stay reserved for their VIPs.
            free_vip_indexes: (0..MAX_VIPS).rev().filter(|i| !taken.contains(i)).collect(),
            next_backend_id: adopted.backends.next_id,
            adopted,
            cidrs: BTreeSet::new(),
        }
    }
}

/// The VIP's next state: same index/region when it stays the same size, kept backend ids and
/// states, fresh ids for new backends. Regions given up are pushed to `released`.
pub fn plan_vip(
    next: &mut State,
    vip: &Vip,
    released: &mut Vec<(u32, u32)>,
) -> Result<VipState, DataplaneError> {
    let key = vip_key(vip.address, vip.port, vip.protocol);
    let old = next.vips.get(&vip.name).cloned();
    let (index, region, live) = match &old {
        Some(o) if o.config.table_size == vip.table_size => (o.index, o.region, o.live),
        Some(o) => {
            released.push((o.region, 2 * o.config.table_size));
            (o.index, next.regions.alloc(2 * vip.table_size)?, 0)
        }
        None => (
            take_index(next, &key)?,
            next.regions.alloc(2 * vip.table_size)?,
            1,
        ),
    };
    let mut backends = Vec::with_capacity(vip.backends.len());
    for b in &vip.backends {
        let kept = old
            .as_ref()
            .and_then(|o| o.backends.iter().find(|ob| ob.address == b.address))
            .map(|k| (k.id, k.state))
            .or_else(|| next.adopted.backends.ids.remove(&(index, b.address)));
        let (id, state) = if let Some(k) = kept {
            k
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
        key,
        config: vip.clone(),
        index,
        region,
        live,
        backends,
        table: Arc::default(),
    })
}

/// The index a previous daemon gave `key`, else a free one.
fn take_index(next: &mut State, key: &VipKey) -> Result<u32, DataplaneError> {
    match next.adopted.vip_indexes.remove(key) {
        Some(i) => Ok(i),
        None => next
            .free_vip_indexes
            .pop()
            .ok_or(DataplaneError::TooManyVips { max: MAX_VIPS }),
    }
}

/// The edge's next state, keeping its index. `None` for a wildcard listener, which no VIP
/// entry can match: its connections reach the stack unpoliced by the kernel.
fn plan_edge(next: &mut State, edge: &Edge) -> Result<Option<EdgeState>, DataplaneError> {
    let ip = edge.address.ip();
    if ip.is_unspecified() {
        return Ok(None);
    }
    let key = vip_key(ip, edge.address.port(), Protocol::Tcp);
    let index = match next.edges.get(&edge.name) {
        Some(old) => old.index,
        None => take_index(next, &key)?,
    };
    Ok(Some(EdgeState {
        key,
        index,
        proxy_protocol: edge.proxy_protocol,
        trusted_proxies: edge.trusted_proxies.clone(),
    }))
}

/// Plans every edge of `edges` into `next.edges`; returns the edges that are gone (their
/// indexes are not free until the change is made).
pub fn plan_edges(next: &mut State, edges: &[Edge]) -> Result<Vec<EdgeState>, DataplaneError> {
    let mut planned = BTreeMap::new();
    for e in edges {
        if let Some(state) = plan_edge(next, e)? {
            planned.insert(e.name.clone(), state);
        }
    }
    let old = std::mem::replace(&mut next.edges, planned);
    Ok(old
        .into_iter()
        .filter(|(name, _)| !next.edges.contains_key(name))
        .map(|(_, e)| e)
        .collect())
}

/// The Maglev table over the backends that may take new flows.
pub fn table_for(v: &VipState) -> Result<Vec<u32>, DataplaneError> {
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
