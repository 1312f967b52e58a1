//! Which backend serves a client: the kernel's Maglev view of the pool VIP, by client address.
//!
//! The table is the one the kernel steers that VIP's flows with (only backends that take new
//! flows), hashed by source address like `hash = "source-ip"`, so an edge request and an L4
//! flow from the same client land on the same backend.

use std::{
    net::IpAddr,
    sync::{Arc, PoisonError, RwLock},
};

use lb_common::{flow_hash::source_ip_hash, FlowKey, FAMILY_V4, FAMILY_V6, PROTO_TCP};

/// How many following slots are tried for a backend other than an excluded one.
const PROBES: usize = 64;

#[derive(Debug, Default)]
pub struct Pool {
    table: RwLock<Arc<Vec<IpAddr>>>,
}

impl Pool {
    /// Replaces the table (slot → backend address); an empty table serves nobody.
    pub fn update(&self, table: Vec<IpAddr>) {
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }

    /// The client's backend; with `exclude` (a backend that just failed), the next other one.
    pub fn pick(&self, client: IpAddr, exclude: Option<IpAddr>) -> Option<IpAddr> {
        let table = Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner));
        if table.is_empty() {
            return None;
        }
        let (family, octets) = match client {
            IpAddr::V4(a) => (FAMILY_V4, a.octets().to_vec()),
            IpAddr::V6(a) => (FAMILY_V6, a.octets().to_vec()),
        };
        let key = FlowKey::new(family, PROTO_TCP, &octets, 0, &octets, 0);
        let start = source_ip_hash(&key) as usize % table.len();
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
        assert_eq!(pool.pick(ip("198.18.0.2"), None), None);
        let (a, b) = (ip("198.18.10.2"), ip("198.18.11.2"));
        pool.update((0..251).map(|i| if i % 2 == 0 { a } else { b }).collect());
        let first = pool.pick(ip("198.18.0.2"), None).unwrap();
        assert_eq!(pool.pick(ip("198.18.0.2"), None), Some(first));
        let other = pool.pick(ip("198.18.0.2"), Some(first)).unwrap();
        assert_ne!(other, first);
        pool.update(vec![a; 7]);
        assert_eq!(pool.pick(ip("2001:db8::2"), Some(a)), None);
    }

    #[test]
    fn clients_spread_over_the_table() {
        let pool = Pool::default();
        let (a, b) = (ip("198.18.10.2"), ip("198.18.11.2"));
        pool.update((0..251).map(|i| if i % 2 == 0 { a } else { b }).collect());
        let to_a = (0..200u8)
            .filter(|i| pool.pick(IpAddr::from([198, 18, 1, *i]), None) == Some(a))
            .count();
        assert!(
            (60..=140).contains(&to_a),
            "{to_a} of 200 clients on one backend"
        );
    }
}
