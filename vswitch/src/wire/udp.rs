//! UDP headers (RFC 768).
//!
//! Where it sits: `lb-nat` reads and rewrites the ports of every UDP packet it balances; the
//! offloads finish partial UDP checksums (a computed zero goes out as all ones); the trace reads
//! the ports; the UDP underlay port rebuilds the outer UDP header (port 4789) the kernel added
//! when it captures a datagram.
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! +--------+--------+--------+--------+
//! |     Source      |   Destination   |
//! |      Port       |      Port       |
//! +--------+--------+--------+--------+
//! |                 |                 |
//! |     Length      |    Checksum     |
//! +--------+--------+--------+--------+
//! |          data octets ...
//! +---------------- ...
//! ```

use std::net::Ipv4Addr;

use super::ipv4::PROTO_UDP;
use super::{Error, be16, check_announced_len, check_min_len, checksum, set_be16};

/// Length of the header.
pub const HEADER_LEN: usize = 8;
/// The checksum field's value when the sender computed none (IPv4 only).
pub const NO_CHECKSUM: u16 = 0;

/// Byte ranges of the header fields.
pub mod field {
    use core::ops::{Range, RangeFrom};

    /// Source port (0..2), destination port (2..4) and both (0..4): where TCP has them.
    pub use crate::wire::tcp::field::{DST_PORT, PORTS, SRC_PORT};
    /// Length (header and payload).
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 6..8;
    /// The payload.
    pub const PAYLOAD: RangeFrom<usize> = 8..;
}

/// A computed UDP checksum as it goes on the wire: zero means "none", so a computed zero is
/// sent as all ones (RFC 768).
#[inline]
pub const fn wire_checksum(computed: u16) -> u16 {
    if computed == 0 { 0xffff } else { computed }
}

packet_wrapper! {
    /// A read/write wrapper around a UDP datagram.
    error: Error,
    /// Checks that the buffer holds the header and the length it announces (at least 8).
    check_len: |packet| {
        let len = packet.buffer.as_ref().len();
        check_min_len(len, HEADER_LEN)?;
        check_announced_len(len, usize::from(packet.len()), HEADER_LEN)
    },
}

port_accessors!();

impl<T: AsRef<[u8]>> Packet<T> {
    /// The length field (header and payload).
    #[inline]
    pub fn len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Whether the length field announces no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum ([`NO_CHECKSUM`] when none was computed).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Whether the checksum is right for these addresses (a datagram without one passes).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == NO_CHECKSUM {
            return true;
        }
        let len = usize::from(self.len());
        let data = &self.buffer.as_ref()[..len];
        checksum::add(
            checksum::pseudo_sum_addrs(src, dst, PROTO_UDP, len),
            checksum::sum(data),
        ) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        set_be16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], checksum);
    }

    /// Computes the checksum over the pseudo-header and the datagram (up to the length field)
    /// and writes it.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(NO_CHECKSUM);
        let len = usize::from(self.len());
        let c = !checksum::add(
            checksum::pseudo_sum_addrs(src, dst, PROTO_UDP, len),
            checksum::sum(&self.buffer.as_ref()[..len]),
        );
        self.set_checksum(wire_checksum(c));
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The meaning of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl Repr {
    /// Reads the ports of a checked datagram.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header for `payload_len` bytes of payload (already in place behind it) and,
    /// given the IPv4 addresses, the checksum; without them the checksum is left at none.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        payload_len: usize,
        addrs: Option<(Ipv4Addr, Ipv4Addr)>,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        // The caller keeps a datagram within 64 KB.
        packet.set_len((HEADER_LEN + payload_len) as u16);
        match addrs {
            Some((src, dst)) => packet.fill_checksum(src, dst),
            None => packet.set_checksum(NO_CHECKSUM),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 10.0.9.11:5353 -> 10.0.9.100:53, payload "hi" (the lb golden datagram).
    const DNS: [u8; 10] = [0x14, 0xe9, 0, 53, 0, 10, 0x5b, 0xe4, b'h', b'i'];
    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 11);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);

    #[test]
    fn reads_fixed_bytes() {
        let p = Packet::new_checked(&DNS[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (5353, 53, 10));
        assert_eq!(p.payload(), b"hi");
        assert!(p.verify_checksum(SRC, DST));
        let mut out = [0u8; 10];
        out[8..].copy_from_slice(b"hi");
        Repr::parse(&p).unwrap().emit(
            &mut Packet::new_unchecked(&mut out[..]),
            2,
            Some((SRC, DST)),
        );
        assert_eq!(out, DNS);
    }

    #[test]
    fn a_computed_zero_goes_out_as_all_ones() {
        assert_eq!(wire_checksum(0), 0xffff);
        assert_eq!(wire_checksum(0x1234), 0x1234);
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip_and_every_truncation_is_an_error(
            src_port: u16, dst_port: u16, payload in proptest::collection::vec(any::<u8>(), 0..32),
            src: u32, dst: u32, with_checksum: bool,
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let repr = Repr { src_port, dst_port };
            let mut buf = vec![0u8; HEADER_LEN + payload.len()];
            buf[HEADER_LEN..].copy_from_slice(&payload);
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]), payload.len(),
                      with_checksum.then_some((src, dst)));
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(repr));
            prop_assert_eq!(p.payload(), &payload[..]);
            prop_assert!(p.verify_checksum(src, dst));
            prop_assert_eq!(p.checksum() != NO_CHECKSUM, with_checksum);
            for n in 0..buf.len() {
                prop_assert_eq!(Packet::new_checked(&buf[..n]).unwrap_err(), Error::Truncated);
                prop_assert!(Repr::parse(&Packet::new_unchecked(&buf[..n])).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.payload(), p.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
            }
        }
    }
}
