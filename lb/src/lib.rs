//! lb: the vxmesh load balancer, IPVS (Masq mode) rebuilt in userspace.
//!
//! Where it sits: the `lb-nat` stage ([`stage::LbStage`]) runs in the vswitch pipeline between
//! the L2 learning/ARP stages and `l2-fwd`/`vxlan-encap`. It owns a [`Balancer`]
//! ([`balancer`]: the tables), whose operations are split as Katran splits its control plane
//! from its forwarding path: [`control`] (services, backends, weights, timeouts, expiry, rates;
//! between batches) and [`data`] (the per-packet path). Inside the data path a packet is parsed
//! ([`packet`]), looked up in connection tracking ([`conntrack`]) or, when new, matched to a
//! virtual service and given a backend by a scheduler ([`sched`]), then rewritten in place with
//! incremental checksums ([`vswitch::wire::checksum`]); TCP states and timeouts follow IPVS ([`state`]).
//! [`types`] holds the vocabulary both sides share; [`listing`] takes the `ipvsadm -Ln` /
//! `-Lnc` snapshots and renders them for the CLI; [`persist`] keeps the connection entries in a
//! file under `/run/vxmesh/` so a restarted node takes them over.

pub mod balancer;
pub mod conntrack;
pub mod control;
pub mod data;
pub mod listing;
pub mod packet;
pub mod persist;
pub mod sched;
pub mod stage;
pub mod state;
pub mod types;

pub use balancer::Balancer;
pub use listing::{ListMode, format_services};
pub use sched::SchedulerKind;
pub use stage::LbStage;
pub use state::Timeouts;
pub use types::{
    BackendConfig, BalancerConfig, Protocol, Rates, Rx, ServiceConfig, ServiceKey, Snat, Stats,
};
