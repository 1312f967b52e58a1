//! The parser against good configs (typed values, defaults, resolved checks) and the example
//! file; broken configs are in `broken`.

mod auth;
mod bgp;
mod broken;
mod cookie;
mod route_pools;
mod routes;

use std::{net::IpAddr, path::Path, time::Duration};

use crate::test_support::Scratch;

use super::{
    client_cert::{Format, Names},
    forwarded::Style,
    route::{Action, RoutePath},
    Limits,
};
use super::{
    CheckKind, Config, ConfigError, ConfigErrors, HashKey, HealthCheck, KernelLog, Position,
    Protocol, XdpMode,
};
use hyper::header::HeaderName;

/// A config whose line numbers `broken` relies on: it edits single lines (blank ones to add a
/// key), so keep every line where it is.
pub(crate) const GOOD: &str = r#"instance = "gw1"
interfaces = ["eth0", "eth1"]
xdp_mode = "native"
conntrack_entries = 65536
bpffs = "/sys/fs/bpf"

[admin]
socket = "/run/sluice/admin.sock"

[management]
address = "127.0.0.1:9000"

[encap]
source_v4 = "198.19.255.0/24"
source_v6 = "2001:db8:ffff::/96"

[[vip]]
name = "web"
address = "198.19.0.10:80"

[vip.health_check]
kind = "http"
path = "/healthz"

[[vip.backend]]
address = "198.18.10.2"

[[vip.backend]]
address = "198.18.10.3"
weight = 3
health_check = { port = 8081, interval = "500ms", timeout = "200ms", rise = 1, fall = 5 }

[[vip]]
name = "dns"
address = "198.19.0.10:53"
protocol = "udp"

[[vip.backend]]
address = "2001:db8:a::2"
"#;

/// `GOOD` with each `(line, text)` replacing that (1-based) line.
pub(super) fn edit(edits: &[(usize, &str)]) -> String {
    edit_lines(GOOD, edits)
}

/// `base` with each `(line, text)` replacing that (1-based) line.
pub(super) fn edit_lines(base: &str, edits: &[(usize, &str)]) -> String {
    let mut lines: Vec<&str> = base.lines().collect();
    for &(line, text) in edits {
        lines[line - 1] = text;
    }
    lines.join("\n") + "\n"
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn good_config_has_typed_values_and_defaults() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.instance, "gw1");
    assert_eq!(c.interfaces, ["eth0", "eth1"]);
    assert_eq!(c.xdp_mode, XdpMode::Native);
    assert_eq!(c.conntrack_entries, 65536);
    assert!(!c.keep_dataplane);
    let four = edit(&[(4, "worker_threads = 4")]);
    assert_eq!(Config::parse(&four).unwrap().worker_threads, Some(4));
    assert_eq!(c.pin_dir(), Path::new("/sys/fs/bpf/sluice/gw1"));
    assert_eq!(c.admin.socket, Path::new("/run/sluice/admin.sock"));
    assert_eq!(c.management.address, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.shutdown.delay, Duration::from_secs(1));
    assert_eq!(c.shutdown.timeout, Duration::from_secs(1));
    assert_eq!(c.encap.source_v4, Some("198.19.255.0/24".parse().unwrap()));
    assert_eq!(
        c.encap.source_v6,
        Some("2001:db8:ffff::/96".parse().unwrap())
    );

    let [web, dns] = &c.vips[..] else {
        panic!("expected two VIPs: {:?}", c.vips)
    };
    assert_eq!(
        (web.name.as_str(), web.address, web.port),
        ("web", ip("198.19.0.10"), 80)
    );
    assert_eq!(
        (web.protocol, web.hash),
        (Protocol::Tcp, HashKey::FiveTuple)
    );
    assert_eq!((web.table_size, web.seed), (65537, 0));
    // The VIP's check, with every default: port = the VIP's, 2s / 1s, rise 2, fall 3, 200.
    let vip_check = HealthCheck {
        kind: CheckKind::Http {
            path: "/healthz".into(),
            host: None,
            expect_status: 200,
        },
        port: 80,
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 3,
    };
    assert_eq!(web.backends[0].address, ip("198.18.10.2"));
    assert_eq!(web.backends[0].weight, 1);
    assert_eq!(web.backends[0].health.as_ref(), Some(&vip_check));
    // The backend's own check replaces the VIP's entirely (kind back to the default, tcp).
    assert_eq!(web.backends[1].weight, 3);
    assert_eq!(
        web.backends[1].health,
        Some(HealthCheck {
            kind: CheckKind::Tcp,
            port: 8081,
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            rise: 1,
            fall: 5,
        })
    );
    assert_eq!((dns.protocol, dns.port), (Protocol::Udp, 53));
    assert_eq!(dns.backends[0].address, ip("2001:db8:a::2"));
    assert_eq!(
        dns.backends[0].health, None,
        "no check anywhere: never checked"
    );
}

