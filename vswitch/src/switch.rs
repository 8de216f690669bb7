//! The switch: ports, the stage graph, and the output step that moves every decided packet to
//! where it goes. One `Switch` is one worker's whole dataplane; the node's poll thread calls
//! [`Switch::poll`] in a loop and applies control-plane changes between calls.
//!
//! ```text
//! port.rx_burst ─► mark for trace ─► the port's path of stages ─► output:
//!     Output(p)  ─► p's transmit batch (buffer swapped, no copy)
//!     Remote(v)  ─► the underlay port's transmit batch, `meta.to_vtep = v`
//!     Flood      ─► a copy to each other local port of the network, and, for frames from local
//!                   ports, a copy per remote VTEP of the network (head-end replication)
//!     Drop       ─► already counted by the stage that dropped it
//! flush(port) ─► the port's transmit path of stages (`vxlan-encap`) ─► port.tx_burst
//! ```
//! Transmit batches are flushed when full and after every round, one `tx_burst` per batch.
//! A port may have a transmit path ([`Switch::set_tx_path`]), VPP's output feature arc: its
//! stages run over the whole transmit batch before the burst, every packet entering it
//! undecided; those a stage drops leave the batch, the others are sent. The output step is
//! counted like a stage (`output`), and the transmit path's stages as any stage, so packets in
//! = sum of outcomes holds end to end.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;

use crate::arp::ArpProxy;
use crate::batch::{BATCH_SIZE, Batch};
use crate::env::{Env, Network};
use crate::fdb::FdbStats;
use crate::l2::{L2Fwd, L2Learn, L2Parse};
use crate::offload::{self, Tcp4Gso};
use crate::packet::{DEFAULT_BUF_SIZE, NetId, Next, PortId, VtepId};
use crate::port::Port;
use crate::stage::{Stage, StageStats, mask_of, run_stage};
use crate::trace::{Summary, TraceRecord};

/// Index of a stage in the switch.
pub type StageIdx = usize;

/// A stage of concrete type `T` registered in a switch ([`Switch::add_stage`]): the control
/// plane reaches the stage's own tables through it ([`Switch::stage_mut`]) instead of searching
/// the stages by type, and paths name it by [`StageHandle::idx`].
pub struct StageHandle<T> {
    idx: StageIdx,
    _stage: PhantomData<fn() -> T>,
}

impl<T> StageHandle<T> {
    /// The stage's index, for port paths.
    #[inline]
    pub fn idx(self) -> StageIdx {
        self.idx
    }
}

// Not derived: derives would require `T: Clone` etc. of the stage itself.
impl<T> Clone for StageHandle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for StageHandle<T> {}

impl<T> fmt::Debug for StageHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageHandle({})", self.idx)
    }
}

impl<T> From<StageHandle<T>> for StageIdx {
    fn from(h: StageHandle<T>) -> StageIdx {
        h.idx
    }
}

/// What a port is for: it picks the frames' bridge domain and what the output step may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRole {
    /// A container's port in a network.
    Local(NetId),
    /// The underlay: frames arrive encapsulated; the path's decap stage sets the network.
    Underlay,
    /// A routing-mesh ingress interface: the path decides everything.
    Ingress,
}

/// Per-port counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames the port accepted for transmit.
    pub tx_packets: u64,
    /// Bytes the port accepted for transmit.
    pub tx_bytes: u64,
    /// Frames the port refused (ring or socket full).
    pub tx_dropped: u64,
}

struct PortSlot {
    name: String,
    port: Box<dyn Port>,
    role: PortRole,
    path: Vec<StageIdx>,
    /// Stages run over the transmit batch before each burst (empty: none).
    tx_path: Vec<StageIdx>,
    tx: Batch,
    stats: PortStats,
}

