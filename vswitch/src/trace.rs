//! Tracing of marked packets, like VPP's `show trace`: what `vxmesh trace` prints.
//!
//! The receive step marks up to `count` packets that match a [`TraceFilter`]; after every stage
//! the pipeline records, for each marked packet of the batch, the stage's decision and the table
//! entry it used (the stage's own description). Nothing is recorded, and nothing is looked at per
//! packet beyond one branch, while no trace is armed; stages run as always, and the records are
//! written after a stage only for a batch holding a marked packet. Records go into a bounded ring: tracing can
//! allocate (strings), but only for marked packets.
//!
//! With snapshots on ([`Tracer::set_snapshots`]: `vxmesh capture --stages`, the simulator) each
//! record also carries the packet's bytes after its step, as they would be on a wire: an
//! Ethernet frame, or the VXLAN datagram or ESP packet in the IPv4 (and UDP) headers the kernel
//! would add ([`Layer`]: the stages that change a packet's layer say so).

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use crate::packet::{Mac, Next, Packet};
use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::ipv4::{
    self, PROTO_ICMP as IPPROTO_ICMP, PROTO_TCP as IPPROTO_TCP, PROTO_UDP as IPPROTO_UDP,
};
use crate::wire::{arp, udp};

/// Most records kept; older ones are dropped first.
pub const TRACE_RING: usize = 4096;

/// One stage's decision for one marked packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// The packet's trace id.
    pub id: u32,
    /// Where: a stage name, `rx` (the receive port) or `output`.
    pub stage: &'static str,
    /// The decision after this stage.
    pub next: Next,
    /// The drop reason's name when `next` is a drop.
    pub drop: Option<&'static str>,
    /// What the stage looked at: the table entry it used, the header it read.
    pub detail: String,
    /// With snapshots on: the packet after this step, as a frame on a wire ([`Layer`]).
    pub data: Option<Box<[u8]>>,
    /// When (the switch's clock, [`Time`](crate::Time) nanoseconds): set by [`Tracer::record`].
    pub time_ns: u64,
}

/// What a traced packet's bytes are at a point of the pipeline: what a snapshot wraps them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// An Ethernet frame (a container's, or the inner one of a tunnel).
    Ethernet,
    /// A VXLAN header and its inner frame: the payload of a UDP datagram between VTEPs.
    Vxlan,
    /// An ESP packet: the payload of IPv4 protocol 50 between VTEPs.
    Esp,
}

/// Traced packets whose layer a tracer remembers (the most recent ones).
const LAYERS_KEPT: usize = 256;

/// Which packets to mark: every term must match (an empty filter matches everything).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    terms: Vec<FilterTerm>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FilterTerm {
    Arp,
    Ip,
    Icmp,
    Tcp,
    Udp,
    Host(Ipv4Addr),
    Port(u16),
    Mac(Mac),
}

/// A trace filter expression did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid trace filter {expr:?}: {why} (terms: arp, ip, icmp, tcp, udp, host IP, port N, mac MAC; all must match)"
)]
pub struct FilterError {
    /// The expression.
    pub expr: String,
    /// What is wrong.
    pub why: String,
}

/// Longest trace filter expression, in bytes: the filter runs on every received packet while a
/// trace is armed, so its cost must stay bounded.
pub const MAX_FILTER_LEN: usize = 512;
/// Most terms in a trace filter (a repeated term adds nothing but cost).
pub const MAX_FILTER_TERMS: usize = 16;
/// How much of a refused expression an error message repeats.
const ERROR_EXPR_LEN: usize = 80;

impl TraceFilter {
    /// Parse `tcp port 80 host 10.0.9.11`-style expressions (terms are ANDed; `and` is allowed).
    /// At most [`MAX_FILTER_LEN`] bytes and [`MAX_FILTER_TERMS`] terms.
    pub fn parse(expr: &str) -> Result<TraceFilter, FilterError> {
        let err = |why: String| FilterError {
            expr: match expr.char_indices().nth(ERROR_EXPR_LEN) {
                Some((i, _)) => format!("{}...", &expr[..i]),
                None => expr.to_string(),
            },
            why,
        };
        if expr.len() > MAX_FILTER_LEN {
            return Err(err(format!(
                "{} bytes, at most {MAX_FILTER_LEN}",
                expr.len()
            )));
        }
        let mut terms = Vec::new();
        let mut words = expr.split_whitespace();
        while let Some(w) = words.next() {
            let mut arg = |what: &str| {
                words
                    .next()
                    .ok_or_else(|| err(format!("`{what}` needs a value")))
            };
            terms.push(match w {
                "and" => continue,
                "arp" => FilterTerm::Arp,
                "ip" => FilterTerm::Ip,
                "icmp" => FilterTerm::Icmp,
                "tcp" => FilterTerm::Tcp,
                "udp" => FilterTerm::Udp,
                "host" => FilterTerm::Host(
                    arg("host")?
                        .parse()
                        .map_err(|_| err("bad IPv4 address after `host`".into()))?,
                ),
                "port" => FilterTerm::Port(
                    arg("port")?
                        .parse()
                        .map_err(|_| err("bad port after `port`".into()))?,
                ),
                "mac" => FilterTerm::Mac(arg("mac")?.parse().map_err(|e| err(format!("{e}")))?),
                other => return Err(err(format!("unknown term `{other}`"))),
            });
            if terms.len() > MAX_FILTER_TERMS {
                return Err(err(format!("more than {MAX_FILTER_TERMS} terms")));
            }
        }
        Ok(TraceFilter { terms })
    }

