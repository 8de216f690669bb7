//! Security associations: per-SA key derivation, AES-GCM sealing and opening of ESP packets in
//! place, and the node's SA tables.
//!
//! Where it sits: the control plane builds the tables with [`EspSas::set`] (at start and at
//! every reload); `esp-encrypt` seals with an [`OutboundSa`] found by peer
//! ([`OutboundSas::find_mut`]), `esp-decrypt` opens with an [`InboundSa`] found by (source,
//! SPI) ([`InboundSas::find_mut`]). Both lookups are a binary search in a sorted `Vec`: no
//! allocation, no hashing, no lock per packet.
//!
//! # Derivation (both ends compute it, nothing is negotiated)
//!
//! For sender VTEP `S`, receiver VTEP `R` and configured key `K` (16-byte key, 4-byte salt):
//!
//! ```text
//! okm  = HKDF-SHA256(ikm  = K.key || K.salt,          (RFC 5869)
//!                    salt = "vxmesh-esp-v1",
//!                    info = S.octets() || R.octets(),  (8 bytes)
//!                    L    = 24)
//! SA AES-128 key = okm[0..16]
//! SA salt        = okm[16..20]
//! SPI            = u32 big-endian of okm[20..24], OR 0x100 if it is 0..=255 (reserved)
//! ```
//!
//! Every (S, R, K) has its own key and salt, so two SAs sharing a configured key never share
//! a nonce. Python reproduces it with `cryptography`'s
//! `HKDF(hashes.SHA256(), 24, b"vxmesh-esp-v1", S + R).derive(key + salt)`.
//!
//! # Packets (RFC 4106)
//!
//! AES-128-GCM with a 16-byte ICV; nonce = SA salt (4) || explicit IV (8); AAD = SPI (4) ||
//! sequence number (4) (no extended sequence numbers on the wire). The explicit IV is
//! `epoch (u32 BE) || seq (u32 BE)`, `seq` being also the ESP sequence number: a sender's
//! 64-bit counter. An [`OutboundSa`] starts at (its start epoch, 1); after seq `u32::MAX` it
//! goes to (epoch + 1, 1), so (epoch, seq), hence the nonce, never repeats for an SA. The
//! epoch moves at most once per 2^32 packets, far slower than once a second, so a node that
//! restarts with its start epoch at the current unix time (and above the last one it used)
//! starts above every epoch it used before. The receiver's window is [`ReplayWindow`].
//!
//! Padding is the fewest bytes 1, 2, 3, ... that end the encrypted part on a multiple of 4.
//!
//! # Tables and reloads
//!
//! [`EspSas::set`] (keys, peers, epoch) wants one outbound SA per peer from `keys[0]` and one
//! inbound SA per (peer, key). It keeps every SA that is still wanted (same peer, same key)
//! with its state (sequence counter, replay window), creates the new ones and drops the
//! others. Key rotation (add the new key second, then move it first, then remove the old one)
//! so loses no packet: receivers accept both keys before any sender switches. New outbound SAs
//! start at `max(epoch, 1 + the highest epoch this table ever used)`, so an SA dropped and
//! created again in one process never reuses a nonce even if the caller passes the same epoch.
//! Key material is never shown: listings ([`SaInfo`]) carry the key's id.
//!
//! `set` derives every SA (an HKDF and an AES key schedule each, a few microseconds). A node
//! with many peers can do that part off the poll thread: [`SaPlan::new`] derives, and
//! `apply` (on [`EspSas`], [`OutboundSas`], [`InboundSas`] or the stages) only moves SAs
//! between batches, keeping the live ones' state as `set` does.

use core::fmt;
use std::net::Ipv4Addr;

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::hkdf;
use vswitch::wire::esp::{
    self, FRONT_LEN, ICV_LEN, IV_LEN, SPI_RESERVED_MAX, TRAILER_LEN, Trailer,
};

use crate::key::{KEY_LEN, Key, KeyId, SALT_LEN};
use crate::replay::{ReplayError, ReplayWindow};

