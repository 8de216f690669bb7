//! The full outer Ethernet/IPv4/UDP/VXLAN header (50 bytes) in front of an inner frame.
//!
//! Where it sits: at the end of `vxlan-encap`, for an underlay that sends whole Ethernet frames
//! (AF_XDP on the NIC). The stage pushes [`OUTER_HEADER_LEN`] bytes into the buffer's headroom
//! and hands this module the 50-byte slice and the inner frame behind it ([`split_outer`]); the
//! inner frame is only read (for the flow hash, ECN and the optional UDP checksum), never copied.
//! The UDP-socket underlay does not need this: there the kernel adds outer IP and UDP.
//!
//! Every field is what the Linux kernel's vxlan device puts on the wire, so a kernel peer (or
//! tshark) cannot tell the two apart:
//! - UDP source port: `udp_flow_src_port()` (include/net/udp.h): a hash of the inner flow,
//!   `hash ^= hash << 16`, scaled with `((u64)hash * (max - min)) >> 32) + min` into the local
//!   port range (32768..60999 by default, which the vxlan driver uses when `srcport` is unset;
//!   like the kernel the top of the range is never reached). The kernel's flow hash is keyed
//!   with a per-boot random secret, so the key here is a per-node seed ([`OuterConfig::hash_seed`]).
//!   Like the kernel's `__flow_hash_consistentify`, both directions of a flow hash alike.
//! - IPv4: TOS 0 with the inner packet's ECN bits copied out (`ip_tunnel_ecn_encap`, CE becomes
//!   ECT(0)), TTL 64 (`ip_default_ttl`), protocol UDP, DF set (the overlay MTU leaves room for
//!   the 50 bytes, so the outer packet is never fragmented; equals the kernel's `df set`).
//! - IP ID: `iptunnel_xmit` always calls `__ip_select_ident`, a counter per (daddr, saddr,
//!   protocol); [`OuterTemplate`] is per remote VTEP, so its own counter is exactly that.
//! - UDP destination port 4789, UDP checksum 0 (the kernel's `udpcsum` default for IPv4), or
//!   computed when [`OuterConfig::udp_checksum`] is set.
//!
//! ```text
//!  0          14                    34        42        50
//!  | Ethernet | IPv4 (no options)   | UDP     | VXLAN   | inner Ethernet frame ...
//! ```
//!
//! [`OuterTemplate`] precomputes the constant part per remote VTEP; per packet it copies 50
//! bytes and patches lengths, IP ID, TOS, the IP checksum (from a precomputed partial sum) and
//! the UDP source port. [`emit_outer`] builds everything from scratch, for tests and cold paths.

pub use crate::wire::VXLAN_PORT;
use crate::wire::{self, Vni};
use core::net::Ipv4Addr;

/// Length of the outer headers: Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const OUTER_HEADER_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN + wire::HEADER_LEN;

/// Outer TTL: the kernel's `ip_default_ttl`, which vxlan uses unless `ttl` is configured.
pub const DEFAULT_TTL: u8 = 64;

/// Lowest outer UDP source port: the kernel's default `ip_local_port_range` low end.
pub const PORT_RANGE_MIN: u16 = 32768;

/// Top of the outer UDP source port range: the kernel's default `ip_local_port_range` high end.
pub const PORT_RANGE_MAX: u16 = 60999;

/// Largest inner frame: the outer IPv4 total length must fit 16 bits.
pub const MAX_INNER_LEN: usize = u16::MAX as usize - (OUTER_HEADER_LEN - ETH_LEN);

/// Ethernet header length.
const ETH_LEN: usize = 14;
/// IPv4 header length without options.
const IPV4_LEN: usize = 20;
/// UDP header length.
const UDP_LEN: usize = 8;
/// Length of two MAC addresses.
const MACS_LEN: usize = 12;
/// EtherType IPv4.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType IPv6.
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IPv4 version 4, header length 5 words.
const IPV4_VER_IHL: u8 = 0x45;
/// IPv4 Don't Fragment flag in the flags/fragment-offset word.
const IPV4_DF: u16 = 0x4000;
/// IPv4 More Fragments flag.
const IPV4_MF: u16 = 0x2000;
/// IPv4 fragment offset mask.
const IPV4_OFFSET_MASK: u16 = 0x1fff;
/// IP protocol numbers whose first 4 bytes are source and destination ports.
const IPPROTO_TCP: u8 = 6;
/// UDP.
const IPPROTO_UDP: u8 = 17;
/// DCCP.
const IPPROTO_DCCP: u8 = 33;
/// SCTP.
const IPPROTO_SCTP: u8 = 132;
/// UDP-Lite.
const IPPROTO_UDPLITE: u8 = 136;
/// The ECN bits of the TOS / traffic class byte.
const ECN_MASK: u8 = 0x03;
/// ECN Congestion Experienced.
const ECN_CE: u8 = 0x03;
/// ECN Capable Transport (0).
const ECN_ECT0: u8 = 0x02;
/// The kernel's `JHASH_INITVAL`.
const JHASH_INITVAL: u32 = 0xdead_beef;
/// Low IHL nibble mask.
const IHL_MASK: u8 = 0x0f;
/// Bytes per IHL unit.
const IHL_UNIT: usize = 4;

