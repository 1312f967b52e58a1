//! Distinguished names as OpenSSL prints them with `XN_FLAG_RFC2253`, which is what nginx's
//! `$ssl_client_s_dn` / `$ssl_client_i_dn` and Envoy's XFCC `Subject` hold: last RDN first,
//! RDNs joined by `,`, the attributes of a multi-valued RDN by `+`, short attribute names
//! (dotted OID when OpenSSL has none), RFC 2253 escaping, non-ASCII and control bytes as `\XX`,
//! and values that are not character strings as `#<hex DER>`.

use std::fmt::Write as _;

use x509_parser::asn1_rs::{Any, Tag, ToDer as _};
use x509_parser::x509::X509Name;

/// `name` in RFC 2253 form. With `hex_semicolon`, a `;` in a value is written `\3B` instead of
/// `\;` (both RFC 4514), for readers that split the header on every `;`.
pub(super) fn rfc2253(name: &X509Name<'_>, hex_semicolon: bool) -> String {
    let mut out = String::new();
    for (i, rdn) in name
        .iter_rdn()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().collect::<Vec<_>>().into_iter().rev().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            out.push_str(short_name(&oid).unwrap_or(&oid));
            out.push('=');
            match text(attr.attr_value()) {
                Some(value) => escape_into(&mut out, &value, hex_semicolon),
                None => dump(&mut out, attr.attr_value()),
            }
        }
    }
    out
}

/// OpenSSL's short names for the attribute types certificates use.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.17" => "postalCode",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        "2.5.4.15" => "businessCategory",
        _ => return None,
    })
}

/// The value as text, for the string types; `None` for anything else (or undecodable).
fn text(value: &Any<'_>) -> Option<String> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => data
            .is_ascii()
            .then(|| data.iter().copied().map(char::from).collect()),
        // OpenSSL reads T61String as Latin-1.
        Tag::TeletexString => Some(data.iter().copied().map(char::from).collect()),
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| match c {
                    [hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
                    _ => None,
                })
                .collect::<Option<_>>()?;
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => data
            .chunks(4)
            .map(|c| match c {
                [a, b, c, d] => char::from_u32(u32::from_be_bytes([*a, *b, *c, *d])),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// RFC 2253 escaping as OpenSSL's `ASN1_STRFLGS_RFC2253` does it.
fn escape_into(out: &mut String, value: &str, hex_semicolon: bool) {
    let len = value.len();
    for (i, c) in value.char_indices() {
        let first = i == 0;
        let last = i + c.len_utf8() == len;
        match c {
            ';' if hex_semicolon => out.push_str("\\3B"),
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if first => out.push_str("\\#"),
            ' ' if first || last => out.push_str("\\ "),
            c if c.is_ascii_control() || !c.is_ascii() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{byte:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

/// `#` and the hex of the value's DER, for values that are not strings.
fn dump(out: &mut String, value: &Any<'_>) {
    out.push('#');
    for byte in value.to_der_vec().unwrap_or_default() {
        let _ = write!(out, "{byte:02X}");
    }
}
