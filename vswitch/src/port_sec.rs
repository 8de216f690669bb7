//! Port security (SPEC.md, "Port security, and state that survives the process"), what OVN
//! calls port security and Docker's bridge does not have: the second half of `l2-parse`, run in
//! the same pass over the batch right after the Ethernet header checks, on every path, before
//! anything learns or answers. Its refusals are `l2-parse`'s drops (`L2ParseDrop`), explained
//! in `vxmesh trace`. (A stage of its own cost 14% of the L2 pipeline's rate at burst
//! 32; folded in, with the fast path of [`check`], 2.8% on a container's frames:
//! docs/performance.md.)
//!
//! ```text
//! local port ─► l2-parse [+ port security] ─► l2-learn ─► arp-proxy ─► [dns] ─► [lb] ─► own-addr ─► l2-fwd
//! underlay ─► vxlan-decap ─► l2-parse [+ port security] ─► l2-learn (skips) ─► [lb] ─► own-addr ─► l2-fwd
//! ```
//!
//! Every port, every frame:
//! - never to an 802.1D reserved group address 01:80:c2:00:00:00–0f (STP BPDUs, PAUSE, LLDP,
//!   802.1X): `drop_reserved_multicast`;
//! - an IPv4 packet has a whole, sane header: at least 20 bytes and its IHL (`drop_ipv4_truncated`),
//!   version 4 and IHL ≥ 5 (`drop_ipv4_bad_header`), a total length that covers the header and
//!   fits the frame (`drop_ipv4_bad_length`; a TAP's TCP super-frame is exempt from the last);
//! - an ARP packet is whole Ethernet/IPv4 ARP (`drop_arp_malformed`), and one whose sender
//!   address the switch knows ([`Network::arp`](crate::Network)) comes from that address's owner,
//!   or it is dropped (`drop_arp_spoofed`): for a local port the owner's MAC must be the sender
//!   hardware address and live nowhere else than behind that port; from the underlay it must be
//!   a static entry behind the sending VTEP (another node's endpoint or load-balancer address). VIPs, resolvers
//!   and this node's own addresses have no such owner: nobody may claim them.
//!
//! A container's port ([`PortGuard::Endpoint`]) sends only as its endpoint: source MAC the
//! endpoint's (`drop_src_mac_spoofed`, or `drop_own_mac_learn` when it is one of the switch's
//! own MACs), no 802.1Q tag (`drop_vlan_tagged`), only IPv4 and ARP (`drop_ipv6`,
//! `drop_ethertype`), IPv4 source and ARP sender the endpoint's address (`drop_src_ip_spoofed`,
//! `drop_arp_spoofed`; an ARP probe from 0.0.0.0 is allowed, RFC 5227). DHCP from 0.0.0.0 is
//! refused with the rest: endpoints are addressed by the cluster file, no DHCP server serves the
//! overlay. An open port (a routing-mesh ingress) has many senders: only the rules of every port
//! hold there, and the switch's own MACs as source (`drop_own_mac_learn`), so none is learned.
//! From the underlay the overlay carries untagged IPv4 and ARP only (`drop_vlan_tagged`,
//! `drop_ipv6`, `drop_ethertype`).
//!
//! The hot path is a few compares on the frame's first cache line and the port's guard (one
//! indexed load): no allocation, no lock, no syscall, no panic; the ARP checks (a table probe)
//! run for ARP only and the own-MAC search only on an open port or a refused source.

use std::net::Ipv4Addr;

use crate::env::{Env, PortGuard};
use crate::fdb::FdbDest;
use crate::l2::L2ParseDrop as PortSecDrop;
use crate::packet::{Mac, Packet};
use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::{arp, ipv4};

/// The IPv4 header checks of every port; the source address if the header is sane.
#[inline]
fn check_ipv4(ip: &[u8], gso: bool) -> Result<Ipv4Addr, PortSecDrop> {
    if ip.len() < ipv4::HEADER_LEN {
        return Err(PortSecDrop::Ipv4Truncated);
    }
    let h = ipv4::Packet::new_unchecked(ip);
    let ihl = h.header_len();
    if h.version() != ipv4::VERSION || ihl < ipv4::HEADER_LEN {
        return Err(PortSecDrop::Ipv4BadHeader);
    }
    if ip.len() < ihl {
        return Err(PortSecDrop::Ipv4Truncated);
    }
    let total = usize::from(h.total_len());
    // A TAP's TCP super-frame carries what the kernel put there; its port checked the
    // segmentation.
    if total < ihl || (total > ip.len() && !gso) {
        return Err(PortSecDrop::Ipv4BadLength);
    }
    Ok(h.src_addr())
}

