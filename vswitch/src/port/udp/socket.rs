//! The UDP underlay's socket: VXLAN over a plain UDP socket on the node's VTEP address, port 4789.
//!
//! Where it sits: at both ends of the cross-node path, inside [`UdpPort`](super::UdpPort), the
//! switch port: `vxlan-decap` gets its input from [`UdpUnderlay::recv_slots`] (straight into
//! the batch's packet buffers; source VTEP and UDP payload = VXLAN header + inner frame), and
//! `vxlan-encap`'s output goes out through [`UdpUnderlay::send_slices`] (straight from them).
//! The kernel adds outer IPv4 and UDP, so no kernel vxlan device (and no `CAP_NET_ADMIN`) is
//! needed; the raw sender of lone datagrams ("The source port", below) wants `CAP_NET_RAW`,
//! and they go from their flows' sockets without it. (The tests alone send and receive through `PacketBufs`, slots of their own.) The
//! receive coalescing (UDP GRO) half is in [`super::gro`].
//!
//! Offloads, where the kernel has them: sends group runs of same-size datagrams to one peer
//! into one message with `UDP_SEGMENT` (GSO, 4.18+); [`UdpUnderlay::enable_gro`] turns on
//! `UDP_GRO` (5.0+), after which receives go through [`UdpUnderlay::recv_coalesced`] into 32
//! buffers of 64 KB and come out datagram by datagram from [`UdpUnderlay::next_datagram`].
//! Socket buffers are 4 MiB each way (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` as root).
//!
//! One syscall per batch: `recvmmsg`/`sendmmsg` over `mmsghdr`, `iovec` and `sockaddr_in`
//! arrays allocated once at bind time; receive buffers are the caller's (the batch's packet
//! buffers, or the GRO buffers allocated once). Nothing is allocated per packet. The socket is
//! non-blocking, so a call with nothing to do returns at once (the poll loop decides when to
//! call again).
//!
//! The socket sets `IP_PMTUDISC_DO`: the outer packet carries DF and is never fragmented (a
//! datagram above the path MTU fails with `EMSGSIZE` and is counted as failed).
//!
//! The source port: a datagram leaves from the socket bound to port 4789 unless the underlay
//! has flow sources ([`UdpUnderlay::add_flow_sources`], what the node's underlay uses): then
//! each datagram given a flow hash ([`UdpUnderlay::send_flows`]) leaves from one of N more
//! sockets on the VTEP address, each on a port the kernel chose from its ephemeral range: the
//! one its hash picks ([`super::flow`]). That is the kernel vxlan device's per-flow source
//! port, taken from a set of N. Those sockets never receive: a filter drops whatever reaches
//! them. A datagram that goes alone (not part of a UDP GSO run) leaves instead through one
//! send-only raw socket (`IPPROTO_RAW`) behind IPv4 and UDP headers written here with its
//! source's port, DF set and the UDP checksum 0 (the kernel vxlan device's default), so a
//! batch of small datagrams from many flows is still one `sendmmsg`: a batch costs one call
//! per run of consecutive messages from one socket, the raw one or a source's. Without
//! `CAP_NET_RAW` the lone datagrams go from their sources' sockets.
//!
//! The socket is created in the network namespace of the calling thread.

use core::mem::{size_of, zeroed};
use core::net::{Ipv4Addr, SocketAddrV4};
use core::ptr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::gro::{GroCmsg, GroRx};
use super::open::{Share, drop_all_received, open_raw_sender, open_socket, write_raw_header};

/// Default batch size (as OVS and VPP use).
pub const DEFAULT_BATCH: usize = 32;

/// Largest batch: the kernel's `UIO_MAXIOV`, the most `recvmmsg`/`sendmmsg` take at once.
pub const MAX_BATCH: usize = 1024;

/// Default slot size: a 1500-byte underlay MTU less IPv4 and UDP headers, rounded up.
pub const DEFAULT_BUF_SIZE: usize = 2048;

/// `SOL_UDP` and its options (linux/udp.h; the libc crate has them for uclibc only; `UDP_GRO`
/// is in [`super::gro`]).
pub(super) const SOL_UDP: libc::c_int = 17;
/// UDP segmentation offload (Linux 4.18): the payload of one send is cut into datagrams of
/// this size.
pub(super) const UDP_SEGMENT: libc::c_int = 103;
/// Messages one coalescing receive takes (each up to 64 KB).
pub const GRO_MESSAGES: usize = 32;
/// Bytes per coalescing receive buffer: the largest UDP payload.
pub const GRO_BUF_SIZE: usize = 65536;

/// Most datagrams in one UDP GSO send (the kernel's `UDP_MAX_SEGMENTS`: 64 before 6.x, 128 now).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one UDP GSO send: an IPv4 datagram's 65535 less IPv4 and UDP headers.
pub const GSO_MAX_BYTES: usize = 65535 - 20 - 8;
/// Socket buffer size asked for (each way): room for a few batches of bursts from every peer.
pub const SOCKET_BUFFER: libc::c_int = 4 << 20;

/// One `UDP_SEGMENT` control message (`CMSG_SPACE(sizeof(u16))` bytes, aligned like `cmsghdr`).
#[repr(C)]
#[derive(Clone, Copy)]
struct GsoCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

/// A run of consecutive datagrams of one send that goes out as one message: same destination,
/// all `segment` bytes long but the last, which may be shorter.
#[derive(Clone, Copy, Debug, Default)]
struct Group {
    first: usize,
    count: usize,
    segment: usize,
    bytes: usize,
    /// A datagram shorter than `segment` was added: it must be the last.
    closed: bool,
    /// The socket it leaves from: 0 the bound one, `1 + i` flow source `i`.
    sock: u8,
}

/// Most flow sources an underlay takes ([`UdpUnderlay::add_flow_sources`]).
pub const MAX_FLOW_SOURCES: usize = 64;

