//! Choosing the server certificate by SNI.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

/// Picks the server certificate whose DNS subject alternative names cover the SNI name.
///
/// Matching is case-insensitive and ignores a trailing dot. A SAN `*.example.com` covers
/// exactly one extra label (`a.example.com`, not `example.com` nor `a.b.example.com`).
/// Exact names win over wildcards; among equals the certificate listed first wins. The
/// subject CN is not consulted (like browsers, only SANs count).
///
/// A client that sends no SNI (for example one that connects by IP address) or a name that
/// no certificate covers gets the **first** certificate rather than a failed handshake: the
/// first certificate is the listener's default, and the client's own name check then decides.
/// This mirrors nginx's and haproxy's default-certificate behaviour.
#[derive(Debug)]
pub struct SniResolver {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    /// Lower-case DNS SANs without trailing dots; wildcards keep their `*.` prefix.
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

impl SniResolver {
    /// `keys` must not be empty; the first one is the default. Each leaf's DNS SANs are read
    /// here; a leaf that cannot be parsed simply has no names.
    pub fn new(keys: Vec<CertifiedKey>) -> Self {
        let entries = keys
            .into_iter()
            .map(|key| Entry {
                names: key
                    .end_entity_cert()
                    .map(|c| dns_names(c))
                    .unwrap_or_default(),
                key: Arc::new(key),
            })
            .collect();
        SniResolver { entries }
    }

    /// The certificate for `server_name`, as described on the type.
    pub fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let default = self.entries.first().map(|e| e.key.clone());
        let Some(name) = server_name else {
            return default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let exact = self.entries.iter().find(|e| e.names.contains(&name));
        let wildcard = || {
            self.entries
                .iter()
                .find(|e| e.names.iter().any(|n| wildcard_matches(n, &name)))
        };
        exact.or_else(wildcard).map(|e| e.key.clone()).or(default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(client_hello.server_name())
    }
}

/// `*.example.com` matches `a.example.com` only: one non-empty label in place of the `*`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest == suffix,
        None => false,
    }
}

fn dns_names(cert: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::wildcard_matches;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(!wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(!wildcard_matches("*.example.com", ".example.com"));
        assert!(!wildcard_matches("a.example.com", "a.example.com"));
    }
}
