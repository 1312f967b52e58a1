//! `client_cert_chain_length` and `client_cert_chain_anchor`: how much of a verified client
//! certificate's path each header format carries. Every written value must take effect: a
//! length for a format the listener does not send, or the anchor with no format that carries
//! a chain, is refused rather than silently ignored.

use toml::Spanned;

use super::{errors::Report, fields, raw};
use crate::edge::client_cert::{ChainLengths, ChainSettings, Format, MAX_CHAIN};

/// The listener's chain settings. `formats` is `None` when `client_cert_header` itself was
/// broken (then whether a format is sent cannot be judged).
pub(super) fn settings(
    r: &mut Report,
    lengths: Option<&Spanned<raw::ClientCertChainLength>>,
    anchor: Option<&Spanned<bool>>,
    formats: Option<&[Format]>,
    field: &dyn Fn(&str) -> String,
) -> Option<ChainSettings> {
    let lengths = chain_lengths(r, lengths, formats, &field("client_cert_chain_length"));
    let anchor = match (anchor, formats) {
        (Some(a), Some(formats)) if *a.get_ref() && !formats.iter().any(|f| carries_chain(*f)) => {
            r.invalid(
                a.span(),
                field("client_cert_chain_anchor"),
                "has no effect: none of the formats in client_cert_header carries a chain \
                 (nginx does not); add one or leave client_cert_chain_anchor out",
            );
            None
        }
        (a, _) => Some(a.is_some_and(|a| *a.get_ref())),
    };
    Some(ChainSettings {
        lengths: lengths?,
        anchor: anchor?,
    })
}

fn carries_chain(format: Format) -> bool {
    format != Format::Nginx
}

fn chain_lengths(
    r: &mut Report,
    table: Option<&Spanned<raw::ClientCertChainLength>>,
    formats: Option<&[Format]>,
    field: &str,
) -> Option<ChainLengths> {
    let mut out = ChainLengths::default();
    let Some(table) = table.map(Spanned::get_ref) else {
        return Some(out);
    };
    let written = [
        (Format::Rfc9440, &table.rfc9440),
        (Format::Nginx, &table.nginx),
        (Format::Apache, &table.apache),
        (Format::Haproxy, &table.haproxy),
        (Format::Traefik, &table.traefik),
        (Format::Envoy, &table.envoy),
    ];
    let mut ok = true;
    for (format, value) in written {
        let Some(value) = value else { continue };
        let f = format!("{field}.{format}");
        if !carries_chain(format) {
            r.invalid(
                value.span(),
                f,
                "nginx carries no certificate chain (nginx cannot forward one; Keycloak's nginx \
                 provider rebuilds it from its truststore); leave it out",
            );
            ok = false;
            continue;
        }
        if formats.is_some_and(|formats| !formats.contains(&format)) {
            r.invalid(
                value.span(),
                f,
                format!(
                    "has no effect: client_cert_header does not list \"{format}\"; add it there \
                     or leave {format} out"
                ),
            );
            ok = false;
            continue;
        }
        let why = format!(
            "chain certificates after the leaf in the {format} headers; set the same as the \
             Keycloak {format} provider's certificate-chain-length"
        );
        let max = i64::try_from(MAX_CHAIN).unwrap_or(i64::MAX);
        let Some(len) = fields::int::<usize>(r, value, &f, 0..=max, &why) else {
            ok = false;
            continue;
        };
        match out.with(format, len) {
            Ok(lengths) => out = lengths,
            // The checks above leave nothing `with` refuses.
            Err(error) => {
                r.invalid(value.span(), f, error.to_string());
                ok = false;
            }
        }
    }
    ok.then_some(out)
}
