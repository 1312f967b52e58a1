//! Internet checksums of the headers sluice writes itself: the outer IPv4 header of a tunnel
//! packet, and the IP and TCP headers of a RST (inner headers are never touched, so their
//! checksums stay valid).

/// Adds the big-endian 16-bit words of `b` to `sum` (unfolded; callers stay far below 2^32).
#[inline(always)]
pub fn add<const N: usize>(sum: u32, b: &[u8; N]) -> u32 {
    add_range(sum, b, 0, N)
}

/// Adds the words of `b[from..to]` (`to - from` even, constant after inlining).
#[inline(always)]
pub fn add_range<const N: usize>(mut sum: u32, b: &[u8; N], from: usize, to: usize) -> u32 {
    let mut i = from;
    while i + 1 < to {
        sum += u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    sum
}

/// Adds an address held as network-order words (see `lb_common::AddrBe`).
#[inline(always)]
pub fn add_addr(mut sum: u32, a: &[u32; 4]) -> u32 {
    let mut i = 0;
    while i < 4 {
        sum = add(sum, &a[i].to_ne_bytes());
        i += 1;
    }
    sum
}

/// The checksum field for a ones' complement `sum`: folded to 16 bits and inverted.
#[inline(always)]
pub fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    // Truncation is the point: the folded sum fits in 16 bits.
    !(sum as u16)
}

#[inline(always)]
pub fn ipv4_header(h: &[u8; 20]) -> u16 {
    finish(add(0, h))
}
