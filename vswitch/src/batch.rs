//! Batches: the unit every stage and port works on.
//!
//! A port fills a batch on receive, the stages of the port's path each run over the whole batch
//! (run to completion, as VPP and OVS do), and the switch then moves every packet to its output.
//! A batch owns its packet buffers for its whole life; moving a packet from a receive batch to a
//! port's transmit batch swaps the two slots, so no buffer is ever allocated on the packet path.

use crate::packet::{DEFAULT_BUF_SIZE, FrameTooBig, Meta, Next, Packet};

/// Default number of frames per batch.
pub const BATCH_SIZE: usize = 32;
/// Largest batch: the pipeline tracks a batch's live packets in a 64-bit mask.
pub const MAX_BATCH: usize = 64;

/// Up to [`MAX_BATCH`] packets, processed together.
pub struct Batch {
    pkts: Box<[Packet]>,
    len: usize,
    /// Set when at least one packet of the batch is marked for tracing.
    pub traced: bool,
}

impl Batch {
    /// A batch of `cap` packets with default-size buffers.
    pub fn new(cap: usize) -> Self {
        Batch::with_buf_size(cap, DEFAULT_BUF_SIZE)
    }

    /// A batch of `cap` packets (clamped to 1..=MAX_BATCH) with `buf_size`-byte buffers.
    pub fn with_buf_size(cap: usize, buf_size: usize) -> Self {
        let cap = cap.clamp(1, MAX_BATCH);
        let pkts = (0..cap)
            .map(|_| Packet::with_capacity(buf_size))
            .collect::<Vec<_>>();
        Batch {
            pkts: pkts.into_boxed_slice(),
            len: 0,
            traced: false,
        }
    }

    /// Touch every page of every buffer, so that the first packets through a batch built off the
    /// packet thread take no page fault there (a fault may wait for the process's memory map
    /// while another thread changes it).
    pub fn prefault(&mut self) {
        const PAGE: usize = 4096;
        for p in self.pkts.iter_mut() {
            let buf = p.buf_mut();
            for i in (0..buf.len()).step_by(PAGE) {
                // SAFETY: `i` is within `buf`; a volatile write of the zero already there keeps
                // the compiler from removing the touch.
                unsafe { std::ptr::write_volatile(buf.as_mut_ptr().add(i), 0) };
            }
        }
    }

    /// Packets in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum packets.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.pkts.len()
    }

    /// Whether no slot is free.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.pkts.len()
    }

    /// Empty the batch (buffers are kept).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
        self.traced = false;
    }

    /// The packets.
    #[inline]
    pub fn pkts(&self) -> &[Packet] {
        &self.pkts[..self.len]
    }

    /// The packets, writable.
    #[inline]
    pub fn pkts_mut(&mut self) -> &mut [Packet] {
        &mut self.pkts[..self.len]
    }

    /// The packets that no stage has decided on yet, with their index in the batch.
    #[inline]
    pub fn active_mut(&mut self) -> impl Iterator<Item = (usize, &mut Packet)> {
        self.pkts[..self.len]
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| p.meta.next == Next::Continue)
    }

    /// The free slots after the last packet, for a port's receive path to fill; then call
    /// [`Batch::grow`] with how many it filled.
    #[inline]
    pub fn spare_mut(&mut self) -> &mut [Packet] {
        &mut self.pkts[self.len..]
    }

    /// Count `n` more slots (just filled through [`Batch::spare_mut`]) as packets.
    #[inline]
    pub fn grow(&mut self, n: usize) {
        self.len = (self.len + n).min(self.pkts.len());
    }

    /// Append a copy of `frame`; the packet's metadata starts at its defaults.
    pub fn push_frame(&mut self, frame: &[u8]) -> Result<&mut Packet, PushError> {
        if self.is_full() {
            return Err(PushError::Full);
        }
        let slot = &mut self.pkts[self.len];
        slot.set_frame(frame).map_err(PushError::TooBig)?;
        self.len += 1;
        Ok(slot)
    }

    /// Append a copy of `pkt` (frame and metadata).
    #[inline]
    pub fn push_copy(&mut self, pkt: &Packet) -> Result<&mut Packet, PushError> {
        if self.is_full() {
            return Err(PushError::Full);
        }
        let slot = &mut self.pkts[self.len];
        slot.copy_from(pkt).map_err(PushError::TooBig)?;
        self.len += 1;
        Ok(slot)
    }

    /// Append a frame written in place by `fill`, which gets the slot's whole area after the
    /// standard headroom and returns the frame's length, or `None` when it does not fit (then
    /// nothing is appended). The packet gets `meta`.
    #[inline]
    pub fn push_with(
        &mut self,
        meta: Meta,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<&mut Packet, PushError> {
        if self.is_full() {
            return Err(PushError::Full);
        }
        let slot = &mut self.pkts[self.len];
        let room = slot.data_room();
        let Some(n) = fill(slot.rx_area()) else {
            return Err(PushError::TooBig(FrameTooBig { len: 0, room }));
        };
        if !slot.set_len(n) {
            return Err(PushError::TooBig(FrameTooBig { len: n, room }));
        }
        slot.meta = meta;
        self.len += 1;
        Ok(slot)
    }

    /// Move `pkt` into the next slot by swapping buffers: `pkt` is left holding the slot's
    /// spare buffer (its contents are unspecified). No copy; false if the batch is full.
    #[inline]
    pub fn push_swap(&mut self, pkt: &mut Packet) -> bool {
        if self.is_full() {
            return false;
        }
        core::mem::swap(&mut self.pkts[self.len], pkt);
        self.len += 1;
        true
    }

    /// Keep only the packets for which `keep` is true, in order (their buffers move to the
    /// front by swapping; the others' buffers stay in the batch as spare slots).
    #[inline]
    pub fn retain(&mut self, mut keep: impl FnMut(&Packet) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            if keep(&self.pkts[i]) {
                if i != kept {
                    self.pkts.swap(i, kept);
                }
                kept += 1;
            }
        }
        self.len = kept;
    }

    /// The last packet, writable.
    #[inline]
    pub fn last_mut(&mut self) -> Option<&mut Packet> {
        self.pkts[..self.len].last_mut()
    }

    /// Remove the first `n` packets, keeping the rest in order (for a partial transmit).
    #[cfg(test)]
    pub fn consume_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.pkts[..self.len].rotate_left(n);
        self.len -= n;
    }
}

