//! The client certificate header settings of an edge listener: the formats
//! (`client_cert_header`), the apache and haproxy header names (`client_cert_names`), how much
//! of the verified chain each format carries (`client_cert_chain_length` / `_anchor`), and the
//! header names each format writes ([`managed`]), which the listener strips from every request
//! and the configuration refuses as custom names. The values of the headers are built by
//! `edge::client_cert`.

use std::fmt;
use std::str::FromStr;

use hyper::header::HeaderName;

/// The most chain certificates any format can be set to carry, and so the number of
/// `<prefix>_<n>` chain headers managed (`_0` to `_9`): the hard cap on [`ChainLengths`].
pub const MAX_CHAIN: usize = 10;

/// The header formats, named as in the `client_cert_header` setting (and after Keycloak's
/// `x509cert-lookup` providers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// RFC 9440: `Client-Cert: :<base64 DER>:` and, when there are chain certificates,
    /// `Client-Cert-Chain: :<b64>:, :<b64>:`, leaf's issuer first. Both are RFC 8941 byte
    /// sequences: standard base64 with padding, no line breaks. Keycloak's `rfc9440` provider
    /// refuses a `Client-Cert-Chain` with more entries than its `certificate-chain-length`
    /// (default 1).
    Rfc9440,
    /// nginx: `ssl-client-cert` is the leaf PEM percent-encoded exactly like
    /// `$ssl_client_escaped_cert` (everything but `A-Z a-z 0-9 - . _ ~` as `%XX`, so `+`, `/`,
    /// `=`, spaces and newlines survive Keycloak's form-URL-decoding); `ssl-client-verify` is
    /// `SUCCESS`, `NONE` or `FAILED:<reason>`; `ssl-client-subject-dn` / `ssl-client-issuer-dn`
    /// are RFC 2253 like `$ssl_client_s_dn` / `$ssl_client_i_dn`. nginx itself cannot forward
    /// the chain (Keycloak rebuilds it from its truststore), so neither does this format.
    Nginx,
    /// Apache: the leaf in [`Names::apache_cert`] and each intermediate in
    /// `<Names::apache_chain>_<n>`, as PEM whose base64 body is one line, with the two line
    /// breaks around it replaced by spaces as `mod_headers` does with newlines:
    /// `-----BEGIN CERTIFICATE----- MIIB... -----END CERTIFICATE-----`. Keycloak strips the
    /// BEGIN/END lines and trims, which leaves strict base64 with no spaces inside. Keycloak's
    /// `apache` provider reads `_0` to `_<certificate-chain-length - 1>` (default 1: `_0`).
    Apache,
    /// `HAProxy` (`%[ssl_c_der,base64]`): the leaf as bare base64 DER in [`Names::haproxy_cert`],
    /// chain certificates in `<Names::haproxy_chain>_<n>`. Keycloak's `haproxy` provider reads
    /// as many as its `certificate-chain-length` (default 1).
    Haproxy,
    /// Traefik `passTLSClientCert` with `pem: true`: `X-Forwarded-Tls-Client-Cert` holds the
    /// leaf then the chain certificates, each bare base64 DER (no BEGIN/END, no line breaks,
    /// not URL-escaped, as Traefik 2.10+ sends it), separated by `,`. Keycloak's `traefik`
    /// provider keeps the leaf and the first `certificate-chain-length` (default 1) others.
    Traefik,
    /// Envoy (`SANITIZE_SET`): `x-forwarded-client-cert` with exactly one element,
    /// `Hash=<sha256 hex of leaf DER>;Cert="<escaped PEM>";Chain="<escaped PEM leaf+chain>";Subject="<RFC 2253 DN>";URI=<san>;DNS=<san>`,
    /// a value quoted (with `\"` and `\\` inside) when it holds `,` `;` `=` `"` or `\`. PEM
    /// escaping is nginx's. In the Subject a `;` is written `\3B` (RFC 4514 hex escape) rather
    /// than `\;`, because Keycloak splits the header on every `;`.
    ///
    /// Keycloak's `envoy` provider splits the element on `;`, then each part on `=`, and
    /// collects the `key=value` parts into a map that fails on a repeated key: so unlike Envoy,
    /// which writes one `URI`/`DNS` pair per SAN, this writes at most one `URI` (the
    /// certificate's first URI SAN) and at most one `DNS` (its first DNS SAN), leaving out a
    /// SAN whose `;` would still make a key repeat (`URI=spiffe://x/a;DNS=b`). Keycloak reads
    /// only `Chain`, and has no chain length option: it takes the whole `Chain`.
    Envoy,
}

