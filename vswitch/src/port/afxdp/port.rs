//! [`AfxdpPort`]: an interface's receive queues as one switch port. Opening checks the
//! settings and the MTU, attaches the XDP program, binds one socket per queue and puts each in
//! the XSKMAP; the [`Port`] methods spread receive over the queues and transmit through them,
//! and through the packet socket for super-frames ([`super::packet_tx`]).
//!
//! Where it sits: a local port at both ends of a container's path (see [`super`]).

use core::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use xdpilone::SocketConfig;

use super::attach::{PassedCount, XdpLink, XdpProgram, XskMap, attach};
use super::config::{AfxdpConfig, MAX_QUEUES, NAPI_DEFER_POLLS, XDP_PACKET_HEADROOM, XdpMode};
use super::epoll::epoll_over;
use super::order;
use super::packet_rx::{PacketRx, Read};
use super::packet_tx::PacketTx;
use super::queue::{Queue, is_zero_copy, open_queue};
use super::stack::IfSettings;
use super::umem::FrameUse;
use super::{AfxdpError, Ctx};
use crate::batch::{Batch, MAX_BATCH};
use crate::offload;
use crate::packet::Packet;
use crate::port::Port;
use crate::port::ethtool;
use crate::port::iface::CtlSocket;
use crate::wire::ethernet;

/// Counters of an [`AfxdpPort`] kept by the port itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfxdpStats {
    /// Frames received into batches.
    pub rx_packets: u64,
    /// Bytes received into batches.
    pub rx_bytes: u64,
    /// Received frames larger than a packet buffer, dropped.
    pub rx_oversize: u64,
    /// RX descriptors pointing outside the UMEM (a kernel bug; never seen), dropped.
    pub rx_invalid_desc: u64,
    /// Frames sent: queued on a TX ring, or through the packet socket (a merged run counts its
    /// segments).
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames longer than a UMEM frame or the device's MTU allows, dropped.
    pub tx_oversize: u64,
    /// Frames not sent for want of a TX ring slot or a transmit frame, dropped.
    pub tx_ring_full: u64,
    /// `sendto` kicks of the TX rings.
    pub tx_kicks: u64,
    /// Kicks that failed other than "busy, try again".
    pub tx_kick_errors: u64,
    /// Fill-ring wakeups a zero-copy driver asked for.
    pub fill_wakeups: u64,
    /// `bind` attempts refused with `EBUSY` while opening (the queue's previous socket was
    /// still being released).
    pub bind_busy_retries: u64,
    /// Super-frames sent through the packet socket, merged from in-order segments of one flow.
    pub tx_gro_frames: u64,
    /// Segments merged into those.
    pub tx_gro_segments: u64,
    /// TCP super-frames (from a container that hands them over, a TAP with offloads) sent
    /// whole through the packet socket, with their MSS in the virtio-net header.
    pub tx_gso_frames: u64,
    /// Partial checksums finished by the port before the TX ring.
    pub tx_csum_finished: u64,
    /// Frames (segments, for a merged run) the packet socket refused for want of buffer room,
    /// dropped.
    pub tx_packet_would_block: u64,
    /// Frames (segments, for a merged run) the packet socket refused otherwise, dropped.
    pub tx_packet_errors: u64,
    /// TCP super-frames received through the packet socket (the container's TSO).
    pub rx_gso_frames: u64,
    /// Frames from the ring whose TCP/UDP checksum was put in partial form (the container's
    /// checksum offload is on; the ring says nothing of the state).
    pub rx_csum_partial: u64,
    /// Frames the packet socket handed over with a virtio-net header the switch does not take
    /// (a segmentation type other than TCP/IPv4, offsets outside the frame), dropped.
    pub rx_bad_vnet_hdr: u64,
    /// Super-frames larger than a packet buffer, dropped.
    pub rx_super_truncated: u64,
    /// Super-frames the XDP program passed that never reached the packet socket (its buffer
    /// was full), counted when the socket is found empty while the count says otherwise.
    pub rx_super_lost: u64,
    /// Packet-socket receive errors.
    pub rx_packet_errors: u64,
    /// Super-frames moved behind ring frames of their flow that came before them (by TCP
    /// sequence number): the two receive paths meet in one batch.
    pub rx_reordered: u64,
    /// The errno of the last failed kick or packet-socket send, 0 if none.
    pub last_errno: i32,
}

