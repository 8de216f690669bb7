//! The per-packet side of the load balancer: what `lb-nat` runs for every IPv4 frame.
//!
//! A batch goes through three passes (driven by [`crate::stage::LbStage`]):
//! [`Balancer::prepare`] parses each TCP/UDP frame once, hashes its connection key and starts
//! fetching the key's bucket; [`Balancer::lookup_prepared`] probes all the buckets while their
//! lines arrive together and starts fetching each hit's entry; [`Balancer::process_prepared`]
//! then decides each frame in order: on a hit translate it (DNAT client -> backend, or un-NAT
//! backend -> client, plus SNAT for routing-mesh services) and advance the TCP state; on a miss
//! for a service, schedule a backend, track the new connection and translate; otherwise let it
//! pass untouched. ICMP errors about a tracked connection are translated the same way. Every
//! frame ends in exactly one [`Verdict`]; the pipeline counts them. No allocation, lock or
//! syscall here; the tables are the worker's own.

use std::net::Ipv4Addr;

use vswitch::{MAX_BATCH, NetId, Time};

use crate::balancer::{Balancer, Dests, Service, secs};
use crate::conntrack::{Conn, Dir, F_HAIRPIN, F_INACTIVE, F_SNAT, Key};
use crate::packet::{self, Flow, IcmpError, Tuple};
use crate::state::TcpState;
use crate::types::{LbDrop, Protocol, Rx, SNAT_MAX_TRIES, SNAT_PORT_MIN, ServiceKey, Verdict};
use vswitch::wire::{checksum, ipv4, tcp, udp};

/// Ethernet header: destination MAC, source MAC, EtherType.
const ETH_DST: core::ops::Range<usize> = 0..6;
const ETH_SRC: core::ops::Range<usize> = 6..12;
const ETH_ADDRS: usize = 12;

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

