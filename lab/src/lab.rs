//! The lab: a cluster file turned into network namespaces on one machine, so that the nodes,
//! containers and external clients it describes exist for real and `vxmesh run` can be started
//! in each node. The tests build their topologies with it, `vxmesh demo` runs its tour in it, and
//! a user trying vxmesh gets a working cluster with `vxmesh lab up --config FILE` (and removes it
//! with `vxmesh lab down --config FILE`).
//!
//! Everything lives in namespaces the lab creates, every name carrying the lab's prefix (except
//! an endpoint's `netns`, taken from the file verbatim): nothing is added to the root
//! namespace, and `down` removes exactly the lab's namespaces, by name (SPEC.md, "Safety of tests
//! and the lab"). Two nodes as in the SPEC's example (c22 without attach), prefix `p-`, `[ns]` a
//! namespace:
//!
//! ```text
//!                    [p-ul]  bridge br0: the "physical switch" (not a node)
//!               ┌─────────────────── br0 ───────────────────┐
//!               n0                                          n1      veth ends, one per node
//!               │                                           │
//!   [p-n1] ul0 198.18.0.1/24                    [p-n2] ul0 198.18.0.2/24
//!     vxmesh run --node n1                        vxmesh run --node n2 (or a kernel VXLAN peer)
//!     vc11 ───── eth0 [c11] 10.0.9.11/24          vc21 ───── eth0 [c21] 10.0.9.21/24
//!     (tap:tc12: the node makes it in [c12])      vc22 ───── eth0 [c22] 10.0.9.22/24
//!     ext0 ───── eth0 [p-x-n1] 192.0.2.254/24                (no attach: bridge vc22 yourself)
//!                the external client of n1's ingress 192.0.2.1
//! ```
//!
//! - Underlay: `{prefix}ul` holds bridge `br0`; each node has `ul0` with `{vtep}/24`, MTU 1500,
//!   joined to `br0` by a veth whose other end is called after the node's index (`n0`, `n1`...).
//! - Endpoints (`endpoint_netns`: the file's `netns`, else `{prefix}{name}`): for `afxdp:IF`, a
//!   veth `IF` (node side, up, the network's MTU, no address) to `eth0` (the endpoint's MAC,
//!   `ip/prefix`, the network's MTU, TX checksum/TSO/GSO off); for `tap:IF`, only the namespace
//!   (the node creates the TAP there), and for `tap:IF` without `netns` nothing: the node creates
//!   that TAP in its own namespace, as `vxmesh run` does; without `attach` (a node that does not run vxmesh, such
//!   as a kernel VXLAN peer), the same veth with the node side called `v{name}` (15 characters at
//!   most), left for whoever runs that node to bridge. A second endpoint in the same namespace
//!   gets `eth1`, and so on.
//! - Ingresses with `afxdp:IF`: a client namespace `{prefix}x-{node}` with `eth0` at the highest
//!   host address of the ingress subnet that is no ingress's address, veth'd to `IF` in the
//!   node (up, MTU 1500, no address: the switch owns it); TX checksum/TSO/GSO are off on the
//!   client's `eth0`, since the switch reads frames raw. A `tap:` ingress gets no client.
//! - `lo` is up and IPv6 is off in every namespace (no router solicitations in traces).
//! - Each container namespace gets `/etc/netns/{netns}/resolv.conf` naming the resolvers of its
//!   endpoints' networks (`ip netns exec` binds it over `/etc/resolv.conf`, so `getent hosts
//!   web` asks the switch); `down` removes exactly those files (and their folder when empty),
//!   and only files the lab wrote (they start with [`RESOLV_CONF_MARK`]). A namespace the node
//!   shares with its TAPs (`tap:` without `netns`) gets none.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use vxmesh::config::{Attach, Cluster, Ingress, Ipv4Net};

