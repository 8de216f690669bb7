//! The load balancer proper: virtual services, their backends, and the per-packet decision.
//!
//! [`Balancer::process`] is what the `lb-nat` stage runs for every IPv4 frame: look the packet up
//! in connection tracking (either direction); on a hit translate it (DNAT client -> backend, or
//! un-NAT backend -> client, plus SNAT for routing-mesh services) and advance the TCP state; on
//! a miss for a service, schedule a backend, track the new connection and translate; otherwise
//! let it pass untouched. ICMP errors about a tracked connection are translated the same way.
//! Every packet ends in exactly one [`Verdict`] and one counter. A batch goes through
//! [`Balancer::prepare`] first (hash each key and start fetching its bucket), so the table's
//! cache misses overlap instead of stalling each packet in turn. The control plane
//! (`add_service`, `add_backend`, `set_weight`, ...) runs between batches on the same owner.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use vswitch::{MAX_BATCH, NetId, Time};

use crate::conntrack::{Conn, ConnTable, Dir, F_INACTIVE, F_SNAT, Key};
use crate::packet::{
    self, Flow, IcmpError, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN, Tuple,
};
use crate::sched::{DestSet, Scheduler, SchedulerKind};
use crate::state::{TcpState, Timeouts};

/// A MAC address.
pub type Mac = [u8; 6];

/// Default maximum number of tracked connections.
pub const DEFAULT_MAX_CONNS: usize = 1 << 20;
/// Lowest source port handed out by the routing-mesh SNAT.
pub const SNAT_PORT_MIN: u16 = 1024;
/// Source ports tried before a routing-mesh connection is refused.
pub const SNAT_MAX_TRIES: u32 = 128;
/// Ethernet header: destination MAC, source MAC, EtherType.
const ETH_DST: core::ops::Range<usize> = 0..6;
const ETH_SRC: core::ops::Range<usize> = 6..12;
const ETH_ADDRS: usize = 12;
/// IPVS estimator smoothing: `avg += (rate - avg) / 4`.
const RATE_EWMA_SHIFT: u32 = 2;
/// Nanoseconds per second.
const NANOS: u128 = 1_000_000_000;

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }

    /// ipvsadm's name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    fn from_number(p: u8) -> Option<Protocol> {
        match p {
            PROTO_TCP => Some(Protocol::Tcp),
            PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// How a virtual service is selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKey {
    /// Packets to `addr:port` over `proto` in network `net` (ipvsadm `-t` / `-u`).
    Addr {
        /// Network the clients are in.
        net: NetId,
        /// Protocol.
        proto: Protocol,
        /// Virtual IP.
        addr: Ipv4Addr,
        /// Virtual port.
        port: u16,
    },
    /// Packets a [`MarkRule`] marked with `mark` in network `net` (ipvsadm `-f`).
    Fwmark {
        /// Network the clients are in.
        net: NetId,
        /// Firewall mark.
        mark: u32,
    },
}

impl ServiceKey {
    fn net(&self) -> NetId {
        match *self {
            ServiceKey::Addr { net, .. } | ServiceKey::Fwmark { net, .. } => net,
        }
    }
}

/// A classifier rule marking packets for a firewall-mark service (Docker's mangle rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkRule {
    /// Network the packet is in.
    pub net: NetId,
    /// Protocol, or any of TCP/UDP.
    pub proto: Option<Protocol>,
    /// Destination address, or any.
    pub addr: Option<Ipv4Addr>,
    /// Destination ports.
    pub ports: RangeInclusive<u16>,
    /// Mark to set.
    pub mark: u32,
}

impl MarkRule {
    #[inline]
    fn matches(&self, net: NetId, t: &Tuple) -> bool {
        self.net == net
            && self.proto.is_none_or(|p| p.number() == t.proto)
            && self.addr.is_none_or(|a| u32::from(a) == t.dst)
            && self.ports.contains(&t.dport)
    }
}

/// Source NAT for the routing mesh: the node's load-balancer address in the backends' network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snat {
    /// The node's LB address in the network.
    pub addr: Ipv4Addr,
    /// Its MAC (source of translated frames).
    pub mac: Mac,
    /// Source ports to allocate from.
    pub port_min: u16,
}

/// A virtual service to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// What selects it.
    pub key: ServiceKey,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Network the backends are in (differs from the key's for published ports).
    pub backend_net: NetId,
    /// Source NAT (routing mesh), or plain Masq.
    pub snat: Option<Snat>,
}

/// A backend (real server) to add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// Address.
    pub addr: Ipv4Addr,
    /// Target port; 0 keeps the packet's destination port (fwmark services).
    pub port: u16,
    /// Weight; 0 drains.
    pub weight: u32,
    /// Its MAC (destination of translated frames).
    pub mac: Mac,
}

/// Traffic counters of a service or backend (`ipvsadm --stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets client -> backend.
    pub inpkts: u64,
    /// Packets backend -> client.
    pub outpkts: u64,
    /// Bytes client -> backend.
    pub inbytes: u64,
    /// Bytes backend -> client.
    pub outbytes: u64,
}

/// Smoothed rates per second (`ipvsadm --rate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets per second in.
    pub inpps: u64,
    /// Packets per second out.
    pub outpps: u64,
    /// Bytes per second in.
    pub inbps: u64,
    /// Bytes per second out.
    pub outbps: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Estimator {
    last: Stats,
    rates: Rates,
}

impl Estimator {
    fn update(&mut self, now: &Stats, elapsed_ns: u64) {
        let per_sec = |cur: u64, last: u64| {
            (u128::from(cur.saturating_sub(last)) * NANOS / u128::from(elapsed_ns)) as u64
        };
        let ewma = |avg: &mut u64, r: u64| {
            let a = *avg as i128;
            *avg = (a + ((r as i128 - a) >> RATE_EWMA_SHIFT)).max(0) as u64;
        };
        ewma(&mut self.rates.cps, per_sec(now.conns, self.last.conns));
        ewma(&mut self.rates.inpps, per_sec(now.inpkts, self.last.inpkts));
        ewma(
            &mut self.rates.outpps,
            per_sec(now.outpkts, self.last.outpkts),
        );
        ewma(
            &mut self.rates.inbps,
            per_sec(now.inbytes, self.last.inbytes),
        );
        ewma(
            &mut self.rates.outbps,
            per_sec(now.outbytes, self.last.outbytes),
        );
        self.last = *now;
    }
}

#[derive(Clone, Debug)]
struct Backend {
    cfg: BackendConfig,
    last_weight: u32,
    active: u32,
    inactive: u32,
    stats: Stats,
    est: Estimator,
    removed: bool,
    in_use: bool,
}

#[derive(Clone, Debug)]
struct Service {
    cfg: ServiceConfig,
    sched: Scheduler,
    dests: Vec<u16>,
    stats: Stats,
    est: Estimator,
    conns: u32,
    removed: bool,
    in_use: bool,
}

struct Dests<'a> {
    ids: &'a [u16],
    arena: &'a [Backend],
}

impl DestSet for Dests<'_> {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn weight(&self, i: usize) -> u32 {
        self.arena[usize::from(self.ids[i])].cfg.weight
    }
    fn last_weight(&self, i: usize) -> u32 {
        self.arena[usize::from(self.ids[i])].last_weight
    }
    fn active(&self, i: usize) -> u32 {
        self.arena[usize::from(self.ids[i])].active
    }
    fn inactive(&self, i: usize) -> u32 {
        self.arena[usize::from(self.ids[i])].inactive
    }
    fn addr(&self, i: usize) -> (u32, u16) {
        let b = &self.arena[usize::from(self.ids[i])].cfg;
        (u32::from(b.addr), b.port)
    }
}

/// Errors of the control-plane operations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BalancerError {
    /// A service with this key exists.
    #[error("service {0:?} already exists")]
    ServiceExists(ServiceKey),
    /// No service with this key.
    #[error("no service {0:?}")]
    NoService(ServiceKey),
    /// The backend is already in the service.
    #[error("backend {0}:{1} already in the service")]
    BackendExists(Ipv4Addr, u16),
    /// The backend is not in the service.
    #[error("no backend {0}:{1} in the service")]
    NoBackend(Ipv4Addr, u16),
    /// Too many services or backends for 16-bit slots.
    #[error("too many {0}")]
    TooMany(&'static str),
}

