//! The daemon end to end: `sluice run` in the gateway namespace, driven with the real CLI over
//! its admin socket and read through its management port, with real TCP through the gateway
//! to backends that run `sluice_decap`. Needs root.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use lb_userspace::dataplane::Decap;
use sluice_tests::daemon::{pin_dir, Daemon, Scrape, Scratch};
use sluice_tests::gateway_config::backend_tables;
use sluice_tests::topology::backend_addr4;
use sluice_tests::{
    echo_greetings, http_backend, http_get_many, require_root, tcp_echo_backend, EchoConn, NetNs,
    ServerHandle, Topology, VIP4,
};

const HTTP_PORT: u16 = 80;
const ECHO_PORT: u16 = 7;
const TABLE_SIZE: u32 = 4099;
const MANAGEMENT: &str = "127.0.0.1:9000";
/// Generous bound for anything the daemon does asynchronously (health rounds, reloads).
const SETTLE: Duration = Duration::from_secs(10);

fn web() -> SocketAddr {
    SocketAddr::new(VIP4.into(), HTTP_PORT)
}

fn echo() -> SocketAddr {
    SocketAddr::new(VIP4.into(), ECHO_PORT)
}

/// What a test config may vary.
#[derive(Clone)]
struct Spec {
    backends: usize,
    keep_dataplane: bool,
    /// An HTTP health check on `web4`'s backends.
    health: bool,
    /// Text that replaces the whole config (a broken one, for reload tests).
    raw: Option<String>,
}

impl Spec {
    fn new(backends: usize) -> Self {
        Self {
            backends,
            keep_dataplane: false,
            health: false,
            raw: None,
        }
    }
}

fn config_text(instance: &str, scratch: &Scratch, spec: &Spec) -> String {
    if let Some(raw) = &spec.raw {
        return raw.clone();
    }
    let mut text = format!(
        "instance = \"{instance}\"\ninterfaces = [\"gwc\"]\nconntrack_entries = 65536\n\
         keep_dataplane = {}\n\n[admin]\nsocket = \"{}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n",
        spec.keep_dataplane,
        Daemon::socket_in(scratch.path()).display()
    );
    for (name, port) in [("web4", HTTP_PORT), ("echo4", ECHO_PORT)] {
        let _ = write!(
            text,
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{VIP4}:{port}\"\ntable_size = {TABLE_SIZE}\n"
        );
        if spec.health && name == "web4" {
            text.push_str(
                "[vip.health_check]\nkind = \"http\"\npath = \"/\"\ninterval = \"200ms\"\n\
                 timeout = \"150ms\"\nrise = 2\nfall = 2\n",
            );
        }
        text.push_str(&backend_tables(spec.backends));
    }
    text
}

/// The topology, a decap and servers on every backend, and the daemon on the gateway. Fields
/// drop in order: daemon, decaps and servers before the namespaces.
struct Lab {
    daemon: Daemon,
    decaps: Vec<Decap>,
    http: BTreeMap<usize, ServerHandle>,
    echo: Vec<ServerHandle>,
    topo: Topology,
    scratch: Scratch,
    instance: String,
}

impl Lab {
    fn start(prefix: &str, spec: &Spec) -> Self {
        let topo = Topology::build(prefix, spec.backends).expect("build topology");
        let scratch = Scratch::create(prefix).expect("scratch directory");
        let instance = format!("test-{prefix}");
        let text = config_text(&instance, &scratch, spec);
        let daemon = Daemon::start(topo.gateway(), scratch.path(), &instance, &text)
            .expect("start sluice run");
        let mut lab = Self {
            daemon,
            decaps: Vec::new(),
            http: BTreeMap::new(),
            echo: Vec::new(),
            topo,
            scratch,
            instance,
        };
        for i in 0..spec.backends {
            lab.start_backend(i);
        }
        lab
    }

    fn start_backend(&mut self, i: usize) {
        let ns = self.topo.backend(i);
        let decap = self.topo.attach_decap(i, &[VIP4.into()]);
        self.decaps.push(decap);
        let echo = tcp_echo_backend(ns, &format!("backend-{i}"), ECHO_PORT)
            .unwrap_or_else(|err| panic!("echo server on backend {i}: {err:#}"));
        self.echo.push(echo);
        self.start_http(i);
    }

    fn start_http(&mut self, i: usize) {
        let server = http_backend(self.topo.backend(i), &format!("backend-{i}"), HTTP_PORT)
            .unwrap_or_else(|err| panic!("http server on backend {i}: {err:#}"));
        self.http.insert(i, server);
    }

    fn client(&self) -> &NetNs {
        self.topo.client()
    }

