//! ESP packets (RFC 4303) with AES-GCM's 8-byte explicit IV (RFC 4106), as a zero-copy wrapper.
//!
//! Where it sits: an encrypted network's VXLAN datagrams travel between nodes inside ESP in
//! transport mode (IP protocol 50). `esp-decrypt` (crate `esp`), first on the receive path of
//! the ESP underlay port, wraps the IPv4 payload with [`Packet::new_checked`], reads the SPI
//! and the sequence number to find the SA and check replay, opens it in place and strips the
//! header, the IV and the [`Trailer`]; `esp-encrypt`, last on the transmit path, writes the
//! header and the IV into headroom and the padding, the trailer and the ICV after the payload.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ ---
//! |               Security Parameters Index (SPI)                 |  ^ header (8),
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  | the AAD
//! |                      Sequence Number                          |  v
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ ---
//! |                 Initialization Vector (8, explicit)           |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ ---
//! |                    Payload Data (variable)                    |  ^
//! ~                                                               ~  | encrypted
//! +               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  |
//! |               |     Padding (0-255 bytes: 1, 2, 3, ...)       |  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  |
//! |                               |  Pad Length   | Next Header   |  v
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ ---
//! |           Integrity Check Value (ICV, 16 bytes for GCM)       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The encrypted part (payload, padding, trailer) ends 4-byte aligned; the padding bytes are
//! 1, 2, 3, ... (RFC 4303 section 2.4), and a receiver checks them. The trailer and the
//! padding are only meaningful after decryption, so their accessors read whatever the buffer
//! holds: ciphertext before, plaintext after.

use super::{Error, be32, check_min_len, set_be32};

/// IP protocol number of ESP.
pub const PROTO_ESP: u8 = 50;
/// Length of the ESP header (SPI and sequence number).
pub const HEADER_LEN: usize = 8;
/// Length of AES-GCM's explicit IV (RFC 4106).
pub const IV_LEN: usize = 8;
/// Length of AES-GCM's ICV with a 16-byte tag (RFC 4106).
pub const ICV_LEN: usize = 16;
/// Length of the trailer (pad length and next header).
pub const TRAILER_LEN: usize = 2;
/// Smallest ESP packet: header, IV, trailer and ICV around an empty payload without padding.
pub const MIN_LEN: usize = HEADER_LEN + IV_LEN + TRAILER_LEN + ICV_LEN;
/// Bytes in front of the payload: header and IV.
pub const FRONT_LEN: usize = HEADER_LEN + IV_LEN;
/// Alignment of the encrypted part (payload, padding and trailer) on the wire.
pub const ALIGN: usize = 4;
/// SPIs 0..=255 are reserved by IANA (RFC 4303 section 2.1); none is ever used by an SA.
pub const SPI_RESERVED_MAX: u32 = 255;

/// Byte ranges of the fixed fields.
pub mod field {
    use core::ops::{Range, RangeFrom};

    /// Security Parameters Index.
    pub const SPI: Range<usize> = 0..4;
    /// Sequence number (the low 32 bits; no extended sequence numbers on the wire).
    pub const SEQ: Range<usize> = 4..8;
    /// The header: SPI and sequence number (AES-GCM's additional authenticated data).
    pub const HEADER: Range<usize> = 0..super::HEADER_LEN;
    /// The explicit IV.
    pub const IV: Range<usize> = 8..16;
    /// From the payload on (payload, padding, trailer and ICV).
    pub const REST: RangeFrom<usize> = super::FRONT_LEN..;
}

/// Bytes of padding for a payload of `payload_len` bytes: the fewest that end the encrypted
/// part (payload, padding, trailer) on a multiple of [`ALIGN`].
#[inline]
pub const fn pad_len_for(payload_len: usize) -> usize {
    (ALIGN - (payload_len + TRAILER_LEN) % ALIGN) % ALIGN
}

/// Length of the whole ESP packet carrying `payload_len` bytes with [`pad_len_for`] padding.
#[inline]
pub const fn packet_len_for(payload_len: usize) -> usize {
    FRONT_LEN + payload_len + pad_len_for(payload_len) + TRAILER_LEN + ICV_LEN
}

/// Whether `padding` holds exactly the bytes RFC 4303 prescribes: 1, 2, 3, ...
#[inline]
pub fn padding_is_valid(padding: &[u8]) -> bool {
    padding
        .iter()
        .enumerate()
        .all(|(i, &b)| usize::from(b) == i + 1)
}