use vswitch::port::netns::NETNS_DIR;
/// The underlay's MTU (and the clients').
const UNDERLAY_MTU: u16 = 1500;
/// The underlay's prefix length (198.18.0.0/24 in the SPEC).
const UNDERLAY_PREFIX: u8 = 24;
/// The underlay bridge in `{prefix}ul`.
const UNDERLAY_BRIDGE: &str = "br0";
/// A node's underlay interface.
const NODE_UL_IF: &str = "ul0";
/// Longest interface name Linux accepts.
const IFNAME_MAX: usize = 15;
/// How long `down` lets processes exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// Where `ip netns exec NAME` finds files to bind over `/etc` (`/etc/netns/NAME/...`).
const NETNS_ETC: &str = "/etc/netns";
/// The first line of every `resolv.conf` the lab writes: `down` removes only files that start
/// with it.
pub const RESOLV_CONF_MARK: &str = "# written by vxmesh lab";

/// A network-namespace lab for a cluster file (see the module documentation).
#[derive(Debug, Clone)]
pub struct Lab {
    prefix: String,
    config: PathBuf,
    nodes: Vec<NodePlan>,
    endpoints: Vec<EndpointPlan>,
    clients: Vec<ClientPlan>,
    /// Every namespace `up` creates, in creation order, without duplicates.
    namespaces: Vec<String>,
    /// Container namespaces and the resolvers their `resolv.conf` names.
    resolvers: Vec<(String, Vec<std::net::Ipv4Addr>)>,
}

#[derive(Debug, Clone)]
struct NodePlan {
    name: String,
    netns: String,
    vtep: Ipv4Addr,
    /// The veth end in the underlay namespace.
    ul_port: String,
    /// Whether the file gives it anything to run vxmesh for (an attach or an ingress).
    runs_vxmesh: bool,
}

#[derive(Debug, Clone)]
enum EndpointKind {
    /// A veth whose node side is attached by AF_XDP.
    Afxdp,
    /// The node creates a TAP in the namespace.
    Tap,
    /// No attach: a veth whose node side is left alone.
    Plain,
}

#[derive(Debug, Clone)]
struct EndpointPlan {
    name: String,
    node_netns: String,
    netns: String,
    kind: EndpointKind,
    /// Node side (the attach IFNAME, the TAP's name, or `v{name}`).
    host_if: String,
    /// Container side (`eth0`, `eth1`... within its namespace).
    ifname: String,
    ip: Ipv4Addr,
    prefix: u8,
    mac: String,
    mtu: u16,
}

#[derive(Debug, Clone)]
struct ClientPlan {
    node: String,
    node_netns: String,
    /// None for a `tap:` ingress (no client).
    netns: Option<String>,
    host_if: String,
    tap: bool,
    ingress_ip: Ipv4Addr,
    subnet: Ipv4Net,
    addr: Option<Ipv4Addr>,
}

