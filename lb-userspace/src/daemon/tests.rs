//! The daemon's lock-free readers against a real (unattached) dataplane: probes, `status` and
//! the phase must answer while the daemon's lock is held and a conntrack walk is in progress.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use hyper::{Method, StatusCode};
use lb_common::{FlowEntry, FlowKey, ProxyFlow};

use super::{
    core::{Core, Inner},
    flow_census::{FlowCensus, FlowSource},
};
use crate::{
    config::Config,
    dataplane::{now_ns, Dataplane, DataplaneError, Options},
    health::Checker,
    management::route,
    shutdown::NodeState,
};

const CONFIG: &str = r#"
interfaces = ["lo"]
[encap]
source_v4 = "198.19.255.0/24"
[[vip]]
name = "web4"
address = "198.19.0.10:80"
[[vip.backend]]
address = "198.18.10.2"
[[vip.backend]]
address = "198.18.11.2"
"#;

/// Conntrack as a list; `gate`, when set, holds every walk until the test sends on it.
#[derive(Default)]
struct FakeConntrack {
    entries: Mutex<Vec<(FlowKey, FlowEntry)>>,
    gate: Mutex<Option<mpsc::Receiver<()>>>,
    walking: Mutex<Option<mpsc::Sender<()>>>,
}

impl FlowSource for Arc<FakeConntrack> {
    fn for_each(&self, f: &mut dyn FnMut(&FlowKey, &FlowEntry)) -> Result<usize, DataplaneError> {
        let started = self.walking.lock().unwrap().take();
        if let Some(started) = started {
            started.send(()).unwrap();
        }
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.recv().unwrap();
        }
        let entries = self.entries.lock().unwrap().clone();
        for (k, e) in &entries {
            f(k, e);
        }
        Ok(entries.len())
    }

    fn proxy_flow(&self, _: &FlowKey, _: &FlowEntry) -> Option<ProxyFlow> {
        None
    }

    fn remove(&self, keys: &[FlowKey], _: &[FlowKey]) -> Result<usize, DataplaneError> {
        let mut entries = self.entries.lock().unwrap();
        let before = entries.len();
        entries.retain(|(k, _)| !keys.contains(k));
        Ok(before - entries.len())
    }
}

