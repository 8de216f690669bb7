//! The plan of a node: what its dataplane holds, computed from the checked cluster without
//! touching the system. [`Plan::of`] (or [`Plan::next`] against the plan in force, ids kept)
//! gives the networks the node serves with their ARP tables, peer VTEPs and resolver names
//! ([`DnsPlan`]), the static FDB entries, the load-balancer services (VIP ports and the routing
//! mesh's published ports) and the ports to open ([`PortPlan`]). Control plane, off the packet
//! path: a change (`node/change.rs`) turns the difference of two plans into table edits that the
//! poll thread commits between batches (`node/apply.rs`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::Context;
use lb::{BackendConfig, ServiceConfig, ServiceKey, Snat};
use vswitch::{Mac, NetId};

use crate::config::{Attach, Cluster};

/// VNI given to routing-mesh ingress networks: outside the 24-bit VXLAN range, so no VXLAN
/// packet can ever be decapsulated into one.
pub const INGRESS_VNI: u32 = u32::MAX;
/// The MTU of an ingress interface.
pub const INGRESS_MTU: u16 = 1500;

/// A network the node serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetPlan {
    /// Network name (`ingress:IFNAME` for an ingress network).
    pub name: String,
    /// VNI ([`INGRESS_VNI`] for an ingress network).
    pub vni: u32,
    /// IP MTU.
    pub mtu: u16,
    /// Addresses the switch answers ARP for, with their MACs.
    pub arp: BTreeMap<Ipv4Addr, Mac>,
    /// Peer VTEPs (indexes into [`Plan::vteps`]).
    pub peers: Vec<usize>,
    /// Whether this is a routing-mesh ingress network.
    pub ingress: bool,
    /// What its resolver answers (`None`: no resolver, as on an ingress network).
    pub dns: Option<DnsPlan>,
    /// Its traffic between nodes goes inside ESP only.
    pub encrypted: bool,
}

/// What a network's resolver answers (SPEC.md, "Service discovery (DNS)"); names in lower
/// case, as they are compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPlan {
    /// The resolver's address.
    pub resolver: Ipv4Addr,
    /// Name -> A records: endpoints and their aliases, services (their VIP) and
    /// `tasks.SERVICE` (backends with weight > 0; none: the name is known, with no address).
    pub names: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Address -> name for PTR: endpoints and VIPs.
    pub ptr: BTreeMap<Ipv4Addr, String>,
}

impl DnsPlan {
    /// The `dns` stage's table for it (off the poll thread: it allocates). Names that are no
    /// DNS name (an endpoint called with a label over 63 bytes, say) are left out.
    pub fn table(&self) -> vswitch::dns::DnsTable {
        let mut t = vswitch::dns::DnsTable::new(self.resolver, Mac::docker_default(self.resolver));
        for (name, addrs) in &self.names {
            let _ = t.insert_name(name, addrs);
        }
        for (addr, name) in &self.ptr {
            let _ = t.insert_ptr(*addr, name);
        }
        t
    }
}

/// What a port attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A container endpoint.
    Endpoint {
        /// Its MAC.
        mac: Mac,
        /// Its address and prefix length.
        addr: (Ipv4Addr, u8),
        /// Its named namespace.
        netns: Option<String>,
    },
    /// A routing-mesh ingress interface.
    Ingress,
}

/// A port to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPlan {
    /// Port name in the switch (the endpoint's name, or the ingress interface's).
    pub name: String,
    /// How it attaches.
    pub attach: Attach,
    /// Its network (index into [`Plan::nets`]).
    pub net: usize,
    /// The network's IP MTU.
    pub mtu: u16,
    /// Endpoint or ingress.
    pub kind: PortKind,
}

/// Where a static FDB entry points.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DestPlan {
    /// A port of this node, by name.
    Port(String),
    /// A remote VTEP (index into [`Plan::vteps`]).
    Vtep(usize),
}

/// One backend of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendPlan {
    /// Endpoint name (for messages).
    pub name: String,
    /// The backend as the load balancer takes it.
    pub config: BackendConfig,
}

/// One load-balanced service port (a VIP port, or a published port on an ingress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    /// Service name (for messages).
    pub service: String,
    /// The service as the load balancer takes it; its networks are indexes into [`Plan::nets`]
    /// (the clients' in `key.net`, the backends' in `backend_net`), and `snat` is the routing
    /// mesh's source NAT to this node's load-balancer address.
    pub config: ServiceConfig,
    /// Backends.
    pub backends: Vec<BackendPlan>,
}