/// The HKDF salt of the per-SA derivation (a version label).
pub const HKDF_SALT: &[u8] = b"vxmesh-esp-v1";
/// Bytes the derivation expands to: SA key, SA salt, SPI.
pub const DERIVED_LEN: usize = KEY_LEN + SALT_LEN + 4;

/// What one (sender, receiver, key) derives: the SA's AES key, salt and SPI.
#[derive(Clone, PartialEq, Eq)]
pub struct SaMaterial {
    /// The SPI (never 0..=255).
    pub spi: u32,
    key: [u8; KEY_LEN],
    salt: [u8; SALT_LEN],
}

impl SaMaterial {
    /// The SA's AES-128 key (for interop tests handing it to another implementation; never
    /// logged).
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The SA's salt (the nonce's first 4 bytes).
    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }
}

impl Drop for SaMaterial {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
        zeroize::Zeroize::zeroize(&mut self.salt);
    }
}

impl fmt::Debug for SaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaMaterial {{ spi: {:#010x} }}", self.spi)
    }
}

/// The output length of the derivation, as ring's HKDF wants it.
struct Derived;

impl hkdf::KeyType for Derived {
    fn len(&self) -> usize {
        DERIVED_LEN
    }
}

/// Derives the SA of `sender` → `receiver` under `key` (see the module docs).
pub fn derive(key: &Key, sender: Ipv4Addr, receiver: Ipv4Addr) -> SaMaterial {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(key.key_and_salt());
    let (s, r) = (sender.octets(), receiver.octets());
    let info: [&[u8]; 2] = [&s, &r];
    let mut okm = zeroize::Zeroizing::new([0u8; DERIVED_LEN]);
    prk.expand(&info, Derived)
        .and_then(|o| o.fill(&mut okm[..]))
        // 24 bytes is far below HKDF-SHA256's limit of 255 * 32.
        .expect("HKDF-SHA256 expands to 24 bytes");
    let mut m = SaMaterial {
        spi: spi_of([okm[20], okm[21], okm[22], okm[23]]),
        key: [0; KEY_LEN],
        salt: [0; SALT_LEN],
    };
    m.key.copy_from_slice(&okm[..KEY_LEN]);
    m.salt.copy_from_slice(&okm[KEY_LEN..KEY_LEN + SALT_LEN]);
    m
}

/// The SPI of the derivation's last 4 bytes: big-endian, moved out of the reserved 0..=255.
const fn spi_of(bytes: [u8; 4]) -> u32 {
    let spi = u32::from_be_bytes(bytes);
    if spi <= SPI_RESERVED_MAX {
        spi | 0x100
    } else {
        spi
    }
}

/// AES-128-GCM with an RFC 4106 salt: the building block under the ESP framing.
pub struct Gcm {
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
}

impl fmt::Debug for Gcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gcm(AES-128)")
    }
}

/// The ICV did not verify (or the buffer was too short to hold one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ICV verification failed")]
pub struct BadIcv;

impl Gcm {
    /// AES-128-GCM under `key`, with `salt` as the nonce's first 4 bytes.
    pub fn new(key: &[u8; KEY_LEN], salt: [u8; SALT_LEN]) -> Gcm {
        // AES_128_GCM takes exactly a 16-byte key: cannot fail.
        let unbound = UnboundKey::new(&AES_128_GCM, key).expect("16-byte AES-128 key");
        Gcm {
            key: LessSafeKey::new(unbound),
            salt,
        }
    }

    /// A GCM instance for derived SA material.
    pub fn for_sa(m: &SaMaterial) -> Gcm {
        Gcm::new(&m.key, m.salt)
    }

