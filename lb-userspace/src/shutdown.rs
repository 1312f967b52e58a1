//! Graceful shutdown, in the two phases operators know from Keycloak: `draining` (not ready,
//! still serving, keep-alive clients asked to reconnect) for `shutdown_delay`, then `closed`
//! (new edge connections reset by the kernel, listeners closed, in-flight requests given
//! `shutdown_timeout`).

use std::time::Duration;

/// Where the node is in its life; edge listeners and the node map follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Reported not ready; new connections and requests are still served.
    Draining,
    /// New connections are refused; in-flight work finishes.
    Closed,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Serving, Phase::Draining, Phase::Closed];

    pub const fn name(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Closed => "closed",
        }
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
