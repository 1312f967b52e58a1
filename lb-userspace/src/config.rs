//! The TOML configuration, parsed into validated, typed values.
//!
//! Parsing is two steps: serde reads the file into `raw` types that mirror the TOML exactly
//! (`deny_unknown_fields`, so a typo is an error, not a silently ignored key), then `validate`
//! turns them into `Config`, whose values can no longer be wrong. Validation collects every
//! error, each with its line, field and a hint, instead of stopping at the first.
//!
//! Every table and key added since the first release (`[[edge]]`, per-VIP `proxy_protocol`, ...)
//! is optional with a default, so an older file keeps its meaning.

pub mod affinity;
mod bgp;
mod cert_chain;
mod cert_names;
pub mod client_cert;
mod edge;
mod errors;
mod fields;
pub mod forwarded;
mod health;
pub mod http;
pub mod path_prefix;
mod raw;
pub mod route;
mod schema;
#[cfg(test)]
pub(crate) mod tests;
pub mod tls;
mod validate;
mod vip;
mod warnings;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

pub use bgp::{Bgp, BgpPeer, Password, MAX_PASSWORD_LEN, SEND_WAIT};
pub use errors::{ConfigError, ConfigErrors, Location, Position};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub instance: String,
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub conntrack_entries: u32,
    /// The tokio runtime's worker threads; `None`: one per CPU available.
    pub worker_threads: Option<usize>,
    /// Leave the XDP program, its maps and links pinned and forwarding when the daemon stops.
    pub keep_dataplane: bool,
    /// What `sluice_xdp` reports through aya-log (restart-only: the level is fixed at load).
    pub kernel_log: KernelLog,
    /// The bpffs directory everything is pinned under (`<bpffs>/sluice/<instance>/`).
    pub bpffs: PathBuf,
    pub admin: Admin,
    pub management: Management,
    pub shutdown: Shutdown,
    pub encap: Encap,
    pub vips: Vec<Vip>,
    pub edges: Vec<Edge>,
    /// `None`: no BGP speaker (the VIPs reach this host some other way).
    pub bgp: Option<Bgp>,
}

/// An edge listener: TLS termination and HTTP proxying to a VIP's backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub name: String,
    pub address: SocketAddr,
    /// The `[[vip]]` whose backends serve the listener's routes that name no pool of their own
    /// (`route::RoutePool`), on `backend_port`.
    pub pool: String,
    pub backend_port: u16,
    pub client_cert_header: Vec<client_cert::Format>,
    /// The apache and haproxy header names (defaults unless configured).
    pub client_cert_names: client_cert::Names,
    /// How much of a verified client certificate's path the chain headers carry.
    pub client_cert_chain: client_cert::ChainSettings,
    pub forwarded_headers: Vec<forwarded::Style>,
    pub trusted_proxies: Vec<IpNet>,
    /// PROXY v1/v2 headers before TLS, from `trusted_proxies` only.
    pub proxy_protocol: ProxyProtocol,
    /// What starts each backend connection.
    pub send_proxy: SendProxy,
    /// Ordered, never empty: the first that matches a request decides it (see `route`).
    pub routes: Vec<route::Route>,
    /// A backend that does not accept within it is skipped for another.
    pub connect_timeout: Duration,
    /// A backend that does not start its response within it gets the client a 504.
    pub response_timeout: Duration,
    /// How long a client may take over a request head, or stay idle between requests.
    pub client_limits: Limits,
    /// Client connections open at once; more are closed at accept.
    pub max_connections: u32,
    /// `None`: plain HTTP.
    pub tls: Option<tls::TlsSettings>,
}

/// A listener's limits on its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For a whole request head (see `edge::client_timeouts`).
    pub request_header: Duration,
    /// With no request in flight and none begun.
    pub idle: Duration,
}

/// A PROXY header at the start of each backend connection, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    Off,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Unix socket the CLI talks to (created mode 0600).
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Management {
    /// Where `/health/*` and `/metrics` are served.
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// How long the node keeps serving, not ready, before it closes.
    pub delay: Duration,
    /// How long in-flight work gets after the node closed.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (fastest; veth, most NICs).
    Native,
    /// Generic, in the stack (any device; for testing).
    Skb,
}

impl XdpMode {
    /// The configuration spelling (`native`, `skb`).
    pub const fn name(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
    }
}

/// Kernel diagnostics: which of `sluice_xdp`'s rare-path reports (drops, unresolved next hops)
/// reach the log, under the target `sluice::kernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelLog {
    /// None, and the verifier removes the reporting code (the default).
    #[default]
    Off,
    /// Drops by reason, unresolved neighbours.
    Info,
    /// Also each route lookup taken for lack of a cached next hop.
    Debug,
}

impl KernelLog {
    /// The configuration spelling (`off`, `info`, `debug`).
    pub const fn name(self) -> &'static str {
        match self {
            KernelLog::Off => "off",
            KernelLog::Info => "info",
            KernelLog::Debug => "debug",
        }
    }
}

/// Prefixes the outer (tunnel) source addresses are drawn from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encap {
    /// For IPIP; `None` when no VIP has IPv4 backends.
    pub source_v4: Option<Ipv4Net>,
    /// For IP6IP6; `None` when no VIP has IPv6 backends.
    pub source_v6: Option<Ipv6Net>,
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
    pub proxy_protocol: ProxyProtocol,
    pub trusted_proxies: Vec<IpNet>,
    pub allow_clients: Vec<IpNet>,
    pub deny_clients: Vec<IpNet>,
    pub backends: Vec<Backend>,
}

/// Whether a VIP expects a PROXY protocol v2 header from an upstream balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    Optional,
    Required,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: IpAddr,
    pub weight: u32,
    /// The active check for this backend (its own, or its VIP's); `None` = never checked,
    /// always considered healthy.
    pub health: Option<HealthCheck>,
}

/// An active health check of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Port probed on the backend address (defaults to the VIP's port).
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// The TCP handshake completes.
    Tcp,
    /// `GET path` answers with `expect_status`.
    Http {
        path: String,
        /// Host header (default: the backend address).
        host: Option<String>,
        expect_status: u16,
    },
}

impl Config {
    /// Reads and validates `path`; every error names the file and line.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::from(ConfigError::read(path, &e)))?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Validates a config given as text (errors carry lines but no file name).
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        validate::parse(text)
    }

    /// For `sluice check`: every error of `path`, and the config that is left once the keys
    /// with schema errors are taken out, when the rest validates, so that the files it names
    /// can be checked in the same run.
    pub fn load_all(path: &Path) -> (Option<Config>, Option<ConfigErrors>) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => return (None, Some(ConfigErrors::from(ConfigError::read(path, &e)))),
        };
        let (config, errors) = Self::parse_all(&text);
        (config, errors.map(|e| e.in_file(path)))
    }

    /// [`Config::load_all`] on text: every error, and what validated around the schema errors.
    /// It accepts exactly the texts [`Config::parse`] accepts.
    pub fn parse_all(text: &str) -> (Option<Config>, Option<ConfigErrors>) {
        validate::parse_all(text)
    }

    /// Where this instance's programs, maps and links are pinned.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("sluice").join(&self.instance)
    }
}