/// One port's counters in a [`SwitchStats`].
#[derive(Clone, Debug, Default)]
pub struct PortSnapshot {
    /// The port's name.
    pub name: String,
    /// The switch's counters of it.
    pub stats: PortStats,
    /// The port's own counters (ring and socket errors, say).
    pub port: Vec<(&'static str, u64)>,
}

/// A snapshot of every counter.
#[derive(Clone, Debug, Default)]
pub struct SwitchStats {
    /// Per port.
    pub ports: Vec<PortSnapshot>,
    /// Per stage, in registration order, then `output`.
    pub stages: Vec<StageStats>,
    /// FDB events.
    pub fdb: FdbStats,
    /// FDB sizes: learned, static.
    pub fdb_entries: (usize, usize),
}

impl SwitchStats {
    /// A stage's counters by name.
    pub fn stage(&self, name: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.name == name)
    }
    /// A port's counters by name.
    pub fn port(&self, name: &str) -> Option<&PortStats> {
        self.ports.iter().find(|p| p.name == name).map(|p| &p.stats)
    }
}

/// The L2 stages, as registered by [`Switch::with_l2`].
#[derive(Clone, Copy, Debug)]
pub struct L2Stages {
    /// `l2-parse`.
    pub parse: StageHandle<L2Parse>,
    /// `l2-learn`.
    pub learn: StageHandle<L2Learn>,
    /// `arp-proxy`.
    pub arp: StageHandle<ArpProxy>,
    /// `l2-fwd`.
    pub fwd: StageHandle<L2Fwd>,
}

impl L2Stages {
    /// The path of a local port, with `extra` stages (the load balancer) before `l2-fwd`.
    pub fn local_path(&self, extra: &[StageIdx]) -> Vec<StageIdx> {
        let mut p = vec![self.parse.idx(), self.learn.idx(), self.arp.idx()];
        p.extend_from_slice(extra);
        p.push(self.fwd.idx());
        p
    }
}

crate::drop_table! {
    /// Why the output step drops a packet.
    pub enum OutputDrop {
        /// No stage decided on the packet, or it names a port that does not exist.
        Undecided => "drop_undecided",
        /// To a remote VTEP, but the switch has no underlay port.
        NoUnderlay => "drop_no_underlay",
        /// A TCP super-frame to flood (an unknown destination): not cut into copies for every
        /// port.
        GsoFlood => "drop_gso_flood",
        /// A super-frame whose headers no longer describe it (a stage changed it).
        GsoBad => "drop_gso_bad",
        /// A segment larger than the output's buffers.
        GsoSegmentTooBig => "drop_gso_segment_too_big",
    }
}

/// One worker's dataplane.
pub struct Switch {
    /// The shared tables.
    pub env: Env,
    ports: Vec<PortSlot>,
    stages: Vec<Box<dyn Stage>>,
    stage_stats: Vec<StageStats>,
    /// Where `Next::Remote` and remote flood copies go: the first port added as
    /// [`PortRole::Underlay`].
    underlay: Option<PortId>,
    output: StageStats,
    flood_copies: u64,
    flood_remote_copies: u64,
    /// Flood copies that did not fit the output's buffers (the flood itself is one outcome of
    /// the output; a copy that could not be made is an event of it, not a second outcome).
    flood_copy_too_big: u64,
    /// Super-frames cut in software for an output without offloads, and the segments made.
    gso_frames: u64,
    gso_segments: u64,
    /// Partial checksums finished in software.
    csum_finished: u64,
    rx: Batch,
    batch_size: usize,
    buf_size: usize,
    capture: Option<Capture>,
}

/// Most frames a capture holds between two [`Switch::take_capture`] calls; beyond it frames
/// are counted as missed, never queued without bound.
pub const CAPTURE_BACKLOG: usize = 4096;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// When, in nanoseconds of [`Time`](crate::env::Time).
    pub time_ns: u64,
    /// Transmitted (else received).
    pub tx: bool,
    /// The Ethernet frame.
    pub data: Vec<u8>,
}

/// A capture in progress on one port: what `vxmesh capture` drains into a pcap file.
#[derive(Debug)]
struct Capture {
    port: PortId,
    remaining: u64,
    frames: Vec<CapturedFrame>,
    missed: u64,
}

