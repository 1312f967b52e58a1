//! Writes that make a change live, each remembering what it overwrote, so a failure half way
//! puts every map back the way it was.

use aya::maps::{lpm_trie::Key, MapError};
use lb_common::{names, BackendEntry, Settings, VipEntry, VipKey};

use super::{
    error::map_err,
    maps::{Arr, Cidrs, Hash},
    plan::CidrKey,
    DataplaneError,
};

/// The maps a commit writes.
pub struct Live<'a> {
    pub vips: &'a mut Hash<VipKey, VipEntry>,
    pub backends: &'a mut Arr<BackendEntry>,
    pub settings: &'a mut Arr<Settings>,
    pub cidrs: &'a mut Cidrs,
}

enum Undo {
    Vip(VipKey, Option<VipEntry>),
    Backend(u32, BackendEntry),
    Settings(Settings),
    /// A CIDR added (`true`: remove it to undo) or removed (`false`: put it back).
    Cidr(CidrKey, bool),
}

/// A sequence of live writes; `rollback` undoes the ones done so far, newest first.
pub struct Commit<'a> {
    live: Live<'a>,
    undo: Vec<Undo>,
}

impl<'a> Commit<'a> {
    pub fn new(live: Live<'a>) -> Self {
        Commit {
            live,
            undo: Vec::new(),
        }
    }

    pub fn settings(&mut self, s: Settings) -> Result<(), DataplaneError> {
        let old = self
            .live
            .settings
            .get(&0, 0)
            .map_err(map_err(names::SETTINGS))?;
        if old == s {
            return Ok(());
        }
        self.live
            .settings
            .set(0, s, 0)
            .map_err(map_err(names::SETTINGS))?;
        self.undo.push(Undo::Settings(old));
        Ok(())
    }

    pub fn backend(&mut self, id: u32, e: BackendEntry) -> Result<(), DataplaneError> {
        let old = self
            .live
            .backends
            .get(&id, 0)
            .map_err(map_err(names::BACKENDS))?;
        if old == e {
            return Ok(());
        }
        self.live
            .backends
            .set(id, e, 0)
            .map_err(map_err(names::BACKENDS))?;
        self.undo.push(Undo::Backend(id, old));
        Ok(())
    }

    pub fn vip(&mut self, key: VipKey, e: VipEntry) -> Result<(), DataplaneError> {
        let old = self.previous_vip(&key)?;
        self.live
            .vips
            .insert(key, e, 0)
            .map_err(map_err(names::VIPS))?;
        self.undo.push(Undo::Vip(key, old));
        Ok(())
    }

    pub fn remove_vip(&mut self, key: VipKey) -> Result<(), DataplaneError> {
        let Some(old) = self.previous_vip(&key)? else {
            return Ok(());
        };
        self.live.vips.remove(&key).map_err(map_err(names::VIPS))?;
        self.undo.push(Undo::Vip(key, Some(old)));
        Ok(())
    }

    pub fn add_cidr(&mut self, key: CidrKey) -> Result<(), DataplaneError> {
        self.live
            .cidrs
            .insert(&Key::new(key.0, key.1), 1, 0)
            .map_err(map_err(names::CIDRS))?;
        self.undo.push(Undo::Cidr(key, true));
        Ok(())
    }

    pub fn remove_cidr(&mut self, key: CidrKey) -> Result<(), DataplaneError> {
        match self.live.cidrs.remove(&Key::new(key.0, key.1)) {
            Ok(()) => {
                self.undo.push(Undo::Cidr(key, false));
                Ok(())
            }
            Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::CIDRS)(e)),
        }
    }

    fn previous_vip(&self, key: &VipKey) -> Result<Option<VipEntry>, DataplaneError> {
        match self.live.vips.get(key, 0) {
            Ok(e) => Ok(Some(e)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::VIPS)(e)),
        }
    }

    /// Puts back everything written so far. Best effort: a write that fails here is logged, and
    /// the rest are still tried.
    pub fn rollback(mut self) {
        while let Some(u) = self.undo.pop() {
            let result = match u {
                Undo::Vip(key, Some(e)) => self.live.vips.insert(key, e, 0),
                Undo::Vip(key, None) => self.live.vips.remove(&key),
                Undo::Backend(id, e) => self.live.backends.set(id, e, 0),
                Undo::Settings(s) => self.live.settings.set(0, s, 0),
                Undo::Cidr(key, true) => self.live.cidrs.remove(&Key::new(key.0, key.1)),
                Undo::Cidr(key, false) => self.live.cidrs.insert(&Key::new(key.0, key.1), 1, 0),
            };
            if let Err(error) = result {
                tracing::error!(%error, "rolling back a map write failed");
            }
        }
    }
}
