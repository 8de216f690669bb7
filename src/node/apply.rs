//! Applying a plan's difference to the running tables, whole or not at all.
//!
//! Where it sits: on the poll thread, between two batches, when a reload (or the node's first
//! build) moves the switch from the plan in force to a new one. Every step that can fail (a
//! static FDB entry into a full table, a service or backend the load balancer refuses) runs
//! first, each recording how to take it back; if one fails, the recorded steps are undone in
//! reverse order and the node runs exactly as before (the plan in force is unchanged, so the next
//! reload is computed against what really runs). Only when all of them succeeded are services and
//! backends that left the plan removed: removals cannot be undone without losing connections, so
//! they never need to be.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use anyhow::Context;
use lb::ServiceKey;
use vswitch::{FdbDest, Mac, NetId, VtepId};

use super::{DestPlan, Node, Plan, ServicePlan};

/// One step `apply` took, and what taking it back needs.
enum Undo {
    /// A network's ARP table was replaced.
    Arp(usize, HashMap<Ipv4Addr, Mac>),
    /// A network's peer VTEPs were replaced.
    Peers(usize, Vec<VtepId>),
    /// A static FDB entry was removed (put it back).
    FdbRemoved(NetId, Mac, FdbDest),
    /// A static FDB entry was added (remove it).
    FdbAdded(NetId, Mac),
    /// A service was added, with its backends.
    ServiceAdded(ServiceKey),
    /// A service was removed to be replaced (its configuration changed): add it back.
    ServiceReplaced(ServicePlan),
    /// A backend was added.
    BackendAdded(ServiceKey, Ipv4Addr, u16),
    /// A backend's weight changed from this one.
    Weight(ServiceKey, Ipv4Addr, u16, u32),
    /// The switch's own MACs (own-addr) were replaced.
    OwnMacs(Vec<(NetId, Mac)>),
}

impl Node {
    /// Move the running tables from `self.plan` to `new` (same ports and VTEPs): all of it, or,
    /// if any step fails, none of it (the error says which step). Returns what changed.
    pub(super) fn apply(&mut self, new: Plan) -> anyhow::Result<String> {
        let mut log = String::new();
        let mut undo = Vec::new();
        if let Err(e) = self.apply_fallible(&new, &mut undo, &mut log) {
            self.roll_back(undo);
            return Err(e.context("nothing of it was applied: the node runs as before"));
        }
        self.remove_departed(&new, &mut log);
        self.plan = new;
        Ok(log)
    }

    /// Every step that can fail, each recorded in `undo` once taken.
    fn apply_fallible(
        &mut self,
        new: &Plan,
        undo: &mut Vec<Undo>,
        log: &mut String,
    ) -> anyhow::Result<()> {
        for (i, n) in new.nets.iter().enumerate() {
            let net = &mut self.sw.env.nets[i];
            let arp: HashMap<Ipv4Addr, Mac> = n.arp.iter().map(|(ip, mac)| (*ip, *mac)).collect();
            if net.arp != arp {
                undo.push(Undo::Arp(i, std::mem::replace(&mut net.arp, arp)));
                let _ = writeln!(log, "network {}: ARP table updated", n.name);
            }
            let peers: Vec<VtepId> = n.peers.iter().map(|&v| VtepId(v as u16)).collect();
            if net.peers != peers {
                undo.push(Undo::Peers(i, std::mem::replace(&mut net.peers, peers)));
                let _ = writeln!(log, "network {}: peers updated", n.name);
            }
        }
        // Static FDB entries: the ones that left or changed go first, so a full table has room
        // for what replaces them.
        for (&(net, mac), dest) in &self.plan.fdb {
            if new.fdb.get(&(net, mac)) == Some(dest) {
                continue;
            }
            let id = NetId(net as u16);
            if let Some(e) = self.sw.env.fdb.entry(id, mac) {
                self.sw.env.fdb.remove(id, mac);
                undo.push(Undo::FdbRemoved(id, mac, e.dest()));
                let _ = writeln!(log, "fdb: removed {mac} in {}", new.nets[net].name);
            }
        }
        for (&(net, mac), dest) in &new.fdb {
            if self.plan.fdb.get(&(net, mac)) == Some(dest) {
                continue;
            }
            let d = match dest {
                DestPlan::Port(name) => {
                    FdbDest::Local(self.sw.port_id(name).with_context(|| {
                        format!("fdb: endpoint {name} has no port on this node")
                    })?)
                }
                DestPlan::Vtep(v) => FdbDest::Remote(VtepId(*v as u16)),
            };
            let id = NetId(net as u16);
            self.sw
                .env
                .fdb
                .add_static(id, mac, d)
                .with_context(|| format!("fdb: static entry {mac} in {}", new.nets[net].name))?;
            undo.push(Undo::FdbAdded(id, mac));
            if !self.plan.fdb.is_empty() {
                let _ = writeln!(log, "fdb: added {mac} in {}", new.nets[net].name);
            }
        }
        // Services whose configuration changed are replaced: the old one goes first.
        for old in &self.plan.services.clone() {
            let replaced = new
                .services
                .iter()
                .any(|s| s.key() == old.key() && s.config != old.config);
            if replaced {
                self.lb()
                    .remove_service(&old.key())
                    .map_err(|e| anyhow::anyhow!("service {}: {e}", old.service))?;
                undo.push(Undo::ServiceReplaced(old.clone()));
            }
        }
        for s in &new.services {
            let key = s.key();
            let kept = self
                .plan
                .services
                .iter()
                .find(|o| o.key() == key && o.config == s.config)
                .cloned();
            let Some(old) = kept else {
                self.add_service(s)?;
                undo.push(Undo::ServiceAdded(key));
                if !self.plan.services.is_empty() {
                    let _ = writeln!(
                        log,
                        "service {} {}:{}: added",
                        s.service, key.addr, key.port
                    );
                }
                continue;
            };
            for b in &s.backends {
                let c = b.config;
                let was = old
                    .backends
                    .iter()
                    .find(|ob| (ob.config.addr, ob.config.port) == (c.addr, c.port));
                let what = match was {
                    None => {
                        self.lb()
                            .add_backend(&key, c)
                            .map_err(|e| anyhow::anyhow!("service {}: {e}", s.service))?;
                        undo.push(Undo::BackendAdded(key, c.addr, c.port));
                        "added".to_string()
                    }
                    Some(ob) if ob.config.weight != c.weight => {
                        self.lb()
                            .set_weight(&key, c.addr, c.port, c.weight)
                            .map_err(|e| anyhow::anyhow!("service {}: {e}", s.service))?;
                        undo.push(Undo::Weight(key, c.addr, c.port, ob.config.weight));
                        format!("weight {} -> {}", ob.config.weight, c.weight)
                    }
                    Some(_) => continue,
                };
                let _ = writeln!(
                    log,
                    "service {} {}:{}: backend {} {what}",
                    s.service, key.addr, key.port, b.name
                );
            }
        }
        let macs: Vec<(NetId, Mac)> = new
            .own_macs
            .iter()
            .map(|&(n, m)| (NetId(n as u16), m))
            .collect();
        let own = &mut self.sw.stage_mut(self.own).macs;
        if *own != macs {
            undo.push(Undo::OwnMacs(std::mem::replace(own, macs)));
        }
        Ok(())
    }

