//! In-memory ports for tests, benches, examples and simulation: no device, no privileges.
//!
//! Where it sits: at either end of the switch, where a kernel-backed port would be. [`MemPort`]
//! takes frames injected through its [`MemHandle`] and keeps what the switch transmitted;
//! [`GenPort`] replays a set of frames forever without allocating (a traffic generator for
//! benches); [`SinkPort`] counts and discards. They follow the contract of [`Port`] like any
//! driver: receive fills the batch's free slots in order, transmit copies out and never keeps a
//! buffer.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Port;
use crate::batch::Batch;

#[derive(Default)]
struct MemQueues {
    /// Frames to receive, with the underlay peer to record in `meta.peer` (a MemPort standing
    /// in for the UDP underlay).
    rx: VecDeque<(Vec<u8>, Option<SocketAddrV4>)>,
    /// Frames transmitted, with their `meta.peer`.
    tx: Vec<(Option<SocketAddrV4>, Vec<u8>)>,
    rx_too_big: u64,
}

/// An in-memory port: the test injects frames through its [`MemHandle`] and collects what the
/// switch transmitted. One lock per batch, not per packet.
pub struct MemPort {
    q: Arc<Mutex<MemQueues>>,
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
        (MemPort { q: q.clone() }, MemHandle { q })
    }
}

impl MemHandle {
    /// Queue a frame for the switch to receive.
    pub fn inject(&self, frame: &[u8]) {
        self.push_rx(frame, None);
    }
    /// Queue a frame for the switch to receive as a datagram from `peer`, as the UDP underlay
    /// would (the port records `peer` in `meta.peer`).
    pub fn inject_from(&self, frame: &[u8], peer: SocketAddrV4) {
        self.push_rx(frame, Some(peer));
    }
    fn push_rx(&self, frame: &[u8], peer: Option<SocketAddrV4>) {
        self.q
            .lock()
            .expect("mem port lock")
            .rx
            .push_back((frame.to_vec(), peer));
    }
    /// Take every frame the switch transmitted so far.
    pub fn take_tx(&self) -> Vec<Vec<u8>> {
        self.take_tx_to().into_iter().map(|(_, f)| f).collect()
    }
    /// Take every frame the switch transmitted so far, with the underlay peer it was sent to
    /// (`meta.peer`, set by `vxlan-encap`).
    pub fn take_tx_to(&self) -> Vec<(Option<SocketAddrV4>, Vec<u8>)> {
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
            let Some((frame, peer)) = q.rx.pop_front() else {
                break;
            };
            // A frame too big for a buffer is counted and skipped; slots fill in order.
            match spare[n].set_frame(&frame) {
                Ok(()) => {
                    spare[n].meta.peer = peer;
                    n += 1;
                }
                Err(_) => q.rx_too_big += 1,
            }
        }
        batch.grow(n);
        n
    }
    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        let n = batch.len();
        let mut q = self.q.lock().expect("mem port lock");
        q.tx.extend(
            batch.pkts()[..n]
                .iter()
                .map(|p| (p.meta.peer, p.data().to_vec())),
        );
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
    /// The underlay peer every frame comes from (`meta.peer`), when the generator stands in
    /// for the UDP underlay.
    pub peer: Option<SocketAddrV4>,
}

impl GenPort {
    /// A generator cycling through `frames`, `burst` at a time.
    pub fn new(frames: Vec<Vec<u8>>, burst: usize) -> GenPort {
        assert!(!frames.is_empty(), "a generator needs at least one frame");
        GenPort {
            frames,
            next: 0,
            burst,
            peer: None,
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
                if self.peer.is_some() {
                    spare[n].meta.peer = self.peer;
                }
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
    pub packets: Arc<AtomicU64>,
}

impl Port for SinkPort {
    fn rx_burst(&mut self, _batch: &mut Batch) -> usize {
        0
    }
    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        self.packets
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch.len()
    }
}
