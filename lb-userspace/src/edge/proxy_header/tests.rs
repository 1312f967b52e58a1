//! Real TCP connections on 127.0.0.1: a sender writes (parts of) a header and a payload, the
//! receiving side runs [`read`] and then reads what is left of the stream.

use std::{
    net::{Ipv6Addr, SocketAddr},
    sync::atomic::Ordering,
    time::Duration,
};

use lb_common::proxy::parse::{self, write_v1, write_v2, Command};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{client, read, Counters, Error};
use crate::config::ProxyProtocol;

const PAYLOAD: &[u8] = b"\x16\x03\x01 the TLS ClientHello that follows";
const LONG: Duration = Duration::from_secs(5);
/// Short enough that the timeout case runs quickly, long enough for loopback writes.
const SHORT: Duration = Duration::from_millis(300);

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    let (client, server) = tokio::join!(TcpStream::connect(addr), l.accept());
    (client.expect("connect"), server.expect("accept").0)
}

/// Sends `parts` one write each (with a pause between, so they arrive separately), then reads
/// the header with `timeout` and returns its result and everything the stream still holds.
async fn exchange(
    parts: Vec<Vec<u8>>,
    timeout: Duration,
) -> (Result<Option<SocketAddr>, Error>, Vec<u8>) {
    let (mut client, mut server) = pair().await;
    let sender = tokio::spawn(async move {
        for p in parts {
            client.write_all(&p).await.expect("write");
            client.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client.shutdown().await.expect("shutdown");
        client
    });
    let result = read(&mut server, timeout).await;
    let mut rest = Vec::new();
    if result.is_ok() {
        server.read_to_end(&mut rest).await.expect("read the rest");
    }
    drop(sender.await.expect("sender"));
    (result, rest)
}

fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = [0u8; 107];
    let n = write_v1(&mut out, source, destination).expect("v1");
    out[..n].to_vec()
}

fn v2(command: Command, source: SocketAddr, destination: SocketAddr, crc: bool) -> Vec<u8> {
    let mut out = vec![0u8; 512];
    let n = write_v2(
        &mut out,
        command,
        source,
        destination,
        &[(0x04, b"no-op tlv")],
        crc,
    )
    .expect("v2");
    out.truncate(n);
    out
}

fn with_payload(mut header: Vec<u8>) -> Vec<Vec<u8>> {
    header.extend_from_slice(PAYLOAD);
    vec![header]
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[tokio::test]
async fn v1_tcp4_names_the_client_and_leaves_the_payload() {
    let h = v1(sa("203.0.113.7:51000"), sa("198.19.0.10:443"));
    let (r, rest) = exchange(with_payload(h), LONG).await;
    assert_eq!(r.expect("accepted"), Some(sa("203.0.113.7:51000")));
    assert_eq!(rest, PAYLOAD);
}

#[tokio::test]
async fn v1_tcp6_names_the_client() {
    let h = v1(sa("[2001:db8::7]:4711"), sa("[2001:db8::10]:443"));
    let (r, rest) = exchange(with_payload(h), LONG).await;
    assert_eq!(r.expect("accepted"), Some(sa("[2001:db8::7]:4711")));
    assert_eq!(rest, PAYLOAD);
}

#[tokio::test]
async fn v1_unknown_names_no_client() {
    let (r, rest) = exchange(with_payload(b"PROXY UNKNOWN\r\n".to_vec()), LONG).await;
    assert_eq!(r.expect("accepted"), None);
    assert_eq!(rest, PAYLOAD);
}

#[tokio::test]
async fn v2_tcp4_and_tcp6_name_the_client_and_leave_the_payload() {
    for (src, dst) in [
        (sa("203.0.113.7:51000"), sa("198.19.0.10:443")),
        (
            SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7).into(), 4711),
            sa("[2001:db8::10]:443"),
        ),
    ] {
        for crc in [false, true] {
            let h = v2(Command::Proxy, src, dst, crc);
            let (r, rest) = exchange(with_payload(h), LONG).await;
            assert_eq!(r.expect("accepted"), Some(src), "{src} crc {crc}");
            assert_eq!(rest, PAYLOAD, "{src} crc {crc}");
        }
    }
}

