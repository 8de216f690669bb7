//! AF_PACKET raw sockets bound to one interface: whole Ethernet frames written into a
//! container's namespace as if its kernel had sent them (the pause bench's load, the simulator
//! comparison's workload), and the frames an interface receives read back, as the kernel hands
//! them to a packet capture.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Result, bail};

/// How often a full queue is waited out before a send gives up.
pub const FULL_RETRIES: u32 = 2000;
/// `sll_pkttype` of a frame the interface sent (not received).
const PACKET_OUTGOING: u8 = 4;

/// An AF_PACKET raw socket bound to one interface.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// A socket on `ifname` that only writes (protocol 0: it receives nothing).
    pub fn open(ifname: &str) -> Result<PacketSocket> {
        PacketSocket::open_proto(ifname, 0)
    }

    /// A socket on `ifname` that also receives every frame (`ETH_P_ALL`), each read waiting
    /// at most `timeout`.
    pub fn capture(ifname: &str, timeout: Duration) -> Result<PacketSocket> {
        let s = PacketSocket::open_proto(ifname, (libc::ETH_P_ALL as u16).to_be())?;
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt(2) with a timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                s.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r < 0 {
            bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        }
        Ok(s)
    }

    fn open_proto(ifname: &str, proto_be: u16) -> Result<PacketSocket> {
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
        }
        // SAFETY: plain socket(2); the descriptor is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto_be),
            )
        };
        if raw < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto_be;
        sll.sll_ifindex = index as i32;
        // SAFETY: bind(2) with a sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            bail!("binding to {ifname}: {}", std::io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Write one frame, waiting out a full queue (bounded).
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        for _ in 0..FULL_RETRIES {
            // SAFETY: send(2) of a buffer we own, with its length.
            let n =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN) => {
                    std::thread::sleep(Duration::from_micros(500))
                }
                _ => bail!("sending a frame: {e}"),
            }
        }
        bail!("the interface's queue stayed full for {FULL_RETRIES} tries")
    }

    /// The next frame the interface received (frames it sent are skipped), or `None` once
    /// the socket's timeout passes without one.
    pub fn recv(&self) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: all-zero is a valid sockaddr_ll for recvfrom to fill.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: recvfrom(2) into a buffer and an address we own, with their sizes.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut sll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(None),
                    Some(libc::EINTR) => continue,
                    _ => Err(e.into()),
                };
            }
            if sll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(buf[..n as usize].to_vec()));
        }
    }
}
