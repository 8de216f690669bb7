//! What the load balancer reads of a packet, and the NAT rewrite itself, on byte slices.
//!
//! Sits at the heart of the `lb-nat` stage: [`parse`] reads the few fields the load balancer
//! needs from the IP header on (it never panics, whatever the bytes), and the `rewrite_*`
//! functions change addresses and ports in place, updating every checksum incrementally
//! (RFC 1624, [`vswitch::wire::checksum`]) so the payload is never re-read. The headers are
//! read and written through the wire layer ([`vswitch::wire::ipv4`], [`tcp`], [`udp`],
//! [`icmp`]); tests verify the results with smoltcp independently.
//!
//! ```text
//! IPv4 header ─┬─ TCP / UDP: source and destination port first   -> Flow::Transport
//!              ├─ TCP / UDP fragment: no ports                    -> Flow::Fragment
//!              └─ ICMP error ─ quoted IPv4 header ─ quoted ports  -> Flow::Icmp
//! ```

use std::net::Ipv4Addr;

use vswitch::wire::checksum::{update16, update32};
use vswitch::wire::{icmp, ipv4, tcp, udp};

/// Bytes of the quoted transport header needed to read its ports.
pub const QUOTED_PORTS: usize = udp::field::PORTS.end;

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

/// Validate the IPv4 header at the start of `ip`; returns (header length, end of packet).
/// `whole`: the total length must fit `ip` and ends the packet; a quoted header's describes
/// the original, not what was quoted, so it is not looked at.
#[inline]
fn ipv4_bounds(ip: &[u8], whole: bool) -> Result<(usize, usize), PacketError> {
    if ip.len() < ipv4::HEADER_LEN {
        return Err(PacketError::Truncated);
    }
    let h = ipv4::Packet::new_unchecked(ip);
    if h.version() != ipv4::VERSION {
        return Err(PacketError::NotIpv4);
    }
    let ihl = h.header_len();
    if ihl < ipv4::HEADER_LEN {
        return Err(PacketError::BadHeaderLength);
    }
    if ip.len() < ihl {
        return Err(PacketError::Truncated);
    }
    if !whole {
        return Ok((ihl, ip.len()));
    }
    let total = usize::from(h.total_len());
    if total < ihl {
        return Err(PacketError::BadTotalLength);
    }
    if total > ip.len() {
        return Err(PacketError::Truncated);
    }
    Ok((ihl, total))
}

/// The two ports at the start of a TCP or UDP header (both put them first) of at least 4 bytes.
#[inline]
fn ports(l4: &[u8]) -> (u16, u16) {
    let p = udp::Packet::new_unchecked(l4);
    (p.src_port(), p.dst_port())
}

/// Parse an IPv4 packet (`ip` starts at the IP header; trailing Ethernet padding is ignored).
pub fn parse(ip: &[u8]) -> Result<Flow, PacketError> {
    let (ihl, end) = ipv4_bounds(ip, true)?;
    let ip = &ip[..end];
    let h = ipv4::Packet::new_unchecked(ip);
    let proto = h.protocol();
    match proto {
        ipv4::PROTO_TCP | ipv4::PROTO_UDP => {
            if h.is_fragment() {
                return Ok(Flow::Fragment {
                    dst: u32::from(h.dst_addr()),
                });
            }
            let need = if proto == ipv4::PROTO_TCP {
                tcp::HEADER_LEN
            } else {
                udp::HEADER_LEN
            };
            if end < ihl + need {
                return Err(PacketError::Truncated);
            }
            let l4 = &ip[ihl..];
            let (sport, dport) = ports(l4);
            let tuple = Tuple {
                proto,
                src: u32::from(h.src_addr()),
                dst: u32::from(h.dst_addr()),
                sport,
                dport,
            };
            let tcp_flags = if proto == ipv4::PROTO_TCP {
                tcp::Packet::new_unchecked(l4).flags()
            } else {
                0
            };
            Ok(Flow::Transport {
                tuple,
                l4: ihl,
                tcp_flags,
            })
        }
        ipv4::PROTO_ICMP => {
            if h.is_fragment() {
                return Ok(Flow::Other);
            }
            if end < ihl + icmp::HEADER_LEN {
                return Err(PacketError::Truncated);
            }
            if !icmp::is_error(icmp::Packet::new_unchecked(&ip[ihl..]).msg_type()) {
                return Ok(Flow::Other);
            }
            let inner = ihl + icmp::HEADER_LEN;
            let (iihl, _) = ipv4_bounds(&ip[inner..], false)?;
            let q = ipv4::Packet::new_unchecked(&ip[inner..]);
            let iproto = q.protocol();
            // Only a first fragment quotes ports; RFC 792 guarantees 8 bytes of them.
            if !matches!(iproto, ipv4::PROTO_TCP | ipv4::PROTO_UDP) || q.frag_offset() != 0 {
                return Ok(Flow::Other);
            }
            let inner_l4 = inner + iihl;
            if end < inner_l4 + QUOTED_PORTS {
                return Err(PacketError::Truncated);
            }
            let (sport, dport) = ports(&ip[inner_l4..]);
            Ok(Flow::Icmp(IcmpError {
                src: u32::from(h.src_addr()),
                dst: u32::from(h.dst_addr()),
                icmp: ihl,
                inner,
                inner_l4,
                end,
                quoted: Tuple {
                    proto: iproto,
                    src: u32::from(q.src_addr()),
                    dst: u32::from(q.dst_addr()),
                    sport,
                    dport,
                },
            }))
        }
        _ => Ok(Flow::Other),
    }
}