/// Why the underlay could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum UnderlayError {
    /// `socket(2)` failed.
    #[error("creating the underlay UDP socket: {0}")]
    Socket(#[source] io::Error),
    /// A socket option could not be set.
    #[error("setting {option} on the underlay socket: {source}")]
    SetOption {
        /// The option's name.
        option: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `bind(2)` failed (address not on this namespace's interfaces, port in use, ...).
    #[error("binding the underlay socket to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddrV4,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `getsockname(2)` failed.
    #[error("reading the underlay socket's address: {0}")]
    LocalAddr(#[source] io::Error),
    /// `recvmmsg(2)` failed with something other than "nothing to read".
    #[error("receiving on the underlay socket: {0}")]
    Recv(#[source] io::Error),
    /// A batch or buffer size of 0 or above the limits.
    #[error("invalid underlay size: {what} = {value}")]
    BadSize {
        /// Which size.
        what: &'static str,
        /// The value given.
        value: usize,
    },
}

/// What happened to one send call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendReport {
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Datagrams not sent because the socket buffer was full (the caller drops or retries).
    pub unsent: usize,
    /// Datagrams the kernel refused (`EMSGSIZE` above the path MTU, no route, ...).
    pub failed: usize,
    /// The errno of the last refusal, if any.
    pub last_errno: Option<i32>,
    /// Messages that carried more than one datagram (UDP GSO), and the datagrams in them.
    pub gso_messages: usize,
    /// Datagrams sent inside GSO messages.
    pub gso_datagrams: usize,
}

/// A non-blocking UDP socket on the VTEP address that receives and sends in batches.
pub struct UdpUnderlay {
    pub(super) fd: OwnedFd,
    local: SocketAddrV4,
    msgs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    /// Send side: two per datagram (its head and its tail, [`UdpUnderlay::send_flows`]).
    send_iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in]>,
    groups: Box<[Group]>,
    cmsgs: Box<[GsoCmsg]>,
    gso: bool,
    pub(super) gro: Option<Box<GroRx>>,
    /// The flow sources: sockets on the VTEP address that only send, with their ports.
    sources: Vec<(OwnedFd, u16)>,
    /// With flow sources: a raw socket (`IPPROTO_RAW`, send only) for the datagrams that go
    /// alone, with IPv4 and UDP headers of our own (`raw_hdrs`, three iovecs each in
    /// `raw_iovs`), so a batch of them from many flows is one `sendmmsg` whatever their
    /// source ports. None without `CAP_NET_RAW`: they go from their sources' sockets.
    raw: Option<OwnedFd>,
    raw_hdrs: Box<[[u8; RAW_HDR]]>,
    raw_iovs: Box<[libc::iovec]>,
}

/// The IPv4 and UDP headers a datagram sent on the raw socket carries (no IP options).
pub(super) const RAW_HDR: usize = 20 + 8;
/// [`Group::sock`] of a datagram sent on the raw socket.
const RAW_SOCK: u8 = u8::MAX;

// SAFETY: the raw pointers inside `msgs`/`iovs` are only written and read within a single
// `&mut self` call (set up right before the syscall, never dereferenced afterwards), so moving
// the underlay to another thread (the poll worker) moves no live borrow.
unsafe impl Send for UdpUnderlay {}

impl core::fmt::Debug for UdpUnderlay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UdpUnderlay")
            .field("fd", &self.fd)
            .field("local", &self.local)
            .field("batch", &self.msgs.len())
            .finish()
    }
}

/// The last OS error.
pub(super) fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// A `sockaddr_in` for an IPv4 socket address.
pub(super) fn to_sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid (unspecified) value.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(addr.ip().octets());
    sa
}

/// The IPv4 socket address in a `sockaddr_in`.
pub(super) fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(sa.sin_addr.s_addr.to_ne_bytes()),
        u16::from_be(sa.sin_port),
    )
}

/// Points a receive header at its address slot, its buffer and (for UDP GRO) its control
/// buffer.
pub(super) fn point_recv(
    m: &mut libc::mmsghdr,
    name: &mut libc::sockaddr_in,
    iov: &mut libc::iovec,
    control: Option<&mut GroCmsg>,
) {
    let hdr = &mut m.msg_hdr;
    hdr.msg_name = ptr::from_mut(name).cast();
    hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    hdr.msg_iov = ptr::from_mut(iov);
    hdr.msg_iovlen = 1;
    (hdr.msg_control, hdr.msg_controllen) = match control {
        Some(c) => (ptr::from_mut(c).cast(), size_of::<GroCmsg>()),
        None => (ptr::null_mut(), 0),
    };
    hdr.msg_flags = 0;
    m.msg_len = 0;
}

/// One non-blocking `recvmmsg` into `msgs`: how many arrived, 0 when nothing is waiting.
///
/// # Safety
/// Every header in `msgs` must point (through [`point_recv`]) at live, distinct buffers, address
/// slots and control buffers that nothing else accesses during the call.
pub(super) unsafe fn recvmmsg(
    fd: RawFd,
    msgs: &mut [libc::mmsghdr],
) -> Result<usize, UnderlayError> {
    // SAFETY: the caller's contract; `msgs.len()` <= MAX_BATCH fits c_uint. Nothing is
    // retained after the call.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
        )
    };
    if rc < 0 {
        let err = last_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(UnderlayError::Recv(err)),
        };
    }
    // rc >= 0 was just checked and is at most msgs.len().
    Ok(rc as usize)
}

/// Sets an integer socket option.
pub(super) fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    option: &'static str,
) -> Result<(), UnderlayError> {
    // SAFETY: `value` outlives the call and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            ptr::from_ref(&value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(UnderlayError::SetOption {
            option,
            source: last_error(),
        });
    }
    Ok(())
}

impl UdpUnderlay {
    /// Binds a non-blocking UDP socket to `addr` (the VTEP, port [`VXLAN_PORT`](crate::wire::vxlan::VXLAN_PORT)) with
    /// `SO_REUSEADDR` and DF on, ready for batches of up to `batch` datagrams.
    pub fn bind(addr: SocketAddrV4, batch: usize) -> Result<UdpUnderlay, UnderlayError> {
        Self::bind_socket(addr, batch, libc::SOCK_DGRAM, libc::IPPROTO_UDP, false)
    }

    /// [`UdpUnderlay::bind`] with `SO_REUSEPORT`: one of several sockets on the same address,
    /// one per poll thread of a node (`vxmesh run --workers`), among which the kernel spreads
    /// the datagrams by their addresses and ports. Every socket of the group must be bound so.
    pub fn bind_shared(addr: SocketAddrV4, batch: usize) -> Result<UdpUnderlay, UnderlayError> {
        Self::bind_socket(addr, batch, libc::SOCK_DGRAM, libc::IPPROTO_UDP, true)
    }

    /// Binds a non-blocking raw IPv4 socket of IP protocol `protocol` (50: ESP) to `addr`'s
    /// address, for batches of up to `batch` packets: what it receives starts with the IPv4
    /// header, what it sends is the payload the kernel puts an IPv4 header (DF set) in front
    /// of. No GSO or GRO; the port of `addr` and of every peer is ignored (0 when received).
    /// Needs `CAP_NET_RAW`.
    pub fn bind_raw(
        addr: Ipv4Addr,
        protocol: u8,
        batch: usize,
    ) -> Result<UdpUnderlay, UnderlayError> {
        Self::bind_socket(
            SocketAddrV4::new(addr, 0),
            batch,
            libc::SOCK_RAW,
            libc::c_int::from(protocol),
            false,
        )
    }

