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
//!
//! The undo log and the roll-back live in `node/apply/undo.rs`.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context;
use vswitch::dns::DnsTable;
use vswitch::{FdbDest, Mac, NetId, Network, Port, PortGuard, PortId, PortRole, Vtep, VtepId};

use super::change::Opened;
use super::{Change, DestPlan, Leftovers, Node, Plan, PortKind, ServicePlan};
use crate::config::{Cluster, EspTransport};

mod undo;

use undo::Undo;
pub(super) use undo::UndoLog;

/// Entries (FDB entries added or removed, steps undone) one [`Node::step`] handles at most:
/// a few hundred microseconds of work, so a change of any size pauses forwarding for no longer
/// than that at a time (benches/pause.rs measures the longest step).
pub const STEP_ENTRIES: usize = 1024;

/// Where a commit stands.
enum Phase {
    /// Networks, VTEPs, ports, ARP tables and peers: few, cheap, one step.
    Start,
    /// Static FDB entries that leave, from this index.
    FdbRemove(usize),
    /// Static FDB entries that arrive, from this index.
    FdbAdd(usize),
    /// Services and backends, the switch's own addresses, then what departs; one step.
    Services,
    /// One walk of the FDB for the entries learned on departed ports, networks and VTEPs.
    Flush,
    /// A step failed: undoing the recorded steps, last first.
    RollBack,
    /// Finished.
    Done,
}

/// What departs and must leave no learned FDB entry behind.
#[derive(Default)]
struct Departed {
    ports: Vec<PortId>,
    nets: Vec<NetId>,
    vteps: Vec<VtepId>,
}

impl Departed {
    fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.nets.is_empty() && self.vteps.is_empty()
    }

    /// Remove every learned entry on what departed: one walk of the table.
    fn flush(&mut self, fdb: &mut vswitch::Fdb) {
        if self.is_empty() {
            return;
        }
        fdb.flush_learned(|net, dest| {
            self.nets.contains(&net)
                || match dest {
                    FdbDest::Local(p) => self.ports.contains(&p),
                    FdbDest::Remote(v) => self.vteps.contains(&v),
                }
        });
        *self = Departed::default();
    }
}

/// A change being committed, one bounded step at a time ([`Node::begin`], [`Node::step`],
/// [`Commit::finish`]). Between steps the switch forwards a round of batches and sees a state
/// between the old and the new: networks, VTEPs, ports, ARP and DNS tables of the new state
/// first, then static FDB entries that leave or move (a frame to one of those floods for a
/// moment, as to an unknown MAC), then those that arrive, then services and backends; what
/// departs goes last. The plan in force changes only at the last step, and a failure takes
/// every step back.
pub struct Commit {
    cluster: Option<Cluster>,
    plan: Option<Plan>,
    opened: HashMap<String, Opened>,
    arp: Vec<(usize, HashMap<Ipv4Addr, Mac>)>,
    dns: Vec<(usize, Option<Box<DnsTable>>)>,
    fdb_removed: Vec<(usize, Mac)>,
    fdb_added: Vec<(usize, Mac, DestPlan)>,
    phase: Phase,
    undo: UndoLog,
    departed: Departed,
    log: String,
    /// Static entries added and removed, per network id (named in the log at the end: no
    /// allocation per entry).
    fdb_counts: std::collections::BTreeMap<usize, (usize, usize)>,
    error: Option<anyhow::Error>,
    left: Leftovers,
    /// The security associations derived with the change, swapped in by the ESP step.
    sas: Option<esp::SaPlan>,
    /// The receiver gates of the ports the change adds, by port name.
    gates: HashMap<String, Arc<vswitch::gate::ReceiverGate>>,
}

impl Commit {
    /// Make the step that records the `n`th undo entry fail (tests: a failure injected after
    /// every single step of a change).
    #[cfg(test)]
    pub fn fail_at(&mut self, n: usize) {
        self.undo.fail_at = Some(n);
    }

