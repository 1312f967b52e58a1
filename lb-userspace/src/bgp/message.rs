//! BGP-4 messages as an announce-only speaker sends and reads them (RFC 4271 §4), with the
//! 4-octet AS number capability (RFC 6793) and multiprotocol reachability for IPv6 (RFC 4760).
//!
//! Hand-written, not a crate: what is sent is a handful of fixed layouts (OPEN with two
//! capabilities, KEEPALIVE, NOTIFICATION, an UPDATE with host routes), and of what is received
//! only the header, the OPEN and a NOTIFICATION's code are read; UPDATEs are skipped unread,
//! since the speaker never installs a route. The tests compare against byte strings written
//! out from the RFCs' field layouts.
//!
//! | message | sent | read |
//! |---|---|---|
//! | OPEN (type 1) | version 4, `My AS` (AS_TRANS 23456 above 65535), hold time, router id, capabilities MP (1) per family and 4-octet AS (65) | version, AS (the 4-octet capability's if present), hold time, capabilities |
//! | UPDATE (type 2) | IPv4: withdrawn routes / ORIGIN, AS_PATH, NEXT_HOP, COMMUNITIES, NLRI; IPv6: MP_REACH_NLRI / MP_UNREACH_NLRI | skipped |
//! | NOTIFICATION (type 3) | on a protocol error and at a hold-timer expiry | code and subcode, logged |
//! | KEEPALIVE (type 4) | every hold time / 3 | restarts the hold timer |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The 16 bytes of 0xff every message starts with.
pub const MARKER: [u8; 16] = [0xff; 16];
pub const HEADER_LEN: usize = 19;
/// RFC 4271 §4.1: no message is longer.
pub const MAX_LEN: usize = 4096;
/// RFC 6793: what a 2-octet `My AS` field says when the real AS does not fit.
pub const AS_TRANS: u16 = 23456;

pub const OPEN: u8 = 1;
pub const UPDATE: u8 = 2;
pub const NOTIFICATION: u8 = 3;
pub const KEEPALIVE: u8 = 4;

/// RFC 1997 well-known community of RFC 8326 (graceful shutdown of a session).
pub const GRACEFUL_SHUTDOWN: u32 = 0xffff_0000;

/// Address families (AFI, SAFI 1 = unicast) the speaker can announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    const fn afi(self) -> u16 {
        match self {
            Family::Ipv4 => 1,
            Family::Ipv6 => 2,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4-unicast",
            Family::Ipv6 => "ipv6-unicast",
        }
    }
}

const SAFI_UNICAST: u8 = 1;

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MARKER);
    // Callers keep bodies far below 4096 bytes (see `Update::encode`'s batching).
    let len = u16::try_from(HEADER_LEN + body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// What this speaker says about itself in its OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub local_as: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub families: Vec<Family>,
}

impl Open {
    pub fn encode(&self) -> Vec<u8> {
        let mut caps = Vec::new();
        for f in &self.families {
            // Capability 1 (multiprotocol), length 4: AFI, reserved, SAFI.
            caps.extend_from_slice(&[1, 4]);
            caps.extend_from_slice(&f.afi().to_be_bytes());
            caps.extend_from_slice(&[0, SAFI_UNICAST]);
        }
        // Capability 65 (4-octet AS), length 4.
        caps.extend_from_slice(&[65, 4]);
        caps.extend_from_slice(&self.local_as.to_be_bytes());
        let mut params = Vec::new();
        // One optional parameter of type 2 (capabilities) holding them all.
        params.push(2);
        params.push(u8::try_from(caps.len()).unwrap_or(u8::MAX));
        params.extend_from_slice(&caps);
        let my_as = u16::try_from(self.local_as).unwrap_or(AS_TRANS);
        let mut body = vec![4];
        body.extend_from_slice(&my_as.to_be_bytes());
        body.extend_from_slice(&self.hold_time.to_be_bytes());
        body.extend_from_slice(&self.router_id.octets());
        body.push(u8::try_from(params.len()).unwrap_or(u8::MAX));
        body.extend_from_slice(&params);
        message(OPEN, &body)
    }
}

/// What a peer's OPEN says, as far as the speaker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOpen {
    pub version: u8,
    /// The 4-octet AS capability's value if sent, else the 2-octet field.
    pub peer_as: u32,
    pub four_octet_as: bool,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub families: Vec<Family>,
}

/// A message that breaks the protocol: the NOTIFICATION (code, subcode) to answer it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} (NOTIFICATION {code}/{subcode})", notification_name(*code, *subcode))]
pub struct ProtocolError {
    pub code: u8,
    pub subcode: u8,
}

