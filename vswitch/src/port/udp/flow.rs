//! The outer UDP source port of a VXLAN datagram: a hash of the inner flow, as the kernel's
//! vxlan device takes it (`udp_flow_src_port`), so that routers spread the tunnel over their
//! equal-cost paths and receivers over their queues (RFC 7348, section 5: "it is recommended
//! that the UDP source port number be calculated using a hash of fields from the inner
//! packet").
//!
//! Where it sits: in the underlay port's transmit ([`super::UdpPort`]), after `vxlan-encap`:
//! [`inner_flow_hash`] reads the inner frame's headers of each datagram and the port sends it
//! from the source socket the hash picks ([`pick`]). Nothing allocated, nothing that panics:
//! a frame too short for a field hashes without it.
//!
//! The fields, as the kernel's flow dissector takes them: for IPv4, the addresses and the
//! protocol, and for TCP, UDP, SCTP and UDP-Lite the ports too (not for a fragment after the
//! first, which has none); for anything else, the Ethernet addresses and type. One VLAN tag
//! is looked through. Every datagram of one inner flow therefore leaves from one port, so the
//! flow stays in order on any multi-path underlay.

/// The hash of the inner frame `frame` (from its Ethernet header on).
#[inline]
pub fn inner_flow_hash(frame: &[u8]) -> u32 {
    let u16_at = |at: usize| {
        frame
            .get(at..at + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        frame
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (mut ethertype, mut l3) = (u16_at(12), 14);
    if ethertype == 0x8100 {
        (ethertype, l3) = (u16_at(16), 18);
    }
    if ethertype == 0x0800 && frame.len() >= l3 + 20 {
        let ihl = usize::from(frame[l3] & 0x0f) * 4;
        let proto = frame[l3 + 9];
        let (src, dst) = (u32_at(l3 + 12), u32_at(l3 + 16));
        let later_fragment = u16_at(l3 + 6) & 0x1fff != 0;
        // TCP, UDP, SCTP, UDP-Lite: the ports lead the header.
        let ports = if matches!(proto, 6 | 17 | 132 | 136) && !later_fragment && ihl >= 20 {
            u32_at(l3 + ihl)
        } else {
            0
        };
        return mix(mix(mix(u32::from(proto) ^ 0x0800_0000, src), dst), ports);
    }
    // Not IPv4: the Ethernet addresses and the type.
    let macs = (0..3).fold(u32::from(ethertype), |h, i| mix(h, u32_at(i * 4)));
    mix(macs, u32::from(u16_at(12)))
}

/// One step of the hash: a multiply-rotate mix (as FxHash), with the murmur3 finaliser's
/// avalanche so that flows that differ in one bit of a port land on unrelated sockets.
#[inline]
fn mix(h: u32, v: u32) -> u32 {
    let mut x = (h.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9);
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^ (x >> 13)
}

/// Which of `n` source sockets a flow of hash `hash` leaves from (as the kernel scales its
/// hash into the port range: a multiply, not a modulo).
#[inline]
pub fn pick(hash: u32, n: usize) -> usize {
    ((u64::from(hash) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mac;
    use crate::frames;
    use std::net::Ipv4Addr;

    const A: Mac = Mac([2, 0x42, 10, 0, 9, 11]);
    const B: Mac = Mac([2, 0x42, 10, 0, 9, 21]);

    fn udp(sport: u16, dport: u16) -> Vec<u8> {
        frames::udp(
            A,
            B,
            Ipv4Addr::new(10, 0, 9, 11),
            Ipv4Addr::new(10, 0, 9, 21),
            sport,
            dport,
            b"payload",
        )
    }

    #[test]
    fn one_flow_one_hash_and_flows_spread_over_the_sockets() {
        assert_eq!(
            inner_flow_hash(&udp(40000, 53)),
            inner_flow_hash(&udp(40000, 53))
        );
        // The payload is not part of it.
        let mut other_payload = udp(40000, 53);
        let n = other_payload.len();
        other_payload[n - 1] ^= 0xff;
        assert_eq!(
            inner_flow_hash(&other_payload),
            inner_flow_hash(&udp(40000, 53))
        );
        // 1024 flows that differ only in their source port, over 16 sockets: each socket
        // gets some, none more than twice its share.
        let mut per = [0usize; 16];
        for sport in 40000..41024 {
            per[pick(inner_flow_hash(&udp(sport, 53)), 16)] += 1;
        }
        assert!(per.iter().all(|&c| c > 0 && c < 128), "{per:?}");
    }

    #[test]
    fn ports_count_only_where_the_protocol_has_them() {
        // A later fragment has no ports: its hash is the addresses' and the protocol's, the
        // same whatever its first bytes hold.
        let frag = |sport| {
            let mut f = udp(sport, 53);
            f[14 + 6] = 0x00;
            f[14 + 7] = 0xb9; // offset 185 x 8
            f
        };
        assert_eq!(inner_flow_hash(&frag(1)), inner_flow_hash(&frag(2)));
        assert_ne!(inner_flow_hash(&udp(1, 53)), inner_flow_hash(&udp(2, 53)));
        // ICMP: no ports either.
        let mut icmp = udp(1, 53);
        icmp[14 + 9] = 1;
        let mut icmp2 = udp(2, 53);
        icmp2[14 + 9] = 1;
        assert_eq!(inner_flow_hash(&icmp), inner_flow_hash(&icmp2));
    }

    #[test]
    fn short_and_odd_frames_hash_without_panicking() {
        let full = udp(40000, 53);
        for len in 0..full.len() {
            let _ = inner_flow_hash(&full[..len]);
        }
        // An IHL below 5 takes no ports; an ARP frame hashes by its MACs.
        let mut bad_ihl = full.clone();
        bad_ihl[14] = 0x41;
        let _ = inner_flow_hash(&bad_ihl);
        let arp = frames::arp_request(A, Ipv4Addr::new(10, 0, 9, 11), Ipv4Addr::new(10, 0, 9, 21));
        assert_ne!(inner_flow_hash(&arp), 0);
        assert!(pick(u32::MAX, 16) < 16 && pick(0, 16) == 0);
    }
}
