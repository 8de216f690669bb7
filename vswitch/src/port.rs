//! Ports: where batches enter and leave the switch.
//!
//! A [`Port`] receives into the free slots of a batch and transmits a batch, both non-blocking,
//! one call per batch. This module has the in-memory ports for tests, benches and examples: [`MemPort`] (frames injected and
//! collected through a [`MemHandle`]), [`GenPort`] (replays a set of frames forever, no
//! allocation: a traffic generator for benches) and [`SinkPort`] (counts and discards). The
//! kernel-backed ports are [`crate::afxdp`] (no syscall to receive, one `sendto` per queue used
//! to transmit in copy mode), [`crate::tap`] (one `readv`/`writev` per frame: a TAP has no
//! batch call) and `vxlan::UdpPort` (one `recvmmsg`/`sendmmsg` per batch).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use crate::batch::Batch;

/// A source and sink of frames.
pub trait Port: Send {
    /// Receive into `batch`'s free slots (see [`Batch::spare_mut`]); returns how many arrived.
    fn rx_burst(&mut self, batch: &mut Batch) -> usize;
    /// Transmit the frames of `batch`; returns how many were accepted (the rest are dropped by
    /// the caller and counted). The caller clears the batch.
    fn tx_burst(&mut self, batch: &mut Batch) -> usize;
    /// Whether the port takes frames with offload work left ([`crate::offload`]: partial
    /// checksums, TCP super-frames) as they are. For the others the switch finishes that work in
    /// software before handing frames over.
    fn offloads(&self) -> bool {
        false
    }
    /// A file descriptor to wait on for receive readiness when idle, if the port has one.
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
    /// Port-specific counters, as (name, value).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// For `capture`: append `frame` (received, or queued for transmit when `tx`) to `out` as an
    /// Ethernet frame. Ports whose frames are not Ethernet on the wire (the UDP underlay) rebuild
    /// the headers the kernel adds, so a pcap of any port reads the same in tshark.
    fn capture_frame(&self, frame: &[u8], _tx: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(frame);
    }
}

#[derive(Default)]
struct MemQueues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    rx_too_big: u64,
}

/// An in-memory port: the test injects frames through its [`MemHandle`] and collects what the
/// switch transmitted. One lock per batch, not per packet.
pub struct MemPort {
    q: Arc<Mutex<MemQueues>>,
    /// Accept at most this many frames per transmit (to test partial transmits).
    pub tx_limit: usize,
}

/// The test's end of a [`MemPort`].
#[derive(Clone)]
pub struct MemHandle {
    q: Arc<Mutex<MemQueues>>,
}

impl MemPort {
    /// A port and its handle.
    pub fn new() -> (MemPort, MemHandle) {
        let q = Arc::new(Mutex::new(MemQueues::default()));
        (
            MemPort {
                q: q.clone(),
                tx_limit: usize::MAX,
            },
            MemHandle { q },
        )
    }
}

impl MemHandle {
    /// Queue a frame for the switch to receive.
    pub fn inject(&self, frame: &[u8]) {
        self.q
            .lock()
            .expect("mem port lock")
            .rx
            .push_back(frame.to_vec());
    }
    /// Take every frame the switch transmitted so far.
    pub fn take_tx(&self) -> Vec<Vec<u8>> {
        core::mem::take(&mut self.q.lock().expect("mem port lock").tx)
    }
    /// Frames still waiting to be received.
    pub fn rx_pending(&self) -> usize {
        self.q.lock().expect("mem port lock").rx.len()
    }
}

impl Port for MemPort {
    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        let mut q = self.q.lock().expect("mem port lock");
        let spare = batch.spare_mut();
        let mut n = 0;
        while n < spare.len() {
            let Some(frame) = q.rx.pop_front() else { break };
            // A frame too big for a buffer is counted and skipped; slots fill in order.
            match spare[n].set_frame(&frame) {
                Ok(()) => n += 1,
                Err(_) => q.rx_too_big += 1,
            }
        }
        batch.grow(n);
        n
    }
    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        let n = batch.len().min(self.tx_limit);
        let mut q = self.q.lock().expect("mem port lock");
        q.tx.extend(batch.pkts()[..n].iter().map(|p| p.data().to_vec()));
        n
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![(
            "rx_too_big",
            self.q.lock().expect("mem port lock").rx_too_big,
        )]
    }
}

/// Replays a fixed set of frames forever: a traffic generator that allocates nothing.
pub struct GenPort {
    frames: Vec<Vec<u8>>,
    next: usize,
    /// Frames per receive call (at most the batch's free slots).
    pub burst: usize,
}

impl GenPort {
    /// A generator cycling through `frames`, `burst` at a time.
    pub fn new(frames: Vec<Vec<u8>>, burst: usize) -> GenPort {
        assert!(!frames.is_empty(), "a generator needs at least one frame");
        GenPort {
            frames,
            next: 0,
            burst,
        }
    }
}

impl Port for GenPort {
    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        let spare = batch.spare_mut();
        let want = self.burst.min(spare.len());
        let mut n = 0;
        for _ in 0..want {
            if spare[n].set_frame(&self.frames[self.next]).is_ok() {
                n += 1;
            }
            self.next += 1;
            if self.next == self.frames.len() {
                self.next = 0;
            }
        }
        batch.grow(n);
        n
    }
    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        batch.len()
    }
}

/// Counts what it is given and discards it.
#[derive(Default)]
pub struct SinkPort {
    /// Frames transmitted.
    pub packets: Arc<std::sync::atomic::AtomicU64>,
}

impl Port for SinkPort {
    fn rx_burst(&mut self, _batch: &mut Batch) -> usize {
        0
    }
    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        self.packets
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        batch.len()
    }
}
