//! `[edge.client_cert_names]`: the apache and haproxy certificate header names, checked so
//! that a renamed header can neither overwrite a header sluice sets or removes for another
//! reason nor be set twice.

use std::ops::Range;

use hyper::header::{self, HeaderName};
use toml::Spanned;

use super::{
    client_cert::{self, ChainPrefix, Format, Names, MAX_CHAIN},
    errors::Report,
    forwarded,
    http::HOP_BY_HOP,
    raw,
};

/// The characters of an HTTP token (RFC 9110, 5.6.2) besides letters and digits.
const TOKEN_PUNCTUATION: &str = "!#$%&'*+-.^_`|~";

/// One of the four settings.
struct Slot<'a> {
    key: &'static str,
    /// A chain prefix (`<prefix>_<n>` headers) rather than one header.
    chain: bool,
    written: Option<&'a Spanned<String>>,
    /// The value in effect, as written or the default.
    text: String,
    /// Every header it makes.
    headers: Vec<HeaderName>,
}

impl Slot<'_> {
    fn span(&self) -> Range<usize> {
        self.written.map_or(0..0, Spanned::span)
    }

    /// `"X" is` or, for a prefix, `"X" makes the header "x_0", which is`.
    fn subject(&self, name: &HeaderName) -> String {
        if self.chain {
            format!("\"{}\" makes the header \"{name}\", which is", self.text)
        } else {
            format!("\"{}\" is", self.text)
        }
    }

    fn shown(&self) -> String {
        match self.written {
            Some(_) => format!("\"{}\"", self.text),
            None => format!("\"{}\", the default", self.text),
        }
    }
}

/// The listener's names: defaults for what the table leaves out. `formats` is `None` when
/// `client_cert_header` itself was broken (then a name's use cannot be judged).
pub(super) fn names(
    r: &mut Report,
    table: Option<&Spanned<raw::ClientCertNames>>,
    formats: Option<&[Format]>,
    field: &str,
) -> Option<Names> {
    let defaults = Names::default();
    let written = table.map(Spanned::get_ref);
    let written = |f: fn(&raw::ClientCertNames) -> &Option<Spanned<String>>| {
        written.and_then(|t| f(t).as_ref())
    };
    let slots = [
        (
            "apache_cert",
            Format::Apache,
            false,
            written(|t| &t.apache_cert),
            defaults.apache_cert.as_str(),
        ),
        (
            "apache_chain_prefix",
            Format::Apache,
            true,
            written(|t| &t.apache_chain_prefix),
            defaults.apache_chain.as_str(),
        ),
        (
            "haproxy_cert",
            Format::Haproxy,
            false,
            written(|t| &t.haproxy_cert),
            defaults.haproxy_cert.as_str(),
        ),
        (
            "haproxy_chain_prefix",
            Format::Haproxy,
            true,
            written(|t| &t.haproxy_chain_prefix),
            defaults.haproxy_chain.as_str(),
        ),
    ];
    let mut ok = true;
    let mut checked = Vec::new();
    for (key, format, chain, written, default) in slots {
        let f = format!("{field}.{key}");
        let text = written.map_or(default, |w| w.get_ref().as_str()).to_owned();
        if let (Some(w), Some(formats)) = (written, formats) {
            if !formats.contains(&format) {
                r.invalid(
                    w.span(),
                    &f,
                    format!(
                        "has no effect: client_cert_header does not list \"{format}\"; add it \
                         there or leave {key} out"
                    ),
                );
                ok = false;
                continue;
            }
        }
        let Some(headers) = headers(r, written, &text, chain, &f) else {
            ok = false;
            continue;
        };
        checked.push(Slot {
            key,
            chain,
            written,
            text,
            headers,
        });
    }
    if !ok {
        return None;
    }
    if !clashes(r, &checked, field) {
        return None;
    }
    let [apache_cert, apache_chain, haproxy_cert, haproxy_chain] = &checked[..] else {
        return None;
    };
    let header = |slot: &Slot<'_>| HeaderName::from_bytes(slot.text.as_bytes()).ok();
    let prefix = |slot: &Slot<'_>| slot.text.parse::<ChainPrefix>().ok();
    Some(Names {
        apache_cert: header(apache_cert)?,
        apache_chain: prefix(apache_chain)?,
        haproxy_cert: header(haproxy_cert)?,
        haproxy_chain: prefix(haproxy_chain)?,
    })
}