#[tokio::test]
async fn v2_local_names_no_client() {
    let h = v2(Command::Local, sa("0.0.0.0:0"), sa("0.0.0.0:0"), false);
    let (r, rest) = exchange(with_payload(h), LONG).await;
    assert_eq!(r.expect("accepted"), None);
    assert_eq!(rest, PAYLOAD);
}

#[tokio::test]
async fn a_header_split_over_many_writes_is_reassembled() {
    let src = sa("203.0.113.7:51000");
    let dst = sa("198.19.0.10:443");
    for header in [v1(src, dst), v2(Command::Proxy, src, dst, true)] {
        // One byte at a time for the first 20, then the rest with the payload in one write.
        let mut parts: Vec<Vec<u8>> = header[..20].iter().map(|&b| vec![b]).collect();
        let mut tail = header[20..].to_vec();
        tail.extend_from_slice(PAYLOAD);
        parts.push(tail);
        let (r, rest) = exchange(parts, LONG).await;
        assert_eq!(r.expect("accepted"), Some(src));
        assert_eq!(rest, PAYLOAD);
    }
}

#[tokio::test]
async fn a_v1_line_split_between_cr_and_lf_ends_at_the_lf() {
    let h = v1(sa("203.0.113.7:51000"), sa("198.19.0.10:443"));
    let cut = h.len() - 1;
    let mut tail = h[cut..].to_vec();
    tail.extend_from_slice(PAYLOAD);
    let (r, rest) = exchange(vec![h[..cut].to_vec(), tail], LONG).await;
    assert_eq!(r.expect("accepted"), Some(sa("203.0.113.7:51000")));
    assert_eq!(rest, PAYLOAD);
}

