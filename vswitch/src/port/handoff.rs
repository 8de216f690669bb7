//! Hand-off between poll threads: how a node runs its switch on N workers, each a full switch
//! of its own (tables, connection tracking, no lock between them), with the ports shared out.
//!
//! Where it sits: around the drivers, at both ends of every worker's packet path. Each worker
//! builds the same switch (the same ports in the same order, so a port's id is the same on
//! every worker). A port is either
//!
//! - **owned** by one worker (a container's AF_XDP socket or TAP, an ingress): that worker's
//!   switch holds the driver; the others hold a stand-in of the same name and id, or
//! - **per worker** (the UDP underlay): every worker opens its own (`SO_REUSEPORT` for a real
//!   socket) and the kernel spreads the datagrams over them.
//!
//! Both kinds are a [`Steered`] port around the driver (or around nothing, for a stand-in):
//!
//! ```text
//! worker A                                          worker B (owner of c12)
//! ... l2-fwd ─► output ─► c12 stand-in.tx_burst ──tx ring──► c12.rx_burst: driver tx
//! c11.rx_burst ◄──rx ring of c12, worker A── c12.rx_burst: driver rx, frame to c11's MAC
//!   (frames B received on c12 for a destination A owns enter A's path as received on c12)
//! ```
//!
//! **Connection tracking stays right by steering on destination.** A connection's entry lives
//! on the worker that saw its first packet: the one that owns the client's port (or the
//! ingress's, for the routing mesh). Every frame a worker receives whose destination belongs to
//! another worker (a container's MAC, or an address the node translates to, such as the
//! ingress's load-balancer address) is handed to that worker *before* any stage, and enters its
//! pipeline as if received there on the same port, so the reply direction meets the entry
//! (VPP's NAT hand-off nodes do the same with the worker that owns the session). The map from
//! destination to worker is a [`SteerMap`], built by the control plane from the plan. Frames to
//! anything else (a VIP, a remote container, broadcast) are processed where they arrive.
//!
//! **No copy, no lock, no allocation per packet, one queue operation per burst.** Frames move
//! between workers a burst at a time: a burst is a [`Batch`] from the mesh's pool, the frames
//! swapped into it whole (buffer and metadata, as the switch moves packets between its own
//! batches), the burst moved through a bounded lock-free queue (`crossbeam_queue::ArrayQueue`)
//! and its frames swapped out on the other side, the empty burst back in the pool. The
//! receiving side is held back when a ring is full: a port whose frames would go to a worker
//! with no room is not read that round (`handoff_rx_deferred`), so the frames wait in the
//! device's ring instead of being paid for and dropped. A burst that finds no room on the
//! transmit side (the pipeline has already run) or no burst in the pool is dropped and counted
//! (`handoff_ring_full`, `handoff_no_buffer`), never waited for.
//!
//! **A sleeping worker is woken.** A worker about to sleep sets its flag and checks for
//! queued frames ([`Mesh::may_sleep`]); a sender that queued frames for a sleeping worker
//! writes its eventfd ([`Mesh::waker`], one system call per burst, only then).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use super::Port;
use crate::batch::{BATCH_SIZE, Batch};
use crate::packet::{Mac, Packet};
use crate::worker::Waker;

/// Bursts one ring holds (per port, per receiving worker; and per port for its owner's
/// transmits), each up to a batch of frames.
pub const RING: usize = 4;
/// Bursts in a mesh's pool, per worker: bounds the frames in flight between workers (with
/// 64 KB buffers, a node with TAP endpoints, 16 MB per worker).
pub const POOL_PER_WORKER: usize = 8;

/// Which worker of `workers` owns the port called `name`: a stable hash of the name (FNV-1a,
/// its bits mixed by a multiply, since FNV's low bits follow the bytes' low bits), so a port
/// keeps its worker while others come and go.
pub fn owner_of(name: &str, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % workers.max(1) as u64) as usize
}

