//! The node: turns this node's part of the cluster file into a running switch.
//!
//! Two steps. [`Plan::of`] reads the checked [`Cluster`] and computes, without touching the
//! system, everything the node's dataplane holds: the networks it serves (with their ARP tables
//! and peer VTEPs), the static FDB entries (every other node's endpoints and load-balancer MACs
//! point at that node's VTEP, this node's endpoints at their ports), the load-balancer services
//! (each VIP port, and on a node with an ingress each published port, source-NATed to the node's
//! load-balancer address), and the ports to open. [`Node::build`] then opens the ports (AF_XDP,
//! TAP, the UDP underlay) and assembles the pipeline:
//!
//! ```text
//! container port: l2-parse ─► l2-learn ─► arp-proxy ─► lb-nat ─► own-addr ─► l2-fwd
//! underlay:       vxlan-decap ─► l2-parse ─► l2-learn ─► lb-nat ─► own-addr ─► l2-fwd
//! ingress:        l2-parse ─► l2-learn ─► arp-proxy ─► lb-nat ─► own-addr ─► l2-fwd
//! ```
//!
//! A reload computes the new plan and applies the difference between batches ([`Node::reload`]):
//! services, backends and weights, remote endpoints, peers. Changes that need ports opened or
//! closed, or the VTEP set renumbered, are refused with a message saying so, and the running
//! configuration stays as it was.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context, bail};
use lb::{BackendConfig, Balancer, BalancerConfig, LbStage, ServiceConfig, ServiceKey, Snat};
use vswitch::{Env, FdbConfig, Mac, NetId, Network, OwnAddr, Port, PortRole, StageHandle, Switch};

use crate::config::{Attach, Cluster};

mod apply;

/// VNI given to routing-mesh ingress networks: outside the 24-bit VXLAN range, so no VXLAN
/// packet can ever be decapsulated into one.
pub const INGRESS_VNI: u32 = u32::MAX;
/// The MTU of an ingress interface.
pub const INGRESS_MTU: u16 = 1500;
/// Name of the underlay port.
pub const UNDERLAY_PORT: &str = "underlay";

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// This node's name.
    pub node: String,
    /// This node's VTEP address.
    pub vtep: Ipv4Addr,
    /// Every other node: (name, VTEP address), in file order.
    pub vteps: Vec<(String, Ipv4Addr)>,
    /// Networks served, then ingress networks.
    pub nets: Vec<NetPlan>,
    /// Ports to open.
    pub ports: Vec<PortPlan>,
    /// Static FDB entries: (network, MAC) -> destination.
    pub fdb: BTreeMap<(usize, Mac), DestPlan>,
    /// Load-balanced service ports.
    pub services: Vec<ServicePlan>,
    /// MACs the switch owns, per network (VIPs, the node's LB address, ingress addresses).
    pub own_macs: Vec<(usize, Mac)>,
}

