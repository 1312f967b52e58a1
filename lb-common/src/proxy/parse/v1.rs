//! The v1 text line: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, or `PROXY UNKNOWN ...\r\n`.

use core::{
    fmt::{self, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use super::Error;
use crate::proxy::V1_PREFIX;

/// The longest line the spec lets a sender write, CRLF included (`UNKNOWN` with two full IPv6
/// addresses and ports): past it without a CRLF the line is refused rather than awaited.
pub const V1_MAX_LEN: usize = 107;

/// What a v1 line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V1Header {
    /// `TCP4` (both addresses V4) or `TCP6` (both V6).
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The sender could not tell; the receiver uses the real connection's endpoints.
    Unknown,
}

/// Parses a line that starts with `PROXY ` (the caller has checked). The spec forbids decoding
/// before the CRLF is there, so anything short of it is `Incomplete` unless it cannot end well.
pub fn parse(buf: &[u8]) -> Result<(V1Header, usize), Error> {
    let line_len = line_end(buf)?;
    let line = buf
        .get(V1_PREFIX.len()..line_len - 2)
        .ok_or(Error::V1BadSyntax)?;
    let mut fields = line.split(|&b| b == b' ');
    let header = match fields.next() {
        // Anything after UNKNOWN is the sender's business; the spec says to ignore it.
        Some(b"UNKNOWN") => return Ok((V1Header::Unknown, line_len)),
        Some(b"TCP4") => tcp(&mut fields, true)?,
        Some(b"TCP6") => tcp(&mut fields, false)?,
        _ => return Err(Error::V1BadProtocol),
    };
    Ok((header, line_len))
}

/// The line's length including its CRLF.
fn line_end(buf: &[u8]) -> Result<usize, Error> {
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window.get(i) == Some(&b'\n') => Err(Error::V1MissingCrlf),
        Some(i) => match buf.get(i + 1) {
            _ if i + 2 > V1_MAX_LEN => Err(Error::V1TooLong),
            Some(b'\n') => Ok(i + 2),
            Some(_) => Err(Error::V1MissingCrlf),
            None => Err(Error::Incomplete),
        },
        None if buf.len() >= V1_MAX_LEN => Err(Error::V1TooLong),
        None => Err(Error::Incomplete),
    }
}

fn tcp<'a>(fields: &mut impl Iterator<Item = &'a [u8]>, v4: bool) -> Result<V1Header, Error> {
    let mut next = || fields.next().ok_or(Error::V1BadSyntax);
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(Error::V1BadSyntax);
    }
    let (src, dst) = (address(src, v4)?, address(dst, v4)?);
    Ok(V1Header::Tcp {
        source: SocketAddr::new(src, port(sport)?),
        destination: SocketAddr::new(dst, port(dport)?),
    })
}

/// An empty field means two spaces in a row: a syntax error rather than a bad address.
fn address(field: &[u8], v4: bool) -> Result<IpAddr, Error> {
    if field.is_empty() {
        return Err(Error::V1BadSyntax);
    }
    let text = core::str::from_utf8(field).map_err(|_| Error::V1BadAddress)?;
    // core's parsers refuse IPv4 octets with leading zeros, as the spec does; IPv6 is taken in
    // any form they accept (groups of 1 to 4 digits, `::`, a trailing dotted IPv4).
    let ip = if v4 {
        Ipv4Addr::from_str(text).map(IpAddr::V4)
    } else {
        Ipv6Addr::from_str(text).map(IpAddr::V6)
    };
    ip.map_err(|_| Error::V1BadAddress)
}

/// Decimal digits only (no sign), no leading zero except `0` itself, at most 65535: `080` is
/// refused as the spec asks, so an octal reading can never differ from ours.
fn port(field: &[u8]) -> Result<u16, Error> {
    match field {
        [] => Err(Error::V1BadSyntax),
        [b'0'] => Ok(0),
        [b'0', ..] => Err(Error::V1BadPort),
        _ if field.len() > 5 || !field.iter().all(u8::is_ascii_digit) => Err(Error::V1BadPort),
        _ => {
            let n = field
                .iter()
                .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
            u16::try_from(n).map_err(|_| Error::V1BadPort)
        }
    }
}

/// Writes `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` into `out`; returns its length.
pub fn write_v1(
    out: &mut [u8],
    source: SocketAddr,
    destination: SocketAddr,
) -> Result<usize, Error> {
    let proto = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
        (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
        _ => return Err(Error::MixedFamilies),
    };
    let mut w = SliceWriter { out, len: 0 };
    write!(
        w,
        "PROXY {proto} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .map_err(|_| Error::BufferTooSmall)?;
    Ok(w.len)
}

/// `fmt::Write` into a fixed slice: the formatter needs no allocation this way.
struct SliceWriter<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.out.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