    fn write_config(&self, spec: &Spec) {
        let text = config_text(&self.instance, &self.scratch, spec);
        std::fs::write(self.daemon.config_path(), text).expect("write config");
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        self.daemon
            .cli_ok(args)
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        self.daemon
            .cli_json(args)
            .unwrap_or_else(|err| panic!("{err:#}\n{}", self.daemon.log_text()))
    }

    /// The `sluice backends --json` row of (vip, backend i).
    fn backend_row(&self, vip: &str, i: usize) -> serde_json::Value {
        self.daemon
            .backend_row(vip, backend_addr4(i).into())
            .unwrap_or_else(|err| panic!("{err:#}\n{}", self.daemon.log_text()))
    }

    fn wait_for_state(&self, vip: &str, i: usize, state: &str) {
        wait(&format!("{vip} backend {i} {state}"), || {
            Ok(self.backend_row(vip, i)["state"] == state)
        })
        .unwrap_or_else(|err| panic!("{err:#}\n{}", self.daemon.log_text()));
    }

    fn management(&self, path: &str) -> (u16, String) {
        self.daemon
            .management_get(self.topo.gateway(), MANAGEMENT.parse().expect("addr"), path)
            .unwrap_or_else(|err| panic!("GET {path}: {err:#}"))
    }
}

