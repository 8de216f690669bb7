//! The encrypted underlay as a switch port: [`EspPort`], a raw IPv4 socket of protocol 50 (ESP)
//! on the node's VTEP address, for networks with `encrypted = true`.
//!
//! Where it sits: beside the plain [`UdpPort`], with the same role (the
//! underlay). What it receives goes to `esp-decrypt` and then, as a VXLAN datagram from
//! `meta.peer`, to `vxlan-decap`; what the output step queues on it for an encrypted network
//! goes through `vxlan-encap` and `esp-encrypt` before it is sent.
//!
//! ```text
//! IP proto 50 ─recvmmsg─► EspPort.rx_burst (outer IPv4 + ESP, meta.peer = source) ─► esp-decrypt ─► vxlan-decap ─► ...
//! ... ─► output ─► vxlan-encap ─► esp-encrypt ─► EspPort.tx_burst (ESP, to meta.peer) ─sendmmsg─► IP proto 50
//! ```
//!
//! No kernel xfrm state or ESP support is needed (this machine's kernel has none:
//! `CONFIG_INET_ESP` is off): the kernel only adds and strips the outer IPv4 header, with DF
//! set. One `recvmmsg`/`sendmmsg` per batch, straight into and out of the packet buffers, as
//! the UDP underlay without GSO/GRO. Needs `CAP_NET_RAW`.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use crate::batch::{Batch, MAX_BATCH};
use crate::packet::Packet;
use crate::port::Port;

use super::{UdpPort, UdpPortStats, UdpUnderlay, UnderlayError};
use crate::port::capture::{capture_ipv4, capture_ipv4_packet};

/// IP protocol number of ESP (RFC 4303).
pub const PROTO_ESP: u8 = 50;

/// The encrypted underlay: a raw ESP socket as a switch port. Receive and transmit are the UDP
/// underlay port's own (a raw socket takes the same `recvmmsg`/`sendmmsg`, without GSO or GRO);
/// only the capture differs, since the kernel hands the outer IPv4 header with each packet.
#[derive(Debug)]
pub struct EspPort {
    port: UdpPort,
}

impl EspPort {
    /// A port on a raw ESP socket bound to `addr` (the VTEP address), created in the calling
    /// thread's network namespace.
    pub fn bind(addr: Ipv4Addr) -> Result<EspPort, UnderlayError> {
        Ok(EspPort {
            port: UdpPort::new(UdpUnderlay::bind_raw(addr, PROTO_ESP, MAX_BATCH)?),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Ipv4Addr {
        *self.port.local_addr().ip()
    }

    /// Its counters (the UDP underlay's; the GSO/GRO ones stay 0).
    pub fn stats(&self) -> UdpPortStats {
        self.port.stats
    }
}

impl Port for EspPort {
    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        self.port.rx_burst(batch)
    }

    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        self.port.tx_burst(batch)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.port.poll_fd()
    }

    fn rx_wants_readiness(&self) -> bool {
        self.port.rx_wants_readiness()
    }

    /// The packet as it was on the wire: received, the kernel handed the outer IPv4 header
    /// with it (an Ethernet header with zero MACs is put in front); sent, the outer IPv4 header
    /// the kernel adds is rebuilt around the ESP packet, toward `meta.peer`.
    fn capture_frame(&self, pkt: &Packet, tx: bool, out: &mut Vec<u8>) {
        let data = pkt.data();
        let room = match (tx, pkt.meta.peer) {
            (true, Some(peer)) => {
                capture_ipv4(out, self.local_addr(), *peer.ip(), PROTO_ESP, data.len())
            }
            _ => None,
        };
        match room {
            Some(room) => room.copy_from_slice(data),
            // Received: the kernel handed the outer IPv4 header with the packet.
            None => capture_ipv4_packet(out, data),
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.port.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::udp::own_netns;
    use crate::wire::{ethernet, ipv4};
    use std::net::SocketAddrV4;
    use std::time::{Duration, Instant};

    #[test]
    fn esp_goes_out_and_comes_back_with_the_outer_header_and_the_sender() {
        if !own_netns() {
            return;
        }
        // Loopback in the test's own namespace (`own_netns`): raw sockets of protocol 50 on 127.0.0.1; each
        // socket of the protocol gets a copy of every such packet, so the receiver looks for
        // its own.
        let mut a = EspPort::bind(Ipv4Addr::LOCALHOST).unwrap();
        let mut b = EspPort::bind(Ipv4Addr::LOCALHOST).unwrap();
        let body: Vec<u8> = (0..60u8).collect();
        let mut tx = Batch::new(4);
        let mut p = Packet::from_frame(&body);
        p.meta.peer = Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        assert!(tx.push_swap(&mut p));
        assert_eq!(a.tx_burst(&mut tx), 1);
        let mut rx = Batch::new(4);
        let start = Instant::now();
        while rx.is_empty() && start.elapsed() < Duration::from_secs(5) {
            b.rx_burst(&mut rx);
        }
        let got = &rx.pkts()[0];
        let ip = ipv4::Packet::new_checked(got.data()).unwrap();
        assert_eq!(ip.protocol(), PROTO_ESP);
        assert_eq!(&got.data()[ip.header_len()..], &body[..]);
        assert_eq!(got.meta.peer.map(|p| *p.ip()), Some(Ipv4Addr::LOCALHOST));
        // The capture of the sent packet is the same IPv4 packet.
        let mut out = Vec::new();
        a.capture_frame(&tx.pkts()[0], true, &mut out);
        let cap = ipv4::Packet::new_checked(&out[ethernet::HEADER_LEN..]).unwrap();
        assert_eq!(cap.protocol(), PROTO_ESP);
        assert_eq!(&out[ethernet::HEADER_LEN + ipv4::HEADER_LEN..], &body[..]);
    }
}
