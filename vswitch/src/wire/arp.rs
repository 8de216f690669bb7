//! ARP (RFC 826) for Ethernet and IPv4, the only kind the overlay carries.
//!
//! Where it sits: `arp-proxy` parses every ARP frame a local port sends and, for a known
//! address, turns the request into the reply in place; the TAP port's tests and the frame
//! builders emit requests; the trace shows the addresses.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Hardware type (1)         |     Protocol type (0x0800)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  HLEN (6)     |   PLEN (4)    |          Operation            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Sender hardware address (6 bytes) ...              |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |  Sender protocol address ...  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  ... (4 bytes)                |  Target hardware address ...  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                          ... (6 bytes)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Target protocol address (4 bytes)              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use super::ethernet::{self, ETHERTYPE_IPV4, Mac};
use super::{be16, be32, ipv4, set_be16};

/// Length of an Ethernet/IPv4 ARP packet.
pub const HEADER_LEN: usize = 28;
/// Hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// ARP request opcode.
pub const OP_REQUEST: u16 = 1;
/// ARP reply opcode.
pub const OP_REPLY: u16 = 2;

/// Byte ranges of the fields.
pub mod field {
    use core::ops::Range;

    /// Hardware type.
    pub const HTYPE: Range<usize> = 0..2;
    /// Protocol type (an EtherType).
    pub const PTYPE: Range<usize> = 2..4;
    /// Hardware address length.
    pub const HLEN: usize = 4;
    /// Protocol address length.
    pub const PLEN: usize = 5;
    /// Operation.
    pub const OP: Range<usize> = 6..8;
    /// Sender hardware address.
    pub const SHA: Range<usize> = 8..14;
    /// Sender protocol address.
    pub const SPA: Range<usize> = 14..18;
    /// Target hardware address.
    pub const THA: Range<usize> = 18..24;
    /// Target protocol address.
    pub const TPA: Range<usize> = 24..28;
}

/// The bytes are not an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArpError {
    /// Fewer than 28 bytes.
    #[error("truncated ARP packet")]
    Truncated,
    /// Not Ethernet hardware / IPv4 protocol addresses of sizes 6 and 4.
    #[error("ARP for another hardware or protocol type")]
    Unsupported,
}

packet_wrapper! {
    /// A read/write wrapper around an Ethernet/IPv4 ARP packet.
    error: ArpError,
    /// Checks that the buffer holds an Ethernet/IPv4 ARP packet's 28 bytes.
    check_len: |packet| {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            Err(ArpError::Truncated)
        } else {
            Ok(())
        }
    },
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Hardware type.
    #[inline]
    pub fn htype(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::HTYPE])
    }

    /// Protocol type.
    #[inline]
    pub fn ptype(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::PTYPE])
    }

    /// Hardware address length.
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    #[inline]
    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    #[inline]
    pub fn op(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::OP])
    }

    /// Sender hardware address.
    #[inline]
    pub fn sha(&self) -> Mac {
        Mac::from_slice(&self.buffer.as_ref()[field::SHA])
    }

    /// Sender protocol address.
    #[inline]
    pub fn spa(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(&self.buffer.as_ref()[field::SPA]))
    }

    /// Target hardware address.
    #[inline]
    pub fn tha(&self) -> Mac {
        Mac::from_slice(&self.buffer.as_ref()[field::THA])
    }

    /// Target protocol address.
    #[inline]
    pub fn tpa(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(&self.buffer.as_ref()[field::TPA]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets hardware type, protocol type and the address lengths for Ethernet/IPv4.
    #[inline]
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        set_be16(&mut b[field::HTYPE], HTYPE_ETHERNET);
        set_be16(&mut b[field::PTYPE], ETHERTYPE_IPV4);
        // 6 and 4: both fit a byte.
        b[field::HLEN] = ethernet::ADDR_LEN as u8;
        b[field::PLEN] = ipv4::ADDR_LEN as u8;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_op(&mut self, op: u16) {
        set_be16(&mut self.buffer.as_mut()[field::OP], op);
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sha(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&mac.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_spa(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&ip.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_tha(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&mac.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_tpa(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&ip.octets());
    }
}

/// The meaning of an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Opcode.
    pub op: u16,
    /// Sender hardware address.
    pub sha: Mac,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: Mac,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl Repr {
    /// Parses the ARP packet at the start of `b` (the bytes after the Ethernet header).
    pub fn parse(b: &[u8]) -> Result<Repr, ArpError> {
        Repr::parse_packet(&Packet::new_checked(b)?)
    }

    /// Parses a wrapped packet (re-checking the length: an unchecked short one is an error).
    pub fn parse_packet<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, ArpError> {
        p.check_len()?;
        if p.htype() != HTYPE_ETHERNET
            || p.ptype() != ETHERTYPE_IPV4
            || usize::from(p.hlen()) != ethernet::ADDR_LEN
            || usize::from(p.plen()) != ipv4::ADDR_LEN
        {
            return Err(ArpError::Unsupported);
        }
        Ok(Repr {
            op: p.op(),
            sha: p.sha(),
            spa: p.spa(),
            tha: p.tha(),
            tpa: p.tpa(),
        })
    }

    /// Length of the emitted packet.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes this packet into the first 28 bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        let mut p = Packet::new_unchecked(b);
        p.set_ethernet_ipv4();
        p.set_op(self.op);
        p.set_sha(self.sha);
        p.set_spa(self.spa);
        p.set_tha(self.tha);
        p.set_tpa(self.tpa);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// who-has 10.0.9.21 tell 10.0.9.11, as Linux sends it.
    const REQUEST: [u8; 28] = [
        0, 1, 8, 0, 6, 4, 0, 1, 0x02, 0x42, 10, 0, 9, 11, 10, 0, 9, 11, 0, 0, 0, 0, 0, 0, 10, 0, 9,
        21,
    ];

    #[test]
    fn round_trip_on_fixed_bytes() {
        let r = Repr::parse(&REQUEST).unwrap();
        assert_eq!(r.op, OP_REQUEST);
        assert_eq!(r.spa, Ipv4Addr::new(10, 0, 9, 11));
        assert_eq!(r.tpa, Ipv4Addr::new(10, 0, 9, 21));
        let mut out = [0u8; 28];
        r.emit(&mut out);
        assert_eq!(out, REQUEST);
        let mut bad = REQUEST;
        bad[field::PLEN] = 16;
        assert_eq!(Repr::parse(&bad), Err(ArpError::Unsupported));
    }

    proptest! {
        #[test]
        fn every_truncation_is_an_error(bytes in proptest::collection::vec(any::<u8>(), 28..40)) {
            for n in 0..HEADER_LEN {
                prop_assert_eq!(Repr::parse(&bytes[..n]), Err(ArpError::Truncated));
                prop_assert_eq!(
                    Repr::parse_packet(&Packet::new_unchecked(&bytes[..n])),
                    Err(ArpError::Truncated)
                );
            }
            let _ = Repr::parse(&bytes);
        }

        #[test]
        fn emit_parse_round_trip(op: u16, sha: [u8; 6], spa: u32, tha: [u8; 6], tpa: u32) {
            let repr = Repr {
                op, sha: Mac(sha), spa: Ipv4Addr::from(spa), tha: Mac(tha), tpa: Ipv4Addr::from(tpa),
            };
            let mut buf = [0u8; HEADER_LEN];
            repr.emit(&mut buf);
            prop_assert_eq!(Repr::parse(&buf), Ok(repr));
        }
    }
}
