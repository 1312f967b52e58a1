//! CRC32C (Castagnoli, as iSCSI and SCTP use it) over a header whose checksum field counts as
//! zeros.

use crc::{Crc, CRC_32_ISCSI};

const CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// The checksum of `header` with the 4 bytes at `at` read as zeros: the sender computes it before
/// filling the field, the receiver without copying the header to clear it.
pub fn with_zeroed_field(header: &[u8], at: usize) -> u32 {
    let (before, rest) = header.split_at_checked(at).unwrap_or((header, &[]));
    let after = rest.get(4..).unwrap_or(&[]);
    let mut digest = CASTAGNOLI.digest();
    digest.update(before);
    digest.update(&[0; 4]);
    digest.update(after);
    digest.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3720, B.4: 32 bytes of zeros, 32 of 0xff.
    #[test]
    fn rfc3720_vectors() {
        assert_eq!(CASTAGNOLI.checksum(&[0; 32]), 0x8A91_36AA);
        assert_eq!(CASTAGNOLI.checksum(&[0xff; 32]), 0x62A8_AB43);
        let ascending: [u8; 32] = core::array::from_fn(|i| u8::try_from(i).unwrap());
        assert_eq!(CASTAGNOLI.checksum(&ascending), 0x46DD_794E);
    }

    #[test]
    fn zeroed_field_is_read_as_zeros() {
        let mut h = [7u8; 20];
        h[8..12].copy_from_slice(&[1, 2, 3, 4]);
        let mut z = h;
        z[8..12].fill(0);
        assert_eq!(with_zeroed_field(&h, 8), CASTAGNOLI.checksum(&z));
    }
}
