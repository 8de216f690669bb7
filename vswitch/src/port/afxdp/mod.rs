//! AF_XDP ports: an existing interface (the host side of a container's veth) as a switch port.
//!
//! Where it sits: a local port ([`PortRole::Local`](crate::PortRole)) at both ends of a
//! container's path, like the TAP port, but on a veth the container already has. The node
//! process runs in the node's namespace, where the veth's host end lives; the container's `eth0`
//! is the other end, in the container's namespace.
//!
//! ```text
//! container eth0 ══veth══► host end ─► XDP (attach.rs): xsks[rx queue] ─► RX ring ─► rx_burst ─► l2-parse ─► ...
//! container eth0 ◄══veth══ host end ◄─ sendto kick ◄─ TX ring ◄─ tx_burst ◄─ output ◄─────────────────────┘
//!                              ▲                                  │ GRO runs, super-frames
//!                              └── packet socket: sendmsg ◄───────┘
//!
//! with rx_super_frames (the container keeps its TCP offloads; generic XDP):
//! container TSO ══veth══► host end ─► XDP: longer than the MTU? ─ yes: count, pass ─► packet tap ─► readv ─► rx_burst
//! ```
//!
//! Design choices, and why:
//! - **The XDP program** (`attach.rs`) redirects each frame to the socket of its receive
//!   queue and passes it to the kernel stack when no socket is bound there. It is attached with
//!   `BPF_LINK_CREATE`, so the attachment belongs to a file descriptor: dropping the port, or the
//!   process exiting or being killed, detaches it; a crashed node leaves no program behind.
//!   [`XdpMode::Auto`] tries native (driver) mode and falls back to generic (skb) mode.
//! - **Copy mode on veth.** Zero-copy needs driver support that veth does not have. In driver
//!   mode the socket is bound with neither `XDP_COPY` nor `XDP_ZEROCOPY`, so the kernel takes
//!   zero-copy where the driver offers it and falls back to copy mode by itself (no extra
//!   attempt or socket here); in skb mode copy is forced. [`AfxdpPort::zero_copy`] says which.
//! - **One socket per receive queue**, all in one port: frames are steered to the socket of the
//!   queue they arrived on, so a multi-queue device needs one per queue (a veth has one).
//! - **One UMEM per queue**, not one shared. The kernel wants a fill and completion ring per
//!   queue either way, and this port copies frames in and out of [`Packet`](crate::Packet) buffers, so a shared
//!   UMEM would save no copy; it would add cross-queue frame accounting and the shared-bind rule
//!   (a socket bound with `XDP_SHARED_UMEM` inherits the owner's flags and fails with `EINVAL`
//!   if given its own). Per queue, each UMEM's frames are simply accounted: free + lent to the
//!   kernel for receive + lent for transmit = total, always ([`FrameUse`]). Cost: `(fill ring +
//!   TX ring) x frame size` of memory per queue, 9 MiB with the defaults.
//! - **A deep fill ring (4096).** Frames wait in the RX ring whenever the poll thread is off the
//!   CPU, and on a small machine it shares the cores with the containers it serves: a
//!   scheduler slice of 3-5 ms at 800 kpps is 2400-4000 frames. With 1024 fill frames
//!   `vxmesh-compare`'s 64-byte flood lost about 15% of c11's packets at this socket
//!   (`fill_ring_empty`); with 4096, 1-4%, and the machine forwarded about 25% more per
//!   CPU second (4 quick runs each). libxdp's default ring is 2048 descriptors (the frame count is
//!   the application's); OVS's AF_XDP netdev uses 2048-descriptor rings and 16384 frames.
//! - **Copy into the batch's buffers.** A [`Packet`](crate::Packet) owns its buffer with headroom for VXLAN,
//!   and the switch moves packets between ports by swapping buffers: a UMEM frame could not
//!   follow a packet to a TAP or the underlay. Copying (at most one MTU) on receive hands the
//!   frame straight back to the fill ring, so the ring stays full under load.
//! - **Frame budget, never a leak.** A frame is free, or lent to the kernel for receive (fill
//!   or RX ring: at most the fill ring's size), or lent for transmit (TX ring, in flight, or in
//!   the completion ring: at most the TX ring's size). With `fill + tx` frames both budgets can
//!   always be met at once, so receive never starves because transmit holds every frame.
//!   Received frames return to the free list when copied, transmitted ones when the completion
//!   ring gives them back (reaped on every receive and transmit call).
//! - **Syscalls.** Receive makes none in copy mode (the kernel takes fill frames as frames
//!   arrive); only a zero-copy driver asking for a fill-ring wakeup (`need_wakeup`) costs a
//!   `poll`. Transmit in copy mode happens inside `sendto`, so `tx_burst` kicks with one
//!   `sendto` per batch when the TX ring's `need_wakeup` flag asks for it (in copy mode the
//!   kernel sets it at bind and never clears it; a zero-copy driver clears it while busy). The
//!   kernel sends at most 32 descriptors per kick; leftovers are kicked by the next receive
//!   call (one syscall at most), and `poll(2)` on the socket drives copy-mode transmit too.
//! - **Idle sleep.** [`Port::poll_fd`](crate::port::Port::poll_fd) is the socket (readable when its RX ring is not empty);
//!   with several queues it is an epoll descriptor over all of them.
//! - **Bind retries.** Right after a previous socket on the queue closed (a restarted node), the
//!   kernel may still hold the queue for ~100 ms and `bind` returns `EBUSY`: retried, bounded.
//!
//! - **Super-frames through a packet socket** (`packet_tx`, on by default,
//!   [`AfxdpConfig::super_frames`]). A TX descriptor is one frame, so a TCP stream would reach
//!   the container one 1450-byte `sk_buff` at a time. In-order segments of one flow are merged
//!   (the kernel's GRO rule, as the TAP port does) and sent through an `AF_PACKET` socket with
//!   a virtio-net header, one `sendmsg` gathered from where the payloads lie; so are
//!   super-frames from a TAP container, whole, and the port takes offloads (it finishes a
//!   partial checksum itself). Everything else takes the TX ring; the ring is drained before a
//!   packet-socket send so a flow keeps its order.
//!
//! - **Super-frames from the container** (`packet_rx`, [`AfxdpConfig::rx_super_frames`], off
//!   by default; the node turns it on with `vxmesh run --afxdp-offloads`). Native XDP on a
//!   veth turns the peer's TSO off, so a container's TCP stream came in one 1450-byte frame at
//!   a time. With it, the container keeps TX checksum and TSO for TCP/IPv4 (the caller sets
//!   that up), the program runs in generic mode, and a frame longer than the MTU allows is
//!   counted in an mmapped array map and passed to the stack, where a packet socket with a
//!   virtio-net header takes it with its MSS and partial checksum (and IP drops its own copy:
//!   the port turns forwarding off on the interface, `stack`, and steers each flow to one
//!   CPU's backlog so that it stays in order). The socket is read only when
//!   the count moved. The ring's frames may now hold partial checksums and nothing says
//!   which: their TCP/UDP checksums are put in partial form from the headers
//!   ([`offload::partial_from_unknown`](crate::offload::partial_from_unknown)), finished
//!   where the output needs it.
//!
//! - **Receive deferral** ([`AfxdpConfig::napi_defer`], off by default; `vxmesh run
//!   --afxdp-napi-defer-us`). In native mode a veth's XDP runs in its NAPI, which the
//!   container's transmit schedules: one frame per `sendto`, XDP and the copy into the UMEM in
//!   the sender's softirq. With the interface's NAPI deferred (`napi_defer_hard_irqs`,
//!   `gro_flush_timeout`: `stack`), the kernel's interrupt coalescing, a poll that did work
//!   keeps the NAPI for a timer, the sender only queues its frames, and the timer's poll takes
//!   them up to 64 at a time. Tried and not kept: busy polling the sockets
//!   (`SO_PREFER_BUSY_POLL` and a non-blocking `recvfrom` when the ring is empty), which
//!   brought under 1% of the frames (the timer holds the NAPI) for the same cost per packet
//!   (docs/performance.md).
//!
//! Frames longer than the room of a [`Packet`](crate::Packet) (receive) or than the UMEM frame
//! or the device's MTU allows (transmit) are dropped and counted (`rx_oversize`, `tx_oversize`).
//!
//! The parts, one concern each: `config` (settings and their limits), `umem` (the mapped
//! frames and their accounting), `queue` (one socket's four rings: receive, transmit, refill,
//! reap, kick), `port` ([`AfxdpPort`]: opening and the [`Port`](crate::port::Port) methods),
//! `packet_tx` (the packet socket for super-frames), `packet_rx` (the one for received
//! super-frames), `packet_sock` (what the two share), `stack` (what the port sets on the interface: forwarding
//! off and flow steering for those, the receive deferral),
//! `attach` (the XDP program, its XSKMAP and `bpf_link`) and `epoll` (one wait descriptor over
//! several queues).

