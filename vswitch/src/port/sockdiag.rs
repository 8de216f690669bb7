//! The UDP sockets of a container, as the kernel's `sock_diag` netlink interface reports them
//! (what `ss -uam` reads): each socket's local port, queued receive memory, receive buffer
//! size and drop count.
//!
//! Where it sits: outside the packet path, beside the port of a container. The receiver
//! watcher (`vxmesh::node::receivers`) samples the sockets of the containers the switch is
//! sending datagrams to and throttles the ports of sockets that overflow in their
//! [`ReceiverGate`](crate::gate::ReceiverGate). A netlink socket belongs to the namespace it was created in, so
//! [`UdpDiag::open_in`] creates it inside the container's namespace once (`setns` on the
//! calling thread and back, as the TAP is created) and every dump after that is two system
//! calls from anywhere.
//!
//! The requests are `inet_diag_req_v2`s for AF_INET and AF_INET6 / IPPROTO_UDP, every state, with the
//! `INET_DIAG_SKMEMINFO` extension; each answer is an `inet_diag_msg` followed by attributes,
//! of which the socket memory one is read ([`DiagMsg`], bounds-checked: a short or odd message
//! is an error, never a panic).
//!
//! Two kinds of request: a dump ([`UdpDiag::dump`]) walks the kernel's whole UDP hash table
//! (shared by every namespace unless `udp_child_hash_entries` gives each its own), twice (IPv4,
//! IPv6), whatever few sockets the namespace has; a lookup ([`UdpDiag::lookup`], the kernel's
//! `udp_dump_one`) finds one socket known from a dump by its address, port and cookie, as a
//! datagram's receive would, at the cost of one hash lookup.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::netns::{NetnsError, NetnsSwitch};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_SKMEMINFO` (linux/inet_diag.h): the socket's `SK_MEMINFO_*` array.
const INET_DIAG_SKMEMINFO: u16 = 7;
/// Indexes into that array (linux/sock_diag.h).
const SK_MEMINFO_RMEM_ALLOC: usize = 0;
const SK_MEMINFO_RCVBUF: usize = 1;
const SK_MEMINFO_DROPS: usize = 8;
/// netlink message types (linux/netlink.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// `struct nlmsghdr`.
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;
/// `struct inet_diag_sockid`, at offset 4 of a message and 8 of a request.
const SOCKID_LEN: usize = 48;

/// One UDP socket of a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpSock {
    /// Its address family (AF_INET or AF_INET6) and `inet_diag_sockid` (addresses, ports,
    /// interface, cookie) as the kernel reported it: what a [`UdpDiag::lookup`] asks for.
    pub id: SockId,
    /// Its local port.
    pub port: u16,
    /// Its inode (stable while it lives: tells two sockets on one port apart).
    pub inode: u32,
    /// Receive memory in use: the datagrams queued, at their buffers' true size.
    pub rmem: u32,
    /// The receive buffer's size (`SO_RCVBUF`, doubled by the kernel).
    pub rcvbuf: u32,
    /// Datagrams the kernel dropped at this socket so far (a full buffer, mostly).
    pub drops: u32,
}

/// A socket's address family and `inet_diag_sockid` as a dump reported them, kept whole
/// (48 bytes: ports, addresses, interface and cookie in the kernel's layout) for a lookup.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SockId {
    family: u8,
    raw: [u8; SOCKID_LEN],
}

impl Default for SockId {
    fn default() -> Self {
        SockId {
            family: libc::AF_INET as u8,
            raw: [0; SOCKID_LEN],
        }
    }
}

impl core::fmt::Debug for SockId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let cookie = u64::from_ne_bytes(self.raw[40..48].try_into().expect("8 bytes"));
        write!(f, "SockId(af {}, cookie {cookie:#x})", self.family)
    }
}