/// Byte offsets of the outer header fields.
pub mod field {
    use core::ops::Range;

    /// Ethernet destination MAC.
    pub const ETH_DST: Range<usize> = 0..6;
    /// Ethernet source MAC.
    pub const ETH_SRC: Range<usize> = 6..12;
    /// EtherType.
    pub const ETH_TYPE: Range<usize> = 12..14;
    /// IPv4 version and header length.
    pub const IP_VER_IHL: usize = 14;
    /// IPv4 TOS (DSCP and ECN).
    pub const IP_TOS: usize = 15;
    /// IPv4 total length.
    pub const IP_LEN: Range<usize> = 16..18;
    /// IPv4 identification.
    pub const IP_ID: Range<usize> = 18..20;
    /// IPv4 flags and fragment offset.
    pub const IP_FRAG: Range<usize> = 20..22;
    /// IPv4 TTL.
    pub const IP_TTL: usize = 22;
    /// IPv4 protocol.
    pub const IP_PROTO: usize = 23;
    /// IPv4 header checksum.
    pub const IP_CHECKSUM: Range<usize> = 24..26;
    /// IPv4 source address.
    pub const IP_SRC: Range<usize> = 26..30;
    /// IPv4 destination address.
    pub const IP_DST: Range<usize> = 30..34;
    /// The whole IPv4 header.
    pub const IP_HEADER: Range<usize> = 14..34;
    /// UDP source port.
    pub const UDP_SRC: Range<usize> = 34..36;
    /// UDP destination port.
    pub const UDP_DST: Range<usize> = 36..38;
    /// UDP length.
    pub const UDP_LEN: Range<usize> = 38..40;
    /// UDP checksum.
    pub const UDP_CHECKSUM: Range<usize> = 40..42;
    /// The UDP header, VXLAN header included (what the UDP checksum covers before the inner frame).
    pub const UDP_AND_VXLAN: Range<usize> = 34..50;
    /// The VXLAN header.
    pub const VXLAN: Range<usize> = 42..50;
}

/// Why an outer header cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OuterError {
    /// The inner frame is shorter than an Ethernet header.
    #[error("inner frame of {len} bytes is shorter than an Ethernet header")]
    InnerTooShort {
        /// Inner frame length.
        len: usize,
    },
    /// The inner frame does not fit an IPv4 packet.
    #[error("inner frame of {len} bytes exceeds {MAX_INNER_LEN}")]
    InnerTooLong {
        /// Inner frame length.
        len: usize,
    },
    /// The buffer cannot hold the outer header.
    #[error("buffer of {len} bytes cannot hold the {OUTER_HEADER_LEN}-byte outer header")]
    BufferTooShort {
        /// Buffer length.
        len: usize,
    },
    /// A source port range with `min >= max`.
    #[error("source port range {min}..{max} is empty")]
    EmptyPortRange {
        /// Requested low end.
        min: u16,
        /// Requested high end.
        max: u16,
    },
}

/// The range the outer UDP source port is scaled into, as the kernel's `udp_flow_src_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrcPortRange {
    min: u16,
    max: u16,
}

impl SrcPortRange {
    /// The kernel's default local port range, used by vxlan when `srcport` is not set.
    pub const KERNEL_DEFAULT: SrcPortRange = SrcPortRange {
        min: PORT_RANGE_MIN,
        max: PORT_RANGE_MAX,
    };

    /// A range `min..max` (like the kernel, `max` itself is never produced).
    pub const fn new(min: u16, max: u16) -> Result<SrcPortRange, OuterError> {
        if min >= max {
            Err(OuterError::EmptyPortRange { min, max })
        } else {
            Ok(SrcPortRange { min, max })
        }
    }

    /// The source port for a flow hash, exactly as `udp_flow_src_port` scales it.
    #[inline]
    pub const fn port(&self, hash: u32) -> u16 {
        // Obfuscate the hash on the wire; only the upper 16 bits matter for the scaling.
        let hash = hash ^ (hash << 16);
        let span = (self.max - self.min) as u64;
        // The product shifted by 32 is below `span`, so it fits u16 and the sum stays <= max.
        (((hash as u64 * span) >> 32) as u16) + self.min
    }
}

impl Default for SrcPortRange {
    fn default() -> Self {
        SrcPortRange::KERNEL_DEFAULT
    }
}

/// Everything constant about the outer header towards one remote VTEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterConfig {
    /// This node's underlay MAC.
    pub src_mac: [u8; 6],
    /// The next hop's MAC towards the remote VTEP.
    pub dst_mac: [u8; 6],
    /// This node's VTEP address.
    pub src_ip: Ipv4Addr,
    /// The remote VTEP address.
    pub dst_ip: Ipv4Addr,
    /// The network's VNI.
    pub vni: Vni,
    /// Outer TTL ([`DEFAULT_TTL`]).
    pub ttl: u8,
    /// Outer UDP destination port ([`VXLAN_PORT`]).
    pub dst_port: u16,
    /// Compute the outer UDP checksum (the kernel's `udpcsum`; off by default for IPv4).
    pub udp_checksum: bool,
    /// The range the UDP source port is scaled into.
    pub src_ports: SrcPortRange,
    /// Per-node key of the flow hash (the kernel's random `hashrnd`).
    pub hash_seed: u32,
}

