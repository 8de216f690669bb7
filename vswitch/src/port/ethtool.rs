//! Interface offloads and channels through the `SIOCETHTOOL` ioctl (no `ethtool` binary).
//!
//! Where it sits: outside the packet path, in endpoint setup. An AF_XDP port reads raw frames
//! off the host side of a container's veth. With transmit checksum offload on (the veth
//! default), the container's stack leaves TCP/UDP checksums partial (`CHECKSUM_PARTIAL`: only
//! the pseudo-header sum, for "the NIC" to finish), the veth never finishes them, and the frame
//! the switch forwards reaches the other container with a wrong checksum: TCP stalls. With TSO
//! or GSO on, the container hands the veth 64 KiB super-frames that no AF_XDP frame holds. So for
//! an AF_XDP endpoint vxmesh turns TX checksumming, TSO and GSO off on the veth's *container*
//! side, in the container's namespace ([`disable_offloads`]), and the container's stack then
//! emits finished, MTU-sized frames.
//!
//! The legacy per-feature commands (`ETHTOOL_STXCSUM`, `ETHTOOL_STSO`, `ETHTOOL_SGSO` and their
//! `G` readers) are used rather than `ETHTOOL_SFEATURES` and its string sets: the kernel maps
//! them onto the same feature bits, and each is one fixed-size `ethtool_value`. Every setting is
//! read back, so a driver that ignores one is an error, not a silent success.
//!
//! [`channels`] reads `ETHTOOL_GCHANNELS` in the calling thread's namespace: the AF_XDP port
//! binds one socket per receive queue. (`/sys/class/net/IF/queues` is no help there: sysfs shows
//! the namespace it was mounted in, not the one the thread has entered.)

use std::io;

use super::iface::{self, CtlSocket, IFNAME_RULE};
use super::netns::{self, NetnsError};

/// `SIOCETHTOOL` (include/uapi/linux/sockios.h).
const SIOCETHTOOL: libc::Ioctl = 0x8946;
/// `ETHTOOL_GTXCSUM`: read TX checksumming.
const ETHTOOL_GTXCSUM: u32 = 0x16;
/// `ETHTOOL_STXCSUM`: set TX checksumming.
const ETHTOOL_STXCSUM: u32 = 0x17;
/// `ETHTOOL_GTSO`: read TCP segmentation offload.
const ETHTOOL_GTSO: u32 = 0x1e;
/// `ETHTOOL_STSO`: set TCP segmentation offload.
const ETHTOOL_STSO: u32 = 0x1f;
/// `ETHTOOL_GGSO`: read generic segmentation offload.
const ETHTOOL_GGSO: u32 = 0x23;
/// `ETHTOOL_SGSO`: set generic segmentation offload.
const ETHTOOL_SGSO: u32 = 0x24;
/// `ETHTOOL_GSTRINGS`: read a string set.
const ETHTOOL_GSTRINGS: u32 = 0x1b;
/// `ETHTOOL_GSSET_INFO`: read string set sizes.
const ETHTOOL_GSSET_INFO: u32 = 0x37;
/// `ETHTOOL_SFEATURES`: set features by their bit in the `ETH_SS_FEATURES` string set.
const ETHTOOL_SFEATURES: u32 = 0x3b;
/// `ETH_SS_FEATURES`: the string set naming the feature bits.
const ETH_SS_FEATURES: u32 = 4;
/// `ETH_GSTRING_LEN`.
const GSTRING_LEN: usize = 32;
/// `ETHTOOL_GCHANNELS`: read the queue (channel) counts.
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// `struct ethtool_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// An offload the module can switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// Transmit checksumming (`tx`, every `tx-checksum-*` feature).
    TxChecksum,
    /// TCP segmentation offload (`tso`).
    Tso,
    /// Generic segmentation offload (`gso`).
    Gso,
}

impl Offload {
    /// Every offload, in the order [`disable_offloads`] turns them off.
    pub const ALL: [Offload; 3] = [Offload::Gso, Offload::Tso, Offload::TxChecksum];

    /// `ethtool -K` name.
    pub fn name(self) -> &'static str {
        match self {
            Offload::TxChecksum => "tx",
            Offload::Tso => "tso",
            Offload::Gso => "gso",
        }
    }

    fn get_cmd(self) -> (u32, &'static str) {
        match self {
            Offload::TxChecksum => (ETHTOOL_GTXCSUM, "ETHTOOL_GTXCSUM"),
            Offload::Tso => (ETHTOOL_GTSO, "ETHTOOL_GTSO"),
            Offload::Gso => (ETHTOOL_GGSO, "ETHTOOL_GGSO"),
        }
    }

    fn set_cmd(self) -> (u32, &'static str) {
        match self {
            Offload::TxChecksum => (ETHTOOL_STXCSUM, "ETHTOOL_STXCSUM"),
            Offload::Tso => (ETHTOOL_STSO, "ETHTOOL_STSO"),
            Offload::Gso => (ETHTOOL_SGSO, "ETHTOOL_SGSO"),
        }
    }
}

