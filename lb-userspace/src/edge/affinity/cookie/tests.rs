use std::net::IpAddr;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use sha2::{Digest as _, Sha256};

use super::*;
use crate::{
    config::affinity::{CookieKey, CookieSettings, SameSite},
    edge::pool::Pool,
};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn settings() -> CookieSettings {
    CookieSettings {
        name: "SLUICE_AFFINITY".to_owned(),
        secure: true,
        http_only: true,
        same_site: SameSite::Lax,
        max_age: None,
        path: "/realms".to_owned(),
        key: CookieKey::Random,
    }
}

/// a, b up; c draining; d down; members a..d.
fn pool() -> Pool {
    let pool = Pool::default();
    let (a, b, c, d) = (
        ip("198.18.10.2"),
        ip("198.18.11.2"),
        ip("198.18.12.2"),
        ip("2001:db8:13::2"),
    );
    pool.update(vec![a, b], vec![a, b, c], vec![a, b, c, d]);
    pool
}

/// HMAC-SHA256 written out from RFC 2104 over `sha2`, independent of ring.
fn rfc2104(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn the_tag_is_the_truncated_hmac_of_route_and_address() {
    let c = with_key(&settings(), "realms", KEY);
    let mut message = b"sluice-affinity-v1\0realms\0".to_vec();
    message.extend_from_slice(&[0; 10]);
    message.extend_from_slice(&[0xff, 0xff, 198, 18, 10, 2]);
    let mac = rfc2104(KEY, &message);
    assert_eq!(c.tag(ip("198.18.10.2")), mac[..16]);
    // IPv6 as it is; IPv4 as its mapped form.
    let mut v6 = b"sluice-affinity-v1\0realms\0".to_vec();
    v6.extend_from_slice(&ip6("2001:db8:13::2"));
    assert_eq!(c.tag(ip("2001:db8:13::2")), rfc2104(KEY, &v6)[..16]);
    // Bound to route, address and key.
    let tags = [
        c.tag(ip("198.18.10.2")),
        c.tag(ip("198.18.10.3")),
        with_key(&settings(), "realms2", KEY).tag(ip("198.18.10.2")),
        with_key(&settings(), "realms", b"another key, also 32 bytes long!").tag(ip("198.18.10.2")),
    ];
    for (i, t) in tags.iter().enumerate() {
        assert!(tags[i + 1..].iter().all(|u| u != t), "tag {i} repeats");
    }
    // Two keys made at random differ.
    let r1 = Cookie::new(&settings(), "realms").tag(ip("198.18.10.2"));
    let r2 = Cookie::new(&settings(), "realms").tag(ip("198.18.10.2"));
    assert_ne!(r1, r2);
}

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

#[test]
fn values_round_trip_and_nothing_else_decodes() {
    let tag: Tag = core::array::from_fn(|i| u8::try_from(i * 17).unwrap());
    let value = encode(&tag);
    assert_eq!(value.len(), 23);
    assert!(value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(decode(&value), Some(tag));
    let mut v2 = [2u8; 17];
    v2[1..].copy_from_slice(&tag);
    // The last character carries 2 bits of padding, which must be zero (one value per tag).
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = alphabet.find(&value[22..]).unwrap();
    assert_eq!(last % 4, 0);
    let loose = format!("{}{}", &value[..22], &alphabet[last + 1..last + 2]);
    let bad = [
        String::new(),
        "x".to_owned(),
        value[..22].to_owned(),
        format!("{value}A"),
        format!("{value}="),
        URL_SAFE_NO_PAD.encode(v2),
        value.replace(['-', '_'], "+"),
        "x".repeat(4096),
        "é".repeat(11) + "x",
        loose,
    ];
    for b in &bad {
        if b != &value {
            assert_eq!(decode(b), None, "{b}");
        }
    }
}

#[test]
fn only_a_members_tag_is_read_and_its_state_decides() {
    let c = with_key(&settings(), "realms", KEY);
    let p = pool();
    let now = p.snapshot();
    let value = |b: &str| encode(&c.tag(ip(b)));
    assert_eq!(c.read(None, &now), Read::Missing);
    assert_eq!(
        c.read(Some(&value("198.18.10.2")), &now),
        Read::Up(ip("198.18.10.2"))
    );
    // Draining keeps its sessions.
    assert_eq!(
        c.read(Some(&value("198.18.12.2")), &now),
        Read::Up(ip("198.18.12.2"))
    );
    assert_eq!(
        c.read(Some(&value("2001:db8:13::2")), &now),
        Read::Down(ip("2001:db8:13::2"))
    );
    // Not a member: removed, or never one.
    assert_eq!(c.read(Some(&value("198.18.99.2")), &now), Read::Invalid);
    // Every single flipped bit of the tag.
    let tag = c.tag(ip("198.18.10.2"));
    for bit in 0..TAG * 8 {
        let mut forged = tag;
        forged[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(c.read(Some(&encode(&forged)), &now), Read::Invalid, "{bit}");
    }
    // Another route's, another key's.
    let other = with_key(&settings(), "resources", KEY);
    let elsewhere = encode(&other.tag(ip("198.18.10.2")));
    assert_eq!(c.read(Some(&elsewhere), &now), Read::Invalid);
    let rekeyed = with_key(&settings(), "realms", &[7; 32]);
    let stale = encode(&rekeyed.tag(ip("198.18.10.2")));
    assert_eq!(c.read(Some(&stale), &now), Read::Invalid);
    // The address itself is no cookie.
    for garbage in ["198.18.10.2", "", "x", &"A".repeat(23), &"x".repeat(8192)] {
        assert_eq!(c.read(Some(garbage), &now), Read::Invalid, "{garbage}");
    }
}

#[test]
fn a_new_pool_is_read_with_its_own_members() {
    let c = with_key(&settings(), "realms", KEY);
    let p = pool();
    let added = encode(&c.tag(ip("198.18.14.2")));
    assert_eq!(c.read(Some(&added), &p.snapshot()), Read::Invalid);
    let a = ip("198.18.10.2");
    let e = ip("198.18.14.2");
    p.update(vec![a, e], vec![a, e], vec![a, e]);
    assert_eq!(c.read(Some(&added), &p.snapshot()), Read::Up(e));
    // Removed by the same change.
    let gone = encode(&c.tag(ip("198.18.11.2")));
    assert_eq!(c.read(Some(&gone), &p.snapshot()), Read::Invalid);
}

#[test]
fn set_cookie_carries_the_value_and_the_configured_attributes() {
    let c = with_key(&settings(), "realms", KEY);
    let now = pool().snapshot();
    let value = encode(&c.tag(ip("198.18.10.2")));
    assert_eq!(
        c.set_cookie(ip("198.18.10.2"), &now).unwrap(),
        format!("SLUICE_AFFINITY={value}; Path=/realms; Secure; HttpOnly; SameSite=Lax").as_str()
    );
    let other = CookieSettings {
        name: "kc_route".to_owned(),
        secure: false,
        http_only: false,
        same_site: SameSite::Strict,
        max_age: Some(28_800),
        path: "/".to_owned(),
        key: CookieKey::Random,
    };
    let c = with_key(&other, "realms", KEY);
    // A backend that left the pool while the request was out still gets its cookie.
    let value = encode(&c.tag(ip("198.18.77.2")));
    assert_eq!(
        c.set_cookie(ip("198.18.77.2"), &now).unwrap(),
        format!("kc_route={value}; Path=/; Max-Age=28800; SameSite=Strict").as_str()
    );
}
