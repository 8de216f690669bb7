//! A change of the node's desired state, prepared off the packet thread.
//!
//! Where it sits: between a source of change (the cluster file today; the store and the CNI
//! plugin later) and the poll thread. [`Change::prepare`] runs on the control side: it plans the
//! new state against the plan in force (ids kept, [`Plan::next`]), refuses what cannot apply
//! live (the node's own VTEP address; a port whose settings changed while attached), and opens
//! every port the new state adds (AF_XDP sockets bound, TAPs created: the slow, fallible part).
//! The tables the switch swaps in (ARP maps, the resolvers' names) are built here too, and so
//! are the security associations of new keys or ESP peers (their key derivation).
//! Only then does [`Node::commit`](super::Node::commit) swap it in between two batches; what it
//! takes out (closed ports, the old plan and file) comes back as [`Leftovers`], for the caller to
//! drop off the packet thread too.
//!
//! ```text
//! control side:  load file ─► Plan::next ─► checks ─► open new ports ─► Change
//! poll thread:                                  commit(Change) between batches ─► Leftovers
//! control side:                                                 drop(Leftovers): ports closed
//! ```

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::{Context, bail};
use vswitch::dns::DnsTable;
use vswitch::{Mac, Port};

use super::{DestPlan, Plan, PortKind, PortOpener};
use crate::config::{Attach, Cluster};

/// A new desired state, ready to commit: its plan and the ports it opens.
pub struct Change {
    /// The plan in force it was computed against; the commit refuses it if another change
    /// came first.
    pub(super) base: Arc<Plan>,
    /// The new cluster file.
    pub(super) cluster: Cluster,
    /// The new plan.
    pub(super) plan: Plan,
    /// The ports the new plan adds, opened, by port name, each with a transmit batch built and
    /// its pages touched here (a port added costs the poll thread no allocation or page fault).
    pub(super) opened: Vec<(String, Opened)>,
    /// The ARP tables that change, built: (network id, table).
    pub(super) arp: Vec<(usize, HashMap<Ipv4Addr, Mac>)>,
    /// The resolvers' tables that change, built: (network id, table; `None`: no resolver).
    pub(super) dns: Vec<(usize, Option<Box<DnsTable>>)>,
    /// Static FDB entries that leave or change: (network id, MAC).
    pub(super) fdb_removed: Vec<(usize, Mac)>,
    /// Static FDB entries that arrive or change: (network id, MAC, destination).
    pub(super) fdb_added: Vec<(usize, Mac, DestPlan)>,
    /// The commit's undo log, with room for every step it can take.
    pub(super) undo: super::apply::UndoLog,
    /// The security associations of the new keys and ESP peers, derived here (HKDF and the
    /// AES key schedule, per peer and key: the one piece of crypto a change costs), when
    /// either changed; the commit only swaps them in.
    pub(super) sas: Option<esp::SaPlan>,
    /// The receiver gates of the container ports the change adds (those with a named
    /// namespace), by port name: taken from the process's gates here (a lock, and an
    /// allocation for a new one), so the commit only hands them to the switch.
    pub(super) gates: HashMap<String, Arc<vswitch::gate::ReceiverGate>>,
}

/// A port opened for a change, and its transmit batch (if it still has one).
pub(super) type Opened = (Box<dyn Port>, Option<vswitch::Batch>);

/// What a commit took out of the node, to be dropped off the packet thread: closing a port
/// (an AF_XDP socket's XDP program detached, a TAP removed) and freeing a large plan or file
/// take time the packets should not wait for. Its ports left the desired state (removed, or
/// opened for a change that did not apply): dropping it retires them first ([`Port::retire`]:
/// a persistent TAP is deleted), unlike a node that stops, whose TAPs stay for the containers.
#[derive(Default)]
pub struct Leftovers {
    /// Ports removed, or opened for a change that was not applied.
    pub ports: Vec<Box<dyn Port>>,
    /// The plan that was in force before.
    pub plan: Option<Arc<Plan>>,
    /// The cluster file that was in force before, or the refused one.
    pub cluster: Option<Cluster>,
    /// Tables taken out of the switch (replaced ARP maps, the undo log).
    pub garbage: Vec<Box<dyn std::any::Any + Send>>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for p in &mut self.ports {
            p.retire();
        }
    }
}

impl Change {
    /// Plan `cluster` against `base` (the plan in force) and open the ports it adds. `buf_size`
    /// is the switch's buffer size (TAPs get offloads only if it holds a super-frame).
    pub fn prepare(
        cluster: Cluster,
        base: Arc<Plan>,
        ports: &mut dyn PortOpener,
        buf_size: usize,
    ) -> anyhow::Result<Change> {
        let plan = Plan::next(&cluster, &base.node, Some(&base))?;
        Change::planned(cluster, plan, base, ports, buf_size)
    }