impl SockId {
    /// The id a lookup sends: `udp_dump_one` hands the request's source to the kernel's
    /// receive lookup as the datagram's source (the socket's remote end) and its destination
    /// as the local end ("src and dst are swapped for historical reasons"), so local and
    /// remote trade places; interface and cookie stay.
    fn swapped(&self) -> [u8; SOCKID_LEN] {
        let mut r = self.raw;
        r[0..2].copy_from_slice(&self.raw[2..4]);
        r[2..4].copy_from_slice(&self.raw[0..2]);
        r[4..20].copy_from_slice(&self.raw[20..36]);
        r[20..36].copy_from_slice(&self.raw[4..20]);
        r
    }
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The netlink socket could not be made in the namespace.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A system call failed.
    #[error("sock_diag: {0}")]
    Io(#[from] io::Error),
    /// The kernel answered with an error.
    #[error("sock_diag: the kernel refused the dump: {0}")]
    Refused(io::Error),
    /// An answer was cut short or malformed.
    #[error("sock_diag: a malformed answer ({0})")]
    Malformed(&'static str),
}

/// A `sock_diag` netlink socket of one network namespace.
#[derive(Debug)]
pub struct UdpDiag {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl UdpDiag {
    /// A socket of the calling thread's namespace.
    pub fn open() -> io::Result<UdpDiag> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A dump is answered at once; a second's timeout only bounds a kernel that never does.
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(UdpDiag {
            fd,
            seq: 0,
            buf: vec![0; 32 * 1024],
        })
    }

    /// A socket of the named namespace (under `/run/netns`), made there from the calling
    /// thread, which comes back.
    pub fn open_in(netns: &str) -> Result<UdpDiag, DiagError> {
        let ns = NetnsSwitch::enter(netns)?;
        let d = UdpDiag::open();
        ns.leave()?;
        Ok(d?)
    }

    /// Every UDP socket of the namespace that IPv4 datagrams reach, into `out` (cleared
    /// first): the AF_INET ones and the AF_INET6 ones (a dual-stack socket bound to `::` takes
    /// IPv4 too, as iperf3's and many servers' do).
    pub fn dump(&mut self, out: &mut Vec<UdpSock>) -> Result<(), DiagError> {
        out.clear();
        self.dump_family(libc::AF_INET as u8, out)?;
        self.dump_family(libc::AF_INET6 as u8, out)
    }

    /// The socket `s` (from a dump) now, or `None` if it is gone: closed, or its port now held
    /// by another socket (the cookie differs). One request and one answer; `s` must not share
    /// its port with another socket (a `SO_REUSEPORT` group), since the kernel's lookup picks
    /// one of those by hash.
    pub fn lookup(&mut self, s: &UdpSock) -> Result<Option<UdpSock>, DiagError> {
        self.seq = self.seq.wrapping_add(1);
        self.send(&lookup_request(&s.id, self.seq))?;
        loop {
            let n = self.recv()?;
            if let Some(found) = parse_one(&self.buf[..n], self.seq)? {
                return Ok(found);
            }
        }
    }

    fn dump_family(&mut self, family: u8, out: &mut Vec<UdpSock>) -> Result<(), DiagError> {
        self.seq = self.seq.wrapping_add(1);
        self.send(&request(family, self.seq))?;
        loop {
            let n = self.recv()?;
            if parse(&self.buf[..n], self.seq, out)? {
                return Ok(());
            }
        }
    }

    /// Send one request to the kernel.
    fn send(&self, req: &[u8]) -> io::Result<()> {
        // SAFETY: send(2) of a buffer we own, to the kernel (a netlink socket's default peer).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receive one datagram of answers into the buffer; its length.
    fn recv(&mut self) -> io::Result<usize> {
        // SAFETY: recv(2) into a buffer we own, of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The dump request for address family `family`, sequence number `seq`.
fn request(family: u8, seq: u32) -> [u8; NLMSG_HDR_LEN + REQ_LEN] {
    let mut r = [0u8; NLMSG_HDR_LEN + REQ_LEN];
    r[0..4].copy_from_slice(&((NLMSG_HDR_LEN + REQ_LEN) as u32).to_ne_bytes());
    r[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    r[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    r[8..12].copy_from_slice(&seq.to_ne_bytes());
    let q = &mut r[NLMSG_HDR_LEN..];
    q[0] = family;
    q[1] = libc::IPPROTO_UDP as u8;
    q[2] = 1 << (INET_DIAG_SKMEMINFO - 1);
    q[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    r
}

/// The lookup request for the socket `id` names, sequence number `seq`: a dump request
/// without `NLM_F_DUMP`, with the socket's id (local and remote swapped, [`SockId::swapped`]).
fn lookup_request(id: &SockId, seq: u32) -> [u8; NLMSG_HDR_LEN + REQ_LEN] {
    let mut r = request(id.family, seq);
    r[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    r[NLMSG_HDR_LEN + 8..NLMSG_HDR_LEN + 8 + SOCKID_LEN].copy_from_slice(&id.swapped());
    r
}

/// Read one datagram of the dump's answer: its sockets into `out`; true once the dump is done.
fn parse(mut b: &[u8], seq: u32, out: &mut Vec<UdpSock>) -> Result<bool, DiagError> {
    while let Some((kind, body)) = next_answer(&mut b, seq)? {
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => match errno_of(body)? {
                0 => {} // an acknowledgement
                e => return Err(DiagError::Refused(io::Error::from_raw_os_error(e))),
            },
            SOCK_DIAG_BY_FAMILY => out.push(DiagMsg::new_checked(body)?.sock()?),
            _ => {}
        }
    }
    Ok(false)
}

/// Read one datagram of a lookup's answer: `Some(Some(sock))` for the socket, `Some(None)` if
/// the kernel has no such socket (`ENOENT`, or `ESTALE`: the cookie names another one), `None`
/// if the datagram held only answers to earlier requests.
fn parse_one(mut b: &[u8], seq: u32) -> Result<Option<Option<UdpSock>>, DiagError> {
    while let Some((kind, body)) = next_answer(&mut b, seq)? {
        match kind {
            NLMSG_ERROR => match errno_of(body)? {
                0 => {} // an acknowledgement
                libc::ENOENT | libc::ESTALE => return Ok(Some(None)),
                e => return Err(DiagError::Refused(io::Error::from_raw_os_error(e))),
            },
            SOCK_DIAG_BY_FAMILY => return Ok(Some(Some(DiagMsg::new_checked(body)?.sock()?))),
            _ => {}
        }
    }
    Ok(None)
}

/// The next message in `b` that answers request `seq` (those answering earlier requests, which
/// timed out, are skipped): its type and body; `b` moves past it. `None` at the end.
fn next_answer<'a>(b: &mut &'a [u8], seq: u32) -> Result<Option<(u16, &'a [u8])>, DiagError> {
    while b.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(b[4..6].try_into().expect("2 bytes"));
        let mseq = u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes"));
        if len < NLMSG_HDR_LEN || len > b.len() {
            return Err(DiagError::Malformed("message length"));
        }
        let body = &b[NLMSG_HDR_LEN..len];
        *b = &b[align4(len).min(b.len())..];
        if mseq == seq {
            return Ok(Some((kind, body)));
        }
    }
    Ok(None)
}

/// The (positive) errno of an `NLMSG_ERROR` body; 0 for an acknowledgement.
fn errno_of(body: &[u8]) -> Result<i32, DiagError> {
    body.get(0..4)
        .map(|e| -i32::from_ne_bytes(e.try_into().expect("4 bytes")))
        .ok_or(DiagError::Malformed("error message"))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// An `inet_diag_msg` and its attributes (bounds checked once in [`DiagMsg::new_checked`]).
#[derive(Debug)]
pub struct DiagMsg<'a> {
    b: &'a [u8],
}

impl<'a> DiagMsg<'a> {
    /// The message, if it is long enough for the fixed part.
    pub fn new_checked(b: &'a [u8]) -> Result<DiagMsg<'a>, DiagError> {
        if b.len() < MSG_LEN {
            return Err(DiagError::Malformed("inet_diag_msg too short"));
        }
        Ok(DiagMsg { b })
    }

    /// The local port (network order on the wire).
    pub fn local_port(&self) -> u16 {
        u16::from_be_bytes([self.b[4], self.b[5]])
    }

    /// The socket's inode.
    pub fn inode(&self) -> u32 {
        u32::from_ne_bytes(self.b[68..72].try_into().expect("4 bytes"))
    }

    /// The `SK_MEMINFO_*` array, if the answer carries it.
    pub fn meminfo(&self) -> Result<Option<&'a [u8]>, DiagError> {
        let mut a = &self.b[MSG_LEN..];
        while a.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([a[0], a[1]]));
            let kind = u16::from_ne_bytes([a[2], a[3]]) & 0x3fff;
            if len < 4 || len > a.len() {
                return Err(DiagError::Malformed("attribute length"));
            }
            if kind == INET_DIAG_SKMEMINFO {
                return Ok(Some(&a[4..len]));
            }
            a = &a[align4(len).min(a.len())..];
        }
        Ok(None)
    }

    /// The address family and `inet_diag_sockid`.
    pub fn id(&self) -> SockId {
        SockId {
            family: self.b[0],
            raw: self.b[4..4 + SOCKID_LEN].try_into().expect("48 bytes"),
        }
    }

    /// The socket, with its memory figures (zero when the answer has none).
    pub fn sock(&self) -> Result<UdpSock, DiagError> {
        let mem = self.meminfo()?.unwrap_or(&[]);
        let at = |i: usize| {
            mem.get(i * 4..i * 4 + 4)
                .map_or(0, |v| u32::from_ne_bytes(v.try_into().expect("4 bytes")))
        };
        Ok(UdpSock {
            id: self.id(),
            port: self.local_port(),
            inode: self.inode(),
            rmem: at(SK_MEMINFO_RMEM_ALLOC),
            rcvbuf: at(SK_MEMINFO_RCVBUF),
            drops: at(SK_MEMINFO_DROPS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One answer as the kernel lays it out: header, inet_diag_msg, a SKMEMINFO attribute.
    fn answer(seq: u32, port: u16, inode: u32, mem: [u32; 9]) -> Vec<u8> {
        let mut m = vec![0u8; MSG_LEN];
        m[0] = libc::AF_INET as u8;
        m[4..6].copy_from_slice(&port.to_be_bytes());
        m[68..72].copy_from_slice(&inode.to_ne_bytes());
        let mut attr = Vec::new();
        attr.extend_from_slice(&(4 + 36u16).to_ne_bytes());
        attr.extend_from_slice(&INET_DIAG_SKMEMINFO.to_ne_bytes());
        for v in mem {
            attr.extend_from_slice(&v.to_ne_bytes());
        }
        // An attribute of another kind first, 5 bytes long (padded to 8).
        let mut other = vec![5, 0, 5, 0, 0xaa, 0, 0, 0];
        other[0..2].copy_from_slice(&5u16.to_ne_bytes());
        let body = [m, other, attr].concat();
        hdr(SOCK_DIAG_BY_FAMILY, seq, &body)
    }

    fn hdr(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; NLMSG_HDR_LEN];
        h[0..4].copy_from_slice(&((NLMSG_HDR_LEN + body.len()) as u32).to_ne_bytes());
        h[4..6].copy_from_slice(&kind.to_ne_bytes());
        h[8..12].copy_from_slice(&seq.to_ne_bytes());
        [h, body.to_vec()].concat()
    }

    #[test]
    fn a_dump_is_read_to_its_end_and_stale_answers_skipped() {
        let mut mem = [0u32; 9];
        mem[SK_MEMINFO_RMEM_ALLOC] = 4096;
        mem[SK_MEMINFO_RCVBUF] = 212992;
        mem[SK_MEMINFO_DROPS] = 7;
        let d = [
            answer(6, 9999, 1, mem),
            answer(7, 5201, 42, mem),
            hdr(NLMSG_DONE, 7, &[0; 4]),
        ]
        .concat();
        let mut out = Vec::new();
        assert!(parse(&d, 7, &mut out).unwrap());
        assert_eq!(out.len(), 1);
        let s = out[0];
        assert_eq!(
            (s.port, s.inode, s.rmem, s.rcvbuf, s.drops),
            (5201, 42, 4096, 212992, 7)
        );
        assert_eq!(s.id.family, libc::AF_INET as u8);
        assert_eq!(s.id.raw[0..2], 5201u16.to_be_bytes());
        // Not done without NLMSG_DONE.
        out.clear();
        assert!(!parse(&answer(7, 5201, 42, mem), 7, &mut out).unwrap());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_lookup_asks_for_the_socket_with_local_and_remote_swapped() {
        let mut raw = [0u8; SOCKID_LEN];
        raw[0..2].copy_from_slice(&5201u16.to_be_bytes()); // local port
        raw[2..4].copy_from_slice(&40000u16.to_be_bytes()); // remote port
        raw[4..8].copy_from_slice(&[10, 0, 9, 21]); // local address
        raw[20..24].copy_from_slice(&[10, 0, 9, 11]); // remote address
        raw[36..40].copy_from_slice(&7u32.to_ne_bytes()); // interface
        raw[40..48].copy_from_slice(&0xfeed_u64.to_ne_bytes()); // cookie
        let id = SockId {
            family: libc::AF_INET as u8,
            raw,
        };
        let r = lookup_request(&id, 9);
        assert_eq!(
            u16::from_ne_bytes([r[6], r[7]]),
            NLM_F_REQUEST,
            "not a dump"
        );
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 9);
        let q = &r[NLMSG_HDR_LEN..];
        assert_eq!((q[0], q[1]), (libc::AF_INET as u8, libc::IPPROTO_UDP as u8));
        let sent = &q[8..8 + SOCKID_LEN];
        assert_eq!(sent[0..2], 40000u16.to_be_bytes());
        assert_eq!(sent[2..4], 5201u16.to_be_bytes());
        assert_eq!(sent[4..8], [10, 0, 9, 11]);
        assert_eq!(sent[20..24], [10, 0, 9, 21]);
        assert_eq!(
            sent[36..48],
            raw[36..48],
            "interface and cookie as they were"
        );
    }

    #[test]
    fn a_lookup_answer_is_the_socket_or_gone() {
        let mut mem = [0u32; 9];
        mem[SK_MEMINFO_RMEM_ALLOC] = 512;
        let found = parse_one(&answer(3, 53, 9, mem), 3).unwrap();
        assert_eq!(
            found.map(|s| s.map(|s| (s.port, s.rmem))),
            Some(Some((53, 512)))
        );
        for gone in [libc::ENOENT, libc::ESTALE] {
            let e = hdr(NLMSG_ERROR, 3, &(-gone).to_ne_bytes());
            assert_eq!(parse_one(&e, 3).unwrap(), Some(None), "errno {gone}");
        }
        let e = hdr(NLMSG_ERROR, 3, &(-libc::EPERM).to_ne_bytes());
        assert!(matches!(parse_one(&e, 3), Err(DiagError::Refused(_))));
        // An answer to an earlier request: nothing yet.
        assert_eq!(parse_one(&answer(2, 53, 9, mem), 3).unwrap(), None);
        for cut in 0..answer(3, 53, 9, mem).len() {
            let _ = parse_one(&answer(3, 53, 9, mem)[..cut], 3);
        }
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let mut out = Vec::new();
        let good = answer(1, 53, 1, [0; 9]);
        for cut in 0..good.len() {
            let mut bad = good[..cut].to_vec();
            if bad.len() >= 4 {
                // Claim the whole length: the message runs past the datagram.
                bad[0..4].copy_from_slice(&(good.len() as u32).to_ne_bytes());
            }
            let _ = parse(&bad, 1, &mut out);
        }
        let mut bad_attr = good.clone();
        let a = NLMSG_HDR_LEN + MSG_LEN;
        bad_attr[a..a + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(matches!(
            parse(&bad_attr, 1, &mut out),
            Err(DiagError::Malformed(_))
        ));
        let err = hdr(NLMSG_ERROR, 1, &(-libc::EPERM).to_ne_bytes());
        assert!(matches!(
            parse(&err, 1, &mut out),
            Err(DiagError::Refused(_))
        ));
    }
}
