//! The L2 stages of every path: `l2-parse` (validate the Ethernet header, then port security:
//! `port_sec.rs`), `l2-learn` (source
//! MACs of local ports into the FDB) and `l2-fwd` (destination MAC -> port, VTEP or flood).
//!
//! ```text
//! local port ─► l2-parse ─► l2-learn ─► arp-proxy ─► [lb] ─► l2-fwd ─► output / flood / remote
//! underlay ─► vxlan-decap ─► l2-parse ─► l2-learn (skips) ─► [lb] ─► l2-fwd ─► local output
//! ```
//!
//! Semantics are the Linux bridge's: frames with a group or all-zero source MAC are invalid and
//! dropped (`br_handle_frame`); a frame whose destination is behind its own input port is not
//! sent back (no hairpin); group destinations and unknown unicast are flooded. The overlay adds
//! split horizon: a frame that came from a remote VTEP is never sent to another one.
//! `l2-learn` and `l2-fwd` hash the batch's keys first and prefetch their FDB slots before any
//! probe, so the memory latency of a large table is overlapped across the batch.

use crate::batch::{Batch, MAX_BATCH};
use crate::env::Env;
use crate::fdb::{FdbDest, FdbKey, Learned};
use crate::packet::{DropReason, Mac, Next, Packet};
use crate::stage::Stage;
use crate::wire::ethernet;

/// The destination MAC of a frame `l2-parse` accepted (at least an Ethernet header).
#[inline]
fn dst_mac(frame: &[u8]) -> Mac {
    ethernet::Packet::new_unchecked(frame).dst_addr()
}

/// The source MAC of a frame `l2-parse` accepted (at least an Ethernet header).
#[inline]
fn src_mac(frame: &[u8]) -> Mac {
    ethernet::Packet::new_unchecked(frame).src_addr()
}

/// `l2-parse`: checks the Ethernet header and the frame size against the network's MTU, and
/// records where L3 starts.
#[derive(Debug, Default)]
pub struct L2Parse;

crate::drop_table! {
    /// Why `l2-parse` drops a frame.
    pub enum L2ParseDrop {
        /// Shorter than an Ethernet header.
        Runt => "drop_runt",
        /// 802.1Q EtherType but no room for the tag.
        VlanTruncated => "drop_vlan_truncated",
        /// Larger than the network's MTU allows.
        Oversize => "drop_oversize",
        /// Group or all-zero source MAC.
        InvalidSrcMac => "drop_invalid_src_mac",
        // Port security (`port_sec.rs`): the frame is whole, but the port may not send it.
        // Its refusals are the variants from here to the end ([`L2ParseDrop::is_port_security`]).
        /// To an 802.1D reserved group address (01:80:c2:00:00:00–0f: STP, PAUSE, LLDP).
        ReservedMulticast => "drop_reserved_multicast",
        /// 802.1Q tagged, from a container or the underlay (the overlay is untagged).
        VlanTagged => "drop_vlan_tagged",
        /// From a container's port with a source MAC that is not the endpoint's.
        SrcMacSpoofed => "drop_src_mac_spoofed",
        /// The source MAC is one of the switch's own (a VIP's, a resolver's, a load-balancer or
        /// ingress address's): never learned from a port.
        OwnMac => "drop_own_mac_learn",
        /// From a container's port with an IPv4 source that is not the endpoint's.
        SrcIpSpoofed => "drop_src_ip_spoofed",
        /// ARP claiming an address of another owner (or, from a container, not its own).
        ArpSpoofed => "drop_arp_spoofed",
        /// ARP EtherType but not a whole Ethernet/IPv4 ARP packet.
        ArpMalformed => "drop_arp_malformed",
        /// Shorter than an IPv4 header (20 bytes, or its IHL).
        Ipv4Truncated => "drop_ipv4_truncated",
        /// IPv4 EtherType but version is not 4 or IHL < 5.
        Ipv4BadHeader => "drop_ipv4_bad_header",
        /// IPv4 total length shorter than the header or beyond the frame.
        Ipv4BadLength => "drop_ipv4_bad_length",
        /// IPv6, from a container or the underlay (the overlay is IPv4).
        Ipv6 => "drop_ipv6",
        /// Neither IPv4 nor ARP, from a container or the underlay.
        Ethertype => "drop_ethertype",
    }
}

impl L2ParseDrop {
    /// Whether drop code `code` is one of port security's refusals (the variants from
    /// `ReservedMulticast` on), which `port_sec::explain` can put in words.
    pub fn is_port_security(code: usize) -> bool {
        code >= L2ParseDrop::ReservedMulticast as usize
    }
}

