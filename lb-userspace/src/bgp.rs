//! The BGP speaker inside the daemon: it announces each VIP's address as a host route (/32,
//! /128) to the configured peers while this gateway should receive its traffic, and withdraws
//! it otherwise. Announce-only: routes received are never installed. Because the sessions
//! are tasks of the daemon, a daemon that dies takes its routes with it (the peer sees the
//! TCP connection close, or its hold timer expire).
//!
//! [`routes`] decides what to announce from the daemon's published state; [`Speaker`] holds
//! that decision and one [`session`] task per peer makes each peer's view match it.

pub mod message;
pub mod routes;
pub mod session;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Bgp;

use message::{Family, Open, Path};
use session::{Local, Peer, PeerView, SessionState};

/// The routes every session should carry: address → communities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Bumped on every change, so a caller can wait until each peer has it.
    pub generation: u64,
    pub routes: BTreeMap<IpAddr, Vec<u32>>,
}

/// The running speaker.
pub struct Speaker {
    /// What the sessions are told; they each hold a receiver.
    desired: watch::Sender<Desired>,
    /// The same value, for readers here: a `watch` borrow would be a read lock that blocks
    /// the sender.
    current: Mutex<Desired>,
    peers: Vec<(Peer, Arc<Mutex<PeerView>>)>,
    /// VIP names withdrawn by hand (`sluice bgp withdraw`), until `announce`.
    held: Mutex<BTreeSet<String>>,
    /// Set by the shutdown: nothing is announced any more.
    stopping: std::sync::atomic::AtomicBool,
    /// Set by the shutdown's first step when `graceful_shutdown` is on: every route carries
    /// the `GRACEFUL_SHUTDOWN` community.
    graceful: std::sync::atomic::AtomicBool,
    /// `[bgp] graceful_shutdown`: how long that first step lasts (zero: skipped).
    graceful_for: Duration,
    /// Wakes the daemon's route driver after a hand-made change.
    pub changed: tokio::sync::Notify,
}

