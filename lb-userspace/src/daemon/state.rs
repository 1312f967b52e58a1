//! The daemon's view of each backend: what the operator asked (drained) and what health checks
//! found, combined into the one state the kernel map holds.

use std::{collections::HashMap, net::IpAddr};

use lb_common::{BACKEND_DOWN, BACKEND_DRAINING, BACKEND_UP};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendMeta {
    /// `sluice drain` was asked and not undone.
    pub drained: bool,
    /// The last health verdict (true when unchecked).
    pub healthy: bool,
    pub checked: bool,
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
            reason: None,
            to_healthy: 0,
            to_unhealthy: 0,
        }
    }

    /// A drain outranks health: a drained backend stays out of new flows whatever its checks
    /// say, and its established flows keep going until they end.
    pub fn kernel_state(&self) -> u8 {
        if self.drained {
            BACKEND_DRAINING
        } else if self.healthy {
            BACKEND_UP
        } else {
            BACKEND_DOWN
        }
    }
}

pub type Metas = HashMap<(String, IpAddr), BackendMeta>;

pub fn state_name(state: u8) -> &'static str {
    match state {
        BACKEND_UP => "up",
        BACKEND_DRAINING => "draining",
        _ => "down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_outranks_health() {
        let mut m = BackendMeta::new(true);
        assert_eq!(m.kernel_state(), BACKEND_UP);
        m.healthy = false;
        assert_eq!(m.kernel_state(), BACKEND_DOWN);
        m.drained = true;
        assert_eq!(m.kernel_state(), BACKEND_DRAINING);
        m.healthy = true;
        assert_eq!(m.kernel_state(), BACKEND_DRAINING);
    }
}