vswitch::drop_table! {
    /// Why the load balancer dropped a packet (the `lb-nat` stage's drop reasons).
    pub enum LbDrop {
        /// An IPv4 header or transport header that does not parse.
        Malformed => "drop_malformed",
        /// A fragment addressed to a service (ports unreadable; not reassembled).
        Fragment => "drop_fragment",
        /// A TCP packet for a service with no connection that is not a SYN.
        TcpNotSyn => "drop_tcp_not_syn",
        /// Every backend of the service is drained, or it has none.
        NoBackend => "drop_no_backend",
        /// The connection table is full.
        TableFull => "drop_table_full",
        /// No free routing-mesh source port for this backend.
        SnatPortsExhausted => "drop_snat_ports_exhausted",
    }
}

impl LbDrop {
    /// Number of reasons.
    pub const COUNT: usize = LbDrop::NAMES.len();
}

/// The outcome of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not load-balancer traffic: left untouched.
    Pass,
    /// Translated towards a backend; it now belongs to network `net`.
    ToBackend {
        /// The backend's network.
        net: NetId,
    },
    /// Translated back towards the client; it now belongs to network `net`.
    ToClient {
        /// The client's network.
        net: NetId,
    },
    /// Dropped.
    Drop(LbDrop),
}

/// Packet counters of the balancer: `packets == pass + to_backend + to_client + sum(drops)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbCounters {
    /// Packets processed.
    pub packets: u64,
    /// Passed untouched.
    pub pass: u64,
    /// Translated towards a backend.
    pub to_backend: u64,
    /// Translated back to a client.
    pub to_client: u64,
    /// Drops by [`LbDrop`].
    pub drops: [u64; LbDrop::COUNT],
    /// Connections created (informational).
    pub new_conns: u64,
    /// ICMP errors translated (informational; also in `to_backend`/`to_client`).
    pub icmp_translated: u64,
    /// Connections expired or released (informational).
    pub expired: u64,
}

/// Balancer settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalancerConfig {
    /// Maximum tracked connections.
    pub max_conns: usize,
    /// Hash seed of the connection table (choose it at random per process).
    pub seed: u64,
    /// Timeouts.
    pub timeouts: Timeouts,
}

impl Default for BalancerConfig {
    fn default() -> BalancerConfig {
        BalancerConfig {
            max_conns: DEFAULT_MAX_CONNS,
            seed: 0x005e_ed1b,
            timeouts: Timeouts::default(),
        }
    }
}

/// One backend in a listing (`ipvsadm -Ln` line `-> addr:port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// Address.
    pub addr: Ipv4Addr,
    /// Target port (0: the packet's port).
    pub port: u16,
    /// Forwarding method ("Masq").
    pub forward: &'static str,
    /// Weight.
    pub weight: u32,
    /// Established connections.
    pub active_conns: u32,
    /// Other connections.
    pub inact_conns: u32,
    /// Counters.
    pub stats: Stats,
    /// Rates.
    pub rates: Rates,
}

/// One service in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Selection.
    pub key: ServiceKey,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// SNAT address for the routing mesh, if any.
    pub snat: Option<Ipv4Addr>,
    /// Backends, in scheduling order.
    pub backends: Vec<BackendInfo>,
    /// Counters.
    pub stats: Stats,
    /// Rates.
    pub rates: Rates,
}

/// One connection in a listing (`ipvsadm -Lnc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Protocol.
    pub proto: Protocol,
    /// Seconds until it expires.
    pub expires_in: u32,
    /// State name (TCP state, or "UDP").
    pub state: &'static str,
    /// Client address and port.
    pub client: (Ipv4Addr, u16),
    /// Virtual address and port.
    pub virtual_: (Ipv4Addr, u16),
    /// Backend address and port.
    pub dest: (Ipv4Addr, u16),
    /// Source the backend sees, when SNAT rewrote it.
    pub snat: Option<(Ipv4Addr, u16)>,
}

/// What the passes before translation learned about a TCP/UDP frame: its connection key and
/// the key's hash ([`Balancer::prepare`], which also starts fetching the key's bucket), then
/// the key's entry as of a table generation ([`Balancer::lookup_prepared`], which also starts
/// fetching the entry). [`Balancer::process_prepared`] uses what is still true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    key: Key,
    hash: u32,
    /// Where the frame's IPv4 header starts, its length, and (from parsing it) the transport
    /// header's offset in the IPv4 packet and the TCP flags: translation needs no second parse.
    l3: u16,
    len: u16,
    l4: u16,
    tcp_flags: u8,
    found: Option<(u32, Dir)>,
    /// The table generation `found` was taken at ([`NOT_LOOKED_UP`] before).
    generation: u64,
}

/// [`Prepared::generation`] of a key not looked up yet (no table reaches it).
const NOT_LOOKED_UP: u64 = u64::MAX;

impl Default for Prepared {
    fn default() -> Prepared {
        Prepared {
            key: Key::default(),
            hash: 0,
            l3: 0,
            len: 0,
            l4: 0,
            tcp_flags: 0,
            found: None,
            generation: NOT_LOOKED_UP,
        }
    }
}

/// Services, backends and connection tracking: the whole load balancer of one worker.
pub struct Balancer {
    services: Vec<Service>,
    by_key: HashMap<ServiceKey, u16, foldhash::fast::FixedState>,
    vips: HashSet<(NetId, u32), foldhash::fast::FixedState>,
    marks: Vec<MarkRule>,
    backends: Vec<Backend>,
    ct: ConnTable,
    timeouts: Timeouts,
    counters: LbCounters,
    sweep: u32,
    last_estimate: Option<Time>,
}

#[inline]
fn secs(now: Time) -> u32 {
    now.secs() as u32
}

impl Balancer {
    /// An empty balancer.
    pub fn new(cfg: BalancerConfig) -> Balancer {
        Balancer {
            services: Vec::new(),
            by_key: HashMap::default(),
            vips: HashSet::default(),
            marks: Vec::new(),
            backends: Vec::new(),
            ct: ConnTable::new(cfg.max_conns, cfg.seed),
            timeouts: cfg.timeouts,
            counters: LbCounters::default(),
            sweep: 0,
            last_estimate: None,
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> &LbCounters {
        &self.counters
    }

    /// The connection table (read-only: sizes, memory).
    pub fn conn_table(&self) -> &ConnTable {
        &self.ct
    }

    /// Current timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Change timeouts (`ipvsadm --set`); applies from each connection's next packet.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
    }

    // ---- control plane ----

    /// Add a virtual service.
    pub fn add_service(&mut self, cfg: ServiceConfig) -> Result<(), BalancerError> {
        if self.by_key.contains_key(&cfg.key) {
            return Err(BalancerError::ServiceExists(cfg.key));
        }
        let svc = Service {
            sched: Scheduler::new(cfg.scheduler),
            cfg: cfg.clone(),
            dests: Vec::new(),
            stats: Stats::default(),
            est: Estimator::default(),
            conns: 0,
            removed: false,
            in_use: true,
        };
        let slot = place(&mut self.services, svc, |s| !s.in_use, "services")?;
        self.by_key.insert(cfg.key, slot as u16);
        if let ServiceKey::Addr { net, addr, .. } = cfg.key {
            self.vips.insert((net, u32::from(addr)));
        }
        Ok(())
    }

    /// Remove a service and its backends; its connections expire on their next packet.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), BalancerError> {
        let s = self
            .by_key
            .remove(key)
            .ok_or(BalancerError::NoService(*key))?;
        let ids = core::mem::take(&mut self.services[usize::from(s)].dests);
        for id in ids {
            self.retire_backend(id);
        }
        let svc = &mut self.services[usize::from(s)];
        svc.removed = true;
        if svc.conns == 0 {
            svc.in_use = false;
        }
        self.vips = self
            .by_key
            .keys()
            .filter_map(|k| match *k {
                ServiceKey::Addr { net, addr, .. } => Some((net, u32::from(addr))),
                ServiceKey::Fwmark { .. } => None,
            })
            .collect();
        Ok(())
    }

