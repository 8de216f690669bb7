//! The switch: ports, the stage graph, and the poll round that runs them. One `Switch` is one
//! worker's whole dataplane; the node's poll thread calls [`Switch::poll`] in a loop and
//! applies control-plane changes between calls. The output step is in `output.rs` (output,
//! flood, GSO output) and packet capture in `capture.rs`, both as `impl Switch`.
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
use std::sync::Arc;

use crate::arp::ArpProxy;
use crate::batch::{BATCH_SIZE, Batch};
use crate::env::{Env, Network, PortGuard};
use crate::fdb::FdbStats;
use crate::gate::ReceiverGate;
use crate::l2::{L2Fwd, L2Learn, L2Parse};
use crate::packet::{DEFAULT_BUF_SIZE, NetId, Next, PortId};
use crate::port::Port;
use crate::stage::{Stage, StageStats, mask_of, run_stage};
use crate::trace::{Layer, Summary, TraceRecord};

mod capture;
mod output;
mod ready;
mod step;

use capture::Capture;
pub use capture::{CAPTURE_BACKLOG, CapturedFrame};
pub use output::OutputDrop;
pub use step::StepHook;

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
    /// The encrypted underlay (ESP): the same, for networks with `encrypted` set, which the
    /// output step never sends by the plain one.
    EspUnderlay,
}

impl PortRole {
    /// Either underlay.
    pub fn is_underlay(self) -> bool {
        matches!(self, PortRole::Underlay | PortRole::EspUnderlay)
    }
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
    /// Empty for a closed slot ([`Switch::remove_port`]), which a new port may take.
    name: String,
    port: Box<dyn Port>,
    role: PortRole,
    path: Vec<StageIdx>,
    /// Stages run over the transmit batch before each burst (empty: none).
    tx_path: Vec<StageIdx>,
    tx: Batch,
    stats: PortStats,
    /// The receiver gate of a container's port ([`crate::gate`]): UDP to a full socket in the
    /// container is dropped at the output step.
    gate: Option<Arc<ReceiverGate>>,
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
    /// Add `o`'s counters, matched by name: a node's workers, each a switch with the same
    /// ports and stages, shown as one. FDB sizes are the larger of the two (the static entries
    /// are the same on every worker; each learns on its own).
    pub fn add(&mut self, o: &SwitchStats) {
        for op in &o.ports {
            let Some(p) = self.ports.iter_mut().find(|p| p.name == op.name) else {
                self.ports.push(op.clone());
                continue;
            };
            let (a, b) = (&mut p.stats, &op.stats);
            a.rx_packets += b.rx_packets;
            a.rx_bytes += b.rx_bytes;
            a.tx_packets += b.tx_packets;
            a.tx_bytes += b.tx_bytes;
            a.tx_dropped += b.tx_dropped;
            // The receiver gate is one for all workers: its counters, the same on each, are
            // taken once.
            add_named(&mut p.port, &op.port, &crate::gate::GATE_COUNTERS);
        }
        for os in &o.stages {
            let Some(s) = self.stages.iter_mut().find(|s| s.name == os.name) else {
                self.stages.push(os.clone());
                continue;
            };
            s.rx += os.rx;
            s.cont += os.cont;
            s.output += os.output;
            s.flood += os.flood;
            s.remote += os.remote;
            s.drop_unnamed += os.drop_unnamed;
            add_named(&mut s.drops, &os.drops, &[]);
            add_named(&mut s.events, &os.events, &[]);
        }
        self.fdb.learned += o.fdb.learned;
        self.fdb.moves += o.fdb.moves;
        self.fdb.full += o.fdb.full;
        self.fdb.aged += o.fdb.aged;
        self.fdb_entries.0 = self.fdb_entries.0.max(o.fdb_entries.0);
        self.fdb_entries.1 = self.fdb_entries.1.max(o.fdb_entries.1);
    }

    /// A stage's counters by name.
    pub fn stage(&self, name: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.name == name)
    }
    /// A port's counters by name.
    pub fn port(&self, name: &str) -> Option<&PortStats> {
        self.ports.iter().find(|p| p.name == name).map(|p| &p.stats)
    }
}