impl Plan {
    /// This node's plan.
    pub fn of(cluster: &Cluster, node: &str) -> anyhow::Result<Plan> {
        let me = cluster.node(node).with_context(|| {
            let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "{}: node {node:?} is not in the cluster file (nodes: {})",
                cluster.path.display(),
                names.join(", ")
            )
        })?;
        let vteps: Vec<(String, Ipv4Addr)> = cluster
            .nodes
            .iter()
            .filter(|n| n.name != node)
            .map(|n| (n.name.clone(), n.vtep))
            .collect();
        let vtep_of = |name: &str| vteps.iter().position(|v| v.0 == name);
        let mut plan = Plan {
            node: node.into(),
            vtep: me.vtep,
            vteps: vteps.clone(),
            nets: Vec::new(),
            ports: Vec::new(),
            fdb: BTreeMap::new(),
            services: Vec::new(),
            own_macs: Vec::new(),
        };
        for net in &cluster.networks {
            let peers = cluster.peers(&net.name);
            if !peers.iter().any(|p| p.name == node) {
                continue;
            }
            let id = plan.nets.len();
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
            plan.nets.push(NetPlan {
                name: net.name.clone(),
                vni: net.vni,
                mtu: net.mtu,
                arp,
                peers: peers.iter().filter_map(|p| vtep_of(&p.name)).collect(),
                ingress: false,
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
        for s in &cluster.services {
            let Some(net) = plan.nets.iter().position(|n| n.name == s.network) else {
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
        for ing in cluster.ingresses.iter().filter(|i| i.node == node) {
            let id = plan.nets.len();
            let mac = Mac::docker_default(ing.ip);
            plan.nets.push(NetPlan {
                name: format!("ingress:{}", ing.attach.ifname()),
                vni: INGRESS_VNI,
                mtu: INGRESS_MTU,
                arp: BTreeMap::from([(ing.ip, mac)]),
                peers: Vec::new(),
                ingress: true,
            });
            plan.own_macs.push((id, mac));
            plan.ports.push(PortPlan {
                name: ing.attach.ifname().into(),
                attach: ing.attach.clone(),
                net: id,
                mtu: INGRESS_MTU,
                kind: PortKind::Ingress,
            });
            let published: Vec<ServicePlan> =
                plan.services
                    .iter()
                    .filter(|s| !plan.nets[usize::from(s.key().net.0)].ingress)
                    .filter_map(|s| {
                        let key = s.key();
                        let svc = cluster.services.iter().find(|c| c.name == s.service)?;
                        let sp = svc.ports.iter().find(|p| {
                            p.protocol == key.proto && p.port == key.port && p.target > 0
                        })?;
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

    /// The switch's networks, ARP tables and VTEPs for this plan.
    fn env(&self, fdb: FdbConfig) -> Env {
        let mut env = Env::new(fdb);
        for (name, addr) in &self.vteps {
            env.add_vtep(*addr, name.clone());
        }
        env.local_vtep = Some(self.vtep);
        for n in &self.nets {
            let mut net = Network::new(n.name.clone(), n.vni, n.mtu);
            net.arp = n.arp.iter().map(|(ip, mac)| (*ip, *mac)).collect();
            net.peers = n.peers.iter().map(|&v| vswitch::VtepId(v as u16)).collect();
            env.add_network(net);
        }
        env
    }

    /// Whether this plan differs from `old` in ways a reload cannot apply (ports to open or
    /// close, VTEPs renumbered, networks added or changed): the reason, if so.
    pub fn restart_needed(&self, old: &Plan) -> Option<String> {
        if self.vtep != old.vtep || self.vteps != old.vteps {
            return Some("the nodes or their VTEP addresses changed".into());
        }
        if self.nets.len() != old.nets.len()
            || self
                .nets
                .iter()
                .zip(&old.nets)
                .any(|(a, b)| (&a.name, a.vni, a.mtu) != (&b.name, b.vni, b.mtu))
        {
            return Some("the networks this node serves (name, VNI or MTU) changed".into());
        }
        if self.ports != old.ports {
            return Some("this node's own endpoints or ingress interfaces changed".into());
        }
        None
    }
}

/// Opens the kernel-backed ports; tests substitute in-memory ones.
pub trait PortOpener {
    /// Open the port of `plan`.
    fn open(&mut self, plan: &PortPlan) -> anyhow::Result<Box<dyn Port>>;
    /// Open the UDP underlay at `vtep`.
    fn underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>>;
}

/// In-memory ports for every port of a plan, their other ends dropped: a node that needs no
/// root and touches no interface (tests and benches of the node's tables and control paths).
pub struct MemPorts;

impl PortOpener for MemPorts {
    fn open(&mut self, _: &PortPlan) -> anyhow::Result<Box<dyn Port>> {
        Ok(Box::new(vswitch::MemPort::new().0))
    }
    fn underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        Ok(Box::new(vswitch::MemPort::new().0))
    }
}

/// The real ports: AF_XDP on veths, TAPs in the containers' namespaces, a UDP socket on 4789.
pub struct SystemPorts;

impl PortOpener for SystemPorts {
    fn open(&mut self, p: &PortPlan) -> anyhow::Result<Box<dyn Port>> {
        match (&p.attach, &p.kind) {
            (Attach::Tap(ifname), PortKind::Endpoint { mac, addr, netns }) => {
                let tap = vswitch::port::tap::TapPort::create(&vswitch::port::tap::TapConfig {
                    name: ifname.clone(),
                    netns: netns.clone(),
                    mac: *mac,
                    mtu: p.mtu,
                    addr: Some(*addr),
                    offloads: true,
                })
                .with_context(|| format!("endpoint {}: tap {ifname}", p.name))?;
                Ok(Box::new(tap))
            }
            (Attach::Tap(ifname), PortKind::Ingress) => {
                let tap = vswitch::port::tap::TapPort::create(&vswitch::port::tap::TapConfig {
                    name: ifname.clone(),
                    netns: None,
                    mac: Mac::docker_default(Ipv4Addr::UNSPECIFIED),
                    mtu: p.mtu,
                    addr: None,
                    offloads: false,
                })
                .with_context(|| format!("ingress: tap {ifname}"))?;
                Ok(Box::new(tap))
            }
            (Attach::Afxdp(ifname), kind) => {
                if let PortKind::Endpoint {
                    netns: Some(ns), ..
                } = kind
                {
                    crate::sys::disable_peer_offloads(ifname, ns).with_context(|| {
                        format!("endpoint {}: turning offloads off in netns {ns}", p.name)
                    })?;
                }
                let port =
                    vswitch::port::afxdp::AfxdpPort::open(&vswitch::port::afxdp::AfxdpConfig {
                        ifname: ifname.clone(),
                        ..Default::default()
                    })
                    .with_context(|| format!("port {}", p.name))?;
                Ok(Box::new(port))
            }
        }
    }

    fn underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        let port = vswitch::port::udp::UdpPort::bind(SocketAddrV4::new(vtep, vxlan::VXLAN_PORT))
            .with_context(|| format!("underlay: binding UDP {vtep}:{}", vxlan::VXLAN_PORT))?;
        Ok(Box::new(port))
    }
}

/// A node's running dataplane: the switch and the plan it was built from.
pub struct Node {
    /// The switch.
    pub sw: Switch,
    /// The plan in force.
    pub plan: Plan,
    /// The cluster file in force.
    pub cluster: Cluster,
    /// The `lb-nat` stage, for the control plane.
    lb: StageHandle<LbStage>,
    /// The `own-addr` stage: its MACs follow the plan.
    own: StageHandle<OwnAddr>,
}

/// Default connection-table size of a node (`vxmesh run --max-conns`): about 30 MB. IPVS keeps
/// TIME_WAIT entries 120 s, so this holds about 2,200 new connections per second sustained.
pub const MAX_CONNS: usize = 1 << 18;

impl Node {
    /// Build this node's switch: plan, open every port, assemble the pipeline.
    pub fn build(cluster: Cluster, node: &str, ports: &mut dyn PortOpener) -> anyhow::Result<Node> {
        Node::build_with(cluster, node, ports, MAX_CONNS)
    }

    /// [`Node::build`] with a connection table of `max_conns` entries.
    pub fn build_with(
        cluster: Cluster,
        node: &str,
        ports: &mut dyn PortOpener,
        max_conns: usize,
    ) -> anyhow::Result<Node> {
        Node::build_sized(cluster, node, ports, max_conns, FdbConfig::default())
    }

    /// [`Node::build_with`] with an FDB of the given sizes (tests fill a small one).
    pub fn build_sized(
        cluster: Cluster,
        node: &str,
        ports: &mut dyn PortOpener,
        max_conns: usize,
        fdb: FdbConfig,
    ) -> anyhow::Result<Node> {
        let plan = Plan::of(&cluster, node)?;
        let env = plan.env(fdb);
        // TAPs with offloads hand over 64 KB TCP super-frames: every buffer must hold one
        // (buffers move between batches). Nodes without TAP endpoints keep 2 KB buffers.
        let buf_size = if plan.ports.iter().any(|p| {
            matches!(
                (&p.attach, &p.kind),
                (Attach::Tap(_), PortKind::Endpoint { .. })
            )
        }) {
            vswitch::offload::GSO_BUF_SIZE
        } else {
            vswitch::packet::DEFAULT_BUF_SIZE
        };
        let mut sw = Switch::with_batch(env, vswitch::BATCH_SIZE, buf_size);
        let l2 = sw.add_l2_stages();
        let decap = sw.add_stage(vxlan::VxlanDecap::new());
        let encap = sw.add_stage(vxlan::VxlanEncap::new());
        let lb_stage = sw.add_stage(LbStage::new(Balancer::new(BalancerConfig {
            max_conns,
            seed: seed(),
            ..BalancerConfig::default()
        })));
        // Its MACs come with the first apply, as on every reload.
        let own = sw.add_stage(OwnAddr {
            macs: Vec::new(),
            ingress: Vec::new(),
        });
        let path = l2.local_path(&[lb_stage.idx(), own.idx()]);
        let mut ingress = Vec::new();
        for p in &plan.ports {
            let port = ports.open(p)?;
            let net = NetId(p.net as u16);
            let id = sw.add_port(p.name.clone(), port, PortRole::Local(net), path.clone());
            if p.kind == PortKind::Ingress {
                ingress.push((id, net));
            }
        }
        sw.stage_mut(own).ingress = ingress;
        let ul = ports.underlay(plan.vtep)?;
        let ul = sw.add_port(
            UNDERLAY_PORT,
            ul,
            PortRole::Underlay,
            vec![
                decap.idx(),
                l2.parse.idx(),
                l2.learn.idx(),
                lb_stage.idx(),
                own.idx(),
                l2.fwd.idx(),
            ],
        );
        sw.set_tx_path(ul, vec![encap.idx()]);
        let mut node = Node {
            sw,
            lb: lb_stage,
            own,
            plan: Plan {
                fdb: BTreeMap::new(),
                services: Vec::new(),
                ..plan.clone()
            },
            cluster,
        };
        node.apply(plan)?;
        Ok(node)
    }

    /// The load balancer of the `lb-nat` stage.
    pub fn lb(&mut self) -> &mut Balancer {
        &mut self.sw.stage_mut(self.lb).lb
    }

    /// Apply a new cluster file: refused (running configuration untouched) if it is not for
    /// this node or needs a restart; otherwise the difference is applied. Returns what changed.
    pub fn reload(&mut self, cluster: Cluster) -> anyhow::Result<String> {
        let new = Plan::of(&cluster, &self.plan.node)?;
        self.reload_planned(cluster, new)
    }

    /// [`Node::reload`] with the plan already computed (the daemon reads the file and plans
    /// off the poll thread; only this part runs between batches).
    pub fn reload_planned(&mut self, cluster: Cluster, new: Plan) -> anyhow::Result<String> {
        if let Some(why) = new.restart_needed(&self.plan) {
            bail!(
                "{}: refused: {why}; restart the node to apply that (the running configuration is unchanged)",
                cluster.path.display()
            );
        }
        let log = self.apply(new)?;
        self.cluster = cluster;
        Ok(if log.is_empty() {
            "no changes\n".into()
        } else {
            log
        })
    }
}

/// A hash seed for the connection table, different in every process (remote clients must not
/// be able to predict probe chains).
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The shared cluster fixture, its containers' namespaces unprefixed.
    fn file() -> String {
        include_str!("../tests/fixtures/cluster.toml").replace("{P}", "")
    }

    fn cluster(text: &str) -> Cluster {
        Cluster::parse(Path::new("test.toml"), text).unwrap()
    }

    #[test]
    fn plan_of_a_node_with_an_ingress() {
        let p = Plan::of(&cluster(&file()), "n1").unwrap();
        assert_eq!(p.vteps, vec![("n2".into(), Ipv4Addr::new(198, 18, 0, 2))]);
        assert_eq!(p.nets.len(), 2);
        assert_eq!(p.nets[0].peers, vec![0]);
        assert!(p.nets[1].ingress);
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
        assert!(Plan::of(&cluster(&file()), "n9").is_err());
    }

    #[test]
    fn reload_applies_weights_and_refuses_port_changes() {
        let file = file();
        let mut node = Node::build(cluster(&file), "n1", &mut MemPorts).unwrap();
        assert_eq!(
            node.sw.env.fdb.static_len(),
            5,
            "4 endpoints and n2's LB MAC"
        );
        let (all, one_drained) = (r#"["c12", "c21", "c22"]"#, r#"["c12=0", "c21", "c22"]"#);
        assert!(file.contains(all));
        let drained = file.replace(all, one_drained);
        let log = node.reload(cluster(&drained)).unwrap();
        assert!(log.contains("backend c12 weight 1 -> 0"), "{log}");
        let w: Vec<u32> = node.lb().services()[0]
            .backends
            .iter()
            .map(|b| b.weight)
            .collect();
        assert_eq!(w, [0, 1, 1]);
        assert_eq!(node.reload(cluster(&drained)).unwrap(), "no changes\n");
        let moved = drained.replace("afxdp:vc11", "afxdp:vc99");
        let err = node.reload(cluster(&moved)).unwrap_err().to_string();
        assert!(err.contains("restart"), "{err}");
        assert_eq!(node.cluster, cluster(&drained));
        let removed = drained.replace(one_drained, r#"["c21", "c22"]"#);
        let log = node.reload(cluster(&removed)).unwrap();
        assert!(log.contains("backend c12 removed"), "{log}");
    }

    /// What a user sees of a node's tables: `fdb show`, `lb show`, `network inspect`.
    fn views(node: &mut Node) -> (String, String, String) {
        (
            crate::show::fdb(&node.sw, None),
            crate::show::lb(node, false, false, false),
            crate::show::network(node, "appnet", false).unwrap(),
        )
    }

    #[test]
    fn a_reload_that_fails_halfway_changes_nothing() {
        let file = file();
        let small = FdbConfig {
            max_static: 6,
            ..FdbConfig::default()
        };
        let mut node =
            Node::build_sized(cluster(&file), "n1", &mut MemPorts, MAX_CONNS, small).unwrap();
        let before = views(&mut node);
        let plan = node.plan.clone();
        // Two more remote endpoints (5 static entries + 2 > 6) and a drain, in one file: the
        // second entry does not fit, so neither the entries nor the drain may stay.
        let endpoint = |name: &str, ip: &str| {
            format!(
                "\n[[endpoint]]\nname = \"{name}\"\nnode = \"n2\"\nnetwork = \"appnet\"\nip = \"{ip}\"\n"
            )
        };
        let drained = file.replace(r#"["c12", "c21", "c22"]"#, r#"["c12=0", "c21", "c22"]"#);
        let two = format!(
            "{drained}{}{}",
            endpoint("c23", "10.0.9.23"),
            endpoint("c24", "10.0.9.24")
        );
        let err = format!("{:#}", node.reload(cluster(&two)).unwrap_err());
        assert!(
            err.contains("static") && err.contains("nothing of it was applied"),
            "{err}"
        );
        assert_eq!(views(&mut node), before);
        assert_eq!(node.plan, plan);
        assert_eq!(node.sw.env.fdb.static_len(), 5);
        // The next change is computed against what really runs: one endpoint fits.
        let one = format!("{drained}{}", endpoint("c23", "10.0.9.23"));
        let log = node.reload(cluster(&one)).unwrap();
        assert!(
            log.contains("weight 1 -> 0") && log.contains("fdb: added"),
            "{log}"
        );
        assert_eq!(node.sw.env.fdb.static_len(), 6);
    }

    #[test]
    fn a_new_load_balancer_address_replaces_the_snat_and_the_owned_mac() {
        let file = file();
        let mut node = Node::build(cluster(&file), "n1", &mut MemPorts).unwrap();
        let moved = file.replacen(
            "vtep = \"198.18.0.1\"",
            "vtep = \"198.18.0.1\"\nlb = { appnet = \"10.0.9.240\" }",
            1,
        );
        assert_ne!(moved, file);
        let log = node.reload(cluster(&moved)).unwrap();
        assert!(log.contains("replaced"), "{log}");
        let lb = crate::show::lb(&mut node, false, false, false);
        assert!(
            lb.contains("10.0.9.240") && !lb.contains("10.0.9.254"),
            "{lb}"
        );
        let new_mac = Mac::docker_default(Ipv4Addr::new(10, 0, 9, 240));
        let own = &node.sw.stage_mut(node.own).macs;
        assert!(own.contains(&(NetId(0), new_mac)), "{own:?}");
        let arp = &node.sw.env.nets[0].arp;
        assert_eq!(arp.get(&Ipv4Addr::new(10, 0, 9, 240)), Some(&new_mac));
        assert!(!arp.contains_key(&Ipv4Addr::new(10, 0, 9, 254)));
    }
}
