//! The VXLAN stages: `vxlan-decap` (at the head of the underlay port's receive path) and
//! `vxlan-encap` (on the underlay port's transmit path, run on every frame sent to a remote
//! VTEP, remote flood copies included).
//!
//! ```text
//! underlay (UdpPort) ─► vxlan-decap ─► l2-parse ─► l2-learn (skips) ─► [lb] ─► l2-fwd ─► local port
//! local port ─► l2-parse ─► ... ─► l2-fwd ─► Remote(v) / Flood ─► output
//!     ─► underlay tx batch (meta.to_vtep = v) ─► vxlan-encap ─► underlay (UdpPort) ─► meta.peer
//! ```
//!
//! The remote VTEP's underlay address travels in [`Meta::peer`](vswitch::Meta): the UDP
//! underlay port sets it to a datagram's source on receive and sends each frame to it on
//! transmit; the frame itself is the UDP payload, VXLAN header first.
//!
//! `vxlan-decap` is strict, each refusal a named drop, checked in this order (the sender first,
//! so an unknown sender learns nothing about which VNIs exist):
//! 1. the frame has a sender (`drop_no_peer`: a frame not from the UDP underlay port);
//! 2. the VXLAN header parses strictly ([`HeaderError::counter_name`]: `drop_vxlan_truncated`,
//!    `drop_vxlan_no_i_flag`, `drop_vxlan_reserved_flags`, `drop_vxlan_reserved_bits`);
//! 3. the sender is a VTEP of [`Env::vteps`] (`drop_unknown_vtep`), the VNI is a network's
//!    (`drop_unknown_vni`), and the sender is a peer of that network (`drop_unknown_vtep` again:
//!    Docker's unencrypted overlay accepts VXLAN from anyone, GHSA-vwm3-crmr-xfxw); an
//!    encrypted network's VNI only from the ESP underlay port, after `esp-decrypt`
//!    (`drop_plain_on_encrypted`);
//! 4. the inner frame is a whole Ethernet header (`drop_inner_runt`) and no larger than the
//!    network's MTU + 14, + 4 more when 802.1Q tagged, as `l2-parse` allows
//!    (`drop_inner_oversize`);
//! 5. its source MAC is not another node's endpoint (a static FDB entry toward another VTEP)
//!    nor behind a local port (`drop_inner_src_spoofed`).
//!
//! Then the VXLAN header is stripped (one `pull_front`, no copy) and `meta.net` and
//! `meta.from_vtep` are set. Learning inner source MACs toward the sending VTEP is optional
//! ([`VxlanDecap::learning`]) and off by default: Docker runs its VTEP with `nolearning` and
//! programs remote MACs statically; even on, the switch's own MACs are never learned. What the
//! decapsulated frame may carry (no reserved group address, untagged IPv4 and ARP only, no ARP
//! claim on an address owned elsewhere) is port security's, in `l2-parse`.
//!
//! `vxlan-encap` takes every frame of the underlay's transmit batch toward `meta.to_vtep`: it
//! checks the inner frame against the network's MTU, writes the VXLAN header with the network's
//! VNI into headroom (no copy), sets `meta.peer` to the VTEP's address and leaves the frame
//! undecided for the next transmit stage (or the burst), or drops it under a named reason.
//!
//! The hot path allocates nothing and takes no lock: the sender/VNI checks are remembered for
//! the rest of the batch (a batch usually comes from one peer), and the spoof check is one FDB
//! probe (plus one more per frame when learning is on).

use std::net::SocketAddrV4;

use vswitch::fdb::{FdbDest, Learned};
use vswitch::wire::ethernet;
use vswitch::{Batch, DropReason, Env, NetId, Network, Next, Packet, Stage, VtepId};

use crate::wire::{self, HEADER_LEN, HeaderError, Repr, VXLAN_PORT, Vni};

/// Bytes `vxlan-encap` prepends and `vxlan-decap` strips: the VXLAN header (the kernel adds the
/// outer IPv4 and UDP headers).
pub const ENCAP_LEN: usize = HEADER_LEN;

/// Largest inner frame `net` carries: MTU + 14, and 4 more for an 802.1Q-tagged frame.
#[inline]
fn max_inner(frame: &[u8], net: &Network) -> usize {
    let tagged = ethernet::Packet::new_checked(frame).is_ok_and(|e| e.is_vlan_tagged());
    let tag = if tagged { ethernet::VLAN_TAG_LEN } else { 0 };
    net.max_frame() + tag
}

