//! Graceful shutdown, in the two phases operators know from Keycloak: `draining` (not ready,
//! still serving, keep-alive clients asked to reconnect) for `shutdown_delay`, then `closed`
//! (new edge connections reset by the kernel, listeners closed, in-flight requests given
//! `shutdown_timeout`). The phases are the values of [`NodeState`]: the daemon writes them to
//! the kernel (`dataplane` owns their encoding in the node map) and its listeners follow them.

use std::{fmt, time::Duration};

/// Where the node is in its lifecycle; the kernel sees it too (the node map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    /// Normal operation.
    Serving,
    /// Shutting down but still serving new connections (readiness already says not ready).
    Draining,
    /// New connections to edge VIPs are refused with a RST in XDP.
    Closed,
}

impl NodeState {
    pub const ALL: [NodeState; 3] = [NodeState::Serving, NodeState::Draining, NodeState::Closed];

    /// Stable lowercase name for status output and logs.
    pub const fn name(self) -> &'static str {
        match self {
            NodeState::Serving => "serving",
            NodeState::Draining => "draining",
            NodeState::Closed => "closed",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `sluice run --shutdown-delay/--shutdown-timeout`: they win over the config, including
/// after a reload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub delay: Option<Duration>,
    pub timeout: Option<Duration>,
}

impl Overrides {
    /// The delay and timeout in force with `config`'s values.
    pub fn apply(self, config: &crate::config::Shutdown) -> (Duration, Duration) {
        (
            self.delay.unwrap_or(config.delay),
            self.timeout.unwrap_or(config.timeout),
        )
    }
}
