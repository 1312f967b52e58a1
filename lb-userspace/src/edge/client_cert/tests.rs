//! Every format with a CA → intermediate → leaf chain generated here, each header decoded the
//! way the matching Keycloak `x509cert-lookup` provider decodes it (re-implemented from its
//! behaviour, strictly: base64 must be clean after BEGIN/END lines and newlines are removed).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use super::*;
use crate::config::client_cert::{managed, ChainPrefix, MAX_CHAIN};
use crate::test_support::ca;

struct Chain {
    leaf: Vec<u8>,
    inter: Vec<u8>,
    ca: Vec<u8>,
}

fn chain() -> Chain {
    let root = ca("sluice test CA", None);
    let inter = ca("sluice test intermediate", Some(&root));

    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["alice.example.com".to_owned()]).expect("leaf params");
    leaf_params.subject_alt_names.push(SanType::URI(
        "spiffe://example.com/ns/a;b=c".try_into().expect("uri"),
    ));
    leaf_params.distinguished_name = DistinguishedName::new();
    let dn = &mut leaf_params.distinguished_name;
    dn.push(DnType::CountryName, "DE");
    dn.push(DnType::OrganizationName, "Example, Inc.");
    dn.push(DnType::OrganizationalUnitName, "R&D; Ops");
    dn.push(DnType::CommonName, "alice");
    let leaf = leaf_params.signed_by(&leaf_key, &inter).expect("leaf");

    Chain {
        leaf: leaf.der().to_vec(),
        inter: inter.der().to_vec(),
        ca: root.der().to_vec(),
    }
}

/// Every format that carries a chain at the [`MAX_CHAIN`] cap, for tests about encoding.
fn long() -> ChainLengths {
    Format::ALL
        .into_iter()
        .filter(|f| *f != Format::Nginx)
        .fold(ChainLengths::default(), |l, f| {
            l.with(f, MAX_CHAIN).expect("MAX_CHAIN is allowed")
        })
}

const SUBJECT_NGINX: &str = "CN=alice,OU=R&D\\; Ops,O=Example\\, Inc.,C=DE";
const SUBJECT_ENVOY: &str = "CN=alice,OU=R&D\\3B Ops,O=Example\\, Inc.,C=DE";

// ---- Keycloak's decoding, re-implemented ----

/// `java.net.URLDecoder.decode(s, UTF-8)`: form decoding, `+` is a space.
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf-8")
}

/// `PemUtils.decodeCertificate`: drop BEGIN/END lines and line breaks, trim, then (strictly)
/// base64.
fn pem_utils(pem: &str) -> Vec<u8> {
    let body = pem
        .replace("-----BEGIN CERTIFICATE-----", "")
        .replace("-----END CERTIFICATE-----", "")
        .replace("\r\n", "")
        .replace('\n', "");
    STANDARD.decode(body.trim()).expect("strict base64")
}

fn trim_double_quotes(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn get<'h>(headers: &'h [(HeaderName, HeaderValue)], name: &str) -> Option<&'h str> {
    let mut found = headers.iter().filter(|(n, _)| n.as_str() == name);
    let first = found.next().map(|(_, v)| v.to_str().expect("ascii"));
    assert!(found.next().is_none(), "{name} set twice");
    first
}

