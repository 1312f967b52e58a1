//! SIGTERM must always end the daemon, whatever the management port is answering at that
//! moment (issue 13, item 1). A readiness probe once held the phase's read lock across a call
//! that read it again, so a SIGTERM arriving mid-probe queued its write between the two reads
//! and the daemon hung in `draining` until SIGKILL; a second SIGTERM did nothing.
//!
//! Here a real daemon (one veth, no traffic: start-up is about a quarter of a second) is
//! stopped [`ROUNDS`] times while [`POLLERS`] clients poll `/health/ready` every few ms. Each
//! stop must end within `shutdown_delay` + `shutdown_timeout` + [`SLACK`]; every
//! [`DOUBLE_EVERY`]th round uses a minute-long delay, and a second SIGTERM must end it.
//! Needs root. About a minute and a half on two busy cores.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sluice_tests::daemon::{Daemon, Scratch};
use sluice_tests::{require_root, NetNs};

const ROUNDS: usize = 200;
const DOUBLE_EVERY: usize = 5;
const POLLERS: usize = 8;
const POLL_GAP: Duration = Duration::from_millis(2);
const DELAY: Duration = Duration::from_millis(20);
const TIMEOUT: Duration = Duration::from_millis(50);
/// Only a daemon that waits on something it should not (a lock, a stuck task) needs more: the
/// management port's own grace for open connections is 2 s, exiting takes a few ms.
const SLACK: Duration = Duration::from_secs(3);
const LONG_DELAY: &str = "60s";
const MANAGEMENT: &str = "127.0.0.1:9000";

fn config(instance: &str, scratch: &Scratch, delay: &str) -> String {
    let mut text = format!(
        "instance = \"{instance}\"\ninterfaces = [\"st0\"]\nconntrack_entries = 1024\n\
         shutdown_delay = \"{delay}\"\nshutdown_timeout = \"{}ms\"\n\n\
         [admin]\nsocket = \"{}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n",
        TIMEOUT.as_millis(),
        Daemon::socket_in(scratch.path()).display()
    );
    let _ = write!(
        text,
        "\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.10:80\"\ntable_size = 251\n\
         [[vip.backend]]\naddress = \"198.18.1.2\"\n"
    );
    text
}

/// What the pollers have seen so far.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    unavailable: AtomicU64,
}

/// Clients that GET `/health/ready` in a tight loop until dropped.
struct Pollers {
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    threads: Vec<JoinHandle<()>>,
}

impl Pollers {
    fn start(ns: &NetNs) -> Pollers {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let addr: SocketAddr = MANAGEMENT.parse().expect("address");
        let threads = (0..POLLERS)
            .map(|_| {
                let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
                ns.enter(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match ready(addr) {
                            Some(200) => seen.ok.fetch_add(1, Ordering::Relaxed),
                            Some(503) => seen.unavailable.fetch_add(1, Ordering::Relaxed),
                            _ => 0,
                        };
                        thread::sleep(POLL_GAP);
                    }
                })
                .expect("poller in the namespace")
            })
            .collect();
        Pollers {
            stop,
            seen,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.seen.ok.load(Ordering::Relaxed)
    }

    fn unavailable(&self) -> u64 {
        self.seen.unavailable.load(Ordering::Relaxed)
    }
}

impl Drop for Pollers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The status code of one `/health/ready`, or `None` when the daemon is not there.
fn ready(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Waits until `f` is true, at most `limit`.
fn until(limit: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    f()
}

fn tail(daemon: &Daemon) -> String {
    let log = daemon.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn sigterm_under_a_tight_readiness_poll_always_ends_the_daemon() {
    require_root();
    let began = Instant::now();
    let ns = NetNs::create("slds").expect("namespace");
    ns.ip(&["link", "add", "st0", "type", "veth", "peer", "name", "st1"])
        .expect("veth");
    for dev in ["st0", "st1"] {
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }
    let scratch = Scratch::create("slds").expect("scratch");
    let instance = "test-slds";
    let short = config(instance, &scratch, &format!("{}ms", DELAY.as_millis()));
    let long = config(instance, &scratch, LONG_DELAY);
    let pollers = Pollers::start(&ns);
    let mut daemon: Option<Daemon> = None;
    for round in 0..ROUNDS {
        let double = round % DOUBLE_EVERY == DOUBLE_EVERY - 1;
        let text = if double { &long } else { &short };
        let d = match daemon.as_mut() {
            None => daemon
                .insert(Daemon::start(&ns, scratch.path(), instance, text).expect("start sluice")),
            Some(d) => {
                std::fs::write(d.config_path(), text).expect("write config");
                d.restart(&ns)
                    .unwrap_or_else(|e| panic!("round {round}: restart: {e:#}"));
                d
            }
        };
        // The probes reach this daemon before it is told to stop.
        let seen = pollers.ok();
        assert!(
            until(SLACK, || pollers.ok() > seen),
            "round {round}: no ready probe answered 200\n{}",
            tail(d)
        );
        d.signal(libc::SIGTERM).expect("SIGTERM");
        let limit = if double {
            // Draining for a minute: wait for the first 503, then the second signal.
            let seen = pollers.unavailable();
            assert!(
                until(SLACK, || pollers.unavailable() > seen),
                "round {round}: the daemon never answered 503 after SIGTERM (stuck?)\n{}",
                tail(d)
            );
            d.signal(libc::SIGTERM).expect("second SIGTERM");
            // A second signal skips the rest of the delay and the timeout.
            SLACK
        } else {
            DELAY + TIMEOUT + SLACK
        };
        let status = d.wait_exit(limit).unwrap_or_else(|e| {
            panic!(
                "round {round} ({}): {e:#}\n{}",
                if double { "second SIGTERM" } else { "SIGTERM" },
                tail(d)
            )
        });
        assert!(
            status.success(),
            "round {round}: exit {status}\n{}",
            tail(d)
        );
    }
    drop(pollers);
    eprintln!(
        "{ROUNDS} SIGTERMs ({} with a second one) under {POLLERS} readiness pollers in {:.1?}",
        ROUNDS / DOUBLE_EVERY,
        began.elapsed()
    );
}