    #[inline]
    fn nonce(&self, iv: [u8; IV_LEN]) -> Nonce {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(&iv);
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `in_out` in place under nonce salt || `iv` with `aad`; returns the ICV.
    #[inline]
    pub fn seal(
        &self,
        iv: [u8; IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; ICV_LEN], BadIcv> {
        let tag: Tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(iv), Aad::from(aad), in_out)
            .map_err(|_| BadIcv)?;
        let mut icv = [0u8; ICV_LEN];
        icv.copy_from_slice(tag.as_ref());
        Ok(icv)
    }

    /// Verifies and decrypts `in_out` (ciphertext then the 16-byte ICV) in place; returns the
    /// plaintext's length (the ciphertext's).
    #[inline]
    pub fn open(&self, iv: [u8; IV_LEN], aad: &[u8], in_out: &mut [u8]) -> Result<usize, BadIcv> {
        self.key
            .open_in_place(self.nonce(iv), Aad::from(aad), in_out)
            .map(|p| p.len())
            .map_err(|_| BadIcv)
    }
}

/// The explicit IV of (epoch, seq).
#[inline]
pub const fn iv_of(epoch: u32, seq: u32) -> [u8; IV_LEN] {
    let e = epoch.to_be_bytes();
    let s = seq.to_be_bytes();
    [e[0], e[1], e[2], e[3], s[0], s[1], s[2], s[3]]
}

/// Why a packet could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The buffer is not [`esp::packet_len_for`] the payload length.
    #[error("ESP buffer length does not match the payload")]
    Length,
    /// The SA used every (epoch, seq): it can send no more.
    #[error("sequence numbers exhausted")]
    Exhausted,
}

/// Why a packet was not opened; each is a drop reason of `esp-decrypt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than header, IV, trailer and ICV.
    #[error("ESP packet truncated")]
    Truncated,
    /// Seen before inside the window.
    #[error("replayed ESP sequence number")]
    Replay,
    /// Left of the window or from an earlier epoch (or seq 0).
    #[error("ESP sequence number too old")]
    TooOld,
    /// The ICV did not verify.
    #[error("ESP ICV verification failed")]
    BadIcv,
    /// The pad length does not fit, or the padding bytes are not 1, 2, 3, ...
    #[error("ESP trailer invalid")]
    BadTrailer,
}

impl From<ReplayError> for OpenError {
    fn from(e: ReplayError) -> OpenError {
        match e {
            ReplayError::Replay => OpenError::Replay,
            ReplayError::TooOld => OpenError::TooOld,
        }
    }
}

/// What opening a packet found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The sender's epoch (the IV's first half).
    pub epoch: u32,
    /// The ESP sequence number.
    pub seq: u32,
    /// Length of the plaintext payload, which starts at [`FRONT_LEN`].
    pub payload_len: usize,
    /// The trailer's next header.
    pub next_header: u8,
}

/// Seals the ESP packet in `esp` (header, IV, payload, room for padding, trailer and ICV:
/// exactly [`esp::packet_len_for`]`(payload_len)` bytes, the payload in place at
/// [`FRONT_LEN`]): writes SPI, seq, IV, padding and trailer, encrypts, writes the ICV.
#[inline]
pub fn seal_packet(
    gcm: &Gcm,
    spi: u32,
    seq: u32,
    iv: [u8; IV_LEN],
    next_header: u8,
    esp: &mut [u8],
    payload_len: usize,
) -> Result<(), SealError> {
    if esp.len() != esp::packet_len_for(payload_len) {
        return Err(SealError::Length);
    }
    let pad_len = esp::pad_len_for(payload_len);
    let mut p = esp::Packet::new_unchecked(&mut *esp);
    p.set_spi(spi);
    p.set_seq_number(seq);
    p.set_iv(iv);
    p.set_trailer(Trailer {
        // At most 3 (alignment 4).
        pad_len: pad_len as u8,
        next_header,
    });
    let (hdr, iv, enc, icv) = p.split_for_seal();
    esp::fill_padding(&mut enc[payload_len..payload_len + pad_len]);
    // Only fails for inputs of 64 GiB.
    let tag = gcm.seal(iv, hdr, enc).map_err(|_| SealError::Length)?;
    icv.copy_from_slice(&tag);
    Ok(())
}

