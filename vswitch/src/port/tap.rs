//! TAP ports: a container's `eth0` as a TAP device whose other end is the switch.
//!
//! Where it sits: a local port ([`PortRole::Local`](crate::PortRole)) at both ends of a
//! container's path. What the container sends is read by [`TapPort`]'s `rx_burst` and goes
//! through `l2-parse`, `l2-learn`, ...; what the switch outputs to it is written by `tx_burst`
//! and arrives in the container's stack as if from a wire.
//!
//! ```text
//! container netns: eth0 (TAP) ══fd══► TapPort.rx_burst ─► l2-parse ─► ... ─► l2-fwd
//!                  eth0 (TAP) ◄══fd══ TapPort.tx_burst ◄─ output ◄──────────┘
//! ```
//!
//! Creation does what a CNI plugin does for the container: [`TapPort::create`] switches the
//! calling thread (with [`netns::run_in`]) into the container's named network namespace
//! (`/run/netns/NAME`, as `ip netns` makes them), opens `/dev/net/tun` with `TUNSETIFF`
//! (`IFF_TAP | IFF_NO_PI`, non-blocking), sets the MAC, the MTU, the IPv4 address and prefix,
//! brings the device up (all by ioctl on a control socket opened in that namespace,
//! [`iface::CtlSocket`], no `ip` command), and switches the thread back. The file descriptor keeps working from any namespace. The TAP is not persistent:
//! dropping the port closes the descriptor and the kernel removes the device.
//!
//! Batching: a TAP has no batch syscall, so `rx_burst` is one `readv` per frame until `EAGAIN`
//! or the batch is full, and `tx_burst` one `writev` per frame. What makes TCP cheap is
//! offloads ([`TapConfig::offloads`], on for the node's endpoints): with `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)` every frame carries a virtio-net header, the
//! container's stack hands over TCP super-frames of up to 64 KB with partial checksums (one
//! read instead of 45), recorded in [`Meta::offload`](crate::Meta) for the switch to pass on or
//! finish ([`crate::offload`]); and on the way out, in-order segments of one TCP flow in a batch
//! are merged back into one super-frame ([`offload::gro_run`], what the kernel's GRO does) and
//! written with one `writev` of the merged headers and each segment's payload where it lies, so
//! the container's stack takes one frame instead of each segment. Without offloads the kernel
//! hands over and expects plain frames with full checksums.
//!
//! Why libc and not tun-rs: the device has to be created inside another namespace with the
//! thread switched around the creation, which tun-rs does not do (its configuration runs in the
//! caller's namespace); what the packet path needs is a non-blocking fd with `read`/`write`, and
//! the rest is eight ioctls (TUNSETIFF, TUNSETOFFLOAD, then the address, MTU, MAC and link flags). Raw libc keeps the dataplane core free of a large dependency for that.

use std::fs::OpenOptions;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::Port;
use super::gather::{self, Read, iovec};
use super::iface::{self, CtlSocket, IFNAME_RULE, MAX_PREFIX_LEN};
use super::netns::{self, NetnsError};
use crate::batch::{Batch, MAX_BATCH};
use crate::offload;
use crate::packet::{Mac, Packet};
use crate::wire::ethernet;
use crate::wire::ipv4::MIN_MTU;
use crate::wire::vnet::HEADER_LEN as VNET_HDR_LEN;

/// The TUN/TAP clone device.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// How to make a container's TAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// The interface name in the container (`eth0`).
    pub name: String,
    /// The container's named network namespace; `None` for the calling thread's own.
    pub netns: Option<String>,
    /// The container's MAC address.
    pub mac: Mac,
    /// The container's IP MTU (the network's, 1450 by default).
    pub mtu: u16,
    /// The container's IPv4 address and prefix length, if it gets one.
    pub addr: Option<(Ipv4Addr, u8)>,
    /// Offloads (`IFF_VNET_HDR`, `TUN_F_CSUM | TUN_F_TSO4`): the container's stack may hand over
    /// partial checksums and 64 KB TCP super-frames, and gets them back the same way.
    pub offloads: bool,
    /// Persistent (`TUNSETPERSIST`): the device outlives the port (a container keeps its
    /// interface and address while the node restarts; the next `create` of the same name takes
    /// it over), until [`Port::retire`] says it leaves for good. Not persistent: the device goes
    /// when the port is dropped.
    pub persist: bool,
}