/// The headers a value makes (one, or the whole chain), after checking it is a token.
fn headers(
    r: &mut Report,
    written: Option<&Spanned<String>>,
    text: &str,
    chain: bool,
    field: &str,
) -> Option<Vec<HeaderName>> {
    let span = written.map_or(0..0, Spanned::span);
    let what = if chain {
        "a header name prefix"
    } else {
        "an HTTP header name"
    };
    if text.is_empty() {
        r.invalid(
            span,
            field,
            format!("must not be empty; write {what}, or leave the key out for the default"),
        );
        return None;
    }
    if let Some(c) = text
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.contains(c)))
    {
        r.invalid(
            span,
            field,
            format!(
                "\"{text}\" is not {what}: {c:?} is not allowed; use letters, digits and \
                 {TOKEN_PUNCTUATION}"
            ),
        );
        return None;
    }
    // Only what the token check above refused fails to convert.
    if chain {
        (0..MAX_CHAIN)
            .map(|i| HeaderName::from_bytes(format!("{text}_{i}").as_bytes()).ok())
            .collect()
    } else {
        Some(vec![HeaderName::from_bytes(text.as_bytes()).ok()?])
    }
}

/// Headers sluice sets or removes itself, and why.
pub(super) fn reserved() -> Vec<(HeaderName, String)> {
    let mut out = vec![
        (header::HOST, "the Host header".to_owned()),
        (
            header::CONTENT_LENGTH,
            "Content-Length, which frames the body".to_owned(),
        ),
    ];
    out.extend(
        HOP_BY_HOP
            .iter()
            .map(|h| (h.clone(), "a hop-by-hop header".to_owned())),
    );
    out.extend(
        forwarded::managed()
            .iter()
            .map(|h| (h.clone(), "a forwarded header".to_owned())),
    );
    for format in Format::ALL {
        if !matches!(format, Format::Apache | Format::Haproxy) {
            let what = format!("a header of the {format} format");
            out.extend(
                client_cert::managed(&[format], &Names::default())
                    .into_iter()
                    .map(|h| (h, what.clone())),
            );
        }
    }
    out
}

/// Reports every name that is reserved or made by two settings; true when there is none. A
/// clash between two settings is blamed on the later one that was written.
fn clashes(r: &mut Report, slots: &[Slot<'_>], field: &str) -> bool {
    let reserved = reserved();
    let mut blamed = vec![false; slots.len()];
    for (i, slot) in slots.iter().enumerate() {
        let hit = slot
            .headers
            .iter()
            .find_map(|h| reserved.iter().find(|(name, _)| name == h));
        if let Some((name, what)) = hit {
            r.invalid(
                slot.span(),
                format!("{field}.{}", slot.key),
                format!(
                    "{} {what}, which sluice manages itself; choose another name",
                    slot.subject(name)
                ),
            );
            blamed[i] = true;
        }
    }
    for j in 0..slots.len() {
        for i in 0..j {
            let shared = slots[j]
                .headers
                .iter()
                .find(|h| slots[i].headers.contains(h));
            let Some(name) = shared else { continue };
            let (culprit, other) = if slots[j].written.is_some() {
                (j, i)
            } else {
                (i, j)
            };
            if blamed[culprit] || blamed[other] {
                continue;
            }
            let (c, o) = (&slots[culprit], &slots[other]);
            r.invalid(
                c.span(),
                format!("{field}.{}", c.key),
                format!(
                    "{} also a header of {} ({}); each client certificate header needs a name \
                     of its own",
                    c.subject(name),
                    o.key,
                    o.shown()
                ),
            );
            blamed[culprit] = true;
        }
    }
    !blamed.contains(&true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_cover_everything_sluice_manages_but_the_renamable_ones() {
        let reserved: Vec<HeaderName> = reserved().into_iter().map(|(h, _)| h).collect();
        for h in [
            "host",
            "content-length",
            "connection",
            "upgrade",
            "x-forwarded-prefix",
        ] {
            assert!(reserved.contains(&HeaderName::from_static(h)), "{h}");
        }
        for h in [
            "client-cert",
            "ssl-client-verify",
            "x-forwarded-client-cert",
        ] {
            assert!(reserved.contains(&HeaderName::from_static(h)), "{h}");
        }
        for h in ["ssl_client_cert", "cert_chain_0", "x-ssl-client-cert"] {
            assert!(!reserved.contains(&HeaderName::from_static(h)), "{h}");
        }
    }
}