    /// Whether the filter has no terms (it matches every packet).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether the Ethernet frame matches.
    pub fn matches(&self, frame: &[u8]) -> bool {
        let f = Summary::of(frame);
        self.terms.iter().all(|t| match *t {
            FilterTerm::Arp => f.ethertype == ETHERTYPE_ARP,
            FilterTerm::Ip => f.ethertype == ETHERTYPE_IPV4,
            FilterTerm::Icmp => f.proto == Some(IPPROTO_ICMP),
            FilterTerm::Tcp => f.proto == Some(IPPROTO_TCP),
            FilterTerm::Udp => f.proto == Some(IPPROTO_UDP),
            FilterTerm::Host(ip) => f.src_ip == Some(ip) || f.dst_ip == Some(ip),
            FilterTerm::Port(p) => f.ports.is_some_and(|(s, d)| s == p || d == p),
            FilterTerm::Mac(m) => f.src == Some(m) || f.dst == Some(m),
        })
    }
}

/// Whether `data` is a whole IPv4 packet of protocol 50 with a valid header (what a raw ESP
/// socket hands over), rather than an ESP packet alone.
fn is_esp_ipv4(data: &[u8]) -> bool {
    ipv4::Packet::new_checked(data).is_ok_and(|ip| {
        ip.protocol() == 50 && usize::from(ip.total_len()) == data.len() && ip.verify_checksum()
    })
}

/// What a trace shows of a frame's headers (best effort, never panics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Destination MAC.
    pub dst: Option<Mac>,
    /// Source MAC.
    pub src: Option<Mac>,
    /// EtherType (after a VLAN tag).
    pub ethertype: u16,
    /// IPv4 source (or ARP sender) address.
    pub src_ip: Option<Ipv4Addr>,
    /// IPv4 destination (or ARP target) address.
    pub dst_ip: Option<Ipv4Addr>,
    /// IP protocol.
    pub proto: Option<u8>,
    /// TCP/UDP ports.
    pub ports: Option<(u16, u16)>,
}

impl Summary {
    /// Read what can be read of an Ethernet frame.
    pub fn of(frame: &[u8]) -> Summary {
        let mut s = Summary::default();
        let Ok(eth) = ethernet::Packet::new_checked(frame) else {
            return s;
        };
        s.dst = Some(eth.dst_addr());
        s.src = Some(eth.src_addr());
        // A tagged frame too short for its tag shows the tag's EtherType.
        let (off, et) = eth.l3().unwrap_or((ethernet::HEADER_LEN, eth.ethertype()));
        s.ethertype = et;
        let l3 = &frame[off..];
        match et {
            ETHERTYPE_ARP => {
                if let Ok(a) = arp::Packet::new_checked(l3) {
                    s.src_ip = Some(a.spa());
                    s.dst_ip = Some(a.tpa());
                }
            }
            // Best effort: only the fixed header is needed, not the whole packet.
            ETHERTYPE_IPV4 if l3.len() >= ipv4::HEADER_LEN => {
                let ip = ipv4::Packet::new_unchecked(l3);
                s.proto = Some(ip.protocol());
                s.src_ip = Some(ip.src_addr());
                s.dst_ip = Some(ip.dst_addr());
                let ihl = ip.header_len();
                if ip.frag_offset() == 0
                    && (ip.protocol() == IPPROTO_TCP || ip.protocol() == IPPROTO_UDP)
                    && ihl >= ipv4::HEADER_LEN
                    && let Some(l4) = l3.get(ihl..ihl + udp::field::PORTS.end)
                {
                    // TCP and UDP both start with the two ports.
                    let ports = udp::Packet::new_unchecked(l4);
                    s.ports = Some((ports.src_port(), ports.dst_port()));
                }
            }
            _ => {}
        }
        s
    }
}

