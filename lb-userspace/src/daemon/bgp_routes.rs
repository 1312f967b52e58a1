//! Drives the BGP speaker from the daemon's state: after every change it might care about
//! (a health transition, a drain, a reload, a phase change, `sluice bgp`) and at least every
//! [`POLL`], it recomputes which VIPs to announce from the published status, which never waits
//! for the daemon's lock.

use std::{sync::Arc, time::Duration};

use super::core::Core;
use crate::{
    bgp::{
        routes::{wanted, VipState},
        Speaker,
    },
    config::{Bgp, SEND_WAIT},
    shutdown::NodeState,
};

/// The published status changes without a notification (health, drains, reloads): how long
/// such a change can take to reach the routers.
const POLL: Duration = Duration::from_millis(200);

/// Starts the speaker for `config` and the task that keeps its routes current.
pub fn spawn(core: &Arc<Core>, config: &Bgp) {
    let speaker = Speaker::start(config);
    // `serve` calls this once, before anything else could have set it.
    let _ = core.bgp.set(Arc::clone(&speaker));
    let core = Arc::clone(core);
    let communities = config.communities.clone();
    tokio::spawn(async move {
        let mut phase = core.watch_phase();
        loop {
            let status = core.published().status.clone();
            let vips: Vec<VipState> = status
                .vips
                .iter()
                .map(|v| VipState {
                    name: v.name.clone(),
                    address: v.address.ip(),
                    // Those that make the VIP ready, as `/health/ready` counts them.
                    backends_taking_new_flows: v.backends_ready,
                })
                .collect();
            let serving = core.phase() == NodeState::Serving;
            speaker.set(wanted(serving, &vips, &speaker.held(), &communities));
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = speaker.changed.notified() => {}
                _ = phase.changed() => {}
            }
        }
    });
}

/// The first step of a graceful stop: every route withdrawn (after `graceful_shutdown` with
/// the `GRACEFUL_SHUTDOWN` community, if set), so routers move new flows to the other gateways
/// before readiness even matters. `hurry` (a second stop signal) cuts the graceful wait
/// short, never the withdrawal; `true` when it did.
pub async fn withdraw_all(core: &Core, hurry: impl std::future::Future<Output = ()>) -> bool {
    match core.bgp.get() {
        Some(speaker) => speaker.shut_down(SEND_WAIT, hurry).await,
        None => false,
    }
}