/// Where a worker's destinations are: a container's MAC, or an IPv4 destination the node
/// translates for (the ingress's load-balancer address), to the worker that owns it. Built by
/// the control plane; read once per frame a steering port receives.
#[derive(Clone, Debug, Default)]
pub struct SteerMap {
    macs: HashMap<Mac, u16, foldhash::fast::FixedState>,
    addrs: HashMap<Ipv4Addr, u16, foldhash::fast::FixedState>,
}

impl SteerMap {
    /// Frames to `mac` belong to `worker`.
    pub fn add_mac(&mut self, mac: Mac, worker: usize) {
        self.macs.insert(mac, worker as u16);
    }

    /// IPv4 packets to `addr` belong to `worker`, whatever their MAC.
    pub fn add_addr(&mut self, addr: Ipv4Addr, worker: usize) {
        self.addrs.insert(addr, worker as u16);
    }

    /// Nothing is steered.
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty() && self.addrs.is_empty()
    }

    /// The worker the Ethernet frame `frame` belongs to, if one does.
    #[inline]
    pub fn worker_of(&self, frame: &[u8]) -> Option<usize> {
        let dst: [u8; 6] = frame.get(..6)?.try_into().ok()?;
        if dst[0] & 1 != 0 {
            return None; // broadcast and multicast: processed where they arrive
        }
        if let Some(&w) = self.macs.get(&Mac(dst)) {
            return Some(usize::from(w));
        }
        if self.addrs.is_empty() || frame.get(12..14)? != [0x08, 0x00] {
            return None;
        }
        let ip: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
        self.addrs.get(&Ipv4Addr::from(ip)).map(|&w| usize::from(w))
    }
}

/// Where a steering port's frames start: at the Ethernet header, or (the UDP underlay) at the
/// VXLAN header before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteerAt {
    /// An Ethernet frame.
    Ethernet,
    /// A VXLAN header (8 bytes), then the frame.
    Vxlan,
}

/// The rings of one port.
struct Links {
    /// The worker that owns the port's driver; `None`: every worker has its own.
    owner: Option<usize>,
    /// `rx[k]`: bursts worker `k` is to receive as if on this port.
    rx: Box<[ArrayQueue<Batch>]>,
    /// Bursts the owner is to transmit on this port.
    tx: ArrayQueue<Batch>,
}

/// A worker's doorbell: whether it sleeps, how many bursts wait for it.
#[repr(align(64))]
#[derive(Default)]
struct Door {
    asleep: AtomicBool,
    queued: AtomicU64,
}

/// The workers of one node: the pool of empty bursts, every port's rings, the doorbells.
pub struct Mesh {
    workers: usize,
    pool: ArrayQueue<Batch>,
    doors: Box<[Door]>,
    wakers: Box<[Arc<Waker>]>,
    /// Every port's rings by name (control plane only: taken when a port is made).
    links: Mutex<HashMap<String, Arc<Links>>>,
}

impl Mesh {
    /// A mesh of `workers` workers whose packets have `buf_size`-byte buffers (the switches'
    /// buffer size: every buffer in circulation has it).
    pub fn new(workers: usize, buf_size: usize) -> std::io::Result<Arc<Mesh>> {
        let workers = workers.max(1);
        let pool = ArrayQueue::new(POOL_PER_WORKER * workers);
        for _ in 0..pool.capacity() {
            let _ = pool.push(Batch::with_buf_size(BATCH_SIZE, buf_size));
        }
        let wakers = (0..workers)
            .map(|_| Waker::new().map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Arc::new(Mesh {
            workers,
            pool,
            doors: (0..workers).map(|_| Door::default()).collect(),
            wakers: wakers.into_boxed_slice(),
            links: Mutex::new(HashMap::new()),
        }))
    }

    /// How many workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Worker `me`'s eventfd: its poll loop sleeps on it (`vswitch::worker::run`'s waker), so
    /// frames handed to it, and control jobs, wake it.
    pub fn waker(&self, me: usize) -> &Arc<Waker> {
        &self.wakers[me]
    }

