//! vxmesh: the node. Assembles the dataplane from the `vswitch`, `vxlan` and `lb` crates and
//! presents it to the user: the `vxmesh` command line, the daemon and its control socket, the
//! cluster file, and the renderings of the switch's state that the control commands print. The
//! lab, the demo and the comparison tool live apart, in the `vxmesh-lab` crate (`lab/`).

pub mod cni;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fuzzing;
pub mod log;
pub mod node;
pub mod pcap;
pub mod pcapng;
pub mod show;
pub mod sim;
pub mod store;
pub mod sys;
pub mod version;