/// The longest inner frame `pkt` puts on the wire: itself, or for a TCP super-frame the
/// underlay will cut (a port that takes offloads), its first segment. A super-frame whose
/// headers do not parse counts whole, so it is refused as too large.
fn wire_len(pkt: &Packet) -> usize {
    let o = &pkt.meta.offload;
    if o.is_gso()
        && let Ok(g) = vswitch::offload::Tcp4Gso::new(pkt.data(), o)
    {
        return g.segment_len(0);
    }
    pkt.len()
}

/// `vxlan-decap`: validates and strips the VXLAN encapsulation of frames from the underlay.
#[derive(Debug, Default)]
pub struct VxlanDecap {
    /// Frames decapsulated into a network.
    pub decapsulated: u64,
    /// Learn inner source MAC -> sending VTEP (off by default: Docker runs its VTEP with
    /// `nolearning` and programs remote MACs statically).
    pub learning: bool,
    /// Inner source MACs learned (when `learning` is on).
    pub learned: u64,
    /// The node's encrypted underlay ports (IP protocol 50, ESP in UDP; `esp-decrypt` runs
    /// before this stage on their paths): an encrypted network's VNI is accepted only from
    /// them.
    pub esp_ports: [Option<vswitch::PortId>; 2],
}

/// The sender/VNI pair last accepted in the current batch.
#[derive(Clone, Copy)]
struct Accepted {
    peer: SocketAddrV4,
    vni: Vni,
    vtep: VtepId,
    net: NetId,
}

vswitch::drop_table! {
    /// Why `vxlan-decap` drops a frame.
    pub enum DecapDrop {
        /// No sender in `meta.peer`: the frame did not come from the UDP underlay port.
        NoPeer => "drop_no_peer",
        /// Shorter than the VXLAN header.
        VxlanTruncated => HeaderError::Truncated { len: 0 }.counter_name(),
        /// The I flag is clear.
        VxlanNoIFlag => HeaderError::NoIFlag.counter_name(),
        /// A reserved flag bit is set.
        VxlanReservedFlags => HeaderError::ReservedFlags { flags: 0 }.counter_name(),
        /// A reserved field bit is set.
        VxlanReservedBits => HeaderError::ReservedBits.counter_name(),
        /// The sender is not a known VTEP, or not a peer of the VNI's network.
        UnknownVtep => "drop_unknown_vtep",
        /// No network has this VNI.
        UnknownVni => "drop_unknown_vni",
        /// Plain VXLAN for an encrypted network's VNI (it is accepted only inside ESP):
        /// Docker's CVE-2023-28840 failed open here.
        PlainOnEncrypted => "drop_plain_on_encrypted",
        /// The inner frame is shorter than an Ethernet header.
        InnerRunt => "drop_inner_runt",
        /// The inner frame is larger than the network's MTU allows.
        InnerOversize => "drop_inner_oversize",
        /// The inner source MAC is another node's endpoint or behind a local port.
        InnerSrcSpoofed => "drop_inner_src_spoofed",
    }
}

impl VxlanDecap {
    /// A decap stage.
    pub fn new() -> VxlanDecap {
        VxlanDecap::default()
    }

    /// The drop reason of a header refusal.
    #[inline]
    fn header_drop(e: HeaderError) -> DropReason {
        match e {
            HeaderError::Truncated { .. } => DecapDrop::VxlanTruncated.into(),
            HeaderError::NoIFlag => DecapDrop::VxlanNoIFlag.into(),
            HeaderError::ReservedFlags { .. } => DecapDrop::VxlanReservedFlags.into(),
            HeaderError::ReservedBits => DecapDrop::VxlanReservedBits.into(),
        }
    }