impl OuterConfig {
    /// A configuration with the kernel's defaults: TTL 64, port 4789, no UDP checksum.
    pub const fn new(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src_ip: Ipv4Addr,
        dst_ip: Ipv4Addr,
        vni: Vni,
    ) -> OuterConfig {
        OuterConfig {
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            vni,
            ttl: DEFAULT_TTL,
            dst_port: VXLAN_PORT,
            udp_checksum: false,
            src_ports: SrcPortRange::KERNEL_DEFAULT,
            hash_seed: 0,
        }
    }
}

/// Splits a buffer that starts with room for the outer header into that room and the inner frame.
pub fn split_outer(buf: &mut [u8]) -> Result<(&mut [u8; OUTER_HEADER_LEN], &[u8]), OuterError> {
    let len = buf.len();
    let (header, inner) = buf
        .split_first_chunk_mut::<OUTER_HEADER_LEN>()
        .ok_or(OuterError::BufferTooShort { len })?;
    Ok((header, inner))
}

/// Builds the whole outer header for `inner` from scratch, with the given IP ID.
pub fn emit_outer(
    header: &mut [u8; OUTER_HEADER_LEN],
    inner: &[u8],
    config: &OuterConfig,
    ip_id: u16,
) -> Result<(), OuterError> {
    let lens = Lengths::of(inner)?;
    write_constant(header, config);
    let src_port = config.src_ports.port(flow_hash(inner, config.hash_seed));
    header[field::IP_TOS] = ecn_encapsulate(0, inner_dsfield(inner));
    header[field::IP_LEN].copy_from_slice(&lens.ip.to_be_bytes());
    header[field::IP_ID].copy_from_slice(&ip_id.to_be_bytes());
    let ip_sum = sum_words(&header[field::IP_HEADER], 0);
    header[field::IP_CHECKSUM].copy_from_slice(&finish(ip_sum).to_be_bytes());
    header[field::UDP_SRC].copy_from_slice(&src_port.to_be_bytes());
    header[field::UDP_LEN].copy_from_slice(&lens.udp.to_be_bytes());
    if config.udp_checksum {
        let sum = pseudo_header_sum(config.src_ip, config.dst_ip, lens.udp);
        let sum = sum_words(&header[field::UDP_AND_VXLAN], sum);
        let sum = sum_words(inner, sum);
        header[field::UDP_CHECKSUM].copy_from_slice(&udp_checksum_value(sum).to_be_bytes());
    }
    Ok(())
}

/// The outer header towards one remote VTEP, precomputed once; cheap to stamp per packet.
#[derive(Debug, Clone)]
pub struct OuterTemplate {
    config: OuterConfig,
    bytes: [u8; OUTER_HEADER_LEN],
    /// One's complement sum of the IPv4 header words that never change.
    ip_partial: u32,
    /// One's complement sum of the constant pseudo-header, UDP and VXLAN words.
    udp_partial: u32,
    next_ip_id: u16,
}

impl OuterTemplate {
    /// Precomputes the constant bytes and partial checksums; IP IDs start at `first_ip_id`.
    pub fn new(config: &OuterConfig, first_ip_id: u16) -> OuterTemplate {
        let mut bytes = [0u8; OUTER_HEADER_LEN];
        write_constant(&mut bytes, config);
        // The varying words (TOS, lengths, ID, source port, checksums) are still zero here.
        let ip_partial = sum_words(&bytes[field::IP_HEADER], 0);
        let udp_partial = sum_words(
            &bytes[field::UDP_AND_VXLAN],
            pseudo_header_sum(config.src_ip, config.dst_ip, 0),
        );
        OuterTemplate {
            config: *config,
            bytes,
            ip_partial,
            udp_partial,
            next_ip_id: first_ip_id,
        }
    }

    /// The configuration the template was built from.
    pub fn config(&self) -> &OuterConfig {
        &self.config
    }

    /// The IP ID the next packet gets.
    pub fn next_ip_id(&self) -> u16 {
        self.next_ip_id
    }