    /// Add a classifier rule for firewall-mark services.
    pub fn add_mark_rule(&mut self, rule: MarkRule) {
        self.marks.push(rule);
    }

    /// Remove every classifier rule setting `mark`.
    pub fn remove_mark_rules(&mut self, mark: u32) {
        self.marks.retain(|r| r.mark != mark);
    }

    fn service_slot(&self, key: &ServiceKey) -> Result<usize, BalancerError> {
        self.by_key
            .get(key)
            .map(|&s| usize::from(s))
            .ok_or(BalancerError::NoService(*key))
    }

    fn find_dest(&self, s: usize, addr: Ipv4Addr, port: u16) -> Option<usize> {
        self.services[s].dests.iter().position(|&id| {
            let b = &self.backends[usize::from(id)].cfg;
            b.addr == addr && b.port == port
        })
    }

    fn resched(&mut self, s: usize, removed: Option<usize>) {
        let Service { sched, dests, .. } = &mut self.services[s];
        sched.dests_changed(
            &Dests {
                ids: dests,
                arena: &self.backends,
            },
            removed,
        );
    }

    /// Add a backend at the end of a service's list; existing connections never move.
    pub fn add_backend(&mut self, key: &ServiceKey, b: BackendConfig) -> Result<(), BalancerError> {
        let s = self.service_slot(key)?;
        if self.find_dest(s, b.addr, b.port).is_some() {
            return Err(BalancerError::BackendExists(b.addr, b.port));
        }
        let be = Backend {
            cfg: b,
            last_weight: b.weight,
            active: 0,
            inactive: 0,
            stats: Stats::default(),
            est: Estimator::default(),
            removed: false,
            in_use: true,
        };
        let id = place(&mut self.backends, be, |b| !b.in_use, "backends")?;
        self.services[s].dests.push(id as u16);
        self.resched(s, None);
        Ok(())
    }

    /// Change a backend's weight (0 drains: no new connections, existing ones continue).
    pub fn set_weight(
        &mut self,
        key: &ServiceKey,
        addr: Ipv4Addr,
        port: u16,
        weight: u32,
    ) -> Result<(), BalancerError> {
        let s = self.service_slot(key)?;
        let pos = self
            .find_dest(s, addr, port)
            .ok_or(BalancerError::NoBackend(addr, port))?;
        let b = &mut self.backends[usize::from(self.services[s].dests[pos])];
        b.cfg.weight = weight;
        if weight > 0 {
            b.last_weight = weight;
        }
        self.resched(s, None);
        Ok(())
    }

    /// Remove a backend; its connections expire (IPVS `expire_nodest_conn=1`).
    pub fn remove_backend(
        &mut self,
        key: &ServiceKey,
        addr: Ipv4Addr,
        port: u16,
    ) -> Result<(), BalancerError> {
        let s = self.service_slot(key)?;
        let pos = self
            .find_dest(s, addr, port)
            .ok_or(BalancerError::NoBackend(addr, port))?;
        let id = self.services[s].dests.remove(pos);
        self.resched(s, Some(pos));
        self.retire_backend(id);
        Ok(())
    }

    fn retire_backend(&mut self, id: u16) {
        let b = &mut self.backends[usize::from(id)];
        b.removed = true;
        if b.active + b.inactive == 0 {
            b.in_use = false;
        }
    }

    // ---- data path ----

    /// Release a connection: backend and service counts, then the table entry.
    fn release(&mut self, idx: u32) {
        let c = *self.ct.get(idx);
        let b = &mut self.backends[usize::from(c.backend)];
        if c.flags & F_INACTIVE != 0 {
            b.inactive -= 1;
        } else {
            b.active -= 1;
        }
        if b.removed && b.active + b.inactive == 0 {
            b.in_use = false;
        }
        let s = &mut self.services[usize::from(c.service)];
        s.conns -= 1;
        if s.removed && s.conns == 0 {
            s.in_use = false;
        }
        self.ct.remove(idx);
        self.counters.expired += 1;
    }

    /// Expire up to `budget` table slots' worth of connections (call between batches so
    /// idle entries go away without a timer per entry). Returns how many were released.
    pub fn expire(&mut self, now: Time, budget: usize) -> usize {
        let cap = self.ct.capacity() as u32;
        let t = secs(now);
        let mut released = 0;
        for _ in 0..budget.min(cap as usize) {
            let idx = self.sweep;
            self.sweep = if idx + 1 >= cap { 0 } else { idx + 1 };
            if !self.ct.is_live(idx) {
                continue;
            }
            let c = self.ct.get(idx);
            if t >= c.expires || self.backends[usize::from(c.backend)].removed {
                self.release(idx);
                released += 1;
            }
        }
        released
    }

    /// Update the `--rate` estimators (call about every 2 s, as IPVS's estimator runs).
    pub fn estimate(&mut self, now: Time) {
        let Some(last) = self.last_estimate.replace(now) else {
            return;
        };
        let elapsed = now.0.saturating_sub(last.0);
        if elapsed == 0 {
            return;
        }
        for s in self.services.iter_mut().filter(|s| s.in_use) {
            s.est.update(&s.stats, elapsed);
        }
        for b in self.backends.iter_mut().filter(|b| b.in_use) {
            b.est.update(&b.stats, elapsed);
        }
    }

    /// First pass over a batch: the connection key of a TCP/UDP frame with its hash, and a
    /// prefetch of the key's bucket line. `None` for anything else (those are not looked up
    /// by their own tuple).
    #[inline]
    pub fn prepare(&self, frame: &[u8], l3: usize, net: NetId) -> Option<Prepared> {
        let Ok(Flow::Transport {
            tuple,
            l4,
            tcp_flags,
        }) = packet::parse(frame.get(l3..)?)
        else {
            return None;
        };
        let key = Key { net: net.0, tuple };
        let hash = self.ct.hash(&key);
        self.ct.prefetch(hash);
        Some(Prepared {
            key,
            hash,
            l3: u16::try_from(l3).ok()?,
            len: u16::try_from(frame.len()).ok()?,
            l4: l4 as u16,
            tcp_flags,
            found: None,
            generation: NOT_LOOKED_UP,
        })
    }

    /// Second pass over a batch: look all the prepared keys up together (their bucket lines
    /// arrive together) and start fetching each hit's entry, which translation reads next.
    pub fn lookup_prepared(&self, preps: &mut [Prepared]) {
        let mut keys = [Key::default(); MAX_BATCH];
        let mut hashes = [0u32; MAX_BATCH];
        let mut found = [None; MAX_BATCH];
        for preps in preps.chunks_mut(MAX_BATCH) {
            let n = preps.len();
            for (i, p) in preps.iter().enumerate() {
                (keys[i], hashes[i]) = (p.key, p.hash);
            }
            self.ct
                .lookup_burst(&keys[..n], &hashes[..n], &mut found[..n]);
            let generation = self.ct.generation();
            for (p, f) in preps.iter_mut().zip(&found[..n]) {
                if let Some((idx, _)) = *f {
                    self.ct.prefetch_conn(idx);
                }
                (p.found, p.generation) = (*f, generation);
            }
        }
    }

    /// Process one frame: `frame[l3..]` is an IPv4 packet, `frame[..12]` its Ethernet addresses
    /// when `l3 >= 14`. Translates in place and says what became of it.
    #[inline]
    pub fn process(&mut self, frame: &mut [u8], l3: usize, net: NetId, now: Time) -> Verdict {
        self.process_prepared(frame, l3, net, now, None)
    }

