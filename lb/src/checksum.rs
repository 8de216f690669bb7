//! Internet checksum arithmetic: full sums and RFC 1624 incremental updates.
//!
//! Sits under the NAT rewrite ([`crate::packet`]): every address or port the load balancer
//! changes is folded into the IPv4, TCP, UDP and ICMP checksums with `HC' = ~(~HC + ~m + m')`
//! (RFC 1624, equation 3), so a rewrite costs a few adds instead of a pass over the payload.

/// Fold a 32-bit ones-complement accumulator to 16 bits.
#[inline]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Ones-complement sum of `data` (big-endian 16-bit words, odd tail padded with zero), unfolded.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// The Internet checksum (RFC 1071) of `data`: the value to store in a zeroed checksum field.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// RFC 1624 eqn. 3: the checksum `hc` after one 16-bit word changed from `old` to `new`.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!hc) + u32::from(!old) + u32::from(new))
}

/// As [`update16`] for a 32-bit field (an IPv4 address): two words at once.
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let acc = u32::from(!hc)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example words: 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0xab]), 0xab00);
    }

    proptest! {
        #[test]
        fn incremental_matches_full(mut data in proptest::collection::vec(any::<u8>(), 8..64),
                                    pos in 0usize..28, new16 in any::<u16>(), new32 in any::<u32>()) {
            let words = data.len() / 2;
            let w = (pos % (words - 1)) * 2;
            let hc = checksum(&data);
            let old16 = u16::from_be_bytes([data[w], data[w + 1]]);
            data[w..w + 2].copy_from_slice(&new16.to_be_bytes());
            let inc = update16(hc, old16, new16);
            // Both 0x0000 and 0xffff are the same ones-complement value: compare as verified sums.
            prop_assert_eq!(fold(sum(&data) + u32::from(inc)), 0xffff);
            let old32 = u32::from_be_bytes([data[w], data[w + 1], data[w + 2], data[w + 3]]);
            let hc = checksum(&data);
            data[w..w + 4].copy_from_slice(&new32.to_be_bytes());
            let inc = update32(hc, old32, new32);
            prop_assert_eq!(fold(sum(&data) + u32::from(inc)), 0xffff);
        }
    }
}
