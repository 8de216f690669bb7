//! The switch's shared state: the tables every stage may read, owned by the worker thread.
//!
//! `Env` is what a stage sees besides its batch: the clock, the bridge domains (networks) with
//! their local ports, VNI, MTU, remote VTEPs and known endpoint addresses, the FDB, the tracer,
//! and what port security checks (in `l2-parse`): each local port's [`PortGuard`] and the switch's
//! own MACs.
//! Stages with tables of their own (the load balancer's conntrack, say) keep them inside the
//! stage; what several stages share lives here. The control plane changes it only between
//! batches, so the packet path reads it without locks.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::fdb::{Fdb, FdbConfig};
use crate::packet::{Mac, NetId, PortId, VtepId};
use crate::trace::Tracer;
use crate::wire::ethernet;

/// Default IP MTU of an overlay network: 1500 minus the 50 bytes of VXLAN overhead.
pub const DEFAULT_MTU: u16 = 1450;

/// A point in time: nanoseconds on a monotonic clock with an arbitrary start. Passed in, never
/// read by the tables themselves, so tests drive aging and timeouts with a fake clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// Nanoseconds per second.
    pub const NANOS_PER_SEC: u64 = 1_000_000_000;

    /// `s` seconds after the start.
    pub const fn from_secs(s: u64) -> Time {
        Time(s * Time::NANOS_PER_SEC)
    }

    /// Whole seconds since the start.
    #[inline]
    pub const fn secs(self) -> u64 {
        self.0 / Time::NANOS_PER_SEC
    }

    /// Now on the process's monotonic clock (for the node's poll loop; tables never call it).
    pub fn monotonic() -> Time {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        // A day has 8.6e13 ns; u64 holds 584 years of nanoseconds.
        Time(start.elapsed().as_nanos() as u64 + Time::NANOS_PER_SEC)
    }
}

/// The VNI of a retired network slot ([`Network::retired`]): outside VXLAN's 24 bits and
/// distinct from any other marker a user of the switch might give (the node's ingress networks
/// use `u32::MAX`).
pub const RETIRED_VNI: u32 = u32::MAX - 1;

/// A bridge domain: one overlay network, one VNI.
#[derive(Clone, Debug)]
pub struct Network {
    /// Its name in the cluster file.
    pub name: String,
    /// Its VXLAN network identifier.
    pub vni: u32,
    /// Containers' IP MTU: frames up to `mtu + 14` bytes (18 with a VLAN tag) are switched.
    pub mtu: u16,
    /// Its traffic between nodes goes only inside ESP (`encrypted = true`): the output step
    /// sends it by the encrypted underlay and `vxlan-decap` drops it in plain VXLAN.
    pub encrypted: bool,
    /// Local ports attached to it (flood targets).
    pub ports: Vec<PortId>,
    /// Remote VTEPs of the network: VXLAN is accepted only from them, and broadcast or unknown
    /// unicast from a local port is replicated once to each.
    pub peers: Vec<VtepId>,
    /// Known endpoint and service addresses: the proxy-ARP table (IP -> MAC).
    pub arp: HashMap<Ipv4Addr, Mac>,
}

impl Network {
    /// A network with no ports, peers or addresses yet.
    pub fn new(name: impl Into<String>, vni: u32, mtu: u16) -> Network {
        Network {
            name: name.into(),
            vni,
            mtu,
            encrypted: false,
            ports: Vec::new(),
            peers: Vec::new(),
            arp: HashMap::new(),
        }
    }

    /// An unused slot: what a removed network leaves behind until a new one takes its id. Its
    /// VNI is outside VXLAN's 24 bits, so no packet is ever decapsulated into it.
    pub fn retired() -> Network {
        Network::new("", RETIRED_VNI, DEFAULT_MTU)
    }

    /// Whether this slot holds no network.
    pub fn is_retired(&self) -> bool {
        self.vni == RETIRED_VNI && self.name.is_empty()
    }

    /// Largest untagged frame the network switches.
    #[inline]
    pub fn max_frame(&self) -> usize {
        self.mtu as usize + ethernet::HEADER_LEN
    }
}

/// A remote VTEP: another node's underlay address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vtep {
    /// Its underlay IPv4 address.
    pub addr: Ipv4Addr,
    /// The node's name, for listings.
    pub node: String,
}

impl Vtep {
    /// An unused slot: what a removed VTEP leaves behind (the unspecified address, which no
    /// packet comes from and [`Env::vtep_by_addr`] never returns).
    pub fn retired() -> Vtep {
        Vtep {
            addr: Ipv4Addr::UNSPECIFIED,
            node: String::new(),
        }
    }
}