use std::io;

use crate::port::ethtool::EthtoolError;

mod attach;
mod config;
mod epoll;
mod order;
mod packet_rx;
mod packet_sock;
mod packet_tx;
mod port;
mod queue;
mod stack;
mod umem;

pub use attach::BpfError;
pub use config::{
    AfxdpConfig, BIND_RETRY_WAIT, DEFAULT_BIND_RETRIES, DEFAULT_FRAME_SIZE, DEFAULT_RX_RING,
    DEFAULT_TX_RING, MAX_FRAME_SIZE, MAX_NAPI_DEFER, MAX_QUEUES, MAX_RING, MIN_FRAME_SIZE,
    NAPI_DEFER_POLLS, XDP_PACKET_HEADROOM, XdpMode,
};
pub use port::{AfxdpPort, AfxdpStats, KernelStats};
pub use stack::IfSettings;
pub use umem::FrameUse;

/// Why an AF_XDP port could not be opened. Every message names the interface and the step.
#[derive(Debug, thiserror::Error)]
pub enum AfxdpError {
    /// A setting is out of range.
    #[error("afxdp {ifname}: {reason}")]
    Config {
        /// The interface.
        ifname: String,
        /// What is wrong.
        reason: String,
    },
    /// No such interface in the calling thread's namespace.
    #[error("afxdp {ifname}: interface not found")]
    NotFound {
        /// The interface.
        ifname: String,
    },
    /// The device's MTU does not fit a UMEM frame.
    #[error(
        "afxdp {ifname}: MTU {mtu} needs {need}-byte receive frames; a {frame_size}-byte UMEM \
         frame holds {room} after the kernel's headroom"
    )]
    MtuTooLarge {
        /// The interface.
        ifname: String,
        /// Its MTU.
        mtu: u32,
        /// Largest frame at that MTU.
        need: u32,
        /// The configured UMEM frame size.
        frame_size: u32,
        /// Bytes a UMEM frame holds for a received frame.
        room: u32,
    },
    /// The queue count could not be read.
    #[error("afxdp {ifname}: reading the receive queue count: {source}")]
    Channels {
        /// The interface.
        ifname: String,
        /// What ethtool said.
        #[source]
        source: EthtoolError,
    },
    /// A `bpf(2)` step failed.
    #[error("afxdp {ifname}: {step}: {source}")]
    Bpf {
        /// The interface.
        ifname: String,
        /// The step.
        step: String,
        /// The failure.
        #[source]
        source: BpfError,
    },
    /// The XDP program could not be attached.
    #[error("afxdp {ifname}: attach XDP program ({tried}): {source}")]
    Attach {
        /// The interface.
        ifname: String,
        /// The modes tried, with the earlier failures.
        tried: String,
        /// The last failure.
        #[source]
        source: BpfError,
    },
    /// The queue stayed busy through every bind attempt.
    #[error("afxdp {ifname}: bind queue {queue}: device busy after {retries} retries")]
    BindBusy {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
        /// Attempts made.
        retries: u32,
    },
    /// Another system call failed.
    #[error("afxdp {ifname}: {step}: {source}")]
    Os {
        /// The interface.
        ifname: String,
        /// The step (`UMEM registration`, `bind queue 0`, ...).
        step: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// What the open sequence needs to name its failures.
pub(super) struct Ctx<'a> {
    pub(super) ifname: &'a str,
}

impl Ctx<'_> {
    pub(super) fn os(&self, step: impl Into<String>, source: io::Error) -> AfxdpError {
        AfxdpError::Os {
            ifname: self.ifname.to_string(),
            step: step.into(),
            source,
        }
    }
    pub(super) fn xsk(&self, step: impl Into<String>, e: xdpilone::Errno) -> AfxdpError {
        self.os(step, io::Error::from_raw_os_error(e.get_raw().abs()))
    }
    pub(super) fn bpf(&self, step: impl Into<String>, source: BpfError) -> AfxdpError {
        AfxdpError::Bpf {
            ifname: self.ifname.to_string(),
            step: step.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_name_the_interface_and_step() {
        let e = AfxdpError::BindBusy {
            ifname: "vc11".into(),
            queue: 0,
            retries: 40,
        };
        assert_eq!(
            e.to_string(),
            "afxdp vc11: bind queue 0: device busy after 40 retries"
        );
        assert_eq!(XdpMode::Drv.to_string(), "drv");
    }
}
