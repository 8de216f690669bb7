//! The node's side of the CNI plugin (SPEC.md, "Attaching containers: the CNI plugin"):
//! container attachments a runtime asks for through `vxmesh-cni`, off the packet path.
//!
//! Where it sits: on the control side of `vxmesh run`, next to the cluster file and the store as
//! a source of desired state. The plugin binary (`src/bin/vxmesh-cni.rs`) is a thin shim that
//! forwards each CNI call over the control socket ([`CniCall`] in a
//! [`Request`](crate::daemon::Request)); here an ADD allocates an address, creates the veth (or
//! names the TAP) in the container's namespace, and adds the attachment as an endpoint of the
//! node's desired state, which is applied through the node's one change path like a reloaded
//! file (the AF_XDP port or TAP opened by `Change::prepare`, committed between batches):
//!
//! ```text
//! runtime ─► vxmesh-cni ─► control socket ─► cni::handle ─► veth in CNI_NETNS ─► change_to(
//!     source (file or store) + local attachments) ─► Change::prepare ─► commit ─► result
//! ```
//!
//! The desired state is the source's [`Cluster`] plus the node's local attachments
//! ([`merge`]). Attachments are local to the node: other nodes do not learn them (their
//! traffic to a local attachment is flooded as unknown unicast, and services on other nodes
//! do not balance to it). Addresses come from the network's subnet, never one of an endpoint,
//! VIP, load-balancer or resolver address of the cluster; each node allocates only in its own
//! block of the subnet (the host addresses split evenly in the cluster's node order), so two
//! nodes never hand out the same address without talking to each other.
//!
//! Attachments are keyed by (network, container ID, interface name) and kept in a state file
//! beside the control socket (`/run/vxmesh/NODE.cni.json`), so they come back when the node
//! restarts (those whose interface is gone are dropped) and a DEL works after a restart.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vswitch::Mac;

use crate::config::{Attach, Cluster, Endpoint, NetworkCfg, is_dns_label};

/// The CNI spec versions `vxmesh-cni` speaks (CNI 1.0.0, and 1.1.0 for STATUS and GC).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// Prefix of the node side of a container's veth (`vx` + 12 hex digits of the attachment's key).
pub const HOST_IF_PREFIX: &str = "vx";

/// CNI error codes: the spec's well-known ones, and vxmesh's own from 100.
pub mod code {
    /// The config's `cniVersion` is not one the plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// The config has a field the plugin does not support (`ipam`).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// CHECK for a container that is not attached.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A CNI_* variable is missing or wrong.
    pub const INVALID_ENV: u32 = 4;
    /// Input/output failure (the control socket).
    pub const IO: u32 = 5;
    /// The config is not JSON.
    pub const DECODE: u32 = 6;
    /// The config is JSON but wrong (no `network`, an unknown network, a bad `attach`).
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (the node is not reachable).
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot serve ADDs (the node is not reachable).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The node refused the change or a system call failed.
    pub const FAILED: u32 = 100;
    /// `CNI_IFNAME` exists already in `CNI_NETNS`.
    pub const INTERFACE_EXISTS: u32 = 101;
    /// The node's block of the network's subnet has no free address.
    pub const NO_ADDRESS: u32 = 102;
    /// ADD for an attachment that exists already.
    pub const ALREADY_ATTACHED: u32 = 103;
}

/// A CNI error object, as the plugin prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// The spec version of the call.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Error code (see [`code`]).
    pub code: u32,
    /// One-line message.
    pub msg: String,
    /// More detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            cni_version: "1.0.0".into(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    /// With `details`.
    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }
    /// As JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("errors serialize")
    }
}

/// One plugin call as the node receives it: the CNI environment and the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniCall {
    /// `CNI_CONTAINERID`.
    #[serde(default)]
    pub container_id: String,
    /// `CNI_NETNS`.
    #[serde(default)]
    pub netns: String,
    /// `CNI_IFNAME`.
    #[serde(default)]
    pub ifname: String,
    /// `CNI_ARGS`.
    #[serde(default)]
    pub args: String,
    /// The network config from the plugin's standard input.
    pub config: Value,
}

