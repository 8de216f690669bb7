//! The UDP underlay as a switch port (cargo feature `udp`): [`UdpPort`] wraps a
//! [`UdpUnderlay`] in the [`Port`] trait, so the node's switch polls it like any other port.
//!
//! Where it sits: it is the port of role [`PortRole::Underlay`](crate::PortRole): what it
//! receives goes to `vxlan-decap`, and `vxlan-encap`, on its transmit path, encapsulates what
//! the switch queues on it. The remote VTEP's address travels beside the frame, in
//! [`Meta::peer`](crate::Meta).
//!
//! ```text
//! UDP 4789 ─recvmmsg─► UdpPort.rx_burst (meta.peer = source) ─► vxlan-decap ─► l2 stages ─► local ports
//! local ports ─► l2-fwd ─► output ─► vxlan-encap (meta.peer = VTEP) ─► UdpPort.tx_burst ─sendmmsg─► UDP 4789
//! ```
//!
//! One syscall per batch each way.
//!
//! - **Send.** `tx_burst` is one `sendmmsg` of every frame, each to its `meta.peer`, read
//!   straight from the packet buffers. Runs of same-size datagrams to one
//!   peer go as one UDP GSO message (`UDP_SEGMENT`, at most 64 datagrams and 65507 bytes: 44
//!   full 1472-byte datagrams at MTU 1450), so a TCP super-frame cut into segments costs one
//!   `sendmmsg` and crosses the underlay in one or two buffers.
//! - **Super-frames** (the node's underlay, [`UdpPort::with_offloads`]): a TAP container's
//!   64 KB TCP super-frame reaches the port whole, after `vxlan-encap`; each segment goes out as
//!   two pieces gathered by the kernel, its headers (built here, checksum included) and its
//!   slice of the super-frame's payload where it lies. The payload is never copied in user
//!   space, only read once for the checksum (the segments go to peers that may be the kernel's
//!   VXLAN device, which checks them).
//! - **Receive, with UDP GRO** (what [`UdpPort::bind`] turns on where the kernel has it): one
//!   `recvmmsg` into 64 KB coalescing buffers; `rx_burst` splits each run into the batch's
//!   packets, one copy per datagram, for a fraction of the kernel's per-datagram cost.
//! - **Receive, without GRO** (an old kernel): one `recvmmsg` straight into the batch's packet
//!   buffers at the standard headroom, no copy.
//!
//! Either way each datagram's source address is recorded in its packet's `meta.peer`. A datagram larger than a buffer is dropped and
//! counted (`rx_truncated`); socket errors are counted, never fatal: the switch keeps running.
//!
//! The parts: [`socket`] (the non-blocking socket, `recvmmsg`/`sendmmsg`, UDP GSO runs on
//! send), [`gro`] (UDP GRO receive), and here the [`Port`] implementation and the capture hook,
//! which rebuilds the outer headers the kernel adds.

use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, RawFd};

use crate::batch::{Batch, MAX_BATCH};
use crate::packet::Packet;
use crate::port::Port;
use crate::port::capture::capture_udp;

pub mod esp;
pub mod flow;
pub mod gro;
mod open;
pub mod socket;

pub use esp::EspPort;

/// For the tests of the UDP ports: move the test's thread into a network namespace of its own
/// ([`nslab::own_netns`]), so its loopback sockets stay out of the host's; false (the test
/// skips, saying why) where that is not allowed (not root).
#[cfg(test)]
pub(crate) fn own_netns() -> bool {
    nslab::own_netns()
        .map_err(|e| eprintln!("skipped: {e}"))
        .is_ok()
}
pub use socket::{SendReport, UdpUnderlay, UnderlayError};

/// Counters of a [`UdpPort`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpPortStats {
    /// Datagrams larger than a packet buffer, dropped.
    pub rx_truncated: u64,
    /// Zero-length datagrams (no VXLAN header at all), dropped.
    pub rx_empty: u64,
    /// `recvmmsg` failures other than "nothing to read".
    pub rx_errors: u64,
    /// Datagrams the kernel refused to send (`EMSGSIZE` above the path MTU, no route, ...).
    pub tx_errors: u64,
    /// Datagrams not sent because the socket buffer was full.
    pub tx_would_block: u64,
    /// Frames queued for transmit without a peer address (`meta.peer`, set by `vxlan-encap`):
    /// a pipeline bug, not sent.
    pub tx_no_peer: u64,
    /// Messages received with UDP GRO (each one or more datagrams).
    pub rx_gro_messages: u64,
    /// Messages that carried several datagrams (UDP GSO).
    pub tx_gso_messages: u64,
    /// Datagrams sent inside those.
    pub tx_gso_datagrams: u64,
    /// TCP super-frames cut into datagrams here, from the super-frame's own bytes
    /// ([`UdpPort::with_offloads`]).
    pub tx_gso_frames: u64,
    /// Super-frames whose headers no longer describe them (a stage changed them): dropped.
    pub tx_gso_bad: u64,
    /// The errno of the last socket error, 0 if none.
    pub last_errno: i32,
}