/// The DER chain the Keycloak provider for `format` reads from `headers`.
fn keycloak(format: Format, headers: &[(HeaderName, HeaderValue)]) -> Vec<Vec<u8>> {
    let names = Names::default();
    match format {
        // Rfc9440ClientCertificateLookup
        Format::Rfc9440 => {
            let seq = |v: &str| {
                let b64 = v.strip_prefix(':').and_then(|v| v.strip_suffix(':'));
                STANDARD
                    .decode(b64.expect("byte sequence"))
                    .expect("base64")
            };
            let mut out = vec![seq(get(headers, "client-cert").expect("client-cert"))];
            if let Some(list) = get(headers, "client-cert-chain") {
                out.extend(list.split(',').map(|e| seq(e.trim_start())));
            }
            out
        }
        // NginxProxySslClientCertificateLookup (the chain comes from Keycloak's truststore)
        Format::Nginx => {
            let pem = url_decode(trim_double_quotes(
                get(headers, "ssl-client-cert").expect("cert"),
            ));
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
            vec![pem_utils(&pem)]
        }
        // Apache- and HaProxySslClientCertificateLookup: leaf, then <prefix>_0.. until absent.
        Format::Apache | Format::Haproxy => {
            let (cert, prefix) = indexed_names(format, &names);
            let mut out = vec![pem_utils(trim_double_quotes(
                get(headers, cert.as_str()).expect("leaf"),
            ))];
            for i in 0..MAX_CHAIN {
                let name = format!("{}_{i}", prefix.as_str()).to_ascii_lowercase();
                if let Some(v) = get(headers, &name) {
                    if format == Format::Apache {
                        assert!(v.starts_with("-----BEGIN CERTIFICATE-----"));
                    }
                    out.push(pem_utils(trim_double_quotes(v)));
                }
            }
            out
        }
        // TraefikProxySslClientCertificateLookup (split on ",", PemUtils each)
        Format::Traefik => get(headers, "x-forwarded-tls-client-cert")
            .expect("traefik")
            .split(',')
            .map(pem_utils)
            .collect(),
        // EnvoyProxySslClientCertificateLookup: split on ";", keep "k=v" pairs with exactly
        // one "=", URL-decode Chain, drop quotes and line breaks, split after each END line.
        Format::Envoy => {
            let xfcc = get(headers, "x-forwarded-client-cert").expect("xfcc");
            let mut map = std::collections::HashMap::new();
            for part in xfcc.split(';') {
                let kv: Vec<&str> = part.split('=').collect();
                if let [k, v] = kv[..] {
                    // Collectors.toMap throws on a duplicate key.
                    assert!(map.insert(k, v).is_none(), "duplicate key {k}");
                }
            }
            let chain = url_decode(map["Chain"]).replace(['"', '\r', '\n'], "");
            let end = "-----END CERTIFICATE-----";
            chain
                .split_inclusive(end)
                .filter(|p| !p.is_empty())
                .map(pem_utils)
                .collect()
        }
    }
}

fn names_of(headers: &[(HeaderName, HeaderValue)]) -> Vec<&str> {
    headers.iter().map(|(n, _)| n.as_str()).collect()
}

fn assert_clean(headers: &[(HeaderName, HeaderValue)]) {
    for (name, value) in headers {
        assert!(
            !value.as_bytes().iter().any(|b| *b == b'\r' || *b == b'\n'),
            "{name} holds CR/LF"
        );
    }
}

// ---- each format, leaf + two certificates of chain ----

fn verified_full(format: Format) -> (Chain, Vec<(HeaderName, HeaderValue)>) {
    let c = chain();
    let chain_refs: [&[u8]; 2] = [&c.inter, &c.ca];
    let cert = ClientCert::Verified {
        leaf: &c.leaf,
        chain: &chain_refs,
    };
    let headers = headers(&[format], &Names::default(), &long(), &cert).expect("headers");
    assert_clean(&headers);
    (c, headers)
}

#[test]
fn rfc9440_with_chain() {
    let (c, h) = verified_full(Format::Rfc9440);
    assert_eq!(names_of(&h), ["client-cert", "client-cert-chain"]);
    let list = get(&h, "client-cert-chain").expect("chain");
    assert_eq!(list.matches(", :").count(), 1, "{list}");
    assert_eq!(keycloak(Format::Rfc9440, &h), [c.leaf, c.inter, c.ca]);
}

