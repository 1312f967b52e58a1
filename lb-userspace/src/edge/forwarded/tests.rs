use hyper::header::HeaderName;

use super::*;

const BOTH: &[Style] = &[Style::Forwarded, Style::XForwarded];
const FWD_ONLY: &[Style] = &[Style::Forwarded];
const X_ONLY: &[Style] = &[Style::XForwarded];
const TRUSTED: &[&str] = &["10.0.0.0/8", "2001:db8:ffff::/48"];

/// Every managed header a client might forge, in odd cases and repeated.
const FORGED: &[(&str, &str)] = &[
    ("X-Forwarded-For", "1.1.1.1"),
    ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
    ("FORWARDED", "for=1.1.1.1;host=evil"),
    ("Forwarded", "for=2.2.2.2"),
    ("X-Forwarded-Proto", "http"),
    ("x-forwarded-PROTO", "ftp"),
    ("X-FORWARDED-HOST", "evil.example"),
    ("x-Forwarded-Port", "1"),
    ("X-Forwarded-Prefix", "/evil"),
    ("X-Real-IP", "1.1.1.1"),
    ("x-real-ip", "2.2.2.2"),
    ("Host", "example.com"),
    ("User-Agent", "test"),
];

/// Expected managed headers for `BASE` (an untrusted IPv4 client over https).
const UNTRUSTED_V4: &[(&str, &str)] = &[
    (
        "forwarded",
        r#"for="203.0.113.7:51000";proto=https;host=example.com"#,
    ),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "example.com"),
    ("x-forwarded-port", "443"),
    ("x-real-ip", "203.0.113.7"),
];

struct Case {
    name: &'static str,
    styles: &'static [Style],
    peer: &'static str,
    /// The PROXY header's source; `None` = the peer.
    client: Option<&'static str>,
    by: Option<&'static str>,
    proto: &'static str,
    port: u16,
    host: Option<&'static str>,
    prefix: Option<&'static str>,
    incoming: &'static [(&'static str, &'static str)],
    /// Every managed header's values, in order; a managed header not listed must be absent.
    expect: &'static [(&'static str, &'static str)],
}

const BASE: Case = Case {
    name: "",
    styles: BOTH,
    peer: "203.0.113.7:51000",
    client: None,
    by: None,
    proto: "https",
    port: 443,
    host: Some("example.com"),
    prefix: None,
    incoming: &[],
    expect: UNTRUSTED_V4,
};