/// The UDP underlay as a switch port.
#[derive(Debug)]
pub struct UdpPort {
    ul: UdpUnderlay,
    /// Sends to this UDP port of each peer instead of `meta.peer`'s (ESP in UDP, RFC 3948: the
    /// stages address the peer's VTEP, the port is the transport's).
    peer_port: Option<u16>,
    /// Takes frames with offload work left ([`UdpPort::with_offloads`]): the segments'
    /// headers are built here, [`SEG_HDR`] bytes for each datagram of a send.
    seg_hdrs: Option<Box<[u8]>>,
    /// Sends each VXLAN datagram from the source port its inner flow's hash picks
    /// ([`UdpPort::with_flow_sources`]).
    flows: bool,
    /// Its counters.
    pub stats: UdpPortStats,
}

/// The flow hash of a VXLAN datagram `d` (its header, then the inner frame), if `flows`.
#[inline]
fn flow_of(flows: bool, d: &[u8]) -> Option<u32> {
    use crate::wire::vxlan::HEADER_LEN;
    flows.then(|| flow::inner_flow_hash(d.get(HEADER_LEN..).unwrap_or_default()))
}

/// Room for one segment's headers: the VXLAN header, Ethernet with a VLAN tag, IPv4 and TCP
/// with the most options (8 + 18 + 60 + 60 = 146), rounded up.
const SEG_HDR: usize = 160;

impl UdpPort {
    /// A port on a UDP socket bound to `addr` (the VTEP address, port 4789), created in the
    /// calling thread's network namespace.
    pub fn bind(addr: SocketAddrV4) -> Result<UdpPort, UnderlayError> {
        let mut ul = UdpUnderlay::bind(addr, MAX_BATCH)?;
        ul.enable_gro();
        Ok(UdpPort::new(ul))
    }

    /// [`UdpPort::bind`] as one of a group of sockets on `addr` (`SO_REUSEPORT`), one per poll
    /// thread ([`UdpUnderlay::bind_shared`]).
    pub fn bind_shared(addr: SocketAddrV4) -> Result<UdpPort, UnderlayError> {
        let mut ul = UdpUnderlay::bind_shared(addr, MAX_BATCH)?;
        ul.enable_gro();
        Ok(UdpPort::new(ul))
    }

    /// A port on an already bound underlay (whose batch should cover the switch's batches).
    pub fn new(ul: UdpUnderlay) -> UdpPort {
        UdpPort {
            ul,
            peer_port: None,
            seg_hdrs: None,
            flows: false,
            stats: UdpPortStats::default(),
        }
    }

    /// Send each VXLAN datagram from one of `n` source ports by the hash of its inner flow, as
    /// the kernel's vxlan device does (`UdpUnderlay::add_flow_sources`, [`flow`]): `n` more
    /// sockets on the port's address, on ports the kernel picks. 0 keeps every datagram on
    /// the bound port (4789).
    pub fn with_flow_sources(mut self, n: usize) -> Result<UdpPort, UnderlayError> {
        if n > 0 {
            self.ul.add_flow_sources(n)?;
            self.flows = true;
        }
        Ok(self)
    }

    /// Take frames with offload work left (the [`Port::offloads`] contract), from a TAP's
    /// container: a partial checksum is finished here, after the transmit path, and a TCP
    /// super-frame is cut into segments here too, each datagram sent as its own headers (built
    /// in the port) plus its slice of the super-frame's payload where it lies, gathered by
    /// `sendmmsg`: no copy in user space, and one UDP GSO message for the run. Only for a port
    /// whose transmit path does not read the payload (`vxlan-encap` alone; ESP encrypts, so the
    /// ESP transports never take offloads).
    pub fn with_offloads(mut self) -> UdpPort {
        self.seg_hdrs = Some(vec![0u8; self.ul.batch() * SEG_HDR].into_boxed_slice());
        self
    }