/// Decide on one frame (`l2-parse` accepted its Ethernet header: a whole header, `l3_offset`
/// and `ethertype` set).
///
/// The common case first, in a handful of compares: an endpoint's untagged unicast IPv4 with a
/// 20-byte header, from its MAC and address. Everything else takes `check_all`.
#[inline]
pub fn check(p: &Packet, env: &Env) -> Result<(), PortSecDrop> {
    let frame = p.data();
    let eth = ethernet::Packet::new_unchecked(frame);
    if p.meta.from_vtep.is_none()
        && p.meta.ethertype == ETHERTYPE_IPV4
        && p.meta.l3_offset == ethernet::HEADER_LEN as u16
        && !eth.dst_addr().is_multicast()
        && let Some(&PortGuard::Endpoint { mac, ip }) =
            env.guards.get(usize::from(p.meta.in_port.0))
        && let Some(h) = frame.get(ethernet::HEADER_LEN..)
        && h.len() >= ipv4::HEADER_LEN
        && let h = ipv4::Packet::new_unchecked(h)
        && h.version() == ipv4::VERSION
        && h.header_len() == ipv4::HEADER_LEN
        && eth.src_addr() == mac
        && h.src_addr() == ip
    {
        let total = usize::from(h.total_len());
        if total >= ipv4::HEADER_LEN
            && (total <= frame.len() - ethernet::HEADER_LEN || p.meta.offload.is_gso())
        {
            return Ok(());
        }
    }
    check_all(p, env)
}

/// Every rule, for what [`check`]'s common case does not cover.
#[inline(never)]
fn check_all(p: &Packet, env: &Env) -> Result<(), PortSecDrop> {
    let frame = p.data();
    let eth = ethernet::Packet::new_unchecked(frame);
    if eth.dst_addr().is_reserved_group() {
        return Err(PortSecDrop::ReservedMulticast);
    }
    let l3 = usize::from(p.meta.l3_offset);
    let tagged = l3 != ethernet::HEADER_LEN;
    let src = eth.src_addr();
    let guard = if p.meta.from_vtep.is_some() {
        None
    } else {
        Some(env.guard(p.meta.in_port))
    };
    match guard {
        Some(PortGuard::Endpoint { mac, .. }) if src != mac => {
            return Err(if env.is_own_mac(p.meta.net, src) {
                PortSecDrop::OwnMac
            } else {
                PortSecDrop::SrcMacSpoofed
            });
        }
        Some(PortGuard::Open) if env.is_own_mac(p.meta.net, src) => {
            return Err(PortSecDrop::OwnMac);
        }
        Some(PortGuard::Open) => {}
        // An endpoint or the underlay: untagged only.
        _ if tagged => return Err(PortSecDrop::VlanTagged),
        _ => {}
    }
    match p.meta.ethertype {
        ETHERTYPE_IPV4 => {
            let sip = check_ipv4(&frame[l3..], p.meta.offload.is_gso())?;
            match guard {
                Some(PortGuard::Endpoint { ip, .. }) if sip != ip => Err(PortSecDrop::SrcIpSpoofed),
                _ => Ok(()),
            }
        }
        ETHERTYPE_ARP => check_arp(p, &frame[l3..], src, guard, env),
        _ if matches!(guard, Some(PortGuard::Open)) => Ok(()),
        ETHERTYPE_IPV6 => Err(PortSecDrop::Ipv6),
        _ => Err(PortSecDrop::Ethertype),
    }
}