/// The kernel's counters of the port's sockets (`XDP_STATISTICS`), summed over its queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames the kernel dropped before the RX ring (no fill frame, too big, ...).
    pub rx_dropped: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub fill_ring_empty: u64,
    /// Invalid fill/RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
}

/// An interface's receive queues as one switch port, through AF_XDP sockets.
pub struct AfxdpPort {
    // Field order is drop order: detach the program first, then close the sockets.
    link: XdpLink,
    _prog: XdpProgram,
    map: XskMap,
    queues: Vec<Queue>,
    packet_tx: Option<PacketTx>,
    packet_rx: Option<SuperRx>,
    /// The interface's receive deferral as it was, put back on drop (after the sockets).
    napi_defer: Option<super::stack::Saved>,
    epoll: Option<OwnedFd>,
    ifname: String,
    ifindex: u32,
    mode: XdpMode,
    zero_copy: bool,
    max_tx_len: usize,
    next_rx: usize,
    stats: AfxdpStats,
}

impl fmt::Debug for AfxdpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfxdpPort")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .field("zero_copy", &self.zero_copy)
            .field("queues", &self.queues.len())
            .field("super_frames", &self.packet_tx.is_some())
            .field("rx_super_frames", &self.packet_rx.is_some())
            .field("napi_deferred", &self.napi_defer.is_some())
            .field("xskmap_slots", &self.map.entries())
            .field("link_fd", &self.link.as_raw_fd())
            .field("stats", &self.stats)
            .finish()
    }
}