impl ProtocolError {
    pub const fn new(code: u8, subcode: u8) -> Self {
        ProtocolError { code, subcode }
    }
}

/// Message header error / bad message length (RFC 4271 §6.1).
pub const BAD_LENGTH: ProtocolError = ProtocolError::new(1, 2);
/// Message header error / connection not synchronized (bad marker).
pub const NOT_SYNCHRONIZED: ProtocolError = ProtocolError::new(1, 1);
/// Message header error / bad message type.
pub const BAD_TYPE: ProtocolError = ProtocolError::new(1, 3);
/// OPEN message error / malformed (unspecific).
pub const BAD_OPEN: ProtocolError = ProtocolError::new(2, 0);
pub const UNSUPPORTED_VERSION: ProtocolError = ProtocolError::new(2, 1);
pub const BAD_PEER_AS: ProtocolError = ProtocolError::new(2, 2);
pub const UNACCEPTABLE_HOLD_TIME: ProtocolError = ProtocolError::new(2, 6);
/// RFC 5492: a capability the speaker needs and the peer did not offer.
pub const UNSUPPORTED_CAPABILITY: ProtocolError = ProtocolError::new(2, 7);
pub const FSM_ERROR: ProtocolError = ProtocolError::new(5, 0);
pub const HOLD_TIMER_EXPIRED: ProtocolError = ProtocolError::new(4, 0);
/// Cease / administrative shutdown (RFC 4486).
pub const ADMINISTRATIVE_SHUTDOWN: ProtocolError = ProtocolError::new(6, 2);

/// Words for a NOTIFICATION's code, for logs and `sluice status`.
pub fn notification_name(code: u8, subcode: u8) -> &'static str {
    match (code, subcode) {
        (1, _) => "message header error",
        (2, 2) => "bad peer AS",
        (2, 6) => "unacceptable hold time",
        (2, 7) => "unsupported capability",
        (2, _) => "OPEN message error",
        (3, _) => "UPDATE message error",
        (4, _) => "hold timer expired",
        (5, _) => "finite state machine error",
        (6, 2) => "administrative shutdown",
        (6, 3) => "peer de-configured",
        (6, 4) => "administrative reset",
        (6, _) => "cease",
        _ => "unknown error",
    }
}

pub fn notification(e: ProtocolError) -> Vec<u8> {
    message(NOTIFICATION, &[e.code, e.subcode])
}

pub fn keepalive() -> Vec<u8> {
    message(KEEPALIVE, &[])
}

/// The type and total length a header announces; checked as RFC 4271 §6.1 asks.
pub fn header(bytes: &[u8; HEADER_LEN]) -> Result<(u8, usize), ProtocolError> {
    if bytes[..16] != MARKER {
        return Err(NOT_SYNCHRONIZED);
    }
    let len = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    let kind = bytes[18];
    let min = match kind {
        OPEN => 29,
        UPDATE => 23,
        NOTIFICATION => 21,
        KEEPALIVE => HEADER_LEN,
        _ => return Err(BAD_TYPE),
    };
    if len < min || len > MAX_LEN || (kind == KEEPALIVE && len != HEADER_LEN) {
        return Err(BAD_LENGTH);
    }
    Ok((kind, len))
}

/// Reads an OPEN's body (after the header).
pub fn parse_open(body: &[u8]) -> Result<PeerOpen, ProtocolError> {
    if body.len() < 10 {
        return Err(BAD_OPEN);
    }
    let version = body[0];
    if version != 4 {
        return Err(UNSUPPORTED_VERSION);
    }
    let two_octet_as = u16::from_be_bytes([body[1], body[2]]);
    let hold_time = u16::from_be_bytes([body[3], body[4]]);
    let router_id = Ipv4Addr::new(body[5], body[6], body[7], body[8]);
    let params_len = usize::from(body[9]);
    let params = body.get(10..10 + params_len).ok_or(BAD_OPEN)?;
    let mut open = PeerOpen {
        version,
        peer_as: u32::from(two_octet_as),
        four_octet_as: false,
        hold_time,
        router_id,
        families: Vec::new(),
    };
    let mut at = 0;
    while at < params.len() {
        let kind = params[at];
        let len = usize::from(*params.get(at + 1).ok_or(BAD_OPEN)?);
        let value = params.get(at + 2..at + 2 + len).ok_or(BAD_OPEN)?;
        at += 2 + len;
        // Only capabilities (type 2) mean anything today; others are ignored.
        if kind != 2 {
            continue;
        }
        let mut c = 0;
        while c < value.len() {
            let code = value[c];
            let clen = usize::from(*value.get(c + 1).ok_or(BAD_OPEN)?);
            let cap = value.get(c + 2..c + 2 + clen).ok_or(BAD_OPEN)?;
            c += 2 + clen;
            match (code, cap) {
                (1, [a0, a1, _, SAFI_UNICAST]) => match u16::from_be_bytes([*a0, *a1]) {
                    1 => open.families.push(Family::Ipv4),
                    2 => open.families.push(Family::Ipv6),
                    _ => {}
                },
                (65, [a, b, c2, d]) => {
                    open.four_octet_as = true;
                    open.peer_as = u32::from_be_bytes([*a, *b, *c2, *d]);
                }
                _ => {}
            }
        }
    }
    Ok(open)
}

