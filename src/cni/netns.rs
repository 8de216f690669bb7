//! The system side of a CNI attachment, in the container's namespace (`CNI_NETNS`): checking
//! that a path is a network namespace and keeping it open ([`Netns`]: one descriptor checked and
//! entered, no race on the path), running a closure inside one, creating and deleting the
//! veth whose node side the AF_XDP port opens (a TAP is opened by the port itself), and the name
//! of a namespace under `/run/netns`. Control plane, off the packet path: blocking calls, run on
//! the handlers' blocking threads.

use std::io;
use std::process::Command;

use vswitch::port::iface::CtlSocket;

use super::Attachment;

/// The name of a namespace given as `/run/netns/NAME`.
pub(super) fn named_netns(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix(vswitch::port::netns::NETNS_DIR)?
        .strip_prefix('/')?;
    vswitch::port::netns::valid_name(rest).then(|| rest.to_string())
}

/// A network namespace, open: every step of a call uses this descriptor, so the file checked is
/// the file entered (no check-then-use race on the path).
pub(super) struct Netns {
    file: std::fs::File,
}

impl Netns {
    /// Open `path` and check, through the descriptor, that it is a network namespace (a file of
    /// nsfs of type CLONE_NEWNET).
    pub(super) fn open(path: &str) -> Result<Netns, String> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        /// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
        const NS_GET_NSTYPE: libc::Ioctl = 0xb703;
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor's namespace.
        let t = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if t < 0 {
            return Err(format!("{path} is not a namespace"));
        }
        if t != libc::CLONE_NEWNET {
            return Err(format!("{path} is a namespace but not a network namespace"));
        }
        Ok(Netns { file })
    }

    /// A path another process (`ip ... netns PATH`) opens to reach the same namespace: this
    /// process's descriptor under /proc.
    fn proc_path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd())
    }

    /// Run `f` on a thread of its own that has entered the namespace; the thread ends with
    /// `f`, so it never has to come back.
    pub(super) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a descriptor this Netns owns (open for the call); it moves
                // only this thread, which ends here.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("the namespace thread panicked"))?
        })
    }
}

/// Run `f` in the network namespace at `path` (opened and checked first).
pub(super) fn in_netns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    Netns::open(path).map_err(io::Error::other)?.run(f)
}

/// Run `ip ARGS` in the calling thread's namespace.
fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

/// Create the veth of `a` (node side in the node's namespace, container side `a.ifname` in
/// `a.netns`) and configure it: MAC, MTU, address, up, TX checksum offload, TSO and GSO off on
/// the container side (AF_XDP gets frames as the container built them). Removes what it made if
/// any step fails.
pub(super) fn create_veth(a: &Attachment, ns: &Netns, mtu: u16, prefix: u8) -> Result<(), String> {
    let mtu = mtu.to_string();
    let mac = a.mac().to_string();
    let target = ns.proc_path();
    ip(&[
        "link", "add", &a.host_if, "mtu", &mtu, "type", "veth", "peer", "name", &a.ifname, "mtu",
        &mtu, "address", &mac, "netns", &target,
    ])?;
    // The rest by interface ioctls (what the TAP port does to its device), not more `ip`
    // processes: each costs a fork and an exec, a good part of an ADD.
    let up = |name: &str| -> Result<(), String> {
        let sock = CtlSocket::open().map_err(|e| format!("a control socket: {e}"))?;
        sock.set_up(name).map_err(|e| e.to_string())
    };
    let configured = up(&a.host_if).and_then(|()| {
        ns.run(|| {
            let sock = CtlSocket::open().map_err(|e| format!("a control socket: {e}"))?;
            sock.set_ipv4(&a.ifname, a.ip, prefix)
                .and_then(|()| sock.set_up(&a.ifname))
                .map_err(|e| e.to_string())?;
            vswitch::port::ethtool::disable_offloads(None, &a.ifname)
                .map_err(|e| format!("turning offloads off on {}: {e}", a.ifname))
        })
        .map_err(|e| format!("{}: {e}", a.netns))?
    });
    if configured.is_err() {
        delete_veth(&a.host_if);
    }
    configured
}

/// Delete the veth whose node side is `host_if`, if it is there (its peer goes with it).
pub(super) fn delete_veth(host_if: &str) {
    if vswitch::port::iface::index_of(host_if).is_some() {
        let _ = ip(&["link", "del", host_if]);
    }
}

/// Whether interface `ifname` exists in namespace `ns`.
pub(super) fn exists_in(ns: &Netns, ifname: &str) -> io::Result<bool> {
    ns.run(|| vswitch::port::iface::index_of(ifname).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_named_only_under_run_netns() {
        assert_eq!(named_netns("/run/netns/x").as_deref(), Some("x"));
        assert_eq!(named_netns("/proc/1/ns/net"), None);
    }
}