impl AfxdpPort {
    /// Attach the XDP program to `cfg.ifname` (in the calling thread's namespace) and bind one
    /// socket per receive queue. Needs `CAP_NET_ADMIN`, `CAP_BPF` (root).
    pub fn open(cfg: &AfxdpConfig) -> Result<AfxdpPort, AfxdpError> {
        let ifname = cfg.ifname.as_str();
        cfg.check().map_err(|reason| AfxdpError::Config {
            ifname: ifname.to_string(),
            reason,
        })?;
        let cx = Ctx { ifname };
        let c_name = std::ffi::CString::new(ifname).map_err(|_| AfxdpError::Config {
            ifname: ifname.to_string(),
            reason: "interface name holds a NUL".into(),
        })?;
        // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(AfxdpError::NotFound {
                ifname: ifname.to_string(),
            });
        }

        let mtu = CtlSocket::open()
            .and_then(|s| s.mtu(ifname))
            .map_err(|e| cx.os("reading the MTU", e))?;
        let rx_room = cfg.frame_size - XDP_PACKET_HEADROOM;
        let need = mtu + (ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN) as u32;
        if need > rx_room {
            return Err(AfxdpError::MtuTooLarge {
                ifname: ifname.to_string(),
                mtu,
                need,
                frame_size: cfg.frame_size,
                room: rx_room,
            });
        }
        // What the peer accepts (`is_skb_forwardable`); it fits a frame, as checked above.
        let max_tx_len = need as usize;

        let nq = match cfg.queues {
            Some(n) => n,
            None => match ethtool::channels(ifname) {
                Ok(ch) => ch.rx_queues().min(MAX_QUEUES),
                // A driver without channel reporting has one queue.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => 1,
                Err(source) => {
                    return Err(AfxdpError::Channels {
                        ifname: ifname.to_string(),
                        source,
                    });
                }
            },
        };

        // The program first, with an empty map: until a queue's socket is in the map its frames
        // still go to the kernel stack, and the attach mode decides the bind flags.
        let map = XskMap::create(nq).map_err(|e| cx.bpf("create XSKMAP", e))?;
        let passed = if cfg.rx_super_frames {
            Some(PassedCount::create().map_err(|e| cx.bpf("create the passed-frames count", e))?)
        } else {
            None
        };
        let prog = match &passed {
            // max_tx_len is at most a UMEM frame (checked above).
            Some(c) => XdpProgram::xsk_redirect_small(&map, c, max_tx_len as u16),
            None => XdpProgram::xsk_redirect(&map),
        }
        .map_err(|e| cx.bpf("load XDP program", e))?;
        // Generic mode leaves the peer's segmentation offload on (native XDP on a veth turns
        // it off); cfg.check refused Drv with rx_super_frames.
        let want = if cfg.rx_super_frames {
            XdpMode::Skb
        } else {
            cfg.mode
        };
        let (link, mode) = attach(&cx, &prog, ifindex, want)?;

        let mut bind_flags = SocketConfig::XDP_BIND_NEED_WAKEUP;
        if mode == XdpMode::Skb {
            // Generic XDP copies anyway; in driver mode the kernel picks zero-copy if it can.
            bind_flags |= SocketConfig::XDP_BIND_COPY;
        }
        let mut queues = Vec::with_capacity(nq as usize);
        let mut stats = AfxdpStats::default();
        for q in 0..nq {
            let (queue, busy) = open_queue(&cx, cfg, ifindex, q, bind_flags)?;
            stats.bind_busy_retries += u64::from(busy);
            map.set(q, queue.fd)
                .map_err(|e| cx.bpf(format!("add queue {q} to the XSKMAP"), e))?;
            queues.push(queue);
        }
        let zero_copy = queues.iter().all(|q| is_zero_copy(q.fd));
        let packet_tx = if cfg.super_frames {
            Some(PacketTx::open(&cx, ifindex)?)
        } else {
            None
        };
        let packet_rx = match passed {
            Some(passed) => {
                let saved = super::stack::take_over(ifname, ifindex, nq).map_err(|e| {
                    cx.os(
                        "IP forwarding off (the stack's copy of a super-frame must be dropped) and flows steered to one CPU each (RPS: a flow must stay in order)",
                        e,
                    )
                })?;
                Some(SuperRx {
                    sock: PacketRx::open(&cx, ifindex)?,
                    passed,
                    taken: 0,
                    empty_reads: 0,
                    _saved: saved,
                })
            }
            None => None,
        };
        // Native XDP runs in the interface's NAPI; generic XDP (Auto's fallback) runs from the
        // backlog, which the deferral does not touch.
        let napi_defer = if !cfg.napi_defer.is_zero() && mode == XdpMode::Drv {
            Some(
                super::stack::defer_napi(ifname, ifindex, NAPI_DEFER_POLLS, cfg.napi_defer)
                    .map_err(|e| {
                        cx.os(
                            "deferring the interface's receive (napi_defer_hard_irqs, gro_flush_timeout)",
                            e,
                        )
                    })?,
            )
        } else {
            None
        };
        let epoll = if queues.len() > 1 {
            Some(epoll_over(queues.iter().map(|q| q.fd)).map_err(|e| cx.os("epoll", e))?)
        } else {
            None
        };
        Ok(AfxdpPort {
            link,
            _prog: prog,
            map,
            queues,
            packet_tx,
            packet_rx,
            napi_defer,
            epoll,
            ifname: ifname.to_string(),
            ifindex,
            mode,
            zero_copy,
            max_tx_len,
            next_rx: 0,
            stats,
        })
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Its index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode the XDP program was attached in ([`XdpMode::Skb`] or [`XdpMode::Drv`]).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// What the port changed on its interface, as it was before (empty if it changed
    /// nothing): the record to keep outside the process, so that a process that dies with the
    /// port open can have it put back when it starts again ([`IfSettings::put_back`]).
    pub fn changed_settings(&self) -> Vec<IfSettings> {
        let rx = self.packet_rx.as_ref().map(|r| &r._saved.0);
        let defer = self.napi_defer.as_ref().map(|s| &s.0);
        rx.into_iter().chain(defer).cloned().collect()
    }

    /// Whether the port deferred its interface's receive ([`AfxdpConfig::napi_defer`], in
    /// native mode).
    pub fn napi_deferred(&self) -> bool {
        self.napi_defer.is_some()
    }

    /// Whether every socket runs in zero-copy mode (never on veth).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Receive queues bound.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Whether TCP super-frames (merged runs, or handed over whole) go to the device through the
    /// packet socket ([`AfxdpConfig::super_frames`]).
    pub fn super_frames(&self) -> bool {
        self.packet_tx.is_some()
    }

    /// Largest frame transmitted; longer ones are dropped as `tx_oversize`.
    pub fn max_tx_len(&self) -> usize {
        self.max_tx_len
    }

    /// The port's own counters.
    pub fn stats(&self) -> AfxdpStats {
        self.stats
    }

    /// The kernel's counters of the sockets (one `getsockopt` per queue).
    pub fn kernel_stats(&self) -> KernelStats {
        self.queues.iter().fold(KernelStats::default(), |a, q| {
            let k = q.kernel_stats();
            KernelStats {
                rx_dropped: a.rx_dropped + k.rx_dropped,
                rx_ring_full: a.rx_ring_full + k.rx_ring_full,
                fill_ring_empty: a.fill_ring_empty + k.fill_ring_empty,
                rx_invalid_descs: a.rx_invalid_descs + k.rx_invalid_descs,
                tx_invalid_descs: a.tx_invalid_descs + k.tx_invalid_descs,
            }
        })
    }

    /// Where the UMEM frames are; `free + rx + tx == total` always.
    pub fn frames(&self) -> FrameUse {
        self.queues.iter().fold(FrameUse::default(), |a, q| {
            let u = q.pool.usage();
            FrameUse {
                free: a.free + u.free,
                rx: a.rx + u.rx,
                tx: a.tx + u.tx,
                total: a.total + u.total,
            }
        })
    }
}

