//! The simulator (`vxmesh sim`): every node of a cluster file in one process, each with its
//! real pipeline and tables ([`Node::build_seeded`]), its ports in memory, and a virtual
//! underlay and clock between them. No root, no interface, no thread: the same inputs and seed
//! give the same outputs, byte for byte.
//!
//! ```text
//! input pcaps ─► PORT of NODE (in memory) ─► NODE's pipeline ─► local ports ─► NODE-PORT.pcap
//!                                                      └─► underlay ─► virtual wire ─► peer's underlay ─► its pipeline ...
//! ```
//!
//! - **Time** is the inputs' time: each packet enters at its pcap timestamp, and every node
//!   runs at that time ([`Time`] = nanoseconds since the Unix epoch). Housekeeping (FDB aging,
//!   connection expiry, rates) runs every [`HOUSEKEEPING`] of that time, as a node's poll
//!   thread does; across a gap longer than [`MAX_TICKS_PER_GAP`] periods only the last ones
//!   run (enough to sweep a table of 256k slots with a node's budget per tick).
//! - **The underlay** is a virtual wire of zero delay: what a node sends on an underlay port
//!   (plain VXLAN, ESP, ESP in UDP) reaches the same port of the node whose VTEP it is sent
//!   to, from the sender's VTEP, in the same instant. A packet is run to the end, across every
//!   node it reaches, before the next input enters.
//! - **Randomness** (hash seeds, the ESP epoch) comes from `--seed`; the schedulers and the
//!   rest of the pipeline are deterministic already. Nodes run in the file's order.
//!
//! The ports are in `sim/port.rs`, the inputs and outputs in `sim/io.rs`, the stepping
//! debugger in `sim/debug.rs`, the command in `sim/cli.rs`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, bail};
use vswitch::{Port, Time};

use crate::config::{Cluster, ESP_UDP_PORT};
use crate::node::{self, HOUSEKEEPING, Node, PortOpener, PortPlan};
use port::SimPort;

pub mod cli;
pub mod debug;
pub mod io;
pub mod port;
pub mod workload;

/// Most housekeeping ticks run across one gap between two inputs.
pub const MAX_TICKS_PER_GAP: u64 = 64;
/// Most rounds of the virtual wire per input (a round delivers what every node sent in the
/// last one); split horizon keeps a packet from going round, so this is only a bound.
pub const MAX_ROUNDS: usize = 16;

/// What a port of a simulated node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimPortKind {
    /// An endpoint's or an ingress's port: Ethernet frames.
    Local,
    /// The UDP underlay (VXLAN on 4789).
    Underlay,
    /// The ESP underlay (IP protocol 50).
    Esp,
    /// ESP in UDP (port 4500).
    EspUdp,
}

impl SimNode {
    /// Port `k` has one more frame to receive.
    fn give(&mut self, k: usize) {
        if self.pending[k] == 0 {
            self.ready.push(k);
        }
        self.pending[k] += 1;
    }
}

impl SimPortKind {
    /// Its place in a node's underlay ports (`None`: not an underlay).
    fn underlay_slot(self) -> Option<usize> {
        match self {
            SimPortKind::Local => None,
            SimPortKind::Underlay => Some(0),
            SimPortKind::Esp => Some(1),
            SimPortKind::EspUdp => Some(2),
        }
    }

    /// The UDP port the underlay's datagrams go between (none: not UDP).
    fn udp_port(self) -> Option<u16> {
        match self {
            SimPortKind::Underlay => Some(vxlan::VXLAN_PORT),
            SimPortKind::EspUdp => Some(ESP_UDP_PORT),
            SimPortKind::Local | SimPortKind::Esp => None,
        }
    }
}

/// One port of a simulated node: its name, what it is, where the switch has it.
pub struct PortInfo {
    /// The port's name (the endpoint's, the ingress's interface, `underlay`, ...).
    pub name: String,
    /// What it is.
    pub kind: SimPortKind,
    /// The switch's id of it.
    pub id: vswitch::PortId,
}

