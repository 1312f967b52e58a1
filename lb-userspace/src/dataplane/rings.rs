//! Maglev tables and where they live in the ring map.
//!
//! Each VIP owns a region of `2 × M` slots: two halves, one live and one for staging. Regions
//! are handed out first-fit and returned when a VIP goes away.

use std::net::IpAddr;

use lb_common::maglev::{populate, MaglevBackend, MaglevScratch};

use super::DataplaneError;

/// One backend as the table builder sees it.
pub struct Member {
    pub address: IpAddr,
    pub weight: u32,
    pub id: u32,
}

/// The Maglev table for the given members (only the ones that may take new flows).
pub fn build(
    vip: &str,
    members: &[Member],
    seed: u32,
    size: u32,
) -> Result<Vec<u32>, DataplaneError> {
    let identities: Vec<Vec<u8>> = members
        .iter()
        .map(|m| match m.address {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        })
        .collect();
    let backends: Vec<MaglevBackend<'_>> = members
        .iter()
        .zip(&identities)
        .map(|(m, identity)| MaglevBackend {
            identity,
            weight: m.weight,
            value: m.id,
        })
        .collect();
    let mut table = vec![0u32; size as usize];
    let mut scratch = vec![MaglevScratch::default(); backends.len()];
    populate(&backends, seed, &mut table, &mut scratch).map_err(|error| {
        DataplaneError::Maglev {
            vip: vip.to_string(),
            error,
        }
    })?;
    Ok(table)
}

/// The fraction of new flows each backend of `vip` gets from its table (all backends up).
pub fn expected_shares(vip: &crate::config::Vip) -> Result<Vec<(IpAddr, f64)>, DataplaneError> {
    let members: Vec<Member> = (0u32..)
        .zip(&vip.backends)
        .map(|(id, b)| Member {
            address: b.address,
            weight: b.weight,
            id,
        })
        .collect();
    let table = build(&vip.name, &members, vip.seed, vip.table_size)?;
    let mut counts = vec![0usize; members.len()];
    for &id in &table {
        if let Some(c) = counts.get_mut(id as usize) {
            *c += 1;
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "table sizes are far below 2^52")]
    Ok(members
        .iter()
        .zip(counts)
        .map(|(m, c)| (m.address, c as f64 / table.len() as f64))
        .collect())
}

/// First-fit allocator over the ring map's slots.
#[derive(Debug, Clone)]
pub struct Regions {
    /// Free `(offset, len)` ranges, sorted by offset.
    free: Vec<(u32, u32)>,
}

impl Regions {
    pub fn new(capacity: u32) -> Self {
        Self {
            free: vec![(0, capacity)],
        }
    }

    pub fn alloc(&mut self, len: u32) -> Result<u32, DataplaneError> {
        let i = self
            .free
            .iter()
            .position(|&(_, l)| l >= len)
            .ok_or_else(|| DataplaneError::RingsFull {
                needed: len,
                free: self.free.iter().map(|&(_, l)| l).max().unwrap_or(0),
            })?;
        let (off, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (off + len, l - len);
        }
        Ok(off)
    }

    pub fn release(&mut self, off: u32, len: u32) {
        let i = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(i, (off, len));
        // Merge neighbours so a later large table fits again.
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.free.len());
        for &(o, l) in &self.free {
            match merged.last_mut() {
                Some((mo, ml)) if *mo + *ml == o => *ml += l,
                _ => merged.push((o, l)),
            }
        }
        self.free = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_reuse_and_merge() {
        let mut r = Regions::new(100);
        let a = r.alloc(40).unwrap();
        let b = r.alloc(40).unwrap();
        assert_eq!((a, b), (0, 40));
        assert!(matches!(
            r.alloc(40),
            Err(DataplaneError::RingsFull {
                needed: 40,
                free: 20
            })
        ));
        r.release(a, 40);
        r.release(b, 40);
        assert_eq!(r.alloc(100).unwrap(), 0);
    }

    #[test]
    fn table_holds_only_member_ids() {
        let members = [
            Member {
                address: "198.18.10.2".parse().unwrap(),
                weight: 1,
                id: 7,
            },
            Member {
                address: "198.18.11.2".parse().unwrap(),
                weight: 1,
                id: 9,
            },
        ];
        let t = build("web", &members, 0, 251).unwrap();
        assert!(t.iter().all(|&id| id == 7 || id == 9));
        assert!(t.contains(&7) && t.contains(&9));
    }
}
