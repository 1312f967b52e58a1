//! The v2 binary header's framing: fixed part, command, family and address block. TLVs are
//! only delimited here; `tlv` reads them.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{tlv::Tlvs, Error};
use crate::proxy::{
    V2_ADDR_LEN_INET, V2_ADDR_LEN_INET6, V2_ADDR_LEN_UNIX, V2_CMD_LOCAL, V2_CMD_PROXY, V2_FAM_TCP4,
    V2_FAM_TCP6, V2_FAM_UDP4, V2_FAM_UDP6, V2_FAM_UNIX_DGRAM, V2_FAM_UNIX_STREAM, V2_FIXED_LEN,
    V2_SIGNATURE, V2_VERSION,
};

/// Length of one `AF_UNIX` address (`sun_path`).
pub const UNIX_ADDR_LEN: usize = 108;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// The proxy's own connection (health checks): the real endpoints are the ones to use.
    Local,
    /// Relayed on behalf of a client named by the address block.
    Proxy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Stream,
    Datagram,
    /// LOCAL, whose family byte the receiver ignores.
    Unspec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addresses<'a> {
    /// TCP or UDP over IPv4 or IPv6.
    Inet {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// `sun_path` bytes as sent, NUL padding included (abstract sockets start with a NUL).
    Unix {
        source: &'a [u8; UNIX_ADDR_LEN],
        destination: &'a [u8; UNIX_ADDR_LEN],
    },
    /// LOCAL: the spec has the receiver discard the whole block.
    Unspec,
}

/// A v2 header. With LOCAL the spec says to discard the protocol block, family included, so
/// `transport` and `addresses` are `Unspec` and `tlvs` is empty whatever was sent (as `HAProxy`
/// does): a health check is never refused for what its block holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Header<'a> {
    pub command: Command,
    pub transport: Transport,
    pub addresses: Addresses<'a>,
    pub tlvs: Tlvs<'a>,
}

/// The 16 fixed bytes, judged as far as they can be on their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixed {
    pub command: Command,
    /// The family/transport byte, not yet judged (LOCAL ignores it).
    pub family: u8,
    /// What follows the fixed part: address block and TLVs.
    pub len: usize,
}

/// Whether `buf` starts with the v2 signature, or is too short to tell and agrees so far.
pub fn signature_matches(buf: &[u8]) -> bool {
    let n = buf.len().min(V2_SIGNATURE.len());
    buf.get(..n) == V2_SIGNATURE.get(..n)
}

/// Signature, then version and command. Every fixed byte must be there before any is judged,
/// as the kernel does: a short segment is truncated whatever its 13th byte says.
pub fn fixed(buf: &[u8]) -> Result<Fixed, Error> {
    if !signature_matches(buf) {
        return Err(Error::NotProxy);
    }
    let Some(&[.., ver_cmd, family, len_hi, len_lo]) = buf.get(..V2_FIXED_LEN) else {
        return Err(Error::Incomplete);
    };
    if ver_cmd >> 4 != V2_VERSION {
        return Err(Error::BadVersion);
    }
    let command = match ver_cmd & 0x0f {
        V2_CMD_LOCAL => Command::Local,
        V2_CMD_PROXY => Command::Proxy,
        _ => return Err(Error::BadCommand),
    };
    Ok(Fixed {
        command,
        family,
        len: usize::from(u16::from_be_bytes([len_hi, len_lo])),
    })
}

/// The header's framing: everything but the TLVs' content. Returns the header and its total
/// length. This is all the kernel judges, so `segment_verdict` stands on it.
pub fn framing(buf: &[u8]) -> Result<(V2Header<'_>, usize), Error> {
    let f = fixed(buf)?;
    let (transport, addr_len) = match (f.command, f.family) {
        (Command::Local, _) => (Transport::Unspec, 0),
        (Command::Proxy, V2_FAM_TCP4) => (Transport::Stream, V2_ADDR_LEN_INET),
        (Command::Proxy, V2_FAM_UDP4) => (Transport::Datagram, V2_ADDR_LEN_INET),
        (Command::Proxy, V2_FAM_TCP6) => (Transport::Stream, V2_ADDR_LEN_INET6),
        (Command::Proxy, V2_FAM_UDP6) => (Transport::Datagram, V2_ADDR_LEN_INET6),
        (Command::Proxy, V2_FAM_UNIX_STREAM) => (Transport::Stream, V2_ADDR_LEN_UNIX),
        (Command::Proxy, V2_FAM_UNIX_DGRAM) => (Transport::Datagram, V2_ADDR_LEN_UNIX),
        // UNSPEC under PROXY names no client; refusing it keeps "accepted" meaning "client known".
        (Command::Proxy, _) => return Err(Error::BadFamily),
    };
    if f.len < addr_len {
        return Err(Error::AddressTooShort);
    }
    let total = V2_FIXED_LEN + f.len;
    let block = buf.get(V2_FIXED_LEN..total).ok_or(Error::Incomplete)?;
    let (addr, tlvs) = block.split_at_checked(addr_len).ok_or(Error::Incomplete)?;
    let header = match f.command {
        Command::Local => V2Header {
            command: Command::Local,
            transport,
            addresses: Addresses::Unspec,
            tlvs: Tlvs::new(&[]),
        },
        Command::Proxy => V2Header {
            command: Command::Proxy,
            transport,
            addresses: addresses(addr).unwrap_or(Addresses::Unspec),
            tlvs: Tlvs::new(tlvs),
        },
    };
    Ok((header, total))
}

/// Reads an address block that `framing` has cut to its family's exact length.
fn addresses(addr: &[u8]) -> Option<Addresses<'_>> {
    let mut r = addr;
    match addr.len() {
        V2_ADDR_LEN_INET => {
            let (src, dst) = (take::<4>(&mut r)?, take::<4>(&mut r)?);
            let ports = take::<4>(&mut r)?;
            Some(inet(
                Ipv4Addr::from(src).into(),
                Ipv4Addr::from(dst).into(),
                ports,
            ))
        }
        V2_ADDR_LEN_INET6 => {
            let (src, dst) = (take::<16>(&mut r)?, take::<16>(&mut r)?);
            let ports = take::<4>(&mut r)?;
            Some(inet(
                Ipv6Addr::from(src).into(),
                Ipv6Addr::from(dst).into(),
                ports,
            ))
        }
        V2_ADDR_LEN_UNIX => {
            let (source, rest) = addr.split_first_chunk::<UNIX_ADDR_LEN>()?;
            Some(Addresses::Unix {
                source,
                destination: rest.try_into().ok()?,
            })
        }
        _ => None,
    }
}

fn take<const N: usize>(r: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = r.split_first_chunk::<N>()?;
    *r = rest;
    Some(*head)
}

fn inet(source: IpAddr, destination: IpAddr, ports: [u8; 4]) -> Addresses<'static> {
    let [sp0, sp1, dp0, dp1] = ports;
    Addresses::Inet {
        source: SocketAddr::new(source, u16::from_be_bytes([sp0, sp1])),
        destination: SocketAddr::new(destination, u16::from_be_bytes([dp0, dp1])),
    }
}
