//! Opening the UDP underlay's sockets: the one bound to the VTEP's port 4789 (shared with the
//! other workers' with `SO_REUSEPORT`), the flow sources (send only, a port of their own each,
//! a drop-all filter), and the raw sender of the lone datagrams with the IPv4 and UDP headers
//! written here ([`super::socket`], "The source port").
//!
//! Where it sits: outside the packet path, when the underlay port opens; [`write_raw_header`]
//! alone runs per datagram, on the raw sender's path (28 bytes written, nothing allocated).

use core::mem::{size_of, zeroed};
use core::net::SocketAddrV4;
use core::ptr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::socket::{
    RAW_HDR, SOCKET_BUFFER, SOL_UDP, UDP_SEGMENT, UnderlayError, from_sockaddr, last_error,
    set_int_option, to_sockaddr,
};

/// What a socket of [`open_socket`] may share its address and port with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Share {
    /// Nothing (a flow source: a port of its own, which a socket with `SO_REUSEADDR` would
    /// not get for sure when the kernel picks it).
    Nothing,
    /// `SO_REUSEADDR`: the underlay's port, bound again while an old socket lingers.
    Addr,
    /// `SO_REUSEADDR` and `SO_REUSEPORT`: one socket per worker on the underlay's port.
    AddrAndPort,
}

/// A non-blocking socket of `kind` and `protocol` bound to `addr`, sharing as `share` says,
/// with DF, 4 MiB buffers and UDP GSO where the kernel has it: the descriptor, the bound
/// address and whether GSO is on.
pub(super) fn open_socket(
    addr: SocketAddrV4,
    kind: libc::c_int,
    protocol: libc::c_int,
    share: Share,
) -> Result<(OwnedFd, SocketAddrV4, bool), UnderlayError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if raw < 0 {
        return Err(UnderlayError::Socket(last_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if share != Share::Nothing {
        set_int_option(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "SO_REUSEADDR")?;
    }
    if share == Share::AddrAndPort {
        set_int_option(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1, "SO_REUSEPORT")?;
    }
    set_int_option(
        raw,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DO,
        "IP_MTU_DISCOVER",
    )?;
    // Bigger buffers than the default 208 KiB absorb bursts from several peers while the
    // poll thread is busy elsewhere. Best effort: root may exceed rmem_max/wmem_max
    // (the FORCE variants), anyone else gets what the sysctls allow.
    for (force, plain, name) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "SO_RCVBUF"),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "SO_SNDBUF"),
    ] {
        if set_int_option(raw, libc::SOL_SOCKET, force, SOCKET_BUFFER, name).is_err() {
            let _ = set_int_option(raw, libc::SOL_SOCKET, plain, SOCKET_BUFFER, name);
        }
    }
    // UDP GSO is there when the kernel knows the option (4.18+).
    let gso = kind == libc::SOCK_DGRAM
        && set_int_option(raw, SOL_UDP, UDP_SEGMENT, 0, "UDP_SEGMENT").is_ok();
    let sa = to_sockaddr(addr);
    // SAFETY: `sa` is a valid sockaddr_in and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            raw,
            ptr::from_ref(&sa).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(UnderlayError::Bind {
            addr,
            source: last_error(),
        });
    }
    // SAFETY: sockaddr_in is plain old data; all-zero is valid.
    let mut bound: libc::sockaddr_in = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `bound` and `len` are valid for writes and `len` holds `bound`'s size.
    let rc = unsafe { libc::getsockname(raw, ptr::from_mut(&mut bound).cast(), &mut len) };
    if rc < 0 {
        return Err(UnderlayError::LocalAddr(last_error()));
    }
    Ok((fd, from_sockaddr(&bound), gso))
}

/// A send-only raw IPv4 socket (`IPPROTO_RAW`: the caller writes the IPv4 header, the kernel
/// fills in its checksum and, when zero, its identification; such a socket receives nothing),
/// non-blocking, with a 4 MiB send buffer. Needs `CAP_NET_RAW`.
pub(super) fn open_raw_sender() -> Result<OwnedFd, UnderlayError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if raw < 0 {
        return Err(UnderlayError::Socket(last_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if set_int_option(
        raw,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        SOCKET_BUFFER,
        "",
    )
    .is_err()
    {
        let _ = set_int_option(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, SOCKET_BUFFER, "");
    }
    Ok(fd)
}

/// The IPv4 and UDP headers of a datagram of `len` bytes from `src` (its address) and port
/// `sport` to `dst`, as the kernel's UDP socket would write them: DF set (the outer packet is
/// never fragmented), TTL 64, the identification left to the kernel; the UDP checksum 0, as
/// the kernel's vxlan device sends by default.
pub(super) fn write_raw_header(
    h: &mut [u8; RAW_HDR],
    src: SocketAddrV4,
    sport: u16,
    dst: SocketAddrV4,
    len: usize,
) {
    // Datagrams are at most a 64 KB buffer's payload, so the lengths fit; a wrong one is
    // refused by the kernel and counted, never sent.
    let total = (RAW_HDR + len).min(usize::from(u16::MAX)) as u16;
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]);
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    h[8] = 64;
    h[9] = 17;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.ip().octets());
    h[16..20].copy_from_slice(&dst.ip().octets());
    h[20..22].copy_from_slice(&sport.to_be_bytes());
    h[22..24].copy_from_slice(&dst.port().to_be_bytes());
    h[24..26].copy_from_slice(&(total - 20).to_be_bytes());
    h[26..28].copy_from_slice(&[0, 0]);
}

/// Attach a classic BPF filter that drops every datagram to socket `fd` (a flow source only
/// sends).
pub(super) fn drop_all_received(fd: RawFd) -> Result<(), UnderlayError> {
    let mut drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_mut_ptr(),
    };
    // SAFETY: `prog` points at a live one-instruction program; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            ptr::from_ref(&prog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(UnderlayError::SetOption {
            option: "SO_ATTACH_FILTER",
            source: last_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::udp::own_netns;
    use std::net::Ipv4Addr;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    const LOOPBACK: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    const DEADLINE: Duration = Duration::from_secs(5);

    #[test]
    fn a_flow_source_receives_nothing() {
        if !own_netns() {
            return;
        }
        let (fd, addr, _) = open_socket(
            LOOPBACK,
            libc::SOCK_DGRAM,
            libc::IPPROTO_UDP,
            Share::Nothing,
        )
        .unwrap();
        let peer = std::net::UdpSocket::bind(LOOPBACK).unwrap();
        let mut buf = [0u8; 64];
        let recv = |buf: &mut [u8]| {
            // SAFETY: `buf` is live and writable for its length.
            unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) }
        };
        // Without the filter it would receive (the socket is non-blocking).
        peer.send_to(b"before", addr).unwrap();
        let start = Instant::now();
        let mut n = recv(&mut buf);
        while n < 0 && start.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(1));
            n = recv(&mut buf);
        }
        assert_eq!(&buf[..n.max(0) as usize], b"before");
        drop_all_received(fd.as_raw_fd()).unwrap();
        for _ in 0..10 {
            peer.send_to(b"after", addr).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(recv(&mut buf) < 0, "a filtered socket received");
    }
}
