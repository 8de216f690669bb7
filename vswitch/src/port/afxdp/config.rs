//! AF_XDP port settings: the XDP attach mode, UMEM frame and ring sizes, queues, bind retries,
//! and the limits they are checked against before anything is opened.
//!
//! Where it sits: outside the packet path, read once by [`AfxdpPort::open`].

use core::fmt;
use std::time::Duration;

#[cfg(doc)]
use crate::port::afxdp::AfxdpPort;
use crate::port::iface;

/// Default UMEM frame size: holds a 1500-MTU frame after the kernel's receive headroom.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Default RX and fill ring size, in descriptors (see "A deep fill ring" above).
pub const DEFAULT_RX_RING: u32 = 4096;
/// Default TX and completion ring size, in descriptors.
pub const DEFAULT_TX_RING: u32 = 512;
/// Default number of `bind` attempts while the queue is busy.
pub const DEFAULT_BIND_RETRIES: u32 = 40;
/// Wait between `bind` attempts: with the default retries, about 2 s in all.
pub const BIND_RETRY_WAIT: Duration = Duration::from_millis(50);
/// Polls that find nothing the kernel defers through before it lets a sender schedule a
/// deferred interface's NAPI again (`napi_defer_hard_irqs`; [`AfxdpConfig::napi_defer`]).
pub const NAPI_DEFER_POLLS: u32 = 2;
/// The longest receive deferral ([`AfxdpConfig::napi_defer`]).
pub const MAX_NAPI_DEFER: Duration = Duration::from_millis(10);
/// Bytes the kernel keeps in front of a received frame in its UMEM frame (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: u32 = 256;
/// Smallest UMEM frame the kernel accepts (`XDP_UMEM_MIN_CHUNK_SIZE`).
pub const MIN_FRAME_SIZE: u32 = 2048;
/// Largest UMEM frame in aligned mode: a page.
pub const MAX_FRAME_SIZE: u32 = 4096;
/// Largest ring accepted here (the kernel wants powers of two; this bounds the memory).
pub const MAX_RING: u32 = 1 << 15;
/// Most receive queues one port binds.
pub const MAX_QUEUES: u32 = 256;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native mode if the driver takes it, else generic mode.
    #[default]
    Auto,
    /// Generic XDP (`XDP_FLAGS_SKB_MODE`): after the skb is built; works on every device.
    Skb,
    /// Native XDP (`XDP_FLAGS_DRV_MODE`): in the driver, before any skb.
    Drv,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Skb => "skb",
            XdpMode::Drv => "drv",
        })
    }
}

/// How to open an [`AfxdpPort`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfxdpConfig {
    /// The interface, in the calling thread's network namespace.
    pub ifname: String,
    /// Where the XDP program runs.
    pub mode: XdpMode,
    /// UMEM frame size: a power of two from [`MIN_FRAME_SIZE`] to [`MAX_FRAME_SIZE`].
    pub frame_size: u32,
    /// RX ring size (power of two).
    pub rx_ring: u32,
    /// Fill ring size (power of two): frames lent to the kernel for receive.
    pub fill_ring: u32,
    /// TX ring size (power of two): frames lent to the kernel for transmit.
    pub tx_ring: u32,
    /// Completion ring size (power of two, at least the TX ring's).
    pub completion_ring: u32,
    /// Receive queues to bind, from queue 0; `None`: every one the device has
    /// (`ETHTOOL_GCHANNELS`). Frames arriving on a queue above them go to the kernel stack.
    pub queues: Option<u32>,
    /// `bind` attempts while the kernel still holds the queue (`EBUSY`).
    pub bind_retries: u32,
    /// Open a packet socket beside the rings for what a TX ring cannot carry: in-order TCP
    /// segments of one flow merged into one super-frame (as the kernel's GRO would), and TCP
    /// super-frames sent whole. The port then takes offloads
    /// ([`Port::offloads`](crate::port::Port::offloads)). Off: every frame goes through a TX
    /// ring, one `sk_buff` each, and the switch finishes offload work first.
    pub super_frames: bool,
    /// Receive TCP super-frames too: the container keeps its segmentation and checksum
    /// offloads, the XDP program runs in generic mode (native XDP on a veth turns the peer's
    /// offloads off) and passes frames longer than the MTU to a packet socket beside the rings
    /// (`packet_rx`), and the ring's frames get their TCP/UDP checksums put in partial form.
    /// Needs [`AfxdpConfig::super_frames`] and a mode other than [`XdpMode::Drv`]; the caller
    /// turns the container's offloads on. Off: the container's offloads must be off.
    pub rx_super_frames: bool,
    /// Defer the interface's receive by this long (zero: not at all): the kernel's interrupt
    /// coalescing for a NAPI device (`gro_flush_timeout`, with `napi_defer_hard_irqs`
    /// [`NAPI_DEFER_POLLS`]), set when the port opens and put back when it closes
    /// (`stack.rs`). In native mode a veth's XDP runs in its NAPI, which the sender's
    /// transmit schedules: one frame per `sendto`, in the sender's softirq. Deferred, a NAPI
    /// poll that did work keeps the NAPI scheduled and a timer polls it again after this
    /// long, so a busy sender only queues its frames on the veth and the kernel takes them to
    /// the ring up to 64 at a time. Cheaper per small packet; a frame that comes while the
    /// timer holds the NAPI waits for it. Needs native XDP: with [`XdpMode::Auto`] falling
    /// back to generic, the port opens without it
    /// ([`AfxdpPort::napi_deferred`](super::AfxdpPort::napi_deferred) says).
    pub napi_defer: Duration,
}

