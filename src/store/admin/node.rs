//! The admin commands on nodes: `node ls` and `node rm` (what they read and write; the
//! transaction is `admin::write_when`'s). Control plane, off the packet path.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Ops;
use crate::store::layout::{Key, Kind};
use crate::store::state::{State, Status};

/// `node ls`: NAME VTEP STATUS ENDPOINTS.
pub fn node_ls(st: &State, json: bool) -> String {
    let rows: Vec<(String, String, Status, usize)> = st
        .objects
        .iter()
        .filter(|((k, _), _)| *k == Kind::Node)
        .map(|((_, name), v)| {
            let vtep = v.get("vtep").and_then(|x| x.as_str()).unwrap_or("?");
            let eps = st
                .objects
                .iter()
                .filter(|((k, _), e)| {
                    *k == Kind::Endpoint
                        && e.get("node").and_then(|n| n.as_str()) == Some(name.as_str())
                })
                .count();
            (name.clone(), vtep.to_string(), st.status(name), eps)
        })
        .collect();
    let word = |s: Status| match s {
        Status::Ready => "ready",
        Status::Down => "down",
    };
    if json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(n, vt, s, e)| {
                json!({"name": n, "vtep": vt, "status": word(*s), "endpoints": e,
                       "runs_vxmesh": st.managed.contains(n)})
            })
            .collect();
        return format!("{}\n", Value::Array(v));
    }
    let mut o = format!(
        "{:<16} {:<16} {:<8} {}\n",
        "NAME", "VTEP", "STATUS", "ENDPOINTS"
    );
    for (n, vt, s, e) in rows {
        let _ = writeln!(o, "{n:<16} {vt:<16} {:<8} {e}", word(s));
    }
    o
}

/// The writes of `node rm NAME`: refused while the node is ready; else its object, its
/// `managed` marker, its endpoints (taken out of every service's backends), its ingresses and
/// its CNI address blocks, so that another node can claim them (as Calico's IPAM releases the
/// blocks of a deleted node).
pub(super) fn node_rm(st: &State, name: &str) -> Result<Ops, String> {
    if st.alive.contains(name) {
        return Err(format!(
            "node {name:?} is ready (its liveness key is in the store): stop its `vxmesh run` first, then remove it once `node ls` says down"
        ));
    }
    let on_node = |kind: Kind| -> Vec<String> {
        st.objects
            .iter()
            .filter(|((k, _), v)| *k == kind && v.get("node").and_then(Value::as_str) == Some(name))
            .map(|((_, n), _)| n.clone())
            .collect()
    };
    let endpoints = on_node(Kind::Endpoint);
    let ingresses = on_node(Kind::Ingress);
    let mut ops: Ops = Vec::new();
    if st.objects.contains_key(&(Kind::Node, name.to_string())) {
        ops.push((Key::Object(Kind::Node, name.to_string()), None));
    }
    if st.managed.contains(name) {
        ops.push((Key::Managed(name.to_string()), None));
    }
    ops.extend(
        endpoints
            .iter()
            .map(|n| (Key::Object(Kind::Endpoint, n.clone()), None)),
    );
    ops.extend(
        ingresses
            .iter()
            .map(|n| (Key::Object(Kind::Ingress, n.clone()), None)),
    );
    let gone: BTreeSet<String> = endpoints.into_iter().collect();
    for ((k, svc), v) in &st.objects {
        if *k != Kind::Service {
            continue;
        }
        let mut v = (**v).clone();
        if crate::store::state::drop_backends(&mut v, &gone) {
            ops.push((Key::Object(Kind::Service, svc.clone()), Some(v)));
        }
    }
    ops.extend(
        st.blocks
            .iter()
            .filter(|(_, b)| b.node == name)
            .map(|((n, b), _)| (Key::Block(n.clone(), b.clone()), None)),
    );
    if ops.is_empty() {
        // Nothing names it: no object, no marker, nothing left on it.
        return Err(format!("node {name:?}: no such node"));
    }
    Ok(ops)
}
