//! The cluster file (SPEC.md, "The cluster file"): parsed, checked whole, and turned into typed
//! values the node builds its switch from. Read at start and at `reload`; a file that fails any
//! check is refused with one message naming the file, the item and the problem, and (at reload)
//! leaves the running configuration alone, because nothing is applied until the whole file passed.
//!
//! Every node reads the same file and acts on its own part. Checks: unknown keys, duplicate
//! names, IPs and MACs, VNI range, addresses outside their subnet, backends that are unknown or
//! in another network, a published port used twice, unknown nodes and networks, malformed
//! `attach`, unknown schedulers, load-balancer addresses colliding with endpoints or VIPs,
//! resolver addresses (`dns`) outside their subnet or colliding with any of those, aliases that
//! are not DNS labels or name something else of their network.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use lb::{Protocol, SchedulerKind};
use serde::Deserialize;
use vswitch::Mac;
use vswitch::env::DEFAULT_MTU;
use vswitch::wire::ipv4::MIN_MTU;
use vswitch::wire::vxlan::VNI_MAX;
use vswitch::wire::{ethernet, ipv4, udp, vxlan};

mod check;
use check::Checker;

/// Where an interface name must be unique: (node, namespace (`None`: the node's own), name).
type IfKey = (String, Option<String>, String);

/// A jumbo underlay's IP MTU.
const JUMBO_MTU: u16 = 9000;
/// What VXLAN adds to an inner IP packet: inner Ethernet, VXLAN, outer UDP and IPv4 headers.
const VXLAN_OVERHEAD: u16 =
    (ethernet::HEADER_LEN + vxlan::HEADER_LEN + udp::HEADER_LEN + ipv4::HEADER_LEN) as u16;
/// Largest inner MTU: a jumbo underlay minus the VXLAN overhead.
pub const MAX_MTU: u16 = JUMBO_MTU - VXLAN_OVERHEAD;
/// What ESP adds around the VXLAN datagram, at most: ESP header, IV, padding (up to 3 bytes,
/// none when the payload is already a multiple of 4), pad length, next header and ICV.
pub const ESP_OVERHEAD: u16 = 8 + 8 + 2 + 16;
/// An encrypted network's default MTU: 1500 minus VXLAN's 50, ESP's 34 and the 8 of the UDP
/// header that ESP in UDP adds (`transport = "udp"`): with it an inner packet's ESP payload is a
/// multiple of 4 (no padding), so every packet fits a 1500-byte underlay with either transport,
/// and a change of transport leaves the network's MTU (and its ports) as they are.
pub const DEFAULT_ENCRYPTED_MTU: u16 = 1500 - VXLAN_OVERHEAD - ESP_OVERHEAD - 8;

/// A cluster file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {item}: {problem}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The item (`network "appnet"`, `endpoint "c11"`, or the TOML position).
    pub item: String,
    /// What is wrong.
    pub problem: String,
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    /// The network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Ipv4Net {
    /// Parse `a.b.c.d/n`; host bits must be zero when `strict`.
    pub fn parse(s: &str, strict: bool) -> Result<(Ipv4Net, Ipv4Addr), String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{p:?} is not a prefix length 0..=32"))?;
        let net = Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & Self::mask_of(prefix)),
            prefix,
        };
        if strict && net.addr != addr {
            return Err(format!(
                "{s} has host bits set (the network is {}/{prefix})",
                net.addr
            ));
        }
        Ok((net, addr))
    }
    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }
    /// Whether `ip` is a host address of this subnet (not the network or broadcast address,
    /// for prefixes up to /30).
    pub fn contains_host(&self, ip: Ipv4Addr) -> bool {
        let m = Self::mask_of(self.prefix);
        let i = u32::from(ip);
        if i & m != u32::from(self.addr) {
            return false;
        }
        self.prefix >= 31 || (i != u32::from(self.addr) && i != self.broadcast_u32())
    }
    fn broadcast_u32(&self) -> u32 {
        u32::from(self.addr) | !Self::mask_of(self.prefix)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How an endpoint or ingress is attached to the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// AF_XDP on the host side of a veth.
    Afxdp(String),
    /// A TAP device.
    Tap(String),
}

