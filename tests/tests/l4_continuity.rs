//! L4 flows under operations: long-lived TCP streams through an L4 VIP keep talking while the
//! daemon is restarted with `keep_dataplane = true`, a backend is drained and another one is
//! added by a reload. Real `sluice run` in the gateway namespace, `sluice_decap` and echo
//! servers on the backends, streams from the client. Needs root.
//!
//! The one duration asserted is the liveness bound: no stream waits longer than
//! [`MAX_GAP`] for an echo.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use sluice_tests::daemon::{pin_dir, Daemon, Scratch};
use sluice_tests::gateway_config::backend_tables;
use sluice_tests::streams::{Stream, Tally};
use sluice_tests::topology::{backend_addr4, GW_CLIENT_IFNAME};
use sluice_tests::{echo_greetings, require_root, tcp_echo_backend, ServerHandle, Topology, VIP4};

const ECHO_PORT: u16 = 7;
const TABLE_SIZE: u32 = 4099;
/// Streams open through the whole test.
const STREAMS: usize = 9;
/// How often each stream sends.
const INTERVAL: Duration = Duration::from_millis(50);
/// The bound on a stall.
const MAX_GAP: Duration = Duration::from_secs(1);
/// Backends in the first config; one more is added by the reload.
const FIRST_BACKENDS: usize = 3;

fn vip() -> SocketAddr {
    SocketAddr::new(VIP4.into(), ECHO_PORT)
}

fn config_text(instance: &str, scratch: &Scratch, backends: usize) -> String {
    let mut text = format!(
        "shutdown_delay = \"0s\"\ninstance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\n\
         conntrack_entries = 65536\nkeep_dataplane = true\n\n[admin]\nsocket = \"{}\"\n\n\
         [management]\naddress = \"127.0.0.1:9000\"\n\n[encap]\n\
         source_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"echo4\"\naddress = \"{}\"\ntable_size = {TABLE_SIZE}\n",
        Daemon::socket_in(scratch.path()).display(),
        vip(),
    );
    text.push_str(&backend_tables(backends));
    text
}

/// Sets the flag when dropped, also while a failing step unwinds (the streams then stop).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn streams_keep_flowing_through_a_restart_a_drain_and_a_new_backend() {
    require_root();
    // The backend the reload adds exists, with its servers, from the start.
    let topo = Topology::build("slc1", FIRST_BACKENDS + 1).expect("build topology");
    let scratch = Scratch::create("slc1").expect("scratch directory");
    let instance = "test-slc1";
    let mut daemon = Daemon::start(
        topo.gateway(),
        scratch.path(),
        instance,
        &config_text(instance, &scratch, FIRST_BACKENDS),
    )
    .expect("start sluice run");
    let mut decaps = Vec::new();
    let mut servers: Vec<ServerHandle> = Vec::new();
    for (i, ns) in topo.backends().iter().enumerate() {
        let decap = topo.attach_decap(i, &[VIP4.into()]);
        decaps.push(decap);
        servers.push(
            tcp_echo_backend(ns, &format!("backend-{i}"), ECHO_PORT)
                .unwrap_or_else(|err| panic!("echo server on backend {i}: {err:#}")),
        );
    }
    let streams: Vec<Stream> = (0..STREAMS)
        .map(|_| Stream::open(topo.client(), vip()).expect("open a stream"))
        .collect();
    let drained = streams[0].backend;
    let added = FIRST_BACKENDS;

    let stop = AtomicBool::new(false);
    let tallies: Vec<Tally> = thread::scope(|s| {
        let talkers: Vec<_> = streams
            .into_iter()
            .map(|st| s.spawn(|| st.talk(INTERVAL, &stop)))
            .collect();
        {
            let _stop = StopOnDrop(&stop);
            let cli_ok = |daemon: &Daemon, args: &[&str]| {
                let out = daemon.cli(args).expect("run the CLI");
                assert!(
                    out.status.success(),
                    "sluice {args:?}: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    daemon.log_text()
                );
            };
            thread::sleep(Duration::from_millis(500));

            let status = daemon.stop().expect("stop");
            assert!(status.success(), "exit {status}\n{}", daemon.log_text());
            assert!(pin_dir(instance).exists(), "keep_dataplane leaves the pins");
            // No daemon at all for a while: the kernel forwards alone.
            thread::sleep(Duration::from_millis(500));
            daemon.restart(topo.gateway()).expect("restart");
            let status = daemon.cli_json(&["status"]).expect("status");
            assert_eq!(status["adopted"], true, "{status}");
            thread::sleep(Duration::from_millis(300));

            cli_ok(
                &daemon,
                &["drain", "echo4", &backend_addr4(drained).to_string()],
            );
            thread::sleep(Duration::from_millis(300));

            std::fs::write(
                daemon.config_path(),
                config_text(instance, &scratch, FIRST_BACKENDS + 1),
            )
            .expect("write the config");
            cli_ok(&daemon, &["reload"]);
            let tally = echo_greetings(topo.client(), vip(), 40).expect("new connections");
            println!("40 new connections after the reload: {tally:?}");
            assert!(
                tally.contains_key(&added),
                "the added backend takes new flows"
            );
            assert!(
                !tally.contains_key(&drained),
                "the drained backend takes none"
            );
            thread::sleep(Duration::from_millis(500));
        }
        talkers
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for t in &tallies {
        println!(
            "stream {} on backend-{}: {} echoes, longest gap {:?}",
            t.local, t.backend, t.echoes, t.longest_gap
        );
    }
    let log = daemon.log_text();
    for t in &tallies {
        assert_eq!(
            t.error, None,
            "stream {} on backend-{}\n{log}",
            t.local, t.backend
        );
        assert!(
            t.longest_gap < MAX_GAP,
            "stream {} on backend-{} waited {:?} for an echo",
            t.local,
            t.backend,
            t.longest_gap
        );
        // Alive through every step, not only at the start.
        assert!(t.echoes >= 20, "{t:?}");
    }
    assert!(
        tallies.iter().any(|t| t.backend == drained),
        "a stream on the drained backend"
    );
}
