//! `dns`: service discovery in the dataplane. Each network has a resolver address; the switch
//! answers ARP for it (`arp-proxy`, from the network's ARP table) and, here, the DNS queries
//! containers send to it over UDP port 53, from the tables of the querying port's network only.
//! Sits after `arp-proxy` on the path of local ports; frames from the underlay never reach it.
//!
//! ```text
//! local port ─► l2-parse ─► l2-learn ─► arp-proxy ─► dns ─┬─► answer: Output(in port)
//!                                                         ├─► drop_dns_*
//!                                                         └─► (not for a resolver) lb-nat ─► own-addr ─► l2-fwd
//! ```
//!
//! A frame is the stage's when it is IPv4, from a local port of a network with a [`DnsTable`],
//! addressed to that network's resolver (its MAC and address), UDP to port 53. It is then answered or dropped, never
//! passed on: the answer is written over the query in its own buffer (addresses and ports
//! swapped, the DNS message turned into the response by [`wire::dns::Response`]) and sent back
//! out of the port it came in on, so it reaches only the endpoint that asked, and only when the
//! query's IPv4 source is that port's endpoint's own address (no reflection towards a third
//! party). Anything else to the resolver (ICMP, TCP) is left to `own-addr`, which drops frames
//! to the switch's own MACs.
//!
//! What is answered: a name of the table (an endpoint's name or alias, a service's name,
//! `tasks.SERVICE`) with its A records; PTR for the addresses the table maps back to a name;
//! AAAA or another type for a known name: NOERROR with no answer; anything else REFUSED (no
//! upstream forwarding yet). TTLs are [`TTL`] seconds: the tables follow every change of the
//! cluster at the next query. The tables are built by the control plane off the packet thread
//! and swapped in between batches; a lookup lower-cases the name into a stack buffer and hashes
//! it: no allocation per query.
//!
//! [`wire::dns::Response`]: crate::wire::dns::Response

use std::collections::HashMap;
use std::net::Ipv4Addr;

use foldhash::fast::RandomState;

use crate::batch::Batch;
use crate::env::Env;
use crate::offload::Offload;
use crate::packet::{Mac, NetId, Next, Packet, PortId};
use crate::stage::Stage;
use crate::wire::dns::{self, DnsError, MAX_NAME, Query, Response, rcode};
use crate::wire::ethernet::{self, ETHERTYPE_IPV4};
use crate::wire::{ipv4, udp};

/// Stage name in the graph.
pub const STAGE_NAME: &str = "dns";
/// TTL of every answer, in seconds: short, since an answer changes with the next reload
/// (Docker's embedded DNS uses 600 s for services; vxmesh follows the live state instead).
pub const TTL: u32 = 2;
/// IPv4 and UDP headers in front of an answer (the IPv4 header without options).
const IP_UDP_LEN: usize = ipv4::HEADER_LEN + udp::HEADER_LEN;

crate::drop_table! {
    /// Why `dns` drops a frame sent to a resolver.
    pub enum DnsDrop {
        /// Shorter than a DNS header, or than the question it announces.
        Truncated => "drop_dns_truncated",
        /// A response (QR = 1) sent to the resolver.
        Response => "drop_dns_response",
        /// An opcode other than QUERY.
        Opcode => "drop_dns_opcode",
        /// QDCOUNT is not 1.
        QdCount => "drop_dns_qdcount",
        /// A compression pointer in the query.
        Compression => "drop_dns_compression",
        /// A label over 63 bytes.
        LabelTooLong => "drop_dns_label_too_long",
        /// A name over 255 bytes.
        NameTooLong => "drop_dns_name_too_long",
        /// Other malformed queries: records besides one OPT, trailing bytes, a fragment, IPv4
        /// options, a UDP header that does not parse.
        Malformed => "drop_dns_malformed",
        /// The IPv4 source is not the sending port's endpoint's address: answering would
        /// reflect to someone else.
        SrcNotEndpoint => "drop_dns_src_not_endpoint",
        /// Not a loss: a name the switch does not serve, handed to the node's upstream relay
        /// (`--dns-upstream`); the answer comes back to the container as a new frame.
        ToUpstream => "dns_to_upstream",
    }
}

/// The largest query handed to the upstream relay (queries are far smaller: one name of at
/// most 255 bytes and an OPT record).
pub const FORWARD_MAX: usize = 512;

