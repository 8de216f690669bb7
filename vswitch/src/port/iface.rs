//! Interface names, `ifreq` and control sockets: what every port driver's setup shares.
//!
//! Where it sits: outside the packet path, in port setup. The AF_XDP port reads its device's MTU,
//! the TAP port sets its device's MAC, MTU, address and link state, and [`ethtool`](super::ethtool)
//! switches offloads: all by ioctls that take an `ifreq` naming the interface, issued on any
//! socket of the namespace the interface is in. One name check, one `ifreq` builder and one
//! control socket serve them all. The CNI plugin's node side configures the veths it makes with
//! the same calls ([`CtlSocket::set_mac`], [`CtlSocket::set_mtu`], [`CtlSocket::set_ipv4`],
//! [`CtlSocket::set_up`]).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::packet::Mac;

/// Longest IPv4 prefix.
pub const MAX_PREFIX_LEN: u8 = 32;
/// ARPHRD_ETHER: the hardware address family of an Ethernet MAC.
const ARPHRD_ETHER: libc::sa_family_t = 1;

/// A `sockaddr` holding an IPv4 address (as SIOCSIFADDR and SIOCSIFNETMASK take it).
fn sockaddr_v4(ip: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sin: libc::sockaddr_in = unsafe { core::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes, and any bytes are a valid sockaddr.
    unsafe { core::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// The netmask of a prefix length (at most 32).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(u32::from(MAX_PREFIX_LEN.saturating_sub(prefix)))
            .unwrap_or(0),
    )
}

/// An interface setting that failed: which, and why.
#[derive(Debug, thiserror::Error)]
#[error("setting the {what} of {name}: {source}")]
pub struct SetError {
    /// The setting ("MAC", "MTU", ...).
    pub what: &'static str,
    /// The interface.
    pub name: String,
    /// The ioctl's error.
    #[source]
    pub source: io::Error,
}

/// Longest interface name (IFNAMSIZ less the NUL).
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;
/// What [`valid_ifname`] asks of a name, for error messages.
pub const IFNAME_RULE: &str = "1 to 15 bytes, not . or .., without NUL, '/' or whitespace";

/// Whether the kernel takes `name` as an interface name (its `dev_valid_name`, less the ':' it
/// also refuses at creation but strips as an alias in ioctls): 1 to [`MAX_IFNAME_LEN`] bytes,
/// not `.` or `..`, without NUL, '/' or whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !(name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace()))
}

/// The index of interface `name` in the calling thread's namespace, if it exists.
pub fn index_of(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string, which `c` is.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// An `ifreq` naming `name`, everything else zero. The name is cut to [`MAX_IFNAME_LEN`] bytes
/// so the NUL stays; callers check it with [`valid_ifname`] first.
pub fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.as_bytes())
        .take(MAX_IFNAME_LEN)
    {
        *d = *s as libc::c_char;
    }
    req
}

/// A datagram socket for interface ioctls. It acts on the interfaces of the network namespace
/// the thread was in when it was opened, wherever it is used from.
#[derive(Debug)]
pub struct CtlSocket(OwnedFd);

