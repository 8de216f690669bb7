//! The three sides' topology: the same nodes, containers, addresses and MACs, built by
//! `vxmesh_lab::lab::Lab` from a cluster file, switched by `vxmesh run` (with `attach`), by the
//! kernel's bridge + VXLAN device as Docker's overlay driver programs them (without), or by Open
//! vSwitch's userspace datapath (without; `vxmesh_lab::ovs`).
//!
//! ```text
//!   [P-ul] br0: the underlay switch      198.18.0.0/24
//!   [P-n1] ul0 198.18.0.1                [P-n2] ul0 198.18.0.2
//!     c11 10.0.9.11 (afxdp:vc11 | vc11 on br0)   c21 10.0.9.21 (afxdp:vc21 | vc21 on br0)
//!     c12 10.0.9.12 (tap:eth0   | vc12 on br0)   c22 10.0.9.22 (tap:eth0   | vc22 on br0)
//!   (OVS: every container veth an AF_XDP port of br-int; VXLAN ports; ul0 AF_XDP on br-phy)
//!   service web 10.0.9.100:80 -> c12, c21, c22 (rr): vxmesh's LB | nft numgen DNAT in c11
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vxmesh::config::Cluster;
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::lab::Lab;
use vxmesh_lab::ovs::{OvsNode, OvsOptions, PortType, build_ovs_node};

use crate::measure::{host, nap, sh};

/// Which dataplane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// `vxmesh run` on each node.
    Vxmesh,
    /// The kernel's bridge + VXLAN device, nftables DNAT for the VIP.
    Kernel,
    /// Open vSwitch's userspace datapath (`datapath_type=netdev`, AF_XDP ports, VXLAN ports),
    /// nftables DNAT for the VIP as on the kernel side.
    Ovs,
    /// The floor: c11 and c21 joined by one veth pair, no switch and no overlay (only the
    /// pair tests: ping, TCP c11 -> c21, UDP). Every dataplane's figures sit above it.
    Wire,
}

impl Side {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Side::Vxmesh => "vxmesh",
            Side::Kernel => "kernel",
            Side::Ovs => "ovs",
            Side::Wire => "wire",
        }
    }
}

/// The nodes.
pub const NODES: [(&str, &str); 2] = [("n1", "198.18.0.1"), ("n2", "198.18.0.2")];
/// The containers: name, node, address, vxmesh attach.
pub const ENDPOINTS: [(&str, &str, &str, &str); 4] = [
    ("c11", "n1", "10.0.9.11", "afxdp:vc11"),
    ("c12", "n1", "10.0.9.12", "tap:eth0"),
    ("c21", "n2", "10.0.9.21", "afxdp:vc21"),
    ("c22", "n2", "10.0.9.22", "tap:eth0"),
];
/// The service VIP.
pub const VIP: &str = "10.0.9.100";
/// The service's backends.
pub const BACKENDS: [&str; 3] = ["c12", "c21", "c22"];

/// The address of endpoint `name`.
pub fn ip_of(name: &str) -> &'static str {
    ENDPOINTS
        .iter()
        .find(|e| e.0 == name)
        .map(|e| e.2)
        .expect("known endpoint")
}

/// The cluster file of a side, with endpoint namespaces `{prefix}{name}`: the shared fixture
/// without the routing mesh (no ingresses, no published port: the tool measures container to
/// container and container to VIP, and an ingress port would be one more port for the switch to
/// poll), and on the kernel side without `attach`.
pub fn cluster_text(side: Side, prefix: &str) -> String {
    let mut f = Fixture::new(prefix);
    let port: toml::Table = "protocol = \"tcp\"\nport = 80\ntarget = 80"
        .parse()
        .expect("a port table");
    f.remove_all("ingress")
        .set("service", "web", "ports", vec![port]);
    if side != Side::Vxmesh {
        f.unset_all("endpoint", "attach");
    }
    f.text()
}

/// The kernel side: the lab (no vxmesh anywhere) plus, per node, `br0` + `vxlan0` with a static
/// FDB, with `vxmesh_lab::lab::build_kernel_node` (as tests/e2e.rs and the reference's topo.sh). Removed (by
/// name) when dropped.
pub struct KernelLab {
    /// The lab.
    pub lab: Lab,
    /// The parsed cluster.
    pub cluster: Cluster,
    config: PathBuf,
}

