//! A node's plan moved forward by an incremental change of the store ([`Delta`]: endpoints
//! removed and added), in time proportional to the change, and the table edits it means.
//!
//! Where it sits: control side, between the store's view (`store::view`) and the node's change
//! path; the result is the plan [`Plan::next`] would compute from the whole new cluster (a test
//! compares them), without reading the cluster. What changes the shape of the plan (a port of
//! this node, a node joining or leaving a network's peers) returns `None`: the caller plans the
//! whole cluster then.

use super::{DestPlan, Plan};
use crate::config::Endpoint;
use crate::store::view::{Delta, View};
use vswitch::Mac;

/// The table edits of an incremental change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanDiff {
    /// Static FDB entries that leave: (network id, MAC).
    pub fdb_removed: Vec<(usize, Mac)>,
    /// Static FDB entries that arrive: (network id, MAC, destination).
    pub fdb_added: Vec<(usize, Mac, DestPlan)>,
    /// Networks whose ARP table and resolver names changed (their ids).
    pub nets: Vec<usize>,
}

impl Plan {
    /// Move the plan forward by `delta` (`view` is the view after it); the edits it means, or
    /// `None` with the plan untouched if the change needs the whole cluster planned.
    pub fn apply_delta(&mut self, view: &View, delta: &Delta) -> Option<PlanDiff> {
        // First whether it can apply at all, so that a `None` leaves the plan as it was.
        let mut served = Vec::new();
        for (e, added) in delta
            .removed
            .iter()
            .map(|e| (e, false))
            .chain(delta.added.iter().map(|e| (e, true)))
        {
            if e.node == self.node {
                return None;
            }
            // Whether the endpoint's node is a peer of its network before and after.
            let after = view.endpoints_on(&e.network, &e.node);
            let (gone, came) = count(delta, &e.network, &e.node);
            let before = after + gone - came;
            if (before == 0) != (after == 0) {
                return None;
            }
            let net = self
                .live_nets()
                .find(|(_, n)| !n.ingress && n.name == e.network)
                .map(|(i, _)| i);
            if let Some(net) = net {
                let vtep = self
                    .vteps
                    .iter()
                    .position(|v| v.as_ref().is_some_and(|v| v.0 == e.node))?;
                served.push((e, added, net, vtep));
            }
        }
        let mut diff = PlanDiff::default();
        for (e, added, net, vtep) in served {
            let n = self.nets[net].as_mut().expect("a live network");
            let dns = n.dns.as_mut();
            if added {
                n.arp.insert(e.ip, e.mac);
                self.fdb.insert((net, e.mac), DestPlan::Vtep(vtep));
                diff.fdb_added.push((net, e.mac, DestPlan::Vtep(vtep)));
                if let Some(d) = dns {
                    for name in names(e) {
                        d.names.insert(name, vec![e.ip]);
                    }
                    d.ptr.insert(e.ip, e.name.clone());
                }
            } else {
                n.arp.remove(&e.ip);
                self.fdb.remove(&(net, e.mac));
                diff.fdb_removed.push((net, e.mac));
                if let Some(d) = dns {
                    for name in names(e) {
                        d.names.remove(&name);
                    }
                    d.ptr.remove(&e.ip);
                }
            }
            if !diff.nets.contains(&net) {
                diff.nets.push(net);
            }
        }
        // An endpoint changed in place: its entry removed, then added again, is no edit.
        let added = &diff.fdb_added;
        diff.fdb_removed
            .retain(|(n, m)| !added.iter().any(|(an, am, _)| an == n && am == m));
        Some(diff)
    }
}

/// How many endpoints `delta` removes and adds on (`network`, `node`).
fn count(delta: &Delta, network: &str, node: &str) -> (u32, u32) {
    let on = |v: &[std::sync::Arc<Endpoint>]| {
        v.iter()
            .filter(|e| e.network == network && e.node == node)
            .count() as u32
    };
    (on(&delta.removed), on(&delta.added))
}

/// The resolver names of an endpoint (its name and aliases, lower case).
fn names(e: &Endpoint) -> impl Iterator<Item = String> + '_ {
    std::iter::once(&e.name)
        .chain(&e.aliases)
        .map(|n| n.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::{Key, Kind};
    use crate::store::state::State;

    fn state() -> State {
        State::of_file(&crate::node::tests::file())
    }

    fn put(s: &mut State, name: &str, node: &str, ip: &str) -> Key {
        let k = Key::Object(Kind::Endpoint, name.into());
        let v = serde_json::json!({"name": name, "node": node, "network": "appnet", "ip": ip,
                                   "aliases": [format!("{name}-alias")],
                                   "attach": format!("afxdp:v{name}")});
        s.put(&k.text(), v.to_string().as_bytes(), 2);
        k
    }

    /// Apply `edit` through the view and the plan's delta, and through the whole plan: same.
    fn check(
        s: &mut State,
        view: &mut View,
        plan: &mut Plan,
        edit: impl FnOnce(&mut State) -> Vec<Key>,
    ) -> bool {
        let touched = edit(s);
        let Some(delta) = view.apply(s, &touched) else {
            return false;
        };
        let whole = Plan::next(&view.cluster(), "n1", Some(plan)).unwrap();
        let before = plan.clone();
        let Some(diff) = plan.apply_delta(view, &delta) else {
            assert_eq!(*plan, before, "a refused delta leaves the plan");
            *plan = whole;
            return false;
        };
        assert_eq!(*plan, whole);
        // The edits are the difference of the FDBs.
        for (k, d) in &whole.fdb {
            if before.fdb.get(k) != Some(d) {
                assert!(diff.fdb_added.contains(&(k.0, k.1, d.clone())), "{k:?}");
            }
        }
        for k in before.fdb.keys() {
            if !whole.fdb.contains_key(k) {
                assert!(diff.fdb_removed.contains(k), "{k:?}");
            }
        }
        true
    }

    #[test]
    fn a_delta_gives_the_plan_of_the_whole_cluster() {
        let mut s = state();
        let mut view = View::full(&s, "etcd://t", Some("n1")).unwrap();
        let mut plan = Plan::of(&view.cluster(), "n1").unwrap();
        // Remote endpoints added, moved, removed: incremental.
        assert!(check(&mut s, &mut view, &mut plan, |s| vec![put(
            s,
            "r1",
            "n2",
            "10.0.9.41"
        )]));
        assert!(check(&mut s, &mut view, &mut plan, |s| vec![
            put(s, "r1", "n2", "10.0.9.42"),
            put(s, "r2", "n2", "10.0.9.43")
        ]));
        assert!(check(&mut s, &mut view, &mut plan, |s| {
            let k = Key::Object(Kind::Endpoint, "r2".into());
            s.delete(&k.text());
            vec![k]
        }));
        // One of this node's own: its ports change, the whole plan is made.
        assert!(!check(&mut s, &mut view, &mut plan, |s| vec![put(
            s,
            "l1",
            "n1",
            "10.0.9.44"
        )]));
    }
}
