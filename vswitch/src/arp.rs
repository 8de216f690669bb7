//! `arp-proxy`: answers ARP requests for known endpoint and service addresses, as Docker's VXLAN
//! device does with `proxy`, so a request for an endpoint on another node, or for a service VIP,
//! never leaves the node. Sits after `l2-learn` on the path of local ports.
//!
//! The table it answers from (`Network::arp`) is written only by the control plane, from the
//! cluster file: nothing a container sends changes it. The switch is authoritative (SPEC.md,
//! "Port security"): a request for a known address is answered and never flooded. A gratuitous
//! ARP (sender IP = target IP) or a probe (RFC 5227) from the owner of a known address is not
//! answered (an answer would look like a conflict to a prober) and goes nowhere either: every
//! table that could use it is the switch's own (`drop_arp_announce`). port security (in `l2-parse`),
//! before this stage, has already refused ARP that claims another owner's address. A request for an unknown
//! address is flooded. A frame with the ARP EtherType that is not Ethernet/IPv4 ARP of the right
//! size is dropped as malformed. The packet format is [`crate::wire::arp`].

use crate::batch::Batch;
use crate::env::Env;
use crate::packet::{Next, Packet};
use crate::stage::Stage;
use crate::wire::arp::{self, OP_REPLY, OP_REQUEST};
use crate::wire::ethernet::{self, ETHERTYPE_ARP};

/// The `arp-proxy` stage.
#[derive(Debug, Default)]
pub struct ArpProxy {
    /// Requests answered.
    pub replies: u64,
    /// Gratuitous ARPs and probes: for a known address absorbed, else switched as usual.
    pub gratuitous: u64,
}

crate::drop_table! {
    /// Why `arp-proxy` drops a frame.
    pub enum ArpDrop {
        /// ARP EtherType but not a whole Ethernet/IPv4 ARP packet.
        Malformed => "drop_arp_malformed",
        /// A probe or gratuitous ARP from the owner of a known address: absorbed (the switch
        /// answers for that address; nobody needs the announcement).
        Announce => "drop_arp_announce",
    }
}

impl ArpProxy {
    /// Decide on one frame; on a hit the frame is turned into the reply in place.
    fn handle(&mut self, p: &mut Packet, env: &Env) {
        if p.meta.ethertype != ETHERTYPE_ARP || p.meta.from_vtep.is_some() {
            return;
        }
        let l3 = p.meta.l3_offset as usize;
        let req = match arp::Repr::parse(&p.data()[l3..]) {
            Ok(r) => r,
            Err(_) => {
                p.meta.next = Next::Drop(ArpDrop::Malformed.into());
                return;
            }
        };
        if req.op != OP_REQUEST {
            return;
        }
        let known = env.nets[p.meta.net.0 as usize].arp.get(&req.tpa).copied();
        if req.spa == req.tpa || known == Some(req.sha) {
            // A gratuitous ARP or the owner probing its own address: never answered; for a
            // known address never flooded either.
            self.gratuitous += 1;
            if known.is_some() {
                p.meta.next = Next::Drop(ArpDrop::Announce.into());
            }
            return;
        }
        let Some(answer) = known else {
            return;
        };
        let reply = arp::Repr {
            op: OP_REPLY,
            sha: answer,
            spa: req.tpa,
            tha: req.sha,
            tpa: req.spa,
        };
        let d = p.data_mut();
        // l2-parse checked the Ethernet header; the parse above the ARP packet after it.
        let mut eth = ethernet::Packet::new_unchecked(&mut d[..]);
        let requester = eth.src_addr();
        eth.set_dst_addr(requester);
        eth.set_src_addr(answer);
        reply.emit(&mut d[l3..]);
        p.meta.next = Next::Output(p.meta.in_port);
        self.replies += 1;
    }
}

impl Stage for ArpProxy {
    fn name(&self) -> &'static str {
        "arp-proxy"
    }
    fn drop_names(&self) -> &'static [&'static str] {
        ArpDrop::NAMES
    }
    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        for (_, p) in batch.active_mut() {
            self.handle(p, env);
        }
    }
    fn describe(&self, pkt: &Packet, env: &Env) -> String {
        if pkt.meta.ethertype != ETHERTYPE_ARP {
            return "not ARP".into();
        }
        match arp::Repr::parse(&pkt.data()[pkt.meta.l3_offset as usize..]) {
            Err(e) => e.to_string(),
            Ok(a) if a.op == OP_REPLY && pkt.meta.next != Next::Continue => {
                format!("answered: {} is-at {}", a.spa, a.sha)
            }
            Ok(a) => match env.nets[pkt.meta.net.0 as usize].arp.get(&a.tpa) {
                Some(m) => format!(
                    "who-has {} tell {}: known ({m}) but not answered",
                    a.tpa, a.spa
                ),
                None => format!("who-has {} tell {}: unknown, switched", a.tpa, a.spa),
            },
        }
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("arp_replies", self.replies),
            ("arp_gratuitous", self.gratuitous),
        ]
    }
}
