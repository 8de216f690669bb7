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
//! The integrator's wiring: parse keys with [`Key::parse`]; build `EspSas::new(local_vtep)`,
//! `set(&keys, &peers, epoch)` (epoch: unix seconds, above the last one this node used), and
//! [`stage::stages`] gives the two stages; on reload call `set` with the same arguments on
//! both stages (through their stage handles); `network inspect` lists
//! `encrypt.list()` and `decrypt.list()` ([`SaInfo`]: peer, key id, SPI, epoch, seq).

pub mod key;
pub mod replay;
pub mod sa;
pub mod stage;

pub use vswitch::wire::esp as wire;

pub use key::{Key, KeyError, KeyId};
pub use replay::{ReplayError, ReplayWindow, WINDOW};
pub use sa::{
    BadIcv, Direction, EspSas, Gcm, InboundSa, InboundSas, OpenError, Opened, OutboundSa,
    OutboundSas, SaInfo, SaMaterial, SealError, derive, iv_of, open_packet, seal_packet,
};
pub use stage::{DecryptDrop, EncryptDrop, EspDecrypt, EspEncrypt, MAX_OVERHEAD, stages};