#[tokio::test]
async fn garbage_and_malformed_headers_are_refused() {
    let src = sa("203.0.113.7:51000");
    let dst = sa("198.19.0.10:443");
    let mut bad_crc = v2(Command::Proxy, src, dst, true);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    let mut bad_version = v2(Command::Proxy, src, dst, false);
    bad_version[12] = 0x31;
    let cases: Vec<(&str, Vec<u8>, parse::Error)> = vec![
        (
            "a TLS ClientHello",
            PAYLOAD.to_vec(),
            parse::Error::NotProxy,
        ),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            parse::Error::NotProxy,
        ),
        (
            "v1 with a bad protocol",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            parse::Error::V1BadProtocol,
        ),
        (
            "v1 with a lone LF",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
            parse::Error::V1MissingCrlf,
        ),
        (
            "v1 line without an end",
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat(),
            parse::Error::V1TooLong,
        ),
        (
            "v2 with a bad CRC32C",
            bad_crc,
            parse::Error::Crc32cMismatch,
        ),
        ("v2 with version 3", bad_version, parse::Error::BadVersion),
    ];
    for (name, bytes, expected) in cases {
        let (r, _) = exchange(vec![bytes], LONG).await;
        match r {
            Err(Error::Invalid(e)) => assert_eq!(e, expected, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_header_cut_short_by_the_sender_closing_is_refused() {
    let h = v2(
        Command::Proxy,
        sa("203.0.113.7:51000"),
        sa("198.19.0.10:443"),
        false,
    );
    for cut in [3, 15, 16, 20] {
        let (r, _) = exchange(vec![h[..cut].to_vec()], LONG).await;
        assert!(
            matches!(r, Err(Error::Closed(n)) if n == cut),
            "{cut}: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_header_that_stops_arriving_times_out() {
    let (mut client, mut server) = pair().await;
    let h = v1(sa("203.0.113.7:51000"), sa("198.19.0.10:443"));
    client.write_all(&h[..10]).await.expect("write");
    let started = std::time::Instant::now();
    let r = read(&mut server, SHORT).await;
    assert!(matches!(r, Err(Error::Timeout(t)) if t == SHORT), "{r:?}");
    assert!(started.elapsed() >= SHORT);
    // Nothing at all is just as late.
    let (_client, mut server) = pair().await;
    let r = read(&mut server, SHORT).await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    drop(client);
}

#[tokio::test]
async fn the_largest_v2_header_is_read_whole_and_no_further() {
    // A header whose TLVs fill the 16-bit length: 16 + 65535 bytes.
    let src = sa("203.0.113.7:51000");
    let dst = sa("198.19.0.10:443");
    let tlv_len = usize::from(u16::MAX) - 12 - 3;
    let value = vec![b'a'; tlv_len];
    let mut out = vec![0u8; 16 + usize::from(u16::MAX)];
    let n =
        write_v2(&mut out, Command::Proxy, src, dst, &[(0xE0, &value)], false).expect("largest v2");
    assert_eq!(n, out.len());
    let (r, rest) = exchange(with_payload(out), LONG).await;
    assert_eq!(r.expect("accepted"), Some(src));
    assert_eq!(rest, PAYLOAD);
}

/// Runs [`client`] on a connection whose sender wrote `bytes`; returns its result, the
/// counters, and what the stream still holds after it (when it succeeded).
async fn policed(
    policy: ProxyProtocol,
    trusted: bool,
    bytes: &[u8],
) -> (Result<SocketAddr, Error>, Counters, Vec<u8>) {
    let (mut sender, mut server) = pair().await;
    sender.write_all(bytes).await.expect("write");
    sender.shutdown().await.expect("shutdown");
    let peer = server.peer_addr().expect("peer");
    let counters = Counters::default();
    let r = client(&mut server, peer, policy, trusted, &counters, LONG)
        .await
        .map(|c| c.addr);
    let mut rest = Vec::new();
    if r.is_ok() {
        server.read_to_end(&mut rest).await.expect("read the rest");
    }
    (r, counters, rest)
}

fn counts(c: &Counters) -> [u64; 4] {
    [&c.accepted, &c.local, &c.invalid, &c.untrusted].map(|a| a.load(Ordering::Relaxed))
}

#[tokio::test]
async fn the_policy_decides_who_is_read_and_who_is_refused() {
    let src = sa("203.0.113.7:51000");
    let header = v2(Command::Proxy, src, sa("198.19.0.10:443"), false);
    let mut with_payload = header.clone();
    with_payload.extend_from_slice(PAYLOAD);
    let local = v2(Command::Local, src, src, false);
    for policy in [ProxyProtocol::Optional, ProxyProtocol::Required] {
        // A trusted peer's header is honoured and taken off the stream.
        let (r, c, rest) = policed(policy, true, &with_payload).await;
        assert_eq!(r.expect("served"), src, "{policy:?}");
        assert_eq!(rest, PAYLOAD, "{policy:?}");
        assert_eq!(counts(&c), [1, 0, 0, 0], "{policy:?}");
        // LOCAL: the peer is the client.
        let (r, c, _) = policed(policy, true, &local).await;
        assert_ne!(r.expect("served"), src, "{policy:?}");
        assert_eq!(counts(&c), [0, 1, 0, 0], "{policy:?}");
        // A trusted peer without a header is closed, under optional too.
        let (r, c, _) = policed(policy, true, PAYLOAD).await;
        assert!(matches!(r, Err(Error::Invalid(_))), "{policy:?}: {r:?}");
        assert_eq!(counts(&c), [0, 0, 1, 0], "{policy:?}");
    }
    // An untrusted peer's header is never read: under required the connection is refused,
    // under optional it is a direct client whose bytes all stay in the stream.
    let (r, c, _) = policed(ProxyProtocol::Required, false, &with_payload).await;
    assert!(matches!(r, Err(Error::Untrusted)), "{r:?}");
    assert_eq!(counts(&c), [0, 0, 0, 1]);
    let (r, c, rest) = policed(ProxyProtocol::Optional, false, &with_payload).await;
    assert_ne!(r.expect("served as direct"), src);
    assert_eq!(rest, with_payload);
    assert_eq!(counts(&c), [0, 0, 0, 0]);
    // Off: nothing is read, even from a trusted peer.
    let (r, c, rest) = policed(ProxyProtocol::Off, true, &with_payload).await;
    assert_ne!(r.expect("served"), src);
    assert_eq!(rest, with_payload);
    assert_eq!(counts(&c), [0, 0, 0, 0]);
}