    /// Decide on one frame (VXLAN header + inner frame, from `peer`): the sending VTEP and
    /// the network, or why it is dropped. `last` remembers the sender/VNI accepted last.
    #[inline]
    fn classify(
        vx: &[u8],
        peer: Option<SocketAddrV4>,
        via_esp: bool,
        env: &Env,
        last: &mut Option<Accepted>,
    ) -> Result<(VtepId, NetId), DropReason> {
        let peer = peer.ok_or(DecapDrop::NoPeer)?;
        let repr = Repr::parse(&wire::Packet::new_unchecked(vx)).map_err(Self::header_drop)?;
        let (vtep, net) = match *last {
            Some(a) if a.peer == peer && a.vni == repr.vni => (a.vtep, a.net),
            _ => {
                let vtep = env.vtep_by_addr(*peer.ip()).ok_or(DecapDrop::UnknownVtep)?;
                let net = env
                    .net_by_vni(repr.vni.get())
                    .ok_or(DecapDrop::UnknownVni)?;
                if !env.net(net).peers.contains(&vtep) {
                    return Err(DecapDrop::UnknownVtep.into());
                }
                *last = Some(Accepted {
                    peer,
                    vni: repr.vni,
                    vtep,
                    net,
                });
                (vtep, net)
            }
        };
        if env.net(net).encrypted && !via_esp {
            return Err(DecapDrop::PlainOnEncrypted.into());
        }
        let inner = &vx[HEADER_LEN..];
        let eth =
            ethernet::Packet::new_checked(inner).map_err(|_| DecapDrop::InnerRunt.reason())?;
        if inner.len() > max_inner(inner, env.net(net)) {
            return Err(DecapDrop::InnerOversize.into());
        }
        let src = eth.src_addr();
        if let Some(e) = env.fdb.entry(net, src) {
            let spoofed = match e.dest() {
                FdbDest::Remote(owner) => e.is_static() && owner != vtep,
                // A live local entry, static or learned: that MAC is here, not there.
                FdbDest::Local(_) => env.fdb.is_live(e, env.now),
            };
            if spoofed {
                return Err(DecapDrop::InnerSrcSpoofed.into());
            }
        }
        Ok((vtep, net))
    }
}

impl Stage for VxlanDecap {
    fn name(&self) -> &'static str {
        "vxlan-decap"
    }
    fn layer_after(&self) -> Option<vswitch::trace::Layer> {
        Some(vswitch::trace::Layer::Ethernet)
    }
    fn drop_names(&self) -> &'static [&'static str] {
        DecapDrop::NAMES
    }
    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        // Valid for this batch only: the control plane changes `env` between batches.
        let mut last = None;
        for (_, p) in batch.active_mut() {
            let via_esp = self.esp_ports.contains(&Some(p.meta.in_port));
            match Self::classify(p.data(), p.meta.peer, via_esp, env, &mut last) {
                Ok((vtep, net)) => {
                    // classify checked the frame holds ENCAP_LEN + an Ethernet header.
                    p.pull_front(ENCAP_LEN);
                    p.meta.net = net;
                    p.meta.from_vtep = Some(vtep);
                    self.decapsulated += 1;
                    if self.learning {
                        // classify checked the inner Ethernet header.
                        let src = ethernet::Packet::new_unchecked(p.data()).src_addr();
                        // The switch's own MACs are never learned from a port (port security).
                        if !env.is_own_mac(net, src)
                            && env.fdb.learn_remote(net, src, vtep, env.now) == Learned::New
                        {
                            self.learned += 1;
                        }
                    }
                }
                Err(r) => p.meta.next = Next::Drop(r),
            }
        }
    }
    fn describe(&self, pkt: &Packet, env: &Env) -> String {
        match pkt.meta.from_vtep.and_then(|v| env.vteps.get(v.0 as usize)) {
            Some(v) if pkt.meta.next == Next::Continue => format!(
                "from vtep {} ({}), vni {} -> network {}",
                v.addr,
                v.node,
                env.net(pkt.meta.net).vni,
                env.net(pkt.meta.net).name
            ),
            _ => match pkt.meta.peer {
                Some(peer) => format!("from {peer}, {} bytes", pkt.len()),
                None => format!("{} bytes, no peer", pkt.len()),
            },
        }
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("decapsulated", self.decapsulated),
            ("learned", self.learned),
        ]
    }
}

/// `vxlan-encap`: prepends the VXLAN header with the network's VNI and sets `meta.peer` to the
/// destination VTEP (`meta.to_vtep`), on the underlay port's transmit path.
#[derive(Debug)]
pub struct VxlanEncap {
    dst_port: u16,
}

vswitch::drop_table! {
    /// Why `vxlan-encap` drops a frame.
    pub enum EncapDrop {
        /// The inner frame is larger than the network's MTU allows (the outer packet is never
        /// fragmented, so it cannot go).
        MtuExceeded => "drop_mtu_exceeded",
        /// The VTEP id is not in [`Env::vteps`].
        UnknownVtep => "drop_unknown_vtep",
        /// The frame's network does not exist or its VNI does not fit 24 bits.
        BadNetwork => "drop_bad_network",
        /// Not enough headroom for the header (a buffer bug; never on the real path).
        NoHeadroom => "drop_no_headroom",
        /// No target VTEP in `meta.to_vtep`: queued on the underlay other than toward a VTEP.
        NoVtep => "drop_no_vtep",
    }
}