/// Path attribute flags (RFC 4271 §4.3).
const WELL_KNOWN: u8 = 0x40;
const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const EXTENDED_LENGTH: u8 = 0x10;

fn attribute(out: &mut Vec<u8>, flags: u8, kind: u8, value: &[u8]) {
    if value.len() > 255 {
        out.push(flags | EXTENDED_LENGTH);
        out.push(kind);
        out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    } else {
        out.push(flags);
        out.push(kind);
        out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    }
    out.extend_from_slice(value);
}

/// A host route's NLRI: prefix length, then the address.
fn host_prefix(out: &mut Vec<u8>, address: IpAddr) {
    match address {
        IpAddr::V4(a) => {
            out.push(32);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(128);
            out.extend_from_slice(&a.octets());
        }
    }
}

/// The path every announcement carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub local_as: u32,
    /// iBGP (peer AS = local AS): empty `AS_PATH` and a `LOCAL_PREF`, as RFC 4271 §5.1.2 and
    /// §5.1.5 ask.
    pub internal: bool,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
}

/// Announces `address` (a /32 or /128) with `communities`.
pub fn announce(path: &Path, address: IpAddr, communities: &[u32]) -> Vec<u8> {
    let mut attrs = Vec::new();
    attribute(&mut attrs, WELL_KNOWN, 1, &[0]); // ORIGIN IGP
    if path.internal {
        attribute(&mut attrs, WELL_KNOWN, 2, &[]);
    } else {
        // One AS_SEQUENCE segment of one 4-octet AS (the session negotiated 4-octet AS).
        let mut seg = vec![2, 1];
        seg.extend_from_slice(&path.local_as.to_be_bytes());
        attribute(&mut attrs, WELL_KNOWN, 2, &seg);
    }
    let mut nlri = Vec::new();
    match address {
        IpAddr::V4(_) => {
            let nh = path.next_hop_v4.unwrap_or(Ipv4Addr::UNSPECIFIED);
            attribute(&mut attrs, WELL_KNOWN, 3, &nh.octets());
            host_prefix(&mut nlri, address);
        }
        IpAddr::V6(_) => {
            let nh = path.next_hop_v6.unwrap_or(Ipv6Addr::UNSPECIFIED);
            let mut reach = Vec::new();
            reach.extend_from_slice(&Family::Ipv6.afi().to_be_bytes());
            reach.push(SAFI_UNICAST);
            reach.push(16);
            reach.extend_from_slice(&nh.octets());
            reach.push(0); // reserved
            host_prefix(&mut reach, address);
            attribute(&mut attrs, OPTIONAL, 14, &reach);
        }
    }
    if path.internal {
        attribute(&mut attrs, WELL_KNOWN, 5, &100u32.to_be_bytes());
    }
    if !communities.is_empty() {
        let value: Vec<u8> = communities.iter().flat_map(|c| c.to_be_bytes()).collect();
        attribute(&mut attrs, OPTIONAL | TRANSITIVE, 8, &value);
    }
    update(&[], &attrs, &nlri)
}

/// Withdraws `address`.
pub fn withdraw(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(_) => {
            let mut withdrawn = Vec::new();
            host_prefix(&mut withdrawn, address);
            update(&withdrawn, &[], &[])
        }
        IpAddr::V6(_) => {
            let mut unreach = Vec::new();
            unreach.extend_from_slice(&Family::Ipv6.afi().to_be_bytes());
            unreach.push(SAFI_UNICAST);
            host_prefix(&mut unreach, address);
            let mut attrs = Vec::new();
            attribute(&mut attrs, OPTIONAL, 15, &unreach);
            update(&[], &attrs, &[])
        }
    }
}

fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u16::try_from(withdrawn.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&u16::try_from(attrs.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    message(UPDATE, &body)
}

#[cfg(test)]
mod tests;
