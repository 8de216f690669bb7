//! The peer-address prefix: how the UDP underlay port and the VXLAN stages tell each other the
//! remote VTEP's address of a datagram.
//!
//! Where it sits: between [`UdpPort`](crate::UdpPort) and `vxlan-decap` on receive, and between
//! `vxlan-encap` and the port on transmit. The UDP socket delivers a datagram's payload (VXLAN
//! header + inner frame) and its source address separately; the port writes the address into
//! the 8 bytes of headroom right in front of the payload and makes them part of the frame, so
//! the decap stage reads it and strips it with the VXLAN header (one `pull_front`). On transmit,
//! `vxlan-encap` pushes the VXLAN header and then this prefix with the destination VTEP, and the
//! port sends everything after the prefix to that address.
//!
//! Why in the frame and not in a [`Meta`](vswitch::Meta) field: one mechanism serves both
//! directions (on transmit the port needs an address, and it has no [`Env`](vswitch::Env) to turn
//! a `VtepId` into one), `Meta` stays as small as it is for every stage of every path, and the
//! address travels with the bytes wherever the buffer is swapped or copied. It costs no copy: it
//! is written into headroom. The price: a capture of the underlay port shows these 8 bytes in
//! front of the VXLAN header.
//!
//! ```text
//!  0       4     6     8                16
//!  | IPv4  | UDP | 0 0 | VXLAN header   | inner Ethernet frame ...
//!  | addr  | port|     |                |
//! ```

use core::net::{Ipv4Addr, SocketAddrV4};

/// Length of the prefix.
pub const PEER_PREFIX_LEN: usize = 8;

/// Byte ranges of the prefix fields.
pub mod field {
    use core::ops::Range;

    /// The peer's IPv4 address.
    pub const ADDR: Range<usize> = 0..4;
    /// The peer's UDP port, big-endian.
    pub const PORT: Range<usize> = 4..6;
    /// Reserved, zero.
    pub const RESERVED: Range<usize> = 6..8;
}

/// Write `peer` into the first [`PEER_PREFIX_LEN`] bytes of `prefix` (which must hold them).
#[inline]
pub fn write_peer(prefix: &mut [u8], peer: SocketAddrV4) {
    let mut b = [0u8; PEER_PREFIX_LEN];
    b[field::ADDR].copy_from_slice(&peer.ip().octets());
    b[field::PORT].copy_from_slice(&peer.port().to_be_bytes());
    prefix[..PEER_PREFIX_LEN].copy_from_slice(&b);
}

/// The peer address at the start of `frame`, or `None` if the frame is shorter than the prefix.
#[inline]
pub fn read_peer(frame: &[u8]) -> Option<SocketAddrV4> {
    let b: &[u8; PEER_PREFIX_LEN] = frame.get(..PEER_PREFIX_LEN)?.try_into().ok()?;
    Some(SocketAddrV4::new(
        Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        u16::from_be_bytes([b[4], b[5]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_frames() {
        let peer = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 4789);
        let mut buf = [0xffu8; PEER_PREFIX_LEN + 2];
        write_peer(&mut buf, peer);
        assert_eq!(&buf[..PEER_PREFIX_LEN], &[198, 18, 0, 2, 0x12, 0xb5, 0, 0]);
        assert_eq!(read_peer(&buf), Some(peer));
        for n in 0..PEER_PREFIX_LEN {
            assert_eq!(read_peer(&buf[..n]), None);
        }
    }
}
