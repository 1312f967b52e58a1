//! `forwarded::apply` on arbitrary incoming header lists, from trusted and untrusted peers.
//!
//! Invariants: no panic; every value written is a clean field value (no control characters);
//! headers sluice does not manage pass untouched; the last hop sluice appends names the
//! request's writer (the peer, or the client a trusted peer's PROXY header names); an untrusted
//! writer's forwarding headers never survive; styles not configured are absent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use lb_userspace::config::forwarded::{managed, Style};
use lb_userspace::edge::forwarded::{apply, node, route_prefix, Hop, Policy};

#[derive(Arbitrary, Debug)]
pub struct Input {
    styles: u8,
    peer: Addr,
    client: Addr,
    /// Trusted proxy networks: an address and a prefix length (taken modulo the family's).
    trusted: Vec<(Addr, u8)>,
    prefix: Option<String>,
    host: Option<String>,
    https: bool,
    listener_port: u16,
    headers: Vec<(u8, Vec<u8>)>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
    /// A dual-stack socket's view of an IPv4 peer.
    Mapped([u8; 4], u16),
}

impl Addr {
    fn socket(self) -> SocketAddr {
        match self {
            Addr::V4(a, p) => SocketAddr::new(Ipv4Addr::from(a).into(), p),
            Addr::V6(a, p) => SocketAddr::new(Ipv6Addr::from(a).into(), p),
            Addr::Mapped(a, p) => SocketAddr::new(Ipv4Addr::from(a).to_ipv6_mapped().into(), p),
        }
    }
}

/// Names the fuzzer picks from: every managed one, a neighbour of them, and a bystander.
const NAMES: [&str; 10] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-forwarded-server",
    "host",
    "user-agent",
];

/// Checks the invariants on one input.
///
/// # Panics
/// When an invariant fails.
pub fn check(input: &Input) {
    let mut styles = Vec::new();
    if input.styles & 1 != 0 {
        styles.push(Style::Forwarded);
    }
    if input.styles & 2 != 0 {
        styles.push(Style::XForwarded);
    }
    let trusted_proxies: Vec<IpNet> = input
        .trusted
        .iter()
        .take(4)
        .filter_map(|(a, len)| {
            let ip = a.socket().ip().to_canonical();
            let max = if ip.is_ipv4() { 33 } else { 129 };
            IpNet::new(ip, len % max).ok()
        })
        .collect();
    let policy = Policy {
        styles,
        trusted_proxies,
    };
    let proto = if input.https { "https" } else { "http" };
    let hop = Hop {
        peer: input.peer.socket(),
        client: input.client.socket(),
        proto,
        listener_port: input.listener_port,
        by: Some(SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 443)),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in input.headers.iter().take(32) {
        let name = HeaderName::from_static(NAMES[usize::from(*name) % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let before = headers.clone();
    apply(&mut headers, &policy, &hop, input.host.as_deref());
    // As the listener does for a route that strips a prefix.
    if let Some(prefix) = &input.prefix {
        route_prefix(&mut headers, &policy, prefix);
    }

    let in_list = |ip: IpAddr| {
        let ip = ip.to_canonical();
        policy.trusted_proxies.iter().any(|n| n.contains(&ip))
    };
    // Who wrote the request, and whether what it says about earlier hops counts.
    let writer = if in_list(hop.peer.ip()) {
        hop.client
    } else {
        hop.peer
    };
    let writer_trusted = in_list(writer.ip());
    let writer_ip = writer.ip().to_canonical();

    for (name, value) in &headers {
        assert!(
            value
                .as_bytes()
                .iter()
                .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            "{name}: control character in {value:?}"
        );
    }
    let is_managed = |n: &HeaderName| managed().contains(n);
    for name in before.keys().chain(headers.keys()) {
        if !is_managed(name) {
            let a: Vec<_> = before.get_all(name).iter().collect();
            let b: Vec<_> = headers.get_all(name).iter().collect();
            assert_eq!(a, b, "unmanaged header {name} changed");
        }
    }
    let all = |n: &str| -> Vec<&[u8]> {
        headers
            .get_all(n)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    };

    if policy.styles.contains(&Style::Forwarded) {
        let lines = all("forwarded");
        assert_eq!(lines.len(), 1, "one Forwarded line: {lines:?}");
        let elements = split_forwarded(lines[0]);
        let ours = elements.last().expect("our element");
        let want = format!("for={}", node(writer, true));
        assert!(
            ours.starts_with(want.as_bytes()),
            "last element {:?} is not for {want}",
            String::from_utf8_lossy(ours)
        );
        if !writer_trusted {
            assert_eq!(elements.len(), 1, "an untrusted writer's elements survived");
        }
    } else {
        assert!(all("forwarded").is_empty(), "Forwarded written unasked");
    }

    let x_names = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
    ];
    if !policy.styles.contains(&Style::XForwarded) {
        for n in x_names {
            assert!(all(n).is_empty(), "{n} written unasked");
        }
        return;
    }
    let xff = all("x-forwarded-for");
    assert_eq!(xff.len(), 1, "one X-Forwarded-For line");
    let last = xff[0].rsplit(|&b| b == b',').next().expect("an entry");
    assert_eq!(
        String::from_utf8_lossy(last).trim(),
        writer_ip.to_string(),
        "X-Forwarded-For does not end with the writer"
    );
    if writer_trusted {
        return;
    }
    // An untrusted writer: every value is this hop's own.
    let one = |n: &str| -> Option<String> {
        let v = all(n);
        assert!(v.len() <= 1, "{n} repeated");
        v.first().map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(one("x-forwarded-for"), Some(writer_ip.to_string()));
    assert_eq!(one("x-real-ip"), Some(writer_ip.to_string()));
    assert_eq!(one("x-forwarded-proto").as_deref(), Some(proto));
    assert_eq!(
        one("x-forwarded-port"),
        Some(input.listener_port.to_string())
    );
    let plain_host = input.host.as_deref().filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]%".contains(&b))
    });
    assert_eq!(one("x-forwarded-host").as_deref(), plain_host);
    let prefix = input
        .prefix
        .as_deref()
        .filter(|p| HeaderValue::from_str(p).is_ok());
    assert_eq!(one("x-forwarded-prefix").as_deref(), prefix);
}

/// RFC 7239 elements: split on commas outside quoted strings.
fn split_forwarded(line: &[u8]) -> Vec<&[u8]> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, &b) in line.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == b',' && !quoted {
            out.push(line[start..i].trim_ascii());
            start = i + 1;
        }
    }
    out.push(line[start..].trim_ascii());
    out
}