impl Attach {
    fn parse(s: &str) -> Result<Attach, String> {
        let bad = || {
            format!(
                "attach {s:?} must be afxdp:IFNAME or tap:IFNAME (IFNAME 1..=15 characters, no '/' or whitespace)"
            )
        };
        let (kind, ifname) = s.split_once(':').ok_or_else(bad)?;
        if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ', '\t', ':']) {
            return Err(bad());
        }
        match kind {
            "afxdp" => Ok(Attach::Afxdp(ifname.into())),
            "tap" => Ok(Attach::Tap(ifname.into())),
            _ => Err(bad()),
        }
    }
    /// The interface name.
    pub fn ifname(&self) -> &str {
        match self {
            Attach::Afxdp(n) | Attach::Tap(n) => n,
        }
    }
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// Its underlay address (VXLAN on UDP 4789).
    pub vtep: Ipv4Addr,
    /// Its load-balancer address in each network (explicit or the default).
    pub lb: BTreeMap<String, Ipv4Addr>,
}

/// A network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkCfg {
    /// Its name.
    pub name: String,
    /// Its VNI.
    pub vni: u32,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// The containers' IP MTU.
    pub mtu: u16,
    /// Its resolver's address (`dns`, default: the subnet's first host address): the switch
    /// answers ARP and DNS queries for it.
    pub dns: Ipv4Addr,
    /// Its traffic between nodes goes inside ESP only (`encrypted = true`, Docker's `--opt
    /// encrypted`; SPEC.md, "Encrypted networks").
    pub encrypted: bool,
}

/// A container attached to a network on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name.
    pub name: String,
    /// Its node.
    pub node: String,
    /// Its network.
    pub network: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC (given, or Docker's default from the IP).
    pub mac: Mac,
    /// How it is attached (only its own node uses it).
    pub attach: Option<Attach>,
    /// Its named network namespace.
    pub netns: Option<String>,
    /// More names it answers to in its network's DNS (`aliases`), as written.
    pub aliases: Vec<String>,
}

/// One port of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePort {
    /// Protocol.
    pub protocol: Protocol,
    /// The VIP's port.
    pub port: u16,
    /// The backends' port.
    pub target: u16,
    /// The routing-mesh port on every ingress, if published.
    pub published: Option<u16>,
}

/// A load-balanced service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Its network.
    pub network: String,
    /// Its virtual IP.
    pub vip: Ipv4Addr,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Backends: endpoint name and weight (0 drains).
    pub backends: Vec<(String, u32)>,
    /// Ports.
    pub ports: Vec<ServicePort>,
}

/// An ingress interface on a node, for published ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress {
    /// Its node.
    pub node: String,
    /// How it is attached.
    pub attach: Attach,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its subnet.
    pub subnet: Ipv4Net,
}

/// A checked cluster file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Where it was read from.
    pub path: PathBuf,
    /// Nodes, in file order.
    pub nodes: Vec<Node>,
    /// Networks.
    pub networks: Vec<NetworkCfg>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Services.
    pub services: Vec<Service>,
    /// Ingress interfaces.
    pub ingresses: Vec<Ingress>,
    /// The keys of the encrypted networks (`[encryption] keys`): the first one sends, every
    /// one is accepted. Their `Debug` shows key ids only.
    pub keys: Vec<esp::Key>,
    /// How ESP travels between nodes (`[encryption] transport`).
    pub esp_transport: EspTransport,
}

/// How the encrypted networks' ESP packets travel between nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EspTransport {
    /// IP protocol 50 (`"esp"`, the default; Docker's `--opt encrypted`).
    #[default]
    Esp,
    /// ESP in UDP on port 4500 (`"udp"`, RFC 3948): the same ESP packets as UDP datagrams,
    /// which the kernel sends and receives in batches (UDP GSO/GRO) and NATs pass.
    Udp,
}

