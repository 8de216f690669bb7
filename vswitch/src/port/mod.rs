//! Ports: where batches enter and leave the switch, and the drivers behind them.
//!
//! Where it sits: at both ends of the packet path. [`Switch::poll`](crate::Switch::poll) calls
//! each port's [`Port::rx_burst`], runs the batch through the port's stages, queues every packet
//! on its output port's transmit batch, and ends the round with one [`Port::tx_burst`] per
//! non-empty transmit batch, after the port's transmit path of stages if it has one
//! ([`Switch::set_tx_path`](crate::Switch::set_tx_path): the underlay's `vxlan-encap`).
//!
//! ```text
//! device ─► rx_burst(batch) ─► l2-parse ─► ... ─► output ─► tx batch of port P ─► [P's tx path] ─► P.tx_burst ─► device
//! ```
//!
//! The drivers, each in its own module: [`mem`] (in memory, always built), `afxdp` (AF_XDP
//! sockets on an existing interface; cargo feature `afxdp`), `tap` (a TAP device in a
//! container's namespace; feature `tap`), and the OS helpers they share, `netns`, `ethtool`
//! and `iface` (built with either feature), and `udp` (the UDP underlay, VXLAN's transport:
//! `recvmmsg`/`sendmmsg` with UDP GSO/GRO, and the ESP ports; feature `udp`). [`capture`]
//! rebuilds the headers the kernel adds, for the captures of the ports without Ethernet.
//! [`handoff`] wraps any driver for a switch on several poll threads: the ports shared out
//! among the workers, frames handed between them through lock-free rings.
//! A crate that needs only the pipeline core depends on vswitch with `default-features = false`
//! and compiles none of the drivers.
//!
//! # The port contract
//!
//! Written down as Open vSwitch's `lib/netdev-provider.h` does for its netdev providers.
//!
//! **Buffers belong to the batch, never to the port.** A [`Batch`] owns a fixed set of
//! [`Packet`] buffers, allocated once. On receive the port writes frames into
//! the batch's free slots ([`Batch::spare_mut`]), in order from the first, through
//! [`Packet::rx_area`](crate::Packet::rx_area) (which resets the metadata) and
//! [`Packet::set_len`](crate::Packet::set_len), then calls [`Batch::grow`] with how many it
//! filled and returns that number. It may reorder the free slots among themselves (to skip a
//! slot it wrote a bad frame into) but never frees, replaces or keeps one. The switch moves
//! packets from the receive batch to transmit batches by swapping buffers, so the buffers a
//! port is given on transmit came from any port. On transmit the port reads (copies out, or
//! hands the kernel a copy of) the frames of `batch.pkts()` and keeps no reference once
//! `tx_burst` returns; the caller clears the batch afterwards. A port may record what it knows
//! of a received frame in [`Meta`](crate::Meta) (a TAP: the virtio-net offload state); the
//! switch sets `in_port` and `net` after receive.
//!
//! **Short transmit means dropped, not queued.** `tx_burst` returns how many frames it
//! accepted (handed to the device or its ring); the switch counts that many as `tx_packets`
//! and the rest as `tx_dropped`, and does not retry. A port that skips a frame in the middle
//! of a batch (too long, refused by the device) goes on with the next and counts the skipped
//! one in its own counters; one that runs out of room (ring full, device would block) stops
//! and counts the remainder. No port blocks waiting for room.
//!
//! **Errors are counted, never returned or raised.** Neither burst call fails: a receive
//! error ends the burst with what was received so far, a transmit error drops the frame. Each
//! port keeps its own counters of why (`rx_truncated`, `tx_ring_full`, `tx_would_block`,
//! `last_errno`, ...) and lists them in [`Port::counters`], which the switch reads only for a
//! snapshot, off the packet path (it may allocate). Opening a port is where errors are
//! returned, as a typed `<Driver>Error` naming the interface and the step.
//!
//! **Capabilities** are methods with defaults, asked by the switch: [`Port::offloads`] (the
//! port takes frames with checksum or segmentation work left, else the switch finishes that
//! work first), [`Port::poll_fd`] (a descriptor to sleep on when every port is idle, else the
//! port is polled), [`Port::rx_wants_readiness`] (an empty receive is a system call: the
//! switch may skip it while the descriptor is not readable), [`Port::capture_frame`] (the frame as it is on the wire, for pcap, from the
//! packet's bytes and metadata: the UDP underlay rebuilds the outer headers from `meta.peer`).
//!
//! **Threading: one owner, non-blocking.** A port is `Send` but not shared: the one thread
//! that runs the switch calls every method. Both burst calls return at once when there is
//! nothing to receive or no room to send. On the packet path a port makes no allocation, takes
//! no lock that another thread holds for long and does not panic; each driver's module says
//! which system calls a burst costs ([`mem`]: none; AF_XDP: none to receive, one `sendto` per
//! kick to transmit; TAP: one `readv`/`writev` per frame; UDP: one `recvmmsg`/`sendmmsg` per
//! batch).

