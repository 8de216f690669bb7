//! Offloads: the checksum and TCP segmentation work a container's kernel leaves to the switch,
//! finished in software where the output cannot take it, and the virtio-net header TAPs speak.
//!
//! Where it sits: a TAP opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)`
//! (see the TAP port, `port::tap`) hands the switch what the container's TCP/IP stack did not finish:
//! TCP/UDP checksums left partial (the field holds the pseudo-header sum, Linux's
//! `CHECKSUM_PARTIAL`) and TCP super-frames of up to 64 KB with the MSS to cut them at
//! (`gso_size`). The TAP's receive path records that in [`Meta::offload`](crate::Meta); the
//! stages carry it along (`lb-nat` keeps a partial sum right through NAT with
//! [`nat_prepare`]/[`nat_finish`]); and at the output the switch either hands the frame on as
//! it is, to a port that takes offloads (another such TAP, which writes the header back; the
//! node's UDP underlay, which cuts a super-frame as it sends it, each segment's headers written
//! apart by [`Tcp4Gso::write_header`] and its payload gathered from where it lies), or
//! finishes the job here: [`finish_checksum`] for one frame, [`Tcp4Gso`] to cut a super-frame
//! into MSS-sized segments with their own IPv4 and TCP headers and checksums. That is what the
//! kernel's `validate_xmit_skb`/`skb_gso_segment` do for a device without the features; a
//! super-frame then crosses the whole pipeline once instead of 45 times, and the underlay sends
//! the segments with one UDP GSO message.

use core::fmt;

use crate::wire::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ipv4::{self, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::{self, FLAG_ACK, FLAG_CWR, FLAG_FIN, FLAG_PSH};
use crate::wire::{be16, checksum, set_be16, udp, vnet};

/// Largest frame a super-frame may be: a 64 KB IPv4 datagram plus Ethernet and a VLAN tag.
pub const GSO_MAX_FRAME: usize = u16::MAX as usize + ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN;
/// Packet buffer size for a switch with offload ports ([`crate::Switch::with_batch`]): a
/// super-frame after the headroom. Buffers move between batches, so every one must hold it.
pub const GSO_BUF_SIZE: usize = crate::packet::HEADROOM + GSO_MAX_FRAME;

/// Where the TCP checksum field is in its header (a partial checksum's `csum_offset`).
const TCP_CSUM: usize = tcp::field::CHECKSUM.start;
/// Where the UDP checksum field is in its header.
const UDP_CSUM: usize = udp::field::CHECKSUM.start;
/// Smallest segment size taken (Linux's `TCP_MIN_MSS`): bounds the segments one super-frame
/// can be cut into at 745, so a container cannot make the switch cut 64 KB into 1-byte pieces.
pub const MIN_GSO_SIZE: usize = 88;

/// Work left on a frame: zero (the default) when none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// The checksum from `csum_start` to the end is still to be computed (the field holds the
    /// pseudo-header sum).
    pub needs_csum: bool,
    /// Where the checksummed part starts (the L4 header), from the frame's start.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
    /// A TCP/IPv4 super-frame to cut into segments of this many payload bytes; 0: one frame.
    pub gso_size: u16,
}

impl Offload {
    /// Whether anything is left to do.
    #[inline]
    pub fn pending(&self) -> bool {
        self.needs_csum
    }

    /// Whether it is a super-frame.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_size != 0
    }
}

/// A virtio-net header the switch does not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VnetError {
    /// The checksum start or field lies outside the frame.
    BadChecksumOffsets,
    /// A segmentation type other than TCP/IPv4 (UDP, IPv6, ECN), which was not offered.
    UnsupportedGso(u8),
    /// A TCP/IPv4 super-frame whose headers do not parse or do not match the header.
    BadGsoFrame(&'static str),
}

impl fmt::Display for VnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VnetError::BadChecksumOffsets => write!(f, "checksum offsets outside the frame"),
            VnetError::UnsupportedGso(t) => write!(f, "unsupported GSO type {t:#x}"),
            VnetError::BadGsoFrame(why) => write!(f, "bad TCP/IPv4 super-frame: {why}"),
        }
    }
}

/// Read a virtio-net header for `frame`, checking that it describes the frame. `max_segment`
/// is the largest frame a segment may be (the network's MTU plus Ethernet).
pub fn from_vnet(
    h: &[u8; vnet::HEADER_LEN],
    frame: &[u8],
    max_segment: usize,
) -> Result<Offload, VnetError> {
    let h = vnet::Packet::new_unchecked(&h[..]);
    let mut o = Offload::default();
    if h.needs_csum() {
        let (start, off) = (h.csum_start(), h.csum_offset());
        if usize::from(start) + usize::from(off) + 2 > frame.len() {
            return Err(VnetError::BadChecksumOffsets);
        }
        o.needs_csum = true;
        o.csum_start = start;
        o.csum_offset = off;
    }
    match h.gso_type() {
        vnet::GSO_NONE => Ok(o),
        vnet::GSO_TCPV4 => {
            o.gso_size = h.gso_size();
            let g = Tcp4Gso::new(frame, &o)?;
            if g.hdr_len + g.mss > max_segment {
                return Err(VnetError::BadGsoFrame("segments larger than the MTU"));
            }
            Ok(o)
        }
        // Anything else, GSO_ECN on any type included.
        t => Err(VnetError::UnsupportedGso(t)),
    }
}

/// The virtio-net header that hands `frame` with offload `o` to a TAP (all zero when none).
pub fn to_vnet(o: &Offload, frame: &[u8]) -> [u8; vnet::HEADER_LEN] {
    let mut h = vnet::Repr::default();
    if o.needs_csum {
        h.flags = vnet::F_NEEDS_CSUM;
        h.csum_start = o.csum_start;
        h.csum_offset = o.csum_offset;
    }
    // A super-frame was checked when it came in (from_vnet) or built (gro_merge); its headers
    // end after the TCP header at csum_start.
    let l4 = usize::from(o.csum_start);
    if o.is_gso()
        && let Some(&doff) = frame.get(l4 + tcp::field::DATA_OFFSET)
    {
        h.gso_type = vnet::GSO_TCPV4;
        // At most 18 + 60 + 60.
        h.hdr_len = (l4 + usize::from(doff >> 4) * tcp::DOFF_UNIT) as u16;
        h.gso_size = o.gso_size;
    }
    h.to_bytes()
}