    /// Writes the outer header for `inner` and returns the UDP source port it chose.
    #[inline]
    pub fn emit(
        &mut self,
        header: &mut [u8; OUTER_HEADER_LEN],
        inner: &[u8],
    ) -> Result<u16, OuterError> {
        let lens = Lengths::of(inner)?;
        let src_port = self
            .config
            .src_ports
            .port(flow_hash(inner, self.config.hash_seed));
        let tos = ecn_encapsulate(0, inner_dsfield(inner));
        let ip_id = self.next_ip_id;
        self.next_ip_id = ip_id.wrapping_add(1);

        *header = self.bytes;
        header[field::IP_TOS] = tos;
        header[field::IP_LEN].copy_from_slice(&lens.ip.to_be_bytes());
        header[field::IP_ID].copy_from_slice(&ip_id.to_be_bytes());
        // The TOS byte is the low half of the word it shares with version/IHL.
        let ip_sum = self.ip_partial + u32::from(tos) + u32::from(lens.ip) + u32::from(ip_id);
        header[field::IP_CHECKSUM].copy_from_slice(&finish(ip_sum).to_be_bytes());
        header[field::UDP_SRC].copy_from_slice(&src_port.to_be_bytes());
        header[field::UDP_LEN].copy_from_slice(&lens.udp.to_be_bytes());
        if self.config.udp_checksum {
            // UDP length counts twice: in the pseudo-header and in the UDP header.
            let sum = self.udp_partial + 2 * u32::from(lens.udp) + u32::from(src_port);
            let sum = sum_words(inner, sum);
            header[field::UDP_CHECKSUM].copy_from_slice(&udp_checksum_value(sum).to_be_bytes());
        }
        Ok(src_port)
    }
}

/// Outer IPv4 total length and UDP length for an inner frame.
struct Lengths {
    ip: u16,
    udp: u16,
}

impl Lengths {
    fn of(inner: &[u8]) -> Result<Lengths, OuterError> {
        let len = inner.len();
        if len < ETH_LEN {
            return Err(OuterError::InnerTooShort { len });
        }
        if len > MAX_INNER_LEN {
            return Err(OuterError::InnerTooLong { len });
        }
        // Both fit: len <= MAX_INNER_LEN keeps the IP length within u16.
        let udp = (UDP_LEN + wire::HEADER_LEN + len) as u16;
        Ok(Lengths {
            ip: udp + IPV4_LEN as u16,
            udp,
        })
    }
}

/// Writes every byte that does not depend on the inner frame; the rest is zero.
fn write_constant(header: &mut [u8; OUTER_HEADER_LEN], config: &OuterConfig) {
    header.fill(0);
    header[field::ETH_DST].copy_from_slice(&config.dst_mac);
    header[field::ETH_SRC].copy_from_slice(&config.src_mac);
    header[field::ETH_TYPE].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    header[field::IP_VER_IHL] = IPV4_VER_IHL;
    header[field::IP_FRAG].copy_from_slice(&IPV4_DF.to_be_bytes());
    header[field::IP_TTL] = config.ttl;
    header[field::IP_PROTO] = IPPROTO_UDP;
    header[field::IP_SRC].copy_from_slice(&config.src_ip.octets());
    header[field::IP_DST].copy_from_slice(&config.dst_ip.octets());
    header[field::UDP_DST].copy_from_slice(&config.dst_port.to_be_bytes());
    header[field::VXLAN].copy_from_slice(&wire::Repr { vni: config.vni }.to_bytes());
}

/// The outer TOS from the inner DS field, as the kernel's `INET_ECN_encapsulate`.
#[inline]
fn ecn_encapsulate(outer: u8, inner: u8) -> u8 {
    let inner_ecn = inner & ECN_MASK;
    let ecn = if inner_ecn == ECN_CE {
        ECN_ECT0
    } else {
        inner_ecn
    };
    (outer & !ECN_MASK) | ecn
}

/// The inner IPv4 TOS or IPv6 traffic class, 0 for anything else.
#[inline]
fn inner_dsfield(inner: &[u8]) -> u8 {
    match (ethertype(inner), inner.get(ETH_LEN..ETH_LEN + 2)) {
        (Some(ETHERTYPE_IPV4), Some(ip)) => ip[1],
        (Some(ETHERTYPE_IPV6), Some(ip)) => (ip[0] << 4) | (ip[1] >> 4),
        _ => 0,
    }
}

