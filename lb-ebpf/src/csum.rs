//! Internet checksum of the outer IPv4 header (the only header sluice writes; inner headers are
//! untouched, so their checksums stay valid).

#[inline(always)]
pub fn ipv4_header(h: &[u8; 20]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 20 {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    // Truncation is the point: the folded sum fits in 16 bits.
    !(sum as u16)
}
