//! Readiness before the first health check: a checked backend starts up (it takes new flows
//! from the first moment, so none is blackholed while the first probes run) but does not make
//! its VIP ready until one of its probes has passed since the daemon started. A VIP is ready
//! when some backend that takes new flows (up, weight above 0) is unchecked or has passed a
//! probe. `/health/ready`, `sluice status`'s `ready`, `READY=1` and the BGP announcement all
//! read that rule.
//!
//! - `dead_checked_backend_never_makes_the_vip_ready`: the only backend's check port is closed
//!   (fall 3, interval 1 s): `/health/ready` answers 503 from the first request, while the
//!   backend is still up and taking new flows, and stays 503 through its fall; before the fix
//!   it answered 200 until the third probe failed.
//! - `ready_once_the_first_probe_passes_also_after_a_restart_with_kept_pins` (fall 5): 503
//!   while the check port is closed (the backend up all along), 200 once a probe passes after
//!   it opens, never having gone down; with the port open from the start, ready once the first
//!   probe ran; after a restart with `keep_dataplane` (the pinned state says up), the rule
//!   applies again: the port closed, 503 from the first request, while the backend still takes
//!   new flows.
//!
//! Run with `cargo test -p sluice-tests --test readiness -- --test-threads=1`. Needs root.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use sluice_tests::daemon::{remove_pins, Daemon, Scratch};
use sluice_tests::topology::backend_addr4;
use sluice_tests::{require_root, tcp_echo_backend, Topology, VIP4};

const MANAGEMENT: &str = "127.0.0.1:9000";
/// The port the health check probes on the backend (nothing else uses it).
const CHECK_PORT: u16 = 8081;
/// The check: one probe a second, three failures to fall, one success to rise.
const INTERVAL: Duration = Duration::from_secs(1);
const FALL: u32 = 3;
/// The second test's fall: the backend stays up for 4 failed probes, so it is still up when
/// the port opens, however slowly the daemon started.
const FALL_SLOW: u32 = 5;
/// How long a test waits for something that must happen (not a bound on how fast).
const PATIENCE: Duration = Duration::from_secs(5);

fn config(instance: &str, scratch: &Scratch, keep_dataplane: bool, fall: u32) -> String {
    format!(
        "instance = \"{instance}\"\ninterfaces = [\"gwc\"]\nconntrack_entries = 4096\n\
         keep_dataplane = {keep_dataplane}\n\n\
         [admin]\nsocket = \"{}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP4}:80\"\ntable_size = 251\n\
         [vip.health_check]\nkind = \"tcp\"\nport = {CHECK_PORT}\ninterval = \"1s\"\n\
         timeout = \"500ms\"\nrise = 1\nfall = {fall}\n\
         [[vip.backend]]\naddress = \"{}\"\n",
        Daemon::socket_in(scratch.path()).display(),
        backend_addr4(0),
    )
}

/// One answer of `/health/ready`: the status code and the `vip web` check's data.
#[derive(Debug)]
struct VipAnswer {
    code: u16,
    backends_taking_new_flows: u64,
    backends_ready: u64,
}

fn ready(daemon: &Daemon, topo: &Topology) -> VipAnswer {
    let (code, body) = daemon
        .management_get(
            topo.gateway(),
            MANAGEMENT.parse::<SocketAddr>().expect("address"),
            "/health/ready",
        )
        .unwrap_or_else(|e| panic!("GET /health/ready: {e:#}\n{}", daemon.log_text()));
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let web = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "vip web")
        .cloned()
        .unwrap_or_else(|| panic!("no vip web check: {body}"));
    VipAnswer {
        code,
        backends_taking_new_flows: web["data"]["backends_taking_new_flows"]
            .as_u64()
            .expect("a count"),
        backends_ready: web["data"]["backends_ready"].as_u64().unwrap_or(0),
    }
}

/// The backend's `sluice backends --json` row.
fn row(daemon: &Daemon) -> serde_json::Value {
    daemon.cli_json(&["backends"]).expect("sluice backends")[0].clone()
}

/// Every `/health/ready` answer for `how_long`, one every 50 ms.
fn answers(daemon: &Daemon, topo: &Topology, how_long: Duration) -> Vec<VipAnswer> {
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < how_long {
        out.push(ready(daemon, topo));
        thread::sleep(Duration::from_millis(50));
    }
    out
}

