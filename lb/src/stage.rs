//! The `lb-nat` stage: the load balancer as a graph node of the vswitch pipeline.
//!
//! Runs after `l2-learn`/`arp-proxy` on frames from local ports, after `vxlan-decap` on frames
//! from the underlay, and on ingress ports (published ports). For each undecided IPv4 frame it
//! calls [`Balancer::process`]: client -> VIP frames leave DNATed to a backend with the
//! backend's MAC as destination (and, for routing-mesh services, SNATed to the node's LB address
//! with its MAC as source), replies leave un-NATed towards the client; both stay `Continue` so
//! `l2-fwd` / `vxlan-encap` deliver them, with `meta.net` switched to the other side's network
//! when a published port crosses from the ingress network. Anything else passes untouched.
//! A batch is processed in three passes, so that the connection table's cache misses overlap
//! rather than stall one packet after another (at a million connections each is a DRAM
//! access): hash every TCP/UDP key and prefetch its bucket, probe all the buckets and prefetch
//! each hit's entry, then translate each packet in order. After each batch a bounded slice of
//! the connection table is swept for expired entries (two slots per packet).

use std::net::Ipv4Addr;

use vswitch::offload;
use vswitch::wire::ethernet::ETHERTYPE_IPV4;
use vswitch::wire::ipv4;
use vswitch::{Batch, DropReason, Env, MAX_BATCH, Next, Packet, Stage};

use crate::balancer::Balancer;
use crate::conntrack::{Dir, Key};
use crate::data::Prepared;
use crate::packet::{self, Flow};
use crate::state::TcpState;
use crate::types::{LbDrop, Rx, Verdict};

/// Stage name in the graph.
pub const STAGE_NAME: &str = "lb-nat";
/// Connection-table slots swept for expiry after each batch, per packet of the batch (so the
/// sweep costs the same per packet at any burst size: 64 slots after a batch of 32, 2 after a
/// lone packet). The daemon's housekeeping sweeps idle nodes.
pub const DEFAULT_EXPIRE_BUDGET: usize = 2;

/// The `lb-nat` stage: owns the worker's [`Balancer`].
pub struct LbStage {
    /// The balancer (the control plane reaches it through [`vswitch::Switch::stage_mut`]).
    pub lb: Balancer,
    /// Table slots swept after each batch, per packet of the batch.
    pub expire_budget: usize,
    /// Per-batch scratch (allocated once): what pass 1 prepared, and for which packet.
    preps: Vec<Prepared>,
    owner: Vec<u8>,
}

impl LbStage {
    /// A stage around `lb`.
    pub fn new(lb: Balancer) -> LbStage {
        LbStage {
            lb,
            expire_budget: DEFAULT_EXPIRE_BUDGET,
            preps: Vec::with_capacity(MAX_BATCH),
            owner: Vec::with_capacity(MAX_BATCH),
        }
    }
}