impl Port for AfxdpPort {
    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        let spare = batch.spare_mut();
        let Some(rx) = &mut self.packet_rx else {
            let n = rx_rings(&mut self.queues, &mut self.next_rx, spare, &mut self.stats);
            batch.grow(n);
            return n;
        };
        // Room kept for super-frames: one that waits for the next round while ring frames
        // that came after it go now would reach the container's peer out of order.
        let ring_room = spare.len() - (spare.len() / 4).min(SUPER_ROOM);
        // Read the ring until the count of passed super-frames holds still around a read
        // (bounded): then every frame that came before a counted super-frame is in hand.
        let mut counted = rx.passed.get();
        let mut n = 0;
        for _ in 0..STABLE_READS {
            n += rx_rings(
                &mut self.queues,
                &mut self.next_rx,
                &mut spare[n..ring_room],
                &mut self.stats,
            );
            let now = rx.passed.get();
            if now == counted {
                break;
            }
            counted = now;
        }
        // The container's checksum offload is on: the ring's frames may hold partial sums.
        for p in &mut spare[..n] {
            let o = offload::partial_from_unknown(p.data_mut());
            self.stats.rx_csum_partial += u64::from(o.needs_csum);
            p.meta.offload = o;
        }
        let ring = n;
        n += rx.receive(&mut spare[n..], counted, self.max_tx_len, &mut self.stats);
        // Each super-frame after the frames of its flow that it followed, by sequence number.
        for s in ring..n {
            self.stats.rx_reordered += u64::from(order::place(&mut spare[..=s]));
        }
        batch.grow(n);
        n
    }

    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        let Some(ptx) = &self.packet_tx else {
            return ring_tx(
                &mut self.queues,
                batch.pkts(),
                self.max_tx_len,
                &mut self.stats,
            );
        };
        let st = &mut self.stats;
        // A partial checksum alone is finished here, in place (a sum over at most one MTU):
        // the frame then takes the ring with its batch instead of a system call of its own.
        for p in batch.pkts_mut() {
            let mut o = p.meta.offload;
            if o.pending() && !o.is_gso() {
                offload::finish_checksum(p.data_mut(), &mut o);
                p.meta.offload = o;
                st.tx_csum_finished += 1;
            }
        }
        let pkts = batch.pkts();
        let mut sent = 0;
        // Frames from `start` to `i` go on the TX ring, as one run of descriptors, before the
        // next frame that takes the packet socket: a flow's frames keep their order.
        let (mut start, mut i) = (0, 0);
        while i < pkts.len() {
            let gso = pkts[i].meta.offload.is_gso();
            let run = if gso {
                1
            } else {
                // At most MAX_BATCH segments: send_run's iovecs.
                offload::gro_run(&pkts[i..pkts.len().min(i + MAX_BATCH)])
            };
            if !gso && run < 2 {
                i += 1;
                continue;
            }
            if start < i {
                sent += ring_tx(&mut self.queues, &pkts[start..i], self.max_tx_len, st);
                drain_rings(&mut self.queues, st);
            }
            let rc = if gso {
                ptx.send_one(&pkts[i])
            } else {
                ptx.send_run(&pkts[i..i + run])
            };
            match rc {
                Ok(()) => {
                    sent += run;
                    if gso {
                        st.tx_gso_frames += 1;
                    } else {
                        st.tx_gro_frames += 1;
                        st.tx_gro_segments += run as u64;
                    }
                    st.tx_packets += run as u64;
                    st.tx_bytes += pkts[i..i + run].iter().map(|p| p.len() as u64).sum::<u64>();
                }
                Err(err) => {
                    st.last_errno = err.raw_os_error().unwrap_or(0);
                    if err.kind() == std::io::ErrorKind::WouldBlock {
                        st.tx_packet_would_block += run as u64;
                    } else {
                        st.tx_packet_errors += run as u64;
                    }
                }
            }
            i += run;
            start = i;
        }
        if start < pkts.len() {
            sent += ring_tx(&mut self.queues, &pkts[start..], self.max_tx_len, st);
        }
        sent
    }

    /// With the packet socket: super-frames are sent whole, partial checksums finished here.
    fn offloads(&self) -> bool {
        self.packet_tx.is_some()
    }

    fn poll_fd(&self) -> Option<RawFd> {
        match &self.epoll {
            Some(ep) => Some(ep.as_raw_fd()),
            None => self.queues.first().map(|q| q.fd),
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats;
        let k = self.kernel_stats();
        let f = self.frames();
        let foreign: u64 = self.queues.iter().map(|q| q.pool.foreign).sum();
        vec![
            ("rx_packets", s.rx_packets),
            ("rx_bytes", s.rx_bytes),
            ("rx_oversize", s.rx_oversize),
            ("rx_invalid_desc", s.rx_invalid_desc),
            ("tx_packets", s.tx_packets),
            ("tx_bytes", s.tx_bytes),
            ("tx_oversize", s.tx_oversize),
            ("tx_ring_full", s.tx_ring_full),
            ("tx_kicks", s.tx_kicks),
            ("tx_kick_errors", s.tx_kick_errors),
            ("fill_wakeups", s.fill_wakeups),
            ("bind_busy_retries", s.bind_busy_retries),
            ("tx_gro_frames", s.tx_gro_frames),
            ("tx_gro_segments", s.tx_gro_segments),
            ("tx_gso_frames", s.tx_gso_frames),
            ("tx_csum_finished", s.tx_csum_finished),
            ("tx_packet_would_block", s.tx_packet_would_block),
            ("tx_packet_errors", s.tx_packet_errors),
            ("rx_gso_frames", s.rx_gso_frames),
            ("rx_csum_partial", s.rx_csum_partial),
            ("rx_bad_vnet_hdr", s.rx_bad_vnet_hdr),
            ("rx_super_truncated", s.rx_super_truncated),
            ("rx_super_lost", s.rx_super_lost),
            ("rx_packet_errors", s.rx_packet_errors),
            ("rx_reordered", s.rx_reordered),
            ("rx_dropped_kernel", k.rx_dropped),
            ("rx_ring_full_kernel", k.rx_ring_full),
            ("fill_ring_empty", k.fill_ring_empty),
            ("rx_invalid_descs_kernel", k.rx_invalid_descs),
            ("tx_invalid_descs_kernel", k.tx_invalid_descs),
            ("umem_frames_free", u64::from(f.free)),
            ("umem_frames_rx", u64::from(f.rx)),
            ("umem_frames_tx", u64::from(f.tx)),
            ("umem_foreign_addrs", foreign),
        ]
    }
}

