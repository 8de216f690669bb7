//! IPv4 headers (RFC 791) and the IP protocol numbers.
//!
//! Where it sits: `lb-nat` reads addresses and the protocol of every IPv4 packet and rewrites
//! addresses with incremental checksum updates; the offloads read and rebuild the header of
//! every TCP segment they cut or merge; the trace reads it to show and filter; the UDP underlay
//! port rebuilds the outer header the kernel added when it captures a datagram.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options                    |    Padding    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, be16, be32, check_announced_len, check_min_len, set_be16, set_be32};

/// Length of a header without options (the smallest valid one).
pub const HEADER_LEN: usize = 20;
/// Length of an IPv4 address.
pub const ADDR_LEN: usize = 4;
/// The version field of IPv4.
pub const VERSION: u8 = 4;
/// Bytes per unit of the IHL field.
pub const IHL_UNIT: usize = 4;
/// Smallest IPv4 MTU: the datagram every host must accept (RFC 791).
pub const MIN_MTU: u16 = 68;
/// Default TTL (Linux's `ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of DCCP.
pub const PROTO_DCCP: u8 = 33;
/// IP protocol number of SCTP.
pub const PROTO_SCTP: u8 = 132;
/// IP protocol number of UDP-Lite.
pub const PROTO_UDPLITE: u8 = 136;

/// Don't Fragment, in the flags/fragment-offset word.
pub const FLAG_DF: u16 = 0x4000;
/// More Fragments, in the flags/fragment-offset word.
pub const FLAG_MF: u16 = 0x2000;
/// The fragment offset bits of the flags/fragment-offset word.
pub const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// Byte ranges of the header fields.
pub mod field {
    use core::ops::Range;

    /// Version (high nibble) and IHL (low nibble).
    pub const VER_IHL: usize = 0;
    /// Type of service: DSCP and ECN.
    pub const TOS: usize = 1;
    /// Total length.
    pub const LENGTH: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags and fragment offset.
    pub const FLG_OFF: Range<usize> = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 12..16;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 16..20;
    /// Both addresses, as the TCP/UDP pseudo-header takes them.
    pub const ADDRS: Range<usize> = 12..20;
}

packet_wrapper! {
    /// A read/write wrapper around an IPv4 packet.
    error: Error,
    /// Checks that the buffer holds the whole header, options included, and the total length
    /// it announces (trailing bytes, such as Ethernet padding, are allowed). Does not check
    /// the version: [`Repr::parse`] does.
    check_len: |packet| {
        let len = packet.buffer.as_ref().len();
        check_min_len(len, HEADER_LEN)?;
        let header_len = packet.header_len();
        check_announced_len(len, header_len, HEADER_LEN)?;
        check_announced_len(len, usize::from(packet.total_len()), header_len)
    },
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The version field.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL times 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * IHL_UNIT
    }

    /// The type of service byte (DSCP and ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// The total length (header and payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }

    /// The flags and fragment offset word.
    #[inline]
    pub fn flags_frag(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    /// Whether Don't Fragment is set.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// Whether More Fragments is set.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// The fragment offset, in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & FRAG_OFFSET_MASK
    }

    /// Whether the packet is a fragment (More Fragments or an offset): only the first
    /// fragment's payload starts with the transport header, and only a whole packet's holds it.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// The time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// Both addresses as they sit in the header (what the pseudo-header sums take).
    #[inline]
    pub fn addrs(&self) -> &[u8; 2 * ADDR_LEN] {
        self.buffer.as_ref()[field::ADDRS]
            .try_into()
            .expect("the range is 8 bytes long")
    }

    /// The header bytes, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Whether the header checksum is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.header()) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: from the end of the header to the total length.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version field.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes (a multiple of 4, at most 60).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        // At most 60 / 4 = 15: fits the nibble.
        *b = (*b & 0xf0) | ((len / IHL_UNIT) as u8 & 0x0f);
    }

    /// Sets the type of service byte.
    #[inline]
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        set_be16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        set_be16(&mut self.buffer.as_mut()[field::IDENT], ident);
    }

    /// Sets the flags and fragment offset word.
    #[inline]
    pub fn set_flags_frag(&mut self, word: u16) {
        set_be16(&mut self.buffer.as_mut()[field::FLG_OFF], word);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], checksum);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        set_be32(&mut self.buffer.as_mut()[field::SRC_ADDR], addr.to_bits());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        set_be32(&mut self.buffer.as_mut()[field::DST_ADDR], addr.to_bits());
    }

    /// Computes the header checksum and writes it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// The bytes from the end of the header to the end of the buffer, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// The meaning of an unfragmented IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Type of service byte.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
}