impl EspTransport {
    /// Its name in the file.
    pub fn name(self) -> &'static str {
        match self {
            EspTransport::Esp => "esp",
            EspTransport::Udp => "udp",
        }
    }
}

/// The UDP port of ESP in UDP (RFC 3948).
pub const ESP_UDP_PORT: u16 = 4500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    network: Vec<RawNetwork>,
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    ingress: Vec<RawIngress>,
    encryption: Option<RawEncryption>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncryption {
    keys: Vec<String>,
    transport: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    vtep: Ipv4Addr,
    #[serde(default)]
    lb: BTreeMap<String, Ipv4Addr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: String,
    vni: i64,
    subnet: String,
    mtu: Option<u16>,
    dns: Option<Ipv4Addr>,
    #[serde(default)]
    encrypted: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    node: String,
    network: String,
    ip: Ipv4Addr,
    mac: Option<String>,
    attach: Option<String>,
    netns: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    network: String,
    vip: Ipv4Addr,
    scheduler: Option<String>,
    backends: Vec<String>,
    #[serde(default)]
    ports: Vec<RawPort>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    protocol: String,
    port: u16,
    target: Option<u16>,
    published: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    node: String,
    attach: String,
    ip: String,
}

impl Cluster {
    /// Read and check a cluster file.
    pub fn load(path: &Path) -> Result<Cluster, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            item: "file".into(),
            problem: format!("cannot read: {e}"),
        })?;
        Cluster::parse(path, &text)
    }

    /// Check the text of a cluster file read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Cluster, ConfigError> {
        let file = path.display().to_string();
        let raw: RawCluster = toml::from_str(text).map_err(|e| {
            let item = match e.span() {
                Some(sp) => {
                    let line = text[..sp.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                }
                None => "file".to_string(),
            };
            ConfigError {
                file: file.clone(),
                item,
                problem: e.message().to_string(),
            }
        })?;
        Checker { file }.check(path, raw)
    }

    /// Check a cluster given as JSON, one array per table named as the file names them (the
    /// store's objects), from `source` (named in messages). The checks and messages are the
    /// file's; items should each have passed [`Cluster::check_item`] (an item that does not is
    /// refused here with no item named).
    pub fn from_json(source: &Path, tables: &serde_json::Value) -> Result<Cluster, ConfigError> {
        use serde::Deserialize;
        let file = source.display().to_string();
        let raw = RawCluster::deserialize(tables).map_err(|e| ConfigError {
            file: file.clone(),
            item: "state".into(),
            problem: e.to_string(),
        })?;
        Checker { file }.check(source, raw)
    }

    /// Check one item of table `table` (`node`, `network`, ...) given as JSON on its own: its
    /// keys and their types, as the file's parser takes them (not the checks across items).
    pub fn check_item(table: &str, item: &serde_json::Value) -> Result<(), String> {
        use serde::Deserialize;
        let r = match table {
            "node" => RawNode::deserialize(item).map(drop),
            "network" => RawNetwork::deserialize(item).map(drop),
            "endpoint" => RawEndpoint::deserialize(item).map(drop),
            "service" => RawService::deserialize(item).map(drop),
            "ingress" => RawIngress::deserialize(item).map(drop),
            "encryption" => RawEncryption::deserialize(item).and_then(|r| {
                // The keys' form here, so a bad one is refused at the store's key.
                if let Some(e) = r.keys.iter().find_map(|k| esp::Key::parse(k).err()) {
                    return Err(serde::de::Error::custom(e));
                }
                match r.transport.as_deref() {
                    None | Some("esp" | "udp") => Ok(()),
                    Some(t) => Err(serde::de::Error::custom(format!(
                        "transport {t:?}: \"esp\" (IP protocol 50) or \"udp\" (ESP in UDP 4500)"
                    ))),
                }
            }),
            t => return Err(format!("no table {t:?} in a cluster file")),
        };
        r.map_err(|e| e.to_string())
    }

    /// One endpoint item given as JSON, taken on its own: its keys and types, its MAC (given or
    /// Docker's default from the IP), its `attach`, `netns` and aliases as the file's checks
    /// take them. The checks across items (known node and network, subnet, unique address, MAC
    /// and interface, DNS names) are not made here: an incremental caller makes them against
    /// its indexes, and falls back to [`Cluster::from_json`] when any of them fails.
    pub fn endpoint_item(item: &serde_json::Value) -> Result<Endpoint, String> {
        use serde::Deserialize;
        let e = RawEndpoint::deserialize(item).map_err(|e| e.to_string())?;
        let mac = match &e.mac {
            Some(m) => m.parse::<Mac>().map_err(|x| x.to_string())?,
            None => Mac::docker_default(e.ip),
        };
        if !mac.is_unicast() {
            return Err(format!("mac {mac} is not a unicast address"));
        }
        let attach = e.attach.as_deref().map(Attach::parse).transpose()?;
        if let Some(ns) = &e.netns
            && (ns.is_empty() || ns.contains(['/', ' ']))
        {
            return Err(format!("netns {ns:?} is not a namespace name"));
        }
        if let Some(a) = e.aliases.iter().find(|a| !is_dns_label(a)) {
            return Err(format!("alias {a:?} is not a DNS label"));
        }
        Ok(Endpoint {
            name: e.name,
            node: e.node,
            network: e.network,
            ip: e.ip,
            mac,
            attach,
            netns: e.netns,
            aliases: e.aliases,
        })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The network called `name`.
    pub fn network(&self, name: &str) -> Option<&NetworkCfg> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The endpoint called `name`.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// Whether any service of `network` publishes a port.
    pub fn has_published(&self, network: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.network == network && s.ports.iter().any(|p| p.published.is_some()))
    }

    /// The peers of a network: nodes with endpoints in it, plus every node with an ingress when
    /// the network has published ports (file order).
    pub fn peers(&self, network: &str) -> Vec<&Node> {
        let published = self.has_published(network);
        // One pass over the endpoints (a cluster has far more of them than nodes).
        let mut with: HashSet<&str> = self
            .endpoints
            .iter()
            .filter(|e| e.network == network)
            .map(|e| e.node.as_str())
            .collect();
        if published {
            with.extend(self.ingresses.iter().map(|i| i.node.as_str()));
        }
        self.nodes
            .iter()
            .filter(|n| with.contains(n.name.as_str()))
            .collect()
    }
}