    /// Send every datagram to `port` of its peer (see [`UdpPort`]'s `peer_port`).
    pub fn with_peer_port(mut self, port: u16) -> UdpPort {
        self.peer_port = Some(port);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.ul.local_addr()
    }
}

impl UdpPort {
    /// Receive with UDP GRO: datagrams come out of the coalescing buffers, each copied into a
    /// slot (one `recvmmsg` for up to [`socket::GRO_MESSAGES`] runs of them, at most
    /// one call per batch; what does not fit the batch waits for the next one).
    fn rx_coalesced(&mut self, batch: &mut Batch) -> usize {
        let spare = batch.spare_mut();
        let mut n = 0;
        let mut received = false;
        while n < spare.len() {
            let Some((d, src, cut)) = self.ul.next_datagram() else {
                if received {
                    break;
                }
                received = true;
                match self.ul.recv_coalesced() {
                    Ok(0) => break,
                    Ok(m) => {
                        self.stats.rx_gro_messages += m as u64;
                        continue;
                    }
                    Err(e) => {
                        self.stats.rx_errors += 1;
                        if let UnderlayError::Recv(io) = e {
                            self.stats.last_errno = io.raw_os_error().unwrap_or(0);
                        }
                        break;
                    }
                }
            };
            let area = spare[n].rx_area();
            if cut || d.len() > area.len() {
                self.stats.rx_truncated += 1;
                continue;
            }
            if d.is_empty() {
                self.stats.rx_empty += 1;
                continue;
            }
            area[..d.len()].copy_from_slice(d);
            let p = &mut spare[n];
            p.set_len(d.len());
            p.meta.peer = Some(src);
            n += 1;
        }
        batch.grow(n);
        n
    }
}

impl UdpPort {
    fn count_send(&mut self, report: &SendReport) {
        self.stats.tx_errors += report.failed as u64;
        self.stats.tx_would_block += report.unsent as u64;
        self.stats.tx_gso_messages += report.gso_messages as u64;
        self.stats.tx_gso_datagrams += report.gso_datagrams as u64;
        if let Some(errno) = report.last_errno {
            self.stats.last_errno = errno;
        }
    }

