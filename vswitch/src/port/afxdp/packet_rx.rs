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

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{AfxdpError, Ctx};
use crate::wire::vnet;

/// `SOL_PACKET` options (linux/if_packet.h).
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `ETH_P_ALL`, in network byte order as `socket` and `bind` want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// The receive buffer asked for: a few dozen 64 KB super-frames.
const RCVBUF: libc::c_int = 8 << 20;

/// An `AF_PACKET` socket receiving the frames the XDP program passed, behind a virtio-net header.
pub(super) struct PacketRx {
    fd: OwnedFd,
}

/// One read from a [`PacketRx`].
pub(super) enum Read {
    /// A frame of this many bytes after the header.
    Frame(usize),
    /// Shorter than a virtio-net header: nothing usable.
    Short,
    /// Nothing queued.
    Empty,
    /// A socket error (errno).
    Error(i32),
}

impl PacketRx {
    /// Open the socket on `ifindex` (in the calling thread's namespace).
    pub(super) fn open(cx: &Ctx, ifindex: u32) -> Result<PacketRx, AfxdpError> {
        let step = "packet socket for received super-frames";
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::c_int::from(ETH_P_ALL_BE),
            )
        };
        if raw < 0 {
            return Err(cx.os(
                format!("{step} (needs CAP_NET_RAW)"),
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let set = |level, opt, v: libc::c_int| {
            // SAFETY: an int option, passed by pointer with its size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        set(libc::SOL_PACKET, PACKET_VNET_HDR, 1)
            .map_err(|e| cx.os(format!("{step}: PACKET_VNET_HDR"), e))?;
        set(libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            .map_err(|e| cx.os(format!("{step}: PACKET_IGNORE_OUTGOING"), e))?;
        // Beyond net.core.rmem_max with CAP_NET_ADMIN; the default buffer otherwise.
        if set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            let _ = set(libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF);
        }
        // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL_BE;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(cx.os(format!("{step}: bind"), io::Error::last_os_error()));
        }
        Ok(PacketRx { fd })
    }

    /// Read one frame: its virtio-net header into `vh`, the frame into `area`.
    pub(super) fn read(&self, vh: &mut [u8; vnet::HEADER_LEN], area: &mut [u8]) -> Read {
        let iov = [
            libc::iovec {
                iov_base: vh.as_mut_ptr().cast(),
                iov_len: vh.len(),
            },
            libc::iovec {
                iov_base: area.as_mut_ptr().cast(),
                iov_len: area.len(),
            },
        ];
        loop {
            // SAFETY: both iovecs describe live buffers of their lengths, borrowed mutably.
            let rc = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
            if rc >= 0 {
                let got = rc as usize;
                return if got < vnet::HEADER_LEN {
                    Read::Short
                } else {
                    Read::Frame(got - vnet::HEADER_LEN)
                };
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Read::Empty,
                _ => return Read::Error(err.raw_os_error().unwrap_or(0)),
            }
        }
    }
}
