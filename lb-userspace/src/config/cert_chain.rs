//! `client_cert_chain_length` and `client_cert_chain_anchor`: how much of a verified client
//! certificate's path each header format carries. Every written value must take effect: a
//! length for a format the listener does not send, or the anchor with no format that carries
//! a chain, is refused rather than silently ignored.

use toml::Spanned;

use super::client_cert::{ChainLengths, ChainSettings, Format, MAX_CHAIN};
use super::{errors::Report, fields, raw};

/// The listener's chain settings. `formats` is `None` when `client_cert_header` itself was
/// broken (then whether a format is sent cannot be judged).
pub(super) fn settings(
    r: &mut Report,
    e: &raw::Edge,
    formats: Option<&[Format]>,
    field: &dyn Fn(&str) -> String,
) -> Option<ChainSettings> {
    let lengths = chain_lengths(
        r,
        e.client_cert_chain_length.as_ref(),
        formats,
        &field("client_cert_chain_length"),
    );
    let anchor = match (e.client_cert_chain_anchor.as_ref(), formats) {
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

#[cfg(test)]
mod tests {
    use crate::config::client_cert::{ChainLengths, ChainSettings, Format};
    use crate::config::{tests::with_edge, Config};

    fn parse(keys: &str) -> Result<ChainSettings, String> {
        Config::parse(&with_edge(keys))
            .map(|c| c.edges[0].client_cert_chain)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_keycloaks() {
        let s = parse("client_cert_header = [\"rfc9440\"]").unwrap();
        assert_eq!(s, ChainSettings::default());
        assert!(!s.anchor);
        for (format, len) in [
            (Format::Rfc9440, 1),
            (Format::Nginx, 0),
            (Format::Apache, 1),
            (Format::Haproxy, 1),
            (Format::Traefik, 1),
            (Format::Envoy, 10),
        ] {
            assert_eq!(s.lengths.get(format), len, "{format}");
        }
    }

    #[test]
    fn written_lengths_and_anchor_apply() {
        let s = parse(
            "client_cert_header = [\"rfc9440\", \"envoy\", \"traefik\"]\n\
             client_cert_chain_length = { rfc9440 = 3, envoy = 0 }\n\
             client_cert_chain_anchor = true",
        )
        .unwrap();
        let want = ChainLengths::default()
            .with(Format::Rfc9440, 3)
            .and_then(|l| l.with(Format::Envoy, 0))
            .unwrap();
        assert_eq!(
            s,
            ChainSettings {
                lengths: want,
                anchor: true
            }
        );
    }

    #[test]
    fn every_mistake_is_named_with_its_field_and_nothing_half_applies() {
        let e = parse(
            "client_cert_header = [\"rfc9440\", \"nginx\"]\n\
             client_cert_chain_length = { rfc9440 = 11, nginx = 1, apache = 2 }",
        )
        .unwrap_err();
        for want in [
            "edge[0].client_cert_chain_length.rfc9440: 11 is out of range: must be between 0 \
             and 10 (chain certificates after the leaf in the rfc9440 headers; set the same as \
             the Keycloak rfc9440 provider's certificate-chain-length)",
            "edge[0].client_cert_chain_length.nginx: nginx carries no certificate chain",
            "edge[0].client_cert_chain_length.apache: has no effect: client_cert_header does \
             not list \"apache\"; add it there or leave apache out",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }

        let e =
            parse("client_cert_header = [\"nginx\"]\nclient_cert_chain_anchor = true").unwrap_err();
        assert!(
            e.contains(
                "edge[0].client_cert_chain_anchor: has no effect: none of the formats in \
                 client_cert_header carries a chain"
            ),
            "{e}"
        );
        // false is the default, and harmless anywhere.
        assert!(
            parse("client_cert_header = [\"nginx\"]\nclient_cert_chain_anchor = false").is_ok()
        );

        let e = parse("client_cert_chain_length = { spiffe = 1 }").unwrap_err();
        assert!(
            e.contains("edge[0].client_cert_chain_length.spiffe: unknown key `spiffe`"),
            "{e}"
        );
    }
}