/// Fills `padding` with the bytes RFC 4303 prescribes: 1, 2, 3, ... (at most 255 bytes).
#[inline]
pub fn fill_padding(padding: &mut [u8]) {
    for (i, b) in padding.iter_mut().enumerate() {
        // A pad length is one byte: at most 255, so i + 1 fits.
        *b = (i + 1) as u8;
    }
}

packet_wrapper! {
    /// A read/write wrapper around a whole ESP packet: header, IV, encrypted part and ICV.
    error: Error,
    /// Checks that the buffer holds at least header, IV, trailer and ICV ([`MIN_LEN`]).
    check_len: |packet| check_min_len(packet.buffer.as_ref().len(), MIN_LEN),
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The Security Parameters Index.
    #[inline]
    pub fn spi(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SPI])
    }

    /// The sequence number (32 bits on the wire).
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ])
    }

    /// The header bytes (SPI and sequence number): AES-GCM's additional authenticated data.
    #[inline]
    pub fn header(&self) -> &[u8; HEADER_LEN] {
        self.buffer.as_ref()[field::HEADER]
            .try_into()
            .expect("8-byte range")
    }

    /// The explicit IV.
    #[inline]
    pub fn iv(&self) -> [u8; IV_LEN] {
        self.buffer.as_ref()[field::IV]
            .try_into()
            .expect("8-byte range")
    }

    /// Offset of the trailer (pad length, next header) in the packet.
    #[inline]
    pub fn trailer_offset(&self) -> usize {
        self.buffer.as_ref().len() - ICV_LEN - TRAILER_LEN
    }

    /// The trailer (meaningful once decrypted).
    #[inline]
    pub fn trailer(&self) -> Trailer {
        let b = self.buffer.as_ref();
        let at = self.trailer_offset();
        Trailer {
            pad_len: b[at],
            next_header: b[at + 1],
        }
    }

    /// Length of the encrypted part: payload, padding and trailer.
    #[inline]
    pub fn encrypted_len(&self) -> usize {
        self.buffer.as_ref().len() - FRONT_LEN - ICV_LEN
    }

    /// The ICV (the last 16 bytes).
    #[inline]
    pub fn icv(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - ICV_LEN..]
    }

    /// The encrypted part and the ICV: what AES-GCM opens in place.
    #[inline]
    pub fn sealed(&self) -> &[u8] {
        &self.buffer.as_ref()[field::REST]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the SPI.
    #[inline]
    pub fn set_spi(&mut self, spi: u32) {
        set_be32(&mut self.buffer.as_mut()[field::SPI], spi);
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        set_be32(&mut self.buffer.as_mut()[field::SEQ], seq);
    }

    /// Sets the explicit IV.
    #[inline]
    pub fn set_iv(&mut self, iv: [u8; IV_LEN]) {
        self.buffer.as_mut()[field::IV].copy_from_slice(&iv);
    }

    /// Writes the trailer.
    #[inline]
    pub fn set_trailer(&mut self, trailer: Trailer) {
        let at = self.trailer_offset();
        let b = self.buffer.as_mut();
        b[at] = trailer.pad_len;
        b[at + 1] = trailer.next_header;
    }

    /// The encrypted part and the ICV, writable: what AES-GCM opens in place.
    #[inline]
    pub fn sealed_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::REST]
    }

    /// The header (read only: the AAD) and the encrypted part (writable, without the ICV) and
    /// the ICV (writable), split for sealing in place.
    #[inline]
    pub fn split_for_seal(&mut self) -> (&[u8; HEADER_LEN], [u8; IV_LEN], &mut [u8], &mut [u8]) {
        let b = self.buffer.as_mut();
        let (front, rest) = b.split_at_mut(FRONT_LEN);
        let icv_at = rest.len() - ICV_LEN;
        let (enc, icv) = rest.split_at_mut(icv_at);
        let (hdr, iv) = front.split_at(HEADER_LEN);
        (
            hdr.try_into().expect("8-byte header"),
            iv.try_into().expect("8-byte IV"),
            enc,
            icv,
        )
    }
}

