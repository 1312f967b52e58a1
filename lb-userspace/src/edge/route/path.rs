//! The one spelling of a request path that routes are matched on and that the backend receives.
//! Two spellings a backend would read as the same path normalise to the same text, so no
//! spelling reaches a path that its normal form would not:
//!
//! | Input | Result |
//! |---|---|
//! | `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`), hex in either case | decoded (`/%72ealms` = `/realms`, `%2e%2E` = `..`) |
//! | `%XX` of any other byte | kept, hex upper-cased (`%c3%a9` = `%C3%A9`); decoded once only, so `%252e` stays `%252e` |
//! | `%2F`, `%5C` (encoded `/` and `\`) | 400: backends disagree on whether it splits a segment |
//! | `%00`-`%1F`, `%7F` | 400 |
//! | `%` not followed by two hex digits | 400 |
//! | raw `\` | 400 (some backends read it as `/`) |
//! | `;` (path parameters, `/admin;x/`, `..;/`) | 400: servlet containers drop what follows it, others do not |
//! | `//` | one `/` |
//! | `.` segment | removed |
//! | `..` segment | removes the segment before it (RFC 3986 §5.2.4); above the root: 400 |
//! | a path not starting with `/` (`*`) | 400 |
//!
//! Paths are case-sensitive (`/Realms` is not `/realms`); only percent-encoding's hex digits are
//! not. A trailing `/` is kept (also after a final `.` or `..`). The query is not part of the
//! path and is never touched.

/// Why a path has no safe normal form (the request gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("'%' not followed by two hex digits")]
    BadEscape,
    #[error("an encoded '/' or '\\' (%2F, %5C)")]
    EncodedSeparator,
    #[error("an encoded control character")]
    Control,
    #[error("a raw '\\'")]
    Backslash,
    #[error("a ';' path parameter")]
    Parameter,
    #[error("a \"..\" segment above the root")]
    AboveRoot,
}

/// The normal form of `path` (the request target's path, without query).
pub fn normalise(path: &str) -> Result<String, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    // The leading '/' makes the first piece empty.
    for segment in decoded.split('/').skip(1) {
        trailing = true;
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(BadPath::AboveRoot);
                }
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Decodes the unreserved characters' escapes, upper-cases the others' hex, refuses what has
/// no safe meaning.
fn decode_unreserved(path: &str) -> Result<String, BadPath> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Err(BadPath::BadEscape);
                };
                // Two hex digits: at most 0xff.
                let byte = u8::try_from(hi * 16 + lo).map_err(|_| BadPath::BadEscape)?;
                match byte {
                    b'/' | b'\\' => return Err(BadPath::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(BadPath::Control),
                    b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                        out.push(char::from(b));
                    }
                    b => escaped(&mut out, b),
                }
                i += 3;
            }
            b'\\' => return Err(BadPath::Backslash),
            b';' => return Err(BadPath::Parameter),
            // Raw bytes beyond ASCII (which hyper's parser passes) get their one spelling.
            b if !b.is_ascii() => {
                escaped(&mut out, b);
                i += 1;
            }
            b => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `%XX` with upper-case hex.
fn escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}
