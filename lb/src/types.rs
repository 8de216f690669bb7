//! The load balancer's vocabulary, shared by its control side ([`crate::control`]) and its
//! per-packet side ([`crate::data`]): what selects a service, service and backend settings,
//! traffic counters, errors of the control operations, drop reasons and per-packet verdicts.
//! Nothing here runs per packet; the packet path only reads these values.

use std::net::Ipv4Addr;

use vswitch::{Mac, NetId};

use crate::sched::SchedulerKind;
use crate::state::Timeouts;
use vswitch::wire::ipv4;

/// Default maximum number of tracked connections.
pub const DEFAULT_MAX_CONNS: usize = 1 << 20;
/// Lowest source port handed out by the routing-mesh SNAT.
pub const SNAT_PORT_MIN: u16 = 1024;
/// Source ports tried before a routing-mesh connection is refused.
pub const SNAT_MAX_TRIES: u32 = 128;

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
            Protocol::Tcp => ipv4::PROTO_TCP,
            Protocol::Udp => ipv4::PROTO_UDP,
        }
    }

    /// ipvsadm's name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    pub(crate) fn from_number(p: u8) -> Option<Protocol> {
        match p {
            ipv4::PROTO_TCP => Some(Protocol::Tcp),
            ipv4::PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// The cluster file's spelling: `tcp`, `udp`.
impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// What selects a virtual service: packets to `addr:port` over `proto` in network `net`
/// (ipvsadm `-t` / `-u`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Network the clients are in.
    pub net: NetId,
    /// Protocol.
    pub proto: Protocol,
    /// Virtual IP.
    pub addr: Ipv4Addr,
    /// Virtual port.
    pub port: u16,
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
    /// Target port; 0 keeps the packet's destination port (the service's).
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

impl Stats {
    /// Add `o`'s counters (a node's workers, each with its own balancer, listed as one).
    pub fn add(&mut self, o: &Stats) {
        self.conns += o.conns;
        self.inpkts += o.inpkts;
        self.outpkts += o.outpkts;
        self.inbytes += o.inbytes;
        self.outbytes += o.outbytes;
    }
}

impl Rates {
    /// Add `o`'s rates (a node's workers, listed as one).
    pub fn add(&mut self, o: &Rates) {
        self.cps += o.cps;
        self.inpps += o.inpps;
        self.outpps += o.outpps;
        self.inbps += o.inbps;
        self.outbps += o.outbps;
    }
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
        /// A new connection's IPv4 header checksum is wrong.
        BadIpChecksum => "drop_bad_ip_checksum",
        /// A new connection's TCP or UDP checksum is wrong (a partial one from a TAP with
        /// offloads is not checked: the sender's kernel left it to the switch).
        BadL4Checksum => "drop_bad_l4_checksum",
        /// A new connection's TCP header is shorter than 20 bytes (data offset below 5) or
        /// longer than the packet.
        BadTcpHeader => "drop_bad_tcp_header",
        /// A new connection from a source that cannot be a client: 0.0.0.0/8, 127.0.0.0/8,
        /// multicast, 240.0.0.0/4 and broadcast, or a VIP of the network.
        MartianSource => "drop_martian_src",
        /// A new connection to a service that arrived over VXLAN: every node schedules its own
        /// clients, so an underlay host (a spoofed VTEP) could only fill the table with it.
        ServiceFromUnderlay => "drop_vip_from_underlay",
    }
}

/// Where a frame came from, as far as the load balancer cares (the stage reads it from the
/// packet's metadata).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rx {
    /// Decapsulated from the underlay (VXLAN), not sent by a local port.
    pub underlay: bool,
    /// Its TCP/UDP checksum is partial (a TAP's `VIRTIO_NET_HDR_F_NEEDS_CSUM`): only the
    /// pseudo-header sum, not checkable.
    pub csum_partial: bool,
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
    /// Translated, either way, for a connection whose client is its own backend (hairpin,
    /// source-NATed to the VIP): it leaves by the port it came in on.
    Hairpin,
    /// Dropped.
    Drop(LbDrop),
}

/// Events of the balancer that are not a packet's disposition. The pipeline already counts
/// what became of each packet (`lb-nat`'s `in`, `continue` and its drops by [`LbDrop`] name), so
/// these count only what it cannot see: a translated packet continues like an untouched one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbCounters {
    /// Packets translated towards a backend (ICMP errors included).
    pub to_backend: u64,
    /// Packets translated back to a client (ICMP errors included).
    pub to_client: u64,
    /// Connections created.
    pub new_conns: u64,
    /// ICMP errors translated (also in `to_backend`/`to_client`).
    pub icmp_translated: u64,
    /// Connections expired or released.
    pub expired: u64,
    /// Connections a backend made to its own service and got itself (source-NATed to the VIP).
    pub hairpin_conns: u64,
    /// Connections taken over from the previous process's table file.
    pub conntrack_restored: u64,
    /// Entries of that file left out (expired, invalid, or no longer matching a service).
    pub conntrack_entries_discarded: u64,
    /// Table files discarded whole (torn, corrupt, foreign, or unreadable).
    pub conntrack_files_discarded: u64,
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