/// Polls `f` until it returns true, for at most [`SETTLE`].
fn wait(what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {SETTLE:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `sluice flows --json` output has the flow from `client` on `backend`.
fn lists_flow(flows: &serde_json::Value, client: &str, backend: &str) -> bool {
    flows
        .as_array()
        .expect("flows is a list")
        .iter()
        .any(|f| f["client"] == client && f["backend"] == backend)
}

fn greetings(lab: &Lab, count: usize) -> BTreeMap<usize, usize> {
    echo_greetings(lab.client(), echo(), count).expect("new echo connections")
}

#[test]
fn drain_keeps_established_flows_and_undrain_restores() {
    require_root();
    let lab = Lab::start("sld1", &Spec::new(3));
    let mut conn = EchoConn::open(lab.client(), echo()).expect("open echo connection");
    let b = conn.backend;
    let addr = backend_addr4(b).to_string();

    let out = lab.cli_ok(&["drain", "echo4", &addr]);
    assert!(out.contains("drain"), "drain said: {out}");
    let row = lab.backend_row("echo4", b);
    assert_eq!(row["state"], "draining", "{row}");
    assert!(
        row["flows"].as_u64().unwrap_or(0) >= 1,
        "drained backend shows its live flow: {row}"
    );

    let tally = greetings(&lab, 45);
    assert_eq!(
        tally.get(&b),
        None,
        "new connections reached the drained backend: {tally:?}"
    );
    assert_eq!(tally.values().sum::<usize>(), 45);
    conn.exchange()
        .expect("the connection opened before the drain keeps working");

    let flows = lab.json(&["flows", "--vip", "echo4"]);
    let local = conn.local.to_string();
    assert!(
        lists_flow(&flows, &local, &addr),
        "sluice flows lists {local} on {addr}: {flows}"
    );

    lab.cli_ok(&["undrain", "echo4", &addr]);
    assert_eq!(lab.backend_row("echo4", b)["state"], "up");
    let tally = greetings(&lab, 45);
    assert!(
        tally.get(&b).copied().unwrap_or(0) > 0,
        "undrained backend gets new flows: {tally:?}"
    );
    conn.exchange().expect("still working after undrain");

    // Operator mistakes get one clear line and a non-zero exit.
    let out = lab.daemon.cli(&["drain", "nope", &addr]).expect("cli");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{out:?}"
    );
    let human = lab.cli_ok(&["backends"]);
    assert!(human.contains("echo4") && human.contains(&addr), "{human}");
}

#[test]
fn health_checks_take_a_stopped_backend_out_and_bring_it_back() {
    require_root();
    let spec = Spec {
        health: true,
        ..Spec::new(3)
    };
    let mut lab = Lab::start("sld2", &spec);
    for i in 0..3 {
        lab.wait_for_state("web4", i, "up");
    }
    assert_eq!(lab.management("/health/ready").0, 200);

    drop(lab.http.remove(&1));
    lab.wait_for_state("web4", 1, "down");
    let row = lab.backend_row("web4", 1);
    assert_eq!(row["health"], "unhealthy", "{row}");
    assert!(
        row["health_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{row}"
    );
    let b1 = backend_addr4(1).to_string();
    let logged = lab.daemon.log_events().into_iter().any(|e| {
        e["message"] == "backend unhealthy"
            && e["vip"] == "web4"
            && e["backend"] == b1.as_str()
            && e["reason"].as_str().is_some_and(|r| r.contains("refused"))
    });
    assert!(
        logged,
        "the transition is logged with its reason:\n{}",
        lab.daemon.log_text()
    );
    let tally = http_get_many(lab.client(), web(), 60, 8).expect("requests while one is down");
    assert_eq!(tally.get("backend-1"), None, "{tally:?}");
    assert_eq!(tally.values().sum::<usize>(), 60);

    lab.start_http(1);
    lab.wait_for_state("web4", 1, "up");
    let tally = http_get_many(lab.client(), web(), 60, 8).expect("requests after recovery");
    assert!(
        tally.get("backend-1").copied().unwrap_or(0) > 0,
        "{tally:?}"
    );

    // Every backend of a VIP down: not ready.
    lab.http.clear();
    for i in 0..3 {
        lab.wait_for_state("web4", i, "down");
    }
    let (code, body) = lab.management("/health/ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"DOWN\""), "{body}");
    assert_eq!(lab.management("/health/live").0, 200);
    for i in 0..3 {
        lab.start_http(i);
    }
    wait("ready again", || {
        Ok(lab.management("/health/ready").0 == 200)
    })
    .expect("ready");
}

#[test]
fn reload_is_all_or_nothing() {
    require_root();
    let mut spec = Spec::new(3);
    let mut lab = Lab::start("sld3", &spec);
    let mut conn = EchoConn::open(lab.client(), echo()).expect("echo connection");
    let before = lab.json(&["backends"]);

    // A broken config on SIGHUP: rejected, nothing changes, the reason is reported.
    let good = config_text(&lab.instance, &lab.scratch, &spec);
    let broken = good.replace(&format!("table_size = {TABLE_SIZE}"), "table_size = 4098");
    lab.write_config(&Spec {
        raw: Some(broken),
        ..spec.clone()
    });
    lab.daemon.signal(libc::SIGHUP).expect("SIGHUP");
    wait("the failed reload to be counted", || {
        Ok(lab.json(&["status"])["reloads_failed"] == 1)
    })
    .expect("reload counted");
    let status = lab.json(&["status"]);
    let reason = status["last_reload_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("table_size"),
        "reason names the field: {status}"
    );
    assert_eq!(
        lab.json(&["backends"]).as_array().map(Vec::len),
        before.as_array().map(Vec::len)
    );
    let tally = http_get_many(lab.client(), web(), 30, 8).expect("traffic after a rejected reload");
    assert_eq!(tally.values().sum::<usize>(), 30);

    // The same through the CLI: non-zero exit, the reason on stderr.
    let out = lab.daemon.cli(&["reload"]).expect("cli");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("table_size"),
        "{out:?}"
    );

    // A valid config whose tables do not fit the maps the daemon created: rejected before
    // any write, with the reason.
    let too_big = good.replacen(
        &format!("table_size = {TABLE_SIZE}"),
        "table_size = 1000003",
        1,
    );
    lab.write_config(&Spec {
        raw: Some(too_big),
        ..spec.clone()
    });
    let out = lab.daemon.cli(&["reload"]).expect("cli");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ring map is full"),
        "{out:?}"
    );
    assert_eq!(lab.json(&["status"])["reloads_failed"], 3);
    conn.exchange()
        .expect("established connection untouched by rejected reloads");

    // A good config that adds a backend: new flows use it, the established one stays.
    let i = lab.topo.add_backend().expect("add backend");
    lab.start_backend(i);
    spec.backends = 4;
    lab.write_config(&spec);
    let out = lab.cli_ok(&["reload"]);
    assert!(out.contains("reload"), "{out}");
    assert_eq!(lab.backend_row("echo4", 3)["state"], "up");
    let tally = greetings(&lab, 60);
    assert!(
        tally.get(&3).copied().unwrap_or(0) > 0,
        "new backend gets new flows: {tally:?}"
    );
    conn.exchange()
        .expect("established connection survives the reload");
    assert_eq!(lab.json(&["status"])["reloads_ok"], 1);
}

#[test]
fn restart_with_keep_dataplane_keeps_connections() {
    require_root();
    let spec = Spec {
        keep_dataplane: true,
        ..Spec::new(3)
    };
    let mut lab = Lab::start("sld4", &spec);
    let mut conns: Vec<EchoConn> = (0..6)
        .map(|_| EchoConn::open(lab.client(), echo()).expect("echo connection"))
        .collect();

    let status = lab.daemon.stop().expect("stop");
    assert!(status.success(), "exit {status}\n{}", lab.daemon.log_text());
    assert!(pin_dir(&lab.instance).exists(), "pins kept");
    for c in &mut conns {
        c.exchange().expect("forwarding continues without a daemon");
    }

    lab.daemon.restart(lab.topo.gateway()).expect("restart");
    assert_eq!(lab.json(&["status"])["adopted"], true);
    let flows = lab.json(&["flows", "--vip", "echo4", "--limit", "1000"]);
    for c in &mut conns {
        let local = c.local.to_string();
        let addr = backend_addr4(c.backend).to_string();
        assert!(
            lists_flow(&flows, &local, &addr),
            "the new daemon reports {local} on {addr}: {flows}"
        );
        c.exchange().expect("connection works after the restart");
    }
    let tally = http_get_many(lab.client(), web(), 30, 8).expect("new connections");
    assert_eq!(tally.values().sum::<usize>(), 30);

    // Without keep_dataplane, stopping detaches and unpins.
    lab.write_config(&Spec::new(3));
    lab.cli_ok(&["reload"]);
    let status = lab.daemon.stop().expect("stop");
    assert!(status.success());
    assert!(!pin_dir(&lab.instance).exists(), "pins removed");
    let link = lab
        .topo
        .gateway()
        .ip(&["link", "show", "gwc"])
        .expect("ip link");
    assert!(!link.contains("xdp"), "XDP detached: {link}");
}

