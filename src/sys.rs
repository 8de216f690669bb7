//! Small system helpers of the node, off the packet path: finding the container side of a
//! veth, turning its offloads off, an eventfd to wake the poll thread, and `poll(2)`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::Context;

/// The container side of the veth whose node side is `host_if` (in the calling thread's
/// namespace): its name inside namespace `netns`.
pub fn veth_peer_name(host_if: &str, netns: &str) -> anyhow::Result<String> {
    let path = format!("/sys/class/net/{host_if}/iflink");
    let iflink: u32 = std::fs::read_to_string(&path)
        .with_context(|| format!("{host_if}: reading {path} (is it a veth in this namespace?)"))?
        .trim()
        .parse()
        .with_context(|| format!("{host_if}: {path} is not a number"))?;
    let name = vswitch::port::netns::run_in(Some(netns), || {
        let mut buf = [0u8; libc::IF_NAMESIZE];
        // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(iflink, buf.as_mut_ptr().cast()) };
        (!p.is_null()).then(|| {
            let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..len]).into_owned()
        })
    })?;
    name.with_context(|| format!("{host_if}: its peer (ifindex {iflink}) is not in netns {netns}"))
}

/// Turn TX checksum offload, TSO and GSO off on the container side of `host_if` (a veth whose
/// peer is in `netns`): frames reach AF_XDP as the container built them, so partial checksums
/// and 64 KiB segments must not be left for a NIC that is not there.
pub fn disable_peer_offloads(host_if: &str, netns: &str) -> anyhow::Result<()> {
    let peer = veth_peer_name(host_if, netns)?;
    vswitch::port::ethtool::disable_offloads(Some(netns), &peer)
        .with_context(|| format!("{peer} in netns {netns}"))?;
    Ok(())
}

/// An eventfd: the control plane writes to it to wake the poll thread from `poll(2)`.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A non-blocking eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wake whoever polls it.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our descriptor.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clear pending wake-ups.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our descriptor.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// Its descriptor.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The descriptors the poll thread sleeps on when idle, prepared once.
pub struct Poller {
    pfds: Vec<libc::pollfd>,
}

impl Poller {
    /// A poller over `fds`.
    pub fn new(fds: &[RawFd]) -> Poller {
        Poller {
            pfds: fds
                .iter()
                .map(|&fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
        }
    }

    /// Wait until one of the descriptors is readable or `timeout_ms` passes.
    pub fn wait(&mut self, timeout_ms: i32) {
        // SAFETY: pfds is a live array of pfds.len() pollfd structs.
        unsafe {
            libc::poll(
                self.pfds.as_mut_ptr(),
                self.pfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
    }
}
