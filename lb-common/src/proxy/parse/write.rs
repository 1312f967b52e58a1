//! Building v2 headers into caller-provided buffers: for the edge's backend connections, and for
//! tests that need headers byte for byte.

use core::net::SocketAddr;

use super::{
    crc32c,
    tlv::{PP2_TYPE_CRC32C, TLV_HEADER_LEN},
    v2::Command,
    Error,
};
use crate::proxy::{
    V2_ADDR_LEN_INET, V2_ADDR_LEN_INET6, V2_CMD_LOCAL, V2_CMD_PROXY, V2_FAM_TCP4, V2_FAM_TCP6,
    V2_FAM_UNSPEC, V2_FIXED_LEN, V2_SIGNATURE, V2_VERSION,
};

/// Writes a v2 header (TCP over the addresses' family) followed by `tlvs` in order, and with
/// `crc` a CRC32C TLV last, filled in. LOCAL writes the UNSPEC family and no addresses, as the
/// spec asks of senders; `source` and `destination` are then unused. Returns the header length.
pub fn write_v2(
    out: &mut [u8],
    command: Command,
    source: SocketAddr,
    destination: SocketAddr,
    tlvs: &[(u8, &[u8])],
    crc: bool,
) -> Result<usize, Error> {
    let (family, addr_len) = match (command, source, destination) {
        (Command::Local, ..) => (V2_FAM_UNSPEC, 0),
        (Command::Proxy, SocketAddr::V4(_), SocketAddr::V4(_)) => (V2_FAM_TCP4, V2_ADDR_LEN_INET),
        (Command::Proxy, SocketAddr::V6(_), SocketAddr::V6(_)) => (V2_FAM_TCP6, V2_ADDR_LEN_INET6),
        (Command::Proxy, ..) => return Err(Error::MixedFamilies),
    };
    let crc_len = if crc { TLV_HEADER_LEN + 4 } else { 0 };
    let body_len = tlvs
        .iter()
        .try_fold(addr_len + crc_len, |n, (_, v)| {
            u16::try_from(v.len()).ok()?;
            n.checked_add(TLV_HEADER_LEN + v.len())
        })
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(Error::HeaderTooLong)?;
    let total = V2_FIXED_LEN + usize::from(body_len);
    let out = out.get_mut(..total).ok_or(Error::BufferTooSmall)?;

    let mut w = Cursor { out, at: 0 };
    let cmd = match command {
        Command::Local => V2_CMD_LOCAL,
        Command::Proxy => V2_CMD_PROXY,
    };
    w.put(&V2_SIGNATURE);
    w.put(&[V2_VERSION << 4 | cmd, family]);
    w.put(&body_len.to_be_bytes());
    if command == Command::Proxy {
        match (source.ip(), destination.ip()) {
            (core::net::IpAddr::V4(s), core::net::IpAddr::V4(d)) => {
                w.put(&s.octets());
                w.put(&d.octets());
            }
            (s, d) => {
                w.put(&ipv6_octets(s));
                w.put(&ipv6_octets(d));
            }
        }
        w.put(&source.port().to_be_bytes());
        w.put(&destination.port().to_be_bytes());
    }
    for (t, v) in tlvs {
        w.tlv(*t, v);
    }
    if crc {
        w.tlv(PP2_TYPE_CRC32C, &[0; 4]);
        let field = total - 4;
        let sum = crc32c::with_zeroed_field(w.out, field);
        if let Some(dst) = w.out.get_mut(field..) {
            dst.copy_from_slice(&sum.to_be_bytes());
        }
    }
    Ok(total)
}

fn ipv6_octets(ip: core::net::IpAddr) -> [u8; 16] {
    match ip {
        core::net::IpAddr::V6(a) => a.octets(),
        core::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// Sequential writes into a slice sized beforehand, so no write can fall short.
struct Cursor<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(dst) = self.out.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }

    /// A TLV whose length `write_v2` has checked fits 16 bits.
    fn tlv(&mut self, t: u8, v: &[u8]) {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.put(&[t]);
        self.put(&len.to_be_bytes());
        self.put(v);
    }
}