#[test]
fn nginx_with_chain() {
    let (c, h) = verified_full(Format::Nginx);
    assert_eq!(
        names_of(&h),
        [
            "ssl-client-cert",
            "ssl-client-verify",
            "ssl-client-subject-dn",
            "ssl-client-issuer-dn"
        ]
    );
    let escaped = get(&h, "ssl-client-cert").expect("cert");
    assert!(
        escaped.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{escaped}"
    );
    assert!(
        escaped.ends_with("-----END%20CERTIFICATE-----%0A"),
        "{escaped}"
    );
    assert!(!escaped.contains(['+', '/', '=', ' ']), "{escaped}");
    assert_eq!(get(&h, "ssl-client-verify"), Some("SUCCESS"));
    assert_eq!(get(&h, "ssl-client-subject-dn"), Some(SUBJECT_NGINX));
    assert_eq!(
        get(&h, "ssl-client-issuer-dn"),
        Some("CN=sluice test intermediate")
    );
    assert_eq!(keycloak(Format::Nginx, &h), [c.leaf]);
}

#[test]
fn apache_with_chain() {
    let (c, h) = verified_full(Format::Apache);
    assert_eq!(
        names_of(&h),
        ["ssl_client_cert", "cert_chain_0", "cert_chain_1"]
    );
    let leaf = get(&h, "ssl_client_cert").expect("leaf");
    assert_eq!(
        leaf,
        format!(
            "-----BEGIN CERTIFICATE----- {} -----END CERTIFICATE-----",
            STANDARD.encode(&c.leaf)
        )
    );
    assert_eq!(keycloak(Format::Apache, &h), [c.leaf, c.inter, c.ca]);
}

#[test]
fn haproxy_with_chain() {
    let (c, h) = verified_full(Format::Haproxy);
    assert_eq!(
        names_of(&h),
        [
            "x-ssl-client-cert",
            "x-ssl-client-cert-chain_0",
            "x-ssl-client-cert-chain_1"
        ]
    );
    assert_eq!(
        get(&h, "x-ssl-client-cert"),
        Some(STANDARD.encode(&c.leaf).as_str())
    );
    assert_eq!(keycloak(Format::Haproxy, &h), [c.leaf, c.inter, c.ca]);
}

#[test]
fn traefik_with_chain() {
    let (c, h) = verified_full(Format::Traefik);
    assert_eq!(names_of(&h), ["x-forwarded-tls-client-cert"]);
    let expected = [&c.leaf, &c.inter, &c.ca]
        .map(|d| STANDARD.encode(d))
        .join(",");
    assert_eq!(
        get(&h, "x-forwarded-tls-client-cert"),
        Some(expected.as_str())
    );
    assert_eq!(keycloak(Format::Traefik, &h), [c.leaf, c.inter, c.ca]);
}

#[test]
fn envoy_with_chain() {
    use sha2::{Digest as _, Sha256};
    let (c, h) = verified_full(Format::Envoy);
    assert_eq!(names_of(&h), ["x-forwarded-client-cert"]);
    let xfcc = get(&h, "x-forwarded-client-cert").expect("xfcc");
    let hash = Sha256::digest(&c.leaf)
        .iter()
        .fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        });
    let cert = super::encoding::escape(&super::encoding::pem(&c.leaf));
    assert!(
        xfcc.starts_with(&format!(
            "Hash={hash};Cert=\"{cert}\";Chain=\"-----BEGIN%20CERTIFICATE-----%0A"
        )),
        "{xfcc}"
    );
    assert!(
        xfcc.ends_with(&format!(
            "\";Subject=\"{SUBJECT_ENVOY}\";URI=\"spiffe://example.com/ns/a;b=c\";DNS=alice.example.com"
        )),
        "{xfcc}"
    );
    // One element: no top-level comma outside quotes.
    assert_eq!(
        xfcc.matches(',').count(),
        SUBJECT_ENVOY.matches(',').count()
    );
    assert_eq!(keycloak(Format::Envoy, &h), [c.leaf, c.inter, c.ca]);
}