/// A CNI command the node serves (VERSION is answered by the plugin itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// STATUS.
    Status,
    /// GC.
    Gc,
}

/// One container attached through CNI, as the state file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The vxmesh network (`network` in the config).
    pub network: String,
    /// The CNI network name (`name` in the config): GC's scope.
    pub cni_name: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The endpoint's name (K8S_POD_NAME, else the container ID).
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Attached by a TAP (else a veth with AF_XDP on its node side).
    pub tap: bool,
    /// The node side of the veth (empty for a TAP).
    pub host_if: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// Its DNS aliases.
    pub aliases: Vec<String>,
    /// Services it is a backend of (aliases that name a service of its network).
    pub services: Vec<String>,
}

impl Attachment {
    fn key(&self) -> (&str, &str, &str) {
        (&self.network, &self.container_id, &self.ifname)
    }
    /// Its MAC: 02:42 and its address, as Docker's.
    pub fn mac(&self) -> Mac {
        Mac::docker_default(self.ip)
    }
}

/// The node side of the veth of attachment (network, container, ifname): a stable name, so a
/// DEL after a crash finds what an ADD left.
pub fn host_if_name(network: &str, container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and versions (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in network
        .bytes()
        .chain([0])
        .chain(container_id.bytes())
        .chain([0])
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{HOST_IF_PREFIX}{:012x}", h >> 16)
}

/// The node's desired state as far as CNI is concerned: the source's cluster (file or store) and
/// the local attachments. Held under the daemon's change lock: one change at a time.
pub struct Local {
    /// This node's name.
    pub node: String,
    /// The last cluster applied from the file or the store.
    pub source: Cluster,
    /// The attachments, in the order they came.
    pub atts: Vec<Attachment>,
    /// Where they are kept.
    pub state_file: PathBuf,
}

/// The state file of the node whose control socket is `control`: beside it, `NAME.cni.json`.
pub fn state_file(control: &Path) -> PathBuf {
    control.with_extension("cni.json")
}

impl Local {
    /// The attachments kept in `state_file`, those whose interface is gone left out (with a
    /// message each), merged with `source` (an attachment that collides with it is left out too).
    pub fn load(node: &str, source: Cluster, state_file: PathBuf) -> (Local, Vec<String>) {
        let mut notes = Vec::new();
        let atts: Vec<Attachment> = match std::fs::read(&state_file) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                notes.push(format!(
                    "{}: unreadable ({e}); starting without CNI attachments",
                    state_file.display()
                ));
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let mut local = Local {
            node: node.to_string(),
            source,
            atts: Vec::new(),
            state_file,
        };
        for a in atts {
            let present = if a.tap {
                Path::new(&a.netns).exists()
            } else {
                vswitch::port::iface::index_of(&a.host_if).is_some()
            };
            if !present {
                notes.push(format!(
                    "CNI attachment {} (container {}, {}): its interface is gone; dropped",
                    a.name, a.container_id, a.ifname
                ));
                continue;
            }
            local.atts.push(a);
            if let Err(e) = merge(&local.source, &local.node, &local.atts) {
                let a = local.atts.pop().expect("just pushed");
                notes.push(format!("CNI attachment {}: {e}; dropped", a.name));
            }
        }
        if !notes.is_empty() {
            let _ = local.save();
        }
        (local, notes)
    }

    /// The desired state with `source` as the file's or store's part.
    pub fn desired(&self, source: &Cluster) -> Result<Cluster, String> {
        merge(source, &self.node, &self.atts)
    }

    /// Write the attachments to the state file (removed when there are none).
    pub fn save(&self) -> io::Result<()> {
        if self.atts.is_empty() {
            return match std::fs::remove_file(&self.state_file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = self.state_file.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.atts).map_err(io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.state_file)
    }

    fn find(&self, network: &str, cid: &str, ifname: &str) -> Option<usize> {
        self.atts
            .iter()
            .position(|a| a.key() == (network, cid, ifname))
    }
}

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
            (Attach::Afxdp(a.host_if.clone()), None)
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

/// Every address of the cluster (endpoints, VIPs, load-balancer addresses, resolvers), with
/// what it is.
fn used_addresses(c: &Cluster) -> HashMap<Ipv4Addr, String> {
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

/// The name of a namespace given as `/run/netns/NAME`.
fn named_netns(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix(vswitch::port::netns::NETNS_DIR)?
        .strip_prefix('/')?;
    vswitch::port::netns::valid_name(rest).then(|| rest.to_string())
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
    let hosts = (1u32 << (32 - u32::from(net.subnet.prefix))) - 2;
    let n = c.nodes.len().max(1) as u32;
    let i = c.nodes.iter().position(|x| x.name == node).unwrap_or(0) as u32;
    let size = hosts / n;
    let lo = 1 + i * size;
    let hi = if i + 1 == n { hosts } else { lo + size - 1 };
    (lo..=hi)
        .map(|k| Ipv4Addr::from(base + k))
        .find(|ip| !used.contains_key(ip) && !taken.contains(ip))
}

/// The config of a call, read.
struct Conf {
    version: String,
    cni_name: String,
    network: String,
    tap: bool,
    aliases: Vec<String>,
}

fn conf_version(v: &Value) -> Result<String, CniError> {
    let version = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {version:?} is not supported: vxmesh-cni speaks {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    Ok(version)
}

fn parse_conf(v: &Value) -> Result<Conf, CniError> {
    let version = conf_version(v)?;
    let err = |m: String| CniError {
        cni_version: version.clone(),
        ..CniError::new(code::INVALID_CONFIG, m)
    };
    let network = match v.get("network") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(err(
                "\"network\" must be the name of a vxmesh network".into()
            ));
        }
        None => {
            return Err(err(
                "the config has no \"network\": name the vxmesh network to attach to".into(),
            ));
        }
    };
    if v.get("ipam").is_some() {
        return Err(CniError {
            cni_version: version.clone(),
            ..CniError::new(
                code::UNSUPPORTED_FIELD,
                "\"ipam\" is not supported yet: vxmesh allocates the address itself (leave \"ipam\" out)",
            )
        });
    }
    let tap = match v.get("attach").and_then(Value::as_str) {
        None | Some("afxdp") => false,
        Some("tap") => true,
        Some(o) => {
            return Err(err(format!(
                "\"attach\": {o:?} is not \"afxdp\" or \"tap\""
            )));
        }
    };
    let cni_name = v
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // runtimeConfig.aliases: a list, or (podman's CNI backend, the dnsname convention) a map
    // from the CNI network's name to a list.
    let mut aliases = Vec::new();
    match v.pointer("/runtimeConfig/aliases") {
        Some(Value::Array(a)) => {
            aliases.extend(a.iter().filter_map(Value::as_str).map(String::from))
        }
        Some(Value::Object(m)) => {
            for (k, a) in m {
                if (k == &cni_name || m.len() == 1)
                    && let Some(a) = a.as_array()
                {
                    aliases.extend(a.iter().filter_map(Value::as_str).map(String::from));
                }
            }
        }
        _ => {}
    }
    Ok(Conf {
        version,
        cni_name,
        network,
        tap,
        aliases,
    })
}

/// `K8S_POD_NAME` from `CNI_ARGS` (`K=V;K=V`).
fn pod_name(args: &str) -> Option<String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "K8S_POD_NAME")
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// Make `cluster` the node's state through its change path: what changed, or why not.
pub type Apply<'a> =
    dyn FnMut(Cluster) -> Pin<Box<dyn Future<Output = Result<String, String>> + 'a>> + 'a;

/// What a served call prints on success: the result (ADD), nothing (the rest), and for CHECK
/// the endpoint whose port must be in the switch.
pub enum Served {
    /// Print this.
    Out(String),
    /// CHECK passed here; the port of this endpoint must be attached.
    CheckPort(String),
}

/// Serve one call. `apply` makes a desired state the node's (the daemon's change path).
pub async fn handle(
    op: Op,
    call: CniCall,
    local: &mut Local,
    apply: &mut Apply<'_>,
) -> Result<Served, CniError> {
    match op {
        Op::Status => {
            conf_version(&call.config)?;
            Ok(Served::Out(String::new()))
        }
        Op::Add => add(call, local, apply).await.map(Served::Out),
        Op::Del => del(call, local, apply)
            .await
            .map(|()| Served::Out(String::new())),
        Op::Check => check(call, local).await.map(Served::CheckPort),
        Op::Gc => gc(call, local, apply)
            .await
            .map(|()| Served::Out(String::new())),
    }
}

fn failed(version: &str, msg: impl Into<String>) -> CniError {
    CniError {
        cni_version: version.to_string(),
        ..CniError::new(code::FAILED, msg)
    }
}

fn with_version(version: &str, code: u32, msg: impl Into<String>) -> CniError {
    CniError {
        cni_version: version.to_string(),
        ..CniError::new(code, msg)
    }
}

/// Run `f` on a thread of its own that has entered the network namespace at `path`; the thread
/// ends with `f`, so it never has to come back.
fn in_netns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(path)?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a descriptor we own; it moves only this thread, which ends here.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    })
}