impl Format {
    /// Every format, e.g. to strip every header sluice knows whatever the listener selected.
    pub const ALL: [Format; 6] = [
        Format::Rfc9440,
        Format::Nginx,
        Format::Apache,
        Format::Haproxy,
        Format::Traefik,
        Format::Envoy,
    ];

    /// Its position in [`Format::ALL`].
    const fn index(self) -> usize {
        self as usize
    }

    /// The name used in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Rfc9440 => "rfc9440",
            Format::Nginx => "nginx",
            Format::Apache => "apache",
            Format::Haproxy => "haproxy",
            Format::Traefik => "traefik",
            Format::Envoy => "envoy",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chain header prefix: header `n` is `<prefix>_<n>`, exactly how Keycloak's
/// `ssl-cert-chain-prefix` is used, so the same value goes in both configurations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainPrefix(String);

impl ChainPrefix {
    /// The prefix as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The header for intermediate `index` (0-based).
    pub fn name(&self, index: usize) -> Result<HeaderName, Error> {
        HeaderName::from_bytes(format!("{}_{index}", self.0).as_bytes())
            .map_err(|_| Error::InvalidName(self.0.clone()))
    }
}

impl FromStr for ChainPrefix {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let prefix = ChainPrefix(s.to_owned());
        if s.is_empty() {
            return Err(Error::InvalidName(s.to_owned()));
        }
        prefix.name(MAX_CHAIN)?;
        Ok(prefix)
    }
}

impl fmt::Display for ChainPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Header names an operator may change, to match the Keycloak provider's settings. The
/// defaults are what Keycloak's documentation configures: `SSL_CLIENT_CERT` / `CERT_CHAIN` for
/// apache, and the conventional `X-SSL-Client-Cert` / `X-SSL-Client-Cert-Chain` for haproxy
/// (Keycloak's `ssl-client-cert` / `ssl-cert-chain-prefix`). The other formats' names are
/// fixed by their specifications and providers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// Apache leaf header (default `SSL_CLIENT_CERT`).
    pub apache_cert: HeaderName,
    /// Apache chain prefix (default `CERT_CHAIN`: `CERT_CHAIN_0` ..).
    pub apache_chain: ChainPrefix,
    /// `HAProxy` leaf header (default `X-SSL-Client-Cert`).
    pub haproxy_cert: HeaderName,
    /// `HAProxy` chain prefix (default `X-SSL-Client-Cert-Chain`: `X-SSL-Client-Cert-Chain_0` ..).
    pub haproxy_chain: ChainPrefix,
}

impl Default for Names {
    fn default() -> Self {
        // The literals are valid header tokens (tested in `default_names_are_valid`).
        Names {
            apache_cert: HeaderName::from_static("ssl_client_cert"),
            apache_chain: ChainPrefix("CERT_CHAIN".to_owned()),
            haproxy_cert: HeaderName::from_static("x-ssl-client-cert"),
            haproxy_chain: ChainPrefix("X-SSL-Client-Cert-Chain".to_owned()),
        }
    }
}

/// How many chain certificates (after the leaf) each format carries at most: the ones nearest
/// the leaf. The defaults are the defaults of Keycloak's `x509cert-lookup` providers
/// ([`ChainLengths::keycloak_default`]); a format's length and its provider's
/// `certificate-chain-length` (`--spi-x509cert-lookup-<provider>-certificate-chain-length`)
/// are meant to be changed together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainLengths([usize; Format::ALL.len()]);

impl ChainLengths {
    /// The default of the Keycloak provider of `format`: `certificate-chain-length` is 1 for
    /// `rfc9440`, `apache`, `haproxy` and `traefik` (`rfc9440` refuses a longer chain header,
    /// the others ignore the rest); `nginx` carries no chain; `envoy` has no such option and
    /// takes the whole chain, so it gets the [`MAX_CHAIN`] cap.
    pub const fn keycloak_default(format: Format) -> usize {
        match format {
            Format::Rfc9440 | Format::Apache | Format::Haproxy | Format::Traefik => 1,
            Format::Nginx => 0,
            Format::Envoy => MAX_CHAIN,
        }
    }

