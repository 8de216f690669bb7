//! The undo log of a commit: every step that adds or alters the switch records how to take it
//! back ([`Undo`] in an [`UndoLog`]), and if a later step fails [`Node::roll_back`] takes the
//! recorded steps back, last first, a bounded number per step, so the node runs exactly as
//! before the change. Where it sits: on the poll thread, between two batches, inside a commit
//! (`node/apply.rs`); the log itself is sized off the poll thread, when the change is prepared.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use lb::ServiceKey;
use vswitch::dns::DnsTable;
use vswitch::{FdbDest, Mac, NetId, PortId, VtepId};

use super::{Commit, Phase};
use crate::node::Node;
use lb::ServiceConfig;

/// One step `apply` took, and what taking it back needs.
pub(in crate::node) enum Undo {
    /// A network was set up at this id.
    NetAdded(usize),
    /// A network's VNI and MTU changed from these.
    NetChanged(usize, u32, u16, bool),
    /// A VTEP was set up at this id.
    VtepAdded(usize),
    /// A VTEP's address changed from this one.
    VtepChanged(usize, Ipv4Addr),
    /// A port was added.
    PortAdded(PortId),
    /// The own-addr stage's ingress ports were replaced.
    OwnIngress(Vec<(PortId, NetId)>),
    /// A network's ARP table was replaced.
    Arp(usize, HashMap<Ipv4Addr, Mac>),
    /// A network's resolver table was replaced.
    Dns(usize, Option<Box<DnsTable>>),
    /// The `dns` stage's endpoint addresses of the ports were replaced.
    DnsPorts(Vec<Option<Ipv4Addr>>),
    /// A network's peer VTEPs were replaced.
    Peers(usize, Vec<VtepId>),
    /// A static FDB entry was removed (put it back).
    FdbRemoved(NetId, Mac, FdbDest),
    /// A static FDB entry was added (remove it).
    FdbAdded(NetId, Mac),
    /// A service was added, with its backends.
    ServiceAdded(ServiceKey),
    /// A service was removed to be replaced (its configuration changed): add it back.
    ServiceConfig(ServiceConfig),
    /// A backend was added.
    BackendAdded(ServiceKey, Ipv4Addr, u16),
    /// A backend's weight changed from this one.
    Weight(ServiceKey, Ipv4Addr, u16, u32),
    /// The switch's own MACs (own-addr) were replaced.
    OwnMacs(Vec<(NetId, Mac)>),
    /// The ESP security associations followed a new plan: back to this one's keys and peers.
    Esp(std::sync::Arc<crate::node::Plan>),
    /// The encrypted networks' port (the ESP transport) was this one.
    EspPort(Option<PortId>),
}

/// The steps a commit took, to take back on failure. Tests can make the push that reaches a
/// given length fail, to inject a failure after every single step of a change.
#[derive(Default)]
pub(in crate::node) struct UndoLog {
    pub(super) steps: Vec<Undo>,
    #[cfg(test)]
    pub(super) fail_at: Option<usize>,
}

impl UndoLog {
    /// A log with room for `n` steps (made off the poll thread: a large change's log then
    /// costs the poll thread no reallocation).
    pub(in crate::node) fn with_capacity(n: usize) -> UndoLog {
        let mut log = UndoLog::default();
        log.steps.reserve(n);
        log
    }

    /// Record a step taken.
    pub(super) fn push(&mut self, u: Undo) -> anyhow::Result<()> {
        self.steps.push(u);
        #[cfg(test)]
        if self.fail_at == Some(self.steps.len()) {
            anyhow::bail!("injected failure after step {}", self.steps.len());
        }
        Ok(())
    }

    /// Take the last step recorded.
    pub(super) fn pop(&mut self) -> Option<Undo> {
        self.steps.pop()
    }
}