/// The ARP checks: whole, and no claim on another owner's address.
#[cold]
fn check_arp(
    p: &Packet,
    a: &[u8],
    src: Mac,
    guard: Option<PortGuard>,
    env: &Env,
) -> Result<(), PortSecDrop> {
    let a = arp::Repr::parse(a).map_err(|_| PortSecDrop::ArpMalformed)?;
    if let Some(PortGuard::Endpoint { mac, ip }) = guard {
        let probe = a.spa.is_unspecified() && a.op == arp::OP_REQUEST;
        return if a.sha == mac && (a.spa == ip || probe) {
            Ok(())
        } else {
            Err(PortSecDrop::ArpSpoofed)
        };
    }
    let net = p.meta.net;
    let Some(&owner) = env.nets[usize::from(net.0)].arp.get(&a.spa) else {
        return Ok(());
    };
    let entry = env.fdb.entry(net, owner);
    let here = match p.meta.from_vtep {
        Some(v) => entry.is_some_and(|e| e.is_static() && e.dest() == FdbDest::Remote(v)),
        // An open port: the owner is not the switch (its source MAC was checked) and lives
        // nowhere else (not yet learned, or learned here).
        None => entry.is_none_or(|e| e.dest() == FdbDest::Local(p.meta.in_port)),
    };
    if a.sha == owner && src == owner && here {
        Ok(())
    } else {
        Err(PortSecDrop::ArpSpoofed)
    }
}

