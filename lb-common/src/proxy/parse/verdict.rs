//! The kernel's verdict on a first segment, restated on top of the parser's framing.

use core::net::SocketAddr;

use super::{
    kind,
    v2::{self, Addresses, Command},
    Error, Kind,
};
use crate::proxy::{V2_FAM_TCP4, V2_FAM_TCP6};

/// The kernel's judgement of a first payload segment from a trusted sender, before client
/// lists: see `ProxyOutcome` for the meaning of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentVerdict {
    Absent,
    V1,
    Truncated,
    BadVersion,
    BadCommand,
    BadFamily,
    ShortAddress,
    Local,
    Proxy {
        source: SocketAddr,
        destination: SocketAddr,
    },
}

/// What `sluice_xdp` decides for a first payload segment `seg` (non-empty), derived from the
/// full parser. Rules, in order:
/// 1. `seg` starts with the v2 signature, or is shorter than 12 bytes and a prefix of it: v2.
///    Else `seg` starts with `PROXY ` or is shorter than 6 bytes and a prefix of it: `V1`.
///    Else `Absent`.
/// 2. v2 with fewer than 16 bytes: `Truncated`. Version nibble not 2: `BadVersion`; command
///    nibble not LOCAL (0) or PROXY (1): `BadCommand`.
/// 3. PROXY: family byte other than TCP4 (0x11) or TCP6 (0x21): `BadFamily`; length below the
///    address block (12 or 36): `ShortAddress`. LOCAL accepts any family and length.
/// 4. 16 + length beyond `seg`: `Truncated`. Else `Local`, or `Proxy` with the addresses.
pub fn segment_verdict(seg: &[u8]) -> SegmentVerdict {
    match kind(seg) {
        Kind::None => return SegmentVerdict::Absent,
        Kind::V1 => return SegmentVerdict::V1,
        Kind::V2 => {}
    }
    let fixed = match v2::fixed(seg) {
        Ok(f) => f,
        Err(e) => return refusal(e),
    };
    // The kernel can only record TCP clients; the parser takes UDP and UNIX too.
    if fixed.command == Command::Proxy && !matches!(fixed.family, V2_FAM_TCP4 | V2_FAM_TCP6) {
        return SegmentVerdict::BadFamily;
    }
    match v2::framing(seg) {
        Ok((h, _)) => match (h.command, h.addresses) {
            (
                Command::Proxy,
                Addresses::Inet {
                    source,
                    destination,
                },
            ) => SegmentVerdict::Proxy {
                source,
                destination,
            },
            // PROXY over TCP always comes with `Inet` addresses.
            _ => SegmentVerdict::Local,
        },
        Err(e) => refusal(e),
    }
}

/// The verdict for a framing error. Framing yields no v1 or TLV errors; those would not be the
/// kernel's business.
fn refusal(e: Error) -> SegmentVerdict {
    match e {
        Error::NotProxy => SegmentVerdict::Absent,
        Error::BadVersion => SegmentVerdict::BadVersion,
        Error::BadCommand => SegmentVerdict::BadCommand,
        Error::BadFamily => SegmentVerdict::BadFamily,
        Error::AddressTooShort => SegmentVerdict::ShortAddress,
        _ => SegmentVerdict::Truncated,
    }
}

impl SegmentVerdict {
    /// Whether the kernel lets the flow through (before client lists).
    pub const fn accepts(self) -> bool {
        matches!(
            self,
            SegmentVerdict::Absent | SegmentVerdict::Local | SegmentVerdict::Proxy { .. }
        )
    }
}
