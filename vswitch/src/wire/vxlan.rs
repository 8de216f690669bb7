//! The VXLAN header (RFC 7348, section 5) as a zero-copy wrapper, in smoltcp's style.
//!
//! Where it sits: `vxlan-decap` wraps the UDP payload of a datagram received on port 4789 with
//! [`Packet::new_checked`] and [`Repr::parse`]s it (strictly: a refusal is a named
//! [`HeaderError`] variant the stage counts); `vxlan-encap` [`Repr::emit`]s the 8 bytes into the
//! headroom in front of the inner Ethernet frame.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The I flag must be set for a valid VNI; every R bit must be zero on transmit. RFC 7348 says
//! a receiver ignores R bits, but the Linux kernel's VXLAN device (without the GBP/GPE
//! extensions, as Docker runs it) drops a packet with any unparsed flag or reserved bit set,
//! and so does [`Repr::parse`]: accepting what the kernel peer would refuse hides bugs and
//! widens the attack surface.

use core::fmt;

/// The IANA VXLAN UDP port.
pub const VXLAN_PORT: u16 = 4789;

/// Length of the VXLAN header in bytes.
pub const HEADER_LEN: usize = 8;

/// The I flag: the VNI field is valid (RFC 7348 section 5).
pub const FLAG_I: u8 = 0x08;

/// Largest VNI: the field is 24 bits wide.
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// Byte ranges of the header fields.
pub mod field {
    use core::ops::Range;

    /// The flags byte (only the I flag is defined).
    pub const FLAGS: usize = 0;
    /// The 24 reserved bits after the flags.
    pub const RESERVED1: Range<usize> = 1..4;
    /// The 24-bit VXLAN Network Identifier.
    pub const VNI: Range<usize> = 4..7;
    /// The reserved byte after the VNI.
    pub const RESERVED2: usize = 7;
    /// The encapsulated Ethernet frame.
    pub const PAYLOAD: core::ops::RangeFrom<usize> = super::HEADER_LEN..;
}

/// Why a buffer is not an acceptable VXLAN header; each variant is a separate drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than the 8-byte header.
    #[error("VXLAN header truncated: {len} bytes, need {HEADER_LEN}")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The I flag is clear: the VNI is not valid.
    #[error("VXLAN I flag not set")]
    NoIFlag,
    /// A reserved bit of the flags byte is set.
    #[error("VXLAN reserved flag bits set: {flags:#04x}")]
    ReservedFlags {
        /// The whole flags byte.
        flags: u8,
    },
    /// A bit of the reserved fields (24 bits after the flags, 8 after the VNI) is set.
    #[error("VXLAN reserved field bits set")]
    ReservedBits,
}

impl HeaderError {
    /// The drop counter name the decap stage counts this refusal under.
    pub const fn counter_name(&self) -> &'static str {
        match self {
            HeaderError::Truncated { .. } => "drop_vxlan_truncated",
            HeaderError::NoIFlag => "drop_vxlan_no_i_flag",
            HeaderError::ReservedFlags { .. } => "drop_vxlan_reserved_flags",
            HeaderError::ReservedBits => "drop_vxlan_reserved_bits",
        }
    }
}

/// A VNI out of the 24-bit range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} out of range 0..={VNI_MAX}")]
pub struct VniError(pub u32);

/// A 24-bit VXLAN Network Identifier (always in range, so emitting it cannot fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vni(u32);

impl Vni {
    /// A VNI from a `u32`, refused above [`VNI_MAX`].
    pub const fn new(vni: u32) -> Result<Vni, VniError> {
        if vni > VNI_MAX {
            Err(VniError(vni))
        } else {
            Ok(Vni(vni))
        }
    }

    /// The VNI as a `u32` (at most [`VNI_MAX`]).
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = VniError;
    fn try_from(vni: u32) -> Result<Vni, VniError> {
        Vni::new(vni)
    }
}

