//! Spec examples, every refusal, the kernel's verdict rules, and the fuzz invariants on
//! deterministic random and mutated inputs.

extern crate std;

use core::net::SocketAddr;
use std::{string::ToString, vec, vec::Vec};

use super::{tlv::*, *};
use crate::proxy::{V2_FAM_TCP4, V2_FAM_TCP6, V2_FAM_UDP4, V2_FAM_UNIX_STREAM, V2_SIGNATURE};

const PROXY: u8 = 0x21;
const LOCAL: u8 = 0x20;
/// 192.0.2.1:56324 -> 198.51.100.2:443.
const TCP4_BLOCK: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb];

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A v2 header whose length field covers `body` exactly.
fn v2(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
    v2_len(ver_cmd, family, u16::try_from(body.len()).unwrap(), body)
}

fn v2_len(ver_cmd: u8, family: u8, len: u16, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[ver_cmd, family]);
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn tlv(t: u8, v: &[u8]) -> Vec<u8> {
    let mut out = vec![t];
    out.extend_from_slice(&u16::try_from(v.len()).unwrap().to_be_bytes());
    out.extend_from_slice(v);
    out
}

fn tcp4_with(tlvs: &[u8]) -> Vec<u8> {
    let mut body = TCP4_BLOCK.to_vec();
    body.extend_from_slice(tlvs);
    v2(PROXY, V2_FAM_TCP4, &body)
}

fn tcp6_block() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(
        &"2001:db8::1"
            .parse::<core::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    b.extend_from_slice(
        &"2001:db8::2"
            .parse::<core::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    b.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]);
    b
}

fn v2_header(buf: &[u8]) -> (V2Header<'_>, usize) {
    match parse(buf) {
        Ok(Parsed {
            header: Header::V2(h),
            len,
        }) => (h, len),
        other => panic!("not a v2 header: {other:?}"),
    }
}

fn v1_header(buf: &[u8]) -> Result<(V1Header, usize), Error> {
    parse(buf).map(|p| match p.header {
        Header::V1(h) => (h, p.len),
        Header::V2(h) => panic!("v2 for a v1 line: {h:?}"),
    })
}

fn tcp(src: &str, dst: &str) -> V1Header {
    V1Header::Tcp {
        source: sa(src),
        destination: sa(dst),
    }
}

// ---- v1 ----

#[test]
fn v1_tcp4_tcp6_unknown() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
    assert_eq!(
        v1_header(line),
        Ok((tcp("192.0.2.1:56324", "198.51.100.2:443"), 45))
    );
    let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n";
    assert_eq!(
        v1_header(line),
        Ok((tcp("[2001:db8::1]:56324", "[2001:db8::2]:443"), line.len()))
    );
    assert_eq!(v1_header(b"PROXY UNKNOWN\r\n"), Ok((V1Header::Unknown, 15)));
    // Whatever follows UNKNOWN is ignored, valid or not.
    let line = b"PROXY UNKNOWN whatever \xff here\r\nrest";
    assert_eq!(v1_header(line), Ok((V1Header::Unknown, line.len() - 4)));
    assert_eq!(v1_header(b"PROXY UNKNOWNX\r\n"), Err(Error::V1BadProtocol));
}

#[test]
fn v1_longest_lines() {
    let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let tcp6 = std::format!("PROXY TCP6 {f} {f} 65535 65535\r\n");
    assert_eq!(tcp6.len(), 104);
    assert!(v1_header(tcp6.as_bytes()).is_ok());
    let longest = std::format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n");
    assert_eq!(longest.len(), v1::V1_MAX_LEN);
    assert_eq!(v1_header(longest.as_bytes()), Ok((V1Header::Unknown, 107)));
    // One byte more and the CRLF ends past the limit.
    let too_long = std::format!("PROXY UNKNOWN {f} {f} 65535 655350\r\n");
    assert_eq!(v1_header(too_long.as_bytes()), Err(Error::V1TooLong));
    // Without a CRLF: wait up to 106 bytes, refuse at 107.
    let no_crlf = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
    assert_eq!(parse(&no_crlf[..106]), Err(Error::Incomplete));
    assert_eq!(parse(&no_crlf[..107]), Err(Error::V1TooLong));
    // A CR in the last allowed byte whose LF would be the 108th.
    let mut cr_late = no_crlf[..106].to_vec();
    cr_late.extend_from_slice(b"\r\n");
    assert_eq!(parse(&cr_late), Err(Error::V1TooLong));
}

