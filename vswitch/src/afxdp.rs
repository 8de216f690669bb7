//! AF_XDP ports: an existing interface (the host side of a container's veth) as a switch port.
//!
//! Where it sits: a local port ([`PortRole::Local`](crate::PortRole)) at both ends of a
//! container's path, like the TAP port, but on a veth the container already has. The node
//! process runs in the node's namespace, where the veth's host end lives; the container's `eth0`
//! is the other end, in the container's namespace.
//!
//! ```text
//! container eth0 ══veth══► host end ─► XDP (bpf.rs): xsks[rx queue] ─► RX ring ─► rx_burst ─► l2-parse ─► ...
//! container eth0 ◄══veth══ host end ◄─ sendto kick ◄─ TX ring ◄─ tx_burst ◄─ output ◄─────────────────────┘
//! ```
//!
//! Design choices, and why:
//! - **The XDP program** ([`crate::bpf`]) redirects each frame to the socket of its receive
//!   queue and passes it to the kernel stack when no socket is bound there. It is attached with
//!   `BPF_LINK_CREATE`, so the attachment belongs to a file descriptor: dropping the port, or the
//!   process exiting or being killed, detaches it; a crashed node leaves no program behind.
//!   [`XdpMode::Auto`] tries native (driver) mode and falls back to generic (skb) mode.
//! - **Copy mode on veth.** Zero-copy needs driver support that veth does not have. In driver
//!   mode the socket is bound with neither `XDP_COPY` nor `XDP_ZEROCOPY`, so the kernel takes
//!   zero-copy where the driver offers it and falls back to copy mode by itself (no extra
//!   attempt or socket here); in skb mode copy is forced. [`AfxdpPort::zero_copy`] says which.
//! - **One socket per receive queue**, all in one port: frames are steered to the socket of the
//!   queue they arrived on, so a multi-queue device needs one per queue (a veth has one).
//! - **One UMEM per queue**, not one shared. The kernel wants a fill and completion ring per
//!   queue either way, and this port copies frames in and out of [`Packet`] buffers, so a shared
//!   UMEM would save no copy; it would add cross-queue frame accounting and the shared-bind rule
//!   (a socket bound with `XDP_SHARED_UMEM` inherits the owner's flags and fails with `EINVAL`
//!   if given its own). Per queue, each UMEM's frames are simply accounted: free + lent to the
//!   kernel for receive + lent for transmit = total, always ([`FrameUse`]). Cost: `(fill ring +
//!   TX ring) x frame size` of memory per queue, 9 MiB with the defaults.
//! - **A deep fill ring (4096).** Frames wait in the RX ring whenever the poll thread is off the
//!   CPU, and on a small machine it shares the cores with the containers it serves: a
//!   scheduler slice of 3-5 ms at 800 kpps is 2400-4000 frames. With 1024 fill frames
//!   `vxmesh-compare`'s 64-byte flood lost about 15% of c11's packets at this socket
//!   (`fill_ring_empty`); with 4096, 1-4%, and the machine forwarded about 25% more per
//!   CPU second (4 quick runs each). libxdp's default ring is 2048 descriptors (the frame count is
//!   the application's); OVS's AF_XDP netdev uses 2048-descriptor rings and 16384 frames.
//! - **Copy into the batch's buffers.** A [`Packet`] owns its buffer with headroom for VXLAN,
//!   and the switch moves packets between ports by swapping buffers: a UMEM frame could not
//!   follow a packet to a TAP or the underlay. Copying (at most one MTU) on receive hands the
//!   frame straight back to the fill ring, so the ring stays full under load.
//! - **Frame budget, never a leak.** A frame is free, or lent to the kernel for receive (fill
//!   or RX ring: at most the fill ring's size), or lent for transmit (TX ring, in flight, or in
//!   the completion ring: at most the TX ring's size). With `fill + tx` frames both budgets can
//!   always be met at once, so receive never starves because transmit holds every frame.
//!   Received frames return to the free list when copied, transmitted ones when the completion
//!   ring gives them back (reaped on every receive and transmit call).
//! - **Syscalls.** Receive makes none in copy mode (the kernel takes fill frames as frames
//!   arrive); only a zero-copy driver asking for a fill-ring wakeup (`need_wakeup`) costs a
//!   `poll`. Transmit in copy mode happens inside `sendto`, so `tx_burst` kicks with one
//!   `sendto` per batch when the TX ring's `need_wakeup` flag asks for it (in copy mode the
//!   kernel sets it at bind and never clears it; a zero-copy driver clears it while busy). The
//!   kernel sends at most 32 descriptors per kick; leftovers are kicked by the next receive
//!   call (one syscall at most), and `poll(2)` on the socket drives copy-mode transmit too.
//! - **Idle sleep.** [`Port::poll_fd`] is the socket (readable when its RX ring is not empty);
//!   with several queues it is an epoll descriptor over all of them.
//! - **Bind retries.** Right after a previous socket on the queue closed (a restarted node), the
//!   kernel may still hold the queue for ~100 ms and `bind` returns `EBUSY`: retried, bounded.
//!
//! Frames longer than the room of a [`Packet`] (receive) or than the UMEM frame or the device's
//! MTU allows (transmit) are dropped and counted (`rx_oversize`, `tx_oversize`).

