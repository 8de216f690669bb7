//! The encrypted underlay as a switch port: [`EspPort`], a raw IPv4 socket of protocol 50 (ESP)
//! on the node's VTEP address, for networks with `encrypted = true`.
//!
//! Where it sits: beside the plain [`UdpPort`](super::UdpPort), with the same role (the
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

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

use crate::batch::{Batch, MAX_BATCH};
use crate::packet::{Mac, Packet};
use crate::port::Port;
use crate::wire::ethernet::{self, ETHERTYPE_IPV4};
use crate::wire::ipv4;

use super::{UdpPortStats, UdpUnderlay, UnderlayError};

/// IP protocol number of ESP (RFC 4303).
pub const PROTO_ESP: u8 = 50;

/// The encrypted underlay: a raw ESP socket as a switch port.
#[derive(Debug)]
pub struct EspPort {
    ul: UdpUnderlay,
    /// Its counters (the UDP underlay's, GSO/GRO ones always 0).
    pub stats: UdpPortStats,
}

impl EspPort {
    /// A port on a raw ESP socket bound to `addr` (the VTEP address), created in the calling
    /// thread's network namespace.
    pub fn bind(addr: Ipv4Addr) -> Result<EspPort, UnderlayError> {
        Ok(EspPort {
            ul: UdpUnderlay::bind_raw(addr, PROTO_ESP, MAX_BATCH)?,
            stats: UdpPortStats::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Ipv4Addr {
        *self.ul.local_addr().ip()
    }
}

impl Port for EspPort {
    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        let spare = batch.spare_mut();
        let got = match self.ul.recv_slots(spare.iter_mut().map(|p| p.rx_area())) {
            Ok(n) => n,
            Err(e) => {
                self.stats.rx_errors += 1;
                if let UnderlayError::Recv(io) = e {
                    self.stats.last_errno = io.raw_os_error().unwrap_or(0);
                }
                return 0;
            }
        };
        let mut kept = 0;
        for i in 0..got {
            let (len, cut, src) = self.ul.received(i);
            if cut {
                self.stats.rx_truncated += 1;
                continue;
            }
            if len == 0 {
                self.stats.rx_empty += 1;
                continue;
            }
            let p = &mut spare[i];
            // rx_area put the packet at the standard headroom and reset the metadata.
            p.set_len(len);
            p.meta.peer = Some(src);
            if i != kept {
                spare.swap(i, kept);
            }
            kept += 1;
        }
        batch.grow(kept);
        kept
    }

    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        let no_peer = &mut self.stats.tx_no_peer;
        let report = self
            .ul
            .send_slices(batch.pkts().iter().filter_map(|p| match p.meta.peer {
                Some(dst) => Some((dst, p.data())),
                None => {
                    *no_peer += 1;
                    None
                }
            }));
        self.stats.tx_errors += report.failed as u64;
        self.stats.tx_would_block += report.unsent as u64;
        if let Some(errno) = report.last_errno {
            self.stats.last_errno = errno;
        }
        report.sent
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.ul.as_raw_fd())
    }

    /// The packet as it was on the wire: received, the kernel handed the outer IPv4 header
    /// with it (an Ethernet header with zero MACs is put in front); sent, the outer IPv4 header
    /// the kernel adds is rebuilt around the ESP packet, toward `meta.peer`.
    fn capture_frame(&self, pkt: &Packet, tx: bool, out: &mut Vec<u8>) {
        let data = pkt.data();
        let start = out.len();
        let ip_len = ipv4::HEADER_LEN + data.len();
        let rebuild = tx && pkt.meta.peer.is_some() && ip_len <= usize::from(u16::MAX);
        let len = ethernet::HEADER_LEN + if rebuild { ip_len } else { data.len() };
        out.resize(start + len, 0);
        let buf = &mut out[start..];
        ethernet::Repr {
            src_addr: Mac::ZERO,
            dst_addr: Mac::ZERO,
            ethertype: ETHERTYPE_IPV4,
        }
        .emit(&mut ethernet::Packet::new_unchecked(&mut buf[..]));
        let ip = &mut buf[ethernet::HEADER_LEN..];
        if !rebuild {
            ip.copy_from_slice(data);
            return;
        }
        let peer = pkt
            .meta
            .peer
            .map_or(Ipv4Addr::UNSPECIFIED, |p: SocketAddrV4| *p.ip());
        ipv4::Repr {
            src_addr: self.local_addr(),
            dst_addr: peer,
            protocol: PROTO_ESP,
            payload_len: data.len(),
            ttl: ipv4::DEFAULT_TTL,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut ip[..]));
        ip[ipv4::HEADER_LEN..].copy_from_slice(data);
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats;
        vec![
            ("rx_truncated", s.rx_truncated),
            ("rx_empty", s.rx_empty),
            ("rx_errors", s.rx_errors),
            ("tx_errors", s.tx_errors),
            ("tx_would_block", s.tx_would_block),
            ("tx_no_peer", s.tx_no_peer),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn esp_goes_out_and_comes_back_with_the_outer_header_and_the_sender() {
        // Loopback in the test's own namespace: raw sockets of protocol 50 on 127.0.0.1; each
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
