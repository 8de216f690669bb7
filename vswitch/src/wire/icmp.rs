//! ICMPv4 messages (RFC 792), as far as `lb-nat` needs them: the type, the checksum, and the
//! IPv4 header (plus at least 8 bytes of its payload) an error message quotes.
//!
//! Where it sits: `lb-nat` translates an ICMP error about a balanced connection (a port
//! unreachable from a backend, a "fragmentation needed" on the way to a client) the way it
//! translated the connection, quoted header included; echo and other queries pass untouched.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             unused (or next-hop MTU, or pointer)              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Internet Header + 64 bits of Original Data Datagram      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::{Error, be16, check_min_len, set_be16};

/// Length of the header (type, code, checksum and the 4 bytes after them).
pub const HEADER_LEN: usize = 8;

/// Echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// Destination unreachable.
pub const TYPE_DEST_UNREACH: u8 = 3;
/// Echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// Time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Parameter problem.
pub const TYPE_PARAM_PROBLEM: u8 = 12;

/// Byte ranges of the header fields.
pub mod field {
    use core::ops::{Range, RangeFrom};

    /// Message type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum (over the whole message).
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Unused, next-hop MTU or pointer, by type.
    pub const REST: Range<usize> = 4..8;
    /// The quoted datagram of an error (the data of a query).
    pub const PAYLOAD: RangeFrom<usize> = 8..;
}

/// Whether a message type is an error that quotes the datagram it is about.
#[inline]
pub const fn is_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        TYPE_DEST_UNREACH | TYPE_TIME_EXCEEDED | TYPE_PARAM_PROBLEM
    )
}

packet_wrapper! {
    /// A read/write wrapper around an ICMPv4 message.
    error: Error,
    /// Checks that the buffer holds the header.
    check_len: |packet| check_min_len(packet.buffer.as_ref().len(), HEADER_LEN),
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Whether the checksum over the whole buffer is right.
    pub fn verify_checksum(&self) -> bool {
        super::checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The quoted datagram of an error (the data of a query).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[field::TYPE] = msg_type;
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], checksum);
    }

    /// Computes the checksum over the whole buffer and writes it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = super::checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The header of an ICMP error (the quoted datagram is the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Message type.
    pub msg_type: u8,
    /// Code.
    pub code: u8,
}

impl Repr {
    /// Reads the type and code of a message whose checksum is right.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            msg_type: packet.msg_type(),
            code: packet.code(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (the 4 bytes after the checksum zero) and the checksum over the
    /// whole buffer, the quoted datagram already in place.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_msg_type(self.msg_type);
        packet.set_code(self.code);
        packet.buffer.as_mut()[field::REST].fill(0);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn error_types() {
        for t in [TYPE_DEST_UNREACH, TYPE_TIME_EXCEEDED, TYPE_PARAM_PROBLEM] {
            assert!(is_error(t));
        }
        assert!(!is_error(TYPE_ECHO_REQUEST) && !is_error(TYPE_ECHO_REPLY));
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip_and_every_truncation_is_an_error(
            msg_type: u8, code: u8, quoted in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let repr = Repr { msg_type, code };
            let mut buf = vec![0u8; HEADER_LEN + quoted.len()];
            buf[HEADER_LEN..].copy_from_slice(&quoted);
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(repr));
            prop_assert_eq!(p.payload(), &quoted[..]);
            for n in 0..HEADER_LEN {
                prop_assert_eq!(Packet::new_checked(&buf[..n]).unwrap_err(), Error::Truncated);
                prop_assert_eq!(Repr::parse(&Packet::new_unchecked(&buf[..n])), Err(Error::Truncated));
            }
        }
    }
}
