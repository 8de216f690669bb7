//! Address allocation for CNI attachments: a free address in the node's own block of the
//! network's subnet (the host addresses split evenly in the cluster's node order), never one the
//! cluster uses (endpoints, VIPs, load-balancer addresses, resolvers) nor another attachment's,
//! so two nodes never hand out the same address without talking to each other. Control plane,
//! off the packet path.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use super::Attachment;
use crate::config::{Cluster, NetworkCfg};

/// Every address of the cluster (endpoints, VIPs, load-balancer addresses, resolvers), with
/// what it is.
pub(super) fn used_addresses(c: &Cluster) -> HashMap<Ipv4Addr, String> {
    let mut used = HashMap::new();
    for e in &c.endpoints {
        used.insert(e.ip, format!("endpoint {:?}", e.name));
    }
    for s in &c.services {
        used.insert(s.vip, format!("service {:?}", s.name));
    }
    for n in &c.nodes {
        for (net, ip) in &n.lb {
            used.insert(
                *ip,
                format!("node {:?}'s load-balancer address in {net:?}", n.name),
            );
        }
    }
    for n in &c.networks {
        used.insert(n.dns, format!("network {:?}'s resolver", n.name));
    }
    used
}

/// A free address for node `node` in `net`: in the node's block of the subnet's host
/// addresses (split evenly in the cluster's node order), not used by `c` nor by `atts`.
pub fn allocate(
    c: &Cluster,
    node: &str,
    atts: &[Attachment],
    net: &NetworkCfg,
) -> Option<Ipv4Addr> {
    let used = used_addresses(c);
    let taken: HashSet<Ipv4Addr> = atts.iter().map(|a| a.ip).collect();
    let base = u32::from(net.subnet.addr);
    // In u64: a /0 subnet has 2^32 addresses.
    let hosts = u32::try_from((1u64 << (32 - u32::from(net.subnet.prefix))).saturating_sub(2))
        .unwrap_or(u32::MAX);
    let n = c.nodes.len().max(1) as u32;
    let i = c.nodes.iter().position(|x| x.name == node).unwrap_or(0) as u32;
    let size = hosts / n;
    let lo = 1 + i * size;
    let hi = if i + 1 == n { hosts } else { lo + size - 1 };
    (lo..=hi)
        .map(|k| Ipv4Addr::from(base + k))
        .find(|ip| !used.contains_key(ip) && !taken.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::testing::{att, cluster};

    #[test]
    fn addresses_come_from_the_nodes_block_and_skip_everything_in_use() {
        let c = cluster();
        let net = c.network("appnet").unwrap().clone();
        // n1 of two: .1-.127; .1 is the resolver.
        assert_eq!(
            allocate(&c, "n1", &[], &net),
            Some(Ipv4Addr::new(10, 0, 9, 2))
        );
        let a = att("x", [10, 0, 9, 2]);
        assert_eq!(
            allocate(&c, "n1", &[a], &net),
            Some(Ipv4Addr::new(10, 0, 9, 3))
        );
        // n2: .128-.254, the top two are the load-balancer addresses.
        assert_eq!(
            allocate(&c, "n2", &[], &net),
            Some(Ipv4Addr::new(10, 0, 9, 128))
        );
        let mut full = Vec::new();
        for k in 2..=127u8 {
            if ![11, 12, 21, 22, 100].contains(&k) {
                full.push(att(&format!("a{k}"), [10, 0, 9, k]));
            }
        }
        assert_eq!(allocate(&c, "n1", &full, &net), None);
    }
}