const CASES: &[Case] = &[
    Case {
        name: "untrusted peer, no incoming headers",
        ..BASE
    },
    Case {
        name: "untrusted peer: forged headers in mixed case and repeated lines all replaced",
        incoming: FORGED,
        ..BASE
    },
    Case {
        name: "untrusted peer, only Forwarded enabled: forged X-Forwarded-* and X-Real-IP gone",
        styles: FWD_ONLY,
        incoming: FORGED,
        expect: &[(
            "forwarded",
            r#"for="203.0.113.7:51000";proto=https;host=example.com"#,
        )],
        ..BASE
    },
    Case {
        name: "untrusted peer, only X-Forwarded enabled: forged Forwarded gone",
        styles: X_ONLY,
        incoming: FORGED,
        expect: &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "203.0.113.7"),
        ],
        ..BASE
    },
    Case {
        name: "no style enabled: every managed header removed",
        styles: &[],
        incoming: FORGED,
        expect: &[],
        ..BASE
    },
    Case {
        name: "untrusted peer claiming a PROXY client: the TCP peer is what counts",
        client: Some("198.51.100.9:4000"),
        incoming: FORGED,
        ..BASE
    },
    Case {
        name: "trusted peer: chains extended, first hop's proto/host/port kept",
        peer: "10.0.0.2:40000",
        proto: "http",
        port: 8080,
        host: Some("app.example"),
        incoming: &[
            ("X-Forwarded-For", "198.51.100.1"),
            ("Forwarded", "for=198.51.100.1;proto=https;host=app.example"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example"),
            ("X-Forwarded-Port", "443"),
        ],
        expect: &[
            (
                "forwarded",
                r#"for=198.51.100.1;proto=https;host=app.example, for="10.0.0.2:40000";proto=http;host=app.example"#,
            ),
            ("x-forwarded-for", "198.51.100.1, 10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "198.51.100.1"),
        ],
        ..BASE
    },
    Case {
        name: "trusted peer that sent nothing: this hop described",
        peer: "10.0.0.2:40000",
        expect: &[
            (
                "forwarded",
                r#"for="10.0.0.2:40000";proto=https;host=example.com"#,
            ),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "10.0.0.2"),
        ],
        ..BASE
    },
    Case {
        name: "trusted peer with a PROXY-carried client, no incoming headers",
        peer: "10.0.0.2:40000",
        client: Some("198.51.100.9:4000"),
        expect: &[
            (
                "forwarded",
                r#"for="198.51.100.9:4000";proto=https;host=example.com"#,
            ),
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "198.51.100.9"),
        ],
        ..BASE
    },
    Case {
        // A TCP-mode balancer passes the client's bytes through: the headers are the
        // client's own, and the client is not a trusted proxy.
        name: "trusted peer with a PROXY-carried client: the client's headers are replaced",
        peer: "10.0.0.2:40000",
        client: Some("198.51.100.9:4000"),
        incoming: &[
            ("x-forwarded-for", "192.0.2.1"),
            ("forwarded", "for=192.0.2.1"),
            ("x-forwarded-proto", "http"),
            ("x-real-ip", "192.0.2.1"),
        ],
        expect: &[
            (
                "forwarded",
                r#"for="198.51.100.9:4000";proto=https;host=example.com"#,
            ),
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "198.51.100.9"),
        ],
        ..BASE
    },
    Case {
        // A proxy (trusted) behind a TCP balancer (trusted): its chains are kept.
        name: "trusted peer with a PROXY-carried client that is a trusted proxy itself",
        peer: "10.0.0.2:40000",
        client: Some("10.0.0.7:4000"),
        incoming: &[
            ("x-forwarded-for", "192.0.2.1"),
            ("forwarded", "for=192.0.2.1"),
        ],
        expect: &[
            (
                "forwarded",
                r#"for=192.0.2.1, for="10.0.0.7:4000";proto=https;host=example.com"#,
            ),
            ("x-forwarded-for", "192.0.2.1, 10.0.0.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "192.0.2.1"),
        ],
        ..BASE
    },
    Case {
        name: "trusted IPv4 peer with a PROXY-carried IPv6 client",
        peer: "10.0.0.2:40000",
        client: Some("[2001:db8::5]:443"),
        styles: &[Style::Forwarded, Style::XForwarded, Style::Forwarded],
        expect: &[
            (
                "forwarded",
                r#"for="[2001:db8::5]:443";proto=https;host=example.com"#,
            ),
            ("x-forwarded-for", "2001:db8::5"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "2001:db8::5"),
        ],
        ..BASE
    },
    Case {
        name: "untrusted IPv6 client: quoted and bracketed in Forwarded, bare in X-Forwarded-For",
        peer: "[2001:db8::1]:4711",
        incoming: FORGED,
        expect: &[
            (
                "forwarded",
                r#"for="[2001:db8::1]:4711";proto=https;host=example.com"#,
            ),
            ("x-forwarded-for", "2001:db8::1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "2001:db8::1"),
        ],
        ..BASE
    },
    Case {
        name: "trusted IPv6 peer extends an IPv6 chain",
        peer: "[2001:db8:ffff::2]:5000",
        incoming: &[
            ("Forwarded", r#"For="[2001:db8:cafe::17]:4711""#),
            ("X-Forwarded-For", "2001:db8:cafe::17"),
        ],
        expect: &[
            (
                "forwarded",
                r#"For="[2001:db8:cafe::17]:4711", for="[2001:db8:ffff::2]:5000";proto=https;host=example.com"#,
            ),
            ("x-forwarded-for", "2001:db8:cafe::17, 2001:db8:ffff::2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "2001:db8:cafe::17"),
        ],
        ..BASE
    },
    Case {
        name: "IPv4-mapped IPv6 peer is trusted by an IPv4 range and written as IPv4",
        peer: "[::ffff:10.0.0.2]:40000",
        styles: FWD_ONLY,
        incoming: &[("forwarded", "for=192.0.2.1")],
        expect: &[(
            "forwarded",
            r#"for=192.0.2.1, for="10.0.0.2:40000";proto=https;host=example.com"#,
        )],
        ..BASE
    },
    Case {
        name: "several Forwarded lines from a trusted peer merged in order",
        peer: "10.0.0.2:40000",
        styles: FWD_ONLY,
        incoming: &[
            ("Forwarded", "for=192.0.2.43, for=198.51.100.17"),
            ("forwarded", "for=unknown;proto=http"),
            ("FORWARDED", r#"  for="_gazonk" ,, "#),
        ],
        expect: &[(
            "forwarded",
            r#"for=192.0.2.43, for=198.51.100.17, for=unknown;proto=http, for="_gazonk", for="10.0.0.2:40000";proto=https;host=example.com"#,
        )],
        ..BASE
    },
    Case {
        name: "malformed Forwarded from a trusted peer kept verbatim, open quotes closed",
        peer: "10.0.0.2:40000",
        styles: FWD_ONLY,
        incoming: &[
            ("forwarded", r#"for="unterminated, by=x"#),
            ("forwarded", r#"for="a,b";by=x"#),
            ("forwarded", "garbage;;="),
            ("forwarded", r#"for="dangling\"#),
        ],
        expect: &[(
            "forwarded",
            r#"for="unterminated, by=x", for="a,b";by=x, garbage;;=, for="dangling\"", for="10.0.0.2:40000";proto=https;host=example.com"#,
        )],
        ..BASE
    },
    Case {
        name: "X-Real-IP skips trusted proxies from the right",
        peer: "10.0.0.2:40000",
        styles: X_ONLY,
        host: None,
        incoming: &[("x-forwarded-for", "192.0.2.9, 198.51.100.1,10.1.1.1")],
        expect: &[
            (
                "x-forwarded-for",
                "192.0.2.9, 198.51.100.1, 10.1.1.1, 10.0.0.2",
            ),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "198.51.100.1"),
        ],
        ..BASE
    },
    Case {
        name: "X-Real-IP walk stops at an entry that is not an address",
        peer: "10.0.0.2:40000",
        styles: X_ONLY,
        host: None,
        incoming: &[("x-forwarded-for", "198.51.100.1, unknown")],
        expect: &[
            ("x-forwarded-for", "198.51.100.1, unknown, 10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "10.0.0.2"),
        ],
        ..BASE
    },
    Case {
        name: "a trusted peer's single X-Real-IP is kept",
        peer: "10.0.0.2:40000",
        styles: X_ONLY,
        host: None,
        incoming: &[
            ("x-forwarded-for", "198.51.100.1"),
            ("X-Real-Ip", "192.0.2.77"),
        ],
        expect: &[
            ("x-forwarded-for", "198.51.100.1, 10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "192.0.2.77"),
        ],
        ..BASE
    },
    Case {
        name: "trusted peer sent only X-Forwarded-Proto: host and port not filled in",
        peer: "10.0.0.2:40000",
        styles: X_ONLY,
        proto: "http",
        port: 8080,
        incoming: &[("X-Forwarded-Proto", "https"), ("x-forwarded-proto", "wss")],
        expect: &[
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "wss"),
            ("x-real-ip", "10.0.0.2"),
        ],
        ..BASE
    },
    Case {
        name: "plain http listener on 8080",
        proto: "http",
        port: 8080,
        host: Some("example.com:8080"),
        incoming: &[("Host", "example.com:8080")],
        expect: &[
            (
                "forwarded",
                r#"for="203.0.113.7:51000";proto=http;host="example.com:8080""#,
            ),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "example.com:8080"),
            ("x-forwarded-port", "8080"),
            ("x-real-ip", "203.0.113.7"),
        ],
        ..BASE
    },
    Case {
        name: "IPv6 literal host quoted in Forwarded",
        styles: FWD_ONLY,
        host: Some("[2001:db8::10]:8443"),
        incoming: &[("host", "[2001:db8::10]:8443")],
        expect: &[(
            "forwarded",
            r#"for="203.0.113.7:51000";proto=https;host="[2001:db8::10]:8443""#,
        )],
        ..BASE
    },
    Case {
        name: "a host that is not a plain authority is left out",
        host: Some("example.com, evil\"x"),
        incoming: &[("Host", "example.com, evil\"x")],
        expect: &[
            ("forwarded", r#"for="203.0.113.7:51000";proto=https"#),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "203.0.113.7"),
        ],
        ..BASE
    },
    Case {
        name: "by= names the listener",
        styles: FWD_ONLY,
        by: Some("[2001:db8::443]:443"),
        expect: &[(
            "forwarded",
            r#"for="203.0.113.7:51000";by="[2001:db8::443]:443";proto=https;host=example.com"#,
        )],
        ..BASE
    },
    Case {
        name: "prefix configured, untrusted peer: ours replaces the forged one",
        styles: X_ONLY,
        prefix: Some("/app"),
        incoming: &[("X-Forwarded-Prefix", "/evil")],
        expect: &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/app"),
            ("x-real-ip", "203.0.113.7"),
        ],
        ..BASE
    },
    Case {
        name: "prefix configured, trusted peer's prefix joined with ours",
        styles: X_ONLY,
        peer: "10.0.0.2:40000",
        prefix: Some("/app/"),
        incoming: &[
            ("X-Forwarded-Prefix", "/edge/"),
            ("X-Forwarded-Host", "app.example"),
        ],
        expect: &[
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-host", "app.example"),
            ("x-forwarded-prefix", "/edge/app"),
            ("x-real-ip", "10.0.0.2"),
        ],
        ..BASE
    },
    Case {
        name: "prefix configured, trusted peer's prefix not one plain path: ours alone",
        styles: X_ONLY,
        peer: "10.0.0.2:40000",
        prefix: Some("/app"),
        incoming: &[
            ("X-Forwarded-Prefix", "/a, /b"),
            ("X-Forwarded-Port", "443"),
        ],
        expect: &[
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/app"),
            ("x-real-ip", "10.0.0.2"),
        ],
        ..BASE
    },
    Case {
        name: "no prefix configured: a trusted peer's prefix is kept",
        styles: X_ONLY,
        peer: "10.0.0.2:40000",
        incoming: &[("x-forwarded-prefix", "/edge")],
        expect: &[
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/edge"),
            ("x-real-ip", "10.0.0.2"),
        ],
        ..BASE
    },
];

fn policy(styles: &[Style]) -> Policy {
    Policy {
        styles: styles.to_vec(),
        trusted_proxies: TRUSTED.iter().map(|n| n.parse().unwrap()).collect(),
    }
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[test]
fn table() {
    for case in CASES {
        let peer: SocketAddr = case.peer.parse().unwrap();
        let hop = Hop {
            peer,
            client: case.client.map_or(peer, |c| c.parse().unwrap()),
            proto: case.proto,
            listener_port: case.port,
            by: case.by.map(|b| b.parse().unwrap()),
        };
        let mut headers = header_map(case.incoming);
        let policy = policy(case.styles);
        apply(&mut headers, &policy, &hop, case.host);
        // As the listener does for a route that strips `prefix`.
        if let Some(prefix) = case.prefix {
            route_prefix(&mut headers, &policy, prefix);
        }
        for name in managed() {
            let want: Vec<&str> = case
                .expect
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(
                values(&headers, name.as_str()),
                want,
                "{}: {name}",
                case.name
            );
        }
        for (name, _) in case.expect {
            assert!(
                managed().iter().any(|m| m == name),
                "{}: {name} is not managed",
                case.name
            );
        }
        // Everything else, Host included, passes untouched.
        for (name, _) in case.incoming {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            if managed().contains(&name) {
                continue;
            }
            let want: Vec<&str> = case
                .incoming
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_str()))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(
                values(&headers, name.as_str()),
                want,
                "{}: {name}",
                case.name
            );
        }
    }
}

#[test]
fn node_formats() {
    let cases: &[(&str, bool, &str)] = &[
        ("192.0.2.1:4711", false, "192.0.2.1"),
        ("192.0.2.1:4711", true, r#""192.0.2.1:4711""#),
        ("[2001:db8::1]:4711", false, r#""[2001:db8::1]""#),
        ("[2001:db8::1]:4711", true, r#""[2001:db8::1]:4711""#),
        (
            "[2001:db8:cafe::17]:4711",
            true,
            r#""[2001:db8:cafe::17]:4711""#,
        ),
        ("[::ffff:198.51.100.1]:80", false, "198.51.100.1"),
        ("[::ffff:198.51.100.1]:80", true, r#""198.51.100.1:80""#),
        ("[fe80::1%7]:80", true, r#""[fe80::1]:80""#),
        ("[::1]:0", false, r#""[::1]""#),
    ];
    for (addr, with_port, want) in cases {
        assert_eq!(node(addr.parse().unwrap(), *with_port), *want, "{addr}");
    }
}

#[test]
fn managed_names() {
    let names: Vec<&str> = managed().iter().map(HeaderName::as_str).collect();
    assert_eq!(
        names,
        [
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-real-ip",
        ]
    );
}

fn trusted_hop() -> Hop {
    let peer: SocketAddr = "10.0.0.2:40000".parse().unwrap();
    Hop {
        peer,
        client: peer,
        proto: "https",
        listener_port: 443,
        by: None,
    }
}

/// A long chain from a trusted peer loses its oldest elements, whole, and ends with ours.
#[test]
fn long_chains_drop_the_oldest_elements() {
    let xff: Vec<String> = (0..2000u32)
        .map(|i| format!("198.51.{}.{}", i / 256, i % 256))
        .collect();
    let fwd: Vec<String> = xff
        .iter()
        .map(|ip| format!("for={ip};proto=https"))
        .collect();
    let mut headers = HeaderMap::new();
    for (i, ip) in xff.iter().enumerate() {
        // Spread over many lines, as a chain of proxies appending lines would.
        let name = if i % 2 == 0 {
            "x-forwarded-for"
        } else {
            "X-Forwarded-For"
        };
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(ip).unwrap(),
        );
    }
    headers.insert("forwarded", HeaderValue::from_str(&fwd.join(",")).unwrap());
    apply(
        &mut headers,
        &policy(BOTH),
        &trusted_hop(),
        Some("example.com"),
    );

    let ours = r#"for="10.0.0.2:40000";proto=https;host=example.com"#;
    for (name, all, ours) in [
        ("x-forwarded-for", &xff, "10.0.0.2"),
        ("forwarded", &fwd, ours),
    ] {
        let got = values(&headers, name);
        assert_eq!(got.len(), 1, "{name}");
        let got = got[0];
        assert!(got.len() <= MAX_CHAIN_LEN, "{name}: {}", got.len());
        assert!(got.len() > MAX_CHAIN_LEN - 64, "{name}: {}", got.len());
        let elements: Vec<&str> = got.split(", ").collect();
        assert_eq!(elements.last(), Some(&ours), "{name}");
        let kept = &elements[..elements.len() - 1];
        assert_eq!(kept, &all[all.len() - kept.len()..], "{name}");
    }
    assert_eq!(values(&headers, "x-real-ip"), ["198.51.7.207"]);
}

#[test]
fn an_element_longer_than_the_limit_is_dropped() {
    let huge = format!("for=\"_{}\"", "a".repeat(MAX_CHAIN_LEN));
    let mut headers = header_map(&[("forwarded", "for=192.0.2.1")]);
    headers.append("forwarded", HeaderValue::from_str(&huge).unwrap());
    headers.append("forwarded", HeaderValue::from_static("for=192.0.2.2"));
    apply(&mut headers, &policy(FWD_ONLY), &trusted_hop(), None);
    assert_eq!(
        values(&headers, "forwarded"),
        [r#"for=192.0.2.2, for="10.0.0.2:40000";proto=https"#]
    );
}

/// Splits a `Forwarded` value the way a strict RFC 7239 reader does.
fn strict_elements(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let (mut in_quote, mut escaped) = (false, false);
    for &b in value {
        let last = out.last_mut().unwrap();
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
            last.push(b);
        } else if b == b',' {
            out.push(Vec::new());
        } else {
            in_quote = b == b'"';
            last.push(b);
        }
    }
    assert!(
        !in_quote,
        "open quote in {:?}",
        String::from_utf8_lossy(value)
    );
    out.into_iter()
        .map(|e| e.trim_ascii().to_vec())
        .filter(|e| !e.is_empty())
        .collect()
}

/// Any bytes a peer can send: no panic, no control characters out, and this hop's
/// `Forwarded` element always parses as the last element.
#[test]
fn arbitrary_values_never_break_our_element() {
    const ALPHABET: &[u8] = b"\"\\,;= \t\x7f\x80\xff:[]for_a1.";
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let policy = policy(BOTH);
    for round in 0..2000 {
        let mut headers = HeaderMap::new();
        for name in managed() {
            for _ in 0..next() % 3 {
                let len = usize::try_from(next() % 24).unwrap();
                let value: Vec<u8> = (0..len)
                    .map(|_| {
                        let i = usize::try_from(next()).unwrap() % ALPHABET.len();
                        ALPHABET[i]
                    })
                    .collect();
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    headers.append(name.clone(), value);
                }
            }
        }
        let mut hop = trusted_hop();
        if round % 2 == 1 {
            hop.peer = "[2001:db8::1]:4711".parse().unwrap();
        }
        apply(&mut headers, &policy, &hop, Some("h\"o\\st"));
        route_prefix(&mut headers, &policy, "/p");
        for value in headers.values() {
            assert!(
                !value
                    .as_bytes()
                    .iter()
                    .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f),
                "{value:?}"
            );
        }
        let fwd = values_bytes(&headers, "forwarded");
        assert_eq!(fwd.len(), 1);
        let elements = strict_elements(&fwd[0]);
        let ours = format!("for={};proto=https", node(hop.peer, true));
        assert_eq!(elements.last().map(Vec::as_slice), Some(ours.as_bytes()));
        assert_eq!(values(&headers, "x-forwarded-prefix").len(), 1);
    }
}

fn values_bytes(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect()
}