    /// Whether every step has run.
    pub fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The outcome (what changed, or why nothing did), and what was taken out of the node, to
    /// drop off the packet thread.
    pub fn finish(mut self) -> (anyhow::Result<String>, Leftovers) {
        debug_assert!(self.done());
        for (port, tx) in self.opened.into_values() {
            self.left.ports.push(port);
            self.left.garbage.push(Box::new(tx));
        }
        // The undo log holds the replaced tables (ARP maps): freed with the leftovers too.
        self.left.garbage.push(Box::new(self.undo.steps));
        self.left.garbage.push(Box::new(self.gates));
        self.left.garbage.push(Box::new(self.arp));
        self.left.garbage.push(Box::new(self.dns));
        match self.error {
            Some(e) => (Err(e), self.left),
            None => {
                let mut log = self.log;
                if log.is_empty() {
                    log = "no changes\n".into();
                }
                (Ok(log), self.left)
            }
        }
    }
}

impl Node {
    /// Swap `change` in, all in one go (tests, benches, the first build): [`Node::begin`] and
    /// [`Node::step`] until done. Returns what changed (or why nothing did), and what was taken
    /// out for the caller to drop off the packet thread.
    pub fn commit(&mut self, change: Change) -> (anyhow::Result<String>, Leftovers) {
        let mut c = self.begin(change);
        while !self.step(&mut c, STEP_ENTRIES) {}
        c.finish()
    }

    /// Start committing `change`: refused at once if another change was applied since it was
    /// prepared (it was computed against a plan no longer in force).
    pub fn begin(&mut self, change: Change) -> Commit {
        let Change {
            base,
            cluster,
            plan,
            opened,
            arp,
            dns,
            fdb_removed,
            fdb_added,
            undo,
            sas,
            gates,
        } = change;
        let stale = !Arc::ptr_eq(&base, &self.plan);
        let mut c = Commit {
            cluster: Some(cluster),
            plan: Some(plan),
            opened: opened.into_iter().collect(),
            arp,
            dns,
            fdb_removed,
            fdb_added,
            phase: Phase::Start,
            undo,
            departed: Departed::default(),
            log: String::new(),
            fdb_counts: Default::default(),
            error: None,
            left: Leftovers::default(),
            sas,
            gates,
        };
        c.left.garbage.push(Box::new(base));
        if stale {
            let path = c.cluster.as_ref().map(|c| c.path.display().to_string());
            c.error = Some(anyhow::anyhow!(
                "{}: another change was applied while this one was prepared; nothing of it was applied (run it again)",
                path.unwrap_or_default()
            ));
            c.left.cluster = c.cluster.take();
            c.phase = Phase::Done;
        }
        c
    }

    /// Run one step of `c`, handling at most `budget` entries; true once it is done. Call
    /// between batches until it returns true.
    pub fn step(&mut self, c: &mut Commit, budget: usize) -> bool {
        let budget = budget.max(1);
        let r = match c.phase {
            Phase::Start => self.start(c).map(|()| Phase::FdbRemove(0)),
            Phase::FdbRemove(k) => self.fdb_remove(c, k, budget),
            Phase::FdbAdd(k) => self.fdb_add(c, k, budget),
            Phase::Services => self.services(c).map(|()| Phase::Flush),
            Phase::Flush => {
                c.departed.flush(&mut self.sw.env.fdb);
                self.succeed(c);
                Ok(Phase::Done)
            }
            Phase::RollBack => Ok(self.roll_back(c, budget)),
            Phase::Done => Ok(Phase::Done),
        };
        c.phase = match r {
            Ok(p) => p,
            Err(e) => {
                let path = c.cluster.as_ref().map(|c| c.path.display().to_string());
                c.error = Some(e.context(format!(
                    "{}: refused; nothing of it was applied: the node runs as before",
                    path.unwrap_or_default()
                )));
                Phase::RollBack
            }
        };
        c.done()
    }

