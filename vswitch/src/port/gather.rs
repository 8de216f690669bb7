//! Gathered writes of a merged TCP run: the iovecs that hand a container one super-frame made
//! of a run of segments ([`offload::gro_run`]) without copying a payload byte in userspace;
//! and the scattered read of a frame behind its virtio-net header.
//!
//! Where it sits: at both ends of the path of a container whose kernel hands over or takes
//! super-frames: the TAP port's `readv`/`writev` and the AF_XDP port's packet sockets
//! (`readv`, `sendmsg`). Both speak the same virtio-net header in front of the frame.

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

/// One [`read_frame`].
pub(crate) enum Read {
    /// A frame of this many bytes after the header.
    Frame(usize),
    /// Shorter than the header: nothing usable.
    Short,
    /// Nothing queued (`EAGAIN`, or a read of nothing).
    Empty,
    /// Another error (errno).
    Error(i32),
}

/// One `readv` from `fd`: `hdr.len()` bytes of header (a virtio-net header, or none), then the
/// frame into `area`; again when interrupted.
pub(crate) fn read_frame(fd: libc::c_int, hdr: &mut [u8], area: &mut [u8]) -> Read {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: area.as_mut_ptr().cast(),
            iov_len: area.len(),
        },
    ];
    loop {
        // SAFETY: both iovecs describe live buffers of their lengths, borrowed mutably (the
        // first may be empty).
        let rc = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
        if rc >= 0 {
            // rc >= 0 was just checked.
            let got = rc as usize;
            return match got.checked_sub(hdr.len()) {
                _ if got == 0 => Read::Empty,
                Some(len) => Read::Frame(len),
                None => Read::Short,
            };
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => return Read::Empty,
            _ => return Read::Error(err.raw_os_error().unwrap_or(0)),
        }
    }
}
