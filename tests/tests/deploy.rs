//! The deployment: the systemd unit (`deploy/systemd/sluice.service`), the daemon's `sd_notify`
//! readiness, the Kubernetes `DaemonSet` (`deploy/kubernetes/daemonset.yaml`) and the config the
//! Debian package ships. The package itself is checked by xtask's own test
//! (`package_has_the_binary_the_unit_and_the_config_as_a_conffile`).
//!
//! Every bound the files must respect is read from the daemon's code (its config defaults),
//! never from a copy: a default that grows past the unit's stop timeout fails here.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use lb_userspace::config::{Bgp, Config};
use serde_yaml_ng::Value;
use sluice_tests::daemon::{remove_pins, sluice_bin, spawn_tied, Daemon, Scratch};
use sluice_tests::topology::backend_addr4;
use sluice_tests::{require_root, ChildGuard, Topology, VIP4};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The config the daemon runs with when a file sets nothing but what it must: its defaults.
fn defaults() -> Config {
    Config::parse(
        "interfaces = [\"eth0\"]\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         [[vip]]\nname = \"v\"\naddress = \"198.19.0.10:80\"\n\
         [[vip.backend]]\naddress = \"198.18.10.2\"\n",
    )
    .expect("a minimal config parses")
}

/// The longest graceful stop of `config`: the BGP steps, then `delay + timeout`.
fn stop_budget(config: &Config) -> Duration {
    let bgp = config.bgp.as_ref().map_or(Duration::ZERO, Bgp::stop_wait);
    bgp + config.shutdown.delay + config.shutdown.timeout
}

/// The unit's `Key=value` lines (the `[Service]` and other sections flattened; a key given
/// twice keeps every value).
fn unit_keys(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=value");
        keys.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    keys
}

fn one<'a>(keys: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match keys.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key}: expected one value, found {other:?}"),
    }
}

/// systemd's own parser finds nothing to say about the unit (`systemd-analyze verify` only
/// warns, exit 0, about a value it cannot parse: any output fails too), in a root that has
/// the real system units and stand-ins for the binaries the unit names.
#[test]
fn deploy_unit_passes_systemd_analyze_verify() {
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("etc/systemd/system");
    fs::create_dir_all(&units).unwrap();
    fs::copy(
        repo_file("deploy/systemd/sluice.service"),
        units.join("sluice.service"),
    )
    .unwrap();
    // The targets and mounts the unit orders itself against.
    let lib = root.path().join("lib/systemd");
    fs::create_dir_all(&lib).unwrap();
    let copied = Command::new("cp")
        .args(["-a", "/lib/systemd/system"])
        .arg(&lib)
        .status()
        .unwrap();
    assert!(copied.success());
    for bin in ["usr/bin/sluice", "bin/kill"] {
        let path = root.path().join(bin);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("sluice.service")
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert_eq!(said, "", "systemd-analyze verify had something to say");
}

/// What the issue asks of the unit, key by key; the stop timeout against the daemon's own
/// defaults and the config the package ships.
#[test]
fn deploy_unit_settings() {
    let keys = unit_keys(&read("deploy/systemd/sluice.service"));
    assert_eq!(one(&keys, "Type"), "notify");
    assert_eq!(one(&keys, "Restart"), "on-failure");
    assert_eq!(one(&keys, "KillSignal"), "SIGTERM");
    assert_eq!(one(&keys, "ProtectSystem"), "strict");
    assert_eq!(one(&keys, "ReadWritePaths"), "/sys/fs/bpf /run/sluice");
    assert_eq!(one(&keys, "RuntimeDirectory"), "sluice");
    assert_eq!(one(&keys, "NoNewPrivileges"), "yes");
    let caps = "CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_BIND_SERVICE";
    assert_eq!(one(&keys, "CapabilityBoundingSet"), caps);
    assert_eq!(one(&keys, "AmbientCapabilities"), caps);
    assert_eq!(
        one(&keys, "ExecStart"),
        "/usr/bin/sluice run -c /etc/sluice/sluice.toml"
    );

    let stop = one(&keys, "TimeoutStopSec");
    let stop = Duration::from_secs(
        stop.strip_suffix('s')
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("TimeoutStopSec={stop}: expected whole seconds")),
    );
    let shipped = Config::parse(&read("deploy/debian/sluice.toml")).expect("shipped config");
    let example = Config::parse(&read("examples/sluice.toml")).expect("example config");
    for (what, config) in [
        ("defaults", defaults()),
        ("deploy/debian/sluice.toml", shipped),
        ("examples/sluice.toml", example),
    ] {
        assert!(
            stop > stop_budget(&config),
            "TimeoutStopSec {stop:?} must exceed shutdown_delay + shutdown_timeout of {what} \
             ({:?})",
            stop_budget(&config)
        );
    }
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => v.get(i).unwrap_or_else(|| panic!("no [{i}] in {path}")),
            Err(_) => v.get(key).unwrap_or_else(|| panic!("no {key} in {path}")),
        })
}

