//! A node on N poll threads (issue 20, part 5): N workers, each a whole [`Node`] of its own
//! (switch, FDB, load balancer and connection table; no lock between them), with the ports
//! shared out as OVS shares rx queues among its PMD threads.
//!
//! Where it sits: around the node's ports, at the ends of each worker's packet path
//! (`vswitch::port::handoff` has the mechanism and the picture). Here the node's side of it:
//!
//! - [`WorkerPorts`] opens a worker's ports: a container's port (AF_XDP, TAP) or an ingress
//!   for the worker that owns it ([`handoff::owner_of`]: a stable hash of the port's name),
//!   a stand-in of the same name elsewhere, so the port ids agree on every worker; the UDP
//!   underlay on every worker (the kernel spreads the datagrams over the workers' sockets).
//! - [`steer_map`] says, from the plan, where each destination is served: a container's MAC
//!   on its port's worker, and the routing mesh's source-NAT address on its ingress's worker,
//!   so the reply direction of every connection reaches the worker holding its entry.
//! - [`Workers::build`] builds the N nodes from one cluster and sets the map on every port;
//!   [`WorkerWork`] is one worker as `vswitch::worker::run` drives it.
//!
//! Not served with more than one worker: encrypted networks (one security association's
//! sequence numbers come from one thread; the ESP ports are refused here, and a change that
//! needs them fails as on a node without them).

use std::net::Ipv4Addr;
use std::sync::Arc;

use vswitch::port::handoff::{self, Mesh, SteerAt, SteerMap, Steered};
use vswitch::{Port, Time};

use super::{Node, Plan, PortKind, PortOpener, PortPlan};
use crate::config::{Attach, Cluster};

/// The port opener of worker `me`: the owner's driver from `inner`, a stand-in elsewhere.
pub struct WorkerPorts<'a> {
    /// The opener of the real ports.
    pub inner: &'a mut dyn PortOpener,
    /// The node's workers.
    pub mesh: Arc<Mesh>,
    /// This worker.
    pub me: usize,
}

impl PortOpener for WorkerPorts<'_> {
    fn afxdp_offloads(&self) -> bool {
        self.inner.afxdp_offloads()
    }
    fn open(&mut self, plan: &PortPlan, offloads: bool) -> anyhow::Result<Box<dyn Port>> {
        let owner = handoff::owner_of(&plan.name, self.mesh.workers());
        let (inner, offl) = if owner == self.me {
            let p = self.inner.open(plan, offloads)?;
            let o = p.offloads();
            (Some(p), o)
        } else {
            // What the owner's driver will take: a TAP endpoint's offloads when the switch's
            // buffers hold super-frames (`SystemPorts`), nothing for the others. An AF_XDP
            // port's owner takes super-frames too (its packet socket), but frames handed to it
            // from here arrive finished, and it merges runs of segments itself.
            let tap = matches!(
                (&plan.attach, &plan.kind),
                (Attach::Tap(_), PortKind::Endpoint { .. })
            );
            (None, tap && offloads)
        };
        Ok(Box::new(self.mesh.port(
            self.me,
            &plan.name,
            Some(owner),
            inner,
            offl,
            SteerAt::Ethernet,
        )))
    }

    fn underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        let p = if self.mesh.workers() > 1 {
            self.inner.shared_underlay(vtep)?
        } else {
            self.inner.underlay(vtep)?
        };
        let o = p.offloads();
        Ok(Box::new(self.mesh.port(
            self.me,
            super::UNDERLAY_PORT,
            None,
            Some(p),
            o,
            SteerAt::Vxlan,
        )))
    }

    fn esp_underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        anyhow::bail!("encrypted networks need a node with one worker (--workers 1)")
    }

    fn esp_udp_underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        anyhow::bail!("ESP in UDP as well")
    }
}

/// Where each destination of `plan` is served among `workers` workers: every container's MAC
/// on its port's worker; every source-NAT address of the routing mesh on the worker of the
/// ingress it serves (the replies of published ports come back to that address).
pub fn steer_map(plan: &Plan, workers: usize) -> SteerMap {
    let mut map = SteerMap::default();
    for p in &plan.ports {
        if let PortKind::Endpoint { mac, .. } = p.kind {
            map.add_mac(mac, handoff::owner_of(&p.name, workers));
        }
    }
    for s in &plan.services {
        let Some(snat) = s.config.snat else { continue };
        let net = usize::from(s.key().net.0);
        if let Some(ing) = plan
            .ports
            .iter()
            .find(|p| p.net == net && p.kind == PortKind::Ingress)
        {
            map.add_addr(snat.addr, handoff::owner_of(&ing.name, workers));
        }
    }
    map
}

/// Set `map` on every steering port of `node` (after a build or a change, between batches).
pub fn set_steer(node: &mut Node, map: &Arc<SteerMap>) {
    let names: Vec<String> = node.sw.stats().ports.into_iter().map(|p| p.name).collect();
    for name in names {
        let Some(id) = node.sw.port_id(&name) else {
            continue;
        };
        if let Some(s) = node
            .sw
            .port_mut(id)
            .and_then(|p| p.as_any_mut())
            .and_then(|a| a.downcast_mut::<Steered>())
        {
            s.set_steer(map.clone());
        }
    }
}

/// A node's workers.
pub struct Workers {
    /// Their rings and doorbells.
    pub mesh: Arc<Mesh>,
    /// One node per worker, worker 0 first.
    pub nodes: Vec<Node>,
}

impl Workers {
    /// Build node `node` of `cluster` on `workers` workers, its ports from `ports`.
    pub fn build(
        cluster: Cluster,
        node: &str,
        workers: usize,
        ports: &mut dyn PortOpener,
        tables: super::TableOpts,
    ) -> anyhow::Result<Workers> {
        let workers = workers.max(1);
        let plan = Plan::of(&cluster, node)?;
        let mesh = Mesh::new(workers, super::buf_size_for(&plan, ports.afxdp_offloads()))?;
        let map = Arc::new(steer_map(&plan, workers));
        let mut nodes = Vec::with_capacity(workers);
        for me in 0..workers {
            let mut opener = WorkerPorts {
                inner: &mut *ports,
                mesh: mesh.clone(),
                me,
            };
            let mut n = Node::build_with(cluster.clone(), node, &mut opener, tables)?;
            set_steer(&mut n, &map);
            nodes.push(n);
        }
        Ok(Workers { mesh, nodes })
    }
}

/// One worker as the poll loop (`vswitch::worker::run`) drives it; its waker is
/// [`Mesh::waker`].
pub struct WorkerWork {
    /// The worker's node.
    pub node: Node,
    /// The node's workers.
    pub mesh: Arc<Mesh>,
    /// Which one this is.
    pub me: usize,
}

impl vswitch::worker::Work for WorkerWork {
    fn poll(&mut self, now: Time) -> usize {
        self.mesh.awake(self.me);
        self.node.sw.poll(now)
    }
    fn housekeeping(&mut self, now: Time) {
        self.node.housekeeping(now);
    }
    fn may_sleep(&mut self) -> bool {
        self.mesh.may_sleep(self.me)
    }
    fn poll_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.node.sw.poll_fds()
    }
    fn fds_generation(&self) -> u64 {
        self.node.sw.ports_generation()
    }
}

#[cfg(test)]
mod tests;
