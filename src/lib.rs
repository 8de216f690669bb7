//! vxmesh: the node. Assembles the dataplane from the `vswitch`, `vxlan` and `lb` crates and
//! presents it to the user: the `vxmesh` command line, the demo, and the renderings of the
//! switch's state that the control commands print.
#![warn(missing_docs)]

pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod lab;
pub mod labrun;
pub mod node;
pub mod own_addr;
pub mod pcap;
pub mod show;
pub mod sys;
