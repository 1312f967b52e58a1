//! The daemon's view of each backend: what the operator asked (drained) and what health checks
//! found, combined into the one state the kernel map holds.

use std::{collections::HashMap, net::IpAddr};

use crate::admin::protocol::{BackendState, Health};

#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts set by different parties (the operator, the checks, the config)"
)]
pub struct BackendMeta {
    /// `sluice drain` was asked and not undone.
    pub drained: bool,
    /// The last health verdict (true when unchecked).
    pub healthy: bool,
    pub checked: bool,
    /// A probe passed since the daemon started or the backend was added (or its check).
    pub passed: bool,
    pub reason: Option<String>,
    pub to_healthy: u64,
    pub to_unhealthy: u64,
}

impl BackendMeta {
    pub fn new(checked: bool) -> Self {
        BackendMeta {
            drained: false,
            healthy: true,
            checked,
            passed: false,
            reason: None,
            to_healthy: 0,
            to_unhealthy: 0,
        }
    }

    /// A drain outranks health: a drained backend stays out of new flows whatever its checks
    /// say, and its established flows keep going until they end.
    pub fn kernel_state(&self) -> BackendState {
        if self.drained {
            BackendState::Draining
        } else if self.healthy {
            BackendState::Up
        } else {
            BackendState::Down
        }
    }

    /// Checked and no probe passed yet: up, but it does not make its VIP ready.
    pub fn unproven(&self) -> bool {
        self.checked && !self.passed
    }

    pub fn health(&self) -> Health {
        match (self.checked, self.healthy) {
            (false, _) => Health::Unchecked,
            (true, true) => Health::Healthy,
            (true, false) => Health::Unhealthy,
        }
    }
}

pub type Metas = HashMap<(String, IpAddr), BackendMeta>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_outranks_health() {
        let mut m = BackendMeta::new(true);
        assert_eq!(m.kernel_state(), BackendState::Up);
        m.healthy = false;
        assert_eq!(m.kernel_state(), BackendState::Down);
        m.drained = true;
        assert_eq!(m.kernel_state(), BackendState::Draining);
        m.healthy = true;
        assert_eq!(m.kernel_state(), BackendState::Draining);
    }

    #[test]
    fn a_checked_backend_is_unproven_until_a_probe_passes() {
        let mut m = BackendMeta::new(true);
        assert_eq!(
            m.kernel_state(),
            BackendState::Up,
            "takes flows from the start"
        );
        assert!(m.unproven());
        m.passed = true;
        assert!(!m.unproven());
        assert!(
            !BackendMeta::new(false).unproven(),
            "unchecked: nothing to prove"
        );
    }
}