/// What a local port may send as (port security in `l2-parse`, SPEC.md "Port security"): the rule of its
/// endpoint, or none for a port whose senders are many (a routing-mesh ingress: external
/// clients; ports of tests). Kept per port in [`Env::guards`], set by the control plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PortGuard {
    /// No source rule: only what holds for every port (no reserved group address, no switch
    /// MAC as source, no ARP claim on another owner's address).
    #[default]
    Open,
    /// A container's port: frames only from its MAC, IPv4 and ARP only from its address.
    Endpoint {
        /// The endpoint's MAC.
        mac: Mac,
        /// The endpoint's address.
        ip: Ipv4Addr,
    },
}

/// The state the stages share.
pub struct Env {
    /// The current time, set by the worker before each batch.
    pub now: Time,
    /// Bridge domains, indexed by [`NetId`].
    pub nets: Vec<Network>,
    /// Remote VTEPs, indexed by [`VtepId`].
    pub vteps: Vec<Vtep>,
    /// This node's own VTEP address, if it has an underlay.
    pub local_vtep: Option<Ipv4Addr>,
    /// The forwarding database.
    pub fdb: Fdb,
    /// Trace of marked packets.
    pub tracer: Tracer,
    /// Port names, indexed by [`PortId`] (kept by the switch, for traces).
    pub port_names: Vec<String>,
    /// Port security rules, indexed by [`PortId`] (kept by the switch:
    /// [`Switch::set_port_guard`](crate::Switch::set_port_guard)).
    pub guards: Vec<PortGuard>,
    /// MACs the switch owns (VIPs, resolvers, load-balancer and ingress addresses), per
    /// network, sorted: [`Env::replace_own_macs`].
    own_macs: Vec<(NetId, Mac)>,
}

impl Env {
    /// An empty environment with an FDB of the given configuration.
    pub fn new(fdb: FdbConfig) -> Env {
        Env {
            now: Time::default(),
            nets: Vec::new(),
            vteps: Vec::new(),
            local_vtep: None,
            fdb: Fdb::new(fdb),
            tracer: Tracer::default(),
            port_names: Vec::new(),
            guards: Vec::new(),
            own_macs: Vec::new(),
        }
    }

    /// The port security rule of `port` ([`PortGuard::Open`] for an unknown id).
    #[inline]
    pub fn guard(&self, port: PortId) -> PortGuard {
        self.guards
            .get(usize::from(port.0))
            .copied()
            .unwrap_or_default()
    }

    /// Whether `mac` is one of the switch's own MACs in `net` (a binary search of a short
    /// sorted table: no allocation, no hashing).
    #[inline]
    pub fn is_own_mac(&self, net: NetId, mac: Mac) -> bool {
        self.own_macs.binary_search(&(net, mac)).is_ok()
    }

    /// The switch's own MACs per network, sorted.
    pub fn own_macs(&self) -> &[(NetId, Mac)] {
        &self.own_macs
    }

    /// Replace the switch's own MACs (sorted and deduplicated here): the table before, or
    /// `None` if it is the same (control plane, between batches).
    pub fn replace_own_macs(&mut self, mut macs: Vec<(NetId, Mac)>) -> Option<Vec<(NetId, Mac)>> {
        macs.sort_unstable();
        macs.dedup();
        if macs == self.own_macs {
            return None;
        }
        Some(std::mem::replace(&mut self.own_macs, macs))
    }

    /// An FDB destination in words, for traces: `port c11`, `vtep 198.18.0.2 (n2)`.
    pub fn describe_dest(&self, d: crate::FdbDest) -> String {
        match d {
            crate::FdbDest::Local(p) => match self.port_names.get(usize::from(p.0)) {
                Some(n) => format!("port {n}"),
                None => format!("port #{}", p.0),
            },
            crate::FdbDest::Remote(id) => match self.vteps.get(usize::from(id.0)) {
                Some(vt) => format!("vtep {} ({})", vt.addr, vt.node),
                None => format!("vtep #{}", id.0),
            },
        }
    }

    /// Add a network; its id is its index.
    pub fn add_network(&mut self, net: Network) -> NetId {
        self.nets.push(net);
        NetId((self.nets.len() - 1) as u16)
    }

    /// Put `net` at `id` (networks that come and go keep their ids: the control plane names
    /// them), growing the table with retired slots if needed. The id should be free (retired,
    /// its FDB entries removed).
    pub fn set_network(&mut self, id: NetId, net: Network) {
        let i = usize::from(id.0);
        if self.nets.len() <= i {
            self.nets.resize_with(i + 1, Network::retired);
        }
        self.nets[i] = net;
    }

