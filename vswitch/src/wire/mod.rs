//! The wire layer: zero-copy wrappers, in smoltcp's style, for every header the dataplane reads
//! or writes, and the one ones'-complement checksum module.
//!
//! Where it sits: under every stage and port. `l2-parse` validates the Ethernet header once
//! ([`ethernet::Packet::new_checked`]); the stages after it wrap the same bytes with
//! `new_unchecked` (as smoltcp allows once a length is known), so an accessor compiles to the
//! load a raw offset would. Everything read from outside a validated frame goes through
//! `new_checked`, after which no accessor panics.
//!
//! Each header file follows the same shape: the RFC's header diagram, the header length and the
//! protocol constants (declared here once for the whole workspace), a `field` module of byte
//! ranges, `Packet<T: AsRef<[u8]>>` with `new_unchecked`/`new_checked`, getters, setters on
//! `T: AsMut<[u8]>`, and a `Repr` with `parse`/`emit` where a whole header is built or read.
//!
//! ```text
//! ethernet (+ 802.1Q) ─┬─ arp
//!                      └─ ipv4 ─┬─ tcp
//!                               ├─ udp ── vxlan ── ethernet ...
//!                               └─ icmp (errors quoting ipv4 + tcp/udp)
//! vnet: the virtio-net header in front of a TAP's frames; checksum: RFC 1071 / RFC 1624
//! ```

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;
pub mod vnet;
pub mod vxlan;

pub use ethernet::{Mac, MacParseError};

/// Why bytes are not an acceptable header (the shared error of the wrappers without a richer
/// one of their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the header, or than a length the header announces.
    #[error("truncated header")]
    Truncated,
    /// A length or version field that cannot be right.
    #[error("malformed header")]
    Malformed,
}

/// A big-endian `u16` at the start of `b` (which holds at least 2 bytes).
#[inline]
pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A big-endian `u32` at the start of `b` (which holds at least 4 bytes).
#[inline]
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes `v` big-endian at the start of `b`.
#[inline]
pub(crate) fn set_be16(b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&v.to_be_bytes());
}

/// Writes `v` big-endian at the start of `b`.
#[inline]
pub(crate) fn set_be32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_be_bytes());
}