/// Compute the checksum a partial frame still needs: the ones-complement sum from
/// `csum_start` to the end (the field's pseudo-header sum included), complemented, into the
/// field. A UDP result of zero is sent as all ones (RFC 768). Clears `o.needs_csum`.
pub fn finish_checksum(frame: &mut [u8], o: &mut Offload) {
    if !o.needs_csum {
        return;
    }
    let start = usize::from(o.csum_start);
    let field = start + usize::from(o.csum_offset);
    if field + 2 > frame.len() {
        // from_vnet checked this; a stage cannot have shortened the frame below it.
        o.needs_csum = false;
        return;
    }
    let mut c = !checksum::sum(&frame[start..]);
    if usize::from(o.csum_offset) == UDP_CSUM {
        c = udp::wire_checksum(c);
    }
    set_be16(&mut frame[field..], c);
    o.needs_csum = false;
}

/// A frame from a device that offloads TX checksums but hands over no checksum state (an
/// AF_XDP ring from a container whose offloads are on): its TCP/UDP checksum may be partial
/// (the field holds the pseudo-header sum) or complete, and nothing says which. The field is
/// rewritten to the partial form from the headers alone, the pseudo-header sum the sender's
/// kernel would have left there, and the returned offload says so; the switch then finishes
/// it where the output needs it (or hands it on partial to a port that takes offloads). The
/// same as a TAP's `NEEDS_CSUM` frame, at the cost of one pseudo-header sum.
///
/// IPv4 (not a fragment) and IPv6 (TCP or UDP right after the fixed header) only; anything
/// else is left as it is (no offload). A frame longer than its IP packet (padding) gets its
/// checksum computed here over the packet's own length, since a finish sums to the frame's end.
pub fn partial_from_unknown(frame: &mut [u8]) -> Offload {
    let Ok((l3, ethertype)) = ethernet::Packet::new_checked(&*frame).and_then(|e| e.l3()) else {
        return Offload::default();
    };
    let (l4, l4_len, proto, pseudo) = match ethertype {
        ETHERTYPE_IPV4 => {
            let Ok(ip) = ipv4::Packet::new_checked(&frame[l3..]) else {
                return Offload::default();
            };
            if ip.version() != ipv4::VERSION || ip.is_fragment() {
                return Offload::default();
            }
            let len = ip.payload().len();
            let pseudo = checksum::pseudo_sum(ip.addrs(), ip.protocol(), len);
            (l3 + ip.header_len(), len, ip.protocol(), pseudo)
        }
        ETHERTYPE_IPV6 => {
            // No IPv6 wrapper in the wire layer (the overlay carries IPv4): the fixed header.
            let Some(ip) = frame.get(l3..l3 + IPV6_HEADER_LEN) else {
                return Offload::default();
            };
            if ip[0] >> 4 != 6 {
                return Offload::default();
            }
            let len = usize::from(be16(&ip[4..]));
            // Both addresses, the upper-layer length and the next header (RFC 8200 8.1).
            let l = (len as u32).to_be_bytes();
            let tail = [l[0], l[1], l[2], l[3], 0, 0, 0, ip[6]];
            let pseudo = checksum::add(checksum::sum(&ip[8..40]), checksum::sum(&tail));
            (l3 + IPV6_HEADER_LEN, len, ip[6], pseudo)
        }
        _ => return Offload::default(),
    };
    let (field, min) = match proto {
        PROTO_TCP => (TCP_CSUM, tcp::HEADER_LEN),
        PROTO_UDP => (UDP_CSUM, udp::HEADER_LEN),
        _ => return Offload::default(),
    };
    if l4_len < min || l4 + l4_len > frame.len() {
        return Offload::default();
    }
    set_be16(&mut frame[l4 + field..], pseudo);
    let mut o = Offload {
        needs_csum: true,
        csum_start: l4 as u16,
        csum_offset: field as u16,
        gso_size: 0,
    };
    if l4 + l4_len < frame.len() {
        // Padded: finish it over the packet's own bytes now.
        finish_checksum(&mut frame[..l4 + l4_len], &mut o);
    }
    o
}

/// The IPv6 fixed header's length.
const IPV6_HEADER_LEN: usize = 40;

/// Before a NAT that updates the L4 checksum incrementally as if it were complete: turn the
/// partial field (pseudo-header sum `P`, ports not in it) into `!(P + sport + dport)`, which
/// the usual RFC 1624 updates keep right for address and port changes alike.
pub fn nat_prepare(frame: &mut [u8], o: &Offload) {
    let Some((s, f)) = ports_and_field(frame, o) else {
        return;
    };
    // TCP and UDP both start with the two ports.
    let ports = udp::Packet::new_unchecked(&frame[s..]);
    let q = checksum::add(
        checksum::add(be16(&frame[f..]), ports.src_port()),
        ports.dst_port(),
    );
    // 0xffff and 0 are the same sum; pick the one whose complement is not 0, which a UDP
    // rewrite would take for "no checksum".
    let q = if q == 0xffff { 0 } else { q };
    set_be16(&mut frame[f..], !q);
}

/// After the NAT: back to the partial form, `P' = Q' - sport' - dport'`.
pub fn nat_finish(frame: &mut [u8], o: &Offload) {
    let Some((s, f)) = ports_and_field(frame, o) else {
        return;
    };
    let ports = udp::Packet::new_unchecked(&frame[s..]);
    let q = !be16(&frame[f..]);
    let p = checksum::add(checksum::add(q, !ports.src_port()), !ports.dst_port());
    set_be16(&mut frame[f..], p);
}

/// The L4 header (ports first) and checksum field of a partial TCP/UDP frame.
fn ports_and_field(frame: &[u8], o: &Offload) -> Option<(usize, usize)> {
    if !o.needs_csum || !matches!(usize::from(o.csum_offset), TCP_CSUM | UDP_CSUM) {
        return None;
    }
    let s = usize::from(o.csum_start);
    let f = s + usize::from(o.csum_offset);
    // The ports end before the checksum field of either header.
    (f + 2 <= frame.len()).then_some((s, f))
}

