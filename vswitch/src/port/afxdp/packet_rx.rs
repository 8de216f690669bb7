//! The AF_XDP port's second receive path: TCP super-frames from a container that keeps its
//! segmentation offload, through an `AF_PACKET` socket beside the RX rings.
//!
//! Where it sits: in [`AfxdpPort`](super::AfxdpPort)'s `rx_burst`, at the very start of the
//! packet path from a container behind a veth.
//!
//! ```text
//! container TSO ─► veth ─► generic XDP ─┬─ frame <= MTU ─► XSKMAP ─► RX ring ──────────────► rx_burst
//!                                       └─ longer: count, XDP_PASS ─► packet tap ─► readv ─┘
//!                                                                   └─► IP: dropped (no forwarding on the port)
//! ```
//!
//! Why: native XDP on a veth turns off the peer's segmentation offload (`veth_xdp_set`), and an
//! AF_XDP descriptor carries neither a segment size nor a checksum state, so a container's TCP
//! stream reached the switch one 1450-byte frame at a time, paying the container's TCP
//! transmit, the veth and XDP per segment. With this path on, the program is attached in
//! generic mode, which leaves the container's TSO alone; it sends a frame longer than the
//! device's MTU allows (a TCP super-frame) to the kernel stack instead of the ring and counts it
//! in a map this process has mapped. A packet socket with `PACKET_VNET_HDR` then hands the
//! port the super-frame with its segment size and partial checksum, as a TAP does. The port
//! reads the socket only when the count moved: no system call in a round without super-frames.
//! The stack's own copy of the frame is dropped by IP: the port turns forwarding off on its
//! interface.
//!
//! The socket skips the interface's outgoing frames (`PACKET_IGNORE_OUTGOING`): the port's own
//! transmits would come back otherwise.

use std::os::fd::{AsRawFd, OwnedFd};

use super::packet_sock::{self, PACKET_IGNORE_OUTGOING};
use super::{AfxdpError, Ctx};
use crate::port::gather;
pub(super) use crate::port::gather::Read;
use crate::wire::vnet;
/// `ETH_P_ALL`, in network byte order as `socket` and `bind` want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// The receive buffer asked for: a few dozen 64 KB super-frames.
const RCVBUF: libc::c_int = 8 << 20;

/// An `AF_PACKET` socket receiving the frames the XDP program passed, behind a virtio-net header.
pub(super) struct PacketRx {
    fd: OwnedFd,
}

impl PacketRx {
    /// Open the socket on `ifindex` (in the calling thread's namespace).
    pub(super) fn open(cx: &Ctx, ifindex: u32) -> Result<PacketRx, AfxdpError> {
        let fd = packet_sock::open(
            cx,
            "packet socket for received super-frames",
            ifindex,
            ETH_P_ALL_BE,
            &[(PACKET_IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING")],
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RCVBUF),
        )?;
        Ok(PacketRx { fd })
    }

    /// Read one frame: its virtio-net header into `vh`, the frame into `area`.
    pub(super) fn read(&self, vh: &mut [u8; vnet::HEADER_LEN], area: &mut [u8]) -> Read {
        gather::read_frame(self.fd.as_raw_fd(), vh, area)
    }
}