use core::fmt;
use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

use crate::batch::Batch;
use crate::bpf::{BpfError, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, XdpLink, XdpProgram, XskMap};
use crate::ethtool::{self, EthtoolError};
use crate::packet::Packet;
use crate::port::Port;
use crate::wire::ethernet;

/// Default UMEM frame size: holds a 1500-MTU frame after the kernel's receive headroom.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Default RX and fill ring size, in descriptors (see "A deep fill ring" above).
pub const DEFAULT_RX_RING: u32 = 4096;
/// Default TX and completion ring size, in descriptors.
pub const DEFAULT_TX_RING: u32 = 512;
/// Default number of `bind` attempts while the queue is busy.
pub const DEFAULT_BIND_RETRIES: u32 = 40;
/// Wait between `bind` attempts: with the default retries, about 2 s in all.
pub const BIND_RETRY_WAIT: Duration = Duration::from_millis(50);
/// Bytes the kernel keeps in front of a received frame in its UMEM frame (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: u32 = 256;
/// Smallest UMEM frame the kernel accepts (`XDP_UMEM_MIN_CHUNK_SIZE`).
pub const MIN_FRAME_SIZE: u32 = 2048;
/// Largest UMEM frame in aligned mode: a page.
pub const MAX_FRAME_SIZE: u32 = 4096;
/// Largest ring accepted here (the kernel wants powers of two; this bounds the memory).
pub const MAX_RING: u32 = 1 << 15;
/// Most receive queues one port binds.
pub const MAX_QUEUES: u32 = 256;
/// `SOL_XDP`.
const SOL_XDP: libc::c_int = 283;
/// `XDP_OPTIONS` getsockopt.
const XDP_OPTIONS: libc::c_int = 8;
/// `XDP_OPTIONS_ZEROCOPY` in `struct xdp_options`.
const XDP_OPTIONS_ZEROCOPY: u32 = 1;
/// Longest interface name (IFNAMSIZ less the NUL).
const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native mode if the driver takes it, else generic mode.
    #[default]
    Auto,
    /// Generic XDP (`XDP_FLAGS_SKB_MODE`): after the skb is built; works on every device.
    Skb,
    /// Native XDP (`XDP_FLAGS_DRV_MODE`): in the driver, before any skb.
    Drv,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Skb => "skb",
            XdpMode::Drv => "drv",
        })
    }
}

/// How to open an [`AfxdpPort`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfxdpConfig {
    /// The interface, in the calling thread's network namespace.
    pub ifname: String,
    /// Where the XDP program runs.
    pub mode: XdpMode,
    /// UMEM frame size: a power of two from [`MIN_FRAME_SIZE`] to [`MAX_FRAME_SIZE`].
    pub frame_size: u32,
    /// RX ring size (power of two).
    pub rx_ring: u32,
    /// Fill ring size (power of two): frames lent to the kernel for receive.
    pub fill_ring: u32,
    /// TX ring size (power of two): frames lent to the kernel for transmit.
    pub tx_ring: u32,
    /// Completion ring size (power of two, at least the TX ring's).
    pub completion_ring: u32,
    /// Receive queues to bind, from queue 0; `None`: every one the device has
    /// (`ETHTOOL_GCHANNELS`). Frames arriving on a queue above them go to the kernel stack.
    pub queues: Option<u32>,
    /// `bind` attempts while the kernel still holds the queue (`EBUSY`).
    pub bind_retries: u32,
}