impl Node {
    /// Take back the recorded steps, last first. Each undoes a step that succeeded, on state
    /// that step left, so none can fail short of a bug; one that does is reported, not hidden.
    /// Up to `budget` of them per step; the last step also removes what was learned on the
    /// ports, networks and VTEPs taken back (packets ran between the steps).
    pub(super) fn roll_back(&mut self, c: &mut Commit, budget: usize) -> Phase {
        for _ in 0..budget {
            let Some(u) = c.undo.pop() else {
                c.departed.flush(&mut self.sw.env.fdb);
                c.left.cluster = c.cluster.take();
                return Phase::Done;
            };
            let failed = match u {
                Undo::NetAdded(i) => {
                    self.sw.env.retire_network(NetId(i as u16));
                    c.departed.nets.push(NetId(i as u16));
                    None
                }
                Undo::NetChanged(i, vni, mtu, encrypted) => {
                    let net = &mut self.sw.env.nets[i];
                    (net.vni, net.mtu, net.encrypted) = (vni, mtu, encrypted);
                    None
                }
                Undo::VtepAdded(i) => {
                    self.sw.env.retire_vtep(VtepId(i as u16));
                    c.departed.vteps.push(VtepId(i as u16));
                    None
                }
                Undo::VtepChanged(i, addr) => {
                    self.sw.env.vteps[i].addr = addr;
                    None
                }
                Undo::PortAdded(id) => {
                    let name = self.sw.port_name(id).to_string();
                    match self.sw.remove_port(id) {
                        // Back with the prepared ports: the caller closes them.
                        Some(p) => {
                            c.opened.insert(name, (p, None));
                            c.departed.ports.push(id);
                            None
                        }
                        None => Some(format!("port {name}: not removable")),
                    }
                }
                Undo::OwnIngress(ingress) => {
                    self.sw.stage_mut(self.own).ingress = ingress;
                    None
                }
                Undo::Arp(i, arp) => {
                    let new = std::mem::replace(&mut self.sw.env.nets[i].arp, arp);
                    c.left.garbage.push(Box::new(new));
                    None
                }
                Undo::Dns(i, table) => {
                    let new = self
                        .sw
                        .stage_mut(self.dns)
                        .set_table(NetId(i as u16), table);
                    c.left.garbage.push(Box::new(new));
                    None
                }
                Undo::DnsPorts(ports) => {
                    self.sw.stage_mut(self.dns).set_ports(ports);
                    None
                }
                Undo::Peers(i, peers) => {
                    self.sw.env.nets[i].peers = peers;
                    None
                }
                Undo::FdbRemoved(net, mac, dest) => self
                    .sw
                    .env
                    .fdb
                    .add_static(net, mac, dest)
                    .err()
                    .map(|e| format!("fdb {mac}: {e}")),
                Undo::FdbAdded(net, mac) => {
                    self.sw.env.fdb.remove(net, mac);
                    None
                }
                Undo::ServiceAdded(key) => {
                    self.lb().remove_service(&key).err().map(|e| e.to_string())
                }
                Undo::ServiceConfig(old) => {
                    self.lb().replace_service(old).err().map(|e| e.to_string())
                }
                Undo::BackendAdded(key, addr, port) => self
                    .lb()
                    .remove_backend(&key, addr, port)
                    .err()
                    .map(|e| e.to_string()),
                Undo::Weight(key, addr, port, w) => self
                    .lb()
                    .set_weight(&key, addr, port, w)
                    .err()
                    .map(|e| e.to_string()),
                Undo::OwnMacs(macs) => {
                    self.sw.env.replace_own_macs(macs);
                    None
                }
                Undo::Esp(plan) => {
                    self.set_sas(&plan);
                    None
                }
                Undo::EspPort(port) => {
                    self.sw.set_esp_underlay(port);
                    None
                }
            };
            if let Some(why) = failed {
                tracing::warn!(reason = %why, "rolling a failed change back");
            }
        }
        Phase::RollBack
    }
}
