//! Frames for `capture` of ports whose packets are not Ethernet on the wire (the UDP underlay,
//! the ESP ports, the decrypted capture): the headers the kernel adds, rebuilt around the bytes
//! the port handled. Control plane only, while a capture runs: never on the packet path's
//! common case (the switch's capture copying is `#[cold]`).

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::packet::Mac;
use crate::wire::ethernet::{self, ETHERTYPE_IPV4};
use crate::wire::ipv4::{self, PROTO_UDP};
use crate::wire::udp;

/// Appends to `out`, for a capture, an Ethernet frame (zero MACs: the socket never sees them)
/// holding an IPv4 packet of `protocol` from `src` to `dst` with room for `payload_len` bytes,
/// the header as the kernel's sockets send it (DF, ID 0, TOS 0), and returns that room; `None`
/// (nothing appended) when the packet would exceed 64 KiB.
pub fn capture_ipv4(
    out: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
) -> Option<&mut [u8]> {
    let ip_len = ipv4::HEADER_LEN + payload_len;
    if ip_len > usize::from(u16::MAX) {
        return None;
    }
    let start = out.len();
    out.resize(start + ethernet::HEADER_LEN + ip_len, 0);
    let buf = &mut out[start..];
    ethernet::Repr {
        src_addr: Mac::ZERO,
        dst_addr: Mac::ZERO,
        ethertype: ETHERTYPE_IPV4,
    }
    .emit(&mut ethernet::Packet::new_unchecked(&mut buf[..]));
    let ip = &mut buf[ethernet::HEADER_LEN..];
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        payload_len,
        ttl: ipv4::DEFAULT_TTL,
        tos: 0,
        ident: 0,
        dont_frag: true,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut ip[..]));
    Some(&mut ip[ipv4::HEADER_LEN..])
}

/// [`capture_ipv4`] of a UDP datagram `src` -> `dst` carrying `payload` (checksum filled);
/// false (nothing appended) when it cannot have been one datagram.
pub fn capture_udp(
    out: &mut Vec<u8>,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> bool {
    let Some(dgram) = capture_ipv4(
        out,
        *src.ip(),
        *dst.ip(),
        PROTO_UDP,
        udp::HEADER_LEN + payload.len(),
    ) else {
        return false;
    };
    dgram[udp::HEADER_LEN..].copy_from_slice(payload);
    udp::Repr {
        src_port: src.port(),
        dst_port: dst.port(),
    }
    .emit(
        &mut udp::Packet::new_unchecked(dgram),
        payload.len(),
        Some((*src.ip(), *dst.ip())),
    );
    true
}

/// [`capture_ipv4`] of IP protocol `protocol` carrying `payload`; false (nothing appended) when
/// the packet would exceed 64 KiB.
pub fn capture_ip_payload(
    out: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload: &[u8],
) -> bool {
    match capture_ipv4(out, src, dst, protocol, payload.len()) {
        Some(room) => {
            room.copy_from_slice(payload);
            true
        }
        None => false,
    }
}

/// Appends to `out` an Ethernet frame (zero MACs) around the whole IPv4 packet `ip`, as a raw
/// socket receives it (header included).
pub fn capture_ipv4_packet(out: &mut Vec<u8>, ip: &[u8]) {
    let start = out.len();
    out.resize(start + ethernet::HEADER_LEN, 0);
    ethernet::Repr {
        src_addr: Mac::ZERO,
        dst_addr: Mac::ZERO,
        ethertype: ETHERTYPE_IPV4,
    }
    .emit(&mut ethernet::Packet::new_unchecked(&mut out[start..]));
    out.extend_from_slice(ip);
}