impl From<Vni> for u32 {
    fn from(vni: Vni) -> u32 {
        vni.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Reads a 24-bit big-endian field.
fn read_u24(bytes: &[u8]) -> u32 {
    (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2])
}

/// Writes the low 24 bits of `value` big-endian.
fn write_u24(bytes: &mut [u8], value: u32) {
    let be = value.to_be_bytes();
    bytes.copy_from_slice(&be[1..]);
}

packet_wrapper! {
    /// A read/write wrapper around a buffer holding a VXLAN header and its payload.
    error: HeaderError,
    /// Checks that the buffer holds a whole header.
    check_len: |packet| {
        let len = packet.buffer.as_ref().len();
        if len < HEADER_LEN {
            Err(HeaderError::Truncated { len })
        } else {
            Ok(())
        }
    },
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The whole flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the I flag (valid VNI) is set.
    pub fn i_flag(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The flag bits other than I (reserved, zero on a valid header).
    pub fn reserved_flags(&self) -> u8 {
        self.flags() & !FLAG_I
    }

    /// The 24 reserved bits after the flags byte.
    pub fn reserved1(&self) -> u32 {
        read_u24(&self.buffer.as_ref()[field::RESERVED1])
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> Vni {
        // The field is 24 bits wide, so it is always in range.
        Vni(read_u24(&self.buffer.as_ref()[field::VNI]))
    }

    /// The reserved byte after the VNI.
    pub fn reserved2(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED2]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The encapsulated frame (everything after the header).
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the whole flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets or clears the I flag, leaving the other flag bits alone.
    pub fn set_i_flag(&mut self, on: bool) {
        let flags = self.flags();
        self.set_flags(if on { flags | FLAG_I } else { flags & !FLAG_I });
    }

    /// Sets the 24 reserved bits after the flags (the top 8 bits of `value` are ignored).
    pub fn set_reserved1(&mut self, value: u32) {
        write_u24(&mut self.buffer.as_mut()[field::RESERVED1], value);
    }

    /// Sets the VNI.
    pub fn set_vni(&mut self, vni: Vni) {
        write_u24(&mut self.buffer.as_mut()[field::VNI], vni.get());
    }

    /// Sets the reserved byte after the VNI.
    pub fn set_reserved2(&mut self, value: u8) {
        self.buffer.as_mut()[field::RESERVED2] = value;
    }

    /// The encapsulated frame, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The meaning of a valid VXLAN header: its VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The VXLAN Network Identifier (the bridge domain).
    pub vni: Vni,
}

impl Repr {
    /// Parses a checked header strictly: I flag set, every reserved bit zero.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, HeaderError> {
        packet.check_len()?;
        if !packet.i_flag() {
            return Err(HeaderError::NoIFlag);
        }
        if packet.reserved_flags() != 0 {
            return Err(HeaderError::ReservedFlags {
                flags: packet.flags(),
            });
        }
        if packet.reserved1() != 0 || packet.reserved2() != 0 {
            return Err(HeaderError::ReservedBits);
        }
        Ok(Repr { vni: packet.vni() })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: I flag, the VNI, every reserved bit zero.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        // One 8-byte store instead of four field writes (encap itself copies `to_bytes`).
        packet.buffer.as_mut()[..HEADER_LEN].copy_from_slice(&self.to_bytes());
    }

    /// The 8 header bytes, for callers that copy a constant header into place.
    #[inline]
    pub const fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [_, v0, v1, v2] = self.vni.0.to_be_bytes();
        [FLAG_I, 0, 0, 0, v0, v1, v2, 0]
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VXLAN vni={}", self.vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The header the Linux kernel's vxlan device sends for `id 4097` (Docker's first VNI),
    /// as tshark shows it: flags 0x08, VNI 0x001001.
    const KERNEL_VNI_4097: [u8; HEADER_LEN] = [0x08, 0x00, 0x00, 0x00, 0x00, 0x10, 0x01, 0x00];

    /// Docker's first overlay VNI.
    const DOCKER_VNI: u32 = 4097;

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    #[test]
    fn parses_kernel_bytes() {
        let packet = Packet::new_checked(&KERNEL_VNI_4097[..]).unwrap();
        assert_eq!(packet.flags(), FLAG_I);
        assert!(packet.i_flag());
        assert_eq!(packet.reserved_flags(), 0);
        assert_eq!(packet.reserved1(), 0);
        assert_eq!(packet.reserved2(), 0);
        assert_eq!(packet.vni().get(), DOCKER_VNI);
        assert_eq!(packet.payload(), &[] as &[u8]);
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(repr.vni.get(), DOCKER_VNI);
        assert_eq!(repr.to_string(), "VXLAN vni=4097");
    }

    #[test]
    fn emits_kernel_bytes() {
        // Start from garbage to prove emit clears every reserved bit.
        let mut buf = [0xffu8; HEADER_LEN];
        let repr = Repr {
            vni: vni(DOCKER_VNI),
        };
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, KERNEL_VNI_4097);
        assert_eq!(repr.to_bytes(), KERNEL_VNI_4097);
        assert_eq!(repr.buffer_len(), HEADER_LEN);
    }

    #[test]
    fn payload_follows_header() {
        let mut buf = [0u8; HEADER_LEN + 3];
        buf[..HEADER_LEN].copy_from_slice(&KERNEL_VNI_4097);
        buf[HEADER_LEN..].copy_from_slice(&[1, 2, 3]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.payload(), &[1, 2, 3]);
        let mut packet = Packet::new_checked(&mut buf[..]).unwrap();
        packet.payload_mut()[0] = 9;
        assert_eq!(buf[HEADER_LEN], 9);
    }

    #[test]
    fn vni_extremes() {
        let mut buf = [0u8; HEADER_LEN];
        for v in [0, 1, VNI_MAX] {
            Repr { vni: vni(v) }.emit(&mut Packet::new_unchecked(&mut buf[..]));
            let parsed = Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap();
            assert_eq!(parsed.vni.get(), v);
        }
        assert_eq!(buf, [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0]);
        assert_eq!(Vni::new(VNI_MAX + 1), Err(VniError(VNI_MAX + 1)));
        assert_eq!(Vni::try_from(u32::MAX), Err(VniError(u32::MAX)));
        assert_eq!(u32::from(vni(7)), 7);
    }

    #[test]
    fn refuses_missing_i_flag() {
        let mut buf = KERNEL_VNI_4097;
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_i_flag(false);
        assert_eq!(packet.flags(), 0);
        assert_eq!(Repr::parse(&packet), Err(HeaderError::NoIFlag));
        packet.set_i_flag(true);
        assert_eq!(Repr::parse(&packet).unwrap().vni.get(), DOCKER_VNI);
    }

    #[test]
    fn refuses_each_reserved_flag_bit() {
        for bit in (0..8).map(|b| 1u8 << b).filter(|&b| b != FLAG_I) {
            let mut buf = KERNEL_VNI_4097;
            buf[field::FLAGS] |= bit;
            let packet = Packet::new_checked(&buf[..]).unwrap();
            assert_eq!(
                Repr::parse(&packet),
                Err(HeaderError::ReservedFlags {
                    flags: FLAG_I | bit
                }),
                "flag bit {bit:#04x}"
            );
        }
    }

    #[test]
    fn refuses_each_reserved_field_bit() {
        let reserved_bytes = field::RESERVED1.chain(core::iter::once(field::RESERVED2));
        for byte in reserved_bytes {
            for bit in 0..8 {
                let mut buf = KERNEL_VNI_4097;
                buf[byte] |= 1 << bit;
                let packet = Packet::new_checked(&buf[..]).unwrap();
                assert_eq!(
                    Repr::parse(&packet),
                    Err(HeaderError::ReservedBits),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn i_flag_checked_before_reserved_bits() {
        // A header wrong in several ways is counted once, under the first check that fails.
        let buf = [0x80, 0xff, 0, 0, 0, 0, 0, 0xff];
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Err(HeaderError::NoIFlag));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&KERNEL_VNI_4097[..len]).unwrap_err(),
                HeaderError::Truncated { len }
            );
            // parse re-checks, so an unchecked short wrapper is refused, not a panic.
            let unchecked = Packet::new_unchecked(&KERNEL_VNI_4097[..len]);
            assert_eq!(Repr::parse(&unchecked), Err(HeaderError::Truncated { len }));
        }
    }

    #[test]
    fn counter_names_are_distinct() {
        let errors = [
            HeaderError::Truncated { len: 0 },
            HeaderError::NoIFlag,
            HeaderError::ReservedFlags { flags: 0 },
            HeaderError::ReservedBits,
        ];
        let mut names: Vec<_> = errors.iter().map(HeaderError::counter_name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), errors.len());
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(v in 0..=VNI_MAX, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = vec![0u8; HEADER_LEN + payload.len()];
            buf[HEADER_LEN..].copy_from_slice(&payload);
            let repr = Repr { vni: vni(v) };
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            let packet = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&packet), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            match Packet::new_checked(&bytes[..]) {
                Err(e) => prop_assert_eq!(e, HeaderError::Truncated { len: bytes.len() }),
                Ok(packet) => {
                    let valid = bytes[0] == FLAG_I && bytes[1..4] == [0, 0, 0] && bytes[7] == 0;
                    prop_assert_eq!(Repr::parse(&packet).is_ok(), valid);
                }
            }
        }

        #[test]
        fn setters_round_trip(flags: u8, r1 in 0u32..(1 << 24), v in 0..=VNI_MAX, r2: u8) {
            let mut buf = [0u8; HEADER_LEN];
            let mut packet = Packet::new_unchecked(&mut buf[..]);
            packet.set_flags(flags);
            packet.set_reserved1(r1);
            packet.set_vni(vni(v));
            packet.set_reserved2(r2);
            prop_assert_eq!(packet.flags(), flags);
            prop_assert_eq!(packet.reserved1(), r1);
            prop_assert_eq!(packet.vni().get(), v);
            prop_assert_eq!(packet.reserved2(), r2);
        }
    }
}