#[test]
fn a_failed_start_leaves_an_adopted_dataplane_forwarding() {
    require_root();
    let spec = Spec {
        keep_dataplane: true,
        ..Spec::new(2)
    };
    let mut lab = Lab::start("sld9", &spec);
    let mut conns: Vec<EchoConn> = (0..4)
        .map(|_| EchoConn::open(lab.client(), echo()).expect("echo connection"))
        .collect();
    let status = lab.daemon.stop().expect("stop");
    assert!(status.success(), "exit {status}\n{}", lab.daemon.log_text());
    let pinned = pins(&lab.instance);
    assert!(!pinned.is_empty(), "pins kept");

    // The next daemon adopts the pins, then fails at its admin socket; its config says not to
    // keep the dataplane, but what it adopted was forwarding before it came.
    lab.write_config(&Spec::new(2));
    let socket = Daemon::socket_in(lab.scratch.path());
    std::fs::write(&socket, "not a socket").expect("block the admin socket path");
    let err = lab
        .daemon
        .restart(lab.topo.gateway())
        .expect_err("the start must fail at the admin socket");
    assert!(format!("{err:#}").contains("not a socket"), "{err:#}");
    assert_eq!(
        pins(&lab.instance).len(),
        pinned.len(),
        "pins left in place"
    );
    assert!(xdp_prog_id(&lab).is_some(), "sluice_xdp still attached");
    for c in &mut conns {
        c.exchange().expect("established flows keep forwarding");
    }
    let tally = greetings(&lab, 20);
    assert_eq!(
        tally.values().sum::<usize>(),
        20,
        "new flows too: {tally:?}"
    );

    std::fs::remove_file(&socket).expect("unblock");
    lab.daemon.restart(lab.topo.gateway()).expect("restart");
    assert_eq!(lab.json(&["status"])["adopted"], true);
}

#[test]
#[expect(
    clippy::float_cmp,
    reason = "counter values are small integers, exact in an f64"
)]
fn metrics_count_the_traffic_sent() {
    require_root();
    let lab = Lab::start("sld5", &Spec::new(2));
    let tally = http_get_many(lab.client(), web(), 50, 8).expect("requests");
    assert_eq!(tally.values().sum::<usize>(), 50);

    let (code, text) = lab.management("/metrics");
    assert_eq!(code, 200);
    let scrape = Scrape::parse(&text).expect("the exposition parses");
    let value = |name: &str, labels: &[(&str, &str)]| scrape.value(name, labels);
    assert_eq!(
        value("sluice_vip_new_flows_total", &[("vip", "web4")]),
        50.0,
        "{text}"
    );
    assert_eq!(
        value("sluice_backend_new_flows_total", &[("vip", "web4")]),
        50.0,
        "{text}"
    );
    let answered0 = tally.get("backend-0").copied().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let answered0 = answered0 as f64;
    let b0 = backend_addr4(0).to_string();
    assert_eq!(
        value(
            "sluice_backend_new_flows_total",
            &[("vip", "web4"), ("backend", &b0)]
        ),
        answered0,
        "{text}"
    );
    assert!(
        value("sluice_vip_packets_total", &[("vip", "web4")]) >= 150.0,
        "{text}"
    );
    assert!(value("sluice_conntrack_hits_total", &[]) > 0.0, "{text}");
    assert_eq!(
        value("sluice_backend_up", &[("vip", "web4")]),
        2.0,
        "{text}"
    );
    assert_eq!(
        value("sluice_reloads_total", &[("outcome", "failure")]),
        0.0,
        "{text}"
    );
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/health/started",
    ] {
        let (code, body) = lab.management(path);
        assert_eq!(code, 200, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
        assert_eq!(v["status"], "UP", "{path}: {body}");
        assert!(v["checks"].is_array(), "{path}: {body}");
    }
    assert_eq!(lab.management("/nope").0, 404);
}