    /// Remove network `id`: its slot is retired (no VNI, no ports, no peers, no addresses). Its
    /// FDB entries are the caller's to remove before the id is used again (static ones by the
    /// plan, learned ones with [`Fdb::flush_learned`], a walk of the whole table).
    pub fn retire_network(&mut self, id: NetId) {
        if let Some(n) = self.nets.get_mut(usize::from(id.0)) {
            *n = Network::retired();
        }
    }

    /// Put a remote VTEP at `id`, growing the table with retired slots if needed.
    pub fn set_vtep(&mut self, id: VtepId, vtep: Vtep) {
        let i = usize::from(id.0);
        if self.vteps.len() <= i {
            self.vteps.resize_with(i + 1, Vtep::retired);
        }
        self.vteps[i] = vtep;
    }

    /// Remove VTEP `id`: its slot is retired (no address: no VXLAN is accepted from it) and it
    /// leaves every network's peers. The FDB entries behind it are the caller's to remove, as
    /// for [`Env::retire_network`].
    pub fn retire_vtep(&mut self, id: VtepId) {
        if let Some(v) = self.vteps.get_mut(usize::from(id.0)) {
            *v = Vtep::retired();
            for n in &mut self.nets {
                n.peers.retain(|&p| p != id);
            }
        }
    }

    /// The network with this VNI.
    pub fn net_by_vni(&self, vni: u32) -> Option<NetId> {
        self.nets
            .iter()
            .position(|n| n.vni == vni)
            .map(|i| NetId(i as u16))
    }

    /// The network called `name`.
    pub fn net_by_name(&self, name: &str) -> Option<NetId> {
        self.nets
            .iter()
            .position(|n| n.name == name && !n.is_retired())
            .map(|i| NetId(i as u16))
    }

    /// Add a remote VTEP (or return the existing one with this address).
    pub fn add_vtep(&mut self, addr: Ipv4Addr, node: impl Into<String>) -> VtepId {
        if let Some(i) = self.vteps.iter().position(|v| v.addr == addr) {
            return VtepId(i as u16);
        }
        self.vteps.push(Vtep {
            addr,
            node: node.into(),
        });
        VtepId((self.vteps.len() - 1) as u16)
    }

    /// The VTEP with this underlay address.
    pub fn vtep_by_addr(&self, addr: Ipv4Addr) -> Option<VtepId> {
        if addr.is_unspecified() {
            return None;
        }
        self.vteps
            .iter()
            .position(|v| v.addr == addr)
            .map(|i| VtepId(i as u16))
    }

    /// The network of `id`.
    #[inline]
    pub fn net(&self, id: NetId) -> &Network {
        &self.nets[id.0 as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FdbDest;

    #[test]
    fn networks_and_vteps_keep_their_ids_and_retired_slots_match_nothing() {
        let mut env = Env::new(FdbConfig::default());
        let (n2, v1) = (NetId(2), VtepId(1));
        env.set_network(n2, Network::new("appnet", 4097, 1450));
        assert_eq!(env.nets.len(), 3);
        assert!(env.nets[0].is_retired() && env.nets[1].is_retired());
        assert_eq!(env.net_by_vni(4097), Some(n2));
        assert_eq!(
            env.net_by_name(""),
            None,
            "a retired slot has no name to find"
        );
        let addr = Ipv4Addr::new(198, 18, 0, 2);
        env.set_vtep(
            v1,
            Vtep {
                addr,
                node: "n2".into(),
            },
        );
        assert_eq!(env.vtep_by_addr(Ipv4Addr::UNSPECIFIED), None);
        assert_eq!(env.vtep_by_addr(addr), Some(v1));
        env.nets[2].peers = vec![v1];
        let (m1, m2) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        env.fdb.learn_remote(n2, m1, v1, Time::from_secs(1));
        env.fdb.learn(n2, m2, PortId(0), Time::from_secs(1));
        env.fdb
            .add_static(n2, Mac([2, 0, 0, 0, 0, 3]), FdbDest::Remote(v1))
            .unwrap();
        env.retire_vtep(v1);
        assert_eq!(env.vtep_by_addr(addr), None);
        assert!(env.nets[2].peers.is_empty());
        env.fdb.flush_learned(|_, d| d == FdbDest::Remote(v1));
        assert_eq!((env.fdb.learned_len(), env.fdb.static_len()), (1, 1));
        env.retire_network(n2);
        assert_eq!(env.net_by_vni(4097), None);
        env.fdb.flush_learned(|n, _| n == n2);
        assert_eq!(env.fdb.learned_len(), 0);
        assert!(env.nets[2].is_retired());
    }
}