/// The EtherType of a frame, if it has a whole Ethernet header.
#[inline]
fn ethertype(frame: &[u8]) -> Option<u16> {
    let bytes = frame.get(MACS_LEN..ETH_LEN)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// A big-endian `u32` at `offset`, if the slice holds it.
#[inline]
fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let b = bytes.get(offset..offset + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Orders a pair so both directions of a flow give the same key (`__flow_hash_consistentify`).
#[inline]
fn ordered<T: Ord>(a: T, b: T) -> (T, T) {
    if b < a { (b, a) } else { (a, b) }
}

/// Hash of the inner flow: MAC pair, EtherType, and for IPv4 the address pair, protocol and
/// (unfragmented TCP/UDP/SCTP/DCCP/UDP-Lite) port pair. Symmetric; never 0, as the kernel's.
#[inline]
pub fn flow_hash(inner: &[u8], seed: u32) -> u32 {
    let mut key = [0u32; 7];
    let Some(macs) = inner.first_chunk::<MACS_LEN>() else {
        return 1;
    };
    let dst = u64::from_be_bytes([0, 0, macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]]);
    let src = u64::from_be_bytes([0, 0, macs[6], macs[7], macs[8], macs[9], macs[10], macs[11]]);
    let (lo, hi) = ordered(dst, src);
    // 48-bit MACs split into 3 words (truncating casts are the point here).
    key[0] = (lo >> 16) as u32;
    key[1] = ((lo as u32) << 16) | (hi >> 32) as u32;
    key[2] = hi as u32;
    let ethertype = ethertype(inner).unwrap_or(0);
    key[3] = u32::from(ethertype);
    let mut words = 4;
    if ethertype == ETHERTYPE_IPV4
        && let Some(ip) = inner.get(ETH_LEN..)
        && ip.len() >= IPV4_LEN
    {
        let proto = ip[9];
        let (a, b) = ordered(be32(ip, 12).unwrap_or(0), be32(ip, 16).unwrap_or(0));
        key[3] |= u32::from(proto) << 16;
        key[4] = a;
        key[5] = b;
        words = 6;
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        let is_fragment = frag & (IPV4_MF | IPV4_OFFSET_MASK) != 0;
        let has_ports = matches!(
            proto,
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_DCCP | IPPROTO_SCTP | IPPROTO_UDPLITE
        );
        let ihl = usize::from(ip[0] & IHL_MASK) * IHL_UNIT;
        if has_ports
            && !is_fragment
            && ihl >= IPV4_LEN
            && let Some(ports) = be32(ip, ihl)
        {
            let (p, q) = ordered((ports >> 16) as u16, ports as u16);
            key[6] = (u32::from(p) << 16) | u32::from(q);
            words = 7;
        }
    }
    match jhash2(&key[..words], seed) {
        0 => 1,
        hash => hash,
    }
}

/// The outer UDP source port for an inner frame: [`flow_hash`] scaled by [`SrcPortRange::port`].
#[inline]
pub fn udp_src_port(inner: &[u8], seed: u32, range: SrcPortRange) -> u16 {
    range.port(flow_hash(inner, seed))
}

/// The kernel's `jhash2` (Bob Jenkins' lookup3 over 32-bit words).
fn jhash2(key: &[u32], initval: u32) -> u32 {
    // Key lengths here are at most 7 words, so the cast cannot truncate.
    let init = JHASH_INITVAL
        .wrapping_add((key.len() as u32) << 2)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut rest = key;
    while rest.len() > 3 {
        a = a.wrapping_add(rest[0]);
        b = b.wrapping_add(rest[1]);
        c = c.wrapping_add(rest[2]);
        jhash_mix(&mut a, &mut b, &mut c);
        rest = &rest[3..];
    }
    if rest.is_empty() {
        return c;
    }
    if let Some(&k) = rest.get(2) {
        c = c.wrapping_add(k);
    }
    if let Some(&k) = rest.get(1) {
        b = b.wrapping_add(k);
    }
    a = a.wrapping_add(rest[0]);
    jhash_final(&mut a, &mut b, &mut c);
    c
}

/// `__jhash_mix`.
#[inline]
fn jhash_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// `__jhash_final`.
#[inline]
fn jhash_final(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
}

/// Adds the big-endian 16-bit words of `data` (an odd last byte padded with zero) to `sum`.
#[inline]
fn sum_words(data: &[u8], sum: u32) -> u32 {
    // Accumulate in 64 bits over 4-byte chunks so no carry is lost for any frame size.
    let mut acc = u64::from(sum);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let mut rest = chunks.remainder();
    if let Some((pair, tail)) = rest.split_first_chunk::<2>() {
        acc += u64::from(u16::from_be_bytes(*pair));
        rest = tail;
    }
    if let Some(&last) = rest.first() {
        acc += u64::from(last) << 8;
    }
    // Fold 64 -> 32 bits keeping the one's complement carries.
    let folded = (acc & 0xffff_ffff) + (acc >> 32);
    let folded = (folded & 0xffff_ffff) + (folded >> 32);
    // A u32 holding words of a 4-byte sum is congruent mod 0xffff to the 16-bit sum.
    let lo = folded & 0xffff;
    let hi = (folded >> 16) & 0xffff;
    (lo + hi) as u32
}

/// Folds a one's complement sum to 16 bits and complements it.
#[inline]
fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // After the loop the sum fits 16 bits.
    !(sum as u16)
}

/// A UDP checksum of 0 means "none", so a computed 0 is sent as 0xffff (RFC 768).
#[inline]
fn udp_checksum_value(sum: u32) -> u16 {
    match finish(sum) {
        0 => 0xffff,
        c => c,
    }
}

