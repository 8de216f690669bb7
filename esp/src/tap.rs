//! The decrypted capture (`vxmesh capture --port underlay-esp --decrypted`): the plaintext
//! VXLAN datagrams `esp-decrypt` just opened and `esp-encrypt` is about to seal, each written as
//! the plain UDP underlay would show it (zero MACs, outer IPv4 and UDP 4789 headers rebuilt
//! around the VXLAN header), so Wireshark decodes the encrypted networks' inner frames.
//!
//! Where it sits: inside the two ESP stages, after opening and before sealing. Off the packet
//! path unless a capture runs: one branch per batch, the copying `#[cold]`; at most
//! [`TAP_BACKLOG`] frames wait for the control plane to take them, the rest are counted as
//! missed. For debugging by whoever may use the control socket (root, or `--control-group`),
//! who may read the traffic anyway; key bytes are never in it.

use std::net::{Ipv4Addr, SocketAddrV4};

use vswitch::Packet;

/// Most frames a tap holds between two takes.
pub const TAP_BACKLOG: usize = 4096;

/// A running decrypted capture in one stage.
#[derive(Debug, Default)]
pub struct Tap {
    remaining: u64,
    frames: Vec<(u64, Vec<u8>)>,
    missed: u64,
}

impl Tap {
    /// A capture of `count` frames.
    pub fn new(count: u64) -> Tap {
        Tap {
            remaining: count,
            ..Tap::default()
        }
    }

    /// Whether it still takes frames.
    #[inline]
    pub fn running(&self) -> bool {
        self.remaining > 0
    }

    /// Frames taken since the last call (time in ns, Ethernet frame), and frames missed.
    pub fn take(&mut self) -> (Vec<(u64, Vec<u8>)>, u64) {
        (
            std::mem::take(&mut self.frames),
            std::mem::take(&mut self.missed),
        )
    }

    /// Copy `pkt` (a VXLAN datagram from `src` to `dst`) at `now_ns`.
    #[cold]
    pub fn record(&mut self, pkt: &Packet, src: Ipv4Addr, dst: Ipv4Addr, now_ns: u64) {
        if self.remaining == 0 {
            return;
        }
        if self.frames.len() >= TAP_BACKLOG {
            self.missed += 1;
            return;
        }
        self.remaining -= 1;
        self.frames
            .push((now_ns, plain_vxlan(pkt.data(), src, dst)));
    }
}

/// `vxlan` (VXLAN header + inner frame) as an Ethernet frame of a UDP datagram 4789 → 4789,
/// as the plain UDP underlay's capture shows it (`vswitch::port::capture`).
pub fn plain_vxlan(vxlan: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    const PORT: u16 = vswitch::wire::vxlan::VXLAN_PORT;
    let mut out = Vec::with_capacity(vxlan.len() + 64);
    let (s, d) = (SocketAddrV4::new(src, PORT), SocketAddrV4::new(dst, PORT));
    if !vswitch::port::capture::capture_udp(&mut out, s, d, vxlan) {
        // Larger than a datagram can be (not a VXLAN datagram): the bytes as they are.
        out.extend_from_slice(vxlan);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::wire::{ethernet, ipv4, udp};

    #[test]
    fn a_tap_takes_its_count_and_shows_plain_vxlan() {
        let mut t = Tap::new(2);
        let p = Packet::from_frame(&[8, 0, 0, 0, 0, 0x10, 2, 0, 0xaa, 0xbb]);
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        for _ in 0..3 {
            t.record(&p, a, b, 7);
        }
        assert!(!t.running());
        let (frames, missed) = t.take();
        assert_eq!((frames.len(), missed), (2, 0));
        let f = &frames[0].1;
        let ip = ipv4::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
        assert_eq!(
            (ip.src_addr(), ip.dst_addr(), ip.protocol()),
            (a, b, ipv4::PROTO_UDP)
        );
        assert!(ip.verify_checksum());
        let u = udp::Packet::new_checked(&f[ethernet::HEADER_LEN + ipv4::HEADER_LEN..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (4789, 4789));
        assert_eq!(&f[f.len() - 10..], p.data());
    }
}