/// Add the named counters of `o` to those of `to` (a name `to` lacks is appended); those named
/// in `shared` are taken once (the larger of the two).
fn add_named(to: &mut Vec<(&'static str, u64)>, o: &[(&'static str, u64)], shared: &[&str]) {
    for &(name, v) in o {
        match to.iter_mut().find(|(n, _)| *n == name) {
            // A counter both sides read from one place: the larger, not the sum.
            Some((_, x)) if shared.contains(&name) => *x = (*x).max(v),
            Some((_, x)) => *x += v,
            None => to.push((name, v)),
        }
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
    /// Where they go for a network with [`Network::encrypted`](crate::Network) set: the first
    /// port added as [`PortRole::EspUnderlay`] (none: such frames are dropped, never sent in
    /// clear).
    esp_underlay: Option<PortId>,
    output: StageStats,
    flood_copies: u64,
    flood_remote_copies: u64,
    /// Flood copies that did not fit the output's buffers (the flood itself is one outcome of
    /// the output; a copy that could not be made is an event of it, not a second outcome).
    flood_copy_too_big: u64,
    /// Remote flood copies not made: the network's underlay port (ESP for an encrypted one) is
    /// missing.
    flood_no_underlay: u64,
    /// Super-frames cut in software for an output without offloads, and the segments made.
    gso_frames: u64,
    gso_segments: u64,
    /// Partial checksums finished in software.
    csum_finished: u64,
    rx: Batch,
    batch_size: usize,
    buf_size: usize,
    capture: Option<Capture>,
    /// Called after every step of a traced packet ([`Switch::set_step_hook`]).
    step_hook: Option<step::StepHook>,
    /// Bumped whenever a port is added or removed: the poll loop re-reads the ports'
    /// descriptors when it changes ([`Switch::ports_generation`]).
    ports_generation: u64,
    /// Which idle socket ports a round may skip (`switch/ready.rs`).
    gate: ready::Gate,
}

/// What a closed port slot holds until a new port takes it: nothing arrives, nothing leaves.
struct ClosedPort;

impl Port for ClosedPort {
    fn rx_burst(&mut self, _: &mut Batch) -> usize {
        0
    }
    fn tx_burst(&mut self, _: &mut Batch) -> usize {
        0
    }
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
            esp_underlay: None,
            output,
            flood_copies: 0,
            flood_remote_copies: 0,
            flood_copy_too_big: 0,
            flood_no_underlay: 0,
            gso_frames: 0,
            gso_segments: 0,
            csum_finished: 0,
            rx: Batch::with_buf_size(batch_size, buf_size),
            batch_size,
            buf_size,
            capture: None,
            step_hook: None,
            ports_generation: 0,
            gate: ready::Gate::new(),
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
    /// and the first underlay port carries the frames to remote VTEPs. A port may be added while
    /// the switch runs (between polls): it takes the first closed slot, whose transmit batch is
    /// reused, or a new one.
    pub fn add_port(
        &mut self,
        name: impl Into<String>,
        port: Box<dyn Port>,
        role: PortRole,
        path: Vec<StageIdx>,
    ) -> PortId {
        let tx = self.new_tx_batch();
        self.add_port_with(name, port, role, path, tx).0
    }

    /// Which [`PortRole::EspUnderlay`] port carries the encrypted networks' frames from now on
    /// (the node has one per ESP transport: IP protocol 50, or ESP in UDP); `None`: none, they
    /// are dropped. By default the first one added.
    pub fn set_esp_underlay(&mut self, port: Option<PortId>) {
        self.esp_underlay = port;
    }

    /// The port [`Switch::set_esp_underlay`] chose.
    pub fn esp_underlay(&self) -> Option<PortId> {
        self.esp_underlay
    }

    /// A transmit batch for a port of this switch, ([`Switch::add_port_with`]): build it off
    /// the packet thread with [`Batch::with_buf_size`]`(`[`Switch::batch_size`]`,
    /// `[`Switch::buf_size`]`)` and [`Batch::prefault`].
    pub fn new_tx_batch(&self) -> Batch {
        Batch::with_buf_size(self.batch_size, self.buf_size)
    }

    /// The packets per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// [`Switch::add_port`] with a transmit batch built by the caller (off the packet thread:
    /// a new port then costs the poll thread no allocation). Returns the port's id, and the
    /// batch back if the port took a closed slot, which has one (for the caller to drop).
    pub fn add_port_with(
        &mut self,
        name: impl Into<String>,
        port: Box<dyn Port>,
        role: PortRole,
        path: Vec<StageIdx>,
        tx: Batch,
    ) -> (PortId, Option<Batch>) {
        let name = name.into();
        let reuse = self.ports.iter().position(|p| p.name.is_empty());
        let id = PortId(reuse.unwrap_or(self.ports.len()) as u16);
        match role {
            PortRole::Local(net) => self.env.nets[net.0 as usize].ports.push(id),
            PortRole::Underlay if self.underlay.is_none() => self.underlay = Some(id),
            PortRole::EspUnderlay if self.esp_underlay.is_none() => self.esp_underlay = Some(id),
            _ => {}
        }
        self.ports_generation += 1;
        let i = usize::from(id.0);
        if self.env.guards.len() <= i {
            self.env.guards.resize(i + 1, PortGuard::Open);
        }
        self.env.guards[i] = PortGuard::Open;
        if let Some(i) = reuse {
            let slot = &mut self.ports[i];
            slot.name.clone_from(&name);
            slot.port = port;
            slot.role = role;
            slot.path = path;
            slot.tx_path.clear();
            slot.tx.clear();
            slot.stats = PortStats::default();
            slot.gate = None;
            self.env.port_names[i] = name;
            return (id, Some(tx));
        }
        self.env.port_names.push(name.clone());
        self.ports.push(PortSlot {
            name,
            port,
            role,
            path,
            tx_path: Vec::new(),
            tx,
            stats: PortStats::default(),
            gate: None,
        });
        (id, None)
    }

    /// Remove a local port while the switch runs (between polls): it leaves its network's flood
    /// set, frames queued for it are dropped, a capture of it ends, and its slot is closed until
    /// a new port takes it. The FDB entries pointing at it are the caller's to remove before the
    /// slot is taken again: static ones (the node's plan removes them first) and learned ones
    /// ([`crate::Fdb::flush_port`], or one walk for several ports with
    /// [`crate::Fdb::flush_learned`]: a walk of the whole table, so the caller chooses when).
    /// Returns the port, for the caller to close off the packet thread (closing an AF_XDP socket
    /// detaches its XDP program); `None` for an unknown or closed slot or the underlay, which is
    /// never removed.
    pub fn remove_port(&mut self, id: PortId) -> Option<Box<dyn Port>> {
        let slot = self.ports.get_mut(usize::from(id.0))?;
        let PortRole::Local(net) = slot.role else {
            return None;
        };
        if slot.name.is_empty() {
            return None;
        }
        slot.name.clear();
        slot.path.clear();
        slot.tx_path.clear();
        slot.tx.clear();
        slot.stats = PortStats::default();
        slot.gate = None;
        let port = std::mem::replace(&mut slot.port, Box::new(ClosedPort));
        self.env.port_names[usize::from(id.0)].clear();
        self.env.guards[usize::from(id.0)] = PortGuard::Open;
        if let Some(n) = self.env.nets.get_mut(usize::from(net.0)) {
            n.ports.retain(|&p| p != id);
        }
        if let Some(c) = &mut self.capture {
            c.end_if_on(id);
        }
        self.ports_generation += 1;
        Some(port)
    }

    /// Set what local port `id` may send as (port security, in `l2-parse`): a container's port gets its
    /// endpoint's MAC and address. A port starts [`PortGuard::Open`] and is open again once
    /// removed. Control plane, between polls.
    pub fn set_port_guard(&mut self, id: PortId, guard: PortGuard) {
        if let Some(g) = self.env.guards.get_mut(usize::from(id.0)) {
            *g = guard;
        }
    }

    /// Give local port `id` a receiver gate ([`crate::gate`]; `None`: none): UDP datagrams to
    /// the ports it holds are dropped at the output step (`drop_receiver_full`). Control plane,
    /// between polls; a removed port loses its gate.
    pub fn set_receiver_gate(&mut self, id: PortId, gate: Option<Arc<ReceiverGate>>) {
        if let Some(slot) = self.ports.get_mut(usize::from(id.0))
            && !slot.name.is_empty()
        {
            slot.gate = gate;
        }
    }

    /// Send `frame` out of `port` now (the control plane, between polls: a frame the node made,
    /// such as a relayed DNS answer). False if the port is closed or the underlay, or the frame
    /// does not fit a buffer.
    pub fn inject(&mut self, port: PortId, frame: &[u8]) -> bool {
        let Some(slot) = self.ports.get(usize::from(port.0)) else {
            return false;
        };
        if slot.name.is_empty() || slot.role.is_underlay() {
            return false;
        }
        if slot.tx.is_full() {
            self.flush(port);
        }
        let pushed = self.ports[usize::from(port.0)].tx.push_frame(frame).is_ok();
        self.flush(port);
        pushed
    }

    /// Changes whenever a port is added or removed (the poll loop then re-reads
    /// [`Switch::poll_fds`]).
    #[inline]
    pub fn ports_generation(&self) -> u64 {
        self.ports_generation
    }

    /// The size of the switch's packet buffers (a port added later must not hand over larger
    /// frames: TAP offloads need [`crate::offload::GSO_BUF_SIZE`]).
    pub fn buf_size(&self) -> usize {
        self.buf_size
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
        if name.is_empty() {
            return None;
        }
        self.ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| PortId(i as u16))
    }

    /// Port `id` itself (`None`: no such port), for the driver that made it
    /// ([`Port::as_any_mut`]). Between polls.
    pub fn port_mut(&mut self, id: PortId) -> Option<&mut dyn Port> {
        self.ports
            .get_mut(usize::from(id.0))
            .map(|s| &mut *s.port as &mut dyn Port)
    }

    /// The name of a port.
    pub fn port_name(&self, id: PortId) -> &str {
        self.ports.get(id.0 as usize).map_or("?", |p| &p.name)
    }

    /// One round: receive a batch from every port, run it through the port's path, output it,
    /// then flush every transmit batch. Returns the frames received.
    pub fn poll(&mut self, now: crate::env::Time) -> usize {
        self.env.now = now;
        self.env.tracer.now = now.0;
        let mut total = 0;
        let ports = &self.ports;
        self.gate.sync(
            self.ports_generation,
            ports.iter().map(|p| p.port.poll_fd()),
        );
        let gated = self.gate.check(|i| ports[i].port.rx_wants_readiness());
        for i in 0..self.ports.len() {
            if gated && self.gate.skip(i) {
                continue;
            }
            let n = self.receive(i);
            self.gate.received(i, n);
            total += n;
        }
        self.flush_all();
        total
    }

    /// Readiness checks made and receive calls they saved (`switch/ready.rs`), since the start.
    pub fn rx_gate_stats(&self) -> (u64, u64) {
        (self.gate.checks, self.gate.skipped)
    }

    /// Receive a batch from port `i` and run it through its path and the output step.
    #[inline]
    fn receive(&mut self, i: usize) -> usize {
        self.rx.clear();
        let n = self.ports[i].port.rx_burst(&mut self.rx);
        if n > 0 {
            if self.capture.is_some() {
                self.capture_batch(PortId(i as u16), false);
            }
            self.process_rx(PortId(i as u16));
        }
        n
    }

    /// One round on `port` alone: receive a batch from it, run it through its path, output
    /// it, flush every transmit batch. Returns the frames received. For a driver of the switch
    /// that knows where frames wait (the simulator): the other ports are not asked.
    pub fn poll_port(&mut self, now: crate::env::Time, port: PortId) -> usize {
        self.env.now = now;
        self.env.tracer.now = now.0;
        let i = usize::from(port.0);
        if i >= self.ports.len() {
            return 0;
        }
        let n = self.receive(i);
        self.flush_all();
        n
    }

    /// Run the batch in `self.rx` (received on `in_port`) through its path and output it.
    fn process_rx(&mut self, in_port: PortId) {
        let slot = &mut self.ports[in_port.0 as usize];
        let net = match slot.role {
            PortRole::Local(n) => n,
            PortRole::Underlay | PortRole::EspUnderlay => NetId(0),
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
            if self.rx.traced && self.step_hook.is_some() {
                self.call_step_hook();
            }
        }
        let traced = self.rx.traced;
        self.output_batch();
        if traced && self.step_hook.is_some() {
            self.call_step_hook();
        }
    }

    /// Mark the received packets the armed trace wants. A datagram of the UDP underlay is
    /// matched (and shown) by its inner frame, after the VXLAN header; an ESP packet cannot be
    /// matched before it is decrypted (only a filter without terms takes it).
    #[cold]
    fn mark_for_trace(&mut self, in_port: PortId) {
        let slot = &self.ports[in_port.0 as usize];
        let (name, role) = (&slot.name, slot.role);
        let (layer, skip) = match role {
            PortRole::Local(_) => (Layer::Ethernet, 0),
            PortRole::Underlay => (Layer::Vxlan, crate::wire::vxlan::HEADER_LEN),
            // Only a filter that matches everything can take an ESP packet before decryption.
            PortRole::EspUnderlay if self.env.tracer.filter().is_empty() => (Layer::Esp, 0),
            PortRole::EspUnderlay => (Layer::Esp, usize::MAX),
        };
        let mut any = false;
        for p in self.rx.pkts_mut() {
            let Some(frame) = p.data().get(skip..) else {
                continue;
            };
            if let Some(id) = self.env.tracer.try_mark(frame) {
                let detail = match role {
                    PortRole::Underlay => format!(
                        "port {name}: VXLAN datagram, inner {}, {} bytes",
                        Summary::of(frame),
                        p.len()
                    ),
                    PortRole::EspUnderlay => format!("port {name}: ESP, {} bytes", p.len()),
                    PortRole::Local(_) => {
                        format!("port {name}: {}, {} bytes", Summary::of(frame), p.len())
                    }
                };
                p.meta.trace = id;
                any = true;
                self.env.tracer.begin(id, layer);
                let data = self.env.tracer.snapshot(p, None, self.env.local_vtep);
                self.env.tracer.record(TraceRecord {
                    id,
                    stage: "rx",
                    next: Next::Continue,
                    drop: None,
                    detail,
                    data,
                    time_ns: 0,
                });
            }
        }
        self.rx.traced |= any;
        if any && self.step_hook.is_some() {
            self.call_step_hook();
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
    /// stages count and trace as on a receive path, and only the packets still undecided at the
    /// end go out. A transmit stage either leaves a packet undecided or drops it; one it sends
    /// elsewhere (output, flood, remote: a stage bug, counted under that outcome) does not go out
    /// as it is either.
    fn run_tx_path(&mut self, port: PortId) {
        let slot = &mut self.ports[port.0 as usize];
        let mut traced = false;
        for p in slot.tx.pkts_mut() {
            p.meta.next = Next::Continue;
            traced |= p.meta.trace != 0;
        }
        slot.tx.traced = traced;
        self.env.tracer.tx = traced;
        let all = mask_of(slot.tx.len());
        let mut live = all;
        for k in 0..self.ports[port.0 as usize].tx_path.len() {
            let slot = &mut self.ports[port.0 as usize];
            let s = slot.tx_path[k];
            live = run_stage(
                &mut *self.stages[s],
                &mut self.stage_stats[s],
                &mut slot.tx,
                &mut self.env,
                live,
            );
            if traced && self.step_hook.is_some() {
                self.call_step_hook();
            }
        }
        self.env.tracer.tx = false;
        // Nothing decided (the usual case): nothing dropped, no compaction.
        if live != all {
            self.ports[port.0 as usize]
                .tx
                .retain(|p| p.meta.next == Next::Continue);
        }
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
            ("flood_no_underlay", self.flood_no_underlay),
            ("gso_frames", self.gso_frames),
            ("gso_segments", self.gso_segments),
            ("csum_finished", self.csum_finished),
        ];
        stages.push(out);
        SwitchStats {
            ports: self
                .ports
                .iter()
                .filter(|p| !p.name.is_empty())
                .map(|p| PortSnapshot {
                    name: p.name.clone(),
                    stats: p.stats,
                    port: {
                        let mut c = p.port.counters();
                        if let Some(g) = &p.gate {
                            c.extend(g.counters());
                        }
                        c
                    },
                })
                .collect(),
            stages,
            fdb: self.env.fdb.stats,
            fdb_entries: (self.env.fdb.learned_len(), self.env.fdb.static_len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdb::{FdbConfig, FdbDest};
    use crate::frames;
    use crate::packet::{Mac, Packet};
    use crate::port::MemPort;
    use std::net::Ipv4Addr;

    crate::drop_table! {
        /// Why `odd-drop` drops a frame.
        enum OddDrop {
            /// An odd length.
            Odd => "drop_odd",
        }
    }

    /// A transmit stage: drops odd-length frames, tags the others with their target VTEP.
    struct OddDropTag;
    impl Stage for OddDropTag {
        fn name(&self) -> &'static str {
            "odd-drop"
        }
        fn drop_names(&self) -> &'static [&'static str] {
            OddDrop::NAMES
        }
        fn process(&mut self, batch: &mut Batch, _env: &mut Env) {
            for (_, p) in batch.active_mut() {
                if p.len() % 2 == 1 {
                    p.meta.next = Next::Drop(OddDrop::Odd.into());
                } else if let (Some(v), Some(h)) = (p.meta.to_vtep, p.push_front(1)) {
                    h[0] = v.0 as u8;
                }
            }
        }
        fn describe(&self, _pkt: &Packet, _env: &Env) -> String {
            String::new()
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 9, last)
    }

    /// A node's workers' counters as one: by name, named counters summed (a name only one has
    /// appended), FDB sizes the larger.
    #[test]
    fn stats_add_up_by_name() {
        let port = |name: &str, rx: u64, c: Vec<(&'static str, u64)>| PortSnapshot {
            name: name.into(),
            stats: PortStats {
                rx_packets: rx,
                ..PortStats::default()
            },
            port: c,
        };
        let stage = |rx: u64, drops: Vec<(&'static str, u64)>| StageStats {
            name: "l2-parse",
            rx,
            drops,
            ..StageStats::default()
        };
        let mut a = SwitchStats {
            ports: vec![port(
                "c11",
                5,
                vec![("handoff_rx_out", 1), ("receiver_samples", 6)],
            )],
            stages: vec![stage(5, vec![("drop_runt", 1)])],
            fdb_entries: (3, 7),
            ..SwitchStats::default()
        };
        let b = SwitchStats {
            ports: vec![
                port(
                    "c11",
                    2,
                    vec![
                        ("handoff_rx_out", 2),
                        ("handoff_rx_in", 4),
                        ("receiver_samples", 6),
                    ],
                ),
                port("c12", 9, vec![]),
            ],
            stages: vec![stage(2, vec![("drop_runt", 2)])],
            fdb_entries: (5, 7),
            ..SwitchStats::default()
        };
        a.add(&b);
        assert_eq!(a.port("c11").map(|p| p.rx_packets), Some(7));
        assert_eq!(a.port("c12").map(|p| p.rx_packets), Some(9));
        // The gate's counters come from the one gate every worker holds: taken once.
        assert_eq!(
            a.ports[0].port,
            [
                ("handoff_rx_out", 3),
                ("receiver_samples", 6),
                ("handoff_rx_in", 4)
            ]
        );
        let s = a.stage("l2-parse").unwrap();
        assert_eq!((s.rx, s.drops.clone()), (7, vec![("drop_runt", 3)]));
        assert_eq!(a.fdb_entries, (5, 7));
    }

    #[test]
    fn the_transmit_path_runs_before_the_burst_and_its_drops_leave_the_batch() {
        let mut env = Env::new(FdbConfig::default());
        let net = env.add_network(Network::new("appnet", 4097, 1450));
        let v = env.add_vtep(Ipv4Addr::new(198, 18, 0, 2), "n2");
        let remote = Mac::docker_default(ip(21));
        env.fdb.add_static(net, remote, FdbDest::Remote(v)).unwrap();
        let (mut sw, l2) = Switch::with_l2(env);
        let tag = sw.add_stage(OddDropTag);
        let (p, ph) = MemPort::new();
        sw.add_port("p1", Box::new(p), PortRole::Local(net), l2.local_path(&[]));
        let (u, uh) = MemPort::new();
        let ul = sw.add_port("ul", Box::new(u), PortRole::Underlay, vec![]);
        sw.set_tx_path(ul, vec![tag.idx()]);
        sw.start_capture(ul, 10);
        let src = Mac::docker_default(ip(11));
        let sent: Vec<Vec<u8>> = (20..25usize)
            .map(|n| frames::udp(src, remote, ip(11), ip(21), 1, 2, &vec![0; n]))
            .collect();
        for f in &sent {
            ph.inject(f);
        }
        sw.poll(crate::env::Time::from_secs(1));
        let want: Vec<Vec<u8>> = sent
            .iter()
            .filter(|f| f.len() % 2 == 0)
            .map(|f| [&[v.0 as u8][..], f].concat())
            .collect();
        assert_eq!(uh.take_tx(), want, "the even ones, tagged, in order");
        let st = sw.stats();
        let s = st.stage("odd-drop").unwrap();
        assert_eq!((s.rx, s.cont, s.drop_count(OddDrop::Odd.name())), (5, 3, 2));
        for s in &st.stages {
            assert_eq!(s.rx, s.outcomes(), "{s:?}");
        }
        assert_eq!(st.stage("output").unwrap().remote, 5);
        assert_eq!(st.port("ul").unwrap().tx_packets, 3);
        let (cap, _, _) = sw.take_capture();
        let cap: Vec<Vec<u8>> = cap.into_iter().map(|c| c.data).collect();
        assert_eq!(cap, want, "captured as sent: after the transmit path");
    }

    #[test]
    fn a_gated_port_loses_udp_to_its_full_ports_only_and_counts_it() {
        let mut env = Env::new(FdbConfig::default());
        let net = env.add_network(Network::new("appnet", 4097, 1450));
        let (dst_mac, src_mac) = (Mac::docker_default(ip(21)), Mac::docker_default(ip(11)));
        let (mut sw, l2) = Switch::with_l2(env);
        let (a, ah) = MemPort::new();
        sw.add_port("c11", Box::new(a), PortRole::Local(net), l2.local_path(&[]));
        let (b, bh) = MemPort::new();
        let pb = sw.add_port("c21", Box::new(b), PortRole::Local(net), l2.local_path(&[]));
        sw.env
            .fdb
            .add_static(net, dst_mac, FdbDest::Local(pb))
            .unwrap();
        let gate = Arc::new(ReceiverGate::new());
        sw.set_receiver_gate(pb, Some(gate.clone()));
        gate.set(&[(5201, 0)]);
        let to = |port| frames::udp(src_mac, dst_mac, ip(11), ip(21), 40000, port, &[0; 18]);
        let tcp = frames::tcp(
            src_mac,
            dst_mac,
            ip(11),
            ip(21),
            40000,
            5201,
            frames::TcpFlags::SYN,
            1,
            0,
            &[],
        );
        for f in [to(5201), to(5201), to(5202), tcp.clone()] {
            ah.inject(&f);
        }
        sw.poll(crate::env::Time::from_secs(1));
        assert_eq!(
            bh.take_tx(),
            vec![to(5202), tcp],
            "the gated port's datagrams only"
        );
        let st = sw.stats();
        let out = st.stage("output").unwrap();
        assert_eq!(out.drop_count(OutputDrop::ReceiverFull.name()), 2);
        assert_eq!(out.rx, out.outcomes());
        assert!(gate.take_touched());
        // A traced datagram says where it ended and why.
        sw.env.tracer.arm(1, crate::trace::TraceFilter::default());
        ah.inject(&to(5201));
        sw.poll(crate::env::Time::from_secs(1));
        let last = sw.env.tracer.records().last().cloned().expect("a trace");
        assert_eq!(
            (last.stage, last.drop),
            ("output", Some(OutputDrop::ReceiverFull.name()))
        );
        assert!(
            last.detail.contains("5201 admitting 0.0%"),
            "{}",
            last.detail
        );
        // Opened again: they pass.
        gate.set(&[]);
        ah.inject(&to(5201));
        sw.poll(crate::env::Time::from_secs(2));
        assert_eq!(bh.take_tx(), vec![to(5201)]);
        // A removed port loses its gate; the slot's next port starts without one.
        let _ = sw.remove_port(pb);
        gate.set(&[(5201, 0)]);
        let (c, ch) = MemPort::new();
        let pc = sw.add_port("c22", Box::new(c), PortRole::Local(net), l2.local_path(&[]));
        assert_eq!(pc, pb, "the closed slot is taken again");
        sw.env
            .fdb
            .add_static(net, dst_mac, FdbDest::Local(pc))
            .unwrap_or_default();
        ah.inject(&to(5201));
        sw.poll(crate::env::Time::from_secs(3));
        assert_eq!(ch.take_tx(), vec![to(5201)]);
    }

    #[test]
    fn an_encrypted_network_goes_only_by_the_esp_underlay_and_never_falls_back_to_plain() {
        let mut env = Env::new(FdbConfig::default());
        let mut secnet = Network::new("secnet", 4098, 1408);
        secnet.encrypted = true;
        let net = env.add_network(secnet);
        let v = env.add_vtep(Ipv4Addr::new(198, 18, 0, 2), "n2");
        env.nets[net.0 as usize].peers.push(v);
        let remote = Mac::docker_default(ip(21));
        env.fdb.add_static(net, remote, FdbDest::Remote(v)).unwrap();
        let (mut sw, l2) = Switch::with_l2(env);
        let (p, ph) = MemPort::new();
        sw.add_port("p1", Box::new(p), PortRole::Local(net), l2.local_path(&[]));
        let (u, uh) = MemPort::new();
        sw.add_port("ul", Box::new(u), PortRole::Underlay, vec![]);
        let src = Mac::docker_default(ip(11));
        let unicast = frames::udp(src, remote, ip(11), ip(21), 1, 2, &[0; 20]);
        let flood = frames::udp(src, Mac::BROADCAST, ip(11), ip(21), 1, 2, &[0; 20]);
        // No ESP port: dropped and counted, nothing on the plain underlay.
        ph.inject(&unicast);
        ph.inject(&flood);
        sw.poll(crate::env::Time::from_secs(1));
        assert!(uh.take_tx().is_empty(), "never in clear");
        let st = sw.stats();
        let out = st.stage("output").unwrap();
        assert_eq!(out.drop_count(OutputDrop::NoEspUnderlay.name()), 1);
        assert_eq!(out.rx, out.outcomes());
        assert!(
            out.events
                .iter()
                .any(|(k, v)| *k == "flood_no_underlay" && *v == 1),
            "{:?}",
            out.events
        );
        // With one, both go there.
        let (e, eh) = MemPort::new();
        sw.add_port("esp", Box::new(e), PortRole::EspUnderlay, vec![]);
        ph.inject(&unicast);
        ph.inject(&flood);
        sw.poll(crate::env::Time::from_secs(2));
        assert!(uh.take_tx().is_empty(), "never in clear");
        assert_eq!(eh.take_tx(), vec![unicast.clone(), flood.clone()]);
    }

    #[test]
    fn a_removed_port_leaves_the_flood_set_and_the_fdb_and_its_slot_is_reused() {
        let mut env = Env::new(FdbConfig::default());
        let net = env.add_network(Network::new("appnet", 4097, 1450));
        let (mut sw, l2) = Switch::with_l2(env);
        let path = l2.local_path(&[]);
        let mut handles = Vec::new();
        for name in ["p1", "p2", "p3"] {
            let (p, h) = MemPort::new();
            sw.add_port(name, Box::new(p), PortRole::Local(net), path.clone());
            handles.push(h);
        }
        let (a, b) = (Mac::docker_default(ip(1)), Mac::docker_default(ip(2)));
        // p2 sends: its MAC is learned there; the broadcast reaches p1 and p3.
        handles[1].inject(&frames::udp(b, Mac::BROADCAST, ip(2), ip(1), 1, 2, b"x"));
        let g0 = sw.ports_generation();
        sw.poll(crate::env::Time::from_secs(1));
        assert_eq!(
            (handles[0].take_tx().len(), handles[2].take_tx().len()),
            (1, 1)
        );
        assert_eq!(sw.env.fdb.learned_len(), 1);
        let p2 = sw.port_id("p2").unwrap();
        assert!(sw.remove_port(p2).is_some());
        assert!(sw.remove_port(p2).is_none(), "already closed");
        sw.env.fdb.flush_port(p2);
        assert_ne!(sw.ports_generation(), g0);
        assert_eq!(
            sw.env.fdb.learned_len(),
            0,
            "what was learned on p2 is gone"
        );
        assert_eq!(sw.port_id("p2"), None);
        assert_eq!(sw.stats().ports.len(), 2);
        // Frames to p2's MAC now flood to p1 and p3 only; p2's handle sees nothing.
        handles[0].inject(&frames::udp(a, b, ip(1), ip(2), 1, 2, b"y"));
        sw.poll(crate::env::Time::from_secs(2));
        assert_eq!(handles[2].take_tx().len(), 1);
        assert!(handles[1].take_tx().is_empty());
        // A new port takes the closed slot and joins the flood set.
        let (p4, h4) = MemPort::new();
        let id = sw.add_port("p4", Box::new(p4), PortRole::Local(net), path);
        assert_eq!(id, p2);
        handles[0].inject(&frames::udp(a, b, ip(1), ip(2), 1, 2, b"z"));
        sw.poll(crate::env::Time::from_secs(3));
        assert_eq!(h4.take_tx().len(), 1);
        assert_eq!(sw.port_name(id), "p4");
        assert_eq!(sw.env.port_names[usize::from(id.0)], "p4");
    }
}