impl KernelLab {
    /// Write the file, build the lab, switch each node with the kernel's parts.
    pub fn start(prefix: &str) -> Result<KernelLab> {
        let (config, cluster) =
            vxmesh_lab::labrun::write_cluster(prefix, &cluster_text(Side::Kernel, prefix))?;
        let k = KernelLab {
            lab: Lab::new(&cluster, prefix),
            cluster,
            config,
        };
        k.lab.up()?;
        for (node, _) in NODES {
            vxmesh_lab::lab::build_kernel_node(&k.lab, &k.cluster, node)?;
        }
        // Docker leaves a container's offloads at the veth defaults (TSO/GSO and TX checksum
        // on); the lab turns them off for every veth endpoint (what AF_XDP needs), so turn
        // them back on here.
        for (name, ..) in ENDPOINTS {
            let ns = k.lab.endpoint_netns(name);
            for o in [
                vswitch::port::ethtool::Offload::TxChecksum,
                vswitch::port::ethtool::Offload::Tso,
                vswitch::port::ethtool::Offload::Gso,
            ] {
                vswitch::port::ethtool::set_offload(Some(&ns), "eth0", o, true)
                    .with_context(|| format!("turning {} back on in {ns}", o.name()))?;
            }
        }
        Ok(k)
    }

    /// The service VIP: [`nft_lb_up`].
    pub fn lb_up(&self) -> Result<()> {
        nft_lb_up(&self.lab)
    }

    /// Flush c11's conntrack table: [`flush_conntrack`].
    pub fn flush_conntrack(&self) {
        flush_conntrack(&self.lab);
    }

    /// The bridge-netfilter setting in the node namespaces (None if br_netfilter is absent).
    pub fn br_nf(&self) -> Option<String> {
        sh(
            &self.lab.node_netns("n1"),
            &["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"],
        )
        .ok()
        .map(|s| s.trim().to_string())
    }
}

