//! IPv4 / TCP / UDP / ICMP views and the NAT rewrite itself, on byte slices.
//!
//! Sits at the heart of the `lb-nat` stage: [`parse`] reads the few fields the load balancer
//! needs from the IP header on (it never panics, whatever the bytes), and the `rewrite_*`
//! functions change addresses and ports in place, updating every checksum incrementally
//! (RFC 1624) so the payload is never re-read. smoltcp's wrappers have no incremental update,
//! hence these offset-based accessors; tests verify the results with smoltcp independently.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! |         Identification        |Flags|      Fragment Offset    |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |  TCP / UDP
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |  ICMP error:
//! |                unused / MTU                                   |  then the quoted
//! |      original IP header + first 8 bytes of its payload ...    |  packet
//! ```

use crate::checksum::{update16, update32};

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Smallest IPv4 header.
pub const IPV4_MIN_HDR: usize = 20;
/// Smallest TCP header.
pub const TCP_MIN_HDR: usize = 20;
/// UDP header length.
pub const UDP_HDR: usize = 8;
/// ICMP error header length (type, code, checksum, 4 unused/MTU bytes).
pub const ICMP_HDR: usize = 8;
/// Bytes of the quoted transport header needed to read its ports.
pub const QUOTED_PORTS: usize = 4;

/// TCP FIN flag.
pub const TCP_FIN: u8 = 0x01;
/// TCP SYN flag.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST flag.
pub const TCP_RST: u8 = 0x04;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;

/// ICMP destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP parameter problem.
pub const ICMP_PARAM_PROBLEM: u8 = 12;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const FRAG: usize = 6;
    pub const PROTO: usize = 9;
    pub const CSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const SPORT: usize = 0;
    pub const DPORT: usize = 2;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_CSUM: usize = 16;
    pub const UDP_CSUM: usize = 6;
    pub const ICMP_TYPE: usize = 0;
    pub const ICMP_CSUM: usize = 2;
    /// More-fragments flag and offset mask in the flags/offset word.
    pub const MF_OFFSET_MASK: u16 = 0x3fff;
    /// Fragment offset mask.
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
}

/// Why a packet could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than a header it announces.
    #[error("truncated packet")]
    Truncated,
    /// Version is not 4.
    #[error("not IPv4")]
    NotIpv4,
    /// IHL below 5 or beyond the total length.
    #[error("bad IPv4 header length")]
    BadHeaderLength,
    /// Total length below the header or beyond the buffer.
    #[error("bad IPv4 total length")]
    BadTotalLength,
}

/// A transport 5-tuple (addresses as host-order `u32`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl Tuple {
    /// The tuple of a packet going the other way.
    #[inline]
    pub fn reversed(self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// An ICMP error quoting a TCP or UDP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    /// Outer source address.
    pub src: u32,
    /// Outer destination address.
    pub dst: u32,
    /// Offset of the ICMP header.
    pub icmp: usize,
    /// Offset of the quoted IP header.
    pub inner: usize,
    /// Offset of the quoted transport header.
    pub inner_l4: usize,
    /// End of the packet (IPv4 total length).
    pub end: usize,
    /// The quoted packet's tuple (as the quoted packet travelled).
    pub quoted: Tuple,
}

/// What the load balancer sees of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// An unfragmented TCP or UDP packet.
    Transport {
        /// Its tuple.
        tuple: Tuple,
        /// Offset of the transport header.
        l4: usize,
        /// TCP flags (0 for UDP).
        tcp_flags: u8,
    },
    /// An ICMP error about a TCP or UDP packet.
    Icmp(IcmpError),
    /// A TCP or UDP fragment: ports are not available.
    Fragment {
        /// Its destination address.
        dst: u32,
    },
    /// Anything else (other protocols, ICMP queries): not the load balancer's business.
    Other,
}