/// Why a TAP could not be created or configured.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name is not one the kernel takes ([`iface::valid_ifname`]).
    #[error("TAP name {0:?} must be {IFNAME_RULE}")]
    BadName(String),
    /// The namespace name is not a plain file name.
    #[error("network namespace name {0:?} is not a plain name")]
    BadNetns(String),
    /// The prefix length is above 32, or the MTU below the IPv4 minimum.
    #[error("invalid TAP setting: {0}")]
    BadSetting(String),
    /// The namespace could not be entered.
    #[error("entering network namespace {netns}: {source}")]
    EnterNetns {
        /// Its name.
        netns: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The thread could not return to its namespace.
    #[error("returning to the original network namespace: {0}")]
    LeaveNetns(#[source] io::Error),
    /// `/dev/net/tun` could not be opened.
    #[error("opening {TUN_DEVICE}: {0}")]
    Open(#[source] io::Error),
    /// `TUNSETIFF` failed.
    #[error("creating TAP {name}: {source}")]
    Create {
        /// The interface name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A configuration ioctl failed.
    #[error("setting {what} on TAP {name}: {source}")]
    Configure {
        /// What was being set.
        what: &'static str,
        /// The interface name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl From<NetnsError> for TapError {
    fn from(e: NetnsError) -> TapError {
        match e {
            NetnsError::BadName(n) => TapError::BadNetns(n),
            NetnsError::Enter { netns, source } => TapError::EnterNetns { netns, source },
            NetnsError::Leave(source) => TapError::LeaveNetns(source),
        }
    }
}

/// Counters of a [`TapPort`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// `read` failures other than "nothing to read".
    pub rx_errors: u64,
    /// Frames that filled a whole buffer (possibly cut), dropped.
    pub rx_truncated: u64,
    /// `write` failures (device down, frame refused).
    pub tx_errors: u64,
    /// Frames not written because the device queue was full.
    pub tx_would_block: u64,
    /// Frames whose virtio-net header the switch does not take (see [`crate::offload`]).
    pub rx_bad_vnet_hdr: u64,
    /// TCP super-frames received (offloads on).
    pub rx_gso_frames: u64,
    /// Super-frames written, merged from in-order segments of one flow (offloads on).
    pub tx_gro_frames: u64,
    /// Segments merged into those.
    pub tx_gro_segments: u64,
    /// The errno of the last error, 0 if none.
    pub last_errno: i32,
}

/// A container's TAP device as a switch port.
#[derive(Debug)]
pub struct TapPort {
    fd: OwnedFd,
    name: String,
    netns: Option<String>,
    /// Offloads on: every read and write starts with a virtio-net header.
    vnet: bool,
    /// Largest frame a segment of a super-frame may be (MTU + Ethernet + VLAN tag).
    max_segment: usize,
    /// Its counters.
    pub stats: TapStats,
    /// Whether the device outlives the port.
    persist: bool,
}

/// `TUNSETPERSIST` on a TAP's fd; whether it took.
fn set_persist(fd: &OwnedFd, on: bool) -> bool {
    // SAFETY: TUNSETPERSIST takes its argument by value.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, libc::c_ulong::from(on)) >= 0 }
}

impl TapPort {
    /// Create and configure the TAP of `cfg` (needs `CAP_NET_ADMIN`), in its namespace.
    pub fn create(cfg: &TapConfig) -> Result<TapPort, TapError> {
        if !iface::valid_ifname(&cfg.name) {
            return Err(TapError::BadName(cfg.name.clone()));
        }
        if let Some(ns) = &cfg.netns
            && !netns::valid_name(ns)
        {
            return Err(TapError::BadNetns(ns.clone()));
        }
        if let Some((_, prefix)) = cfg.addr
            && prefix > MAX_PREFIX_LEN
        {
            return Err(TapError::BadSetting(format!("prefix length /{prefix}")));
        }
        if cfg.mtu < MIN_MTU {
            return Err(TapError::BadSetting(format!("MTU {}", cfg.mtu)));
        }
        netns::run_in(cfg.netns.as_deref(), || {
            // A persistent TAP left by an earlier run of the node is taken over; one this call
            // makes and fails to configure must not stay behind.
            let existed = iface::index_of(&cfg.name).is_some();
            let r = Self::create_here(cfg);
            if let Err(TapError::Configure { .. }) = &r
                && !existed
                && cfg.persist
            {
                // Configure errors come after TUNSETIFF; the device persists unless told not
                // to, so it is deleted when the fd of the failed attempt closes. Best effort.
                if let Ok(fd) = Self::attach_only(cfg) {
                    set_persist(&fd, false);
                }
            }
            r
        })?
    }

    /// Open `/dev/net/tun` and attach it to the TAP `cfg.name` (made if it does not exist, taken
    /// over if it persists), configuring nothing else.
    fn attach_only(cfg: &TapConfig) -> Result<OwnedFd, TapError> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(TUN_DEVICE)
            .map_err(TapError::Open)?;
        let fd = OwnedFd::from(tun);
        let mut req = iface::ifreq(&cfg.name);
        let vnet = if cfg.offloads { libc::IFF_VNET_HDR } else { 0 };
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | vnet) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes the ifreq, valid and exclusively borrowed here.
        if unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETIFF,
                &mut req as *mut libc::ifreq,
            )
        } < 0
        {
            return Err(TapError::Create {
                name: cfg.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(fd)
    }

    /// Create and configure the TAP in the calling thread's current namespace.
    fn create_here(cfg: &TapConfig) -> Result<TapPort, TapError> {
        let name = &cfg.name;
        let fd = Self::attach_only(cfg)?;
        if cfg.persist && !set_persist(&fd, true) {
            return Err(TapError::Configure {
                what: "persistence (TUNSETPERSIST)",
                name: name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        if cfg.offloads {
            let flags = libc::TUN_F_CSUM | libc::TUN_F_TSO4;
            // SAFETY: TUNSETOFFLOAD takes its argument by value.
            if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) }
                < 0
            {
                return Err(TapError::Configure {
                    what: "offloads (TUNSETOFFLOAD)",
                    name: name.clone(),
                    source: io::Error::last_os_error(),
                });
            }
        }
        // Interface ioctls go through any socket of the namespace the device is in.
        let sock = CtlSocket::open().map_err(|source| TapError::Configure {
            what: "a control socket",
            name: name.clone(),
            source,
        })?;

        let set = |e: iface::SetError| TapError::Configure {
            what: e.what,
            name: e.name,
            source: e.source,
        };
        sock.set_mac(name, cfg.mac).map_err(set)?;
        sock.set_mtu(name, cfg.mtu).map_err(set)?;
        if let Some((ip, prefix)) = cfg.addr {
            sock.set_ipv4(name, ip, prefix).map_err(set)?;
        }
        sock.set_up(name).map_err(set)?;

        Ok(TapPort {
            fd,
            name: name.clone(),
            netns: cfg.netns.clone(),
            vnet: cfg.offloads,
            max_segment: usize::from(cfg.mtu) + ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN,
            stats: TapStats::default(),
            persist: cfg.persist,
        })
    }

    /// One `writev` of `frame`, after its virtio-net header when offloads are on.
    fn write_frame(&self, frame: &[u8], o: &offload::Offload) -> io::Result<()> {
        let vh = if self.vnet {
            offload::to_vnet(o, frame)
        } else {
            [0; VNET_HDR_LEN]
        };
        self.writev(&[
            iovec(&vh[..if self.vnet { VNET_HDR_LEN } else { 0 }]),
            iovec(frame),
        ])
    }

    /// One `writev` of the super-frame a GRO run of `pkts` makes ([`offload::gro_run`]): its
    /// virtio-net header and merged headers, then each segment's payload where it lies in its
    /// packet ([`gather::merged_run`]). The kernel's one copy into its buffer is the only one.
    fn write_merged(&self, pkts: &[Packet]) -> io::Result<()> {
        gather::merged_run(pkts, |iov| self.writev(iov))
    }

    /// `writev`, again when interrupted.
    fn writev(&self, iov: &[libc::iovec]) -> io::Result<()> {
        loop {
            // SAFETY: every iovec describes a valid buffer of its length, borrowed by the
            // caller for this call; writev only reads. At most MAX_BATCH + 2 < IOV_MAX entries.
            let rc = unsafe {
                libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int)
            };
            if rc >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace the TAP lives in (`None`: the creating thread's).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }
}

impl AsRawFd for TapPort {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Port for TapPort {
    fn retire(&mut self) {
        if self.persist && set_persist(&self.fd, false) {
            self.persist = false;
        }
    }

    /// A `readv` per call, nothing kept back between calls.
    fn rx_wants_readiness(&self) -> bool {
        true
    }

    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        let spare = batch.spare_mut();
        let mut n = 0;
        let mut vh = [0u8; VNET_HDR_LEN];
        let hdr_len = if self.vnet { VNET_HDR_LEN } else { 0 };
        while n < spare.len() {
            let area = spare[n].rx_area();
            let room = area.len();
            let len = match gather::read_frame(self.fd.as_raw_fd(), &mut vh[..hdr_len], area) {
                Read::Frame(len) => len,
                Read::Short => {
                    self.stats.rx_bad_vnet_hdr += 1;
                    continue;
                }
                Read::Empty => break,
                Read::Error(errno) => {
                    self.stats.rx_errors += 1;
                    self.stats.last_errno = errno;
                    break;
                }
            };
            if len >= room {
                // A frame as large as the buffer may have been cut: never pass on a partial one.
                self.stats.rx_truncated += 1;
                continue;
            }
            let p = &mut spare[n];
            // rx_area reset the metadata before the read.
            p.set_len(len);
            if self.vnet {
                match offload::from_vnet(&vh, p.data(), self.max_segment) {
                    Ok(o) => {
                        self.stats.rx_gso_frames += u64::from(o.is_gso());
                        p.meta.offload = o;
                    }
                    Err(_) => {
                        self.stats.rx_bad_vnet_hdr += 1;
                        continue;
                    }
                }
            }
            n += 1;
        }
        batch.grow(n);
        n
    }

    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        let pkts = batch.pkts();
        let mut sent = 0;
        let mut i = 0;
        while i < pkts.len() {
            // With offloads, in-order segments of one TCP flow go over as one super-frame:
            // one write, and one pass through the container's stack, instead of one each.
            let run = if self.vnet {
                // At most MAX_BATCH segments: write_merged's iovecs.
                offload::gro_run(&pkts[i..pkts.len().min(i + MAX_BATCH)])
            } else {
                0
            };
            let (rc, frames) = if run >= 2 {
                let rc = self.write_merged(&pkts[i..i + run]);
                if rc.is_ok() {
                    self.stats.tx_gro_frames += 1;
                    self.stats.tx_gro_segments += run as u64;
                }
                (rc, run)
            } else {
                let p = &pkts[i];
                (self.write_frame(p.data(), &p.meta.offload), 1)
            };
            match rc {
                Ok(()) => {
                    sent += frames;
                    i += frames;
                }
                Err(err) => {
                    self.stats.last_errno = err.raw_os_error().unwrap_or(0);
                    if err.kind() == io::ErrorKind::WouldBlock {
                        self.stats.tx_would_block += (pkts.len() - i) as u64;
                        break;
                    }
                    self.stats.tx_errors += frames as u64;
                    i += frames;
                }
            }
        }
        sent
    }

    fn offloads(&self) -> bool {
        self.vnet
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats;
        vec![
            ("rx_errors", s.rx_errors),
            ("rx_truncated", s.rx_truncated),
            ("tx_errors", s.tx_errors),
            ("tx_would_block", s.tx_would_block),
            ("rx_bad_vnet_hdr", s.rx_bad_vnet_hdr),
            ("rx_gso_frames", s.rx_gso_frames),
            ("tx_gro_frames", s.tx_gro_frames),
            ("tx_gro_segments", s.tx_gro_segments),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames;
    use crate::port::netns::THREAD_NETNS;
    use crate::wire::arp::{self, OP_REPLY};
    use crate::wire::ethernet::ETHERTYPE_ARP;
    use std::process::Command;
    use std::time::{Duration, Instant};

    const MTU: u16 = 1450;
    const DEADLINE: Duration = Duration::from_secs(5);

    fn cfg(name: &str) -> TapConfig {
        TapConfig {
            name: name.into(),
            netns: None,
            mac: Mac::docker_default(Ipv4Addr::new(10, 0, 9, 11)),
            mtu: MTU,
            addr: Some((Ipv4Addr::new(10, 0, 9, 11), 24)),
            offloads: false,
            persist: false,
        }
    }

    #[test]
    fn netmasks() {
        use super::iface::netmask;
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(17), Ipv4Addr::new(255, 255, 128, 0));
    }

    #[test]
    fn refuses_bad_settings_before_touching_anything() {
        for bad in ["", "a-name-far-too-long", "a/b", "x\0y"] {
            assert!(
                matches!(TapPort::create(&cfg(bad)), Err(TapError::BadName(_))),
                "{bad:?}"
            );
        }
        for bad in ["", "..", "a/b"] {
            let c = TapConfig {
                netns: Some(bad.into()),
                ..cfg("eth0")
            };
            assert!(
                matches!(TapPort::create(&c), Err(TapError::BadNetns(_))),
                "{bad:?}"
            );
        }
        let c = TapConfig {
            addr: Some((Ipv4Addr::LOCALHOST, 33)),
            ..cfg("eth0")
        };
        assert!(matches!(TapPort::create(&c), Err(TapError::BadSetting(_))));
        let c = TapConfig {
            mtu: MIN_MTU - 1,
            ..cfg("eth0")
        };
        assert!(matches!(TapPort::create(&c), Err(TapError::BadSetting(_))));
        let c = TapConfig {
            netns: Some("vxmesh-no-such-netns".into()),
            ..cfg("eth0")
        };
        assert!(matches!(
            TapPort::create(&c),
            Err(TapError::EnterNetns { .. })
        ));
    }

    /// A namespace made by this test and deleted by name when dropped, on failure too.
    struct TestNetns(String);

    impl TestNetns {
        /// A fresh namespace `PREFIX<pid>`; `None` (the test says it skips) without root or a
        /// TUN device.
        fn make(prefix: &str) -> Option<TestNetns> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 || !std::path::Path::new(TUN_DEVICE).exists() {
                eprintln!("skipping: creating a TAP in a namespace needs root and {TUN_DEVICE}");
                return None;
            }
            let ns = TestNetns(format!("{prefix}{}", std::process::id()));
            let made = Command::new("ip").args(["netns", "add", &ns.0]).status();
            assert!(made.is_ok_and(|s| s.success()), "ip netns add {}", ns.0);
            Some(ns)
        }
    }
    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("running ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Needs root (CI runs as root): creates a TAP in a fresh namespace, checks its settings,
    /// and has the container's kernel answer an ARP request written into it.
    #[test]
    fn tap_in_a_namespace_answers_arp() {
        let Some(ns) = TestNetns::make("vxt") else {
            return;
        };
        let before = std::fs::read_link(THREAD_NETNS).unwrap();
        let mut tap = TapPort::create(&TapConfig {
            netns: Some(ns.0.clone()),
            ..cfg("eth0")
        })
        .unwrap();
        assert_eq!(
            std::fs::read_link(THREAD_NETNS).unwrap(),
            before,
            "thread is back home"
        );
        assert_eq!((tap.name(), tap.netns()), ("eth0", Some(ns.0.as_str())));
        let link = ip(&["-n", &ns.0, "-d", "link", "show", "eth0"]);
        assert!(
            link.contains("mtu 1450") && link.contains("02:42:0a:00:09:0b"),
            "{link}"
        );
        assert!(
            link.contains("tun type tap") && link.contains("UP"),
            "{link}"
        );
        let addr = ip(&["-n", &ns.0, "addr", "show", "eth0"]);
        assert!(addr.contains("10.0.9.11/24"), "{addr}");

        let peer = Mac([0x02, 0x42, 10, 0, 9, 21]);
        let peer_ip = Ipv4Addr::new(10, 0, 9, 21);
        let mut tx = Batch::new(4);
        tx.push_frame(&frames::arp_request(
            peer,
            peer_ip,
            Ipv4Addr::new(10, 0, 9, 11),
        ))
        .unwrap();
        assert_eq!(tap.tx_burst(&mut tx), 1);
        let mut rx = Batch::new(32);
        let start = Instant::now();
        let mut reply = None;
        while reply.is_none() && start.elapsed() < DEADLINE {
            rx.clear();
            tap.rx_burst(&mut rx);
            reply = rx.pkts().iter().find_map(|p| {
                let f = p.data();
                let eth = ethernet::Packet::new_checked(f).ok()?;
                (eth.ethertype() == ETHERTYPE_ARP)
                    .then(|| arp::Repr::parse(eth.payload()).ok())
                    .flatten()
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        let reply = reply.expect("the container's kernel answers ARP through the TAP");
        assert_eq!(reply.op, OP_REPLY);
        assert_eq!(
            (reply.sha, reply.spa),
            (cfg("x").mac, Ipv4Addr::new(10, 0, 9, 11))
        );
        assert_eq!((reply.tha, reply.tpa), (peer, peer_ip));
        assert_eq!(tap.stats, TapStats::default());
        drop(tap);
        assert!(
            !ip(&["-n", &ns.0, "link"]).contains("eth0"),
            "closing the fd removes the TAP"
        );
    }

    /// Needs root: a persistent TAP outlives its port with its address, the next create of
    /// the same name takes it over, and a retired one goes with its port.
    #[test]
    fn a_persistent_tap_outlives_its_port_until_retired() {
        let Some(ns) = TestNetns::make("vxp") else {
            return;
        };
        let c = TapConfig {
            netns: Some(ns.0.clone()),
            persist: true,
            offloads: true,
            ..cfg("eth0")
        };
        drop(TapPort::create(&c).unwrap());
        let addr = ip(&["-n", &ns.0, "addr", "show", "eth0"]);
        assert!(
            addr.contains("10.0.9.11/24"),
            "the TAP stays, addressed: {addr}"
        );
        let mut again = TapPort::create(&c).expect("taken over");
        again.retire();
        drop(again);
        assert!(
            !ip(&["-n", &ns.0, "link"]).contains("eth0"),
            "a retired TAP goes with its port"
        );
    }
}