impl Drop for KernelLab {
    fn drop(&mut self) {
        if let Err(e) = self.lab.down() {
            eprintln!("vxmesh-compare: removing the kernel lab: {e:#}");
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The OVS side: the lab (no vxmesh anywhere) plus, per node, an `ovsdb-server` and an
/// `ovs-vswitchd` of their own inside the node's namespace, with
/// `vxmesh_lab::ovs::build_ovs_node`; the VIP as on the kernel side (nftables in c11, which
/// does not depend on the switch). Dropping it stops the daemons by PID, removes their folders,
/// then the lab (by name).
pub struct OvsLab {
    /// The lab.
    pub lab: Lab,
    /// The nodes (dropped before the lab).
    pub nodes: Vec<OvsNode>,
    config: PathBuf,
}

impl OvsLab {
    /// Write the file, build the lab, make each node an OVS userspace node whose PMD thread is
    /// pinned to its own core (n1: CPU 0, n2: CPU 1; OVS's default would put both nodes' PMDs
    /// on the first core). Container offloads stay off, as the lab leaves them: OVS's AF_XDP
    /// ports carry raw frames, as vxmesh's do.
    pub fn start(prefix: &str, pmd_maxsleep_us: Option<u32>) -> Result<OvsLab> {
        let (config, cluster) =
            vxmesh_lab::labrun::write_cluster(prefix, &cluster_text(Side::Ovs, prefix))?;
        let mut o = OvsLab {
            lab: Lab::new(&cluster, prefix),
            nodes: Vec::new(),
            config,
        };
        o.lab.up()?;
        let ncpu = crate::measure::ncpu().max(1);
        for (i, (node, _)) in NODES.iter().enumerate() {
            let dir = std::env::temp_dir().join(format!("{prefix}ovs-{node}"));
            let opts = OvsOptions {
                port_type: PortType::Afxdp,
                pmd_core: Some(i % ncpu),
                pmd_maxsleep_us,
            };
            let n = build_ovs_node(&o.lab, &cluster, node, &dir, &opts)
                .with_context(|| format!("OVS on {node}"))?;
            o.nodes.push(n);
        }
        Ok(o)
    }

    /// The service VIP: [`nft_lb_up`].
    pub fn lb_up(&self) -> Result<()> {
        nft_lb_up(&self.lab)
    }

    /// Flush c11's conntrack table: [`flush_conntrack`].
    pub fn flush_conntrack(&self) {
        flush_conntrack(&self.lab);
    }

    /// "name:type" of every interface OVS opened, per node (and why one fell back to `system`).
    pub fn port_types(&self) -> String {
        let mut words = Vec::new();
        for n in &self.nodes {
            for (name, ty, err) in &n.ports {
                let ns = n.netns.rsplit('-').next().unwrap_or("");
                if err.is_empty() {
                    words.push(format!("{ns}/{name}:{ty}"));
                } else {
                    words.push(format!("{ns}/{name}:{ty} (afxdp: {err})"));
                }
            }
        }
        words.join(" ")
    }

    /// Save each node's OVS logs, `br-int`'s rules with their counters and the PMD statistics
    /// under `raw` (a prefix of file names).
    pub fn save_logs(&self, raw: &str) {
        for (n, (node, _)) in self.nodes.iter().zip(NODES) {
            for f in ["ovs-vswitchd.log", "ovsdb-server.log"] {
                let _ = std::fs::copy(n.dir.join(f), format!("{raw}{node}-{f}"));
            }
            let mut text = n.dump_flows().unwrap_or_else(|e| format!("{e:#}\n"));
            text += &n
                .appctl(&["dpif-netdev/pmd-stats-show"])
                .unwrap_or_else(|e| format!("{e:#}\n"));
            let _ = std::fs::write(format!("{raw}{node}-ovs-stats.txt"), text);
        }
    }
}

impl Drop for OvsLab {
    fn drop(&mut self) {
        // The daemons first (by PID), while their namespaces and ports still exist.
        self.nodes.clear();
        if let Err(e) = self.lab.down() {
            eprintln!("vxmesh-compare: removing the OVS lab: {e:#}");
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The service VIP the way the reference's bench_lb.sh "client" mode does it: a
/// kube-proxy-style nftables ruleset in c11's own namespace (Docker swarm's per-sandbox LB),
/// `numgen inc mod 3` DNAT with conntrack. The kernel and OVS sides both use it.
pub fn nft_lb_up(lab: &Lab) -> Result<()> {
    let ns = lab.endpoint_netns("c11");
    let rules = nft_ruleset();
    let mut child = crate::measure::ns_command(&ns, &["nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("nft stdin")?;
        stdin.write_all(rules.as_bytes())?;
    }
    let o = child.wait_with_output()?;
    if !o.status.success() {
        bail!(
            "nft -f in {ns} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// Flush c11's conntrack table (before each wrk run, as the reference does), if the
/// `conntrack` tool is there.
pub fn flush_conntrack(lab: &Lab) {
    if crate::measure::have("conntrack") {
        let _ = sh(&lab.endpoint_netns("c11"), &["conntrack", "-F"]);
    }
}

/// kube-proxy's nftables layout (service-ips verdict map -> service chain -> numgen vmap ->
/// endpoint chains doing `dnat to`), as the reference's bench_lb.sh writes it, with
/// `numgen inc` so that round robin can be checked.
fn nft_ruleset() -> String {
    let [b0, b1, b2] = BACKENDS.map(ip_of);
    format!(
        r#"table ip vxc_kube_proxy {{
  map service-ips {{
    type ipv4_addr . inet_proto . inet_service : verdict
    elements = {{ {VIP} . tcp . 80 : goto svc-web-tcp-80 }}
  }}
  chain mark-for-masquerade {{
    meta mark set meta mark | 0x4000
  }}
  chain masquerading {{
    meta mark & 0x4000 == 0 return
    meta mark set meta mark ^ 0x4000
    masquerade fully-random
  }}
  chain services {{
    ip daddr . meta l4proto . th dport vmap @service-ips
  }}
  chain nat-prerouting {{
    type nat hook prerouting priority -100; policy accept;
    jump services
  }}
  chain nat-output {{
    type nat hook output priority -100; policy accept;
    jump services
  }}
  chain nat-postrouting {{
    type nat hook postrouting priority 100; policy accept;
    jump masquerading
  }}
  chain svc-web-tcp-80 {{
    ip daddr {VIP} tcp dport 80 ip saddr != 10.0.9.0/24 jump mark-for-masquerade
    numgen inc mod 3 vmap {{ 0 : goto ep-c12, 1 : goto ep-c21, 2 : goto ep-c22 }}
  }}
  chain ep-c12 {{
    ip saddr {b0} jump mark-for-masquerade
    meta l4proto tcp dnat to {b0}:80
  }}
  chain ep-c21 {{
    ip saddr {b1} jump mark-for-masquerade
    meta l4proto tcp dnat to {b1}:80
  }}
  chain ep-c22 {{
    ip saddr {b2} jump mark-for-masquerade
    meta l4proto tcp dnat to {b2}:80
  }}
}}
"#
    )
}

/// The floor of [`Side::Wire`]: two namespaces, c11 and c21, joined by one veth pair (each
/// end `eth0`, the overlay's MTU and addresses, offloads at the veth defaults as on the kernel
/// side). Nothing between the two containers' stacks but the veth. Removed by name on drop.
pub struct WireLab {
    /// c11's namespace.
    pub c11: String,
    /// c21's namespace.
    pub c21: String,
}

impl WireLab {
    /// Build it (what was made so far is removed again on an error).
    pub fn start(prefix: &str) -> Result<WireLab> {
        let w = WireLab {
            c11: format!("{prefix}c11"),
            c21: format!("{prefix}c21"),
        };
        for ns in [&w.c11, &w.c21] {
            host(&["ip", "netns", "add", ns])?;
        }
        host(&[
            "ip", "-n", &w.c11, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", &w.c21,
        ])?;
        for (ns, name) in [(&w.c11, "c11"), (&w.c21, "c21")] {
            let addr = format!("{}/24", ip_of(name));
            host(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            host(&["ip", "-n", ns, "link", "set", "eth0", "mtu", "1450", "up"])?;
            host(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(w)
    }
}

impl Drop for WireLab {
    fn drop(&mut self) {
        // The servers and loads in them are stopped by their own guards before this.
        for ns in [&self.c11, &self.c21] {
            let _ = host(&["ip", "netns", "del", ns]);
        }
    }
}

/// One ping of 1422 payload bytes (a 1450-byte IPv4 packet) with Don't Fragment set.
const DF_PING: [&str; 9] = ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422"];

/// Wait (bounded) until `from` reaches every address in `to`, then check that a full-size
/// 1450-byte IP packet with DF crosses to c21.
pub fn wait_connectivity(from: &str, to: &[&str]) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    for ip in to {
        loop {
            if sh(from, &["ping", "-c", "1", "-W", "1", ip]).is_ok() {
                break;
            }
            if Instant::now() > end {
                bail!("{from} cannot reach {ip} after 20 s");
            }
            nap(Duration::from_millis(200))?;
        }
    }
    let df_ping: Vec<&str> = DF_PING.iter().copied().chain([ip_of("c21")]).collect();
    sh(from, &df_ping).context("a 1450-byte DF packet does not cross the overlay")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_files_parse_and_differ_only_in_attach() {
        let dir = std::env::temp_dir();
        let [vx, kernel] = [Side::Vxmesh, Side::Kernel].map(|side| {
            let text = cluster_text(side, "t-");
            Cluster::parse(&dir.join("x.toml"), &text).unwrap()
        });
        assert!(vx.endpoints.iter().all(|e| e.attach.is_some()));
        assert!(kernel.endpoints.iter().all(|e| e.attach.is_none()));
        let mut stripped = vx.clone();
        for e in &mut stripped.endpoints {
            e.attach = None;
        }
        assert_eq!(stripped, kernel);
        // OVS switches the same file as the kernel does.
        assert_eq!(
            cluster_text(Side::Ovs, "t-"),
            cluster_text(Side::Kernel, "t-")
        );
        // No routing mesh on either side; the tool's tables say what the file holds.
        assert!(vx.ingresses.is_empty());
        assert_eq!(vx.services[0].ports[0].published, None);
        assert_eq!(vx.services[0].vip.to_string(), VIP);
        let backends: Vec<&str> = vx.services[0]
            .backends
            .iter()
            .map(|b| b.0.as_str())
            .collect();
        assert_eq!(backends, BACKENDS);
        let nodes: Vec<(String, String)> = vx
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.vtep.to_string()))
            .collect();
        assert_eq!(nodes, NODES.map(|(n, v)| (n.to_string(), v.to_string())));
        for (name, node, ip, attach) in ENDPOINTS {
            let e = vx.endpoint(name).unwrap();
            assert_eq!((e.node.as_str(), e.ip.to_string()), (node, ip.to_string()));
            assert_eq!(e.netns.as_deref(), Some(format!("t-{name}").as_str()));
            let want = attach.split_once(':').unwrap().1;
            assert!(format!("{:?}", e.attach).contains(want), "{name}");
        }
    }
}
