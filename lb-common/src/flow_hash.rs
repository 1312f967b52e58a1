//! The flow hash that picks a Maglev slot, shared verbatim by the kernel and userspace.
//!
//! It works on the raw words of a [`FlowKey`] as they sit in memory (network byte order read as
//! native words) so the kernel hashes without byte swaps; userspace builds the same key with
//! [`FlowKey::new`] and gets the same hash. sluice's targets (`x86_64`, aarch64, bpfel) are all
//! little-endian, so gateways agree on every flow.
//!
//! The mixing is `MurmurHash3`'s 32-bit body and finaliser over a fixed number of words: no loops
//! with data-dependent bounds, which keeps the verifier and the JIT happy.

use crate::maps::{FlowKey, HASH_SOURCE_IP};

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;
/// Fixed seed so that every gateway and every version computes the same hash.
const SEED: u32 = 0x5eed_51ce;

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of the client's source address only (`hash = "source-ip"`): all flows of one client land
/// on one backend.
#[inline(always)]
pub const fn source_ip_hash(key: &FlowKey) -> u32 {
    let s = &key.src_be;
    let mut h = mix(SEED, key.family as u32);
    h = mix(h, s[0]);
    h = mix(h, s[1]);
    h = mix(h, s[2]);
    h = mix(h, s[3]);
    finish(h, 20)
}

/// Hash of the whole 5-tuple (`hash = "5-tuple"`, the default).
#[inline(always)]
pub const fn five_tuple_hash(key: &FlowKey) -> u32 {
    let (s, d) = (&key.src_be, &key.dst_be);
    let mut h = mix(SEED, ((key.family as u32) << 8) | key.proto as u32);
    h = mix(h, s[0]);
    h = mix(h, s[1]);
    h = mix(h, s[2]);
    h = mix(h, s[3]);
    h = mix(h, d[0]);
    h = mix(h, d[1]);
    h = mix(h, d[2]);
    h = mix(h, d[3]);
    h = mix(h, ((key.sport_be as u32) << 16) | key.dport_be as u32);
    finish(h, 44)
}

/// The hash that picks a tunnel packet's outer source address (and IPv6 flow label), so a
/// backend's NIC spreads decapsulation over its RSS queues. It runs on every forwarded
/// packet, where the Maglev hash above runs only when conntrack has no entry, so it is
/// cheaper: the words are folded with xor and only the fold is mixed (`MurmurHash3`'s
/// finaliser), about a quarter of [`five_tuple_hash`]'s work. Folding makes some distinct
/// flows collide (the same words in other fields), which costs nothing here: outer sources
/// only have to spread flows, not tell them apart. Every packet of a flow gets the same one.
#[inline(always)]
pub const fn encap_hash(key: &FlowKey) -> u32 {
    let (s, d) = (&key.src_be, &key.dst_be);
    let ports = ((key.sport_be as u32) << 16) | key.dport_be as u32;
    // Rotated so a client's address and the VIP's do not cancel when they are alike.
    let x = (s[0] ^ s[1] ^ s[2] ^ s[3]) ^ (d[0] ^ d[1] ^ d[2] ^ d[3]).rotate_left(16) ^ ports;
    finish(x ^ SEED, u32::from_ne_bytes([key.proto, key.family, 0, 0]))
}

/// The hash for a VIP's `hash_key` mode (`HASH_FIVE_TUPLE` or `HASH_SOURCE_IP`).
#[inline(always)]
pub const fn flow_hash(key: &FlowKey, hash_key: u8) -> u32 {
    if hash_key == HASH_SOURCE_IP {
        source_ip_hash(key)
    } else {
        five_tuple_hash(key)
    }
}

