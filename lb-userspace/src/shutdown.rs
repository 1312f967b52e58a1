//! Graceful shutdown, in the two phases operators know from Keycloak: `draining` (not ready,
//! still serving, keep-alive clients asked to reconnect) for `shutdown_delay`, then `closed`
//! (new edge connections reset by the kernel, listeners closed, in-flight requests given
//! `shutdown_timeout`). The phases are the node states of `dataplane::NodeState`, which the
//! daemon writes to the kernel and its listeners follow.

use std::time::Duration;

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