#[test]
fn every_format_without_intermediates() {
    let c = chain();
    let cert = ClientCert::Verified {
        leaf: &c.leaf,
        chain: &[],
    };
    let h = headers(&Format::ALL, &Names::default(), &long(), &cert).expect("headers");
    assert_clean(&h);
    assert_eq!(
        names_of(&h),
        [
            "client-cert",
            "ssl-client-cert",
            "ssl-client-verify",
            "ssl-client-subject-dn",
            "ssl-client-issuer-dn",
            "ssl_client_cert",
            "x-ssl-client-cert",
            "x-forwarded-tls-client-cert",
            "x-forwarded-client-cert",
        ]
    );
    for format in Format::ALL {
        assert_eq!(
            keycloak(format, &h),
            std::slice::from_ref(&c.leaf),
            "{format}"
        );
    }
}

#[test]
fn no_certificate_only_nginx_says_none() {
    let h = headers(&Format::ALL, &Names::default(), &long(), &ClientCert::None).expect("headers");
    assert_eq!(names_of(&h), ["ssl-client-verify"]);
    assert_eq!(get(&h, "ssl-client-verify"), Some("NONE"));
    let without_nginx = [Format::Rfc9440, Format::Apache, Format::Envoy];
    let h = headers(
        &without_nginx,
        &Names::default(),
        &long(),
        &ClientCert::None,
    )
    .expect("headers");
    assert!(h.is_empty());
}

#[test]
fn failed_certificate_only_nginx_says_failed() {
    let reason = ClientCert::Failed("certificate expired\r\nX-Evil: 1");
    let h = headers(&Format::ALL, &Names::default(), &long(), &reason).expect("headers");
    assert_clean(&h);
    assert_eq!(names_of(&h), ["ssl-client-verify"]);
    assert_eq!(
        get(&h, "ssl-client-verify"),
        Some("FAILED:certificate expired??X-Evil: 1")
    );
}

#[test]
fn managed_lists_every_name_lowercase() {
    let names = Names {
        apache_cert: HeaderName::from_bytes(b"X-Client-PEM").expect("name"),
        apache_chain: "X-Client-Chain".parse().expect("prefix"),
        ..Names::default()
    };
    let managed = managed(&Format::ALL, &names);
    let mut expected: Vec<String> = [
        "client-cert",
        "client-cert-chain",
        "ssl-client-cert",
        "ssl-client-verify",
        "ssl-client-subject-dn",
        "ssl-client-issuer-dn",
        "x-client-pem",
    ]
    .map(str::to_owned)
    .to_vec();
    expected.extend((0..MAX_CHAIN).map(|i| format!("x-client-chain_{i}")));
    expected.push("x-ssl-client-cert".to_owned());
    expected.extend((0..MAX_CHAIN).map(|i| format!("x-ssl-client-cert-chain_{i}")));
    expected.push("x-forwarded-tls-client-cert".to_owned());
    expected.push("x-forwarded-client-cert".to_owned());
    let got: Vec<&str> = managed.iter().map(HeaderName::as_str).collect();
    assert_eq!(got, expected);
    assert!(got.iter().all(|n| *n == n.to_ascii_lowercase()));

    // Everything headers() can add is managed.
    let c = chain();
    let many: Vec<&[u8]> = std::iter::repeat_n(c.inter.as_slice(), MAX_CHAIN).collect();
    let cert = ClientCert::Verified {
        leaf: &c.leaf,
        chain: &many,
    };
    for (name, _) in headers(&Format::ALL, &names, &long(), &cert).expect("headers") {
        assert!(managed.contains(&name), "{name} not managed");
    }
    assert_eq!(
        crate::config::client_cert::managed(&[Format::Nginx, Format::Nginx], &names).len(),
        4
    );
}

