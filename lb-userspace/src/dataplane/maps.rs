//! Typed handles on the kernel maps: the thin layer between aya and the rest of the daemon.

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{Xdp, XdpMode},
    Ebpf, Pod,
};

use crate::config::XdpMode as Mode;

use super::{error::map_err, DataplaneError};

pub fn take<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, DataplaneError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MissingMap(name))?;
    M::try_from(map).map_err(map_err(name))
}

/// The XDP program `name` of the object.
pub fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?
        .try_into()
        .map_err(|error| DataplaneError::Program { name, error })
}

/// Loads the XDP program `name` into the kernel (the verifier runs here).
pub fn load_xdp(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DataplaneError> {
    xdp_mut(ebpf, name)?
        .load()
        .map_err(|error| DataplaneError::Program { name, error })
}

/// Attaches the loaded program `name` to `iface` in the calling thread's network namespace.
pub fn attach_xdp(
    ebpf: &mut Ebpf,
    name: &'static str,
    iface: &str,
    mode: Mode,
) -> Result<(), DataplaneError> {
    let mode = match mode {
        Mode::Native => XdpMode::Driver,
        Mode::Skb => XdpMode::Skb,
    };
    xdp_mut(ebpf, name)?
        .attach(iface, mode)
        .map_err(|error| DataplaneError::Attach {
            iface: iface.to_string(),
            error,
        })?;
    Ok(())
}

/// Sum of a per-CPU counter over all CPUs.
pub fn per_cpu_sum(
    map: &PerCpuArray<MapData, u64>,
    index: u32,
    name: &'static str,
) -> Result<u64, DataplaneError> {
    Ok(map.get(&index, 0).map_err(map_err(name))?.iter().sum())
}

pub fn per_cpu_values<T: Pod>(
    map: &PerCpuArray<MapData, T>,
    index: u32,
    name: &'static str,
) -> Result<Vec<T>, DataplaneError> {
    Ok(map
        .get(&index, 0)
        .map_err(map_err(name))?
        .iter()
        .copied()
        .collect())
}

pub type Hash<K, V> = HashMap<MapData, K, V>;
/// Every VIP's CIDR lists in one LPM trie (see `lb_common::CidrData`).
pub type Cidrs = aya::maps::LpmTrie<MapData, lb_common::CidrData, u8>;
pub type Arr<V> = Array<MapData, V>;
pub type PerCpu<V> = PerCpuArray<MapData, V>;
