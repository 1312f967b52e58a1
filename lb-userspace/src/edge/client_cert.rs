//! The request headers that carry a verified client certificate to the backend, in each of the
//! formats Keycloak's `x509cert-lookup` providers read (issue 5, "Client certificate headers").
//!
//! Everything here is pure: the listener hands over what rustls established
//! ([`ClientCert`]), removes every incoming copy of the managed names
//! (`config::client_cert::managed`), then adds what
//! [`headers`] returns. Only a chain rustls verified is ever forwarded; for no certificate or a
//! failed one the only header is nginx's `ssl-client-verify`.
//!
//! The chain is the path verification built (the intermediates it used, leaf's issuer first,
//! and the trust anchor only when the listener says so), never what else the client sent, and
//! each format carries at most its [`ChainLengths`] entries of it: the ones nearest the leaf,
//! as many as the Keycloak provider of that format reads by default. Keycloak's
//! `certificate-chain-length` option of the provider and the format's length here are changed
//! together.
//!
//! | format    | headers (defaults)                                                        |
//! |-----------|---------------------------------------------------------------------------|
//! | `rfc9440` | `Client-Cert: :<b64 DER>:`, `Client-Cert-Chain: :<b64>:, :<b64>:`         |
//! | `nginx`   | `ssl-client-cert` (escaped PEM), `ssl-client-verify`, `ssl-client-subject-dn`, `ssl-client-issuer-dn` |
//! | `apache`  | `SSL_CLIENT_CERT` (one-line PEM), `CERT_CHAIN_0..n` (one-line PEM)        |
//! | `haproxy` | `X-SSL-Client-Cert` (b64 DER), `X-SSL-Client-Cert-Chain_0..n` (b64 DER)   |
//! | `traefik` | `X-Forwarded-Tls-Client-Cert: <b64 leaf>,<b64 intermediate>...`           |
//! | `envoy`   | `x-forwarded-client-cert: Hash=..;Cert="..";Chain="..";Subject="..";URI=..;DNS=..` |
//!
//! The exact shapes, and where they follow nginx, Apache, `HAProxy`, Traefik or Envoy and where
//! Keycloak's parsing decided, are documented on each [`Format`] variant.

mod dn;
mod encoding;
#[cfg(test)]
mod tests;

use hyper::header::{HeaderName, HeaderValue};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::config::client_cert::{
    indexed_names, ChainLengths, Format, Names, CLIENT_CERT, CLIENT_CERT_CHAIN, ENVOY, NGINX_CERT,
    NGINX_ISSUER, NGINX_SUBJECT, NGINX_VERIFY, TRAEFIK,
};

/// What the TLS layer established about the client's certificate.
#[derive(Clone, Copy, Debug)]
pub enum ClientCert<'a> {
    /// The client sent no certificate.
    None,
    /// rustls verified this chain against `client_ca`.
    Verified {
        /// The client's certificate, DER.
        leaf: &'a [u8],
        /// The path verification built after the leaf, DER: its intermediates, leaf's issuer
        /// first, then the trust anchor if it is to be sent. Each format carries the first
        /// [`ChainLengths::get`] of them.
        chain: &'a [&'a [u8]],
    },
    /// The client sent a certificate that failed verification; the reason for nginx's
    /// `FAILED:<reason>` (non-printable bytes become `?`).
    Failed(&'a str),
}

/// Why no headers could be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configured header name or chain prefix does not make a valid HTTP header name.
    #[error("{0:?} is not usable as a header name or chain header prefix")]
    InvalidName(String),
    /// Two selected formats would write the same header.
    #[error("two client certificate formats would both set header {0}; give apache and haproxy different names")]
    Collision(HeaderName),
    /// The verified leaf could not be parsed for its names (nginx and envoy need them).
    #[error("the client certificate cannot be parsed: {0}")]
    Certificate(String),
    /// A value would hold a byte HTTP does not allow; a bug, since every value is escaped.
    #[error("internal error: value for header {0} is not a valid header value")]
    Value(HeaderName),
}

/// The headers to add for `cert`, in format order (a format listed twice counts once), each
/// format's chain cut to its `lengths` (keeping the certificates nearest the leaf, which is
/// what a Keycloak provider with that `certificate-chain-length` accepts). For
/// [`ClientCert::None`] and [`ClientCert::Failed`] the only header is nginx's
/// `ssl-client-verify` (`NONE` / `FAILED:<reason>`); every other format adds nothing.
pub fn headers(
    formats: &[Format],
    names: &Names,
    lengths: &ChainLengths,
    cert: &ClientCert<'_>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let mut selected: Vec<Format> = Vec::with_capacity(formats.len());
    for format in formats {
        if !selected.contains(format) {
            selected.push(*format);
        }
    }
    let mut out = Out::default();
    match *cert {
        ClientCert::None => {
            if selected.contains(&Format::Nginx) {
                out.push(NGINX_VERIFY, "NONE".to_owned())?;
            }
        }
        ClientCert::Failed(reason) => {
            if selected.contains(&Format::Nginx) {
                out.push(
                    NGINX_VERIFY,
                    format!("FAILED:{}", encoding::printable(reason)),
                )?;
            }
        }
        ClientCert::Verified { leaf, chain } => {
            let parsed = if selected.contains(&Format::Nginx) || selected.contains(&Format::Envoy) {
                Some(
                    X509Certificate::from_der(leaf)
                        .map_err(|e| Error::Certificate(e.to_string()))?
                        .1,
                )
            } else {
                None
            };
            for format in selected {
                // `lengths` never exceed MAX_CHAIN, so neither does what is sent.
                let chain = &chain[..chain.len().min(lengths.get(format))];
                verified(&mut out, format, names, leaf, chain, parsed.as_ref())?;
            }
        }
    }
    Ok(out.0)
}

