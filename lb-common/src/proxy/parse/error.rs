//! Why a header was refused, or why there is no verdict yet.

use core::fmt;

/// One variant per way a header can be wrong, so logs and counters can tell a broken sender from
/// a hostile one. `Incomplete` alone is not a refusal: the caller reads more and tries again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The bytes so far are the start of a header that could still turn out valid.
    Incomplete,
    /// The stream does not start with a PROXY header (neither signature).
    NotProxy,

    /// v1: no CRLF within the 107 bytes the spec allows a line.
    V1TooLong,
    /// v1: a lone CR or LF where the line must end with CRLF.
    V1MissingCrlf,
    /// v1: the protocol token is not `TCP4`, `TCP6` or `UNKNOWN` (case matters).
    V1BadProtocol,
    /// v1: fields not separated by exactly one space, or too few or too many of them.
    V1BadSyntax,
    /// v1: an address that is not a canonical address of the announced family.
    V1BadAddress,
    /// v1: a port outside 0..=65535, with a leading zero, or not all digits.
    V1BadPort,

    /// v2: the version nibble is not 2.
    BadVersion,
    /// v2: the command nibble is neither LOCAL nor PROXY.
    BadCommand,
    /// v2: PROXY with a family/transport byte the spec does not define, or UNSPEC.
    BadFamily,
    /// v2: the length field is shorter than the family's address block.
    AddressTooShort,

    /// A TLV's type and length, or its value, run past the end of the header (or, for an SSL
    /// sub-TLV, past the end of the SSL TLV).
    TlvOverrun,
    /// The CRC32C TLV does not match the header's checksum.
    Crc32cMismatch,
    /// A CRC32C TLV whose value is not 4 bytes.
    Crc32cLength,
    /// More than one CRC32C TLV: which one covers the header would be ambiguous.
    Crc32cDuplicate,
    /// A `UNIQUE_ID` TLV longer than the 128 bytes the spec allows.
    UniqueIdTooLong,
    /// An SSL TLV shorter than its 5-byte client and verify fields.
    SslTooShort,
    /// A TLV the spec defines as text (`AUTHORITY`, `NETNS`, SSL strings) that is not UTF-8; the
    /// TLV (or sub-TLV) type.
    TlvNotUtf8(u8),

    /// Writing: the output slice cannot hold the header.
    BufferTooSmall,
    /// Writing: the source and destination are of different address families.
    MixedFamilies,
    /// Writing: the addresses and TLVs exceed the 65535 bytes the length field can announce.
    HeaderTooLong,
}

impl Error {
    /// Whether the header's framing was fine and only its TLV content is at fault: the kernel,
    /// which never reads TLVs, accepts such a header.
    pub const fn is_tlv(self) -> bool {
        matches!(
            self,
            Error::TlvOverrun
                | Error::Crc32cMismatch
                | Error::Crc32cLength
                | Error::Crc32cDuplicate
                | Error::UniqueIdTooLong
                | Error::SslTooShort
                | Error::TlvNotUtf8(_)
        )
    }

    /// Whether a v1 line was at fault.
    pub const fn is_v1(self) -> bool {
        matches!(
            self,
            Error::V1TooLong
                | Error::V1MissingCrlf
                | Error::V1BadProtocol
                | Error::V1BadSyntax
                | Error::V1BadAddress
                | Error::V1BadPort
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Error::Incomplete => "PROXY header incomplete, more bytes needed",
            Error::NotProxy => "no PROXY protocol header",
            Error::V1TooLong => "PROXY v1 line has no CRLF within 107 bytes",
            Error::V1MissingCrlf => "PROXY v1 line ends with a lone CR or LF instead of CRLF",
            Error::V1BadProtocol => "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN",
            Error::V1BadSyntax => "PROXY v1 fields are not separated by single spaces",
            Error::V1BadAddress => "PROXY v1 address is invalid for its family",
            Error::V1BadPort => "PROXY v1 port is invalid (range, digits or leading zero)",
            Error::BadVersion => "PROXY v2 version is not 2",
            Error::BadCommand => "PROXY v2 command is neither LOCAL nor PROXY",
            Error::BadFamily => "PROXY v2 address family or transport is not supported",
            Error::AddressTooShort => "PROXY v2 length is shorter than the address block",
            Error::TlvOverrun => "PROXY v2 TLV runs past the end of the header",
            Error::Crc32cMismatch => "PROXY v2 CRC32C checksum does not match",
            Error::Crc32cLength => "PROXY v2 CRC32C TLV is not 4 bytes long",
            Error::Crc32cDuplicate => "PROXY v2 header has more than one CRC32C TLV",
            Error::UniqueIdTooLong => "PROXY v2 UNIQUE_ID TLV is longer than 128 bytes",
            Error::SslTooShort => "PROXY v2 SSL TLV is shorter than 5 bytes",
            Error::TlvNotUtf8(t) => return write!(f, "PROXY v2 TLV {t:#04x} is not UTF-8"),
            Error::BufferTooSmall => "output buffer too small for the PROXY header",
            Error::MixedFamilies => "PROXY header addresses are of different families",
            Error::HeaderTooLong => "PROXY v2 header would exceed 65535 bytes after the fixed part",
        };
        f.write_str(msg)
    }
}