impl L2Parse {
    /// Decide on one frame of a network whose largest untagged frame is `max_frame` bytes.
    #[inline]
    pub fn check(frame: &[u8], max_frame: usize) -> Result<(u16, u16), DropReason> {
        let eth = ethernet::Packet::new_checked(frame).map_err(|_| L2ParseDrop::Runt.reason())?;
        let (l3, ethertype) = eth.l3().map_err(|_| L2ParseDrop::VlanTruncated.reason())?;
        if frame.len() > max_frame + (l3 - ethernet::HEADER_LEN) {
            return Err(L2ParseDrop::Oversize.into());
        }
        if !eth.src_addr().is_unicast() {
            return Err(L2ParseDrop::InvalidSrcMac.into());
        }
        Ok((l3 as u16, ethertype))
    }
}

impl Stage for L2Parse {
    fn name(&self) -> &'static str {
        "l2-parse"
    }
    fn drop_names(&self) -> &'static [&'static str] {
        L2ParseDrop::NAMES
    }
    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        for (_, p) in batch.active_mut() {
            // A TCP super-frame is checked against 64 KB; its port checked that its segments
            // fit the MTU.
            let max = if p.meta.offload.is_gso() {
                crate::offload::GSO_MAX_FRAME
            } else {
                env.nets[p.meta.net.0 as usize].max_frame()
            };
            match Self::check(p.data(), max) {
                Ok((l3, et)) => {
                    p.meta.l3_offset = l3;
                    p.meta.ethertype = et;
                    // Port security, in the same pass (a stage of its own cost 14% of the L2
                    // pipeline's rate: docs/performance.md).
                    if let Err(r) = crate::port_sec::check(p, env) {
                        p.meta.next = Next::Drop(r.into());
                    }
                }
                Err(r) => p.meta.next = Next::Drop(r),
            }
        }
    }
    fn describe(&self, pkt: &Packet, env: &Env) -> String {
        let what = format!(
            "{}, {} bytes",
            crate::trace::Summary::of(pkt.data()),
            pkt.len()
        );
        match pkt.meta.next {
            Next::Drop(r) if L2ParseDrop::is_port_security(usize::from(r.0)) => {
                format!("{what}: {}", crate::port_sec::explain(pkt, env))
            }
            _ => what,
        }
    }
}

/// `l2-learn`: source MAC of frames from local ports -> the FDB.
#[derive(Debug)]
pub struct L2Learn {
    hashes: [u64; MAX_BATCH],
}

impl Default for L2Learn {
    fn default() -> Self {
        L2Learn {
            hashes: [0; MAX_BATCH],
        }
    }
}

crate::drop_table! {
    /// Why `l2-learn` drops a frame.
    pub enum L2LearnDrop {
        /// The source MAC is a static entry elsewhere (a remote endpoint's, or another
        /// port's): a spoofed frame, never allowed to move the entry.
        SrcMacStatic => "drop_src_mac_static",
    }
}

impl Stage for L2Learn {
    fn name(&self) -> &'static str {
        "l2-learn"
    }
    fn drop_names(&self) -> &'static [&'static str] {
        L2LearnDrop::NAMES
    }
    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        let fdb = &mut env.fdb;
        for (i, p) in batch.active_mut() {
            if p.meta.from_vtep.is_none() {
                let h = fdb.hash(FdbKey::new(p.meta.net, src_mac(p.data())));
                fdb.prefetch(h);
                self.hashes[i] = h;
            }
        }
        let now = env.now;
        for (i, p) in batch.active_mut() {
            if p.meta.from_vtep.is_some() {
                continue; // remote sources are static, or learned by vxlan-decap when enabled
            }
            let key = FdbKey::new(p.meta.net, src_mac(p.data()));
            if fdb.learn_hashed(key, self.hashes[i], p.meta.in_port, now) == Learned::StaticConflict
            {
                p.meta.next = Next::Drop(L2LearnDrop::SrcMacStatic.into());
            }
        }
    }
    fn describe(&self, pkt: &Packet, env: &Env) -> String {
        let mac = src_mac(pkt.data());
        match (pkt.meta.from_vtep, env.fdb.entry(pkt.meta.net, mac)) {
            (Some(_), _) => "from a remote VTEP: not learned".into(),
            (None, Some(v)) => format!(
                "fdb {mac} -> {}{}",
                env.describe_dest(v.dest()),
                if v.is_static() { " static" } else { " learned" }
            ),
            (None, None) => format!("fdb {mac}: not learned (table full)"),
        }
    }
}

/// `l2-fwd`: destination MAC -> local port, remote VTEP, or flood.
#[derive(Debug)]
pub struct L2Fwd {
    hashes: [u64; MAX_BATCH],
    /// Unknown unicast frames flooded.
    pub unknown_unicast: u64,
    /// Broadcast and multicast frames flooded.
    pub group: u64,
}

