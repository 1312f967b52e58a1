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
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Makes `routes` what every peer should have (nothing once the shutdown began).
    pub fn set(&self, routes: BTreeMap<IpAddr, Vec<u32>>) {
        let routes = if self.stopping() {
            BTreeMap::new()
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

    /// The first step of a graceful shutdown: withdraws everything, then waits (at most
    /// `wait`) until every established session has sent the withdrawals.
    pub async fn withdraw_all(&self, wait: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.set(BTreeMap::new());
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
        tracing::warn!("BGP withdrawals not confirmed sent within {wait:?}");
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
