//! The edge's request rewrite (`edge::backend_head::rewrite`) on arbitrary HTTP/1 request
//! heads, parsed by httparse (hyper's parser) as the listener would receive them, from a
//! trusted or an untrusted peer.
//!
//! Invariants: no panic; a refused head is refused for a stated reason; a forwarded head
//! carries exactly the client-certificate headers of the connection (none of the client's
//! copies, in any spelling), exactly one `Host` (the judged authority), no hop-by-hop header
//! (only `Connection: upgrade` + `Upgrade: websocket` for a WebSocket upgrade), the client's
//! `Content-Length` untouched and no `Transfer-Encoding` of the client's (hyper frames the body
//! to the backend itself, so no ambiguous framing is passed on), and, from an untrusted peer,
//! exactly the forwarded headers sluice writes for a request that carried none.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Version};
use lb_userspace::edge::backend_head::{rewrite, NotForwarded, Vouched};
use lb_userspace::config::client_cert::{ChainLengths, Format, Names};
use lb_userspace::config::forwarded::{self as forwarded_headers, Style};
use lb_userspace::edge::client_cert::{headers, ClientCert};
use lb_userspace::edge::forwarded::{self, Hop, Policy};
use lb_userspace::config::route::{Action, Route, RoutePath};
use lb_userspace::edge::managed::Managed;
use lb_userspace::edge::route::Table;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};

type CertHeaders = Result<Vec<(HeaderName, HeaderValue)>, String>;

/// The connection's certificate headers in all six formats, for one generated certificate.
fn cert_headers() -> &'static CertHeaders {
    static HEADERS: OnceLock<CertHeaders> = OnceLock::new();
    HEADERS.get_or_init(|| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let cert = CertificateParams::new(vec!["client.example".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let leaf = cert.der().to_vec();
        Ok(headers(
            &Format::ALL,
            &Names::default(),
            &ChainLengths::default(),
            &ClientCert::Verified {
                leaf: &leaf,
                chain: &[],
            },
        )
        .expect("headers for a good certificate"))
    })
}

fn managed() -> &'static Managed {
    static MANAGED: OnceLock<Managed> = OnceLock::new();
    MANAGED.get_or_init(|| Managed::new(&Names::default()))
}

/// One route proxying every path, as a listener without routes has.
fn routes() -> &'static Table {
    static ROUTES: OnceLock<Table> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let all = Route {
            name: "all".into(),
            path: RoutePath::All,
            host: None,
            action: Action::Proxy {
                strip_prefix: false,
                add_prefix: None,
                affinity: None,
                auth: None,
                pool: None,
            },
        };
        Table::new(&[all], |_| std::sync::Arc::default())
    })
}

/// Hop-by-hop headers no backend may get from a client (RFC 9110 7.6.1 and the h2c ones).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "proxy-authenticate",
    "http2-settings",
];

/// Checks the invariants on one input: its first byte chooses the peer's trust, the rest is
/// the head.
///
/// # Panics
/// When an invariant fails.
pub fn check(data: &[u8]) {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(head) else {
        return;
    };
    let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .version(if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        });
    for h in parsed.headers.iter() {
        // hyper refuses a head with a name or value these reject.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    let incoming = parts.headers.clone();

    let peer = SocketAddr::new(Ipv4Addr::new(198, 51, 100, 7).into(), 40_000);
    let trusted = flags & 1 != 0;
    let policy = Policy {
        styles: vec![Style::Forwarded, Style::XForwarded],
        trusted_proxies: if trusted {
            vec!["198.51.100.0/24".parse().expect("net")]
        } else {
            Vec::new()
        },
    };
    let hop = Hop {
        peer,
        client: peer,
        proto: "https",
        listener_port: 443,
        by: Some(SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 443)),
    };
    // Built once per connection by the listener, as for every untrusted client.
    let untrusted = forwarded::Untrusted::for_connection(&policy, &hop);
    let vouched = Vouched {
        managed: managed(),
        cert_headers: cert_headers(),
        forwarded: &policy,
        hop,
        untrusted: untrusted.as_ref(),
        own_authority: "idp.example",
        routes: routes(),
        sni: None,
    };
    let websocket = match rewrite(&mut parts, &vouched) {
        Ok(forward) => forward.websocket,
        Err(NotForwarded::Refused(_) | NotForwarded::Unrouted(_)) => return,
        Err(other) => panic!("forwarded nothing for an unexpected reason: {other:?}"),
    };
    let out = &parts.headers;

    for (name, value) in out {
        assert!(
            value
                .as_bytes()
                .iter()
                .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            "{name}: control character"
        );
    }
    let certs = cert_headers().as_ref().expect("cert headers");
    for name in out.keys() {
        if managed().covers(name.as_str()) && forwarded_headers::managed().contains(name) {
            continue;
        }
        if managed().covers(name.as_str()) {
            let got: Vec<&HeaderValue> = out.get_all(name).iter().collect();
            let want: Vec<&HeaderValue> = certs
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v)
                .collect();
            assert_eq!(got, want, "{name} is not exactly the connection's");
        }
    }
    for (name, _) in certs {
        assert!(out.contains_key(name), "{name} missing");
    }
    assert_eq!(out.get_all("host").iter().count(), 1, "one Host");
    for name in HOP_BY_HOP {
        let values: Vec<&HeaderValue> = out.get_all(name).iter().collect();
        let allowed = websocket
            && match name {
                "connection" => values == [&HeaderValue::from_static("upgrade")],
                "upgrade" => values.len() == 1,
                _ => false,
            };
        assert!(
            values.is_empty() || allowed,
            "hop-by-hop {name} forwarded: {values:?}"
        );
    }
    let cl = |h: &HeaderMap| -> Vec<HeaderValue> {
        h.get_all("content-length").iter().cloned().collect()
    };
    assert_eq!(cl(out), cl(&incoming), "Content-Length changed");
    assert_eq!(parts.version, Version::HTTP_11);

    if !trusted {
        let mut fresh = HeaderMap::new();
        let host = out
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned);
        forwarded::apply(&mut fresh, &policy, &hop, host.as_deref());
        for name in forwarded_headers::managed() {
            let got: Vec<&HeaderValue> = out.get_all(name).iter().collect();
            let want: Vec<&HeaderValue> = fresh.get_all(name).iter().collect();
            assert_eq!(
                got, want,
                "{name} from an untrusted peer is not sluice's own"
            );
        }
    }
}
