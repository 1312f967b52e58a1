//! `/health/{live,ready,started}` and the aggregate `/health` in the shape of Keycloak's
//! management port (`SmallRye` Health), so probes and dashboards written for it read sluice
//! unchanged.

use serde::Serialize;
use serde_json::{json, Value};

use crate::{admin::protocol::BackendState, observe::Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Live,
    Ready,
    Started,
    /// `/health`: every check of the three, UP only when all are.
    All,
}

impl Probe {
    pub fn from_path(path: &str) -> Option<Probe> {
        match path {
            "/health/live" => Some(Probe::Live),
            "/health/ready" => Some(Probe::Ready),
            "/health/started" => Some(Probe::Started),
            "/health" => Some(Probe::All),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub status: Status,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub data: Value,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Up,
    Down,
}

impl Status {
    fn from_ok(ok: bool) -> Status {
        if ok {
            Status::Up
        } else {
            Status::Down
        }
    }
}

impl Check {
    fn new(name: impl Into<String>, ok: bool, data: Value) -> Check {
        Check {
            name: name.into(),
            status: Status::from_ok(ok),
            data,
        }
    }
}

/// What `probe` says about `snapshot` (or about the error that stood in for one).
pub fn report(probe: Probe, snapshot: &Result<Snapshot, String>) -> Report {
    let checks = match snapshot {
        Ok(s) => match probe {
            Probe::Live => vec![live(s)],
            Probe::Started => vec![dataplane(s)],
            Probe::Ready => ready(s),
            // Readiness includes the started check (the dataplane): each check once.
            Probe::All => std::iter::once(live(s)).chain(ready(s)).collect(),
        },
        Err(error) => {
            let name = if probe == Probe::Live {
                "sluice daemon"
            } else {
                "dataplane"
            };
            vec![Check::new(name, false, json!({ "error": error }))]
        }
    };
    let up = checks.iter().all(|c| c.status == Status::Up);
    Report {
        status: Status::from_ok(up),
        checks,
    }
}

fn live(s: &Snapshot) -> Check {
    let data = json!({
        "instance": s.status.instance,
        "version": s.status.version,
        "phase": s.status.phase.name(),
        "uptime_secs": s.status.uptime_secs,
    });
    Check::new("sluice daemon", true, data)
}

fn dataplane(s: &Snapshot) -> Check {
    let data = json!({ "maps_written": s.maps_written, "attached": s.attached });
    Check::new("dataplane", s.maps_written && s.attached, data)
}

fn ready(s: &Snapshot) -> Vec<Check> {
    let mut checks = vec![dataplane(s)];
    for vip in &s.status.vips {
        // The kernel map's state, not the health verdict: a drained but healthy backend serves
        // no new flows, so it does not make the VIP ready; nor does one weighted 0, which has
        // no slot in the table; nor a checked one that has not passed a probe yet (it takes new
        // flows, so none is blackholed while the first probes run, but it may be dead).
        let rows = s.backends.iter().filter(|b| b.vip == vip.name);
        let (mut up, mut taking, mut ready, mut total) = (0usize, 0usize, 0usize, 0usize);
        for b in rows {
            let is_up = b.state == BackendState::Up;
            up += usize::from(is_up);
            taking += usize::from(is_up && b.weight > 0);
            ready += usize::from(b.makes_vip_ready());
            total += 1;
        }
        let data = json!({
            "backends_up": up,
            "backends_taking_new_flows": taking,
            "backends_ready": ready,
            "backends_total": total,
        });
        checks.push(Check::new(format!("vip {}", vip.name), ready > 0, data));
    }
    let data = json!({ "phase": s.status.phase.name() });
    checks.push(Check::new("shutdown", !s.shutting_down, data));
    checks
}
