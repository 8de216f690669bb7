//! One receive queue of an AF_XDP port: its socket's four rings (RX, TX, fill, completion), its
//! UMEM, and the per-batch work on them: copy received frames out, copy frames to send in, top
//! the fill ring up, reap completions, kick the kernel to transmit. Also how a queue is opened.
//!
//! Where it sits: between [`AfxdpPort`](super::AfxdpPort)'s `rx_burst`/`tx_burst` and the
//! kernel. The per-batch work allocates nothing and never blocks (a kick is one non-blocking
//! `sendto`); opening a queue may sleep while the kernel still holds it (bind retries).

use std::ffi::c_void;
use std::io;
use std::os::fd::RawFd;

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

use super::config::{AfxdpConfig, BIND_RETRY_WAIT};
use super::port::{AfxdpStats, KernelStats};
use super::umem::{FramePool, UmemArea};
use super::{AfxdpError, Ctx};
use crate::packet::Packet;

/// `SOL_XDP`.
const SOL_XDP: libc::c_int = 283;
/// `XDP_OPTIONS` getsockopt.
const XDP_OPTIONS: libc::c_int = 8;
/// `XDP_OPTIONS_ZEROCOPY` in `struct xdp_options`.
const XDP_OPTIONS_ZEROCOPY: u32 = 1;

/// One receive queue: its socket's rings, its UMEM and the UMEM's frames.
pub(super) struct Queue {
    // Field order is drop order: the rings and the socket go before the memory they point into.
    pub(super) rx: RingRx,
    pub(super) tx: RingTx,
    /// Fill and completion rings, and the socket itself.
    pub(super) dev: DeviceQueue,
    pub(super) pool: FramePool,
    area: UmemArea,
    pub(super) fd: RawFd,
}

impl Queue {
    // xdpilone refreshes its cached copy of the kernel's ring head only when the cached copy
    // shows no room (or no entries) at all, so one reservation can come back shorter than what
    // the ring really has: each operation below reserves again until it gets nothing or has
    // what it wants (two rounds at most in practice).

    /// Hand every transmitted frame the completion ring holds back to the free list.
    #[inline]
    pub(super) fn reap_completions(&mut self) {
        while self.pool.tx_lent > 0 {
            let mut c = self.dev.complete(self.pool.tx_lent);
            if c.capacity() == 0 {
                break;
            }
            while let Some(addr) = c.read() {
                self.pool.return_tx(addr);
            }
            c.release();
        }
    }

    /// Top the fill ring up to the receive budget.
    #[inline]
    pub(super) fn refill(&mut self) {
        loop {
            let want = self.pool.rx_budget();
            if want == 0 {
                return;
            }
            let mut w = self.dev.fill(want);
            let cap = w.capacity();
            if cap == 0 {
                return;
            }
            for _ in 0..cap {
                // The budget guarantees a free frame; stop rather than spin if not.
                let Some(addr) = self.pool.lend_rx() else {
                    w.commit();
                    return;
                };
                // Within the reserved capacity: cannot fail.
                w.insert_once(addr);
            }
            w.commit();
        }
    }

    /// Copy received frames into `slots`, in order; returns how many slots were filled.
    #[inline]
    pub(super) fn receive(&mut self, slots: &mut [Packet], st: &mut AfxdpStats) -> usize {
        let mut n = 0;
        while n < slots.len() {
            let mut r = self.rx.receive((slots.len() - n) as u32);
            if r.capacity() == 0 {
                break;
            }
            while let Some(d) = r.read() {
                let len = d.len as usize;
                match self.area.bytes(d.addr, len) {
                    Some(frame) => {
                        let slot = &mut slots[n];
                        let area = slot.rx_area();
                        if let Some(dst) = area.get_mut(..len) {
                            dst.copy_from_slice(frame);
                            slot.set_len(len);
                            st.rx_bytes += len as u64;
                            n += 1;
                        } else {
                            st.rx_oversize += 1;
                        }
                    }
                    None => st.rx_invalid_desc += 1,
                }
                // Copied (or dropped): the frame is free again.
                self.pool.return_rx(d.addr);
            }
            r.release();
        }
        st.rx_packets += n as u64;
        n
    }

