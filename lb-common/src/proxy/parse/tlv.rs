//! The TLVs after the address block: typed reads, and the one walk `parse` makes to refuse a
//! header whose TLVs are malformed or whose CRC32C does not match.

use super::{crc32c, Error};

pub const PP2_TYPE_ALPN: u8 = 0x01;
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
pub const PP2_TYPE_CRC32C: u8 = 0x03;
pub const PP2_TYPE_NOOP: u8 = 0x04;
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
pub const PP2_TYPE_SSL: u8 = 0x20;
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
pub const PP2_SUBTYPE_SSL_SIG_ALG: u8 = 0x24;
pub const PP2_SUBTYPE_SSL_KEY_ALG: u8 = 0x25;
pub const PP2_TYPE_NETNS: u8 = 0x30;
/// Type byte and 16-bit length before every value.
pub const TLV_HEADER_LEN: usize = 3;
/// `UNIQUE_ID`'s limit in the spec.
pub const UNIQUE_ID_MAX_LEN: usize = 128;
/// SSL's client flags byte and 32-bit verify result before its sub-TLVs.
pub const SSL_FIXED_LEN: usize = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tlv<'a> {
    /// The ALPN protocol the client negotiated, as sent.
    Alpn(&'a [u8]),
    /// The host name the client asked for (SNI with TLS).
    Authority(&'a str),
    Crc32c(u32),
    /// Padding, to be ignored.
    Noop,
    UniqueId(&'a [u8]),
    Ssl {
        /// `PP2_CLIENT_*` bits: TLS used, certificate on this connection or session.
        client: u8,
        /// Zero when the client's certificate was presented and verified.
        verify: u32,
        sub: SslTlvs<'a>,
    },
    NetNs(&'a str),
    Other(u8, &'a [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslTlv<'a> {
    Version(&'a str),
    /// The client certificate's Common Name.
    Cn(&'a str),
    Cipher(&'a str),
    SigAlg(&'a str),
    KeyAlg(&'a str),
    Other(u8, &'a [u8]),
}

/// The TLVs of a header, read one at a time. After an error it yields nothing more: a length
/// that cannot be trusted leaves no next TLV to find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
}

/// The sub-TLVs of an SSL TLV, read like [`Tlvs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslTlvs<'a> {
    rest: &'a [u8],
}

/// TLVs as type and value, uninterpreted: what a proxy forwards as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTlvs<'a> {
    rest: &'a [u8],
}

impl<'a> Tlvs<'a> {
    pub const fn new(bytes: &'a [u8]) -> Tlvs<'a> {
        Tlvs { rest: bytes }
    }

    /// The TLV bytes not yet read.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.rest
    }

    /// The same TLVs without interpretation.
    pub const fn raw(&self) -> RawTlvs<'a> {
        RawTlvs { rest: self.rest }
    }
}

impl<'a> SslTlvs<'a> {
    pub const fn new(bytes: &'a [u8]) -> SslTlvs<'a> {
        SslTlvs { rest: bytes }
    }

    pub const fn as_bytes(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for RawTlvs<'a> {
    type Item = Result<(u8, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        next_raw(&mut self.rest)
    }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = next_raw(&mut self.rest)?.and_then(|(t, v)| typed(t, v));
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

impl<'a> Iterator for SslTlvs<'a> {
    type Item = Result<SslTlv<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = next_raw(&mut self.rest)?.and_then(|(t, v)| typed_ssl(t, v));
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// Splits the next TLV off `rest`; on error `rest` is emptied.
fn next_raw<'a>(rest: &mut &'a [u8]) -> Option<Result<(u8, &'a [u8]), Error>> {
    if rest.is_empty() {
        return None;
    }
    let split = rest
        .split_first_chunk::<TLV_HEADER_LEN>()
        .and_then(|(h, after)| {
            let [t, hi, lo] = *h;
            let (value, tail) =
                after.split_at_checked(usize::from(u16::from_be_bytes([hi, lo])))?;
            Some((t, value, tail))
        });
    let Some((t, value, tail)) = split else {
        *rest = &[];
        return Some(Err(Error::TlvOverrun));
    };
    *rest = tail;
    Some(Ok((t, value)))
}

fn text(t: u8, v: &[u8]) -> Result<&str, Error> {
    core::str::from_utf8(v).map_err(|_| Error::TlvNotUtf8(t))
}

fn typed(t: u8, v: &[u8]) -> Result<Tlv<'_>, Error> {
    Ok(match t {
        PP2_TYPE_ALPN => Tlv::Alpn(v),
        PP2_TYPE_AUTHORITY => Tlv::Authority(text(t, v)?),
        PP2_TYPE_CRC32C => {
            let crc = <[u8; 4]>::try_from(v).map_err(|_| Error::Crc32cLength)?;
            Tlv::Crc32c(u32::from_be_bytes(crc))
        }
        PP2_TYPE_NOOP => Tlv::Noop,
        PP2_TYPE_UNIQUE_ID if v.len() > UNIQUE_ID_MAX_LEN => return Err(Error::UniqueIdTooLong),
        PP2_TYPE_UNIQUE_ID => Tlv::UniqueId(v),
        PP2_TYPE_SSL => {
            let (&client, rest) = v.split_first().ok_or(Error::SslTooShort)?;
            let (verify, sub) = rest.split_first_chunk::<4>().ok_or(Error::SslTooShort)?;
            Tlv::Ssl {
                client,
                verify: u32::from_be_bytes(*verify),
                sub: SslTlvs::new(sub),
            }
        }
        PP2_TYPE_NETNS => Tlv::NetNs(text(t, v)?),
        _ => Tlv::Other(t, v),
    })
}

fn typed_ssl(t: u8, v: &[u8]) -> Result<SslTlv<'_>, Error> {
    Ok(match t {
        PP2_SUBTYPE_SSL_VERSION => SslTlv::Version(text(t, v)?),
        PP2_SUBTYPE_SSL_CN => SslTlv::Cn(text(t, v)?),
        PP2_SUBTYPE_SSL_CIPHER => SslTlv::Cipher(text(t, v)?),
        PP2_SUBTYPE_SSL_SIG_ALG => SslTlv::SigAlg(text(t, v)?),
        PP2_SUBTYPE_SSL_KEY_ALG => SslTlv::KeyAlg(text(t, v)?),
        _ => SslTlv::Other(t, v),
    })
}

/// Reads every TLV of `header` (a whole v2 header, whose last `tlvs.len()` bytes are its TLVs)
/// and checks the CRC32C if one is there. The spec says a receiver that checks the CRC must
/// drop the connection on a mismatch.
pub fn validate(header: &[u8], tlvs: &[u8]) -> Result<(), Error> {
    let mut at = header.len().saturating_sub(tlvs.len());
    let mut crc: Option<(usize, u32)> = None;
    for raw in (RawTlvs { rest: tlvs }) {
        let (t, v) = raw?;
        let value_at = at + TLV_HEADER_LEN;
        at = value_at + v.len();
        match typed(t, v)? {
            Tlv::Crc32c(_) if crc.is_some() => return Err(Error::Crc32cDuplicate),
            Tlv::Crc32c(sent) => crc = Some((value_at, sent)),
            Tlv::Ssl { sub, .. } => {
                for s in sub {
                    s?;
                }
            }
            _ => {}
        }
    }
    match crc {
        Some((field, sent)) if crc32c::with_zeroed_field(header, field) != sent => {
            Err(Error::Crc32cMismatch)
        }
        _ => Ok(()),
    }
}