/// Whether `path` is a network namespace (a file of nsfs of type CLONE_NEWNET).
fn is_netns(path: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    /// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
    const NS_GET_NSTYPE: libc::Ioctl = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor's namespace.
    let t = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE) };
    if t < 0 {
        return Err(format!("{path} is not a namespace"));
    }
    if t != libc::CLONE_NEWNET {
        return Err(format!("{path} is a namespace but not a network namespace"));
    }
    Ok(())
}

/// Run `ip ARGS` in the calling thread's namespace.
fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

/// Create the veth of `a` (node side in the node's namespace, container side `a.ifname` in
/// `a.netns`) and configure it: MAC, MTU, address, up, TX checksum offload, TSO and GSO off on
/// the container side (AF_XDP gets frames as the container built them). Removes what it made if
/// any step fails.
fn create_veth(a: &Attachment, mtu: u16, prefix: u8) -> Result<(), String> {
    let mtu = mtu.to_string();
    let mac = a.mac().to_string();
    ip(&[
        "link", "add", &a.host_if, "mtu", &mtu, "type", "veth", "peer", "name", &a.ifname, "mtu",
        &mtu, "address", &mac, "netns", &a.netns,
    ])?;
    let configured = ip(&["link", "set", &a.host_if, "up"]).and_then(|()| {
        let addr = format!("{}/{prefix}", a.ip);
        in_netns(&a.netns, || {
            ip(&["addr", "add", &addr, "dev", &a.ifname])?;
            ip(&["link", "set", &a.ifname, "up"])?;
            vswitch::port::ethtool::disable_offloads(None, &a.ifname)
                .map_err(|e| format!("turning offloads off on {}: {e}", a.ifname))
        })
        .map_err(|e| format!("{}: {e}", a.netns))?
    });
    if configured.is_err() {
        delete_veth(&a.host_if);
    }
    configured
}

