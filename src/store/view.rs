//! A node's view of the store: the checked cluster as persistent maps, with the indexes the
//! cluster file's checks need, so that a change of a few endpoints is checked in time
//! proportional to the change rather than to the cluster (issue 14's convergence at scale).
//!
//! Where it sits: on the control side of a node that follows the store, between the
//! [`State`] the watcher folds events into and the node's change path. [`View::full`] checks
//! the whole state as a cluster file (`State::cluster`: the reference, same checks, same
//! messages) and indexes the result. [`View::apply`] then takes a batch of changed keys: when
//! every one is an endpoint's and each endpoint passes the checks against the indexes, the view
//! moves forward by a [`Delta`] (endpoints removed and added) that is exactly what the full
//! checks would give; anything else (another kind of object, a node going down or coming back,
//! an endpoint that fails a check or is a service's backend, a state with objects already left
//! out) returns `None` and the caller checks the whole state again. A test drives random
//! changes through both and compares them.
//!
//! Cloning a view is O(1) (the maps are `imbl`'s): a snapshot for a change costs nothing, and
//! nodes simulated in one process share the part of their views they agree on.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use vswitch::Mac;

use super::layout::{Key, Kind};
use super::state::{Skipped, State};
use crate::config::{Attach, Cluster, ConfigError, Endpoint, Ingress, NetworkCfg, Node, Service};

/// What an incremental change did to the cluster: endpoints that left and that arrived (an
/// endpoint changed in place is in both).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    /// Endpoints taken out, as they were.
    pub removed: Vec<Arc<Endpoint>>,
    /// Endpoints added, as they are now.
    pub added: Vec<Arc<Endpoint>>,
}

/// The indexes of the checks across items, over the view's cluster.
#[derive(Clone, Debug, Default)]
struct Index {
    /// Every address in use: endpoints, VIPs, load-balancer addresses, resolvers.
    ips: imbl::HashSet<Ipv4Addr>,
    /// Endpoint MACs.
    macs: imbl::HashSet<Mac>,
    /// Interfaces by (node, namespace, name), as the checks key them.
    ifaces: imbl::HashSet<(String, Option<String>, String)>,
    /// DNS names of endpoints and services per network (lower case), with how many own each.
    names: imbl::HashMap<(String, String), u32>,
    /// Aliases per network (lower case).
    aliases: imbl::HashSet<(String, String)>,
    /// Endpoints per (network, node): a network's peers are the nodes with one.
    peers: imbl::HashMap<(String, String), u32>,
    /// Every endpoint name a service lists as a backend (in the store, down nodes' included).
    listed: Arc<HashSet<String>>,
}

/// A node's checked view of the store (see the module's documentation).
#[derive(Clone, Debug)]
pub struct View {
    /// The store's URL (what messages name).
    source: String,
    /// Nodes, in store order.
    pub nodes: Arc<Vec<Node>>,
    /// Networks.
    pub networks: Arc<Vec<NetworkCfg>>,
    /// Services.
    pub services: Arc<Vec<Service>>,
    /// Ingresses.
    pub ingresses: Arc<Vec<Ingress>>,
    /// The encryption keys.
    pub keys: Arc<Vec<esp::Key>>,
    /// How ESP travels.
    pub esp_transport: crate::config::EspTransport,
    /// Endpoints by name.
    pub endpoints: imbl::OrdMap<String, Arc<Endpoint>>,
    /// What is left out, with why.
    pub skipped: Vec<Skipped>,
    /// The other nodes that were down when the view was last checked whole.
    down: BTreeSet<String>,
    /// Whether the incremental path may run: nothing is left out by the checks (values that
    /// are not objects of the layout do not count: they take part in no check).
    incremental: bool,
    idx: Index,
}

/// The interface key of an endpoint's attachment, as the checks make it.
fn iface_key(e: &Endpoint) -> Option<(String, Option<String>, String)> {
    let a = e.attach.as_ref()?;
    let netns = match a {
        Attach::Tap(_) => e.netns.clone(),
        Attach::Afxdp(_) => None,
    };
    Some((e.node.clone(), netns, a.ifname().to_string()))
}