#[test]
fn chain_is_cut_to_the_cap_nearest_the_leaf_first() {
    let c = chain();
    let mut many: Vec<&[u8]> = std::iter::repeat_n(c.inter.as_slice(), MAX_CHAIN).collect();
    many.push(&c.ca);
    let cert = ClientCert::Verified {
        leaf: &c.leaf,
        chain: &many,
    };
    let h = headers(&[Format::Rfc9440], &Names::default(), &long(), &cert).expect("headers");
    let mut want = vec![c.leaf.clone()];
    want.extend(std::iter::repeat_n(c.inter.clone(), MAX_CHAIN));
    assert_eq!(keycloak(Format::Rfc9440, &h), want);
}

#[test]
fn colliding_names_are_refused() {
    let c = chain();
    let names = Names {
        haproxy_cert: HeaderName::from_static("ssl_client_cert"),
        ..Names::default()
    };
    let cert = ClientCert::Verified {
        leaf: &c.leaf,
        chain: &[],
    };
    let result = headers(&[Format::Apache, Format::Haproxy], &names, &long(), &cert);
    assert!(matches!(result, Err(Error::Collision(n)) if n == "ssl_client_cert"));
    // The same format twice is one format.
    let h = headers(&[Format::Apache, Format::Apache], &names, &long(), &cert).expect("headers");
    assert_eq!(h.len(), 1);
}

#[test]
fn garbage_leaf_is_an_error_not_a_panic() {
    for leaf in [&b""[..], b"\x30\x03\x02\x01", b"not a certificate"] {
        let cert = ClientCert::Verified { leaf, chain: &[] };
        assert!(matches!(
            headers(&Format::ALL, &Names::default(), &long(), &cert),
            Err(Error::Certificate(_))
        ));
        // Formats that do not parse the certificate still only encode bytes.
        let h = headers(
            &[Format::Rfc9440, Format::Traefik],
            &Names::default(),
            &long(),
            &cert,
        )
        .expect("headers");
        assert_clean(&h);
    }
}

#[test]
fn format_names() {
    assert_eq!(
        Format::ALL.map(|f| f.to_string()),
        ["rfc9440", "nginx", "apache", "haproxy", "traefik", "envoy"]
    );
}

#[test]
fn default_names_are_valid() {
    let names = Names::default();
    for prefix in [&names.apache_chain, &names.haproxy_chain] {
        assert_eq!(
            prefix.as_str().parse::<ChainPrefix>().ok().as_ref(),
            Some(prefix)
        );
    }
    assert_eq!(names.apache_cert, "ssl_client_cert");
    assert_eq!(names.haproxy_cert, "x-ssl-client-cert");
    assert!("".parse::<ChainPrefix>().is_err());
    assert!("bad prefix".parse::<ChainPrefix>().is_err());
}

#[test]
fn nginx_escaping_matches_uri_component() {
    assert_eq!(
        super::encoding::escape("a+b/c=d e\nf-._~%"),
        "a%2Bb%2Fc%3Dd%20e%0Af-._~%25"
    );
}