    /// As [`Balancer::process`], with what this balancer's earlier passes learned about this
    /// same, unmodified frame: its parse and hash are reused, and its lookup too unless a
    /// connection was added or removed since (by an earlier packet of the batch). A `prep`
    /// whose IPv4 offset, frame length or network differ from the call's is ignored.
    #[inline]
    pub fn process_prepared(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        net: NetId,
        now: Time,
        prep: Option<&Prepared>,
    ) -> Verdict {
        let v = match prep {
            // Parsed by `prepare`; the frame is unchanged since (same place, length, network).
            Some(p)
                if usize::from(p.l3) == l3
                    && usize::from(p.len) == frame.len()
                    && p.key.net == net.0 =>
            {
                let (l4, flags) = (usize::from(p.l4), p.tcp_flags);
                self.transport(frame, l3, l4, net, p.key.tuple, flags, now, prep)
            }
            _ => self.process_inner(frame, l3, net, now, prep),
        };
        let c = &mut self.counters;
        c.packets += 1;
        match v {
            Verdict::Pass => c.pass += 1,
            Verdict::ToBackend { .. } => c.to_backend += 1,
            Verdict::ToClient { .. } => c.to_client += 1,
            Verdict::Drop(r) => c.drops[r as usize] += 1,
        }
        v
    }

    #[inline]
    fn process_inner(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        net: NetId,
        now: Time,
        prep: Option<&Prepared>,
    ) -> Verdict {
        let Some(ip) = frame.get(l3..) else {
            return Verdict::Drop(LbDrop::Malformed);
        };
        match packet::parse(ip) {
            Err(_) => Verdict::Drop(LbDrop::Malformed),
            Ok(Flow::Other) => Verdict::Pass,
            Ok(Flow::Fragment { dst }) => {
                if self.vips.contains(&(net, dst)) {
                    Verdict::Drop(LbDrop::Fragment)
                } else {
                    Verdict::Pass
                }
            }
            Ok(Flow::Transport {
                tuple,
                l4,
                tcp_flags,
            }) => self.transport(frame, l3, l4, net, tuple, tcp_flags, now, prep),
            Ok(Flow::Icmp(e)) => self.icmp(frame, l3, net, &e, now),
        }
    }

    /// Advance a connection's state for a packet in `dir` and re-arm its expiry.
    #[inline]
    fn touch(&mut self, idx: u32, dir: Dir, flags: u8, now: Time) {
        let c = self.ct.get_mut(idx);
        if c.proto == PROTO_TCP {
            let old = TcpState::from_u8(c.state);
            let new = old.next(dir == Dir::Reply, flags);
            if new != old {
                let b = &mut self.backends[usize::from(c.backend)];
                if c.flags & F_INACTIVE == 0 && new != TcpState::Established {
                    b.active -= 1;
                    b.inactive += 1;
                    c.flags |= F_INACTIVE;
                } else if c.flags & F_INACTIVE != 0 && new == TcpState::Established {
                    b.active += 1;
                    b.inactive -= 1;
                    c.flags &= !F_INACTIVE;
                }
                c.state = new as u8;
            }
            c.expires = secs(now).saturating_add(self.timeouts.tcp_state(new));
        } else {
            c.expires = secs(now).saturating_add(self.timeouts.udp);
        }
    }

    #[inline]
    fn account(&mut self, idx: u32, dir: Dir, bytes: usize) {
        let c = self.ct.get(idx);
        let (s, b) = (usize::from(c.service), usize::from(c.backend));
        let bytes = bytes as u64;
        for st in [&mut self.services[s].stats, &mut self.backends[b].stats] {
            if dir == Dir::Orig {
                st.inpkts += 1;
                st.inbytes += bytes;
            } else {
                st.outpkts += 1;
                st.outbytes += bytes;
            }
        }
    }

    /// Rewrite Ethernet addresses for a translated frame.
    #[inline]
    fn rewrite_macs(frame: &mut [u8], l3: usize, dst: &Mac, src: Option<&Mac>) {
        if l3 >= ETH_ADDRS {
            frame[ETH_DST].copy_from_slice(dst);
            if let Some(s) = src {
                frame[ETH_SRC].copy_from_slice(s);
            }
        }
    }

    /// Translate a packet of tracked connection `idx` going `dir`.
    #[inline]
    fn translate(&mut self, frame: &mut [u8], l3: usize, l4: usize, idx: u32, dir: Dir) -> Verdict {
        let c = *self.ct.get(idx);
        let ip = &mut frame[l3..];
        let len = ip.len();
        match dir {
            Dir::Orig => {
                packet::rewrite_transport(ip, l4, c.proto, (c.laddr, c.lport), (c.daddr, c.dport));
                let b = &self.backends[usize::from(c.backend)];
                let snat_mac = self.snat_mac(&c);
                Self::rewrite_macs(frame, l3, &b.cfg.mac, snat_mac.as_ref());
                self.account(idx, dir, len);
                Verdict::ToBackend { net: NetId(c.rnet) }
            }
            Dir::Reply => {
                packet::rewrite_transport(ip, l4, c.proto, (c.vaddr, c.vport), (c.caddr, c.cport));
                Self::rewrite_macs(frame, l3, &c.cmac, Some(&c.vmac));
                self.account(idx, dir, len);
                Verdict::ToClient { net: NetId(c.fnet) }
            }
        }
    }

