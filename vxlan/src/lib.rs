//! VXLAN (RFC 7348) for vxmesh: the pieces that make a network span nodes.
//!
//! - [`wire`]: the 8-byte VXLAN header, zero-copy, strict parse (what `vxlan-decap` reads) and
//!   emit (what `vxlan-encap` prepends into headroom).
//! - [`outer`]: the full 50-byte outer Ethernet/IPv4/UDP/VXLAN header, built like the Linux
//!   kernel's vxlan device builds it, for an underlay that sends whole frames (AF_XDP).
//! - [`underlay`]: the UDP underlay on port 4789, batched with `recvmmsg`/`sendmmsg`; the
//!   kernel adds outer IP and UDP, so no kernel vxlan device is needed.

#![warn(missing_docs)]

pub mod outer;
pub mod underlay;
pub mod wire;

pub use outer::{
    OUTER_HEADER_LEN, OuterConfig, OuterError, OuterTemplate, SrcPortRange, VXLAN_PORT,
};
pub use wire::{HeaderError, Repr, Vni, VniError};
