//! Open vSwitch's userspace datapath (`datapath_type=netdev`) as a lab node: the third side of
//! `vxmesh-compare`, next to vxmesh and the kernel's bridge + VXLAN device
//! ([`crate::lab::build_kernel_node`]). Nothing here is on vxmesh's packet path.
//!
//! Per node, inside the node's namespace, with every file in a folder the caller gives (never
//! the system's `/var/run/openvswitch`, never the system service): an `ovsdb-server` and an
//! `ovs-vswitchd --disable-system` (no kernel datapath), started as this process's children
//! and stopped by PID when the [`OvsNode`] is dropped. Two bridges, as OVS's userspace
//! tunnelling guide lays them out:
//!
//! ```text
//!   br-int (netdev, fail_mode=secure, static OpenFlow rules)      br-phy (netdev, NORMAL)
//!     v{endpoint} ports (AF_XDP on the veth's node side)           ul0 (AF_XDP), LOCAL port
//!     vx-{peer} VXLAN ports: key = the VNI, remote_ip = peer VTEP    br-phy: the TAP that now
//!     local_ip = this VTEP; encapsulated frames leave via br-phy     holds the node's VTEP address
//! ```
//!
//! The native tunnel needs the VTEP address on an OVS bridge (it routes and ARPs through
//! OVS's own route and neighbour tables), so the node's address moves from `ul0` to `br-phy`.
//! `br-int` switches like Docker's overlay driver programs the kernel bridge: no learning, one
//! static rule per known MAC (local endpoint: its port; remote endpoint: its node's VXLAN port),
//! broadcast and multicast to every local port and every peer (from a VXLAN port: to the local
//! ports only, as the kernel's VXLAN device does not forward between its peers), and anything
//! else dropped. `br-phy` is the underlay NIC plus the host stack: `NORMAL` (learning) there.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vxmesh::config::Cluster;

use crate::lab::{Lab, run, truncate_ifname};

/// OVS's database schema as Debian's `openvswitch-common` installs it.
pub const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The integration bridge: the overlay switch.
pub const BR_INT: &str = "br-int";
/// The underlay bridge: `ul0` and the node's VTEP address.
pub const BR_PHY: &str = "br-phy";
/// The node's underlay interface in the lab.
const NODE_UL_IF: &str = "ul0";
/// OpenFlow port numbers of the VXLAN ports start here (local endpoints from 1).
const TUNNEL_OFPORT_BASE: u32 = 100;
/// How long to wait for a daemon's socket, and for it to stop after SIGTERM.
const DAEMON_WAIT: Duration = Duration::from_secs(10);

/// How OVS takes the container veths and `ul0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortType {
    /// `type=afxdp`: an AF_XDP socket on the interface, polled by a PMD thread.
    Afxdp,
    /// `type=system`: OVS's netdev-linux (a packet socket), polled by the main thread.
    System,
}

impl PortType {
    /// The `Interface.type` value.
    pub fn name(self) -> &'static str {
        match self {
            PortType::Afxdp => "afxdp",
            PortType::System => "system",
        }
    }
}

/// The choices for one OVS node.
#[derive(Clone, Debug)]
pub struct OvsOptions {
    /// The type of every interface OVS opens (the containers' veths and `ul0`).
    pub port_type: PortType,
    /// Pin the node's PMD thread to this CPU (`other_config:pmd-cpu-mask`); None: OVS's
    /// default (one PMD on the NUMA node's first core, so two nodes on one machine share it).
    pub pmd_core: Option<usize>,
    /// Let PMD threads sleep up to this many microseconds under low load
    /// (`other_config:pmd-maxsleep`, experimental in OVS 3.1); None: OVS's default, polling
    /// all the time.
    pub pmd_maxsleep_us: Option<u32>,
}