    fn bind_socket(
        addr: SocketAddrV4,
        batch: usize,
        kind: libc::c_int,
        protocol: libc::c_int,
        reuse_port: bool,
    ) -> Result<UdpUnderlay, UnderlayError> {
        if batch == 0 || batch > MAX_BATCH {
            return Err(UnderlayError::BadSize {
                what: "batch",
                value: batch,
            });
        }
        let share = if reuse_port {
            Share::AddrAndPort
        } else {
            Share::Addr
        };
        let (fd, local, gso) = open_socket(addr, kind, protocol, share)?;
        Ok(UdpUnderlay {
            fd,
            local,
            // SAFETY: mmsghdr, iovec and sockaddr_in are plain old data; null pointers and
            // zero lengths are valid values, overwritten before each syscall.
            msgs: (0..batch).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            iovs: (0..batch).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            send_iovs: (0..2 * batch).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            names: (0..batch).map(|_| unsafe { zeroed() }).collect(),
            groups: vec![Group::default(); batch].into_boxed_slice(),
            // SAFETY: as above (a cmsghdr of zeros is overwritten before use).
            cmsgs: (0..batch).map(|_| unsafe { zeroed() }).collect(),
            gso,
            gro: None,
            sources: Vec::new(),
            raw: None,
            raw_hdrs: Box::new([]),
            raw_iovs: Box::new([]),
        })
    }

    /// Add `n` flow sources (at most [`MAX_FLOW_SOURCES`] in all): UDP sockets on this
    /// underlay's address, each on a port the kernel picks from its ephemeral range (as the
    /// kernel's vxlan device picks its source ports from it), with the same options as this
    /// one, that only send: a socket filter drops everything that reaches them. From then on
    /// [`UdpUnderlay::send_flows`] sends each datagram from the one its flow hash picks. Only
    /// for a UDP underlay.
    pub fn add_flow_sources(&mut self, n: usize) -> Result<(), UnderlayError> {
        if n > MAX_FLOW_SOURCES - self.sources.len() {
            return Err(UnderlayError::BadSize {
                what: "flow sources",
                value: self.sources.len() + n,
            });
        }
        let addr = SocketAddrV4::new(*self.local.ip(), 0);
        for _ in 0..n {
            let (fd, local, gso) =
                open_socket(addr, libc::SOCK_DGRAM, libc::IPPROTO_UDP, Share::Nothing)?;
            drop_all_received(fd.as_raw_fd())?;
            // Every socket of a send must cut runs alike.
            self.gso &= gso;
            self.sources.push((fd, local.port()));
        }
        if self.raw.is_none() && !self.sources.is_empty() {
            // Best effort: without CAP_NET_RAW the lone datagrams go from their sources.
            self.raw = open_raw_sender().ok();
            let batch = self.batch();
            self.raw_hdrs = vec![[0u8; RAW_HDR]; batch].into_boxed_slice();
            // SAFETY: iovec is plain old data; null pointers and zero lengths are valid.
            self.raw_iovs = (0..3 * batch).map(|_| unsafe { zeroed() }).collect();
        }
        Ok(())
    }

    /// Whether datagrams that go alone are sent on a raw socket, one `sendmmsg` for all of
    /// them whatever their source ports ([`UdpUnderlay::add_flow_sources`]).
    pub fn raw_sender(&self) -> bool {
        self.raw.is_some()
    }