impl Repr {
    /// Reads a header: version 4, a good checksum, not a fragment; options are skipped.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != VERSION || !packet.verify_checksum() || packet.is_fragment() {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with its checksum; `payload_len` must leave the total length
    /// within 16 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(VERSION);
        packet.set_header_len(HEADER_LEN);
        packet.set_tos(self.tos);
        // The caller keeps an IPv4 packet within 64 KB.
        packet.set_total_len((HEADER_LEN + self.payload_len) as u16);
        packet.set_ident(self.ident);
        packet.set_flags_frag(if self.dont_frag { FLAG_DF } else { 0 });
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A UDP datagram's header 10.0.9.11 -> 10.0.9.100, total length 30, as the lb golden test
    /// has it.
    const UDP_HDR: [u8; HEADER_LEN] = [
        0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0x54, 0x61, 10, 0, 9, 11, 10, 0, 9, 100,
    ];

    fn with_payload(header: &[u8], total: usize) -> Vec<u8> {
        let mut v = header.to_vec();
        v.resize(total, 0);
        v
    }

    #[test]
    fn reads_fixed_bytes() {
        let buf = with_payload(&UDP_HDR, 30);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 30);
        assert_eq!(p.protocol(), PROTO_UDP);
        assert_eq!(p.ttl(), 64);
        assert!(!p.is_fragment() && !p.dont_frag());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 9, 11));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 9, 100));
        assert_eq!(p.addrs(), &[10, 0, 9, 11, 10, 0, 9, 100]);
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 10);
        let r = Repr::parse(&p).unwrap();
        let mut out = with_payload(&[0; 20], 30);
        r.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, buf);
    }

    #[test]
    fn refuses_bad_lengths() {
        let mut buf = with_payload(&UDP_HDR, 30);
        buf[0] = 0x44;
        assert_eq!(Packet::new_checked(&buf[..]).unwrap_err(), Error::Malformed);
        buf[0] = 0x46;
        assert_eq!(
            Packet::new_checked(&buf[..22]).unwrap_err(),
            Error::Truncated
        );
        buf[0] = 0x45;
        buf[3] = 10;
        assert_eq!(Packet::new_checked(&buf[..]).unwrap_err(), Error::Malformed);
        buf[3] = 31;
        assert_eq!(Packet::new_checked(&buf[..]).unwrap_err(), Error::Truncated);
        buf[3] = 30;
        buf[0] = 0x65;
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::Malformed));
    }

    proptest! {
        #[test]
        fn every_truncation_is_an_error(src: u32, dst: u32, protocol: u8, payload_len in 0usize..64,
                                        ttl: u8, tos: u8, ident: u16, dont_frag: bool) {
            let repr = Repr {
                src_addr: Ipv4Addr::from(src), dst_addr: Ipv4Addr::from(dst), protocol,
                payload_len, ttl, tos, ident, dont_frag,
            };
            let mut buf = vec![0u8; HEADER_LEN + payload_len];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(repr));
            for n in 0..buf.len() {
                prop_assert_eq!(Packet::new_checked(&buf[..n]).unwrap_err(), Error::Truncated);
                prop_assert!(Repr::parse(&Packet::new_unchecked(&buf[..n])).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.payload(), p.header(), p.verify_checksum(), Repr::parse(&p));
            }
        }
    }
}