/// Whether `s` is a DNS label as hosts are named (RFC 1123): 1..=63 ASCII letters, digits and
/// hyphens, not starting or ending with a hyphen.
pub fn is_dns_label(s: &str) -> bool {
    (1..=vswitch::wire::dns::MAX_LABEL).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared cluster fixture (SPEC.md's example with four endpoints and two ingresses),
    /// its containers' namespaces unprefixed, and weights on the backends so they are parsed.
    fn example() -> String {
        const FIXTURE: &str = include_str!("../tests/fixtures/cluster.toml");
        const BACKENDS: &str = r#"backends = ["c12", "c21", "c22"]"#;
        assert!(FIXTURE.contains(BACKENDS), "the fixture's backends");
        FIXTURE
            .replace("{P}", "")
            .replace(BACKENDS, r#"backends = ["c12", "c21=3", "c22=0"]"#)
    }

    fn parse(text: &str) -> Result<Cluster, ConfigError> {
        Cluster::parse(Path::new("cluster.toml"), text)
    }

    #[test]
    fn default_lb_addresses_pass_over_the_ones_given() {
        // n2 names .254 for itself: n1, first, would be .254 by place, so it takes the next
        // free one down, .253 (before: refused as a collision); a third node, .252 by place.
        let text = example()
            .replacen(
                "name = \"n2\"\nvtep = \"198.18.0.2\"",
                "name = \"n2\"\nvtep = \"198.18.0.2\"\nlb = { appnet = \"10.0.9.254\" }\n\n[[node]]\nname = \"n3\"\nvtep = \"198.18.0.3\"",
                1,
            );
        assert!(text.contains("n3"));
        let c = parse(&text).unwrap();
        let lb = |n: &str| c.node(n).unwrap().lb["appnet"];
        assert_eq!(lb("n1"), Ipv4Addr::new(10, 0, 9, 253));
        assert_eq!(lb("n2"), Ipv4Addr::new(10, 0, 9, 254));
        assert_eq!(lb("n3"), Ipv4Addr::new(10, 0, 9, 252));
    }

    #[test]
    fn the_spec_example_parses_with_docker_defaults() {
        let c = parse(&example()).unwrap();
        assert_eq!(
            c.endpoint("c12").unwrap().mac.to_string(),
            "02:42:0a:00:09:0c"
        );
        assert_eq!(
            c.node("n1").unwrap().lb["appnet"],
            Ipv4Addr::new(10, 0, 9, 254)
        );
        assert_eq!(
            c.node("n2").unwrap().lb["appnet"],
            Ipv4Addr::new(10, 0, 9, 253)
        );
        assert_eq!(
            c.services[0].backends,
            vec![("c12".into(), 1), ("c21".into(), 3), ("c22".into(), 0)]
        );
        assert_eq!(
            c.services[0].ports[0],
            ServicePort {
                protocol: Protocol::Tcp,
                port: 80,
                target: 80,
                published: Some(8080)
            }
        );
        assert_eq!(
            c.peers("appnet")
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            vec!["n1", "n2"]
        );
        assert_eq!(c.ingresses[0].ip, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(
            c.endpoint("c11").unwrap().attach,
            Some(Attach::Afxdp("vc11".into()))
        );
    }

    #[test]
    fn every_invalid_case_is_refused_with_one_clear_message() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "vtep = \"198.18.0.1\"",
                "vtep = \"198.18.0.1\"\ncolor = \"red\"",
                "line 8: unknown field `color`, expected one of `name`, `vtep`, `lb`",
            ),
            (
                "name = \"n2\"",
                "name = \"n1\"",
                "node \"n1\": duplicate node name",
            ),
            (
                "ip = \"10.0.9.22\"",
                "ip = \"10.0.9.21\"",
                "endpoint \"c22\": ip 10.0.9.21 is already endpoint \"c21\"'s",
            ),
            (
                "ip = \"10.0.9.12\"",
                "ip = \"10.0.9.12\"\nmac = \"02:42:0a:00:09:0b\"",
                "endpoint \"c12\": mac 02:42:0a:00:09:0b is already endpoint \"c11\"'s",
            ),
            (
                "vni = 4097",
                "vni = 0",
                "network \"appnet\": vni 0 is out of range 1..=16777215",
            ),
            (
                "vni = 4097",
                "vni = 16777216",
                "network \"appnet\": vni 16777216 is out of range",
            ),
            (
                "ip = \"10.0.9.21\"",
                "ip = \"10.0.8.21\"",
                "endpoint \"c21\": ip 10.0.8.21 is not a host address of network \"appnet\"'s subnet 10.0.9.0/24",
            ),
            (
                "vip = \"10.0.9.100\"",
                "vip = \"10.0.9.255\"",
                "service \"web\": vip 10.0.9.255 is not a host address",
            ),
            (
                "node = \"n2\"\nnetwork = \"appnet\"\nip = \"10.0.9.22\"",
                "node = \"n3\"\nnetwork = \"appnet\"\nip = \"10.0.9.22\"",
                "endpoint \"c22\": unknown node \"n3\"",
            ),
            (
                "backends = [\"c12\", \"c21=3\", \"c22=0\"]",
                "backends = [\"c12\", \"c99\"]",
                "service \"web\": backend \"c99\" is not an endpoint",
            ),
            (
                "scheduler = \"rr\"",
                "scheduler = \"fifo\"",
                "service \"web\": unknown scheduler \"fifo\" (known: rr, wrr, lc, wlc, sh, mh)",
            ),
            (
                "attach = \"afxdp:vc11\"",
                "attach = \"xdp:vc11\"",
                "endpoint \"c11\": attach \"xdp:vc11\" must be afxdp:IFNAME or tap:IFNAME",
            ),
            (
                "vip = \"10.0.9.100\"",
                "vip = \"10.0.9.254\"",
                "node \"n1\": load-balancer address 10.0.9.254 in network \"appnet\" collides with service \"web\"",
            ),
            (
                "node = \"n1\"\nattach = \"afxdp:ext0\"",
                "node = \"n9\"\nattach = \"afxdp:ext0\"",
                "unknown node \"n9\"",
            ),
            (
                "mtu = 1450",
                "mtu = 1450\ndns = \"10.0.8.1\"",
                "network \"appnet\": dns 10.0.8.1 is not a host address of subnet 10.0.9.0/24",
            ),
            (
                "mtu = 1450",
                "mtu = 1450\ndns = \"10.0.9.255\"",
                "network \"appnet\": dns 10.0.9.255 is not a host address",
            ),
            // The default resolver address (.1) taken by an endpoint.
            (
                "ip = \"10.0.9.11\"",
                "ip = \"10.0.9.1\"",
                "network \"appnet\": resolver address 10.0.9.1 collides with endpoint \"c11\" (set `dns = \"...\"` on the network",
            ),
            (
                "mtu = 1450",
                "mtu = 1450\ndns = \"10.0.9.100\"",
                "network \"appnet\": resolver address 10.0.9.100 collides with service \"web\"",
            ),
            (
                "mtu = 1450",
                "mtu = 1450\ndns = \"10.0.9.253\"",
                "network \"appnet\": resolver address 10.0.9.253 collides with node \"n2\"'s load-balancer address in \"appnet\"",
            ),
            (
                "netns = \"c11\"",
                "netns = \"c11\"\naliases = [\"api\", \"-x\"]",
                "endpoint \"c11\": alias \"-x\" is not a DNS label",
            ),
            (
                "netns = \"c11\"",
                "netns = \"c11\"\naliases = [\"a.b\"]",
                "endpoint \"c11\": alias \"a.b\" is not a DNS label",
            ),
            (
                "netns = \"c11\"",
                "netns = \"c11\"\naliases = [\"Web\"]",
                "endpoint \"c11\": alias \"Web\" is already the name of service \"web\" in network \"appnet\"",
            ),
            (
                "netns = \"c11\"",
                "netns = \"c11\"\naliases = [\"C12\"]",
                "endpoint \"c11\": alias \"C12\" is already the name of endpoint \"c12\" in network \"appnet\"",
            ),
            (
                "name = \"c11\"",
                "name = \"Web\"",
                "service \"web\": name \"web\" is already the name of endpoint \"Web\" in network \"appnet\" (the network's resolver could answer only one of them",
            ),
            (
                "name = \"c11\"",
                "name = \"C12\"",
                "endpoint \"c12\": name \"c12\" is already the name of endpoint \"C12\" in network \"appnet\"",
            ),
            (
                "netns = \"c12\"",
                "netns = \"c12\"\naliases = [\"api\", \"api\"]",
                "endpoint \"c12\": alias \"api\" is already the name of endpoint \"c12\" (an alias) in network \"appnet\"",
            ),
        ];
        for (from, to, want) in cases {
            let example = example();
            assert!(example.contains(from), "{from}");
            let text = example.replacen(from, to, 1);
            let e = parse(&text).expect_err(want);
            let msg = e.to_string();
            assert!(msg.starts_with("cluster.toml: "), "{msg}");
            assert!(msg.contains(want), "want {want:?}, got {msg:?}");
            assert_eq!(msg.lines().count(), 1, "one line: {msg}");
        }
    }

    #[test]
    fn encrypted_networks_need_keys_and_get_room_for_esp() {
        let k1 = "AAECAwQFBgcICQoLDA0ODxAREhM=";
        let enc = |extra: &str| example().replacen("mtu = 1450", "encrypted = true", 1) + extra;
        let c = parse(&enc(&format!("\n[encryption]\nkeys = [{k1:?}]\n"))).unwrap();
        let n = c.network("appnet").unwrap();
        assert!(n.encrypted);
        assert_eq!(n.mtu, DEFAULT_ENCRYPTED_MTU);
        assert_eq!(DEFAULT_ENCRYPTED_MTU, 1408);
        assert_eq!(c.keys.len(), 1);
        // The key's debug form names its id only.
        let shown = format!("{c:?}");
        assert!(!shown.contains(k1), "{shown}");
        for (extra, want) in [
            (
                "",
                "network \"appnet\": encrypted, but [encryption] keys lists no key",
            ),
            ("\n[encryption]\nkeys = []\n", "lists no key"),
            (
                "\n[encryption]\nkeys = [\"not base64!\"]\n",
                "encryption key 1:",
            ),
            ("\n[encryption]\nkeys = [\"AAEC\"]\n", "encryption key 1:"),
            (
                &format!("\n[encryption]\nkeys = [{k1:?}, {k1:?}]\n"),
                "listed twice",
            ),
            (
                "\n[encryption]\nkeys = []\ncipher = \"des\"\n",
                "unknown field `cipher`",
            ),
        ] {
            let e = parse(&enc(extra)).unwrap_err().to_string();
            assert!(e.contains(want), "{extra:?}: {e}");
        }
        let big = example().replacen("mtu = 1450", "encrypted = true\nmtu = 8917", 1)
            + &format!("\n[encryption]\nkeys = [{k1:?}]\n");
        let e = parse(&big).unwrap_err().to_string();
        assert!(e.contains("for an encrypted network's VXLAN"), "{e}");
    }

    #[test]
    fn resolvers_default_to_the_first_host_address_and_aliases_are_per_network() {
        let c = parse(&example()).unwrap();
        assert_eq!(c.network("appnet").unwrap().dns, Ipv4Addr::new(10, 0, 9, 1));
        assert!(c.endpoints.iter().all(|e| e.aliases.is_empty()));
        // The same alias in two networks, and a resolver set by hand.
        let text = format!(
            "{}\n[[network]]\nname = \"db\"\nvni = 4098\nsubnet = \"10.0.10.0/24\"\ndns = \"10.0.10.53\"\n\n[[endpoint]]\nname = \"d1\"\nnode = \"n1\"\nnetwork = \"db\"\nip = \"10.0.10.5\"\naliases = [\"api\"]\n",
            example().replacen(
                "netns = \"c11\"",
                "netns = \"c11\"\naliases = [\"api\", \"front-1\"]",
                1
            )
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.endpoint("c11").unwrap().aliases, ["api", "front-1"]);
        assert_eq!(c.endpoint("d1").unwrap().aliases, ["api"]);
        assert_eq!(c.network("db").unwrap().dns, Ipv4Addr::new(10, 0, 10, 53));
        for (label, ok) in [
            ("a", true),
            ("web-2", true),
            (&"x".repeat(63), true),
            (&"x".repeat(64), false),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("a_b", false),
            ("a.b", false),
        ] {
            assert_eq!(is_dns_label(label), ok, "{label:?}");
        }
    }

    #[test]
    fn backends_in_another_network_and_published_ports_used_twice_are_refused() {
        let other = format!(
            "{}\n[[network]]\nname = \"other\"\nvni = 4098\nsubnet = \"10.0.10.0/24\"\n\n[[endpoint]]\nname = \"d1\"\nnode = \"n1\"\nnetwork = \"other\"\nip = \"10.0.10.5\"\n",
            example()
        );
        let bad = format!(
            "{other}\n[[service]]\nname = \"x\"\nnetwork = \"appnet\"\nvip = \"10.0.9.101\"\nbackends = [\"d1\"]\n"
        );
        assert!(
            parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("backend \"d1\" is in network \"other\", not \"appnet\"")
        );
        let twice = format!(
            "{other}\n[[service]]\nname = \"x\"\nnetwork = \"other\"\nvip = \"10.0.10.100\"\nbackends = [\"d1\"]\nports = [{{ protocol = \"tcp\", port = 81, published = 8080 }}]\n"
        );
        assert!(
            parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("published tcp port 8080 is already service \"web\"'s")
        );
        let ok = format!(
            "{other}\n[[service]]\nname = \"x\"\nnetwork = \"other\"\nvip = \"10.0.10.100\"\nbackends = [\"d1\"]\nports = [{{ protocol = \"tcp\", port = 81, published = 8081 }}]\n"
        );
        let c = parse(&ok).unwrap();
        // n1 serves both networks; "other" has published ports, so every ingress node is a peer:
        // n2 too, which has no endpoint in it
        assert_eq!(
            c.node("n1").unwrap().lb["other"],
            Ipv4Addr::new(10, 0, 10, 254)
        );
        let peers: Vec<&str> = c.peers("other").iter().map(|n| n.name.as_str()).collect();
        assert_eq!(peers, ["n1", "n2"]);
    }

    #[test]
    fn tap_names_are_unique_per_namespace_not_per_node() {
        let tap = |name: &str, ip: &str, attach: &str, netns: Option<&str>| {
            let ns = netns.map_or(String::new(), |n| format!("netns = \"{n}\"\n"));
            format!(
                "\n[[endpoint]]\nname = \"{name}\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"{ip}\"\nattach = \"{attach}\"\n{ns}"
            )
        };
        // Every container calls its TAP eth0: c12 has tap:eth0 in netns "c12" already.
        let two_eth0 = format!(
            "{}{}",
            example(),
            tap("c13", "10.0.9.13", "tap:eth0", Some("c13"))
        );
        let c = parse(&two_eth0).unwrap();
        assert_eq!(
            c.endpoint("c13").unwrap().attach,
            Some(Attach::Tap("eth0".into()))
        );
        // The same name twice in one namespace is a real collision.
        let cases = [
            (
                tap("c13", "10.0.9.13", "tap:eth0", Some("c12")),
                "endpoint \"c13\": interface eth0 in netns \"c12\" on node \"n1\" is already endpoint \"c12\"'s",
            ),
            // Two TAPs without netns both live in the node's namespace.
            (
                format!(
                    "{}{}",
                    tap("c13", "10.0.9.13", "tap:t0", None),
                    tap("c14", "10.0.9.14", "tap:t0", None)
                ),
                "endpoint \"c14\": interface t0 in node \"n1\"'s namespace is already endpoint \"c13\"'s",
            ),
            // A TAP in the node's namespace named like an AF_XDP veth's host side (c11: vc11).
            (
                tap("c13", "10.0.9.13", "tap:vc11", None),
                "endpoint \"c13\": interface vc11 in node \"n1\"'s namespace is already endpoint \"c11\"'s",
            ),
            // An AF_XDP host side is in the node's namespace whatever the container's netns.
            (
                tap("c13", "10.0.9.13", "afxdp:vc11", Some("c13")),
                "endpoint \"c13\": interface vc11 in node \"n1\"'s namespace is already endpoint \"c11\"'s",
            ),
        ];
        for (extra, want) in cases {
            let msg = parse(&format!("{}{extra}", example()))
                .unwrap_err()
                .to_string();
            assert!(msg.contains(want), "want {want:?}, got {msg:?}");
        }
        // A TAP in a container namespace may share its name with the ingress interface.
        let ext0 = format!(
            "{}{}",
            example(),
            tap("c13", "10.0.9.13", "tap:ext0", Some("c13"))
        );
        parse(&ext0).unwrap();
        // The ingress still collides with a TAP in the node's namespace.
        let msg = parse(&format!(
            "{}{}",
            example(),
            tap("c13", "10.0.9.13", "tap:ext0", None)
        ))
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains(
                "ingress #1 (node \"n1\"): interface ext0 in node \"n1\"'s namespace is already endpoint \"c13\"'s"
            ),
            "{msg}"
        );
    }
}