#[inline]
fn rd16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}
#[inline]
fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
#[inline]
fn wr16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
#[inline]
fn wr32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Validate an IPv4 header at `off`; returns (header length, end of packet).
#[inline]
fn ipv4_bounds(
    ip: &[u8],
    off: usize,
    end: usize,
    whole: bool,
) -> Result<(usize, usize), PacketError> {
    if end < off + IPV4_MIN_HDR {
        return Err(PacketError::Truncated);
    }
    let vi = ip[off + field::VER_IHL];
    if vi >> 4 != 4 {
        return Err(PacketError::NotIpv4);
    }
    let ihl = usize::from(vi & 0x0f) * 4;
    if ihl < IPV4_MIN_HDR {
        return Err(PacketError::BadHeaderLength);
    }
    if end < off + ihl {
        return Err(PacketError::Truncated);
    }
    if !whole {
        // A quoted header: its total length describes the original, not what was quoted.
        return Ok((ihl, end));
    }
    let total = usize::from(rd16(ip, off + field::TOTAL_LEN));
    if total < ihl {
        return Err(PacketError::BadTotalLength);
    }
    if total > end - off {
        return Err(PacketError::Truncated);
    }
    Ok((ihl, off + total))
}

/// Parse an IPv4 packet (`ip` starts at the IP header; trailing Ethernet padding is ignored).
pub fn parse(ip: &[u8]) -> Result<Flow, PacketError> {
    let (ihl, end) = ipv4_bounds(ip, 0, ip.len(), true)?;
    let proto = ip[field::PROTO];
    let frag = rd16(ip, field::FRAG) & field::MF_OFFSET_MASK;
    match proto {
        PROTO_TCP | PROTO_UDP => {
            if frag != 0 {
                return Ok(Flow::Fragment {
                    dst: rd32(ip, field::DST),
                });
            }
            let need = if proto == PROTO_TCP {
                TCP_MIN_HDR
            } else {
                UDP_HDR
            };
            if end < ihl + need {
                return Err(PacketError::Truncated);
            }
            let tuple = Tuple {
                proto,
                src: rd32(ip, field::SRC),
                dst: rd32(ip, field::DST),
                sport: rd16(ip, ihl + field::SPORT),
                dport: rd16(ip, ihl + field::DPORT),
            };
            let tcp_flags = if proto == PROTO_TCP {
                ip[ihl + field::TCP_FLAGS]
            } else {
                0
            };
            Ok(Flow::Transport {
                tuple,
                l4: ihl,
                tcp_flags,
            })
        }
        PROTO_ICMP => {
            if frag != 0 {
                return Ok(Flow::Other);
            }
            if end < ihl + ICMP_HDR {
                return Err(PacketError::Truncated);
            }
            let ty = ip[ihl + field::ICMP_TYPE];
            if !matches!(
                ty,
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM
            ) {
                return Ok(Flow::Other);
            }
            let inner = ihl + ICMP_HDR;
            let (iihl, _) = ipv4_bounds(ip, inner, end, false)?;
            let iproto = ip[inner + field::PROTO];
            let ifrag = rd16(ip, inner + field::FRAG);
            // Only a first fragment quotes ports; RFC 792 guarantees 8 bytes of them.
            if !matches!(iproto, PROTO_TCP | PROTO_UDP) || ifrag & field::FRAG_OFFSET_MASK != 0 {
                return Ok(Flow::Other);
            }
            let inner_l4 = inner + iihl;
            if end < inner_l4 + QUOTED_PORTS {
                return Err(PacketError::Truncated);
            }
            Ok(Flow::Icmp(IcmpError {
                src: rd32(ip, field::SRC),
                dst: rd32(ip, field::DST),
                icmp: ihl,
                inner,
                inner_l4,
                end,
                quoted: Tuple {
                    proto: iproto,
                    src: rd32(ip, inner + field::SRC),
                    dst: rd32(ip, inner + field::DST),
                    sport: rd16(ip, inner_l4 + field::SPORT),
                    dport: rd16(ip, inner_l4 + field::DPORT),
                },
            }))
        }
        _ => Ok(Flow::Other),
    }
}