impl FlowKey {
    /// A key from addresses and ports in the byte order they have on the wire.
    ///
    /// `src` and `dst` are 4 bytes (IPv4) or 16 bytes (IPv6), e.g. `Ipv4Addr::octets()`.
    pub fn new(family: u8, proto: u8, src: &[u8], sport: u16, dst: &[u8], dport: u16) -> Self {
        Self {
            src_be: addr_words(src),
            dst_be: addr_words(dst),
            sport_be: sport.to_be(),
            dport_be: dport.to_be(),
            proto,
            family,
            _pad: [0; 2],
        }
    }
}

/// Network-order address bytes (4 or 16) as the four in-memory words the kernel reads.
pub fn addr_words(bytes: &[u8]) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (word, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{FAMILY_V4, FAMILY_V6, HASH_FIVE_TUPLE, PROTO_TCP, PROTO_UDP};

    fn v4(src: [u8; 4], sport: u16) -> FlowKey {
        FlowKey::new(FAMILY_V4, PROTO_TCP, &src, sport, &[198, 19, 0, 10], 80)
    }

    #[test]
    fn frozen_values() {
        // Gateways of different versions must agree: these values may never change.
        let k = v4([198, 18, 0, 2], 40000);
        assert_eq!(five_tuple_hash(&k), FROZEN_FIVE_TUPLE);
        assert_eq!(source_ip_hash(&k), FROZEN_SOURCE_IP);
    }
    const FROZEN_FIVE_TUPLE: u32 = 1_367_892_168;
    const FROZEN_SOURCE_IP: u32 = 2_867_921_583;

    #[test]
    fn encap_hash_spreads_a_clients_ports_and_clients() {
        // One client's connections (sequential ports) and many clients' must both spread over
        // the low bits that pick the outer source (a /24 of sources uses 8).
        let mut by_port = [0u32; 8];
        let mut by_client = [0u32; 8];
        for i in 0..8000u16 {
            by_port[(encap_hash(&v4([198, 18, 0, 2], i)) % 8) as usize] += 1;
            let [a, b] = i.to_be_bytes();
            by_client[(encap_hash(&v4([198, 18, a, b], 40000)) % 8) as usize] += 1;
        }
        for b in by_port.into_iter().chain(by_client) {
            assert!((900..1100).contains(&b), "{by_port:?} {by_client:?}");
        }
        let k = v4([198, 18, 0, 2], 40000);
        assert_eq!(encap_hash(&k), FROZEN_ENCAP, "outer sources would move");
    }
    const FROZEN_ENCAP: u32 = 1_496_149_772;

    #[test]
    fn source_ip_ignores_ports_and_protocol() {
        let a = v4([198, 18, 0, 2], 1000);
        let mut b = v4([198, 18, 0, 2], 2000);
        b.proto = PROTO_UDP;
        assert_eq!(flow_hash(&a, HASH_SOURCE_IP), flow_hash(&b, HASH_SOURCE_IP));
        assert_ne!(
            flow_hash(&a, HASH_FIVE_TUPLE),
            flow_hash(&b, HASH_FIVE_TUPLE)
        );
    }

    #[test]
    fn every_field_matters() {
        let base = FlowKey::new(FAMILY_V6, PROTO_TCP, &[1; 16], 1, &[2; 16], 2);
        let h = five_tuple_hash(&base);
        for i in 0..4 {
            let mut k = base;
            k.src_be[i] ^= 1;
            assert_ne!(five_tuple_hash(&k), h, "src word {i}");
            let mut k = base;
            k.dst_be[i] ^= 1;
            assert_ne!(five_tuple_hash(&k), h, "dst word {i}");
        }
        let mut k = base;
        k.sport_be ^= 1;
        assert_ne!(five_tuple_hash(&k), h);
        let mut k = base;
        k.family = FAMILY_V4;
        assert_ne!(five_tuple_hash(&k), h);
    }

    #[test]
    fn spreads_sequential_ports() {
        // Sequential source ports (what a client's kernel hands out) must spread evenly.
        let mut buckets = [0u32; 8];
        for port in 0..8000u16 {
            buckets[(five_tuple_hash(&v4([198, 18, 0, 2], port)) % 8) as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "{buckets:?}");
        }
    }
}
