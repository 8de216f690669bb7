//! The node's desired state with its CNI attachments: [`merge`] adds the local attachments to
//! the source's cluster (file or store) as endpoints of this node and backends of their services,
//! checked as the cluster file's checks would. What it returns goes down the node's one change
//! path (`Change::prepare`, commit between batches). Control plane, off the packet path.

use std::collections::{HashMap, HashSet};

use vswitch::Mac;

use super::Attachment;
use super::alloc::used_addresses;
use super::netns::named_netns;
use crate::config::{Attach, Cluster, Endpoint};

/// `source` with `atts` added as endpoints of node `node` (and backends of their services),
/// checked as the cluster file's checks would: names, addresses, MACs, interfaces and DNS
/// names unique.
pub fn merge(source: &Cluster, node: &str, atts: &[Attachment]) -> Result<Cluster, String> {
    let mut c = source.clone();
    if atts.is_empty() {
        return Ok(c);
    }
    if c.node(node).is_none() {
        return Err(format!("node {node:?} is not in the cluster"));
    }
    let mut used = used_addresses(source);
    let mut names: HashSet<String> = c.endpoints.iter().map(|e| e.name.clone()).collect();
    let mut macs: HashSet<Mac> = c.endpoints.iter().map(|e| e.mac).collect();
    let mut ifs: HashSet<String> = c
        .endpoints
        .iter()
        .filter(|e| e.node == node)
        .filter_map(|e| e.attach.as_ref().map(|a| a.ifname().to_string()))
        .chain(
            c.ingresses
                .iter()
                .filter(|i| i.node == node)
                .map(|i| i.attach.ifname().to_string()),
        )
        .collect();
    let mut dns = dns_names(source);
    for a in atts {
        let what = format!("CNI attachment {:?}", a.name);
        let net = c
            .network(&a.network)
            .cloned()
            .ok_or_else(|| format!("{what}: network {:?} is not in the cluster", a.network))?;
        if !net.subnet.contains_host(a.ip) {
            return Err(format!(
                "{what}: {} is not in network {:?}'s subnet {}",
                a.ip, net.name, net.subnet
            ));
        }
        if let Some(other) = used.insert(a.ip, what.clone()) {
            return Err(format!("{what}: address {} is already {other}'s", a.ip));
        }
        if !names.insert(a.name.clone()) {
            return Err(format!("{what}: the name is already an endpoint's"));
        }
        if !macs.insert(a.mac()) {
            return Err(format!("{what}: MAC {} is already an endpoint's", a.mac()));
        }
        let (attach, netns) = if a.tap {
            let ns = named_netns(&a.netns).ok_or_else(|| {
                format!(
                    "{what}: a TAP needs a namespace under /run/netns, not {}",
                    a.netns
                )
            })?;
            (Attach::Tap(a.ifname.clone()), Some(ns))
        } else {
            if !ifs.insert(a.host_if.clone()) {
                return Err(format!("{what}: interface {} is already used", a.host_if));
            }
            // The container's namespace by name where it has one under /run/netns (podman's
            // do): the node then watches its UDP sockets (early drop) and sets its offloads.
            (Attach::Afxdp(a.host_if.clone()), named_netns(&a.netns))
        };
        for n in std::iter::once(&a.name).chain(&a.aliases) {
            let key = (a.network.clone(), n.to_ascii_lowercase());
            if let Some(other) = dns.insert(key, what.clone()) {
                return Err(format!(
                    "{what}: name {n:?} is already {other}'s in network {:?}",
                    a.network
                ));
            }
        }
        c.endpoints.push(Endpoint {
            name: a.name.clone(),
            node: node.to_string(),
            network: a.network.clone(),
            ip: a.ip,
            mac: a.mac(),
            attach: Some(attach),
            netns,
            aliases: a.aliases.clone(),
        });
        for s in &a.services {
            if let Some(svc) = c
                .services
                .iter_mut()
                .find(|x| &x.name == s && x.network == a.network)
                && !svc.backends.iter().any(|(n, _)| n == &a.name)
            {
                svc.backends.push((a.name.clone(), 1));
            }
        }
    }
    Ok(c)
}

/// Every DNS name of the cluster, per network, in lower case: endpoints, aliases, services.
fn dns_names(c: &Cluster) -> HashMap<(String, String), String> {
    let mut names = HashMap::new();
    for e in &c.endpoints {
        for n in std::iter::once(&e.name).chain(&e.aliases) {
            names.insert(
                (e.network.clone(), n.to_ascii_lowercase()),
                format!("endpoint {:?}", e.name),
            );
        }
    }
    for s in &c.services {
        names.insert(
            (s.network.clone(), s.name.to_ascii_lowercase()),
            format!("service {:?}", s.name),
        );
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::testing::{att, cluster};

    #[test]
    fn attachments_become_endpoints_and_backends_and_collisions_are_refused() {
        let c = cluster();
        let m = merge(&c, "n1", &[att("p1", [10, 0, 9, 2])]).unwrap();
        let e = m.endpoint("p1").unwrap();
        assert_eq!(e.node, "n1");
        assert_eq!(e.mac.to_string(), "02:42:0a:00:09:02");
        assert!(
            matches!(&e.attach, Some(Attach::Afxdp(h)) if h.starts_with("vx") && h.len() == 14)
        );
        // Its namespace by name (under /run/netns), as a TAP attachment's.
        assert_eq!(e.netns.as_deref(), Some("p1"));
        let mut elsewhere = att("p9", [10, 0, 9, 9]);
        elsewhere.netns = "/proc/4242/ns/net".into();
        let m2 = merge(&c, "n1", &[elsewhere]).unwrap();
        assert_eq!(
            m2.endpoint("p9").unwrap().netns,
            None,
            "no name: not watched"
        );
        let web = m.services.iter().find(|s| s.name == "web").unwrap();
        assert!(web.backends.contains(&("p1".to_string(), 1)));
        // The merged cluster plans.
        crate::node::Plan::of(&m, "n1").unwrap();
        for (bad, why) in [
            (att("c11", [10, 0, 9, 2]), "already an endpoint"),
            (att("p2", [10, 0, 9, 11]), "already endpoint \"c11\""),
            (att("p3", [10, 0, 9, 1]), "resolver"),
            (att("web", [10, 0, 9, 3]), "service \"web\""),
        ] {
            let e = merge(&c, "n1", &[bad]).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let e = merge(
            &c,
            "n1",
            &[att("p1", [10, 0, 9, 2]), att("p1", [10, 0, 9, 3])],
        )
        .unwrap_err();
        assert!(e.contains("already an endpoint"), "{e}");
    }
}