/// The files pinned for `instance`, each with its inode: a file unpinned and pinned again (or
/// replaced) gets a new one.
fn pins(instance: &str) -> BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir(pin_dir(instance))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| {
                    let ino = e.metadata().ok()?.ino();
                    Some((e.file_name().to_string_lossy().into_owned(), ino))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The id of the XDP program attached to `gwc` in the gateway, from `ip link`.
fn xdp_prog_id(lab: &Lab) -> Option<u64> {
    let link = lab
        .topo
        .gateway()
        .ip(&["-d", "link", "show", "gwc"])
        .expect("ip link");
    let at = link.find("prog/xdp id ")? + "prog/xdp id ".len();
    link[at..].split_whitespace().next()?.parse().ok()
}

#[test]
fn a_second_daemon_of_the_same_instance_leaves_the_first_in_charge() {
    require_root();
    let lab = Lab::start("sld6", &Spec::new(2));
    let first = lab.daemon.pid().expect("first daemon's pid");
    let pinned = pins(&lab.instance);
    assert!(!pinned.is_empty(), "the first daemon pinned its dataplane");
    let program = xdp_prog_id(&lab);
    assert!(program.is_some(), "sluice_xdp attached to gwc");

    // The same instance and admin socket, another management port: nothing but the instance
    // itself stands in its way.
    let second = lab.scratch.path().join("second.toml");
    let text = config_text(&lab.instance, &lab.scratch, &Spec::new(2))
        .replace(MANAGEMENT, "127.0.0.1:9001");
    std::fs::write(&second, format!("shutdown_delay = \"0s\"\n{text}")).expect("write");
    let bin = sluice_tests::daemon::sluice_bin().expect("binary");
    let out = lab
        .topo
        .gateway()
        .exec(|| {
            let child = std::process::Command::new(&bin)
                .args(["run", "-c"])
                .arg(&second)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start the second daemon");
            let mut guard = sluice_tests::ChildGuard::new(child);
            let deadline = Instant::now() + SETTLE;
            while guard
                .child_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_none())
            {
                assert!(Instant::now() < deadline, "the second daemon kept running");
                thread::sleep(Duration::from_millis(20));
            }
            guard
                .into_inner()
                .expect("child")
                .wait_with_output()
                .expect("output")
        })
        .expect("run in the gateway");
    assert!(
        !out.status.success(),
        "the second daemon must fail: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line:\n{err}");
    assert!(
        err.contains(&format!("pid {first}")) && err.contains(&lab.instance),
        "names the instance and the first daemon's pid {first}:\n{err}"
    );

    // The first daemon's dataplane is untouched, and it is still in charge of it.
    assert_eq!(pins(&lab.instance), pinned, "pins untouched");
    assert_eq!(xdp_prog_id(&lab), program, "program untouched");
    let status = lab.json(&["status"]);
    assert_eq!(status["pid"], first, "{status}");
    let tally = greetings(&lab, 20);
    assert_eq!(
        tally.values().sum::<usize>(),
        20,
        "still forwarding: {tally:?}"
    );
    lab.write_config(&Spec::new(1));
    lab.cli_ok(&["reload"]);
    let tally = greetings(&lab, 30);
    assert_eq!(
        tally.get(&1),
        None,
        "the backend the reload removed gets no new flow: {tally:?}"
    );
    assert_eq!(tally.values().sum::<usize>(), 30, "{tally:?}");
}

#[test]
fn cli_without_a_daemon_says_so_in_one_line() {
    let out = std::process::Command::new(sluice_tests::daemon::sluice_bin().expect("binary"))
        .args(["status", "--socket", "/tmp/sluice-test-none/admin.sock"])
        .output()
        .expect("run sluice");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no sluice daemon is running"), "{err}");
}

#[test]
fn check_accepts_the_shipped_example_and_rejects_broken_files() {
    let bin = sluice_tests::daemon::sluice_bin().expect("binary");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sluice.toml");
    let out = std::process::Command::new(&bin)
        .args(["check", "-c", example])
        .output()
        .expect("run sluice check");
    // The example is valid; only the certificate files it names under /etc/sluice are not on
    // this machine, and `check` reads them as `run` would.
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(!err.is_empty());
        for line in err.lines() {
            assert!(
                line.contains(": edge[0].tls.") && line.contains(": cannot read: "),
                "only the example's certificate files may be missing:\n{err}"
            );
        }
    }

    let scratch = Scratch::create("check").expect("scratch");
    let broken = scratch.path().join("broken.toml");
    std::fs::write(
        &broken,
        "interfaces = [\"eth0\"]\n[encap]\nsource_v4 = \"198.19.255.0/33\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\
         [[vip]]\nname = \"web\"\naddress = \"198.19.0.10:0\"\ntable_size = 65536\n",
    )
    .expect("write");
    let out = std::process::Command::new(&bin)
        .args(["check", "-c"])
        .arg(&broken)
        .output()
        .expect("run sluice check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let path = broken.display().to_string();
    for (line, field) in [
        (3, "encap.source_v4"),
        (7, "vip[0].address"),
        (8, "vip[0].table_size"),
    ] {
        assert!(
            err.contains(&format!("{path}:{line}:")) && err.contains(field),
            "expected {field} at line {line}:\n{err}"
        );
    }
}