impl Balancer {
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
        self.process_prepared(frame, l3, net, now, Rx::default(), None)
    }

    /// As [`Balancer::process`] for a frame that came as `rx` says (from the underlay, with a
    /// partial checksum).
    #[inline]
    pub fn process_rx(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        net: NetId,
        now: Time,
        rx: Rx,
    ) -> Verdict {
        self.process_prepared(frame, l3, net, now, rx, None)
    }

    /// As [`Balancer::process`], with what this balancer's earlier passes learned about this
    /// same, unmodified frame: its parse and hash are reused, and its lookup too unless a
    /// connection was added or removed since (by an earlier packet of the batch). A `prep`
    /// whose IPv4 offset, frame length or network differ from the call's is ignored. `rx` says
    /// where the frame came from (what a new connection must pass: see `Balancer::admit`).
    #[inline]
    pub fn process_prepared(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        net: NetId,
        now: Time,
        rx: Rx,
        prep: Option<&Prepared>,
    ) -> Verdict {
        match prep {
            // Parsed by `prepare`; the frame is unchanged since (same place, length, network).
            Some(p)
                if usize::from(p.l3) == l3
                    && usize::from(p.len) == frame.len()
                    && p.key.net == net.0 =>
            {
                let (l4, flags) = (usize::from(p.l4), p.tcp_flags);
                self.transport(frame, l3, l4, net, p.key.tuple, flags, now, rx, prep)
            }
            _ => self.process_inner(frame, l3, net, now, rx, prep),
        }
    }

    #[inline]
    fn process_inner(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        net: NetId,
        now: Time,
        rx: Rx,
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
            }) => self.transport(frame, l3, l4, net, tuple, tcp_flags, now, rx, prep),
            Ok(Flow::Icmp(e)) => self.icmp(frame, l3, net, &e, now),
        }
    }

    /// Advance a connection's state for a packet in `dir` and re-arm its expiry.
    #[inline]
    fn touch(&mut self, idx: u32, dir: Dir, flags: u8, now: Time) {
        let c = self.ct.get_mut(idx);
        if c.proto == ipv4::PROTO_TCP {
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
    fn rewrite_macs(frame: &mut [u8], l3: usize, dst: &[u8; 6], src: Option<&[u8; 6]>) {
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
                Self::rewrite_macs(frame, l3, &b.cfg.mac.0, snat_mac.as_ref());
                self.account(idx, dir, len);
                self.counters.to_backend += 1;
                Self::towards(&c, Verdict::ToBackend { net: NetId(c.rnet) })
            }
            Dir::Reply => {
                packet::rewrite_transport(ip, l4, c.proto, (c.vaddr, c.vport), (c.caddr, c.cport));
                Self::rewrite_macs(frame, l3, &c.cmac, Some(&c.vmac));
                self.account(idx, dir, len);
                self.counters.to_client += 1;
                Self::towards(&c, Verdict::ToClient { net: NetId(c.fnet) })
            }
        }
    }

    /// `v`, or [`Verdict::Hairpin`] for a connection whose client is its backend.
    #[inline]
    fn towards(c: &Conn, v: Verdict) -> Verdict {
        if c.flags & F_HAIRPIN != 0 {
            Verdict::Hairpin
        } else {
            v
        }
    }

    #[inline]
    fn snat_mac(&self, c: &Conn) -> Option<[u8; 6]> {
        if c.flags & F_SNAT == 0 {
            return None;
        }
        if c.flags & F_HAIRPIN != 0 {
            // From the VIP, as the backend's ARP entry for it says.
            return Some(c.vmac);
        }
        self.services[usize::from(c.service)]
            .cfg
            .snat
            .map(|s| s.mac.0)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the per-packet path passes parsed fields, not a struct built per packet"
    )]
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
        rx: Rx,
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
                        || (c.proto == ipv4::PROTO_TCP
                            && flags & (tcp::FLAG_SYN | tcp::FLAG_ACK | tcp::FLAG_RST) == tcp::FLAG_SYN
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
        self.new_conn(frame, l3, l4, net, tuple, flags, now, rx)
    }

    #[inline]
    fn find_service(&self, net: NetId, t: &Tuple) -> Option<usize> {
        let proto = Protocol::from_number(t.proto)?;
        let key = ServiceKey {
            net,
            proto,
            addr: Ipv4Addr::from(t.dst),
            port: t.dport,
        };
        self.by_key.get(&key).map(|&s| usize::from(s))
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the per-packet path passes parsed fields, not a struct built per packet"
    )]
    fn new_conn(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        l4: usize,
        net: NetId,
        t: Tuple,
        flags: u8,
        now: Time,
        rx: Rx,
    ) -> Verdict {
        let Some(s) = self.find_service(net, &t) else {
            return Verdict::Pass;
        };
        if t.proto == ipv4::PROTO_TCP && (flags & tcp::FLAG_SYN == 0 || flags & tcp::FLAG_RST != 0)
        {
            return Verdict::Drop(LbDrop::TcpNotSyn);
        }
        if let Err(d) = self.admit(&frame[l3..], l4, net, &t, rx) {
            return Verdict::Drop(d);
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
        // The source the backend sees: the client's own, or a source NAT to (address, lowest
        // port, flags).
        let snat = match svc.snat {
            // Hairpin: the client is the backend chosen. Unchanged, the backend would get a
            // packet from its own address (which its kernel drops as a martian) by the port it
            // sent it from; source-NATed to the VIP, its reply goes back to the switch, as the
            // VIP's own ARP entry says (Docker's load balancer SNATs the same way).
            None if u32::from(b.addr) == t.src && rnet == net.0 => {
                Some((t.dst, SNAT_PORT_MIN, F_SNAT | F_HAIRPIN))
            }
            None => None,
            Some(sn) => Some((u32::from(sn.addr), sn.port_min, F_SNAT)),
        };
        let (laddr, lport, flags_snat) = match snat {
            None => (t.src, t.sport, 0),
            Some((laddr, port_min, flags)) => {
                let baddr = u32::from(b.addr);
                match self.snat_port(rnet, t.proto, baddr, dport, laddr, t.sport, port_min, &t) {
                    Some(p) => (laddr, p, flags),
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
        self.counters.hairpin_conns += u64::from(flags_snat & F_HAIRPIN != 0);
        self.touch(idx, Dir::Orig, flags, now);
        self.translate(frame, l3, l4, idx, Dir::Orig)
    }

    /// Whether a new connection's first packet (`ip`: its IPv4 packet, transport header at
    /// `l4`, tuple `t`, seen in `net`, received as `rx`) may create an entry: not from the
    /// underlay, from a plausible source, with a whole TCP header and right checksums (a
    /// partial L4 checksum is the sender's kernel's offload, not checkable). Only new
    /// connections pay for this, established ones never.
    #[inline]
    pub(crate) fn admit(
        &self,
        ip: &[u8],
        l4: usize,
        net: NetId,
        t: &Tuple,
        rx: Rx,
    ) -> Result<(), LbDrop> {
        if rx.underlay {
            return Err(LbDrop::ServiceFromUnderlay);
        }
        if martian(t.src) || self.vips.contains(&(net, t.src)) {
            return Err(LbDrop::MartianSource);
        }
        // `parse` checked the header length and that the total length fits the buffer.
        let h = ipv4::Packet::new_unchecked(ip);
        let end = usize::from(h.total_len()).min(ip.len());
        let ip = &ip[..end];
        if t.proto == ipv4::PROTO_TCP {
            let doff = tcp::Packet::new_unchecked(&ip[l4..]).header_len();
            if doff < tcp::HEADER_LEN || l4 + doff > end {
                return Err(LbDrop::BadTcpHeader);
            }
        }
        if !h.verify_checksum() {
            return Err(LbDrop::BadIpChecksum);
        }
        let seg = &ip[l4..];
        let unchecked = rx.csum_partial
            || (t.proto == ipv4::PROTO_UDP && udp::Packet::new_unchecked(seg).checksum() == 0);
        if !unchecked {
            // The pseudo-header from the tuple's addresses (the header's, as numbers): adds in
            // registers, no 12-byte buffer to sum.
            let pseudo = checksum::fold(
                (t.src >> 16)
                    + (t.src & 0xffff)
                    + (t.dst >> 16)
                    + (t.dst & 0xffff)
                    + u32::from(t.proto)
                    + seg.len() as u32,
            );
            if checksum::add(pseudo, checksum::sum(seg)) != 0xffff {
                return Err(LbDrop::BadL4Checksum);
            }
        }
        Ok(())
    }

    /// Pick a source port for a routing-mesh or hairpin connection whose reply tuple is free: the client's
    /// own port first, then a hash-spread sequence (as Linux NAT's unique-tuple search).
    #[allow(
        clippy::too_many_arguments,
        reason = "the per-packet path passes parsed fields, not a struct built per packet"
    )]
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
            // A hairpin connection's reply tuple must differ from its own original one, or
            // a packet could not say which way it goes.
            k.tuple != *t && self.ct.lookup(&k).is_none()
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
                Self::towards(&c, Verdict::ToClient { net: NetId(c.fnet) })
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
                let bmac = self.backends[usize::from(c.backend)].cfg.mac.0;
                let smac = self.snat_mac(&c);
                Self::rewrite_macs(frame, l3, &bmac, smac.as_ref());
                Self::towards(&c, Verdict::ToBackend { net: NetId(c.rnet) })
            }
        };
        self.account(idx, dir, len);
        match dir {
            Dir::Orig => self.counters.to_backend += 1,
            Dir::Reply => self.counters.to_client += 1,
        }
        self.counters.icmp_translated += 1;
        v
    }
}

