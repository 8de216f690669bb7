//! The `own-addr` stage: what the switch does with frames addressed to itself that no earlier
//! stage consumed.
//!
//! Where it sits: after `lb-nat`, before `l2-fwd`, on every path. The switch answers ARP for
//! addresses it owns (service VIPs, this node's load-balancer address in each network, the
//! routing-mesh ingress address), so containers and external clients send frames to those MACs.
//! `arp-proxy` answers ARP and `lb-nat` translates service traffic; anything left over would
//! otherwise reach `l2-fwd` as unknown unicast and be flooded to containers. Here it is dropped
//! and counted instead:
//!
//! - from an ingress port (the routing mesh), every frame still undecided and still in the
//!   ingress network: only ARP for the ingress address and published ports are served there
//!   (`drop_ingress_not_published`); replies un-NATed towards the external client come from
//!   other ports and pass;
//! - elsewhere, a frame to one of the switch's own MACs (`drop_to_switch_addr`), e.g. a ping to
//!   a VIP or a port the service does not have.

use crate::batch::Batch;
use crate::env::Env;
use crate::packet::{NetId, Next, Packet, PortId};
use crate::stage::Stage;
use crate::wire::ethernet;

/// Stage name in the graph.
pub const STAGE_NAME: &str = "own-addr";
crate::drop_table! {
    /// Why `own-addr` drops a frame.
    pub enum OwnAddrDrop {
        /// From an ingress port, still in the ingress network: not a published port.
        IngressNotPublished => "drop_ingress_not_published",
        /// To one of the switch's own MACs, and no earlier stage took it.
        ToSwitchAddr => "drop_to_switch_addr",
    }
}

/// The `own-addr` stage. The MACs the switch owns are [`Env::own_macs`] (port security
/// reads them too).
#[derive(Debug, Default, Clone)]
pub struct OwnAddr {
    /// Routing-mesh ingress ports and their ingress networks.
    pub ingress: Vec<(PortId, NetId)>,
}

impl Stage for OwnAddr {
    fn name(&self) -> &'static str {
        STAGE_NAME
    }

    fn drop_names(&self) -> &'static [&'static str] {
        OwnAddrDrop::NAMES
    }

    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        let any_own = !env.own_macs().is_empty();
        for (_, p) in batch.active_mut() {
            let net = p.meta.net;
            if self.ingress.contains(&(p.meta.in_port, net)) {
                p.meta.next = Next::Drop(OwnAddrDrop::IngressNotPublished.into());
            } else if any_own {
                // l2-parse checked the Ethernet header.
                let dst = ethernet::Packet::new_unchecked(p.data()).dst_addr();
                if env.is_own_mac(net, dst) {
                    p.meta.next = Next::Drop(OwnAddrDrop::ToSwitchAddr.into());
                }
            }
        }
    }

    fn describe(&self, pkt: &Packet, _env: &Env) -> String {
        match pkt.meta.next {
            Next::Drop(r) => OwnAddrDrop::NAMES
                .get(usize::from(r.0))
                .copied()
                .unwrap_or("drop")
                .into(),
            _ => "not for the switch".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames;
    use crate::packet::Mac;
    use std::net::Ipv4Addr;

    fn batch_of(frames: &[(PortId, NetId, Vec<u8>)]) -> Batch {
        let mut b = Batch::with_buf_size(64, 2048);
        for (port, net, f) in frames {
            let mut p = Packet::with_capacity(2048);
            p.set_frame(f).unwrap();
            p.meta.net = *net;
            p.meta.in_port = *port;
            b.push_copy(&p).unwrap();
        }
        b
    }

    #[test]
    fn drops_leftovers_to_own_macs_and_on_ingress() {
        let ip = |l| Ipv4Addr::new(10, 0, 9, l);
        let vip_mac = Mac::docker_default(ip(100));
        let c = Mac::docker_default(ip(11));
        let d = Mac::docker_default(ip(12));
        let mut st = OwnAddr {
            ingress: vec![(PortId(2), NetId(1))],
        };
        let (p0, p2) = (PortId(0), PortId(2));
        let mut b = batch_of(&[
            (
                p0,
                NetId(0),
                frames::icmp_echo(c, vip_mac, ip(11), ip(100), 1, 1),
            ),
            (p0, NetId(0), frames::icmp_echo(c, d, ip(11), ip(12), 1, 1)),
            // From the ingress port, untranslated: dropped.
            (p2, NetId(1), frames::icmp_echo(c, d, ip(11), ip(12), 1, 1)),
            // From the ingress port, translated into the overlay: passes.
            (p2, NetId(0), frames::icmp_echo(c, d, ip(11), ip(12), 1, 1)),
            // Un-NATed towards the external client, from another port: passes.
            (p0, NetId(1), frames::icmp_echo(c, d, ip(11), ip(12), 1, 1)),
        ]);
        let mut env = Env::new(crate::FdbConfig::default());
        assert!(env.replace_own_macs(vec![(NetId(0), vip_mac)]).is_some());
        st.process(&mut b, &mut env);
        assert_eq!(b[0].meta.next, Next::Drop(OwnAddrDrop::ToSwitchAddr.into()));
        assert_eq!(b[1].meta.next, Next::Continue);
        assert_eq!(
            b[2].meta.next,
            Next::Drop(OwnAddrDrop::IngressNotPublished.into())
        );
        assert_eq!(b[3].meta.next, Next::Continue);
        assert_eq!(b[4].meta.next, Next::Continue);
    }
}
