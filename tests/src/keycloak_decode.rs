//! Client-certificate headers decoded the way Keycloak's x509 lookup providers decode them,
//! written independently of sluice's encoders, so the edge tests check what a real identity
//! provider would read.

use std::collections::HashMap;

use base64::{engine::general_purpose::STANDARD, Engine as _};

/// `java.net.URLDecoder`: `%XX` and `+` as a space.
pub fn form_url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).expect("a complete %XX escape");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 after URL decoding")
}

/// PEM (possibly on one line) to DER: drop the BEGIN/END markers and all whitespace, then
/// strict base64 (padding required, no stray characters).
pub fn pem_der(pem: &str) -> Vec<u8> {
    assert!(
        pem.trim_start().starts_with("-----BEGIN CERTIFICATE-----")
            && pem.trim_end().ends_with("-----END CERTIFICATE-----"),
        "not a PEM certificate: {pem:?}"
    );
    let body: String = pem
        .replace("-----BEGIN CERTIFICATE-----", "")
        .replace("-----END CERTIFICATE-----", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .unwrap_or_else(|e| panic!("strict base64 in {pem:?}: {e}"))
}

/// Bare base64 DER, strict.
pub fn b64_der(value: &str) -> Vec<u8> {
    STANDARD
        .decode(value)
        .unwrap_or_else(|e| panic!("strict base64 {value:?}: {e}"))
}

/// The `key=value` pairs of one XFCC element (`;`-separated, values may be quoted).
pub fn xfcc_pairs(element: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
    for c in element.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').expect("key=value");
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// `EnvoyProxySslClientCertificateLookup`'s map: split on `;`, each part on `=`, keep parts
/// that split in two, fail on a repeated key (`Collectors.toMap`).
pub fn keycloak_xfcc(xfcc: &str) -> Result<HashMap<&str, &str>, String> {
    let mut map = HashMap::new();
    for part in xfcc.split(';') {
        let kv: Vec<&str> = part.split('=').collect();
        if let [k, v] = kv[..] {
            if map.insert(k, v).is_some() {
                return Err(format!("Duplicate key {k} in {xfcc}"));
            }
        }
    }
    Ok(map)
}
