//! The ESP stages: `esp-decrypt` (first on the receive path of the node's ESP underlay port)
//! and `esp-encrypt` (on that port's transmit path, after `vxlan-encap`).
//!
//! ```text
//! ESP underlay (raw IPv4, protocol 50) ─► esp-decrypt ─► vxlan-decap ─► l2-parse ─► ...
//! ... ─► output ─► [ESP underlay tx path: vxlan-encap ─► esp-encrypt] ─► ESP underlay ─► meta.peer
//! ```
//!
//! `esp-decrypt` takes what a raw IPv4 socket for protocol 50 receives (outer IPv4 header,
//! then the ESP packet) and gives `vxlan-decap` exactly what the UDP underlay port would (the
//! VXLAN header first, `meta.peer` = outer source:4789). Each refusal is a named drop, checked
//! in this order (replay before decrypting, the window moved only after the ICV verified, as
//! RFC 4303 section 3.4.3 says):
//! 1. `drop_esp_bad_ip`: the outer IPv4 header is malformed, not protocol 50, or a fragment;
//! 2. `drop_esp_truncated`: shorter than ESP header + IV + trailer + ICV;
//! 3. `drop_esp_unknown_spi`: no inbound SA for (outer source, SPI);
//! 4. `drop_esp_replay` / `drop_esp_too_old`: see [`crate::replay`] (seq 0 is too old);
//! 5. `drop_esp_bad_icv`: the ICV does not verify (the packet is left garbled, and dropped);
//! 6. `drop_esp_bad_trailer`: the pad length does not fit or the padding is not 1, 2, 3, ...;
//! 7. `drop_esp_next_header`: the payload is not UDP (17);
//! 8. `drop_esp_inner_udp`: the inner UDP header is short, its length is not the payload's,
//!    or its destination port is not 4789. (Its checksum is not checked: vxmesh sends 0, and
//!    the ICV covers every byte.)
//!
//! The decryption is in place; stripping is two length changes (outer IP header, ESP header,
//! IV and inner UDP header from the front; padding, trailer and ICV from the back).
//!
//! `esp-encrypt` takes what `vxlan-encap` leaves (VXLAN header first, `meta.peer` = the peer
//! VTEP:4789) and makes it the ESP packet the port sends over the raw socket to meta.peer's
//! address (the kernel adds the outer IPv4 header): inner UDP header (ports 4789, checksum 0),
//! ESP header and IV pushed into headroom, padding, trailer and ICV appended in tailroom,
//! encrypted in place. It fails closed: no outbound SA for the peer (or no peer at all) is
//! `drop_esp_no_sa`, never a packet in clear; no headroom or tailroom is `drop_esp_no_room`; an
//! SA that used up every (epoch, seq) is `drop_esp_seq_exhausted`.
//!
//! Each stage holds its half of the node's [`EspSas`]: [`EspEncrypt`] the
//! outbound SAs, [`EspDecrypt`] the inbound ones. The control plane builds both from one
//! [`EspSas`] ([`stages`]), and on reload calls `set` on each stage with the
//! same keys and peers (the one it does not need ignores what is not its half), or derives an
//! [`SaPlan`](crate::SaPlan) off the poll thread and hands each stage its half with `apply`.
//!
//! Per packet: one binary search for the SA, AES-GCM in place, a few header writes; no
//! allocation, syscall or lock. Traced packets (`meta.trace != 0`) get
//! `spi 0x%08x seq EPOCH:SEQ` in their trace record, remembered for the batch in a fixed array.

use std::net::{Ipv4Addr, SocketAddrV4};

use vswitch::batch::MAX_BATCH;
use vswitch::wire::esp::{self as wire, FRONT_LEN, MIN_LEN, PROTO_ESP};
use vswitch::wire::ipv4::{self, PROTO_UDP};
use vswitch::wire::udp;
use vswitch::wire::vxlan::VXLAN_PORT;
use vswitch::{Batch, DropReason, Env, Next, Packet, Stage};

use crate::key::Key;
use crate::sa::{EspSas, InboundSa, InboundSas, OpenError, OutboundSa, OutboundSas, SaInfo};
use crate::tap::Tap;

/// Bytes `esp-encrypt` pushes in front of the VXLAN header: ESP header, IV, inner UDP header.
pub const PUSH_LEN: usize = FRONT_LEN + udp::HEADER_LEN;
/// Most bytes `esp-encrypt` appends after the VXLAN frame: padding (at most 3), trailer, ICV.
pub const MAX_TAIL_LEN: usize = 3 + wire::TRAILER_LEN + wire::ICV_LEN;
/// Most bytes ESP adds to a VXLAN datagram on the wire (the outer IPv4 header aside): what
/// an encrypted network's MTU must leave room for, on top of VXLAN's own overhead.
pub const MAX_OVERHEAD: usize = PUSH_LEN + MAX_TAIL_LEN;