impl Switch {
    /// An empty switch.
    pub fn new(env: Env) -> Switch {
        Switch::with_batch(env, BATCH_SIZE, DEFAULT_BUF_SIZE)
    }

    /// An empty switch with `batch_size`-packet batches of `buf_size`-byte buffers.
    pub fn with_batch(env: Env, batch_size: usize, buf_size: usize) -> Switch {
        let mut output = StageStats {
            name: "output",
            ..StageStats::default()
        };
        output.drops = OutputDrop::NAMES.iter().map(|n| (*n, 0)).collect();
        Switch {
            env,
            ports: Vec::new(),
            stages: Vec::new(),
            stage_stats: Vec::new(),
            underlay: None,
            output,
            flood_copies: 0,
            flood_remote_copies: 0,
            flood_copy_too_big: 0,
            gso_frames: 0,
            gso_segments: 0,
            csum_finished: 0,
            rx: Batch::with_buf_size(batch_size, buf_size),
            batch_size,
            buf_size,
            capture: None,
        }
    }

    /// A switch with the L2 stages registered.
    pub fn with_l2(env: Env) -> (Switch, L2Stages) {
        let mut sw = Switch::new(env);
        let l2 = sw.add_l2_stages();
        (sw, l2)
    }

    /// Register `l2-parse`, `l2-learn`, `arp-proxy` and `l2-fwd`.
    pub fn add_l2_stages(&mut self) -> L2Stages {
        L2Stages {
            parse: self.add_stage(L2Parse),
            learn: self.add_stage(L2Learn::default()),
            arp: self.add_stage(ArpProxy::default()),
            fwd: self.add_stage(L2Fwd::default()),
        }
    }

    /// Register a stage; its handle reaches it again ([`Switch::stage_mut`]).
    pub fn add_stage<T: Stage>(&mut self, stage: T) -> StageHandle<T> {
        self.stage_stats.push(StageStats::for_stage(&stage));
        self.stages.push(Box::new(stage));
        StageHandle {
            idx: self.stages.len() - 1,
            _stage: PhantomData,
        }
    }

    /// The stage registered under `name`.
    pub fn stage_idx(&self, name: &str) -> Option<StageIdx> {
        self.stages.iter().position(|s| s.name() == name)
    }

    /// The stage behind `handle`, for the control plane (between polls).
    ///
    /// The stages are kept as `Box<dyn Stage>` (the pipeline calls them through the trait), so
    /// this is one downcast, which cannot fail for a handle this switch returned: its index
    /// names a stage of type `T`. It panics only for a handle of another switch.
    pub fn stage_mut<T: Stage>(&mut self, handle: StageHandle<T>) -> &mut T {
        let stage: &mut dyn Any = &mut *self.stages[handle.idx];
        stage
            .downcast_mut::<T>()
            .expect("a StageHandle<T> of this switch names a stage of type T")
    }

    /// The stage behind `handle`, read-only (listings, tests).
    pub fn stage<T: Stage>(&self, handle: StageHandle<T>) -> &T {
        let stage: &dyn Any = &*self.stages[handle.idx];
        stage
            .downcast_ref::<T>()
            .expect("a StageHandle<T> of this switch names a stage of type T")
    }

    /// Run stage `idx` alone over the packets of `batch` in the `live` mask, counting into its
    /// statistics; returns the packets still undecided (for benches and tests of single stages).
    pub fn run_stage_on(&mut self, idx: StageIdx, batch: &mut Batch, live: u64) -> u64 {
        run_stage(
            &mut *self.stages[idx],
            &mut self.stage_stats[idx],
            batch,
            &mut self.env,
            live,
        )
    }