/// Offset of the transport checksum relative to the transport header, and whether the bytes
/// holding it are present in `end`.
#[inline]
fn l4_csum_off(proto: u8, l4: usize, end: usize) -> Option<usize> {
    let off = l4
        + if proto == PROTO_TCP {
            field::TCP_CSUM
        } else {
            field::UDP_CSUM
        };
    (off + 2 <= end).then_some(off)
}

/// Rewrite a TCP/UDP packet's source and destination (address, port), fixing the IPv4 and
/// transport checksums incrementally. `l4` and `proto` come from [`parse`] of the same bytes.
/// A UDP checksum of zero (none) stays zero.
#[inline]
pub fn rewrite_transport(ip: &mut [u8], l4: usize, proto: u8, src: (u32, u16), dst: (u32, u16)) {
    let old_src = rd32(ip, field::SRC);
    let old_dst = rd32(ip, field::DST);
    let old_sport = rd16(ip, l4 + field::SPORT);
    let old_dport = rd16(ip, l4 + field::DPORT);
    let mut ipc = rd16(ip, field::CSUM);
    ipc = update32(ipc, old_src, src.0);
    ipc = update32(ipc, old_dst, dst.0);
    wr16(ip, field::CSUM, ipc);
    wr32(ip, field::SRC, src.0);
    wr32(ip, field::DST, dst.0);
    wr16(ip, l4 + field::SPORT, src.1);
    wr16(ip, l4 + field::DPORT, dst.1);
    let coff = l4
        + if proto == PROTO_TCP {
            field::TCP_CSUM
        } else {
            field::UDP_CSUM
        };
    let old = rd16(ip, coff);
    if proto == PROTO_UDP && old == 0 {
        return;
    }
    let mut c = update32(old, old_src, src.0);
    c = update32(c, old_dst, dst.0);
    c = update16(c, old_sport, src.1);
    c = update16(c, old_dport, dst.1);
    if proto == PROTO_UDP && c == 0 {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        c = 0xffff;
    }
    wr16(ip, coff, c);
}