    #[inline]
    fn snat_mac(&self, c: &Conn) -> Option<Mac> {
        if c.flags & F_SNAT == 0 {
            return None;
        }
        self.services[usize::from(c.service)]
            .cfg
            .snat
            .map(|s| s.mac)
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn transport(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        l4: usize,
        net: NetId,
        tuple: Tuple,
        flags: u8,
        now: Time,
        prep: Option<&Prepared>,
    ) -> Verdict {
        let key = Key { net: net.0, tuple };
        let found = match prep {
            Some(p) if p.key == key && p.generation == self.ct.generation() => p.found,
            Some(p) if p.key == key => self.ct.lookup_hashed(&key, p.hash),
            _ => self.ct.lookup(&key),
        };
        if let Some((idx, dir)) = found {
            let c = self.ct.get(idx);
            let expired = secs(now) >= c.expires;
            let stale = match dir {
                Dir::Orig => {
                    expired
                        || self.backends[usize::from(c.backend)].removed
                        // A new SYN on a closed tuple is a new connection (IPVS conn_reuse_mode).
                        || (c.proto == PROTO_TCP
                            && flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
                            && matches!(TcpState::from_u8(c.state), TcpState::TimeWait | TcpState::Close))
                }
                Dir::Reply => expired,
            };
            if !stale {
                self.touch(idx, dir, flags, now);
                return self.translate(frame, l3, l4, idx, dir);
            }
            self.release(idx);
            if dir == Dir::Reply {
                return Verdict::Pass;
            }
        }
        self.new_conn(frame, l3, l4, net, tuple, flags, now)
    }

    #[inline]
    fn find_service(&self, net: NetId, t: &Tuple) -> Option<usize> {
        let proto = Protocol::from_number(t.proto)?;
        let key = ServiceKey::Addr {
            net,
            proto,
            addr: Ipv4Addr::from(t.dst),
            port: t.dport,
        };
        if let Some(&s) = self.by_key.get(&key) {
            return Some(usize::from(s));
        }
        let rule = self.marks.iter().find(|r| r.matches(net, t))?;
        self.by_key
            .get(&ServiceKey::Fwmark {
                net,
                mark: rule.mark,
            })
            .map(|&s| usize::from(s))
    }

    #[allow(clippy::too_many_arguments)]
    fn new_conn(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        l4: usize,
        net: NetId,
        t: Tuple,
        flags: u8,
        now: Time,
    ) -> Verdict {
        let Some(s) = self.find_service(net, &t) else {
            return Verdict::Pass;
        };
        if t.proto == PROTO_TCP && (flags & TCP_SYN == 0 || flags & TCP_RST != 0) {
            return Verdict::Drop(LbDrop::TcpNotSyn);
        }
        let pos = {
            let Service { sched, dests, .. } = &mut self.services[s];
            sched.schedule(
                &Dests {
                    ids: dests,
                    arena: &self.backends,
                },
                t.src,
                t.sport,
            )
        };
        let Some(pos) = pos else {
            return Verdict::Drop(LbDrop::NoBackend);
        };
        let bid = self.services[s].dests[pos];
        let b = self.backends[usize::from(bid)].cfg;
        let svc = &self.services[s].cfg;
        let dport = if b.port == 0 { t.dport } else { b.port };
        let rnet = svc.backend_net.0;
        let (laddr, lport, flags_snat) = match svc.snat {
            None => (t.src, t.sport, 0),
            Some(sn) => {
                let laddr = u32::from(sn.addr);
                match self.snat_port(
                    rnet,
                    t.proto,
                    u32::from(b.addr),
                    dport,
                    laddr,
                    t.sport,
                    sn.port_min,
                    &t,
                ) {
                    Some(p) => (laddr, p, F_SNAT),
                    None => return Verdict::Drop(LbDrop::SnatPortsExhausted),
                }
            }
        };
        let (mut cmac, mut vmac) = ([0; 6], [0; 6]);
        if l3 >= ETH_ADDRS {
            vmac.copy_from_slice(&frame[ETH_DST]);
            cmac.copy_from_slice(&frame[ETH_SRC]);
        }
        let conn = Conn {
            caddr: t.src,
            vaddr: t.dst,
            daddr: u32::from(b.addr),
            laddr,
            cport: t.sport,
            vport: t.dport,
            dport,
            lport,
            expires: 0,
            service: s as u16,
            backend: bid,
            fnet: net.0,
            rnet,
            proto: t.proto,
            state: TcpState::None as u8,
            flags: F_INACTIVE | flags_snat,
            cmac,
            vmac,
        };
        // The reply key of a plain Masq connection can collide with a live entry (a backend
        // that is also a client of the same port pair): refuse rather than shadow it.
        if self.ct.lookup(&conn.key(Dir::Reply)).is_some() {
            return Verdict::Drop(LbDrop::SnatPortsExhausted);
        }
        let Ok(idx) = self.ct.insert(conn) else {
            return Verdict::Drop(LbDrop::TableFull);
        };
        // IPVS binds every new connection as inactive; TCP turns active on ESTABLISHED.
        self.backends[usize::from(bid)].inactive += 1;
        self.backends[usize::from(bid)].stats.conns += 1;
        self.services[s].stats.conns += 1;
        self.services[s].conns += 1;
        self.counters.new_conns += 1;
        self.touch(idx, Dir::Orig, flags, now);
        self.translate(frame, l3, l4, idx, Dir::Orig)
    }

    /// Pick a source port for a routing-mesh connection whose reply tuple is free: the client's
    /// own port first, then a hash-spread sequence (as Linux NAT's unique-tuple search).
    #[allow(clippy::too_many_arguments)]
    fn snat_port(
        &self,
        rnet: u16,
        proto: u8,
        daddr: u32,
        dport: u16,
        laddr: u32,
        cport: u16,
        min: u16,
        t: &Tuple,
    ) -> Option<u16> {
        let min = min.max(1);
        let span = u32::from(u16::MAX - min) + 1;
        let free = |p: u16| {
            let k = Key {
                net: rnet,
                tuple: Tuple {
                    proto,
                    src: daddr,
                    dst: laddr,
                    sport: dport,
                    dport: p,
                },
            };
            self.ct.lookup(&k).is_none()
        };
        if cport >= min && free(cport) {
            return Some(cport);
        }
        let h = self.ct.hash(&Key {
            net: rnet,
            tuple: *t,
        });
        (0..SNAT_MAX_TRIES)
            .map(|i| min + ((h.wrapping_add(i.wrapping_mul(0x9e37_79b1 | 1))) % span) as u16)
            .find(|&p| free(p))
    }

    fn icmp(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        net: NetId,
        e: &IcmpError,
        now: Time,
    ) -> Verdict {
        // The quoted packet went the other way: its reverse is the key of this direction.
        let key = Key {
            net: net.0,
            tuple: e.quoted.reversed(),
        };
        let Some((idx, dir)) = self.ct.lookup(&key) else {
            return Verdict::Pass;
        };
        let c = *self.ct.get(idx);
        if secs(now) >= c.expires {
            return Verdict::Pass;
        }
        let ip = &mut frame[l3..];
        let len = ip.len();
        let v = match dir {
            // ICMP travelling to the client about a client -> backend packet.
            Dir::Reply => {
                packet::rewrite_icmp_error(
                    ip,
                    e,
                    c.vaddr,
                    c.caddr,
                    (c.caddr, c.cport),
                    (c.vaddr, c.vport),
                );
                Self::rewrite_macs(frame, l3, &c.cmac, Some(&c.vmac));
                Verdict::ToClient { net: NetId(c.fnet) }
            }
            // ICMP travelling to the backend about a backend -> client reply.
            Dir::Orig => {
                let osrc = if c.flags & F_SNAT != 0 {
                    c.laddr
                } else {
                    e.src
                };
                packet::rewrite_icmp_error(
                    ip,
                    e,
                    osrc,
                    c.daddr,
                    (c.daddr, c.dport),
                    (c.laddr, c.lport),
                );
                let bmac = self.backends[usize::from(c.backend)].cfg.mac;
                let smac = self.snat_mac(&c);
                Self::rewrite_macs(frame, l3, &bmac, smac.as_ref());
                Verdict::ToBackend { net: NetId(c.rnet) }
            }
        };
        self.account(idx, dir, len);
        self.counters.icmp_translated += 1;
        v
    }

    // ---- listings ----

    /// Services with their backends and counters (`ipvsadm -Ln --stats --rate` data).
    pub fn services(&self) -> Vec<ServiceInfo> {
        let mut out: Vec<ServiceInfo> = self
            .services
            .iter()
            .filter(|s| s.in_use && !s.removed)
            .map(|s| ServiceInfo {
                key: s.cfg.key,
                scheduler: s.sched.kind(),
                snat: s.cfg.snat.map(|n| n.addr),
                backends: s
                    .dests
                    .iter()
                    .map(|&id| {
                        let b = &self.backends[usize::from(id)];
                        BackendInfo {
                            addr: b.cfg.addr,
                            port: b.cfg.port,
                            forward: "Masq",
                            weight: b.cfg.weight,
                            active_conns: b.active,
                            inact_conns: b.inactive,
                            stats: b.stats,
                            rates: b.est.rates,
                        }
                    })
                    .collect(),
                stats: s.stats,
                rates: s.est.rates,
            })
            .collect();
        out.sort_by_key(|s| match s.key {
            ServiceKey::Addr {
                net,
                proto,
                addr,
                port,
            } => (0, net.0, u32::from(addr), port, proto.number()),
            ServiceKey::Fwmark { net, mark } => (1, net.0, mark, 0, 0),
        });
        out
    }

    /// Every tracked connection, closing ones too (`ipvsadm -Lnc` data).
    pub fn conns(&self, now: Time) -> Vec<ConnInfo> {
        let t = secs(now);
        self.ct
            .iter()
            .filter_map(|(_, c)| {
                let proto = Protocol::from_number(c.proto)?;
                let sa = |a: u32, p: u16| (Ipv4Addr::from(a), p);
                Some(ConnInfo {
                    proto,
                    expires_in: c.expires.saturating_sub(t),
                    state: if proto == Protocol::Tcp {
                        TcpState::from_u8(c.state).name()
                    } else {
                        "UDP"
                    },
                    client: sa(c.caddr, c.cport),
                    virtual_: sa(c.vaddr, c.vport),
                    dest: sa(c.daddr, c.dport),
                    snat: (c.flags & F_SNAT != 0).then(|| sa(c.laddr, c.lport)),
                })
            })
            .collect()
    }

    /// The key of a service by slot, for tests and tracing.
    pub fn service_net(&self, key: &ServiceKey) -> Option<NetId> {
        self.by_key.contains_key(key).then(|| key.net())
    }
}

/// Put `item` in the first free slot of `arena` (`free`), or at its end while it holds fewer
/// than `u16::MAX` (slots are named by `u16` ids); its slot.
fn place<T>(
    arena: &mut Vec<T>,
    item: T,
    free: impl Fn(&T) -> bool,
    what: &'static str,
) -> Result<usize, BalancerError> {
    if let Some(i) = arena.iter().position(free) {
        arena[i] = item;
        return Ok(i);
    }
    if arena.len() >= usize::from(u16::MAX) {
        return Err(BalancerError::TooMany(what));
    }
    arena.push(item);
    Ok(arena.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::{build, build_icmp, verify};
    use crate::packet::{ICMP_DEST_UNREACH, TCP_FIN};

    const NET: NetId = NetId(0);
    const INGRESS: NetId = NetId(1);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 11);
    const CMAC: Mac = [2, 0x42, 10, 0, 9, 11];
    const VMAC: Mac = [2, 0x42, 10, 0, 9, 100];
    const ETH: usize = 14;

    #[test]
    fn slots_are_reused_first_and_bounded_by_their_u16_ids() {
        // `true` marks a slot in use.
        let mut arena = vec![true, false, true];
        assert_eq!(place(&mut arena, true, |&u| !u, "things").unwrap(), 1);
        assert_eq!(place(&mut arena, true, |&u| !u, "things").unwrap(), 3);
        let mut full = vec![true; usize::from(u16::MAX)];
        assert!(matches!(
            place(&mut full, true, |&u| !u, "things"),
            Err(BalancerError::TooMany("things"))
        ));
        full[7] = false;
        assert_eq!(place(&mut full, true, |&u| !u, "things").unwrap(), 7);
    }

    fn backend(i: u8, weight: u32) -> BackendConfig {
        BackendConfig {
            addr: Ipv4Addr::new(10, 0, 9, 20 + i),
            port: 8080,
            weight,
            mac: [2, 0x42, 10, 0, 9, 20 + i],
        }
    }

    fn key() -> ServiceKey {
        ServiceKey::Addr {
            net: NET,
            proto: Protocol::Tcp,
            addr: VIP,
            port: 80,
        }
    }

    fn lb_with(n: u8, sched: SchedulerKind, max: usize) -> Balancer {
        let mut lb = Balancer::new(BalancerConfig {
            max_conns: max,
            ..BalancerConfig::default()
        });
        lb.add_service(ServiceConfig {
            key: key(),
            scheduler: sched,
            backend_net: NET,
            snat: None,
        })
        .unwrap();
        for i in 0..n {
            lb.add_backend(&key(), backend(i, 1)).unwrap();
        }
        lb
    }

    fn frame(
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        proto: u8,
        flags: u8,
        smac: Mac,
        dmac: Mac,
    ) -> Vec<u8> {
        let t = Tuple {
            proto,
            src: src.0.into(),
            dst: dst.0.into(),
            sport: src.1,
            dport: dst.1,
        };
        let mut f = Vec::new();
        f.extend_from_slice(&dmac);
        f.extend_from_slice(&smac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&build(t, flags, b"payload"));
        f
    }

    fn client_pkt(port: u16, flags: u8) -> Vec<u8> {
        frame((CLIENT, port), (VIP, 80), PROTO_TCP, flags, CMAC, VMAC)
    }

    fn tuple_of(f: &[u8]) -> Tuple {
        match packet::parse(&f[ETH..]) {
            Ok(Flow::Transport { tuple, .. }) => tuple,
            other => panic!("not transport: {other:?}"),
        }
    }

    fn conserved(lb: &Balancer) -> bool {
        let c = lb.counters();
        c.packets == c.pass + c.to_backend + c.to_client + c.drops.iter().sum::<u64>()
    }

    #[test]
    fn golden_dnat_and_reply() {
        let mut lb = lb_with(3, SchedulerKind::Rr, 64);
        let mut f = client_pkt(40000, TCP_SYN);
        assert_eq!(
            lb.process(&mut f, ETH, NET, Time::from_secs(1)),
            Verdict::ToBackend { net: NET }
        );
        let t = tuple_of(&f);
        let b0 = backend(0, 1);
        assert_eq!((Ipv4Addr::from(t.dst), t.dport), (b0.addr, 8080));
        assert_eq!((Ipv4Addr::from(t.src), t.sport), (CLIENT, 40000));
        assert_eq!(&f[0..6], &b0.mac);
        assert_eq!(&f[6..12], &CMAC);
        assert!(verify(&f[ETH..]));
        // Reply from the backend (to the client's MAC), un-NATed to come from the VIP.
        let mut r = frame(
            (b0.addr, 8080),
            (CLIENT, 40000),
            PROTO_TCP,
            TCP_SYN | TCP_ACK,
            b0.mac,
            CMAC,
        );
        assert_eq!(
            lb.process(&mut r, ETH, NET, Time::from_secs(1)),
            Verdict::ToClient { net: NET }
        );
        let t = tuple_of(&r);
        assert_eq!(
            (
                Ipv4Addr::from(t.src),
                t.sport,
                Ipv4Addr::from(t.dst),
                t.dport
            ),
            (VIP, 80, CLIENT, 40000)
        );
        assert_eq!((&r[0..6], &r[6..12]), (&CMAC[..], &VMAC[..]));
        assert!(verify(&r[ETH..]));
        // Unrelated traffic passes untouched.
        let mut other = frame(
            (CLIENT, 1),
            (Ipv4Addr::new(10, 0, 9, 30), 80),
            PROTO_TCP,
            TCP_SYN,
            CMAC,
            VMAC,
        );
        let before = other.clone();
        assert_eq!(
            lb.process(&mut other, ETH, NET, Time::from_secs(1)),
            Verdict::Pass
        );
        assert_eq!(other, before);
        assert!(conserved(&lb));
    }

    #[test]
    fn rr_thirty_connections_ten_each() {
        let mut lb = lb_with(3, SchedulerKind::Rr, 64);
        for p in 0..30 {
            let mut f = client_pkt(1000 + p, TCP_SYN);
            assert!(matches!(
                lb.process(&mut f, ETH, NET, Time::from_secs(1)),
                Verdict::ToBackend { .. }
            ));
        }
        let s = &lb.services()[0];
        let counts: Vec<u32> = s.backends.iter().map(|b| b.inact_conns).collect();
        assert_eq!(counts, vec![10, 10, 10]);
        assert_eq!(s.stats.conns, 30);
    }

    #[test]
    fn tcp_states_walk_and_timeouts() {
        let mut lb = lb_with(1, SchedulerKind::Rr, 64);
        let b = backend(0, 1);
        let now = Time::from_secs(100);
        let state = |lb: &Balancer| {
            let c = &lb.conns(now)[0];
            (c.state, c.expires_in)
        };
        let fwd =
            |lb: &mut Balancer, flags| lb.process(&mut client_pkt(5555, flags), ETH, NET, now);
        let rev = |lb: &mut Balancer, flags| {
            lb.process(
                &mut frame(
                    (b.addr, 8080),
                    (CLIENT, 5555),
                    PROTO_TCP,
                    flags,
                    b.mac,
                    CMAC,
                ),
                ETH,
                NET,
                now,
            )
        };
        fwd(&mut lb, TCP_SYN);
        assert_eq!(state(&lb), ("SYN_RECV", 60));
        rev(&mut lb, TCP_SYN | TCP_ACK);
        assert_eq!(state(&lb), ("SYN_RECV", 60));
        fwd(&mut lb, TCP_ACK);
        assert_eq!(state(&lb), ("ESTABLISHED", 900));
        assert_eq!(
            (
                lb.services()[0].backends[0].active_conns,
                lb.services()[0].backends[0].inact_conns
            ),
            (1, 0)
        );
        rev(&mut lb, TCP_FIN | TCP_ACK);
        assert_eq!(state(&lb), ("FIN_WAIT", 120));
        assert_eq!(
            (
                lb.services()[0].backends[0].active_conns,
                lb.services()[0].backends[0].inact_conns
            ),
            (0, 1)
        );
        fwd(&mut lb, TCP_FIN | TCP_ACK);
        assert_eq!(state(&lb), ("TIME_WAIT", 120));
        fwd(&mut lb, TCP_RST);
        assert_eq!(state(&lb), ("CLOSE", 10));
        // Expiry with the fake clock.
        assert_eq!(lb.expire(Time::from_secs(109), 64), 0);
        assert_eq!(lb.expire(Time::from_secs(110), 64), 1);
        assert!(lb.conns(now).is_empty());
        assert_eq!(lb.services()[0].backends[0].inact_conns, 0);
    }

    #[test]
    fn configurable_timeouts_and_udp() {
        let mut lb = lb_with(0, SchedulerKind::Rr, 64);
        let ukey = ServiceKey::Addr {
            net: NET,
            proto: Protocol::Udp,
            addr: VIP,
            port: 53,
        };
        lb.add_service(ServiceConfig {
            key: ukey,
            scheduler: SchedulerKind::Rr,
            backend_net: NET,
            snat: None,
        })
        .unwrap();
        lb.add_backend(&ukey, backend(1, 1)).unwrap();
        let mut t = Timeouts::default();
        t.set(0, 0, 42);
        lb.set_timeouts(t);
        let mut f = frame((CLIENT, 999), (VIP, 53), PROTO_UDP, 0, CMAC, VMAC);
        assert!(matches!(
            lb.process(&mut f, ETH, NET, Time::from_secs(0)),
            Verdict::ToBackend { .. }
        ));
        assert!(verify(&f[ETH..]));
        assert_eq!(
            (
                lb.conns(Time::from_secs(0))[0].state,
                lb.conns(Time::from_secs(0))[0].expires_in
            ),
            ("UDP", 42)
        );
        let udp = lb.services().into_iter().find(|s| s.key == ukey).unwrap();
        assert_eq!(udp.backends[0].inact_conns, 1);
    }

    #[test]
    fn syn_on_closed_tuple_is_rescheduled() {
        let mut lb = lb_with(2, SchedulerKind::Rr, 64);
        let now = Time::from_secs(1);
        let mut f = client_pkt(7000, TCP_SYN);
        lb.process(&mut f, ETH, NET, now);
        let first = tuple_of(&f).dst;
        lb.process(&mut client_pkt(7000, TCP_ACK), ETH, NET, now);
        // A client RST in SYN_RECV keeps SYN_RECV (IPVS table); once established it closes.
        lb.process(&mut client_pkt(7000, TCP_RST), ETH, NET, now);
        assert_eq!(lb.conns(now)[0].state, "CLOSE");
        let mut f = client_pkt(7000, TCP_SYN);
        lb.process(&mut f, ETH, NET, now);
        assert_ne!(tuple_of(&f).dst, first, "rr scheduled the new SYN anew");
        assert_eq!(lb.conns(now).len(), 1);
        assert_eq!(lb.conns(now)[0].state, "SYN_RECV");
    }

    #[test]
    fn non_syn_without_conn_is_dropped_and_counted() {
        let mut lb = lb_with(1, SchedulerKind::Rr, 64);
        assert_eq!(
            lb.process(&mut client_pkt(1, TCP_ACK), ETH, NET, Time::default()),
            Verdict::Drop(LbDrop::TcpNotSyn)
        );
        assert_eq!(lb.counters().drops[LbDrop::TcpNotSyn as usize], 1);
        assert!(conserved(&lb));
    }

    #[test]
    fn drain_remove_and_add() {
        let mut lb = lb_with(2, SchedulerKind::Rr, 64);
        let now = Time::from_secs(1);
        let mut dsts = Vec::new();
        for p in 0..4 {
            let mut f = client_pkt(100 + p, TCP_SYN);
            lb.process(&mut f, ETH, NET, now);
            dsts.push(tuple_of(&f).dst);
        }
        // Adding a backend never moves existing connections.
        lb.add_backend(&key(), backend(2, 1)).unwrap();
        for p in 0..4u16 {
            let mut f = client_pkt(100 + p, TCP_ACK);
            lb.process(&mut f, ETH, NET, now);
            assert_eq!(tuple_of(&f).dst, dsts[usize::from(p)]);
        }
        // Weight 0 drains: existing continue, new ones avoid it.
        let b0 = backend(0, 1);
        lb.set_weight(&key(), b0.addr, b0.port, 0).unwrap();
        let mut f = client_pkt(100, TCP_ACK);
        lb.process(&mut f, ETH, NET, now);
        assert_eq!(Ipv4Addr::from(tuple_of(&f).dst), b0.addr);
        for p in 0..10 {
            let mut f = client_pkt(200 + p, TCP_SYN);
            lb.process(&mut f, ETH, NET, now);
            assert_ne!(Ipv4Addr::from(tuple_of(&f).dst), b0.addr);
        }
        // Removal: its connections expire; a further SYN is rescheduled elsewhere.
        lb.remove_backend(&key(), b0.addr, b0.port).unwrap();
        assert_eq!(
            lb.process(&mut client_pkt(100, TCP_ACK), ETH, NET, now),
            Verdict::Drop(LbDrop::TcpNotSyn)
        );
        let mut f = client_pkt(102, TCP_SYN);
        lb.process(&mut f, ETH, NET, now);
        assert_ne!(Ipv4Addr::from(tuple_of(&f).dst), b0.addr);
        lb.expire(now, 64);
        assert!(lb.conns(now).iter().all(|c| c.dest.0 != b0.addr));
        assert!(lb.services()[0].backends.iter().all(|b| b.addr != b0.addr));
        // Everything drained: no backend.
        for i in [1, 2] {
            let b = backend(i, 1);
            lb.set_weight(&key(), b.addr, b.port, 0).unwrap();
        }
        assert_eq!(
            lb.process(&mut client_pkt(999, TCP_SYN), ETH, NET, now),
            Verdict::Drop(LbDrop::NoBackend)
        );
        assert!(conserved(&lb));
    }

    #[test]
    fn full_table_drops_new_keeps_established() {
        let mut lb = lb_with(2, SchedulerKind::Rr, 8);
        let now = Time::from_secs(1);
        for p in 0..4 {
            lb.process(&mut client_pkt(p, TCP_SYN), ETH, NET, now);
            lb.process(&mut client_pkt(p, TCP_ACK), ETH, NET, now);
        }
        // A SYN flood of new tuples fills the rest and is then refused.
        for p in 1000..1100 {
            lb.process(&mut client_pkt(p, TCP_SYN), ETH, NET, now);
        }
        assert_eq!(lb.counters().drops[LbDrop::TableFull as usize], 96);
        for p in 0..4 {
            assert!(matches!(
                lb.process(&mut client_pkt(p, TCP_ACK), ETH, NET, now),
                Verdict::ToBackend { .. }
            ));
        }
        assert_eq!(
            lb.conns(now)
                .iter()
                .filter(|c| c.state == "ESTABLISHED")
                .count(),
            4
        );
        // Once the flood's SYN_RECV entries time out, new connections are accepted again.
        lb.expire(Time::from_secs(61), 64);
        assert!(matches!(
            lb.process(
                &mut client_pkt(5000, TCP_SYN),
                ETH,
                NET,
                Time::from_secs(61)
            ),
            Verdict::ToBackend { .. }
        ));
        assert!(conserved(&lb));
    }

    #[test]
    fn routing_mesh_snat_never_collides() {
        let mut lb = Balancer::new(BalancerConfig {
            max_conns: 64,
            ..BalancerConfig::default()
        });
        let ingress_ip = Ipv4Addr::new(192, 0, 2, 1);
        let lb_addr = Ipv4Addr::new(10, 0, 9, 254);
        let k = ServiceKey::Addr {
            net: INGRESS,
            proto: Protocol::Tcp,
            addr: ingress_ip,
            port: 8080,
        };
        let snat = Snat {
            addr: lb_addr,
            mac: [2, 0x42, 10, 0, 9, 254],
            port_min: SNAT_PORT_MIN,
        };
        lb.add_service(ServiceConfig {
            key: k,
            scheduler: SchedulerKind::Rr,
            backend_net: NET,
            snat: Some(snat),
        })
        .unwrap();
        let b = BackendConfig {
            port: 80,
            ..backend(0, 1)
        };
        lb.add_backend(&k, b).unwrap();
        let now = Time::from_secs(1);
        // Two external clients using the same source port.
        let mut seen = Vec::new();
        for c in [50u8, 51] {
            let src = Ipv4Addr::new(192, 0, 2, c);
            let mut f = frame(
                (src, 33333),
                (ingress_ip, 8080),
                PROTO_TCP,
                TCP_SYN,
                [2, 0, 0, 0, 0, c],
                [2, 0, 0, 0, 0, 1],
            );
            assert_eq!(
                lb.process(&mut f, ETH, INGRESS, now),
                Verdict::ToBackend { net: NET }
            );
            assert!(verify(&f[ETH..]));
            let t = tuple_of(&f);
            assert_eq!(
                (Ipv4Addr::from(t.src), Ipv4Addr::from(t.dst), t.dport),
                (lb_addr, b.addr, 80)
            );
            assert_eq!(&f[6..12], &snat.mac);
            seen.push(t.sport);
        }
        assert_ne!(seen[0], seen[1]);
        // Replies find their own client.
        for (i, c) in [50u8, 51].into_iter().enumerate() {
            let mut r = frame(
                (b.addr, 80),
                (lb_addr, seen[i]),
                PROTO_TCP,
                TCP_SYN | TCP_ACK,
                b.mac,
                snat.mac,
            );
            assert_eq!(
                lb.process(&mut r, ETH, NET, now),
                Verdict::ToClient { net: INGRESS }
            );
            let t = tuple_of(&r);
            assert_eq!(
                (
                    Ipv4Addr::from(t.src),
                    t.sport,
                    Ipv4Addr::from(t.dst),
                    t.dport
                ),
                (ingress_ip, 8080, Ipv4Addr::new(192, 0, 2, c), 33333)
            );
            assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, c]);
            assert!(verify(&r[ETH..]));
        }
        assert!(lb.conns(now).iter().all(|c| c.snat.is_some()));
    }

    #[test]
    fn fwmark_service_covers_ports_and_keeps_port() {
        let mut lb = Balancer::new(BalancerConfig {
            max_conns: 64,
            ..BalancerConfig::default()
        });
        let k = ServiceKey::Fwmark { net: NET, mark: 7 };
        lb.add_service(ServiceConfig {
            key: k,
            scheduler: SchedulerKind::Rr,
            backend_net: NET,
            snat: None,
        })
        .unwrap();
        lb.add_backend(
            &k,
            BackendConfig {
                port: 0,
                ..backend(0, 1)
            },
        )
        .unwrap();
        lb.add_mark_rule(MarkRule {
            net: NET,
            proto: None,
            addr: Some(VIP),
            ports: 1..=65535,
            mark: 7,
        });
        for port in [80, 443] {
            let mut f = frame((CLIENT, 1234), (VIP, port), PROTO_TCP, TCP_SYN, CMAC, VMAC);
            assert!(matches!(
                lb.process(&mut f, ETH, NET, Time::default()),
                Verdict::ToBackend { .. }
            ));
            assert_eq!(tuple_of(&f).dport, port);
        }
        let mut f = frame((CLIENT, 1234), (VIP, 53), PROTO_UDP, 0, CMAC, VMAC);
        assert!(matches!(
            lb.process(&mut f, ETH, NET, Time::default()),
            Verdict::ToBackend { .. }
        ));
        assert!(lb.format_ok());
    }

    impl Balancer {
        fn format_ok(&self) -> bool {
            crate::listing::format_services(&self.services(), crate::listing::ListMode::Plain)
                .contains("FWM  7 rr")
        }
    }

    #[test]
    fn icmp_errors_are_translated_both_ways() {
        let mut lb = lb_with(1, SchedulerKind::Rr, 64);
        let b = backend(0, 1);
        let now = Time::from_secs(1);
        let mut f = client_pkt(4444, TCP_SYN);
        lb.process(&mut f, ETH, NET, now);
        // The backend host says "port unreachable" about the DNATed packet.
        let quoted = f[ETH..].to_vec();
        let mut icmp = vec![0u8; ETH];
        icmp.extend_from_slice(&build_icmp(
            b.addr.into(),
            CLIENT.into(),
            ICMP_DEST_UNREACH,
            &quoted,
        ));
        assert_eq!(
            lb.process(&mut icmp, ETH, NET, now),
            Verdict::ToClient { net: NET }
        );
        assert!(verify(&icmp[ETH..]));
        let Ok(Flow::Icmp(e)) = packet::parse(&icmp[ETH..]) else {
            panic!()
        };
        assert_eq!(
            (Ipv4Addr::from(e.src), Ipv4Addr::from(e.dst)),
            (VIP, CLIENT)
        );
        assert_eq!((Ipv4Addr::from(e.quoted.dst), e.quoted.dport), (VIP, 80));
        // The quoted packet is now exactly what the client sent.
        assert_eq!(&icmp[ETH + 28..], &client_pkt(4444, TCP_SYN)[ETH..]);
        // The client side complains about a reply: translated towards the backend.
        let mut r = frame(
            (b.addr, 8080),
            (CLIENT, 4444),
            PROTO_TCP,
            TCP_SYN | TCP_ACK,
            b.mac,
            CMAC,
        );
        lb.process(&mut r, ETH, NET, now);
        let mut icmp = vec![0u8; ETH];
        icmp.extend_from_slice(&build_icmp(
            CLIENT.into(),
            VIP.into(),
            ICMP_DEST_UNREACH,
            &r[ETH..ETH + 28],
        ));
        assert_eq!(
            lb.process(&mut icmp, ETH, NET, now),
            Verdict::ToBackend { net: NET }
        );
        assert!(verify(&icmp[ETH..]));
        let Ok(Flow::Icmp(e)) = packet::parse(&icmp[ETH..]) else {
            panic!()
        };
        assert_eq!(
            (
                Ipv4Addr::from(e.dst),
                Ipv4Addr::from(e.quoted.src),
                e.quoted.sport
            ),
            (b.addr, b.addr, 8080)
        );
        assert_eq!(lb.counters().icmp_translated, 2);
    }

    #[test]
    fn malformed_and_fragments() {
        let mut lb = lb_with(1, SchedulerKind::Rr, 64);
        let mut f = client_pkt(1, TCP_SYN);
        f.truncate(ETH + 30);
        assert_eq!(
            lb.process(&mut f, ETH, NET, Time::default()),
            Verdict::Drop(LbDrop::Malformed)
        );
        let mut f = client_pkt(1, TCP_SYN);
        f[ETH + 6] = 0x20; // MF
        assert_eq!(
            lb.process(&mut f, ETH, NET, Time::default()),
            Verdict::Drop(LbDrop::Fragment)
        );
        assert!(conserved(&lb));
    }

    proptest::proptest! {
        #[test]
        fn nat_then_unnat_is_identity(sport in 1u16.., flags in proptest::prelude::any::<u8>(),
                                      payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), udp in proptest::prelude::any::<bool>()) {
            let mut lb = lb_with(0, SchedulerKind::Rr, 64);
            let proto = if udp { PROTO_UDP } else { PROTO_TCP };
            let k = ServiceKey::Addr { net: NET, proto: if udp { Protocol::Udp } else { Protocol::Tcp }, addr: VIP, port: 80 };
            if udp {
                lb.add_service(ServiceConfig { key: k, scheduler: SchedulerKind::Rr, backend_net: NET, snat: None }).unwrap();
            }
            lb.add_backend(&k, backend(0, 1)).unwrap();
            let flags = (flags | TCP_SYN) & !TCP_RST;
            let t = Tuple { proto, src: CLIENT.into(), dst: VIP.into(), sport, dport: 80 };
            let orig = build(t, flags, &payload);
            let mut f = vec![0u8; ETH];
            f.extend_from_slice(&orig);
            let v = lb.process(&mut f, ETH, NET, Time::default());
            proptest::prop_assert!(matches!(v, Verdict::ToBackend { .. }), "{:?}", v);
            proptest::prop_assert!(verify(&f[ETH..]));
            // Swap the translated packet's ends to make the backend's reply, un-NAT it, swap back.
            let tt = tuple_of(&f);
            let mut reply = vec![0u8; ETH];
            reply.extend_from_slice(&build(tt.reversed(), TCP_ACK, &payload));
            let back = lb.process(&mut reply, ETH, NET, Time::default());
            proptest::prop_assert!(matches!(back, Verdict::ToClient { .. }), "{:?}", back);
            proptest::prop_assert!(verify(&reply[ETH..]));
            proptest::prop_assert_eq!(tuple_of(&reply).reversed(), t);
            proptest::prop_assert!(conserved(&lb));
        }
    }
}
