//! The cluster file's checks across items (every `[[node]]`, `[[network]]`, `[[endpoint]]`,
//! `[[service]]` and `[[ingress]]` against the others): unique names, addresses, MACs and
//! interfaces, known nodes and networks, subnets, load-balancer and resolver addresses, DNS
//! names. Control plane: a file (or the store's objects) is checked whole before anything of it
//! is applied; the first problem is the one message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

use super::*;

/// Checks a raw cluster, naming `file` in its messages.
pub(super) struct Checker {
    /// What messages name (the file's path or the store's URL).
    pub(super) file: String,
}

impl Checker {
    /// `[encryption] keys`: each a key (base64 of 16 key and 4 salt bytes), none twice, and at
    /// least one when a network is encrypted (its traffic is never sent in clear).
    fn keys(
        &self,
        raw: Option<RawEncryption>,
        networks: &[NetworkCfg],
    ) -> Result<Vec<esp::Key>, ConfigError> {
        let mut keys: Vec<esp::Key> = Vec::new();
        for (i, k) in raw.map(|r| r.keys).unwrap_or_default().iter().enumerate() {
            let item = format!("encryption key {}", i + 1);
            let key = esp::Key::parse(k).map_err(|e| self.err(&item, e.to_string()))?;
            if keys.iter().any(|o| o.id() == key.id()) {
                return Err(self.err(item, format!("key {} is listed twice", key.id())));
            }
            keys.push(key);
        }
        if keys.is_empty()
            && let Some(n) = networks.iter().find(|n| n.encrypted)
        {
            return Err(self.err(
                format!("network {:?}", n.name),
                "encrypted, but [encryption] keys lists no key (its traffic is never sent in clear)",
            ));
        }
        Ok(keys)
    }