/// Ports: 0..=65535, digits only, no leading zero (the spec's rule against octal readings).
#[test]
fn v1_ports() {
    let with = |sport: &str| {
        let l = std::format!("PROXY TCP4 192.0.2.1 198.51.100.2 {sport} 443\r\n");
        v1_header(l.as_bytes()).map(|(h, _)| h)
    };
    assert_eq!(with("0"), Ok(tcp("192.0.2.1:0", "198.51.100.2:443")));
    assert_eq!(
        with("65535"),
        Ok(tcp("192.0.2.1:65535", "198.51.100.2:443"))
    );
    assert_eq!(with("65536"), Err(Error::V1BadPort));
    assert_eq!(with("99999"), Err(Error::V1BadPort));
    assert_eq!(with("100000"), Err(Error::V1BadPort));
    assert_eq!(with("080"), Err(Error::V1BadPort));
    assert_eq!(with("00"), Err(Error::V1BadPort));
    assert_eq!(with("+80"), Err(Error::V1BadPort));
    assert_eq!(with("8a"), Err(Error::V1BadPort));
    assert_eq!(with(""), Err(Error::V1BadSyntax));
}

#[test]
fn v1_addresses() {
    let with = |proto: &str, src: &str, dst: &str| {
        let l = std::format!("PROXY {proto} {src} {dst} 1 2\r\n");
        v1_header(l.as_bytes()).map(|(h, _)| h)
    };
    assert_eq!(
        with("TCP4", "192.168.001.1", "10.0.0.1"),
        Err(Error::V1BadAddress)
    );
    assert_eq!(
        with("TCP4", "256.0.0.1", "10.0.0.1"),
        Err(Error::V1BadAddress)
    );
    assert_eq!(with("TCP4", "10.0.0", "10.0.0.1"), Err(Error::V1BadAddress));
    assert_eq!(with("TCP4", "::1", "10.0.0.1"), Err(Error::V1BadAddress));
    assert_eq!(with("TCP6", "10.0.0.1", "::1"), Err(Error::V1BadAddress));
    assert_eq!(with("TCP6", "::1", "1::2::3"), Err(Error::V1BadAddress));
    assert_eq!(
        with("TCP6", "::ffff:10.0.0.1", "::1"),
        Ok(tcp("[::ffff:10.0.0.1]:1", "[::1]:2"))
    );
}

#[test]
fn v1_syntax() {
    let cases: [(&[u8], Error); 11] = [
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", Error::V1BadProtocol),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", Error::V1BadProtocol),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Error::V1BadProtocol),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", Error::V1BadSyntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", Error::V1BadSyntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", Error::V1BadSyntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Error::V1BadSyntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Error::V1MissingCrlf),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", Error::V1MissingCrlf),
        (b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", Error::V1MissingCrlf),
        (b"PROXY \r\n", Error::V1BadProtocol),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line).map(|_| ()), Err(want), "{line:?}");
    }
    assert_eq!(
        parse(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        Err(Error::NotProxy)
    );
    assert_eq!(parse(b"PROXYTCP4"), Err(Error::NotProxy));
}

#[test]
fn v1_incomplete() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    for k in 0..line.len() {
        assert_eq!(parse(&line[..k]), Err(Error::Incomplete), "{k}");
    }
}