    /// Add a port with its role and receive path; a local port joins its network's flood set,
    /// and the first underlay port carries the frames to remote VTEPs.
    pub fn add_port(
        &mut self,
        name: impl Into<String>,
        port: Box<dyn Port>,
        role: PortRole,
        path: Vec<StageIdx>,
    ) -> PortId {
        let id = PortId(self.ports.len() as u16);
        match role {
            PortRole::Local(net) => self.env.nets[net.0 as usize].ports.push(id),
            PortRole::Underlay if self.underlay.is_none() => self.underlay = Some(id),
            _ => {}
        }
        let name = name.into();
        self.env.port_names.push(name.clone());
        self.ports.push(PortSlot {
            name,
            port,
            role,
            path,
            tx_path: Vec::new(),
            tx: Batch::with_buf_size(self.batch_size, self.buf_size),
            stats: PortStats::default(),
        });
        id
    }

    /// Add a network (bridge domain).
    pub fn add_network(&mut self, net: Network) -> NetId {
        self.env.add_network(net)
    }

    /// Set `port`'s transmit path: stages run over its transmit batch before each burst (the
    /// underlay's `vxlan-encap`). Every packet enters the path undecided; a packet a stage drops
    /// is removed from the batch, and one still undecided after the last stage (or output) is
    /// sent.
    pub fn set_tx_path(&mut self, port: PortId, path: Vec<StageIdx>) {
        self.ports[port.0 as usize].tx_path = path;
    }

