//! TCP headers (RFC 9293): ports, sequence numbers, flags and the checksum.
//!
//! Where it sits: `lb-nat` reads the ports and flags of every TCP packet it balances (its
//! connection states follow the flags) and rewrites ports; the offloads cut TCP super-frames
//! into segments (each with its own sequence number, flags and checksum) and merge segments
//! back (receive coalescing); the trace reads the ports.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Acknowledgment Number                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |       |       |R|E|G|K|H|T|N|N|                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Checksum            |         Urgent Pointer        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options                    |    Padding    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::{Error, be16, be32, check_announced_len, check_min_len, set_be16, set_be32};

/// Length of a header without options (the smallest valid one).
pub const HEADER_LEN: usize = 20;
/// Bytes per unit of the data offset field.
pub const DOFF_UNIT: usize = 4;

/// FIN flag.
pub const FLAG_FIN: u8 = 0x01;
/// SYN flag.
pub const FLAG_SYN: u8 = 0x02;
/// RST flag.
pub const FLAG_RST: u8 = 0x04;
/// PSH flag.
pub const FLAG_PSH: u8 = 0x08;
/// ACK flag.
pub const FLAG_ACK: u8 = 0x10;
/// URG flag.
pub const FLAG_URG: u8 = 0x20;
/// ECE flag.
pub const FLAG_ECE: u8 = 0x40;
/// CWR flag.
pub const FLAG_CWR: u8 = 0x80;

/// Byte ranges of the header fields.
pub mod field {
    use core::ops::Range;

    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Both ports.
    pub const PORTS: Range<usize> = 0..4;
    /// Sequence number.
    pub const SEQ_NUM: Range<usize> = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset (high nibble) and reserved bits.
    pub const DATA_OFFSET: usize = 12;
    /// The eight flag bits.
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WINDOW: Range<usize> = 14..16;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 16..18;
    /// Urgent pointer.
    pub const URGENT: Range<usize> = 18..20;
}

packet_wrapper! {
    /// A read/write wrapper around a TCP segment.
    error: Error,
    /// Checks that the buffer holds the whole header, options included.
    check_len: |packet| {
        let len = packet.buffer.as_ref().len();
        check_min_len(len, HEADER_LEN)?;
        check_announced_len(len, packet.header_len(), HEADER_LEN)
    },
}

port_accessors!();

impl<T: AsRef<[u8]>> Packet<T> {
    /// The sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    /// The acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// The header length in bytes (data offset times 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * DOFF_UNIT
    }

    /// The eight flag bits (`FLAG_*`).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The window.
    #[inline]
    pub fn window(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::WINDOW])
    }

    /// The checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The urgent pointer.
    #[inline]
    pub fn urgent(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::URGENT])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: everything after the header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        set_be32(&mut self.buffer.as_mut()[field::SEQ_NUM], seq);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        set_be32(&mut self.buffer.as_mut()[field::ACK_NUM], ack);
    }

    /// Sets the header length in bytes (a multiple of 4, at most 60), clearing the reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        // At most 60 / 4 = 15: fits the nibble.
        self.buffer.as_mut()[field::DATA_OFFSET] = ((len / DOFF_UNIT) as u8) << 4;
    }

    /// Sets the eight flag bits.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the window.
    #[inline]
    pub fn set_window(&mut self, window: u16) {
        set_be16(&mut self.buffer.as_mut()[field::WINDOW], window);
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], checksum);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent(&mut self, urgent: u16) {
        set_be16(&mut self.buffer.as_mut()[field::URGENT], urgent);
    }
}

/// The meaning of a TCP header without options (the checksum is the caller's: it needs the
/// IPv4 pseudo-header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Flag bits.
    pub flags: u8,
    /// Window.
    pub window: u16,
}

impl Repr {
    /// Reads the fields of a header (options skipped).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with a zero checksum and urgent pointer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.set_header_len(HEADER_LEN);
        packet.set_flags(self.flags);
        packet.set_window(self.window);
        packet.set_checksum(0);
        packet.set_urgent(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A SYN 40000 -> 80 with 12 bytes of options (data offset 8).
    const SYN: [u8; 32] = [
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x80, 0x02, 0xff, 0xff, 0x12, 0x34, 0, 0, 1, 1,
        1, 0, 1, 1, 1, 0, 1, 1, 1, 0,
    ];

    #[test]
    fn reads_fixed_bytes() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        assert_eq!(p.seq_number(), 1);
        assert_eq!(p.header_len(), 32);
        assert_eq!(p.flags(), FLAG_SYN);
        assert_eq!(p.window(), 0xffff);
        assert_eq!(p.checksum(), 0x1234);
        assert!(p.payload().is_empty());
        assert_eq!(
            Packet::new_checked(&SYN[..31]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = SYN;
        bad[field::DATA_OFFSET] = 0x40;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip_and_every_truncation_is_an_error(
            src_port: u16, dst_port: u16, seq_number: u32, ack_number: u32, flags: u8, window: u16,
            payload in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let repr = Repr { src_port, dst_port, seq_number, ack_number, flags, window };
            let mut buf = vec![0u8; HEADER_LEN + payload.len()];
            buf[HEADER_LEN..].copy_from_slice(&payload);
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(repr));
            prop_assert_eq!(p.payload(), &payload[..]);
            for n in 0..HEADER_LEN {
                prop_assert_eq!(Packet::new_checked(&buf[..n]).unwrap_err(), Error::Truncated);
                prop_assert!(Repr::parse(&Packet::new_unchecked(&buf[..n])).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.payload(), Repr::parse(&p), p.urgent(), p.ack_number());
            }
        }
    }
}