    fn err(&self, item: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            item: item.into(),
            problem: problem.into(),
        }
    }

    pub(super) fn check(self, path: &Path, raw: RawCluster) -> Result<Cluster, ConfigError> {
        let mut names = HashSet::new();
        for n in &raw.node {
            if !names.insert(n.name.as_str()) {
                return Err(self.err(format!("node {:?}", n.name), "duplicate node name"));
            }
        }
        let mut vteps = HashMap::new();
        for n in &raw.node {
            if let Some(other) = vteps.insert(n.vtep, &n.name) {
                return Err(self.err(
                    format!("node {:?}", n.name),
                    format!("vtep {} is already node {other:?}'s", n.vtep),
                ));
            }
        }
        let mut networks = Vec::new();
        let mut names = HashSet::new();
        let mut vnis = HashMap::new();
        for n in &raw.network {
            let item = format!("network {:?}", n.name);
            if !names.insert(n.name.as_str()) {
                return Err(self.err(item, "duplicate network name"));
            }
            if n.vni < 1 || n.vni > i64::from(VNI_MAX) {
                return Err(self.err(item, format!("vni {} is out of range 1..={VNI_MAX}", n.vni)));
            }
            let vni = n.vni as u32;
            if let Some(other) = vnis.insert(vni, &n.name) {
                return Err(self.err(item, format!("vni {vni} is already network {other:?}'s")));
            }
            let (subnet, _) = Ipv4Net::parse(&n.subnet, true)
                .map_err(|p| self.err(&item, format!("subnet: {p}")))?;
            if subnet.prefix > 30 {
                return Err(self.err(
                    item,
                    format!("subnet {subnet} is too small for endpoints (at most /30)"),
                ));
            }
            let (default, max) = if n.encrypted {
                (DEFAULT_ENCRYPTED_MTU, MAX_MTU - ESP_OVERHEAD)
            } else {
                (DEFAULT_MTU, MAX_MTU)
            };
            let mtu = n.mtu.unwrap_or(default);
            if !(MIN_MTU..=max).contains(&mtu) {
                let what = if n.encrypted {
                    "an encrypted network's "
                } else {
                    ""
                };
                return Err(self.err(
                    item,
                    format!("mtu {mtu} is out of range {MIN_MTU}..={max} for {what}VXLAN"),
                ));
            }
            // Default: the first host address (Docker's gateway address, which vxmesh's
            // networks have no use for otherwise).
            let dns = n
                .dns
                .unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.addr) + 1));
            if !subnet.contains_host(dns) {
                return Err(self.err(
                    item,
                    format!("dns {dns} is not a host address of subnet {subnet}"),
                ));
            }
            networks.push(NetworkCfg {
                name: n.name.clone(),
                vni,
                subnet,
                mtu,
                dns,
                encrypted: n.encrypted,
            });
        }
        for (a, b) in networks
            .iter()
            .enumerate()
            .flat_map(|(i, a)| networks[i + 1..].iter().map(move |b| (a, b)))
        {
            let (short, long) = if a.subnet.prefix <= b.subnet.prefix {
                (a, b)
            } else {
                (b, a)
            };
            if short.subnet.contains_host(long.subnet.addr) || short.subnet.addr == long.subnet.addr
            {
                return Err(self.err(
                    format!("network {:?}", b.name),
                    format!(
                        "subnet {} overlaps network {:?}'s {}",
                        b.subnet, a.name, a.subnet
                    ),
                ));
            }
        }
        let net_of = |name: &str| networks.iter().find(|n| n.name == name);
        let node_names: HashSet<&str> = raw.node.iter().map(|n| n.name.as_str()).collect();
        let node_known = |name: &str| node_names.contains(name);

        let mut endpoints = Vec::new();
        let mut names = HashSet::new();
        let mut ips: HashMap<Ipv4Addr, String> = HashMap::new();
        let mut macs: HashMap<Mac, String> = HashMap::new();
        // Interface names are unique per namespace: a TAP with `netns` lives in that namespace
        // (every container may call its TAP eth0); an AF_XDP veth's host side, an ingress and a
        // TAP without `netns` live in the node's own namespace (`None`).
        let mut attaches: HashMap<IfKey, String> = HashMap::new();
        for e in &raw.endpoint {
            let item = format!("endpoint {:?}", e.name);
            if !names.insert(e.name.as_str()) {
                return Err(self.err(item, "duplicate endpoint name"));
            }
            if !node_known(&e.node) {
                return Err(self.err(item, format!("unknown node {:?}", e.node)));
            }
            let net = net_of(&e.network)
                .ok_or_else(|| self.err(&item, format!("unknown network {:?}", e.network)))?;
            if !net.subnet.contains_host(e.ip) {
                return Err(self.err(
                    item,
                    format!(
                        "ip {} is not a host address of network {:?}'s subnet {}",
                        e.ip, net.name, net.subnet
                    ),
                ));
            }
            if let Some(other) = ips.insert(e.ip, e.name.clone()) {
                return Err(self.err(item, format!("ip {} is already endpoint {other:?}'s", e.ip)));
            }
            let mac = match &e.mac {
                Some(m) => m
                    .parse::<Mac>()
                    .map_err(|x| self.err(&item, x.to_string()))?,
                None => Mac::docker_default(e.ip),
            };
            if !mac.is_unicast() {
                return Err(self.err(item, format!("mac {mac} is not a unicast address")));
            }
            if let Some(other) = macs.insert(mac, e.name.clone()) {
                return Err(self.err(item, format!("mac {mac} is already endpoint {other:?}'s")));
            }
            let attach = e
                .attach
                .as_deref()
                .map(Attach::parse)
                .transpose()
                .map_err(|p| self.err(&item, p))?;
            if let Some(a) = &attach {
                let netns = match a {
                    Attach::Tap(_) => e.netns.clone(),
                    Attach::Afxdp(_) => None,
                };
                let key = (e.node.clone(), netns, a.ifname().to_string());
                if let Some(other) = attaches.insert(key, format!("endpoint {:?}", e.name)) {
                    let place = match a {
                        Attach::Tap(_) if e.netns.is_some() => format!(
                            "in netns {:?} on node {:?}",
                            e.netns.as_deref().unwrap_or_default(),
                            e.node
                        ),
                        _ => format!("in node {:?}'s namespace", e.node),
                    };
                    return Err(self.err(
                        item,
                        format!("interface {} {place} is already {other}'s", a.ifname(),),
                    ));
                }
            }
            if let Some(ns) = &e.netns
                && (ns.is_empty() || ns.contains(['/', ' ']))
            {
                return Err(self.err(item, format!("netns {ns:?} is not a namespace name")));
            }
            for a in &e.aliases {
                if !is_dns_label(a) {
                    return Err(self.err(
                        item,
                        format!(
                            "alias {a:?} is not a DNS label (1..=63 letters, digits and '-', not starting or ending with '-')"
                        ),
                    ));
                }
            }
            endpoints.push(Endpoint {
                name: e.name.clone(),
                node: e.node.clone(),
                network: e.network.clone(),
                ip: e.ip,
                mac,
                attach,
                netns: e.netns.clone(),
                aliases: e.aliases.clone(),
            });
        }

        let mut services = Vec::new();
        let mut names = HashSet::new();
        let mut published: HashMap<(Protocol, u16), String> = HashMap::new();
        for s in &raw.service {
            let item = format!("service {:?}", s.name);
            if !names.insert(s.name.as_str()) {
                return Err(self.err(item, "duplicate service name"));
            }
            let net = net_of(&s.network)
                .ok_or_else(|| self.err(&item, format!("unknown network {:?}", s.network)))?;
            if !net.subnet.contains_host(s.vip) {
                return Err(self.err(
                    item,
                    format!(
                        "vip {} is not a host address of network {:?}'s subnet {}",
                        s.vip, net.name, net.subnet
                    ),
                ));
            }
            if let Some(other) = ips.insert(s.vip, format!("service {:?}", s.name)) {
                return Err(self.err(item, format!("vip {} is already used by {other}", s.vip)));
            }
            let scheduler = match &s.scheduler {
                Some(name) => name
                    .parse::<SchedulerKind>()
                    .map_err(|e| self.err(&item, e.to_string()))?,
                None => SchedulerKind::Rr,
            };
            let mut backends = Vec::new();
            for b in &s.backends {
                let (name, weight) = match b.split_once('=') {
                    Some((n, w)) => (
                        n,
                        w.parse::<u32>().map_err(|_| {
                            self.err(
                                &item,
                                format!("backend {b:?}: weight {w:?} is not a number"),
                            )
                        })?,
                    ),
                    None => (b.as_str(), 1),
                };
                let ep = endpoints.iter().find(|e| e.name == name).ok_or_else(|| {
                    self.err(&item, format!("backend {name:?} is not an endpoint"))
                })?;
                if ep.network != s.network {
                    return Err(self.err(
                        item,
                        format!(
                            "backend {name:?} is in network {:?}, not {:?}",
                            ep.network, s.network
                        ),
                    ));
                }
                if backends.iter().any(|(n, _)| n == name) {
                    return Err(self.err(item, format!("backend {name:?} is listed twice")));
                }
                backends.push((name.to_string(), weight));
            }
            let mut ports = Vec::new();
            for p in &s.ports {
                let protocol = match p.protocol.as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    other => {
                        return Err(self.err(item, format!("protocol {other:?} is not tcp or udp")));
                    }
                };
                if p.port == 0 || p.target == Some(0) || p.published == Some(0) {
                    return Err(self.err(item, "ports must be 1..=65535"));
                }
                if ports
                    .iter()
                    .any(|q: &ServicePort| q.protocol == protocol && q.port == p.port)
                {
                    return Err(
                        self.err(item, format!("{protocol} port {} is listed twice", p.port))
                    );
                }
                if let Some(pp) = p.published
                    && let Some(other) = published.insert((protocol, pp), s.name.clone())
                {
                    return Err(self.err(
                        item,
                        format!("published {protocol} port {pp} is already service {other:?}'s"),
                    ));
                }
                ports.push(ServicePort {
                    protocol,
                    port: p.port,
                    target: p.target.unwrap_or(p.port),
                    published: p.published,
                });
            }
            services.push(Service {
                name: s.name.clone(),
                network: s.network.clone(),
                vip: s.vip,
                scheduler,
                backends,
                ports,
            });
        }

        let mut ingresses = Vec::new();
        for (k, i) in raw.ingress.iter().enumerate() {
            let item = format!("ingress #{} (node {:?})", k + 1, i.node);
            if !node_known(&i.node) {
                return Err(self.err(item, format!("unknown node {:?}", i.node)));
            }
            if ingresses.iter().any(|x: &Ingress| x.node == i.node) {
                return Err(self.err(item, "a node has at most one ingress"));
            }
            let attach = Attach::parse(&i.attach).map_err(|p| self.err(&item, p))?;
            let (subnet, ip) =
                Ipv4Net::parse(&i.ip, false).map_err(|p| self.err(&item, format!("ip: {p}")))?;
            if !subnet.contains_host(ip) {
                return Err(self.err(item, format!("ip {ip} is not a host address of {subnet}")));
            }
            if let Some(other) = attaches.insert(
                (i.node.clone(), None, attach.ifname().to_string()),
                "the ingress".into(),
            ) {
                return Err(self.err(
                    item,
                    format!(
                        "interface {} in node {:?}'s namespace is already {other}'s",
                        attach.ifname(),
                        i.node
                    ),
                ));
            }
            ingresses.push(Ingress {
                node: i.node.clone(),
                attach,
                ip,
                subnet,
            });
        }

        // Load-balancer addresses given in the file, per network: a default skips them.
        let mut given: HashSet<(&str, Ipv4Addr)> = HashSet::new();
        for n in &raw.node {
            for (net, a) in &n.lb {
                given.insert((net.as_str(), *a));
            }
        }
        let mut nodes = Vec::new();
        for (idx, n) in raw.node.iter().enumerate() {
            let item = format!("node {:?}", n.name);
            for k in n.lb.keys() {
                if net_of(k).is_none() {
                    return Err(self.err(&item, format!("lb: unknown network {k:?}")));
                }
            }
            let mut lb = BTreeMap::new();
            for net in &networks {
                let addr = match n.lb.get(&net.name) {
                    Some(a) => *a,
                    None => {
                        // Default: the top of the subnet in node order (first node .254 in a
                        // /24, the next .253), or the next one down that no other node was
                        // given or took before it; so a node's default moves only when its
                        // place does, never because another node's address changed. The checks
                        // below say if it is not a host address.
                        let top = u32::from(net.subnet.addr) | !Ipv4Net::mask_of(net.subnet.prefix);
                        let taken = |a: Ipv4Addr| {
                            given.contains(&(net.name.as_str(), a))
                                || nodes.iter().any(|m: &Node| m.lb.get(&net.name) == Some(&a))
                        };
                        let mut a = top.wrapping_sub(1 + idx as u32);
                        while taken(Ipv4Addr::from(a)) && a > u32::from(net.subnet.addr) {
                            a -= 1;
                        }
                        Ipv4Addr::from(a)
                    }
                };
                if !net.subnet.contains_host(addr) {
                    return Err(self.err(&item, format!("load-balancer address {addr} in network {:?} is not a host address of {}", net.name, net.subnet)));
                }
                if let Some(other) = ips.get(&addr) {
                    return Err(self.err(&item, format!("load-balancer address {addr} in network {:?} collides with {other} (set `lb = {{ {} = \"...\" }}` on the node)", net.name, net.name)));
                }
                lb.insert(net.name.clone(), addr);
            }
            for (net, addr) in &lb {
                ips.insert(
                    *addr,
                    format!("node {:?}'s load-balancer address in {net:?}", n.name),
                );
            }
            nodes.push(Node {
                name: n.name.clone(),
                vtep: n.vtep,
                lb,
            });
        }
        self.check_dns(&networks, &endpoints, &services, &ips)?;
        let esp_transport = match raw.encryption.as_ref().and_then(|e| e.transport.as_deref()) {
            None | Some("esp") => EspTransport::Esp,
            Some("udp") => EspTransport::Udp,
            Some(t) => {
                return Err(self.err(
                    "encryption",
                    format!(
                        "transport {t:?}: \"esp\" (IP protocol 50) or \"udp\" (ESP in UDP 4500)"
                    ),
                ));
            }
        };
        let keys = self.keys(raw.encryption, &networks)?;
        Ok(Cluster {
            keys,
            esp_transport,
            path: path.to_path_buf(),
            nodes,
            networks,
            endpoints,
            services,
            ingresses,
        })
    }
}

