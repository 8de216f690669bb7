//! vswitch: the dataplane core of vxmesh.
//!
//! Everything a packet touches between a port's receive and a port's transmit: packet buffers
//! with headroom ([`Packet`]), batches ([`Batch`]), the [`Port`] contract and in-memory ports, the
//! [`Stage`] trait with its conservation-by-construction counters, tracing, the bounded flat
//! hash table ([`table::FlatTable`]), the forwarding database ([`Fdb`]), the L2 stages
//! (`l2-parse` with port security, `l2-learn`, `arp-proxy`, `own-addr`, `l2-fwd`), the networks' resolvers
//! (`dns`, answering service discovery queries in place), and the [`Switch`] that ties ports and
//! stages together. The `vxlan` and `lb` crates add stages on top; the root crate assembles them.
//!
//! The OS port drivers live in [`port`] behind cargo features, all on by default: `afxdp`
//! (`port::afxdp`, AF_XDP sockets through xdpilone), `tap` (`port::tap`) and `udp`
//! (`port::udp`, the UDP underlay that carries VXLAN); `afxdp` or `tap` brings the setup
//! helpers `port::netns`, `port::ethtool` and `port::iface`. With `default-features = false`
//! only the core is compiled.
//!
//! ```text
//! port ─► l2-parse ─► l2-learn ─► arp-proxy ─► [dns] ─► [lb-nat] ─► own-addr ─► l2-fwd ─► output ─┬─► local port
//!                                                                                                 └─► underlay tx path: [vxlan-encap] ─► underlay
//! ```

pub mod arp;
pub mod batch;
pub mod dns;
pub mod env;
pub mod fdb;
#[cfg(any(test, feature = "test-frames"))]
pub mod frames;
pub mod gate;
pub mod l2;
pub mod offload;
pub mod own_addr;
pub mod packet;
pub mod port;
pub mod port_sec;
pub mod stage;
pub mod switch;
pub mod table;
pub mod trace;
pub mod wire;
pub mod worker;

/// The port drivers compiled in, as (cargo feature, enabled): what `vxmesh --version` lists.
pub const FEATURES: [(&str, bool); 3] = [
    ("afxdp", cfg!(feature = "afxdp")),
    ("tap", cfg!(feature = "tap")),
    ("udp", cfg!(feature = "udp")),
];

pub use batch::{BATCH_SIZE, Batch, MAX_BATCH};
pub use env::{Env, Network, PortGuard, Time, Vtep};
pub use fdb::{Fdb, FdbConfig, FdbDest};
pub use own_addr::{OwnAddr, OwnAddrDrop};
pub use packet::{DropReason, HEADROOM, Mac, Meta, NetId, Next, Packet, PortId, VtepId};
pub use port::{GenPort, MemHandle, MemPort, Port, SinkPort};
pub use stage::{Stage, StageStats};
pub use switch::{
    CapturedFrame, L2Stages, OutputDrop, PortRole, PortSnapshot, PortStats, StageHandle, StageIdx,
    Switch, SwitchStats,
};