/// Delete the veth whose node side is `host_if`, if it is there (its peer goes with it).
fn delete_veth(host_if: &str) {
    if vswitch::port::iface::index_of(host_if).is_some() {
        let _ = ip(&["link", "del", host_if]);
    }
}

/// Whether interface `ifname` exists in the namespace at `netns`.
fn exists_in(netns: &str, ifname: &str) -> io::Result<bool> {
    in_netns(netns, || vswitch::port::iface::index_of(ifname).is_some())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a blocking CNI task panicked")
}

async fn add(call: CniCall, local: &mut Local, apply: &mut Apply<'_>) -> Result<String, CniError> {
    let conf = parse_conf(&call.config)?;
    let v = conf.version.clone();
    let net = local
        .source
        .network(&conf.network)
        .cloned()
        .ok_or_else(|| {
            let nets: Vec<&str> = local
                .source
                .networks
                .iter()
                .map(|n| n.name.as_str())
                .collect();
            with_version(
                &v,
                code::INVALID_CONFIG,
                format!(
                    "unknown network {:?} (this node's cluster has: {})",
                    conf.network,
                    nets.join(", ")
                ),
            )
        })?;
    if call.container_id.is_empty() {
        return Err(with_version(
            &v,
            code::INVALID_ENV,
            "CNI_CONTAINERID is not set",
        ));
    }
    if !vswitch::port::iface::valid_ifname(&call.ifname) {
        return Err(with_version(
            &v,
            code::INVALID_ENV,
            format!("CNI_IFNAME {:?} is not an interface name", call.ifname),
        ));
    }
    if call.netns.is_empty() {
        return Err(with_version(&v, code::INVALID_ENV, "CNI_NETNS is not set"));
    }
    let ns = call.netns.clone();
    blocking(move || is_netns(&ns))
        .await
        .map_err(|e| with_version(&v, code::INVALID_ENV, format!("CNI_NETNS: {e}")))?;
    if conf.tap && named_netns(&call.netns).is_none() {
        return Err(with_version(
            &v,
            code::INVALID_CONFIG,
            format!(
                "\"attach\": \"tap\" needs CNI_NETNS under /run/netns (a named namespace), not {}",
                call.netns
            ),
        ));
    }
    if local
        .find(&conf.network, &call.container_id, &call.ifname)
        .is_some()
    {
        return Err(with_version(
            &v,
            code::ALREADY_ATTACHED,
            format!(
                "container {} is attached to {} as {} already (DEL it first)",
                call.container_id, conf.network, call.ifname
            ),
        ));
    }
    let (ns, ifn) = (call.netns.clone(), call.ifname.clone());
    match blocking(move || exists_in(&ns, &ifn)).await {
        Ok(false) => {}
        Ok(true) => {
            return Err(with_version(
                &v,
                code::INTERFACE_EXISTS,
                format!("interface {} exists already in {}", call.ifname, call.netns),
            ));
        }
        Err(e) => return Err(failed(&v, format!("entering {}: {e}", call.netns))),
    }
    let ip = allocate(&local.source, &local.node, &local.atts, &net).ok_or_else(|| {
        with_version(
            &v,
            code::NO_ADDRESS,
            format!(
                "no free address in network {:?} ({}) for node {}",
                net.name, net.subnet, local.node
            ),
        )
    })?;
    let name = pod_name(&call.args).unwrap_or_else(|| call.container_id.clone());
    let services: Vec<&str> = local
        .source
        .services
        .iter()
        .filter(|s| s.network == net.name)
        .map(|s| s.name.as_str())
        .collect();
    let (mut aliases, mut backend_of) = (Vec::new(), Vec::new());
    for a in &conf.aliases {
        if let Some(s) = services.iter().find(|s| s.eq_ignore_ascii_case(a)) {
            if !backend_of.contains(&s.to_string()) {
                backend_of.push(s.to_string());
            }
        } else if is_dns_label(a)
            && !a.eq_ignore_ascii_case(&name)
            && !aliases.iter().any(|x: &String| x.eq_ignore_ascii_case(a))
        {
            aliases.push(a.clone());
        }
    }
    let att = Attachment {
        network: net.name.clone(),
        cni_name: conf.cni_name.clone(),
        container_id: call.container_id.clone(),
        ifname: call.ifname.clone(),
        name,
        ip,
        tap: conf.tap,
        host_if: if conf.tap {
            String::new()
        } else {
            host_if_name(&net.name, &call.container_id, &call.ifname)
        },
        netns: call.netns.clone(),
        aliases,
        services: backend_of,
    };
    local.atts.push(att.clone());
    let desired = match local.desired(&local.source) {
        Ok(d) => d,
        Err(e) => {
            local.atts.pop();
            return Err(failed(&v, e));
        }
    };
    if !att.tap {
        let (a, mtu, prefix) = (att.clone(), net.mtu, net.subnet.prefix);
        if let Err(e) = blocking(move || create_veth(&a, mtu, prefix)).await {
            local.atts.pop();
            return Err(failed(&v, format!("creating the veth: {e}")));
        }
    }
    let undo_veth = |att: &Attachment| {
        let host = att.host_if.clone();
        let tap = att.tap;
        async move {
            if !tap {
                blocking(move || delete_veth(&host)).await;
            }
        }
    };
    if let Err(e) = apply(desired).await {
        local.atts.pop();
        undo_veth(&att).await;
        return Err(failed(&v, "the node refused the attachment").details(e));
    }
    if let Err(e) = local.save() {
        local.atts.pop();
        let back = local.desired(&local.source);
        if let Ok(back) = back {
            let _ = apply(back).await;
        }
        undo_veth(&att).await;
        return Err(failed(
            &v,
            format!("writing {}: {e}", local.state_file.display()),
        ));
    }
    Ok(result(&att, &net, &v).to_string())
}

