//! The header names sluice vouches for, and the client's copies of them that must never reach a
//! backend: exact names (HTTP names are case-insensitive), spellings that differ only by `_`
//! and `-`, and chain headers at any index.
//!
//! Why the variants: CGI/WSGI gateways and some Java filters map `X_Forwarded_For` and
//! `X-Forwarded-For` to the same variable, so a backend may read a client's
//! `X_SSL_Client_Cert` as the certificate sluice vouched for. And a backend configured with a
//! longer `certificate-chain-length` than sluice writes would read `CERT_CHAIN_10` as if sluice
//! had sent it. nginx drops every underscore header by default; sluice drops only those that
//! could be mistaken for its own.

use std::borrow::Cow;

use hyper::header::{HeaderMap, HeaderName};

use crate::config::{
    client_cert::{self, Format, Names},
    forwarded,
};

/// Chain prefixes that are always treated as managed, whatever the listener's names: Apache
/// `mod_ssl`'s own variable (`SSL_CLIENT_CERT_CHAIN_n`), which Apache configurations forward
/// under that name.
const WELL_KNOWN_CHAIN_PREFIXES: [&str; 1] = ["ssl-client-cert-chain"];

/// A listener's managed names, built once per listener.
#[derive(Debug, Clone)]
pub struct Managed {
    /// Every managed name folded (lowercase, `_` as `-`), sorted: the client-certificate
    /// headers of every format under the listener's names and the default ones (removed from
    /// every request whoever sent it), and the forwarded headers.
    folded: Vec<String>,
    /// Chain header prefixes, folded; `<prefix>-<digits>` is managed at any index.
    chain_prefixes: Vec<String>,
}

impl Managed {
    /// The names for a listener that writes certificate headers under `names`. Every format
    /// counts, not only the listener's: a backend may read another one. The default names
    /// count too: a backend still configured for them must not get a client's forgery.
    pub fn new(names: &Names) -> Managed {
        let mut cert = client_cert::managed(&Format::ALL, names);
        for name in client_cert::managed(&Format::ALL, &Names::default()) {
            if !cert.contains(&name) {
                cert.push(name);
            }
        }
        let mut folded: Vec<String> = cert
            .iter()
            .chain(forwarded::managed())
            .map(|n| fold(n.as_str()).into_owned())
            .collect();
        folded.sort();
        folded.dedup();
        let mut chain_prefixes: Vec<String> = [names, &Names::default()]
            .iter()
            .flat_map(|n| [n.apache_chain.as_str(), n.haproxy_chain.as_str()])
            .chain(WELL_KNOWN_CHAIN_PREFIXES)
            .map(|p| fold(p).into_owned())
            .collect();
        chain_prefixes.sort();
        chain_prefixes.dedup();
        Managed {
            folded,
            chain_prefixes,
        }
    }

    /// Whether `name` is a managed name or a variant of one (see the module documentation).
    pub fn covers(&self, name: &str) -> bool {
        let folded = fold(name);
        let folded = folded.as_ref();
        // Sorted in `new`.
        self.folded
            .binary_search_by(|f| f.as_str().cmp(folded))
            .is_ok()
            || self.chain_prefixes.iter().any(|prefix| {
                folded
                    .strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|index| {
                        !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())
                    })
            })
    }

    /// Removes every client-certificate header and every variant of any managed header.
    ///
    /// The forwarded headers under their exact names stay: `forwarded::apply` keeps a trusted
    /// peer's and replaces everyone else's.
    pub fn strip(&self, headers: &mut HeaderMap) {
        // One pass over the request's few names rather than a lookup for each of the many
        // managed ones: `covers` holds every certificate name (folded) too. Exact forwarded
        // names are left to `forwarded::apply`; only other spellings go here.
        let variants: Vec<HeaderName> = headers
            .keys()
            .filter(|name| !forwarded::managed().contains(name) && self.covers(name.as_str()))
            .cloned()
            .collect();
        for name in variants {
            headers.remove(name);
        }
    }
}

/// Lowercase, with every `_` written as `-`: the spelling two names share when a backend
/// would read them as the same variable. Borrowed when nothing changes, as for most header
/// names of a request (hyper's are lowercase already): this runs for each of them.
fn fold(name: &str) -> Cow<'_, str> {
    if !name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.bytes()
            .map(|b| match b {
                b'_' => '-',
                other => char::from(other.to_ascii_lowercase()),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn request(names: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for name in names {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("forged"),
            );
        }
        headers
    }

    #[test]
    fn variants_of_managed_names_are_covered() {
        let m = Managed::new(&Names::default());
        for name in [
            "X_Forwarded_For",
            "x-forwarded_proto",
            "X_Real_IP",
            "X_SSL_Client_Cert",
            "Client_Cert",
            "client_cert_chain",
            "SSL-CLIENT-CERT",
            "SSL-CLIENT-CERT-CHAIN-0",
            "SSL_CLIENT_CERT_CHAIN_12",
            "CERT-CHAIN-0",
            "CERT_CHAIN_10",
            "cert_chain_999",
            "X-SSL-Client-Cert-Chain_10",
            "x_ssl_client_cert_chain_3",
            "X_Forwarded_Tls_Client_Cert",
            "X_Forwarded_Client_Cert",
            "SSL_Client_Verify",
        ] {
            assert!(m.covers(name), "{name} must be covered");
        }
        for name in [
            "X-Forwarded-Fo",
            "Client-Certs",
            "CERT_CHAIN",
            "CERT_CHAIN_",
            "CERT_CHAIN_1a",
            "CERT_CHAINS_1",
            "X_Request_Id",
            "user_agent",
        ] {
            assert!(!m.covers(name), "{name} must not be covered");
        }
    }

    #[test]
    fn renamed_headers_are_covered_with_the_defaults() {
        let names = Names {
            apache_cert: HeaderName::from_static("x-client-pem"),
            apache_chain: "X-Client-Pem-Chain".parse().unwrap(),
            ..Names::default()
        };
        let m = Managed::new(&names);
        for name in [
            "X_Client_Pem",
            "X_Client_Pem_Chain_11",
            "SSL_CLIENT_CERT",
            "CERT_CHAIN_11",
        ] {
            assert!(m.covers(name), "{name} must be covered");
        }
    }

    #[test]
    fn strip_leaves_exact_forwarded_names_to_the_forwarded_rules() {
        let m = Managed::new(&Names::default());
        let mut headers = request(&[
            "x-forwarded-for",
            "x_forwarded_for",
            "client-cert",
            "Client_Cert",
            "cert_chain_10",
            "x-request-id",
            "forwarded",
        ]);
        m.strip(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["forwarded", "x-forwarded-for", "x-request-id"]);
    }
}
