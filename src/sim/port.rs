//! The simulated node's ports: where a real node has AF_XDP, TAP and UDP sockets, each port of
//! a simulated one is a [`SimPort`], whose queues the simulator fills with the frames it is to
//! receive and empties of those it sent, reaching it through the switch
//! ([`Switch::port_mut`](vswitch::Switch::port_mut)) between polls: no lock. The one thing
//! shared is a node's [`SentMask`], where a port that transmitted sets its bit, so the
//! simulator visits only those. Frames are copied into and out of flat byte arenas that keep
//! their capacity, so a running simulation allocates nothing per packet.

use std::net::SocketAddrV4;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vswitch::{Batch, Port, PortId, Switch};

/// Frames in a flat arena: each one's peer and byte range.
#[derive(Default)]
pub struct Frames {
    /// (the underlay peer, the frame's bytes in `bytes`).
    index: Vec<(Option<SocketAddrV4>, Range<usize>)>,
    /// The frames' bytes, one after the other.
    bytes: Vec<u8>,
}

impl Frames {
    /// Append a frame.
    pub fn push(&mut self, peer: Option<SocketAddrV4>, data: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.index.push((peer, start..self.bytes.len()));
    }

    /// Forget every frame (the arenas keep their capacity).
    pub fn clear(&mut self) {
        self.index.clear();
        self.bytes.clear();
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Frame `i`: its peer and bytes.
    pub fn get(&self, i: usize) -> (Option<SocketAddrV4>, &[u8]) {
        let (peer, r) = &self.index[i];
        (*peer, &self.bytes[r.clone()])
    }
}

/// Which ports of a node transmitted since the simulator last looked: bit `k` for port `k`,
/// bit 63 for any port from 63 up.
#[derive(Clone, Default)]
pub struct SentMask(Arc<AtomicU64>);

impl SentMask {
    /// The bit of port `k`.
    pub fn bit(k: usize) -> u64 {
        1 << k.min(63)
    }

    /// Take the ports that transmitted (the mask starts over).
    pub fn take(&self) -> u64 {
        // One thread runs the simulation (ports and simulator alike): a load and a store, no
        // locked read-modify-write.
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(0, Ordering::Relaxed);
        v
    }

    /// Set bit `bit`.
    fn set(&self, bit: u64) {
        let v = self.0.load(Ordering::Relaxed);
        if v & bit == 0 {
            self.0.store(v | bit, Ordering::Relaxed);
        }
    }
}

/// One port of a simulated node: frames to receive, frames it sent.
pub struct SimPort {
    rx: Frames,
    taken: usize,
    /// What the switch sent on it, in order.
    pub tx: Frames,
    /// Frames too big for the switch's buffers, skipped on receive.
    too_big: u64,
    sent: SentMask,
    bit: u64,
}

impl SimPort {
    /// Port number `k` of a node whose ports share `sent`.
    pub fn new(k: usize, sent: SentMask) -> SimPort {
        SimPort {
            rx: Frames::default(),
            taken: 0,
            tx: Frames::default(),
            too_big: 0,
            sent,
            bit: SentMask::bit(k),
        }
    }

    /// Queue `data` for the switch to receive, from underlay peer `peer` if any.
    pub fn inject(&mut self, peer: Option<SocketAddrV4>, data: &[u8]) {
        self.rx.push(peer, data);
    }

    /// The simulator's port `id` of `sw` (every port of a simulated node is one).
    pub fn of(sw: &mut Switch, id: PortId) -> &mut SimPort {
        sw.port_mut(id)
            .and_then(|p| p.as_any_mut())
            .and_then(|a| a.downcast_mut::<SimPort>())
            .expect("every port of a simulated node is a SimPort")
    }
}

impl Port for SimPort {
    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        let spare = batch.spare_mut();
        let mut n = 0;
        while n < spare.len() && self.taken < self.rx.len() {
            let (peer, data) = self.rx.get(self.taken);
            self.taken += 1;
            // A frame too big for a buffer is counted and skipped; slots fill in order.
            match spare[n].set_frame(data) {
                Ok(()) => {
                    spare[n].meta.peer = peer;
                    n += 1;
                }
                Err(_) => self.too_big += 1,
            }
        }
        if self.taken == self.rx.len() {
            self.rx.clear();
            self.taken = 0;
        }
        batch.grow(n);
        n
    }

    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        for p in batch.pkts() {
            self.tx.push(p.meta.peer, p.data());
        }
        self.sent.set(self.bit);
        batch.len()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("rx_too_big", self.too_big)]
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}
