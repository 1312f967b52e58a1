//! Wire-format constants and address words shared by the parsers and the code that writes
//! headers (encapsulation, decapsulation, RSTs). A leaf: it imports nothing of the crate.

pub const ETH_LEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

#[inline(always)]
pub fn addr4(b: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(b), 0, 0, 0]
}

#[inline(always)]
pub fn addr6(b: &[u8], at: usize) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([b[at + i], b[at + i + 1], b[at + i + 2], b[at + i + 3]]);
    [w(0), w(4), w(8), w(12)]
}