/// One's complement sum of the IPv4 pseudo-header (UDP length given separately).
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(IPPROTO_UDP)
        + u32::from(udp_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const N1_MAC: [u8; 6] = [0x02, 0x00, 0xc6, 0x12, 0x00, 0x01];
    const N2_MAC: [u8; 6] = [0x02, 0x00, 0xc6, 0x12, 0x00, 0x02];
    const N1_VTEP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const N2_VTEP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const DOCKER_VNI: u32 = 4097;
    const C11_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x00, 0x09, 0x0b];
    const C21_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x00, 0x09, 0x15];
    const SEED: u32 = 0x1234_5678;
    const FIRST_ID: u16 = 0xfffe;

    fn config(udp_checksum: bool) -> OuterConfig {
        let mut config = OuterConfig::new(
            N1_MAC,
            N2_MAC,
            N1_VTEP,
            N2_VTEP,
            Vni::new(DOCKER_VNI).unwrap(),
        );
        config.udp_checksum = udp_checksum;
        config.hash_seed = SEED;
        config
    }

    /// A 64-byte inner frame c11 -> c21: IPv4/UDP 10.0.9.11:40000 -> 10.0.9.21:53, given TOS.
    fn inner_udp(tos: u8, sport: u16, dport: u16) -> Vec<u8> {
        inner_udp_between(
            C21_MAC,
            C11_MAC,
            [10, 0, 9, 11],
            [10, 0, 9, 21],
            tos,
            sport,
            dport,
        )
    }

    fn inner_udp_between(
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        src_ip: [u8; 4],
        dst_ip: [u8; 4],
        tos: u8,
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src_ip, dst_ip, 64)
            .udp(sport, dport);
        let payload = [0xabu8; 22];
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();
        // PacketBuilder has no TOS knob: patch it and the checksum with smoltcp.
        let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]);
        ip.set_dscp(tos >> 2);
        ip.set_ecn(tos & ECN_MASK);
        ip.fill_checksum();
        assert_eq!(frame.len(), 64);
        frame
    }

    /// Parses an outer packet and checks every field the kernel would put there.
    fn check_packet(packet: &[u8], config: &OuterConfig, inner: &[u8], ip_id: u16) {
        use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, UdpPacket};
        let eth = EthernetFrame::new_checked(packet).unwrap();
        assert_eq!(eth.dst_addr().0, config.dst_mac);
        assert_eq!(eth.src_addr().0, config.src_mac);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        assert_eq!(ip.header_len(), 20);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert_eq!(ip.hop_limit(), config.ttl);
        assert_eq!(ip.ident(), ip_id);
        assert_eq!(ip.src_addr(), config.src_ip);
        assert_eq!(ip.dst_addr(), config.dst_ip);
        assert_eq!(usize::from(ip.total_len()), packet.len() - ETH_LEN);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.dst_port(), config.dst_port);
        assert!((PORT_RANGE_MIN..PORT_RANGE_MAX).contains(&udp.src_port()));
        assert_eq!(udp.src_port(), udp_src_port(inner, SEED, config.src_ports));
        assert_eq!(usize::from(udp.len()), packet.len() - ETH_LEN - IPV4_LEN);
        if config.udp_checksum {
            assert_ne!(udp.checksum(), 0);
            let (src, dst) = (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            );
            assert!(udp.verify_checksum(&src, &dst), "UDP checksum");
        } else {
            assert_eq!(udp.checksum(), 0);
        }
        let vxlan = wire::Packet::new_checked(udp.payload()).unwrap();
        assert_eq!(wire::Repr::parse(&vxlan).unwrap().vni, config.vni);
        assert_eq!(vxlan.payload(), inner);

        // etherparse agrees, from the outer Ethernet header down to the inner frame.
        let sliced = etherparse::SlicedPacket::from_ethernet(packet).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ipv4)) = sliced.net else {
            panic!("outer is not IPv4");
        };
        assert!(ipv4.header().dont_fragment());
        assert_eq!(
            ipv4.header().header_checksum(),
            ipv4.header().to_header().calc_header_checksum()
        );
        let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("outer is not UDP");
        };
        assert_eq!(udp.destination_port(), VXLAN_PORT);
        assert_eq!(&udp.payload()[wire::HEADER_LEN..], inner);
    }

    fn build_full(config: &OuterConfig, inner: &[u8], ip_id: u16) -> Vec<u8> {
        let mut packet = vec![0u8; OUTER_HEADER_LEN + inner.len()];
        packet[OUTER_HEADER_LEN..].copy_from_slice(inner);
        let (header, inner) = split_outer(&mut packet).unwrap();
        emit_outer(header, inner, config, ip_id).unwrap();
        packet
    }

    fn build_template(template: &mut OuterTemplate, inner: &[u8]) -> Vec<u8> {
        let mut packet = vec![0u8; OUTER_HEADER_LEN + inner.len()];
        packet[OUTER_HEADER_LEN..].copy_from_slice(inner);
        let (header, inner) = split_outer(&mut packet).unwrap();
        template.emit(header, inner).unwrap();
        packet
    }

    #[test]
    fn port_scaling_matches_kernel_formula() {
        let range = SrcPortRange::KERNEL_DEFAULT;
        // hash 0 -> min; all-ones -> top of range - 1 (max itself is never produced).
        assert_eq!(range.port(0), PORT_RANGE_MIN);
        // 0xffff_ffff ^ 0xffff_0000 = 0x0000_ffff: tiny after the obfuscation step.
        assert_eq!(range.port(u32::MAX), PORT_RANGE_MIN);
        // 0xffff0000 ^ 0 = 0xffff0000 -> (0xffff0000 * 28231) >> 32 = 28230.
        assert_eq!(range.port(0xffff_0000), PORT_RANGE_MIN + 28230);
        // 0x8000_0000 -> half the span.
        assert_eq!(range.port(0x8000_0000), PORT_RANGE_MIN + 28231 / 2);
        assert_eq!(
            SrcPortRange::new(10, 10),
            Err(OuterError::EmptyPortRange { min: 10, max: 10 })
        );
        let tiny = SrcPortRange::new(1000, 1001).unwrap();
        assert_eq!(tiny.port(u32::MAX - 1), 1000);
    }

    #[test]
    fn jhash2_matches_the_kernel() {
        // Values from the kernel's jhash2 macros (include/linux/jhash.h) compiled with gcc.
        let key = [1, 2, 3, 4, 5, 6, 7];
        assert_eq!(jhash2(&key[..0], 0), JHASH_INITVAL);
        assert_eq!(jhash2(&key[..1], 0), 0x72a8_2a9b);
        assert_eq!(jhash2(&key[..3], 0x1234_5678), 0xd9d2_f6fd);
        assert_eq!(jhash2(&key[..4], 0), 0x6649_1246);
        assert_eq!(jhash2(&key[..7], 0x1234_5678), 0xb673_a4df);
    }

    #[test]
    fn fixed_bytes_full_build() {
        let config = config(false);
        let inner = inner_udp(0, 40000, 53);
        let packet = build_full(&config, &inner, 0x1234);
        let port = udp_src_port(&inner, SEED, SrcPortRange::KERNEL_DEFAULT).to_be_bytes();
        #[rustfmt::skip]
        let expected: [u8; OUTER_HEADER_LEN] = [
            // Ethernet: n2, n1, IPv4
            0x02, 0x00, 0xc6, 0x12, 0x00, 0x02, 0x02, 0x00, 0xc6, 0x12, 0x00, 0x01, 0x08, 0x00,
            // IPv4: 45 00, len 20+8+8+64=100, id 0x1234, DF, TTL 64, UDP, checksum, src, dst
            0x45, 0x00, 0x00, 0x64, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x9c, 0x2d,
            198, 18, 0, 1, 198, 18, 0, 2,
            // UDP: flow port, 4789, len 80, checksum 0
            port[0], port[1], 0x12, 0xb5, 0x00, 0x50, 0x00, 0x00,
            // VXLAN: I flag, VNI 4097
            0x08, 0x00, 0x00, 0x00, 0x00, 0x10, 0x01, 0x00,
        ];
        assert_eq!(packet[..OUTER_HEADER_LEN], expected);
        check_packet(&packet, &config, &inner, 0x1234);
    }

    #[test]
    fn template_equals_full_build() {
        for udp_checksum in [false, true] {
            let config = config(udp_checksum);
            let mut template = OuterTemplate::new(&config, FIRST_ID);
            for (i, tos) in [0u8, 0x01, 0x02, 0x03, 0xb8, 0xbb].into_iter().enumerate() {
                let inner = inner_udp(tos, 40000 + i as u16, 80);
                let id = FIRST_ID.wrapping_add(i as u16);
                assert_eq!(template.next_ip_id(), id);
                let a = build_template(&mut template, &inner);
                let b = build_full(&config, &inner, id);
                assert_eq!(a, b, "tos {tos:#x} checksum {udp_checksum}");
                check_packet(&a, &config, &inner, id);
            }
        }
        // The counter wrapped past 0xffff.
        let mut template = OuterTemplate::new(&config(false), u16::MAX);
        build_template(&mut template, &inner_udp(0, 1, 2));
        assert_eq!(template.next_ip_id(), 0);
    }

    #[test]
    fn ecn_copied_from_inner_ce_becomes_ect0() {
        assert_eq!(ecn_encapsulate(0, 0xb8), 0); // DSCP EF, not ECT: nothing copied
        assert_eq!(ecn_encapsulate(0, 0x01), 0x01); // ECT(1)
        assert_eq!(ecn_encapsulate(0, 0x02), 0x02); // ECT(0)
        assert_eq!(ecn_encapsulate(0, 0x03), ECN_ECT0); // CE
        let packet = build_full(&config(false), &inner_udp(0xbb, 1, 2), 0);
        assert_eq!(packet[field::IP_TOS], ECN_ECT0);
    }

    #[test]
    fn udp_checksum_computed_when_asked() {
        let config = config(true);
        // Odd-length inner frames exercise the padding byte.
        let mut inner = inner_udp(0, 40000, 53);
        inner.push(0x5a);
        let packet = build_full(&config, &inner, 7);
        check_packet(&packet, &config, &inner, 7);
    }

    #[test]
    fn flow_hash_is_symmetric_and_port_sensitive() {
        let ab = inner_udp_between(
            C21_MAC,
            C11_MAC,
            [10, 0, 9, 11],
            [10, 0, 9, 21],
            0,
            1000,
            80,
        );
        let ba = inner_udp_between(
            C11_MAC,
            C21_MAC,
            [10, 0, 9, 21],
            [10, 0, 9, 11],
            0,
            80,
            1000,
        );
        assert_eq!(flow_hash(&ab, SEED), flow_hash(&ba, SEED));
        let other = inner_udp_between(
            C21_MAC,
            C11_MAC,
            [10, 0, 9, 11],
            [10, 0, 9, 21],
            0,
            1001,
            80,
        );
        assert_ne!(flow_hash(&ab, SEED), flow_hash(&other, SEED));
        assert_ne!(flow_hash(&ab, SEED), flow_hash(&ab, SEED ^ 1));
    }

    #[test]
    fn flow_hash_ignores_ports_of_fragments() {
        let mut first = inner_udp(0, 1000, 80);
        let mut second = inner_udp(0, 2000, 80);
        assert_ne!(flow_hash(&first, SEED), flow_hash(&second, SEED));
        for frame in [&mut first, &mut second] {
            // Set MF: the bytes after the IP header are not known to be ports.
            frame[ETH_LEN + 6] |= (IPV4_MF >> 8) as u8;
        }
        assert_eq!(flow_hash(&first, SEED), flow_hash(&second, SEED));
    }

    #[test]
    fn flow_hash_of_non_ip_frames_uses_l2() {
        // An ARP request from c11 (broadcast): hashed on MACs and EtherType only.
        let mut arp = [0u8; 42];
        arp[..6].copy_from_slice(&[0xff; 6]);
        arp[6..12].copy_from_slice(&C11_MAC);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut other = arp;
        other[6..12].copy_from_slice(&C21_MAC);
        assert_ne!(flow_hash(&arp, SEED), flow_hash(&other, SEED));
        let mut same_l2 = arp;
        same_l2[20] = 0x99; // ARP body: not part of the flow
        assert_eq!(flow_hash(&arp, SEED), flow_hash(&same_l2, SEED));
    }

    #[test]
    fn spreads_flows_over_the_port_range() {
        let mut ports = std::collections::BTreeSet::new();
        for sport in 0..256u16 {
            ports.insert(udp_src_port(
                &inner_udp(0, 20000 + sport, 80),
                SEED,
                SrcPortRange::KERNEL_DEFAULT,
            ));
        }
        // 256 flows into ~28k ports: a few collisions at most, never one port for all.
        assert!(ports.len() > 240, "only {} distinct ports", ports.len());
    }

    #[test]
    fn refuses_bad_sizes() {
        let config = config(false);
        let mut header = [0u8; OUTER_HEADER_LEN];
        for len in 0..ETH_LEN {
            assert_eq!(
                emit_outer(&mut header, &vec![0; len], &config, 0),
                Err(OuterError::InnerTooShort { len })
            );
        }
        let huge = vec![0u8; MAX_INNER_LEN + 1];
        let mut template = OuterTemplate::new(&config, 0);
        assert_eq!(
            template.emit(&mut header, &huge),
            Err(OuterError::InnerTooLong {
                len: MAX_INNER_LEN + 1
            })
        );
        // A refused packet does not consume an IP ID.
        assert_eq!(template.next_ip_id(), 0);
        assert!(emit_outer(&mut header, &huge[1..], &config, 0).is_ok());
        let mut short = [0u8; OUTER_HEADER_LEN - 1];
        assert_eq!(
            split_outer(&mut short).unwrap_err(),
            OuterError::BufferTooShort {
                len: OUTER_HEADER_LEN - 1
            }
        );
    }

    #[test]
    fn largest_inner_frame_checksums() {
        let mut config = config(true);
        config.ttl = 1;
        let mut inner = vec![0xffu8; MAX_INNER_LEN];
        inner[..ETH_LEN].copy_from_slice(&inner_udp(0, 1, 2)[..ETH_LEN]);
        let packet = build_full(&config, &inner, u16::MAX);
        assert_eq!(&packet[field::IP_LEN], &[0xff, 0xff]);
        check_packet(&packet, &config, &inner, u16::MAX);
    }

    proptest! {
        #[test]
        fn any_inner_frame_builds_a_valid_packet(
            inner in proptest::collection::vec(any::<u8>(), ETH_LEN..300),
            id: u16,
            seed: u32,
            udp_checksum: bool,
        ) {
            let mut config = config(udp_checksum);
            config.hash_seed = seed;
            let full = build_full(&config, &inner, id);
            let mut template = OuterTemplate::new(&config, id);
            prop_assert_eq!(&build_template(&mut template, &inner), &full);
            // check_packet assumes SEED; compare the port directly here.
            let port = u16::from_be_bytes([full[34], full[35]]);
            prop_assert_eq!(port, udp_src_port(&inner, seed, config.src_ports));
            let mut c = config;
            c.hash_seed = SEED;
            let seeded = build_full(&c, &inner, id);
            check_packet(&seeded, &c, &inner, id);
        }

        #[test]
        fn flow_hash_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_ne!(flow_hash(&frame, SEED), 0);
        }

        #[test]
        fn port_always_in_range(hash: u32, min in 0u16..u16::MAX, width in 1u16..u16::MAX) {
            let max = min.saturating_add(width).max(min + 1);
            let range = SrcPortRange::new(min, max).unwrap();
            let port = range.port(hash);
            prop_assert!(port >= min && port < max);
        }
    }
}