    /// The first step: networks, VTEPs, ports, ARP tables (prepared off the poll thread:
    /// swapped, not built) and peers.
    fn start(&mut self, c: &mut Commit) -> anyhow::Result<()> {
        let new = c.plan.take().expect("a commit starts with its plan");
        let r = (|| {
            self.set_up_ids(&new, &mut c.undo, &mut c.log)?;
            self.add_ports(
                &new,
                &mut c.opened,
                &mut c.gates,
                &mut c.undo,
                &mut c.log,
                &mut c.left.garbage,
            )?;
            for (i, arp) in c.arp.iter_mut() {
                let net = &mut self.sw.env.nets[*i];
                let old = std::mem::replace(&mut net.arp, std::mem::take(arp));
                c.undo.push(Undo::Arp(*i, old))?;
                let _ = writeln!(c.log, "network {}: ARP table updated", net.name);
            }
            for (i, table) in c.dns.iter_mut() {
                let old = self
                    .sw
                    .stage_mut(self.dns)
                    .set_table(NetId(*i as u16), table.take());
                c.undo.push(Undo::Dns(*i, old))?;
                let _ = writeln!(c.log, "network {}: names updated", new.net_name(*i));
            }
            for (i, n) in new.live_nets() {
                let net = &mut self.sw.env.nets[i];
                let peers: Vec<VtepId> = n.peers.iter().map(|&v| VtepId(v as u16)).collect();
                if net.peers != peers {
                    c.undo
                        .push(Undo::Peers(i, std::mem::replace(&mut net.peers, peers)))?;
                    let _ = writeln!(c.log, "network {}: peers updated", n.name);
                }
            }
            self.esp_step(&new, c.sas.take(), &mut c.undo, &mut c.log)?;
            Ok(())
        })();
        c.plan = Some(new);
        r
    }

    /// The encrypted networks' security associations: refused if the node serves one without
    /// an ESP port (never in clear); otherwise the stages follow the new keys and ESP peers.
    fn esp_step(
        &mut self,
        new: &Plan,
        sas: Option<esp::SaPlan>,
        undo: &mut UndoLog,
        log: &mut String,
    ) -> anyhow::Result<()> {
        let port = match new.esp_transport {
            EspTransport::Esp => self.esp.port,
            EspTransport::Udp => self.esp.udp_port,
        };
        if port.is_none()
            && let Some((_, n)) = new.live_nets().find(|(_, n)| n.encrypted)
        {
            anyhow::bail!(
                "network {} is encrypted, but this node has no ESP socket for transport {:?} ({}): it would never send its traffic in clear, so it does not serve it",
                n.name,
                new.esp_transport.name(),
                self.esp.missing
            );
        }
        let old = self.plan.clone();
        if self.sw.esp_underlay() != port {
            undo.push(Undo::EspPort(self.sw.esp_underlay()))?;
            self.sw.set_esp_underlay(port);
            if old.esp_transport != new.esp_transport {
                let _ = writeln!(log, "encryption: transport {}", new.esp_transport.name());
            }
        }
        if old.keys == new.keys && old.esp_peers() == new.esp_peers() {
            return Ok(());
        }
        undo.push(Undo::Esp(old))?;
        match sas {
            // Derived when the change was prepared: swapped in, no crypto here.
            Some(sas) => self.apply_sas(sas),
            None => self.set_sas(new),
        }
        let ids: Vec<String> = new.keys.iter().map(|k| k.id().to_string()).collect();
        let _ = writeln!(
            log,
            "encryption: keys [{}], {} peer(s)",
            ids.join(", "),
            new.esp_peers().len()
        );
        Ok(())
    }

