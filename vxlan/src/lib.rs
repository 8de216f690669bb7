//! VXLAN (RFC 7348) for vxmesh: the pieces that make a network span nodes.
//!
//! - [`wire`] (`vswitch::wire::vxlan`, re-exported): the 8-byte VXLAN header, zero-copy, strict
//!   parse (what `vxlan-decap` reads) and emit (what `vxlan-encap` prepends into headroom).
//! - [`stage`]: `vxlan-decap` ([`VxlanDecap`], strict, every refusal counted by name) and
//!   `vxlan-encap` ([`VxlanEncap`], on the underlay port's transmit path); the remote VTEP's
//!   address travels in `Meta::peer`.
//!
//! The UDP underlay port that carries the datagrams (`recvmmsg`/`sendmmsg` on port 4789; the
//! kernel adds outer IP and UDP, so no kernel vxlan device is needed) is a port like the others:
//! `vswitch::port::udp::UdpPort`.
//!
//! ```text
//! underlay (UdpPort) ─► vxlan-decap ─► l2-parse ─► l2-learn ─► l2-fwd ─► local port
//! local port ─► l2 stages ─► l2-fwd ─► output ─► [underlay tx path: vxlan-encap] ─► underlay (UdpPort) ─► remote VTEP
//! ```

pub mod stage;

pub use vswitch::wire::vxlan as wire;

pub use stage::{DecapDrop, ENCAP_LEN, EncapDrop, VxlanDecap, VxlanEncap};
pub use wire::{HeaderError, Repr, VXLAN_PORT, Vni, VniError};