#[test]
fn xfcc_values_are_quoted_when_needed() {
    use super::encoding::xfcc_value;
    assert_eq!(xfcc_value("alice.example.com"), "alice.example.com");
    assert_eq!(xfcc_value("a,b"), "\"a,b\"");
    assert_eq!(xfcc_value("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(xfcc_value("a b\r\n"), "a%20b%0D%0A");
}

// ---- issue 12, items 4 and 5 ----

/// `EnvoyProxySslClientCertificateLookup`'s map, exactly: split on `;`, then each part on `=`,
/// keep the parts that split in two, and fail on a repeated key (`Collectors.toMap`).
fn keycloak_xfcc_map(xfcc: &str) -> Result<std::collections::HashMap<&str, &str>, String> {
    let mut map = std::collections::HashMap::new();
    for part in xfcc.split(';') {
        let kv: Vec<&str> = part.split('=').collect();
        if let [k, v] = kv[..] {
            if map.insert(k, v).is_some() {
                return Err(format!("Duplicate key {k}"));
            }
        }
    }
    Ok(map)
}

#[test]
fn envoy_certificate_with_two_sans_of_each_kind_decodes_in_keycloak() {
    let c = chain();
    // Re-issue the leaf with two DNS and two URI SANs (SPIFFE-style), under a fresh CA.
    let ca = ca("another CA", None);
    let mut params = CertificateParams::new(vec![
        "first.example.com".to_owned(),
        "second.example.com".to_owned(),
    ])
    .expect("params");
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.com/ns/a/sa/first"
            .try_into()
            .expect("uri"),
    ));
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.com/ns/a/sa/second"
            .try_into()
            .expect("uri"),
    ));
    let leaf = params
        .signed_by(&KeyPair::generate().expect("key"), &ca)
        .expect("leaf");
    let leaf = leaf.der().to_vec();
    let path: [&[u8]; 1] = [&c.inter];
    let cert = ClientCert::Verified {
        leaf: &leaf,
        chain: &path,
    };
    let h = headers(
        &[Format::Envoy],
        &Names::default(),
        &ChainLengths::default(),
        &cert,
    )
    .expect("headers");
    let xfcc = get(&h, "x-forwarded-client-cert").expect("xfcc");
    let map = keycloak_xfcc_map(xfcc).unwrap_or_else(|e| panic!("{e}: {xfcc}"));
    assert_eq!(map.get("DNS"), Some(&"first.example.com"), "{xfcc}");
    assert_eq!(
        map.get("URI"),
        Some(&"spiffe://example.com/ns/a/sa/first"),
        "{xfcc}"
    );
    assert_eq!(xfcc.matches(";DNS=").count(), 1, "{xfcc}");
    assert_eq!(xfcc.matches(";URI=").count(), 1, "{xfcc}");
    assert!(
        xfcc.ends_with(";URI=spiffe://example.com/ns/a/sa/first;DNS=first.example.com"),
        "{xfcc}"
    );
    assert_eq!(keycloak(Format::Envoy, &h), [leaf, c.inter]);
}

/// What the Keycloak provider of `format`, with `certificate-chain-length = len`, makes of
/// `headers`: the chain it uses, or its refusal.
fn keycloak_with_length(
    format: Format,
    headers: &[(HeaderName, HeaderValue)],
    len: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let all = keycloak(format, headers);
    match format {
        // Rfc9440ClientCertificateLookup: more chain entries than the length is an error.
        Format::Rfc9440 if all.len() - 1 > len => Err(format!(
            "The amount of certificates in the chain header {} is bigger than the configured \
             limit of {len}.",
            all.len() - 1
        )),
        // Apache/HaProxy read <prefix>_0 .. <prefix>_<len-1>; Traefik keeps len + 1 in all.
        Format::Apache | Format::Haproxy | Format::Traefik => {
            Ok(all.into_iter().take(len + 1).collect())
        }
        // Nginx has no chain; Envoy has no length option.
        _ => Ok(all),
    }
}

