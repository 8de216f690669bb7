//! What the AF_XDP port's two packet sockets (`packet_tx`, `packet_rx`) share: an `AF_PACKET`
//! raw socket on the port's interface with a virtio-net header in front of every frame, its
//! options, and its buffer.
//!
//! Where it sits: outside the packet path, once when the port opens.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{AfxdpError, Ctx};

/// `SOL_PACKET` options (linux/if_packet.h).
pub(super) const PACKET_VNET_HDR: libc::c_int = 15;
pub(super) const PACKET_QDISC_BYPASS: libc::c_int = 20;
pub(super) const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// A non-blocking `AF_PACKET` raw socket for `protocol` (network byte order; 0: receives
/// nothing), with `PACKET_VNET_HDR`, each of the `SOL_PACKET` `options` set to 1 and a buffer
/// of `buf` bytes (`SO_SNDBUFFORCE`/`SO_RCVBUFFORCE` as `force` says, beyond the system's
/// limit with CAP_NET_ADMIN, else the plain option), bound to `ifindex`. `step` names it in
/// errors.
pub(super) fn open(
    cx: &Ctx,
    step: &str,
    ifindex: u32,
    protocol: u16,
    options: &[(libc::c_int, &str)],
    (force, plain, buf): (libc::c_int, libc::c_int, libc::c_int),
) -> Result<OwnedFd, AfxdpError> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::c_int::from(protocol),
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
    for &(opt, name) in [(PACKET_VNET_HDR, "PACKET_VNET_HDR")].iter().chain(options) {
        set(libc::SOL_PACKET, opt, 1).map_err(|e| cx.os(format!("{step}: {name}"), e))?;
    }
    if set(libc::SOL_SOCKET, force, buf).is_err() {
        let _ = set(libc::SOL_SOCKET, plain, buf);
    }
    // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
    let mut sll: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol;
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
    Ok(fd)
}
