//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624): the one
//! ones'-complement module every header and stage uses.
//!
//! Where it sits: under the wire wrappers ([`super::ipv4::Packet::fill_checksum`], the UDP and
//! TCP pseudo-header sums), under the offloads (finishing a partial checksum, cutting and
//! merging TCP super-frames, [`crate::offload`]) and under `lb-nat`, which folds every address
//! or port it rewrites into the IPv4, TCP, UDP and ICMP checksums with
//! `HC' = ~(~HC + ~m + m')` (RFC 1624, equation 3), so a rewrite costs a few adds instead of a
//! pass over the payload.
//!
//! Sums here are folded 16-bit ones'-complement values of big-endian words; 0 and 0xffff are
//! the same value (the ones'-complement double zero). [`sum`] adds 32 bytes per step on long
//! runs (vector adds of 32-bit words into 64-bit lanes, no carry chain) and eight bytes per step
//! on the rest, which the offload benches measure: keep it that way.

use std::net::Ipv4Addr;

use super::ipv4::ADDR_LEN;

/// Ones'-complement sum of `data` as big-endian 16-bit words (odd tail padded with zero), folded
/// to 16 bits. Native-endian words, summed exactly and folded at the end (RFC 1071: the sum
/// modulo 0xffff does not depend on the word size, and the native-endian sum is the byte swap
/// of the big-endian one): 32-bit words into eight lanes for runs of at least 128 bytes, then
/// eight bytes per add with end-around carry.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    // Long runs (a segment's payload, a super-frame) 32 bytes at a time into eight independent
    // 64-bit lanes of 32-bit words: no carry to chain from one add to the next, so the compiler
    // turns the loop into vector adds. A lane overflows only after 2^32 blocks (128 GiB).
    let rest = if data.len() >= 128 {
        let mut blocks = data.chunks_exact(32);
        let mut lanes = [0u64; 8];
        for b in &mut blocks {
            for (j, lane) in lanes.iter_mut().enumerate() {
                let mut w = [0u8; 4];
                w.copy_from_slice(&b[4 * j..4 * j + 4]);
                *lane += u64::from(u32::from_ne_bytes(w));
            }
        }
        for lane in lanes {
            let (s, carry) = acc.overflowing_add(lane);
            acc = s + u64::from(carry);
        }
        blocks.remainder()
    } else {
        data
    };
    let mut chunks = rest.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let (s, carry) = acc.overflowing_add(u64::from_ne_bytes(w));
        acc = s + u64::from(carry);
    }
    // The tail (0-7 bytes) as fixed-width reads, not a copy of variable length (a call to
    // memcpy): the fold below adds the four 16-bit lanes, so where a piece lands does not
    // matter, only that each byte keeps its place in its 16-bit word.
    let rem = chunks.remainder();
    let mut tail: u64 = 0;
    let mut rest = rem;
    if let Some((w, r)) = rest.split_first_chunk::<4>() {
        tail += u64::from(u32::from_ne_bytes(*w));
        rest = r;
    }
    if let Some((w, r)) = rest.split_first_chunk::<2>() {
        tail += u64::from(u16::from_ne_bytes(*w));
        rest = r;
    }
    if let [b] = rest {
        // An odd last byte is the first byte of a word padded with zero.
        tail += u64::from(u16::from_ne_bytes([*b, 0]));
    }
    let (s, carry) = acc.overflowing_add(tail);
    acc = s + u64::from(carry);
    let mut s = (acc & 0xffff_ffff) + (acc >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    // Two folds above leave at most 32 bits.
    let mut s = s as u32;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    // Two folds leave at most 16 bits.
    let native = s as u16;
    if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    }
}

/// Folds a 32-bit ones'-complement accumulator of 16-bit words to 16 bits.
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    // Two folds leave at most 16 bits.
    acc as u16
}

/// Ones'-complement addition of two 16-bit sums.
#[inline]
pub fn add(a: u16, b: u16) -> u16 {
    fold(u32::from(a) + u32::from(b))
}