fn flow(port: u16, backend: u32, idle: Duration) -> (FlowKey, FlowEntry) {
    let now = now_ns();
    let key = FlowKey {
        sport_be: port.to_be(),
        ..FlowKey::default()
    };
    let idle = u64::try_from(idle.as_nanos()).unwrap();
    let entry = FlowEntry {
        backend,
        created_ns: now.saturating_sub(idle),
        last_seen_ns: now.saturating_sub(idle),
        ..FlowEntry::default()
    };
    (key, entry)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A Core over a freshly loaded, unattached dataplane, with `fake` as its conntrack.
fn core(runtime: &tokio::runtime::Runtime, fake: &Arc<FakeConntrack>) -> Arc<Core> {
    let _in = runtime.enter();
    let config = Config::parse(CONFIG).expect("test config");
    let mut dp = Dataplane::load(&Options::unpinned(1024, lb_common::DEFAULT_RING_SLOTS))
        .expect("loading sluice_xdp (needs root)");
    dp.apply(&config).expect("writing the maps");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let inner = Inner {
        dp,
        config,
        metas: HashMap::new(),
        checker: Checker::new(tx),
        pools: HashMap::new(),
        edge_tls: HashMap::new(),
        upstreams: HashMap::new(),
        edge_stats: HashMap::new(),
    };
    let mut core = Core::new(PathBuf::from("test.toml"), inner, Duration::from_mins(5))
        .map_err(|(e, _)| e)
        .expect("core");
    core.census = FlowCensus::new(Box::new(Arc::clone(fake)), Duration::from_mins(5));
    core.start().expect("start");
    Arc::new(core)
}

/// A started core over a fake conntrack on a runtime of its own; `None`, and the test skips,
/// without root, which loading `sluice_xdp` needs.
fn rooted_core() -> Option<(tokio::runtime::Runtime, Arc<FakeConntrack>, Arc<Core>)> {
    if !is_root() {
        eprintln!("skipped: loading sluice_xdp needs root");
        return None;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = Arc::new(FakeConntrack::default());
    let core = core(&runtime, &fake);
    Some((runtime, fake, core))
}

#[test]
fn probes_status_and_the_phase_answer_while_the_lock_is_held_and_a_walk_runs() {
    let Some((_runtime, fake, core)) = rooted_core() else {
        return;
    };

    // A walk that does not end until the test says so.
    let (release, gate) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    *fake.gate.lock().unwrap() = Some(gate);
    *fake.walking.lock().unwrap() = Some(started_tx);
    let walker = {
        let core = Arc::clone(&core);
        std::thread::spawn(move || core.census.walk().map(|c| c.entries))
    };
    started.recv().unwrap();

    // Everything below runs on another thread while this one holds the daemon's lock: a
    // reader that needed the lock or the walk would never answer, and the test fails on the
    // timeout instead of hanging.
    let guard = core.lock();
    let (answers_tx, answers) = mpsc::channel();
    {
        let core = Arc::clone(&core);
        std::thread::spawn(move || {
            let ready = route(&Method::GET, "/health/ready", &*core);
            let status = core.status();
            core.set_phase(NodeState::Draining);
            let draining = route(&Method::GET, "/health/ready", &*core);
            let live = route(&Method::GET, "/health/live", &*core);
            answers_tx
                .send((ready.status, status.ready, draining.status, live.status))
                .unwrap();
        });
    }
    let got = answers
        .recv_timeout(Duration::from_secs(20))
        .expect("probes, status and set_phase answered while the lock was held and a walk ran");
    assert_eq!(
        got,
        (
            StatusCode::OK,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK
        )
    );
    drop(guard);
    release.send(()).unwrap();
    assert_eq!(walker.join().unwrap().unwrap(), 0);
    // The kernel's node map followed the phase.
    assert_eq!(core.lock().dp.node_state().unwrap(), NodeState::Draining);
}

#[test]
fn backends_count_live_flows_and_forget_idle_ones() {
    let Some((_runtime, fake, core)) = rooted_core() else {
        return;
    };
    let id = |addr: &str| {
        core.lock()
            .dp
            .backend_id("web4", addr.parse().unwrap())
            .unwrap()
    };
    let (b0, b1) = (id("198.18.10.2"), id("198.18.11.2"));
    let flows = |core: &Core| -> Vec<(String, u64)> {
        core.backend_rows()
            .unwrap()
            .into_iter()
            .map(|r| (r.address.to_string(), r.flows))
            .collect()
    };
    assert_eq!(
        flows(&core),
        [("198.18.10.2".into(), 0), ("198.18.11.2".into(), 0)]
    );

    let fresh = Duration::from_secs(1);
    let idle = Duration::from_secs(301);
    *fake.entries.lock().unwrap() = vec![
        flow(1, b0, fresh),
        flow(2, b1, fresh),
        flow(3, b1, fresh),
        flow(4, b1, idle),
    ];
    // The idle flow is neither counted nor kept.
    assert_eq!(
        flows(&core),
        [("198.18.10.2".into(), 1), ("198.18.11.2".into(), 2)]
    );
    assert_eq!(fake.entries.lock().unwrap().len(), 3);
    let census = core.census.latest();
    assert_eq!((census.entries, census.expired), (3, 1));

    // Every flow goes idle: the next walk removes them all.
    for (_, e) in fake.entries.lock().unwrap().iter_mut() {
        e.last_seen_ns = now_ns().saturating_sub(u64::try_from(idle.as_nanos()).unwrap());
    }
    assert_eq!(
        flows(&core),
        [("198.18.10.2".into(), 0), ("198.18.11.2".into(), 0)]
    );
    assert!(fake.entries.lock().unwrap().is_empty());
}

/// `/metrics` reads one snapshot: its VIP summary (backends up) and its backend rows come
/// from the same moment, even while drains change them. (When the snapshot took the lock once
/// per part and the summary from the published copy, a drain landing in between made them
/// disagree within a few hundred snapshots.)
#[test]
fn a_snapshot_is_one_moment_while_drains_change_it() {
    use crate::{admin::protocol::BackendState, observe::Observe};
    if !is_root() {
        eprintln!("skipped: loading sluice_xdp needs root");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = Arc::new(FakeConntrack::default());
    let core = core(&runtime, &fake);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toggler = {
        let (core, stop) = (Arc::clone(&core), Arc::clone(&stop));
        std::thread::spawn(move || {
            let backend = "198.18.10.2".parse().unwrap();
            let mut drained = false;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                drained = !drained;
                core.set_drained("web4", backend, drained).unwrap();
                // The lock is not fair: a loop that takes it again at once can starve the
                // snapshots for minutes on a busy machine. A pause still lands drains between
                // a snapshot's parts thousands of times over the run.
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
        })
    };
    let mut disagreements = 0;
    for _ in 0..2000 {
        let s = core.snapshot().unwrap();
        let up_in_rows = s
            .backends
            .iter()
            .filter(|b| b.vip == "web4" && b.state == BackendState::Up)
            .count();
        if s.status.vips[0].backends_up != up_in_rows {
            disagreements += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    toggler.join().unwrap();
    assert_eq!(disagreements, 0, "snapshots whose parts disagree, of 2000");
}

/// Every log line of a reload carries its generation, so two reloads' lines never mix.
#[test]
fn log_lines_of_a_reload_carry_its_generation() {
    use tracing::level_filters::LevelFilter;
    if !is_root() {
        eprintln!("skipped: loading sluice_xdp needs root");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = Arc::new(FakeConntrack::default());
    let core = core(&runtime, &fake);
    // The test's config path does not exist: each reload is rejected, and says so.
    let (results, log) = crate::test_log::captured(LevelFilter::INFO, || {
        (core.reload().is_err(), core.reload().is_err())
    });
    assert_eq!(results, (true, true));
    let rejected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reload rejected"))
        .collect();
    assert_eq!(rejected.len(), 2, "{log}");
    assert!(rejected[0].contains(" reload{generation=1}: "), "{log}");
    assert!(rejected[1].contains(" reload{generation=2}: "), "{log}");
}
