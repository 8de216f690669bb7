//! Committing a prepared [`Change`] to the running switch, whole or not at all.
//!
//! Where it sits: on the poll thread, between two batches, when a change (or the node's first
//! build) moves the switch from the plan in force to a new one. Every step that adds or alters
//! (a network or VTEP set up, a prepared port added, a static FDB entry into a possibly full
//! table, a service or backend the load balancer may refuse) runs first, each recording how to
//! take it back; if one fails, the recorded steps are undone in reverse order and the node runs
//! exactly as before (the plan in force is unchanged, so the next change is computed against
//! what really runs). Only when all of them succeeded does what left the plan go: services and
//! backends (their connections expire as IPVS's do), then ports (closed slots), VTEPs and
//! networks (retired ids). Removals cannot be undone without losing connections or learned
//! entries, so they never need to be; none of them can fail.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context;
use lb::ServiceKey;
use vswitch::{FdbDest, Mac, NetId, Network, Port, PortId, PortRole, Vtep, VtepId};

use super::{Change, DestPlan, Leftovers, Node, Plan, PortKind, ServicePlan};

/// One step `apply` took, and what taking it back needs.
enum Undo {
    /// A network was set up at this id.
    NetAdded(usize),
    /// A network's VNI and MTU changed from these.
    NetChanged(usize, u32, u16),
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
    /// Swap `change` in, between two batches: all of it, or, if any step fails, none of it (the
    /// error says which step, and the node runs as before). Returns what changed, and what was
    /// taken out for the caller to drop off the packet thread.
    pub fn commit(&mut self, change: Change) -> (anyhow::Result<String>, Leftovers) {
        let Change {
            base,
            cluster,
            plan,
            opened,
        } = change;
        let mut left = Leftovers::default();
        if !Arc::ptr_eq(&base, &self.plan) {
            left.ports = opened.into_iter().map(|(_, p)| p).collect();
            left.cluster = Some(cluster);
            let err = anyhow::anyhow!(
                "{}: another change was applied while this one was prepared; nothing of it was applied (run it again)",
                cluster_path(&left)
            );
            return (Err(err), left);
        }
        drop(base);
        let mut opened: HashMap<String, Box<dyn Port>> = opened.into_iter().collect();
        match self.apply(plan, &mut opened, &mut left.ports) {
            Ok((log, old)) => {
                left.plan = Some(old);
                left.cluster = Some(std::mem::replace(&mut self.cluster, cluster));
                left.ports.extend(opened.into_values());
                let log = if log.is_empty() {
                    "no changes\n".to_string()
                } else {
                    log
                };
                (Ok(log), left)
            }
            Err(e) => {
                left.ports.extend(opened.into_values());
                let e = e.context(format!(
                    "{}: refused; nothing of it was applied: the node runs as before",
                    cluster.path.display()
                ));
                left.cluster = Some(cluster);
                (Err(e), left)
            }
        }
    }

    /// Move the running tables from `self.plan` to `new`, taking the ports `new` adds from
    /// `opened`: all of it, or, if any step fails, none of it. Ports taken out (removed, or
    /// added then rolled back) go to `closed`. Returns what changed and the plan that was in
    /// force.
    fn apply(
        &mut self,
        new: Plan,
        opened: &mut HashMap<String, Box<dyn Port>>,
        closed: &mut Vec<Box<dyn Port>>,
    ) -> anyhow::Result<(String, Arc<Plan>)> {
        let mut log = String::new();
        let mut undo = Vec::new();
        if let Err(e) = self.apply_fallible(&new, opened, &mut undo, &mut log) {
            self.roll_back(undo, opened);
            return Err(e);
        }
        self.remove_departed(&new, &mut log, closed);
        Ok((log, std::mem::replace(&mut self.plan, Arc::new(new))))
    }

    /// Networks and VTEPs the new plan adds or alters, before anything refers to them.
    fn set_up_ids(&mut self, new: &Plan, undo: &mut Vec<Undo>, log: &mut String) {
        let old = self.plan.clone();
        for (i, n) in new.live_nets() {
            match old.nets.get(i).and_then(|o| o.as_ref()) {
                None => {
                    let id = NetId(i as u16);
                    self.sw
                        .env
                        .set_network(id, Network::new(n.name.clone(), n.vni, n.mtu));
                    undo.push(Undo::NetAdded(i));
                    let _ = writeln!(log, "network {}: added (VNI {})", n.name, vni_str(n.vni));
                }
                Some(o) if (o.vni, o.mtu) != (n.vni, n.mtu) => {
                    let net = &mut self.sw.env.nets[i];
                    undo.push(Undo::NetChanged(i, net.vni, net.mtu));
                    (net.vni, net.mtu) = (n.vni, n.mtu);
                    let _ = writeln!(
                        log,
                        "network {}: VNI {} MTU {} -> VNI {} MTU {}",
                        n.name, o.vni, o.mtu, n.vni, n.mtu
                    );
                }
                Some(_) => {}
            }
        }
        for (i, v) in new.vteps.iter().enumerate() {
            let Some((name, addr)) = v else { continue };
            match old.vteps.get(i).and_then(|o| o.as_ref()) {
                None => {
                    self.sw.env.set_vtep(
                        VtepId(i as u16),
                        Vtep {
                            addr: *addr,
                            node: name.clone(),
                        },
                    );
                    undo.push(Undo::VtepAdded(i));
                    let _ = writeln!(log, "node {name}: added (VTEP {addr})");
                }
                Some((_, was)) if was != addr => {
                    self.sw.env.vteps[i].addr = *addr;
                    undo.push(Undo::VtepChanged(i, *was));
                    let _ = writeln!(log, "node {name}: VTEP {was} -> {addr}");
                }
                Some(_) => {}
            }
        }
    }