    /// The ports of the flow sources, in order ([`UdpUnderlay::add_flow_sources`]).
    pub fn flow_source_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.sources.iter().map(|(_, p)| *p)
    }

    /// The source port a datagram of flow hash `hash` leaves from (`None`: no hash, the bound
    /// port).
    pub fn source_port(&self, hash: Option<u32>) -> u16 {
        match self.sock_of(hash) {
            0 => self.local.port(),
            i => self.sources[usize::from(i) - 1].1,
        }
    }

    /// [`Group::sock`] for a datagram of flow hash `hash`.
    #[inline]
    fn sock_of(&self, hash: Option<u32>) -> u8 {
        match hash {
            // At most MAX_FLOW_SOURCES (64) sources: 1 + pick < 65 fits u8.
            Some(h) if !self.sources.is_empty() => {
                1 + super::flow::pick(h, self.sources.len()) as u8
            }
            _ => 0,
        }
    }

    /// The descriptor of [`Group::sock`] `sock`.
    #[inline]
    fn sock_fd(&self, sock: u8) -> RawFd {
        match (sock, &self.raw) {
            (0, _) => self.fd.as_raw_fd(),
            (RAW_SOCK, Some(raw)) => raw.as_raw_fd(),
            (i, _) => self.sources[usize::from(i) - 1].0.as_raw_fd(),
        }
    }

    /// Whether sends coalesce runs of same-size datagrams to one peer into one UDP GSO message.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Turn UDP GSO off (or back on, where the kernel has it): for comparisons and tests.
    pub fn set_gso(&mut self, on: bool) {
        self.gso = on && set_int_option(self.fd.as_raw_fd(), SOL_UDP, UDP_SEGMENT, 0, "").is_ok();
    }

    /// The bound address (with the port the kernel chose when asked for port 0).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The most datagrams one call receives or sends.
    pub fn batch(&self) -> usize {
        self.msgs.len()
    }

    /// Receives up to [`UdpUnderlay::batch`] datagrams in one `recvmmsg` straight into
    /// caller-owned buffers (the packet buffers of a batch, at their headroom), one datagram per
    /// slot in order; returns how many arrived (0 at once when nothing is waiting). Read each
    /// one's length, truncation and source with [`UdpUnderlay::received`].
    pub fn recv_slots<'a, I>(&mut self, slots: I) -> Result<usize, UnderlayError>
    where
        I: IntoIterator<Item = &'a mut [u8]>,
    {
        let mut n = 0;
        for slot in slots.into_iter().take(self.batch()) {
            self.iovs[n] = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            };
            n += 1;
        }
        // SAFETY: the first `n` iovecs each cover one distinct slot exclusively borrowed for 'a,
        // which outlives this call.
        unsafe { self.recvmmsg_prepared(n) }
    }

    /// One `recvmmsg` into the first `n` iovecs (already pointed at the receive buffers):
    /// points the message headers at them and at the address slots, and returns how many
    /// datagrams arrived (0 when nothing is waiting).
    ///
    /// # Safety
    /// The first `n` entries of `self.iovs` must describe distinct, live, writable buffers that
    /// nothing else accesses during the call.
    unsafe fn recvmmsg_prepared(&mut self, n: usize) -> Result<usize, UnderlayError> {
        if n == 0 {
            return Ok(0);
        }
        for i in 0..n {
            point_recv(
                &mut self.msgs[i],
                &mut self.names[i],
                &mut self.iovs[i],
                None,
            );
        }
        // SAFETY: the first `n` mmsghdrs point at `n` live iovecs (valid buffers, by this
        // function's contract) and at `n` live sockaddr_in in `self`.
        unsafe { recvmmsg(self.fd.as_raw_fd(), &mut self.msgs[..n]) }
    }

    /// Datagram `i` of the last [`UdpUnderlay::recv_slots`]: its length in the slot, whether
    /// it was larger than the slot (cut, to drop and count), and its source address.
    pub fn received(&self, i: usize) -> (usize, bool, SocketAddrV4) {
        let msg = &self.msgs[i];
        let cut = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let len = (msg.msg_len as usize).min(self.iovs[i].iov_len);
        (len, cut, from_sockaddr(&self.names[i]))
    }

    /// Sends caller-owned datagrams without copying them (e.g. straight from packet buffers
    /// with the VXLAN header prepended); takes at most [`UdpUnderlay::batch`] items.
    pub fn send_slices<'a, I>(&mut self, datagrams: I) -> SendReport
    where
        I: IntoIterator<Item = (SocketAddrV4, &'a [u8])>,
    {
        self.send_chunk(
            datagrams
                .into_iter()
                .map(|(dst, d)| (dst, d, &[][..], None)),
        )
    }

    /// As [`UdpUnderlay::send_slices`], each datagram in two pieces gathered by the kernel (a
    /// head and a tail, which may be empty: headers built apart and a payload left where it
    /// lies, with no copy to join them) and with the hash of its inner flow
    /// ([`super::flow::inner_flow_hash`]), or `None`: with flow sources
    /// ([`UdpUnderlay::add_flow_sources`]) a hashed datagram leaves from the source its hash
    /// picks, one without from the bound socket; without flow sources, all from the bound one.
    pub fn send_flows<'a, I>(&mut self, datagrams: I) -> SendReport
    where
        I: IntoIterator<Item = (SocketAddrV4, &'a [u8], &'a [u8], Option<u32>)>,
    {
        self.send_chunk(datagrams.into_iter())
    }

    /// One batch: fills up to `batch` mmsghdrs and calls `sendmmsg` until all are sent, the
    /// socket buffer is full, or each refused message has been skipped. With GSO, each run of
    /// consecutive datagrams to the same peer, all of one size but the last, becomes one message
    /// with a `UDP_SEGMENT` control message: the kernel builds one buffer for the run and cuts it
    /// into datagrams as late as it can (in the receiver, when that socket does UDP GRO).
    fn send_chunk<'a>(
        &mut self,
        items: impl Iterator<Item = (SocketAddrV4, &'a [u8], &'a [u8], Option<u32>)>,
    ) -> SendReport {
        let mut m = 0;
        for (k, (dst, head, tail, hash)) in items.take(self.batch()).enumerate() {
            let sock = self.sock_of(hash);
            let len = head.len() + tail.len();
            for (j, part) in [head, tail].into_iter().enumerate() {
                self.send_iovs[2 * k + j] = libc::iovec {
                    // sendmmsg only reads through this pointer.
                    iov_base: part.as_ptr().cast_mut().cast(),
                    iov_len: part.len(),
                };
            }
            let sa = to_sockaddr(dst);
            let joins = self.gso && m > 0 && {
                let g = &self.groups[m - 1];
                let prev = &self.names[m - 1];
                !g.closed
                    && len <= g.segment
                    && len > 0
                    && g.count < GSO_MAX_SEGMENTS
                    && g.bytes + len <= GSO_MAX_BYTES
                    && prev.sin_addr.s_addr == sa.sin_addr.s_addr
                    && prev.sin_port == sa.sin_port
                    && g.sock == sock
            };
            if joins {
                let g = &mut self.groups[m - 1];
                g.count += 1;
                g.bytes += len;
                g.closed = len < g.segment;
            } else {
                self.names[m] = sa;
                self.groups[m] = Group {
                    first: k,
                    count: 1,
                    segment: len,
                    bytes: len,
                    closed: false,
                    sock,
                };
                m += 1;
            }
        }
        for k in 0..m {
            let mut g = self.groups[k];
            if g.count == 1 && g.sock != 0 && self.raw.is_some() {
                // Alone, from a flow source: on the raw socket, behind headers of our own
                // with the source's port.
                let sport = self.sources[usize::from(g.sock) - 1].1;
                let dst = from_sockaddr(&self.names[k]);
                write_raw_header(&mut self.raw_hdrs[k], self.local, sport, dst, g.bytes);
                self.raw_iovs[3 * k] = libc::iovec {
                    iov_base: self.raw_hdrs[k].as_mut_ptr().cast(),
                    iov_len: RAW_HDR,
                };
                self.raw_iovs[3 * k + 1] = self.send_iovs[2 * g.first];
                self.raw_iovs[3 * k + 2] = self.send_iovs[2 * g.first + 1];
                g.sock = RAW_SOCK;
                self.groups[k].sock = RAW_SOCK;
            }
            let hdr = &mut self.msgs[k].msg_hdr;
            hdr.msg_name = ptr::from_mut(&mut self.names[k]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if g.sock == RAW_SOCK {
                hdr.msg_iov = ptr::from_mut(&mut self.raw_iovs[3 * k]);
                hdr.msg_iovlen = 3;
            } else {
                hdr.msg_iov = ptr::from_mut(&mut self.send_iovs[2 * g.first]);
                hdr.msg_iovlen = 2 * g.count;
            }
            hdr.msg_flags = 0;
            if g.count > 1 {
                let c = &mut self.cmsgs[k];
                // SAFETY: CMSG_LEN only computes a length.
                c.hdr.cmsg_len = unsafe { libc::CMSG_LEN(size_of::<u16>() as u32) } as usize;
                c.hdr.cmsg_level = SOL_UDP;
                c.hdr.cmsg_type = UDP_SEGMENT;
                // Groups only form from payloads of at most GSO_MAX_BYTES.
                c.segment = g.segment as u16;
                hdr.msg_control = ptr::from_mut(c).cast();
                hdr.msg_controllen = size_of::<GsoCmsg>();
            } else {
                hdr.msg_control = ptr::null_mut();
                hdr.msg_controllen = 0;
            }
        }
        let mut report = SendReport::default();
        let mut start = 0;
        while start < m {
            // One call per run of messages from one socket.
            let sock = self.groups[start].sock;
            let end = start
                + self.groups[start..m]
                    .iter()
                    .take_while(|g| g.sock == sock)
                    .count();
            // SAFETY: mmsghdrs `start..end` point at live iovecs, sockaddr_in and cmsgs in
            // `self`, and the iovecs at payload slices borrowed for 'a, which outlives this
            // call; the kernel only reads them. `end - start` <= MAX_BATCH fits c_uint.
            let rc = unsafe {
                libc::sendmmsg(
                    self.sock_fd(sock),
                    self.msgs[start..].as_mut_ptr(),
                    (end - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                // rc > 0 was just checked.
                for g in &self.groups[start..start + rc as usize] {
                    report.sent += g.count;
                    if g.count > 1 {
                        report.gso_messages += 1;
                        report.gso_datagrams += g.count;
                    }
                }
                start += rc as usize;
                continue;
            }
            let err = last_error();
            let rest = || self.groups[start..m].iter().map(|g| g.count).sum();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    report.unsent = rest();
                    break;
                }
                _ if rc == 0 => {
                    report.unsent = rest();
                    break;
                }
                _ => {
                    // The message at `start` was refused; skip it and send the rest.
                    report.failed += self.groups[start].count;
                    report.last_errno = err.raw_os_error();
                    start += 1;
                }
            }
        }
        report
    }
}

