//! The pinned set under `<bpffs>/sluice/<instance>/`: the program, every map, and one `bpf_link`
//! per interface.
//!
//! A daemon that finds a set adopts it: conntrack and the backend table are reused as they are
//! (so flows survive and keep their backend ids), the other maps are created afresh and filled
//! before the new program is swapped in through each interface's link, which the kernel does
//! atomically. Nothing in between forwards with a half-written state.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap as AyaHash, Map, MapData};
use lb_common::{names, BackendEntry, VipEntry, VipKey};

use super::{addr::words_to_ip, error::map_err, sys, DataplaneError};
use crate::config::XdpMode;

/// Prefix of the per-interface link pins of a native-mode attachment: `link_<ifname>`.
const LINK_PREFIX: &str = "link_";
/// The same in skb (generic) mode: `linkskb_<ifname>`. The mode is in the name because the
/// kernel's link information does not say it, and a kept dataplane must be re-attached when
/// the configured mode changed.
const LINK_SKB_PREFIX: &str = "linkskb_";

#[derive(Debug)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// Mounts bpffs at `bpffs` if needed and creates `dir` (which must lie under it).
    pub fn prepare(bpffs: &Path, dir: PathBuf) -> Result<Pins, DataplaneError> {
        let io_err = |error: io::Error| DataplaneError::Pin {
            path: dir.display().to_string(),
            error: error.to_string(),
        };
        let mounted = sys::ensure_mounted(bpffs).map_err(|error| DataplaneError::Pin {
            path: bpffs.display().to_string(),
            error: format!("mounting bpffs: {error}"),
        })?;
        if mounted {
            tracing::warn!(
                bpffs = %bpffs.display(),
                "no bpffs was mounted here, so sluice mounted one: in a private mount namespace \
                 (`ip netns exec`, some containers) its pins are invisible to the host and gone \
                 with the namespace, so keep_dataplane cannot hand the dataplane to the next \
                 daemon; mount the host's bpffs there instead"
            );
        } else {
            tracing::info!(bpffs = %bpffs.display(), pins = %dir.display(), "pinning under bpffs");
        }
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        Ok(Pins { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn link_path(&self, iface: &str, mode: XdpMode) -> PathBuf {
        let prefix = match mode {
            XdpMode::Native => LINK_PREFIX,
            XdpMode::Skb => LINK_SKB_PREFIX,
        };
        self.dir.join(format!("{prefix}{iface}"))
    }

    /// Pins something new under `name`, replacing what a previous daemon pinned there.
    pub fn replace<E: std::fmt::Display>(
        &self,
        name: &str,
        pin: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<(), DataplaneError> {
        let path = self.path(name);
        remove_if_present(&path).map_err(|e| pin_err(&path, &e))?;
        pin(&path).map_err(|e| pin_err(&path, &e))
    }

    /// Removes the pin `name` if there is one.
    pub fn remove(&self, name: &str) -> Result<(), DataplaneError> {
        let path = self.path(name);
        remove_if_present(&path).map_err(|e| pin_err(&path, &e))
    }

    /// Interfaces that have a link pinned here, with the mode it was attached in.
    pub fn linked_interfaces(&self) -> Vec<(String, XdpMode)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                if let Some(iface) = name.strip_prefix(LINK_PREFIX) {
                    Some((iface.to_owned(), XdpMode::Native))
                } else {
                    name.strip_prefix(LINK_SKB_PREFIX)
                        .map(|iface| (iface.to_owned(), XdpMode::Skb))
                }
            })
            .collect()
    }

    /// Unpins `iface`'s link of `mode` (which detaches it once nothing else holds it).
    pub fn unlink(&self, iface: &str, mode: XdpMode) -> Result<(), DataplaneError> {
        let path = self.link_path(iface, mode);
        remove_if_present(&path).map_err(|e| pin_err(&path, &e))
    }

    /// Removes every pin and the directory. Removing a link pin detaches the program once the
    /// daemon's own descriptor is closed too.
    pub fn remove_all(&self) -> Result<(), DataplaneError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| pin_err(&self.dir, &e))?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            remove_if_present(&path).map_err(|e| pin_err(&path, &e))?;
        }
        match std::fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(pin_err(&self.dir, &e)),
            _ => {}
        }
        // `<bpffs>/sluice` goes too once no instance is left in it (other instances keep it).
        if let Some(parent) = self.dir.parent().filter(|p| p.ends_with("sluice")) {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }

    /// The VIP indexes a previous daemon used, by VIP key (empty when there was none).
    pub fn previous_vip_indexes(&self) -> Result<HashMap<VipKey, u32>, DataplaneError> {
        let path = self.path(names::VIPS);
        if !path.exists() {
            return Ok(HashMap::new());
        }
        let data = MapData::from_pin(&path).map_err(map_err(names::VIPS))?;
        let map: AyaHash<MapData, VipKey, VipEntry> =
            AyaHash::try_from(Map::HashMap(data)).map_err(map_err(names::VIPS))?;
        let mut out = HashMap::new();
        for item in &map {
            let (k, v) = item.map_err(map_err(names::VIPS))?;
            out.insert(k, v.index);
        }
        Ok(out)
    }
}

/// Backend ids a previous daemon handed out, read from the reused backend table.
#[derive(Debug, Default, Clone)]
pub struct PreviousBackends {
    /// `(VIP index, address)` → `(id, state)`; the newest id wins when a backend was removed and
    /// added again.
    pub ids: HashMap<(u32, IpAddr), (u32, u8)>,
    /// One past the highest id in use, so no id is handed out twice.
    pub next_id: u32,
}

impl PreviousBackends {
    pub fn from_entries(entries: impl IntoIterator<Item = (u32, BackendEntry)>) -> Self {
        let mut out = PreviousBackends::default();
        for (id, e) in entries {
            if e.family == 0 {
                continue;
            }
            out.next_id = out.next_id.max(id + 1);
            let key = (u32::from(e.vip_index), words_to_ip(e.family, e.addr_be));
            out.ids
                .entry(key)
                .and_modify(|v| {
                    if id > v.0 {
                        *v = (id, e.state);
                    }
                })
                .or_insert((id, e.state));
        }
        out
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn pin_err(path: &Path, error: &impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Pin {
        path: path.display().to_string(),
        error: error.to_string(),
    }
}

/// Pins a load is about to create, removed again if the load fails: a start that never got
/// its program verified must not leave maps behind that the next start would adopt as a
/// previous daemon's flows. Pins that already existed are a previous daemon's and stay.
pub struct FreshPins(Vec<PathBuf>);

impl FreshPins {
    /// Of `paths`, those that do not exist yet.
    pub fn among(paths: &[&Path]) -> FreshPins {
        FreshPins(
            paths
                .iter()
                .filter(|p| !p.exists())
                .map(|p| p.to_path_buf())
                .collect(),
        )
    }

    /// The load succeeded: the pins are the dataplane's now.
    pub fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for FreshPins {
    fn drop(&mut self) {
        for path in &self.0 {
            if let Err(error) = remove_if_present(path) {
                tracing::warn!(pin = %path.display(), %error, "removing a pin of a failed load");
            }
        }
    }
}
