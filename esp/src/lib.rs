//! ESP (RFC 4303) for vxmesh's encrypted networks: AES-128-GCM (RFC 4106) in transport mode
//! around the VXLAN UDP datagrams between nodes, in userspace (no kernel XFRM).
//!
//! - [`key`]: the configured `[encryption] keys` (base64 of a 16-byte key and a 4-byte salt),
//!   shown only by their [`KeyId`].
//! - [`sa`]: the per-SA derivation (HKDF-SHA256 over the configured key, the sender's and the
//!   receiver's VTEP: both ends agree with no negotiation), AES-GCM sealing and opening of ESP
//!   packets in place, the outbound and inbound SA tables ([`EspSas`]) and how a reload keeps
//!   their state.
//! - [`replay`]: the receiver's anti-replay window over 64-bit (epoch, seq) numbers.
//! - [`stage`]: `esp-decrypt` and `esp-encrypt`, the ESP underlay port's first receive stage
//!   and last transmit stage.
//! - [`tap`]: the decrypted capture those two stages feed while one runs.
//! - The wire format is `vswitch::wire::esp` (re-exported as [`wire`]).
//!
//! ```text
//! ESP underlay (raw IPv4, proto 50) ─► esp-decrypt ─► vxlan-decap ─► l2-parse ─► ... ─► local port
//! local port ─► ... ─► output ─► [ESP underlay tx: vxlan-encap ─► esp-encrypt] ─► ESP underlay ─► peer VTEP
//! ```
//!
//! On the wire (after the outer IPv4 header, protocol 50):
//!
//! ```text
//! SPI (4) | seq (4) | IV = epoch (4) || seq (4) | UDP 4789→4789, csum 0 (8) | VXLAN (8) | inner frame
//!         | padding 1,2,3.. | pad length | next header 17 | ICV (16)
//!                   └──────────── encrypted ─────────────────────────────────────────────┘
//! ```
//!
//! # The derivation, exactly
//!
//! For sender VTEP `S`, receiver VTEP `R` and a configured key `K` (the 20 bytes of a `keys`
//! entry: 16-byte AES-128 key, then 4-byte salt):
//!
//! ```text
//! okm = HKDF-SHA256(ikm = K.key || K.salt, salt = b"vxmesh-esp-v1", info = S.octets() || R.octets(), L = 24)
//! SA key = okm[0..16]    SA salt = okm[16..20]    SPI = u32 BE of okm[20..24], | 0x100 if <= 255
//! key id (shown) = hex(SHA-256(b"vxmesh-key-id" || K.key || K.salt)[0..4])
//! ```
//!
//! Vector (tests/kat.rs): K = bytes 00 01 .. 13, S = 198.18.0.1, R = 198.18.0.2 → SA key
//! `0bc368fc74d4baa81a753b6515b78a45`, salt `6054600e`, SPI `0x6bee2096`; the reverse
//! direction → `f48dff75b2a2bac95d88ca705d44be1f`, `8fd61a2f`, `0xc547befb`; key id
//! `3d48685c`. In Python: `HKDF(hashes.SHA256(), 24, b"vxmesh-esp-v1", S + R).derive(K)`.
//!
//! # Wiring (the integrator's side)
//!
//! - Parse the keys with [`Key::parse`] (errors say "not base64" or the wrong length, never
//!   the key).
//! - `let mut sas = EspSas::new(local_vtep); sas.set(&keys, &peers, epoch);` with `epoch` the
//!   current unix time in seconds, made greater than the last one this node used (persist it);
//!   then [`stages`]`(sas)` gives `(EspEncrypt, EspDecrypt)`: `esp-decrypt` first on the ESP
//!   underlay port's receive path (before `vxlan-decap`), `esp-encrypt` after `vxlan-encap` on
//!   its transmit path; the port sends each frame (the ESP packet, SPI first) to
//!   `meta.peer`'s address over a raw IPv4 socket for protocol 50.
//! - Reload: `set(&keys, &peers, epoch)` on both stages (through their stage handles), or
//!   [`SaPlan::new`] off the poll thread and `apply(plan.outbound)` / `apply(plan.inbound)`
//!   between batches. Either keeps the counters and windows of the SAs still wanted.
//! - `network inspect`: `encrypt.list()` and `decrypt.list()` ([`SaInfo`]: direction, peer,
//!   key id, SPI, epoch, seq; never key bytes).
//! - Counters: `esp-encrypt` counts `encrypted` and drops `drop_esp_no_sa`,
//!   `drop_esp_no_room`, `drop_esp_seq_exhausted`; `esp-decrypt` counts `decrypted` and drops
//!   the nine reasons of [`DecryptDrop`].
//! - MTU: ESP adds at most [`MAX_OVERHEAD`] bytes to a VXLAN datagram (inner UDP header, ESP
//!   header and IV, padding, trailer, ICV), the outer IPv4 header aside.

pub mod key;
pub mod replay;
pub mod sa;
pub mod stage;
pub mod tap;

pub use vswitch::wire::esp as wire;

pub use key::{Key, KeyError, KeyId};
pub use replay::{ReplayError, ReplayWindow, WINDOW};
pub use sa::{
    BadIcv, Direction, EspSas, Gcm, InboundSa, InboundSas, OpenError, Opened, OutboundSa,
    OutboundSas, SaInfo, SaMaterial, SaPlan, SealError, derive, iv_of, open_packet, seal_packet,
};
pub use stage::{DecryptDrop, EncryptDrop, EspDecrypt, EspEncrypt, MAX_OVERHEAD, stages};