/// Slots of a receive batch kept for super-frames (at most a quarter of it).
const SUPER_ROOM: usize = 16;
/// Ring reads in one receive call while super-frames keep being counted.
const STABLE_READS: usize = 4;

/// Receive from the queues' RX rings into `spare`, starting at a different queue each call (so
/// a busy queue cannot starve the others); reap, refill and kick as a receive call does.
fn rx_rings(
    queues: &mut [Queue],
    next_rx: &mut usize,
    spare: &mut [Packet],
    st: &mut AfxdpStats,
) -> usize {
    let nq = queues.len();
    let mut n = 0;
    let mut kicked = false;
    for k in 0..nq {
        let q = &mut queues[(*next_rx + k) % nq];
        q.reap_completions();
        if n < spare.len() {
            n += q.receive(&mut spare[n..], st);
        }
        q.refill();
        if kicked {
            continue;
        }
        if q.dev.needs_wakeup() {
            // Only a zero-copy driver asks: copy mode takes fill frames as frames arrive.
            st.fill_wakeups += 1;
            q.dev.wake();
            kicked = true;
        } else if q.tx_needs_kick() {
            // Descriptors left on the TX ring by the last kick (it sends 32 at most).
            q.kick(st);
            kicked = true;
        }
    }
    *next_rx = if *next_rx + 1 >= nq { 0 } else { *next_rx + 1 };
    n
}

