//! `/metrics` as scrapers read it: the Prometheus text format 0.0.4 by default (what curl and
//! `promtool check metrics` expect), `OpenMetrics` when the `Accept` header asks for it (as
//! Prometheus does). The real daemon, the real promtool from Debian's `prometheus` package.
//! Needs root.
//!
//! Run with `cargo test -p sluice-tests --test metrics_format -- --test-threads=1`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_tests::daemon::{Daemon, Scratch};
use sluice_tests::http1::get_closing;
use sluice_tests::topology::{backend_addr4, GW_CLIENT_IFNAME};
use sluice_tests::{require_root, NetNs, Topology, VIP4};

const MANAGEMENT: &str = "127.0.0.1:9043";

/// `GET /metrics` with `accept` (if any): the content type and the body.
fn scrape(gateway: &NetNs, accept: Option<&str>) -> (String, String) {
    let addr: SocketAddr = MANAGEMENT.parse().expect("address");
    let extra: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let reply = gateway
        .exec(|| get_closing(addr, "/metrics", &extra, Duration::from_secs(5)))
        .expect("gateway namespace")
        .expect("scrape /metrics");
    let content_type = reply.header("content-type").unwrap_or_default().to_owned();
    (content_type, reply.body)
}

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn metrics_speak_prometheus_text_by_default_and_openmetrics_when_asked() {
    require_root();
    let prefix = "slprom";
    let topo = Topology::build(prefix, 1).expect("build topology");
    let scratch = Scratch::create(prefix).expect("scratch directory");
    let instance = format!("test-{prefix}");
    let text = format!(
        "instance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\nconntrack_entries = 4096\n\n\
         [admin]\nsocket = \"{}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\n\n[[vip]]\nname = \"web\"\n\
         address = \"{VIP4}:80\"\ntable_size = 251\n[[vip.backend]]\naddress = \"{}\"\n\n\
         [[edge]]\nname = \"plain\"\naddress = \"198.18.0.1:8080\"\npool = \"web\"\n",
        Daemon::socket_in(scratch.path()).display(),
        backend_addr4(0),
    );
    let _daemon = Daemon::start(topo.gateway(), scratch.path(), &instance, &text).expect("start");

    for accept in [None, Some("text/plain"), Some("*/*")] {
        let (content_type, body) = scrape(topo.gateway(), accept);
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(!body.contains("# EOF"), "{accept:?}");
        assert!(
            body.contains("# TYPE sluice_reloads_total counter"),
            "counters are named with _total:\n{body}"
        );
        let (ok, said) = promtool(&body);
        assert!(ok, "promtool check metrics ({accept:?}):\n{said}\n{body}");
    }

    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                      version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (content_type, body) = scrape(topo.gateway(), Some(prometheus));
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE sluice_reloads counter"), "{body}");
}