/// Opens the ESP packet in `esp` in place (no replay check: see [`InboundSa::open`]): verifies
/// the ICV, decrypts, checks the trailer. `epoch` and `seq` of the result are read from the
/// IV and the header.
#[inline]
pub fn open_packet(gcm: &Gcm, esp: &mut [u8]) -> Result<Opened, OpenError> {
    let p = esp::Packet::new_checked(&mut *esp).map_err(|_| OpenError::Truncated)?;
    let (epoch, seq) = epoch_seq(&p);
    open_checked(gcm, p, epoch, seq)
}

/// The (epoch, seq) of a packet: the IV's first half and the header's sequence number.
#[inline]
fn epoch_seq<T: AsRef<[u8]>>(p: &esp::Packet<T>) -> (u32, u32) {
    let iv = p.iv();
    (
        u32::from_be_bytes([iv[0], iv[1], iv[2], iv[3]]),
        p.seq_number(),
    )
}

#[inline]
fn open_checked(
    gcm: &Gcm,
    mut p: esp::Packet<&mut [u8]>,
    epoch: u32,
    seq: u32,
) -> Result<Opened, OpenError> {
    let iv = p.iv();
    let hdr = *p.header();
    gcm.open(iv, &hdr, p.sealed_mut())
        .map_err(|_| OpenError::BadIcv)?;
    trailer(&p, epoch, seq)
}

/// Reads and checks the decrypted trailer and padding.
#[inline]
fn trailer(p: &esp::Packet<&mut [u8]>, epoch: u32, seq: u32) -> Result<Opened, OpenError> {
    let t = p.trailer();
    let pad_len = usize::from(t.pad_len);
    let enc_len = p.encrypted_len();
    if pad_len + TRAILER_LEN > enc_len {
        return Err(OpenError::BadTrailer);
    }
    let payload_len = enc_len - TRAILER_LEN - pad_len;
    let pad_at = FRONT_LEN + payload_len;
    if !esp::padding_is_valid(&p.as_ref()[pad_at..pad_at + pad_len]) {
        return Err(OpenError::BadTrailer);
    }
    Ok(Opened {
        epoch,
        seq,
        payload_len,
        next_header: t.next_header,
    })
}

/// An outbound SA: this node → one peer, under the first configured key.
#[derive(Debug)]
pub struct OutboundSa {
    peer: Ipv4Addr,
    key_id: KeyId,
    spi: u32,
    gcm: Gcm,
    epoch: u32,
    /// The last seq used in `epoch` (0: none yet).
    seq: u32,
}

impl OutboundSa {
    /// The SA `local` → `peer` under `key`, numbering from (`epoch`, 1).
    pub fn new(key: &Key, local: Ipv4Addr, peer: Ipv4Addr, epoch: u32) -> OutboundSa {
        let m = derive(key, local, peer);
        OutboundSa {
            peer,
            key_id: key.id(),
            spi: m.spi,
            gcm: Gcm::for_sa(&m),
            epoch,
            seq: 0,
        }
    }

    /// The peer VTEP.
    pub fn peer(&self) -> Ipv4Addr {
        self.peer
    }

    /// The SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// The id of the configured key it derives from.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The (epoch, seq) last used ((start epoch, 0) before the first packet).
    pub fn position(&self) -> (u32, u32) {
        (self.epoch, self.seq)
    }

    /// Whether every (epoch, seq) is used: the SA can seal nothing more.
    #[inline]
    pub fn exhausted(&self) -> bool {
        self.seq == u32::MAX && self.epoch == u32::MAX
    }

    /// Seals the packet in `esp` (see [`seal_packet`]) under the next (epoch, seq), which it
    /// returns.
    #[inline]
    pub fn seal(
        &mut self,
        esp: &mut [u8],
        payload_len: usize,
        next_header: u8,
    ) -> Result<(u32, u32), SealError> {
        if esp.len() != esp::packet_len_for(payload_len) {
            return Err(SealError::Length);
        }
        let (epoch, seq) = if self.seq == u32::MAX {
            (self.epoch.checked_add(1).ok_or(SealError::Exhausted)?, 1)
        } else {
            (self.epoch, self.seq + 1)
        };
        seal_packet(
            &self.gcm,
            self.spi,
            seq,
            iv_of(epoch, seq),
            next_header,
            esp,
            payload_len,
        )?;
        (self.epoch, self.seq) = (epoch, seq);
        Ok((epoch, seq))
    }
}

