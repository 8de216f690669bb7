//! The kernel side of the AF_XDP port's interface, for super-frames received beside the rings
//! (`packet_rx`): what the port sets there once, when it opens.
//!
//! Where it sits: outside the packet path.
//!
//! - **The stack drops its copy.** A passed super-frame also goes up the node's IP stack. The
//!   interface is the switch's own (the host end of a container's veth, no address): IPv4
//!   forwarding off on it (`net.ipv4.conf.IF.forwarding`) makes IP drop what arrives there for
//!   another host without an ICMP answer (`ip_error`); IPv6 off on it
//!   (`net.ipv6.conf.IF.disable_ipv6`) drops IPv6 at `ipv6_rcv`.
//! - **A flow stays in order (RPS).** Generic XDP runs from the per-CPU backlog a veth fills on
//!   the sender's CPU, and a container's TCP sends from two places: its application's CPU, and
//!   wherever the ACKs that open its window are delivered (inside the node's own transmit into
//!   the container, on the poll thread's CPU). Two backlogs drained apart reorder the flow, and
//!   the peer takes the reordering for loss (a same-node stream fell to a fifth). And the
//!   transmits made in the poll thread's transmit leave their generic-XDP work (a copy of each
//!   64 KB super-frame) to that thread's CPU's backlog, inside its own system call. Receive
//!   packet steering on the interface's queues (`queues/rx-N/rps_cpus`, every CPU) puts each
//!   flow on one CPU's backlog by its hash, as native XDP's single ring did (written through a
//!   sysfs of the port's own namespace, see [`steer_flows`]). The price: a
//!   frame whose flow hashes to the other CPU waits for that CPU (an inter-processor
//!   interrupt), about 20 µs more on a ping here (docs/performance.md).

use std::io;

/// Turn IPv4 forwarding and IPv6 off on `ifname`, in the calling thread's namespace
/// (`/proc/sys/net` shows the network namespace of the thread that opens the file).
pub(super) fn no_forwarding(ifname: &str) -> io::Result<()> {
    set(&format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding"), "0")?;
    // A kernel without IPv6 has no such file: nothing to turn off.
    match set(
        &format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        "1",
    ) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Steer every receive queue of `ifname` (`queues` of them, in the calling thread's network
/// namespace) over all CPUs by flow hash.
///
/// `/sys/class/net` shows the devices of the network namespace that mounted it, not the
/// caller's (a thread that entered the node's namespace would see another namespace's devices,
/// maybe one of the same name). So the write is done by a helper thread of the caller's
/// namespace in a mount namespace of its own (private, nothing propagates out), where it
/// mounts a fresh sysfs over `/sys`, as `ip netns exec` does; the mount ends with the thread.
pub(super) fn steer_flows(ifname: &str, queues: u32) -> io::Result<()> {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize;
    let mask = cpu_mask(cpus);
    let ifname = ifname.to_string();
    std::thread::Builder::new()
        .name("vxmesh-rps".into())
        .spawn(move || -> io::Result<()> {
            own_sysfs()?;
            for q in 0..queues {
                set(
                    &format!("/sys/class/net/{ifname}/queues/rx-{q}/rps_cpus"),
                    &mask,
                )?;
            }
            Ok(())
        })?
        .join()
        .map_err(|_| io::Error::other("the RPS helper thread panicked"))?
}

/// In the calling thread: a private mount namespace of its own with the sysfs of the thread's
/// network namespace on `/sys`.
fn own_sysfs() -> io::Result<()> {
    let check = |rc: libc::c_int, what: &str| {
        if rc == 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
        }
    };
    // SAFETY: plain system calls on constant, NUL-terminated strings; they change only this
    // thread's mount namespace, which it has to itself after the unshare.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)")?;
        check(
            libc::mount(
                core::ptr::null(),
                c"/".as_ptr(),
                core::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                core::ptr::null(),
            ),
            "making the mounts private",
        )?;
        // Nothing mounted there is fine: the sysfs goes on the directory.
        libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH);
        check(
            libc::mount(
                c"sysfs".as_ptr(),
                c"/sys".as_ptr(),
                c"sysfs".as_ptr(),
                0,
                core::ptr::null(),
            ),
            "mounting sysfs",
        )
    }
}

/// The kernel's bitmap format for CPUs `0..cpus`: hex, in comma-separated 32-bit groups.
fn cpu_mask(cpus: usize) -> String {
    let mut groups = Vec::new();
    let mut left = cpus;
    while left > 0 {
        let bits = left.min(32);
        let g: u64 = (1u64 << bits) - 1;
        groups.push(format!("{g:x}"));
        left -= bits;
    }
    groups.reverse();
    groups.join(",")
}

/// Write `value` to `path` unless it already holds it.
fn set(path: &str, value: &str) -> io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {value} to {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_masks_in_the_kernels_bitmap_format() {
        assert_eq!(cpu_mask(1), "1");
        assert_eq!(cpu_mask(2), "3");
        assert_eq!(cpu_mask(8), "ff");
        assert_eq!(cpu_mask(32), "ffffffff");
        assert_eq!(cpu_mask(33), "1,ffffffff");
        assert_eq!(cpu_mask(70), "3f,ffffffff,ffffffff");
    }
}