impl Lab {
    /// The lab a cluster file describes, with every name carrying `prefix`.
    pub fn new(cluster: &Cluster, prefix: &str) -> Lab {
        let ns = |s: &str| format!("{prefix}{s}");
        let nodes: Vec<NodePlan> = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodePlan {
                name: n.name.clone(),
                netns: ns(&n.name),
                vtep: n.vtep,
                ul_port: format!("n{i}"),
                runs_vxmesh: cluster
                    .endpoints
                    .iter()
                    .any(|e| e.node == n.name && e.attach.is_some())
                    || cluster.ingresses.iter().any(|i| i.node == n.name),
            })
            .collect();
        let mut per_netns: HashMap<String, usize> = HashMap::new();
        let endpoints = cluster
            .endpoints
            .iter()
            .map(|e| {
                // Where the node puts a TAP without `netns`: in its own namespace, so the lab
                // makes no namespace for it (the node and the lab must agree on this).
                let tap_in_node = matches!(e.attach, Some(Attach::Tap(_))) && e.netns.is_none();
                let netns = match &e.netns {
                    Some(n) => n.clone(),
                    None if tap_in_node => ns(&e.node),
                    None => ns(&e.name),
                };
                let net = cluster.network(&e.network);
                let (kind, host_if) = match &e.attach {
                    Some(Attach::Afxdp(i)) => (EndpointKind::Afxdp, i.clone()),
                    Some(Attach::Tap(i)) => (EndpointKind::Tap, i.clone()),
                    None => (
                        EndpointKind::Plain,
                        truncate_ifname(&format!("v{}", e.name)),
                    ),
                };
                let ifname = if matches!(kind, EndpointKind::Tap) {
                    host_if.clone()
                } else {
                    let k = per_netns.entry(netns.clone()).or_default();
                    *k += 1;
                    format!("eth{}", *k - 1)
                };
                EndpointPlan {
                    name: e.name.clone(),
                    node_netns: ns(&e.node),
                    netns,
                    kind,
                    host_if,
                    ifname,
                    ip: e.ip,
                    prefix: net.map_or(24, |n| n.subnet.prefix),
                    mac: e.mac.to_string(),
                    mtu: net.map_or(vswitch::env::DEFAULT_MTU, |n| n.mtu),
                }
            })
            .collect::<Vec<_>>();
        let clients = cluster
            .ingresses
            .iter()
            .map(|i| {
                let tap = matches!(i.attach, Attach::Tap(_));
                ClientPlan {
                    node: i.node.clone(),
                    node_netns: ns(&i.node),
                    netns: (!tap).then(|| ns(&format!("x-{}", i.node))),
                    host_if: i.attach.ifname().to_string(),
                    tap,
                    ingress_ip: i.ip,
                    subnet: i.subnet,
                    addr: if tap {
                        None
                    } else {
                        client_addr_for(i, &cluster.ingresses)
                    },
                }
            })
            .collect::<Vec<_>>();
        let mut namespaces: Vec<String> = Vec::new();
        let all = std::iter::once(ns("ul"))
            .chain(nodes.iter().map(|n| n.netns.clone()))
            .chain(endpoints.iter().map(|e| e.netns.clone()))
            .chain(clients.iter().filter_map(|c| c.netns.clone()));
        for n in all {
            if !namespaces.contains(&n) {
                namespaces.push(n);
            }
        }
        let mut resolvers: Vec<(String, Vec<Ipv4Addr>)> = Vec::new();
        for (e, cfg) in endpoints.iter().zip(&cluster.endpoints) {
            if nodes.iter().any(|n| n.netns == e.netns) {
                continue;
            }
            let Some(net) = cluster.network(&cfg.network) else {
                continue;
            };
            match resolvers.iter_mut().find(|(ns, _)| *ns == e.netns) {
                Some((_, r)) if !r.contains(&net.dns) => r.push(net.dns),
                Some(_) => {}
                None => resolvers.push((e.netns.clone(), vec![net.dns])),
            }
        }
        Lab {
            prefix: prefix.to_string(),
            config: cluster.path.clone(),
            nodes,
            endpoints,
            clients,
            namespaces,
            resolvers,
        }
    }

    /// The `resolv.conf` the lab writes for container namespace `netns`
    /// (`/etc/netns/{netns}/resolv.conf`), if it writes one.
    pub fn resolv_conf(&self, netns: &str) -> Option<PathBuf> {
        self.resolvers
            .iter()
            .any(|(ns, _)| ns == netns)
            .then(|| Path::new(NETNS_ETC).join(netns).join("resolv.conf"))
    }

    /// Write each container namespace's `resolv.conf`; refuses to replace a file the lab did
    /// not write. Every file written is pushed to `written` (for the cleanup of a failed `up`).
    fn write_resolv_confs(&self, written: &mut Vec<PathBuf>) -> Result<()> {
        for (ns, addrs) in &self.resolvers {
            let dir = Path::new(NETNS_ETC).join(ns);
            let file = dir.join("resolv.conf");
            if let Ok(old) = std::fs::read_to_string(&file)
                && !old.starts_with(RESOLV_CONF_MARK)
            {
                bail!(
                    "{} exists and the lab did not write it: not replacing it",
                    file.display()
                );
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut text = format!(
                "{RESOLV_CONF_MARK} for {}: the networks' resolvers, answered by the switch\n",
                self.config.display()
            );
            for a in addrs {
                let _ = writeln!(text, "nameserver {a}");
            }
            std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
            written.push(file);
        }
        Ok(())
    }

    /// Remove the `resolv.conf` files the lab wrote (by name, only those starting with
    /// [`RESOLV_CONF_MARK`]) and their folders if that leaves them empty.
    fn remove_resolv_confs(&self) -> Result<()> {
        let mut errors = Vec::new();
        for (ns, _) in &self.resolvers {
            let dir = Path::new(NETNS_ETC).join(ns);
            let file = dir.join("resolv.conf");
            match std::fs::read_to_string(&file) {
                Ok(t) if t.starts_with(RESOLV_CONF_MARK) => {
                    if let Err(e) = std::fs::remove_file(&file) {
                        errors.push(format!("{}: {e}", file.display()));
                    }
                }
                _ => {}
            }
            // Only if empty: anything else in it is not the lab's.
            let _ = std::fs::remove_dir(&dir);
        }
        if !errors.is_empty() {
            bail!(
                "removing the lab's resolv.conf files: {}",
                errors.join("; ")
            );
        }
        Ok(())
    }

    /// The namespace of node `node`: `{prefix}{node}`.
    pub fn node_netns(&self, node: &str) -> String {
        format!("{}{node}", self.prefix)
    }

    /// The namespace of the external client of `node`'s ingress: `{prefix}x-{node}`.
    pub fn client_netns(&self, node: &str) -> String {
        format!("{}x-{node}", self.prefix)
    }

    /// The namespace of endpoint `endpoint`: its `netns` from the file verbatim; else, for a TAP,
    /// its node's namespace (where the node creates a TAP without `netns`); else
    /// `{prefix}{endpoint}`.
    pub fn endpoint_netns(&self, endpoint: &str) -> String {
        self.endpoints
            .iter()
            .find(|e| e.name == endpoint)
            .map_or_else(|| format!("{}{endpoint}", self.prefix), |e| e.netns.clone())
    }

    /// The underlay's namespace (the one with the bridge): `{prefix}ul`.
    pub fn underlay_netns(&self) -> String {
        format!("{}ul", self.prefix)
    }

    /// The address of `node`'s ingress client in the ingress subnet: the highest host address
    /// that is no ingress's address. None if the node has no `afxdp:` ingress (or the subnet
    /// has no free host address).
    pub fn client_addr(&self, node: &str) -> Option<Ipv4Addr> {
        self.clients
            .iter()
            .find(|c| c.node == node)
            .and_then(|c| c.addr)
    }

    /// Every namespace `up` creates, in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces.clone()
    }

    /// Build the lab. Refuses if any of its namespaces already exists; on any failure removes
    /// what it created and returns the error.
    pub fn up(&self) -> Result<()> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the lab needs root: it creates network namespaces and veths");
        }
        for ns in &self.namespaces {
            if netns_exists(ns) {
                bail!(
                    "network namespace {ns:?} already exists: is a lab for {file} up already? (`vxmesh lab down --config {file}` removes it)",
                    file = self.config.display()
                );
            }
        }
        for c in &self.clients {
            if !c.tap && c.addr.is_none() {
                bail!(
                    "ingress on node {:?}: subnet {} has no host address left for its client",
                    c.node,
                    c.subnet
                );
            }
        }
        let mut created = Vec::new();
        let mut written = Vec::new();
        let built = self
            .build(&mut created)
            .and_then(|()| self.write_resolv_confs(&mut written));
        match built {
            Ok(()) => Ok(()),
            Err(e) => {
                for f in &written {
                    let _ = std::fs::remove_file(f);
                    if let Some(d) = f.parent() {
                        let _ = std::fs::remove_dir(d);
                    }
                }
                let cleanup = remove_namespaces(&created);
                match cleanup {
                    Ok(()) => Err(e.context("building the lab failed; removed what it created")),
                    Err(c) => Err(e.context(format!(
                        "building the lab failed, and removing what it created failed too: {c:#}"
                    ))),
                }
            }
        }
    }

    fn build(&self, created: &mut Vec<String>) -> Result<()> {
        let ipv6 = Path::new("/proc/sys/net/ipv6").exists();
        for ns in &self.namespaces {
            run(&["ip", "netns", "add", ns])?;
            created.push(ns.clone());
            if ipv6 {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ])?;
            }
            ip(ns, &["link", "set", "lo", "up"])?;
        }

        let ul = self.underlay_netns();
        ip(&ul, &["link", "add", UNDERLAY_BRIDGE, "type", "bridge"])?;
        ip(&ul, &["link", "set", UNDERLAY_BRIDGE, "up"])?;
        let ul_mtu = UNDERLAY_MTU.to_string();
        for n in &self.nodes {
            veth(&ul, &n.ul_port, &n.netns, NODE_UL_IF)?;
            ip(
                &ul,
                &[
                    "link",
                    "set",
                    &n.ul_port,
                    "mtu",
                    &ul_mtu,
                    "master",
                    UNDERLAY_BRIDGE,
                    "up",
                ],
            )?;
            ip(&n.netns, &["link", "set", NODE_UL_IF, "mtu", &ul_mtu, "up"])?;
            let addr = format!("{}/{UNDERLAY_PREFIX}", n.vtep);
            ip(&n.netns, &["addr", "add", &addr, "dev", NODE_UL_IF])?;
        }

        for e in &self.endpoints {
            if matches!(e.kind, EndpointKind::Tap) {
                continue;
            }
            let mtu = e.mtu.to_string();
            veth(&e.node_netns, &e.host_if, &e.netns, &e.ifname)?;
            ip(
                &e.node_netns,
                &["link", "set", &e.host_if, "mtu", &mtu, "up"],
            )?;
            ip(
                &e.netns,
                &[
                    "link", "set", &e.ifname, "address", &e.mac, "mtu", &mtu, "up",
                ],
            )?;
            let addr = format!("{}/{}", e.ip, e.prefix);
            ip(&e.netns, &["addr", "add", &addr, "dev", &e.ifname])?;
            disable_offloads(&e.netns, &e.ifname)?;
        }

        for c in &self.clients {
            let (Some(ns), Some(addr)) = (&c.netns, c.addr) else {
                continue;
            };
            veth(&c.node_netns, &c.host_if, ns, "eth0")?;
            ip(
                &c.node_netns,
                &["link", "set", &c.host_if, "mtu", &ul_mtu, "up"],
            )?;
            ip(ns, &["link", "set", "eth0", "mtu", &ul_mtu, "up"])?;
            let addr = format!("{addr}/{}", c.subnet.prefix);
            ip(ns, &["addr", "add", &addr, "dev", "eth0"])?;
            disable_offloads(ns, "eth0")?;
        }
        Ok(())
    }

    /// Remove the lab: stop the processes inside its namespaces (`ip netns pids`; SIGTERM, then
    /// SIGKILL after a second), then delete exactly its namespaces, by name, and the
    /// `resolv.conf` files it wrote. Absent namespaces and files are fine, so it can be run any
    /// number of times.
    pub fn down(&self) -> Result<()> {
        let files = self.remove_resolv_confs();
        let mut ns = self.namespaces.clone();
        ns.reverse();
        remove_namespaces(&ns).and(files)
    }

    /// A human summary: the namespaces, their addresses, and how to start each node.
    pub fn describe(&self) -> String {
        let file = self.config.display();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "vxmesh lab for {file}: {} network namespaces (prefix {:?}), nothing in the root namespace",
            self.namespaces.len(),
            self.prefix
        );
        let _ = writeln!(
            s,
            "\n  {:<24} bridge {UNDERLAY_BRIDGE}: the underlay switch (not a node)",
            self.underlay_netns()
        );
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "  {:<24} node {}: {NODE_UL_IF} {}/{UNDERLAY_PREFIX} (mtu {UNDERLAY_MTU}, port {} on {UNDERLAY_BRIDGE})",
                n.netns, n.name, n.vtep, n.ul_port
            );
        }
        for e in &self.endpoints {
            let how = match e.kind {
                EndpointKind::Afxdp => format!(
                    "{} {}/{} {} mtu {}, veth to afxdp:{} in {}",
                    e.ifname, e.ip, e.prefix, e.mac, e.mtu, e.host_if, e.node_netns
                ),
                EndpointKind::Tap => format!(
                    "tap:{}: the node creates the TAP here ({}/{} {} mtu {})",
                    e.host_if, e.ip, e.prefix, e.mac, e.mtu
                ),
                EndpointKind::Plain => format!(
                    "{} {}/{} {} mtu {}, veth to {} in {} (no attach: bridge it yourself)",
                    e.ifname, e.ip, e.prefix, e.mac, e.mtu, e.host_if, e.node_netns
                ),
            };
            let _ = writeln!(s, "  {:<24} endpoint {}: {how}", e.netns, e.name);
        }
        for c in &self.clients {
            match (&c.netns, c.addr) {
                (Some(ns), Some(addr)) => {
                    let _ = writeln!(
                        s,
                        "  {ns:<24} client of {}'s ingress: eth0 {addr}/{} (mtu {UNDERLAY_MTU}), veth to afxdp:{} in {}; the ingress is {}",
                        c.node, c.subnet.prefix, c.host_if, c.node_netns, c.ingress_ip
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "  {:<24} ingress tap:{} on {}: no client namespace (the node creates the TAP)",
                        "-", c.host_if, c.node
                    );
                }
            }
        }
        let _ = writeln!(s, "\nStart each node's switch (one terminal each):");
        for n in &self.nodes {
            if n.runs_vxmesh {
                let _ = writeln!(
                    s,
                    "  ip netns exec {} vxmesh run --config {file} --node {}",
                    n.netns, n.name
                );
            } else {
                let _ = writeln!(
                    s,
                    "  # {}: no attach or ingress in the file, so no vxmesh there (a kernel VXLAN peer, say: bridge its v* veths yourself in {})",
                    n.name, n.netns
                );
            }
        }
        let _ = writeln!(
            s,
            "Then talk to a node from anywhere: vxmesh --node NAME stats"
        );
        if let Some(e) = self.endpoints.first() {
            let _ = writeln!(
                s,
                "Run things in a container: ip netns exec {} ping ...",
                e.netns
            );
        }
        if let Some((ns, addrs)) = self.resolvers.first() {
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                s,
                "Names resolve through the switch: ip netns exec {ns} getent hosts NAME (resolv.conf in {NETNS_ETC}/{ns}: nameserver {})",
                list.join(", ")
            );
        }
        let _ = writeln!(s, "Remove it: vxmesh lab down --config {file}");
        s
    }
}

