//! What `keep_dataplane = true` depends on, made visible: a daemon whose config names another
//! `xdp_mode` than the kept dataplane re-attaches the interface in the configured mode (the
//! pins say which, open connections keep flowing); a daemon that has to mount a bpffs of its
//! own (a private mount namespace, as under `ip netns exec`) warns that nothing it pins
//! outlives it. Needs root.
//!
//! Run with `cargo test -p sluice-tests --test kept_dataplane -- --test-threads=1`.

use std::fs::File;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use sluice_tests::daemon::{pin_dir, sluice_bin, Daemon, Scratch};
use sluice_tests::gateway_config::backend_tables;
use sluice_tests::topology::GW_CLIENT_IFNAME;
use sluice_tests::{require_root, tcp_echo_backend, ChildGuard, EchoConn, NetNs, Topology, VIP4};

const ECHO_PORT: u16 = 7;

fn config(instance: &str, scratch: &Scratch, mode: &str) -> String {
    let mut text = format!(
        "instance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\nxdp_mode = \"{mode}\"\n\
         keep_dataplane = true\nconntrack_entries = 4096\n\n[admin]\nsocket = \"{}\"\n\n\
         [management]\naddress = \"127.0.0.1:9041\"\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n\n[[vip]]\nname = \"echo\"\n\
         address = \"{VIP4}:{ECHO_PORT}\"\ntable_size = 251\n",
        Daemon::socket_in(scratch.path()).display()
    );
    text.push_str(&backend_tables(2));
    text
}

/// The XDP attachment `ip link` shows on the gateway's interface: `xdpgeneric` (skb mode),
/// `xdp` (native) or nothing.
fn attached_mode(gateway: &NetNs) -> &'static str {
    let link = gateway
        .ip(&["link", "show", GW_CLIENT_IFNAME])
        .expect("ip link show");
    if link.contains("xdpgeneric") {
        "skb"
    } else if link.contains("xdp") {
        "native"
    } else {
        "none"
    }
}