/// Offset of the transport checksum field within its header.
#[inline]
fn l4_csum_field(proto: u8) -> usize {
    if proto == ipv4::PROTO_TCP {
        tcp::field::CHECKSUM.start
    } else {
        udp::field::CHECKSUM.start
    }
}

/// The checksum of a TCP or UDP header at the start of `l4` (which holds the field).
#[inline]
fn l4_checksum(proto: u8, l4: &[u8]) -> u16 {
    if proto == ipv4::PROTO_TCP {
        tcp::Packet::new_unchecked(l4).checksum()
    } else {
        udp::Packet::new_unchecked(l4).checksum()
    }
}

/// Sets the checksum of a TCP or UDP header at the start of `l4` (which holds the field).
#[inline]
fn set_l4_checksum(proto: u8, l4: &mut [u8], c: u16) {
    if proto == ipv4::PROTO_TCP {
        tcp::Packet::new_unchecked(l4).set_checksum(c);
    } else {
        udp::Packet::new_unchecked(l4).set_checksum(c);
    }
}

/// A TCP/UDP checksum `c` after the tuple `old` moved to (`src`, `dst`); a UDP checksum of
/// zero (none) stays zero, a computed zero goes out as all ones (RFC 768).
#[inline]
fn l4_update(c: u16, old: Tuple, src: (u32, u16), dst: (u32, u16)) -> u16 {
    if old.proto == ipv4::PROTO_UDP && c == udp::NO_CHECKSUM {
        return c;
    }
    let mut c = update32(c, old.src, src.0);
    c = update32(c, old.dst, dst.0);
    c = update16(c, old.sport, src.1);
    c = update16(c, old.dport, dst.1);
    if old.proto == ipv4::PROTO_UDP {
        udp::wire_checksum(c)
    } else {
        c
    }
}

