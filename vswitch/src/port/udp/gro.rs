//! Receive coalescing (UDP GRO, Linux 5.0+) for the UDP underlay's socket: one `recvmmsg`
//! into [`GRO_MESSAGES`] buffers of 64 KB, each a run of same-size datagrams from one sender,
//! which [`UdpUnderlay::next_datagram`] then hands out datagram by datagram.
//!
//! Where it sits: under [`UdpPort::rx_burst`](super::UdpPort), which copies each datagram into
//! a packet buffer of the batch; a peer's UDP GSO send thus costs the receiver one socket
//! buffer per run instead of one per datagram.

use core::mem::{size_of, zeroed};
use core::net::SocketAddrV4;
use std::os::fd::AsRawFd;

use super::socket::{
    GRO_BUF_SIZE, GRO_MESSAGES, SOL_UDP, UdpUnderlay, UnderlayError, from_sockaddr, point_recv,
    recvmmsg, set_int_option,
};

/// UDP receive coalescing (Linux 5.0): one receive may return a run of same-size datagrams
/// from one sender, with the size in a control message.
const UDP_GRO: libc::c_int = 104;

/// One `UDP_GRO` control message (`CMSG_SPACE(sizeof(int))` bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct GroCmsg {
    hdr: libc::cmsghdr,
    segment: libc::c_int,
    _pad: [u8; 4],
}

/// Coalescing receive state: [`GRO_MESSAGES`] buffers of [`GRO_BUF_SIZE`], what the last
/// receive put in them, and how far the caller has read.
pub(super) struct GroRx {
    data: Box<[u8]>,
    msgs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in]>,
    cmsgs: Box<[GroCmsg]>,
    /// Per message: length, datagram size, truncated.
    lens: Box<[(usize, usize, bool)]>,
    filled: usize,
    /// Next message, and offset in it.
    at: (usize, usize),
}

impl UdpUnderlay {
    /// Turn on UDP receive coalescing (where the kernel has it): peers' GSO sends then arrive as
    /// one buffer each instead of one socket buffer per datagram. Receive with
    /// [`UdpUnderlay::recv_coalesced`] and [`UdpUnderlay::next_datagram`] from then on.
    /// Returns whether it is on.
    pub fn enable_gro(&mut self) -> bool {
        if self.gro.is_some() {
            return true;
        }
        if set_int_option(self.fd.as_raw_fd(), SOL_UDP, UDP_GRO, 1, "UDP_GRO").is_err() {
            return false;
        }
        self.gro = Some(Box::new(GroRx {
            data: vec![0u8; GRO_MESSAGES * GRO_BUF_SIZE].into_boxed_slice(),
            // SAFETY: plain old data; zeros are valid and overwritten before each receive.
            msgs: (0..GRO_MESSAGES).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            iovs: (0..GRO_MESSAGES).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            names: (0..GRO_MESSAGES).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            cmsgs: (0..GRO_MESSAGES).map(|_| unsafe { zeroed() }).collect(),
            lens: vec![(0, 0, false); GRO_MESSAGES].into_boxed_slice(),
            filled: 0,
            at: (0, 0),
        }));
        true
    }

    /// Whether receive coalescing is on.
    pub fn gro(&self) -> bool {
        self.gro.is_some()
    }

    /// With coalescing on: one `recvmmsg` into the coalescing buffers, when everything the last
    /// one brought has been read (else nothing is done). Returns the messages received.
    pub fn recv_coalesced(&mut self) -> Result<usize, UnderlayError> {
        let Some(g) = self.gro.as_deref_mut() else {
            return Ok(0);
        };
        if g.at.0 < g.filled {
            return Ok(0);
        }
        g.filled = 0;
        g.at = (0, 0);
        let base = g.data.as_mut_ptr();
        for i in 0..GRO_MESSAGES {
            g.iovs[i] = libc::iovec {
                // SAFETY: i * GRO_BUF_SIZE is inside `data` (GRO_MESSAGES buffers).
                iov_base: unsafe { base.add(i * GRO_BUF_SIZE) }.cast(),
                iov_len: GRO_BUF_SIZE,
            };
            point_recv(
                &mut g.msgs[i],
                &mut g.names[i],
                &mut g.iovs[i],
                Some(&mut g.cmsgs[i]),
            );
        }
        // SAFETY: every mmsghdr points at a live, distinct GRO_BUF_SIZE buffer in `data`, a
        // sockaddr_in and a control buffer, all owned by `g` and not otherwise accessed during
        // the call.
        let n = unsafe { recvmmsg(self.fd.as_raw_fd(), &mut g.msgs) }?;
        for i in 0..n {
            let m = &g.msgs[i];
            let len = (m.msg_len as usize).min(GRO_BUF_SIZE);
            let cut = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let c = &g.cmsgs[i];
            // SAFETY: CMSG_LEN only computes a length.
            let want = unsafe { libc::CMSG_LEN(size_of::<libc::c_int>() as u32) } as usize;
            let seg = if m.msg_hdr.msg_controllen >= want
                && c.hdr.cmsg_level == SOL_UDP
                && c.hdr.cmsg_type == UDP_GRO
                && c.segment > 0
            {
                c.segment as usize
            } else {
                len
            };
            g.lens[i] = (len, seg.max(1), cut);
        }
        g.filled = n;
        Ok(n)
    }

    /// Whether datagrams of the last coalesced receive wait to be taken ([`Self::next_datagram`]).
    pub fn has_buffered(&self) -> bool {
        self.gro.as_deref().is_some_and(|g| g.at.0 < g.filled)
    }

    /// With coalescing on: the next datagram of the last [`UdpUnderlay::recv_coalesced`], its
    /// sender, and whether it was cut (a message larger than the buffer: drop and count it).
    pub fn next_datagram(&mut self) -> Option<(&[u8], SocketAddrV4, bool)> {
        let g = self.gro.as_deref_mut()?;
        while g.at.0 < g.filled {
            let (i, off) = g.at;
            let (len, seg, cut) = g.lens[i];
            if len == 0 && !cut {
                // An empty datagram: handed over once, for the port to count.
                g.at = (i + 1, 0);
                return Some((&[], from_sockaddr(&g.names[i]), false));
            }
            if cut || off >= len {
                g.at = (i + 1, 0);
                if cut {
                    return Some((&[], from_sockaddr(&g.names[i]), true));
                }
                continue;
            }
            let take = seg.min(len - off);
            g.at = (i, off + take);
            let start = i * GRO_BUF_SIZE + off;
            return Some((
                &g.data[start..start + take],
                from_sockaddr(&g.names[i]),
                false,
            ));
        }
        None
    }
}