/// A TCP/IPv4 super-frame's plan: where its headers are and how it cuts into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcp4Gso {
    l3: usize,
    l4: usize,
    /// Ethernet + IPv4 + TCP header bytes, copied in front of every segment.
    pub hdr_len: usize,
    /// Payload bytes per segment (the last may carry fewer).
    pub mss: usize,
    payload: usize,
}

impl Tcp4Gso {
    /// Check the super-frame's headers against its offload record.
    pub fn new(frame: &[u8], o: &Offload) -> Result<Tcp4Gso, VnetError> {
        let bad = |why| Err(VnetError::BadGsoFrame(why));
        if frame.len() < ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp::HEADER_LEN {
            return bad("shorter than Ethernet + IPv4 + TCP headers");
        }
        // Long enough for a tag: l3 cannot fail.
        let Ok((l3, ethertype)) = ethernet::Packet::new_unchecked(frame).l3() else {
            return bad("not IPv4");
        };
        if ethertype != ETHERTYPE_IPV4 {
            return bad("not IPv4");
        }
        // At least 54 - 18 bytes are left: a whole fixed IPv4 header.
        let ip = ipv4::Packet::new_unchecked(&frame[l3..]);
        let ihl = ip.header_len();
        if ip.version() != ipv4::VERSION || ihl < ipv4::HEADER_LEN || ip.protocol() != PROTO_TCP {
            return bad("not an IPv4 TCP header");
        }
        let l4 = l3 + ihl;
        if !o.needs_csum
            || usize::from(o.csum_start) != l4
            || usize::from(o.csum_offset) != TCP_CSUM
        {
            return bad("checksum offsets do not point at the TCP checksum");
        }
        if frame.len() < l4 + tcp::HEADER_LEN {
            return bad("truncated TCP header");
        }
        let doff = tcp::Packet::new_unchecked(&frame[l4..]).header_len();
        let hdr_len = l4 + doff;
        if doff < tcp::HEADER_LEN || frame.len() < hdr_len {
            return bad("bad TCP data offset");
        }
        if l3 + usize::from(ip.total_len()) != frame.len() {
            return bad("IPv4 total length does not match the frame");
        }
        let mss = usize::from(o.gso_size);
        let payload = frame.len() - hdr_len;
        if mss < MIN_GSO_SIZE || payload == 0 {
            return bad("segment size below TCP's minimum, or no payload");
        }
        Ok(Tcp4Gso {
            l3,
            l4,
            hdr_len,
            mss,
            payload,
        })
    }

    /// How many segments.
    #[inline]
    pub fn segments(&self) -> usize {
        self.payload.div_ceil(self.mss)
    }

    /// Length of segment `k`'s frame.
    #[inline]
    pub fn segment_len(&self, k: usize) -> usize {
        self.hdr_len + self.mss.min(self.payload - k * self.mss)
    }

    /// Where segment `k`'s payload lies in the super-frame.
    #[inline]
    pub fn payload_range(&self, k: usize) -> core::ops::Range<usize> {
        let off = self.hdr_len + k * self.mss;
        off..off + self.mss.min(self.payload - k * self.mss)
    }

    /// Write segment `k` of `frame` into `out` (at least [`Tcp4Gso::segment_len`] bytes): the
    /// headers with the IPv4 length, ID and checksum, the TCP sequence number, flags (FIN and
    /// PSH on the last segment only, CWR on the first only) and a full TCP checksum, then its
    /// slice of the payload. Returns the segment's length.
    pub fn write(&self, frame: &[u8], k: usize, out: &mut [u8]) -> usize {
        let payload = &frame[self.payload_range(k)];
        let len = self.hdr_len + payload.len();
        out[self.hdr_len..len].copy_from_slice(payload);
        self.write_header(frame, k, &mut out[..self.hdr_len]);
        len
    }

    /// Write only segment `k`'s headers into `out` ([`Tcp4Gso::hdr_len`] bytes), as
    /// [`Tcp4Gso::write`] does, its TCP checksum covering the payload where it lies in `frame`
    /// ([`Tcp4Gso::payload_range`]): for a scatter-gather send of the headers and the
    /// super-frame's own bytes, with no copy of the payload.
    pub fn write_header(&self, frame: &[u8], k: usize, out: &mut [u8]) {
        let range = self.payload_range(k);
        let off = range.start - self.hdr_len;
        let len = self.hdr_len + range.len();
        let out = &mut out[..self.hdr_len];
        out.copy_from_slice(&frame[..self.hdr_len]);
        let (l3, l4) = (self.l3, self.l4);
        let orig_ip = ipv4::Packet::new_unchecked(&frame[l3..l4]);
        let orig_tcp = tcp::Packet::new_unchecked(&frame[l4..self.hdr_len]);
        // IPv4: length, ID (incremented per segment as the kernel does), checksum. Segments
        // are at most 64 KB and number at most 745.
        let mut ip = ipv4::Packet::new_unchecked(&mut out[l3..l4]);
        ip.set_total_len((len - l3) as u16);
        ip.set_ident(orig_ip.ident().wrapping_add(k as u16));
        ip.fill_checksum();
        // TCP: sequence number, flags, checksum over the pseudo-header, the header and the
        // payload. The TCP header is a whole number of 32-bit words, so the payload's sum,
        // taken from its own start, adds to the header's as it is.
        let mut flags = orig_tcp.flags();
        if k + 1 != self.segments() {
            flags &= !(FLAG_FIN | FLAG_PSH);
        }
        if k != 0 {
            flags &= !FLAG_CWR;
        }
        let mut t = tcp::Packet::new_unchecked(&mut out[l4..]);
        t.set_seq_number(orig_tcp.seq_number().wrapping_add(off as u32));
        t.set_flags(flags);
        t.set_checksum(0);
        let c = !checksum::add(
            checksum::add(
                checksum::pseudo_sum(orig_ip.addrs(), PROTO_TCP, len - l4),
                checksum::sum(&out[l4..]),
            ),
            checksum::sum(&frame[range]),
        );
        tcp::Packet::new_unchecked(&mut out[l4..]).set_checksum(c);
    }
}