impl View {
    /// Check the whole state (the cluster file's checks) and index the result.
    pub fn full(state: &State, source: &str, me: Option<&str>) -> Result<View, ConfigError> {
        let (cluster, skipped) = state.cluster(source, me)?;
        Ok(View::of(cluster, skipped, state, source, me))
    }

    /// Index a checked cluster (`state.cluster(source, me)`'s result).
    fn of(
        cluster: Cluster,
        skipped: Vec<Skipped>,
        state: &State,
        source: &str,
        me: Option<&str>,
    ) -> View {
        let mut idx = Index::default();
        for e in &cluster.endpoints {
            idx.ips.insert(e.ip);
            idx.macs.insert(e.mac);
            if let Some(k) = iface_key(e) {
                idx.ifaces.insert(k);
            }
            *idx.names
                .entry((e.network.clone(), e.name.to_ascii_lowercase()))
                .or_default() += 1;
            for a in &e.aliases {
                idx.aliases
                    .insert((e.network.clone(), a.to_ascii_lowercase()));
            }
            *idx.peers
                .entry((e.network.clone(), e.node.clone()))
                .or_default() += 1;
        }
        for s in &cluster.services {
            idx.ips.insert(s.vip);
            *idx.names
                .entry((s.network.clone(), s.name.to_ascii_lowercase()))
                .or_default() += 1;
        }
        for n in &cluster.nodes {
            idx.ips.extend(n.lb.values().copied());
        }
        for n in &cluster.networks {
            idx.ips.insert(n.dns);
        }
        for i in &cluster.ingresses {
            idx.ifaces
                .insert((i.node.clone(), None, i.attach.ifname().to_string()));
        }
        let mut listed = HashSet::new();
        for ((kind, _), v) in state.objects.range((Kind::Service, String::new())..) {
            if *kind != Kind::Service {
                break;
            }
            for b in v
                .get("backends")
                .and_then(|b| b.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(b) = b.as_str() {
                    listed.insert(b.split('=').next().unwrap_or(b).to_string());
                }
            }
        }
        // And the backends the state derives (an endpoint whose alias names a service).
        for s in &cluster.services {
            listed.extend(s.backends.iter().map(|(b, _)| b.clone()));
        }
        idx.listed = Arc::new(listed);
        let incremental = skipped.iter().all(|s| state.bad.contains_key(&s.key));
        View {
            source: source.into(),
            nodes: Arc::new(cluster.nodes),
            networks: Arc::new(cluster.networks),
            services: Arc::new(cluster.services),
            ingresses: Arc::new(cluster.ingresses),
            keys: Arc::new(cluster.keys),
            esp_transport: cluster.esp_transport,
            endpoints: cluster
                .endpoints
                .into_iter()
                .map(|e| (e.name.clone(), Arc::new(e)))
                .collect(),
            skipped,
            down: others_down(state, me),
            incremental,
            idx,
        }
    }

    /// The cluster the view holds (what the full checks gave, or would give).
    pub fn cluster(&self) -> Cluster {
        Cluster {
            path: PathBuf::from(&self.source),
            nodes: (*self.nodes).clone(),
            networks: (*self.networks).clone(),
            endpoints: self.endpoints.values().map(|e| (**e).clone()).collect(),
            services: (*self.services).clone(),
            ingresses: (*self.ingresses).clone(),
            keys: (*self.keys).clone(),
            esp_transport: self.esp_transport,
        }
    }

