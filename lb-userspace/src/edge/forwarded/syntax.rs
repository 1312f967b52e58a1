//! The syntax of the forwarded header values: RFC 7239 nodes and quoting, comma-separated
//! lists (quoted-strings kept whole), chains cut to [`MAX_CHAIN_LEN`] from the left, addresses
//! as `X-Forwarded-For` carries them, and prefixes. Pure functions over bytes; the rules that
//! use them are in the parent module.

use std::net::{IpAddr, SocketAddr};

use super::MAX_CHAIN_LEN;

/// Longest host echoed into `X-Forwarded-Host` / `host=`.
const MAX_HOST_LEN: usize = 255;

/// Formats one RFC 7239 node (the value of `for=` / `by=`): IPv4 bare (`192.0.2.1`), IPv4 with
/// a port quoted (`"192.0.2.1:4711"`), IPv6 always quoted and bracketed (`"[2001:db8::1]"`,
/// `"[2001:db8::1]:4711"`). IPv4-mapped IPv6 addresses are written as IPv4.
pub fn node(addr: SocketAddr, with_port: bool) -> String {
    match (addr.ip().to_canonical(), with_port) {
        (IpAddr::V4(ip), false) => ip.to_string(),
        (IpAddr::V4(ip), true) => format!("\"{ip}:{}\"", addr.port()),
        (IpAddr::V6(ip), false) => format!("\"[{ip}]\""),
        (IpAddr::V6(ip), true) => format!("\"[{ip}]:{}\"", addr.port()),
    }
}

/// The newest elements of `existing` that fit beside an element of `new_len` bytes in
/// [`MAX_CHAIN_LEN`], joined by `", "`.
pub(super) fn kept_tail(existing: &[Vec<u8>], new_len: usize) -> &[Vec<u8>] {
    let mut total = new_len;
    let mut start = existing.len();
    for element in existing.iter().rev() {
        total = total.saturating_add(element.len() + 2);
        if total > MAX_CHAIN_LEN {
            break;
        }
        start -= 1;
    }
    &existing[start..]
}

/// `existing` (truncated from the left to fit) then `new`, joined by `", "`.
pub(super) fn chain(existing: &[Vec<u8>], new: &[u8]) -> Vec<u8> {
    let kept = kept_tail(existing, new.len());
    let mut out = Vec::with_capacity(
        MAX_CHAIN_LEN.min(kept.iter().map(|e| e.len() + 2).sum::<usize>() + new.len()),
    );
    for element in kept {
        out.extend_from_slice(element);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(new);
    out
}

/// Splits one `Forwarded` line into its elements (commas outside quoted-strings), trimmed,
/// empty ones dropped. A quoted-string still open at the end of the line is closed (after
/// completing a dangling `\` escape), so nothing appended later can end up inside it.
pub(super) fn split_forwarded(line: &[u8], out: &mut Vec<Vec<u8>>) {
    let mut current = Vec::new();
    let mut in_quote = false;
    let mut escaped = false;
    for &b in line {
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
            current.push(b);
        } else if b == b',' {
            push_trimmed(out, &current);
            current.clear();
        } else {
            in_quote = b == b'"';
            current.push(b);
        }
    }
    if escaped {
        current.push(b'"');
    }
    if in_quote {
        current.push(b'"');
    }
    push_trimmed(out, &current);
}

/// Splits one comma-separated line (`X-Forwarded-For`) into trimmed, non-empty entries.
pub(super) fn split_list(line: &[u8], out: &mut Vec<Vec<u8>>) {
    for entry in line.split(|&b| b == b',') {
        push_trimmed(out, entry);
    }
}

fn push_trimmed(out: &mut Vec<Vec<u8>>, element: &[u8]) {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = element.iter().position(|b| !is_ows(b));
    let end = element.iter().rposition(|b| !is_ows(b));
    if let (Some(start), Some(end)) = (start, end) {
        out.push(element[start..=end].to_vec());
    }
}

/// An address as found in `X-Forwarded-For` / `X-Real-IP`: bare, with a port, or bracketed.
pub(super) fn parse_ip(value: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })?;
    Some(ip.to_canonical())
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().copied().all(is_tchar)
}

/// `s` as an RFC 7239 value: a token if it is one, else a quoted-string.
pub(super) fn quote(s: &str) -> String {
    if is_token(s.as_bytes()) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A host (with an optional port) made only of characters a DNS name, an IP literal and a port
/// need.
pub(super) fn is_plain_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]%".contains(&b))
}

/// One path starting with `/`, no list separator, visible ASCII only.
pub(super) fn is_plain_prefix(value: &[u8]) -> bool {
    value.first() == Some(&b'/') && value.iter().all(|&b| b.is_ascii_graphic() && b != b',')
}

/// `/a` + `/b` = `/a/b` (`/a/` + `b` likewise); an empty result is `/`.
pub(super) fn join_prefix(theirs: &[u8], ours: &[u8]) -> Vec<u8> {
    let theirs = trim_trailing_slashes(theirs);
    let ours = trim_trailing_slashes(ours);
    let ours = ours.strip_prefix(b"/").unwrap_or(ours);
    let mut out = theirs.to_vec();
    if !ours.is_empty() {
        out.push(b'/');
        out.extend_from_slice(ours);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn trim_trailing_slashes(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &s[..end]
}