#[test]
fn v1_writer() {
    let mut out = [0u8; 107];
    let n = write_v1(&mut out, sa("192.0.2.1:56324"), sa("198.51.100.2:443")).unwrap();
    assert_eq!(
        &out[..n],
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
    );
    let n = write_v1(&mut out, sa("[2001:db8::1]:1"), sa("[2001:db8::2]:2")).unwrap();
    assert_eq!(&out[..n], b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n");
    assert_eq!(
        write_v1(&mut out, sa("192.0.2.1:1"), sa("[::1]:2")),
        Err(Error::MixedFamilies)
    );
    assert_eq!(
        write_v1(&mut out[..20], sa("192.0.2.1:1"), sa("192.0.2.2:2")),
        Err(Error::BufferTooSmall)
    );
}

// ---- v2 framing ----

#[test]
fn v2_tcp4_and_tcp6() {
    let mut buf = tcp4_with(&[]);
    buf.extend_from_slice(b"payload");
    let (h, len) = v2_header(&buf);
    assert_eq!(len, 28);
    assert_eq!(h.command, Command::Proxy);
    assert_eq!(h.transport, Transport::Stream);
    assert_eq!(
        h.addresses,
        Addresses::Inet {
            source: sa("192.0.2.1:56324"),
            destination: sa("198.51.100.2:443")
        }
    );
    assert!(h.tlvs.as_bytes().is_empty());

    let buf = v2(PROXY, V2_FAM_TCP6, &tcp6_block());
    let (h, len) = v2_header(&buf);
    assert_eq!(len, 52);
    assert_eq!(
        h.addresses,
        Addresses::Inet {
            source: sa("[2001:db8::1]:56324"),
            destination: sa("[2001:db8::2]:443")
        }
    );
}

#[test]
fn v2_udp_and_unix() {
    let udp = v2(PROXY, V2_FAM_UDP4, &TCP4_BLOCK);
    let (h, _) = v2_header(&udp);
    assert_eq!(h.transport, Transport::Datagram);
    assert!(matches!(h.addresses, Addresses::Inet { .. }));

    let mut block = [0u8; 216];
    block[..9].copy_from_slice(b"/run/a.sk");
    block[108..117].copy_from_slice(b"/run/b.sk");
    let buf = v2(PROXY, V2_FAM_UNIX_STREAM, &block);
    let (h, len) = v2_header(&buf);
    assert_eq!(len, 232);
    assert_eq!(h.transport, Transport::Stream);
    let Addresses::Unix {
        source,
        destination,
    } = h.addresses
    else {
        panic!("{:?}", h.addresses)
    };
    assert_eq!(&source[..10], b"/run/a.sk\0");
    assert_eq!(&destination[..10], b"/run/b.sk\0");
}

/// LOCAL: the block is discarded whatever its family, length or content.
#[test]
fn v2_local() {
    let local = v2(LOCAL, 0x00, &[]);
    let (h, len) = v2_header(&local);
    assert_eq!(len, 16);
    assert_eq!(h.command, Command::Local);
    assert_eq!(h.addresses, Addresses::Unspec);
    for (family, body) in [
        (V2_FAM_TCP4, TCP4_BLOCK.to_vec()),
        (0xff, vec![1, 2, 3]),
        (V2_FAM_TCP6, vec![0xff; 5]),
        (0x00, tlv(PP2_TYPE_CRC32C, &[0, 0, 0, 1])),
    ] {
        let buf = v2(LOCAL, family, &body);
        let (h, len) = v2_header(&buf);
        assert_eq!(len, 16 + body.len());
        assert_eq!(h.addresses, Addresses::Unspec);
        assert_eq!(h.transport, Transport::Unspec);
        assert!(h.tlvs.as_bytes().is_empty());
    }
}

#[test]
fn v2_refusals() {
    assert_eq!(
        parse(&v2(0x31, V2_FAM_TCP4, &TCP4_BLOCK)),
        Err(Error::BadVersion)
    );
    assert_eq!(
        parse(&v2(0x11, V2_FAM_TCP4, &TCP4_BLOCK)),
        Err(Error::BadVersion)
    );
    assert_eq!(
        parse(&v2(0x22, V2_FAM_TCP4, &TCP4_BLOCK)),
        Err(Error::BadCommand)
    );
    assert_eq!(
        parse(&v2(0x2f, V2_FAM_TCP4, &TCP4_BLOCK)),
        Err(Error::BadCommand)
    );
    assert_eq!(parse(&v2(PROXY, 0x00, &[])), Err(Error::BadFamily));
    assert_eq!(parse(&v2(PROXY, 0x13, &TCP4_BLOCK)), Err(Error::BadFamily));
    assert_eq!(parse(&v2(PROXY, 0x41, &TCP4_BLOCK)), Err(Error::BadFamily));
    assert_eq!(
        parse(&v2(PROXY, V2_FAM_TCP4, &TCP4_BLOCK[..11])),
        Err(Error::AddressTooShort)
    );
    assert_eq!(
        parse(&v2(PROXY, V2_FAM_TCP6, &TCP4_BLOCK)),
        Err(Error::AddressTooShort)
    );
    assert_eq!(
        parse(&v2(PROXY, V2_FAM_UNIX_STREAM, &[0; 215])),
        Err(Error::AddressTooShort)
    );
    // A length past the end of the buffer waits for more bytes.
    assert_eq!(
        parse(&v2_len(PROXY, V2_FAM_TCP4, 13, &TCP4_BLOCK)),
        Err(Error::Incomplete)
    );
    // The 16 fixed bytes come before any judgement, a bad version included.
    let bad = v2(0x31, V2_FAM_TCP4, &TCP4_BLOCK);
    for k in 0..16 {
        assert_eq!(parse(&bad[..k]), Err(Error::Incomplete), "{k}");
    }
    let mut off = tcp4_with(&[]);
    off[11] ^= 1;
    assert_eq!(parse(&off), Err(Error::NotProxy));
}

#[test]
fn v2_prefixes_are_incomplete() {
    let buf = tcp4_with(&tlv(PP2_TYPE_ALPN, b"h2"));
    for k in 0..buf.len() {
        assert_eq!(parse(&buf[..k]), Err(Error::Incomplete), "{k}");
    }
    assert!(parse(&buf).is_ok());
}

// ---- TLVs ----

#[test]
fn tlv_every_type() {
    let mut ssl = vec![0x07, 0, 0, 0, 0];
    for (t, v) in [
        (PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3".as_slice()),
        (PP2_SUBTYPE_SSL_CN, b"client.example"),
        (PP2_SUBTYPE_SSL_CIPHER, b"TLS_AES_128_GCM_SHA256"),
        (PP2_SUBTYPE_SSL_SIG_ALG, b"RSA-SHA256"),
        (PP2_SUBTYPE_SSL_KEY_ALG, b"RSA2048"),
        (0x26, b"secp256r1"),
    ] {
        ssl.extend_from_slice(&tlv(t, v));
    }
    let tlvs = [
        tlv(PP2_TYPE_ALPN, b"h2"),
        tlv(PP2_TYPE_AUTHORITY, b"example.com"),
        tlv(PP2_TYPE_NOOP, &[0; 3]),
        tlv(PP2_TYPE_UNIQUE_ID, &[9; 128]),
        tlv(PP2_TYPE_SSL, &ssl),
        tlv(PP2_TYPE_NETNS, b"blue"),
        tlv(0xe0, b"custom"),
    ]
    .concat();
    let buf = tcp4_with(&tlvs);
    let (h, len) = v2_header(&buf);
    assert_eq!(len, buf.len());
    let got: Vec<Tlv<'_>> = h.tlvs.clone().map(Result::unwrap).collect();
    assert_eq!(got.len(), 7);
    assert_eq!(got[0], Tlv::Alpn(b"h2"));
    assert_eq!(got[1], Tlv::Authority("example.com"));
    assert_eq!(got[2], Tlv::Noop);
    assert_eq!(got[3], Tlv::UniqueId(&[9; 128]));
    let Tlv::Ssl {
        client,
        verify,
        sub,
    } = got[4].clone()
    else {
        panic!("{:?}", got[4])
    };
    assert_eq!((client, verify), (0x07, 0));
    let sub: Vec<SslTlv<'_>> = sub.map(Result::unwrap).collect();
    assert_eq!(
        sub,
        [
            SslTlv::Version("TLSv1.3"),
            SslTlv::Cn("client.example"),
            SslTlv::Cipher("TLS_AES_128_GCM_SHA256"),
            SslTlv::SigAlg("RSA-SHA256"),
            SslTlv::KeyAlg("RSA2048"),
            SslTlv::Other(0x26, b"secp256r1"),
        ]
    );
    assert_eq!(got[5], Tlv::NetNs("blue"));
    assert_eq!(got[6], Tlv::Other(0xe0, b"custom"));
    assert_eq!(h.tlvs.raw().count(), 7);
}

#[test]
fn tlv_refusals() {
    let cases = [
        // Value runs 6 bytes past the header.
        ([1, 0, 10, b'h', b'2', 0, 0].to_vec(), Error::TlvOverrun),
        // Not even a whole type and length.
        (vec![1, 0], Error::TlvOverrun),
        (tlv(PP2_TYPE_CRC32C, &[0; 3]), Error::Crc32cLength),
        (tlv(PP2_TYPE_UNIQUE_ID, &[0; 129]), Error::UniqueIdTooLong),
        (tlv(PP2_TYPE_SSL, &[1, 0, 0, 0]), Error::SslTooShort),
        (
            tlv(PP2_TYPE_AUTHORITY, b"\xffx"),
            Error::TlvNotUtf8(PP2_TYPE_AUTHORITY),
        ),
        (
            tlv(PP2_TYPE_NETNS, b"\xc3"),
            Error::TlvNotUtf8(PP2_TYPE_NETNS),
        ),
        (
            tlv(
                PP2_TYPE_SSL,
                &[[1, 0, 0, 0, 0].as_slice(), &[0x22, 0, 9, b'x']].concat(),
            ),
            Error::TlvOverrun,
        ),
        (
            tlv(
                PP2_TYPE_SSL,
                &[[1, 0, 0, 0, 0].as_slice(), &tlv(0x22, b"\xff")].concat(),
            ),
            Error::TlvNotUtf8(PP2_SUBTYPE_SSL_CN),
        ),
    ];
    for (tlvs, want) in cases {
        let buf = tcp4_with(&tlvs);
        assert_eq!(parse(&buf), Err(want), "{tlvs:?}");
        assert!(want.is_tlv());
        // The framing is fine, and so the kernel lets it through.
        assert!(parse_framing(&buf).is_ok());
        assert!(matches!(
            segment_verdict(&buf),
            SegmentVerdict::Proxy { .. }
        ));
    }
    // The iterator yields the error, then stops.
    let mut it = Tlvs::new(&[1, 0, 0, 2, 0, 9]);
    assert_eq!(it.next(), Some(Ok(Tlv::Alpn(&[]))));
    assert_eq!(it.next(), Some(Err(Error::TlvOverrun)));
    assert_eq!(it.next(), None);
}

#[test]
fn crc32c_valid_and_corrupted() {
    let mut out = [0u8; 256];
    let alpn: &[u8] = b"h2";
    let tlvs = [(PP2_TYPE_ALPN, alpn)];
    let src = sa("192.0.2.1:56324");
    let dst = sa("198.51.100.2:443");
    let n = write_v2(&mut out, Command::Proxy, src, dst, &tlvs, true).unwrap();
    let buf = &out[..n];
    let (h, _) = v2_header(buf);
    let sent = h.tlvs.clone().find_map(|t| match t {
        Ok(Tlv::Crc32c(c)) => Some(c),
        _ => None,
    });
    // The checksum of the header with the field zeroed, computed here the long way.
    let mut zeroed = buf.to_vec();
    zeroed[n - 4..].fill(0);
    let want = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&zeroed);
    assert_eq!(sent, Some(want));

    // Every flip is caught, but for the CRC TLV's own type byte: another type leaves a header
    // without a checksum, which the protocol cannot tell from one sent that way.
    for i in (0..n).filter(|&i| i != n - 7) {
        let mut bad = buf.to_vec();
        bad[i] ^= 0x40;
        assert_ne!(parse(&bad).map(|p| p.len), Ok(n), "flip at {i}");
    }
    let mut bad = buf.to_vec();
    bad[17] ^= 1; // an address byte
    assert_eq!(parse(&bad), Err(Error::Crc32cMismatch));
    let mut bad = buf.to_vec();
    bad[n - 1] ^= 1; // the checksum itself
    assert_eq!(parse(&bad), Err(Error::Crc32cMismatch));

    let twice = [tlv(PP2_TYPE_CRC32C, &[0; 4]), tlv(PP2_TYPE_CRC32C, &[0; 4])].concat();
    assert_eq!(parse(&tcp4_with(&twice)), Err(Error::Crc32cDuplicate));
}

// ---- writer ----

#[test]
fn v2_writer() {
    let mut out = [0u8; 128];
    let src = sa("192.0.2.1:56324");
    let dst = sa("198.51.100.2:443");
    let n = write_v2(&mut out, Command::Proxy, src, dst, &[], false).unwrap();
    assert_eq!(&out[..n], tcp4_with(&[]).as_slice());
    let n = write_v2(&mut out, Command::Local, src, dst, &[], false).unwrap();
    assert_eq!(&out[..n], v2(LOCAL, 0x00, &[]).as_slice());
    let six = (sa("[2001:db8::1]:56324"), sa("[2001:db8::2]:443"));
    let n = write_v2(&mut out, Command::Proxy, six.0, six.1, &[], false).unwrap();
    assert_eq!(&out[..n], v2(PROXY, V2_FAM_TCP6, &tcp6_block()).as_slice());

    assert_eq!(
        write_v2(&mut out, Command::Proxy, src, six.1, &[], false),
        Err(Error::MixedFamilies)
    );
    assert_eq!(
        write_v2(&mut out[..27], Command::Proxy, src, dst, &[], false),
        Err(Error::BufferTooSmall)
    );
    let big = vec![0u8; 65535 - 12 - 3 + 1];
    let mut huge = vec![0u8; 70000];
    assert_eq!(
        write_v2(&mut huge, Command::Proxy, src, dst, &[(0xe0, &big)], false),
        Err(Error::HeaderTooLong)
    );
    let n = write_v2(
        &mut huge,
        Command::Proxy,
        src,
        dst,
        &[(0xe0, &big[1..])],
        false,
    )
    .unwrap();
    assert_eq!(n, 16 + 65535);
    assert_eq!(parse(&huge[..n]).map(|p| p.len), Ok(n));
}

// ---- segment_verdict ----

/// The brief's vectors for the kernel's rules, and a few edges of them.
fn verdict_cases() -> Vec<(&'static str, Vec<u8>, SegmentVerdict)> {
    let proxy4 = SegmentVerdict::Proxy {
        source: sa("192.0.2.1:56324"),
        destination: sa("198.51.100.2:443"),
    };
    let mut with_payload = tcp4_with(&[]);
    with_payload.extend_from_slice(b"GET /");
    vec![
        ("tcp4", with_payload, proxy4),
        (
            "tcp6",
            v2(PROXY, V2_FAM_TCP6, &tcp6_block()),
            SegmentVerdict::Proxy {
                source: sa("[2001:db8::1]:56324"),
                destination: sa("[2001:db8::2]:443"),
            },
        ),
        ("local", v2(LOCAL, 0x00, &[]), SegmentVerdict::Local),
        (
            "local any family",
            v2(LOCAL, 0x77, &[1]),
            SegmentVerdict::Local,
        ),
        (
            "tlvs after addresses",
            tcp4_with(&tlv(PP2_TYPE_AUTHORITY, b"example.com")),
            proxy4,
        ),
        (
            "bad version",
            v2(0x31, V2_FAM_TCP4, &TCP4_BLOCK),
            SegmentVerdict::BadVersion,
        ),
        (
            "bad command",
            v2(0x22, V2_FAM_TCP4, &TCP4_BLOCK),
            SegmentVerdict::BadCommand,
        ),
        (
            "unspec with proxy",
            v2(PROXY, 0x00, &[]),
            SegmentVerdict::BadFamily,
        ),
        (
            "udp4 with proxy",
            v2(PROXY, V2_FAM_UDP4, &TCP4_BLOCK),
            SegmentVerdict::BadFamily,
        ),
        (
            "udp4 short and truncated: family first",
            v2_len(PROXY, V2_FAM_UDP4, 200, &[]),
            SegmentVerdict::BadFamily,
        ),
        (
            "length below address block",
            v2(PROXY, V2_FAM_TCP4, &TCP4_BLOCK[..8]),
            SegmentVerdict::ShortAddress,
        ),
        (
            "length beyond segment",
            v2_len(PROXY, V2_FAM_TCP4, 40, &TCP4_BLOCK),
            SegmentVerdict::Truncated,
        ),
        (
            "local beyond segment",
            v2_len(LOCAL, 0x00, 1, &[]),
            SegmentVerdict::Truncated,
        ),
        (
            "signature off by one byte",
            {
                let mut b = tcp4_with(&[]);
                b[5] = 0x0e;
                b
            },
            SegmentVerdict::Absent,
        ),
        (
            "v1 text",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
            SegmentVerdict::V1,
        ),
        ("v1 garbage", b"PROXY nonsense".to_vec(), SegmentVerdict::V1),
        (
            "no header",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            SegmentVerdict::Absent,
        ),
        (
            "bad crc",
            {
                let mut b = tcp4_with(&tlv(PP2_TYPE_CRC32C, &[0; 4]));
                let last = b.len() - 1;
                b[last] ^= 1;
                b
            },
            proxy4,
        ),
    ]
}

#[test]
fn verdict_vectors() {
    for (name, seg, want) in verdict_cases() {
        assert_eq!(segment_verdict(&seg), want, "{name}");
    }
}

#[test]
fn verdict_short_segments() {
    let full = tcp4_with(&[]);
    for k in 1..12 {
        assert_eq!(
            segment_verdict(&full[..k]),
            SegmentVerdict::Truncated,
            "{k}"
        );
    }
    // 12 to 15 bytes: signature there, fixed part not, whatever the version byte says.
    let bad_version = v2(0x31, V2_FAM_TCP4, &TCP4_BLOCK);
    for k in 12..16 {
        assert_eq!(
            segment_verdict(&full[..k]),
            SegmentVerdict::Truncated,
            "{k}"
        );
        assert_eq!(
            segment_verdict(&bad_version[..k]),
            SegmentVerdict::Truncated,
            "{k}"
        );
    }
    for k in 16..full.len() {
        assert_eq!(
            segment_verdict(&full[..k]),
            SegmentVerdict::Truncated,
            "{k}"
        );
    }
    let mut off = full[..11].to_vec();
    off[10] ^= 1;
    assert_eq!(segment_verdict(&off), SegmentVerdict::Absent);
    for k in 1..=6 {
        assert_eq!(segment_verdict(&b"PROXY "[..k]), SegmentVerdict::V1, "{k}");
    }
    assert_eq!(segment_verdict(b"PROXX"), SegmentVerdict::Absent);
    assert_eq!(segment_verdict(b"PROXYZ"), SegmentVerdict::Absent);
    assert_eq!(segment_verdict(b"PROXY TCP4"), SegmentVerdict::V1);
    assert_eq!(segment_verdict(b"G"), SegmentVerdict::Absent);
    assert_eq!(
        segment_verdict(b"\r\n\r\n\0\r\nQUIT\nX"),
        SegmentVerdict::Truncated
    );
}

#[test]
fn verdict_accepts() {
    assert!(SegmentVerdict::Local.accepts());
    assert!(SegmentVerdict::Absent.accepts());
    assert!(!SegmentVerdict::V1.accepts());
    assert!(!SegmentVerdict::Truncated.accepts());
}

#[test]
fn errors_display_one_line() {
    let all = [
        Error::Incomplete,
        Error::NotProxy,
        Error::V1TooLong,
        Error::V1MissingCrlf,
        Error::V1BadProtocol,
        Error::V1BadSyntax,
        Error::V1BadAddress,
        Error::V1BadPort,
        Error::BadVersion,
        Error::BadCommand,
        Error::BadFamily,
        Error::AddressTooShort,
        Error::TlvOverrun,
        Error::Crc32cMismatch,
        Error::Crc32cLength,
        Error::Crc32cDuplicate,
        Error::UniqueIdTooLong,
        Error::SslTooShort,
        Error::TlvNotUtf8(2),
        Error::BufferTooSmall,
        Error::MixedFamilies,
        Error::HeaderTooLong,
    ];
    for e in all {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{e:?}");
    }
    assert_eq!(
        Error::TlvNotUtf8(2).to_string(),
        "PROXY v2 TLV 0x02 is not UTF-8"
    );
}

// ---- fuzz invariants on deterministic inputs ----

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// Valid headers of every kind, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut ssl = vec![1, 0, 0, 0, 0];
    ssl.extend_from_slice(&tlv(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.2"));
    let mut seeds = vec![
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /".to_vec(),
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        tcp4_with(&[]),
        tcp4_with(&[tlv(PP2_TYPE_ALPN, b"h2"), tlv(PP2_TYPE_SSL, &ssl)].concat()),
        v2(PROXY, V2_FAM_TCP6, &tcp6_block()),
        v2(LOCAL, 0, &[]),
        v2(PROXY, V2_FAM_UNIX_STREAM, &[0x2f; 216]),
    ];
    let mut out = [0u8; 256];
    let src = sa("[2001:db8::1]:1");
    let dst = sa("[2001:db8::2]:2");
    let auth: &[u8] = b"example.com";
    let tlvs = [(PP2_TYPE_AUTHORITY, auth), (PP2_TYPE_NOOP, &[][..])];
    let n = write_v2(&mut out, Command::Proxy, src, dst, &tlvs, true).unwrap();
    seeds.push(out[..n].to_vec());
    seeds
}

#[test]
fn fuzz_check_random_inputs() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let starts: [&[u8]; 4] = [&[], &V2_SIGNATURE, b"PROXY ", b"PROXY TCP4 "];
    for _ in 0..3000 {
        let mut data = starts[rng.below(starts.len())].to_vec();
        if data.len() == 12 {
            data.extend_from_slice(&[0x20 | rng.byte() & 0x11, rng.byte() & 0x33, 0, rng.byte()]);
        }
        let extra = rng.below(120);
        data.extend((0..extra).map(|_| rng.byte()));
        fuzz_check(&data);
    }
}

#[test]
fn fuzz_check_mutated_inputs() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let seeds = seeds();
    for seed in &seeds {
        fuzz_check(seed);
        assert!(parse(seed).is_ok(), "{seed:?}");
    }
    let interesting = [0, 1, 0x0d, 0x0a, 0x20, 0x21, 0x11, 0xff, b'0', b' ', b':'];
    for _ in 0..4000 {
        let mut data = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(3) {
            let at = rng.below(data.len().max(1));
            match rng.below(5) {
                0 if !data.is_empty() => data[at] ^= 1 << rng.below(8),
                1 if !data.is_empty() => data[at] = interesting[rng.below(interesting.len())],
                2 => data.truncate(at),
                3 => data.insert(at.min(data.len()), rng.byte()),
                _ if !data.is_empty() => {
                    data.remove(at);
                }
                _ => {}
            }
        }
        fuzz_check(&data);
    }
}