impl core::fmt::Display for Summary {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (Some(src), Some(dst)) = (self.src, self.dst) else {
            return write!(f, "runt frame");
        };
        write!(f, "{src} > {dst}")?;
        match (self.ethertype, self.src_ip, self.dst_ip) {
            (ETHERTYPE_ARP, Some(s), Some(d)) => write!(f, " arp {s} asks/tells {d}"),
            (ETHERTYPE_IPV4, Some(s), Some(d)) => {
                let proto = match self.proto {
                    Some(IPPROTO_ICMP) => "icmp".to_string(),
                    Some(IPPROTO_TCP) => "tcp".to_string(),
                    Some(IPPROTO_UDP) => "udp".to_string(),
                    Some(p) => format!("proto {p}"),
                    None => String::new(),
                };
                match self.ports {
                    Some((sp, dp)) => write!(f, " {proto} {s}:{sp} > {d}:{dp}"),
                    None => write!(f, " {proto} {s} > {d}"),
                }
            }
            (et, _, _) => write!(f, " ethertype 0x{et:04x}"),
        }
    }
}

/// The trace state: armed or not, and the records so far.
#[derive(Debug, Default)]
pub struct Tracer {
    remaining: u32,
    filter: TraceFilter,
    next_id: u32,
    records: VecDeque<TraceRecord>,
    /// Whether records carry the packet's bytes.
    snapshots: bool,
    /// The layer of each recently traced packet, for its snapshots.
    layers: VecDeque<(u32, Layer)>,
    /// Set while a transmit path runs: a tunnel packet then goes from this VTEP to its peer.
    pub(crate) tx: bool,
    /// The time of the switch's current round (set by its poll): the records' time.
    pub(crate) now: u64,
}

impl Tracer {
    /// Mark the next `count` packets that match `filter`.
    pub fn arm(&mut self, count: u32, filter: TraceFilter) {
        self.remaining = count;
        self.filter = filter;
    }

    /// The filter packets are marked by.
    pub fn filter(&self) -> &TraceFilter {
        &self.filter
    }

    /// Stop marking.
    pub fn disarm(&mut self) {
        self.remaining = 0;
    }

    /// Whether packets are being marked.
    #[inline]
    pub fn armed(&self) -> bool {
        self.remaining > 0
    }

    /// How many more packets will be marked.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Called on receive while armed: a trace id if this frame is to be marked.
    pub fn try_mark(&mut self, frame: &[u8]) -> Option<u32> {
        if self.remaining == 0 || !self.filter.matches(frame) {
            return None;
        }
        self.remaining -= 1;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        Some(self.next_id)
    }

    /// Make records carry the packet's bytes after each step (or stop).
    pub fn set_snapshots(&mut self, on: bool) {
        self.snapshots = on;
        self.layers.clear();
    }

    /// Traced packet `id` starts out as `layer` (its receive port's).
    pub fn begin(&mut self, id: u32, layer: Layer) {
        if self.snapshots {
            if self.layers.len() == LAYERS_KEPT {
                self.layers.pop_front();
            }
            self.layers.push_back((id, layer));
        }
    }