    /// The transmit burst of a port that takes offloads ([`UdpPort::with_offloads`]), for a
    /// batch with offload work in it: partial checksums finished in place, super-frames cut
    /// into datagrams of their own headers and payload slices, sent [`UdpUnderlay::batch`]
    /// datagrams at a time. Returns the frames all of whose datagrams went (less one for each
    /// datagram the kernel refused).
    fn tx_offloaded(&mut self, batch: &mut Batch) -> usize {
        use crate::offload::{Tcp4Gso, finish_checksum};
        use crate::wire::vxlan::HEADER_LEN as ENCAP;
        // Frames and what to cut them at: a super-frame's plan, or None for one datagram.
        let mut plans: [Option<Tcp4Gso>; MAX_BATCH] = [None; MAX_BATCH];
        let n = batch.len().min(MAX_BATCH);
        for (p, plan) in batch.pkts_mut()[..n].iter_mut().zip(&mut plans) {
            let mut o = p.meta.offload;
            if !o.pending() || p.len() < ENCAP {
                continue;
            }
            // vxlan-encap put the VXLAN header in front; the offsets are the inner frame's.
            if !o.is_gso() {
                finish_checksum(&mut p.data_mut()[ENCAP..], &mut o);
                p.meta.offload = o;
                continue;
            }
            match Tcp4Gso::new(&p.data()[ENCAP..], &o) {
                Ok(g) => *plan = Some(g),
                Err(_) => {
                    self.stats.tx_gso_bad += 1;
                    p.meta.peer = None; // not sent, and not counted as no_peer below
                    p.meta.offload = Default::default();
                    p.set_len(0);
                }
            }
        }
        let cap = self.ul.batch();
        let peer_port = self.peer_port;
        let flows = self.flows;
        let pkts = &batch.pkts()[..n];
        let mut hdrs = self.seg_hdrs.take().unwrap_or_default();
        // Frames all of whose datagrams went; datagrams refused or not sent for want of a
        // peer, each taking one frame off that.
        let mut went = 0usize;
        let mut lost = 0usize;
        // The next datagram to build: frame i, segment k.
        let (mut i, mut k) = (0usize, 0usize);
        // (frame, segment, flow hash) of each datagram of the chunk being built; the hash is
        // the frame's, taken once when its first segment is built (`hash`).
        let mut units = [(0usize, 0usize, None); MAX_BATCH];
        let mut hash = None;
        while i < n {
            // Headers first (written into `hdrs`), then the datagrams that borrow them.
            let mut m = 0;
            while m < cap && i < n {
                let p = &pkts[i];
                if p.meta.peer.is_none() {
                    // A super-frame refused above has no length: counted as tx_gso_bad.
                    if !p.is_empty() {
                        self.stats.tx_no_peer += 1;
                    }
                    lost += 1;
                    i += 1;
                    continue;
                }
                if k == 0 {
                    // Every segment of a super-frame is of its flow.
                    hash = flow_of(flows, p.data());
                }
                match plans[i] {
                    Some(g) => {
                        let slot = &mut hdrs[m * SEG_HDR..(m + 1) * SEG_HDR];
                        slot[..ENCAP].copy_from_slice(&p.data()[..ENCAP]);
                        g.write_header(&p.data()[ENCAP..], k, &mut slot[ENCAP..ENCAP + g.hdr_len]);
                        units[m] = (i, k, hash);
                        k += 1;
                        if k == g.segments() {
                            (i, k) = (i + 1, 0);
                            self.stats.tx_gso_frames += 1;
                        }
                    }
                    None => {
                        units[m] = (i, 0, hash);
                        i += 1;
                    }
                }
                m += 1;
            }
            let hdrs = &hdrs;
            let report =
                self.ul
                    .send_flows(units[..m].iter().enumerate().map(|(j, &(f, seg, hash))| {
                        let p = &pkts[f];
                        // Units are only built for frames with a peer.
                        let dst = p.meta.peer.unwrap_or(SocketAddrV4::new(0.into(), 0));
                        let dst = SocketAddrV4::new(*dst.ip(), peer_port.unwrap_or(dst.port()));
                        match plans[f] {
                            Some(g) => (
                                dst,
                                &hdrs[j * SEG_HDR..j * SEG_HDR + ENCAP + g.hdr_len],
                                &p.data()[ENCAP..][g.payload_range(seg)],
                                hash,
                            ),
                            None => (dst, p.data(), &[][..], hash),
                        }
                    }));
            lost += report.failed;
            self.count_send(&report);
            if report.unsent > 0 {
                // The socket is full: count what was never offered as well, and stop.
                let first_unsent = m - report.unsent;
                let later: usize = (i..n)
                    .map(|f| plans[f].map_or(1, |g| g.segments()))
                    .sum::<usize>()
                    .saturating_sub(k);
                self.stats.tx_would_block += later as u64;
                went = units[first_unsent].0;
                break;
            }
            went = i;
        }
        self.seg_hdrs = Some(hdrs);
        went.saturating_sub(lost)
    }
}

