//! The virtio-net header (`struct virtio_net_hdr`, virtio spec 1.x section 5.1.6, legacy layout
//! without `num_buffers`) a TAP opened with `IFF_VNET_HDR` puts in front of every frame.
//!
//! Where it sits: the TAP port reads it on receive and writes it on transmit; what it says
//! (checksum still to finish, TCP super-frame to cut) becomes the frame's
//! [`Offload`](crate::offload::Offload) record in [`crate::offload::from_vnet`] and back in
//! [`crate::offload::to_vnet`]. Fields are little-endian, as the TAP speaks them on x86 and ARM.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+-------------------------------+
//! |     flags     |   gso_type    |        hdr_len (LE)           |
//! +---------------+---------------+-------------------------------+
//! |        gso_size (LE)          |       csum_start (LE)         |
//! +-------------------------------+-------------------------------+
//! |       csum_offset (LE)        |
//! +-------------------------------+
//! ```

use super::{Error, check_min_len};

/// Length of the legacy header (no `num_buffers`), the TAP's default.
pub const HEADER_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` on is still to be computed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_ECN`: a flag on the GSO type.
pub const GSO_ECN: u8 = 0x80;

/// Byte ranges of the header fields.
pub mod field {
    use core::ops::Range;

    /// Flags.
    pub const FLAGS: usize = 0;
    /// Segmentation type.
    pub const GSO_TYPE: usize = 1;
    /// Length of the headers copied in front of every segment.
    pub const HDR_LEN: Range<usize> = 2..4;
    /// Payload bytes per segment.
    pub const GSO_SIZE: Range<usize> = 4..6;
    /// Where the checksummed part starts.
    pub const CSUM_START: Range<usize> = 6..8;
    /// Where the checksum field is, from `csum_start`.
    pub const CSUM_OFFSET: Range<usize> = 8..10;
}

/// A little-endian `u16` at the start of `b`.
#[inline]
fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

packet_wrapper! {
    /// A read/write wrapper around a virtio-net header.
    error: Error,
    /// Checks that the buffer holds the header.
    check_len: |packet| check_min_len(packet.buffer.as_ref().len(), HEADER_LEN),
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Flags.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the checksum is still to be computed.
    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags() & F_NEEDS_CSUM != 0
    }

    /// Segmentation type.
    #[inline]
    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::GSO_TYPE]
    }

    /// Header bytes in front of every segment.
    #[inline]
    pub fn hdr_len(&self) -> u16 {
        le16(&self.buffer.as_ref()[field::HDR_LEN])
    }

    /// Payload bytes per segment.
    #[inline]
    pub fn gso_size(&self) -> u16 {
        le16(&self.buffer.as_ref()[field::GSO_SIZE])
    }

    /// Where the checksummed part starts.
    #[inline]
    pub fn csum_start(&self) -> u16 {
        le16(&self.buffer.as_ref()[field::CSUM_START])
    }

    /// Where the checksum field is, from `csum_start`.
    #[inline]
    pub fn csum_offset(&self) -> u16 {
        le16(&self.buffer.as_ref()[field::CSUM_OFFSET])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the segmentation type.
    #[inline]
    pub fn set_gso_type(&mut self, gso_type: u8) {
        self.buffer.as_mut()[field::GSO_TYPE] = gso_type;
    }

    /// Sets the header length.
    #[inline]
    pub fn set_hdr_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::HDR_LEN].copy_from_slice(&len.to_le_bytes());
    }

    /// Sets the segment payload size.
    #[inline]
    pub fn set_gso_size(&mut self, size: u16) {
        self.buffer.as_mut()[field::GSO_SIZE].copy_from_slice(&size.to_le_bytes());
    }

    /// Sets where the checksummed part starts.
    #[inline]
    pub fn set_csum_start(&mut self, start: u16) {
        self.buffer.as_mut()[field::CSUM_START].copy_from_slice(&start.to_le_bytes());
    }

    /// Sets where the checksum field is.
    #[inline]
    pub fn set_csum_offset(&mut self, offset: u16) {
        self.buffer.as_mut()[field::CSUM_OFFSET].copy_from_slice(&offset.to_le_bytes());
    }
}

/// Every field of a virtio-net header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Flags ([`F_NEEDS_CSUM`]).
    pub flags: u8,
    /// Segmentation type ([`GSO_NONE`], [`GSO_TCPV4`], ...).
    pub gso_type: u8,
    /// Header bytes in front of every segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed part starts.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

impl Repr {
    /// Reads every field (re-checking the length).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        Ok(Repr {
            flags: packet.flags(),
            gso_type: packet.gso_type(),
            hdr_len: packet.hdr_len(),
            gso_size: packet.gso_size(),
            csum_start: packet.csum_start(),
            csum_offset: packet.csum_offset(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes every field.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_flags(self.flags);
        packet.set_gso_type(self.gso_type);
        packet.set_hdr_len(self.hdr_len);
        packet.set_gso_size(self.gso_size);
        packet.set_csum_start(self.csum_start);
        packet.set_csum_offset(self.csum_offset);
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut h[..]));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_bytes() {
        // A TCP/IPv4 super-frame: needs csum at 34+16, headers 66, MSS 1398.
        let h = [1u8, 1, 66, 0, 0x76, 0x05, 34, 0, 16, 0];
        let r = Repr::parse(&Packet::new_checked(&h[..]).unwrap()).unwrap();
        assert_eq!(
            r,
            Repr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1398,
                csum_start: 34,
                csum_offset: 16
            }
        );
        assert_eq!(r.to_bytes(), h);
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip_and_every_truncation_is_an_error(
            flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16, csum_offset: u16,
        ) {
            let r = Repr { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset };
            let h = r.to_bytes();
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&h[..]).unwrap()), Ok(r));
            for n in 0..HEADER_LEN {
                prop_assert_eq!(Packet::new_checked(&h[..n]).unwrap_err(), Error::Truncated);
                prop_assert_eq!(Repr::parse(&Packet::new_unchecked(&h[..n])), Err(Error::Truncated));
            }
        }
    }
}