impl core::ops::Index<usize> for Batch {
    type Output = Packet;
    #[inline]
    fn index(&self, i: usize) -> &Packet {
        &self.pkts[..self.len][i]
    }
}

impl core::ops::IndexMut<usize> for Batch {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut Packet {
        &mut self.pkts[..self.len][i]
    }
}

/// Why a packet could not be appended to a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Every slot is in use.
    #[error("batch is full")]
    Full,
    /// The frame is larger than a buffer.
    #[error(transparent)]
    TooBig(#[from] FrameTooBig),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_with_appends_only_what_fits() {
        let mut b = Batch::new(2);
        let m = Meta::default();
        b.push_with(m, |area| {
            area[..3].copy_from_slice(&[7, 8, 9]);
            Some(3)
        })
        .unwrap();
        assert!(matches!(
            b.push_with(m, |_| None),
            Err(PushError::TooBig(FrameTooBig { len: 0, .. }))
        ));
        // A length past the buffer is refused, not appended with a stale length.
        assert!(matches!(
            b.push_with(m, |area| Some(area.len() + 1)),
            Err(PushError::TooBig(_))
        ));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].data(), &[7, 8, 9]);
    }

    #[test]
    fn swap_moves_packets_without_losing_buffers() {
        let mut rx = Batch::new(4);
        let mut tx = Batch::new(4);
        rx.push_frame(&[1; 60]).unwrap();
        rx.push_frame(&[2; 60]).unwrap();
        assert!(tx.push_swap(&mut rx[1]));
        assert_eq!(tx[0].data(), &[2; 60]);
        rx.clear();
        // every slot of both batches still owns a buffer
        for _ in 0..4 {
            rx.push_frame(&[3; 1500]).unwrap();
        }
        assert_eq!(rx.push_frame(&[3; 60]).unwrap_err(), PushError::Full);
        assert!(rx.pkts().iter().all(|p| p.data() == [3; 1500]));
    }

    #[test]
    fn consume_front_keeps_the_rest_in_order() {
        let mut b = Batch::new(8);
        for i in 0..5u8 {
            b.push_frame(&[i; 20]).unwrap();
        }
        b.consume_front(2);
        let firsts: Vec<u8> = b.pkts().iter().map(|p| p.data()[0]).collect();
        assert_eq!(firsts, vec![2, 3, 4]);
    }

    #[test]
    fn capacity_is_clamped() {
        assert_eq!(Batch::new(0).capacity(), 1);
        assert_eq!(Batch::new(1000).capacity(), MAX_BATCH);
    }
}