/// A TCP/IPv4 segment as receive coalescing (GRO) sees it.
#[derive(Clone, Copy, Debug)]
struct Seg {
    hdr_len: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

/// Where a coalescable segment's IPv4 header starts: untagged.
const GRO_L3: usize = ethernet::HEADER_LEN;
/// Ethernet + IPv4 without options: where a coalescable segment's TCP header starts.
const GRO_L4: usize = GRO_L3 + ipv4::HEADER_LEN;

/// A frame that may join a super-frame: untagged IPv4 without options, not a fragment, TCP with
/// a payload (its checksums are checked by [`gro_checksums_ok`] once a run is found).
fn gro_seg(f: &[u8]) -> Option<Seg> {
    if f.len() < GRO_L4 + tcp::HEADER_LEN
        || ethernet::Packet::new_unchecked(f).ethertype() != ETHERTYPE_IPV4
    {
        return None;
    }
    let ip = ipv4::Packet::new_unchecked(&f[GRO_L3..]);
    if ip.version() != ipv4::VERSION
        || ip.header_len() != ipv4::HEADER_LEN
        || ip.protocol() != PROTO_TCP
        || ip.is_fragment()
    {
        return None;
    }
    let end = GRO_L3 + usize::from(ip.total_len());
    if end > f.len() {
        return None;
    }
    let tcp = tcp::Packet::new_unchecked(&f[GRO_L4..]);
    let doff = tcp.header_len();
    let hdr_len = GRO_L4 + doff;
    if doff < tcp::HEADER_LEN || hdr_len >= end {
        return None;
    }
    Some(Seg {
        hdr_len,
        payload: end - hdr_len,
        seq: tcp.seq_number(),
        flags: tcp.flags(),
    })
}

/// Whether a frame [`gro_seg`] took has both checksums right. A merged frame is handed over as
/// already checked, so a damaged segment must never be folded into one.
fn gro_checksums_ok(f: &[u8]) -> bool {
    let ip = ipv4::Packet::new_unchecked(&f[GRO_L3..GRO_L4]);
    let end = GRO_L3 + usize::from(ip.total_len());
    ip.verify_checksum()
        && checksum::add(
            checksum::pseudo_sum(ip.addrs(), PROTO_TCP, end - GRO_L4),
            checksum::sum(&f[GRO_L4..end]),
        ) == 0xffff
}

/// Whether `b` belongs to the same flow and header shape as `a`: everything but the IPv4
/// length, ID and checksum and the TCP sequence number, flags and checksum is equal.
fn gro_same(a: &[u8], b: &[u8], hdr_len: usize) -> bool {
    use ipv4::field as ip;
    use tcp::field as t;
    let same = |r: core::ops::Range<usize>| a[r.clone()] == b[r];
    // Ethernet, IPv4 version/IHL, TOS
    same(0..GRO_L3 + ip::LENGTH.start)
        // flags, TTL, protocol
        && same(GRO_L3 + ip::FLG_OFF.start..GRO_L3 + ip::CHECKSUM.start)
        // addresses, ports
        && same(GRO_L3 + ip::SRC_ADDR.start..GRO_L4 + t::PORTS.end)
        // ack, data offset
        && same(GRO_L4 + t::ACK_NUM.start..GRO_L4 + t::FLAGS)
        && same(GRO_L4 + t::WINDOW.start..GRO_L4 + t::WINDOW.end)
        // urgent pointer, options
        && same(GRO_L4 + t::URGENT.start..hdr_len)
}

/// Receive coalescing for an output that takes TCP super-frames (a TAP with offloads): how many
/// packets from the start of `pkts` merge into one (at least 2; 0 or 1 means none). A run is
/// in-order segments of one TCP/IPv4 flow with equal headers, all of the first one's payload
/// size but the last (which may be shorter), plain ACKs but the last (which may also carry PSH),
/// at most 64 KB together, each with its checksums right; as the kernel's `tcp_gro_receive`
/// would merge them. None of them may have offload work left.
pub fn gro_run(pkts: &[crate::Packet]) -> usize {
    let Some(first) = pkts.first() else {
        return 0;
    };
    if first.meta.offload != Offload::default() {
        return 0;
    }
    let h = first.data();
    let Some(hs) = gro_seg(h) else {
        return 0;
    };
    if hs.flags != FLAG_ACK || hs.payload < MIN_GSO_SIZE {
        return 1;
    }
    let mut n = 1;
    let mut next_seq = hs.seq.wrapping_add(hs.payload as u32);
    let mut total = hs.hdr_len - GRO_L3 + hs.payload;
    for p in &pkts[1..] {
        if p.meta.offload != Offload::default() {
            break;
        }
        let f = p.data();
        let Some(s) = gro_seg(f) else {
            break;
        };
        if s.hdr_len != hs.hdr_len
            || s.seq != next_seq
            || s.payload > hs.payload
            || total + s.payload > usize::from(u16::MAX)
            || (s.flags != FLAG_ACK && s.flags != FLAG_ACK | FLAG_PSH)
            || !gro_same(h, f, hs.hdr_len)
        {
            break;
        }
        n += 1;
        total += s.payload;
        next_seq = next_seq.wrapping_add(s.payload as u32);
        // A short or pushed segment ends the run.
        if s.payload < hs.payload || s.flags != FLAG_ACK {
            break;
        }
    }
    if n < 2 {
        return n;
    }
    // Only a run pays for checksums: the run ends before the first damaged segment.
    pkts[..n]
        .iter()
        .position(|p| !gro_checksums_ok(p.data()))
        .unwrap_or(n)
}

/// The headers of the super-frame of a run found by [`gro_run`], into `out` (at least
/// [`GRO_MAX_HEADER`] bytes): the first segment's headers with the total IPv4 length and
/// checksum, the last one's TCP flags and a partial TCP checksum (the pseudo-header sum).
/// Every segment's payload follows them in order ([`gro_payload`]). Returns the headers'
/// length, the super-frame's length and the offload record to hand it over with: what a TAP
/// writes with one `writev` of the headers and the segments' payloads where they lie, no copy.
pub fn gro_header(pkts: &[crate::Packet], out: &mut [u8]) -> (usize, usize, Offload) {
    let h = pkts[0].data();
    let hdr_len = GRO_L4 + tcp::Packet::new_unchecked(&h[GRO_L4..]).header_len();
    out[..hdr_len].copy_from_slice(&h[..hdr_len]);
    let mut len = hdr_len;
    let mut mss = 0;
    let mut flags = FLAG_ACK;
    for p in pkts {
        let chunk = gro_payload(p.data(), hdr_len);
        mss = mss.max(chunk.len());
        len += chunk.len();
        flags = tcp::Packet::new_unchecked(&p.data()[GRO_L4..]).flags();
    }
    let mut ip = ipv4::Packet::new_unchecked(&mut out[GRO_L3..GRO_L4]);
    // gro_run kept the run within 64 KB.
    ip.set_total_len((len - GRO_L3) as u16);
    ip.fill_checksum();
    let p = checksum::pseudo_sum(ip.addrs(), PROTO_TCP, len - GRO_L4);
    let mut t = tcp::Packet::new_unchecked(&mut out[GRO_L4..hdr_len]);
    t.set_flags(flags);
    t.set_checksum(p);
    (
        hdr_len,
        len,
        Offload {
            needs_csum: true,
            csum_start: GRO_L4 as u16,
            csum_offset: TCP_CSUM as u16,
            // At most 64 KB.
            gso_size: mss as u16,
        },
    )
}

/// The most header bytes [`gro_header`] writes: Ethernet, IPv4 without options, TCP with
/// the most options.
pub const GRO_MAX_HEADER: usize = GRO_L4 + 60;

/// A segment's payload, after its `hdr_len` header bytes, within its IPv4 length (a segment of
/// a run found by [`gro_run`]).
#[inline]
pub fn gro_payload(f: &[u8], hdr_len: usize) -> &[u8] {
    let end = GRO_L3 + usize::from(ipv4::Packet::new_unchecked(&f[GRO_L3..]).total_len());
    &f[hdr_len..end]
}

/// Write the super-frame of a run found by [`gro_run`] into `out` (at least 64 KB + headers):
/// [`gro_header`]'s headers, then every payload in order. Returns its length and the offload
/// record to hand it over with.
pub fn gro_merge(pkts: &[crate::Packet], out: &mut [u8]) -> (usize, Offload) {
    let (hdr_len, len, o) = gro_header(pkts, out);
    let mut at = hdr_len;
    for p in pkts {
        let chunk = gro_payload(p.data(), hdr_len);
        out[at..at + chunk.len()].copy_from_slice(chunk);
        at += chunk.len();
    }
    (len, o)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket};

