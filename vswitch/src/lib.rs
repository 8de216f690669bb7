//! vswitch: the dataplane core of vxmesh.
//!
//! Everything a packet touches between a port's receive and a port's transmit: packet buffers
//! with headroom ([`Packet`]), batches ([`Batch`]), the [`Port`] trait and in-memory ports, the
//! [`Stage`] trait with its conservation-by-construction counters, tracing, the bounded flat
//! hash table ([`table::FlatTable`]), the forwarding database ([`Fdb`]), the L2 stages
//! (`l2-parse`, `l2-learn`, `arp-proxy`, `l2-fwd`), and the [`Switch`] that ties ports and
//! stages together. The `vxlan` and `lb` crates add stages on top; the root crate assembles them.
//!
//! ```text
//! port ─► l2-parse ─► l2-learn ─► arp-proxy ─► [lb-nat] ─► l2-fwd ─► output ─┬─► local port
//!                                                                           └─► [vxlan-encap] ─► underlay
//! ```
#![warn(missing_docs)]

pub mod afxdp;
pub mod arp;
pub mod batch;
pub mod bpf;
pub mod env;
pub mod ethtool;
pub mod fdb;
pub mod frames;
pub mod l2;
pub mod netns;
pub mod offload;
pub mod packet;
pub mod port;
pub mod stage;
pub mod switch;
pub mod table;
pub mod tap;
pub mod trace;
pub mod worker;

pub use afxdp::{AfxdpConfig, AfxdpError, AfxdpPort, XdpMode};
pub use batch::{BATCH_SIZE, Batch, MAX_BATCH};
pub use env::{Env, Network, Time, Vtep};
pub use fdb::{Fdb, FdbConfig, FdbDest};
pub use packet::{DropReason, HEADROOM, Mac, Meta, NetId, Next, Packet, PortId, VtepId};
pub use port::{GenPort, MemHandle, MemPort, Port, SinkPort};
pub use stage::{Stage, StageStats};
pub use switch::{
    CapturedFrame, L2Stages, PortRole, PortSnapshot, PortStats, Switch, SwitchStats, Tunnel,
};