    /// The port called `name`.
    pub fn port_id(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| PortId(i as u16))
    }

    /// The name of a port.
    pub fn port_name(&self, id: PortId) -> &str {
        self.ports.get(id.0 as usize).map_or("?", |p| &p.name)
    }

    /// Number of ports.
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// One round: receive a batch from every port, run it through the port's path, output it,
    /// then flush every transmit batch. Returns the frames received.
    pub fn poll(&mut self, now: crate::env::Time) -> usize {
        self.env.now = now;
        let mut total = 0;
        for i in 0..self.ports.len() {
            self.rx.clear();
            let n = self.ports[i].port.rx_burst(&mut self.rx);
            if n == 0 {
                continue;
            }
            total += n;
            if self.capture.is_some() {
                self.capture_batch(PortId(i as u16), false);
            }
            self.process_rx(PortId(i as u16));
        }
        self.flush_all();
        total
    }

    /// Run the batch in `self.rx` (received on `in_port`) through its path and output it.
    fn process_rx(&mut self, in_port: PortId) {
        let slot = &mut self.ports[in_port.0 as usize];
        let net = match slot.role {
            PortRole::Local(n) => n,
            PortRole::Underlay | PortRole::Ingress => NetId(0),
        };
        for p in self.rx.pkts_mut() {
            slot.stats.rx_bytes += p.len() as u64;
            // Ports reset the metadata when they fill a slot and may have recorded what they
            // know of the frame (the underlay: the sender); the switch adds where it came in.
            p.meta.in_port = in_port;
            p.meta.net = net;
        }
        slot.stats.rx_packets += self.rx.len() as u64;
        if self.env.tracer.armed() {
            self.mark_for_trace(in_port);
        }
        let mut live = mask_of(self.rx.len());
        for k in 0..self.ports[in_port.0 as usize].path.len() {
            let s = self.ports[in_port.0 as usize].path[k];
            live = run_stage(
                &mut *self.stages[s],
                &mut self.stage_stats[s],
                &mut self.rx,
                &mut self.env,
                live,
            );
        }
        self.output_batch();
    }

    #[cold]
    fn mark_for_trace(&mut self, in_port: PortId) {
        let name = &self.ports[in_port.0 as usize].name;
        let mut any = false;
        for p in self.rx.pkts_mut() {
            if let Some(id) = self.env.tracer.try_mark(p.data()) {
                p.meta.trace = id;
                any = true;
                let detail = format!("port {name}: {}, {} bytes", Summary::of(p.data()), p.len());
                self.env.tracer.record(TraceRecord {
                    id,
                    stage: "rx",
                    next: Next::Continue,
                    drop: None,
                    detail,
                });
            }
        }
        self.rx.traced |= any;
    }

    /// Make room in `port`'s transmit batch, flushing it if full.
    #[inline]
    fn room(&mut self, port: PortId) {
        if self.ports[port.0 as usize].tx.is_full() {
            self.flush(port);
        }
    }

    fn output_batch(&mut self) {
        for i in 0..self.rx.len() {
            let next = self.rx[i].meta.next;
            let traced = self.rx[i].meta.trace != 0;
            if let Next::Drop(_) = next {
                continue; // counted by the stage that dropped it; never offered to the output
            }
            self.output.rx += 1;
            if self.rx[i].meta.offload.pending() && !self.offload_resolved(i, next) {
                continue;
            }
            match next {
                Next::Output(p) if (p.0 as usize) < self.ports.len() => {
                    self.output.output += 1;
                    if traced {
                        let id = self.rx[i].meta.trace;
                        let detail = format!("to port {}", self.ports[p.0 as usize].name);
                        self.env.tracer.record(TraceRecord {
                            id,
                            stage: "output",
                            next,
                            drop: None,
                            detail,
                        });
                    }
                    self.room(p);
                    self.ports[p.0 as usize].tx.push_swap(&mut self.rx[i]);
                }
                Next::Output(_) => self.output.count_drop(OutputDrop::Undecided),
                Next::Remote(v) => {
                    let Some(tp) = self.underlay else {
                        self.output.count_drop(OutputDrop::NoUnderlay);
                        continue;
                    };
                    self.output.remote += 1;
                    self.send_remote(i, tp, v, true);
                }
                Next::Flood => {
                    self.output.flood += 1;
                    self.flood(i);
                }
                Next::Drop(_) => {}
                Next::Continue => self.output.count_drop(OutputDrop::Undecided),
            }
        }
        self.rx.clear();
    }

    /// Rx packet `i` has offload work left ([`crate::offload`]) and is going to `next`: leave it
    /// for an output port that takes offloads, finish its checksum in place for any other, or
    /// cut a super-frame into segments and output those (then the packet itself is done: false).
    fn offload_resolved(&mut self, i: usize, next: Next) -> bool {
        let gso = self.rx[i].meta.offload.is_gso();
        match next {
            Next::Output(p)
                if (p.0 as usize) < self.ports.len()
                    && self.ports[p.0 as usize].port.offloads() =>
            {
                true
            }
            Next::Output(_) | Next::Remote(_) if gso => {
                self.output_segments(i, next);
                false
            }
            Next::Flood if gso => {
                self.output.count_drop(OutputDrop::GsoFlood);
                false
            }
            _ => {
                let p = &mut self.rx[i];
                let mut o = p.meta.offload;
                offload::finish_checksum(p.data_mut(), &mut o);
                p.meta.offload = o;
                self.csum_finished += 1;
                true
            }
        }
    }

    /// Cut TCP super-frame `i` into segments, each written straight into the output's transmit
    /// batch (toward `meta.to_vtep` when `next` is a remote VTEP).
    fn output_segments(&mut self, i: usize, next: Next) {
        let Ok(g) = Tcp4Gso::new(self.rx[i].data(), &self.rx[i].meta.offload) else {
            self.output.count_drop(OutputDrop::GsoBad);
            return;
        };
        let out = match next {
            Next::Output(p) if (p.0 as usize) < self.ports.len() => p,
            Next::Remote(_) => match self.underlay {
                Some(tp) => tp,
                None => {
                    self.output.count_drop(OutputDrop::NoUnderlay);
                    return;
                }
            },
            _ => {
                self.output.count_drop(OutputDrop::Undecided);
                return;
            }
        };
        let mut meta = self.rx[i].meta;
        meta.offload = offload::Offload::default();
        if let Next::Remote(v) = next {
            meta.to_vtep = Some(v);
        }
        let n = g.segments();
        // The segments are what the output handles from here on (each one is counted as
        // output, remote or dropped), so count them in, less the super-frame they replace.
        self.output.rx += n as u64 - 1;
        self.gso_frames += 1;
        self.gso_segments += n as u64;
        if meta.trace != 0 {
            let detail = format!(
                "TCP super-frame of {} bytes cut into {n} segments of at most {} bytes for {}",
                self.rx[i].len(),
                g.segment_len(0),
                self.ports[out.0 as usize].name
            );
            self.env.tracer.record(TraceRecord {
                id: meta.trace,
                stage: "output",
                next,
                drop: None,
                detail,
            });
        }
        for k in 0..n {
            self.room(out);
            let frame = self.rx[i].data();
            let tx = &mut self.ports[out.0 as usize].tx;
            let pushed = tx.push_with(meta, |area| {
                (g.segment_len(k) <= area.len()).then(|| g.write(frame, k, area))
            });
            if pushed.is_err() {
                self.output.count_drop(OutputDrop::GsoSegmentTooBig);
                continue;
            }
            match next {
                Next::Remote(_) => self.output.remote += 1,
                _ => self.output.output += 1,
            }
        }
    }

    /// Queue rx packet `i` toward `vtep` on the underlay port `tp`, moved (`swap`) or copied;
    /// its transmit path encapsulates it. False when a copy does not fit the port's buffers.
    fn send_remote(&mut self, i: usize, tp: PortId, vtep: VtepId, swap: bool) -> bool {
        self.room(tp);
        let tx = &mut self.ports[tp.0 as usize].tx;
        let pkt = if swap {
            tx.push_swap(&mut self.rx[i]);
            tx.last_mut()
        } else {
            tx.push_copy(&self.rx[i]).ok()
        };
        match pkt {
            Some(p) => {
                p.meta.to_vtep = Some(vtep);
                true
            }
            None => false,
        }
    }

    fn flood(&mut self, i: usize) {
        let meta = self.rx[i].meta;
        let net = &self.env.nets[meta.net.0 as usize];
        let (n_local, n_remote) = (net.ports.len(), net.peers.len());
        let mut copies = 0;
        for k in 0..n_local {
            let q = self.env.nets[meta.net.0 as usize].ports[k];
            if q == meta.in_port {
                continue;
            }
            self.room(q);
            if self.ports[q.0 as usize].tx.push_copy(&self.rx[i]).is_err() {
                self.flood_copy_too_big += 1;
            } else {
                copies += 1;
            }
        }
        self.flood_copies += copies;
        // Head-end replication, only for frames that came from local ports (split horizon).
        let from_local = meta.from_vtep.is_none()
            && matches!(self.ports[meta.in_port.0 as usize].role, PortRole::Local(_));
        if from_local && let Some(tp) = self.underlay {
            for k in 0..n_remote {
                let v = self.env.nets[meta.net.0 as usize].peers[k];
                if self.send_remote(i, tp, v, false) {
                    self.flood_remote_copies += 1;
                } else {
                    self.flood_copy_too_big += 1;
                }
            }
        }
        if meta.trace != 0 {
            let detail = format!(
                "flood: {copies} local port(s){}",
                if from_local {
                    format!(", {n_remote} remote VTEP(s)")
                } else {
                    String::new()
                }
            );
            self.env.tracer.record(TraceRecord {
                id: meta.trace,
                stage: "output",
                next: Next::Flood,
                drop: None,
                detail,
            });
        }
    }

    /// Transmit `port`'s queued batch now, through its transmit path first.
    pub fn flush(&mut self, port: PortId) {
        let slot = &mut self.ports[port.0 as usize];
        if slot.tx.is_empty() {
            return;
        }
        if !slot.tx_path.is_empty() {
            self.run_tx_path(port);
            if self.ports[port.0 as usize].tx.is_empty() {
                return;
            }
        }
        if self.capture.is_some() {
            self.capture_batch(port, true);
        }
        let slot = &mut self.ports[port.0 as usize];
        let n = slot.tx.len();
        let sent = slot.port.tx_burst(&mut slot.tx).min(n);
        slot.stats.tx_packets += sent as u64;
        slot.stats.tx_bytes += slot.tx.pkts()[..sent]
            .iter()
            .map(|p| p.len() as u64)
            .sum::<u64>();
        slot.stats.tx_dropped += (n - sent) as u64;
        slot.tx.clear();
    }

    /// Run `port`'s transmit path over its transmit batch: every packet enters undecided, the
    /// stages count and trace as on a receive path, and the packets they drop leave the batch.
    fn run_tx_path(&mut self, port: PortId) {
        let slot = &mut self.ports[port.0 as usize];
        let mut traced = false;
        for p in slot.tx.pkts_mut() {
            p.meta.next = Next::Continue;
            traced |= p.meta.trace != 0;
        }
        slot.tx.traced = traced;
        let mut live = mask_of(slot.tx.len());
        for k in 0..slot.tx_path.len() {
            let s = slot.tx_path[k];
            live = run_stage(
                &mut *self.stages[s],
                &mut self.stage_stats[s],
                &mut slot.tx,
                &mut self.env,
                live,
            );
        }
        slot.tx.retain(|p| !matches!(p.meta.next, Next::Drop(_)));
    }

    /// Transmit every queued batch.
    pub fn flush_all(&mut self) {
        for i in 0..self.ports.len() {
            self.flush(PortId(i as u16));
        }
    }

    /// Descriptors to sleep on when every port is idle (one per port that has one).
    pub fn poll_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.ports.iter().filter_map(|p| p.port.poll_fd()).collect()
    }

    /// Start capturing `count` frames (received and transmitted) on `port`, replacing any
    /// capture in progress.
    pub fn start_capture(&mut self, port: PortId, count: u64) {
        self.capture = Some(Capture {
            port,
            remaining: count,
            frames: Vec::new(),
            missed: 0,
        });
    }

    /// Stop capturing.
    pub fn stop_capture(&mut self) {
        self.capture = None;
    }

    /// The frames captured since the last call, frames missed because the backlog was full,
    /// and whether the capture is still running.
    pub fn take_capture(&mut self) -> (Vec<CapturedFrame>, u64, bool) {
        match &mut self.capture {
            Some(c) => {
                let frames = core::mem::take(&mut c.frames);
                let missed = core::mem::take(&mut c.missed);
                let running = c.remaining > 0;
                if !running {
                    self.capture = None;
                }
                (frames, missed, running)
            }
            None => (Vec::new(), 0, false),
        }
    }

    /// Copy the frames of `port`'s rx batch (or tx batch) into the capture, if it is the port.
    #[cold]
    fn capture_batch(&mut self, port: PortId, tx: bool) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        if c.port != port || c.remaining == 0 {
            return;
        }
        let slot = &self.ports[port.0 as usize];
        let batch = if tx { &slot.tx } else { &self.rx };
        for p in batch.pkts() {
            if c.remaining == 0 {
                break;
            }
            if c.frames.len() >= CAPTURE_BACKLOG {
                c.missed += 1;
                continue;
            }
            let mut data = Vec::with_capacity(p.len() + 64);
            slot.port.capture_frame(p, tx, &mut data);
            c.frames.push(CapturedFrame {
                time_ns: self.env.now.0,
                tx,
                data,
            });
            c.remaining -= 1;
        }
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> SwitchStats {
        let mut stages: Vec<StageStats> = self
            .stage_stats
            .iter()
            .zip(&self.stages)
            .map(|(st, s)| {
                let mut st = st.clone();
                st.events = s.counters();
                st
            })
            .collect();
        let mut out = self.output.clone();
        out.events = vec![
            ("flood_copies", self.flood_copies),
            ("flood_remote_copies", self.flood_remote_copies),
            ("flood_copy_too_big", self.flood_copy_too_big),
            ("gso_frames", self.gso_frames),
            ("gso_segments", self.gso_segments),
            ("csum_finished", self.csum_finished),
        ];
        stages.push(out);
        SwitchStats {
            ports: self
                .ports
                .iter()
                .map(|p| PortSnapshot {
                    name: p.name.clone(),
                    stats: p.stats,
                    port: p.port.counters(),
                })
                .collect(),
            stages,
            fdb: self.env.fdb.stats,
            fdb_entries: (self.env.fdb.learned_len(), self.env.fdb.static_len()),
        }
    }
}
