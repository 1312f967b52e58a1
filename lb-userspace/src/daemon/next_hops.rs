//! Keeps the kernel's next-hop cache current: every backend's route and neighbour, resolved
//! over rtnetlink (see `dataplane::resolver`) on every route, neighbour, link or address event,
//! on every change of the backend set, and at least every [`RECHECK`]. Each of those passes
//! also makes the kernel resolve a next hop whose neighbour is missing, failed or stale, so the
//! first flow to a backend finds it cached rather than passed to a stack that drops it.
//!
//! Runs on a thread of its own (the netlink calls block); it takes the daemon's lock only to
//! read the backend addresses and to write what changed, so a reload never interleaves with a
//! write (an id is always paired with the address the backend map has for it). Without
//! rtnetlink the cache stays empty and the kernel looks every route up itself, as before.

use std::{net::IpAddr, sync::Arc, time::Duration, time::Instant};

use crate::{
    config::Encap,
    dataplane::resolver::{Events, Resolver, Sources},
};

use super::core::Core;

/// The periodic re-check, for anything that changes without an event reaching us.
pub const RECHECK: Duration = Duration::from_secs(2);
/// How often the backend set is compared with the last one resolved (a reload adds one).
const TICK: Duration = Duration::from_millis(200);

pub fn spawn(core: Arc<Core>) {
    let spawned = std::thread::Builder::new()
        .name("next-hops".into())
        .spawn(move || run(&core));
    if let Err(error) = spawned {
        tracing::warn!(
            %error,
            "cannot start the next-hop resolver: every packet's route is looked up in the kernel"
        );
    }
}

fn run(core: &Core) {
    let (mut resolver, mut events) =
        match Resolver::new().and_then(|r| Ok((r, Events::subscribe()?))) {
            Ok(both) => both,
            Err(error) => {
                tracing::warn!(
                    %error,
                    "rtnetlink is not available: no next-hop cache, every packet's route is looked \
                     up in the kernel"
                );
                return;
            }
        };
    let mut last_set: Option<Vec<IpAddr>> = None;
    let mut dirty = true;
    let mut last_pass = Instant::now();
    let mut failing = false;
    loop {
        let (addresses, sources) = {
            let inner = core.lock();
            (
                inner.dp.backend_addresses(),
                sources_of(&inner.config.encap),
            )
        };
        if last_set.as_ref() != Some(&addresses) {
            dirty = true;
        }
        if dirty || last_pass.elapsed() >= RECHECK {
            last_pass = Instant::now();
            let answer = resolver.resolve(&addresses, sources);
            core.neighbour_resolves
                .store(resolver.triggered(), std::sync::atomic::Ordering::Relaxed);
            match answer {
                Ok(found) => {
                    let written = core.lock().dp.set_next_hops(&found);
                    match written {
                        Ok(changed) if changed > 0 => {
                            tracing::debug!(changed, "next hops updated");
                        }
                        Ok(_) => {}
                        Err(error) => tracing::warn!(%error, "writing next hops"),
                    }
                    if failing {
                        tracing::info!("next hops resolve again");
                        failing = false;
                    }
                    last_set = Some(addresses);
                    dirty = false;
                }
                Err(error) => {
                    // Logged once per failing stretch; the cached entries stay as they were
                    // and the next event or re-check tries again.
                    if !failing {
                        tracing::warn!(%error, "resolving next hops");
                        failing = true;
                    }
                }
            }
        }
        match events.wait(TICK) {
            Ok(true) => dirty = true,
            Ok(false) => {}
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "reading route and neighbour events");
                    failing = true;
                }
                std::thread::sleep(TICK);
            }
        }
    }
}

/// The tunnel source of each family: the base address of its configured prefix.
fn sources_of(encap: &Encap) -> Sources {
    Sources {
        v4: encap.source_v4.map(|p| p.network()),
        v6: encap.source_v6.map(|p| p.network()),
    }
}
