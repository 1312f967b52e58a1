use super::*;

/// name, version, target, header lines, expected authority or refusal.
type HostCase<'a> = (
    &'a str,
    Version,
    &'a str,
    &'a [(&'a str, &'a str)],
    Result<&'a str, Refused>,
);
/// header lines, expected `Upgrade`.
type UpgradeCase<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in lines {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

fn judge(version: Version, uri: &str, lines: &[(&str, &str)]) -> Result<String, Refused> {
    let uri: Uri = uri.parse().unwrap();
    authority(&Method::GET, version, &uri, &headers(lines), "kc.test:8443")
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table")]
fn host_rules() {
    const HTTP_10: Version = Version::HTTP_10;
    const HTTP_11: Version = Version::HTTP_11;
    const HTTP_2: Version = Version::HTTP_2;
    let cases: &[HostCase] = &[
        (
            "1.1 with Host",
            HTTP_11,
            "/",
            &[("host", "a.test")],
            Ok("a.test"),
        ),
        (
            "1.1 Host with port",
            HTTP_11,
            "/",
            &[("host", "a.test:8443")],
            Ok("a.test:8443"),
        ),
        (
            "1.1 IPv6 Host",
            HTTP_11,
            "/",
            &[("host", "[2001:db8::1]:8443")],
            Ok("[2001:db8::1]:8443"),
        ),
        ("1.1 without Host", HTTP_11, "/", &[], Err(Refused::NoHost)),
        (
            "1.1 two Hosts",
            HTTP_11,
            "/",
            &[("host", "a.test"), ("host", "b.test")],
            Err(Refused::SeveralHosts),
        ),
        (
            "1.1 two equal Hosts",
            HTTP_11,
            "/",
            &[("host", "a.test"), ("host", "a.test")],
            Err(Refused::SeveralHosts),
        ),
        (
            "1.1 empty Host",
            HTTP_11,
            "/",
            &[("host", "")],
            Err(Refused::BadAuthority),
        ),
        (
            "1.1 Host with userinfo",
            HTTP_11,
            "/",
            &[("host", "user@a.test")],
            Err(Refused::BadAuthority),
        ),
        (
            "1.1 Host list",
            HTTP_11,
            "/",
            &[("host", "a.test, b.test")],
            Err(Refused::BadAuthority),
        ),
        (
            "1.1 Host with a path",
            HTTP_11,
            "/",
            &[("host", "a.test/x")],
            Err(Refused::BadAuthority),
        ),
        ("1.0 without Host", HTTP_10, "/", &[], Ok("kc.test:8443")),
        (
            "1.0 with Host",
            HTTP_10,
            "/",
            &[("host", "a.test")],
            Ok("a.test"),
        ),
        (
            "absolute form wins",
            HTTP_11,
            "http://b.test/x",
            &[("host", "a.test")],
            Ok("b.test"),
        ),
        (
            "absolute form with userinfo",
            HTTP_11,
            "http://u:p@b.test/x",
            &[("host", "a.test")],
            Err(Refused::BadAuthority),
        ),
        (
            "h2 authority wins over host",
            HTTP_2,
            "https://b.test/x",
            &[("host", "a.test")],
            Ok("b.test"),
        ),
        (
            "h2 host only",
            HTTP_2,
            "/x",
            &[("host", "a.test")],
            Ok("a.test"),
        ),
        ("h2 neither", HTTP_2, "/x", &[], Err(Refused::NoHost)),
        (
            "h2 authority with userinfo",
            HTTP_2,
            "https://user@b.test/x",
            &[],
            Err(Refused::BadAuthority),
        ),
        (
            "h2 leading space",
            HTTP_2,
            "https://b.test/x",
            &[("x-a", " v")],
            Err(Refused::Whitespace),
        ),
        (
            "h2 trailing tab",
            HTTP_2,
            "https://b.test/x",
            &[("x-a", "v\t")],
            Err(Refused::Whitespace),
        ),
        (
            "h2 inner space",
            HTTP_2,
            "https://b.test/x",
            &[("x-a", "v w")],
            Ok("b.test"),
        ),
    ];
    for (name, version, uri, lines, want) in cases {
        let got = judge(*version, uri, lines);
        assert_eq!(got.as_deref().map_err(|e| *e), *want, "{name}");
    }
}

#[test]
fn connect_is_refused() {
    let uri: Uri = "b.test:443".parse().unwrap();
    let h = headers(&[("host", "b.test:443")]);
    let got = authority(&Method::CONNECT, Version::HTTP_11, &uri, &h, "x");
    assert_eq!(got, Err(Refused::Connect));
    assert_eq!(Refused::Connect.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn only_websocket_upgrades_pass() {
    let cases: &[UpgradeCase] = &[
        (
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
            Some("websocket"),
        ),
        (
            &[
                ("connection", "keep-alive, upgrade"),
                ("upgrade", "WebSocket"),
            ],
            Some("WebSocket"),
        ),
        (
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
            ],
            None,
        ),
        (
            &[("connection", "Upgrade"), ("upgrade", "h2c, websocket")],
            Some("websocket"),
        ),
        (&[("connection", "Upgrade"), ("upgrade", "h2")], None),
        (&[("connection", "Upgrade"), ("upgrade", "TLS/1.2")], None),
        (&[("upgrade", "websocket")], None),
        (&[("connection", "upgrade")], None),
    ];
    for (lines, want) in cases {
        let got = websocket(&headers(lines));
        assert_eq!(
            got.as_ref().map(|v| v.to_str().unwrap()),
            *want,
            "{lines:?}"
        );
    }
}

#[test]
fn connection_cannot_name_what_sluice_manages() {
    let managed = Managed::new(&crate::config::client_cert::Names::default());
    let mut h = headers(&[
        (
            "connection",
            "X-Forwarded-For, Host, Client-Cert, x_ssl_client_cert, Content-Length, X-Foo, keep-alive",
        ),
        ("connection", "Forwarded, HTTP2-Settings, X-Bar"),
        ("host", "a.test"),
        ("content-length", "0"),
        ("x-forwarded-for", "198.18.0.9"),
        ("forwarded", "for=198.18.0.9"),
        ("x-foo", "1"),
        ("x-bar", "1"),
        ("x-kept", "1"),
        ("te", "trailers"),
        ("trailer", "x-forwarded-for"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic eDp5"),
    ]);
    remove_client_hop_by_hop(&mut h, &managed);
    let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "content-length",
            "forwarded",
            "host",
            "x-forwarded-for",
            "x-kept"
        ]
    );
}

#[test]
fn own_authority_names_the_listener() {
    let l4: SocketAddr = "198.18.0.1:8443".parse().unwrap();
    let l6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:198.18.0.1]:80".parse().unwrap();
    assert_eq!(own_authority(Some("kc.test"), l4, true), "kc.test:8443");
    assert_eq!(own_authority(None, l4, true), "198.18.0.1:8443");
    assert_eq!(own_authority(None, l6, true), "[2001:db8::1]");
    assert_eq!(own_authority(None, l6, false), "[2001:db8::1]:443");
    assert_eq!(own_authority(None, mapped, false), "198.18.0.1");
}

#[test]
fn a_response_keeps_its_trailer_list_unless_its_connection_names_it() {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("trailer", "X-Checksum"),
        ("connection", "keep-alive, X-Backend-Hop"),
        ("x-backend-hop", "1"),
        ("transfer-encoding", "chunked"),
        ("keep-alive", "timeout=5"),
        ("x-kept", "1"),
    ] {
        h.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    remove_response_hop_by_hop(&mut h);
    let left: Vec<(&str, &str)> = h
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(left, [("x-kept", "1"), ("trailer", "X-Checksum")]);
    let mut named = HeaderMap::new();
    named.append(header::CONNECTION, HeaderValue::from_static("Trailer"));
    named.append(header::TRAILER, HeaderValue::from_static("X-Checksum"));
    remove_response_hop_by_hop(&mut named);
    assert!(named.is_empty(), "{named:?}");
}
