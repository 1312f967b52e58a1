//! What the CLI and the daemon say to each other over the admin socket: one JSON request per
//! connection, one JSON response, each a single line.

use std::net::{IpAddr, SocketAddr};

use lb_common::{BACKEND_DRAINING, BACKEND_UP};
use serde::{Deserialize, Serialize};

use crate::shutdown::NodeState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Backends,
    Drain {
        vip: String,
        backend: IpAddr,
    },
    Undrain {
        vip: String,
        backend: IpAddr,
    },
    Flows(FlowQuery),
    Stats,
    Reload,
    /// `sluice bgp withdraw|announce <vip>`.
    Bgp {
        action: BgpAction,
        vip: String,
    },
}

/// What `sluice bgp` does to a VIP's announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BgpAction {
    /// Withdraw it and keep it withdrawn, whatever its health (maintenance).
    Withdraw,
    /// Undo `withdraw`: announced again while it qualifies.
    Announce,
}

/// `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn data<T: Serialize>(value: &T) -> Response {
        match serde_json::to_value(value) {
            Ok(v) => Response {
                ok: true,
                error: None,
                data: Some(v),
            },
            Err(e) => Response::error(format!("encoding the answer: {e}")),
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(message.into()),
            data: None,
        }
    }
}

/// `sluice status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub instance: String,
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub config: String,
    /// `serving` | `draining` | `closed` on the wire.
    #[serde(with = "phase_name")]
    pub phase: NodeState,
    pub ready: bool,
    pub interfaces: Vec<String>,
    pub pin_dir: String,
    /// The daemon took over a dataplane a previous daemon left pinned.
    pub adopted: bool,
    pub keep_dataplane: bool,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload_error: Option<String>,
    pub vips: Vec<VipSummary>,
    /// The BGP speaker's sessions and routes; `None` without `[bgp]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<crate::bgp::BgpStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipSummary {
    pub name: String,
    pub address: SocketAddr,
    /// `tcp` | `udp`.
    pub protocol: String,
    pub backends_up: usize,
    pub backends_total: usize,
    /// Backends up with a weight above 0: the ones in the Maglev table. With none, every new
    /// flow is dropped and the VIP is not ready.
    #[serde(default)]
    pub backends_taking_new_flows: usize,
    /// Of those, the ones that make the VIP ready: unchecked, or passed a probe since the
    /// daemon started or the backend was added (see [`makes_vip_ready`]). Readiness, `READY=1`
    /// and the BGP announcement need one.
    #[serde(default)]
    pub backends_ready: usize,
}

/// Whether a backend makes its VIP ready: it takes new flows (up, weight above 0) and is
/// unchecked or has passed a probe (`unproven` false). A checked backend starts up, so no flow
/// is blackholed while the first probes run, but it vouches for nothing until one passes:
/// otherwise a VIP whose only backend is dead would read ready for `fall` intervals.
pub fn makes_vip_ready(state: BackendState, weight: u32, unproven: bool) -> bool {
    state == BackendState::Up && weight > 0 && !unproven
}

/// One row of `sluice backends`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRow {
    pub vip: String,
    pub address: IpAddr,
    pub weight: u32,
    /// What the kernel map says.
    pub state: BackendState,
    pub health: Health,
    /// Why the last health transition happened (e.g. "connect: connection refused").
    pub health_reason: Option<String>,
    /// The operator drained it (`sluice drain`).
    pub drained: bool,
    /// Checked, and no probe has passed since the daemon started or the backend was added: it
    /// takes new flows if up, but does not make its VIP ready.
    #[serde(default)]
    pub unproven: bool,
    /// Conntrack entries pointing at this backend (live flows).
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// The cached next hop `sluice_xdp` sends this backend's packets to; `None` while the
    /// kernel looks the route up per packet (not resolved yet, neighbour unreachable, no
    /// rtnetlink).
    #[serde(default)]
    pub next_hop: Option<NextHopView>,
}

impl BackendRow {
    /// See [`makes_vip_ready`].
    pub fn makes_vip_ready(&self) -> bool {
        makes_vip_ready(self.state, self.weight, self.unproven)
    }
}

/// A backend's cached next hop as `sluice backends` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextHopView {
    /// Egress interface name (its index when the name cannot be found).
    pub interface: String,
    pub ifindex: u32,
    pub dst_mac: String,
    pub src_mac: String,
    pub mtu: u32,
    /// Bumped on every write of the entry.
    pub generation: u32,
}

/// Which flows `sluice flows` asks for, and in what order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowQuery {
    /// Only flows of this VIP (its configured name).
    pub vip: Option<String>,
    /// At most this many rows (after filtering and sorting).
    pub limit: usize,
    /// Only flows on this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<IpAddr>,
    /// Only flows whose client (the TCP peer, or the real client a PROXY header named) is in
    /// this network; a single address is a /32 or /128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ipnet::IpNet>,
    /// The order of the rows; `None` is conntrack's own (and stops at `limit` matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<FlowSort>,
}