/// The receive side of super-frames: the packet socket and the count of frames the XDP
/// program passed to it.
struct SuperRx {
    sock: PacketRx,
    passed: PassedCount,
    /// Passed frames taken from the socket (or given up as lost).
    taken: u64,
    /// Reads in a row that found the socket empty while the count said a frame was due.
    empty_reads: u32,
    /// The interface's settings as they were, put back when the port closes (last: after
    /// the socket).
    _saved: super::stack::Saved,
}

impl SuperRx {
    /// Reads in a row that find the socket empty before the missing frames are counted lost
    /// (the count moves a moment before the frame is queued on the socket).
    const LOST_AFTER: u32 = 256;
    /// Reads of an empty socket in one call before waiting for the next round.
    const RETRIES_NOW: u32 = 8;

    /// Take the passed super-frames into `spare` up to `count` passed in all; no system call
    /// when none are due. Returns how many packets were filled.
    fn receive(
        &mut self,
        spare: &mut [Packet],
        count: u64,
        max_len: usize,
        st: &mut AfxdpStats,
    ) -> usize {
        if count == self.taken {
            return 0;
        }
        let mut vh = [0u8; crate::wire::vnet::HEADER_LEN];
        let mut n = 0;
        while n < spare.len() && self.taken != count {
            let area = spare[n].rx_area();
            let room = area.len();
            match self.sock.read(&mut vh, area) {
                Read::Frame(len) => {
                    self.empty_reads = 0;
                    if len > max_len {
                        self.taken += 1;
                    }
                    if len >= room {
                        st.rx_super_truncated += 1;
                        continue;
                    }
                    let p = &mut spare[n];
                    p.set_len(len);
                    match offload::from_vnet(&vh, p.data(), max_len) {
                        Ok(o) => {
                            st.rx_gso_frames += u64::from(o.is_gso());
                            st.rx_packets += 1;
                            st.rx_bytes += len as u64;
                            p.meta.offload = o;
                            n += 1;
                        }
                        Err(_) => st.rx_bad_vnet_hdr += 1,
                    }
                }
                Read::Short => st.rx_bad_vnet_hdr += 1,
                Read::Empty => {
                    // Counted a moment before it is queued on the socket: try again, a few
                    // times now (it is on its way), then in later rounds, then count it lost.
                    self.empty_reads += 1;
                    if self.empty_reads >= Self::LOST_AFTER {
                        st.rx_super_lost += count - self.taken;
                        self.taken = count;
                        self.empty_reads = 0;
                        break;
                    }
                    if self.empty_reads.is_multiple_of(Self::RETRIES_NOW) {
                        break;
                    }
                }
                Read::Error(errno) => {
                    st.rx_packet_errors += 1;
                    st.last_errno = errno;
                    break;
                }
            }
        }
        n
    }
}

/// Queue `pkts` on the TX rings: the first queue's, then the next when full (any queue's ring
/// reaches the same wire), kicking each that took frames. Returns how many were queued; the
/// rest are counted as `tx_ring_full` (or `tx_oversize`).
fn ring_tx(queues: &mut [Queue], pkts: &[Packet], max_len: usize, st: &mut AfxdpStats) -> usize {
    let (mut seen, mut queued) = (0, 0);
    for q in queues {
        if seen == pkts.len() {
            break;
        }
        q.reap_completions();
        let (put, looked) = q.transmit(&pkts[seen..], max_len, st);
        seen += looked;
        queued += put;
        if put > 0 {
            if q.tx.needs_wakeup() {
                q.kick(st);
            }
            // Copy mode completes inside the kick: take the frames back at once.
            q.reap_completions();
        }
    }
    st.tx_ring_full += (pkts.len() - seen) as u64;
    queued
}

/// Kick until the kernel has taken every queued descriptor (a copy-mode kick sends at most 32),
/// so that a frame sent next through the packet socket goes out after them. Bounded: a kick
/// that makes no progress (the device is busy) leaves the rest to the next receive call.
fn drain_rings(queues: &mut [Queue], st: &mut AfxdpStats) {
    /// A batch's MAX_BATCH frames are two kicks of 32.
    const MAX_KICKS: usize = MAX_BATCH / 32 + 2;
    for q in queues {
        for _ in 0..MAX_KICKS {
            if !q.tx_needs_kick() {
                break;
            }
            q.kick(st);
        }
        q.reap_completions();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interface_is_named() {
        let e = AfxdpPort::open(&AfxdpConfig::new("vxnosuch0", XdpMode::Auto)).unwrap_err();
        assert_eq!(e.to_string(), "afxdp vxnosuch0: interface not found");
    }
}