    /// The most chain certificates `format` carries.
    pub fn get(&self, format: Format) -> usize {
        self.0[format.index()]
    }

    /// These lengths with `format`'s set to `len`: 0 to [`MAX_CHAIN`], and only for a format
    /// that carries a chain (not `nginx`).
    pub fn with(mut self, format: Format, len: usize) -> Result<Self, Error> {
        if format == Format::Nginx {
            return Err(Error::NoChain(format));
        }
        if len > MAX_CHAIN {
            return Err(Error::ChainLength { format, len });
        }
        self.0[format.index()] = len;
        Ok(self)
    }
}

impl Default for ChainLengths {
    fn default() -> Self {
        ChainLengths(Format::ALL.map(ChainLengths::keycloak_default))
    }
}

/// What of a verified path the chain headers carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainSettings {
    /// The most certificates per format.
    pub lengths: ChainLengths,
    /// Whether the path's trust anchor (the `client_ca` certificate it ends at) follows the
    /// intermediates. Default no: Keycloak validates against its own truststore.
    pub anchor: bool,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configured header name or chain prefix does not make a valid HTTP header name.
    #[error("{0:?} is not usable as a header name or chain header prefix")]
    InvalidName(String),
    /// A chain length for a format that carries no chain.
    #[error("the {0} format carries no certificate chain, so it has no chain length")]
    NoChain(Format),
    /// A chain length above [`MAX_CHAIN`].
    #[error("a chain length of {len} for {format} is more than the {MAX_CHAIN} sluice can send")]
    ChainLength {
        /// The format.
        format: Format,
        /// The length asked for.
        len: usize,
    },
}

// The fixed header names of the formats (apache's and haproxy's are in `Names`), which
// `edge::client_cert` writes.
pub const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
pub const CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");
pub const NGINX_CERT: HeaderName = HeaderName::from_static("ssl-client-cert");
pub const NGINX_VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
pub const NGINX_SUBJECT: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
pub const NGINX_ISSUER: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
pub const TRAEFIK: HeaderName = HeaderName::from_static("x-forwarded-tls-client-cert");
pub const ENVOY: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Every header name sluice manages for these formats and names, lowercase, each once,
/// including all [`MAX_CHAIN`] chain headers of apache and haproxy. The listener removes every
/// incoming copy of them, whatever case or count, before adding the output of
/// `edge::client_cert::headers`.
pub fn managed(formats: &[Format], names: &Names) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::new();
    let mut add = |name: HeaderName| {
        if !out.contains(&name) {
            out.push(name);
        }
    };
    for format in formats {
        match format {
            Format::Rfc9440 => {
                add(CLIENT_CERT);
                add(CLIENT_CERT_CHAIN);
            }
            Format::Nginx => {
                add(NGINX_CERT);
                add(NGINX_VERIFY);
                add(NGINX_SUBJECT);
                add(NGINX_ISSUER);
            }
            Format::Apache | Format::Haproxy => {
                let (cert, chain) = indexed_names(*format, names);
                add(cert.clone());
                // ChainPrefix is validated up to MAX_CHAIN when built, so nothing is skipped.
                (0..MAX_CHAIN)
                    .filter_map(|i| chain.name(i).ok())
                    .for_each(&mut add);
            }
            Format::Traefik => add(TRAEFIK),
            Format::Envoy => add(ENVOY),
        }
    }
    out
}

pub fn indexed_names(format: Format, names: &Names) -> (&HeaderName, &ChainPrefix) {
    if format == Format::Apache {
        (&names.apache_cert, &names.apache_chain)
    } else {
        (&names.haproxy_cert, &names.haproxy_chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lengths_index_formats_in_all_order() {
        for (i, format) in Format::ALL.into_iter().enumerate() {
            assert_eq!(format.index(), i, "{format}");
            let lengths = ChainLengths::default();
            assert_eq!(lengths.get(format), ChainLengths::keycloak_default(format));
        }
    }
}