impl Default for VxlanEncap {
    fn default() -> Self {
        VxlanEncap::new()
    }
}

impl VxlanEncap {
    /// Encapsulation toward VTEPs on the standard VXLAN port.
    pub fn new() -> VxlanEncap {
        VxlanEncap::with_dst_port(VXLAN_PORT)
    }

    /// Encapsulation toward VTEPs listening on `dst_port` (tests on unprivileged ports).
    pub fn with_dst_port(dst_port: u16) -> VxlanEncap {
        VxlanEncap { dst_port }
    }

    /// Encapsulate one frame toward its `meta.to_vtep`, or say why not (the frame is then
    /// untouched).
    #[inline]
    fn encap(&self, pkt: &mut Packet, env: &Env) -> Result<(), DropReason> {
        let vtep = pkt.meta.to_vtep.ok_or(EncapDrop::NoVtep)?;
        let net = env
            .nets
            .get(pkt.meta.net.0 as usize)
            .ok_or(EncapDrop::BadNetwork)?;
        if wire_len(pkt) > max_inner(pkt.data(), net) {
            return Err(EncapDrop::MtuExceeded.into());
        }
        let vni = Vni::new(net.vni).map_err(|_| EncapDrop::BadNetwork)?;
        let addr = env
            .vteps
            .get(vtep.0 as usize)
            .ok_or(EncapDrop::UnknownVtep)?
            .addr;
        let head = pkt.push_front(ENCAP_LEN).ok_or(EncapDrop::NoHeadroom)?;
        head.copy_from_slice(&Repr { vni }.to_bytes());
        pkt.meta.peer = Some(SocketAddrV4::new(addr, self.dst_port));
        Ok(())
    }
}

