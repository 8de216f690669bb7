//! Gathered writes of a merged TCP run: the iovecs that hand a container one super-frame made
//! of a run of segments ([`offload::gro_run`]) without copying a payload byte in userspace.
//!
//! Where it sits: at the end of the path toward a container, in the transmit of the two ports
//! that take super-frames: the TAP port's `writev` and the AF_XDP port's packet socket
//! (`sendmsg`). Both speak the same virtio-net header in front of the frame.

use crate::batch::MAX_BATCH;
use crate::offload;
use crate::packet::Packet;

/// An iovec for a buffer the kernel only reads (`writev`, `sendmsg`).
#[inline]
pub(crate) fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr().cast_mut().cast(),
        iov_len: b.len(),
    }
}

/// Call `write` with the iovecs of the super-frame a run of `pkts` makes (at most
/// [`MAX_BATCH`] packets; a run found by [`offload::gro_run`]): its virtio-net header, the
/// merged headers ([`offload::gro_header`]), then each segment's payload where it lies in its
/// packet. At most `MAX_BATCH + 2` iovecs, below `IOV_MAX`.
pub(crate) fn merged_run<R>(pkts: &[Packet], write: impl FnOnce(&[libc::iovec]) -> R) -> R {
    let mut hdr = [0u8; offload::GRO_MAX_HEADER];
    let (hl, _, o) = offload::gro_header(pkts, &mut hdr);
    // to_vnet reads the headers only (up to the TCP header's end).
    let vh = offload::to_vnet(&o, &hdr[..hl]);
    let mut iov = [iovec(&[]); MAX_BATCH + 2];
    iov[0] = iovec(&vh);
    iov[1] = iovec(&hdr[..hl]);
    let n = pkts.len().min(MAX_BATCH);
    for (slot, p) in iov[2..].iter_mut().zip(&pkts[..n]) {
        *slot = iovec(offload::gro_payload(p.data(), hl));
    }
    write(&iov[..n + 2])
}