/// Why [`check`] refuses `p`, in words (for traces of `l2-parse`).
pub fn explain(p: &Packet, env: &Env) -> String {
    let Err(r) = check(p, env) else {
        return "port security: allowed".into();
    };
    let frame = p.data();
    let eth = ethernet::Packet::new_unchecked(frame);
    let src = eth.src_addr();
    let l3 = &frame[usize::from(p.meta.l3_offset)..];
    let who = match (p.meta.from_vtep, env.guard(p.meta.in_port)) {
        (Some(_), _) => "from the underlay".to_string(),
        (None, PortGuard::Endpoint { mac, ip }) => format!("endpoint {mac} {ip}"),
        (None, PortGuard::Open) => "open port".to_string(),
    };
    let what = match r {
        PortSecDrop::ReservedMulticast => {
            format!("to {}: an 802.1D reserved group address", eth.dst_addr())
        }
        PortSecDrop::SrcMacSpoofed => format!("source MAC {src} is not the endpoint's"),
        PortSecDrop::OwnMac => format!("source MAC {src} is the switch's own"),
        PortSecDrop::SrcIpSpoofed if l3.len() >= ipv4::HEADER_LEN => format!(
            "IPv4 source {} is not the endpoint's",
            ipv4::Packet::new_unchecked(l3).src_addr()
        ),
        PortSecDrop::ArpSpoofed => match arp::Repr::parse(l3) {
            Ok(a) => match env.nets[usize::from(p.meta.net.0)].arp.get(&a.spa) {
                Some(owner) => format!("{} is-at {}: the address is {owner}'s", a.spa, a.sha),
                None => format!("{} is-at {}: not the endpoint's address", a.spa, a.sha),
            },
            Err(e) => e.to_string(),
        },
        other => other.name().trim_start_matches("drop_").replace('_', " "),
    };
    format!("{who}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Network;
    use crate::fdb::FdbConfig;
    use crate::frames;
    use crate::packet::{NetId, PortId, VtepId};
    use crate::wire::ethernet::ETHERTYPE_VLAN;

    fn ip(l: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 9, l)
    }
    fn mac(l: u8) -> Mac {
        Mac::docker_default(ip(l))
    }

    const C11: PortId = PortId(0);
    const EXT: PortId = PortId(1);
    const UL: PortId = PortId(2);
    const N2: VtepId = VtepId(0);

    /// c11 (port 0) and c12 (port 3) local, c21 behind n2, VIP .100 and resolver .2 the switch's;
    /// port 1 open.
    fn env() -> Env {
        let mut env = Env::new(FdbConfig::default());
        let net = env.add_network(Network::new("appnet", 4097, 1450));
        let n2 = env.add_vtep(Ipv4Addr::new(198, 18, 0, 2), "n2");
        for l in [11, 12, 21, 100, 2] {
            env.nets[0].arp.insert(ip(l), mac(l));
        }
        env.fdb
            .add_static(net, mac(11), FdbDest::Local(C11))
            .unwrap();
        env.fdb
            .add_static(net, mac(12), FdbDest::Local(PortId(3)))
            .unwrap();
        env.fdb
            .add_static(net, mac(21), FdbDest::Remote(n2))
            .unwrap();
        env.replace_own_macs(vec![(net, mac(100)), (net, mac(2))]);
        env.guards = vec![
            PortGuard::Endpoint {
                mac: mac(11),
                ip: ip(11),
            },
            PortGuard::Open,
        ];
        env
    }

    /// What port security says of `frame` from `port` (`l2-parse` run first, as on the path).
    fn check(env: &Env, port: PortId, frame: &[u8]) -> Result<(), PortSecDrop> {
        let mut p = Packet::with_capacity(2048);
        p.set_frame(frame).unwrap();
        let (l3, et) = crate::l2::L2Parse::check(frame, 1464).expect("l2-parse accepts it");
        p.meta.l3_offset = l3;
        p.meta.ethertype = et;
        p.meta.in_port = port;
        p.meta.net = NetId(0);
        if port == UL {
            p.meta.from_vtep = Some(N2);
        }
        super::check(&p, env)
    }

    fn arp_frame(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr, op: u16) -> Vec<u8> {
        frames::arp(
            Mac::BROADCAST,
            arp::Repr {
                op,
                sha,
                spa,
                tha: Mac::ZERO,
                tpa,
            },
        )
    }

    #[test]
    fn an_endpoint_sends_only_as_itself() {
        let e = env();
        let udp = |sm, sip| frames::udp(sm, mac(12), sip, ip(12), 1, 2, b"x");
        assert_eq!(check(&e, C11, &udp(mac(11), ip(11))), Ok(()));
        assert_eq!(
            check(&e, C11, &udp(mac(12), ip(11))),
            Err(PortSecDrop::SrcMacSpoofed)
        );
        assert_eq!(
            check(&e, C11, &udp(mac(100), ip(11))),
            Err(PortSecDrop::OwnMac)
        );
        assert_eq!(
            check(&e, C11, &udp(mac(11), ip(22))),
            Err(PortSecDrop::SrcIpSpoofed)
        );
        assert_eq!(
            check(&e, C11, &udp(mac(11), Ipv4Addr::UNSPECIFIED)),
            Err(PortSecDrop::SrcIpSpoofed),
            "DHCP from 0.0.0.0 is refused too"
        );
        // ARP: its own address, a probe, a claim on c12's, the VIP's, another sender MAC.
        let req = arp::OP_REQUEST;
        assert_eq!(
            check(&e, C11, &arp_frame(mac(11), ip(11), ip(12), req)),
            Ok(())
        );
        assert_eq!(
            check(
                &e,
                C11,
                &arp_frame(mac(11), Ipv4Addr::UNSPECIFIED, ip(11), req)
            ),
            Ok(())
        );
        for (sha, spa) in [(mac(11), ip(12)), (mac(11), ip(100)), (mac(12), ip(11))] {
            let mut f = arp_frame(sha, spa, spa, arp::OP_REPLY);
            f[6..12].copy_from_slice(&mac(11).0);
            assert_eq!(
                check(&e, C11, &f),
                Err(PortSecDrop::ArpSpoofed),
                "{sha} {spa}"
            );
        }
        let mut short = arp_frame(mac(11), ip(11), ip(12), req);
        short.truncate(14 + 20);
        assert_eq!(check(&e, C11, &short), Err(PortSecDrop::ArpMalformed));
        // Other EtherTypes, tags.
        let mut v6 = udp(mac(11), ip(11));
        v6[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(check(&e, C11, &v6), Err(PortSecDrop::Ipv6));
        let mut lldp = udp(mac(11), ip(11));
        lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        assert_eq!(check(&e, C11, &lldp), Err(PortSecDrop::Ethertype));
        let plain = udp(mac(11), ip(11));
        let tagged = [
            &plain[..12],
            &ETHERTYPE_VLAN.to_be_bytes(),
            &[0, 5],
            &plain[12..],
        ]
        .concat();
        assert_eq!(check(&e, C11, &tagged), Err(PortSecDrop::VlanTagged));
    }

    #[test]
    fn reserved_groups_are_never_forwarded_from_anywhere() {
        let e = env();
        for last in [0x00, 0x01, 0x0e, 0x0f] {
            let dst = Mac([0x01, 0x80, 0xc2, 0, 0, last]);
            let f = frames::udp(mac(11), dst, ip(11), ip(12), 1, 2, b"x");
            for port in [C11, EXT, UL] {
                assert_eq!(
                    check(&e, port, &f),
                    Err(PortSecDrop::ReservedMulticast),
                    "{dst} from {port:?}"
                );
            }
        }
        let not = Mac([0x01, 0x80, 0xc2, 0, 0, 0x10]);
        let f = frames::udp(mac(11), not, ip(11), ip(12), 1, 2, b"x");
        assert_eq!(check(&e, C11, &f), Ok(()));
    }

    #[test]
    fn ipv4_headers_are_whole_and_sane() {
        let e = env();
        let good = frames::udp(mac(11), mac(12), ip(11), ip(12), 1, 2, b"xyz");
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            v
        };
        let cases: [(Vec<u8>, PortSecDrop); 5] = [
            (good[..14 + 19].to_vec(), PortSecDrop::Ipv4Truncated),
            (with(&|v| v[14] = 0x44), PortSecDrop::Ipv4BadHeader),
            (with(&|v| v[14] = 0x65), PortSecDrop::Ipv4BadHeader),
            (
                with(&|v| v[16..18].copy_from_slice(&2000u16.to_be_bytes())),
                PortSecDrop::Ipv4BadLength,
            ),
            (
                with(&|v| v[16..18].copy_from_slice(&10u16.to_be_bytes())),
                PortSecDrop::Ipv4BadLength,
            ),
        ];
        for port in [C11, EXT, UL] {
            for (f, want) in &cases {
                let f = if port == UL {
                    let mut f = f.clone();
                    f[6..12].copy_from_slice(&mac(21).0);
                    f
                } else {
                    f.clone()
                };
                assert_eq!(check(&e, port, &f), Err(*want), "{port:?}");
            }
        }
        // IHL 15 on a short packet: truncated.
        let f = with(&|v| v[14] = 0x4f);
        assert_eq!(check(&e, C11, &f), Err(PortSecDrop::Ipv4Truncated));
    }

    #[test]
    fn arp_claims_are_checked_against_the_owner_from_open_ports_and_the_underlay() {
        let e = env();
        let rep = arp::OP_REPLY;
        // From n2: c21 for itself passes; c21's MAC claiming c11, the VIP, the resolver: not.
        let from_n2 = |sha: Mac, spa| {
            let mut f = arp_frame(sha, spa, spa, rep);
            f[6..12].copy_from_slice(&sha.0);
            check(&e, UL, &f)
        };
        assert_eq!(from_n2(mac(21), ip(21)), Ok(()));
        assert_eq!(from_n2(mac(21), ip(50)), Ok(()), "an unknown address");
        for spa in [ip(11), ip(100), ip(2), ip(12)] {
            assert_eq!(from_n2(mac(21), spa), Err(PortSecDrop::ArpSpoofed), "{spa}");
        }
        assert_eq!(
            from_n2(mac(11), ip(11)),
            Err(PortSecDrop::ArpSpoofed),
            "c11 lives here, not behind n2"
        );
        assert_eq!(from_n2(mac(100), ip(100)), Err(PortSecDrop::ArpSpoofed));
        // From the open port: own MACs refused as source; known addresses not claimable.
        let f = arp_frame(mac(100), ip(100), ip(100), rep);
        assert_eq!(check(&e, EXT, &f), Err(PortSecDrop::OwnMac));
        let mut f = arp_frame(mac(77), ip(12), ip(12), rep);
        f[6..12].copy_from_slice(&mac(77).0);
        assert_eq!(check(&e, EXT, &f), Err(PortSecDrop::ArpSpoofed));
        let mut f = arp_frame(mac(77), ip(77), ip(1), arp::OP_REQUEST);
        f[6..12].copy_from_slice(&mac(77).0);
        assert_eq!(check(&e, EXT, &f), Ok(()));
        // An open port may send anything else (the ingress: own-addr decides).
        let mut v6 = frames::udp(mac(77), mac(12), ip(77), ip(12), 1, 2, b"x");
        v6[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(check(&e, EXT, &v6), Ok(()));
        // The underlay: IPv6 and other EtherTypes are not carried.
        let mut f = v6.clone();
        f[6..12].copy_from_slice(&mac(21).0);
        assert_eq!(check(&e, UL, &f), Err(PortSecDrop::Ipv6));
    }

    #[test]
    fn refusals_are_explained_for_traces() {
        let e = env();
        let mut p = Packet::with_capacity(2048);
        let f = frames::udp(mac(11), mac(12), ip(22), ip(12), 1, 2, b"x");
        p.set_frame(&f).unwrap();
        p.meta.l3_offset = 14;
        p.meta.ethertype = ETHERTYPE_IPV4;
        let d = explain(&p, &e);
        assert!(d.contains("10.0.9.22 is not the endpoint's"), "{d}");
        assert_eq!(
            PortSecDrop::SrcIpSpoofed.name(),
            "drop_src_ip_spoofed",
            "SPEC.md's name"
        );
    }
}