/// A query handed to the node's upstream resolvers: what the relay needs to send it on and to
/// bring the answer back to the container. Fixed size, moved through a bounded channel whose
/// slots exist from the start: no allocation per query.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    /// The port it came in on (the answer goes back out of it).
    pub port: PortId,
    /// The container's MAC, address and UDP port.
    pub client_mac: Mac,
    /// The container's address.
    pub client_ip: Ipv4Addr,
    /// The container's UDP port.
    pub client_port: u16,
    /// The resolver's MAC and address (the answer comes from them).
    pub resolver_mac: Mac,
    /// The resolver's address.
    pub resolver_ip: Ipv4Addr,
    /// The query's length in `query`.
    pub len: u16,
    /// Where the query's question ends in `query` (a truncated answer keeps the question).
    pub question_end: u16,
    /// The longest answer the container takes: its EDNS0 size (else 512), within the
    /// network's MTU (no fragments), as the switch's own answers are cut.
    pub limit: u16,
    /// The query, as the container sent it.
    pub query: [u8; FORWARD_MAX],
}

impl From<DnsError> for DnsDrop {
    fn from(e: DnsError) -> DnsDrop {
        match e {
            DnsError::Truncated => DnsDrop::Truncated,
            DnsError::Response => DnsDrop::Response,
            DnsError::Opcode => DnsDrop::Opcode,
            DnsError::QdCount => DnsDrop::QdCount,
            DnsError::Compression => DnsDrop::Compression,
            DnsError::LabelTooLong => DnsDrop::LabelTooLong,
            DnsError::NameTooLong => DnsDrop::NameTooLong,
            DnsError::Malformed => DnsDrop::Malformed,
        }
    }
}

/// One network's names: its resolver, and what it answers.
#[derive(Clone, Debug)]
pub struct DnsTable {
    resolver: Ipv4Addr,
    mac: Mac,
    /// Lower-case wire-form name -> its addresses (none: a known name with no address now,
    /// such as `tasks.SERVICE` with every backend drained).
    names: HashMap<Box<[u8]>, Box<[Ipv4Addr]>, RandomState>,
    /// Address -> the name it maps back to, in wire form as configured.
    ptr: HashMap<Ipv4Addr, Box<[u8]>, RandomState>,
}

impl DnsTable {
    /// An empty table for the resolver at `resolver`, answering from `mac`.
    pub fn new(resolver: Ipv4Addr, mac: Mac) -> DnsTable {
        DnsTable {
            resolver,
            mac,
            names: HashMap::default(),
            ptr: HashMap::default(),
        }
    }

    /// The resolver's address.
    pub fn resolver(&self) -> Ipv4Addr {
        self.resolver
    }

    /// The MAC the resolver answers from.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Map `name` (dotted, any case) to `addrs`, replacing what it had.
    pub fn insert_name(&mut self, name: &str, addrs: &[Ipv4Addr]) -> Result<(), DnsError> {
        let mut wire = Vec::new();
        dns::encode_name(&name.to_ascii_lowercase(), &mut wire)?;
        self.names.insert(wire.into(), addrs.into());
        Ok(())
    }

    /// Map `addr` back to `name` (dotted, its case kept), replacing what it had.
    pub fn insert_ptr(&mut self, addr: Ipv4Addr, name: &str) -> Result<(), DnsError> {
        let mut wire = Vec::new();
        dns::encode_name(name, &mut wire)?;
        self.ptr.insert(addr, wire.into());
        Ok(())
    }

    /// The addresses of a lower-case wire-form name, if the name is known.
    #[inline]
    pub fn lookup(&self, name: &[u8]) -> Option<&[Ipv4Addr]> {
        self.names.get(name).map(|a| &a[..])
    }

    /// The wire-form name `addr` maps back to.
    #[inline]
    pub fn reverse(&self, addr: Ipv4Addr) -> Option<&[u8]> {
        self.ptr.get(&addr).map(|n| &n[..])
    }

    /// Names and reverse entries.
    pub fn len(&self) -> (usize, usize) {
        (self.names.len(), self.ptr.len())
    }

    /// Whether it answers nothing.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.ptr.is_empty()
    }
}