/// What `ovs-vsctl` and `ovs-ofctl` are given for one node (pure: see [`ovs_config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvsConfig {
    /// One `ovs-vsctl` transaction: the words after `ovs-vsctl --db=...`.
    pub vsctl: Vec<String>,
    /// `br-int`'s OpenFlow rules, one per line (`ovs-ofctl add-flows`).
    pub flows: String,
    /// The node's VTEP address with its prefix (moves from `ul0` to `br-phy`).
    pub vtep_cidr: String,
    /// The interfaces OVS opens: (name, bridge).
    pub interfaces: Vec<(String, &'static str)>,
}

/// The configuration of `node` as an OVS userspace node (see the module documentation):
/// endpoint ports `v{name}` (the lab's name for endpoints without `attach`) at OpenFlow ports
/// 1.., one VXLAN port per peer node at 100.., and `br-int`'s static rules.
pub fn ovs_config(cluster: &Cluster, node: &str, opts: &OvsOptions) -> Result<OvsConfig> {
    let (me, mine, net) = crate::lab::single_network_node(cluster, node, "an OVS node")?;
    let ty = opts.port_type.name();
    let mut v: Vec<String> = Vec::new();
    let mut cmd = |words: &[&str]| {
        if !v.is_empty() {
            v.push("--".into());
        }
        v.extend(words.iter().map(|w| w.to_string()));
    };
    if let Some(core) = opts.pmd_core {
        let mask = format!("other_config:pmd-cpu-mask=0x{:x}", 1u128 << core.min(127));
        cmd(&["set", "Open_vSwitch", ".", &mask]);
    }
    if let Some(us) = opts.pmd_maxsleep_us {
        let sleep = format!("other_config:pmd-maxsleep={us}");
        cmd(&["set", "Open_vSwitch", ".", &sleep]);
    }
    let mut interfaces = Vec::new();
    cmd(&["add-br", BR_PHY]);
    cmd(&["set", "bridge", BR_PHY, "datapath_type=netdev"]);
    cmd(&["add-port", BR_PHY, NODE_UL_IF]);
    cmd(&["set", "interface", NODE_UL_IF, &format!("type={ty}")]);
    interfaces.push((NODE_UL_IF.to_string(), BR_PHY));
    cmd(&["add-br", BR_INT]);
    cmd(&["set", "bridge", BR_INT, "datapath_type=netdev"]);
    cmd(&["set-fail-mode", BR_INT, "secure"]);
    let mut local = Vec::new();
    for (i, e) in mine.iter().enumerate() {
        let port = truncate_ifname(&format!("v{}", e.name));
        let ofport = i as u32 + 1;
        cmd(&["add-port", BR_INT, &port]);
        cmd(&[
            "set",
            "interface",
            &port,
            &format!("type={ty}"),
            &format!("ofport_request={ofport}"),
        ]);
        interfaces.push((port, BR_INT));
        local.push((e.mac.to_string(), ofport));
    }
    let mut remote = Vec::new();
    let mut tunnels = Vec::new();
    let peers = cluster.peers(&net.name);
    for (i, peer) in peers.iter().filter(|n| n.name != node).enumerate() {
        let port = truncate_ifname(&format!("vx-{}", peer.name));
        let ofport = TUNNEL_OFPORT_BASE + i as u32;
        cmd(&["add-port", BR_INT, &port]);
        cmd(&[
            "set",
            "interface",
            &port,
            "type=vxlan",
            &format!("ofport_request={ofport}"),
            &format!("options:remote_ip={}", peer.vtep),
            &format!("options:local_ip={}", me.vtep),
            &format!("options:key={}", net.vni),
            "options:dst_port=4789",
        ]);
        tunnels.push(ofport);
        for e in cluster
            .endpoints
            .iter()
            .filter(|e| e.node == peer.name && e.network == net.name)
        {
            remote.push((e.mac.to_string(), ofport));
        }
    }
    let outputs = |ports: &mut dyn Iterator<Item = u32>| {
        ports
            .map(|p| format!("output:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let all_local = outputs(&mut local.iter().map(|l| l.1));
    let everyone = outputs(&mut local.iter().map(|l| l.1).chain(tunnels.iter().copied()));
    const MULTICAST: &str = "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00";
    let mut flows = String::new();
    flows += "priority=0,actions=drop\n";
    // Output to the input port is skipped by OVS, so one rule floods from any local port.
    let _ = writeln!(flows, "priority=10,{MULTICAST},actions={everyone}");
    for t in &tunnels {
        let _ = writeln!(
            flows,
            "priority=20,in_port={t},{MULTICAST},actions={all_local}"
        );
    }
    for (mac, port) in local.iter().chain(remote.iter()) {
        let _ = writeln!(flows, "priority=30,dl_dst={mac},actions=output:{port}");
    }
    Ok(OvsConfig {
        vsctl: v,
        flows,
        vtep_cidr: format!("{}/24", me.vtep),
        interfaces,
    })
}

/// One OVS userspace node of a lab: its two daemons (children of this process, inside the
/// node's namespace) and their folder. Dropping it stops them by PID (SIGTERM, SIGKILL after
/// 10 s) and removes the folder.
pub struct OvsNode {
    /// The node's namespace.
    pub netns: String,
    /// Where the database, sockets, pid files and logs are.
    pub dir: PathBuf,
    /// The interfaces OVS opened, with the type each ended up with (an AF_XDP port OVS could
    /// not open is retried as `system`), and why it fell back: (name, type, error).
    pub ports: Vec<(String, String, String)>,
    children: Vec<Child>,
}

impl OvsNode {
    /// `ovs-vsctl --db=unix:{dir}/db.sock ARGS` (run from the root namespace: it only talks to
    /// the socket).
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        vsctl(&self.dir, args)
    }

    /// `ovs-appctl -t {dir}/ovs-vswitchd.ctl ARGS`.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        let target = self.dir.join("ovs-vswitchd.ctl").display().to_string();
        let mut argv = vec!["ovs-appctl", "--timeout=10", "-t", &target];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// `ovs-ofctl dump-flows` of `br-int` (with packet counts).
    pub fn dump_flows(&self) -> Result<String> {
        let mgmt = format!("unix:{}/{BR_INT}.mgmt", self.dir.display());
        run(&["ovs-ofctl", "--timeout=10", "dump-flows", &mgmt])
    }

    /// Stop the daemons (by PID: vswitchd first, so it detaches its XDP programs while the
    /// database is still there) and remove the folder. Safe to call more than once.
    pub fn stop(&mut self) {
        while let Some(mut c) = self.children.pop() {
            stop_child(&mut c);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for OvsNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM, wait (bounded), SIGKILL, reap.
fn stop_child(c: &mut Child) {
    if matches!(c.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(c.id()) {
        // SAFETY: kill(2) on the positive pid of our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let end = Instant::now() + DAEMON_WAIT;
    while Instant::now() < end {
        if matches!(c.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Make `node` of a built lab an OVS userspace node (see the module documentation), with its
/// daemons' files in `dir` (created; removed again when the node is dropped). On failure,
/// whatever it started is stopped and the folder removed.
pub fn build_ovs_node(
    lab: &Lab,
    cluster: &Cluster,
    node: &str,
    dir: &Path,
    opts: &OvsOptions,
) -> Result<OvsNode> {
    let cfg = ovs_config(cluster, node, opts)?;
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut n = OvsNode {
        netns: lab.node_netns(node),
        dir: dir.to_path_buf(),
        ports: Vec::new(),
        children: Vec::new(),
    };
    // On an error `n` is dropped: daemons stopped, folder removed.
    start_daemons(&mut n)?;
    let mut argv: Vec<&str> = vec!["--timeout=20"];
    argv.extend(cfg.vsctl.iter().map(String::as_str));
    n.vsctl(&argv).context("configuring the bridges")?;
    // Interfaces OVS could not open as AF_XDP: retried as system ports.
    for (ifname, _) in &cfg.interfaces {
        let err = n
            .vsctl(&["--bare", "get", "interface", ifname, "error"])
            .unwrap_or_default();
        let err = err.trim().trim_matches('"').to_string();
        if !err.is_empty() && err != "[]" && opts.port_type == PortType::Afxdp {
            n.vsctl(&["--timeout=20", "set", "interface", ifname, "type=system"])?;
            n.ports
                .push((ifname.clone(), PortType::System.name().into(), err));
        } else if !err.is_empty() && err != "[]" {
            bail!("OVS could not open {ifname} in {}: {err}", n.netns);
        } else {
            n.ports
                .push((ifname.clone(), opts.port_type.name().into(), String::new()));
        }
    }
    let ns = n.netns.clone();
    run(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "del",
        &cfg.vtep_cidr,
        "dev",
        NODE_UL_IF,
    ])?;
    run(&["ip", "-n", &ns, "link", "set", BR_PHY, "up"])?;
    run(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &cfg.vtep_cidr,
        "dev",
        BR_PHY,
    ])?;
    run(&["ip", "-n", &ns, "link", "set", BR_INT, "up"])?;
    let flows = dir.join("br-int.flows");
    std::fs::write(&flows, &cfg.flows)?;
    let mgmt = format!("unix:{}/{BR_INT}.mgmt", dir.display());
    run(&[
        "ovs-ofctl",
        "--timeout=10",
        "add-flows",
        &mgmt,
        &flows.display().to_string(),
    ])?;
    Ok(n)
}

/// Start `ovsdb-server` (fresh database) and `ovs-vswitchd` in the node's namespace, their
/// sockets, pid files and logs in the node's folder; returns once each answers.
fn start_daemons(n: &mut OvsNode) -> Result<()> {
    let d = n.dir.clone();
    let p = |f: &str| d.join(f).display().to_string();
    let db = p("conf.db");
    run(&["ovsdb-tool", "create", &db, OVS_SCHEMA])?;
    let db_sock = p("db.sock");
    let server = spawn_in(
        &n.netns,
        &d,
        &[
            "ovsdb-server",
            &db,
            &format!("--remote=punix:{db_sock}"),
            &format!("--pidfile={}", p("ovsdb-server.pid")),
            &format!("--unixctl={}", p("ovsdb-server.ctl")),
            &format!("--log-file={}", p("ovsdb-server.log")),
            "--no-chdir",
        ],
    )?;
    n.children.push(server);
    wait_for(&n.children[0], Path::new(&db_sock), "ovsdb-server")?;
    vsctl(&d, &["--no-wait", "init"])?;
    let vswitchd = spawn_in(
        &n.netns,
        &d,
        &[
            "ovs-vswitchd",
            &format!("unix:{db_sock}"),
            "--disable-system",
            &format!("--pidfile={}", p("ovs-vswitchd.pid")),
            &format!("--unixctl={}", p("ovs-vswitchd.ctl")),
            &format!("--log-file={}", p("ovs-vswitchd.log")),
            "--no-chdir",
        ],
    )?;
    n.children.push(vswitchd);
    wait_for(
        &n.children[1],
        Path::new(&p("ovs-vswitchd.ctl")),
        "ovs-vswitchd",
    )
}

/// `ip netns exec NS ARGS` as a child (ip execs the program: the child's pid is the daemon's),
/// with OVS's directories pointed at `dir`.
fn spawn_in(ns: &str, dir: &Path, args: &[&str]) -> Result<Child> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
        c.env(var, dir);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} in {ns}", args[0]))
}

/// Wait (bounded) until `sock` exists; fails if the daemon exited.
fn wait_for(child: &Child, sock: &Path, what: &str) -> Result<()> {
    let end = Instant::now() + DAEMON_WAIT;
    let pid = child.id();
    while !sock.exists() {
        // Exited already? (`try_wait` needs &mut; /proc tells without reaping.)
        if !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        {
            bail!(
                "{what} exited at start (its log is in {})",
                sock.parent().unwrap_or(sock).display()
            );
        }
        if Instant::now() > end {
            bail!(
                "{what} did not create {} within {DAEMON_WAIT:?}",
                sock.display()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn vsctl(dir: &Path, args: &[&str]) -> Result<String> {
    let db = format!("--db=unix:{}/db.sock", dir.display());
    let mut argv = vec!["ovs-vsctl", &db];
    argv.extend_from_slice(args);
    run(&argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    fn cluster() -> Cluster {
        let mut f = Fixture::new("t-");
        f.remove_all("ingress").unset_all("endpoint", "attach");
        let text = f.text();
        Cluster::parse(&std::env::temp_dir().join("x.toml"), &text).unwrap()
    }

    #[test]
    fn n1_gets_its_ports_one_tunnel_and_static_rules() {
        let c = cluster();
        let opts = OvsOptions {
            port_type: PortType::Afxdp,
            pmd_core: Some(1),
            pmd_maxsleep_us: None,
        };
        let cfg = ovs_config(&c, "n1", &opts).unwrap();
        let line = cfg.vsctl.join(" ");
        assert!(
            line.starts_with("set Open_vSwitch . other_config:pmd-cpu-mask=0x2 -- add-br br-phy")
        );
        assert!(line.contains("set bridge br-int datapath_type=netdev"));
        assert!(line.contains("set interface vc11 type=afxdp ofport_request=1"));
        assert!(line.contains("set interface vc12 type=afxdp ofport_request=2"));
        assert!(line.contains(
            "add-port br-int vx-n2 -- set interface vx-n2 type=vxlan ofport_request=100 options:remote_ip=198.18.0.2 options:local_ip=198.18.0.1 options:key=4097"
        ));
        assert_eq!(cfg.vtep_cidr, "198.18.0.1/24");
        let names: Vec<&str> = cfg.interfaces.iter().map(|i| i.0.as_str()).collect();
        assert_eq!(names, ["ul0", "vc11", "vc12"]);
        let flows: Vec<&str> = cfg.flows.lines().collect();
        assert_eq!(
            flows,
            [
                "priority=0,actions=drop",
                "priority=10,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=output:1,output:2,output:100",
                "priority=20,in_port=100,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=output:1,output:2",
                "priority=30,dl_dst=02:42:0a:00:09:0b,actions=output:1",
                "priority=30,dl_dst=02:42:0a:00:09:0c,actions=output:2",
                "priority=30,dl_dst=02:42:0a:00:09:15,actions=output:100",
                "priority=30,dl_dst=02:42:0a:00:09:16,actions=output:100",
            ]
        );
    }

    #[test]
    fn system_ports_and_no_pinning() {
        let c = cluster();
        let opts = OvsOptions {
            port_type: PortType::System,
            pmd_core: None,
            pmd_maxsleep_us: None,
        };
        let cfg = ovs_config(&c, "n2", &opts).unwrap();
        let line = cfg.vsctl.join(" ");
        assert!(line.starts_with("add-br br-phy"));
        let sleepy = OvsOptions {
            pmd_maxsleep_us: Some(500),
            ..opts.clone()
        };
        let line2 = ovs_config(&c, "n2", &sleepy).unwrap().vsctl.join(" ");
        assert!(line2.starts_with("set Open_vSwitch . other_config:pmd-maxsleep=500 -- add-br"));
        assert!(line.contains("set interface ul0 type=system"));
        assert!(line.contains("set interface vc21 type=system ofport_request=1"));
        assert!(line.contains("options:remote_ip=198.18.0.1 options:local_ip=198.18.0.2"));
        assert!(ovs_config(&c, "nope", &opts).is_err());
    }
}
