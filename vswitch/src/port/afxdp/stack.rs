//! The kernel side of the AF_XDP port's interface: what the port sets there once, when it
//! opens, for super-frames received beside the rings (`packet_rx`, [`take_over`]) or to defer
//! its receive ([`defer_napi`]).
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
//!   sysfs of the port's own namespace, see [`set_sysfs`]). The price: a
//!   frame whose flow hashes to the other CPU waits for that CPU (an inter-processor
//!   interrupt), about 20 µs more on a ping here (docs/performance.md).
//!
//! The receive deferral is the kernel's own interrupt coalescing for a NAPI device
//! (`napi_defer_hard_irqs`, `gro_flush_timeout` in its sysfs directory): a NAPI poll that did
//! work keeps the NAPI scheduled and arms a timer instead of letting the next transmit by the
//! peer schedule it, so frames wait in the veth's queue and the timer's poll takes them in a
//! batch (up to 64); after [`NAPI_DEFER_POLLS`](super::NAPI_DEFER_POLLS) polls that find
//! nothing, the peer's transmits schedule it again.
//!
//! What the port set is put back when it closes ([`Saved`]): the same interface with the
//! option off (a node restarted without `--afxdp-offloads`, an endpoint attached again) must
//! not keep the steering's price. The interface gone with its container leaves nothing to
//! put back. A process that dies with the port open cannot put anything back: the record of
//! what was there ([`IfSettings`], [`AfxdpPort::changed_settings`](super::AfxdpPort::changed_settings))
//! is for its owner to keep outside the process and put back when it starts again
//! ([`IfSettings::put_back`]; the node keeps it in `/run/vxmesh/NODE.ifsaved`).

use std::io;

/// What a port found on an interface before it changed it: the values to put back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfSettings {
    /// The interface's name.
    pub ifname: String,
    /// Its index when taken: an interface of the same name with another index (the container
    /// and its veth were made again) is not touched.
    pub ifindex: u32,
    /// `net.ipv4.conf.IF.forwarding`, if the port changed it.
    pub forwarding: Option<String>,
    /// `net.ipv6.conf.IF.disable_ipv6`, if the port changed it.
    pub disable_ipv6: Option<String>,
    /// The files written under `/sys/class/net/IF/`, with what they held.
    pub sysfs: Vec<(String, String)>,
}

impl IfSettings {
    /// The record, if every part is one a port writes: a valid interface name, a non-zero
    /// index, sysfs files among `queues/rx-N/rps_cpus`, `napi_defer_hard_irqs` and
    /// `gro_flush_timeout`, and short values of hex digits and commas. A record read back from
    /// a file goes through this before anything is written.
    pub fn checked(self) -> Result<IfSettings, String> {
        if !crate::port::iface::valid_ifname(&self.ifname) || self.ifindex == 0 {
            return Err(format!(
                "not an interface: {:?} index {}",
                self.ifname, self.ifindex
            ));
        }
        let value_ok = |v: &str| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b',')
        };
        for v in self.forwarding.iter().chain(&self.disable_ipv6) {
            if !value_ok(v) {
                return Err(format!("{}: not a sysctl value: {v:?}", self.ifname));
            }
        }
        for (file, v) in &self.sysfs {
            let queue_rps = file
                .strip_prefix("queues/rx-")
                .and_then(|r| r.strip_suffix("/rps_cpus"))
                .is_some_and(|q| {
                    !q.is_empty() && q.len() <= 5 && q.bytes().all(|b| b.is_ascii_digit())
                });
            let known = queue_rps || file == "napi_defer_hard_irqs" || file == "gro_flush_timeout";
            if !known || !value_ok(v) {
                return Err(format!(
                    "{}: not a setting a port writes: {file} = {v:?}",
                    self.ifname
                ));
            }
        }
        Ok(self)
    }

    /// Write the values back on the interface, in the calling thread's network namespace, if
    /// it is still the same interface (name and index). Whether it was; an error if a write
    /// failed (the others are still tried).
    pub fn put_back(&self) -> io::Result<bool> {
        if nametoindex(&self.ifname) != Some(self.ifindex) {
            return Ok(false);
        }
        let ifname = &self.ifname;
        let mut first_err = None;
        let mut put = |path: String, v: &Option<String>| {
            if let Some(v) = v
                && let Err(e) = set(&path, v)
            {
                first_err.get_or_insert(e);
            }
        };
        put(
            format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding"),
            &self.forwarding,
        );
        put(
            format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
            &self.disable_ipv6,
        );
        if !self.sysfs.is_empty()
            && let Err(e) = set_sysfs(&self.ifname, self.ifindex, self.sysfs.clone())
        {
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }
}

/// The settings the port took over on an interface, as they were; put back on drop.
#[derive(Debug)]
pub(super) struct Saved(pub(super) IfSettings);

