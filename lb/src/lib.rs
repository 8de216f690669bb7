//! lb: the vxmesh load balancer, IPVS (Masq mode) rebuilt in userspace.
//!
//! Where it sits: the `lb-nat` stage ([`stage::LbStage`]) runs in the vswitch pipeline between
//! the L2 learning/ARP stages and `l2-fwd`/`vxlan-encap`. Inside it, a packet is parsed
//! ([`packet`]), looked up in connection tracking ([`conntrack`]) or, when new, matched to a
//! virtual service and given a backend by a scheduler ([`sched`]), then rewritten in place with
//! incremental checksums ([`checksum`]); TCP states and timeouts follow IPVS ([`state`]).
//! [`listing`] renders `ipvsadm -Ln` / `-Lnc` style tables for the CLI.
#![warn(missing_docs)]

pub mod balancer;
pub use vswitch::wire::checksum;
pub mod conntrack;
pub mod listing;
pub mod packet;
pub mod sched;
pub mod stage;
pub mod state;

pub use balancer::{
    BackendConfig, BackendInfo, Balancer, BalancerConfig, BalancerError, ConnInfo, LbCounters,
    LbDrop, Mac, MarkRule, Prepared, Protocol, Rates, ServiceConfig, ServiceInfo, ServiceKey, Snat,
    Stats, Verdict,
};
pub use listing::{ListMode, format_conns, format_services};
pub use sched::SchedulerKind;
pub use stage::LbStage;
pub use state::{TcpState, Timeouts};