/// The checksum of `data` (RFC 1071): the value to store in a zeroed checksum field.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// The sum of the IPv4 pseudo-header of a TCP or UDP segment (RFC 793, RFC 768): `addrs` holds
/// the IPv4 header's source and destination addresses (8 bytes, as they sit in the header),
/// `protocol` the IP protocol number, `len` the L4 length (header and payload).
#[inline]
pub fn pseudo_sum(addrs: &[u8; 2 * ADDR_LEN], protocol: u8, len: usize) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(addrs);
    pseudo[9] = protocol;
    // An L4 length above 64 KB cannot be in an IPv4 packet; the field is 16 bits.
    pseudo[10..].copy_from_slice(&(len as u16).to_be_bytes());
    sum(&pseudo)
}

/// As [`pseudo_sum`] from two addresses.
#[inline]
pub fn pseudo_sum_addrs(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: usize) -> u16 {
    let mut addrs = [0u8; 8];
    addrs[..4].copy_from_slice(&src.octets());
    addrs[4..].copy_from_slice(&dst.octets());
    pseudo_sum(&addrs, protocol, len)
}

/// RFC 1624 eqn. 3: the checksum `hc` after one 16-bit word changed from `old` to `new`.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!hc) + u32::from(!old) + u32::from(new))
}

/// As [`update16`] for a 32-bit field (an IPv4 address): two words at once.
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    // The truncating casts take the low word.
    let acc = u32::from(!hc)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(acc)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference sum: 16-bit big-endian words, one at a time.
    pub(crate) fn slow_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            acc += u32::from(w);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// Whether two sums are the same ones'-complement value (0 and 0xffff are).
    fn same(a: u16, b: u16) -> bool {
        a == b || (a, b) == (0, 0xffff) || (a, b) == (0xffff, 0)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example words: 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0xab]), 0xab00);
    }

    #[test]
    fn fast_sum_matches_the_word_by_word_sum() {
        for len in 0..400 {
            let d: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert!(same(sum(&d), slow_sum(&d)), "len {len}");
        }
        assert_eq!(sum(&[0xff; 64]), 0xffff);
        assert_eq!(sum(&[0xff; 65_536]), 0xffff);
        assert_eq!(sum(&[0u8; 65_536]), 0);
    }

    #[test]
    fn pseudo_sum_of_addresses_and_bytes_agree() {
        let (s, d) = (Ipv4Addr::new(10, 0, 9, 12), Ipv4Addr::new(10, 0, 9, 22));
        let bytes = [10, 0, 9, 12, 10, 0, 9, 22];
        assert_eq!(pseudo_sum(&bytes, 6, 1234), pseudo_sum_addrs(s, d, 6, 1234));
        let mut p = [0u8; 12];
        p[..8].copy_from_slice(&bytes);
        p[9] = 6;
        p[10..].copy_from_slice(&1234u16.to_be_bytes());
        assert!(same(pseudo_sum(&bytes, 6, 1234), slow_sum(&p)));
    }

    proptest! {
        #[test]
        fn fast_sum_equals_reference(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert!(same(sum(&data), slow_sum(&data)));
        }

        #[test]
        fn incremental_matches_full(mut data in proptest::collection::vec(any::<u8>(), 8..64),
                                    pos in 0usize..28, new16 in any::<u16>(), new32 in any::<u32>()) {
            let words = data.len() / 2;
            let w = (pos % (words - 1)) * 2;
            let hc = checksum(&data);
            let old16 = u16::from_be_bytes([data[w], data[w + 1]]);
            data[w..w + 2].copy_from_slice(&new16.to_be_bytes());
            let inc = update16(hc, old16, new16);
            // Both 0x0000 and 0xffff are the same ones'-complement value: compare as verified sums.
            prop_assert_eq!(add(sum(&data), inc), 0xffff);
            let old32 = u32::from_be_bytes([data[w], data[w + 1], data[w + 2], data[w + 3]]);
            let hc = checksum(&data);
            data[w..w + 4].copy_from_slice(&new32.to_be_bytes());
            let inc = update32(hc, old32, new32);
            prop_assert_eq!(add(sum(&data), inc), 0xffff);
        }
    }
}
