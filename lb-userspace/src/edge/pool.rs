//! Which backend serves a client: the kernel's Maglev view of the pool VIP, by client address.
//!
//! The table is the one the kernel steers that VIP's flows with (only backends that take new
//! flows), hashed by source address like `hash = "source-ip"`, so an edge request and an L4
//! flow from the same client land on the same backend. A route's affinity may pick by another
//! hash over the same table (`cookie-hash`), or name a backend itself (`auth-session-route`),
//! which it may while the backend still keeps sessions (up or draining).

use std::{
    net::IpAddr,
    sync::{Arc, PoisonError, RwLock},
};

use lb_common::{flow_hash::source_ip_hash, FlowKey, FAMILY_V4, FAMILY_V6, PROTO_TCP};

/// How many following slots are tried for a backend other than an excluded one.
const PROBES: usize = 64;

#[derive(Debug, Default)]
pub struct Pool {
    now: RwLock<Arc<Snapshot>>,
}

/// The pool at one moment; replaced whole by [`Pool::update`], so a reader holding one sees a
/// consistent view (and can tell, by pointer, whether the pool changed since).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Slot → backend address.
    table: Vec<IpAddr>,
    /// Backends up or draining: the ones a session may stay on.
    sessions: Vec<IpAddr>,
    /// Every backend of the VIP, down ones too.
    members: Vec<IpAddr>,
}

impl Snapshot {
    /// Every backend of the VIP (up, draining or down).
    pub fn members(&self) -> &[IpAddr] {
        &self.members
    }

    /// Whether `backend` is up or draining, so a session may stay on it.
    pub fn keeps_sessions(&self, backend: IpAddr) -> bool {
        self.sessions.contains(&backend)
    }
}

/// What picks the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The client's address, hashed as the kernel hashes it.
    Client(IpAddr),
    /// A hash of something else the request carries (a cookie's value).
    Hash(u32),
}

impl Pool {
    /// Replaces the table (slot → backend address; an empty table serves nobody), the
    /// backends that keep their sessions and every backend of the VIP (`members`, down ones
    /// too: an affinity cookie naming one of them is a session whose backend is down, naming
    /// any other a forged or stale one).
    pub fn update(&self, table: Vec<IpAddr>, sessions: Vec<IpAddr>, members: Vec<IpAddr>) {
        *self.now.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Snapshot {
            table,
            sessions,
            members,
        });
    }

    /// Whether `backend` is up or draining, so a session may stay on it.
    pub fn keeps_sessions(&self, backend: IpAddr) -> bool {
        let now = self.now.read().unwrap_or_else(PoisonError::into_inner);
        now.keeps_sessions(backend)
    }

    /// The pool as it is now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.now.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The backend for `key`; with `exclude` (a backend that just failed), the next other one.
    pub fn pick(&self, key: Key, exclude: Option<IpAddr>) -> Option<IpAddr> {
        let now = Arc::clone(&self.now.read().unwrap_or_else(PoisonError::into_inner));
        let table = &now.table;
        if table.is_empty() {
            return None;
        }
        let hash = match key {
            Key::Client(client) => {
                let (family, octets) = match client {
                    IpAddr::V4(a) => (FAMILY_V4, a.octets().to_vec()),
                    IpAddr::V6(a) => (FAMILY_V6, a.octets().to_vec()),
                };
                let key = FlowKey::new(family, PROTO_TCP, &octets, 0, &octets, 0);
                source_ip_hash(&key)
            }
            Key::Hash(h) => h,
        };
        let start = hash as usize % table.len();
        table
            .iter()
            .cycle()
            .skip(start)
            .take(PROBES.min(table.len()))
            .copied()
            .find(|b| Some(*b) != exclude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn same_client_same_backend_and_exclusion_moves_on() {
        let pool = Pool::default();
        assert_eq!(pool.pick(Key::Client(ip("198.18.0.2")), None), None);
        let (a, b) = (ip("198.18.10.2"), ip("198.18.11.2"));
        pool.update(
            (0..251).map(|i| if i % 2 == 0 { a } else { b }).collect(),
            vec![a, b],
            vec![a, b],
        );
        let first = pool.pick(Key::Client(ip("198.18.0.2")), None).unwrap();
        assert_eq!(pool.pick(Key::Client(ip("198.18.0.2")), None), Some(first));
        let other = pool
            .pick(Key::Client(ip("198.18.0.2")), Some(first))
            .unwrap();
        assert_ne!(other, first);
        pool.update(vec![a; 7], vec![a], vec![a, b]);
        assert_eq!(pool.pick(Key::Client(ip("2001:db8::2")), Some(a)), None);
    }

    #[test]
    fn clients_spread_over_the_table() {
        let pool = Pool::default();
        let (a, b) = (ip("198.18.10.2"), ip("198.18.11.2"));
        pool.update(
            (0..251).map(|i| if i % 2 == 0 { a } else { b }).collect(),
            vec![a, b],
            vec![a, b],
        );
        let to_a = (0..200u8)
            .filter(|i| pool.pick(Key::Client(IpAddr::from([198, 18, 1, *i])), None) == Some(a))
            .count();
        assert!(
            (60..=140).contains(&to_a),
            "{to_a} of 200 clients on one backend"
        );
    }
}