/// An inbound SA: one peer → this node, under one configured key, with its replay window.
#[derive(Debug)]
pub struct InboundSa {
    peer: Ipv4Addr,
    key_id: KeyId,
    spi: u32,
    gcm: Gcm,
    window: ReplayWindow,
}

impl InboundSa {
    /// The SA `peer` → `local` under `key`, having seen nothing.
    pub fn new(key: &Key, peer: Ipv4Addr, local: Ipv4Addr) -> InboundSa {
        let m = derive(key, peer, local);
        InboundSa {
            peer,
            key_id: key.id(),
            spi: m.spi,
            gcm: Gcm::for_sa(&m),
            window: ReplayWindow::new(),
        }
    }

    /// The peer VTEP.
    pub fn peer(&self) -> Ipv4Addr {
        self.peer
    }

    /// The SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// The id of the configured key it derives from.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The replay window.
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Opens the ESP packet in `esp` in place, in RFC 4303's order: length, replay check,
    /// ICV (decrypting), then the window moves, then the trailer is checked.
    #[inline]
    pub fn open(&mut self, esp: &mut [u8]) -> Result<Opened, OpenError> {
        let p = esp::Packet::new_checked(&mut *esp).map_err(|_| OpenError::Truncated)?;
        let (epoch, seq) = epoch_seq(&p);
        self.window.check(epoch, seq)?;
        let iv = p.iv();
        let hdr = *p.header();
        let mut p = p;
        self.gcm
            .open(iv, &hdr, p.sealed_mut())
            .map_err(|_| OpenError::BadIcv)?;
        self.window.accept(epoch, seq);
        trailer(&p, epoch, seq)
    }
}

/// Which way an SA carries packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// This node → the peer.
    Outbound,
    /// The peer → this node.
    Inbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Outbound => "out",
            Direction::Inbound => "in",
        })
    }
}

/// One SA as `network inspect` lists it (no key material).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaInfo {
    /// Which way.
    pub direction: Direction,
    /// The peer VTEP.
    pub peer: Ipv4Addr,
    /// The configured key's id.
    pub key_id: KeyId,
    /// The SPI.
    pub spi: u32,
    /// Outbound: the epoch in use; inbound: the epoch of the highest verified packet (0 before
    /// the first).
    pub epoch: u32,
    /// Outbound: the last seq sent; inbound: the highest seq verified in `epoch` (0: none).
    pub seq: u32,
}

/// SAs derived ahead, for the tables' `apply`: a fresh SA for every wanted (peer, key), every
/// HKDF and AES key schedule done here, so this can run off the poll thread and `apply` only
/// moves SAs (no crypto, no syscall) between batches.
#[derive(Debug)]
pub struct SaPlan {
    /// One per peer from `keys[0]`, sorted by peer.
    pub outbound: Vec<OutboundSa>,
    /// One per (peer, key), sorted by (peer, SPI).
    pub inbound: Vec<InboundSa>,
}

impl SaPlan {
    /// The SAs the node whose VTEP is `local` wants for `keys` and `peers` (`local` among the
    /// peers is skipped, duplicates count once; no keys, no SAs). New outbound SAs number from
    /// (`epoch`, 1), or above: see [`OutboundSas::apply`].
    pub fn new(local: Ipv4Addr, keys: &[Key], peers: &[Ipv4Addr], epoch: u32) -> SaPlan {
        let mut peers: Vec<Ipv4Addr> = peers.iter().copied().filter(|&p| p != local).collect();
        peers.sort_unstable();
        peers.dedup();
        let outbound = match keys.first() {
            Some(key) => peers
                .iter()
                .map(|&peer| OutboundSa::new(key, local, peer, epoch))
                .collect(),
            None => Vec::new(),
        };
        let mut inbound: Vec<InboundSa> = peers
            .iter()
            .flat_map(|&peer| keys.iter().map(move |key| InboundSa::new(key, peer, local)))
            .collect();
        // Stable: of two keys deriving the same SPI for a peer (a 2^-32 chance), the first
        // listed stays.
        inbound.sort_by_key(|sa| (u32::from(sa.peer), sa.spi));
        inbound.dedup_by_key(|sa| (sa.peer, sa.spi));
        SaPlan { outbound, inbound }
    }