/// Translate an ICMP error: set the outer source/destination addresses and the quoted packet's
/// source and destination (address, port), fixing the outer IPv4, quoted IPv4, quoted transport
/// (when the quote holds it) and ICMP checksums incrementally.
pub fn rewrite_icmp_error(
    ip: &mut [u8],
    e: &IcmpError,
    outer_src: u32,
    outer_dst: u32,
    inner_src: (u32, u16),
    inner_dst: (u32, u16),
) {
    // Outer header: the ICMP checksum does not cover it.
    let mut ipc = rd16(ip, field::CSUM);
    ipc = update32(ipc, e.src, outer_src);
    ipc = update32(ipc, e.dst, outer_dst);
    wr16(ip, field::CSUM, ipc);
    wr32(ip, field::SRC, outer_src);
    wr32(ip, field::DST, outer_dst);

    // Every quoted field below sits at an even offset from the ICMP header, so each changed
    // 16-bit word folds into the ICMP checksum as is.
    let q = e.quoted;
    let mut icc = rd16(ip, e.icmp + field::ICMP_CSUM);
    let old_iipc = rd16(ip, e.inner + field::CSUM);
    let mut iipc = update32(old_iipc, q.src, inner_src.0);
    iipc = update32(iipc, q.dst, inner_dst.0);
    wr16(ip, e.inner + field::CSUM, iipc);
    wr32(ip, e.inner + field::SRC, inner_src.0);
    wr32(ip, e.inner + field::DST, inner_dst.0);
    wr16(ip, e.inner_l4 + field::SPORT, inner_src.1);
    wr16(ip, e.inner_l4 + field::DPORT, inner_dst.1);
    icc = update16(icc, old_iipc, iipc);
    icc = update32(icc, q.src, inner_src.0);
    icc = update32(icc, q.dst, inner_dst.0);
    icc = update16(icc, q.sport, inner_src.1);
    icc = update16(icc, q.dport, inner_dst.1);
    if let Some(coff) = l4_csum_off(q.proto, e.inner_l4, e.end) {
        let old = rd16(ip, coff);
        if !(q.proto == PROTO_UDP && old == 0) {
            let mut c = update32(old, q.src, inner_src.0);
            c = update32(c, q.dst, inner_dst.0);
            c = update16(c, q.sport, inner_src.1);
            c = update16(c, q.dport, inner_dst.1);
            if q.proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            wr16(ip, coff, c);
            icc = update16(icc, old, c);
        }
    }
    wr16(ip, e.icmp + field::ICMP_CSUM, icc);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::checksum::checksum;
    use proptest::prelude::*;
    use smoltcp::wire::{Icmpv4Packet, IpAddress, Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket};

    /// Build an IPv4 TCP or UDP packet with correct checksums (payload `payload`).
    pub(crate) fn build(t: Tuple, flags: u8, payload: &[u8]) -> Vec<u8> {
        let l4len = if t.proto == PROTO_TCP {
            TCP_MIN_HDR
        } else {
            UDP_HDR
        };
        let total = IPV4_MIN_HDR + l4len + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        wr16(&mut p, field::TOTAL_LEN, total as u16);
        p[8] = 64;
        p[field::PROTO] = t.proto;
        wr32(&mut p, field::SRC, t.src);
        wr32(&mut p, field::DST, t.dst);
        let c = checksum(&p[..IPV4_MIN_HDR]);
        wr16(&mut p, field::CSUM, c);
        let l4 = IPV4_MIN_HDR;
        wr16(&mut p, l4, t.sport);
        wr16(&mut p, l4 + 2, t.dport);
        if t.proto == PROTO_TCP {
            p[l4 + 12] = 0x50;
            p[l4 + field::TCP_FLAGS] = flags;
            wr16(&mut p, l4 + 14, 0xffff);
        } else {
            wr16(&mut p, l4 + 4, (l4len + payload.len()) as u16);
        }
        p[l4 + l4len..].copy_from_slice(payload);
        let csum = l4_full_checksum(&p);
        let coff = l4_csum_off(t.proto, l4, total).unwrap();
        wr16(&mut p, coff, csum);
        p
    }

    fn l4_full_checksum(p: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[field::SRC..field::DST + 4]);
        pseudo.push(0);
        pseudo.push(p[field::PROTO]);
        pseudo.extend_from_slice(&((p.len() - IPV4_MIN_HDR) as u16).to_be_bytes());
        pseudo.extend_from_slice(&p[IPV4_MIN_HDR..]);
        let c = checksum(&pseudo);
        if c == 0 && p[field::PROTO] == PROTO_UDP {
            0xffff
        } else {
            c
        }
    }

    /// Build an ICMP error of `ty` from `src` to `dst` quoting the first bytes of `quoted`.
    pub(crate) fn build_icmp(src: u32, dst: u32, ty: u8, quoted: &[u8]) -> Vec<u8> {
        let total = IPV4_MIN_HDR + ICMP_HDR + quoted.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        wr16(&mut p, field::TOTAL_LEN, total as u16);
        p[8] = 64;
        p[field::PROTO] = PROTO_ICMP;
        wr32(&mut p, field::SRC, src);
        wr32(&mut p, field::DST, dst);
        let c = checksum(&p[..IPV4_MIN_HDR]);
        wr16(&mut p, field::CSUM, c);
        p[IPV4_MIN_HDR] = ty;
        p[IPV4_MIN_HDR + ICMP_HDR..].copy_from_slice(quoted);
        let c = checksum(&p[IPV4_MIN_HDR..]);
        wr16(&mut p, IPV4_MIN_HDR + field::ICMP_CSUM, c);
        p
    }

    /// Verify every checksum of a TCP/UDP/ICMP-error packet with smoltcp.
    pub(crate) fn verify(p: &[u8]) -> bool {
        let Ok(ip) = Ipv4Packet::new_checked(p) else {
            return false;
        };
        if !ip.verify_checksum() {
            return false;
        }
        let src = IpAddress::Ipv4(ip.src_addr());
        let dst = IpAddress::Ipv4(ip.dst_addr());
        let payload = ip.payload();
        match ip.next_header() {
            smoltcp::wire::IpProtocol::Tcp => {
                TcpPacket::new_checked(payload).is_ok_and(|t| t.verify_checksum(&src, &dst))
            }
            smoltcp::wire::IpProtocol::Udp => {
                UdpPacket::new_checked(payload).is_ok_and(|u| u.verify_checksum(&src, &dst))
            }
            smoltcp::wire::IpProtocol::Icmp => {
                let Ok(icmp) = Icmpv4Packet::new_checked(payload) else {
                    return false;
                };
                if !icmp.verify_checksum() {
                    return false;
                }
                // The quoted header's own checksum must hold too.
                let q = &payload[ICMP_HDR..];
                let ihl = usize::from(q[0] & 0x0f) * 4;
                q.len() < ihl || crate::checksum::fold(crate::checksum::sum(&q[..ihl])) == 0xffff
            }
            _ => true,
        }
    }

    fn addr(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Address::from(a))
    }

    #[test]
    fn parse_tcp_syn() {
        let t = Tuple {
            proto: PROTO_TCP,
            src: addr([10, 0, 9, 11]),
            dst: addr([10, 0, 9, 100]),
            sport: 40000,
            dport: 80,
        };
        let p = build(t, TCP_SYN, b"");
        assert!(verify(&p));
        assert_eq!(
            parse(&p),
            Ok(Flow::Transport {
                tuple: t,
                l4: 20,
                tcp_flags: TCP_SYN
            })
        );
    }

    #[test]
    fn fixed_bytes_dnat_golden() {
        // A UDP datagram 10.0.9.11:5353 -> 10.0.9.100:53, payload "hi", checksums precomputed.
        let t = Tuple {
            proto: PROTO_UDP,
            src: addr([10, 0, 9, 11]),
            dst: addr([10, 0, 9, 100]),
            sport: 5353,
            dport: 53,
        };
        let mut p = build(t, 0, b"hi");
        let expect_before: [u8; 30] = [
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0x54, 0x61, 10, 0, 9, 11, 10, 0, 9, 100, 0x14,
            0xe9, 0, 53, 0, 10, 0x5b, 0xe4, b'h', b'i',
        ];
        assert_eq!(p, expect_before);
        rewrite_transport(
            &mut p,
            20,
            PROTO_UDP,
            (t.src, t.sport),
            (addr([10, 0, 9, 12]), 5300),
        );
        assert!(verify(&p));
        assert_eq!(&p[16..20], &[10, 0, 9, 12]);
        assert_eq!(&p[22..24], &5300u16.to_be_bytes());
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let t = Tuple {
            proto: PROTO_UDP,
            src: 1,
            dst: 2,
            sport: 3,
            dport: 4,
        };
        let mut p = build(t, 0, b"abc");
        wr16(&mut p, 26, 0);
        rewrite_transport(&mut p, 20, PROTO_UDP, (5, 6), (7, 8));
        assert_eq!(rd16(&p, 26), 0);
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
    }

    #[test]
    fn icmp_echo_and_other_protocols_are_other() {
        let mut p = build_icmp(1, 2, 8, &[0; 8]);
        assert_eq!(parse(&p), Ok(Flow::Other));
        p[field::PROTO] = 47;
        assert_eq!(parse(&p), Ok(Flow::Other));
    }

    #[test]
    fn fragments_are_reported() {
        let t = Tuple {
            proto: PROTO_UDP,
            src: 1,
            dst: 2,
            sport: 3,
            dport: 4,
        };
        let mut p = build(t, 0, b"abc");
        wr16(&mut p, field::FRAG, 0x2000); // MF
        assert_eq!(parse(&p), Ok(Flow::Fragment { dst: 2 }));
    }

    #[test]
    fn bad_headers_are_errors() {
        let t = Tuple {
            proto: PROTO_TCP,
            src: 1,
            dst: 2,
            sport: 3,
            dport: 4,
        };
        let mut p = build(t, TCP_ACK, b"");
        p[0] = 0x65;
        assert_eq!(parse(&p), Err(PacketError::NotIpv4));
        p[0] = 0x44;
        assert_eq!(parse(&p), Err(PacketError::BadHeaderLength));
        p[0] = 0x45;
        wr16(&mut p, field::TOTAL_LEN, 10);
        assert_eq!(parse(&p), Err(PacketError::BadTotalLength));
    }

    fn tuple_strategy() -> impl Strategy<Value = Tuple> {
        (
            prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP)],
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(proto, src, dst, sport, dport)| Tuple {
                proto,
                src,
                dst,
                sport,
                dport,
            })
    }

    proptest! {
        #[test]
        fn rewrite_then_reverse_is_identity(t in tuple_strategy(), flags in any::<u8>(),
                                            payload in proptest::collection::vec(any::<u8>(), 0..64),
                                            nsrc in any::<(u32, u16)>(), ndst in any::<(u32, u16)>()) {
            let orig = build(t, flags, &payload);
            let mut p = orig.clone();
            rewrite_transport(&mut p, 20, t.proto, nsrc, ndst);
            prop_assert!(verify(&p));
            let Ok(Flow::Transport { tuple, .. }) = parse(&p) else { panic!("reparse") };
            prop_assert_eq!((tuple.src, tuple.sport, tuple.dst, tuple.dport), (nsrc.0, nsrc.1, ndst.0, ndst.1));
            rewrite_transport(&mut p, 20, t.proto, (t.src, t.sport), (t.dst, t.dport));
            prop_assert!(verify(&p));
            // Identity up to the ones-complement double zero of a checksum field.
            for (i, (a, b)) in p.iter().zip(&orig).enumerate() {
                if a != b {
                    let coff = if t.proto == PROTO_TCP { 36 } else { 26 };
                    prop_assert!(i == 10 || i == 11 || i == coff || i == coff + 1, "byte {} differs", i);
                }
            }
        }

        #[test]
        fn icmp_rewrite_keeps_checksums(t in tuple_strategy(), qlen in 24usize..48,
                                        o in any::<(u32, u32)>(), isrc in any::<(u32, u16)>(), idst in any::<(u32, u16)>()) {
            let inner = build(t, TCP_SYN, &[7; 20]);
            let qlen = qlen.min(inner.len());
            let mut p = build_icmp(9, t.src, ICMP_DEST_UNREACH, &inner[..qlen]);
            prop_assert!(verify(&p));
            let Ok(Flow::Icmp(e)) = parse(&p) else { panic!("icmp parse") };
            prop_assert_eq!(e.quoted, t);
            rewrite_icmp_error(&mut p, &e, o.0, o.1, isrc, idst);
            prop_assert!(verify(&p));
            let Ok(Flow::Icmp(e2)) = parse(&p) else { panic!("icmp reparse") };
            prop_assert_eq!((e2.src, e2.dst), o);
            prop_assert_eq!((e2.quoted.src, e2.quoted.sport, e2.quoted.dst, e2.quoted.dport), (isrc.0, isrc.1, idst.0, idst.1));
            // If the quote holds the whole transport header, its checksum still verifies.
            if qlen == inner.len() {
                let q = p[28..].to_vec();
                prop_assert!(verify(&q));
            }
        }

        #[test]
        fn every_truncation_is_clean(t in tuple_strategy(), cut in 0usize..60) {
            let p = build(t, TCP_ACK, &[1; 12]);
            let cut = cut.min(p.len());
            // Never panics; a cut inside the headers is an error.
            let r = parse(&p[..cut]);
            if cut < p.len() {
                prop_assert!(r.is_err());
            }
            let icmp = build_icmp(1, 2, ICMP_TIME_EXCEEDED, &p[..28]);
            let r = parse(&icmp[..cut.min(icmp.len())]);
            if cut < icmp.len() {
                prop_assert!(r.is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse(&bytes);
        }
    }
}