/// The ADD result (CNI 1.0.0's shape): the interfaces (the node side, the container side with
/// its `sandbox`), the address on the container side, the network's resolver.
pub fn result(a: &Attachment, net: &NetworkCfg, version: &str) -> Value {
    let mut interfaces = Vec::new();
    if !a.tap {
        interfaces.push(json!({ "name": a.host_if }));
    }
    interfaces.push(json!({ "name": a.ifname, "mac": a.mac().to_string(), "sandbox": a.netns }));
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": [{ "address": format!("{}/{}", a.ip, net.subnet.prefix), "interface": interfaces.len() - 1 }],
        "dns": { "nameservers": [net.dns.to_string()] },
    })
}

/// Take attachment `i` out of the node: the desired state without it applied, its veth deleted
/// (a TAP goes with its port), the state file written.
async fn detach(i: usize, local: &mut Local, apply: &mut Apply<'_>) -> Result<(), String> {
    let att = local.atts.remove(i);
    let desired = match local.desired(&local.source) {
        Ok(d) => d,
        Err(e) => {
            local.atts.insert(i, att);
            return Err(e);
        }
    };
    if let Err(e) = apply(desired).await {
        local.atts.insert(i, att);
        return Err(e);
    }
    if !att.tap {
        let host = att.host_if.clone();
        blocking(move || delete_veth(&host)).await;
    }
    local
        .save()
        .map_err(|e| format!("writing {}: {e}", local.state_file.display()))
}