    /// Remove up to `budget` static FDB entries that leave (first, so a full table has room
    /// for what replaces them).
    fn fdb_remove(&mut self, c: &mut Commit, k: usize, budget: usize) -> anyhow::Result<Phase> {
        let end = (k + budget).min(c.fdb_removed.len());
        for &(net, mac) in &c.fdb_removed[k..end] {
            let id = NetId(net as u16);
            if let Some(e) = self.sw.env.fdb.entry(id, mac) {
                self.sw.env.fdb.remove(id, mac);
                c.undo.push(Undo::FdbRemoved(id, mac, e.dest()))?;
                c.fdb_counts.entry(net).or_default().1 += 1;
            }
        }
        Ok(if end == c.fdb_removed.len() {
            Phase::FdbAdd(0)
        } else {
            Phase::FdbRemove(end)
        })
    }

    /// Add up to `budget` static FDB entries that arrive.
    fn fdb_add(&mut self, c: &mut Commit, k: usize, budget: usize) -> anyhow::Result<Phase> {
        let end = (k + budget).min(c.fdb_added.len());
        let new = c.plan.as_ref().expect("a commit keeps its plan");
        for (net, mac, dest) in &c.fdb_added[k..end] {
            let (net, mac) = (*net, *mac);
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
            c.undo.push(Undo::FdbAdded(id, mac))?;
            c.fdb_counts.entry(net).or_default().0 += 1;
        }
        Ok(if end == c.fdb_added.len() {
            Phase::Services
        } else {
            Phase::FdbAdd(end)
        })
    }

    /// Services, backends and the switch's own addresses (fallible), then, all of it having
    /// succeeded, what departs.
    fn services(&mut self, c: &mut Commit) -> anyhow::Result<()> {
        let new = c.plan.take().expect("a commit keeps its plan");
        let r = self.services_fallible(&new, &mut c.undo, &mut c.log);
        if r.is_ok() {
            self.remove_departed(&new, &mut c.log, &mut c.left.ports, &mut c.departed);
            // A departed network's resolver table goes with it (freed off the poll thread).
            for n in &c.departed.nets {
                let old = self.sw.stage_mut(self.dns).set_table(*n, None);
                c.left.garbage.push(Box::new(old));
            }
        }
        c.plan = Some(new);
        r
    }

    /// The last step of a change that succeeded: the new plan and file are in force.
    fn succeed(&mut self, c: &mut Commit) {
        let new = c.plan.take().expect("a commit keeps its plan");
        for (&net, (added, removed)) in &c.fdb_counts {
            // A network that left is named by the plan it was in.
            let name = match new.net_name(net) {
                "?" => self.plan.net_name(net),
                n => n,
            };
            let _ = writeln!(
                c.log,
                "fdb {name}: {added} static entries added, {removed} removed"
            );
        }
        let cluster = c.cluster.take().expect("a commit keeps its file");
        c.left.plan = Some(std::mem::replace(&mut self.plan, Arc::new(new)));
        c.left.cluster = Some(std::mem::replace(&mut self.cluster, cluster));
    }