impl ServicePlan {
    /// What selects the service.
    pub fn key(&self) -> ServiceKey {
        self.config.key
    }
}

/// Everything this node's dataplane holds, computed from the cluster file.
///
/// Networks and VTEPs are indexed by the ids the switch knows them by ([`NetId`],
/// [`vswitch::VtepId`]). Those ids are stable across changes: a network or node that stays
/// keeps its id, one that leaves frees it (`None`), and one that arrives takes an id that was
/// free before the change ([`Plan::next`]), so a change never renumbers what it does not touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// This node's name.
    pub node: String,
    /// This node's VTEP address.
    pub vtep: Ipv4Addr,
    /// Every other node by VTEP id: (name, VTEP address); `None` for a free id.
    pub vteps: Vec<Option<(String, Ipv4Addr)>>,
    /// Networks served (the overlay networks, then the ingress networks) by network id; `None`
    /// for a free id.
    pub nets: Vec<Option<NetPlan>>,
    /// Ports to open.
    pub ports: Vec<PortPlan>,
    /// Static FDB entries: (network, MAC) -> destination.
    pub fdb: BTreeMap<(usize, Mac), DestPlan>,
    /// Load-balanced service ports.
    pub services: Vec<ServicePlan>,
    /// MACs the switch owns, per network (VIPs, the node's LB address, ingress addresses).
    pub own_macs: Vec<(usize, Mac)>,
    /// The encryption keys (the first sends), for the encrypted networks' security
    /// associations with [`Plan::esp_peers`].
    pub keys: Vec<esp::Key>,
    /// How ESP travels to the peers.
    pub esp_transport: crate::config::EspTransport,
}

/// Ids for the items of a new plan, keyed by name: an item of the previous plan keeps its id;
/// a new one takes the lowest id that was free in the previous plan and is not yet taken, else
/// one past the end. Never an id a departing item held, so an id means one thing per change.
fn assign_ids<'a>(prev: impl Iterator<Item = Option<&'a str>>, keys: &[String]) -> Vec<usize> {
    let prev: Vec<Option<&str>> = prev.collect();
    let by_name: std::collections::HashMap<&str, usize> = prev
        .iter()
        .enumerate()
        .filter_map(|(i, k)| k.map(|k| (k, i)))
        .collect();
    let mut taken = vec![false; prev.len()];
    for k in keys {
        if let Some(&i) = by_name.get(k.as_str()) {
            taken[i] = true;
        }
    }
    let mut free = (0..prev.len()).filter(|&i| prev[i].is_none());
    let mut next = prev.len();
    keys.iter()
        .map(|k| match by_name.get(k.as_str()) {
            Some(&i) => i,
            None => free.find(|&i| !taken[i]).unwrap_or_else(|| {
                next += 1;
                next - 1
            }),
        })
        .collect()
}

impl Plan {
    /// A node with nothing yet: the plan a node starts from before its first change.
    pub fn empty(node: &str, vtep: Ipv4Addr) -> Plan {
        Plan {
            node: node.into(),
            vtep,
            vteps: Vec::new(),
            nets: Vec::new(),
            ports: Vec::new(),
            fdb: BTreeMap::new(),
            services: Vec::new(),
            own_macs: Vec::new(),
            keys: Vec::new(),
            esp_transport: crate::config::EspTransport::Esp,
        }
    }

    /// Whether a network the node serves is encrypted.
    pub fn has_encrypted(&self) -> bool {
        self.live_nets().any(|(_, n)| n.encrypted)
    }