    /// Number the new outbound SAs from (`epoch`, 1) instead (no crypto): a plan derived ahead,
    /// off the packet thread, takes the epoch in force when it is applied.
    pub fn renumber(&mut self, epoch: u32) {
        for sa in &mut self.outbound {
            sa.epoch = epoch;
        }
    }
}

/// The outbound SAs of a node: one per peer, sorted by peer.
#[derive(Debug)]
pub struct OutboundSas {
    local: Ipv4Addr,
    sas: Vec<OutboundSa>,
    /// New SAs start at this epoch or above: one more than any epoch used so far.
    floor: u32,
}

impl OutboundSas {
    /// No SAs yet: every packet is refused (fail closed) until [`OutboundSas::set`].
    pub fn new(local: Ipv4Addr) -> OutboundSas {
        OutboundSas {
            local,
            sas: Vec::new(),
            floor: 0,
        }
    }

    /// Wants one SA per peer from `keys[0]` (none without keys): [`SaPlan::new`] then
    /// [`OutboundSas::apply`].
    pub fn set(&mut self, keys: &[Key], peers: &[Ipv4Addr], epoch: u32) {
        self.apply(SaPlan::new(self.local, keys, peers, epoch).outbound);
    }

    /// Replaces the table with `planned` (an [`SaPlan`]'s outbound SAs), keeping the SA in
    /// place (its sequence counter) wherever one for the same peer and key exists; fresh SAs
    /// start at their planned epoch or at 1 + the highest epoch this table ever used, whichever
    /// is greater (so no nonce is used twice, whatever epoch the caller passed). No crypto.
    pub fn apply(&mut self, planned: Vec<OutboundSa>) {
        if let Some(used) = self.sas.iter().map(|sa| sa.epoch).max() {
            self.floor = self.floor.max(used.saturating_add(1));
        }
        let live_peers: Vec<u32> = self.sas.iter().map(|sa| u32::from(sa.peer)).collect();
        let mut live: Vec<Option<OutboundSa>> = self.sas.drain(..).map(Some).collect();
        let mut next = Vec::with_capacity(planned.len());
        for mut sa in planned {
            let same = live_peers
                .binary_search(&u32::from(sa.peer))
                .ok()
                .and_then(|i| live[i].take_if(|l| l.key_id == sa.key_id && l.spi == sa.spi));
            next.push(match same {
                Some(kept) => kept,
                None => {
                    sa.epoch = sa.epoch.max(self.floor);
                    sa
                }
            });
        }
        next.sort_unstable_by_key(|sa| u32::from(sa.peer));
        next.dedup_by_key(|sa| sa.peer);
        self.sas = next;
    }

    /// This node's VTEP.
    #[inline]
    pub fn local(&self) -> Ipv4Addr {
        self.local
    }

    /// The SA toward `peer`.
    #[inline]
    pub fn find_mut(&mut self, peer: Ipv4Addr) -> Option<&mut OutboundSa> {
        let k = u32::from(peer);
        let i = self
            .sas
            .binary_search_by_key(&k, |sa| u32::from(sa.peer))
            .ok()?;
        self.sas.get_mut(i)
    }

    /// The SAs, by peer.
    pub fn iter(&self) -> impl Iterator<Item = &OutboundSa> {
        self.sas.iter()
    }