/// The two stages over the halves of `sas`.
pub fn stages(sas: EspSas) -> (EspEncrypt, EspDecrypt) {
    let (outbound, inbound) = sas.into_halves();
    (
        EspEncrypt::with_sas(outbound),
        EspDecrypt::with_sas(inbound),
    )
}

/// What the trace shows of one packet: its SA and sequence number.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    trace: u32,
    spi: u32,
    epoch: u32,
    seq: u32,
}

/// The traced packets of the current batch (a fixed array: nothing allocated).
#[derive(Debug)]
struct TraceNotes {
    seen: [Seen; MAX_BATCH],
    len: usize,
}

impl Default for TraceNotes {
    fn default() -> Self {
        TraceNotes {
            seen: [Seen::default(); MAX_BATCH],
            len: 0,
        }
    }
}

impl TraceNotes {
    #[inline]
    fn note(&mut self, s: Seen) {
        if let Some(slot) = self.seen.get_mut(self.len) {
            *slot = s;
            self.len += 1;
        }
    }

    fn find(&self, trace: u32) -> Option<&Seen> {
        self.seen[..self.len].iter().find(|s| s.trace == trace)
    }

    fn describe(&self, pkt: &Packet, what: &str) -> String {
        match self.find(pkt.meta.trace) {
            Some(s) => match pkt.meta.peer {
                Some(peer) => format!(
                    "spi 0x{:08x} seq {}:{} {what} {}, {} bytes",
                    s.spi,
                    s.epoch,
                    s.seq,
                    peer.ip(),
                    pkt.len()
                ),
                None => format!("spi 0x{:08x} seq {}:{}", s.spi, s.epoch, s.seq),
            },
            None => format!("{} bytes", pkt.len()),
        }
    }
}

vswitch::drop_table! {
    /// Why `esp-decrypt` drops a packet.
    pub enum DecryptDrop {
        /// The outer IPv4 header is malformed, not ESP, or a fragment.
        BadIp => "drop_esp_bad_ip",
        /// Shorter than ESP header, IV, trailer and ICV.
        Truncated => "drop_esp_truncated",
        /// No inbound SA for (source, SPI).
        UnknownSpi => "drop_esp_unknown_spi",
        /// A sequence number seen before, inside the window.
        Replay => "drop_esp_replay",
        /// A sequence number left of the window, from an earlier epoch, or 0.
        TooOld => "drop_esp_too_old",
        /// The ICV did not verify.
        BadIcv => "drop_esp_bad_icv",
        /// Impossible pad length or padding bytes not 1, 2, 3, ...
        BadTrailer => "drop_esp_bad_trailer",
        /// The payload is not UDP.
        NextHeader => "drop_esp_next_header",
        /// The inner UDP header is short, its length wrong, or not to port 4789.
        InnerUdp => "drop_esp_inner_udp",
    }
}

impl From<OpenError> for DecryptDrop {
    fn from(e: OpenError) -> DecryptDrop {
        match e {
            OpenError::Truncated => DecryptDrop::Truncated,
            OpenError::Replay => DecryptDrop::Replay,
            OpenError::TooOld => DecryptDrop::TooOld,
            OpenError::BadIcv => DecryptDrop::BadIcv,
            OpenError::BadTrailer => DecryptDrop::BadTrailer,
        }
    }
}

/// `esp-decrypt`: opens ESP packets from the raw underlay into VXLAN datagrams.
#[derive(Debug)]
pub struct EspDecrypt {
    sas: InboundSas,
    /// Packets decrypted and handed on.
    pub decrypted: u64,
    notes: TraceNotes,
    /// The decrypted capture, while one runs.
    pub tap: Option<Tap>,
    /// The port that carries ESP in UDP (RFC 3948, port 4500): its packets are the UDP
    /// payload (SPI first, the sender in `meta.peer`), with no outer IPv4 header.
    pub udp_port: Option<vswitch::PortId>,
}

impl EspDecrypt {
    /// A stage with no SA (refuses every packet) for the node whose VTEP is `local`.
    pub fn new(local: Ipv4Addr) -> EspDecrypt {
        EspDecrypt::with_sas(InboundSas::new(local))
    }

    /// A stage over these inbound SAs.
    pub fn with_sas(sas: InboundSas) -> EspDecrypt {
        EspDecrypt {
            sas,
            decrypted: 0,
            notes: TraceNotes::default(),
            tap: None,
            udp_port: None,
        }
    }

    /// Reload: inbound SAs for every (peer, key), keeping the windows of those still wanted
    /// (`epoch` is the outbound half's, unused here; the signature matches [`EspSas::set`]).
    pub fn set(&mut self, keys: &[Key], peers: &[Ipv4Addr], _epoch: u32) {
        self.sas.set(keys, peers);
    }