impl Speaker {
    /// Starts one session task per peer (they connect at once and announce nothing until
    /// [`Speaker::set`] says what).
    pub fn start(config: &Bgp) -> Arc<Speaker> {
        // Both, whatever the VIPs are now: a reload may add a VIP of the other family, and a
        // peer not configured for a family just leaves it out of the session.
        let families = vec![Family::Ipv4, Family::Ipv6];
        let local = Local {
            open: Open {
                local_as: config.local_as,
                hold_time: 0,
                router_id: config.router_id,
                families,
            },
            path: Path {
                local_as: config.local_as,
                internal: false,
                next_hop_v4: config.next_hop_v4,
                next_hop_v6: config.next_hop_v6,
            },
        };
        let (desired, _) = watch::channel(Desired::default());
        let peers: Vec<_> = config
            .peers
            .iter()
            .map(|p| {
                (
                    Peer {
                        address: SocketAddr::new(p.address, p.port),
                        remote_as: p.remote_as,
                        hold_time: p.hold_time,
                        password: p.password.clone(),
                    },
                    Arc::new(Mutex::new(PeerView::default())),
                )
            })
            .collect();
        for (peer, view) in &peers {
            tokio::spawn(session::run(
                peer.clone(),
                local.clone(),
                desired.subscribe(),
                Arc::clone(view),
            ));
        }
        Arc::new(Speaker {
            desired,
            current: Mutex::new(Desired::default()),
            peers,
            held: Mutex::new(BTreeSet::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            graceful: std::sync::atomic::AtomicBool::new(false),
            graceful_for: config.graceful_shutdown,
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Makes `routes` what every peer should have (nothing once the withdrawal began, and
    /// each with `GRACEFUL_SHUTDOWN` during the graceful step before it).
    pub fn set(&self, routes: BTreeMap<IpAddr, Vec<u32>>) {
        let routes = if self.stopping() {
            BTreeMap::new()
        } else if self.graceful.load(std::sync::atomic::Ordering::SeqCst) {
            with_graceful_shutdown(routes)
        } else {
            routes
        };
        let mut current = lock(&self.current);
        if current.routes == routes {
            return;
        }
        current.generation += 1;
        current.routes = routes;
        // Under `current`'s lock, so the sessions see the generations in order.
        self.desired.send_replace(current.clone());
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// VIP names withdrawn by hand.
    pub fn held(&self) -> BTreeSet<String> {
        lock(&self.held).clone()
    }

    /// `sluice bgp withdraw|announce`: keeps the VIP named `vip` withdrawn, or lets it be
    /// announced again (when it qualifies).
    pub fn hold(&self, vip: &str, withdrawn: bool) {
        {
            let mut held = lock(&self.held);
            if withdrawn {
                held.insert(vip.to_owned());
            } else {
                held.remove(vip);
            }
        }
        self.changed.notify_one();
    }

    /// The first step of a graceful shutdown. With `graceful_shutdown` on, every route is
    /// announced again with `GRACEFUL_SHUTDOWN` (RFC 8326) and kept for that long, or until
    /// `hurry` completes (a second stop signal); then everything is withdrawn. Each change
    /// waits (at most `wait`) until every established session has sent it. `true` when
    /// hurried.
    pub async fn shut_down(
        &self,
        wait: Duration,
        hurry: impl std::future::Future<Output = ()>,
    ) -> bool {
        let mut hurried = false;
        // Nothing announced (no backend up, withdrawn by hand): nothing to move away first.
        let announcing = !lock(&self.current).routes.is_empty();
        if announcing && !self.graceful_for.is_zero() {
            tracing::info!(
                wait = %humantime::format_duration(self.graceful_for),
                "stop signal: announcing the VIPs with GRACEFUL_SHUTDOWN (65535:0) before the withdrawal"
            );
            self.graceful
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let routes = lock(&self.current).routes.clone();
            self.set(routes);
            let announced = async {
                self.sent(wait).await;
                tokio::time::sleep(self.graceful_for).await;
            };
            tokio::select! {
                () = announced => {}
                () = hurry => hurried = true,
            }
        }
        tracing::info!("stop signal: withdrawing the BGP announcements");
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.set(BTreeMap::new());
        self.sent(wait).await;
        hurried
    }

    /// Waits (at most `wait`) until every established session has sent the current routes.
    async fn sent(&self, wait: Duration) {
        let target = lock(&self.current).generation;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let pending = self.peers.iter().any(|(_, v)| {
                let v = lock(v);
                v.state == SessionState::Established && v.synced < target
            });
            if !pending {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!("BGP updates not confirmed sent within {wait:?}");
    }

    /// What `sluice status` shows.
    pub fn status(&self) -> BgpStatus {
        let desired = lock(&self.current).clone();
        BgpStatus {
            wanted: desired.routes.keys().copied().collect(),
            withdrawn_by_hand: self.held().into_iter().collect(),
            peers: self
                .peers
                .iter()
                .map(|(peer, view)| {
                    let v = lock(view).clone();
                    BgpPeerRow {
                        peer: peer.address,
                        remote_as: peer.remote_as,
                        state: v.state.name().to_owned(),
                        established_secs: v.since.map(|s| s.elapsed().as_secs()),
                        announced: v.announced,
                        last_error: v.last_error,
                    }
                })
                .collect(),
        }
    }
}

/// `communities` with RFC 8326's `GRACEFUL_SHUTDOWN` added to every route (sorted, once).
pub fn with_graceful_shutdown(
    mut routes: BTreeMap<IpAddr, Vec<u32>>,
) -> BTreeMap<IpAddr, Vec<u32>> {
    for communities in routes.values_mut() {
        communities.push(message::GRACEFUL_SHUTDOWN);
        communities.sort_unstable();
        communities.dedup();
    }
    routes
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `sluice status`'s BGP part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpStatus {
    /// The VIP addresses every peer should have now.
    pub wanted: Vec<IpAddr>,
    /// VIP names withdrawn by hand (`sluice bgp withdraw`).
    pub withdrawn_by_hand: Vec<String>,
    pub peers: Vec<BgpPeerRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpPeerRow {
    pub peer: SocketAddr,
    pub remote_as: u32,
    /// `idle` | `connect` | `open-sent` | `open-confirm` | `established`.
    pub state: String,
    pub established_secs: Option<u64>,
    /// The routes this peer has from this gateway.
    pub announced: Vec<IpAddr>,
    /// Why the last session ended.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// A speaker without peers (no sessions to wait for), `graceful_shutdown` as given.
    fn speaker(graceful_shutdown: Duration) -> Arc<Speaker> {
        Speaker::start(&Bgp {
            local_as: 65001,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            next_hop_v6: None,
            peers: vec![],
            communities: BTreeMap::new(),
            graceful_shutdown,
        })
    }

    fn web() -> BTreeMap<IpAddr, Vec<u32>> {
        BTreeMap::from([("198.51.100.10".parse().unwrap(), vec![0xfde8_0064])])
    }

    /// Every value the sessions are told, in order, until `until` completes.
    async fn told(
        speaker: &Speaker,
        until: impl std::future::Future<Output = bool>,
    ) -> (bool, Vec<BTreeMap<IpAddr, Vec<u32>>>) {
        let mut rx = speaker.desired.subscribe();
        let mut seen = Vec::new();
        tokio::pin!(until);
        loop {
            tokio::select! {
                biased;
                _ = rx.changed() => seen.push(rx.borrow_and_update().routes.clone()),
                hurried = &mut until => {
                    if rx.has_changed().unwrap_or(false) {
                        seen.push(rx.borrow_and_update().routes.clone());
                    }
                    return (hurried, seen);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_stop_announces_graceful_shutdown_for_its_time_then_withdraws() {
        let s = speaker(Duration::from_millis(300));
        s.set(web());
        let started = tokio::time::Instant::now();
        let (hurried, seen) = told(
            &s,
            s.shut_down(Duration::from_secs(2), std::future::pending()),
        )
        .await;
        assert!(!hurried);
        assert_eq!(
            seen,
            [
                BTreeMap::from([(
                    "198.51.100.10".parse().unwrap(),
                    vec![0xfde8_0064, message::GRACEFUL_SHUTDOWN]
                )]),
                BTreeMap::new(),
            ]
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        // Once stopping, what the daemon's driver still computes is not announced.
        s.set(web());
        assert_eq!(lock(&s.current).routes, BTreeMap::new());
    }

    #[tokio::test]
    async fn a_second_signal_cuts_the_wait_short_but_not_the_withdrawal() {
        let s = speaker(Duration::from_mins(10));
        s.set(web());
        let started = tokio::time::Instant::now();
        let (hurried, seen) = told(
            &s,
            s.shut_down(Duration::from_secs(2), std::future::ready(())),
        )
        .await;
        assert!(hurried);
        assert_eq!(seen.last(), Some(&BTreeMap::new()));
        assert!(started.elapsed() < Duration::from_mins(10));
    }

    #[tokio::test]
    async fn without_graceful_shutdown_a_stop_withdraws_at_once() {
        let s = speaker(Duration::ZERO);
        s.set(web());
        let (hurried, seen) = told(
            &s,
            s.shut_down(Duration::from_secs(2), std::future::pending()),
        )
        .await;
        assert!(!hurried);
        assert_eq!(seen, [BTreeMap::new()]);
        // Nothing announced: nothing to move away, so no graceful wait either.
        let idle = speaker(Duration::from_mins(10));
        let stop = idle.shut_down(Duration::from_secs(2), std::future::pending());
        assert!(tokio::time::timeout(Duration::from_mins(1), stop)
            .await
            .is_ok());
    }

    #[test]
    fn graceful_shutdown_is_added_to_every_route_once() {
        let routes = BTreeMap::from([
            ("198.51.100.10".parse().unwrap(), vec![0xfde8_0064]),
            ("2001:db8::10".parse().unwrap(), vec![]),
            (
                "198.51.100.11".parse().unwrap(),
                vec![message::GRACEFUL_SHUTDOWN],
            ),
        ]);
        assert_eq!(
            with_graceful_shutdown(routes),
            BTreeMap::from([
                (
                    "198.51.100.10".parse().unwrap(),
                    vec![0xfde8_0064, message::GRACEFUL_SHUTDOWN]
                ),
                (
                    "2001:db8::10".parse().unwrap(),
                    vec![message::GRACEFUL_SHUTDOWN]
                ),
                (
                    "198.51.100.11".parse().unwrap(),
                    vec![message::GRACEFUL_SHUTDOWN]
                ),
            ])
        );
    }
}
