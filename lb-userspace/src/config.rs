//! The TOML configuration, parsed into validated, typed values.
//!
//! Parsing is two steps: serde reads the file into `raw` types that mirror the TOML exactly
//! (`deny_unknown_fields`, so a typo is an error, not a silently ignored key), then `validate`
//! turns them into `Config`, whose values can no longer be wrong. Errors name the field and say
//! how to fix it.

mod raw;
mod validate;

use std::{net::IpAddr, path::Path};

use ipnet::{Ipv4Net, Ipv6Net};
pub use validate::ConfigError;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub instance: String,
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub conntrack_entries: u32,
    pub encap: Encap,
    pub vips: Vec<Vip>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (fastest; veth, most NICs).
    Native,
    /// Generic, in the stack (any device; for testing).
    Skb,
}

/// Prefixes the outer (tunnel) source addresses are drawn from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encap {
    pub source_v4: Ipv4Net,
    pub source_v6: Ipv6Net,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey {
    FiveTuple,
    SourceIp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vip {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub hash: HashKey,
    pub table_size: u32,
    pub seed: u32,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: IpAddr,
    pub weight: u32,
}

impl Config {
    /// Reads and validates `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: raw::Config =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        validate::validate(raw)
    }
}