async fn del(call: CniCall, local: &mut Local, apply: &mut Apply<'_>) -> Result<(), CniError> {
    let v = conf_version(&call.config)?;
    // DEL must succeed when there is nothing to delete: no network in the config, an unknown
    // attachment, a second DEL.
    let Some(network) = call.config.get("network").and_then(Value::as_str) else {
        return Ok(());
    };
    match local.find(network, &call.container_id, &call.ifname) {
        Some(i) => detach(i, local, apply).await.map_err(|e| failed(&v, e)),
        None => {
            // An ADD that died half-way (the node killed) may have left its veth.
            let host = host_if_name(network, &call.container_id, &call.ifname);
            blocking(move || delete_veth(&host)).await;
            Ok(())
        }
    }
}

async fn check(call: CniCall, local: &mut Local) -> Result<String, CniError> {
    let conf = parse_conf(&call.config)?;
    let v = conf.version.clone();
    let net = local
        .source
        .network(&conf.network)
        .cloned()
        .ok_or_else(|| {
            with_version(
                &v,
                code::INVALID_CONFIG,
                format!("unknown network {:?}", conf.network),
            )
        })?;
    let i = local
        .find(&conf.network, &call.container_id, &call.ifname)
        .ok_or_else(|| {
            with_version(
                &v,
                code::UNKNOWN_CONTAINER,
                format!(
                    "container {} has no attachment {} in network {}",
                    call.container_id, call.ifname, conf.network
                ),
            )
        })?;
    let a = local.atts[i].clone();
    let want = format!("{}/{}", a.ip, net.subnet.prefix);
    let (ns, ifn, host, tap) = (a.netns.clone(), a.ifname.clone(), a.host_if.clone(), a.tap);
    let seen = blocking(move || -> Result<(), String> {
        if !tap && vswitch::port::iface::index_of(&host).is_none() {
            return Err(format!("the node side {host} of the veth is gone"));
        }
        let out = in_netns(&ns, || {
            Command::new("ip")
                .args(["-o", "-4", "addr", "show", "dev", &ifn])
                .output()
        })
        .map_err(|e| format!("{ns}: {e}"))?
        .map_err(|e| format!("running ip: {e}"))?;
        if !out.status.success() {
            return Err(format!("interface {ifn} is not in {ns}"));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.split_whitespace().any(|w| w == want) {
            return Err(format!(
                "interface {ifn} in {ns} does not have address {want}"
            ));
        }
        Ok(())
    })
    .await;
    seen.map_err(|e| failed(&v, format!("CHECK failed: {e}")))?;
    Ok(a.name)
}

async fn gc(call: CniCall, local: &mut Local, apply: &mut Apply<'_>) -> Result<(), CniError> {
    let v = conf_version(&call.config)?;
    let name = call
        .config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let valid: HashSet<(String, String)> = call
        .config
        .get("cni.dev/valid-attachments")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|x| {
                    Some((
                        x.get("containerID")?.as_str()?.to_string(),
                        x.get("ifname")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut errors = Vec::new();
    while let Some(i) = local.atts.iter().position(|a| {
        a.cni_name == name && !valid.contains(&(a.container_id.clone(), a.ifname.clone()))
    }) {
        let what = local.atts[i].name.clone();
        if let Err(e) = detach(i, local, apply).await {
            errors.push(format!("{what}: {e}"));
            break;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(failed(&v, "GC could not remove every attachment").details(errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        let text = include_str!("../tests/fixtures/cluster.toml").replace("{P}", "t");
        Cluster::parse(Path::new("cluster.toml"), &text).unwrap()
    }

    fn att(name: &str, ip: [u8; 4]) -> Attachment {
        Attachment {
            network: "appnet".into(),
            cni_name: "appnet".into(),
            container_id: format!("id-{name}"),
            ifname: "eth0".into(),
            name: name.into(),
            ip: Ipv4Addr::from(ip),
            tap: false,
            host_if: host_if_name("appnet", &format!("id-{name}"), "eth0"),
            netns: format!("/run/netns/{name}"),
            aliases: vec![format!("{name}-alias")],
            services: vec!["web".into()],
        }
    }

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

    #[test]
    fn configs_are_read_with_their_versions_aliases_and_errors() {
        let ok = json!({"cniVersion": "1.0.0", "name": "appnet", "network": "appnet",
            "runtimeConfig": {"aliases": {"appnet": ["web", "api"]}}});
        let c = parse_conf(&ok).unwrap();
        assert_eq!((c.network.as_str(), c.tap), ("appnet", false));
        assert_eq!(c.aliases, ["web", "api"]);
        let list = json!({"cniVersion": "1.1.0", "network": "n", "attach": "tap",
            "runtimeConfig": {"aliases": ["a"]}});
        let c = parse_conf(&list).unwrap();
        assert!(c.tap);
        assert_eq!(c.aliases, ["a"]);
        for (bad, code) in [
            (
                json!({"cniVersion": "0.3.1", "network": "n"}),
                code::INCOMPATIBLE_VERSION,
            ),
            (json!({"cniVersion": "1.0.0"}), code::INVALID_CONFIG),
            (
                json!({"cniVersion": "1.0.0", "network": 3}),
                code::INVALID_CONFIG,
            ),
            (
                json!({"cniVersion": "1.0.0", "network": "n", "attach": "x"}),
                code::INVALID_CONFIG,
            ),
            (
                json!({"cniVersion": "1.0.0", "network": "n", "ipam": {}}),
                code::UNSUPPORTED_FIELD,
            ),
        ] {
            assert_eq!(parse_conf(&bad).err().map(|e| e.code), Some(code), "{bad}");
        }
        assert_eq!(
            pod_name("IgnoreUnknown=1;K8S_POD_NAME=busy1").as_deref(),
            Some("busy1")
        );
        assert_eq!(pod_name("IgnoreUnknown=1"), None);
    }

    #[test]
    fn host_side_names_are_stable_and_fit() {
        let a = host_if_name("appnet", "abc", "eth0");
        assert_eq!(a, host_if_name("appnet", "abc", "eth0"));
        assert_ne!(a, host_if_name("appnet", "abc", "eth1"));
        assert!(vswitch::port::iface::valid_ifname(&a), "{a}");
        assert_eq!(named_netns("/run/netns/x").as_deref(), Some("x"));
        assert_eq!(named_netns("/proc/1/ns/net"), None);
    }
}