    /// The listing.
    pub fn list(&self) -> Vec<SaInfo> {
        self.sas
            .iter()
            .map(|sa| SaInfo {
                direction: Direction::Outbound,
                peer: sa.peer,
                key_id: sa.key_id,
                spi: sa.spi,
                epoch: sa.epoch,
                seq: sa.seq,
            })
            .collect()
    }
}

/// The inbound SAs of a node: one per (peer, key), sorted by (peer, SPI).
#[derive(Debug)]
pub struct InboundSas {
    local: Ipv4Addr,
    sas: Vec<InboundSa>,
}

impl InboundSas {
    /// No SAs yet: every ESP packet is refused until [`InboundSas::set`].
    pub fn new(local: Ipv4Addr) -> InboundSas {
        InboundSas {
            local,
            sas: Vec::new(),
        }
    }

    /// Wants one SA per (peer, key): [`SaPlan::new`] then [`InboundSas::apply`].
    pub fn set(&mut self, keys: &[Key], peers: &[Ipv4Addr]) {
        self.apply(SaPlan::new(self.local, keys, peers, 0).inbound);
    }

    /// Replaces the table with `planned` (an [`SaPlan`]'s inbound SAs), keeping the SA in
    /// place (its replay window) wherever one for the same peer, SPI and key exists. No
    /// crypto.
    pub fn apply(&mut self, planned: Vec<InboundSa>) {
        let live_keys: Vec<(u32, u32)> = self
            .sas
            .iter()
            .map(|sa| (u32::from(sa.peer), sa.spi))
            .collect();
        let mut live: Vec<Option<InboundSa>> = self.sas.drain(..).map(Some).collect();
        let mut next: Vec<InboundSa> = planned
            .into_iter()
            .map(|sa| {
                live_keys
                    .binary_search(&(u32::from(sa.peer), sa.spi))
                    .ok()
                    .and_then(|i| live[i].take_if(|l| l.key_id == sa.key_id))
                    .unwrap_or(sa)
            })
            .collect();
        next.sort_by_key(|sa| (u32::from(sa.peer), sa.spi));
        next.dedup_by_key(|sa| (sa.peer, sa.spi));
        self.sas = next;
    }

    /// This node's VTEP.
    #[inline]
    pub fn local(&self) -> Ipv4Addr {
        self.local
    }

    /// The SA of packets from `src` with `spi`.
    #[inline]
    pub fn find_mut(&mut self, src: Ipv4Addr, spi: u32) -> Option<&mut InboundSa> {
        let k = (u32::from(src), spi);
        let i = self
            .sas
            .binary_search_by_key(&k, |sa| (u32::from(sa.peer), sa.spi))
            .ok()?;
        self.sas.get_mut(i)
    }

    /// The SAs, by (peer, SPI).
    pub fn iter(&self) -> impl Iterator<Item = &InboundSa> {
        self.sas.iter()
    }

    /// The listing.
    pub fn list(&self) -> Vec<SaInfo> {
        self.sas
            .iter()
            .map(|sa| {
                let (epoch, seq) = sa.window.position().unwrap_or((0, 0));
                SaInfo {
                    direction: Direction::Inbound,
                    peer: sa.peer,
                    key_id: sa.key_id,
                    spi: sa.spi,
                    epoch,
                    seq,
                }
            })
            .collect()
    }
}

/// The node's SA table: its outbound half (what `esp-encrypt` holds) and inbound half (what
/// `esp-decrypt` holds). [`EspSas::into_halves`] hands them to the stages.
#[derive(Debug)]
pub struct EspSas {
    /// This node → peers.
    pub outbound: OutboundSas,
    /// Peers → this node.
    pub inbound: InboundSas,
}

impl EspSas {
    /// The empty table of the node whose VTEP is `local` (refuses everything: fail closed).
    pub fn new(local: Ipv4Addr) -> EspSas {
        EspSas {
            outbound: OutboundSas::new(local),
            inbound: InboundSas::new(local),
        }
    }

