//! Per-interface IP settings of the AF_XDP port's interface, for super-frames received beside
//! the rings (`packet_rx`): the kernel stack gets its own copy of each, and must drop it.
//!
//! Where it sits: outside the packet path, once when the port opens.
//!
//! The interface is the switch's own (the host end of a container's veth, no address). IPv4
//! forwarding off on it (`net.ipv4.conf.IF.forwarding`) makes IP drop what arrives there for
//! another host without an ICMP answer (`ip_error`); IPv6 off on it
//! (`net.ipv6.conf.IF.disable_ipv6`) drops IPv6 at `ipv6_rcv` (and takes the link-local
//! address the switch port never used).

use std::io;

/// Turn IPv4 forwarding and IPv6 off on `ifname`, in the calling thread's namespace
/// (`/proc/sys/net` shows the network namespace of the thread that opens the file).
pub(super) fn no_forwarding(ifname: &str) -> io::Result<()> {
    set(&format!("ipv4/conf/{ifname}/forwarding"), "0")?;
    // A kernel without IPv6 has no such file: nothing to turn off.
    match set(&format!("ipv6/conf/{ifname}/disable_ipv6"), "1") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Write `value` to `net.KEY` unless it already holds it.
fn set(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/net/{key}");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {value} to {path}: {e}")))
}