/// What a query found.
enum Found<'t> {
    /// These addresses (A).
    Addrs(&'t [Ipv4Addr]),
    /// This name (PTR).
    Ptr(&'t [u8]),
    /// A known name without records of the type asked for.
    NoData,
    /// Not a name of the table.
    Unknown,
}

/// The `dns` stage.
#[derive(Debug, Default)]
pub struct Dns {
    /// Per network id: its table (`None`: no resolver, e.g. an ingress network).
    nets: Vec<Option<Box<DnsTable>>>,
    /// Per port id: the address of the endpoint behind it (`None`: not an endpoint's port).
    ports: Vec<Option<Ipv4Addr>>,
    /// Queries answered with records.
    pub answered: u64,
    /// Queries for a known name answered NOERROR without records (AAAA, say).
    pub nodata: u64,
    /// Queries answered REFUSED (names it does not serve).
    pub refused: u64,
    /// Answers cut short with TC set.
    pub truncated: u64,
    /// Where queries for names the switch does not serve go (`--dns-upstream`); `None`: they
    /// are answered REFUSED.
    upstream: Option<std::sync::mpsc::SyncSender<Forward>>,
    /// Queries handed to the upstream relay.
    pub forwarded: u64,
    /// Queries answered REFUSED because the relay's queue was full.
    pub upstream_busy: u64,
}

impl Dns {
    /// A stage with no tables yet.
    pub fn new() -> Dns {
        Dns::default()
    }

    /// Put `table` in force for network `net` (`None`: no resolver there); returns the table
    /// it replaces, for the caller to drop off the packet thread.
    pub fn set_table(&mut self, net: NetId, table: Option<Box<DnsTable>>) -> Option<Box<DnsTable>> {
        let i = usize::from(net.0);
        if self.nets.len() <= i {
            self.nets.resize_with(i + 1, || None);
        }
        std::mem::replace(&mut self.nets[i], table)
    }

    /// The table of network `net`.
    pub fn table(&self, net: NetId) -> Option<&DnsTable> {
        self.nets.get(usize::from(net.0)).and_then(|t| t.as_deref())
    }

    /// Put the endpoint addresses of the ports in force (indexed by port id); returns the
    /// ones they replace.
    pub fn set_ports(&mut self, ports: Vec<Option<Ipv4Addr>>) -> Vec<Option<Ipv4Addr>> {
        std::mem::replace(&mut self.ports, ports)
    }

    /// The endpoint addresses of the ports, by port id.
    pub fn ports(&self) -> &[Option<Ipv4Addr>] {
        &self.ports
    }

    /// Hand queries for names the switch does not serve to `relay` (a bounded channel: when it
    /// is full the query is answered REFUSED and counted).
    pub fn set_upstream(&mut self, relay: std::sync::mpsc::SyncSender<Forward>) {
        self.upstream = Some(relay);
    }

    /// Decide on one frame; on a query to a resolver, answer it in place or drop it.
    fn handle(&mut self, p: &mut Packet, mtu: u16) {
        if p.meta.from_vtep.is_some() || p.meta.ethertype != ETHERTYPE_IPV4 {
            return;
        }
        let Some(Some(table)) = self.nets.get(usize::from(p.meta.net.0)) else {
            return;
        };
        // A container sends its queries to the resolver's MAC (it asked ARP for it): one
        // compare keeps every other frame from being parsed any further here.
        // l2-parse checked the Ethernet header.
        if ethernet::Packet::new_unchecked(p.data()).dst_addr() != table.mac {
            return;
        }
        let l3 = usize::from(p.meta.l3_offset);
        let Ok(ip) = ipv4::Packet::new_checked(&p.data()[l3..]) else {
            return;
        };
        if ip.dst_addr() != table.resolver || ip.protocol() != ipv4::PROTO_UDP {
            return;
        }
        let Ok(u) = udp::Packet::new_checked(ip.payload()) else {
            p.meta.next = Next::Drop(DnsDrop::Malformed.into());
            return;
        };
        if u.dst_port() != dns::PORT {
            return;
        }
        let (client, client_port) = (ip.src_addr(), u.src_port());
        let sender = self.ports.get(usize::from(p.meta.in_port.0)).copied();
        if sender != Some(Some(client)) {
            p.meta.next = Next::Drop(DnsDrop::SrcNotEndpoint.into());
            return;
        }
        if ip.version() != ipv4::VERSION || ip.header_len() != ipv4::HEADER_LEN || ip.is_fragment()
        {
            p.meta.next = Next::Drop(DnsDrop::Malformed.into());
            return;
        }
        let msg = u.payload();
        let q = match Query::parse(msg) {
            Ok(q) => q,
            Err(e) => {
                p.meta.next = Next::Drop(DnsDrop::from(e).into());
                return;
            }
        };
        let mut lower = [0u8; MAX_NAME];
        let name = dns::lower_name(q.name(msg), &mut lower);
        let found = if q.qclass != dns::CLASS_IN {
            Found::Unknown
        } else {
            match (q.qtype, table.lookup(name)) {
                (dns::TYPE_A | dns::TYPE_ANY, Some(a)) if !a.is_empty() => Found::Addrs(a),
                (_, Some(_)) => Found::NoData,
                (dns::TYPE_PTR | dns::TYPE_ANY, None) => {
                    match dns::reverse_v4(name).and_then(|a| table.reverse(a)) {
                        Some(n) => Found::Ptr(n),
                        None => Found::Unknown,
                    }
                }
                (_, None) => Found::Unknown,
            }
        };
        // The answer fits what the client takes (its EDNS0 size, else 512) and the network's
        // MTU (no fragments); the question alone always goes back, whatever the limits.
        let path = usize::from(mtu).saturating_sub(IP_UDP_LEN);
        let limit = q.edns.map_or(dns::MIN_UDP_PAYLOAD, usize::from).min(path);
        // A name the switch does not serve goes to the upstream relay, if there is one.
        if matches!(found, Found::Unknown)
            && let Some(up) = &self.upstream
            && msg.len() <= FORWARD_MAX
        {
            let mut f = Forward {
                port: p.meta.in_port,
                client_mac: ethernet::Packet::new_unchecked(p.data()).src_addr(),
                client_ip: client,
                client_port,
                resolver_mac: table.mac,
                resolver_ip: table.resolver,
                len: msg.len() as u16,
                // Within the query (at most FORWARD_MAX bytes).
                question_end: q.end as u16,
                limit: u16::try_from(limit).unwrap_or(u16::MAX),
                query: [0; FORWARD_MAX],
            };
            f.query[..msg.len()].copy_from_slice(msg);
            if up.try_send(f).is_ok() {
                self.forwarded += 1;
                p.meta.next = Next::Drop(DnsDrop::ToUpstream.into());
                return;
            }
            self.upstream_busy += 1;
        }
        // RFC 6891: an advertised size under 512 is taken as 512.
        let advertise = u16::try_from(path.max(dns::MIN_UDP_PAYLOAD)).unwrap_or(u16::MAX);
        let dns_off = l3 + IP_UDP_LEN;
        let room = p.max_len().saturating_sub(dns_off);
        let limit = limit.min(room);
        if !p.set_len(dns_off + limit.max(msg.len())) {
            // The query itself is in the buffer, so its length always fits.
            p.meta.next = Next::Drop(DnsDrop::Malformed.into());
            return;
        }
        let d = p.data_mut();
        let code = match found {
            Found::Unknown => rcode::REFUSED,
            _ => rcode::NOERROR,
        };
        let mut r = Response::new(&mut d[dns_off..], &q, code, limit, advertise);
        match found {
            Found::Addrs(addrs) => {
                for &a in addrs {
                    if !r.push_a(a, TTL) {
                        break;
                    }
                }
            }
            Found::Ptr(n) => {
                r.push_ptr(n, TTL);
            }
            Found::NoData | Found::Unknown => {}
        }
        match (found, r.answers()) {
            (Found::Unknown, _) => self.refused += 1,
            (_, 0) if !r.is_truncated() => self.nodata += 1,
            _ => self.answered += 1,
        }
        self.truncated += u64::from(r.is_truncated());
        let n = r.finish();
        let resolver = table.resolver;
        let mac = table.mac;
        let d = p.data_mut();
        let mut eth = ethernet::Packet::new_unchecked(&mut d[..]);
        let asker = eth.src_addr();
        eth.set_dst_addr(asker);
        eth.set_src_addr(mac);
        let mut ip = ipv4::Packet::new_unchecked(&mut d[l3..]);
        ip.set_src_addr(resolver);
        ip.set_dst_addr(client);
        ip.set_ttl(ipv4::DEFAULT_TTL);
        ip.set_flags_frag(0);
        // n is at most the buffer's length, far below 64 KB.
        ip.set_total_len((IP_UDP_LEN + n) as u16);
        ip.fill_checksum();
        let repr = udp::Repr {
            src_port: dns::PORT,
            dst_port: client_port,
        };
        repr.emit(
            &mut udp::Packet::new_unchecked(&mut d[l3 + ipv4::HEADER_LEN..]),
            n,
            Some((resolver, client)),
        );
        p.set_len(dns_off + n);
        // The answer's checksums are complete: nothing is left for an output to finish.
        p.meta.offload = Offload::default();
        p.meta.next = Next::Output(p.meta.in_port);
    }
}

impl Stage for Dns {
    fn name(&self) -> &'static str {
        STAGE_NAME
    }

    fn drop_names(&self) -> &'static [&'static str] {
        DnsDrop::NAMES
    }

    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        if self.nets.is_empty() {
            return;
        }
        for (_, p) in batch.active_mut() {
            let Some(net) = env.nets.get(usize::from(p.meta.net.0)) else {
                continue;
            };
            self.handle(p, net.mtu);
        }
    }

    fn describe(&self, pkt: &Packet, _env: &Env) -> String {
        match pkt.meta.next {
            Next::Drop(r) => DnsDrop::NAMES
                .get(usize::from(r.0))
                .copied()
                .unwrap_or("drop")
                .into(),
            Next::Output(_) => {
                let msg = pkt
                    .data()
                    .get(usize::from(pkt.meta.l3_offset) + IP_UDP_LEN..)
                    .unwrap_or_default();
                let Ok(h) = dns::Packet::new_checked(msg) else {
                    return "answered".into();
                };
                let name = msg
                    .get(dns::QUESTION_NAME_OFFSET..)
                    .and_then(|m| {
                        dns::check_name(msg, dns::QUESTION_NAME_OFFSET)
                            .ok()
                            .map(|end| dns::dotted(&m[..end - dns::QUESTION_NAME_OFFSET]))
                    })
                    .unwrap_or_default();
                format!(
                    "answered {name}: rcode {}, {} answers{}",
                    h.rcode(),
                    h.ancount(),
                    if h.truncated() { ", truncated" } else { "" }
                )
            }
            _ => "not a query to a resolver".into(),
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("dns_answered", self.answered),
            ("dns_nodata", self.nodata),
            ("dns_refused", self.refused),
            ("dns_truncated", self.truncated),
            ("dns_forwarded", self.forwarded),
            ("dns_upstream_busy", self.upstream_busy),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Network;
    use crate::frames;
    use crate::packet::PortId;
    use crate::wire::dns::{CLASS_IN, TYPE_A, TYPE_AAAA, TYPE_PTR};

    const NET: NetId = NetId(0);
    const PORT: PortId = PortId(1);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 9, last)
    }

    fn stage() -> Dns {
        let mut t = DnsTable::new(ip(1), Mac::docker_default(ip(1)));
        t.insert_name("c11", &[ip(11)]).unwrap();
        t.insert_name("web", &[ip(100)]).unwrap();
        t.insert_name("tasks.web", &[ip(12), ip(21)]).unwrap();
        t.insert_ptr(ip(11), "c11").unwrap();
        let mut d = Dns::new();
        d.set_table(NET, Some(Box::new(t)));
        d.set_ports(vec![None, Some(ip(11))]);
        d
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x11, 0x22, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        dns::encode_name(name, &mut m).unwrap();
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m
    }

    /// Runs one frame from c11's port through the stage: its disposition and bytes.
    fn run(d: &mut Dns, frame: &[u8]) -> (Next, Vec<u8>) {
        let mut env = Env::new(crate::FdbConfig::default());
        env.add_network(Network::new("appnet", 4097, 1450));
        let mut b = Batch::with_buf_size(4, 2048);
        let mut p = Packet::with_capacity(2048);
        p.set_frame(frame).unwrap();
        p.meta.net = NET;
        p.meta.in_port = PORT;
        let (l3, et) = crate::l2::L2Parse::check(frame, 1464).unwrap();
        (p.meta.l3_offset, p.meta.ethertype) = (l3, et);
        b.push_copy(&p).unwrap();
        d.process(&mut b, &mut env);
        (b[0].meta.next, b[0].data().to_vec())
    }

    fn from_c11(dst: Ipv4Addr, sport: u16, payload: &[u8]) -> Vec<u8> {
        let c11 = Mac::docker_default(ip(11));
        frames::udp(
            c11,
            Mac::docker_default(dst),
            ip(11),
            dst,
            sport,
            53,
            payload,
        )
    }

    #[test]
    fn answers_in_place_back_to_the_sender() {
        let mut d = stage();
        let (next, out) = run(&mut d, &from_c11(ip(1), 40000, &query("WEB", TYPE_A)));
        assert_eq!(next, Next::Output(PORT));
        let eth = ethernet::Packet::new_checked(&out[..]).unwrap();
        assert_eq!(eth.dst_addr(), Mac::docker_default(ip(11)));
        assert_eq!(eth.src_addr(), Mac::docker_default(ip(1)));
        let ipp = ipv4::Packet::new_checked(&out[14..]).unwrap();
        assert!(ipp.verify_checksum());
        assert_eq!((ipp.src_addr(), ipp.dst_addr()), (ip(1), ip(11)));
        let u = udp::Packet::new_checked(ipp.payload()).unwrap();
        assert!(u.verify_checksum(ip(1), ip(11)));
        assert_eq!((u.src_port(), u.dst_port()), (53, 40000));
        let msg = u.payload();
        let h = dns::Packet::new_checked(msg).unwrap();
        assert_eq!((h.id(), h.rcode(), h.ancount()), (0x1122, 0, 1));
        // The question as asked (case kept), then the VIP.
        assert_eq!(&msg[12..17], b"\x03WEB\x00");
        assert_eq!(&msg[msg.len() - 4..], &[10, 0, 9, 100]);
        assert_eq!(d.answered, 1);
    }

    #[test]
    fn kinds_of_answers() {
        let mut d = stage();
        let answer = |d: &mut Dns, name: &str, qtype: u16| {
            let (next, out) = run(d, &from_c11(ip(1), 1000, &query(name, qtype)));
            assert_eq!(next, Next::Output(PORT), "{name}");
            let msg = &out[14 + IP_UDP_LEN..];
            let h = dns::Packet::new_checked(msg).unwrap();
            (h.rcode(), h.ancount())
        };
        assert_eq!(answer(&mut d, "tasks.web", TYPE_A), (rcode::NOERROR, 2));
        assert_eq!(answer(&mut d, "c11", TYPE_AAAA), (rcode::NOERROR, 0));
        assert_eq!(
            answer(&mut d, "11.9.0.10.in-addr.arpa", TYPE_PTR),
            (rcode::NOERROR, 1)
        );
        assert_eq!(
            answer(&mut d, "12.9.0.10.in-addr.arpa", TYPE_PTR),
            (rcode::REFUSED, 0)
        );
        assert_eq!(answer(&mut d, "example.com", TYPE_A), (rcode::REFUSED, 0));
        assert_eq!((d.answered, d.nodata, d.refused), (2, 1, 2));
    }

    #[test]
    fn only_queries_to_the_resolver_from_the_ports_endpoint() {
        let mut d = stage();
        let q = query("web", TYPE_A);
        // To another address, or another port: not the stage's.
        assert_eq!(run(&mut d, &from_c11(ip(12), 1000, &q)).0, Next::Continue);
        let mut other_port = from_c11(ip(1), 1000, &q);
        other_port[14 + 20 + 3] = 54;
        assert_eq!(run(&mut d, &other_port).0, Next::Continue);
        // From an address that is not c11's: dropped, never answered.
        let c11 = Mac::docker_default(ip(11));
        let spoofed = frames::udp(c11, d_mac(), ip(99), ip(1), 1000, 53, &q);
        assert_eq!(
            run(&mut d, &spoofed).0,
            Next::Drop(DnsDrop::SrcNotEndpoint.into())
        );
        // A response sent to the resolver.
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert_eq!(
            run(&mut d, &from_c11(ip(1), 1000, &resp)).0,
            Next::Drop(DnsDrop::Response.into())
        );
    }

    fn d_mac() -> Mac {
        Mac::docker_default(ip(1))
    }
}
