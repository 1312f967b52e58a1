use lb_common::maglev::MaglevError;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP object failed: {0}")]
    Load(aya::EbpfError),
    /// `kernel_log` is on but the object's report ring buffer could not be opened.
    #[error("kernel_log: opening the report ring buffer failed: {0}")]
    KernelLog(aya_log::Error),
    #[error("program {name}: {error}")]
    Program {
        name: &'static str,
        error: aya::programs::ProgramError,
    },
    #[error("map {name}: {error}")]
    Map {
        name: &'static str,
        error: aya::maps::MapError,
    },
    /// A map read or write done outside aya (the batch syscalls, a duplicated fd).
    #[error("map {name}: {what}: {error}")]
    MapIo {
        name: &'static str,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("map {0} is missing from the XDP object (build mismatch)")]
    MissingMap(&'static str),
    #[error("program {0} is missing from the XDP object (build mismatch)")]
    MissingProgram(&'static str),
    #[error("attaching to {iface}: {error}")]
    Attach {
        iface: String,
        error: aya::programs::ProgramError,
    },
    #[error("VIP {vip}: {error}")]
    Maglev { vip: String, error: MaglevError },
    #[error("ring map is full: {needed} more slots needed, {free} free (raise ring capacity)")]
    RingsFull { needed: u32, free: u32 },
    #[error("too many backends: at most {max} (VIP, backend) pairs")]
    TooManyBackends { max: u32 },
    #[error("too many VIPs: at most {max}")]
    TooManyVips { max: u32 },
    #[error("pinning under {path}: {error}")]
    Pin { path: String, error: String },
    #[error("attaching to {iface} through its pinned link: {error}")]
    Link { iface: String, error: String },
    #[error("applying the new state failed and was rolled back: {0}")]
    RolledBack(Box<DataplaneError>),
    #[error(
        "map sluice_node_v1 holds unknown node state {0} (written by another sluice version?)"
    )]
    BadNodeState(u8),
    #[error("unknown VIP \"{0}\"")]
    UnknownVip(String),
    #[error("VIP \"{vip}\" has no backend {backend}")]
    UnknownBackend {
        vip: String,
        backend: std::net::IpAddr,
    },
}

// By hand, not `#[from]`: the message prints the cause, so it is not also the `source()` (a
// chain printed as a whole would repeat it).
impl From<aya::EbpfError> for DataplaneError {
    fn from(error: aya::EbpfError) -> DataplaneError {
        DataplaneError::Load(error)
    }
}

pub(crate) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |error| DataplaneError::Map { name, error }
}