/// The state of the offloads this module switches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Transmit checksumming.
    pub tx_checksum: bool,
    /// TCP segmentation offload.
    pub tso: bool,
    /// Generic segmentation offload.
    pub gso: bool,
}

impl Offloads {
    /// The state of one offload.
    pub fn get(&self, o: Offload) -> bool {
        match o {
            Offload::TxChecksum => self.tx_checksum,
            Offload::Tso => self.tso,
            Offload::Gso => self.gso,
        }
    }
}

/// Queue counts of an interface (`ethtool -l`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    /// Largest receive-only channel count.
    pub max_rx: u32,
    /// Largest transmit-only channel count.
    pub max_tx: u32,
    /// Largest combined channel count.
    pub max_combined: u32,
    /// Receive-only channels in use.
    pub rx: u32,
    /// Transmit-only channels in use.
    pub tx: u32,
    /// Combined (receive and transmit) channels in use.
    pub combined: u32,
}

impl Channels {
    /// Receive queues in use: combined plus receive-only channels (at least 1).
    pub fn rx_queues(&self) -> u32 {
        (self.combined + self.rx).max(1)
    }
}

/// Why an offload could not be read or set.
#[derive(Debug, thiserror::Error)]
pub enum EthtoolError {
    /// The interface name is not one the kernel takes ([`iface::valid_ifname`]).
    #[error("ethtool: interface name {0:?} must be {IFNAME_RULE}")]
    BadName(String),
    /// The namespace could not be entered or left.
    #[error("ethtool: {0}")]
    Netns(#[from] NetnsError),
    /// The control socket could not be opened.
    #[error("ethtool {target}: control socket: {source}")]
    Socket {
        /// The interface, and the namespace if not the thread's own.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The ioctl failed.
    #[error("ethtool {target}: {cmd}: {source}")]
    Ioctl {
        /// The interface, and the namespace if not the thread's own.
        target: String,
        /// The command (`ETHTOOL_STXCSUM`, ...).
        cmd: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The driver accepted a setting but reads back the old state.
    #[error("ethtool {target}: {offload} is still {state} after setting it")]
    NotApplied {
        /// The interface, and the namespace if not the thread's own.
        target: String,
        /// The offload's `ethtool -K` name.
        offload: &'static str,
        /// `on` or `off`.
        state: &'static str,
    },
}

impl EthtoolError {
    /// The OS error, if the failure was a system call's.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            EthtoolError::Socket { source, .. } | EthtoolError::Ioctl { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// An interface ioctl socket in the current namespace, for one interface.
struct Ctl {
    sock: CtlSocket,
    ifname: String,
    target: String,
}

impl Ctl {
    fn open(netns: Option<&str>, ifname: &str) -> Result<Ctl, EthtoolError> {
        let target = match netns {
            Some(ns) => format!("{ifname} (netns {ns})"),
            None => ifname.to_string(),
        };
        match CtlSocket::open() {
            Ok(sock) => Ok(Ctl {
                sock,
                ifname: ifname.to_string(),
                target,
            }),
            Err(source) => Err(EthtoolError::Socket { target, source }),
        }
    }

    /// `SIOCETHTOOL` with `data` (an ethtool command struct starting with its `cmd`).
    fn ioctl<T>(&self, data: &mut T, cmd: &'static str) -> Result<(), EthtoolError> {
        let mut req = iface::ifreq(&self.ifname);
        req.ifr_ifru.ifru_data = (data as *mut T).cast();
        // SAFETY: SIOCETHTOOL reads the ifreq and reads/writes the command struct it points at;
        // both are live and exclusively borrowed for the call, and `T` is the struct the
        // command's number (its first field) says.
        unsafe { self.sock.ioctl(SIOCETHTOOL, &mut req) }.map_err(|source| EthtoolError::Ioctl {
            target: self.target.clone(),
            cmd,
            source,
        })
    }

    /// `SIOCETHTOOL` with a variable-length command struct laid out in `buf` (its `cmd` first).
    fn ioctl_buf(&self, buf: &mut [u32], cmd: &'static str) -> Result<(), EthtoolError> {
        // The struct the kernel reads and writes is the whole buffer, which outlives the call.
        self.ioctl(&mut buf[0], cmd)
    }

    /// The names of the feature bits (`ethtool -k` names), in bit order.
    fn feature_names(&self) -> Result<Vec<String>, EthtoolError> {
        // struct ethtool_sset_info { cmd, reserved, sset_mask (u64), data[1] }
        let mut info = [ETHTOOL_GSSET_INFO, 0, 0, 0, 0];
        let mask = 1u64 << ETH_SS_FEATURES;
        info[2..4].copy_from_slice(&[mask as u32, (mask >> 32) as u32]);
        self.ioctl_buf(&mut info, "ETHTOOL_GSSET_INFO")?;
        let count = info[4] as usize;
        // struct ethtool_gstrings { cmd, string_set, len, data[len * 32] }
        let mut buf = vec![0u32; 3 + count * GSTRING_LEN / 4];
        buf[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count as u32]);
        self.ioctl_buf(&mut buf, "ETHTOOL_GSTRINGS")?;
        let bytes: Vec<u8> = buf[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        Ok(bytes
            .chunks(GSTRING_LEN)
            .map(|c| {
                let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                String::from_utf8_lossy(&c[..end]).into_owned()
            })
            .collect())
    }

    /// Turn off every feature `off` picks by name (`ETHTOOL_SFEATURES`).
    fn features_off(&self, off: impl Fn(&str) -> bool) -> Result<(), EthtoolError> {
        let names = self.feature_names()?;
        let words = names.len().div_ceil(32);
        // struct ethtool_sfeatures { cmd, size, features[size] { valid, requested } }
        let mut buf = vec![0u32; 2 + 2 * words];
        buf[..2].copy_from_slice(&[ETHTOOL_SFEATURES, words as u32]);
        for (bit, name) in names.iter().enumerate() {
            if off(name) {
                // valid: change this bit; requested: to 0.
                buf[2 + 2 * (bit / 32)] |= 1 << (bit % 32);
            }
        }
        self.ioctl_buf(&mut buf, "ETHTOOL_SFEATURES")
    }

    fn get(&self, o: Offload) -> Result<bool, EthtoolError> {
        let (cmd, name) = o.get_cmd();
        let mut v = EthtoolValue { cmd, data: 0 };
        self.ioctl(&mut v, name)?;
        Ok(v.data != 0)
    }

    fn set(&self, o: Offload, on: bool) -> Result<(), EthtoolError> {
        let (cmd, name) = o.set_cmd();
        let mut v = EthtoolValue {
            cmd,
            data: u32::from(on),
        };
        self.ioctl(&mut v, name)
    }

    fn offloads(&self) -> Result<Offloads, EthtoolError> {
        Ok(Offloads {
            tx_checksum: self.get(Offload::TxChecksum)?,
            tso: self.get(Offload::Tso)?,
            gso: self.get(Offload::Gso)?,
        })
    }
}

fn check_name(ifname: &str) -> Result<(), EthtoolError> {
    if !iface::valid_ifname(ifname) {
        return Err(EthtoolError::BadName(ifname.to_string()));
    }
    Ok(())
}

/// Run `f` with a control socket for `ifname` opened in `netns` (`None`: the thread's own).
fn with_ctl<T>(
    netns: Option<&str>,
    ifname: &str,
    f: impl FnOnce(&Ctl) -> Result<T, EthtoolError>,
) -> Result<T, EthtoolError> {
    check_name(ifname)?;
    // The socket decides the namespace the ioctls act in, so only its creation needs the switch;
    // the whole body runs there anyway, to keep it simple to reason about.
    netns::run_in(netns, || f(&Ctl::open(netns, ifname)?))?
}

/// Read the offloads of `ifname` in `netns` (`None`: the calling thread's namespace).
pub fn offloads(netns: Option<&str>, ifname: &str) -> Result<Offloads, EthtoolError> {
    with_ctl(netns, ifname, Ctl::offloads)
}

/// Switch `offload` on or off on `ifname` in `netns`, and check it took.
pub fn set_offload(
    netns: Option<&str>,
    ifname: &str,
    offload: Offload,
    on: bool,
) -> Result<(), EthtoolError> {
    with_ctl(netns, ifname, |c| {
        c.set(offload, on)?;
        applied(c, offload, on)
    })
}

/// `ethtool -K IF tx off tso off gso off` in `netns`: what an AF_XDP endpoint's container side
/// needs (see the module comment). Each setting is read back.
pub fn disable_offloads(netns: Option<&str>, ifname: &str) -> Result<(), EthtoolError> {
    with_ctl(netns, ifname, |c| {
        for o in Offload::ALL {
            c.set(o, false)?;
        }
        for o in Offload::ALL {
            applied(c, o, false)?;
        }
        Ok(())
    })
}

/// `ethtool -K IF tx on tso on gso on`, then every segmentation offload but TCP/IPv4's off
/// (`tx-tcp6-segmentation`, `tx-tcp-ecn-segmentation`, `tx-udp-segmentation`, the tunnel
/// ones...): what an AF_XDP endpoint's container side needs when the port receives its TCP
/// super-frames (the switch cuts TCP/IPv4 only; the kernel cuts the rest before the veth).
pub fn enable_tcp4_offloads(netns: Option<&str>, ifname: &str) -> Result<(), EthtoolError> {
    with_ctl(netns, ifname, |c| {
        for o in Offload::ALL {
            c.set(o, true)?;
        }
        for o in Offload::ALL {
            applied(c, o, true)?;
        }
        c.features_off(|name| {
            name.starts_with("tx-")
                && name.ends_with("-segmentation")
                && name != "tx-tcp-segmentation"
        })
    })
}

fn applied(c: &Ctl, o: Offload, on: bool) -> Result<(), EthtoolError> {
    let now = c.get(o)?;
    if now != on {
        return Err(EthtoolError::NotApplied {
            target: c.target.clone(),
            offload: o.name(),
            state: if now { "on" } else { "off" },
        });
    }
    Ok(())
}

/// The queue counts of `ifname` in the calling thread's namespace (`ethtool -l`).
pub fn channels(ifname: &str) -> Result<Channels, EthtoolError> {
    with_ctl(None, ifname, |c| {
        let mut ch = EthtoolChannels {
            cmd: ETHTOOL_GCHANNELS,
            ..EthtoolChannels::default()
        };
        c.ioctl(&mut ch, "ETHTOOL_GCHANNELS")?;
        Ok(Channels {
            max_rx: ch.max_rx,
            max_tx: ch.max_tx,
            max_combined: ch.max_combined,
            rx: ch.rx_count,
            tx: ch.tx_count,
            combined: ch.combined_count,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn refuses_bad_names_before_any_syscall() {
        for bad in ["", "a-name-far-too-long", "a/b", "x\0y"] {
            assert!(
                matches!(disable_offloads(None, bad), Err(EthtoolError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            offloads(Some("a/b"), "eth0"),
            Err(EthtoolError::Netns(NetnsError::BadName(_)))
        ));
    }

    #[test]
    fn channel_counts() {
        let veth = Channels {
            rx: 1,
            tx: 1,
            ..Channels::default()
        };
        assert_eq!(veth.rx_queues(), 1);
        let nic = Channels {
            combined: 8,
            rx: 0,
            ..Channels::default()
        };
        assert_eq!(nic.rx_queues(), 8);
        assert_eq!(Channels::default().rx_queues(), 1);
    }

    /// A namespace made by this test and deleted by name when dropped, on failure too.
    struct TestNetns(String);
    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Needs root (CI runs as root): offloads of a veth in a fresh namespace go off and stay
    /// off, the thread comes back home, and a veth's channels read as one queue each way.
    #[test]
    fn veth_offloads_go_off_in_a_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: making a namespace and a veth needs root");
            return;
        }
        let ns = TestNetns(format!("vxe{}", std::process::id()));
        ip(&["netns", "add", &ns.0]);
        ip(&[
            "-n", &ns.0, "link", "add", "e0", "type", "veth", "peer", "name", "e1",
        ]);
        let before = std::fs::read_link(netns::THREAD_NETNS).unwrap();
        let on = offloads(Some(&ns.0), "e0").unwrap();
        assert!(on.tx_checksum && on.tso && on.gso, "veth defaults: {on:?}");
        disable_offloads(Some(&ns.0), "e0").unwrap();
        assert_eq!(offloads(Some(&ns.0), "e0").unwrap(), Offloads::default());
        // the peer is untouched
        assert!(offloads(Some(&ns.0), "e1").unwrap().tx_checksum);
        set_offload(Some(&ns.0), "e0", Offload::Gso, true).unwrap();
        assert!(offloads(Some(&ns.0), "e0").unwrap().gso);
        let e = offloads(Some(&ns.0), "nosuchif").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
        assert!(e.to_string().contains(&ns.0), "{e}");
        assert_eq!(std::fs::read_link(netns::THREAD_NETNS).unwrap(), before);

        let ch = netns::run_in(Some(&ns.0), || channels("e0"))
            .unwrap()
            .unwrap();
        assert_eq!(ch.rx_queues(), 1, "{ch:?}");
    }
}