/// One simulated node.
pub struct SimNode {
    /// Its name in the cluster file.
    pub name: String,
    /// Its VTEP.
    pub vtep: Ipv4Addr,
    /// The node itself: the real pipeline and tables.
    pub node: Node,
    /// Its ports, in the order they were opened.
    pub ports: Vec<PortInfo>,
    /// Per port, frames given to it and not yet polled for.
    pending: Vec<usize>,
    /// The ports with frames to receive, in the order they got them (each once).
    ready: Vec<usize>,
    /// The port of each underlay kind (plain, ESP, ESP in UDP), if the node has it.
    underlay: [Option<usize>; 3],
    /// Which ports transmitted.
    sent: port::SentMask,
}

/// Where a frame a simulated port sent goes (the writers of `sim/io.rs`, a bench's counter).
pub trait Sink {
    /// Port `port` of node `node` sent `frame` (an Ethernet frame, the underlay's as on the
    /// wire) at `now`.
    fn frame(&mut self, node: usize, port: usize, now: Time, frame: &[u8]);
    /// Whether it wants the underlay's packets as on the wire (else as the port sent them:
    /// the wire's headers are built only for a sink that records them).
    fn wire(&self) -> bool {
        true
    }
}

/// A sink that only counts.
#[derive(Default, Debug)]
pub struct CountSink(pub u64);

impl Sink for CountSink {
    fn frame(&mut self, _: usize, _: usize, _: Time, _: &[u8]) {
        self.0 += 1;
    }
    fn wire(&self) -> bool {
        false
    }
}

/// The simulator's own counters (in each node's stats file: `sim`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimStats {
    /// Frames given to the node's ports from the inputs.
    pub frames_in: u64,
    /// Frames its ports sent.
    pub frames_out: u64,
    /// Underlay packets it sent to an address no node of the file has.
    pub underlay_no_node: u64,
    /// Underlay inputs that were not IPv4 to this node's VTEP (UDP to the port's port).
    pub underlay_bad_input: u64,
}

/// Opens the ports of a simulated node and remembers what each is.
#[derive(Default)]
struct SimPorts {
    ports: Vec<(String, SimPortKind)>,
    sent: port::SentMask,
}

impl SimPorts {
    fn open(&mut self, name: &str, kind: SimPortKind) -> Box<dyn Port> {
        self.ports.push((name.to_string(), kind));
        Box::new(SimPort::new(self.ports.len() - 1, self.sent.clone()))
    }
}

impl PortOpener for SimPorts {
    fn open(&mut self, plan: &PortPlan, _offloads: bool) -> anyhow::Result<Box<dyn Port>> {
        Ok(SimPorts::open(self, &plan.name, SimPortKind::Local))
    }
    fn underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        Ok(SimPorts::open(
            self,
            node::UNDERLAY_PORT,
            SimPortKind::Underlay,
        ))
    }
    fn esp_underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        Ok(SimPorts::open(self, node::ESP_PORT, SimPortKind::Esp))
    }
    fn esp_udp_underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        Ok(SimPorts::open(
            self,
            node::ESP_UDP_PORT,
            SimPortKind::EspUdp,
        ))
    }
}

/// The simulated cluster.
pub struct Sim {
    /// Its nodes, in the file's order.
    pub nodes: Vec<SimNode>,
    /// Per node, the simulator's counters.
    pub stats: Vec<SimStats>,
    /// The virtual clock: the last input's time.
    pub now: Time,
    /// When housekeeping next runs (`None`: before the first input).
    next_tick: Option<Time>,
    /// A port's transmitted frames while they are handed on (swapped with the port's).
    sent: port::Frames,
    /// Scratch for a frame as on the wire.
    scratch: Vec<u8>,
}