/// The headers built so far; refuses a second value for a name.
#[derive(Default)]
struct Out(Vec<(HeaderName, HeaderValue)>);

impl Out {
    fn push(&mut self, name: HeaderName, value: String) -> Result<(), Error> {
        if self.0.iter().any(|(n, _)| *n == name) {
            return Err(Error::Collision(name));
        }
        let value = HeaderValue::try_from(value).map_err(|_| Error::Value(name.clone()))?;
        self.0.push((name, value));
        Ok(())
    }
}

fn verified(
    out: &mut Out,
    format: Format,
    names: &Names,
    leaf: &[u8],
    chain: &[&[u8]],
    parsed: Option<&X509Certificate<'_>>,
) -> Result<(), Error> {
    match format {
        Format::Rfc9440 => {
            out.push(CLIENT_CERT, encoding::byte_sequence(leaf))?;
            if !chain.is_empty() {
                let list: Vec<String> = chain.iter().map(|c| encoding::byte_sequence(c)).collect();
                out.push(CLIENT_CERT_CHAIN, list.join(", "))?;
            }
        }
        Format::Nginx => {
            out.push(NGINX_CERT, encoding::escape(&encoding::pem(leaf)))?;
            out.push(NGINX_VERIFY, "SUCCESS".to_owned())?;
            if let Some(cert) = parsed {
                out.push(NGINX_SUBJECT, dn::rfc2253(cert.subject(), false))?;
                out.push(NGINX_ISSUER, dn::rfc2253(cert.issuer(), false))?;
            }
        }
        Format::Apache | Format::Haproxy => {
            let encode = if format == Format::Apache {
                encoding::pem_one_line
            } else {
                encoding::base64
            };
            let (cert_name, prefix) = indexed_names(format, names);
            out.push(cert_name.clone(), encode(leaf))?;
            for (i, der) in chain.iter().enumerate() {
                let name = prefix
                    .name(i)
                    .map_err(|_| Error::InvalidName(prefix.to_string()))?;
                out.push(name, encode(der))?;
            }
        }
        Format::Traefik => {
            let all: Vec<String> = std::iter::once(leaf)
                .chain(chain.iter().copied())
                .map(encoding::base64)
                .collect();
            out.push(TRAEFIK, all.join(","))?;
        }
        Format::Envoy => {
            if let Some(cert) = parsed {
                out.push(ENVOY, xfcc(leaf, chain, cert))?;
            }
        }
    }
    Ok(())
}

/// One XFCC element for this hop.
fn xfcc(leaf: &[u8], chain: &[&[u8]], cert: &X509Certificate<'_>) -> String {
    let mut pems = encoding::pem(leaf);
    for der in chain {
        pems.push_str(&encoding::pem(der));
    }
    let out = format!(
        "Hash={};Cert=\"{}\";Chain=\"{}\";Subject=\"{}\"",
        encoding::sha256_hex(leaf),
        encoding::escape(&encoding::pem(leaf)),
        encoding::escape(&pems),
        dn::rfc2253(cert.subject(), true),
    );
    // One of each at most (see `Format::Envoy`): Keycloak fails on a repeated key.
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return out;
    };
    let names = &san.value.general_names;
    let uri = names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => Some(format!(";URI={}", encoding::xfcc_value(uri))),
        _ => None,
    });
    let dns = names.iter().find_map(|n| match n {
        GeneralName::DNSName(dns) => Some(format!(";DNS={}", encoding::xfcc_value(dns))),
        _ => None,
    });
    // A SAN holding `;` splits into more parts for Keycloak, one of which could repeat a key
    // (`spiffe://x/a;DNS=b`): the first of these that Keycloak reads without a repeated key.
    // Without URI and DNS it always does (the other values hold no `;`).
    let tries = [
        [uri.as_deref(), dns.as_deref()],
        [None, dns.as_deref()],
        [uri.as_deref(), None],
    ];
    for pairs in tries {
        let element = pairs.iter().flatten().fold(out.clone(), |e, p| e + p);
        if keycloak_keys_unique(&element) {
            return element;
        }
    }
    out
}

/// Whether Keycloak's envoy provider reads `element` without a repeated key: it splits on
/// every `;`, keeps the parts that split on `=` into exactly two, and collects them into a
/// map that fails on a duplicate.
fn keycloak_keys_unique(element: &str) -> bool {
    let mut keys = std::collections::HashSet::new();
    element
        .split(';')
        .filter_map(|part| match part.split('=').collect::<Vec<_>>()[..] {
            [key, _] => Some(key),
            _ => None,
        })
        .all(|key| keys.insert(key))
}