impl Stage for VxlanEncap {
    fn name(&self) -> &'static str {
        "vxlan-encap"
    }
    fn layer_after(&self) -> Option<vswitch::trace::Layer> {
        Some(vswitch::trace::Layer::Vxlan)
    }
    fn drop_names(&self) -> &'static [&'static str] {
        EncapDrop::NAMES
    }
    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        for (_, p) in batch.active_mut() {
            // Encapsulated frames stay undecided: the next transmit stage (or the burst) takes
            // them, and the pipeline counts them as the stage's `cont`.
            if let Err(r) = self.encap(p, env) {
                p.meta.next = Next::Drop(r);
            }
        }
    }
    fn describe(&self, pkt: &Packet, env: &Env) -> String {
        let Some(vtep) = pkt.meta.to_vtep else {
            return "no target VTEP".into();
        };
        match (pkt.meta.next, env.vteps.get(vtep.0 as usize)) {
            (Next::Continue, Some(v)) => format!(
                "encapsulated to vtep {} ({}), {} bytes",
                v.addr,
                v.node,
                pkt.len()
            ),
            (Next::Continue, None) => format!("encapsulated to vtep #{}", vtep.0),
            _ => format!("to vtep #{}, {} bytes", vtep.0, pkt.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use vswitch::frames;
    use vswitch::stage::{StageStats, mask_of, run_stage};
    use vswitch::{FdbConfig, Mac, PortId, Time};

    const VNI: u32 = 4097;
    const OTHER_VNI: u32 = 4098;
    const UNKNOWN_VNI: u32 = 5000;
    const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const N3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 9, last)
    }
    fn mac(last: u8) -> Mac {
        Mac::docker_default(ip(last))
    }

    /// appnet (4097): peers n2 (vtep 0, endpoint .21) and n3 (vtep 1, endpoint .31), local
    /// endpoint .11 on port 0 (static). othernet (4098): peer n3 only.
    fn lab_env() -> Env {
        let mut env = Env::new(FdbConfig::default());
        let app = env.add_network(Network::new("appnet", VNI, 1450));
        let other = env.add_network(Network::new("othernet", OTHER_VNI, 1450));
        let v2 = env.add_vtep(N2, "n2");
        let v3 = env.add_vtep(N3, "n3");
        env.nets[app.0 as usize].peers = vec![v2, v3];
        env.nets[other.0 as usize].peers = vec![v3];
        env.fdb
            .add_static(app, mac(21), FdbDest::Remote(v2))
            .unwrap();
        env.fdb
            .add_static(app, mac(31), FdbDest::Remote(v3))
            .unwrap();
        env.fdb
            .add_static(app, mac(11), FdbDest::Local(PortId(0)))
            .unwrap();
        env.fdb.learn(app, mac(12), PortId(1), Time::from_secs(1));
        env.now = Time::from_secs(1);
        env
    }

    /// A datagram as the UDP port hands it over: the sender (`meta.peer`) and the payload.
    type Dgram = (Option<SocketAddrV4>, Vec<u8>);

    /// From `from`: VXLAN header with `vni`, then `inner`.
    fn datagram(from: Ipv4Addr, vni: u32, inner: &[u8]) -> Dgram {
        let mut d = Repr {
            vni: Vni::new(vni).unwrap(),
        }
        .to_bytes()
        .to_vec();
        d.extend_from_slice(inner);
        (Some(SocketAddrV4::new(from, VXLAN_PORT)), d)
    }

    fn udp(src: u8, dst: u8, payload: usize) -> Vec<u8> {
        frames::udp(
            mac(src),
            mac(dst),
            ip(src),
            ip(dst),
            1,
            2,
            &vec![0; payload],
        )
    }

    /// Run decap over `frames` and return each one's outcome and the stats.
    fn decap(env: &mut Env, frames: &[Dgram]) -> (Vec<Packet>, StageStats) {
        let mut stage = VxlanDecap::new();
        let mut stats = StageStats::for_stage(&stage);
        let mut batch = Batch::new(frames.len());
        for (peer, f) in frames {
            batch.push_frame(f).unwrap().meta.peer = *peer;
        }
        run_stage(
            &mut stage,
            &mut stats,
            &mut batch,
            env,
            mask_of(frames.len()),
        );
        assert_eq!(stats.rx, stats.outcomes());
        let out = batch
            .pkts()
            .iter()
            .map(|p| {
                let mut q = Packet::from_frame(p.data());
                q.meta = p.meta;
                q
            })
            .collect();
        (out, stats)
    }

    #[test]
    fn drop_names_match_the_header_error_counters() {
        let names = VxlanDecap::new().drop_names();
        for (e, r) in [
            (HeaderError::Truncated { len: 3 }, DecapDrop::VxlanTruncated),
            (HeaderError::NoIFlag, DecapDrop::VxlanNoIFlag),
            (
                HeaderError::ReservedFlags { flags: 0x88 },
                DecapDrop::VxlanReservedFlags,
            ),
            (HeaderError::ReservedBits, DecapDrop::VxlanReservedBits),
        ] {
            assert_eq!(VxlanDecap::header_drop(e), r.reason());
            assert_eq!(names[r as usize], e.counter_name());
            assert_eq!(r.name(), e.counter_name());
        }
    }

    #[test]
    fn decap_table() {
        let mut env = lab_env();
        let ok = udp(21, 11, 10);
        let max = udp(21, 11, 1450 - 28);
        let mut no_i = datagram(N2, VNI, &ok);
        no_i.1[0] = 0;
        let mut rsv_flags = datagram(N2, VNI, &ok);
        rsv_flags.1[0] |= 0x80;
        let mut rsv_bits = datagram(N2, VNI, &ok);
        rsv_bits.1[7] = 1;
        let mut truncated = datagram(N2, VNI, &[]);
        truncated.1.pop();
        let mut tagged = ok.clone();
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        /// What, the datagram, and Ok((vtep, network)) or the drop reason's name.
        type Case = (&'static str, Dgram, Result<(u16, u16), &'static str>);
        let table: Vec<Case> = vec![
            (
                "from n2 to a local endpoint",
                datagram(N2, VNI, &ok),
                Ok((0, 0)),
            ),
            (
                "from n3 (also a peer)",
                datagram(N3, VNI, &udp(31, 11, 0)),
                Ok((1, 0)),
            ),
            ("exactly the MTU", datagram(N2, VNI, &max), Ok((0, 0))),
            (
                "exactly the MTU, tagged",
                datagram(N2, VNI, &{
                    let mut t = max.clone();
                    t.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
                    t
                }),
                Ok((0, 0)),
            ),
            (
                "othernet from n3",
                datagram(N3, OTHER_VNI, &udp(41, 42, 0)),
                Ok((1, 1)),
            ),
            (
                "no sender",
                (None, datagram(N2, VNI, &ok).1),
                Err("drop_no_peer"),
            ),
            ("no VXLAN header", truncated, Err("drop_vxlan_truncated")),
            ("I flag clear", no_i, Err("drop_vxlan_no_i_flag")),
            ("reserved flag", rsv_flags, Err("drop_vxlan_reserved_flags")),
            ("reserved bits", rsv_bits, Err("drop_vxlan_reserved_bits")),
            (
                "unknown sender",
                datagram(STRANGER, VNI, &ok),
                Err("drop_unknown_vtep"),
            ),
            (
                "unknown sender, unknown VNI",
                datagram(STRANGER, UNKNOWN_VNI, &ok),
                Err("drop_unknown_vtep"),
            ),
            (
                "known sender, not a peer of othernet",
                datagram(N2, OTHER_VNI, &ok),
                Err("drop_unknown_vtep"),
            ),
            (
                "unknown VNI",
                datagram(N2, UNKNOWN_VNI, &ok),
                Err("drop_unknown_vni"),
            ),
            (
                "empty inner frame",
                datagram(N2, VNI, &[]),
                Err("drop_inner_runt"),
            ),
            (
                "13-byte inner frame",
                datagram(N2, VNI, &ok[..13]),
                Err("drop_inner_runt"),
            ),
            (
                "one byte over the MTU",
                datagram(N2, VNI, &udp(21, 11, 1450 - 28 + 1)),
                Err("drop_inner_oversize"),
            ),
            (
                "tagged, one byte over",
                datagram(N2, VNI, &{
                    let mut t = max.clone();
                    t.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
                    t.push(0);
                    t
                }),
                Err("drop_inner_oversize"),
            ),
            (
                "n3 claiming n2's endpoint",
                datagram(N3, VNI, &udp(21, 11, 0)),
                Err("drop_inner_src_spoofed"),
            ),
            (
                "n2 claiming a local static endpoint",
                datagram(N2, VNI, &udp(11, 12, 0)),
                Err("drop_inner_src_spoofed"),
            ),
            (
                "n2 claiming a locally learned MAC",
                datagram(N2, VNI, &udp(12, 11, 0)),
                Err("drop_inner_src_spoofed"),
            ),
            (
                "n2 with a MAC nobody owns",
                datagram(N2, VNI, &udp(99, 11, 0)),
                Ok((0, 0)),
            ),
            ("tagged", datagram(N2, VNI, &tagged), Ok((0, 0))),
        ];
        let frames: Vec<Dgram> = table.iter().map(|t| t.1.clone()).collect();
        // In batches of varied composition, so the per-batch sender cache is exercised.
        for chunk in [1, 3, 7, frames.len()] {
            let mut env_c = lab_env();
            for (idxs, fs) in (0..frames.len())
                .collect::<Vec<_>>()
                .chunks(chunk)
                .zip(frames.chunks(chunk))
            {
                let (out, _) = decap(&mut env_c, fs);
                for (k, p) in idxs.iter().zip(out) {
                    let (what, input, want) = &table[*k];
                    match want {
                        Ok((vtep, net)) => {
                            assert_eq!(p.meta.next, Next::Continue, "{what}");
                            assert_eq!(p.meta.from_vtep, Some(VtepId(*vtep)), "{what}");
                            assert_eq!(p.meta.net, NetId(*net), "{what}");
                            assert_eq!(p.data(), &input.1[ENCAP_LEN..], "{what}");
                        }
                        Err(name) => {
                            let Next::Drop(r) = p.meta.next else {
                                panic!("{what}: not dropped: {:?}", p.meta)
                            };
                            assert_eq!(DecapDrop::NAMES[r.0 as usize], *name, "{what}");
                            assert_eq!(
                                p.data(),
                                &input.1[..],
                                "{what}: a dropped frame is untouched"
                            );
                        }
                    }
                }
            }
        }
        let (_, stats) = decap(&mut env, &frames);
        assert_eq!(stats.cont, 7);
        assert_eq!(stats.drop_count("drop_unknown_vtep"), 3);
        assert_eq!(stats.drop_count("drop_inner_src_spoofed"), 3);
    }

    #[test]
    fn learning_is_off_by_default_and_learns_the_sending_vtep_when_on() {
        let mut env = lab_env();
        let unknown_src = datagram(N2, VNI, &udp(77, 11, 10));
        let (out, _) = decap(&mut env, std::slice::from_ref(&unknown_src));
        assert_eq!(out[0].meta.next, Next::Continue);
        assert_eq!(
            env.fdb.lookup(NetId(0), mac(77), env.now),
            None,
            "nolearning by default"
        );

        let mut stage = VxlanDecap {
            learning: true,
            ..VxlanDecap::default()
        };
        let mut stats = StageStats::for_stage(&stage);
        let mut batch = Batch::new(1);
        batch.push_frame(&unknown_src.1).unwrap().meta.peer = unknown_src.0;
        run_stage(&mut stage, &mut stats, &mut batch, &mut env, mask_of(1));
        assert_eq!(
            env.fdb.lookup(NetId(0), mac(77), env.now),
            Some(FdbDest::Remote(env.vtep_by_addr(N2).unwrap()))
        );
        assert_eq!(stage.learned, 1);
        // learned remote entries age like any other
        let later = Time::from_secs(1 + 300);
        assert_eq!(env.fdb.lookup(NetId(0), mac(77), later), None);
    }

    #[test]
    fn an_encrypted_networks_vni_is_taken_only_from_the_esp_port() {
        let mut env = lab_env();
        env.nets[0].encrypted = true;
        let dgram = datagram(N2, VNI, &udp(21, 11, 10));
        // In plain VXLAN (from the UDP underlay, port 0): dropped, counted.
        let (out, stats) = decap(&mut env, std::slice::from_ref(&dgram));
        assert_eq!(
            out[0].meta.next,
            Next::Drop(DecapDrop::PlainOnEncrypted.into())
        );
        assert_eq!(stats.drop_count("drop_plain_on_encrypted"), 1);
        // The same datagram as esp-decrypt leaves it, on the ESP port: accepted.
        let mut stage = VxlanDecap {
            esp_ports: [Some(vswitch::PortId(3)), None],
            ..VxlanDecap::default()
        };
        let mut stats = StageStats::for_stage(&stage);
        let mut batch = Batch::new(2);
        let p = batch.push_frame(&dgram.1).unwrap();
        p.meta.peer = dgram.0;
        p.meta.in_port = vswitch::PortId(3);
        run_stage(&mut stage, &mut stats, &mut batch, &mut env, mask_of(1));
        assert_eq!(batch.pkts()[0].meta.next, Next::Continue);
        assert_eq!(stats.cont, 1);
        // A plain network beside it still takes plain VXLAN.
        env.nets[0].encrypted = false;
        let (out, _) = decap(&mut env, std::slice::from_ref(&dgram));
        assert_eq!(out[0].meta.next, Next::Continue);
    }

    #[test]
    fn an_aged_out_local_mac_may_come_from_a_peer() {
        let mut env = lab_env();
        env.now = Time::from_secs(1 + 300);
        let (out, _) = decap(&mut env, &[datagram(N2, VNI, &udp(12, 11, 0))]);
        assert_eq!(out[0].meta.next, Next::Continue);
    }

    /// Run encap over `pkts` (each toward its `meta.to_vtep`) and return the stats.
    fn encap(env: &mut Env, enc: &mut VxlanEncap, pkts: &mut [Packet]) -> StageStats {
        let mut stats = StageStats::for_stage(enc);
        let mut batch = Batch::new(pkts.len());
        for p in pkts.iter_mut() {
            assert!(batch.push_swap(p));
        }
        run_stage(enc, &mut stats, &mut batch, env, mask_of(pkts.len()));
        assert_eq!(stats.rx, stats.outcomes());
        for (p, q) in pkts.iter_mut().zip(batch.pkts_mut()) {
            core::mem::swap(p, q);
        }
        stats
    }

    fn toward(inner: &[u8], vtep: u16) -> Packet {
        let mut p = Packet::from_frame(inner);
        p.meta.to_vtep = Some(VtepId(vtep));
        p
    }

    #[test]
    fn encap_prepends_the_header_in_headroom_and_sets_the_peer() {
        let mut env = lab_env();
        let mut enc = VxlanEncap::new();
        // (from .21 to .11: so that, sent back at us from n2, it passes the spoof check too)
        let inner = udp(21, 11, 10);
        let mut p = [toward(&inner, 0)];
        let before = p[0].headroom();
        let st = encap(&mut env, &mut enc, &mut p);
        assert_eq!(st.cont, 1);
        let p = &p[0];
        assert_eq!(
            p.meta.next,
            Next::Continue,
            "left for the next transmit stage"
        );
        assert_eq!(p.headroom(), before - ENCAP_LEN);
        let want = datagram(N2, VNI, &inner);
        assert_eq!((p.meta.peer, p.data()), (want.0, &want.1[..]));
        assert!(enc.describe(p, &env).contains("vtep 198.18.0.2"));
        // and decap takes it back, as if the peer had sent it to us
        let mut env2 = lab_env();
        let (out, _) = decap(&mut env2, &[(p.meta.peer, p.data().to_vec())]);
        assert_eq!(out[0].data(), &inner[..]);
    }

    #[test]
    fn encap_refuses_frames_over_the_mtu_unknown_vteps_and_frames_without_one() {
        let mut env = lab_env();
        let mut enc = VxlanEncap::with_dst_port(14789);
        let big = udp(11, 21, 1450 - 28 + 1);
        let no_vtep = Packet::from_frame(&udp(11, 21, 0));
        let mut bad_net = toward(&udp(11, 21, 0), 0);
        bad_net.meta.net = NetId(9);
        let mut pkts = [
            toward(&udp(11, 21, 1450 - 28), 1),
            toward(&big, 0),
            toward(&udp(11, 21, 0), 9),
            bad_net,
            no_vtep,
        ];
        let st = encap(&mut env, &mut enc, &mut pkts);
        assert_eq!(pkts[0].meta.peer, Some(SocketAddrV4::new(N3, 14789)));
        let why: Vec<_> = pkts[1..]
            .iter()
            .map(|p| match p.meta.next {
                Next::Drop(r) => EncapDrop::NAMES[usize::from(r.0)],
                n => panic!("not dropped: {n:?}"),
            })
            .collect();
        assert_eq!(
            why,
            [
                "drop_mtu_exceeded",
                "drop_unknown_vtep",
                "drop_bad_network",
                "drop_no_vtep"
            ]
        );
        assert_eq!(pkts[1].data(), &big[..], "a refused frame is untouched");
        assert_eq!(pkts[1].meta.peer, None);
        assert_eq!((st.cont, st.dropped()), (1, 4));
    }

    #[test]
    fn a_super_frame_is_held_to_the_mtu_by_its_segments() {
        use vswitch::offload::{GSO_BUF_SIZE, Offload};
        let mut env = lab_env();
        let mut enc = VxlanEncap::with_dst_port(14789);
        let flags = vswitch::frames::TcpFlags {
            ack: true,
            ..Default::default()
        };
        let f = vswitch::frames::tcp(
            mac(11),
            mac(21),
            ip(11),
            ip(21),
            40000,
            5201,
            flags,
            1,
            1,
            &[7u8; 20_000],
        );
        let super_frame = |mss: u16| {
            let mut p = Packet::with_capacity(GSO_BUF_SIZE);
            p.set_frame(&f).unwrap();
            p.meta.to_vtep = Some(VtepId(0));
            p.meta.offload = Offload {
                needs_csum: true,
                csum_start: 34,
                csum_offset: 16,
                gso_size: mss,
            };
            p
        };
        // Segments of 1410 payload bytes make 1450-byte IPv4 packets: the MTU. 1411 is one over.
        let mut pkts = [super_frame(1410), super_frame(1411)];
        let st = encap(&mut env, &mut enc, &mut pkts);
        assert_eq!(pkts[0].meta.next, Next::Continue);
        assert_eq!(pkts[0].len(), f.len() + ENCAP_LEN);
        assert!(matches!(pkts[1].meta.next, Next::Drop(_)));
        assert_eq!((st.cont, st.dropped()), (1, 1));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes from a peer, at every length: no panic, conservation, and an accepted
            /// frame is exactly the input minus the 8-byte header.
            #[test]
            fn decap_never_panics(body in proptest::collection::vec(any::<u8>(), 0..80), vni in prop_oneof![Just(VNI), Just(OTHER_VNI), any::<u32>().prop_map(|v| v & 0xff_ffff)]) {
                let mut env = lab_env();
                let (peer, full) = datagram(N2, vni, &body);
                let mut garbage = full.clone();
                garbage.iter_mut().zip(body.iter().cycle()).for_each(|(b, x)| *b ^= *x);
                for f in [&full, &garbage] {
                    let frames: Vec<Dgram> = (0..=f.len()).map(|n| (peer, f[..n].to_vec())).collect();
                    for chunk in frames.chunks(32) {
                        let (out, _) = decap(&mut env, chunk);
                        for (p, input) in out.iter().zip(chunk) {
                            if p.meta.next == Next::Continue {
                                prop_assert_eq!(p.data(), &input.1[ENCAP_LEN..]);
                            }
                        }
                    }
                }
            }
        }
    }
}