impl Default for L2Fwd {
    fn default() -> Self {
        L2Fwd {
            hashes: [0; MAX_BATCH],
            unknown_unicast: 0,
            group: 0,
        }
    }
}

crate::drop_table! {
    /// Why `l2-fwd` drops a frame.
    pub enum L2FwdDrop {
        /// The destination is behind the input port.
        Hairpin => "drop_hairpin",
        /// From a remote VTEP to another remote VTEP (split horizon).
        RemoteToRemote => "drop_remote_to_remote",
    }
}

impl Stage for L2Fwd {
    fn name(&self) -> &'static str {
        "l2-fwd"
    }
    fn drop_names(&self) -> &'static [&'static str] {
        L2FwdDrop::NAMES
    }
    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        let fdb = &env.fdb;
        for (i, p) in batch.active_mut() {
            let dst = dst_mac(p.data());
            if !dst.is_multicast() {
                let h = fdb.hash(FdbKey::new(p.meta.net, dst));
                fdb.prefetch(h);
                self.hashes[i] = h;
            }
        }
        let now = env.now;
        for (i, p) in batch.active_mut() {
            let dst = dst_mac(p.data());
            if dst.is_multicast() {
                self.group += 1;
                p.meta.next = Next::Flood;
                continue;
            }
            p.meta.next = match fdb.lookup_hashed(FdbKey::new(p.meta.net, dst), self.hashes[i], now)
            {
                Some(FdbDest::Local(port)) if port == p.meta.in_port => {
                    Next::Drop(L2FwdDrop::Hairpin.into())
                }
                Some(FdbDest::Local(port)) => Next::Output(port),
                Some(FdbDest::Remote(_)) if p.meta.from_vtep.is_some() => {
                    Next::Drop(L2FwdDrop::RemoteToRemote.into())
                }
                Some(FdbDest::Remote(v)) => Next::Remote(v),
                None => {
                    self.unknown_unicast += 1;
                    Next::Flood
                }
            };
        }
    }
    fn describe(&self, pkt: &Packet, env: &Env) -> String {
        let dst = dst_mac(pkt.data());
        if dst.is_multicast() {
            return format!("{dst} is a group address: flood");
        }
        match env.fdb.entry(pkt.meta.net, dst) {
            Some(v) => format!(
                "fdb {dst} -> {}{}",
                env.describe_dest(v.dest()),
                if v.is_static() { " static" } else { " learned" }
            ),
            None => format!("fdb {dst}: miss, flood"),
        }
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("unknown_unicast", self.unknown_unicast),
            ("group_flooded", self.group),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_VLAN};
    use proptest::prelude::*;

    fn frame(dst: [u8; 6], src: [u8; 6], et: u16, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(14)];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&et.to_be_bytes());
        f
    }

    const A: [u8; 6] = [0x02, 0x42, 10, 0, 9, 11];

    #[test]
    fn parse_checks_sizes_and_sources() {
        let max = 1450 + 14;
        assert_eq!(
            L2Parse::check(&frame(A, A, ETHERTYPE_IPV4, 60), max),
            Ok((14, ETHERTYPE_IPV4))
        );
        assert_eq!(
            L2Parse::check(&frame(A, A, ETHERTYPE_IPV4, max), max),
            Ok((14, ETHERTYPE_IPV4))
        );
        assert_eq!(
            L2Parse::check(&frame(A, A, ETHERTYPE_IPV4, max + 1), max),
            Err(L2ParseDrop::Oversize.into())
        );
        let mut tagged = frame(A, A, ETHERTYPE_VLAN, max + 4);
        tagged[16..18].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(L2Parse::check(&tagged, max), Ok((18, ETHERTYPE_ARP)));
        tagged.push(0);
        assert_eq!(
            L2Parse::check(&tagged, max),
            Err(L2ParseDrop::Oversize.into())
        );
        assert_eq!(
            L2Parse::check(&frame(A, A, ETHERTYPE_VLAN, 17), max),
            Err(L2ParseDrop::VlanTruncated.into())
        );
        assert_eq!(
            L2Parse::check(&frame(A, [0xff; 6], ETHERTYPE_IPV4, 60), max),
            Err(L2ParseDrop::InvalidSrcMac.into())
        );
        assert_eq!(
            L2Parse::check(&frame(A, [0; 6], ETHERTYPE_IPV4, 60), max),
            Err(L2ParseDrop::InvalidSrcMac.into())
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_refuses_every_truncated_header(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for n in 0..=bytes.len() {
                let r = L2Parse::check(&bytes[..n], 1464);
                if n < 14 {
                    prop_assert_eq!(r, Err(L2ParseDrop::Runt.into()));
                }
                if let Ok((l3, _)) = r {
                    prop_assert!(l3 as usize <= n);
                }
            }
        }
    }
}