    use crate::wire::checksum::tests::slow_sum;
    use crate::wire::vnet::{GSO_TCPV4, HEADER_LEN as VNET_HDR_LEN};

    const ETH_HDR: usize = ethernet::HEADER_LEN;
    const TCP_CWR: u8 = FLAG_CWR;

    fn rd16(b: &[u8], i: usize) -> u16 {
        be16(&b[i..])
    }

    fn wr16(b: &mut [u8], i: usize, v: u16) {
        set_be16(&mut b[i..], v);
    }

    const SRC: [u8; 4] = [10, 0, 9, 12];
    const DST: [u8; 4] = [10, 0, 9, 22];

    fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u16 {
        let mut p = [0u8; 12];
        p[..4].copy_from_slice(&src);
        p[4..8].copy_from_slice(&dst);
        p[9] = proto;
        p[10..].copy_from_slice(&(len as u16).to_be_bytes());
        slow_sum(&p)
    }

    /// A TCP/IPv4 frame as a TSO-capable stack hands it over: checksum field = pseudo sum.
    pub(crate) fn tso_frame(payload: usize, flags: u8, opts: usize) -> (Vec<u8>, Offload) {
        let doff = 20 + opts;
        let total = 20 + doff + payload;
        let mut f = vec![0u8; ETH_HDR + total];
        f[..6].copy_from_slice(&[2, 0x42, 10, 0, 9, 22]);
        f[6..12].copy_from_slice(&[2, 0x42, 10, 0, 9, 12]);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip = ETH_HDR;
        f[ip] = 0x45;
        wr16(&mut f, ip + 2, total as u16);
        wr16(&mut f, ip + 4, 0xfff0);
        f[ip + 6] = 0x40; // DF
        f[ip + 8] = 64;
        f[ip + 9] = PROTO_TCP;
        f[ip + 12..ip + 16].copy_from_slice(&SRC);
        f[ip + 16..ip + 20].copy_from_slice(&DST);
        let c = !slow_sum(&f[ip..ip + 20]);
        wr16(&mut f, ip + 10, c);
        let t = ip + 20;
        wr16(&mut f, t, 40000);
        wr16(&mut f, t + 2, 5201);
        f[t + 4..t + 8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        f[t + 12] = ((doff / 4) as u8) << 4;
        f[t + 13] = flags;
        wr16(&mut f, t + 14, 65000);
        for (i, b) in f[t + 20..t + doff].iter_mut().enumerate() {
            *b = if i % 4 == 3 { 0 } else { 1 }; // NOPs and EOLs
        }
        for (i, b) in f[t + doff..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        wr16(
            &mut f,
            t + TCP_CSUM,
            pseudo_sum(SRC, DST, PROTO_TCP, doff + payload),
        );
        let o = Offload {
            needs_csum: true,
            csum_start: t as u16,
            csum_offset: TCP_CSUM as u16,
            gso_size: 0,
        };
        (f, o)
    }

    pub(crate) fn tcp_ok(frame: &[u8]) -> bool {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        ip.verify_checksum()
            && tcp.verify_checksum(
                &IpAddress::Ipv4(Ipv4Address::from(SRC)),
                &IpAddress::Ipv4(Ipv4Address::from(DST)),
            )
    }

    #[test]
    fn finish_checksum_completes_a_partial_tcp_frame() {
        let (mut f, mut o) = tso_frame(333, 0x18, 12);
        assert!(!tcp_ok(&f));
        finish_checksum(&mut f, &mut o);
        assert!(tcp_ok(&f));
        assert!(!o.needs_csum);
    }

    #[test]
    fn finish_checksum_of_udp_never_writes_zero() {
        // A UDP datagram whose complete checksum comes out 0 must carry 0xffff.
        let mut f = vec![0u8; 8];
        // Field (offset 6) holds a pseudo sum chosen so that the total sums to 0xffff.
        let rest = slow_sum(&f);
        wr16(&mut f, 6, !rest);
        let mut o = Offload {
            needs_csum: true,
            csum_start: 0,
            csum_offset: UDP_CSUM as u16,
            gso_size: 0,
        };
        finish_checksum(&mut f, &mut o);
        assert_eq!(rd16(&f, 6), 0xffff);
    }

    #[test]
    fn vnet_headers_round_trip_and_bad_ones_are_refused() {
        let (mut f, mut o) = tso_frame(4000, 0x19, 12);
        o.gso_size = 1398;
        let h = to_vnet(&o, &f);
        assert_eq!(h[1], GSO_TCPV4);
        assert_eq!(u16::from_le_bytes([h[2], h[3]]), (14 + 20 + 32) as u16);
        assert_eq!(from_vnet(&h, &f, 1464), Ok(o));
        // Segments over the MTU, or below TCP's minimum segment size.
        assert!(matches!(
            from_vnet(&h, &f, 1400),
            Err(VnetError::BadGsoFrame(_))
        ));
        let mut tiny = h;
        tiny[4..6].copy_from_slice(&(MIN_GSO_SIZE as u16 - 1).to_le_bytes());
        assert!(matches!(
            from_vnet(&tiny, &f, 1464),
            Err(VnetError::BadGsoFrame(_))
        ));
        // UDP, IPv6 and ECN segmentation were not offered.
        // 0x80: VIRTIO_NET_HDR_GSO_ECN, a flag on the type; not asked for, so refused.
        for t in [3u8, 4, 5, GSO_TCPV4 | 0x80] {
            let mut bad = h;
            bad[1] = t;
            assert_eq!(from_vnet(&bad, &f, 1464), Err(VnetError::UnsupportedGso(t)));
        }
        // Checksum offsets past the end.
        let mut bad = h;
        bad[6..8].copy_from_slice(&(f.len() as u16).to_le_bytes());
        bad[1] = 0;
        assert_eq!(
            from_vnet(&bad, &f, 1464),
            Err(VnetError::BadChecksumOffsets)
        );
        // A total length that disagrees with the frame.
        f.push(0);
        assert!(matches!(
            from_vnet(&h, &f, 1464),
            Err(VnetError::BadGsoFrame(_))
        ));
        // Nothing to do: all zero both ways.
        assert_eq!(to_vnet(&Offload::default(), &f), [0; VNET_HDR_LEN]);
        assert_eq!(
            from_vnet(&[0; VNET_HDR_LEN], &f, 1464),
            Ok(Offload::default())
        );
    }

    #[test]
    fn nat_on_a_partial_frame_keeps_the_pseudo_sum_right() {
        let (mut f, o) = tso_frame(500, 0x18, 0);
        let (ip, t) = (ETH_HDR, ETH_HDR + 20);
        nat_prepare(&mut f, &o);
        // A DNAT as lb-nat does it: new destination address and port, RFC 1624 updates.
        let old_dst = u32::from_be_bytes(DST);
        let new_dst: u32 = u32::from_be_bytes([10, 0, 9, 100]);
        let upd32 = |hc: u16, old: u32, new: u32| {
            let acc = u32::from(!hc)
                + u32::from(!(old >> 16) as u16)
                + u32::from(!(old as u16))
                + (new >> 16)
                + (new & 0xffff);
            let a = (acc & 0xffff) + (acc >> 16);
            !(((a & 0xffff) + (a >> 16)) as u16)
        };
        let c = rd16(&f, t + TCP_CSUM);
        let c = upd32(c, old_dst, new_dst);
        let c = upd32(c, 5201, 8080);
        wr16(&mut f, t + TCP_CSUM, c);
        f[ip + 16..ip + 20].copy_from_slice(&new_dst.to_be_bytes());
        wr16(&mut f, t + 2, 8080);
        nat_finish(&mut f, &o);
        // The field is the pseudo sum of the new addresses again.
        assert_eq!(
            rd16(&f, t + TCP_CSUM),
            pseudo_sum(SRC, [10, 0, 9, 100], PROTO_TCP, 20 + 500)
        );
    }

    #[test]
    fn segments_carry_their_own_headers_and_checksums() {
        let (f, mut o) = tso_frame(4000, 0x19 | TCP_CWR, 12); // FIN|PSH|ACK|CWR
        o.gso_size = 1398;
        let g = Tcp4Gso::new(&f, &o).unwrap();
        assert_eq!(g.segments(), 3);
        let mut payload = Vec::new();
        for k in 0..3 {
            let mut out = vec![0u8; 2000];
            let n = g.write(&f, k, &mut out);
            assert_eq!(n, g.segment_len(k));
            let seg = &out[..n];
            assert!(tcp_ok(seg), "segment {k}");
            let ip = Ipv4Packet::new_checked(&seg[ETH_HDR..]).unwrap();
            assert_eq!(ip.ident(), 0xfff0u16.wrapping_add(k as u16));
            assert!(ip.dont_frag());
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(
                tcp.seq_number().0 as u32,
                0xffff_fff0u32.wrapping_add(1398 * k as u32)
            );
            assert_eq!(tcp.fin(), k == 2);
            assert_eq!(tcp.psh(), k == 2);
            assert_eq!(tcp.cwr(), k == 0);
            assert!(tcp.ack());
            assert_eq!(tcp.header_len(), 32);
            payload.extend_from_slice(tcp.payload());
        }
        assert_eq!(payload, f[ETH_HDR + 52..]);
    }

    #[test]
    fn udp_checksum_via_smoltcp() {
        // finish_checksum on a real UDP datagram gives what smoltcp verifies.
        let mut f = vec![0u8; 20 + 8 + 13];
        f[0] = 0x45;
        let total = f.len() as u16;
        wr16(&mut f, 2, total);
        f[9] = 17;
        f[12..16].copy_from_slice(&SRC);
        f[16..20].copy_from_slice(&DST);
        let c = !slow_sum(&f[..20]);
        wr16(&mut f, 10, c);
        wr16(&mut f, 20, 53);
        wr16(&mut f, 22, 5353);
        wr16(&mut f, 24, 21);
        f[28..].copy_from_slice(b"hello, world!");
        wr16(&mut f, 26, pseudo_sum(SRC, DST, 17, 21));
        let mut o = Offload {
            needs_csum: true,
            csum_start: 20,
            csum_offset: UDP_CSUM as u16,
            gso_size: 0,
        };
        finish_checksum(&mut f, &mut o);
        let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(Ipv4Address::from(SRC)),
            &IpAddress::Ipv4(Ipv4Address::from(DST))
        ));
    }