#[test]
fn minimal_config_takes_every_default() {
    let c = Config::parse(
        "interfaces = [\"eth0\"]\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n",
    )
    .unwrap();
    assert_eq!(c.instance, "default");
    assert_eq!(c.conntrack_entries, 1 << 20);
    assert_eq!(c.worker_threads, None);
    assert_eq!(c.bpffs, Path::new("/sys/fs/bpf"));
    assert_eq!(c.admin.socket, Path::new("/run/sluice/admin.sock"));
    assert_eq!(c.management.address, "127.0.0.1:9000".parse().unwrap());
    assert!(c.vips.is_empty());
}

#[test]
fn encap_prefixes_are_needed_only_for_the_backends_families() {
    let v4_only = "interfaces = [\"eth0\"]\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
                   [[vip]]\nname = \"web\"\naddress = \"198.19.0.10:80\"\n\
                   [[vip.backend]]\naddress = \"198.18.10.2\"\n";
    let c = Config::parse(v4_only).unwrap();
    assert_eq!(c.encap.source_v6, None);
    // No VIP at all (edges only, or nothing yet): no [encap] either.
    let c = Config::parse("interfaces = [\"eth0\"]\n").unwrap();
    assert_eq!((c.encap.source_v4, c.encap.source_v6), (None, None));
}

#[test]
fn kernel_log_is_off_unless_asked_for() {
    let parse = |text: &str| {
        Config::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .kernel_log
    };
    assert_eq!(parse("interfaces = [\"eth0\"]\n"), KernelLog::Off);
    for level in [KernelLog::Off, KernelLog::Info, KernelLog::Debug] {
        let text = format!(
            "kernel_log = \"{}\"\ninterfaces = [\"eth0\"]\n",
            level.name()
        );
        assert_eq!(parse(&text), level);
    }
    let e = Config::parse("kernel_log = \"trace\"\ninterfaces = [\"eth0\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "kernel_log: \"trace\" is not a valid choice; use \"off\", \"info\" or \"debug\""
        ),
        "{e}"
    );
}

#[test]
fn example_config_parses() {
    let c = Config::parse(include_str!("../../../examples/sluice.toml"))
        .unwrap_or_else(|e| panic!("examples/sluice.toml:\n{e}"));
    assert_eq!(c.instance, "edge-1");
    assert!(c.keep_dataplane);
    assert_eq!(c.shutdown.delay, Duration::from_secs(5));
    let names: Vec<&str> = c.vips.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["keycloak", "dns"]);

    let kc = &c.vips[0];
    assert_eq!(
        (kc.port, kc.protocol, kc.hash),
        (443, Protocol::Tcp, HashKey::SourceIp)
    );
    assert_eq!(kc.backends.len(), 3);
    for b in &kc.backends {
        let check = b.health.as_ref().unwrap();
        assert_eq!(check.port, 9000);
        assert_eq!(
            check.kind,
            CheckKind::Http {
                path: "/health/ready".into(),
                host: Some("kc.example".into()),
                expect_status: 200,
            }
        );
    }

    let dns = &c.vips[1];
    assert_eq!((dns.port, dns.protocol), (53, Protocol::Udp));
    let ports: Vec<(CheckKind, u16)> = dns
        .backends
        .iter()
        .map(|b| b.health.as_ref().map(|h| (h.kind.clone(), h.port)).unwrap())
        .collect();
    assert_eq!(ports, [(CheckKind::Tcp, 53), (CheckKind::Tcp, 5353)]);
}

#[test]
fn every_error_is_reported_in_file_order() {
    let text = edit(&[
        (29, "address = \"198.18.10.2\""),
        (3, "xdp_mode = \"turbo\""),
        (14, "source_v4 = \"198.19.255.0\""),
    ]);
    let errors = Config::parse(&text).unwrap_err();
    let lines: Vec<Option<usize>> = errors.0.iter().map(ConfigError::line).collect();
    assert_eq!(lines, [Some(3), Some(14), Some(29)], "{errors}");
    let shown = errors.to_string();
    assert_eq!(shown.lines().count(), 3, "one error per line:\n{shown}");
    assert!(
        shown.starts_with("line 3, column 12: xdp_mode: \"turbo\""),
        "{shown}"
    );
}

/// The errors `Config::load` gives for `text` written to a file, and the file's name.
fn load_errors(text: &str) -> (ConfigErrors, String) {
    let dir = Scratch::new();
    let path = dir.write("sluice.toml", text);
    let result = Config::load(&path);
    (result.unwrap_err(), path.display().to_string())
}

