//! The userspace PROXY protocol parser (v1 text and v2 binary, TLVs included) that the edge
//! listener uses. Written independently of the kernel's reads in `lb-ebpf/src/proxy_v2.rs`;
//! [`segment_verdict`] states the kernel's judgement in terms of this parser, and a
//! differential test holds the two to the same answers.

use core::net::SocketAddr;

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
    let _ = seg;
    todo!("written by the parser work")
}
