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
//! The inputs and outputs are in `sim/io.rs`, the stepping debugger in `sim/debug.rs`, the
//! command in `sim/cli.rs`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, bail};
use vswitch::{MemHandle, MemPort, Port, Time};

use crate::config::{Cluster, ESP_UDP_PORT};
use crate::node::{self, HOUSEKEEPING, Node, PortOpener, PortPlan};

pub mod cli;
pub mod debug;
pub mod io;
pub mod workload;

/// Most housekeeping ticks run across one gap between two inputs.
pub const MAX_TICKS_PER_GAP: u64 = 64;
/// Most rounds of the virtual wire per input (a round delivers what every node sent in the
/// last one); split horizon keeps a packet from going round, so this is only a bound.
pub const MAX_ROUNDS: usize = 16;
/// Connection-table entries of each simulated node: smaller than a live node's (the simulator
/// holds every node in one process).
pub const SIM_MAX_CONNS: usize = 1 << 14;

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

impl SimPortKind {
    /// The UDP port the underlay's datagrams go between (none: not UDP).
    fn udp_port(self) -> Option<u16> {
        match self {
            SimPortKind::Underlay => Some(vxlan::VXLAN_PORT),
            SimPortKind::EspUdp => Some(ESP_UDP_PORT),
            SimPortKind::Local | SimPortKind::Esp => None,
        }
    }
}

/// One port of a simulated node: its name, what it is, the simulator's end of it.
pub struct SimPort {
    /// The port's name (the endpoint's, the ingress's interface, `underlay`, ...).
    pub name: String,
    /// What it is.
    pub kind: SimPortKind,
    handle: MemHandle,
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
    pub ports: Vec<SimPort>,
    /// Frames given to its ports and not yet received by its switch.
    pending: usize,
}

/// Where a frame a simulated port sent goes (the writers of `sim/io.rs`, a bench's counter).
pub trait Sink {
    /// Port `port` of node `node` sent `frame` (an Ethernet frame, the underlay's as on the
    /// wire) at `now`.
    fn frame(&mut self, node: usize, port: usize, now: Time, frame: &[u8]);
}

/// A sink that only counts.
#[derive(Default, Debug)]
pub struct CountSink(pub u64);

impl Sink for CountSink {
    fn frame(&mut self, _: usize, _: usize, _: Time, _: &[u8]) {
        self.0 += 1;
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

/// Opens in-memory ports and keeps their other ends.
#[derive(Default)]
struct SimPorts {
    ports: Vec<SimPort>,
}

impl SimPorts {
    fn open(&mut self, name: &str, kind: SimPortKind) -> Box<dyn Port> {
        let (port, handle) = MemPort::new();
        self.ports.push(SimPort {
            name: name.to_string(),
            kind,
            handle,
        });
        Box::new(port)
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
    /// Scratch for a port's transmitted frames.
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
    /// Every node of `cluster`, built with in-memory ports and `seed`.
    pub fn new(cluster: &Cluster, seed: u64) -> anyhow::Result<Sim> {
        let mut nodes = Vec::new();
        for n in &cluster.nodes {
            let mut ports = SimPorts::default();
            let node = Node::build_seeded(
                cluster.clone(),
                &n.name,
                &mut ports,
                SIM_MAX_CONNS,
                node_seed(seed, &n.name),
            )
            .with_context(|| format!("node {}", n.name))?;
            nodes.push(SimNode {
                name: n.name.clone(),
                vtep: n.vtep,
                node,
                ports: ports.ports,
                pending: 0,
            });
        }
        let stats = vec![SimStats::default(); nodes.len()];
        Ok(Sim {
            nodes,
            stats,
            now: Time(0),
            next_tick: None,
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
        let p = &n.ports[port];
        self.stats[node].frames_in += 1;
        match p.kind {
            SimPortKind::Local => p.handle.inject(frame),
            kind => match io::underlay_payload(frame, n.vtep, kind) {
                Some((payload, from)) => p.handle.inject_from(payload, from),
                None => {
                    self.stats[node].underlay_bad_input += 1;
                    return Ok(());
                }
            },
        }
        n.pending += 1;
        self.settle(sink);
        Ok(())
    }

    /// Run every node with frames waiting, deliver what they sent on the underlay, and again,
    /// until nothing moves (at most [`MAX_ROUNDS`] rounds).
    pub fn settle(&mut self, sink: &mut dyn Sink) {
        let now = self.now;
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                if self.nodes[i].pending == 0 {
                    continue;
                }
                let got = self.nodes[i].node.sw.poll(now);
                // A frame too big for the switch's buffers is counted by its port and gone.
                self.nodes[i].pending = self.nodes[i].pending.saturating_sub(got.max(1));
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
        let now = self.now;
        for k in 0..self.nodes[i].ports.len() {
            let sent = self.nodes[i].ports[k].handle.take_tx_to();
            let kind = self.nodes[i].ports[k].kind;
            for (peer, data) in sent {
                self.stats[i].frames_out += 1;
                if kind == SimPortKind::Local {
                    sink.frame(i, k, now, &data);
                    continue;
                }
                let me = self.nodes[i].vtep;
                let Some(peer) = peer else {
                    self.stats[i].underlay_no_node += 1;
                    continue;
                };
                let dst_port = kind.udp_port().unwrap_or(0);
                let (src, dst) = (
                    SocketAddrV4::new(me, kind.udp_port().unwrap_or(0)),
                    SocketAddrV4::new(*peer.ip(), dst_port),
                );
                self.scratch.clear();
                io::wire_frame(&mut self.scratch, kind, src, dst, &data);
                sink.frame(i, k, now, &self.scratch);
                let to = self.nodes.iter().position(|n| n.vtep == *peer.ip());
                let port = to.and_then(|j| {
                    self.nodes[j]
                        .ports
                        .iter()
                        .position(|p| p.kind == kind)
                        .map(|k| (j, k))
                });
                match port {
                    Some((j, q)) if kind == SimPortKind::Esp => {
                        // A raw socket hands over the IPv4 header with the ESP packet.
                        let ip = &self.scratch[vswitch::wire::ethernet::HEADER_LEN..];
                        self.nodes[j].ports[q].handle.inject_from(ip, src);
                        self.nodes[j].pending += 1;
                    }
                    Some((j, q)) => {
                        self.nodes[j].ports[q].handle.inject_from(&data, src);
                        self.nodes[j].pending += 1;
                    }
                    None => self.stats[i].underlay_no_node += 1,
                }
            }
        }
    }
}

/// Nanoseconds since the Unix epoch of a pcap timestamp.
pub fn time_of(ts: Duration) -> Time {
    Time(u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