#[test]
fn errors_in_a_file_name_file_line_and_column() {
    let (e, file) = load_errors(&edit(&[(11, "address = \"127.0.0.1\"")]));
    assert_eq!(
        e.0[0].position(),
        Some(Position {
            line: 11,
            column: 11
        })
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{file}:11:11: management.address: \"127.0.0.1\" is not an IP:port; write e.g. \
             \"127.0.0.1:9000\" (IPv6 in brackets: \"[2001:db8::10]:443\"; host names are not \
             resolved)"
        )
    );

    let (e, file) = load_errors(&edit(&[(6, "colour = \"blue\"")]));
    let shown = e.to_string();
    assert!(matches!(e.0[..], [ConfigError::Schema { .. }]), "{e:?}");
    assert!(
        shown.starts_with(&format!(
            "{file}:6:1: colour: unknown key `colour` (expected one of"
        )),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 1, "{shown}");
}

#[test]
fn missing_file_is_named() {
    let e = Config::load(Path::new("/nonexistent/sluice.toml")).unwrap_err();
    assert!(matches!(e.0[..], [ConfigError::Read { .. }]), "{e:?}");
    assert_eq!(
        e.to_string(),
        "cannot read config /nonexistent/sluice.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn positions_count_characters_not_bytes() {
    let text = "a = \"é\"\nb = 1";
    assert_eq!(Position::of(text, 0), Position { line: 1, column: 1 });
    assert_eq!(Position::of(text, 7), Position { line: 1, column: 7 });
    assert_eq!(Position::of(text, 9), Position { line: 2, column: 1 });
    assert_eq!(Position::of(text, 99), Position { line: 2, column: 6 });
}

/// Edges with an address take VIP map entries and CIDR map room of their own.
#[test]
fn edges_count_against_the_dataplane_maps() {
    use std::fmt::Write as _;
    let base = "interfaces = [\"eth0\"]\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
                source_v6 = \"2001:db8:ffff::/96\"\n";
    let vips = |n: u32| {
        let mut t = String::new();
        for i in 0..n {
            let _ = write!(
                t,
                "[[vip]]\nname = \"v{i}\"\naddress = \"10.0.{}.{}:80\"\n\
                 [[vip.backend]]\naddress = \"10.1.0.1\"\n",
                i / 250,
                i % 250 + 1
            );
        }
        t
    };
    let edge = |trusted: usize| {
        let list: Vec<String> = (0..trusted)
            .map(|i| format!("\"10.{}.{}.0/24\"", 64 + i / 256, i % 256))
            .collect();
        format!(
            "[[edge]]\nname = \"e\"\naddress = \"10.9.0.1:443\"\npool = \"v0\"\n\
             trusted_proxies = [{}]\n",
            list.join(", ")
        )
    };
    let max = lb_common::MAX_VIPS;
    let full = format!("{base}{}{}", vips(max), edge(0));
    let e = Config::parse(&full).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{max} VIPs and 1 edges together; at most {max} fit the dataplane's VIP map"
        )),
        "{e}"
    );
    assert!(Config::parse(&format!("{base}{}{}", vips(max - 1), edge(0))).is_ok());
    let cidrs = lb_common::MAX_CIDRS as usize;
    let e = Config::parse(&format!("{base}{}{}", vips(1), edge(cidrs + 1)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{} CIDRs in the VIPs' and edges'", cidrs + 1)),
        "{e}"
    );
}

/// `GOOD` with an `[[edge]]` on the web VIP that verifies client certificates, `keys` written
/// into its table.
pub(super) fn with_edge(keys: &str) -> String {
    edit(&[(
        39,
        &format!(
            "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\n\
             address = \"198.19.0.10:443\"\npool = \"web\"\n{keys}\n[edge.tls]\n\
             certificates = [{{ cert = \"/etc/s.pem\", key = \"/etc/s.key\" }}]\n\
             client_auth = \"optional\"\nclient_ca = \"/etc/ca.pem\""
        ),
    )])
}

#[test]
fn edge_names_prefix_and_timeouts_default() {
    let c = Config::parse(&with_edge("")).unwrap_or_else(|e| panic!("{e}"));
    let [e] = &c.edges[..] else {
        panic!("one edge: {:?}", c.edges)
    };
    assert_eq!(e.client_cert_names, Names::default());
    assert_eq!(e.client_cert_names.apache_cert.as_str(), "ssl_client_cert");
    assert_eq!(e.client_cert_names.apache_chain.as_str(), "CERT_CHAIN");
    assert_eq!(
        e.client_cert_names.haproxy_cert.as_str(),
        "x-ssl-client-cert"
    );
    assert_eq!(
        e.client_cert_names.haproxy_chain.as_str(),
        "X-SSL-Client-Cert-Chain"
    );
    // No routes: one that proxies every path as it is.
    assert_eq!(e.routes.len(), 1);
    assert_eq!(e.routes[0].path, RoutePath::All);
    assert_eq!(
        e.routes[0].action,
        Action::Proxy {
            strip_prefix: false,
            add_prefix: None,
            affinity: None,
            auth: None,
            pool: None,
        }
    );
    assert_eq!(e.connect_timeout, Duration::from_secs(2));
    assert_eq!(e.response_timeout, Duration::from_mins(1));
    assert_eq!(
        e.client_limits,
        Limits {
            request_header: Duration::from_secs(10),
            idle: Duration::from_secs(75),
        }
    );
    assert_eq!(e.max_connections, 10_000);
}