/// A 64-bit mix of the run's seed and a node's name: each node's own seed.
fn node_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, then splitmix64: fixed, and different per node.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Sim {
    /// Every node of `cluster`, built with in-memory ports and `seed`, each with a connection
    /// table of a live node's default size ([`node::MAX_CONNS`]).
    pub fn new(cluster: &Cluster, seed: u64) -> anyhow::Result<Sim> {
        Sim::with_max_conns(cluster, seed, node::MAX_CONNS)
    }

    /// [`Sim::new`] with connection tables of `max_conns` entries (`vxmesh sim --max-conns`,
    /// as `vxmesh run --max-conns`).
    pub fn with_max_conns(cluster: &Cluster, seed: u64, max_conns: usize) -> anyhow::Result<Sim> {
        let mut nodes = Vec::new();
        for n in &cluster.nodes {
            let mut ports = SimPorts::default();
            let node = Node::build_seeded(
                cluster.clone(),
                &n.name,
                &mut ports,
                max_conns,
                node_seed(seed, &n.name),
            )
            .with_context(|| format!("node {}", n.name))?;
            let infos = ports
                .ports
                .into_iter()
                .map(|(name, kind)| {
                    let id = node.sw.port_id(&name).with_context(|| {
                        format!("node {}: port {name} is not in its switch", n.name)
                    })?;
                    Ok(PortInfo { name, kind, id })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            nodes.push(SimNode {
                name: n.name.clone(),
                vtep: n.vtep,
                node,
                pending: vec![0; infos.len()],
                ready: Vec::with_capacity(infos.len()),
                underlay: [SimPortKind::Underlay, SimPortKind::Esp, SimPortKind::EspUdp]
                    .map(|k| infos.iter().position(|p| p.kind == k)),
                ports: infos,
                sent: ports.sent,
            });
        }
        let stats = vec![SimStats::default(); nodes.len()];
        Ok(Sim {
            nodes,
            stats,
            now: Time(0),
            next_tick: None,
            sent: port::Frames::default(),
            scratch: Vec::new(),
        })
    }

    /// The node and port called `node`/`port`, as indices.
    pub fn port(&self, node: &str, port: &str) -> anyhow::Result<(usize, usize)> {
        let Some(n) = self.nodes.iter().position(|n| n.name == node) else {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "no node {node:?} in the cluster file (nodes: {})",
                names.join(", ")
            );
        };
        let ports = &self.nodes[n].ports;
        match ports.iter().position(|p| p.name == port) {
            Some(p) => Ok((n, p)),
            None => {
                let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "node {node} has no port {port:?} (ports: {})",
                    names.join(", ")
                )
            }
        }
    }

    /// Move the clock to `t` (never back: an input older than the last one enters at the
    /// last one's time), running the housekeeping due on the way.
    pub fn advance(&mut self, t: Time) {
        let t = t.max(self.now);
        let period = HOUSEKEEPING.as_nanos() as u64;
        let mut tick = self.next_tick.unwrap_or(t);
        if t.0 >= tick.0 {
            let due = (t.0 - tick.0) / period + 1;
            if due > MAX_TICKS_PER_GAP {
                tick = Time(tick.0 + (due - MAX_TICKS_PER_GAP) * period);
            }
            while tick <= t {
                for n in &mut self.nodes {
                    n.node.sw.env.now = tick;
                    n.node.housekeeping(tick);
                }
                tick = Time(tick.0 + period);
            }
        }
        self.next_tick = Some(tick);
        self.now = t;
    }

    /// Give `frame` to port `port` of node `node` at time `t`, and run it (and everything it
    /// causes) to the end. An underlay port takes the frame as on the wire (Ethernet, IPv4,
    /// UDP or ESP to this node's VTEP).
    pub fn input(
        &mut self,
        node: usize,
        port: usize,
        t: Time,
        frame: &[u8],
        sink: &mut dyn Sink,
    ) -> anyhow::Result<()> {
        self.advance(t);
        let n = &mut self.nodes[node];
        self.stats[node].frames_in += 1;
        let (id, kind) = (n.ports[port].id, n.ports[port].kind);
        let (peer, data) = match kind {
            SimPortKind::Local => (None, frame),
            kind => match io::underlay_payload(frame, n.vtep, kind) {
                Some((payload, from)) => (Some(from), payload),
                None => {
                    self.stats[node].underlay_bad_input += 1;
                    return Ok(());
                }
            },
        };
        SimPort::of(&mut n.node.sw, id).inject(peer, data);
        n.give(port);
        self.settle(sink);
        Ok(())
    }

    /// Run every port with frames waiting, deliver what the nodes sent on the underlay, and
    /// again, until nothing moves (at most [`MAX_ROUNDS`] rounds).
    pub fn settle(&mut self, sink: &mut dyn Sink) {
        let now = self.now;
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                if self.nodes[i].ready.is_empty() {
                    continue;
                }
                let n = &mut self.nodes[i];
                for r in 0..n.ready.len() {
                    let k = n.ready[r];
                    while n.pending[k] > 0 {
                        let got = n.node.sw.poll_port(now, n.ports[k].id);
                        // A frame too big for the switch's buffers is counted by its port and
                        // gone: never poll for it again.
                        n.pending[k] = n.pending[k].saturating_sub(got.max(1));
                    }
                }
                n.ready.clear();
                moved = true;
                self.collect(i, sink);
            }
            if !moved {
                return;
            }
        }
    }

    /// Take what node `i`'s ports sent: to the sink, and the underlay's to its peers.
    fn collect(&mut self, i: usize, sink: &mut dyn Sink) {
        let mut sent = self.nodes[i].sent.take();
        let wire = sink.wire();
        while sent != 0 {
            let bit = sent.trailing_zeros() as usize;
            sent &= sent - 1;
            // Bit 63 stands for every port from 63 up.
            let ports = if bit < 63 {
                bit..bit + 1
            } else {
                63..self.nodes[i].ports.len()
            };
            for k in ports {
                self.collect_port(i, k, sink, wire);
            }
        }
    }

    /// Take what port `k` of node `i` sent.
    fn collect_port(&mut self, i: usize, k: usize, sink: &mut dyn Sink, wire: bool) {
        let id = self.nodes[i].ports[k].id;
        let port = SimPort::of(&mut self.nodes[i].node.sw, id);
        if port.tx.is_empty() {
            return;
        }
        std::mem::swap(&mut self.sent, &mut port.tx);
        for f in 0..self.sent.len() {
            self.hand_on(i, k, f, sink, wire);
        }
        self.sent.clear();
    }

    /// Frame `f` of `self.sent`, sent by port `k` of node `i`: to the sink (`wire`: the
    /// underlay's as on the wire), and over the virtual wire if it is the underlay's.
    fn hand_on(&mut self, i: usize, k: usize, f: usize, sink: &mut dyn Sink, wire: bool) {
        let now = self.now;
        let (peer, data) = self.sent.get(f);
        self.stats[i].frames_out += 1;
        let kind = self.nodes[i].ports[k].kind;
        if kind == SimPortKind::Local {
            sink.frame(i, k, now, data);
            return;
        }
        let Some(peer) = peer else {
            self.stats[i].underlay_no_node += 1;
            return;
        };
        let udp = kind.udp_port().unwrap_or(0);
        let src = SocketAddrV4::new(self.nodes[i].vtep, udp);
        // ESP needs its IPv4 header for the receiver as well (below).
        if wire || kind == SimPortKind::Esp {
            let dst = SocketAddrV4::new(*peer.ip(), udp);
            self.scratch.clear();
            io::wire_frame(&mut self.scratch, kind, src, dst, data);
        }
        sink.frame(i, k, now, if wire { &self.scratch } else { data });
        let to = self.nodes.iter().position(|n| n.vtep == *peer.ip());
        let Some((j, q)) =
            to.and_then(|j| Some((j, self.nodes[j].underlay[kind.underlay_slot()?]?)))
        else {
            self.stats[i].underlay_no_node += 1;
            return;
        };
        // A raw ESP socket hands over the IPv4 header with the ESP packet.
        let got: &[u8] = match kind {
            SimPortKind::Esp => &self.scratch[vswitch::wire::ethernet::HEADER_LEN..],
            _ => data,
        };
        let to = &mut self.nodes[j];
        let id = to.ports[q].id;
        SimPort::of(&mut to.node.sw, id).inject(Some(src), got);
        to.give(q);
    }
}

/// Nanoseconds since the Unix epoch of a pcap timestamp.
pub fn time_of(ts: Duration) -> Time {
    Time(u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
