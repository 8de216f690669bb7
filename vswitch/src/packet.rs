//! Packet buffers and per-packet metadata: what every stage of the pipeline works on.
//!
//! A [`Packet`] owns one fixed-size buffer for its whole life (buffers are allocated once, when a
//! [`Batch`](crate::Batch) is created, and then only swapped between batches). The frame starts
//! [`HEADROOM`] bytes into the buffer, so encapsulation (`vxlan-encap`'s header) prepends with
//! [`Packet::push_front`] instead of copying the frame, and decapsulation strips with
//! [`Packet::pull_front`]. Alongside the bytes travels a small [`Meta`]: where the packet came
//! from, which bridge domain it is in, the remote VTEP and underlay peer of a tunnelled frame,
//! and its disposition ([`Next`]) as decided by the stages.

use core::fmt;
use core::net::SocketAddrV4;

pub use crate::wire::ethernet::{Mac, MacParseError};

/// Bytes reserved in front of every frame for headers pushed later (VXLAN's 8; a full outer
/// Ethernet/IPv4/UDP/VXLAN stack would need 50).
pub const HEADROOM: usize = 128;
/// Default buffer size: headroom plus room for a 1500-byte-MTU frame with a VLAN tag and then some.
pub const DEFAULT_BUF_SIZE: usize = 2048 + HEADROOM;

/// Index of a port in the switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// Index of a network (a bridge domain, one VNI) in the switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetId(pub u16);

/// Index of a remote VTEP (another node's underlay address) in [`Env::vteps`](crate::Env).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VtepId(pub u16);

/// A drop reason: an index into the dropping stage's [`Stage::drop_names`](crate::Stage::drop_names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DropReason(pub u8);

/// The disposition of a packet, set by the stages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Next {
    /// Not decided yet: the next stage of the path looks at it.
    #[default]
    Continue,
    /// Transmit on this port.
    Output(PortId),
    /// Copy to every local port of the network but the input, and replicate to remote VTEPs.
    Flood,
    /// Encapsulate and send to this remote VTEP.
    Remote(VtepId),
    /// Drop, counted under the dropping stage's reason.
    Drop(DropReason),
}

/// Per-packet metadata, reset on receive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The port the packet was received on.
    pub in_port: PortId,
    /// The bridge domain the packet is switched in.
    pub net: NetId,
    /// Its disposition.
    pub next: Next,
    /// Offset of the L3 header in the frame (after Ethernet and any VLAN tag), set by `l2-parse`.
    pub l3_offset: u16,
    /// The EtherType of the L3 payload (inner one if VLAN tagged), set by `l2-parse`.
    pub ethertype: u16,
    /// For a frame that arrived through a tunnel: the VTEP it came from (set by `vxlan-decap`).
    pub from_vtep: Option<VtepId>,
    /// For a frame queued toward a remote VTEP: the VTEP it goes to (set by the output step
    /// before the underlay port's transmit path, which encapsulates toward it).
    pub to_vtep: Option<VtepId>,
    /// The underlay peer: on receive from the UDP underlay, the datagram's source address; on
    /// transmit, where the UDP underlay sends the datagram (set by `vxlan-encap`).
    pub peer: Option<SocketAddrV4>,
    /// Trace id when the packet is marked for tracing (stages then record their decisions for
    /// it); 0 when it is not.
    pub trace: u32,
    /// Checksum or segmentation work the sender left (a TAP with offloads); see
    /// [`crate::offload`]. Outputs that cannot take it get it done in software.
    pub offload: crate::offload::Offload,
}

/// One frame in a buffer with headroom, plus its metadata.
///
/// 64 bytes (a cache line): the buffer pointer, the frame's start and length as `u32` (a
/// buffer is far below 4 GiB), and the [`Meta`].
pub struct Packet {
    buf: Box<[u8]>,
    head: u32,
    len: u32,
    /// Metadata the stages read and write.
    pub meta: Meta,
}

impl Packet {
    /// A packet with an empty frame in a buffer of `buf_size` bytes (at least `HEADROOM + 64`,
    /// less than 4 GiB).
    pub fn with_capacity(buf_size: usize) -> Self {
        let buf_size = buf_size.max(HEADROOM + 64);
        assert!(
            u32::try_from(buf_size).is_ok(),
            "packet buffer of {buf_size} bytes"
        );
        Packet {
            buf: vec![0u8; buf_size].into_boxed_slice(),
            head: HEADROOM as u32,
            len: 0,
            meta: Meta::default(),
        }
    }

    /// The whole buffer, headroom included (to touch its pages: [`crate::Batch::prefault`]).
    pub(crate) fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// A packet holding a copy of `frame` (for tests and examples).
    pub fn from_frame(frame: &[u8]) -> Self {
        let mut p = Packet::with_capacity(DEFAULT_BUF_SIZE.max(HEADROOM + frame.len()));
        p.set_frame(frame).expect("sized for the frame");
        p
    }