fn str_of<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn strings(v: &Value, path: &str) -> Vec<String> {
    get(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{path} is not a list"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// Every field of the `DaemonSet` the deployment relies on: host network, the unit's
/// capabilities and no more, the host's bpffs, the config from the `ConfigMap` (which the daemon
/// accepts), probes on the paths and port the daemon serves by default, and a grace period
/// above the daemon's default stop.
#[test]
fn deploy_daemonset_fields_match_the_daemon() {
    let text = read("deploy/kubernetes/daemonset.yaml");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| str_of(d, "kind") == k)
            .unwrap_or_else(|| panic!("no {k} in the manifest"))
    };
    let ds = kind("DaemonSet");
    let cm = kind("ConfigMap");
    assert_eq!(str_of(ds, "apiVersion"), "apps/v1");
    assert_eq!(
        str_of(ds, "metadata.namespace"),
        str_of(cm, "metadata.namespace")
    );
    assert_eq!(
        get(ds, "spec.selector.matchLabels"),
        get(ds, "spec.template.metadata.labels")
    );
    let pod = get(ds, "spec.template.spec");
    assert_eq!(get(pod, "hostNetwork").as_bool(), Some(true));

    let containers = get(pod, "containers").as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let security = get(c, "securityContext");
    assert_eq!(get(security, "privileged").as_bool(), Some(false));
    assert_eq!(strings(security, "capabilities.drop"), ["ALL"]);
    // The unit's set, in Kubernetes' spelling (no CAP_ prefix).
    let unit = unit_keys(&read("deploy/systemd/sluice.service"));
    let unit_caps: Vec<String> = one(&unit, "CapabilityBoundingSet")
        .split(' ')
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    assert_eq!(strings(security, "capabilities.add"), unit_caps);

    // The config: the ConfigMap's file, mounted where the command reads it, and valid.
    let command = strings(c, "command");
    let config_arg = command
        .iter()
        .position(|a| a == "-c")
        .map(|i| command[i + 1].clone())
        .expect("-c CONFIG");
    let config_path = Path::new(&config_arg);
    let mounts = get(c, "volumeMounts").as_sequence().unwrap();
    let volumes = get(pod, "volumes").as_sequence().unwrap();
    let volume_at = |dir: &Path| {
        let m = mounts
            .iter()
            .find(|m| Path::new(str_of(m, "mountPath")) == dir)
            .unwrap_or_else(|| panic!("nothing mounted at {}", dir.display()));
        let name = str_of(m, "name");
        (
            m,
            volumes
                .iter()
                .find(|v| str_of(v, "name") == name)
                .unwrap_or_else(|| panic!("no volume {name}")),
        )
    };
    let (_, config_volume) = volume_at(config_path.parent().unwrap());
    assert_eq!(
        str_of(config_volume, "configMap.name"),
        str_of(cm, "metadata.name")
    );
    let file_name = config_path.file_name().unwrap().to_str().unwrap();
    // The key has a dot in it: looked up directly, not by path.
    let text = get(cm, "data")
        .get(file_name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no data.{file_name} in the ConfigMap"));
    let config = Config::parse(text).expect("the ConfigMap's sluice.toml is a valid config");

    // Pins in the host's bpffs (so a new pod adopts them), at the path the config pins under.
    let (bpffs_mount, bpffs_volume) = volume_at(&config.bpffs);
    assert!(
        bpffs_mount.get("readOnly").and_then(Value::as_bool) != Some(true),
        "the daemon pins under the bpffs: it must be writable"
    );
    assert_eq!(
        Path::new(str_of(bpffs_volume, "hostPath.path")),
        config.bpffs
    );
    assert_eq!(str_of(bpffs_volume, "hostPath.type"), "Directory");
    assert!(
        config.keep_dataplane,
        "pins survive a pod restart only with keep_dataplane"
    );
    // The admin socket's directory (and the instance lock beside it) on the host.
    let (_, run_volume) = volume_at(config.admin.socket.parent().unwrap());
    assert_eq!(str_of(run_volume, "hostPath.path"), "/run/sluice");

    // Probes reach the management port the config binds (hostNetwork: the kubelet's loopback
    // is the pod's).
    let management: SocketAddr = config.management.address;
    for (probe, path) in [
        ("readinessProbe", "/health/ready"),
        ("livenessProbe", "/health/live"),
        ("startupProbe", "/health/started"),
    ] {
        let http = get(c, &format!("{probe}.httpGet"));
        assert_eq!(str_of(http, "path"), path, "{probe}");
        assert_eq!(
            get(http, "port").as_u64(),
            Some(u64::from(management.port())),
            "{probe}"
        );
        assert_eq!(str_of(http, "host"), management.ip().to_string(), "{probe}");
    }
    assert!(c.get("lifecycle").is_none(), "no preStop hook");

    let grace = Duration::from_secs(get(pod, "terminationGracePeriodSeconds").as_u64().unwrap());
    for (what, cfg) in [("defaults", defaults()), ("the ConfigMap", config)] {
        assert!(
            grace > stop_budget(&cfg),
            "terminationGracePeriodSeconds {grace:?} must exceed delay + timeout of {what}"
        );
    }
}

/// The next datagram on `socket`, if one comes within `limit`.
fn next_message(socket: &UnixDatagram, limit: Duration) -> Option<String> {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("reading the notify socket: {e}"),
    }
}