impl Port for UdpPort {
    /// A `recvmmsg` per call; with GRO, datagrams of a coalesced buffer wait between calls,
    /// and then the port must be called.
    fn rx_wants_readiness(&self) -> bool {
        !self.ul.has_buffered()
    }

    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        if self.ul.gro() {
            return self.rx_coalesced(batch);
        }
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
            // rx_area put the frame at the standard headroom and reset the metadata; the
            // kernel wrote at most the area's length.
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
        if self.seg_hdrs.is_some() && batch.pkts().iter().any(|p| p.meta.offload.pending()) {
            return self.tx_offloaded(batch);
        }
        let no_peer = &mut self.stats.tx_no_peer;
        let peer_port = self.peer_port;
        let flows = self.flows;
        let report = self
            .ul
            .send_flows(batch.pkts().iter().filter_map(|p| match p.meta.peer {
                Some(dst) => Some((
                    SocketAddrV4::new(*dst.ip(), peer_port.unwrap_or(dst.port())),
                    p.data(),
                    &[][..],
                    flow_of(flows, p.data()),
                )),
                None => {
                    *no_peer += 1;
                    None
                }
            }));
        self.count_send(&report);
        report.sent
    }

    fn offloads(&self) -> bool {
        self.seg_hdrs.is_some()
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.ul.as_raw_fd())
    }

    /// The datagram as it was on the wire: the kernel's Ethernet, IPv4 and UDP headers (MACs
    /// zero: the socket never sees them) rebuilt around the VXLAN payload, toward or from
    /// `meta.peer`.
    fn capture_frame(&self, pkt: &Packet, tx: bool, out: &mut Vec<u8>) {
        let payload = pkt.data();
        let Some(peer) = pkt.meta.peer else {
            return out.extend_from_slice(payload);
        };
        let mut me = self.local_addr();
        if tx {
            // The source port it left from (the same hash as at the send).
            me.set_port(self.ul.source_port(flow_of(self.flows, payload)));
        }
        let peer = match (tx, self.peer_port) {
            (true, Some(port)) => SocketAddrV4::new(*peer.ip(), port),
            _ => peer,
        };
        let (src, dst) = if tx { (me, peer) } else { (peer, me) };
        if !capture_udp(out, src, dst, payload) {
            // Cannot have been one datagram: show the bytes as they are.
            out.extend_from_slice(payload);
        }
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
            ("rx_gro_messages", s.rx_gro_messages),
            ("tx_gso_messages", s.tx_gso_messages),
            ("tx_gso_datagrams", s.tx_gso_datagrams),
            ("tx_gso_frames", s.tx_gso_frames),
            ("tx_gso_bad", s.tx_gso_bad),
            // Dropped by the kernel before the node read them (a full receive buffer).
            ("rx_socket_drops", self.ul.socket_drops().unwrap_or(0)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HEADROOM;
    use crate::wire::vxlan::{HEADER_LEN, VXLAN_PORT};
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    const LOOPBACK_ANY_PORT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    const DEADLINE: Duration = Duration::from_secs(5);
    const BATCH: usize = 32;

    /// Receive until `want` frames arrived or the deadline passes.
    fn rx_all(port: &mut UdpPort, want: usize) -> Vec<(Option<SocketAddrV4>, Vec<u8>)> {
        let mut got = Vec::new();
        let start = Instant::now();
        let mut batch = Batch::new(BATCH);
        while got.len() < want && start.elapsed() < DEADLINE {
            batch.clear();
            let n = port.rx_burst(&mut batch);
            assert_eq!(n, batch.len());
            got.extend(
                batch
                    .pkts()
                    .iter()
                    .map(|p| (p.meta.peer, p.data().to_vec())),
            );
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        got
    }

    fn frame_to(dst: SocketAddrV4, body: &[u8]) -> Packet {
        let mut p = Packet::from_frame(body);
        p.meta.peer = Some(dst);
        p
    }

    #[test]
    fn capture_rebuilds_the_outer_headers_the_kernel_added() {
        if !own_netns() {
            return;
        }
        use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, UdpPacket};
        let port = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let peer = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), VXLAN_PORT);
        let body = [8u8, 0, 0, 0, 0, 0x10, 1, 0, 1, 2, 3];
        let p = frame_to(peer, &body);
        let mut out = Vec::new();
        port.capture_frame(&p, true, &mut out);
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum() && ip.dont_frag());
        assert_eq!(
            (ip.src_addr(), ip.dst_addr()),
            (*port.local_addr().ip(), *peer.ip())
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let (s, d) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        assert!(udp.verify_checksum(&s, &d));
        assert_eq!(
            (udp.src_port(), udp.dst_port()),
            (port.local_addr().port(), VXLAN_PORT)
        );
        assert_eq!(udp.payload(), &body);
        // Received: the peer is the source.
        out.clear();
        port.capture_frame(&p, false, &mut out);
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.src_addr(), *peer.ip());
    }

    #[test]
    fn a_batch_goes_out_in_one_call_and_comes_in_with_the_sender_in_the_meta() {
        if !own_netns() {
            return;
        }
        let mut a = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let mut b = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let mut tx = Batch::new(BATCH + 1);
        let bodies: Vec<Vec<u8>> = (0..BATCH as u8)
            .map(|i| vec![i; 20 + usize::from(i)])
            .collect();
        for body in &bodies {
            assert!(tx.push_swap(&mut frame_to(b.local_addr(), body)));
        }
        // one frame without a peer is counted and skipped
        assert!(tx.push_swap(&mut Packet::from_frame(&[1, 2, 3])));
        assert_eq!(a.tx_burst(&mut tx), BATCH);
        assert_eq!(a.stats.tx_no_peer, 1);
        let got = rx_all(&mut b, BATCH);
        assert_eq!(got.len(), BATCH);
        for (g, body) in got.iter().zip(&bodies) {
            assert_eq!(g.0, Some(a.local_addr()));
            assert_eq!(&g.1[..], &body[..]);
        }
        assert!(b.poll_fd().is_some());
    }

    #[test]
    fn super_frames_go_out_as_segments_gathered_from_their_own_bytes() {
        if !own_netns() {
            return;
        }
        use crate::offload::Tcp4Gso;
        use crate::offload::tests::{tcp_ok, tso_frame};
        let mut a = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap().with_offloads();
        assert!(a.offloads());
        let mut b = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let vxlan = [0x08, 0, 0, 0, 0, 0x10, 0x01, 0];
        let with_vxlan = |f: &[u8]| [&vxlan[..], f].concat();
        let mut tx = Batch::with_buf_size(4, crate::offload::GSO_BUF_SIZE);
        // A super-frame of 9000 payload bytes at an odd MSS, a frame with a partial checksum,
        // and a plain one.
        let (sf, mut so) = tso_frame(9000, 0x18, 12);
        so.gso_size = 1001;
        let (pf, po) = tso_frame(333, 0x18, 0);
        for (f, o) in [(&sf, so), (&pf, po), (&pf, Default::default())] {
            let p = tx.push_frame(&with_vxlan(f)).unwrap();
            p.meta.peer = Some(b.local_addr());
            p.meta.offload = o;
        }
        assert_eq!(a.tx_burst(&mut tx), 3);
        let g = Tcp4Gso::new(&sf, &so).unwrap();
        let want = g.segments() + 2;
        let got = rx_all(&mut b, want);
        assert_eq!(got.len(), want);
        assert_eq!(a.stats.tx_gso_frames, 1);
        let mut seg = vec![0u8; 2000];
        for (k, d) in got[..g.segments()].iter().enumerate() {
            let n = g.write(&sf, k, &mut seg);
            assert_eq!(&d.1[..8], &vxlan[..], "segment {k}");
            assert_eq!(&d.1[8..], &seg[..n], "segment {k}");
            assert!(tcp_ok(&d.1[8..]));
        }
        // The partial checksum was finished; the plain frame went as it was.
        let partial = &got[g.segments()].1;
        assert!(tcp_ok(&partial[8..]));
        assert_eq!(&partial[8..partial.len()], {
            let mut f = pf.clone();
            let mut o = po;
            crate::offload::finish_checksum(&mut f, &mut o);
            f
        });
        assert_eq!(got[g.segments() + 1].1, with_vxlan(&pf));
        // Without offloads taken, a port is as before.
        assert!(!b.offloads());
    }

    #[test]
    fn super_frames_longer_than_one_send_straddle_sends_in_order() {
        if !own_netns() {
            return;
        }
        use crate::offload::Tcp4Gso;
        use crate::offload::tests::{tcp_ok, tso_frame};
        let mut a = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap().with_offloads();
        let mut b = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let vxlan = [0x08, 0, 0, 0, 0, 0x10, 0x01, 0];
        // Three super-frames of 30 segments: 90 datagrams, more than one sendmmsg takes (64),
        // so the second one's segments go in two sends.
        let (sf, mut so) = tso_frame(30 * 600, 0x10, 0);
        so.gso_size = 600;
        let g = Tcp4Gso::new(&sf, &so).unwrap();
        assert_eq!(g.segments(), 30);
        let mut tx = Batch::with_buf_size(3, crate::offload::GSO_BUF_SIZE);
        for _ in 0..3 {
            let p = tx.push_frame(&[&vxlan[..], &sf[..]].concat()).unwrap();
            p.meta.peer = Some(b.local_addr());
            p.meta.offload = so;
        }
        assert_eq!(a.tx_burst(&mut tx), 3);
        assert_eq!(a.stats.tx_gso_frames, 3);
        let got = rx_all(&mut b, 90);
        assert_eq!(got.len(), 90);
        let mut seg = vec![0u8; 2000];
        for (i, d) in got.iter().enumerate() {
            let n = g.write(&sf, i % 30, &mut seg);
            assert_eq!(&d.1[8..], &seg[..n], "datagram {i}");
            assert!(tcp_ok(&d.1[8..]));
        }
    }

    #[test]
    fn a_super_frame_whose_headers_were_changed_is_dropped_and_counted() {
        if !own_netns() {
            return;
        }
        use crate::offload::tests::tso_frame;
        let mut a = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap().with_offloads();
        let b = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let mut tx = Batch::with_buf_size(2, crate::offload::GSO_BUF_SIZE);
        let (mut sf, mut so) = tso_frame(5000, 0x10, 0);
        so.gso_size = 1400;
        sf[14 + 9] = 17; // no longer TCP
        let p = tx
            .push_frame(&[&[0x08, 0, 0, 0, 0, 0, 1, 0][..], &sf[..]].concat())
            .unwrap();
        p.meta.peer = Some(b.local_addr());
        p.meta.offload = so;
        assert_eq!(a.tx_burst(&mut tx), 0);
        assert_eq!(a.stats.tx_gso_bad, 1);
        assert_eq!(a.stats.tx_no_peer, 0);
    }

    #[test]
    fn received_frames_leave_room_for_decap_to_strip_without_copying() {
        if !own_netns() {
            return;
        }
        let mut a = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let mut b = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let mut tx = Batch::new(BATCH);
        assert!(tx.push_swap(&mut frame_to(b.local_addr(), &[7; 100])));
        assert_eq!(a.tx_burst(&mut tx), 1);
        let start = Instant::now();
        let mut batch = Batch::new(BATCH);
        while batch.is_empty() && start.elapsed() < DEADLINE {
            b.rx_burst(&mut batch);
        }
        let p = &batch[0];
        assert_eq!(p.headroom(), HEADROOM);
        assert!(HEADER_LEN < p.len());
    }

    #[test]
    fn oversized_datagrams_are_dropped_and_counted() {
        if !own_netns() {
            return;
        }
        const SMALL_BUF: usize = HEADROOM + 256;
        let mut a = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let mut b = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let mut tx = Batch::new(BATCH);
        for body in [
            vec![1u8; 300],
            vec![2u8; 50],
            vec![3u8; 257],
            vec![4u8; 256],
        ] {
            assert!(tx.push_swap(&mut frame_to(b.local_addr(), &body)));
        }
        assert_eq!(a.tx_burst(&mut tx), 4);
        let mut got = Vec::new();
        let start = Instant::now();
        let mut batch = Batch::with_buf_size(BATCH, SMALL_BUF);
        while got.len() < 2 && start.elapsed() < DEADLINE {
            batch.clear();
            b.rx_burst(&mut batch);
            got.extend(batch.pkts().iter().map(|p| p.data().to_vec()));
        }
        assert_eq!(got, vec![vec![2u8; 50], vec![4u8; 256]]);
        assert_eq!(b.stats.rx_truncated, 2);
        assert!(b.counters().contains(&("rx_truncated", 2)));
    }

    #[test]
    fn empty_datagrams_are_counted_with_and_without_gro() {
        if !own_netns() {
            return;
        }
        let plain = UdpPort::new(UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap());
        for mut port in [UdpPort::bind(LOOPBACK_ANY_PORT).unwrap(), plain] {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for body in [&[][..], &[5u8; 20], &[]] {
                s.send_to(body, port.local_addr()).unwrap();
            }
            let got = rx_all(&mut port, 1);
            let start = Instant::now();
            while port.stats.rx_empty < 2 && start.elapsed() < DEADLINE {
                rx_all(&mut port, 0);
                let mut batch = Batch::new(BATCH);
                port.rx_burst(&mut batch);
            }
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1, vec![5u8; 20]);
            assert_eq!(port.stats.rx_empty, 2);
            assert!(port.counters().contains(&("rx_empty", 2)));
        }
    }

    #[test]
    fn refused_sends_are_counted() {
        if !own_netns() {
            return;
        }
        let mut a = UdpPort::bind(LOOPBACK_ANY_PORT).unwrap();
        let mut tx = Batch::with_buf_size(BATCH, HEADROOM + usize::from(u16::MAX) + 16);
        // Above the 64 KiB UDP limit: EMSGSIZE.
        let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
        let mut big = Packet::with_capacity(HEADROOM + usize::from(u16::MAX) + 16);
        big.set_frame(&vec![0u8; usize::from(u16::MAX)]).unwrap();
        big.meta.peer = Some(dst);
        assert!(tx.push_swap(&mut big));
        assert_eq!(a.tx_burst(&mut tx), 0);
        assert_eq!(a.stats.tx_errors, 1);
        assert_eq!(a.stats.last_errno, libc::EMSGSIZE);
    }
}