    /// Add the ports `new` has and the plan in force does not, from the prepared ones.
    fn add_ports(
        &mut self,
        new: &Plan,
        opened: &mut HashMap<String, Box<dyn Port>>,
        undo: &mut Vec<Undo>,
        log: &mut String,
    ) -> anyhow::Result<()> {
        let old = self.plan.clone();
        for p in &new.ports {
            if old.ports.iter().any(|o| o.name == p.name) {
                continue;
            }
            let port = opened
                .remove(&p.name)
                .with_context(|| format!("port {}: not prepared for this change", p.name))?;
            let id = self.sw.add_port(
                p.name.clone(),
                port,
                PortRole::Local(NetId(p.net as u16)),
                self.local_path.clone(),
            );
            undo.push(Undo::PortAdded(id));
            let what = match p.kind {
                PortKind::Endpoint { .. } => "endpoint",
                PortKind::Ingress => "ingress",
            };
            let _ = writeln!(log, "{what} {}: attached", p.name);
        }
        Ok(())
    }

    /// Every step that can fail, each recorded in `undo` once taken.
    fn apply_fallible(
        &mut self,
        new: &Plan,
        opened: &mut HashMap<String, Box<dyn Port>>,
        undo: &mut Vec<Undo>,
        log: &mut String,
    ) -> anyhow::Result<()> {
        self.set_up_ids(new, undo, log);
        self.add_ports(new, opened, undo, log)?;
        for (i, n) in new.live_nets() {
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
                let _ = writeln!(log, "fdb: removed {mac} in {}", self.plan.net_name(net));
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
                .with_context(|| format!("fdb: static entry {mac} in {}", new.net_name(net)))?;
            undo.push(Undo::FdbAdded(id, mac));
            let _ = writeln!(log, "fdb: added {mac} in {}", new.net_name(net));
        }
        // Services whose configuration changed are replaced: the old one goes first.
        let plan = self.plan.clone();
        for old in &plan.services {
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
                let _ = writeln!(
                    log,
                    "service {} {}:{}: added",
                    s.service, key.addr, key.port
                );
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
        let ingress: Vec<(PortId, NetId)> = new
            .ports
            .iter()
            .filter(|p| p.kind == PortKind::Ingress)
            .filter_map(|p| Some((self.sw.port_id(&p.name)?, NetId(p.net as u16))))
            .collect();
        let own = &mut self.sw.stage_mut(self.own).ingress;
        if *own != ingress {
            undo.push(Undo::OwnIngress(std::mem::replace(own, ingress)));
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
    fn roll_back(&mut self, undo: Vec<Undo>, opened: &mut HashMap<String, Box<dyn Port>>) {
        for u in undo.into_iter().rev() {
            let failed = match u {
                Undo::NetAdded(i) => {
                    self.sw.env.retire_network(NetId(i as u16));
                    None
                }
                Undo::NetChanged(i, vni, mtu) => {
                    let net = &mut self.sw.env.nets[i];
                    (net.vni, net.mtu) = (vni, mtu);
                    None
                }
                Undo::VtepAdded(i) => {
                    self.sw.env.retire_vtep(VtepId(i as u16));
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
                            opened.insert(name, p);
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
    /// (their connections expire as IPVS's do), then the ports (into `closed`), VTEPs and
    /// networks.
    fn remove_departed(&mut self, new: &Plan, log: &mut String, closed: &mut Vec<Box<dyn Port>>) {
        let plan = self.plan.clone();
        for old in &plan.services {
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
        for p in &plan.ports {
            if new.ports.iter().any(|n| n.name == p.name) {
                continue;
            }
            if let Some(port) = self
                .sw
                .port_id(&p.name)
                .and_then(|id| self.sw.remove_port(id))
            {
                closed.push(port);
            }
            let what = match p.kind {
                PortKind::Endpoint { .. } => "endpoint",
                PortKind::Ingress => "ingress",
            };
            let _ = writeln!(log, "{what} {}: detached", p.name);
        }
        for (i, v) in plan.vteps.iter().enumerate() {
            if let Some((name, _)) = v
                && new.vteps.get(i).is_none_or(|n| n.is_none())
            {
                self.sw.env.retire_vtep(VtepId(i as u16));
                let _ = writeln!(log, "node {name}: removed");
            }
        }
        for (i, n) in plan.live_nets() {
            if new.nets.get(i).is_none_or(|n| n.is_none()) {
                self.sw.env.retire_network(NetId(i as u16));
                let _ = writeln!(log, "network {}: removed", n.name);
            }
        }
    }
}

/// A VNI for messages (the ingress networks have none).
fn vni_str(vni: u32) -> String {
    if vni == super::INGRESS_VNI {
        "none: ingress".into()
    } else {
        vni.to_string()
    }
}

/// The refused file's path, for a message.
fn cluster_path(left: &Leftovers) -> String {
    left.cluster
        .as_ref()
        .map_or_else(|| "?".into(), |c| c.path.display().to_string())
}