impl Default for AfxdpConfig {
    fn default() -> Self {
        AfxdpConfig {
            ifname: String::new(),
            mode: XdpMode::Auto,
            frame_size: DEFAULT_FRAME_SIZE,
            rx_ring: DEFAULT_RX_RING,
            fill_ring: DEFAULT_RX_RING,
            tx_ring: DEFAULT_TX_RING,
            completion_ring: DEFAULT_TX_RING,
            queues: None,
            bind_retries: DEFAULT_BIND_RETRIES,
            super_frames: true,
            rx_super_frames: false,
            napi_defer: Duration::ZERO,
        }
    }
}

impl AfxdpConfig {
    /// The defaults, on `ifname`, in `mode`.
    pub fn new(ifname: impl Into<String>, mode: XdpMode) -> Self {
        AfxdpConfig {
            ifname: ifname.into(),
            mode,
            ..AfxdpConfig::default()
        }
    }

    /// Every setting within its limits, or what is wrong.
    pub(super) fn check(&self) -> Result<(), String> {
        if !iface::valid_ifname(&self.ifname) {
            return Err(format!("interface name must be {}", iface::IFNAME_RULE));
        }
        if !self.frame_size.is_power_of_two()
            || !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.frame_size)
        {
            return Err(format!(
                "frame size {} is not a power of two from {MIN_FRAME_SIZE} to {MAX_FRAME_SIZE}",
                self.frame_size
            ));
        }
        for (what, n) in [
            ("RX", self.rx_ring),
            ("fill", self.fill_ring),
            ("TX", self.tx_ring),
            ("completion", self.completion_ring),
        ] {
            if !n.is_power_of_two() || n > MAX_RING {
                return Err(format!(
                    "{what} ring size {n} is not a power of two up to {MAX_RING}"
                ));
            }
        }
        if self.completion_ring < self.tx_ring {
            return Err(format!(
                "completion ring ({}) smaller than the TX ring ({})",
                self.completion_ring, self.tx_ring
            ));
        }
        if let Some(q) = self.queues
            && (q == 0 || q > MAX_QUEUES)
        {
            return Err(format!("queue count {q} is not from 1 to {MAX_QUEUES}"));
        }
        if self.rx_super_frames && !self.super_frames {
            return Err("receiving super-frames needs sending them (super_frames)".into());
        }
        if self.rx_super_frames && self.mode == XdpMode::Drv {
            return Err(
                "receiving super-frames needs generic (skb) XDP: native XDP on a veth turns the peer's segmentation offload off"
                    .into(),
            );
        }
        if !self.napi_defer.is_zero() && (self.mode == XdpMode::Skb || self.rx_super_frames) {
            return Err(
                "deferring the interface's receive needs native XDP: generic XDP runs from the backlog, not the interface's NAPI"
                    .into(),
            );
        }
        if self.napi_defer > MAX_NAPI_DEFER {
            return Err(format!(
                "receive deferral {:?} is over {MAX_NAPI_DEFER:?}",
                self.napi_defer
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::afxdp::{AfxdpError, AfxdpPort};

    #[test]
    fn config_checks_name_sizes_and_rings() {
        let ok = AfxdpConfig::new("vc11", XdpMode::Skb);
        assert_eq!(ok.check(), Ok(()));
        let bad = [
            AfxdpConfig::new("", XdpMode::Auto),
            AfxdpConfig::new("a-name-far-too-long", XdpMode::Auto),
            AfxdpConfig::new("a/b", XdpMode::Auto),
            AfxdpConfig {
                frame_size: 3000,
                ..ok.clone()
            },
            AfxdpConfig {
                frame_size: 1024,
                ..ok.clone()
            },
            AfxdpConfig {
                frame_size: 8192,
                ..ok.clone()
            },
            AfxdpConfig {
                rx_ring: 1000,
                ..ok.clone()
            },
            AfxdpConfig {
                fill_ring: 0,
                ..ok.clone()
            },
            AfxdpConfig {
                completion_ring: DEFAULT_TX_RING / 2,
                ..ok.clone()
            },
            AfxdpConfig {
                queues: Some(0),
                ..ok.clone()
            },
            AfxdpConfig {
                rx_super_frames: true,
                super_frames: false,
                ..ok.clone()
            },
            AfxdpConfig {
                rx_super_frames: true,
                mode: XdpMode::Drv,
                ..ok.clone()
            },
            AfxdpConfig {
                napi_defer: Duration::from_micros(200),
                mode: XdpMode::Skb,
                ..ok.clone()
            },
            AfxdpConfig {
                napi_defer: Duration::from_micros(200),
                rx_super_frames: true,
                ..ok.clone()
            },
            AfxdpConfig {
                napi_defer: MAX_NAPI_DEFER + Duration::from_micros(1),
                ..ok.clone()
            },
        ];
        for c in bad {
            let e = AfxdpPort::open(&c).unwrap_err();
            assert!(matches!(e, AfxdpError::Config { .. }), "{c:?}: {e}");
            assert!(e.to_string().starts_with("afxdp "), "{e}");
        }
    }
}