impl CtlSocket {
    /// Open one in the calling thread's namespace.
    pub fn open() -> io::Result<CtlSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        Ok(CtlSocket(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Issue interface ioctl `req` with `ifr`.
    ///
    /// # Safety
    ///
    /// `req` must be a request that reads and writes only `ifr` (the `SIOC[GS]IF*` family), or,
    /// for one that follows a pointer stored in `ifr` (`SIOCETHTOOL`'s `ifru_data`), that
    /// pointer must point at live, exclusively borrowed memory of the type the request expects.
    pub unsafe fn ioctl(&self, req: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: `ifr` is a live, exclusively borrowed ifreq; what `req` does with it and with
        // any pointer inside it is the caller's contract above.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), req, ifr as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Issue `SIOC[GS]IF*` request `req` with `ifr`; `what` names the setting in the error.
    fn set(
        &self,
        req: libc::Ioctl,
        ifr: &mut libc::ifreq,
        what: &'static str,
        name: &str,
    ) -> Result<(), SetError> {
        // SAFETY: every caller passes a SIOC[GS]IF* request, which reads or writes only `ifr`.
        unsafe { self.ioctl(req, ifr) }.map_err(|source| SetError {
            what,
            name: name.to_string(),
            source,
        })
    }

    /// Set interface `name`'s MAC (`SIOCSIFHWADDR`).
    pub fn set_mac(&self, name: &str, mac: Mac) -> Result<(), SetError> {
        let mut r = ifreq(name);
        // SAFETY: writing plain data into the union's hwaddr member.
        unsafe {
            r.ifr_ifru.ifru_hwaddr.sa_family = ARPHRD_ETHER;
            for (d, s) in r.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac.0) {
                *d = s as libc::c_char;
            }
        }
        self.set(libc::SIOCSIFHWADDR, &mut r, "MAC", name)
    }

    /// Set interface `name`'s MTU (`SIOCSIFMTU`).
    pub fn set_mtu(&self, name: &str, mtu: u16) -> Result<(), SetError> {
        let mut r = ifreq(name);
        r.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
        self.set(libc::SIOCSIFMTU, &mut r, "MTU", name)
    }

    /// Give interface `name` IPv4 address `ip`/`prefix` (`SIOCSIFADDR`, `SIOCSIFNETMASK`).
    pub fn set_ipv4(&self, name: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), SetError> {
        let mut r = ifreq(name);
        r.ifr_ifru.ifru_addr = sockaddr_v4(ip);
        self.set(libc::SIOCSIFADDR, &mut r, "IPv4 address", name)?;
        let mut r = ifreq(name);
        r.ifr_ifru.ifru_netmask = sockaddr_v4(netmask(prefix));
        self.set(libc::SIOCSIFNETMASK, &mut r, "netmask", name)
    }

    /// Bring interface `name` up (`SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with `IFF_UP`).
    pub fn set_up(&self, name: &str) -> Result<(), SetError> {
        let mut r = ifreq(name);
        self.set(libc::SIOCGIFFLAGS, &mut r, "flags (read)", name)?;
        // SAFETY: SIOCGIFFLAGS just filled the flags member.
        unsafe { r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        self.set(libc::SIOCSIFFLAGS, &mut r, "up", name)
    }

    /// The MTU of interface `name` (`SIOCGIFMTU`).
    #[cfg(feature = "afxdp")]
    pub fn mtu(&self, name: &str) -> io::Result<u32> {
        let mut req = ifreq(name);
        // SAFETY: SIOCGIFMTU reads the name and writes the MTU of `req`, nothing else.
        unsafe { self.ioctl(libc::SIOCGIFMTU, &mut req) }?;
        // SAFETY: SIOCGIFMTU just wrote the mtu member.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        u32::try_from(mtu).map_err(|_| io::Error::other(format!("negative MTU {mtu}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_takes() {
        for ok in ["eth0", "vc11", "a", "eth0:1", "fifteen-bytes15"] {
            assert!(valid_ifname(ok), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "x\0y",
            "a b",
            "tab\t",
            "sixteen-bytes-16",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
        assert!(IFNAME_RULE.contains(&MAX_IFNAME_LEN.to_string()));
    }

    #[test]
    fn an_ifreq_names_the_interface_and_keeps_its_nul() {
        let r = ifreq("veth0");
        let name: Vec<u8> = r.ifr_name.iter().map(|&c| c as u8).collect();
        assert_eq!(&name[..6], b"veth0\0");
        let r = ifreq("a-name-far-too-long");
        assert_eq!(r.ifr_name[MAX_IFNAME_LEN], 0);
    }

    #[test]
    fn the_loopback_mtu_reads() {
        let s = CtlSocket::open().unwrap();
        #[cfg(feature = "afxdp")]
        assert!(s.mtu("lo").unwrap() >= 1500);
        let mut r = ifreq("vxnosuch0");
        // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `r`, nothing else.
        let e = unsafe { s.ioctl(libc::SIOCGIFFLAGS, &mut r) }.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
    }
}
