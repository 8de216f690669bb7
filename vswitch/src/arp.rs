//! `arp-proxy`: answers ARP requests for known endpoint and service addresses, as Docker's VXLAN
//! device does with `proxy`, so a request for an endpoint on another node, or for a service VIP,
//! never leaves the node. Sits after `l2-learn` on the path of local ports.
//!
//! The table it answers from (`Network::arp`) is written only by the control plane, from the
//! cluster file: nothing a container sends changes it. A gratuitous ARP (sender IP = target IP)
//! and an ARP probe from the owner of the address (RFC 5227) are not answered but switched as
//! usual; a request for an unknown address is flooded. A frame with the ARP EtherType that is not
//! Ethernet/IPv4 ARP of the right size is dropped as malformed.
//!
//! ```text
//!  0      2      4  5  6      8             14        18            24        28
//! +------+------+--+--+------+-------------+---------+-------------+---------+
//! | htype| ptype|hl|pl|  op  | sender MAC  |sender IP| target MAC  |target IP|
//! +------+------+--+--+------+-------------+---------+-------------+---------+
//! ```

use std::net::Ipv4Addr;

use crate::batch::Batch;
use crate::env::Env;
use crate::l2::ETHERTYPE_ARP;
use crate::packet::{Mac, Next, Packet};
use crate::stage::Stage;

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
const HLEN_ETHERNET: u8 = 6;
const PLEN_IPV4: u8 = 4;
/// ARP request opcode.
pub const OP_REQUEST: u16 = 1;
/// ARP reply opcode.
pub const OP_REPLY: u16 = 2;

mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OP: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// An Ethernet/IPv4 ARP packet, read from the bytes after the Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    /// Opcode.
    pub op: u16,
    /// Sender hardware address.
    pub sha: Mac,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: Mac,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

/// The bytes are not an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArpError {
    /// Fewer than 28 bytes.
    #[error("truncated ARP packet")]
    Truncated,
    /// Not Ethernet hardware / IPv4 protocol addresses of sizes 6 and 4.
    #[error("ARP for another hardware or protocol type")]
    Unsupported,
}

impl ArpRepr {
    /// Parse the ARP packet at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<ArpRepr, ArpError> {
        if b.len() < ARP_LEN {
            return Err(ArpError::Truncated);
        }
        let be16 = |r: core::ops::Range<usize>| u16::from_be_bytes([b[r.start], b[r.start + 1]]);
        if be16(field::HTYPE) != HTYPE_ETHERNET
            || be16(field::PTYPE) != PTYPE_IPV4
            || b[field::HLEN] != HLEN_ETHERNET
            || b[field::PLEN] != PLEN_IPV4
        {
            return Err(ArpError::Unsupported);
        }
        let ip = |r: core::ops::Range<usize>| {
            Ipv4Addr::new(b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3])
        };
        Ok(ArpRepr {
            op: be16(field::OP),
            sha: Mac::from_slice(&b[field::SHA]),
            spa: ip(field::SPA),
            tha: Mac::from_slice(&b[field::THA]),
            tpa: ip(field::TPA),
        })
    }

    /// Write this packet into the first 28 bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        b[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        b[field::HLEN] = HLEN_ETHERNET;
        b[field::PLEN] = PLEN_IPV4;
        b[field::OP].copy_from_slice(&self.op.to_be_bytes());
        b[field::SHA].copy_from_slice(&self.sha.0);
        b[field::SPA].copy_from_slice(&self.spa.octets());
        b[field::THA].copy_from_slice(&self.tha.0);
        b[field::TPA].copy_from_slice(&self.tpa.octets());
    }
}

/// The `arp-proxy` stage.
#[derive(Debug, Default)]
pub struct ArpProxy {
    /// Requests answered.
    pub replies: u64,
    /// Gratuitous ARPs and probes switched as usual.
    pub gratuitous: u64,
}

crate::drop_table! {
    /// Why `arp-proxy` drops a frame.
    pub enum ArpDrop {
        /// ARP EtherType but not a whole Ethernet/IPv4 ARP packet.
        Malformed => "drop_arp_malformed",
    }
}

impl ArpProxy {
    /// Decide on one frame; on a hit the frame is turned into the reply in place.
    fn handle(&mut self, p: &mut Packet, env: &Env) {
        if p.meta.ethertype != ETHERTYPE_ARP || p.meta.from_vtep.is_some() {
            return;
        }
        let l3 = p.meta.l3_offset as usize;
        let req = match ArpRepr::parse(&p.data()[l3..]) {
            Ok(r) => r,
            Err(_) => {
                p.meta.next = Next::Drop(ArpDrop::Malformed.into());
                return;
            }
        };
        if req.op != OP_REQUEST {
            return;
        }
        if req.spa == req.tpa {
            self.gratuitous += 1;
            return;
        }
        let Some(&answer) = env.nets[p.meta.net.0 as usize].arp.get(&req.tpa) else {
            return;
        };
        if answer == req.sha {
            // The owner asking about its own address (a probe): let the network see it.
            self.gratuitous += 1;
            return;
        }
        let reply = ArpRepr {
            op: OP_REPLY,
            sha: answer,
            spa: req.tpa,
            tha: req.sha,
            tpa: req.spa,
        };
        let d = p.data_mut();
        let requester: [u8; 6] = d[6..12]
            .try_into()
            .expect("12-byte Ethernet addresses checked by l2-parse");
        d[0..6].copy_from_slice(&requester);
        d[6..12].copy_from_slice(&answer.0);
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
        match ArpRepr::parse(&pkt.data()[pkt.meta.l3_offset as usize..]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_on_fixed_bytes() {
        // who-has 10.0.9.21 tell 10.0.9.11, as Linux sends it
        let bytes: [u8; 28] = [
            0, 1, 8, 0, 6, 4, 0, 1, 0x02, 0x42, 10, 0, 9, 11, 10, 0, 9, 11, 0, 0, 0, 0, 0, 0, 10,
            0, 9, 21,
        ];
        let r = ArpRepr::parse(&bytes).unwrap();
        assert_eq!(r.op, OP_REQUEST);
        assert_eq!(r.spa, Ipv4Addr::new(10, 0, 9, 11));
        assert_eq!(r.tpa, Ipv4Addr::new(10, 0, 9, 21));
        let mut out = [0u8; 28];
        r.emit(&mut out);
        assert_eq!(out, bytes);
        let mut bad = bytes;
        bad[5] = 16;
        assert_eq!(ArpRepr::parse(&bad), Err(ArpError::Unsupported));
    }

    proptest! {
        #[test]
        fn every_truncation_is_an_error(bytes in proptest::collection::vec(any::<u8>(), 28..40)) {
            for n in 0..ARP_LEN {
                prop_assert_eq!(ArpRepr::parse(&bytes[..n]), Err(ArpError::Truncated));
            }
            let _ = ArpRepr::parse(&bytes);
        }
    }
}