    /// Copy `pkts` into free frames and queue them on the TX ring, in order, until the ring
    /// or the transmit budget runs out. Returns (frames queued, packets looked at).
    #[inline]
    pub(super) fn transmit(
        &mut self,
        pkts: &[Packet],
        max_len: usize,
        st: &mut AfxdpStats,
    ) -> (usize, usize) {
        let (mut queued, mut seen) = (0, 0);
        'reserve: while seen < pkts.len() {
            let want = self.pool.tx_budget().min((pkts.len() - seen) as u32);
            if want == 0 {
                break;
            }
            let mut w = self.tx.transmit(want);
            let cap = w.capacity() as usize;
            if cap == 0 {
                break;
            }
            let mut put = 0;
            while put < cap && seen < pkts.len() {
                let p = &pkts[seen];
                let len = p.len();
                if len > max_len {
                    st.tx_oversize += 1;
                    seen += 1;
                    continue;
                }
                // The budget guarantees a free frame; stop rather than spin if not.
                let Some(addr) = self.pool.lend_tx() else {
                    w.commit();
                    queued += put;
                    break 'reserve;
                };
                match self.area.bytes_mut(addr, len) {
                    Some(dst) => dst.copy_from_slice(p.data()),
                    None => {
                        // Unreachable (`len` fits a frame); give the frame back, never panic.
                        self.pool.return_tx(addr);
                        st.tx_oversize += 1;
                        seen += 1;
                        continue;
                    }
                }
                // Within the reserved capacity: cannot fail.
                w.insert_once(XdpDesc {
                    addr,
                    len: len as u32,
                    options: 0,
                });
                st.tx_bytes += len as u64;
                put += 1;
                seen += 1;
            }
            w.commit();
            queued += put;
        }
        st.tx_packets += queued as u64;
        (queued, seen)
    }

    /// Whether the kernel wants a `sendto` to go on transmitting.
    #[inline]
    pub(super) fn tx_needs_kick(&self) -> bool {
        self.tx.pending() > 0 && self.tx.needs_wakeup()
    }

    /// One `sendto`: in copy mode the kernel transmits inside it.
    #[inline]
    pub(super) fn kick(&mut self, st: &mut AfxdpStats) {
        st.tx_kicks += 1;
        // SAFETY: a zero-length, address-less sendto on our own socket; no buffer is passed.
        let rc = unsafe {
            libc::sendto(
                self.fd,
                core::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                core::ptr::null(),
                0,
            )
        };
        if rc < 0 {
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            // Busy or out of buffers: the descriptors stay on the ring for the next kick.
            if !matches!(errno, libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) {
                st.tx_kick_errors += 1;
                st.last_errno = errno;
            }
        }
    }

    pub(super) fn kernel_stats(&self) -> KernelStats {
        match self.dev.statistics_v2() {
            Ok(s) => KernelStats {
                rx_dropped: s.rx_dropped,
                rx_ring_full: s.rx_ring_full,
                fill_ring_empty: s.rx_fill_ring_empty_descs,
                rx_invalid_descs: s.rx_invalid_descs,
                tx_invalid_descs: s.tx_invalid_descs,
            },
            Err(_) => KernelStats::default(),
        }
    }
}

/// Map a UMEM for queue `q`, make its socket and rings, bind it (retrying while busy), and
/// lend the fill ring its frames. Also returns how many binds were refused as busy.
pub(super) fn open_queue(
    cx: &Ctx<'_>,
    cfg: &AfxdpConfig,
    ifindex: u32,
    q: u32,
    bind_flags: u16,
) -> Result<(Queue, u32), AfxdpError> {
    let pool = FramePool::new(cfg.frame_size, cfg.fill_ring, cfg.tx_ring);
    let len = pool.total as usize * cfg.frame_size as usize;
    let area = UmemArea::new(len).map_err(|e| cx.os(format!("queue {q}: UMEM mmap"), e))?;
    let ucfg = UmemConfig {
        fill_size: cfg.fill_ring,
        complete_size: cfg.completion_ring,
        frame_size: cfg.frame_size,
        headroom: 0,
        flags: 0,
    };
    // SAFETY: `area` is a fresh page-aligned mapping of exactly `len` bytes; the queue owns it
    // and drops it only after the rings and sockets that refer to it (field order of `Queue`).
    let umem = unsafe { Umem::new(ucfg, area.as_slice_ptr()) }
        .map_err(|e| cx.xsk(format!("queue {q}: UMEM registration"), e))?;
    let mut info = IfInfo::invalid();
    info.from_ifindex(ifindex).map_err(|e| {
        if e.get_raw() == libc::ENXIO || e.get_raw() == libc::ENODEV {
            AfxdpError::NotFound {
                ifname: cx.ifname.to_string(),
            }
        } else {
            cx.xsk("interface lookup", e)
        }
    })?;
    info.set_queue(q);
    // The UMEM's own socket serves the queue: no XDP_SHARED_UMEM, so it takes its own flags.
    let sock =
        Socket::with_shared(&info, &umem).map_err(|e| cx.xsk(format!("queue {q}: socket"), e))?;
    let dev = umem
        .fq_cq(&sock)
        .map_err(|e| cx.xsk(format!("queue {q}: fill/completion rings"), e))?;
    let scfg = SocketConfig {
        rx_size: core::num::NonZeroU32::new(cfg.rx_ring),
        tx_size: core::num::NonZeroU32::new(cfg.tx_ring),
        bind_flags,
    };
    let user = umem
        .rx_tx(&sock, &scfg)
        .map_err(|e| cx.xsk(format!("queue {q}: RX/TX rings"), e))?;
    let rx = user
        .map_rx()
        .map_err(|e| cx.xsk(format!("queue {q}: map RX ring"), e))?;
    let tx = user
        .map_tx()
        .map_err(|e| cx.xsk(format!("queue {q}: map TX ring"), e))?;
    let mut busy = 0;
    loop {
        match umem.bind(&user) {
            Ok(()) => break,
            Err(e) if e.get_raw() == libc::EBUSY => {
                busy += 1;
                if busy > cfg.bind_retries {
                    return Err(AfxdpError::BindBusy {
                        ifname: cx.ifname.to_string(),
                        queue: q,
                        retries: cfg.bind_retries,
                    });
                }
                std::thread::sleep(BIND_RETRY_WAIT);
            }
            Err(e) => return Err(cx.xsk(format!("bind queue {q}"), e)),
        }
    }
    let fd = user.as_raw_fd();
    let mut queue = Queue {
        rx,
        tx,
        dev,
        pool,
        area,
        fd,
    };
    queue.refill();
    Ok((queue, busy))
}

/// Whether the socket was bound in zero-copy mode (`XDP_OPTIONS`).
pub(super) fn is_zero_copy(fd: RawFd) -> bool {
    let mut opts: u32 = 0;
    let mut len = size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `opts`, a live u32.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            (&mut opts as *mut u32).cast::<c_void>(),
            &mut len,
        )
    };
    rc == 0 && opts & XDP_OPTIONS_ZEROCOPY != 0
}
