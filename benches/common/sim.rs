//! What the simulator's benches share (benches/sim.rs, benches/sim_count.rs): the demo cluster,
//! the frames of the path from c11 on n1 to c21 on n2, and nodes whose ports replay them.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use vswitch::{GenPort, Mac, Port, SinkPort, frames};
use vxmesh::config::Cluster;
use vxmesh::node::{PortOpener, PortPlan};

/// Flows of the path's frames.
pub const FLOWS: u16 = 64;

/// 10.0.9.`last`.
pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}

/// Docker's MAC of 10.0.9.`last`.
pub fn mac(last: u8) -> Mac {
    Mac::docker_default(ip(last))
}

/// The demo cluster (the shared fixture).
pub fn cluster() -> Cluster {
    let text = include_str!("../../tests/fixtures/cluster.toml").replace("{P}", "");
    Cluster::parse(Path::new("bench.toml"), &text).expect("the fixture")
}

/// c11 to c21, one frame per flow: 64-byte UDP.
pub fn c11_to_c21() -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|i| frames::udp(mac(11), mac(21), ip(11), ip(21), 40000 + i, 7, &[0; 18]))
        .collect()
}

/// The same frames as n1 sends them to n2: a VXLAN header (VNI 4097) before each.
pub fn as_vxlan(inner: &[Vec<u8>]) -> Vec<Vec<u8>> {
    inner
        .iter()
        .map(|f| {
            let mut d = vec![0x08, 0, 0, 0, 0, 0x10, 0x01, 0];
            d.extend_from_slice(f);
            d
        })
        .collect()
}

/// Every port a sink, but `name` (or the underlay) a replay of `frames`.
pub struct Ports {
    /// The port that replays.
    pub name: &'static str,
    /// Its frames and burst.
    pub frames: Option<(Vec<Vec<u8>>, usize)>,
}

impl Ports {
    fn take(&mut self, name: &str) -> Box<dyn Port> {
        match self.frames.take_if(|_| name == self.name) {
            Some((frames, burst)) => {
                let mut g = GenPort::new(frames, burst);
                if name == vxmesh::node::UNDERLAY_PORT {
                    g.peer = Some(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 4789));
                }
                Box::new(g)
            }
            None => Box::new(SinkPort::default()),
        }
    }
}

impl PortOpener for Ports {
    fn open(&mut self, p: &PortPlan, _: bool) -> anyhow::Result<Box<dyn Port>> {
        Ok(self.take(&p.name))
    }
    fn underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        Ok(self.take(vxmesh::node::UNDERLAY_PORT))
    }
}