    /// Reload with SAs derived ahead (an [`SaPlan`](crate::SaPlan)'s `inbound`): see
    /// [`InboundSas::apply`].
    pub fn apply(&mut self, planned: Vec<InboundSa>) {
        self.sas.apply(planned);
    }

    /// The inbound SAs.
    pub fn sas(&self) -> &InboundSas {
        &self.sas
    }

    /// The listing of the inbound SAs.
    pub fn list(&self) -> Vec<SaInfo> {
        self.sas.list()
    }

    /// Decrypt one packet in place and strip it to the VXLAN datagram, or say why not.
    #[inline]
    fn decrypt(&mut self, pkt: &mut Packet) -> Result<(), DecryptDrop> {
        let trace = pkt.meta.trace;
        let in_udp = Some(pkt.meta.in_port) == self.udp_port;
        let peer = pkt.meta.peer;
        let frame = pkt.data_mut();
        let (ihl, total, src) = if in_udp {
            // ESP in UDP: the datagram is the ESP packet, from `meta.peer`.
            let src = peer.ok_or(DecryptDrop::BadIp)?;
            (0, frame.len(), *src.ip())
        } else {
            let ip = ipv4::Packet::new_checked(&*frame).map_err(|_| DecryptDrop::BadIp)?;
            if ip.version() != ipv4::VERSION || ip.protocol() != PROTO_ESP || ip.is_fragment() {
                return Err(DecryptDrop::BadIp);
            }
            (ip.header_len(), usize::from(ip.total_len()), ip.src_addr())
        };
        let esp = &mut frame[ihl..total];
        if esp.len() < MIN_LEN {
            return Err(DecryptDrop::Truncated);
        }
        let p = wire::Packet::new_unchecked(&*esp);
        let spi = p.spi();
        if trace != 0 {
            let iv = p.iv();
            self.notes.note(Seen {
                trace,
                spi,
                epoch: u32::from_be_bytes([iv[0], iv[1], iv[2], iv[3]]),
                seq: p.seq_number(),
            });
        }
        let sa = self.sas.find_mut(src, spi).ok_or(DecryptDrop::UnknownSpi)?;
        let opened = sa.open(esp)?;
        if opened.next_header != PROTO_UDP {
            return Err(DecryptDrop::NextHeader);
        }
        let payload = &esp[FRONT_LEN..FRONT_LEN + opened.payload_len];
        let inner = udp::Packet::new_checked(payload).map_err(|_| DecryptDrop::InnerUdp)?;
        if usize::from(inner.len()) != payload.len() || inner.dst_port() != VXLAN_PORT {
            return Err(DecryptDrop::InnerUdp);
        }
        let vxlan_len = opened.payload_len - udp::HEADER_LEN;
        // The frame holds ihl + FRONT_LEN + payload_len bytes and more (checked above).
        pkt.pull_front(ihl + FRONT_LEN + udp::HEADER_LEN);
        pkt.set_len(vxlan_len);
        pkt.meta.peer = Some(SocketAddrV4::new(src, VXLAN_PORT));
        Ok(())
    }
}

impl Stage for EspDecrypt {
    fn name(&self) -> &'static str {
        "esp-decrypt"
    }
    fn layer_after(&self) -> Option<vswitch::trace::Layer> {
        Some(vswitch::trace::Layer::Vxlan)
    }
    fn drop_names(&self) -> &'static [&'static str] {
        DecryptDrop::NAMES
    }
    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        self.notes.len = 0;
        let local = self.sas.local();
        for (_, p) in batch.active_mut() {
            match self.decrypt(p) {
                Ok(()) => {
                    self.decrypted += 1;
                    if let (Some(t), Some(src)) = (&mut self.tap, p.meta.peer) {
                        t.record(p, *src.ip(), local, env.now.0);
                    }
                }
                Err(r) => p.meta.next = Next::Drop(DropReason::from(r)),
            }
        }
    }
    fn describe(&self, pkt: &Packet, _env: &Env) -> String {
        self.notes.describe(pkt, "from")
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("decrypted", self.decrypted)]
    }
}

vswitch::drop_table! {
    /// Why `esp-encrypt` drops a packet.
    pub enum EncryptDrop {
        /// No outbound SA for the peer (or no peer): never sent in clear.
        NoSa => "drop_esp_no_sa",
        /// Not enough headroom or tailroom in the buffer (or a datagram over 64 KiB).
        NoRoom => "drop_esp_no_room",
        /// The SA used every (epoch, seq).
        SeqExhausted => "drop_esp_seq_exhausted",
    }
}

