//! The per-backend next-hop cache `sluice_xdp` reads instead of looking the route up per packet
//! (see `lb_common::NextHop`). What goes in comes from [`super::resolver`]; this side only
//! writes it, one backend at a time and never half-applied.

use std::collections::BTreeMap;

use lb_common::{names, NextHop, NEXT_HOP_HALF0, NEXT_HOP_HALF1, NEXT_HOP_NONE};

use super::{error::map_err, maps::Arr, DataplaneError};

/// A resolved next hop, before it gets a slot and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub mtu: u32,
}

impl Hop {
    fn entry(&self, generation: u32) -> NextHop {
        let mut macs = [0; 12];
        macs[..6].copy_from_slice(&self.dst_mac);
        macs[6..].copy_from_slice(&self.src_mac);
        NextHop {
            ifindex: self.ifindex,
            macs,
            mtu: self.mtu,
            generation,
        }
    }
}

/// A backend's live entry as this daemon wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cached {
    pub hop: Hop,
    /// Slot 0 or 1 of the backend's pair.
    pub half: u32,
    pub generation: u32,
}

/// The two maps and what this daemon last wrote to them, by backend id.
pub struct NextHops {
    hops: Arr<NextHop>,
    live: Arr<u32>,
    cached: BTreeMap<u32, Cached>,
    generation: u32,
    /// Set once the daemon lets go of the dataplane: nothing is written any more.
    frozen: bool,
}

impl NextHops {
    /// Starts from an empty cache: every live selector is cleared, so a pinned map left by a
    /// previous daemon (whose routes nobody followed since) is not trusted.
    pub fn new(hops: Arr<NextHop>, live: Arr<u32>) -> Result<NextHops, DataplaneError> {
        let mut n = NextHops {
            hops,
            live,
            cached: BTreeMap::new(),
            generation: 0,
            frozen: false,
        };
        n.clear_all()?;
        Ok(n)
    }

    pub fn hops_map(&self) -> &Arr<NextHop> {
        &self.hops
    }

    pub fn live_map(&self) -> &Arr<u32> {
        &self.live
    }

    /// Makes the kernel look `id`'s route up again (the entry is unknown or no longer usable).
    pub fn clear(&mut self, id: u32) -> Result<(), DataplaneError> {
        if self.cached.remove(&id).is_some() {
            self.live
                .set(id, NEXT_HOP_NONE, 0)
                .map_err(map_err(names::NEXT_HOP_LIVE))?;
        }
        Ok(())
    }

    /// Clears every selector, whatever this daemon knows of them.
    pub fn clear_all(&mut self) -> Result<(), DataplaneError> {
        self.cached.clear();
        for id in 0..self.live.len() {
            if self
                .live
                .get(&id, 0)
                .map_err(map_err(names::NEXT_HOP_LIVE))?
                != NEXT_HOP_NONE
            {
                self.live
                    .set(id, NEXT_HOP_NONE, 0)
                    .map_err(map_err(names::NEXT_HOP_LIVE))?;
            }
        }
        Ok(())
    }

    /// Makes `hop` (or none) `id`'s next hop. A new hop is written whole into the idle slot,
    /// then the 4-byte selector flips to it: a packet reads either the old entry or the new
    /// one. Returns whether anything changed.
    pub fn set(&mut self, id: u32, hop: Option<Hop>) -> Result<bool, DataplaneError> {
        if self.frozen {
            return Ok(false);
        }
        let Some(hop) = hop else {
            let had = self.cached.contains_key(&id);
            self.clear(id)?;
            return Ok(had);
        };
        let old = self.cached.get(&id).copied();
        if old.is_some_and(|c| c.hop == hop) {
            return Ok(false);
        }
        let half = old.map_or(0, |c| 1 - c.half);
        self.generation = self.generation.wrapping_add(1);
        // Backend ids are below MAX_BACKENDS, so this stays within the map's 2 × MAX_BACKENDS.
        let slot = 2 * id + half;
        self.hops
            .set(slot, hop.entry(self.generation), 0)
            .map_err(map_err(names::NEXT_HOPS))?;
        let selector = if half == 0 {
            NEXT_HOP_HALF0
        } else {
            NEXT_HOP_HALF1
        };
        self.live
            .set(id, selector, 0)
            .map_err(map_err(names::NEXT_HOP_LIVE))?;
        self.cached.insert(
            id,
            Cached {
                hop,
                half,
                generation: self.generation,
            },
        );
        Ok(true)
    }

    /// Stops every later write (the daemon is handing the dataplane over).
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    pub fn get(&self, id: u32) -> Option<Cached> {
        self.cached.get(&id).copied()
    }
}
