//! The fuzz target's body, kept beside the parser so unit tests run the same invariants on
//! deterministic inputs and the cargo-fuzz target stays a one-liner. Compiled only for tests
//! and with the `fuzzing` feature (which only `fuzz/` enables): never part of a release build.

use core::{
    fmt::{self, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
};

use super::{
    parse, parse_framing, segment_verdict,
    tlv::{PP2_TYPE_ALPN, PP2_TYPE_CRC32C, PP2_TYPE_NOOP, PP2_TYPE_UNIQUE_ID},
    write_v1, write_v2, Addresses, Command, Error, Header, Parsed, SegmentVerdict, Transport,
    V1Header,
};

/// Prefixes checked one by one; past this, a few samples.
const PREFIXES_CHECKED: usize = 300;
/// Most TLVs a re-written header carries.
const MAX_TLVS: usize = 64;
/// Longest header `rewrite` writes back (libFuzzer's default input limit).
const REWRITE_MAX_LEN: usize = 4096;
/// TLV types whose any content is valid, for generated headers.
const FREE_FORM_TYPES: [u8; 4] = [PP2_TYPE_ALPN, PP2_TYPE_NOOP, 0xe0, PP2_TYPE_UNIQUE_ID];

/// Checks the parser's invariants on `data`.
///
/// # Panics
/// When an invariant fails: that is what the fuzzer looks for.
pub fn fuzz_check(data: &[u8]) {
    let result = parse(data);
    prefixes(data, &result);
    verdict_agrees(data, &result);
    rewrite(data, &result);
    generated(data);
    if let Err(e) = result {
        one_line(e);
    }
}

fn prefix_lengths(n: usize) -> impl Iterator<Item = usize> {
    let all = 0..n.min(PREFIXES_CHECKED);
    let sampled = [n / 2, n.saturating_sub(2), n.saturating_sub(1)]
        .into_iter()
        .filter(move |&k| k >= PREFIXES_CHECKED && k < n);
    all.chain(sampled)
}

/// A header is recognised at its exact length, and every shorter prefix waits for more; an
/// error never turns into success or another error as bytes arrive.
fn prefixes(data: &[u8], result: &Result<Parsed<'_>, Error>) {
    match result {
        Ok(p) => {
            assert!(p.len > 0 && p.len <= data.len());
            let exact = data.get(..p.len).unwrap_or_default();
            assert_eq!(parse(exact).as_ref(), Ok(p));
            for k in prefix_lengths(p.len) {
                assert_eq!(
                    parse(data.get(..k).unwrap_or_default()),
                    Err(Error::Incomplete)
                );
            }
        }
        Err(Error::Incomplete) => {}
        Err(e) => {
            for k in prefix_lengths(data.len()) {
                let r = parse(data.get(..k).unwrap_or_default()).map(|_| ());
                assert!(
                    r == Err(Error::Incomplete) || r == Err(*e),
                    "{k}: {r:?} vs {e:?}"
                );
            }
        }
    }
}

/// The kernel's verdict follows from the framing: TLV errors are not its concern, and it only
/// records TCP clients.
fn verdict_agrees(data: &[u8], result: &Result<Parsed<'_>, Error>) {
    if data.is_empty() {
        return;
    }
    let v = segment_verdict(data);
    let framing = parse_framing(data);
    match result {
        Ok(p) => assert_eq!(framing.as_ref(), Ok(p)),
        Err(e) if e.is_tlv() => assert!(framing.is_ok()),
        Err(e) => assert_eq!(framing.as_ref().map(|_| ()), Err(e)),
    }
    let agrees = match &framing {
        Ok(Parsed {
            header: Header::V1(_),
            ..
        }) => v == SegmentVerdict::V1,
        Ok(Parsed {
            header: Header::V2(h),
            ..
        }) => match (h.command, h.transport, h.addresses) {
            (Command::Local, ..) => v == SegmentVerdict::Local,
            (
                Command::Proxy,
                Transport::Stream,
                Addresses::Inet {
                    source,
                    destination,
                },
            ) => {
                v == SegmentVerdict::Proxy {
                    source,
                    destination,
                }
            }
            (Command::Proxy, ..) => v == SegmentVerdict::BadFamily,
        },
        Err(Error::NotProxy) => v == SegmentVerdict::Absent,
        Err(e) if e.is_v1() => v == SegmentVerdict::V1,
        Err(Error::Incomplete) => matches!(
            v,
            SegmentVerdict::V1 | SegmentVerdict::Truncated | SegmentVerdict::BadFamily
        ),
        Err(Error::BadVersion) => v == SegmentVerdict::BadVersion,
        Err(Error::BadCommand) => v == SegmentVerdict::BadCommand,
        Err(Error::BadFamily) => v == SegmentVerdict::BadFamily,
        Err(Error::AddressTooShort) => {
            matches!(v, SegmentVerdict::ShortAddress | SegmentVerdict::BadFamily)
        }
        Err(_) => false,
    };
    assert!(agrees, "verdict {v:?} for {framing:?}");
    assert_eq!(v == SegmentVerdict::Absent, framing == Err(Error::NotProxy));
}

/// A TCP v2 header written back from what was parsed is the same bytes.
fn rewrite(data: &[u8], result: &Result<Parsed<'_>, Error>) {
    let Ok(Parsed {
        header: Header::V2(h),
        len,
    }) = result
    else {
        return;
    };
    let (
        Command::Proxy,
        Transport::Stream,
        Addresses::Inet {
            source,
            destination,
        },
    ) = (h.command, h.transport, h.addresses)
    else {
        return;
    };
    let mut tlvs: [(u8, &[u8]); MAX_TLVS] = [(0, &[]); MAX_TLVS];
    let mut n = 0;
    for raw in h.tlvs.raw() {
        let Some(slot) = tlvs.get_mut(n) else { return };
        *slot = raw.unwrap_or((0, &[]));
        n += 1;
    }
    let mut out = [0u8; REWRITE_MAX_LEN];
    if *len > out.len() {
        return;
    }
    let tlvs = tlvs.get(..n).unwrap_or_default();
    let written = write_v2(&mut out, Command::Proxy, source, destination, tlvs, false);
    assert_eq!(written, Ok(*len));
    assert_eq!(out.get(..*len), data.get(..*len));
}

/// Headers built from `data` by the writers parse back to what they were built from.
fn generated(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let flags = byte(0);
    let octets: [u8; 32] = core::array::from_fn(|i| byte(i + 1));
    let [src, dst] = [0, 16].map(|at| {
        let a: [u8; 16] = core::array::from_fn(|i| octets.get(at + i).copied().unwrap_or(0));
        let port = u16::from_be_bytes([byte(33 + at / 8), byte(34 + at / 8)]);
        if flags & 1 == 0 {
            SocketAddr::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]).into(), port)
        } else {
            SocketAddr::new(Ipv6Addr::from(a).into(), port)
        }
    });
    let command = if flags & 2 == 0 {
        Command::Proxy
    } else {
        Command::Local
    };
    let crc = flags & 4 != 0;

    // Up to 4 TLVs cut from the rest of the input.
    let mut tlvs: [(u8, &[u8]); 4] = [(0, &[]); 4];
    let mut rest = data.get(37..).unwrap_or_default();
    let mut n = 0;
    for (i, slot) in tlvs.iter_mut().enumerate() {
        let Some((&sel, tail)) = rest.split_first() else {
            break;
        };
        let take = usize::from(sel & 0x7f).min(tail.len());
        let (value, tail) = tail.split_at_checked(take).unwrap_or((tail, &[]));
        *slot = (
            FREE_FORM_TYPES
                .get(usize::from(sel >> 6))
                .copied()
                .unwrap_or(0xe0),
            value,
        );
        rest = tail;
        n = i + 1;
    }
    let tlvs = tlvs.get(..n).unwrap_or_default();

    let mut out = [0u8; 1024];
    let len = write_v2(&mut out, command, src, dst, tlvs, crc).unwrap_or(0);
    assert!(len > 0);
    let header = out.get(..len).unwrap_or_default();
    let parsed = parse(header);
    let Ok(Parsed {
        header: Header::V2(h),
        len: parsed_len,
    }) = parsed
    else {
        panic!("written v2 header does not parse: {parsed:?}");
    };
    assert_eq!(parsed_len, len);
    assert_eq!(h.command, command);
    if command == Command::Proxy {
        let addresses = Addresses::Inet {
            source: src,
            destination: dst,
        };
        assert_eq!(h.addresses, addresses);
        assert_eq!(h.transport, Transport::Stream);
        assert_eq!(
            segment_verdict(header),
            SegmentVerdict::Proxy {
                source: src,
                destination: dst
            }
        );
        let mut raw = h.tlvs.raw();
        for want in tlvs {
            assert_eq!(raw.next(), Some(Ok(*want)));
        }
        if crc {
            assert!(matches!(raw.next(), Some(Ok((PP2_TYPE_CRC32C, _)))));
        }
        assert_eq!(raw.next(), None);
    } else {
        assert_eq!(segment_verdict(header), SegmentVerdict::Local);
    }

    let mut line = [0u8; super::v1::V1_MAX_LEN];
    let len = write_v1(&mut line, src, dst).unwrap_or(0);
    let parsed = parse(line.get(..len).unwrap_or_default());
    let want = V1Header::Tcp {
        source: src,
        destination: dst,
    };
    assert_eq!(
        parsed.map(|p| (p.header, p.len)),
        Ok((Header::V1(want), len))
    );
}

/// Error messages go to logs one per line.
fn one_line(e: Error) {
    struct Check {
        len: usize,
        newline: bool,
    }
    impl fmt::Write for Check {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.len += s.len();
            self.newline |= s.contains('\n');
            Ok(())
        }
    }
    let mut c = Check {
        len: 0,
        newline: false,
    };
    let _ = write!(c, "{e}");
    assert!(c.len > 0 && !c.newline);
}