#[test]
fn edge_names_prefix_and_timeouts_as_written() {
    let text = with_edge(
        "client_cert_header = [\"apache\", \"haproxy\"]\npath_prefix = \"/auth\"\n\
         connect_timeout = \"500ms\"\nresponse_timeout = \"1m\"\n\
         [edge.client_cert_names]\napache_cert = \"X-Client-PEM\"\n\
         apache_chain_prefix = \"X-Client-Chain\"\nhaproxy_cert = \"X-Client-DER\"",
    );
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let e = &c.edges[0];
    assert_eq!(
        e.client_cert_names,
        Names {
            apache_cert: HeaderName::from_static("x-client-pem"),
            apache_chain: "X-Client-Chain".parse().unwrap(),
            haproxy_cert: HeaderName::from_static("x-client-der"),
            // Not written: the default.
            haproxy_chain: "X-SSL-Client-Cert-Chain".parse().unwrap(),
        }
    );
    // path_prefix is the one route that strips it.
    assert_eq!(e.routes.len(), 1);
    assert_eq!(e.routes[0].name, "path_prefix");
    assert_eq!(e.routes[0].path.as_str(), "/auth");
    assert_eq!(
        e.routes[0].action,
        Action::Proxy {
            strip_prefix: true,
            add_prefix: None,
            affinity: None,
            auth: None,
            pool: None,
        }
    );
    assert_eq!(e.connect_timeout, Duration::from_millis(500));
    assert_eq!(e.response_timeout, Duration::from_mins(1));

    let text = with_edge(
        "request_header_timeout = \"100ms\"\nidle_timeout = \"2m\"\nmax_connections = 1000000",
    );
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let e = &c.edges[0];
    assert_eq!(
        e.client_limits,
        Limits {
            request_header: Duration::from_millis(100),
            idle: Duration::from_mins(2),
        }
    );
    assert_eq!(e.max_connections, 1_000_000);

    // A name may take another format's default once that format is renamed away from it.
    let text = with_edge(
        "client_cert_header = [\"apache\", \"haproxy\"]\nconnect_timeout = \"1ms\"\n\
         client_cert_names = { apache_cert = \"X-SSL-Client-Cert\", haproxy_cert = \"X-DER\" }",
    );
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let names = &c.edges[0].client_cert_names;
    assert_eq!(names.apache_cert.as_str(), "x-ssl-client-cert");
    assert_eq!(names.haproxy_cert.as_str(), "x-der");
    assert_eq!(c.edges[0].connect_timeout, Duration::from_millis(1));
}

/// A format or style is read by one parser, the config's: every name it has parses to it, and
/// nothing else does (not even another spelling of the same name).
#[test]
fn format_and_style_names_parse_only_as_written() {
    for format in Format::ALL {
        let text = with_edge(&format!("client_cert_header = [\"{format}\"]"));
        let edge = &Config::parse(&text).unwrap().edges[0];
        assert_eq!(edge.client_cert_header, [format]);
    }
    for style in Style::ALL {
        let text = with_edge(&format!("forwarded_headers = [\"{style}\"]"));
        let edge = &Config::parse(&text).unwrap().edges[0];
        assert_eq!(edge.forwarded_headers, [style]);
    }
    for wrong in ["Nginx", "NGINX", " nginx"] {
        let text = with_edge(&format!("client_cert_header = [\"{wrong}\"]"));
        assert!(Config::parse(&text).is_err(), "{wrong:?}");
    }
    for wrong in ["X-Forwarded", "x_forwarded", "forwarded "] {
        let text = with_edge(&format!("forwarded_headers = [\"{wrong}\"]"));
        assert!(Config::parse(&text).is_err(), "{wrong:?}");
    }
}

/// `TlsSettings::new` and a config that leaves `max_chain_depth` out agree (they once said 4
/// and 3).
#[test]
fn new_tls_settings_have_the_configs_default_chain_depth() {
    let config = Config::parse(&with_edge("")).unwrap_or_else(|e| panic!("{e}"));
    let configured = config.edges[0].tls.as_ref().expect("tls").max_chain_depth;
    assert_eq!(
        super::tls::TlsSettings::new(Vec::new()).max_chain_depth,
        configured
    );
    assert_eq!(configured, 3);
}