/// The daemon as systemd runs a `Type=notify` unit: `READY=1` comes only once
/// `/health/ready` says UP (here: the VIP's one backend weighs 0, so it takes no new flow and
/// the daemon is not ready until a reload gives it weight 1), and `STOPPING=1` comes at
/// SIGTERM while the daemon is still draining, before it exits.
#[test]
fn deploy_sd_notify_ready_follows_health_ready_and_stopping_precedes_exit() {
    require_root();
    let topo = Topology::build("dplsd", 1).expect("topology");
    let scratch = Scratch::create("dplsd").expect("scratch");
    let instance = "test-dplsd";
    remove_pins(instance);
    let management = "127.0.0.1:9000";
    let config = scratch.path().join("sluice.toml");
    let config_text = |weight: u32| {
        format!(
            "instance = \"{instance}\"\ninterfaces = [\"gwc\"]\nconntrack_entries = 65536\n\
             shutdown_delay = \"2s\"\nshutdown_timeout = \"1s\"\n\n\
             [admin]\nsocket = \"{}\"\n\n[management]\naddress = \"{management}\"\n\n\
             [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
             [[vip]]\nname = \"web\"\naddress = \"{VIP4}:80\"\ntable_size = 251\n\
             [[vip.backend]]\naddress = \"{}\"\nweight = {weight}\n",
            Daemon::socket_in(scratch.path()).display(),
            backend_addr4(0),
        )
    };
    fs::write(&config, config_text(0)).unwrap();
    let notify_path = scratch.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();

    let log = scratch.path().join("sluice.log");
    let out = File::create(&log).unwrap();
    let netns = File::open(topo.gateway().path()).unwrap();
    let mut cmd = Command::new(sluice_bin().unwrap());
    cmd.args(["run", "--log-format", "json", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut daemon = ChildGuard::new(spawn_tied(&mut cmd, Some(&netns)).unwrap());
    let log_text = || fs::read_to_string(&log).unwrap_or_default();
    let ready = |code: u16| {
        let reply = topo
            .gateway()
            .exec(|| {
                sluice_tests::http1::get_closing(
                    management.parse().unwrap(),
                    "/health/ready",
                    &[],
                    Duration::from_secs(2),
                )
            })
            .unwrap();
        reply.map(|r| r.status).ok() == Some(code)
    };

    // Up and answering, but its only backend takes no new flow: not ready, and nothing said.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready(503) {
        assert!(
            daemon.child_mut().unwrap().try_wait().unwrap().is_none(),
            "sluice exited: {}",
            log_text()
        );
        assert!(
            Instant::now() < deadline,
            "no 503 from /health/ready: {}",
            log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Long enough for the ready watcher (every 50 ms) to have looked many times.
    assert_eq!(
        next_message(&notify, Duration::from_secs(2)),
        None,
        "READY=1 before /health/ready said UP"
    );
    assert!(ready(503));

    // A reload gives the backend weight 1: the VIP can take new flows, the daemon is ready.
    fs::write(&config, config_text(1)).unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let message = next_message(&notify, Duration::from_secs(10)).expect("READY=1 within 10s");
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");
    assert!(ready(200), "READY=1 sent while /health/ready is not UP");

    // SIGTERM: STOPPING=1 while the daemon is still draining (shutdown_delay 2s).
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let message = next_message(&notify, Duration::from_secs(2)).expect("STOPPING=1 at SIGTERM");
    assert!(message.lines().any(|l| l == "STOPPING=1"), "{message:?}");
    assert!(
        daemon.child_mut().unwrap().try_wait().unwrap().is_none(),
        "STOPPING=1 must come before the process exits"
    );
    // Not ChildGuard::terminate: a second SIGTERM would cut the graceful stop short.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = daemon.child_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sluice still running: {}",
            log_text()
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}: {}", log_text());
    assert_eq!(next_message(&notify, Duration::from_millis(100)), None);
    remove_pins(instance);
}
