//! One queue's UMEM: the mapped memory the kernel reads and writes frames in, and the
//! accounting of its frames (free, lent for receive, lent for transmit).
//!
//! Where it sits: under the AF_XDP rings. A received frame is copied out of the UMEM into a
//! [`Packet`](crate::Packet) and its frame goes back to the free list at once; a transmitted one
//! is copied in and its frame comes back through the completion ring. See "Frame budget, never
//! a leak" in [`super`].

use std::ffi::c_void;
use std::io;
use std::ptr::NonNull;

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
pub(super) struct UmemArea {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the area is plain memory owned by one port; the raw pointer is only dereferenced
// through `&self`/`&mut self` methods of the port that owns it.
unsafe impl Send for UmemArea {}

impl UmemArea {
    /// A fresh mapping of `len` bytes, populated.
    pub(super) fn new(len: usize) -> io::Result<UmemArea> {
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

    /// The whole mapping, for UMEM registration.
    pub(super) fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    /// The `len` bytes at `addr`, if inside the area.
    #[inline]
    pub(super) fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
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
    pub(super) fn bytes_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
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
pub(super) struct FramePool {
    free: Vec<u64>,
    frame_size: u64,
    pub(super) total: u32,
    rx_lent: u32,
    rx_cap: u32,
    pub(super) tx_lent: u32,
    tx_cap: u32,
    /// Addresses given back that were not ours (never seen; counted rather than trusted).
    pub(super) foreign: u64,
}

impl FramePool {
    /// `rx_cap + tx_cap` frames of `frame_size` bytes, all free.
    pub(super) fn new(frame_size: u32, rx_cap: u32, tx_cap: u32) -> FramePool {
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
    pub(super) fn rx_budget(&self) -> u32 {
        self.rx_cap - self.rx_lent
    }

    /// Frames transmit may still take.
    #[inline]
    pub(super) fn tx_budget(&self) -> u32 {
        self.tx_cap - self.tx_lent
    }

    /// A free frame for the fill ring, within the receive budget.
    #[inline]
    pub(super) fn lend_rx(&mut self) -> Option<u64> {
        lend(&mut self.free, &mut self.rx_lent, self.rx_cap)
    }

    /// A free frame for transmit, within the transmit budget.
    #[inline]
    pub(super) fn lend_tx(&mut self) -> Option<u64> {
        lend(&mut self.free, &mut self.tx_lent, self.tx_cap)
    }

    /// The frame holding `addr` (any address inside it), if it is one of ours.
    #[inline]
    fn frame_of(&self, addr: u64) -> Option<u64> {
        let base = addr - addr % self.frame_size;
        (base < u64::from(self.total) * self.frame_size).then_some(base)
    }

    /// A frame came back through the RX ring.
    #[inline]
    pub(super) fn return_rx(&mut self, addr: u64) {
        let base = self.frame_of(addr);
        take_back(&mut self.free, &mut self.rx_lent, &mut self.foreign, base);
    }

    /// A frame came back through the completion ring.
    #[inline]
    pub(super) fn return_tx(&mut self, addr: u64) {
        let base = self.frame_of(addr);
        take_back(&mut self.free, &mut self.tx_lent, &mut self.foreign, base);
    }

    pub(super) fn usage(&self) -> FrameUse {
        FrameUse {
            free: self.free.len() as u32,
            rx: self.rx_lent,
            tx: self.tx_lent,
            total: self.total,
        }
    }
}

/// Takes a frame off `free` for a budget with `lent` of its `cap` frames out (none when the
/// budget is spent or no frame is free).
#[inline]
fn lend(free: &mut Vec<u64>, lent: &mut u32, cap: u32) -> Option<u64> {
    if *lent == cap {
        return None;
    }
    let a = free.pop()?;
    *lent += 1;
    Some(a)
}

/// Puts the frame at `base` back on `free` for a budget with `lent` frames out; an address that
/// is not one of ours (`base` is `None`), or one the budget never lent, counts as `foreign`.
#[inline]
fn take_back(free: &mut Vec<u64>, lent: &mut u32, foreign: &mut u64, base: Option<u64>) {
    match base {
        Some(base) if *lent > 0 => {
            *lent -= 1;
            free.push(base);
        }
        _ => *foreign += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::afxdp::XDP_PACKET_HEADROOM;

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
