//! `kernel_log`: `sluice_xdp`'s aya-log reports reach the daemon's log (target
//! `sluice::kernel`) when it is on, and nothing does when it is off, the default.
//!
//! ```text
//!  client 198.18.0.2 ── gwc ┐ gateway: sluice, edge listener 198.18.0.1:8443 with
//!                           ┘ proxy_protocol = "required", trusting only 198.18.1.2
//! ```
//!
//! The client opens a TCP connection to the listener and writes a PROXY v1 header of its own:
//! a forged one, from outside `trusted_proxies`. The kernel refuses the flow on that segment
//! and drops it and its retransmissions (`sluice_xdp_drops_total{reason="proxy"}`); the
//! listener never sees a byte.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test kernel_log`.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use sluice_tests::{
    daemon::Daemon,
    edge_lab::{LabBase, Listener},
    require_root,
    topology::{GW_CLIENT_ADDR4, GW_CLIENT_IFNAME, PROXY_ADDR4},
};

const PORT: u16 = 8443;
const MANAGEMENT: &str = "127.0.0.1:9031";
/// Generous: the reports arrive within milliseconds; this only bounds a failing run.
const WAIT: Duration = Duration::from_secs(10);
const DROPPED: &str = "drop_proxy: refused by the VIP's PROXY or client policy";

/// The gateway's configuration with `kernel_log` set to `level` (left out when `None`).
fn config(base: &LabBase, level: Option<&str>) -> String {
    let mut listener = Listener::v4("klog", PORT);
    listener.trusted_proxies = vec![format!("{PROXY_ADDR4}/32")];
    listener.settings = vec!["proxy_protocol = \"required\"".into()];
    let mut text = base.gateway_config(&[GW_CLIENT_IFNAME], MANAGEMENT);
    text.push_str(&listener.toml(&base.pki));
    // Top-level keys come before any table. The delay is `Daemon::start`'s default, written
    // out so that the rewritten config for the restart keeps it.
    let level = level.map_or(String::new(), |l| format!("kernel_log = \"{l}\"\n"));
    format!("shutdown_delay = \"0s\"\n{level}{text}")
}

/// From the client: a connection whose first bytes are a forged PROXY header. The kernel
/// drops them, so the connection stays open, unanswered, until it is dropped here.
fn forge(base: &LabBase) -> TcpStream {
    base.topo
        .client()
        .exec(|| {
            let mut s = TcpStream::connect_timeout(
                &SocketAddr::new(GW_CLIENT_ADDR4.into(), PORT),
                Duration::from_secs(5),
            )
            .expect("connect to the listener");
            s.write_all(b"PROXY TCP4 203.0.113.66 198.18.0.1 40000 8443\r\n")
                .expect("write the forged header");
            s
        })
        .expect("enter the client namespace")
}

/// Waits until the kernel has dropped at least one segment for the PROXY policy.
fn await_drop(daemon: &Daemon, base: &LabBase) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let drops = daemon
            .metric(
                base.topo.gateway(),
                MANAGEMENT.parse().expect("address"),
                "sluice_xdp_drops_total",
                &[("reason", "proxy")],
            )
            .expect("scrape /metrics");
        if drops >= 1.0 {
            return drops;
        }
        assert!(
            Instant::now() < deadline,
            "the forged header was not dropped; log:\n{}",
            daemon.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The messages of the kernel reports (the events with a `kernel_level` field) in the
/// daemon's log, from its `from`th JSON line on.
fn kernel_reports(daemon: &Daemon, from: usize) -> Vec<String> {
    daemon
        .log_events()
        .iter()
        .skip(from)
        .filter(|e| e.get("kernel_level").is_some())
        .map(|e| e["message"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_dropped_forged_header_is_reported_when_kernel_log_is_on_and_not_when_off() {
    require_root();
    let base = LabBase::new("klog", 1, false);
    let mut daemon = base.start_daemon(&config(&base, Some("info")));

    // On: one report per dropped segment (the first and any retransmission), and nothing
    // else: the listener's other traffic takes no rare path.
    let conn = forge(&base);
    await_drop(&daemon, &base);
    let deadline = Instant::now() + WAIT;
    let reports = loop {
        let reports = kernel_reports(&daemon, 0);
        if reports.iter().any(|m| m == DROPPED) || Instant::now() > deadline {
            break reports;
        }
        thread::sleep(Duration::from_millis(50));
    };
    drop(conn);
    assert!(
        reports.iter().any(|m| m == DROPPED),
        "no drop report; log:\n{}",
        daemon.log_text()
    );
    assert!(
        reports.iter().all(|m| m == DROPPED),
        "unexpected kernel reports {reports:?}"
    );

    // Off (the key left out): the same drop, no report.
    daemon.stop().expect("stop sluice");
    let from = daemon.log_events().len();
    std::fs::write(daemon.config_path(), config(&base, None)).expect("rewrite the config");
    daemon.restart(base.topo.gateway()).expect("restart sluice");
    let conn = forge(&base);
    await_drop(&daemon, &base);
    drop(conn);
    assert_eq!(
        kernel_reports(&daemon, from),
        Vec::<String>::new(),
        "kernel reports with kernel_log off; log:\n{}",
        daemon.log_text()
    );
}