/// `sluice check -c <config>`: (success, stdout, stderr).
fn check(config: &std::path::Path) -> (bool, String, String) {
    let out = std::process::Command::new(sluice_tests::daemon::sluice_bin().expect("binary"))
        .args(["check", "-c"])
        .arg(config)
        .output()
        .expect("run sluice check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reads_every_certificate_key_and_ca_that_run_would() {
    let scratch = Scratch::create("check-tls").expect("scratch");
    let pki = sluice_tests::certs::TestPki::generate(&scratch.path().join("pki"), &["sluice.test"])
        .expect("test PKI");
    let garbage = scratch.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing_key = scratch.path().join("missing.key");
    let missing_ca = scratch.path().join("missing-ca.pem");
    let config = |certificates: &str, ca: &std::path::Path| {
        format!(
            "instance = \"chk\"\ninterfaces = [\"eth0\"]\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
             source_v6 = \"2001:db8:ffff::/96\"\n\n[[vip]]\nname = \"web\"\naddress = \"198.19.0.10:80\"\n\
             [[vip.backend]]\naddress = \"198.18.1.2\"\n\n[[edge]]\nname = \"tls\"\n\
             address = \"198.19.0.10:443\"\npool = \"web\"\n[edge.tls]\ncertificates = [{certificates}]\n\
             client_auth = \"required\"\nclient_ca = \"{}\"\n",
            ca.display()
        )
    };
    let good = format!(
        "{{ cert = \"{}\", key = \"{}\" }}",
        pki.server_cert().display(),
        pki.server_key().display()
    );
    let path = scratch.path().join("sluice.toml");
    std::fs::write(&path, config(&good, pki.ca_cert())).expect("write");
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "every file is good:\n{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");

    // A missing key, a certificate that is not PEM and a missing CA bundle: each reported with
    // its field and file, and the good first certificate not at all.
    let certificates = format!(
        "{good}, {{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}",
        pki.server_cert().display(),
        missing_key.display(),
        garbage.display(),
        pki.server_key().display()
    );
    std::fs::write(&path, config(&certificates, &missing_ca)).expect("write");
    let (ok, _, stderr) = check(&path);
    assert!(!ok, "check must refuse what run would refuse:\n{stderr}");
    for (field, file) in [
        ("edge[0].tls.certificates[1].key", &missing_key),
        ("edge[0].tls.certificates[2].cert", &garbage),
        ("edge[0].tls.client_ca", &missing_ca),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("{field}: ")))
            .unwrap_or_else(|| panic!("no line for {field}:\n{stderr}"));
        assert!(line.contains(&file.display().to_string()), "{line}");
    }
    assert!(!stderr.contains("certificates[0]"), "{stderr}");
    assert_eq!(stderr.lines().count(), 3, "one line per problem:\n{stderr}");
    // The OS error once per line.
    let line = stderr
        .lines()
        .find(|l| l.contains("client_ca"))
        .unwrap_or_default();
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
}

#[test]
fn check_warns_when_every_backend_of_a_vip_weighs_zero() {
    let scratch = Scratch::create("check-weights").expect("scratch");
    let path = scratch.path().join("sluice.toml");
    let text = |weight: u32| {
        format!(
            "instance = \"chk\"\ninterfaces = [\"eth0\"]\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
             source_v6 = \"2001:db8:ffff::/96\"\n\n[[vip]]\nname = \"web\"\naddress = \"198.19.0.10:80\"\n\
             [[vip.backend]]\naddress = \"198.18.1.2\"\nweight = {weight}\n\
             [[vip.backend]]\naddress = \"198.18.1.3\"\nweight = 0\n"
        )
    };
    std::fs::write(&path, text(0)).expect("write");
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "a warning is not an error:\n{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stderr.starts_with("warning: ")
            && stderr.contains("vip[0].backend")
            && stderr.contains("weight 0"),
        "{stderr}"
    );
    std::fs::write(&path, text(1)).expect("write");
    let (ok, _, stderr) = check(&path);
    assert!(ok && stderr.is_empty(), "{stderr}");
}

