//! The AF_XDP port's second transmit path: an `AF_PACKET` socket on the same interface, for
//! what an AF_XDP TX ring cannot carry: TCP super-frames.
//!
//! Where it sits: in [`AfxdpPort`](super::AfxdpPort)'s `tx_burst`, beside the TX ring, at the
//! very end of the packet path toward a container behind a veth.
//!
//! ```text
//! output ─► tx_burst ─┬─ single frames ────────────────────────────► TX ring ─► sendto kick ─► veth ─► container
//!                     └─ GRO runs, super-frames ─► sendmsg (virtio-net header) ─► veth ─► container
//! ```
//!
//! Why: an AF_XDP descriptor is one frame of at most a UMEM frame, with no way to say "a
//! 64 KB TCP super-frame, cut at this MSS" or "checksum still partial". So a TCP stream from
//! the underlay reached the container as 1450-byte frames, one `sk_buff` and one pass of the
//! container's TCP receive (and often an ACK) each, inside the node's kick: the largest share
//! of the AF_XDP TCP test's profile (docs/performance.md). A packet socket with
//! `PACKET_VNET_HDR` takes the same virtio-net header a TAP does, so the port merges in-order
//! segments of one flow as the TAP port does ([`offload::gro_run`], the kernel's GRO rule) and
//! sends the super-frame with one `sendmsg` gathered from the merged headers and each
//! segment's payload where it lies. The veth hands the container one `sk_buff` for the run,
//! as the kernel's own bridge does. A super-frame from a container that hands them over (a TAP
//! with offloads on the same node) goes the same way, whole, instead of being cut into
//! segments by the switch. A frame with only a partial checksum is finished by the port and
//! takes the ring with its batch: one `sendmsg` each would cost more than the sum.
//!
//! The socket is bound with protocol 0, so it receives nothing (no tap on the device's receive
//! path), and with `PACKET_QDISC_BYPASS`, so it goes straight to the driver as the AF_XDP
//! socket's copy-mode transmit does (`dev_direct_xmit`). Both are non-blocking; a full socket
//! buffer drops the run and counts it, as the TX ring does when full.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::packet_sock::{self, PACKET_QDISC_BYPASS};
use super::{AfxdpError, Ctx};
use crate::offload;
use crate::packet::Packet;
use crate::port::gather::{self, iovec};
use crate::wire::vnet;

/// The socket buffer asked for: room for a batch of 64 KB super-frames in flight.
const SNDBUF: libc::c_int = 4 << 20;

/// An `AF_PACKET` socket bound to the port's interface, sending frames behind a virtio-net header.
pub(super) struct PacketTx {
    fd: OwnedFd,
}

impl PacketTx {
    /// Open the socket on `ifindex` (in the calling thread's namespace).
    pub(super) fn open(cx: &Ctx, ifindex: u32) -> Result<PacketTx, AfxdpError> {
        let fd = packet_sock::open(
            cx,
            "packet socket for super-frames",
            ifindex,
            0,
            &[(PACKET_QDISC_BYPASS, "PACKET_QDISC_BYPASS")],
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SNDBUF),
        )?;
        Ok(PacketTx { fd })
    }

    /// One super-frame as it is, its offload work in the header (`pkt.meta.offload`).
    pub(super) fn send_one(&self, pkt: &Packet) -> io::Result<()> {
        let vh = offload::to_vnet(&pkt.meta.offload, pkt.data());
        self.sendmsg(&[iovec(&vh), iovec(pkt.data())])
    }

    /// The super-frame of a run found by [`offload::gro_run`] (at most `MAX_BATCH` packets):
    /// its virtio-net header and merged headers, then each segment's payload where it lies.
    pub(super) fn send_run(&self, pkts: &[Packet]) -> io::Result<()> {
        gather::merged_run(pkts, |iov| self.sendmsg(iov))
    }

    /// `sendmsg` of `iov` (the first is the virtio-net header), again when interrupted.
    fn sendmsg(&self, iov: &[libc::iovec]) -> io::Result<()> {
        debug_assert_eq!(iov[0].iov_len, vnet::HEADER_LEN);
        // SAFETY: all-zero is a valid msghdr (no name, no control).
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_iov = iov.as_ptr().cast_mut();
        msg.msg_iovlen = iov.len() as _;
        loop {
            // SAFETY: every iovec describes a buffer of its length the caller borrows for this
            // call; the kernel only reads them. At most MAX_BATCH + 2 < IOV_MAX entries (gather::merged_run).
            let rc = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
            if rc >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
