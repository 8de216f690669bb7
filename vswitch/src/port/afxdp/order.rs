//! Keeping a TCP flow in order where the AF_XDP port's two receive paths meet: the ring's
//! frames and the super-frames from the packet socket (`packet_rx`) reach one batch, and a
//! container's TCP interleaves both (a 64 KB super-frame, then a short segment that fits the
//! MTU). Read one path after the other, a super-frame could go out behind a segment that
//! followed it, and the peer's TCP would take that for loss (spurious fast retransmits).
//!
//! Where it sits: at the end of the AF_XDP port's `rx_burst`, before the batch enters the
//! switch. The port reads the ring until no super-frame was counted during the read, then the
//! super-frames counted, so every frame that came before one of them is in the batch; [`place`]
//! then moves each super-frame in front of the first frame of its flow whose sequence number
//! comes after its own. Frames of other flows, and everything but TCP/IPv4, keep their places.

use crate::packet::Packet;
use crate::wire::ethernet::{self, ETHERTYPE_IPV4};
use crate::wire::{ipv4, tcp};

/// A TCP/IPv4 frame's flow (addresses and ports, as they sit in the headers) and sequence
/// number; `None` for anything else (and for fragments).
fn flow_seq(f: &[u8]) -> Option<([u8; 12], u32)> {
    let (l3, ethertype) = ethernet::Packet::new_checked(f).ok()?.l3().ok()?;
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = ipv4::Packet::new_checked(f.get(l3..)?).ok()?;
    if ip.protocol() != ipv4::PROTO_TCP || ip.is_fragment() {
        return None;
    }
    let tcp = tcp::Packet::new_checked(ip.payload()).ok()?;
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(ip.addrs());
    key[8..10].copy_from_slice(&tcp.src_port().to_be_bytes());
    key[10..].copy_from_slice(&tcp.dst_port().to_be_bytes());
    Some((key, tcp.seq_number()))
}

/// Whether sequence number `a` comes after `b` (RFC 1982 arithmetic).
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Move the last packet of `pkts` (a super-frame just read) in front of the first packet of
/// its flow whose sequence number comes after its own, if there is one. Returns whether it
/// moved.
pub(super) fn place(pkts: &mut [Packet]) -> bool {
    let Some((last, before)) = pkts.split_last() else {
        return false;
    };
    let Some((key, seq)) = flow_seq(last.data()) else {
        return false;
    };
    let first_later = before
        .iter()
        .position(|p| flow_seq(p.data()).is_some_and(|(k, s)| k == key && seq_after(s, seq)));
    match first_later {
        Some(at) => {
            pkts[at..].rotate_right(1);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mac;
    use crate::frames::{self, TcpFlags};
    use std::net::Ipv4Addr;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 11);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 12);

    fn tcp(sport: u16, seq: u32, len: usize) -> Packet {
        let m: Mac = "02:42:0a:00:09:0b".parse().unwrap();
        let f = frames::tcp(
            m,
            m,
            A,
            B,
            sport,
            80,
            TcpFlags::ACK,
            seq,
            1,
            &vec![0u8; len],
        );
        Packet::from_frame(&f)
    }

    fn seqs(pkts: &[Packet]) -> Vec<(u16, u32)> {
        pkts.iter()
            .map(|p| {
                let f = p.data();
                match flow_seq(f) {
                    Some((k, s)) => (u16::from_be_bytes([k[8], k[9]]), s),
                    None => (0, 0),
                }
            })
            .collect()
    }

    #[test]
    fn a_super_frame_goes_before_the_later_segments_of_its_flow() {
        let m: Mac = "02:42:0a:00:09:0b".parse().unwrap();
        let udp = Packet::from_frame(&frames::udp(m, m, A, B, 1, 2, b"x"));
        // Ring: 1000 (before it), another flow, 5000 (after it), UDP; then the super-frame 2000.
        let mut v = vec![
            tcp(1, 1000, 1000),
            tcp(2, 9000, 10),
            tcp(1, 5000, 10),
            udp,
            tcp(1, 2000, 3000),
        ];
        assert!(place(&mut v));
        assert_eq!(
            seqs(&v),
            [(1, 1000), (2, 9000), (1, 2000), (1, 5000), (0, 0)]
        );
        // Already in place, another flow, or across the sequence wrap: nothing moves.
        let mut v = vec![tcp(1, 1000, 1000), tcp(1, 2000, 3000)];
        assert!(!place(&mut v));
        let mut v = vec![tcp(2, 5000, 10), tcp(1, 2000, 3000)];
        assert!(!place(&mut v));
        let mut v = vec![tcp(1, 10, 10), tcp(1, u32::MAX - 100, 3000)];
        assert!(place(&mut v));
        assert_eq!(seqs(&v), [(1, u32::MAX - 100), (1, 10)]);
        // A pure ACK sent before the super-frame carries its sequence number: it stays ahead.
        let mut v = vec![tcp(1, 2000, 0), tcp(1, 2000, 3000)];
        assert!(!place(&mut v));
        assert!(!place(&mut []));
    }
}