    /// Networks and VTEPs the new plan adds or alters, before anything refers to them.
    fn set_up_ids(
        &mut self,
        new: &Plan,
        undo: &mut UndoLog,
        log: &mut String,
    ) -> anyhow::Result<()> {
        let old = self.plan.clone();
        for (i, n) in new.live_nets() {
            match old.nets.get(i).and_then(|o| o.as_ref()) {
                None => {
                    let id = NetId(i as u16);
                    let mut net = Network::new(n.name.clone(), n.vni, n.mtu);
                    net.encrypted = n.encrypted;
                    self.sw.env.set_network(id, net);
                    undo.push(Undo::NetAdded(i))?;
                    let enc = if n.encrypted { ", encrypted" } else { "" };
                    let _ = writeln!(
                        log,
                        "network {}: added (VNI {}{enc})",
                        n.name,
                        vni_str(n.vni)
                    );
                }
                Some(o) if (o.vni, o.mtu, o.encrypted) != (n.vni, n.mtu, n.encrypted) => {
                    let net = &mut self.sw.env.nets[i];
                    undo.push(Undo::NetChanged(i, net.vni, net.mtu, net.encrypted))?;
                    (net.vni, net.mtu, net.encrypted) = (n.vni, n.mtu, n.encrypted);
                    let enc = |e: bool| if e { " encrypted" } else { "" };
                    let _ = writeln!(
                        log,
                        "network {}: VNI {} MTU {}{} -> VNI {} MTU {}{}",
                        n.name,
                        o.vni,
                        o.mtu,
                        enc(o.encrypted),
                        n.vni,
                        n.mtu,
                        enc(n.encrypted)
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
                    undo.push(Undo::VtepAdded(i))?;
                    let _ = writeln!(log, "node {name}: added (VTEP {addr})");
                }
                Some((_, was)) if was != addr => {
                    self.sw.env.vteps[i].addr = *addr;
                    undo.push(Undo::VtepChanged(i, *was))?;
                    let _ = writeln!(log, "node {name}: VTEP {was} -> {addr}");
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Add the ports `new` has and the plan in force does not, from the prepared ones.
    fn add_ports(
        &mut self,
        new: &Plan,
        opened: &mut HashMap<String, Opened>,
        gates: &mut HashMap<String, Arc<vswitch::gate::ReceiverGate>>,
        undo: &mut UndoLog,
        log: &mut String,
        garbage: &mut Vec<Box<dyn std::any::Any + Send>>,
    ) -> anyhow::Result<()> {
        let old = self.plan.clone();
        for p in &new.ports {
            if old.ports.iter().any(|o| o.name == p.name) {
                continue;
            }
            let (port, tx) = opened
                .remove(&p.name)
                .with_context(|| format!("port {}: not prepared for this change", p.name))?;
            let role = PortRole::Local(NetId(p.net as u16));
            let path = self.local_path.clone();
            let (id, spare) = match tx {
                Some(tx) => self.sw.add_port_with(p.name.clone(), port, role, path, tx),
                None => (self.sw.add_port(p.name.clone(), port, role, path), None),
            };
            if let Some(spare) = spare {
                // The port took a closed slot, which has a batch: this one is dropped later.
                garbage.push(Box::new(spare));
            }
            // Port security: a container's port sends only as its endpoint (an ingress is open).
            if let PortKind::Endpoint { mac, addr, .. } = &p.kind {
                let (mac, ip) = (*mac, addr.0);
                self.sw.set_port_guard(id, PortGuard::Endpoint { mac, ip });
            }
            // Early drop for a receiver that cannot keep up (`receivers`): a container whose
            // namespace the node knows has a gate the watcher closes (taken when prepared).
            if let Some(gate) = gates.remove(&p.name) {
                self.sw.set_receiver_gate(id, Some(gate));
            }
            undo.push(Undo::PortAdded(id))?;
            let what = match p.kind {
                PortKind::Endpoint { .. } => "endpoint",
                PortKind::Ingress => "ingress",
            };
            let _ = writeln!(log, "{what} {}: attached", p.name);
        }
        Ok(())
    }

    /// Services and backends, then the switch's own addresses, each recorded in `undo`.
    fn services_fallible(
        &mut self,
        new: &Plan,
        undo: &mut UndoLog,
        log: &mut String,
    ) -> anyhow::Result<()> {
        // A service whose configuration changed (scheduler, source NAT) is changed in place:
        // its backends and connections stay, and taking it back restores it exactly.
        let plan = self.plan.clone();
        for s in &new.services {
            let key = s.key();
            let Some(old) = plan.services.iter().find(|o| o.key() == key) else {
                self.add_service(s)?;
                undo.push(Undo::ServiceAdded(key))?;
                let _ = writeln!(
                    log,
                    "service {} {}:{}: added",
                    s.service, key.addr, key.port
                );
                continue;
            };
            if old.config != s.config {
                let was = self
                    .lb()
                    .replace_service(s.config.clone())
                    .map_err(|e| anyhow::anyhow!("service {}: {e}", s.service))?;
                undo.push(Undo::ServiceConfig(was))?;
                let _ = writeln!(
                    log,
                    "service {} {}:{}: reconfigured",
                    s.service, key.addr, key.port
                );
            }
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
                        undo.push(Undo::BackendAdded(key, c.addr, c.port))?;
                        "added".to_string()
                    }
                    Some(ob) if ob.config.weight != c.weight => {
                        self.lb()
                            .set_weight(&key, c.addr, c.port, c.weight)
                            .map_err(|e| anyhow::anyhow!("service {}: {e}", s.service))?;
                        undo.push(Undo::Weight(key, c.addr, c.port, ob.config.weight))?;
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
        if let Some(was) = self.sw.env.replace_own_macs(macs) {
            undo.push(Undo::OwnMacs(was))?;
        }
        let ingress: Vec<(PortId, NetId)> = new
            .ports
            .iter()
            .filter(|p| p.kind == PortKind::Ingress)
            .filter_map(|p| Some((self.sw.port_id(&p.name)?, NetId(p.net as u16))))
            .collect();
        let own = &mut self.sw.stage_mut(self.own).ingress;
        if *own != ingress {
            undo.push(Undo::OwnIngress(std::mem::replace(own, ingress)))?;
        }
        // The resolver answers a port only for its endpoint's own address. Port ids change
        // only when ports come or go (a port's settings cannot change while attached), so the
        // table is rebuilt (a name lookup per port) only then.
        if new.ports != self.plan.ports {
            let mut addrs: Vec<Option<Ipv4Addr>> = Vec::new();
            for p in &new.ports {
                if let (PortKind::Endpoint { addr, .. }, Some(id)) =
                    (&p.kind, self.sw.port_id(&p.name))
                {
                    let i = usize::from(id.0);
                    if addrs.len() <= i {
                        addrs.resize(i + 1, None);
                    }
                    addrs[i] = Some(addr.0);
                }
            }
            let dns = self.sw.stage_mut(self.dns);
            if dns.ports() != addrs {
                undo.push(Undo::DnsPorts(dns.set_ports(addrs)))?;
            }
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

    /// After every fallible step succeeded: remove the services and backends that left the plan
    /// (their connections expire as IPVS's do), then the ports (into `closed`), VTEPs and
    /// networks.
    fn remove_departed(
        &mut self,
        new: &Plan,
        log: &mut String,
        closed: &mut Vec<Box<dyn Port>>,
        departed: &mut Departed,
    ) {
        let plan = self.plan.clone();
        for old in &plan.services {
            let key = old.key();
            let Some(s) = new.services.iter().find(|s| s.key() == key) else {
                if let Err(e) = self.lb().remove_service(&key) {
                    tracing::warn!(service = %old.service, error = %e, "removing a service");
                }
                let _ = writeln!(
                    log,
                    "service {} {}:{}: removed",
                    old.service, key.addr, key.port
                );
                continue;
            };
            for ob in &old.backends {
                let (addr, port) = (ob.config.addr, ob.config.port);
                if s.backends
                    .iter()
                    .any(|b| (b.config.addr, b.config.port) == (addr, port))
                {
                    continue;
                }
                if let Err(e) = self.lb().remove_backend(&key, addr, port) {
                    tracing::warn!(service = %old.service, error = %e, "removing a backend");
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
            if let Some(id) = self.sw.port_id(&p.name)
                && let Some(port) = self.sw.remove_port(id)
            {
                closed.push(port);
                departed.ports.push(id);
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
                departed.vteps.push(VtepId(i as u16));
                let _ = writeln!(log, "node {name}: removed");
            }
        }
        for (i, n) in plan.live_nets() {
            if new.nets.get(i).is_none_or(|n| n.is_none()) {
                self.sw.env.retire_network(NetId(i as u16));
                departed.nets.push(NetId(i as u16));
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