    /// The VTEP addresses this node exchanges ESP with: the peers of its encrypted networks,
    /// in address order, each once.
    pub fn esp_peers(&self) -> Vec<Ipv4Addr> {
        let mut peers: Vec<Ipv4Addr> = self
            .live_nets()
            .filter(|(_, n)| n.encrypted)
            .flat_map(|(_, n)| n.peers.iter())
            .filter_map(|&v| self.vteps.get(v).and_then(|v| v.as_ref()).map(|v| v.1))
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// This node's plan, its ids given from scratch.
    pub fn of(cluster: &Cluster, node: &str) -> anyhow::Result<Plan> {
        Plan::next(cluster, node, None)
    }

    /// This node's plan after `prev` (the plan in force): networks and nodes that stay keep
    /// their ids; new ones take ids free before the change.
    pub fn next(cluster: &Cluster, node: &str, prev: Option<&Plan>) -> anyhow::Result<Plan> {
        // A configuration error (exit 2, and a refused reload), as every other problem with
        // the file is.
        let me = cluster.node(node).ok_or_else(|| {
            let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            crate::config::ConfigError {
                file: cluster.path.display().to_string(),
                item: format!("node {node:?}"),
                problem: format!("not in the cluster file (nodes: {})", names.join(", ")),
            }
        })?;
        let others: Vec<(String, Ipv4Addr)> = cluster
            .nodes
            .iter()
            .filter(|n| n.name != node)
            .map(|n| (n.name.clone(), n.vtep))
            .collect();
        let names: Vec<String> = others.iter().map(|o| o.0.clone()).collect();
        let vtep_ids = assign_ids(
            prev.into_iter()
                .flat_map(|p| &p.vteps)
                .map(|v| v.as_ref().map(|v| v.0.as_str())),
            &names,
        );
        let mut vteps = vec![None; vtep_ids.iter().map(|&i| i + 1).max().unwrap_or(0)];
        vteps.resize(vteps.len().max(prev.map_or(0, |p| p.vteps.len())), None);
        for (o, &i) in others.iter().zip(&vtep_ids) {
            vteps[i] = Some(o.clone());
        }
        let vtep_by_name: std::collections::HashMap<&str, usize> = names
            .iter()
            .zip(&vtep_ids)
            .map(|(n, &i)| (n.as_str(), i))
            .collect();
        let vtep_of = |name: &str| vtep_by_name.get(name).copied();
        // The networks this node serves, then its ingress networks, by name.
        let served: Vec<&crate::config::NetworkCfg> = cluster
            .networks
            .iter()
            .filter(|net| cluster.peers(&net.name).iter().any(|p| p.name == node))
            .collect();
        let ingresses: Vec<&crate::config::Ingress> = cluster
            .ingresses
            .iter()
            .filter(|i| i.node == node)
            .collect();
        let net_names: Vec<String> = served
            .iter()
            .map(|n| n.name.clone())
            .chain(
                ingresses
                    .iter()
                    .map(|i| ingress_net_name(i.attach.ifname())),
            )
            .collect();
        let net_ids = assign_ids(
            prev.into_iter()
                .flat_map(|p| &p.nets)
                .map(|n| n.as_ref().map(|n| n.name.as_str())),
            &net_names,
        );
        let mut nets = vec![None; net_ids.iter().map(|&i| i + 1).max().unwrap_or(0)];
        nets.resize(nets.len().max(prev.map_or(0, |p| p.nets.len())), None);
        let mut plan = Plan {
            vteps,
            nets,
            keys: cluster.keys.clone(),
            esp_transport: cluster.esp_transport,
            ..Plan::empty(node, me.vtep)
        };
        for (net, &id) in served.iter().zip(&net_ids) {
            let peers = cluster.peers(&net.name);
            let mut arp = BTreeMap::new();
            for e in cluster.endpoints.iter().filter(|e| e.network == net.name) {
                arp.insert(e.ip, e.mac);
                let dest = if e.node == node {
                    DestPlan::Port(e.name.clone())
                } else {
                    DestPlan::Vtep(vtep_of(&e.node).expect("endpoint nodes are checked"))
                };
                plan.fdb.insert((id, e.mac), dest);
            }
            for s in cluster.services.iter().filter(|s| s.network == net.name) {
                let mac = Mac::docker_default(s.vip);
                arp.insert(s.vip, mac);
                plan.own_macs.push((id, mac));
            }
            let resolver_mac = Mac::docker_default(net.dns);
            arp.insert(net.dns, resolver_mac);
            plan.own_macs.push((id, resolver_mac));
            for p in &peers {
                let Some(&lb) = p.lb.get(&net.name) else {
                    continue;
                };
                let mac = Mac::docker_default(lb);
                arp.insert(lb, mac);
                if p.name == node {
                    plan.own_macs.push((id, mac));
                } else {
                    let v = vtep_of(&p.name).expect("peers are nodes");
                    plan.fdb.insert((id, mac), DestPlan::Vtep(v));
                }
            }
            let mut peer_ids: Vec<usize> = peers.iter().filter_map(|p| vtep_of(&p.name)).collect();
            peer_ids.sort_unstable();
            plan.nets[id] = Some(NetPlan {
                name: net.name.clone(),
                vni: net.vni,
                mtu: net.mtu,
                arp,
                peers: peer_ids,
                ingress: false,
                dns: Some(dns_plan(cluster, net)),
                encrypted: net.encrypted,
            });
            for e in cluster
                .endpoints
                .iter()
                .filter(|e| e.network == net.name && e.node == node)
            {
                let attach = e.attach.clone().with_context(|| {
                    format!(
                        "{}: endpoint {:?}: runs on this node ({node}) but has no `attach`",
                        cluster.path.display(),
                        e.name
                    )
                })?;
                plan.ports.push(PortPlan {
                    name: e.name.clone(),
                    attach,
                    net: id,
                    mtu: net.mtu,
                    kind: PortKind::Endpoint {
                        mac: e.mac,
                        addr: (e.ip, net.subnet.prefix),
                        netns: e.netns.clone(),
                    },
                });
            }
        }
        let net_of = |name: &str| {
            served
                .iter()
                .position(|n| n.name == name)
                .map(|k| net_ids[k])
        };
        for s in &cluster.services {
            let Some(net) = net_of(&s.network) else {
                continue;
            };
            let net = NetId(net as u16);
            for p in &s.ports {
                let backends = s
                    .backends
                    .iter()
                    .map(|(name, weight)| {
                        let e = cluster.endpoint(name).expect("backends are checked");
                        BackendPlan {
                            name: name.clone(),
                            config: BackendConfig {
                                addr: e.ip,
                                port: p.target,
                                weight: *weight,
                                mac: e.mac,
                            },
                        }
                    })
                    .collect();
                plan.services.push(ServicePlan {
                    service: s.name.clone(),
                    config: ServiceConfig {
                        key: ServiceKey {
                            net,
                            proto: p.protocol,
                            addr: s.vip,
                            port: p.port,
                        },
                        scheduler: s.scheduler,
                        backend_net: net,
                        snat: None,
                    },
                    backends,
                });
            }
        }
        let vip_services = plan.services.len();
        for (ing, &id) in ingresses.iter().zip(&net_ids[served.len()..]) {
            let mac = Mac::docker_default(ing.ip);
            plan.nets[id] = Some(NetPlan {
                name: ingress_net_name(ing.attach.ifname()),
                vni: INGRESS_VNI,
                mtu: INGRESS_MTU,
                arp: BTreeMap::from([(ing.ip, mac)]),
                peers: Vec::new(),
                ingress: true,
                dns: None,
                encrypted: false,
            });
            plan.own_macs.push((id, mac));
            plan.ports.push(PortPlan {
                name: ing.attach.ifname().into(),
                attach: ing.attach.clone(),
                net: id,
                mtu: INGRESS_MTU,
                kind: PortKind::Ingress,
            });
            let published: Vec<ServicePlan> = plan.services[..vip_services]
                .iter()
                .filter_map(|s| {
                    let key = s.key();
                    let svc = cluster.services.iter().find(|c| c.name == s.service)?;
                    let sp = svc
                        .ports
                        .iter()
                        .find(|p| p.protocol == key.proto && p.port == key.port && p.target > 0)?;
                    let lb = *me.lb.get(&svc.network)?;
                    Some(ServicePlan {
                        config: ServiceConfig {
                            key: ServiceKey {
                                net: NetId(id as u16),
                                addr: ing.ip,
                                port: sp.published?,
                                ..key
                            },
                            backend_net: key.net,
                            snat: Some(Snat {
                                addr: lb,
                                mac: Mac::docker_default(lb),
                                port_min: lb::types::SNAT_PORT_MIN,
                            }),
                            ..s.config.clone()
                        },
                        ..s.clone()
                    })
                })
                .collect();
            plan.services.extend(published);
        }
        Ok(plan)
    }

    /// The networks in force, with their ids.
    pub fn live_nets(&self) -> impl Iterator<Item = (usize, &NetPlan)> {
        self.nets
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// The network of id `i`'s name (`?` for a free id: never in a valid plan's references).
    pub fn net_name(&self, i: usize) -> &str {
        self.nets
            .get(i)
            .and_then(|n| n.as_ref())
            .map_or("?", |n| n.name.as_str())
    }

    /// Whether any port hands over 64 KB super-frames: a TAP endpoint, or (`afxdp_offloads`,
    /// `vxmesh run --afxdp-offloads`) an AF_XDP endpoint in a named namespace, whose container
    /// the node lets keep its TCP offloads.
    pub fn has_super_frame_endpoints(&self, afxdp_offloads: bool) -> bool {
        self.ports.iter().any(|p| match (&p.attach, &p.kind) {
            (Attach::Tap(_), PortKind::Endpoint { .. }) => true,
            (Attach::Afxdp(_), PortKind::Endpoint { netns: Some(_), .. }) => afxdp_offloads,
            _ => false,
        })
    }
}

/// What `net`'s resolver answers: endpoints and aliases, then services and their tasks (a
/// service's name wins over an endpoint called the same; aliases cannot collide, the file is
/// checked), and PTR for endpoints and VIPs. Every node computes the same for a network.
fn dns_plan(cluster: &Cluster, net: &crate::config::NetworkCfg) -> DnsPlan {
    let mut names = BTreeMap::new();
    let mut ptr = BTreeMap::new();
    for e in cluster.endpoints.iter().filter(|e| e.network == net.name) {
        for n in std::iter::once(&e.name).chain(&e.aliases) {
            names.insert(n.to_ascii_lowercase(), vec![e.ip]);
        }
        ptr.insert(e.ip, e.name.clone());
    }
    for s in cluster.services.iter().filter(|s| s.network == net.name) {
        names.insert(s.name.to_ascii_lowercase(), vec![s.vip]);
        let tasks = s
            .backends
            .iter()
            .filter(|(_, w)| *w > 0)
            .filter_map(|(b, _)| cluster.endpoint(b).map(|e| e.ip))
            .collect();
        names.insert(format!("tasks.{}", s.name.to_ascii_lowercase()), tasks);
        ptr.insert(s.vip, s.name.clone());
    }
    DnsPlan {
        resolver: net.dns,
        names,
        ptr,
    }
}

/// The name of the routing-mesh network of an ingress interface.
fn ingress_net_name(ifname: &str) -> String {
    format!("ingress:{ifname}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::tests::{cluster, file};

    #[test]
    fn plan_of_a_node_with_an_ingress() {
        let p = Plan::of(&cluster(&file()), "n1").unwrap();
        assert_eq!(
            p.vteps,
            vec![Some(("n2".into(), Ipv4Addr::new(198, 18, 0, 2)))]
        );
        assert_eq!(p.nets.len(), 2);
        assert_eq!(p.nets[0].as_ref().unwrap().peers, vec![0]);
        assert!(p.nets[1].as_ref().unwrap().ingress);
        let names: Vec<&str> = p.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["c11", "c12", "ext0"]);
        let c21 = Mac::docker_default(Ipv4Addr::new(10, 0, 9, 21));
        assert_eq!(p.fdb[&(0, c21)], DestPlan::Vtep(0));
        // n2's LB address (second node: .253) points at n2; ours is owned by the switch.
        let lb2 = Mac::docker_default(Ipv4Addr::new(10, 0, 9, 253));
        assert_eq!(p.fdb[&(0, lb2)], DestPlan::Vtep(0));
        let lb1 = Mac::docker_default(Ipv4Addr::new(10, 0, 9, 254));
        assert!(p.own_macs.contains(&(0, lb1)));
        assert_eq!(p.services.len(), 2);
        let publ = &p.services[1].config;
        assert_eq!(
            (publ.key.net, publ.key.port, publ.backend_net),
            (NetId(1), 8080, NetId(0))
        );
        assert_eq!(publ.snat.unwrap().addr, Ipv4Addr::new(10, 0, 9, 254));
        let e = Plan::of(&cluster(&file()), "n9").unwrap_err();
        // A configuration error: `vxmesh run` exits 2 for it, and a reload is refused.
        let ce = e.downcast_ref::<crate::config::ConfigError>().unwrap();
        assert_eq!(ce.item, "node \"n9\"");
        assert!(ce.problem.contains("nodes: n1, n2"), "{ce}");
    }
}