/// `sluice flows --sort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FlowSort {
    /// Oldest first.
    Age,
    /// Longest idle first.
    Idle,
    /// By client address and port.
    Client,
    /// By backend address, then client.
    Backend,
}

/// One row of `sluice flows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRow {
    pub client: SocketAddr,
    pub vip: SocketAddr,
    /// The VIP's configured name, when the VIP still exists.
    pub vip_name: Option<String>,
    /// `tcp` | `udp`.
    pub protocol: String,
    pub backend: Option<IpAddr>,
    pub age_ms: u64,
    pub idle_ms: u64,
    /// The real client a trusted PROXY header named; `client` is then the proxy.
    #[serde(default)]
    pub real_client: Option<SocketAddr>,
    /// The PROXY/client policy's verdict on the flow (`ProxyOutcome::name`), once decided.
    #[serde(default)]
    pub proxy: Option<String>,
}

/// `sluice stats`: raw monotonic counters; `--watch` turns deltas into rates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Milliseconds since the daemon started (the clock rates are computed against).
    pub uptime_ms: u64,
    /// Every pass/drop/event counter of `sluice_xdp`, by name (e.g. `conntrack_hit`).
    pub counters: Vec<NamedCounter>,
    pub vips: Vec<TrafficRow>,
    pub backends: Vec<TrafficRow>,
    /// PROXY/client policy outcomes of the VIPs that have a policy, every outcome listed.
    #[serde(default)]
    pub proxy: Vec<ProxyRow>,
    /// The same for edge listeners with a PROXY policy (`vip` holds the listener's name).
    #[serde(default)]
    pub edge_proxy: Vec<ProxyRow>,
}

/// How many flows of a VIP one PROXY/client policy outcome decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRow {
    pub vip: String,
    /// `ProxyOutcome::name`, e.g. `accepted`, `untrusted`.
    pub outcome: String,
    pub flows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCounter {
    pub name: String,
    pub kind: CounterKind,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficRow {
    pub vip: String,
    /// Set for backend rows.
    pub backend: Option<IpAddr>,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

/// `sluice reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    pub vips: usize,
    pub backends: usize,
}

/// A backend's state in the kernel map: whether `sluice_xdp` gives it new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new flows.
    Up,
    /// Drained by the operator: no new flows, established ones go on.
    Draining,
    /// Failed its health checks: no new flows.
    Down,
}

impl BackendState {
    pub const ALL: [BackendState; 3] =
        [BackendState::Up, BackendState::Draining, BackendState::Down];

    /// The value stored in the backend map.
    pub const fn code(self) -> u8 {
        match self {
            BackendState::Up => BACKEND_UP,
            BackendState::Draining => BACKEND_DRAINING,
            BackendState::Down => lb_common::BACKEND_DOWN,
        }
    }

    /// What `sluice_xdp` makes of a stored value: anything but up or draining takes no new
    /// flows, so it reads as down.
    pub const fn from_code(code: u8) -> BackendState {
        match code {
            BACKEND_UP => BackendState::Up,
            BACKEND_DRAINING => BackendState::Draining,
            _ => BackendState::Down,
        }
    }

    /// The name in `sluice backends`, JSON and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Draining => "draining",
            BackendState::Down => "down",
        }
    }
}

impl std::fmt::Display for BackendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The last health-check verdict on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    /// The backend has no health check.
    Unchecked,
}

impl Health {
    pub const fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unchecked => "unchecked",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a `sluice_xdp` counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterKind {
    /// Packets dropped, by reason.
    Drop,
    /// Packets passed to the network stack, by reason.
    Pass,
    /// Anything else (tx, redirect, conntrack hits, ...).
    Event,
}

impl CounterKind {
    pub const fn name(self) -> &'static str {
        match self {
            CounterKind::Drop => "drop",
            CounterKind::Pass => "pass",
            CounterKind::Event => "event",
        }
    }
}

impl std::fmt::Display for CounterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// [`NodeState`] on the wire by its name.
mod phase_name {
    use serde::{de::Error as _, Deserialize as _, Deserializer, Serializer};

    use crate::shutdown::NodeState;

    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "the signature serde's `with` calls"
    )]
    pub fn serialize<S: Serializer>(phase: &NodeState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(phase.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeState, D::Error> {
        let name = String::deserialize(d)?;
        NodeState::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown phase \"{name}\"")))
    }
}

/// A wire enum from its name, through the one parser the admin socket uses (serde), for tests
/// that write rows by hand.
#[cfg(test)]
pub(crate) fn from_name<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(serde_json::Value::String(name.into()))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}
