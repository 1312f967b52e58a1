//! Checks of single values shared by every table: each reports its own error and returns
//! `None`, so the caller can go on checking the rest of the file.

use std::{
    net::SocketAddr,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use toml::Spanned;

use super::errors::Report;

/// The value of `options` named by `v`.
pub(super) fn choice<T: Copy>(
    r: &mut Report,
    v: &Spanned<String>,
    field: &str,
    options: &[(&str, T)],
) -> Option<T> {
    if let Some(&(_, value)) = options.iter().find(|(name, _)| name == v.get_ref()) {
        return Some(value);
    }
    let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let list = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    };
    r.invalid(
        v.span(),
        field,
        format!("\"{}\" is not a valid choice; use {list}", v.get_ref()),
    );
    None
}

/// An integer in `range` (which must fit `T`); `why` says what the value is for.
pub(super) fn int<T: TryFrom<i64>>(
    r: &mut Report,
    v: &Spanned<i64>,
    field: &str,
    range: RangeInclusive<i64>,
    why: &str,
) -> Option<T> {
    let value = *v.get_ref();
    if range.contains(&value) {
        if let Ok(t) = T::try_from(value) {
            return Some(t);
        }
    }
    let bound = if *range.end() >= i64::from(u32::MAX) {
        format!("at least {}", range.start())
    } else {
        format!("between {} and {}", range.start(), range.end())
    };
    r.invalid(
        v.span(),
        field,
        format!("{value} is out of range: must be {bound} ({why})"),
    );
    None
}

/// A duration such as `"500ms"`, `"2s"` or `"1m"`, at least `min` (`Duration::ZERO` allows 0);
/// `why` explains the minimum.
pub(super) fn duration(
    r: &mut Report,
    v: &Spanned<String>,
    field: &str,
    min: Duration,
    why: &str,
) -> Option<Duration> {
    let text = v.get_ref();
    match humantime::parse_duration(text) {
        Err(e) => {
            r.invalid(
                v.span(),
                field,
                format!(
                    "\"{text}\" is not a duration ({e}); write it like \"500ms\", \"2s\" or \"1m\""
                ),
            );
            None
        }
        Ok(d) if d < min => {
            let bound = if min <= Duration::from_nanos(1) {
                "must be above 0".to_string()
            } else {
                format!("must be at least {}", humantime::format_duration(min))
            };
            r.invalid(
                v.span(),
                field,
                format!("\"{text}\" is too short: {bound}; {why}"),
            );
            None
        }
        Ok(d) => Some(d),
    }
}

/// An absolute path; relative ones would depend on the directory the daemon was started in.
pub(super) fn absolute_path(
    r: &mut Report,
    v: &Spanned<String>,
    field: &str,
    example: &str,
) -> Option<PathBuf> {
    let path = Path::new(v.get_ref());
    if path.is_absolute() {
        Some(path.to_path_buf())
    } else {
        r.invalid(
            v.span(),
            field,
            format!(
                "\"{}\" is not an absolute path; write it from the root, e.g. \"{example}\"",
                v.get_ref()
            ),
        );
        None
    }
}

/// An `IP:port` with a port other than 0 (names are not resolved: the config must not depend
/// on DNS at startup).
pub(super) fn socket_address(
    r: &mut Report,
    v: &Spanned<String>,
    field: &str,
    example: &str,
) -> Option<SocketAddr> {
    let Ok(address) = v.get_ref().parse::<SocketAddr>() else {
        r.invalid(
            v.span(),
            field,
            format!(
                "\"{}\" is not an IP:port; write e.g. \"{example}\" (IPv6 in brackets: \
                 \"[2001:db8::10]:443\"; host names are not resolved)",
                v.get_ref()
            ),
        );
        return None;
    };
    if address.port() == 0 {
        r.invalid(
            v.span(),
            field,
            format!("port 0 cannot be connected to; give the real port, e.g. \"{example}\""),
        );
        return None;
    }
    Some(address)
}

/// `proxy_protocol` of a `[[vip]]` or an `[[edge]]`.
pub(super) fn proxy_protocol(
    r: &mut Report,
    v: &Spanned<String>,
    field: &str,
) -> Option<super::ProxyProtocol> {
    use super::ProxyProtocol::{Off, Optional, Required};
    choice(
        r,
        v,
        field,
        &[("off", Off), ("optional", Optional), ("required", Required)],
    )
}
