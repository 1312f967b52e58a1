//! Addresses and ports in the byte order the kernel keys use.

use std::net::IpAddr;

use lb_common::{
    flow_hash::addr_words, FlowKey, VipKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP,
};

use crate::config::Protocol;

pub fn family_and_words(ip: IpAddr) -> (u8, [u32; 4]) {
    match ip {
        IpAddr::V4(a) => (FAMILY_V4, addr_words(&a.octets())),
        IpAddr::V6(a) => (FAMILY_V6, addr_words(&a.octets())),
    }
}

pub fn words_to_ip(family: u8, w: [u32; 4]) -> IpAddr {
    let mut b = [0u8; 16];
    for (chunk, word) in b.chunks_exact_mut(4).zip(w) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    if family == FAMILY_V4 {
        IpAddr::from([b[0], b[1], b[2], b[3]])
    } else {
        IpAddr::from(b)
    }
}

pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

/// The VIP map key for a service.
pub fn vip_key(addr: IpAddr, port: u16, protocol: Protocol) -> VipKey {
    let (family, addr_be) = family_and_words(addr);
    VipKey {
        addr_be,
        port_be: port.to_be(),
        proto: proto_number(protocol),
        family,
    }
}

/// The conntrack key of a client's flow, as the kernel builds it from the packet.
pub fn flow_key(
    client: IpAddr,
    client_port: u16,
    vip: IpAddr,
    vip_port: u16,
    protocol: Protocol,
) -> FlowKey {
    let bytes = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let (family, _) = family_and_words(client);
    FlowKey::new(
        family,
        proto_number(protocol),
        &bytes(client),
        client_port,
        &bytes(vip),
        vip_port,
    )
}