impl Default for AfxdpConfig {
    fn default() -> Self {
        AfxdpConfig {
            ifname: String::new(),
            mode: XdpMode::Auto,
            frame_size: DEFAULT_FRAME_SIZE,
            rx_ring: DEFAULT_RX_RING,
            fill_ring: DEFAULT_RX_RING,
            tx_ring: DEFAULT_TX_RING,
            completion_ring: DEFAULT_TX_RING,
            queues: None,
            bind_retries: DEFAULT_BIND_RETRIES,
        }
    }
}

impl AfxdpConfig {
    /// The defaults, on `ifname`, in `mode`.
    pub fn new(ifname: impl Into<String>, mode: XdpMode) -> Self {
        AfxdpConfig {
            ifname: ifname.into(),
            mode,
            ..AfxdpConfig::default()
        }
    }

    fn check(&self) -> Result<(), String> {
        let name = &self.ifname;
        if name.is_empty()
            || name.len() > MAX_IFNAME_LEN
            || name
                .bytes()
                .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
        {
            return Err(format!(
                "interface name must be 1 to {MAX_IFNAME_LEN} bytes without NUL, '/' or spaces"
            ));
        }
        if !self.frame_size.is_power_of_two()
            || !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.frame_size)
        {
            return Err(format!(
                "frame size {} is not a power of two from {MIN_FRAME_SIZE} to {MAX_FRAME_SIZE}",
                self.frame_size
            ));
        }
        for (what, n) in [
            ("RX", self.rx_ring),
            ("fill", self.fill_ring),
            ("TX", self.tx_ring),
            ("completion", self.completion_ring),
        ] {
            if !n.is_power_of_two() || n > MAX_RING {
                return Err(format!(
                    "{what} ring size {n} is not a power of two up to {MAX_RING}"
                ));
            }
        }
        if self.completion_ring < self.tx_ring {
            return Err(format!(
                "completion ring ({}) smaller than the TX ring ({})",
                self.completion_ring, self.tx_ring
            ));
        }
        if let Some(q) = self.queues
            && (q == 0 || q > MAX_QUEUES)
        {
            return Err(format!("queue count {q} is not from 1 to {MAX_QUEUES}"));
        }
        Ok(())
    }
}

/// Why an AF_XDP port could not be opened. Every message names the interface and the step.
#[derive(Debug, thiserror::Error)]
pub enum AfxdpError {
    /// A setting is out of range.
    #[error("afxdp {ifname}: {reason}")]
    Config {
        /// The interface.
        ifname: String,
        /// What is wrong.
        reason: String,
    },
    /// No such interface in the calling thread's namespace.
    #[error("afxdp {ifname}: interface not found")]
    NotFound {
        /// The interface.
        ifname: String,
    },
    /// The device's MTU does not fit a UMEM frame.
    #[error(
        "afxdp {ifname}: MTU {mtu} needs {need}-byte receive frames; a {frame_size}-byte UMEM \
         frame holds {room} after the kernel's headroom"
    )]
    MtuTooLarge {
        /// The interface.
        ifname: String,
        /// Its MTU.
        mtu: u32,
        /// Largest frame at that MTU.
        need: u32,
        /// The configured UMEM frame size.
        frame_size: u32,
        /// Bytes a UMEM frame holds for a received frame.
        room: u32,
    },
    /// The queue count could not be read.
    #[error("afxdp {ifname}: reading the receive queue count: {source}")]
    Channels {
        /// The interface.
        ifname: String,
        /// What ethtool said.
        #[source]
        source: EthtoolError,
    },
    /// A `bpf(2)` step failed.
    #[error("afxdp {ifname}: {step}: {source}")]
    Bpf {
        /// The interface.
        ifname: String,
        /// The step.
        step: String,
        /// The failure.
        #[source]
        source: BpfError,
    },
    /// The XDP program could not be attached.
    #[error("afxdp {ifname}: attach XDP program ({tried}): {source}")]
    Attach {
        /// The interface.
        ifname: String,
        /// The modes tried, with the earlier failures.
        tried: String,
        /// The last failure.
        #[source]
        source: BpfError,
    },
    /// The queue stayed busy through every bind attempt.
    #[error("afxdp {ifname}: bind queue {queue}: device busy after {retries} retries")]
    BindBusy {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
        /// Attempts made.
        retries: u32,
    },
    /// Another system call failed.
    #[error("afxdp {ifname}: {step}: {source}")]
    Os {
        /// The interface.
        ifname: String,
        /// The step (`UMEM registration`, `bind queue 0`, ...).
        step: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

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
    /// Frames queued on a TX ring.
    pub tx_packets: u64,
    /// Bytes queued on a TX ring.
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
    /// The errno of the last failed kick, 0 if none.
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

/// Where a port's UMEM frames are, summed over its queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameUse {
    /// On the free list.
    pub free: u32,
    /// Lent to the kernel for receive (fill ring, being filled, or in the RX ring).
    pub rx: u32,
    /// Lent to the kernel for transmit (TX ring, in flight, or in the completion ring).
    pub tx: u32,
    /// All frames.
    pub total: u32,
}

