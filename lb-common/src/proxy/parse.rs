//! The userspace PROXY protocol parser (v1 text and v2 binary, TLVs included) that the edge
//! listener uses. Written independently of the kernel's reads in `lb-ebpf/src/proxy_v2.rs`;
//! [`segment_verdict`] states the kernel's judgement in terms of this parser, and a
//! differential test holds the two to the same answers.
//!
//! Everything works on borrowed bytes without allocation, and no input can make it panic: the
//! edge feeds it whatever a client sends.

mod crc32c;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
mod fuzz;
pub mod tlv;
pub mod v1;
pub mod v2;
mod verdict;
mod write;

#[cfg(test)]
mod tests;

pub use error::Error;
#[cfg(any(test, feature = "fuzzing"))]
pub use fuzz::fuzz_check;
pub use tlv::{RawTlvs, SslTlv, SslTlvs, Tlv, Tlvs};
pub use v1::{write_v1, V1Header};
pub use v2::{Addresses, Command, Transport, V2Header};
pub use verdict::{segment_verdict, SegmentVerdict};
pub use write::write_v2;

use crate::proxy::V1_PREFIX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Header<'a> {
    V1(V1Header),
    V2(V2Header<'a>),
}

/// A header and how many bytes of the stream it took: the payload starts at `len`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub header: Header<'a>,
    pub len: usize,
}

/// Which header the stream starts with, as far as its first bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    V1,
    V2,
    None,
}

/// The v2 signature wins: it is checked first and cannot be confused with text. Too few bytes
/// that agree with a signature so far count as that version.
fn kind(buf: &[u8]) -> Kind {
    let n = buf.len().min(V1_PREFIX.len());
    if v2::signature_matches(buf) {
        Kind::V2
    } else if buf.get(..n) == V1_PREFIX.get(..n) {
        Kind::V1
    } else {
        Kind::None
    }
}

/// Parses the header at the start of `buf`, the first bytes of a stream (perhaps not all of the
/// header yet: see [`Error::Incomplete`]). Every TLV is read and a CRC32C, if sent, checked.
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, Error> {
    let parsed = parse_framing(buf)?;
    if let Header::V2(h) = &parsed.header {
        let header = buf.get(..parsed.len).ok_or(Error::Incomplete)?;
        tlv::validate(header, h.tlvs.as_bytes())?;
    }
    Ok(parsed)
}

/// Like [`parse`] but leaves TLVs unread: the framing the kernel judges, which never looks at
/// TLVs. A caller that only forwards TLVs can use it too.
pub fn parse_framing(buf: &[u8]) -> Result<Parsed<'_>, Error> {
    match kind(buf) {
        Kind::V2 => v2::framing(buf).map(|(h, len)| Parsed {
            header: Header::V2(h),
            len,
        }),
        Kind::V1 if buf.len() < V1_PREFIX.len() => Err(Error::Incomplete),
        Kind::V1 => v1::parse(buf).map(|(h, len)| Parsed {
            header: Header::V1(h),
            len,
        }),
        Kind::None => Err(Error::NotProxy),
    }
}