    /// Worker `me` is about to sleep: false if bursts wait for it (it must poll again).
    /// Whoever queues a burst for it afterwards sees the flag and wakes it.
    pub fn may_sleep(&self, me: usize) -> bool {
        let d = &self.doors[me];
        d.asleep.store(true, Ordering::SeqCst);
        if d.queued.load(Ordering::SeqCst) > 0 {
            d.asleep.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Worker `me` polls again (after a sleep): senders need not wake it.
    #[inline]
    pub fn awake(&self, me: usize) {
        let d = &self.doors[me];
        if d.asleep.load(Ordering::Relaxed) {
            d.asleep.store(false, Ordering::Relaxed);
        }
    }

    /// A steering port for worker `me`: the port called `name`, owned by worker `owner`
    /// (`None`: every worker has its own driver). `inner` is the driver, `None` on the workers
    /// that do not own it; `offloads` is what the owner's driver takes (a stand-in answers for
    /// it); `at` where its frames start.
    pub fn port(
        self: &Arc<Self>,
        me: usize,
        name: &str,
        owner: Option<usize>,
        inner: Option<Box<dyn Port>>,
        offloads: bool,
        at: SteerAt,
    ) -> Steered {
        let links = self
            .links
            .lock()
            .expect("mesh links")
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Links {
                    owner,
                    rx: (0..self.workers).map(|_| ArrayQueue::new(RING)).collect(),
                    tx: ArrayQueue::new(RING),
                })
            })
            .clone();
        Steered {
            me,
            inner,
            links,
            mesh: self.clone(),
            steer: Arc::new(SteerMap::default()),
            at,
            offloads,
            out: (0..self.workers).map(|_| None).collect(),
            partial: None,
            stats: HandoffStats::default(),
        }
    }

    /// The port called `name` left every worker (its steering ports are dropped): forget its
    /// rings. Frames still in them are dropped, their bursts back in the pool.
    pub fn forget(&self, name: &str) {
        let Some(links) = self.links.lock().expect("mesh links").remove(name) else {
            return;
        };
        let drain = |k: usize, ring: &ArrayQueue<Batch>| {
            while let Some(b) = ring.pop() {
                self.recycle(b);
                self.doors[k].queued.fetch_sub(1, Ordering::SeqCst);
            }
        };
        for (k, ring) in links.rx.iter().enumerate() {
            drain(k, ring);
        }
        if let Some(owner) = links.owner {
            drain(owner, &links.tx);
        }
    }

    /// An empty burst from the pool.
    #[inline]
    fn burst(&self) -> Option<Batch> {
        self.pool.pop()
    }

    /// A burst back to the pool, emptied.
    #[inline]
    fn recycle(&self, mut b: Batch) {
        b.clear();
        // The pool has room for every burst there is.
        let _ = self.pool.push(b);
    }

    /// Queue burst `b` on `ring`, for worker `to` (woken if it sleeps); a full ring drops it
    /// (false), the burst back in the pool.
    #[inline]
    fn send(&self, to: usize, ring: &ArrayQueue<Batch>, b: Batch) -> bool {
        if let Err(b) = ring.push(b) {
            self.recycle(b);
            return false;
        }
        self.doors[to].queued.fetch_add(1, Ordering::SeqCst);
        if self.doors[to].asleep.load(Ordering::SeqCst) {
            self.wakers[to].wake();
        }
        true
    }

    /// The next burst on `ring`; [`Mesh::done`] when it has been taken in whole.
    #[inline]
    fn receive(&self, ring: &ArrayQueue<Batch>) -> Option<Batch> {
        ring.pop()
    }

    /// Worker `me` has taken in burst `b` (transmitted, or moved into its batches): no longer
    /// waiting, back to the pool.
    #[inline]
    fn done(&self, me: usize, b: Batch) {
        self.recycle(b);
        self.doors[me].queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A steering port's own counters.
#[derive(Clone, Copy, Debug, Default)]
struct HandoffStats {
    rx_out: u64,
    rx_in: u64,
    tx_out: u64,
    tx_in: u64,
    ring_full: u64,
    no_buffer: u64,
    deferred: u64,
}

/// A port as one worker sees it: the driver (owned, or this worker's own) or a stand-in for
/// another worker's, with the rings between them (see the module's doc).
pub struct Steered {
    me: usize,
    inner: Option<Box<dyn Port>>,
    links: Arc<Links>,
    mesh: Arc<Mesh>,
    steer: Arc<SteerMap>,
    at: SteerAt,
    offloads: bool,
    /// The burst being filled for each worker during a receive.
    out: Box<[Option<Batch>]>,
    /// A burst handed to this worker that did not fit the last receive batch, and how much of
    /// it was taken.
    partial: Option<(Batch, usize)>,
    stats: HandoffStats,
}

impl Steered {
    /// Replace the steering map (the control plane, between batches, after a change).
    pub fn set_steer(&mut self, steer: Arc<SteerMap>) {
        self.steer = steer;
    }

    /// Whether this worker holds the driver.
    pub fn has_driver(&self) -> bool {
        self.inner.is_some()
    }

    /// The driver, if this worker holds it.
    pub fn driver_mut(&mut self) -> Option<&mut (dyn Port + 'static)> {
        self.inner.as_deref_mut()
    }

    fn owns(&self) -> bool {
        self.links.owner == Some(self.me)
    }

    /// The owner: transmit on the driver what other workers handed over, a burst at a time
    /// (at most a ring's worth per round).
    fn transmit_handed(&mut self) {
        if !self.owns() {
            return;
        }
        let Some(inner) = self.inner.as_deref_mut() else {
            return;
        };
        for _ in 0..RING {
            let Some(mut b) = self.mesh.receive(&self.links.tx) else {
                return;
            };
            self.stats.tx_in += b.len() as u64;
            inner.tx_burst(&mut b);
            self.mesh.done(self.me, b);
        }
    }

    /// Whether every other worker's ring of this port has room for a burst: if not, the
    /// driver is not read this round (back-pressure: frames wait in the device's ring, and
    /// the kernel drops there if it fills, rather than this worker paying for frames the
    /// other cannot take).
    fn room_to_steer(&self) -> bool {
        self.links
            .rx
            .iter()
            .enumerate()
            .all(|(k, r)| k == self.me || !r.is_full())
    }

    /// Hand the frames of `batch` that belong to other workers to them, a burst per worker.
    fn steer_out(&mut self, batch: &mut Batch) {
        let skip = match self.at {
            SteerAt::Ethernet => 0,
            SteerAt::Vxlan => 8,
        };
        let mut moved = false;
        for p in batch.pkts_mut() {
            let to = match p.data().get(skip..).and_then(|f| self.steer.worker_of(f)) {
                Some(w) if w != self.me && w < self.mesh.workers => w,
                _ => continue,
            };
            if self.out[to].as_ref().is_some_and(Batch::is_full) {
                self.send_out(to);
            }
            if self.out[to].is_none() {
                self.out[to] = self.mesh.burst();
            }
            match &mut self.out[to] {
                Some(b) => {
                    b.push_swap(p);
                    self.stats.rx_out += 1;
                }
                None => self.stats.no_buffer += 1,
            }
            // The slot now holds the burst's spare packet (or the dropped frame): emptied.
            p.set_len(0);
            moved = true;
        }
        if !moved {
            return;
        }
        batch.retain(|p| !p.is_empty());
        for to in 0..self.out.len() {
            self.send_out(to);
        }
    }

    /// Queue the burst filled for worker `to`, if any.
    fn send_out(&mut self, to: usize) {
        if let Some(b) = self.out[to].take() {
            let n = b.len() as u64;
            if !self.mesh.send(to, &self.links.rx[to], b) {
                self.stats.rx_out -= n;
                self.stats.ring_full += n;
            }
        }
    }

    /// Take frames handed to this worker into `batch`'s free slots.
    fn take_handed(&mut self, batch: &mut Batch) {
        while !batch.is_full() {
            let (mut b, mut at) = match self.partial.take() {
                Some(p) => p,
                None => match self.mesh.receive(&self.links.rx[self.me]) {
                    Some(b) => (b, 0),
                    None => return,
                },
            };
            while at < b.len() && !batch.is_full() {
                core::mem::swap(&mut batch.spare_mut()[0], &mut b.pkts_mut()[at]);
                batch.grow(1);
                at += 1;
                self.stats.rx_in += 1;
            }
            if at < b.len() {
                self.partial = Some((b, at));
                return;
            }
            self.mesh.done(self.me, b);
        }
    }
}

impl Port for Steered {
    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        let before = batch.len();
        self.transmit_handed();
        if self.inner.is_some() {
            let steering = !self.steer.is_empty();
            if steering && !self.room_to_steer() {
                self.stats.deferred += 1;
            } else if let Some(inner) = self.inner.as_deref_mut() {
                let n = inner.rx_burst(batch);
                if n > 0 && steering {
                    self.steer_out(batch);
                }
            }
        }
        self.take_handed(batch);
        batch.len() - before
    }

    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        match (&mut self.inner, self.links.owner) {
            (Some(inner), _) => inner.tx_burst(batch),
            (None, Some(owner)) => {
                let Some(mut b) = self.mesh.burst() else {
                    self.stats.no_buffer += batch.len() as u64;
                    return 0;
                };
                // A burst holds a switch's batch (BATCH_SIZE); a longer one is cut there, the
                // rest counted as dropped.
                for p in batch.pkts_mut() {
                    if !b.push_swap(p) {
                        break;
                    }
                }
                let n = b.len();
                self.stats.ring_full += (batch.len() - n) as u64;
                if self.mesh.send(owner, &self.links.tx, b) {
                    self.stats.tx_out += n as u64;
                    n
                } else {
                    self.stats.ring_full += n as u64;
                    0
                }
            }
            (None, None) => 0,
        }
    }

    fn offloads(&self) -> bool {
        self.offloads
    }

    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.as_ref().and_then(|p| p.poll_fd())
    }

    /// As the driver's, while nothing waits in this port's rings (their frames do not make
    /// the driver's descriptor readable).
    fn rx_wants_readiness(&self) -> bool {
        self.inner.as_ref().is_some_and(|p| p.rx_wants_readiness())
            && self.partial.is_none()
            && self.links.rx[self.me].is_empty()
            && (!self.owns() || self.links.tx.is_empty())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats;
        let mut c = vec![
            ("handoff_rx_out", s.rx_out),
            ("handoff_rx_in", s.rx_in),
            ("handoff_tx_out", s.tx_out),
            ("handoff_tx_in", s.tx_in),
            ("handoff_ring_full", s.ring_full),
            ("handoff_no_buffer", s.no_buffer),
            ("handoff_rx_deferred", s.deferred),
        ];
        if let Some(p) = &self.inner {
            c.extend(p.counters());
        }
        c
    }

    fn capture_frame(&self, pkt: &Packet, tx: bool, out: &mut Vec<u8>) {
        match &self.inner {
            Some(p) => p.capture_frame(pkt, tx, out),
            None => out.extend_from_slice(pkt.data()),
        }
    }

    fn retire(&mut self) {
        if let Some(p) = &mut self.inner {
            p.retire();
        }
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

impl Drop for Steered {
    fn drop(&mut self) {
        // Bursts held here go back to the pool.
        if let Some((b, _)) = self.partial.take() {
            self.mesh.done(self.me, b);
        }
    }
}

#[cfg(test)]
mod tests;