/// `SO_MEMINFO` (asm-generic/socket.h; not in the libc crate): the socket's memory and drop
/// counters, `SK_MEMINFO_VARS` of them.
const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_VARS: usize = 9;

impl UdpUnderlay {
    /// Datagrams the kernel dropped at this socket since it was opened: its receive buffer was
    /// full (the node did not read fast enough) or a checksum failed (`SO_MEMINFO`'s
    /// `SK_MEMINFO_DROPS`, what `ss -m` shows as `d`). One `getsockopt`: for a snapshot of the
    /// counters, never on the packet path. `None` where the kernel has no `SO_MEMINFO` (before
    /// 4.12).
    pub fn socket_drops(&self) -> Option<u64> {
        let mut info = [0u32; SK_MEMINFO_VARS];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: `info` is a live array of `len` bytes, and `len` a live socklen_t.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let drops = libc::SK_MEMINFO_DROPS as usize;
        (rc == 0 && len as usize > drops * 4).then(|| u64::from(info[drops]))
    }
}

impl AsRawFd for UdpUnderlay {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::udp::own_netns;
    use crate::wire::vxlan::{self as wire, Repr, VXLAN_PORT, Vni};
    use std::time::{Duration, Instant};

    /// Why a datagram could not be queued into a [`PacketBufs`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum PushError {
        /// Every slot is in use.
        #[error("all {capacity} slots are in use")]
        Full {
            /// Number of slots.
            capacity: usize,
        },
        /// The payload does not fit one slot.
        #[error("payload of {len} bytes exceeds the {buf_size}-byte slot")]
        TooLarge {
            /// Payload length.
            len: usize,
            /// Slot size.
            buf_size: usize,
        },
    }

    /// N fixed-size datagram slots, allocated once: filled by a receive or by the caller to send.
    #[derive(Debug)]
    pub struct PacketBufs {
        data: Box<[u8]>,
        buf_size: usize,
        lens: Box<[usize]>,
        addrs: Box<[SocketAddrV4]>,
        truncated: Box<[bool]>,
        filled: usize,
    }

    impl PacketBufs {
        /// `count` slots of `buf_size` bytes each.
        pub fn new(count: usize, buf_size: usize) -> Result<PacketBufs, UnderlayError> {
            if count == 0 || count > MAX_BATCH {
                return Err(UnderlayError::BadSize {
                    what: "slot count",
                    value: count,
                });
            }
            if buf_size == 0 {
                return Err(UnderlayError::BadSize {
                    what: "slot size",
                    value: buf_size,
                });
            }
            let total = count.checked_mul(buf_size).ok_or(UnderlayError::BadSize {
                what: "slot size",
                value: buf_size,
            })?;
            Ok(PacketBufs {
                data: vec![0; total].into_boxed_slice(),
                buf_size,
                lens: vec![0; count].into_boxed_slice(),
                addrs: vec![SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); count].into_boxed_slice(),
                truncated: vec![false; count].into_boxed_slice(),
                filled: 0,
            })
        }

        /// Number of slots.
        pub fn capacity(&self) -> usize {
            self.lens.len()
        }

        /// Size of each slot in bytes.
        pub fn buf_size(&self) -> usize {
            self.buf_size
        }

        /// Number of filled slots (truncated receives included).
        pub fn len(&self) -> usize {
            self.filled
        }

        /// Whether no slot is filled.
        pub fn is_empty(&self) -> bool {
            self.filled == 0
        }

        /// Empties every slot (the memory stays allocated).
        pub fn clear(&mut self) {
            self.filled = 0;
        }

        /// Slot `i`: its peer address (source on receive, destination to send) and its bytes;
        /// `None` past the filled slots or for a datagram that was larger than a slot.
        pub fn get(&self, i: usize) -> Option<(SocketAddrV4, &[u8])> {
            if i >= self.filled || self.truncated[i] {
                return None;
            }
            let start = i * self.buf_size;
            Some((self.addrs[i], &self.data[start..start + self.lens[i]]))
        }

        /// The whole datagrams held, in order (truncated receives skipped).
        pub fn iter(&self) -> impl Iterator<Item = (SocketAddrV4, &[u8])> + '_ {
            (0..self.filled).filter_map(|i| self.get(i))
        }

        /// Slot `i`'s bytes, writable (e.g. to rewrite a header in place before sending it back).
        pub fn get_mut(&mut self, i: usize) -> Option<&mut [u8]> {
            if i >= self.filled || self.truncated[i] {
                return None;
            }
            let start = i * self.buf_size;
            Some(&mut self.data[start..start + self.lens[i]])
        }

        /// Number of filled slots whose datagram did not fit and was cut (to drop and count).
        pub fn truncated(&self) -> usize {
            self.truncated[..self.filled].iter().filter(|&&t| t).count()
        }

        /// Queues a copy of `payload` for `dst`.
        pub fn push(&mut self, dst: SocketAddrV4, payload: &[u8]) -> Result<(), PushError> {
            self.push_with(dst, payload.len(), |slot| slot.copy_from_slice(payload))
        }

        /// Queues a `len`-byte datagram for `dst`, written in place by `fill`.
        pub fn push_with(
            &mut self,
            dst: SocketAddrV4,
            len: usize,
            fill: impl FnOnce(&mut [u8]),
        ) -> Result<(), PushError> {
            if self.filled == self.capacity() {
                return Err(PushError::Full {
                    capacity: self.capacity(),
                });
            }
            if len > self.buf_size {
                return Err(PushError::TooLarge {
                    len,
                    buf_size: self.buf_size,
                });
            }
            let i = self.filled;
            let start = i * self.buf_size;
            fill(&mut self.data[start..start + len]);
            self.lens[i] = len;
            self.addrs[i] = dst;
            self.truncated[i] = false;
            self.filled += 1;
            Ok(())
        }

        /// Pointer to slot `i` (for the iovec the kernel writes into).
        fn slot_ptr(&mut self, i: usize) -> *mut u8 {
            self.data[i * self.buf_size..].as_mut_ptr()
        }
    }

    /// What happened to one receive call.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct RecvReport {
        /// Datagrams received (filled slots, truncated ones included).
        pub received: usize,
        /// Of those, datagrams larger than a slot (cut, to drop and count).
        pub truncated: usize,
    }

    impl UdpUnderlay {
        /// Receives up to `min(batch, bufs.capacity())` datagrams in one `recvmmsg`, replacing
        /// what `bufs` held; returns at once with 0 when nothing is waiting.
        pub fn recv(&mut self, bufs: &mut PacketBufs) -> Result<RecvReport, UnderlayError> {
            bufs.clear();
            let n = self.batch().min(bufs.capacity());
            let buf_size = bufs.buf_size();
            for i in 0..n {
                self.iovs[i] = libc::iovec {
                    iov_base: bufs.slot_ptr(i).cast(),
                    iov_len: buf_size,
                };
            }
            // SAFETY: the first `n` iovecs each cover one distinct `buf_size` slot of `bufs`,
            // exclusively borrowed for this call.
            let received = unsafe { self.recvmmsg_prepared(n) }?;
            let mut truncated = 0;
            for i in 0..received {
                let msg = &self.msgs[i];
                let cut = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                truncated += usize::from(cut);
                bufs.lens[i] = (msg.msg_len as usize).min(buf_size);
                bufs.truncated[i] = cut;
                bufs.addrs[i] = from_sockaddr(&self.names[i]);
            }
            bufs.filled = received;
            Ok(RecvReport {
                received,
                truncated,
            })
        }

        /// Sends every datagram queued in `bufs` (to the address of its slot), in batches.
        pub fn send(&mut self, bufs: &PacketBufs) -> SendReport {
            let mut report = SendReport::default();
            let mut next = 0;
            while next < bufs.len() {
                let chunk = self.batch().min(bufs.len() - next);
                let items = (next..next + chunk)
                    .filter_map(|i| bufs.get(i))
                    .map(|(a, d)| (a, d, &[][..], None));
                let part = self.send_chunk(items);
                next += chunk;
                report.sent += part.sent;
                report.failed += part.failed;
                report.gso_messages += part.gso_messages;
                report.gso_datagrams += part.gso_datagrams;
                report.last_errno = part.last_errno.or(report.last_errno);
                if part.unsent > 0 {
                    report.unsent = part.unsent + (bufs.len() - next);
                    break;
                }
            }
            report
        }
    }

    const LOOPBACK_ANY_PORT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    const BATCH: usize = 32;
    const SMALL_SLOT: usize = 128;
    /// Loopback delivery is synchronous, but allow for a slow CI machine.
    const DEADLINE: Duration = Duration::from_secs(5);

    fn vxlan_datagram(vni: u32, seq: u8, len: usize) -> Vec<u8> {
        let mut datagram = vec![seq; len];
        Repr {
            vni: Vni::new(vni).unwrap(),
        }
        .emit(&mut wire::Packet::new_unchecked(&mut datagram[..]));
        datagram
    }

    /// Receives until `want` datagrams arrived or the deadline passes.
    fn recv_all(
        rx: &mut UdpUnderlay,
        bufs: &mut PacketBufs,
        want: usize,
    ) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < want && start.elapsed() < DEADLINE {
            let report = rx.recv(bufs).unwrap();
            assert_eq!(report.received, bufs.len());
            got.extend(bufs.iter().map(|(a, p)| (a, p.to_vec())));
            if report.received == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        got
    }

    /// A receiver that does not read, with a small buffer: what the kernel drops at its socket
    /// is counted (`socket_drops`).
    #[test]
    fn drops_at_a_full_socket_are_counted() {
        if !own_netns() {
            return;
        }
        let rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        assert_eq!(rx.socket_drops(), Some(0));
        let small: libc::c_int = 4096;
        // SAFETY: a live c_int of the option's size on our own socket.
        let rc = unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let tx = std::net::UdpSocket::bind(LOOPBACK_ANY_PORT).unwrap();
        for _ in 0..64 {
            tx.send_to(&[0u8; 1000], rx.local_addr()).unwrap();
        }
        let drops = rx.socket_drops().unwrap();
        assert!(drops > 0 && drops <= 64, "{drops}");
    }

    #[test]
    fn empty_socket_returns_at_once() {
        if !own_netns() {
            return;
        }
        let mut rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut bufs = PacketBufs::new(BATCH, DEFAULT_BUF_SIZE).unwrap();
        let start = Instant::now();
        assert_eq!(rx.recv(&mut bufs).unwrap(), RecvReport::default());
        assert!(bufs.is_empty());
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_ne!(rx.local_addr().port(), 0);
        assert_eq!(*rx.local_addr().ip(), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn batch_round_trip_over_loopback() {
        if !own_netns() {
            return;
        }
        let mut rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut tx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let dst = rx.local_addr();
        let sent: Vec<Vec<u8>> = (0..BATCH as u8)
            .map(|i| vxlan_datagram(4097 + u32::from(i), i, 64 + usize::from(i)))
            .collect();
        let report = tx.send_slices(sent.iter().map(|d| (dst, &d[..])));
        assert_eq!(
            report,
            SendReport {
                sent: BATCH,
                ..SendReport::default()
            }
        );
        let mut bufs = PacketBufs::new(BATCH, DEFAULT_BUF_SIZE).unwrap();
        let got = recv_all(&mut rx, &mut bufs, BATCH);
        assert_eq!(got.len(), BATCH);
        for (i, (src, payload)) in got.iter().enumerate() {
            assert_eq!(*src, tx.local_addr());
            assert_eq!(payload, &sent[i]);
            let packet = wire::Packet::new_checked(&payload[..]).unwrap();
            assert_eq!(Repr::parse(&packet).unwrap().vni.get(), 4097 + i as u32);
        }
    }

    #[test]
    fn send_from_owned_buffers_in_several_batches() {
        if !own_netns() {
            return;
        }
        const SMALL_BATCH: usize = 4;
        const COUNT: usize = 10;
        let mut rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut tx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, SMALL_BATCH).unwrap();
        let mut out = PacketBufs::new(COUNT, SMALL_SLOT).unwrap();
        for i in 0..COUNT as u8 {
            out.push(rx.local_addr(), &vxlan_datagram(1, i, 20))
                .unwrap();
        }
        assert_eq!(
            out.push(rx.local_addr(), &[0]),
            Err(PushError::Full { capacity: COUNT })
        );
        // 10 datagrams through a batch of 4: three sendmmsg calls, all sent.
        assert_eq!(tx.send(&out).sent, COUNT);
        let mut bufs = PacketBufs::new(BATCH, SMALL_SLOT).unwrap();
        let got = recv_all(&mut rx, &mut bufs, COUNT);
        let seqs: Vec<u8> = got.iter().map(|(_, p)| p[wire::HEADER_LEN]).collect();
        assert_eq!(seqs, (0..COUNT as u8).collect::<Vec<_>>());
    }

    #[test]
    fn receive_is_capped_by_the_buffer_count() {
        if !own_netns() {
            return;
        }
        const FEW: usize = 3;
        let mut rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut tx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let datagram = vxlan_datagram(1, 0, 30);
        let dst = rx.local_addr();
        assert_eq!(
            tx.send_slices((0..FEW * 2).map(|_| (dst, &datagram[..])))
                .sent,
            FEW * 2
        );
        let mut bufs = PacketBufs::new(FEW, SMALL_SLOT).unwrap();
        let got = recv_all(&mut rx, &mut bufs, FEW);
        assert_eq!(got.len(), FEW);
        // The rest is still queued for the next call.
        assert_eq!(recv_all(&mut rx, &mut bufs, FEW).len(), FEW);
    }

    #[test]
    fn oversized_datagram_is_flagged_truncated() {
        if !own_netns() {
            return;
        }
        let mut rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut tx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let big = vxlan_datagram(1, 1, SMALL_SLOT + 1);
        let fits = vxlan_datagram(1, 2, SMALL_SLOT);
        let dst = rx.local_addr();
        assert_eq!(tx.send_slices([(dst, &big[..]), (dst, &fits[..])]).sent, 2);
        let mut bufs = PacketBufs::new(BATCH, SMALL_SLOT).unwrap();
        let start = Instant::now();
        let mut seen = 0;
        let mut truncated = 0;
        let mut whole = Vec::new();
        while seen < 2 && start.elapsed() < DEADLINE {
            let report = rx.recv(&mut bufs).unwrap();
            seen += report.received;
            truncated += report.truncated;
            assert_eq!(report.truncated, bufs.truncated());
            whole.extend(bufs.iter().map(|(_, p)| p.to_vec()));
        }
        assert_eq!((seen, truncated), (2, 1));
        assert_eq!(whole, vec![fits]);
    }

    #[test]
    fn runs_of_same_size_datagrams_go_as_one_gso_message_and_arrive_whole() {
        if !own_netns() {
            return;
        }
        let mut a = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut b = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut tx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        assert!(tx.gso(), "this kernel has UDP GSO (4.18+)");
        let (da, db) = (a.local_addr(), b.local_addr());
        // To a: 8 of 100 bytes and a shorter one (one message), 3 of 100 (a second: nothing may
        // follow a short one), then 4 to b (a third), then 1 alone to a.
        let mut plan: Vec<(SocketAddrV4, Vec<u8>)> = Vec::new();
        for i in 0..8 {
            plan.push((da, vxlan_datagram(1, i, 100)));
        }
        plan.push((da, vxlan_datagram(1, 8, 60)));
        for i in 9..12 {
            plan.push((da, vxlan_datagram(1, i, 100)));
        }
        for i in 12..16 {
            plan.push((db, vxlan_datagram(2, i, 100)));
        }
        plan.push((da, vxlan_datagram(1, 16, 100)));
        for gso in [true, false] {
            tx.set_gso(gso);
            let report = tx.send_slices(plan.iter().map(|(d, p)| (*d, &p[..])));
            assert_eq!(report.sent, plan.len());
            let (msgs, dgrams) = if gso { (3, 16) } else { (0, 0) };
            assert_eq!((report.gso_messages, report.gso_datagrams), (msgs, dgrams));
            let mut bufs = PacketBufs::new(BATCH, DEFAULT_BUF_SIZE).unwrap();
            let want_a: Vec<&Vec<u8>> = plan
                .iter()
                .filter(|(d, _)| *d == da)
                .map(|x| &x.1)
                .collect();
            let want_b: Vec<&Vec<u8>> = plan
                .iter()
                .filter(|(d, _)| *d == db)
                .map(|x| &x.1)
                .collect();
            let got_a = recv_all(&mut a, &mut bufs, want_a.len());
            let got_b = recv_all(&mut b, &mut bufs, want_b.len());
            assert_eq!(got_a.iter().map(|x| &x.1).collect::<Vec<_>>(), want_a);
            assert_eq!(got_b.iter().map(|x| &x.1).collect::<Vec<_>>(), want_b);
        }
    }

    /// Everything a coalescing receiver has, datagram by datagram, until `want` or the deadline.
    fn recv_all_coalesced(rx: &mut UdpUnderlay, want: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut msgs) = (Vec::new(), 0);
        let start = Instant::now();
        while got.len() < want && start.elapsed() < DEADLINE {
            while let Some((d, _, cut)) = rx.next_datagram() {
                assert!(!cut);
                got.push(d.to_vec());
            }
            let m = rx.recv_coalesced().unwrap();
            msgs += m;
            if m == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        (got, msgs)
    }

    #[test]
    fn a_coalescing_receiver_gets_gso_runs_whole_and_splits_them_in_order() {
        if !own_netns() {
            return;
        }
        let mut rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut tx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        assert!(rx.enable_gro(), "this kernel has UDP GRO (5.0+)");
        let dst = rx.local_addr();
        // 20 of 300 bytes and a short one (one GSO message), then 5 of 120 (another).
        let mut sent: Vec<Vec<u8>> = (0..20).map(|i| vxlan_datagram(1, i, 300)).collect();
        sent.push(vxlan_datagram(1, 20, 77));
        sent.extend((21..26).map(|i| vxlan_datagram(1, i, 120)));
        let r = tx.send_slices(sent.iter().map(|d| (dst, &d[..])));
        assert_eq!((r.sent, r.gso_messages), (26, 2));
        let (got, msgs) = recv_all_coalesced(&mut rx, sent.len());
        assert_eq!(got, sent);
        assert!(msgs <= 2, "{msgs} messages for 2 GSO sends");
        // Plain datagrams still come one by one.
        tx.set_gso(false);
        let r = tx.send_slices(sent.iter().map(|d| (dst, &d[..])));
        assert_eq!((r.sent, r.gso_messages), (26, 0));
        let (got, _) = recv_all_coalesced(&mut rx, sent.len());
        assert_eq!(got, sent);
    }

    #[test]
    fn gso_runs_stop_at_the_segment_and_byte_limits() {
        if !own_netns() {
            return;
        }
        let mut rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, MAX_BATCH).unwrap();
        let mut tx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, MAX_BATCH).unwrap();
        let dst = rx.local_addr();
        // 150 small ones: 64 + 64 + 22 per message.
        let small = vxlan_datagram(1, 1, 40);
        let r = tx.send_slices((0..150).map(|_| (dst, &small[..])));
        assert_eq!((r.sent, r.gso_messages, r.gso_datagrams), (150, 3, 150));
        // 50 of 1400 bytes: 46 fit 65507 bytes, then 4.
        let big = vxlan_datagram(1, 2, 1400);
        let r = tx.send_slices((0..50).map(|_| (dst, &big[..])));
        assert_eq!((r.sent, r.gso_messages, r.gso_datagrams), (50, 2, 50));
        let mut bufs = PacketBufs::new(BATCH, DEFAULT_BUF_SIZE).unwrap();
        let got = recv_all(&mut rx, &mut bufs, 200);
        assert_eq!(got.len(), 200);
        assert!(got[..150].iter().all(|(_, p)| *p == small));
        assert!(got[150..].iter().all(|(_, p)| *p == big));
    }

    #[test]
    fn refused_datagram_is_skipped_and_counted() {
        if !own_netns() {
            return;
        }
        let mut rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut tx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let dst = rx.local_addr();
        // Above the 64 KiB UDP limit: the kernel refuses it with EMSGSIZE, never fragments it.
        let too_big = vec![0u8; usize::from(u16::MAX)];
        let ok = vxlan_datagram(1, 7, 40);
        let report = tx.send_slices([(dst, &ok[..]), (dst, &too_big[..]), (dst, &ok[..])]);
        assert_eq!(report.sent, 2);
        assert_eq!(report.failed, 1);
        assert_eq!(report.last_errno, Some(libc::EMSGSIZE));
        let mut bufs = PacketBufs::new(BATCH, DEFAULT_BUF_SIZE).unwrap();
        assert_eq!(recv_all(&mut rx, &mut bufs, 2).len(), 2);
    }

    #[test]
    fn push_with_writes_in_place_and_checks_sizes() {
        let mut bufs = PacketBufs::new(2, SMALL_SLOT).unwrap();
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), VXLAN_PORT);
        bufs.push_with(dst, 8, |slot| {
            Repr {
                vni: Vni::new(4097).unwrap(),
            }
            .emit(&mut wire::Packet::new_unchecked(slot))
        })
        .unwrap();
        assert_eq!(
            bufs.get(0),
            Some((dst, &[8, 0, 0, 0, 0, 0x10, 0x01, 0][..]))
        );
        bufs.get_mut(0).unwrap()[7] = 1;
        assert_eq!(bufs.get(0).unwrap().1[7], 1);
        assert_eq!(bufs.get(1), None);
        assert_eq!(
            bufs.push(dst, &[0; SMALL_SLOT + 1]),
            Err(PushError::TooLarge {
                len: SMALL_SLOT + 1,
                buf_size: SMALL_SLOT
            })
        );
        assert_eq!(bufs.len(), 1);
        bufs.clear();
        assert!(bufs.is_empty());
        assert_eq!(bufs.iter().count(), 0);
    }

    #[test]
    fn refuses_bad_sizes() {
        if !own_netns() {
            return;
        }
        assert!(matches!(
            UdpUnderlay::bind(LOOPBACK_ANY_PORT, 0),
            Err(UnderlayError::BadSize { what: "batch", .. })
        ));
        assert!(matches!(
            UdpUnderlay::bind(LOOPBACK_ANY_PORT, MAX_BATCH + 1),
            Err(UnderlayError::BadSize { what: "batch", .. })
        ));
        assert!(PacketBufs::new(0, SMALL_SLOT).is_err());
        assert!(PacketBufs::new(1, 0).is_err());
        assert!(PacketBufs::new(MAX_BATCH + 1, 1).is_err());
    }

    #[test]
    fn bind_to_a_foreign_address_fails_cleanly() {
        if !own_netns() {
            return;
        }
        // TEST-NET-3 is on no interface of the test's namespace.
        let foreign = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 0);
        let err = UdpUnderlay::bind(foreign, BATCH).unwrap_err();
        assert!(
            matches!(err, UnderlayError::Bind { addr, .. } if addr == foreign),
            "{err}"
        );
    }

    #[test]
    fn flow_sources_send_each_flow_from_the_port_its_hash_picks() {
        if !own_netns() {
            return;
        }
        let mut rx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let mut tx = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        assert!(tx.add_flow_sources(MAX_FLOW_SOURCES + 1).is_err());
        tx.add_flow_sources(4).unwrap();
        let ports: Vec<u16> = tx.flow_source_ports().collect();
        let bound = tx.local_addr().port();
        assert_eq!(ports.len(), 4);
        assert!(ports.iter().all(|&p| p != 0 && p != bound), "{ports:?}");
        assert_eq!(
            ports.iter().collect::<std::collections::HashSet<_>>().len(),
            4
        );
        // Four flows whose hashes pick the four sources in turn, three datagrams each, and one
        // datagram without a hash (the bound port). Each flow's datagrams are consecutive, so
        // each flow is one GSO message.
        let hash = |f: u32| Some(f << 30);
        let dst = rx.local_addr();
        let mut plan: Vec<(Option<u32>, Vec<u8>)> = Vec::new();
        for f in 0..4u32 {
            for i in 0..3u8 {
                plan.push((hash(f), vxlan_datagram(1, 10 * f as u8 + i, 100)));
            }
        }
        plan.push((None, vxlan_datagram(1, 99, 100)));
        // One more datagram of each flow, alone (the flows interleave): as root, these go on
        // the raw socket, all in one call, each with its flow's source port.
        for f in 0..4u32 {
            plan.push((hash(f), vxlan_datagram(1, 10 * f as u8 + 3, 60)));
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert_eq!(tx.raw_sender(), root);
        let report = tx.send_flows(plan.iter().map(|(h, d)| (dst, &d[..], &[][..], *h)));
        assert_eq!(report.sent, plan.len());
        assert_eq!((report.gso_messages, report.gso_datagrams), (4, 12));
        let mut bufs = PacketBufs::new(BATCH, DEFAULT_BUF_SIZE).unwrap();
        let got = recv_all(&mut rx, &mut bufs, plan.len());
        assert_eq!(got.len(), plan.len());
        for (h, d) in &plan {
            let from: Vec<u16> = got
                .iter()
                .filter(|(_, g)| g == d)
                .map(|(a, _)| a.port())
                .collect();
            assert_eq!(from, [tx.source_port(*h)], "datagram {}", d[8]);
        }
        assert_eq!(tx.source_port(None), bound);
        assert_eq!(tx.source_port(hash(2)), ports[2]);
        // Per flow, in the order sent.
        for f in 0..4u8 {
            let seqs: Vec<u8> = got
                .iter()
                .map(|(_, g)| g[8])
                .filter(|s| (10 * f..10 * f + 4).contains(s))
                .collect();
            assert_eq!(seqs, [10 * f, 10 * f + 1, 10 * f + 2, 10 * f + 3]);
        }
    }

    #[test]
    fn reuseaddr_lets_a_second_socket_share_the_port() {
        if !own_netns() {
            return;
        }
        // Without SO_REUSEADDR on both, the second bind fails with EADDRINUSE.
        let first = UdpUnderlay::bind(LOOPBACK_ANY_PORT, BATCH).unwrap();
        let addr = first.local_addr();
        let second = UdpUnderlay::bind(addr, BATCH).unwrap();
        assert_eq!(second.local_addr(), addr);
        assert_ne!(first.as_raw_fd(), second.as_raw_fd());
    }
}