/// A source address no client can have: "this network" 0.0.0.0/8, loopback 127.0.0.0/8,
/// multicast 224.0.0.0/4, and 240.0.0.0/4 (reserved, with the limited broadcast) — Linux's
/// martian sources.
#[inline]
fn martian(src: u32) -> bool {
    let first = src >> 24;
    first == 0 || first == 127 || first >= 224
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use vswitch::{Mac, Time};

    use crate::balancer::Balancer;
    use crate::balancer::tests::*;
    use crate::packet::tests::{build, build_icmp, verify};
    use crate::packet::{self, Flow, Tuple};
    use crate::sched::SchedulerKind;
    use crate::types::{
        BackendConfig, BalancerConfig, LbDrop, Protocol, Rx, SNAT_PORT_MIN, ServiceConfig,
        ServiceKey, Snat, Verdict,
    };
    use vswitch::wire::{icmp, ipv4, tcp};

    #[test]
    fn golden_dnat_and_reply() {
        let mut lb = lb_with(3, SchedulerKind::Rr, 64);
        let mut f = client_pkt(40000, tcp::FLAG_SYN);
        assert_eq!(
            lb.process(&mut f, ETH, NET, Time::from_secs(1)),
            Verdict::ToBackend { net: NET }
        );
        let t = tuple_of(&f);
        let b0 = backend(0, 1);
        assert_eq!((Ipv4Addr::from(t.dst), t.dport), (b0.addr, 8080));
        assert_eq!((Ipv4Addr::from(t.src), t.sport), (CLIENT, 40000));
        assert_eq!(&f[0..6], &b0.mac.0);
        assert_eq!(&f[6..12], &CMAC.0);
        assert!(verify(&f[ETH..]));
        // Reply from the backend (to the client's MAC), un-NATed to come from the VIP.
        let mut r = frame(
            (b0.addr, 8080),
            (CLIENT, 40000),
            ipv4::PROTO_TCP,
            tcp::FLAG_SYN | tcp::FLAG_ACK,
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
        assert_eq!((&r[0..6], &r[6..12]), (&CMAC.0[..], &VMAC.0[..]));
        assert!(verify(&r[ETH..]));
        // Unrelated traffic passes untouched.
        let mut other = frame(
            (CLIENT, 1),
            (Ipv4Addr::new(10, 0, 9, 30), 80),
            ipv4::PROTO_TCP,
            tcp::FLAG_SYN,
            CMAC,
            VMAC,
        );
        let before = other.clone();
        assert_eq!(
            lb.process(&mut other, ETH, NET, Time::from_secs(1)),
            Verdict::Pass
        );
        assert_eq!(other, before);
    }

    #[test]
    fn a_listing_read_in_slices_is_the_whole_listing() {
        let mut lb = lb_with(3, SchedulerKind::Rr, 1024);
        let now = Time::from_secs(1);
        for p in 0..300 {
            lb.process(&mut client_pkt(1000 + p, tcp::FLAG_SYN), ETH, NET, now);
        }
        let whole = lb.conns(now);
        assert_eq!(whole.len(), 300);
        for slots in [1, 7, 64, 4096] {
            let (mut got, mut from, mut calls) = (Vec::new(), Some(0), 0);
            while let Some(start) = from {
                let (slice, next) = lb.conns_slice(now, start, slots);
                assert!(slice.len() <= slots);
                got.extend(slice);
                from = next;
                calls += 1;
            }
            assert_eq!(got, whole, "slices of {slots}");
            assert!(
                calls >= 1024_usize.div_ceil(slots).min(1024),
                "{calls} calls of {slots}"
            );
        }
    }

    #[test]
    fn rr_thirty_connections_ten_each() {
        let mut lb = lb_with(3, SchedulerKind::Rr, 64);
        for p in 0..30 {
            let mut f = client_pkt(1000 + p, tcp::FLAG_SYN);
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
                    ipv4::PROTO_TCP,
                    flags,
                    b.mac,
                    CMAC,
                ),
                ETH,
                NET,
                now,
            )
        };
        fwd(&mut lb, tcp::FLAG_SYN);
        assert_eq!(state(&lb), ("SYN_RECV", 60));
        rev(&mut lb, tcp::FLAG_SYN | tcp::FLAG_ACK);
        assert_eq!(state(&lb), ("SYN_RECV", 60));
        fwd(&mut lb, tcp::FLAG_ACK);
        assert_eq!(state(&lb), ("ESTABLISHED", 900));
        assert_eq!(
            (
                lb.services()[0].backends[0].active_conns,
                lb.services()[0].backends[0].inact_conns
            ),
            (1, 0)
        );
        rev(&mut lb, tcp::FLAG_FIN | tcp::FLAG_ACK);
        assert_eq!(state(&lb), ("FIN_WAIT", 120));
        assert_eq!(
            (
                lb.services()[0].backends[0].active_conns,
                lb.services()[0].backends[0].inact_conns
            ),
            (0, 1)
        );
        fwd(&mut lb, tcp::FLAG_FIN | tcp::FLAG_ACK);
        assert_eq!(state(&lb), ("TIME_WAIT", 120));
        fwd(&mut lb, tcp::FLAG_RST);
        assert_eq!(state(&lb), ("CLOSE", 10));
        // Expiry with the fake clock.
        assert_eq!(lb.expire(Time::from_secs(109), 64), 0);
        assert_eq!(lb.expire(Time::from_secs(110), 64), 1);
        assert!(lb.conns(now).is_empty());
        assert_eq!(lb.services()[0].backends[0].inact_conns, 0);
    }

    #[test]
    fn syn_on_closed_tuple_is_rescheduled() {
        let mut lb = lb_with(2, SchedulerKind::Rr, 64);
        let now = Time::from_secs(1);
        let mut f = client_pkt(7000, tcp::FLAG_SYN);
        lb.process(&mut f, ETH, NET, now);
        let first = tuple_of(&f).dst;
        lb.process(&mut client_pkt(7000, tcp::FLAG_ACK), ETH, NET, now);
        // A client RST in SYN_RECV keeps SYN_RECV (IPVS table); once established it closes.
        lb.process(&mut client_pkt(7000, tcp::FLAG_RST), ETH, NET, now);
        assert_eq!(lb.conns(now)[0].state, "CLOSE");
        let mut f = client_pkt(7000, tcp::FLAG_SYN);
        lb.process(&mut f, ETH, NET, now);
        assert_ne!(tuple_of(&f).dst, first, "rr scheduled the new SYN anew");
        assert_eq!(lb.conns(now).len(), 1);
        assert_eq!(lb.conns(now)[0].state, "SYN_RECV");
    }

    #[test]
    fn non_syn_without_conn_is_dropped_and_counted() {
        let mut lb = lb_with(1, SchedulerKind::Rr, 64);
        assert_eq!(
            lb.process(&mut client_pkt(1, tcp::FLAG_ACK), ETH, NET, Time::default()),
            Verdict::Drop(LbDrop::TcpNotSyn)
        );
    }

    #[test]
    fn full_table_drops_new_keeps_established() {
        let mut lb = lb_with(2, SchedulerKind::Rr, 8);
        let now = Time::from_secs(1);
        for p in 0..4 {
            lb.process(&mut client_pkt(p, tcp::FLAG_SYN), ETH, NET, now);
            lb.process(&mut client_pkt(p, tcp::FLAG_ACK), ETH, NET, now);
        }
        // A SYN flood of new tuples fills the rest and is then refused.
        let full = (1000..1100)
            .filter(|&p| {
                lb.process(&mut client_pkt(p, tcp::FLAG_SYN), ETH, NET, now)
                    == Verdict::Drop(LbDrop::TableFull)
            })
            .count();
        assert_eq!(full, 96);
        for p in 0..4 {
            assert!(matches!(
                lb.process(&mut client_pkt(p, tcp::FLAG_ACK), ETH, NET, now),
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
                &mut client_pkt(5000, tcp::FLAG_SYN),
                ETH,
                NET,
                Time::from_secs(61)
            ),
            Verdict::ToBackend { .. }
        ));
    }

    #[test]
    fn routing_mesh_snat_never_collides() {
        let mut lb = Balancer::new(BalancerConfig {
            max_conns: 64,
            ..BalancerConfig::default()
        });
        let ingress_ip = Ipv4Addr::new(192, 0, 2, 1);
        let lb_addr = Ipv4Addr::new(10, 0, 9, 254);
        let k = ServiceKey {
            net: INGRESS,
            proto: Protocol::Tcp,
            addr: ingress_ip,
            port: 8080,
        };
        let snat = Snat {
            addr: lb_addr,
            mac: Mac([2, 0x42, 10, 0, 9, 254]),
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
                ipv4::PROTO_TCP,
                tcp::FLAG_SYN,
                Mac([2, 0, 0, 0, 0, c]),
                Mac([2, 0, 0, 0, 0, 1]),
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
            assert_eq!(&f[6..12], &snat.mac.0);
            seen.push(t.sport);
        }
        assert_ne!(seen[0], seen[1]);
        // Replies find their own client.
        for (i, c) in [50u8, 51].into_iter().enumerate() {
            let mut r = frame(
                (b.addr, 80),
                (lb_addr, seen[i]),
                ipv4::PROTO_TCP,
                tcp::FLAG_SYN | tcp::FLAG_ACK,
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
    fn backend_port_zero_keeps_the_destination_port() {
        let mut lb = lb_with(0, SchedulerKind::Rr, 64);
        lb.add_backend(
            &key(),
            BackendConfig {
                port: 0,
                ..backend(0, 1)
            },
        )
        .unwrap();
        let mut f = client_pkt(1234, tcp::FLAG_SYN);
        assert!(matches!(
            lb.process(&mut f, ETH, NET, Time::default()),
            Verdict::ToBackend { .. }
        ));
        assert_eq!(tuple_of(&f).dport, 80);
        assert!(
            crate::listing::format_services(&lb.services(), crate::listing::ListMode::Plain)
                .contains("TCP  10.0.9.100:80 rr")
        );
    }

    #[test]
    fn icmp_errors_are_translated_both_ways() {
        let mut lb = lb_with(1, SchedulerKind::Rr, 64);
        let b = backend(0, 1);
        let now = Time::from_secs(1);
        let mut f = client_pkt(4444, tcp::FLAG_SYN);
        lb.process(&mut f, ETH, NET, now);
        // The backend host says "port unreachable" about the DNATed packet.
        let quoted = f[ETH..].to_vec();
        let mut icmp = vec![0u8; ETH];
        icmp.extend_from_slice(&build_icmp(
            b.addr.into(),
            CLIENT.into(),
            icmp::TYPE_DEST_UNREACH,
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
        assert_eq!(&icmp[ETH + 28..], &client_pkt(4444, tcp::FLAG_SYN)[ETH..]);
        // The client side complains about a reply: translated towards the backend.
        let mut r = frame(
            (b.addr, 8080),
            (CLIENT, 4444),
            ipv4::PROTO_TCP,
            tcp::FLAG_SYN | tcp::FLAG_ACK,
            b.mac,
            CMAC,
        );
        lb.process(&mut r, ETH, NET, now);
        let mut icmp = vec![0u8; ETH];
        icmp.extend_from_slice(&build_icmp(
            CLIENT.into(),
            VIP.into(),
            icmp::TYPE_DEST_UNREACH,
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
        let c = lb.counters();
        assert_eq!((c.icmp_translated, c.to_client, c.to_backend), (2, 2, 2));
    }

    #[test]
    fn malformed_and_fragments() {
        let mut lb = lb_with(1, SchedulerKind::Rr, 64);
        let mut f = client_pkt(1, tcp::FLAG_SYN);
        f.truncate(ETH + 30);
        assert_eq!(
            lb.process(&mut f, ETH, NET, Time::default()),
            Verdict::Drop(LbDrop::Malformed)
        );
        let mut f = client_pkt(1, tcp::FLAG_SYN);
        f[ETH + 6] = 0x20; // MF
        assert_eq!(
            lb.process(&mut f, ETH, NET, Time::default()),
            Verdict::Drop(LbDrop::Fragment)
        );
    }

    /// Offset of the TCP header in a [`client_pkt`] frame.
    const TCP: usize = ETH + 20;

    #[test]
    fn only_well_formed_checksum_valid_syns_from_plausible_sources_are_tracked() {
        let mut lb = lb_with(2, SchedulerKind::Rr, 64);
        let now = Time::from_secs(1);
        let syn = |src: Ipv4Addr| {
            frame(
                (src, 4000),
                (VIP, 80),
                ipv4::PROTO_TCP,
                tcp::FLAG_SYN,
                CMAC,
                VMAC,
            )
        };
        let mut bad_ip = client_pkt(1, tcp::FLAG_SYN);
        bad_ip[ETH + 10] ^= 0x40;
        let mut bad_tcp = client_pkt(2, tcp::FLAG_SYN);
        bad_tcp[TCP + 16] ^= 0x01;
        let mut short_tcp = client_pkt(3, tcp::FLAG_SYN);
        short_tcp[TCP + 12] = 0x20; // data offset 2
        let mut long_tcp = client_pkt(4, tcp::FLAG_SYN);
        long_tcp[TCP + 12] = 0xf0; // 60 bytes of header in a 27-byte segment
        let local = Rx::default();
        let mut cases: Vec<(&str, Vec<u8>, Rx, LbDrop)> = vec![
            ("bad IP checksum", bad_ip, local, LbDrop::BadIpChecksum),
            ("bad TCP checksum", bad_tcp, local, LbDrop::BadL4Checksum),
            ("data offset 2", short_tcp, local, LbDrop::BadTcpHeader),
            ("data offset 15", long_tcp, local, LbDrop::BadTcpHeader),
        ];
        for (what, src) in [
            ("0.0.0.0", Ipv4Addr::UNSPECIFIED),
            ("0.1.2.3", Ipv4Addr::new(0, 1, 2, 3)),
            ("loopback", Ipv4Addr::LOCALHOST),
            ("multicast", Ipv4Addr::new(224, 0, 0, 5)),
            ("broadcast", Ipv4Addr::BROADCAST),
            ("class E", Ipv4Addr::new(240, 0, 0, 1)),
            ("the VIP itself", VIP),
        ] {
            cases.push((what, syn(src), local, LbDrop::MartianSource));
        }
        let underlay = Rx {
            underlay: true,
            csum_partial: false,
        };
        cases.push((
            "from the underlay",
            client_pkt(5, tcp::FLAG_SYN),
            underlay,
            LbDrop::ServiceFromUnderlay,
        ));
        for (what, mut f, rx, want) in cases {
            assert_eq!(
                lb.process_rx(&mut f, ETH, NET, now, rx),
                Verdict::Drop(want),
                "{what}"
            );
            assert!(lb.conns(now).is_empty(), "{what} made an entry");
        }
        assert_eq!(lb.counters().new_conns, 0);
        // A partial checksum (a TAP's NEEDS_CSUM) is not checked; the IP header still is.
        let mut partial = client_pkt(6, tcp::FLAG_SYN);
        partial[TCP + 16] ^= 0x01;
        let rx = Rx {
            underlay: false,
            csum_partial: true,
        };
        assert!(matches!(
            lb.process_rx(&mut partial, ETH, NET, now, rx),
            Verdict::ToBackend { .. }
        ));
        let mut partial = client_pkt(7, tcp::FLAG_SYN);
        partial[ETH + 10] ^= 0x40;
        assert_eq!(
            lb.process_rx(&mut partial, ETH, NET, now, rx),
            Verdict::Drop(LbDrop::BadIpChecksum)
        );
        // The good SYN; its established packets from then on are not checked again (a reply
        // that arrives over VXLAN from a remote backend is the normal case).
        let mut ok = client_pkt(8, tcp::FLAG_SYN);
        assert!(matches!(
            lb.process(&mut ok, ETH, NET, now),
            Verdict::ToBackend { .. }
        ));
        let b = Ipv4Addr::from(tuple_of(&ok).dst);
        let bmac = Mac([2, 0x42, 10, 0, 9, b.octets()[3]]);
        let mut reply = frame(
            (b, 8080),
            (CLIENT, 8),
            ipv4::PROTO_TCP,
            tcp::FLAG_SYN | tcp::FLAG_ACK,
            bmac,
            CMAC,
        );
        let rx = Rx {
            underlay: true,
            csum_partial: false,
        };
        assert_eq!(
            lb.process_rx(&mut reply, ETH, NET, now, rx),
            Verdict::ToClient { net: NET }
        );
        assert_eq!(lb.conns(now).len(), 2);
    }

    #[test]
    fn udp_without_checksum_is_taken_and_a_wrong_one_is_not() {
        let mut lb = lb_with(0, SchedulerKind::Rr, 64);
        let k = ServiceKey {
            proto: Protocol::Udp,
            ..key()
        };
        lb.add_service(ServiceConfig {
            key: k,
            scheduler: SchedulerKind::Rr,
            backend_net: NET,
            snat: None,
        })
        .unwrap();
        lb.add_backend(&k, backend(0, 1)).unwrap();
        let now = Time::from_secs(1);
        let udp = |sport| frame((CLIENT, sport), (VIP, 80), ipv4::PROTO_UDP, 0, CMAC, VMAC);
        let mut wrong = udp(1);
        wrong[TCP + 6] ^= 0x01;
        assert_eq!(
            lb.process(&mut wrong, ETH, NET, now),
            Verdict::Drop(LbDrop::BadL4Checksum)
        );
        let mut none = udp(2);
        none[TCP + 6..TCP + 8].copy_from_slice(&[0, 0]);
        assert!(matches!(
            lb.process(&mut none, ETH, NET, now),
            Verdict::ToBackend { .. }
        ));
    }

    #[test]
    fn hairpin_is_source_natted_to_the_vip_and_goes_back_out() {
        // One backend, which is also the client; on the service's own port, so that a client
        // port 80 would make the reply tuple the original one.
        let mut lb = lb_with(0, SchedulerKind::Rr, 64);
        let b = BackendConfig {
            port: 80,
            ..backend(0, 1)
        };
        lb.add_backend(&key(), b).unwrap();
        let now = Time::from_secs(1);
        for cport in [40000u16, 80] {
            let mut f = frame(
                (b.addr, cport),
                (VIP, 80),
                ipv4::PROTO_TCP,
                tcp::FLAG_SYN,
                b.mac,
                VMAC,
            );
            let orig = tuple_of(&f);
            assert_eq!(lb.process(&mut f, ETH, NET, now), Verdict::Hairpin);
            assert!(verify(&f[ETH..]));
            let t = tuple_of(&f);
            assert_eq!(
                (Ipv4Addr::from(t.src), Ipv4Addr::from(t.dst), t.dport),
                (VIP, b.addr, 80)
            );
            assert_ne!(
                t.reversed(),
                orig,
                "the reply tuple is never the original one"
            );
            assert_eq!((&f[0..6], &f[6..12]), (&b.mac.0[..], &VMAC.0[..]));
            // The backend answers the VIP; the client (itself) gets it from VIP:80.
            let mut r = frame(
                (b.addr, 80),
                (VIP, t.sport),
                ipv4::PROTO_TCP,
                tcp::FLAG_SYN | tcp::FLAG_ACK,
                b.mac,
                VMAC,
            );
            assert_eq!(lb.process(&mut r, ETH, NET, now), Verdict::Hairpin);
            assert!(verify(&r[ETH..]));
            let rt = tuple_of(&r);
            assert_eq!(
                (
                    Ipv4Addr::from(rt.src),
                    rt.sport,
                    Ipv4Addr::from(rt.dst),
                    rt.dport
                ),
                (VIP, 80, b.addr, cport)
            );
            assert_eq!((&r[0..6], &r[6..12]), (&b.mac.0[..], &VMAC.0[..]));
        }
        assert_eq!(lb.counters().hairpin_conns, 2);
        assert!(lb.conns(now).iter().all(|c| c.snat.is_some()));
        // Another client is not source-NATed.
        let mut f = client_pkt(1234, tcp::FLAG_SYN);
        assert_eq!(
            lb.process(&mut f, ETH, NET, now),
            Verdict::ToBackend { net: NET }
        );
        assert_eq!(Ipv4Addr::from(tuple_of(&f).src), CLIENT);
    }

    proptest::proptest! {
        #[test]
        fn nat_then_unnat_is_identity(sport in 1u16.., flags in proptest::prelude::any::<u8>(),
                                      payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), udp in proptest::prelude::any::<bool>()) {
            let mut lb = lb_with(0, SchedulerKind::Rr, 64);
            let proto = if udp { ipv4::PROTO_UDP } else { ipv4::PROTO_TCP };
            let k = ServiceKey { net: NET, proto: if udp { Protocol::Udp } else { Protocol::Tcp }, addr: VIP, port: 80 };
            if udp {
                lb.add_service(ServiceConfig { key: k, scheduler: SchedulerKind::Rr, backend_net: NET, snat: None }).unwrap();
            }
            lb.add_backend(&k, backend(0, 1)).unwrap();
            let flags = (flags | tcp::FLAG_SYN) & !tcp::FLAG_RST;
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
            reply.extend_from_slice(&build(tt.reversed(), tcp::FLAG_ACK, &payload));
            let back = lb.process(&mut reply, ETH, NET, Time::default());
            proptest::prop_assert!(matches!(back, Verdict::ToClient { .. }), "{:?}", back);
            proptest::prop_assert!(verify(&reply[ETH..]));
            proptest::prop_assert_eq!(tuple_of(&reply).reversed(), t);
        }
    }
}