/// `esp-encrypt`: seals VXLAN datagrams into ESP packets for the raw underlay.
#[derive(Debug)]
pub struct EspEncrypt {
    sas: OutboundSas,
    /// Packets encrypted and handed on.
    pub encrypted: u64,
    notes: TraceNotes,
    /// The decrypted capture, while one runs.
    pub tap: Option<Tap>,
}

impl EspEncrypt {
    /// A stage with no SA (refuses every packet: fail closed) for the node whose VTEP is
    /// `local`.
    pub fn new(local: Ipv4Addr) -> EspEncrypt {
        EspEncrypt::with_sas(OutboundSas::new(local))
    }

    /// A stage over these outbound SAs.
    pub fn with_sas(sas: OutboundSas) -> EspEncrypt {
        EspEncrypt {
            sas,
            encrypted: 0,
            notes: TraceNotes::default(),
            tap: None,
        }
    }

    /// Reload: an outbound SA per peer from `keys[0]`, keeping the counters of those still
    /// wanted; new ones start at `epoch` or above (see [`crate::sa`]).
    pub fn set(&mut self, keys: &[Key], peers: &[Ipv4Addr], epoch: u32) {
        self.sas.set(keys, peers, epoch);
    }

    /// Reload with SAs derived ahead (an [`SaPlan`](crate::SaPlan)'s `outbound`): see
    /// [`OutboundSas::apply`].
    pub fn apply(&mut self, planned: Vec<OutboundSa>) {
        self.sas.apply(planned);
    }

    /// The outbound SAs.
    pub fn sas(&self) -> &OutboundSas {
        &self.sas
    }

    /// The listing of the outbound SAs.
    pub fn list(&self) -> Vec<SaInfo> {
        self.sas.list()
    }

    /// Encrypt one packet toward its `meta.peer`, or say why not (the frame is then untouched).
    #[inline]
    fn encrypt(&mut self, pkt: &mut Packet) -> Result<(), EncryptDrop> {
        let peer = pkt.meta.peer.ok_or(EncryptDrop::NoSa)?;
        let sa = self.sas.find_mut(*peer.ip()).ok_or(EncryptDrop::NoSa)?;
        if sa.exhausted() {
            return Err(EncryptDrop::SeqExhausted);
        }
        let vxlan_len = pkt.len();
        let payload_len = udp::HEADER_LEN + vxlan_len;
        let udp_len = u16::try_from(payload_len).map_err(|_| EncryptDrop::NoRoom)?;
        let esp_len = wire::packet_len_for(payload_len);
        let tail = esp_len - FRONT_LEN - payload_len;
        if pkt.headroom() < PUSH_LEN || pkt.max_len() < vxlan_len + tail {
            return Err(EncryptDrop::NoRoom);
        }
        pkt.set_len(vxlan_len + tail);
        pkt.push_front(PUSH_LEN).ok_or(EncryptDrop::NoRoom)?;
        let esp = pkt.data_mut();
        let mut u = udp::Packet::new_unchecked(&mut esp[FRONT_LEN..PUSH_LEN]);
        u.set_src_port(VXLAN_PORT);
        u.set_dst_port(VXLAN_PORT);
        u.set_len(udp_len);
        u.set_checksum(udp::NO_CHECKSUM);
        let (epoch, seq) = sa
            .seal(esp, payload_len, PROTO_UDP)
            .map_err(|_| EncryptDrop::SeqExhausted)?;
        if pkt.meta.trace != 0 {
            let spi = sa.spi();
            self.notes.note(Seen {
                trace: pkt.meta.trace,
                spi,
                epoch,
                seq,
            });
        }
        Ok(())
    }
}

impl Stage for EspEncrypt {
    fn name(&self) -> &'static str {
        "esp-encrypt"
    }
    fn layer_after(&self) -> Option<vswitch::trace::Layer> {
        Some(vswitch::trace::Layer::Esp)
    }
    fn drop_names(&self) -> &'static [&'static str] {
        EncryptDrop::NAMES
    }
    fn process(&mut self, batch: &mut Batch, env: &mut Env) {
        self.notes.len = 0;
        let local = self.sas.local();
        for (_, p) in batch.active_mut() {
            if let (Some(t), Some(dst)) = (&mut self.tap, p.meta.peer) {
                // Before sealing: what the decrypted capture shows.
                t.record(p, local, *dst.ip(), env.now.0);
            }
            // Encrypted packets stay undecided: the burst to the port takes them.
            match self.encrypt(p) {
                Ok(()) => self.encrypted += 1,
                Err(r) => p.meta.next = Next::Drop(DropReason::from(r)),
            }
        }
    }
    fn describe(&self, pkt: &Packet, _env: &Env) -> String {
        self.notes.describe(pkt, "to")
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("encrypted", self.encrypted)]
    }
}