impl Checker {
    /// Resolver addresses against everything else with an address (`ips`: endpoints, VIPs,
    /// load-balancer addresses), and aliases against the names of their network: endpoint
    /// names, service names and other aliases, without regard to case (DNS compares so).
    fn check_dns(
        &self,
        networks: &[NetworkCfg],
        endpoints: &[Endpoint],
        services: &[Service],
        ips: &HashMap<Ipv4Addr, String>,
    ) -> Result<(), ConfigError> {
        for n in networks {
            // `ips` holds endpoints by bare name, everything else described.
            let other = match endpoints.iter().find(|e| e.ip == n.dns) {
                Some(e) => Some(format!("endpoint {:?}", e.name)),
                None => ips.get(&n.dns).cloned(),
            };
            if let Some(other) = other {
                return Err(self.err(
                    format!("network {:?}", n.name),
                    format!(
                        "resolver address {} collides with {other} (set `dns = \"...\"` on the network to a free host address)",
                        n.dns
                    ),
                ));
            }
        }
        // One name, one answer: endpoints and services of a network share its resolver's
        // names, compared without case as DNS compares them.
        let mut names: HashMap<(&str, String), String> = HashMap::new();
        let named = endpoints
            .iter()
            .map(|e| {
                (
                    e.network.as_str(),
                    &e.name,
                    format!("endpoint {:?}", e.name),
                )
            })
            .chain(
                services
                    .iter()
                    .map(|s| (s.network.as_str(), &s.name, format!("service {:?}", s.name))),
            );
        for (network, name, item) in named {
            if let Some(other) = names.insert((network, name.to_ascii_lowercase()), item.clone()) {
                return Err(self.err(
                    item,
                    format!(
                        "name {name:?} is already the name of {other} in network {network:?} (the network's resolver could answer only one of them; names are compared without case)"
                    ),
                ));
            }
        }
        for e in endpoints {
            for a in &e.aliases {
                let key = (e.network.as_str(), a.to_ascii_lowercase());
                if let Some(other) = names.get(&key) {
                    return Err(self.err(
                        format!("endpoint {:?}", e.name),
                        format!(
                            "alias {a:?} is already the name of {other} in network {:?}",
                            e.network
                        ),
                    ));
                }
                names.insert(key, format!("endpoint {:?} (an alias)", e.name));
            }
        }
        Ok(())
    }
}