/// The highest host address of `ing`'s subnet that is no ingress's address.
/// `node` of `cluster`, its endpoints and their one network: what a node built from kernel or
/// OVS parts in the lab switches (`what` names it in the errors).
pub(crate) fn single_network_node<'a>(
    cluster: &'a Cluster,
    node: &str,
    what: &str,
) -> Result<(
    &'a vxmesh::config::Node,
    Vec<&'a vxmesh::config::Endpoint>,
    &'a vxmesh::config::NetworkCfg,
)> {
    let me = cluster
        .node(node)
        .with_context(|| format!("no node {node:?} in the cluster"))?;
    let mine: Vec<_> = cluster
        .endpoints
        .iter()
        .filter(|e| e.node == node)
        .collect();
    let Some(first) = mine.first() else {
        bail!("node {node} has no endpoints to switch");
    };
    if mine.iter().any(|e| e.network != first.network) {
        bail!("node {node}: {what} in the lab switches one network only");
    }
    let net = cluster
        .network(&first.network)
        .with_context(|| format!("no network {:?}", first.network))?;
    Ok((me, mine, net))
}

/// Make `node` of a built lab a Linux-kernel overlay node, as Docker's overlay driver programs
/// one: bridge `br0` with the node's endpoints' veths (`v{name}`, the lab's name for endpoints
/// without `attach`), VXLAN device `vxlan0` (the network's VNI, dstport 4789, `nolearning`, the
/// network's MTU) on `ul0`, a flood entry `00:00:00:00:00:00` per peer VTEP and a static entry per
/// remote endpoint. The kernel peer of the end-to-end test and the kernel side of `vxmesh-compare`.
pub fn build_kernel_node(lab: &Lab, cluster: &Cluster, node: &str) -> Result<()> {
    let ns = lab.node_netns(node);
    let (me, mine, net) = single_network_node(cluster, node, "a kernel node")?;
    let (vni, mtu, vtep) = (
        net.vni.to_string(),
        net.mtu.to_string(),
        me.vtep.to_string(),
    );
    ip(&ns, &["link", "add", "br0", "type", "bridge"])?;
    ip(
        &ns,
        &[
            "link",
            "add",
            "vxlan0",
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            "4789",
            "local",
            &vtep,
            "dev",
            NODE_UL_IF,
            "nolearning",
        ],
    )?;
    ip(
        &ns,
        &["link", "set", "vxlan0", "mtu", &mtu, "master", "br0", "up"],
    )?;
    for e in &mine {
        let port = truncate_ifname(&format!("v{}", e.name));
        ip(&ns, &["link", "set", &port, "master", "br0", "up"])?;
    }
    ip(&ns, &["link", "set", "br0", "up"])?;
    for peer in cluster.peers(&net.name).iter().filter(|n| n.name != node) {
        let dst = peer.vtep.to_string();
        let fdb = |mac: &str| {
            run(&[
                "bridge",
                "-n",
                &ns,
                "fdb",
                "append",
                mac,
                "dev",
                "vxlan0",
                "dst",
                &dst,
                "self",
                "permanent",
            ])
        };
        fdb("00:00:00:00:00:00")?;
        for e in cluster
            .endpoints
            .iter()
            .filter(|e| e.node == peer.name && e.network == net.name)
        {
            fdb(&e.mac.to_string())?;
        }
    }
    Ok(())
}