    /// Add service `s` with its backends; on a refused backend the service goes again.
    fn add_service(&mut self, s: &ServicePlan) -> anyhow::Result<()> {
        let key = s.key();
        self.lb()
            .add_service(s.config.clone())
            .map_err(|e| anyhow::anyhow!("service {}: {e}", s.service))?;
        for b in &s.backends {
            if let Err(e) = self.lb().add_backend(&key, b.config) {
                let _ = self.lb().remove_service(&key);
                anyhow::bail!("service {}: backend {}: {e}", s.service, b.name);
            }
        }
        Ok(())
    }

    /// Take back the recorded steps, last first. Each undoes a step that succeeded, on state
    /// that step left, so none can fail short of a bug; one that does is reported, not hidden.
    fn roll_back(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            let failed = match u {
                Undo::Arp(i, arp) => {
                    self.sw.env.nets[i].arp = arp;
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
                Undo::ServiceReplaced(old) => self.add_service(&old).err().map(|e| e.to_string()),
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
                    self.sw.stage_mut(self.own).macs = macs;
                    None
                }
            };
            if let Some(why) = failed {
                eprintln!("vxmesh: rolling a failed change back: {why}");
            }
        }
    }

    /// After every fallible step succeeded: remove the services and backends that left the plan
    /// (their connections expire as IPVS's do).
    fn remove_departed(&mut self, new: &Plan, log: &mut String) {
        for old in &self.plan.services.clone() {
            let key = old.key();
            let Some(s) = new.services.iter().find(|s| s.key() == key) else {
                if let Err(e) = self.lb().remove_service(&key) {
                    eprintln!("vxmesh: service {}: {e}", old.service);
                }
                let _ = writeln!(
                    log,
                    "service {} {}:{}: removed",
                    old.service, key.addr, key.port
                );
                continue;
            };
            if s.config != old.config {
                let _ = writeln!(
                    log,
                    "service {} {}:{}: replaced",
                    old.service, key.addr, key.port
                );
                continue;
            }
            for ob in &old.backends {
                let (addr, port) = (ob.config.addr, ob.config.port);
                if s.backends
                    .iter()
                    .any(|b| (b.config.addr, b.config.port) == (addr, port))
                {
                    continue;
                }
                if let Err(e) = self.lb().remove_backend(&key, addr, port) {
                    eprintln!("vxmesh: service {}: {e}", old.service);
                }
                let _ = writeln!(
                    log,
                    "service {} {}:{}: backend {} removed",
                    s.service, key.addr, key.port, ob.name
                );
            }
        }
    }
}
