//! The `lb-nat` stage: the load balancer as a graph node of the vswitch pipeline.
//!
//! Runs after `l2-learn`/`arp-proxy` on frames from local ports, after `vxlan-decap` on frames
//! from the underlay, and on ingress ports (published ports). For each undecided IPv4 frame it
//! calls [`Balancer::process`]: client -> VIP frames leave DNATed to a backend with the
//! backend's MAC as destination (and, for routing-mesh services, SNATed to the node's LB address
//! with its MAC as source), replies leave un-NATed towards the client; both stay `Continue` so
//! `l2-fwd` / `vxlan-encap` deliver them, with `meta.net` switched to the other side's network
//! when a published port crosses from the ingress network. Anything else passes untouched.
//! After each batch a bounded slice of the connection table is swept for expired entries.

use std::any::Any;
use std::net::Ipv4Addr;

use vswitch::l2::ETHERTYPE_IPV4;
use vswitch::{Batch, DropReason, Env, NetId, Next, Packet, Stage};

use crate::balancer::{Balancer, LbDrop, Mac, Verdict};
use crate::conntrack::Key;
use crate::packet::{self, Flow};
use crate::state::TcpState;

/// Stage name in the graph.
pub const STAGE_NAME: &str = "lb-nat";
/// Connection-table slots swept for expiry after each batch.
pub const DEFAULT_EXPIRE_BUDGET: usize = 64;

/// The `lb-nat` stage: owns the worker's [`Balancer`].
pub struct LbStage {
    /// The balancer (the control plane reaches it through [`Stage::as_any_mut`]).
    pub lb: Balancer,
    /// Table slots swept per batch.
    pub expire_budget: usize,
}

impl LbStage {
    /// A stage around `lb`.
    pub fn new(lb: Balancer) -> LbStage {
        LbStage {
            lb,
            expire_budget: DEFAULT_EXPIRE_BUDGET,
        }
    }

    /// The MAC of `ip` in network `net` from the switch's endpoint table, to fill
    /// [`BackendConfig::mac`](crate::BackendConfig) when adding a backend.
    pub fn endpoint_mac(env: &Env, net: NetId, ip: Ipv4Addr) -> Option<Mac> {
        env.nets.get(usize::from(net.0))?.arp.get(&ip).map(|m| m.0)
    }
}

impl Stage for LbStage {
    fn name(&self) -> &'static str {
        STAGE_NAME
    }

    fn drop_names(&self) -> &'static [&'static str] {
        &LbDrop::NAMES
    }

    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        let now = env.now;
        for (_, p) in batch.active_mut() {
            if p.meta.ethertype != ETHERTYPE_IPV4 {
                continue;
            }
            let l3 = usize::from(p.meta.l3_offset);
            let net = p.meta.net;
            match self.lb.process(p.data_mut(), l3, net, now) {
                Verdict::Pass => {}
                Verdict::ToBackend { net } | Verdict::ToClient { net } => p.meta.net = net,
                Verdict::Drop(r) => p.meta.next = Next::Drop(DropReason(r as u8)),
            }
        }
        self.lb.expire(now, self.expire_budget);
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
        // Before translation the packet's tuple is a key; after it, its reverse is.
        let ct = self.lb.conn_table();
        let found = ct
            .lookup(&Key {
                net: pkt.meta.net.0,
                tuple: t,
            })
            .or_else(|| {
                ct.lookup(&Key {
                    net: pkt.meta.net.0,
                    tuple: t.reversed(),
                })
            });
        match found {
            Some((idx, dir)) => {
                let c = self.lb.conn_table().get(idx);
                let state = if c.proto == packet::PROTO_TCP {
                    TcpState::from_u8(c.state).name()
                } else {
                    "UDP"
                };
                format!(
                    "{hdr} conn #{idx} {dir:?} {state} client {}:{} vip {}:{} backend {}:{}",
                    Ipv4Addr::from(c.caddr),
                    c.cport,
                    Ipv4Addr::from(c.vaddr),
                    c.vport,
                    Ipv4Addr::from(c.daddr),
                    c.dport
                )
            }
            None => format!("{hdr} no connection"),
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.lb.counters();
        vec![
            ("lb_packets", c.packets),
            ("lb_pass", c.pass),
            ("lb_to_backend", c.to_backend),
            ("lb_to_client", c.to_client),
            ("new_conns", c.new_conns),
            ("icmp_translated", c.icmp_translated),
            ("conns_expired", c.expired),
            ("conns", self.lb.conn_table().len() as u64),
        ]
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::{BackendConfig, BalancerConfig, Protocol, ServiceConfig, ServiceKey};
    use crate::packet::tests::{build, verify};
    use crate::packet::{PROTO_TCP, TCP_ACK, TCP_SYN, Tuple};
    use crate::sched::SchedulerKind;
    use vswitch::stage::{StageStats, mask_of, run_stage};
    use vswitch::{FdbConfig, Network, Time};

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
        let key = ServiceKey::Addr {
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
                    mac: [2, 0x42, 10, 0, 9, 12 + i],
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
                proto: PROTO_TCP,
                src: client,
                dst: VIP.into(),
                sport: 40000 + i,
                dport: 80,
            };
            batch.push_frame(&frame(t, TCP_SYN)).unwrap();
        }
        // Not for a service, an ACK with no connection, and an ARP frame.
        let other = Tuple {
            proto: PROTO_TCP,
            src: client,
            dst: u32::from(Ipv4Addr::new(10, 0, 9, 12)),
            sport: 1,
            dport: 80,
        };
        batch.push_frame(&frame(other, TCP_SYN)).unwrap();
        let stray = Tuple {
            proto: PROTO_TCP,
            src: client,
            dst: VIP.into(),
            sport: 9,
            dport: 80,
        };
        batch.push_frame(&frame(stray, TCP_ACK)).unwrap();
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
}
