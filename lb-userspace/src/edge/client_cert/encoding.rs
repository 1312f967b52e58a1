//! Byte-level encodings shared by the formats: base64, PEM, nginx's URI-component escaping,
//! RFC 8941 byte sequences and XFCC values. Every output is visible ASCII (plus spaces), so it
//! always makes a valid header value and never holds CR or LF.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest as _, Sha256};

/// nginx's `NGX_ESCAPE_URI_COMPONENT`: everything but `ALPHA DIGIT - . _ ~` becomes `%XX`
/// (uppercase hex). Used for `$ssl_client_escaped_cert` and, here, Envoy's `Cert`/`Chain`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Standard base64 with padding, one line.
pub(super) fn base64(der: &[u8]) -> String {
    STANDARD.encode(der)
}

/// RFC 8941 byte sequence: `:<base64>:`.
pub(super) fn byte_sequence(der: &[u8]) -> String {
    format!(":{}:", STANDARD.encode(der))
}

/// PEM as OpenSSL's `PEM_write_bio_X509` writes it: 64-column lines, `\n` endings, a final `\n`.
pub(super) fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for (i, c) in body.chars().enumerate() {
        if i > 0 && i % 64 == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out.push_str("\n-----END CERTIFICATE-----\n");
    out
}

/// PEM for a header that cannot hold newlines: the body on one line and the two remaining
/// line breaks as spaces, like Apache's `mod_headers` turns newlines into spaces.
pub(super) fn pem_one_line(der: &[u8]) -> String {
    format!(
        "-----BEGIN CERTIFICATE----- {} -----END CERTIFICATE-----",
        STANDARD.encode(der)
    )
}

/// nginx `ngx_escape_uri(.., NGX_ESCAPE_URI_COMPONENT)`.
pub(super) fn escape(text: &str) -> String {
    percent_encode(text.as_bytes(), URI_COMPONENT).to_string()
}

/// Lowercase hex SHA-256, as Envoy's `Hash`.
pub(super) fn sha256_hex(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(64);
    for byte in &digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Free text (a verification failure reason) reduced to printable ASCII: anything else is `?`.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// An XFCC value (a URI or DNS SAN): bytes outside visible ASCII `%XX`-escaped (a SAN is
/// IA5, so this only touches control bytes and spaces), then double-quoted, with `"` and `\`
/// backslash-escaped, when it holds `,` `;` `=` `"` or `\`.
pub(super) fn xfcc_value(value: &str) -> String {
    let mut visible = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_graphic() {
            visible.push(char::from(byte));
        } else {
            let _ = write!(visible, "%{byte:02X}");
        }
    }
    if !visible.contains([',', ';', '=', '"', '\\']) {
        return visible;
    }
    let mut out = String::with_capacity(visible.len() + 4);
    out.push('"');
    for c in visible.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