#[test]
fn options_belong_to_the_subcommands_that_honour_them() {
    let bin = sluice_tests::daemon::sluice_bin().expect("binary");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sluice.toml");
    for args in [
        &["run", "--socket", "/tmp/x.sock", "-c", example][..],
        &["check", "--json", "-c", example],
        &["check", "--log-format", "json", "-c", example],
        &["status", "--log-format", "json"],
        // Before the subcommand they were accepted for every one of them, and ignored by most.
        &["--socket", "/tmp/x.sock", "status"],
        &["--json", "check", "-c", example],
    ] {
        let out = std::process::Command::new(&bin)
            .args(args)
            .output()
            .expect("run sluice");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} must be refused:\n{err}"
        );
        assert!(err.contains("unexpected argument"), "{args:?}: {err}");
    }
    // Where they are honoured they are accepted.
    let out = std::process::Command::new(&bin)
        .args([
            "status",
            "--json",
            "--socket",
            "/tmp/sluice-test-none/admin.sock",
        ])
        .output()
        .expect("run sluice");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no sluice daemon is running"), "{err}");
}

#[test]
fn not_ready_while_no_backend_can_take_a_new_flow() {
    require_root();
    let lab = Lab::start("sld7", &Spec::new(2));
    assert_eq!(lab.management("/health/ready").0, 200);
    assert_eq!(lab.json(&["status"])["ready"], true);

    // Both of web4's backends weighted 0: up and healthy, but in no table slot.
    let text = config_text(&lab.instance, &lab.scratch, &Spec::new(2));
    let zero = text.replace(
        &format!("name = \"web4\"\naddress = \"{VIP4}:{HTTP_PORT}\"\ntable_size = {TABLE_SIZE}\n[[vip.backend]]\naddress = \"{}\"\n[[vip.backend]]\naddress = \"{}\"\n", backend_addr4(0), backend_addr4(1)),
        &format!("name = \"web4\"\naddress = \"{VIP4}:{HTTP_PORT}\"\ntable_size = {TABLE_SIZE}\n[[vip.backend]]\naddress = \"{}\"\nweight = 0\n[[vip.backend]]\naddress = \"{}\"\nweight = 0\n", backend_addr4(0), backend_addr4(1)),
    );
    assert_ne!(zero, text, "the config has web4's backends where expected");
    lab.write_config(&Spec {
        raw: Some(zero),
        ..Spec::new(2)
    });
    lab.cli_ok(&["reload"]);
    let (code, body) = lab.management("/health/ready");
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let web = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "vip web4")
        .cloned()
        .unwrap_or_default();
    assert_eq!(web["status"], "DOWN", "{body}");
    assert_eq!(web["data"]["backends_up"], 2, "{body}");
    assert_eq!(web["data"]["backends_taking_new_flows"], 0, "{body}");
    let status = lab.json(&["status"]);
    assert_eq!(status["ready"], false, "{status}");
    assert!(
        lab.daemon.log_text().contains("weight 0"),
        "the reload logs the warning:\n{}",
        lab.daemon.log_text()
    );

    // Weights back; then every backend of echo4 drained: not ready either.
    lab.write_config(&Spec::new(2));
    lab.cli_ok(&["reload"]);
    assert_eq!(lab.management("/health/ready").0, 200);
    for i in 0..2 {
        lab.cli_ok(&["drain", "echo4", &backend_addr4(i).to_string()]);
    }
    assert_eq!(lab.management("/health/ready").0, 503);
    assert_eq!(lab.json(&["status"])["ready"], false);
    lab.cli_ok(&["undrain", "echo4", &backend_addr4(0).to_string()]);
    assert_eq!(lab.management("/health/ready").0, 200);
    assert_eq!(lab.json(&["status"])["ready"], true);
}

#[test]
fn a_start_up_error_prints_its_cause_once() {
    require_root();
    let ns = NetNs::create("sldio").expect("namespace");
    let scratch = Scratch::create("sldio").expect("scratch");
    let missing = scratch.path().join("missing.pem");
    let path = scratch.path().join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            "instance = \"test-sldio\"\ninterfaces = [\"eth0\"]\n[admin]\nsocket = \"{}\"\n\
             [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\
             [[vip]]\nname = \"web\"\naddress = \"198.19.0.10:80\"\n[[vip.backend]]\naddress = \"198.18.1.2\"\n\
             weight = 0\n[[edge]]\nname = \"tls\"\naddress = \"127.0.0.1:8443\"\npool = \"web\"\n[edge.tls]\n\
             certificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            Daemon::socket_in(scratch.path()).display(),
            missing.display(),
            missing.display()
        ),
    )
    .expect("write");
    let bin = sluice_tests::daemon::sluice_bin().expect("binary");
    let out = ns
        .exec(|| {
            std::process::Command::new(&bin)
                .args(["run", "-c"])
                .arg(&path)
                .output()
                .expect("run sluice")
        })
        .expect("in the namespace");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap_or_default();
    assert!(line.contains(&missing.display().to_string()), "{err}");
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "the OS error once:\n{err}"
    );
    // The all-zero weights are logged as a warning, without colour codes: stderr is no
    // terminal here.
    assert!(err.contains("weight 0"), "{err}");
    assert!(
        !err.contains('\x1b'),
        "no ANSI escapes in a log file:\n{err:?}"
    );
}