/// An anonymous, page-aligned mapping: one queue's UMEM.
struct UmemArea {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the area is plain memory owned by one port; the raw pointer is only dereferenced
// through `&self`/`&mut self` methods of the port that owns it.
unsafe impl Send for UmemArea {}

impl UmemArea {
    fn new(len: usize) -> io::Result<UmemArea> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(UmemArea { ptr, len })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    /// The `len` bytes at `addr`, if inside the area.
    #[inline]
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        if start.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: `start..start + len` is inside the mapping (checked above), which lives as long
        // as `self`. The caller reads only frames the kernel handed back through the RX ring,
        // which the kernel does not write until they are given back through the fill ring.
        Some(unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) })
    }

    /// The `len` bytes at `addr`, writable, if inside the area.
    #[inline]
    fn bytes_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let start = usize::try_from(addr).ok()?;
        if start.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: inside the mapping (checked above), and exclusively ours: the caller writes
        // only a free frame, which no ring holds, so the kernel does not touch it.
        Some(unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) })
    }
}

impl Drop for UmemArea {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`; nothing borrows it any more (the
        // rings and sockets of the queue are dropped first). The kernel pinned its own
        // references to the pages when the UMEM was registered.
        unsafe { libc::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// The frames of one UMEM: a free list and the two lending budgets (see the module comment).
#[derive(Debug)]
struct FramePool {
    free: Vec<u64>,
    frame_size: u64,
    total: u32,
    rx_lent: u32,
    rx_cap: u32,
    tx_lent: u32,
    tx_cap: u32,
    /// Addresses given back that were not ours (never seen; counted rather than trusted).
    foreign: u64,
}

impl FramePool {
    /// `rx_cap + tx_cap` frames of `frame_size` bytes, all free.
    fn new(frame_size: u32, rx_cap: u32, tx_cap: u32) -> FramePool {
        let total = rx_cap + tx_cap;
        let frame_size = u64::from(frame_size);
        FramePool {
            free: (0..u64::from(total))
                .rev()
                .map(|i| i * frame_size)
                .collect(),
            frame_size,
            total,
            rx_lent: 0,
            rx_cap,
            tx_lent: 0,
            tx_cap,
            foreign: 0,
        }
    }

    /// Frames the fill ring may still be given.
    #[inline]
    fn rx_budget(&self) -> u32 {
        self.rx_cap - self.rx_lent
    }

    /// Frames transmit may still take.
    #[inline]
    fn tx_budget(&self) -> u32 {
        self.tx_cap - self.tx_lent
    }

    #[inline]
    fn lend_rx(&mut self) -> Option<u64> {
        if self.rx_lent == self.rx_cap {
            return None;
        }
        let a = self.free.pop()?;
        self.rx_lent += 1;
        Some(a)
    }

    #[inline]
    fn lend_tx(&mut self) -> Option<u64> {
        if self.tx_lent == self.tx_cap {
            return None;
        }
        let a = self.free.pop()?;
        self.tx_lent += 1;
        Some(a)
    }

    /// The frame holding `addr` (any address inside it), if it is one of ours.
    #[inline]
    fn frame_of(&self, addr: u64) -> Option<u64> {
        let base = addr - addr % self.frame_size;
        (base < u64::from(self.total) * self.frame_size).then_some(base)
    }

    /// A frame came back through the RX ring.
    #[inline]
    fn return_rx(&mut self, addr: u64) {
        match self.frame_of(addr) {
            Some(base) if self.rx_lent > 0 => {
                self.rx_lent -= 1;
                self.free.push(base);
            }
            _ => self.foreign += 1,
        }
    }

    /// A frame came back through the completion ring.
    #[inline]
    fn return_tx(&mut self, addr: u64) {
        match self.frame_of(addr) {
            Some(base) if self.tx_lent > 0 => {
                self.tx_lent -= 1;
                self.free.push(base);
            }
            _ => self.foreign += 1,
        }
    }

    fn usage(&self) -> FrameUse {
        FrameUse {
            free: self.free.len() as u32,
            rx: self.rx_lent,
            tx: self.tx_lent,
            total: self.total,
        }
    }
}

/// One receive queue: its socket's rings, its UMEM and the UMEM's frames.
struct Queue {
    // Field order is drop order: the rings and the socket go before the memory they point into.
    rx: RingRx,
    tx: RingTx,
    /// Fill and completion rings, and the socket itself.
    dev: DeviceQueue,
    pool: FramePool,
    area: UmemArea,
    fd: RawFd,
}

impl Queue {
    // xdpilone refreshes its cached copy of the kernel's ring head only when the cached copy
    // shows no room (or no entries) at all, so one reservation can come back shorter than what
    // the ring really has: each operation below reserves again until it gets nothing or has
    // what it wants (two rounds at most in practice).

    /// Hand every transmitted frame the completion ring holds back to the free list.
    #[inline]
    fn reap_completions(&mut self) {
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
    fn refill(&mut self) {
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
    fn receive(&mut self, slots: &mut [Packet], st: &mut AfxdpStats) -> usize {
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
    fn transmit(&mut self, pkts: &[Packet], max_len: usize, st: &mut AfxdpStats) -> (usize, usize) {
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
    fn tx_needs_kick(&self) -> bool {
        self.tx.pending() > 0 && self.tx.needs_wakeup()
    }

    /// One `sendto`: in copy mode the kernel transmits inside it.
    #[inline]
    fn kick(&mut self, st: &mut AfxdpStats) {
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

    fn kernel_stats(&self) -> KernelStats {
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

/// An interface's receive queues as one switch port, through AF_XDP sockets.
pub struct AfxdpPort {
    // Field order is drop order: detach the program first, then close the sockets.
    link: XdpLink,
    _prog: XdpProgram,
    _map: XskMap,
    queues: Vec<Queue>,
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
            .field("link_fd", &self.link.as_raw_fd())
            .field("stats", &self.stats)
            .finish()
    }
}

/// What the open sequence needs to name its failures.
struct Ctx<'a> {
    ifname: &'a str,
}

impl Ctx<'_> {
    fn os(&self, step: impl Into<String>, source: io::Error) -> AfxdpError {
        AfxdpError::Os {
            ifname: self.ifname.to_string(),
            step: step.into(),
            source,
        }
    }
    fn xsk(&self, step: impl Into<String>, e: xdpilone::Errno) -> AfxdpError {
        self.os(step, io::Error::from_raw_os_error(e.get_raw().abs()))
    }
    fn bpf(&self, step: impl Into<String>, source: BpfError) -> AfxdpError {
        AfxdpError::Bpf {
            ifname: self.ifname.to_string(),
            step: step.into(),
            source,
        }
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

        let mtu = read_mtu(ifname).map_err(|e| cx.os("reading the MTU", e))?;
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
        let prog = XdpProgram::xsk_redirect(&map).map_err(|e| cx.bpf("load XDP program", e))?;
        let (link, mode) = attach(&cx, &prog, ifindex, cfg.mode)?;

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
        let epoll = if queues.len() > 1 {
            Some(epoll_over(queues.iter().map(|q| q.fd)).map_err(|e| cx.os("epoll", e))?)
        } else {
            None
        };
        Ok(AfxdpPort {
            link,
            _prog: prog,
            _map: map,
            queues,
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

    /// Whether every socket runs in zero-copy mode (never on veth).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Receive queues bound.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
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
        let nq = self.queues.len();
        let mut n = 0;
        let mut kicked = false;
        // Start at a different queue each call, so a busy queue cannot starve the others.
        for k in 0..nq {
            let q = &mut self.queues[(self.next_rx + k) % nq];
            q.reap_completions();
            if n < spare.len() {
                n += q.receive(&mut spare[n..], &mut self.stats);
            }
            q.refill();
            if kicked {
                continue;
            }
            if q.dev.needs_wakeup() {
                // Only a zero-copy driver asks: copy mode takes fill frames as frames arrive.
                self.stats.fill_wakeups += 1;
                q.dev.wake();
                kicked = true;
            } else if q.tx_needs_kick() {
                // Descriptors left on the TX ring by the last kick (it sends 32 at most).
                q.kick(&mut self.stats);
                kicked = true;
            }
        }
        self.next_rx = if self.next_rx + 1 >= nq {
            0
        } else {
            self.next_rx + 1
        };
        batch.grow(n);
        n
    }

    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        let pkts = batch.pkts();
        let (mut seen, mut queued) = (0, 0);
        // Any queue's TX ring reaches the same wire: the first one, then the next when full.
        for q in &mut self.queues {
            if seen == pkts.len() {
                break;
            }
            q.reap_completions();
            let (put, looked) = q.transmit(&pkts[seen..], self.max_tx_len, &mut self.stats);
            seen += looked;
            queued += put;
            if put > 0 {
                if q.tx.needs_wakeup() {
                    q.kick(&mut self.stats);
                }
                // Copy mode completes inside the kick: take the frames back at once.
                q.reap_completions();
            }
        }
        self.stats.tx_ring_full += (pkts.len() - seen) as u64;
        queued
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

/// Attach `prog` in `mode` (Auto: driver mode, else generic); the mode it took.
fn attach(
    cx: &Ctx<'_>,
    prog: &XdpProgram,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(XdpLink, XdpMode), AfxdpError> {
    let try_mode = |m: XdpMode| {
        let flags = match m {
            XdpMode::Drv => XDP_FLAGS_DRV_MODE,
            _ => XDP_FLAGS_SKB_MODE,
        };
        XdpLink::attach(prog, ifindex, flags)
    };
    let err = |tried: String, source: BpfError| {
        // A link never replaces a program someone else attached: say so, it is the usual cause.
        let taken = matches!(
            source.os_error().raw_os_error(),
            Some(libc::EBUSY | libc::EEXIST)
        );
        AfxdpError::Attach {
            ifname: cx.ifname.to_string(),
            tried: if taken {
                format!("{tried}; the interface already has an XDP program")
            } else {
                tried
            },
            source,
        }
    };
    match mode {
        XdpMode::Skb | XdpMode::Drv => try_mode(mode)
            .map(|l| (l, mode))
            .map_err(|e| err(format!("{mode} mode"), e)),
        XdpMode::Auto => match try_mode(XdpMode::Drv) {
            Ok(l) => Ok((l, XdpMode::Drv)),
            Err(drv) => try_mode(XdpMode::Skb)
                .map(|l| (l, XdpMode::Skb))
                .map_err(|e| err(format!("drv mode failed: {drv}; then skb mode"), e)),
        },
    }
}

/// Map a UMEM for queue `q`, make its socket and rings, bind it (retrying while busy), and
/// lend the fill ring its frames. Also returns how many binds were refused as busy.
fn open_queue(
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

/// `SIOCGIFMTU` in the calling thread's namespace.
fn read_mtu(ifname: &str) -> io::Result<u32> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU of a live, exclusively borrowed ifreq.
    if unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFMTU,
            &mut req as *mut libc::ifreq,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU just wrote the mtu member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::other(format!("negative MTU {mtu}")))
}

/// Whether the socket was bound in zero-copy mode (`XDP_OPTIONS`).
fn is_zero_copy(fd: RawFd) -> bool {
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

/// An epoll descriptor, readable when any of `fds` is.
fn epoll_over(fds: impl Iterator<Item = RawFd>) -> io::Result<OwnedFd> {
    // SAFETY: plain epoll_create1 call; the result is checked before use.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(raw) };
    for fd in fds {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `ev` is a live epoll_event; `fd` is a socket the port keeps open as long as
        // the epoll descriptor.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_name_sizes_and_rings() {
        let ok = AfxdpConfig::new("vc11", XdpMode::Skb);
        assert_eq!(ok.check(), Ok(()));
        let bad = [
            AfxdpConfig::new("", XdpMode::Auto),
            AfxdpConfig::new("a-name-far-too-long", XdpMode::Auto),
            AfxdpConfig::new("a/b", XdpMode::Auto),
            AfxdpConfig {
                frame_size: 3000,
                ..ok.clone()
            },
            AfxdpConfig {
                frame_size: 1024,
                ..ok.clone()
            },
            AfxdpConfig {
                frame_size: 8192,
                ..ok.clone()
            },
            AfxdpConfig {
                rx_ring: 1000,
                ..ok.clone()
            },
            AfxdpConfig {
                fill_ring: 0,
                ..ok.clone()
            },
            AfxdpConfig {
                completion_ring: DEFAULT_TX_RING / 2,
                ..ok.clone()
            },
            AfxdpConfig {
                queues: Some(0),
                ..ok.clone()
            },
        ];
        for c in bad {
            let e = AfxdpPort::open(&c).unwrap_err();
            assert!(matches!(e, AfxdpError::Config { .. }), "{c:?}: {e}");
            assert!(e.to_string().starts_with("afxdp "), "{e}");
        }
    }

    #[test]
    fn a_missing_interface_is_named() {
        let e = AfxdpPort::open(&AfxdpConfig::new("vxnosuch0", XdpMode::Auto)).unwrap_err();
        assert_eq!(e.to_string(), "afxdp vxnosuch0: interface not found");
    }

    #[test]
    fn error_messages_name_the_interface_and_step() {
        let e = AfxdpError::BindBusy {
            ifname: "vc11".into(),
            queue: 0,
            retries: 40,
        };
        assert_eq!(
            e.to_string(),
            "afxdp vc11: bind queue 0: device busy after 40 retries"
        );
        assert_eq!(XdpMode::Drv.to_string(), "drv");
    }

    /// Every lending path gives the frame back; the budgets hold; nothing is lost.
    #[test]
    fn frame_pool_lends_within_budgets_and_never_loses_a_frame() {
        let mut p = FramePool::new(2048, 4, 2);
        let total = |p: &FramePool| {
            let u = p.usage();
            u.free + u.rx + u.tx
        };
        assert_eq!(p.usage().total, 6);
        let rx: Vec<u64> = (0..4).map(|_| p.lend_rx().unwrap()).collect();
        assert_eq!(p.lend_rx(), None, "receive budget spent");
        assert_eq!(p.rx_budget(), 0);
        // transmit still has its own frames while every receive frame is lent
        let tx: Vec<u64> = (0..2).map(|_| p.lend_tx().unwrap()).collect();
        assert_eq!(p.lend_tx(), None);
        assert_eq!(total(&p), 6);
        // the kernel reports an address inside the frame (after its headroom)
        p.return_rx(rx[0] + u64::from(XDP_PACKET_HEADROOM));
        assert_eq!(p.rx_budget(), 1);
        for a in &rx[1..] {
            p.return_rx(*a + 300);
        }
        for a in &tx {
            p.return_tx(*a);
        }
        assert_eq!(
            p.usage(),
            FrameUse {
                free: 6,
                rx: 0,
                tx: 0,
                total: 6
            }
        );
        // every frame came back whole: six distinct frame starts
        let mut free = p.free.clone();
        free.sort_unstable();
        assert_eq!(free, (0..6).map(|i| i * 2048).collect::<Vec<_>>());
        // a foreign address or an unasked-for return is counted, not trusted
        p.return_tx(6 * 2048);
        p.return_rx(0);
        assert_eq!(p.foreign, 2);
        assert_eq!(p.usage().free, 6);
    }

    #[test]
    fn the_umem_area_checks_bounds() {
        let mut a = UmemArea::new(4096).unwrap();
        assert!(a.bytes(0, 4096).is_some());
        assert!(a.bytes(4000, 97).is_none());
        assert!(a.bytes(u64::MAX, 1).is_none());
        a.bytes_mut(2048, 4).unwrap().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(a.bytes(2048, 4).unwrap(), &[1, 2, 3, 4]);
        assert!(a.bytes_mut(4096, 1).is_none());
    }
}
