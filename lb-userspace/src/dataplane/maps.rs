//! Typed handles on the kernel maps: the thin layer between aya and the rest of the daemon.

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    Ebpf, Pod,
};

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
pub type Arr<V> = Array<MapData, V>;
pub type PerCpu<V> = PerCpuArray<MapData, V>;