    /// With snapshots on, traced `pkt`'s bytes as a frame on a wire, after a step that made it
    /// `becomes` (if it changed its layer); `local` is this switch's VTEP, the tunnel's end
    /// here (with the sender in `meta.peer` on receive, the receiver on transmit).
    pub fn snapshot(
        &mut self,
        pkt: &Packet,
        becomes: Option<Layer>,
        local: Option<Ipv4Addr>,
    ) -> Option<Box<[u8]>> {
        if !self.snapshots {
            return None;
        }
        let id = pkt.meta.trace;
        let pos = self.layers.iter().rposition(|&(i, _)| i == id);
        let layer = match (becomes, pos) {
            (Some(l), Some(k)) => {
                self.layers[k].1 = l;
                l
            }
            (Some(l), None) => {
                self.begin(id, l);
                l
            }
            (None, Some(k)) => self.layers[k].1,
            (None, None) => Layer::Ethernet,
        };
        let data = pkt.data();
        let me = local.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let peer = pkt
            .meta
            .peer
            .unwrap_or(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let mut out = Vec::with_capacity(data.len() + 64);
        let wrapped = match layer {
            Layer::Ethernet => false,
            Layer::Vxlan => {
                let me = std::net::SocketAddrV4::new(me, peer.port());
                let (src, dst) = if self.tx { (me, peer) } else { (peer, me) };
                crate::port::capture::capture_udp(&mut out, src, dst, data)
            }
            // A raw ESP socket receives the IPv4 header with the packet: only Ethernet is
            // missing then.
            Layer::Esp if !self.tx && is_esp_ipv4(data) => {
                crate::port::capture::capture_ipv4_packet(&mut out, data);
                true
            }
            Layer::Esp => {
                let (src, dst) = if self.tx {
                    (me, *peer.ip())
                } else {
                    (*peer.ip(), me)
                };
                crate::port::capture::capture_ip_payload(&mut out, src, dst, 50, data)
            }
        };
        if !wrapped {
            out.clear();
            out.extend_from_slice(data);
        }
        Some(out.into_boxed_slice())
    }

    /// Append a record, dropping the oldest beyond [`TRACE_RING`].
    pub fn record(&mut self, mut rec: TraceRecord) {
        rec.time_ns = self.now;
        if self.records.len() == TRACE_RING {
            self.records.pop_front();
        }
        self.records.push_back(rec);
    }

    /// Take every record so far.
    pub fn drain(&mut self) -> Vec<TraceRecord> {
        self.records.drain(..).collect()
    }

    /// The records so far.
    pub fn records(&self) -> impl Iterator<Item = &TraceRecord> {
        self.records.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 42];
        ethernet::Repr {
            dst_addr: Mac([0x02, 0x42, 10, 0, 9, 12]),
            src_addr: Mac([0x02, 0x42, 10, 0, 9, 11]),
            ethertype: ETHERTYPE_IPV4,
        }
        .emit(&mut ethernet::Packet::new_unchecked(&mut f[..]));
        let mut ip = ipv4::Packet::new_unchecked(&mut f[ethernet::HEADER_LEN..]);
        ip.set_version(ipv4::VERSION);
        ip.set_header_len(ipv4::HEADER_LEN);
        ip.set_protocol(IPPROTO_UDP);
        ip.set_src_addr(Ipv4Addr::new(10, 0, 9, 11));
        ip.set_dst_addr(Ipv4Addr::new(10, 0, 9, 12));
        let mut u = udp::Packet::new_unchecked(ip.payload_mut());
        u.set_src_port(5000);
        u.set_dst_port(53);
        f
    }

    #[test]
    fn filters_match_headers() {
        let f = udp_frame();
        for (expr, want) in [
            ("", true),
            ("udp", true),
            ("tcp", false),
            ("udp and port 53", true),
            ("udp port 54", false),
            ("host 10.0.9.12", true),
            ("host 10.0.9.13", false),
            ("mac 02:42:0a:00:09:0b", true),
            ("arp", false),
            ("ip", true),
        ] {
            assert_eq!(
                TraceFilter::parse(expr).unwrap().matches(&f),
                want,
                "{expr}"
            );
        }
        assert!(TraceFilter::parse("port").is_err());
        assert!(TraceFilter::parse("bogus").is_err());
        assert!(TraceFilter::parse("host 10.0.9").is_err());
    }

    #[test]
    fn filters_are_bounded_and_errors_stay_short() {
        let sixteen = vec!["udp"; MAX_FILTER_TERMS].join(" and ");
        assert!(TraceFilter::parse(&sixteen).is_ok());
        let seventeen = vec!["udp"; MAX_FILTER_TERMS + 1].join(" ");
        let e = TraceFilter::parse(&seventeen).unwrap_err();
        assert!(e.why.contains("more than 16 terms"), "{e}");
        let huge = "udp ".repeat(1_000_000);
        let e = TraceFilter::parse(&huge).unwrap_err();
        assert!(e.why.contains("at most 512"), "{e}");
        assert!(e.to_string().len() < 400, "{}", e.to_string().len());
    }

    #[test]
    fn summary_never_panics_on_truncation() {
        let f = udp_frame();
        for n in 0..=f.len() {
            let _ = Summary::of(&f[..n]).to_string();
        }
        assert_eq!(
            Summary::of(&f).to_string(),
            "02:42:0a:00:09:0b > 02:42:0a:00:09:0c udp 10.0.9.11:5000 > 10.0.9.12:53"
        );
    }

    #[test]
    fn marks_only_count_matching_packets() {
        let mut t = Tracer::default();
        assert!(t.try_mark(&udp_frame()).is_none());
        t.arm(2, TraceFilter::parse("udp").unwrap());
        assert_eq!(t.try_mark(&udp_frame()), Some(1));
        assert_eq!(t.try_mark(&[0u8; 10]), None);
        assert_eq!(t.try_mark(&udp_frame()), Some(2));
        assert!(!t.armed());
        assert_eq!(t.try_mark(&udp_frame()), None);
    }
}