#[test]
fn each_format_carries_at_most_its_keycloak_default_chain_length() {
    let c = chain();
    // A path of intermediate then anchor: longer than the defaults of all but envoy.
    let path: [&[u8]; 2] = [&c.inter, &c.ca];
    let cert = ClientCert::Verified {
        leaf: &c.leaf,
        chain: &path,
    };
    let defaults = ChainLengths::default();
    let h = headers(&Format::ALL, &Names::default(), &defaults, &cert).expect("headers");
    assert!(get(&h, "cert_chain_1").is_none());
    assert!(get(&h, "x-ssl-client-cert-chain_1").is_none());
    for format in Format::ALL {
        let len = ChainLengths::keycloak_default(format);
        assert_eq!(defaults.get(format), len, "{format}");
        let used =
            keycloak_with_length(format, &h, len).unwrap_or_else(|e| panic!("{format}: {e}"));
        let want: Vec<Vec<u8>> = match format {
            Format::Nginx => vec![c.leaf.clone()],
            Format::Envoy => vec![c.leaf.clone(), c.inter.clone(), c.ca.clone()],
            _ => vec![c.leaf.clone(), c.inter.clone()],
        };
        assert_eq!(used, want, "{format}");
        // Nothing sent that the provider would not read.
        assert_eq!(keycloak(format, &h), want, "{format}");
    }
    assert_eq!(
        [
            Format::Rfc9440,
            Format::Apache,
            Format::Haproxy,
            Format::Traefik
        ]
        .map(ChainLengths::keycloak_default),
        [1; 4]
    );
    assert_eq!(ChainLengths::keycloak_default(Format::Envoy), MAX_CHAIN);

    // Raised together with Keycloak's option, the whole path goes; 0 sends the leaf alone.
    let lengths = Format::ALL
        .into_iter()
        .filter(|f| *f != Format::Nginx)
        .fold(ChainLengths::default(), |l, f| {
            l.with(f, 2).expect("length")
        });
    let h = headers(&Format::ALL, &Names::default(), &lengths, &cert).expect("headers");
    for format in Format::ALL {
        let want = if format == Format::Nginx {
            vec![c.leaf.clone()]
        } else {
            vec![c.leaf.clone(), c.inter.clone(), c.ca.clone()]
        };
        assert_eq!(
            keycloak_with_length(format, &h, 2).expect("accepted"),
            want,
            "{format}"
        );
    }
    let none = ChainLengths::default()
        .with(Format::Rfc9440, 0)
        .expect("length");
    let h = headers(&[Format::Rfc9440], &Names::default(), &none, &cert).expect("headers");
    assert_eq!(names_of(&h), ["client-cert"]);

    assert!(matches!(
        ChainLengths::default().with(Format::Nginx, 1),
        Err(crate::config::client_cert::Error::NoChain(Format::Nginx))
    ));
    assert!(matches!(
        ChainLengths::default().with(Format::Traefik, MAX_CHAIN + 1),
        Err(crate::config::client_cert::Error::ChainLength { len: 11, .. })
    ));
}

#[test]
fn rfc9440_provider_refuses_a_chain_longer_than_its_length() {
    // The decoder above is strict like Keycloak: a chain of two with the default 1 fails.
    let c = chain();
    let path: [&[u8]; 2] = [&c.inter, &c.ca];
    let cert = ClientCert::Verified {
        leaf: &c.leaf,
        chain: &path,
    };
    let h = headers(&[Format::Rfc9440], &Names::default(), &long(), &cert).expect("headers");
    assert!(keycloak_with_length(Format::Rfc9440, &h, 1).is_err());
}

#[test]
fn envoy_san_that_would_repeat_a_key_for_keycloak_is_left_out() {
    let ca = ca("another CA", None);
    let mut params = CertificateParams::new(vec!["ok.example.com".to_owned()]).expect("params");
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.com/a;DNS=evil.example.com"
            .try_into()
            .expect("uri"),
    ));
    let leaf = params
        .signed_by(&KeyPair::generate().expect("key"), &ca)
        .expect("leaf");
    let cert = ClientCert::Verified {
        leaf: leaf.der(),
        chain: &[],
    };
    let h = headers(&[Format::Envoy], &Names::default(), &long(), &cert).expect("headers");
    let xfcc = get(&h, "x-forwarded-client-cert").expect("xfcc");
    let map = keycloak_xfcc_map(xfcc).unwrap_or_else(|e| panic!("{e}: {xfcc}"));
    assert_eq!(map.get("DNS"), Some(&"ok.example.com"), "{xfcc}");
    assert!(!xfcc.contains("URI="), "{xfcc}");
    assert_eq!(keycloak(Format::Envoy, &h), [leaf.der().to_vec()]);
}