fn pinned_links(instance: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pin_dir(instance))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with("link"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The instance name, a two-backend topology and the scratch directory of the test `prefix`.
fn lab(prefix: &str) -> (String, Topology, Scratch) {
    let topo = Topology::build(prefix, 2).expect("build topology");
    let scratch = Scratch::create(prefix).expect("scratch directory");
    (format!("test-{prefix}"), topo, scratch)
}

/// The test's daemon with `xdp_mode = "native"`.
fn start_native(topo: &Topology, scratch: &Scratch, instance: &str) -> Daemon {
    let text = config(instance, scratch, "native");
    Daemon::start(topo.gateway(), scratch.path(), instance, &text).expect("start sluice run")
}

#[test]
fn an_adopted_dataplane_is_reattached_in_the_configured_xdp_mode() {
    require_root();
    let prefix = "slmode";
    let (instance, topo, scratch) = lab(prefix);
    let _backends: Vec<_> = (0..2)
        .map(|i| {
            let ns = topo.backend(i);
            let decap = topo.attach_decap(i, &[VIP4.into()]);
            let echo = tcp_echo_backend(ns, &format!("backend-{i}"), ECHO_PORT).expect("echo");
            (decap, echo)
        })
        .collect();
    let mut daemon = start_native(&topo, &scratch, &instance);
    assert_eq!(attached_mode(topo.gateway()), "native");
    assert_eq!(
        pinned_links(&instance),
        [format!("link_{GW_CLIENT_IFNAME}")]
    );
    let vip = std::net::SocketAddr::new(VIP4.into(), ECHO_PORT);
    let mut conns: Vec<EchoConn> = (0..4)
        .map(|_| EchoConn::open(topo.client(), vip).expect("echo connection"))
        .collect();

    for (mode, link) in [("skb", "linkskb_"), ("native", "link_")] {
        let status = daemon.stop().expect("stop");
        assert!(status.success(), "exit {status}\n{}", daemon.log_text());
        std::fs::write(daemon.config_path(), config(&instance, &scratch, mode))
            .expect("write config");
        daemon.restart(topo.gateway()).expect("restart");
        assert_eq!(
            attached_mode(topo.gateway()),
            mode,
            "the configured mode is in effect\n{}",
            daemon.log_text()
        );
        assert_eq!(
            pinned_links(&instance),
            [format!("{link}{GW_CLIENT_IFNAME}")]
        );
        for c in &mut conns {
            c.exchange()
                .unwrap_or_else(|e| panic!("{mode}: connection goes on: {e:#}"));
        }
        assert!(
            daemon
                .log_text()
                .contains("re-attaching in the configured xdp_mode"),
            "the change is logged"
        );
    }
    // The test's daemon shares the host's mount namespace: it found a bpffs and said so.
    let log = daemon.log_text();
    assert!(log.contains("pinning under bpffs"), "{log}");
    assert!(!log.contains(MOUNTED_OWN), "{log}");
}

const MOUNTED_OWN: &str = "no bpffs was mounted here, so sluice mounted one";

#[test]
fn a_daemon_in_a_private_mount_namespace_warns_that_its_pins_die_with_it() {
    require_root();
    let prefix = "slmnt";
    let (instance, topo, scratch) = lab(prefix);
    let cfg = scratch.path().join("sluice.toml");
    std::fs::write(&cfg, config(&instance, &scratch, "native")).expect("write config");
    let log_path = scratch.path().join("sluice.log");
    let log = File::create(&log_path).expect("log file");
    let bin = sluice_bin().expect("sluice binary");
    // `ip netns exec` gives the daemon a mount namespace of its own with a fresh /sys, where
    // no bpffs is mounted.
    let child = topo
        .gateway()
        .command(&[
            bin.to_str().expect("UTF-8 path"),
            "run",
            "-c",
            cfg.to_str().expect("UTF-8 path"),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start sluice run under ip netns exec");
    let mut guard = ChildGuard::new(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("serving") || Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let status = guard
        .terminate(Duration::from_secs(10))
        .expect("stop sluice");
    assert!(text.contains(MOUNTED_OWN), "the daemon warns:\n{text}");
    assert!(status.success(), "exit {status}\n{text}");
    // Its pins lived in its own mount namespace: the host's bpffs never saw them.
    assert!(!pin_dir(&instance).exists());
}

/// `bpf(2)` with a zero-padded attribute; returns the result or the OS error.
fn bpf(cmd: libc::c_long, attr: &[u64; 16]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a readable `union bpf_attr` of the size passed; every pointer in it
    // points at a live buffer of the size the command reads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Pins, where a daemon of the previous layout left it, a `sluice_conntrack_v2` map (56-byte
/// values) holding one flow from `client`.
fn pin_previous_conntrack(instance: &str, client: std::net::Ipv4Addr) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_LRU_HASH: u64 = 9;
    const BPF_F_NO_COMMON_LRU: u64 = 2;
    let mut attr = [0u64; 16];
    // map_type, key_size (40) | value_size (56), max_entries | map_flags
    attr[0] = BPF_MAP_TYPE_LRU_HASH | (40 << 32);
    attr[1] = 0x38 | (4096 << 32);
    attr[2] = BPF_F_NO_COMMON_LRU;
    let fd = bpf(BPF_MAP_CREATE, &attr).expect("create the old-layout map");
    // Key: the flow as the client sent it (FlowKey: src, dst, ports, proto, family).
    let mut key = [0u8; 40];
    key[..4].copy_from_slice(&client.octets());
    key[16..20].copy_from_slice(&VIP4.octets());
    key[32..34].copy_from_slice(&40_000u16.to_be_bytes());
    key[34..36].copy_from_slice(&ECHO_PORT.to_be_bytes());
    key[36] = 6;
    key[37] = 4;
    // Value (v2 FlowEntry): backend 0, VIP 0, created and last seen "now", the rest zero.
    let mut value = [0u8; 56];
    let now = lb_userspace::dataplane::now_ns();
    value[8..16].copy_from_slice(&now.to_ne_bytes());
    value[16..24].copy_from_slice(&now.to_ne_bytes());
    let mut attr = [0u64; 16];
    attr[0] = u64::try_from(fd).expect("fd");
    attr[1] = key.as_ptr() as u64;
    attr[2] = value.as_ptr() as u64;
    bpf(BPF_MAP_UPDATE_ELEM, &attr).expect("record the old flow");
    let pin = pin_dir(instance).join("sluice_conntrack_v2");
    // A daemon of that layout would have its own map there; this one stands in for it.
    let _ = std::fs::remove_file(&pin);
    let path = std::ffi::CString::new(pin.to_str().expect("UTF-8 path")).expect("path");
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    attr[1] = u64::try_from(fd).expect("fd");
    bpf(BPF_OBJ_PIN, &attr).expect("pin the old-layout map");
    // SAFETY: `fd` is the map this function created; the pin keeps the map alive.
    unsafe { libc::close(i32::try_from(fd).expect("fd")) };
}

/// A pinned set left by a daemon of the previous conntrack layout (`sluice_conntrack_v2`,
/// 56-byte values): the new daemon never opens that map as its conntrack, so no old entry is
/// read with the new layout (`sluice flows` does not list its flow), and once its own program
/// runs it removes the old pin, which frees the old table's memory.
#[test]
fn a_previous_conntrack_layout_is_never_read_and_its_pin_is_freed() {
    require_root();
    let prefix = "slctv2";
    let instance = format!("test-{prefix}");
    sluice_tests::daemon::remove_pins(&instance);
    let topo = Topology::build(prefix, 2).expect("build topology");
    let scratch = Scratch::create(prefix).expect("scratch directory");
    let old_client = std::net::Ipv4Addr::new(198, 18, 99, 1);
    // A kept dataplane (the test's daemon clears pins when it starts, so one runs first).
    let mut daemon = start_native(&topo, &scratch, &instance);
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "exit {status}\n{}", daemon.log_text());
    pin_previous_conntrack(&instance, old_client);
    daemon.restart(topo.gateway()).expect("restart");
    let flows = daemon.cli_json(&["flows"]).expect("sluice flows");
    assert!(
        !flows.to_string().contains(&old_client.to_string()),
        "an old-layout entry was read as a flow: {flows}"
    );
    let pins: Vec<String> = std::fs::read_dir(pin_dir(&instance))
        .expect("pin directory")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("sluice_conntrack"))
        .collect();
    assert_eq!(
        pins,
        [lb_common::names::CONNTRACK],
        "only the current layout's conntrack stays pinned\n{}",
        daemon.log_text()
    );
}

/// A start whose program the kernel refuses leaves no pins behind: the maps a load creates
/// and pins before the verifier runs are removed again, or the next start would adopt them
/// as a previous daemon's flows. Without `CAP_PERFMON` (and `CAP_SYS_ADMIN`, which implies it)
/// the verifier refuses `sluice_xdp`'s pointer arithmetic, after the maps exist.
#[test]
fn a_start_whose_program_is_refused_leaves_no_pins() {
    require_root();
    let prefix = "slfail";
    let (instance, topo, scratch) = lab(prefix);
    sluice_tests::daemon::remove_pins(&instance);
    let cfg = scratch.path().join("sluice.toml");
    std::fs::write(&cfg, config(&instance, &scratch, "native")).expect("write config");
    let log_path = scratch.path().join("sluice.log");
    let log = File::create(&log_path).expect("log file");
    let netns = File::open(topo.gateway().path()).expect("gateway namespace");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--inh-caps=-all", "--bounding-set=-perfmon,-sys_admin"])
        .arg(sluice_bin().expect("sluice binary"))
        .args(["run", "-c"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let child = sluice_tests::daemon::spawn_tied(&mut cmd, Some(&netns)).expect("start sluice");
    let mut guard = ChildGuard::new(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let child = guard.child_mut().expect("child");
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "sluice did not exit");
        thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!status.success(), "the start must fail:\n{text}");
    assert!(
        text.contains("sluice_xdp"),
        "the error names the program:\n{text}"
    );
    let left: Vec<String> = std::fs::read_dir(pin_dir(&instance))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    sluice_tests::daemon::remove_pins(&instance);
    assert!(
        left.is_empty(),
        "pins left by a failed start: {left:?}\n{text}"
    );
}