    /// [`Change::prepare`] with the plan already computed (against `base`).
    pub fn planned(
        cluster: Cluster,
        plan: Plan,
        base: Arc<Plan>,
        ports: &mut dyn PortOpener,
        buf_size: usize,
    ) -> anyhow::Result<Change> {
        let file = cluster.path.display().to_string();
        if plan.vtep != base.vtep {
            bail!(
                "{file}: refused: this node's VTEP address changed ({} -> {}); restart the node to apply that (the running configuration is unchanged)",
                base.vtep,
                plan.vtep
            );
        }
        for p in &plan.ports {
            if let Some(old) = base.ports.iter().find(|o| o.name == p.name)
                && old != p
            {
                bail!(
                    "{file}: refused: {} {}: its attachment changed while attached ({}); detach it (reload without it), then attach it again (the running configuration is unchanged)",
                    what(&p.kind),
                    p.name,
                    differences(old, p)
                );
            }
        }
        let offloads = buf_size >= vswitch::offload::GSO_BUF_SIZE;
        let mut opened = Vec::new();
        let mut gates = HashMap::new();
        for p in &plan.ports {
            if base.ports.iter().any(|o| o.name == p.name) {
                continue;
            }
            if let PortKind::Endpoint {
                netns: Some(ns), ..
            } = &p.kind
            {
                gates.insert(p.name.clone(), super::receivers::gates().gate(&p.name, ns));
            }
            // On an error the ports opened so far close as `opened` drops: nothing stays.
            let port = ports.open(p, offloads).with_context(|| {
                format!(
                    "{file}: {} {}: opening {}; nothing of the change was applied",
                    what(&p.kind),
                    p.name,
                    attach_str(&p.attach)
                )
            })?;
            let mut tx = vswitch::Batch::with_buf_size(vswitch::BATCH_SIZE, buf_size);
            tx.prefault();
            opened.push((p.name.clone(), (port, Some(tx))));
        }
        // The difference of the tables, computed here rather than between batches.
        let arp: Vec<(usize, HashMap<Ipv4Addr, Mac>)> = plan
            .live_nets()
            .filter(|(i, n)| {
                base.nets
                    .get(*i)
                    .and_then(|o| o.as_ref())
                    .is_none_or(|o| o.arp != n.arp)
            })
            .map(|(i, n)| (i, n.arp.iter().map(|(ip, mac)| (*ip, *mac)).collect()))
            .collect();
        let dns: Vec<(usize, Option<Box<DnsTable>>)> = plan
            .live_nets()
            .filter(|(i, n)| {
                base.nets
                    .get(*i)
                    .and_then(|o| o.as_ref())
                    .is_none_or(|o| o.dns != n.dns)
            })
            .map(|(i, n)| (i, n.dns.as_ref().map(|d| Box::new(d.table()))))
            .collect();
        let fdb_removed: Vec<(usize, Mac)> = base
            .fdb
            .iter()
            .filter(|(k, d)| plan.fdb.get(k) != Some(d))
            .map(|(k, _)| *k)
            .collect();
        let fdb_added: Vec<(usize, Mac, DestPlan)> = plan
            .fdb
            .iter()
            .filter(|(k, d)| base.fdb.get(k) != Some(d))
            .map(|(&(n, m), d)| (n, m, d.clone()))
            .collect();
        // The security associations, derived here rather than on the poll thread.
        let peers = plan.esp_peers();
        let sas = (plan.keys != base.keys || peers != base.esp_peers())
            .then(|| esp::SaPlan::new(plan.vtep, &plan.keys, &peers, 0));
        // Every step records at most one entry, but a service records one per backend.
        let steps = fdb_removed.len()
            + fdb_added.len()
            + arp.len()
            + dns.len()
            + plan.nets.len()
            + plan.vteps.len()
            + opened.len()
            + plan
                .services
                .iter()
                .map(|s| 2 + s.backends.len())
                .sum::<usize>()
            + 16;
        Ok(Change {
            base,
            cluster,
            plan,
            opened,
            arp,
            dns,
            fdb_removed,
            fdb_added,
            undo: super::apply::UndoLog::with_capacity(steps),
            sas,
            gates,
        })
    }

    /// The new plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

/// "endpoint" or "ingress", for messages.
fn what(kind: &PortKind) -> &'static str {
    match kind {
        PortKind::Endpoint { .. } => "endpoint",
        PortKind::Ingress => "ingress",
    }
}

/// `afxdp:IF` or `tap:IF`.
fn attach_str(a: &Attach) -> String {
    match a {
        Attach::Afxdp(i) => format!("afxdp:{i}"),
        Attach::Tap(i) => format!("tap:{i}"),
    }
}

/// What differs between two settings of one port, in words.
fn differences(old: &super::PortPlan, new: &super::PortPlan) -> String {
    let mut d = Vec::new();
    if old.attach != new.attach {
        d.push(format!(
            "attach {} -> {}",
            attach_str(&old.attach),
            attach_str(&new.attach)
        ));
    }
    if old.net != new.net {
        d.push("network".to_string());
    }
    if old.mtu != new.mtu {
        d.push(format!("MTU {} -> {}", old.mtu, new.mtu));
    }
    match (&old.kind, &new.kind) {
        (
            PortKind::Endpoint {
                mac: m1,
                addr: a1,
                netns: n1,
            },
            PortKind::Endpoint {
                mac: m2,
                addr: a2,
                netns: n2,
            },
        ) => {
            if m1 != m2 {
                d.push(format!("MAC {m1} -> {m2}"));
            }
            if a1 != a2 {
                d.push(format!("address {}/{} -> {}/{}", a1.0, a1.1, a2.0, a2.1));
            }
            if n1 != n2 {
                d.push(format!("netns {n1:?} -> {n2:?}"));
            }
        }
        (a, b) if a != b => d.push("endpoint/ingress".to_string()),
        _ => {}
    }
    d.join(", ")
}
