//! One descriptor to sleep on for a port with several queues: an epoll set over their sockets,
//! readable when any RX ring has frames.
//!
//! Where it sits: off the packet path; the poll loop waits on it through
//! [`Port::poll_fd`](crate::port::Port::poll_fd) when every port is idle.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll descriptor, readable when any of `fds` is.
pub(super) fn epoll_over(fds: impl Iterator<Item = RawFd>) -> io::Result<OwnedFd> {
    // SAFETY: plain epoll_create1 call; the result is checked before use.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(raw) };
    for fd in fds {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `ev` is a live epoll_event; `fd` is a socket the port keeps open as long as
        // the epoll descriptor.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(ep)
}
