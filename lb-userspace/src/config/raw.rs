//! The file as written: every field documented, defaults in one place (`defaults`).

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this sluice instance on the host (pinned objects live under it).
    #[serde(default = "defaults::instance")]
    pub instance: String,
    /// Interfaces that receive VIP traffic; `sluice_xdp` is attached to each.
    pub interfaces: Vec<String>,
    /// `native` (driver mode, default) or `skb` (generic mode, any device).
    #[serde(default = "defaults::xdp_mode")]
    pub xdp_mode: String,
    /// Capacity of the connection table (flows across all VIPs; LRU beyond that).
    #[serde(default = "defaults::conntrack_entries")]
    pub conntrack_entries: u32,
    /// Tunnel settings.
    pub encap: Encap,
    /// The L4 virtual services.
    #[serde(default, rename = "vip")]
    pub vips: Vec<Vip>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encap {
    /// IPv4 prefix the outer source addresses are drawn from (by flow hash, for backend RSS).
    pub source_v4: String,
    /// IPv6 prefix for the same purpose (only the last 32 bits vary).
    pub source_v6: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// Unique name, used by the CLI and in metrics.
    pub name: String,
    /// `IP:port` clients connect to (`[v6]:port` for IPv6).
    pub address: String,
    /// `tcp` (default) or `udp`.
    #[serde(default = "defaults::protocol")]
    pub protocol: String,
    /// `5-tuple` (default) or `source-ip` (all flows of a client to one backend).
    #[serde(default = "defaults::hash")]
    pub hash: String,
    /// Maglev table size: a prime, well above 100 × the number of backends.
    #[serde(default = "defaults::table_size")]
    pub table_size: u32,
    /// Maglev seed; gateways that must agree on flows use the same seed.
    #[serde(default)]
    pub seed: u32,
    /// The backends; the tunnel goes to `address`.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Backend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Backend IP address (the tunnel destination; the VIP must be local on the backend).
    pub address: String,
    /// Relative share of new flows (default 1; 0 takes no new flows).
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

mod defaults {
    pub fn instance() -> String {
        "default".into()
    }
    pub fn xdp_mode() -> String {
        "native".into()
    }
    pub fn conntrack_entries() -> u32 {
        lb_common::CONNTRACK_ENTRIES
    }
    pub fn protocol() -> String {
        "tcp".into()
    }
    pub fn hash() -> String {
        "5-tuple".into()
    }
    pub fn table_size() -> u32 {
        lb_common::DEFAULT_RING_SIZE
    }
    pub fn weight() -> u32 {
        1
    }
}