    fn packets(frames: &[Vec<u8>]) -> Vec<crate::Packet> {
        frames
            .iter()
            .map(|f| crate::Packet::from_frame(f))
            .collect()
    }

    /// Cut a super-frame into segments as the switch does for a port without offloads.
    fn cut(payload: usize, mss: usize, flags: u8) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (f, mut o) = tso_frame(payload, flags, 12);
        o.gso_size = mss as u16;
        let g = Tcp4Gso::new(&f, &o).unwrap();
        let segs = (0..g.segments())
            .map(|k| {
                let mut out = vec![0u8; 2000];
                let n = g.write(&f, k, &mut out);
                out.truncate(n);
                out
            })
            .collect();
        (f, segs)
    }

    #[test]
    fn gro_merges_what_gso_cut_back_into_the_same_stream() {
        let (f, segs) = cut(10_000, 1398, 0x18); // ACK|PSH on the last
        let pkts = packets(&segs);
        assert_eq!(gro_run(&pkts), segs.len());
        let mut out = vec![0u8; GSO_MAX_FRAME];
        let (n, o) = gro_merge(&pkts, &mut out);
        let merged = &mut out[..n];
        assert_eq!(n, f.len());
        assert_eq!(merged[GRO_L4 + 13], 0x18);
        assert_eq!(o.gso_size, 1398);
        // Cut again: the same segments.
        let g = Tcp4Gso::new(merged, &o).unwrap();
        for (k, seg) in segs.iter().enumerate() {
            let mut again = vec![0u8; 2000];
            let len = g.write(merged, k, &mut again);
            // The IPv4 ID of the merged frame is the first one's, so the IDs match too.
            assert_eq!(&again[..len], &seg[..], "segment {k}");
        }
        // And the partial checksum finishes to a valid one.
        let mut whole = merged.to_vec();
        let mut o2 = o;
        o2.gso_size = 0;
        finish_checksum(&mut whole, &mut o2);
        assert!(tcp_ok(&whole));
    }

    #[test]
    fn gro_header_with_the_payloads_in_place_is_the_merged_frame() {
        let (_, segs) = cut(9_000, 1001, 0x18); // an odd MSS, ACK|PSH on the last
        let pkts = packets(&segs);
        let run = gro_run(&pkts);
        assert_eq!(run, segs.len());
        let mut merged = vec![0u8; GSO_MAX_FRAME];
        let (n, o) = gro_merge(&pkts[..run], &mut merged);
        let mut hdr = [0u8; GRO_MAX_HEADER];
        let (hl, len, o2) = gro_header(&pkts[..run], &mut hdr);
        let mut gathered = hdr[..hl].to_vec();
        for p in &pkts[..run] {
            gathered.extend_from_slice(gro_payload(p.data(), hl));
        }
        assert_eq!((len, o2), (n, o));
        assert_eq!(&gathered[..], &merged[..n]);
    }

    #[test]
    fn gro_stops_at_gaps_other_flows_bad_checksums_and_flags() {
        let (_, segs) = cut(8 * 1000, 1000, 0x10);
        let run = |frames: &[Vec<u8>]| gro_run(&packets(frames));
        assert_eq!(run(&segs), 8);
        // A gap in the sequence.
        let gap = [segs[0].clone(), segs[2].clone()];
        assert_eq!(run(&gap), 1);
        // Another flow (source port).
        let mut other = segs[1].clone();
        other[GRO_L4] ^= 1;
        assert_eq!(run(&[segs[0].clone(), other]), 1);
        // A damaged payload is never merged.
        let mut bad = segs[1].clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(run(&[segs[0].clone(), bad.clone(), segs[2].clone()]), 1);
        assert!(run(&[bad.clone(), segs[2].clone()]) < 2);
        assert!(run(&[bad]) < 2);
        // A FIN, a short segment and a pushed segment end a run; a run never starts at a push.
        let (_, fin) = cut(3000, 1000, 0x11);
        assert_eq!(run(&fin), 2);
        // A shorter segment joins as the last one.
        let short = cut(1500, 1000, 0x10).1[1].clone();
        assert_eq!(run(&[segs[0].clone(), short.clone(), segs[2].clone()]), 2);
        let (_, pushed) = cut(2500, 1000, 0x18);
        assert_eq!(run(&pushed), 3);
        assert_eq!(run(&pushed[2..]), 1);
        // Frames with offload work left are not touched.
        let mut p = packets(&segs);
        p[0].meta.offload.needs_csum = true;
        assert_eq!(gro_run(&p), 0);
    }

    proptest! {
        #[test]
        fn any_cut_reassembles_and_verifies(payload in 1usize..9000, mss in 536usize..1460,
                                            opts in 0usize..11) {
            let (f, mut o) = tso_frame(payload, 0x18, opts * 4);
            o.gso_size = mss as u16;
            let g = Tcp4Gso::new(&f, &o).unwrap();
            prop_assert_eq!(g.segments(), payload.div_ceil(mss));
            let mut got = Vec::new();
            let mut out = vec![0u8; 1600];
            for k in 0..g.segments() {
                let n = g.write(&f, k, &mut out);
                prop_assert!(tcp_ok(&out[..n]));
                got.extend_from_slice(&out[g.hdr_len..n]);
            }
            prop_assert_eq!(&got[..], &f[g.hdr_len..]);
        }

        /// The scatter-gather form (headers written apart, the payload left where it lies)
        /// gives the same segments, whatever the MSS's parity.
        #[test]
        fn headers_apart_match_whole_segments(payload in 1usize..9000, mss in 536usize..1460,
                                              opts in 0usize..11) {
            let (f, mut o) = tso_frame(payload, 0x19, opts * 4);
            o.gso_size = mss as u16;
            let g = Tcp4Gso::new(&f, &o).unwrap();
            let mut whole = vec![0u8; 1600];
            let mut hdr = vec![0u8; g.hdr_len];
            for k in 0..g.segments() {
                let n = g.write(&f, k, &mut whole);
                g.write_header(&f, k, &mut hdr);
                let mut apart = hdr.clone();
                apart.extend_from_slice(&f[g.payload_range(k)]);
                prop_assert_eq!(&apart[..], &whole[..n]);
                prop_assert!(tcp_ok(&apart));
            }
        }

        #[test]
        fn garbage_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                       h in any::<[u8; 10]>()) {
            let _ = from_vnet(&h, &bytes, 1500);
        }

        /// Whatever a TAP hands over: accepted or refused, never a panic, and an accepted
        /// super-frame cuts into segments that hold exactly its payload.
        #[test]
        fn anything_accepted_is_safe_to_finish_cut_and_merge(
            payload in 1usize..3000, mss in 1u16..1500, opts in 0usize..11,
            flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
            flags in any::<u8>(), gso_type in prop_oneof![Just(0u8), Just(1u8), any::<u8>()],
        ) {
            let (mut f, o) = tso_frame(payload, 0x10, opts * 4);
            for (at, v) in flips {
                let i = at % f.len();
                f[i] = v;
            }
            let mut h = to_vnet(&Offload { gso_size: mss, ..o }, &f);
            h[0] = flags;
            h[1] = gso_type;
            h[4..6].copy_from_slice(&mss.to_le_bytes());
            let Ok(mut o) = from_vnet(&h, &f, 1600) else { return Ok(()); };
            if o.is_gso() {
                let g = Tcp4Gso::new(&f, &o).unwrap();
                let mut out = vec![0u8; 1600];
                let mut total = 0;
                for k in 0..g.segments() {
                    prop_assert!(g.segment_len(k) <= out.len());
                    total += g.write(&f, k, &mut out) - g.hdr_len;
                }
                prop_assert_eq!(total, f.len() - g.hdr_len);
            }
            let mut pkt = crate::Packet::from_frame(&f);
            nat_prepare(pkt.data_mut(), &o);
            nat_finish(pkt.data_mut(), &o);
            finish_checksum(&mut f, &mut o);
            let pkts = vec![crate::Packet::from_frame(&f), pkt];
            let n = gro_run(&pkts);
            if n >= 2 {
                let mut out = vec![0u8; GSO_MAX_FRAME];
                let _ = gro_merge(&pkts[..n], &mut out);
            }
        }
    }

    /// A UDP/IPv4 frame with a complete checksum, built by smoltcp-independent code.
    fn udp4_complete(payload: &[u8]) -> Vec<u8> {
        let mac: crate::Mac = "02:00:00:00:00:01".parse().unwrap();
        crate::frames::udp(mac, mac, SRC.into(), DST.into(), 5000, 5001, payload)
    }

    fn l4_sum_ok(f: &[u8], l4: usize, src: &[u8], dst: &[u8], proto: u8) -> bool {
        let mut p = src.to_vec();
        p.extend_from_slice(dst);
        let len = (f.len() - l4) as u32;
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
        checksum::add(slow_sum(&p), slow_sum(&f[l4..])) == 0xffff
    }

    #[test]
    fn unknown_checksums_become_partial_and_finish_right() {
        // Complete, then partial: both end up right after a finish.
        let mut f = udp4_complete(b"complete checksum");
        let before = f.clone();
        let mut o = partial_from_unknown(&mut f);
        assert!(o.needs_csum);
        assert_eq!((o.csum_start, o.csum_offset), (34, 6));
        finish_checksum(&mut f, &mut o);
        assert_eq!(f, before, "a complete checksum comes back the same");
        let (mut t, _) = tso_frame(300, FLAG_ACK, 12);
        let mut o = partial_from_unknown(&mut t);
        assert_eq!((o.csum_start, o.csum_offset), (34, 16));
        finish_checksum(&mut t, &mut o);
        assert!(l4_sum_ok(&t, 34, &SRC, &DST, 6));
        // Garbage in the field is overwritten: only the headers count.
        let mut t2 = t.clone();
        wr16(&mut t2, 50, 0x1234);
        let mut o = partial_from_unknown(&mut t2);
        finish_checksum(&mut t2, &mut o);
        assert_eq!(t2, t);
    }

    #[test]
    fn unknown_checksums_of_ipv6_padded_and_other_frames() {
        // UDP/IPv6: 40-byte header, next header 17.
        let mut f = vec![0u8; ETH_HDR + 40 + 8 + 5];
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f[14] = 0x60;
        wr16(&mut f, 18, 13);
        f[20] = 17;
        f[22..38].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f[38..54].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        wr16(&mut f, 58, 13);
        f[62..].copy_from_slice(b"hello");
        let mut o = partial_from_unknown(&mut f);
        assert_eq!((o.csum_start, o.csum_offset), (54, 6));
        finish_checksum(&mut f, &mut o);
        let (s6, d6) = (f[22..38].to_vec(), f[38..54].to_vec());
        assert!(l4_sum_ok(&f, 54, &s6, &d6, 17));
        // Padded past the IP packet: finished here, over the packet's bytes only.
        let mut p = udp4_complete(b"x");
        let want = p.clone();
        p.extend_from_slice(&[0xee; 9]);
        let o = partial_from_unknown(&mut p);
        assert!(!o.needs_csum);
        assert_eq!(p[..want.len()], want[..]);
        // A fragment, ICMP, ARP, a short frame: left alone.
        let mut frag = udp4_complete(b"frag");
        wr16(&mut frag, 20, 0x2000);
        let keep = frag.clone();
        assert!(!partial_from_unknown(&mut frag).needs_csum);
        assert_eq!(frag, keep);
        let mut icmp = udp4_complete(b"icmp");
        icmp[23] = 1;
        assert!(!partial_from_unknown(&mut icmp).needs_csum);
        assert!(!partial_from_unknown(&mut [0u8; 13]).needs_csum);
        let mut arp = udp4_complete(b"arp");
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(!partial_from_unknown(&mut arp).needs_csum);
    }
}