/// Rewrite a TCP/UDP packet's source and destination (address, port), fixing the IPv4 and
/// transport checksums incrementally. `l4` and `proto` come from [`parse`] of the same bytes.
/// A UDP checksum of zero (none) stays zero.
#[inline]
pub fn rewrite_transport(ip: &mut [u8], l4: usize, proto: u8, src: (u32, u16), dst: (u32, u16)) {
    let mut h = ipv4::Packet::new_unchecked(&mut *ip);
    let old_src = u32::from(h.src_addr());
    let old_dst = u32::from(h.dst_addr());
    let mut ipc = h.checksum();
    ipc = update32(ipc, old_src, src.0);
    ipc = update32(ipc, old_dst, dst.0);
    h.set_checksum(ipc);
    h.set_src_addr(Ipv4Addr::from(src.0));
    h.set_dst_addr(Ipv4Addr::from(dst.0));
    let (old_sport, old_dport) = ports(&ip[l4..]);
    let l4 = &mut ip[l4..];
    let mut t = udp::Packet::new_unchecked(&mut *l4);
    t.set_src_port(src.1);
    t.set_dst_port(dst.1);
    let old = Tuple {
        proto,
        src: old_src,
        dst: old_dst,
        sport: old_sport,
        dport: old_dport,
    };
    let c = l4_update(l4_checksum(proto, l4), old, src, dst);
    set_l4_checksum(proto, l4, c);
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
    let mut h = ipv4::Packet::new_unchecked(&mut *ip);
    let mut ipc = h.checksum();
    ipc = update32(ipc, e.src, outer_src);
    ipc = update32(ipc, e.dst, outer_dst);
    h.set_checksum(ipc);
    h.set_src_addr(Ipv4Addr::from(outer_src));
    h.set_dst_addr(Ipv4Addr::from(outer_dst));

    // Every quoted field below sits at an even offset from the ICMP header, so each changed
    // 16-bit word folds into the ICMP checksum as is.
    let q = e.quoted;
    let mut icc = icmp::Packet::new_unchecked(&ip[e.icmp..]).checksum();
    let mut quoted = ipv4::Packet::new_unchecked(&mut ip[e.inner..]);
    let old_iipc = quoted.checksum();
    let mut iipc = update32(old_iipc, q.src, inner_src.0);
    iipc = update32(iipc, q.dst, inner_dst.0);
    quoted.set_checksum(iipc);
    quoted.set_src_addr(Ipv4Addr::from(inner_src.0));
    quoted.set_dst_addr(Ipv4Addr::from(inner_dst.0));
    let mut qt = udp::Packet::new_unchecked(&mut ip[e.inner_l4..]);
    qt.set_src_port(inner_src.1);
    qt.set_dst_port(inner_dst.1);
    icc = update16(icc, old_iipc, iipc);
    icc = update32(icc, q.src, inner_src.0);
    icc = update32(icc, q.dst, inner_dst.0);
    icc = update16(icc, q.sport, inner_src.1);
    icc = update16(icc, q.dport, inner_dst.1);
    // The quote may end before the transport checksum: then only the ports change.
    if e.inner_l4 + l4_csum_field(q.proto) + 2 <= e.end {
        let ql4 = &mut ip[e.inner_l4..e.end];
        let old = l4_checksum(q.proto, ql4);
        if !(q.proto == ipv4::PROTO_UDP && old == udp::NO_CHECKSUM) {
            let c = l4_update(old, q, inner_src, inner_dst);
            set_l4_checksum(q.proto, ql4, c);
            icc = update16(icc, old, c);
        }
    }
    icmp::Packet::new_unchecked(&mut ip[e.icmp..]).set_checksum(icc);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::wire::{Icmpv4Packet, IpAddress, Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket};
    use vswitch::wire::checksum;

    /// Where the tests poke at IPv4 fields.
    mod field {
        use vswitch::wire::ipv4::field;
        pub const TOTAL_LEN: usize = field::LENGTH.start;
        pub const FRAG: usize = field::FLG_OFF.start;
        pub const PROTO: usize = field::PROTOCOL;
    }

    fn rd16(b: &[u8], off: usize) -> u16 {
        u16::from_be_bytes([b[off], b[off + 1]])
    }

    fn wr16(b: &mut [u8], off: usize, v: u16) {
        b[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Build an IPv4 TCP or UDP packet with correct checksums (payload `payload`).
    pub(crate) fn build(t: Tuple, flags: u8, payload: &[u8]) -> Vec<u8> {
        let l4len = if t.proto == ipv4::PROTO_TCP {
            tcp::HEADER_LEN
        } else {
            udp::HEADER_LEN
        };
        let total = ipv4::HEADER_LEN + l4len + payload.len();
        let mut p = vec![0u8; total];
        ipv4::Repr {
            src_addr: Ipv4Addr::from(t.src),
            dst_addr: Ipv4Addr::from(t.dst),
            protocol: t.proto,
            payload_len: l4len + payload.len(),
            ttl: ipv4::DEFAULT_TTL,
            tos: 0,
            ident: 0,
            dont_frag: false,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut p[..]));
        let l4 = ipv4::HEADER_LEN;
        p[l4 + l4len..].copy_from_slice(payload);
        let (src, dst) = (Ipv4Addr::from(t.src), Ipv4Addr::from(t.dst));
        if t.proto == ipv4::PROTO_TCP {
            let mut seg = tcp::Packet::new_unchecked(&mut p[l4..]);
            tcp::Repr {
                src_port: t.sport,
                dst_port: t.dport,
                seq_number: 0,
                ack_number: 0,
                flags,
                window: 0xffff,
            }
            .emit(&mut seg);
            let c = !checksum::add(
                checksum::pseudo_sum_addrs(src, dst, ipv4::PROTO_TCP, l4len + payload.len()),
                checksum::sum(seg.as_ref()),
            );
            seg.set_checksum(c);
        } else {
            udp::Repr {
                src_port: t.sport,
                dst_port: t.dport,
            }
            .emit(
                &mut udp::Packet::new_unchecked(&mut p[l4..]),
                payload.len(),
                Some((src, dst)),
            );
        }
        p
    }

    /// Build an ICMP error of `ty` from `src` to `dst` quoting the first bytes of `quoted`.
    pub(crate) fn build_icmp(src: u32, dst: u32, ty: u8, quoted: &[u8]) -> Vec<u8> {
        let total = ipv4::HEADER_LEN + icmp::HEADER_LEN + quoted.len();
        let mut p = vec![0u8; total];
        ipv4::Repr {
            src_addr: Ipv4Addr::from(src),
            dst_addr: Ipv4Addr::from(dst),
            protocol: ipv4::PROTO_ICMP,
            payload_len: icmp::HEADER_LEN + quoted.len(),
            ttl: ipv4::DEFAULT_TTL,
            tos: 0,
            ident: 0,
            dont_frag: false,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut p[..]));
        p[ipv4::HEADER_LEN + icmp::HEADER_LEN..].copy_from_slice(quoted);
        icmp::Repr {
            msg_type: ty,
            code: 0,
        }
        .emit(&mut icmp::Packet::new_unchecked(&mut p[ipv4::HEADER_LEN..]));
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
                let q = &payload[icmp::HEADER_LEN..];
                let ihl = usize::from(q[0] & 0x0f) * 4;
                q.len() < ihl || checksum::sum(&q[..ihl]) == 0xffff
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
            proto: ipv4::PROTO_TCP,
            src: addr([10, 0, 9, 11]),
            dst: addr([10, 0, 9, 100]),
            sport: 40000,
            dport: 80,
        };
        let p = build(t, tcp::FLAG_SYN, b"");
        assert!(verify(&p));
        assert_eq!(
            parse(&p),
            Ok(Flow::Transport {
                tuple: t,
                l4: 20,
                tcp_flags: tcp::FLAG_SYN
            })
        );
    }

    #[test]
    fn fixed_bytes_dnat_golden() {
        // A UDP datagram 10.0.9.11:5353 -> 10.0.9.100:53, payload "hi", checksums precomputed.
        let t = Tuple {
            proto: ipv4::PROTO_UDP,
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
            ipv4::PROTO_UDP,
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
            proto: ipv4::PROTO_UDP,
            src: 1,
            dst: 2,
            sport: 3,
            dport: 4,
        };
        let mut p = build(t, 0, b"abc");
        wr16(&mut p, 26, 0);
        rewrite_transport(&mut p, 20, ipv4::PROTO_UDP, (5, 6), (7, 8));
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
            proto: ipv4::PROTO_UDP,
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
            proto: ipv4::PROTO_TCP,
            src: 1,
            dst: 2,
            sport: 3,
            dport: 4,
        };
        let mut p = build(t, tcp::FLAG_ACK, b"");
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
            prop_oneof![Just(ipv4::PROTO_TCP), Just(ipv4::PROTO_UDP)],
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
                    let coff = if t.proto == ipv4::PROTO_TCP { 36 } else { 26 };
                    prop_assert!(i == 10 || i == 11 || i == coff || i == coff + 1, "byte {} differs", i);
                }
            }
        }

        #[test]
        fn icmp_rewrite_keeps_checksums(t in tuple_strategy(), qlen in 24usize..48,
                                        o in any::<(u32, u32)>(), isrc in any::<(u32, u16)>(), idst in any::<(u32, u16)>()) {
            let inner = build(t, tcp::FLAG_SYN, &[7; 20]);
            let qlen = qlen.min(inner.len());
            let mut p = build_icmp(9, t.src, icmp::TYPE_DEST_UNREACH, &inner[..qlen]);
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
            let p = build(t, tcp::FLAG_ACK, &[1; 12]);
            let cut = cut.min(p.len());
            // Never panics; a cut inside the headers is an error.
            let r = parse(&p[..cut]);
            if cut < p.len() {
                prop_assert!(r.is_err());
            }
            let icmp = build_icmp(1, 2, icmp::TYPE_TIME_EXCEEDED, &p[..28]);
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
