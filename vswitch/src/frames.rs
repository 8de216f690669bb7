//! Frame builders for tests, benches, examples and the demo's in-memory tour: whole Ethernet
//! frames with correct checksums (built with etherparse), so every test feeds the switch what a
//! real container's stack would send. Not used on the packet path.
//! Compiled only for tests and with the `test-frames` feature, never into the dataplane library.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use crate::packet::Mac;
use crate::wire::arp::{self, OP_REQUEST};
use crate::wire::ethernet::{self, ETHERTYPE_ARP};

/// Default IPv4 TTL of the frames built here.
pub const TTL: u8 = 64;

/// An Ethernet/IPv4/UDP frame with `payload`.
pub fn udp(
    src: Mac,
    dst: Mac,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), TTL)
        .udp(sport, dport);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).expect("writing to a Vec");
    v
}

/// An Ethernet/IPv4/TCP frame with the given flags, sequence numbers and payload.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per header field a test sets"
)]
pub fn tcp(
    src: Mac,
    dst: Mac,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), TTL)
        .tcp(sport, dport, seq, 64240);
    if flags.syn {
        b = b.syn();
    }
    if flags.ack {
        b = b.ack(ack);
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    if flags.psh {
        b = b.psh();
    }
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).expect("writing to a Vec");
    v
}

/// TCP flags for [`tcp`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
    /// PSH.
    pub psh: bool,
}

impl TcpFlags {
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
        psh: false,
    };
    /// SYN+ACK.
    pub const SYN_ACK: TcpFlags = TcpFlags {
        syn: true,
        ack: true,
        fin: false,
        rst: false,
        psh: false,
    };
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
        psh: false,
    };
    /// FIN+ACK.
    pub const FIN_ACK: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: true,
        rst: false,
        psh: false,
    };
    /// RST.
    pub const RST: TcpFlags = TcpFlags {
        syn: false,
        ack: false,
        fin: false,
        rst: true,
        psh: false,
    };
}

/// An ICMP echo request frame.
pub fn icmp_echo(src: Mac, dst: Mac, sip: Ipv4Addr, dip: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), TTL)
        .icmpv4_echo_request(id, seq);
    let payload = [0x5au8; 56];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).expect("writing to a Vec");
    v
}

/// A broadcast ARP request: who has `tpa`, tell `spa` (at `sha`).
pub fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp(
        Mac::BROADCAST,
        arp::Repr {
            op: OP_REQUEST,
            sha,
            spa,
            tha: Mac::ZERO,
            tpa,
        },
    )
}

/// An Ethernet frame carrying `repr`, sent to `dst` from `repr.sha`.
pub fn arp(dst: Mac, repr: arp::Repr) -> Vec<u8> {
    let mut v = vec![0u8; ethernet::HEADER_LEN + arp::HEADER_LEN];
    let mut eth = ethernet::Packet::new_unchecked(&mut v[..]);
    ethernet::Repr {
        src_addr: repr.sha,
        dst_addr: dst,
        ethertype: ETHERTYPE_ARP,
    }
    .emit(&mut eth);
    repr.emit(eth.payload_mut());
    v
}