/// The ESP trailer: how many padding bytes precede it and what the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Trailer {
    /// Bytes of padding between the payload and the trailer.
    pub pad_len: u8,
    /// The payload's protocol (17: the UDP datagram of a VXLAN packet, in transport mode).
    pub next_header: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// draft-mcgrew-gcm-test-01's packet with SPI 0x335467ae, sequence number 0xffffffff and an
    /// empty payload (pad length 2, next header 1): 36 bytes, the smallest ESP-GCM packet with
    /// padding.
    const SMALL: [u8; 36] = [
        0x33, 0x54, 0x67, 0xae, 0xff, 0xff, 0xff, 0xff, // SPI, seq
        0x43, 0x45, 0x7e, 0x91, 0x82, 0x44, 0x3b, 0xc6, // IV
        0x43, 0x7f, 0x86, 0x6b, // padding and trailer, encrypted
        0xcb, 0x3f, 0x69, 0x9f, 0xe9, 0xb0, 0x82, 0x2b, // ICV
        0xac, 0x96, 0x1c, 0x45, 0x04, 0xbe, 0xf2, 0x70,
    ];

    #[test]
    fn reads_the_fields_of_a_published_packet() {
        let p = Packet::new_checked(&SMALL[..]).unwrap();
        assert_eq!(p.spi(), 0x3354_67ae);
        assert_eq!(p.seq_number(), 0xffff_ffff);
        assert_eq!(p.header(), &SMALL[..8]);
        assert_eq!(p.iv(), [0x43, 0x45, 0x7e, 0x91, 0x82, 0x44, 0x3b, 0xc6]);
        assert_eq!(p.encrypted_len(), 4);
        assert_eq!(p.icv(), &SMALL[20..]);
        assert_eq!(p.sealed(), &SMALL[16..]);
        assert_eq!(p.trailer_offset(), 18);
        // still encrypted: the trailer reads ciphertext
        assert_eq!(
            p.trailer(),
            Trailer {
                pad_len: 0x86,
                next_header: 0x6b
            }
        );
    }

    #[test]
    fn every_truncation_below_the_minimum_is_refused() {
        for len in 0..MIN_LEN {
            assert_eq!(
                Packet::new_checked(&SMALL[..len]).unwrap_err(),
                Error::Truncated,
                "{len}"
            );
        }
        assert!(Packet::new_checked(&SMALL[..MIN_LEN]).is_ok());
    }

    #[test]
    fn setters_write_where_getters_read() {
        let mut buf = [0u8; MIN_LEN + 6];
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.set_spi(0x0102_0304);
        p.set_seq_number(0x0506_0708);
        p.set_iv([9, 10, 11, 12, 13, 14, 15, 16]);
        p.set_trailer(Trailer {
            pad_len: 2,
            next_header: 17,
        });
        assert_eq!(p.spi(), 0x0102_0304);
        assert_eq!(p.seq_number(), 0x0506_0708);
        assert_eq!(p.iv(), [9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(p.trailer().pad_len, 2);
        assert_eq!(p.trailer().next_header, 17);
        p.sealed_mut()[0] = 0xaa;
        let (hdr, iv, enc, icv) = p.split_for_seal();
        assert_eq!(hdr, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(iv, [9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!((enc.len(), enc[0], &enc[6..]), (8, 0xaa, &[2u8, 17][..]));
        assert_eq!(icv.len(), ICV_LEN);
        assert_eq!(&buf[..4], &[1, 2, 3, 4]);
        assert_eq!(&buf[22..24], &[2, 17]);
    }

    #[test]
    fn padding_aligns_the_encrypted_part_to_four_bytes() {
        let want = [2, 1, 0, 3, 2, 1, 0, 3];
        for (payload, pad) in want.iter().enumerate() {
            assert_eq!(pad_len_for(payload), *pad, "{payload}");
            assert_eq!((payload + pad + TRAILER_LEN) % ALIGN, 0);
            assert_eq!(
                packet_len_for(payload),
                FRONT_LEN + payload + pad + 2 + ICV_LEN
            );
        }
        assert_eq!(packet_len_for(0), 36);
        let mut pad = [0u8; 5];
        fill_padding(&mut pad);
        assert_eq!(pad, [1, 2, 3, 4, 5]);
        assert!(padding_is_valid(&pad));
        assert!(padding_is_valid(&[]));
        assert!(!padding_is_valid(&[0]));
        assert!(!padding_is_valid(&[1, 3]));
        assert!(!padding_is_valid(&[2, 1]));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            match Packet::new_checked(&bytes[..]) {
                Err(e) => {
                    prop_assert_eq!(e, Error::Truncated);
                    prop_assert!(bytes.len() < MIN_LEN);
                }
                Ok(p) => {
                    let t = p.trailer();
                    prop_assert_eq!(t.pad_len, bytes[bytes.len() - 18]);
                    prop_assert_eq!(t.next_header, bytes[bytes.len() - 17]);
                    prop_assert_eq!(p.encrypted_len() + FRONT_LEN + ICV_LEN, bytes.len());
                    prop_assert_eq!(p.sealed().len(), bytes.len() - FRONT_LEN);
                    let _ = (p.spi(), p.seq_number(), p.iv(), p.icv());
                }
            }
        }
    }
}
