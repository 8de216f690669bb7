//! Ethernet II frames (IEEE 802.3) with an optional 802.1Q tag, the EtherTypes the dataplane
//! knows, and the MAC address type.
//!
//! Where it sits: `l2-parse` checks every frame's Ethernet header once with
//! [`Packet::new_checked`] and [`Packet::l3`] (which steps over one 802.1Q tag); `l2-learn`,
//! `l2-fwd`, `arp-proxy` and `own-addr` then read the addresses with `new_unchecked`, and the
//! offloads and the trace find the L3 header the same way.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination MAC address                    |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                      Source MAC address                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           EtherType           |  802.1Q: TPID 0x8100 here, then
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  | PCP |D|  VLAN ID  | EtherType |
//! ```

use core::fmt;
use core::str::FromStr;
use std::net::Ipv4Addr;

use super::{Error, be16, check_min_len, set_be16};

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an 802.1Q tag (TPID is the outer EtherType; TCI and the inner EtherType follow).
pub const VLAN_TAG_LEN: usize = 4;
/// Length of a MAC address.
pub const ADDR_LEN: usize = 6;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType (TPID) of an 802.1Q tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Byte ranges of the header fields.
pub mod field {
    use core::ops::{Range, RangeFrom};

    /// Destination MAC.
    pub const DESTINATION: Range<usize> = 0..6;
    /// Source MAC.
    pub const SOURCE: Range<usize> = 6..12;
    /// EtherType (the TPID when tagged).
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// The payload of an untagged frame.
    pub const PAYLOAD: RangeFrom<usize> = 14..;
    /// 802.1Q tag control information (priority, DEI, VLAN ID).
    pub const VLAN_TCI: Range<usize> = 14..16;
    /// The EtherType after an 802.1Q tag.
    pub const VLAN_ETHERTYPE: Range<usize> = 16..18;
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; ADDR_LEN]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: Mac = Mac([0; 6]);

    /// The MAC at the start of `b` (which must hold 6 bytes).
    #[inline]
    pub fn from_slice(b: &[u8]) -> Mac {
        let mut m = [0u8; ADDR_LEN];
        m.copy_from_slice(&b[..ADDR_LEN]);
        Mac(m)
    }

    /// Group (multicast or broadcast) address: the I/G bit is set.
    #[inline]
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// An 802.1D reserved group address, 01:80:c2:00:00:00–0f (STP BPDUs, PAUSE, LLDP, 802.1X),
    /// which a bridge never forwards.
    #[inline]
    pub fn is_reserved_group(self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] & 0xf0 == 0
    }

    /// ff:ff:ff:ff:ff:ff.
    #[inline]
    pub fn is_broadcast(self) -> bool {
        self == Mac::BROADCAST
    }

    /// All zero.
    #[inline]
    pub fn is_zero(self) -> bool {
        self == Mac::ZERO
    }

    /// A valid unicast station address (not group, not zero): the only kind a switch learns.
    #[inline]
    pub fn is_unicast(self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The 48 bits as an integer.
    #[inline]
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Docker's default container MAC: 02:42 followed by the IPv4 address.
    pub fn docker_default(ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string is not a MAC address of the form `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes separated by ':'")]
pub struct MacParseError(pub String);

impl FromStr for Mac {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Mac, MacParseError> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; ADDR_LEN];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

packet_wrapper! {
    /// A read/write wrapper around an Ethernet frame.
    error: Error,
    /// Checks that the buffer holds an untagged Ethernet header.
    check_len: |packet| check_min_len(packet.buffer.as_ref().len(), HEADER_LEN),
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The destination MAC.
    #[inline]
    pub fn dst_addr(&self) -> Mac {
        Mac::from_slice(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// The source MAC.
    #[inline]
    pub fn src_addr(&self) -> Mac {
        Mac::from_slice(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The EtherType field ([`ETHERTYPE_VLAN`] on a tagged frame).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ETHERTYPE])
    }

    /// Whether the frame carries an 802.1Q tag.
    #[inline]
    pub fn is_vlan_tagged(&self) -> bool {
        self.ethertype() == ETHERTYPE_VLAN
    }

    /// Where the L3 header starts and its EtherType, stepping over one 802.1Q tag; a tagged
    /// frame too short for its tag is [`Error::Truncated`].
    #[inline]
    pub fn l3(&self) -> Result<(usize, u16), Error> {
        let ethertype = self.ethertype();
        if ethertype != ETHERTYPE_VLAN {
            return Ok((HEADER_LEN, ethertype));
        }
        match self.buffer.as_ref().get(field::VLAN_ETHERTYPE) {
            Some(inner) => Ok((HEADER_LEN + VLAN_TAG_LEN, be16(inner))),
            None => Err(Error::Truncated),
        }
    }

    /// The 802.1Q tag control information, if the frame is tagged and holds the tag.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        if !self.is_vlan_tagged() {
            return None;
        }
        self.buffer.as_ref().get(field::VLAN_TCI).map(be16)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload of an untagged frame (the tag and what follows on a tagged one).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the destination MAC.
    #[inline]
    pub fn set_dst_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    /// Sets the source MAC.
    #[inline]
    pub fn set_src_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    /// Sets the EtherType field.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        set_be16(&mut self.buffer.as_mut()[field::ETHERTYPE], ethertype);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The meaning of an untagged Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source MAC.
    pub src_addr: Mac,
    /// Destination MAC.
    pub dst_addr: Mac,
    /// EtherType.
    pub ethertype: u16,
}

impl Repr {
    /// Reads the header (re-checking the length, so an unchecked wrapper is refused, not a panic).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            ethertype: packet.ethertype(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_dst_addr(self.dst_addr);
        packet.set_src_addr(self.src_addr);
        packet.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ARP request from 02:42:0a:00:09:0b to broadcast, as Linux sends it (header only).
    const ARP_BCAST: [u8; HEADER_LEN] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 10, 0, 9, 11, 0x08, 0x06,
    ];

    #[test]
    fn reads_fixed_bytes() {
        let p = Packet::new_checked(&ARP_BCAST[..]).unwrap();
        assert_eq!(p.dst_addr(), Mac::BROADCAST);
        assert_eq!(p.src_addr().to_string(), "02:42:0a:00:09:0b");
        assert_eq!(p.ethertype(), ETHERTYPE_ARP);
        assert_eq!(p.l3(), Ok((HEADER_LEN, ETHERTYPE_ARP)));
        assert_eq!(p.vlan_tci(), None);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn steps_over_one_vlan_tag() {
        let mut f = [0u8; 18];
        f[..12].copy_from_slice(&ARP_BCAST[..12]);
        f[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        f[14..16].copy_from_slice(&0x2064u16.to_be_bytes());
        f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let p = Packet::new_checked(&f[..]).unwrap();
        assert_eq!(p.l3(), Ok((18, ETHERTYPE_IPV4)));
        assert_eq!(p.vlan_tci(), Some(0x2064));
        let short = Packet::new_checked(&f[..17]).unwrap();
        assert_eq!(short.l3(), Err(Error::Truncated));
        assert_eq!(short.vlan_tci(), Some(0x2064));
    }

    #[test]
    fn mac_parse_and_print() {
        let m: Mac = "02:42:0a:00:09:0b".parse().unwrap();
        assert_eq!(m, Mac::docker_default(Ipv4Addr::new(10, 0, 9, 11)));
        assert_eq!(m.to_string(), "02:42:0a:00:09:0b");
        for bad in [
            "",
            "02:42:0a:00:09",
            "02:42:0a:00:09:0b:00",
            "02:42:0a:00:09:zz",
            "02:42:0a:00:09:123",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert!(Mac::BROADCAST.is_multicast() && Mac::BROADCAST.is_broadcast());
        assert!(!Mac::ZERO.is_unicast() && m.is_unicast());
        assert_eq!(m.to_u64(), 0x0242_0a00_090b);
    }

    proptest! {
        #[test]
        fn every_truncation_is_an_error(bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN..40)) {
            for n in 0..HEADER_LEN {
                prop_assert_eq!(Packet::new_checked(&bytes[..n]).unwrap_err(), Error::Truncated);
                prop_assert_eq!(Repr::parse(&Packet::new_unchecked(&bytes[..n])), Err(Error::Truncated));
            }
            for n in HEADER_LEN..=bytes.len() {
                let p = Packet::new_checked(&bytes[..n]).unwrap();
                if let Ok((l3, _)) = p.l3() {
                    prop_assert!(l3 <= n);
                }
                let _ = p.vlan_tci();
            }
        }

        #[test]
        fn emit_parse_round_trip(src: [u8; 6], dst: [u8; 6], ethertype: u16) {
            let repr = Repr { src_addr: Mac(src), dst_addr: Mac(dst), ethertype };
            let mut buf = [0u8; HEADER_LEN];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(repr));
        }
    }
}