/// Take over `ifname` (index `ifindex`, `queues` receive queues) for super-frames:
/// [`no_forwarding`] and RPS over every CPU ([`set_sysfs`]), what was there kept in the
/// returned [`Saved`].
pub(super) fn take_over(ifname: &str, ifindex: u32, queues: u32) -> io::Result<Saved> {
    let read = |path: String| {
        std::fs::read_to_string(path)
            .ok()
            .map(|v| v.trim().to_string())
    };
    let mut saved = Saved(IfSettings {
        ifname: ifname.to_string(),
        ifindex,
        forwarding: read(format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding")),
        disable_ipv6: read(format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")),
        sysfs: Vec::new(),
    });
    no_forwarding(ifname)?;
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize;
    let mask = cpu_mask(cpus);
    let rps = (0..queues)
        .map(|q| (format!("queues/rx-{q}/rps_cpus"), mask.clone()))
        .collect();
    saved.0.sysfs = set_sysfs(ifname, ifindex, rps)?;
    Ok(saved)
}

/// Defer `ifname`'s receive: `napi_defer_hard_irqs` to `polls` and
/// `gro_flush_timeout` to `timeout`, what was there kept in the returned [`Saved`].
pub(super) fn defer_napi(
    ifname: &str,
    ifindex: u32,
    polls: u32,
    timeout: std::time::Duration,
) -> io::Result<Saved> {
    let writes = vec![
        ("napi_defer_hard_irqs".to_string(), polls.to_string()),
        (
            "gro_flush_timeout".to_string(),
            timeout.as_nanos().to_string(),
        ),
    ];
    Ok(Saved(IfSettings {
        ifname: ifname.to_string(),
        ifindex,
        forwarding: None,
        disable_ipv6: None,
        sysfs: set_sysfs(ifname, ifindex, writes)?,
    }))
}

impl Drop for Saved {
    fn drop(&mut self) {
        // The calling thread's namespace is the port's (the node's threads share it). Best
        // effort: an interface deleted or renamed since is left alone, and one that goes away
        // meanwhile has nothing to put back.
        let _ = self.0.put_back();
    }
}

/// The index of interface `name` in the calling thread's namespace.
fn nametoindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Turn IPv4 forwarding and IPv6 off on `ifname`, in the calling thread's namespace
/// (`/proc/sys/net` shows the network namespace of the thread that opens the file).
fn no_forwarding(ifname: &str) -> io::Result<()> {
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

/// Write each `(file, value)` of `writes` under `/sys/class/net/IFNAME/` for `ifname` (index
/// `ifindex`, in the calling thread's network namespace); returns each file with what it held
/// before, in the same order (so that writing the result puts everything back).
///
/// `/sys/class/net` shows the devices of the network namespace that mounted it, not the
/// caller's (a thread that entered the node's namespace would see another namespace's devices,
/// maybe one of the same name). So the write is done by a helper thread of the caller's
/// namespace in a mount namespace of its own (private, nothing propagates out), where it
/// mounts a fresh sysfs over `/sys`, as `ip netns exec` does; the mount ends with the thread.
fn set_sysfs(
    ifname: &str,
    ifindex: u32,
    writes: Vec<(String, String)>,
) -> io::Result<Vec<(String, String)>> {
    let ifname = ifname.to_string();
    std::thread::Builder::new()
        .name("vxmesh-sysfs".into())
        .spawn(move || -> io::Result<Vec<(String, String)>> {
            own_sysfs()?;
            // The sysfs shows this namespace's devices: check it is the same interface.
            let at = format!("/sys/class/net/{ifname}");
            let index = std::fs::read_to_string(format!("{at}/ifindex"))?;
            if index.trim().parse::<u32>().ok() != Some(ifindex) {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{at} is not interface {ifindex}"),
                ));
            }
            let mut old: Vec<(String, String)> = Vec::with_capacity(writes.len());
            for (file, value) in writes {
                let path = format!("{at}/{file}");
                let was = std::fs::read_to_string(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("reading {path}: {e}")))?;
                if let Err(e) = set(&path, &value) {
                    // Put back what this call changed before failing.
                    for (f, v) in old.iter().rev() {
                        let _ = set(&format!("{at}/{f}"), v);
                    }
                    return Err(e);
                }
                old.push((file, was.trim().to_string()));
            }
            Ok(old)
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
    fn only_settings_a_port_writes_pass_the_check() {
        let ok = IfSettings {
            ifname: "vc11".into(),
            ifindex: 7,
            forwarding: Some("1".into()),
            disable_ipv6: Some("0".into()),
            sysfs: vec![
                ("queues/rx-0/rps_cpus".into(), "0".into()),
                ("queues/rx-12/rps_cpus".into(), "ff,ffffffff".into()),
                ("napi_defer_hard_irqs".into(), "0".into()),
                ("gro_flush_timeout".into(), "200000".into()),
            ],
        };
        assert_eq!(ok.clone().checked(), Ok(ok.clone()));
        let bad = |f: &dyn Fn(&mut IfSettings)| {
            let mut s = ok.clone();
            f(&mut s);
            assert!(s.clone().checked().is_err(), "{s:?}");
        };
        bad(&|s| s.ifname = "../../etc".into());
        bad(&|s| s.ifindex = 0);
        bad(&|s| s.forwarding = Some("1\n2".into()));
        bad(&|s| s.disable_ipv6 = Some(String::new()));
        bad(&|s| s.sysfs.push(("mtu".into(), "9000".into())));
        bad(&|s| s.sysfs.push(("queues/rx-0/../../mtu".into(), "1".into())));
        bad(&|s| s.sysfs.push(("queues/rx-/rps_cpus".into(), "1".into())));
        bad(&|s| s.sysfs.push(("gro_flush_timeout".into(), "-1".into())));
        bad(&|s| s.sysfs.push(("gro_flush_timeout".into(), "1".repeat(65))));
    }

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