#[test]
fn a_reload_that_changes_a_restart_only_edge_setting_names_it() {
    require_root();
    let spec = Spec::new(1);
    let mut lab = Lab::start("sld8", &spec);
    // The same daemon, restarted with one plain-HTTP edge listener.
    let base = config_text(&lab.instance, &lab.scratch, &spec);
    let edge = |timeout: &str| {
        format!(
            "{base}\n[[edge]]\nname = \"plain\"\naddress = \"0.0.0.0:8080\"\npool = \"web4\"\n\
             response_timeout = \"{timeout}\"\n"
        )
    };
    lab.write_config(&Spec {
        raw: Some(edge("60s")),
        ..spec.clone()
    });
    lab.daemon.stop().expect("stop");
    lab.daemon
        .restart(lab.topo.gateway())
        .expect("restart with an edge");

    lab.write_config(&Spec {
        raw: Some(edge("5s")),
        ..spec
    });
    let out = lab.daemon.cli(&["reload"]).expect("cli");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "sluice: edge[0].response_timeout cannot change on reload (it is 60s, the new config \
         says 5s); restart the daemon to change it"
    );
}

/// The `client` fields of `sluice flows --json` output, in order.
fn flow_clients(flows: &serde_json::Value) -> Vec<String> {
    flows
        .as_array()
        .expect("flows is a list")
        .iter()
        .map(|f| f["client"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn flows_filter_and_sort_by_backend_and_client_and_backends_count_them() {
    require_root();
    let lab = Lab::start("slcf", &Spec::new(3));
    let mut conns = Vec::new();
    for _ in 0..9 {
        conns.push(EchoConn::open(lab.client(), echo()).expect("open echo connection"));
        // Distinct creation times, so `--sort age` has one right answer.
        thread::sleep(Duration::from_millis(20));
    }
    let opened: Vec<String> = conns.iter().map(|c| c.local.to_string()).collect();

    // Every flow counted on its backend, exactly (a fresh daemon: these are all its flows).
    for i in 0..3 {
        let expected = conns.iter().filter(|c| c.backend == i).count() as u64;
        assert_eq!(
            lab.backend_row("echo4", i)["flows"].as_u64(),
            Some(expected),
            "live flows of backend {i}"
        );
    }

    // --backend: exactly the flows on that backend.
    for i in 0..3 {
        let addr = backend_addr4(i).to_string();
        let flows = lab.json(&["flows", "--backend", &addr]);
        let mut got = flow_clients(&flows);
        got.sort();
        let mut want: Vec<String> = conns
            .iter()
            .filter(|c| c.backend == i)
            .map(|c| c.local.to_string())
            .collect();
        want.sort();
        assert_eq!(got, want, "flows --backend {addr}: {flows}");
    }

    // --client: the client's address (as an address and as a network) matches all of them,
    // another network none.
    let client_ip = conns[0].local.ip().to_string();
    for filter in [client_ip.clone(), format!("{client_ip}/24")] {
        let mut got = flow_clients(&lab.json(&["flows", "--client", &filter]));
        got.sort();
        let mut want = opened.clone();
        want.sort();
        assert_eq!(got, want, "flows --client {filter}");
    }
    assert_eq!(
        flow_clients(&lab.json(&["flows", "--client", "192.0.2.0/24"])),
        Vec::<String>::new()
    );

    // --sort age: oldest first, so the order they were opened in; with --limit, the oldest.
    assert_eq!(flow_clients(&lab.json(&["flows", "--sort", "age"])), opened);
    assert_eq!(
        flow_clients(&lab.json(&["flows", "--sort", "age", "--limit", "3"])),
        opened[..3]
    );
    // --sort client: by client port (one client address).
    let mut by_port = conns.iter().map(|c| c.local).collect::<Vec<_>>();
    by_port.sort();
    assert_eq!(
        flow_clients(&lab.json(&["flows", "--sort", "client"])),
        by_port.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    // --sort backend: grouped by backend address in order.
    let flows = lab.json(&["flows", "--sort", "backend"]);
    let backends: Vec<String> = flows
        .as_array()
        .expect("flows is a list")
        .iter()
        .map(|f| f["backend"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut sorted = backends.clone();
    sorted.sort_by_key(|b| b.parse::<std::net::IpAddr>().ok());
    assert_eq!(backends, sorted, "flows --sort backend: {flows}");
    assert_eq!(backends.len(), conns.len());

    // The table text names the filter's flows too.
    let addr = backend_addr4(conns[0].backend).to_string();
    let text = lab.cli_ok(&["flows", "--backend", &addr, "--sort", "idle"]);
    assert!(text.contains(&conns[0].local.to_string()), "{text}");
    drop(conns);
}
