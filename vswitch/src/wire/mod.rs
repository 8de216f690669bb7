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
//!                               ├─ udp ─┬─ vxlan ── ethernet ...
//!                               │       └─ dns (queries to a network's resolver)
//!                               ├─ esp ── udp ── vxlan ... (encrypted networks, ESP underlay)
//!                               └─ icmp (errors quoting ipv4 + tcp/udp)
//! vnet: the virtio-net header in front of a TAP's frames; checksum: RFC 1071 / RFC 1624
//! ```

/// Declares the part of a header's wrapper that is the same for every header: the
/// `Packet<T: AsRef<[u8]>>` struct (documented by the first lines), `new_unchecked`,
/// `new_checked`, `into_inner` and `AsRef<[u8]>`, around the header's own `check_len`, which
/// the header file writes out as `check_len: |packet| ...` (documented by the lines above it)
/// next to its `field` ranges and accessors, so a reader sees every byte range and every length
/// check. Every generated function is `#[inline]` and generic: no dispatch, no cost over the
/// plain load.
macro_rules! packet_wrapper {
    (
        $(#[$doc:meta])*
        error: $err:ty,
        $(#[$check_doc:meta])*
        check_len: |$packet:ident| $check:expr $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Packet<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> Packet<T> {
            /// Wraps a buffer without checking it (accessors may panic on a short buffer).
            #[inline]
            pub const fn new_unchecked(buffer: T) -> Packet<T> {
                Packet { buffer }
            }

            /// Wraps a buffer after [`Packet::check_len`]; no accessor panics afterwards.
            #[inline]
            pub fn new_checked(buffer: T) -> Result<Packet<T>, $err> {
                let packet = Packet::new_unchecked(buffer);
                packet.check_len()?;
                Ok(packet)
            }

            $(#[$check_doc])*
            #[inline]
            pub fn check_len(&self) -> Result<(), $err> {
                let $packet = self;
                $check
            }

            /// Returns the underlying buffer.
            #[inline]
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
            #[inline]
            fn as_ref(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }
    };
}

/// Declares the source and destination port accessors of a transport header whose `field`
/// module has `SRC_PORT` and `DST_PORT` (TCP and UDP share the first four bytes).
macro_rules! port_accessors {
    () => {
        impl<T: AsRef<[u8]>> Packet<T> {
            /// The source port.
            #[inline]
            pub fn src_port(&self) -> u16 {
                $crate::wire::be16(&self.buffer.as_ref()[field::SRC_PORT])
            }

            /// The destination port.
            #[inline]
            pub fn dst_port(&self) -> u16 {
                $crate::wire::be16(&self.buffer.as_ref()[field::DST_PORT])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
            /// Sets the source port.
            #[inline]
            pub fn set_src_port(&mut self, port: u16) {
                $crate::wire::set_be16(&mut self.buffer.as_mut()[field::SRC_PORT], port);
            }

            /// Sets the destination port.
            #[inline]
            pub fn set_dst_port(&mut self, port: u16) {
                $crate::wire::set_be16(&mut self.buffer.as_mut()[field::DST_PORT], port);
            }
        }
    };
}

pub mod arp;
pub mod checksum;
pub mod dns;
pub mod esp;
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

/// Checks that `len` bytes hold at least the `min` a header needs ([`Error::Truncated`] if not).
#[inline]
pub(crate) fn check_min_len(len: usize, min: usize) -> Result<(), Error> {
    if len < min {
        Err(Error::Truncated)
    } else {
        Ok(())
    }
}

/// Checks a length a header announces (its header length or its total length) against the
/// `len` bytes at hand: below `min` it cannot be right ([`Error::Malformed`]), above `len` it
/// is cut off ([`Error::Truncated`]).
#[inline]
pub(crate) fn check_announced_len(len: usize, announced: usize, min: usize) -> Result<(), Error> {
    if announced < min {
        Err(Error::Malformed)
    } else if len < announced {
        Err(Error::Truncated)
    } else {
        Ok(())
    }
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