    /// Outbound SA per peer from `keys[0]`, inbound SAs for every (peer, key); keeps the
    /// state of every SA still wanted (the reload path). See the module docs. The same as
    /// [`SaPlan::new`] then [`EspSas::apply`].
    pub fn set(&mut self, keys: &[Key], peers: &[Ipv4Addr], epoch: u32) {
        self.outbound.set(keys, peers, epoch);
        self.inbound.set(keys, peers);
    }

    /// Applies a plan to both halves (see [`OutboundSas::apply`], [`InboundSas::apply`]).
    pub fn apply(&mut self, plan: SaPlan) {
        self.outbound.apply(plan.outbound);
        self.inbound.apply(plan.inbound);
    }

    /// Every SA, outbound first: what `network inspect` shows.
    pub fn list(&self) -> Vec<SaInfo> {
        let mut v = self.outbound.list();
        v.extend(self.inbound.list());
        v
    }

    /// The two halves, for the two stages.
    pub fn into_halves(self) -> (OutboundSas, InboundSas) {
        (self.outbound, self.inbound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_sa_material_wipes_its_key_and_salt() {
        let key = Key::from_bytes([7; crate::key::KEY_SALT_LEN]);
        let mut m = core::mem::ManuallyDrop::new(derive(
            &key,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        ));
        assert_ne!(m.key, [0; KEY_LEN]);
        // SAFETY: dropped in place once and never used again; its plain byte arrays (in
        // storage this test still owns) are only read.
        unsafe { core::ptr::drop_in_place(&mut *m) };
        assert_eq!((m.key, m.salt), ([0; KEY_LEN], [0; SALT_LEN]));
    }

    #[test]
    fn reserved_spis_are_moved_out_of_0_to_255() {
        assert_eq!(spi_of([0, 0, 0, 0]), 0x100);
        assert_eq!(spi_of([0, 0, 0, 0xff]), 0x1ff);
        assert_eq!(spi_of([0, 0, 1, 0]), 0x100);
        assert_eq!(spi_of([0, 0, 1, 0x2a]), 0x12a);
        assert_eq!(spi_of([0xde, 0xad, 0xbe, 0xef]), 0xdead_beef);
    }

    #[test]
    fn a_plan_derived_ahead_takes_the_epoch_it_is_applied_at() {
        let key = Key::from_bytes([7; 20]);
        let local = Ipv4Addr::new(198, 18, 0, 1);
        let peers = [Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)];
        let mut plan = SaPlan::new(local, &[key], &peers, 0);
        plan.renumber(77);
        assert!(plan.outbound.iter().all(|sa| sa.epoch == 77 && sa.seq == 0));
        let mut table = OutboundSas::new(local);
        table.apply(plan.outbound);
        assert!(table.list().iter().all(|sa| sa.epoch == 77));
    }

    #[test]
    fn an_outbound_sa_wraps_its_seq_into_the_next_epoch_and_stops_at_the_end() {
        let key = Key::from_bytes([7; 20]);
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        let mut out = OutboundSa::new(&key, a, b, 41);
        let mut inb = InboundSa::new(&key, a, b);
        out.seq = u32::MAX - 1;
        let mut buf = vec![0u8; esp::packet_len_for(3)];
        for want in [(41, u32::MAX), (42, 1), (42, 2)] {
            assert_eq!(out.seal(&mut buf, 3, 17), Ok(want));
            let opened = inb.open(&mut buf).unwrap();
            assert_eq!((opened.epoch, opened.seq), want);
            buf.fill(0);
        }
        out.epoch = u32::MAX;
        out.seq = u32::MAX - 1;
        assert!(!out.exhausted());
        assert_eq!(out.seal(&mut buf, 3, 17), Ok((u32::MAX, u32::MAX)));
        assert!(out.exhausted());
        assert_eq!(out.seal(&mut buf, 3, 17), Err(SealError::Exhausted));
        assert_eq!(out.position(), (u32::MAX, u32::MAX));
        assert_eq!(out.seal(&mut buf[1..], 3, 17), Err(SealError::Length));
    }
}