use std::os::fd::RawFd;

use crate::batch::Batch;
use crate::packet::Packet;

#[cfg(feature = "afxdp")]
pub mod afxdp;
pub mod capture;
#[cfg(any(feature = "afxdp", feature = "tap"))]
pub mod ethtool;
#[cfg(any(feature = "afxdp", feature = "tap"))]
mod gather;
pub mod handoff;
#[cfg(any(feature = "afxdp", feature = "tap"))]
pub mod iface;
pub mod mem;
#[cfg(any(feature = "afxdp", feature = "tap"))]
pub mod netns;
#[cfg(any(feature = "afxdp", feature = "tap"))]
pub mod sockdiag;
#[cfg(feature = "tap")]
pub mod tap;
#[cfg(feature = "udp")]
pub mod udp;

pub use mem::{GenPort, MemHandle, MemPort, SinkPort};

/// A source and sink of frames (see the port contract above).
pub trait Port: Send {
    /// Receive into `batch`'s free slots (see [`Batch::spare_mut`]); returns how many arrived.
    fn rx_burst(&mut self, batch: &mut Batch) -> usize;
    /// Transmit the frames of `batch`; returns how many were accepted (the rest are dropped by
    /// the caller and counted). The caller clears the batch.
    fn tx_burst(&mut self, batch: &mut Batch) -> usize;
    /// Whether the port takes frames with offload work left ([`crate::offload`]: partial
    /// checksums, TCP super-frames) as they are. For the others the switch finishes that work in
    /// software before handing frames over.
    fn offloads(&self) -> bool {
        false
    }
    /// A file descriptor to wait on for receive readiness when idle, if the port has one.
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
    /// Whether an empty receive costs a system call and the port holds no received frames back
    /// between calls, so the switch may skip calling it in a round where its descriptor
    /// ([`Port::poll_fd`]) is not readable: one readiness check for all such ports instead of
    /// a call on each (`switch/ready.rs`). Ports that receive without a system call (AF_XDP
    /// rings, memory) keep the default: called every round.
    fn rx_wants_readiness(&self) -> bool {
        false
    }
    /// Port-specific counters, as (name, value).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// For `capture`: append `pkt` (received, or about to be transmitted when `tx`: after the
    /// port's transmit path) to `out` as an Ethernet frame. Ports whose frames are not Ethernet
    /// on the wire (the UDP underlay) rebuild the headers the kernel adds from the frame and its
    /// metadata (`meta.peer`), so a pcap of any port reads the same in tshark.
    fn capture_frame(&self, pkt: &Packet, _tx: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(pkt.data());
    }
    /// The port leaves the desired state for good (its endpoint was detached): remove what it
    /// made that would otherwise outlive it (a persistent TAP is deleted when the port is then
    /// dropped). Called by the control plane off the packet thread, before the drop.
    fn retire(&mut self) {}
    /// The port as its own type, for a driver of the switch that made it and reaches it
    /// through [`Switch::port_mut`](crate::Switch::port_mut) (the simulator fills and empties
    /// its in-memory ports so, without sharing them); `None` for the others.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}