impl Stage for LbStage {
    fn name(&self) -> &'static str {
        STAGE_NAME
    }

    fn drop_names(&self) -> &'static [&'static str] {
        LbDrop::NAMES
    }

    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        let now = env.now;
        // Pass 1: hash every TCP/UDP packet's connection key and start fetching its bucket.
        let (preps, owner) = (&mut self.preps, &mut self.owner);
        preps.clear();
        owner.clear();
        for (i, p) in batch.active_mut() {
            if p.meta.ethertype != ETHERTYPE_IPV4 {
                continue;
            }
            let l3 = usize::from(p.meta.l3_offset);
            if let Some(prep) = self.lb.prepare(p.data(), l3, p.meta.net) {
                preps.push(prep);
                owner.push(i as u8);
            }
        }
        let n = preps.len();
        // Pass 2: probe all those buckets while their lines arrive together, and start fetching
        // each hit's entry.
        self.lb.lookup_prepared(preps);
        // Pass 3: translate in order, each packet with what passes 1 and 2 found (looked up
        // again if an earlier packet of the batch added or removed a connection).
        let mut next = 0;
        for (i, p) in batch.active_mut() {
            if p.meta.ethertype != ETHERTYPE_IPV4 {
                continue;
            }
            let prep = (next < n && usize::from(self.owner[next]) == i).then(|| {
                next += 1;
                &self.preps[next - 1]
            });
            let l3 = usize::from(p.meta.l3_offset);
            let net = p.meta.net;
            // A partial checksum (from a TAP with offloads) holds only the pseudo-header sum;
            // shape it so that the NAT's incremental updates keep it right, and back.
            let partial = p.meta.offload.needs_csum.then_some(p.meta.offload);
            if let Some(o) = &partial {
                offload::nat_prepare(p.data_mut(), o);
            }
            let rx = Rx {
                underlay: p.meta.from_vtep.is_some(),
                csum_partial: partial.is_some(),
            };
            let verdict = self
                .lb
                .process_prepared(p.data_mut(), l3, net, now, rx, prep);
            if let Some(o) = &partial {
                offload::nat_finish(p.data_mut(), o);
            }
            match verdict {
                Verdict::Pass => {}
                Verdict::ToBackend { net } | Verdict::ToClient { net } => p.meta.net = net,
                // Client and backend are one endpoint: back out of its own port (l2-fwd would
                // refuse to send a frame back where it came from).
                Verdict::Hairpin => p.meta.next = Next::Output(p.meta.in_port),
                Verdict::Drop(r) => p.meta.next = Next::Drop(r.into()),
            }
        }
        self.lb.expire(now, self.expire_budget * batch.len());
    }

    fn describe(&self, pkt: &Packet, _env: &Env) -> String {
        if let Next::Drop(DropReason(r)) = pkt.meta.next {
            return LbDrop::NAMES
                .get(usize::from(r))
                .copied()
                .unwrap_or("drop")
                .to_string();
        }
        let Some(ip) = pkt.data().get(usize::from(pkt.meta.l3_offset)..) else {
            return String::new();
        };
        let Ok(Flow::Transport { tuple, .. }) = packet::parse(ip) else {
            return "pass".into();
        };
        let t = tuple;
        let hdr = format!(
            "{}:{} -> {}:{}",
            Ipv4Addr::from(t.src),
            t.sport,
            Ipv4Addr::from(t.dst),
            t.dport
        );
        // The stage has run: a translated packet's own tuple is no key, its reverse is. Toward a
        // backend, the reverse is the reply key; toward a client, the original key.
        let ct = self.lb.conn_table();
        let net = pkt.meta.net.0;
        let (found, translated) = match ct.lookup(&Key { net, tuple: t }) {
            Some(hit) => (Some(hit), false),
            None => (
                ct.lookup(&Key {
                    net,
                    tuple: t.reversed(),
                }),
                true,
            ),
        };
        match found {
            Some((idx, dir)) => {
                let c = ct.get(idx);
                let state = if c.proto == ipv4::PROTO_TCP {
                    TcpState::from_u8(c.state).name()
                } else {
                    "UDP"
                };
                let ep = |a: u32, p: u16| format!("{}:{p}", Ipv4Addr::from(a));
                let what = match (translated, dir) {
                    (true, Dir::Reply) => format!(
                        "DNAT {} -> backend {}{}",
                        ep(c.vaddr, c.vport),
                        ep(c.daddr, c.dport),
                        if c.laddr != c.caddr {
                            format!(", SNAT to {}", ep(c.laddr, c.lport))
                        } else {
                            String::new()
                        }
                    ),
                    (true, Dir::Orig) => format!(
                        "reply from backend {} un-NATed to {} for client {}",
                        ep(c.daddr, c.dport),
                        ep(c.vaddr, c.vport),
                        ep(c.caddr, c.cport)
                    ),
                    (false, _) => "untranslated".to_string(),
                };
                format!("{hdr}: {what} (conn #{idx}, {state})")
            }
            None => format!("{hdr} no connection"),
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.lb.counters();
        vec![
            ("lb_to_backend", c.to_backend),
            ("lb_to_client", c.to_client),
            ("new_conns", c.new_conns),
            ("icmp_translated", c.icmp_translated),
            ("conns_expired", c.expired),
            ("hairpin_conns", c.hairpin_conns),
            ("conntrack_restored", c.conntrack_restored),
            ("conntrack_entries_discarded", c.conntrack_entries_discarded),
            ("conntrack_files_discarded", c.conntrack_files_discarded),
            ("conns", self.lb.conn_table().len() as u64),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Tuple;
    use crate::packet::tests::{build, verify};
    use crate::sched::SchedulerKind;
    use crate::types::{BackendConfig, BalancerConfig, Protocol, ServiceConfig, ServiceKey};
    use vswitch::stage::{StageStats, mask_of, run_stage};
    use vswitch::wire::{ipv4, tcp};
    use vswitch::{FdbConfig, Mac, NetId, Network, Time};

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);

    fn frame(t: Tuple, flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0x42, 10, 0, 9, 100, 2, 0x42, 10, 0, 9, 11, 0x08, 0x00];
        f.extend_from_slice(&build(t, flags, b"GET /"));
        f
    }

    #[test]
    fn stage_translates_counts_and_conserves() {
        let mut env = Env::new(FdbConfig::default());
        let net = env.add_network(Network::new("appnet", 4097, 1450));
        env.now = Time::from_secs(5);
        let mut lb = Balancer::new(BalancerConfig {
            max_conns: 16,
            ..BalancerConfig::default()
        });
        let key = ServiceKey {
            net,
            proto: Protocol::Tcp,
            addr: VIP,
            port: 80,
        };
        lb.add_service(ServiceConfig {
            key,
            scheduler: SchedulerKind::Rr,
            backend_net: net,
            snat: None,
        })
        .unwrap();
        for i in 0..3u8 {
            lb.add_backend(
                &key,
                BackendConfig {
                    addr: Ipv4Addr::new(10, 0, 9, 12 + i),
                    port: 80,
                    weight: 1,
                    mac: Mac([2, 0x42, 10, 0, 9, 12 + i]),
                },
            )
            .unwrap();
        }
        let mut stage = LbStage::new(lb);
        let mut stats = StageStats::for_stage(&stage);
        let mut batch = Batch::new(32);
        let client = u32::from(Ipv4Addr::new(10, 0, 9, 11));
        for i in 0..6u16 {
            let t = Tuple {
                proto: ipv4::PROTO_TCP,
                src: client,
                dst: VIP.into(),
                sport: 40000 + i,
                dport: 80,
            };
            batch.push_frame(&frame(t, tcp::FLAG_SYN)).unwrap();
        }
        // Not for a service, an ACK with no connection, and an ARP frame.
        let other = Tuple {
            proto: ipv4::PROTO_TCP,
            src: client,
            dst: u32::from(Ipv4Addr::new(10, 0, 9, 12)),
            sport: 1,
            dport: 80,
        };
        batch.push_frame(&frame(other, tcp::FLAG_SYN)).unwrap();
        let stray = Tuple {
            proto: ipv4::PROTO_TCP,
            src: client,
            dst: VIP.into(),
            sport: 9,
            dport: 80,
        };
        batch.push_frame(&frame(stray, tcp::FLAG_ACK)).unwrap();
        batch.push_frame(&[0xff; 42]).unwrap();
        for p in batch.pkts_mut() {
            p.meta.net = net;
            p.meta.l3_offset = 14;
            p.meta.ethertype = if p.data()[12] == 0x08 {
                ETHERTYPE_IPV4
            } else {
                0x0806
            };
        }
        let all = mask_of(batch.len());
        let live = run_stage(&mut stage, &mut stats, &mut batch, &mut env, all);
        assert_eq!(stats.rx, 9);
        assert_eq!(stats.outcomes(), stats.rx);
        assert_eq!(stats.drop_count("drop_tcp_not_syn"), 1);
        assert_eq!(live.count_ones(), 8);
        // Round robin: six requests, two per backend, each with the backend's MAC.
        let mut per = [0; 3];
        for p in &batch.pkts()[..6] {
            let d = p.data();
            assert!(verify(&d[14..]));
            let last = d[14 + 19];
            assert_eq!(d[5], last, "dst MAC is the backend's");
            per[usize::from(last - 12)] += 1;
        }
        assert_eq!(per, [2, 2, 2]);
        assert!(stage.describe(&batch[0], &env).contains("SYN_RECV"));
        assert!(stage.counters().contains(&("new_conns", 6)));
    }

    /// A balancer with a TCP and a UDP service on the VIP, three backends each.
    fn two_services(net: NetId, max_conns: usize) -> Balancer {
        let mut lb = Balancer::new(BalancerConfig {
            max_conns,
            ..BalancerConfig::default()
        });
        for (proto, port) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
            let key = ServiceKey {
                net,
                proto,
                addr: VIP,
                port,
            };
            lb.add_service(ServiceConfig {
                key,
                scheduler: SchedulerKind::Rr,
                backend_net: net,
                snat: None,
            })
            .unwrap();
            for i in 0..3u8 {
                let b = BackendConfig {
                    addr: Ipv4Addr::new(10, 0, 9, 12 + i),
                    port,
                    weight: 1,
                    mac: Mac([2, 0x42, 10, 0, 9, 12 + i]),
                };
                lb.add_backend(&key, b).unwrap();
            }
        }
        lb
    }

    /// A frame of a small world: clients `c`, ports `p`, and what kind of packet.
    fn world_frame(kind: u8, c: u8, p: u16) -> Vec<u8> {
        let client = u32::from(Ipv4Addr::new(10, 0, 9, 20 + c));
        let vip = u32::from(VIP);
        let sport = 40000 + p;
        let tcp = |flags| {
            let t = Tuple {
                proto: ipv4::PROTO_TCP,
                src: client,
                dst: vip,
                sport,
                dport: 80,
            };
            frame(t, flags)
        };
        match kind {
            0 => tcp(tcp::FLAG_SYN),
            1 => tcp(tcp::FLAG_ACK),
            2 => tcp(tcp::FLAG_FIN | tcp::FLAG_ACK),
            3 => tcp(tcp::FLAG_RST),
            // A backend's reply (it matches when that backend was picked).
            4 => frame(
                Tuple {
                    proto: ipv4::PROTO_TCP,
                    src: u32::from(Ipv4Addr::new(10, 0, 9, 12 + (p % 3) as u8)),
                    dst: client,
                    sport: 80,
                    dport: sport,
                },
                tcp::FLAG_SYN | tcp::FLAG_ACK,
            ),
            _ => {
                let t = Tuple {
                    proto: ipv4::PROTO_UDP,
                    src: client,
                    dst: vip,
                    sport,
                    dport: 53,
                };
                frame(t, 0)
            }
        }
    }

    proptest::proptest! {
        /// The stage's three passes over a batch (hash and prefetch, probe, translate) give
        /// exactly what processing the frames one by one gives: same bytes, dispositions,
        /// counters and connections, also when a batch creates, reuses, expires or fills
        /// entries that later packets of the same batch look up.
        #[test]
        fn batched_passes_equal_one_by_one(
            batches in proptest::collection::vec(
                (proptest::collection::vec((0u8..6, 0u8..3, 0u16..3), 1..64), 0u64..200),
                1..8,
            ),
            max_conns in 1usize..12,
        ) {
            let mut env = Env::new(FdbConfig::default());
            let net = env.add_network(Network::new("appnet", 4097, 1450));
            let mut stage = LbStage::new(two_services(net, max_conns));
            let mut one = two_services(net, max_conns);
            let mut batch = Batch::new(MAX_BATCH);
            let mut secs = 1;
            for (pkts, step) in batches {
                secs += step;
                env.now = Time::from_secs(secs);
                batch.clear();
                let frames: Vec<Vec<u8>> =
                    pkts.iter().map(|&(k, c, p)| world_frame(k, c, p)).collect();
                for f in &frames {
                    let p = batch.push_frame(f).unwrap();
                    p.meta.net = net;
                    p.meta.l3_offset = 14;
                    p.meta.ethertype = ETHERTYPE_IPV4;
                }
                stage.process(&mut batch, &mut env);
                for (f, p) in frames.iter().zip(batch.pkts()) {
                    let mut f = f.clone();
                    let (mut want_net, mut want_next) = (net, Next::Continue);
                    match one.process(&mut f, 14, net, env.now) {
                        Verdict::Pass => {}
                        Verdict::ToBackend { net } | Verdict::ToClient { net } => want_net = net,
                        Verdict::Hairpin => want_next = Next::Output(p.meta.in_port),
                        Verdict::Drop(r) => want_next = Next::Drop(r.into()),
                    }
                    proptest::prop_assert_eq!(p.data(), &f[..]);
                    proptest::prop_assert_eq!(p.meta.net, want_net);
                    proptest::prop_assert_eq!(p.meta.next, want_next);
                }
                one.expire(env.now, stage.expire_budget * frames.len());
                proptest::prop_assert_eq!(stage.lb.counters(), one.counters());
                proptest::prop_assert_eq!(stage.lb.conns(env.now), one.conns(env.now));
            }
        }
    }
}