fn client_addr_for(ing: &Ingress, all: &[Ingress]) -> Option<Ipv4Addr> {
    let mask = if ing.subnet.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - ing.subnet.prefix)
    };
    let net = u32::from(ing.subnet.addr);
    let mut a = net | !mask;
    // Only a few addresses can be taken (one per ingress), so this ends quickly.
    loop {
        let addr = Ipv4Addr::from(a);
        if ing.subnet.contains_host(addr) && !all.iter().any(|i| i.ip == addr) {
            return Some(addr);
        }
        if a == net {
            return None;
        }
        a -= 1;
    }
}

/// `name` cut to the longest interface name Linux accepts (on a character boundary).
pub(crate) fn truncate_ifname(name: &str) -> String {
    let mut end = name.len().min(IFNAME_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

fn netns_exists(ns: &str) -> bool {
    Path::new(NETNS_DIR).join(ns).exists()
}

/// Run a command; an error names the command line and carries its stderr.
pub(crate) fn run(argv: &[&str]) -> Result<String> {
    let line = argv.join(" ");
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("`{line}`: cannot run {}", argv[0]))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS ARGS...`.
fn ip(ns: &str, args: &[&str]) -> Result<String> {
    let mut argv = vec!["ip", "-n", ns];
    argv.extend_from_slice(args);
    run(&argv)
}

/// A veth pair: `a` in namespace `ns_a`, `b` in `ns_b`, created directly where they belong.
fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<()> {
    ip(
        ns_a,
        &[
            "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ],
    )?;
    Ok(())
}

/// The processes inside namespace `ns` (none if it is absent).
fn netns_pids(ns: &str) -> Vec<libc::pid_t> {
    let me = std::process::id() as libc::pid_t;
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .filter(|p| *p != me && *p > 0)
                .collect()
        })
        .unwrap_or_default()
}

fn signal(pids: &[libc::pid_t], sig: libc::c_int) {
    for &pid in pids {
        // SAFETY: kill(2) with a positive pid from `ip netns pids`: one process, never a group.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Stop the processes in `namespaces`, then delete those namespaces that exist.
fn remove_namespaces(namespaces: &[String]) -> Result<()> {
    let present: Vec<&String> = namespaces.iter().filter(|n| netns_exists(n)).collect();
    let mut any = false;
    for ns in &present {
        let pids = netns_pids(ns);
        any |= !pids.is_empty();
        signal(&pids, libc::SIGTERM);
    }
    if any {
        let start = Instant::now();
        while start.elapsed() < TERM_GRACE && present.iter().any(|ns| !netns_pids(ns).is_empty()) {
            thread::sleep(Duration::from_millis(20));
        }
        for ns in &present {
            // Listed afresh: only what is still inside the namespace now.
            signal(&netns_pids(ns), libc::SIGKILL);
        }
    }
    let mut errors = Vec::new();
    for ns in present {
        if let Err(e) = run(&["ip", "netns", "del", ns])
            && netns_exists(ns)
        {
            errors.push(format!("{e:#}"));
        }
    }
    if !errors.is_empty() {
        bail!("removing the lab: {}", errors.join("; "));
    }
    Ok(())
}

/// Turn TX checksum offload, TSO and GSO off on `ifname` in `ns` (`ethtool -K IF tx off tso off
/// gso off`): partial checksums and super-frames left "for the NIC" would cross the veth as they
/// are and reach the switch, which reads frames raw, unfinished.
fn disable_offloads(ns: &str, ifname: &str) -> Result<()> {
    vswitch::port::ethtool::disable_offloads(Some(ns), ifname)
        .with_context(|| format!("turning offloads off on {ifname} in {ns}"))
}