#[test]
fn dead_checked_backend_never_makes_the_vip_ready() {
    require_root();
    let prefix = "dr1";
    let instance = format!("test-{prefix}");
    remove_pins(&instance);
    let topo = Topology::build(prefix, 1).expect("topology");
    let scratch = Scratch::create(prefix).expect("scratch");
    let daemon = Daemon::start(
        topo.gateway(),
        scratch.path(),
        &instance,
        &config(&instance, &scratch, false, FALL),
    )
    .expect("start sluice run");
    // From the first request until well past the fall (3 probes, 1 s apart): always 503.
    let seen = answers(&daemon, &topo, INTERVAL * (FALL + 2));
    let first = &seen[0];
    assert_eq!(
        (first.code, first.backends_ready),
        (503, 0),
        "the first answer: {first:?}\n{}",
        daemon.log_text()
    );
    assert!(
        seen.iter().all(|r| r.code == 503 && r.backends_ready == 0),
        "every answer 503: {:?}",
        seen.iter().filter(|r| r.code != 503).collect::<Vec<_>>()
    );
    // It was 503 while the backend still took new flows (it starts up: nothing blackholed
    // while the first probes run), and after the fall it is down.
    assert!(
        seen.iter().any(|r| r.backends_taking_new_flows == 1),
        "the backend took new flows before its fall: {seen:?}"
    );
    let row = row(&daemon);
    assert_eq!(row["state"], "down", "{row}");
    assert_eq!(row["health"], "unhealthy", "{row}");
    let status = daemon.cli_json(&["status"]).expect("status");
    assert_eq!(status["ready"], false, "{status}");
    drop(daemon);
}

#[test]
fn ready_once_the_first_probe_passes_also_after_a_restart_with_kept_pins() {
    require_root();
    let prefix = "dr2";
    let instance = format!("test-{prefix}");
    remove_pins(&instance);
    let topo = Topology::build(prefix, 1).expect("topology");
    let scratch = Scratch::create(prefix).expect("scratch");
    let mut daemon = Daemon::start(
        topo.gateway(),
        scratch.path(),
        &instance,
        &config(&instance, &scratch, true, FALL_SLOW),
    )
    .expect("start sluice run");

    // 1. The check port closed: up and taking new flows, but 503.
    let first = ready(&daemon, &topo);
    assert_eq!(
        (
            first.code,
            first.backends_taking_new_flows,
            first.backends_ready
        ),
        (503, 1, 0),
        "{first:?}\n{}",
        daemon.log_text()
    );
    let unproven = row(&daemon);
    assert_eq!(
        (&unproven["state"], &unproven["unproven"]),
        (&"up".into(), &true.into()),
        "{unproven}"
    );
    // The port opens after the first probe failed (one failure: fall is 3, still up): the
    // next probe passes and the VIP is ready then, not before.
    let server = tcp_echo_backend(topo.backend(0), "backend-0", CHECK_PORT).expect("listener");
    let opened = Instant::now();
    let seen = loop {
        let r = ready(&daemon, &topo);
        if r.code == 200 {
            break r;
        }
        assert_eq!(r.backends_ready, 0, "{r:?}");
        assert!(
            opened.elapsed() < PATIENCE,
            "not ready {:?} after the port opened: {r:?}\n{}",
            opened.elapsed(),
            daemon.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (seen.backends_taking_new_flows, seen.backends_ready),
        (1, 1)
    );
    let row_now = row(&daemon);
    assert_eq!(
        (&row_now["state"], &row_now["health"], &row_now["unproven"]),
        (&"up".into(), &"healthy".into(), &false.into()),
        "never went down, proven now: {row_now}"
    );
    assert_eq!(daemon.cli_json(&["status"]).expect("status")["ready"], true);

    // 2. Open from the start (a fresh daemon, the pins kept say up): ready once the first
    //    probe, which runs at once, passed.
    daemon.stop().expect("stop");
    daemon.restart(topo.gateway()).expect("restart");
    let restarted = Instant::now();
    loop {
        let r = ready(&daemon, &topo);
        if r.code == 200 {
            break;
        }
        assert!(
            restarted.elapsed() < PATIENCE,
            "not ready {:?} after a start with the port open: {r:?}\n{}",
            restarted.elapsed(),
            daemon.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }

    // 3. Restart with the pins kept (the backend up in them) and the port closed: the new
    //    daemon has seen no probe pass, so 503 from the first request, through the fall.
    daemon.stop().expect("stop");
    drop(server);
    daemon.restart(topo.gateway()).expect("restart");
    let status = daemon.cli_json(&["status"]).expect("status");
    assert_eq!(status["adopted"], true, "the pins were kept: {status}");
    let seen = answers(&daemon, &topo, INTERVAL * 2);
    assert!(
        seen.iter().all(|r| r.code == 503 && r.backends_ready == 0),
        "every answer 503 after the restart: {:?}\n{}",
        seen.iter().filter(|r| r.code != 503).collect::<Vec<_>>(),
        daemon.log_text()
    );
    assert!(
        seen[0].backends_taking_new_flows == 1,
        "adopted up, it takes new flows until its fall: {:?}",
        seen[0]
    );
    daemon.stop().expect("stop");
    drop(daemon);
    remove_pins(&instance);
}