    /// The number of endpoints `node` has in `network`.
    pub fn endpoints_on(&self, network: &str, node: &str) -> u32 {
        self.idx
            .peers
            .get(&(network.to_string(), node.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// This view as node `me` sees it, if the nodes that are down are the same for it (the
    /// other nodes' view of a cluster differs only there): O(1). The convergence harness
    /// gives each simulated node its view so; `None`: check the state whole for it.
    pub fn seen_by(&self, state: &State, me: &str) -> Option<View> {
        (others_down(state, Some(me)) == self.down).then(|| self.clone())
    }

    /// Move the view forward by the keys `touched` (already folded into `state`), if that can
    /// be done incrementally (see the module's documentation); `None` leaves the view as it was
    /// and means: check the whole state.
    pub fn apply(&mut self, state: &State, touched: &[Key]) -> Option<Delta> {
        // The nodes that are down change only with liveness keys, which go the whole way
        // below: `self.down` stays true on this path without being computed again.
        if !self.incremental {
            return None;
        }
        let mut names = BTreeSet::new();
        for k in touched {
            match k {
                Key::Gen => {}
                Key::Object(Kind::Endpoint, n) => {
                    names.insert(n.as_str());
                }
                // Other objects, liveness (`alive`, `managed`), address blocks.
                _ => return None,
            }
        }
        let mut next = self.clone();
        let mut delta = Delta::default();
        let mut arriving = Vec::new();
        for name in names {
            let old = next.endpoints.get(name).cloned();
            let new = match state.objects.get(&(Kind::Endpoint, name.to_string())) {
                None => None,
                Some(v) => Some(Cluster::endpoint_item(v).ok()?),
            };
            // A service's backend (even one left out, on a node that is down) decides whether
            // the service stays: the full checks decide.
            if next.idx.listed.contains(name) {
                return None;
            }
            if old.as_deref() == new.as_ref() {
                continue;
            }
            if let Some(old) = old {
                next.remove(&old);
                delta.removed.push(old);
            }
            arriving.extend(new);
        }
        for e in arriving {
            let e = Arc::new(e);
            next.add(&e)?;
            delta.added.push(e);
        }
        next.skipped = state
            .bad
            .iter()
            .map(|(k, r)| Skipped {
                key: k.clone(),
                reason: r.clone(),
            })
            .collect();
        *self = next;
        Some(delta)
    }

    /// Take an endpoint out of the view and its indexes.
    fn remove(&mut self, e: &Endpoint) {
        self.endpoints.remove(&e.name);
        let i = &mut self.idx;
        i.ips.remove(&e.ip);
        i.macs.remove(&e.mac);
        if let Some(k) = iface_key(e) {
            i.ifaces.remove(&k);
        }
        let key = (e.network.clone(), e.name.to_ascii_lowercase());
        if let Some(c) = i.names.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                i.names.remove(&key);
            }
        }
        for a in &e.aliases {
            i.aliases
                .remove(&(e.network.clone(), a.to_ascii_lowercase()));
        }
        let key = (e.network.clone(), e.node.clone());
        if let Some(c) = i.peers.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                i.peers.remove(&key);
            }
        }
    }

    /// Check an endpoint against the indexes as the cluster file's checks would, and add it;
    /// `None` if any check fails or is in doubt (the full checks decide then, and name it).
    fn add(&mut self, e: &Arc<Endpoint>) -> Option<()> {
        let node_known = self.nodes.iter().any(|n| n.name == e.node);
        let down = self.down.contains(&e.node);
        let net = self.networks.iter().find(|n| n.name == e.network)?;
        let i = &mut self.idx;
        let name = (e.network.clone(), e.name.to_ascii_lowercase());
        let ok = node_known
            && !down
            && net.subnet.contains_host(e.ip)
            && !i.ips.contains(&e.ip)
            && !i.macs.contains(&e.mac)
            && iface_key(e).is_none_or(|k| !i.ifaces.contains(&k))
            && !i.names.contains_key(&name)
            && !i.aliases.contains(&name)
            && !i.listed.contains(&e.name);
        if !ok {
            return None;
        }
        let mut own: HashSet<String> = HashSet::from([name.1.clone()]);
        for a in &e.aliases {
            let a = a.to_ascii_lowercase();
            let key = (e.network.clone(), a.clone());
            if !own.insert(a) || i.names.contains_key(&key) || i.aliases.contains(&key) {
                return None;
            }
        }
        i.ips.insert(e.ip);
        i.macs.insert(e.mac);
        if let Some(k) = iface_key(e) {
            i.ifaces.insert(k);
        }
        i.names.insert(name, 1);
        for a in &e.aliases {
            i.aliases
                .insert((e.network.clone(), a.to_ascii_lowercase()));
        }
        *i.peers
            .entry((e.network.clone(), e.node.clone()))
            .or_default() += 1;
        self.endpoints.insert(e.name.clone(), e.clone());
        Some(())
    }
}

/// The nodes that are down, but `me` (a node never sees itself down).
fn others_down(state: &State, me: Option<&str>) -> BTreeSet<String> {
    match me {
        Some(me) => state.down().into_iter().filter(|n| n != me).collect(),
        None => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests;