    /// The frame's start and end in the buffer.
    #[inline]
    fn span(&self) -> core::ops::Range<usize> {
        let head = self.head as usize;
        head..head + self.len as usize
    }

    /// The frame.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.span()]
    }

    /// The frame, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let span = self.span();
        &mut self.buf[span]
    }

    /// Frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the frame is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.head as usize
    }

    /// Largest frame this buffer holds when the frame starts at the standard headroom.
    #[inline]
    pub fn data_room(&self) -> usize {
        self.buf.len() - HEADROOM
    }

    /// Longest frame the buffer holds from the frame's current start (what [`Packet::set_len`]
    /// accepts).
    #[inline]
    pub fn max_len(&self) -> usize {
        self.buf.len() - self.head as usize
    }

    /// Grow the frame by `n` bytes at the front (into headroom) and return them, or `None`
    /// when the headroom is too small.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.head as usize {
            return None;
        }
        // n <= head < 4 GiB.
        self.head -= n as u32;
        self.len += n as u32;
        let head = self.head as usize;
        Some(&mut self.buf[head..head + n])
    }

    /// Strip `n` bytes from the front; false (and no change) if the frame is shorter.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len as usize {
            return false;
        }
        // n <= len < 4 GiB.
        self.head += n as u32;
        self.len -= n as u32;
        true
    }

    /// Set the frame length (the frame keeps its start); false if it does not fit the buffer.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        if self.head as usize + len > self.buf.len() {
            return false;
        }
        // Fits the buffer, which is below 4 GiB.
        self.len = len as u32;
        true
    }

    /// Reset to an empty frame at the standard headroom, with default metadata.
    #[inline]
    pub fn reset(&mut self) {
        self.head = HEADROOM as u32;
        self.len = 0;
        self.meta = Meta::default();
    }

    /// The whole writable area after the standard headroom, for a port's receive path to fill;
    /// follow with [`Packet::set_len`]. Metadata is reset: the port may then record what it
    /// knows of the frame (the switch sets only `in_port` and `net` after receive).
    #[inline]
    pub fn rx_area(&mut self) -> &mut [u8] {
        self.head = HEADROOM as u32;
        self.meta = Meta::default();
        &mut self.buf[HEADROOM..]
    }

    /// Replace the frame with a copy of `frame` at the standard headroom; metadata is reset.
    #[inline]
    pub fn set_frame(&mut self, frame: &[u8]) -> Result<(), FrameTooBig> {
        if HEADROOM + frame.len() > self.buf.len() {
            return Err(FrameTooBig {
                len: frame.len(),
                room: self.data_room(),
            });
        }
        self.reset();
        self.buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        // Fits the buffer, which is below 4 GiB.
        self.len = frame.len() as u32;
        Ok(())
    }

    /// Copy another packet's frame and metadata into this one (used for flood copies).
    #[inline]
    pub fn copy_from(&mut self, other: &Packet) -> Result<(), FrameTooBig> {
        self.set_frame(other.data())?;
        self.meta = other.meta;
        Ok(())
    }
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("len", &self.len)
            .field("meta", &self.meta)
            .finish()
    }
}

/// A frame does not fit in a packet buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes does not fit a buffer with {room} bytes of data room")]
pub struct FrameTooBig {
    /// The frame's length.
    pub len: usize,
    /// The buffer's room.
    pub room: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_stays_small() {
        // Reset on every receive and copied with every flood copy.
        assert!(size_of::<Meta>() <= 40, "{}", size_of::<Meta>());
        // Batches are arrays of packets: one cache line each.
        assert!(size_of::<Packet>() <= 64, "{}", size_of::<Packet>());
    }

    #[test]
    fn push_and_pull_use_headroom_without_moving_the_frame() {
        let mut p = Packet::from_frame(&[1, 2, 3, 4]);
        assert_eq!(p.headroom(), HEADROOM);
        let hdr = p.push_front(50).unwrap();
        hdr.fill(9);
        assert_eq!(p.len(), 54);
        assert_eq!(&p.data()[50..], &[1, 2, 3, 4]);
        assert!(p.pull_front(50));
        assert_eq!(p.data(), &[1, 2, 3, 4]);
        assert!(!p.pull_front(5));
        assert!(p.push_front(HEADROOM + 1).is_none());
        assert_eq!(p.data(), &[1, 2, 3, 4]);
    }

    #[test]
    fn set_frame_refuses_frames_larger_than_the_buffer() {
        let mut p = Packet::with_capacity(HEADROOM + 100);
        assert!(p.set_frame(&[0u8; 100]).is_ok());
        assert_eq!(
            p.set_frame(&[0u8; 101]),
            Err(FrameTooBig {
                len: 101,
                room: 100
            })
        );
        assert!(!p.set_len(101));
    }
}
