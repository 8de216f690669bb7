//! The connection table that survives the process: its entries live in a file-backed shared
//! mapping under `/run/vxmesh/` (tmpfs), so a node restarted after SIGTERM, SIGKILL or a crash
//! takes its connections over and established clients never notice (IPVS in the kernel
//! survives its daemon's restart the same way).
//!
//! Where it sits: off the packet path. The daemon calls [`Balancer::persist_conntrack`] once at
//! start-up, after the first plan is in and before the poll thread runs; from then on the
//! `lb-nat` stage writes its [`Conn`] entries straight into the mapping, exactly as it wrote them
//! into heap memory before: fixed-size entries, no pointers, no syscall, no lock, no flush. Only
//! the entries are in the file; the buckets that find them are rebuilt at load (with a fresh hash
//! seed), as is the free chain.
//!
//! ```text
//!  NODE.conntrack: +----------------------------+------------------------------------+
//!                  | Header (HEADER_LEN bytes)   | [Conn; capacity], 64 B each        |
//!                  | magic, version, layout hash,| zero = free; F_LIVE = in use       |
//!                  | capacity, clock epoch, boot |                                    |
//!                  | id, node identity, checksum |                                    |
//!                  +----------------------------+------------------------------------+
//! ```
//!
//! Loading is distrustful: a file that is short (torn), whose header does not check (corrupt),
//! or whose layout, boot or node differ (foreign) is discarded whole, with a message and
//! `conntrack_files_discarded`; each entry is checked on its own (known protocol, state and
//! flags, not expired, not absurdly far in the future, its service and backend still
//! configured and matching its addresses, its keys not already taken) and left out otherwise
//! (`conntrack_entries_discarded`). The survivors are inserted into a new file, built beside the
//! old one and renamed over it, so a crash during the load leaves the old file in place.
//!
//! Why no sequence number per entry: a live entry's key fields never change; an entry is made
//! live by setting [`F_LIVE`] after its fields are written (a compiler fence keeps that order,
//! and a killed process loses no store it made: the page cache has it); and every later update
//! (state, expiry, the inactive flag) is one field whose every value is valid, with the derived
//! parts (the inactive flag, the backend counts) recomputed at load. A torn entry cannot be seen.
//!
//! Expiry times are seconds of the process's own clock ([`vswitch::Time`] starts with the
//! process); the header records where that clock started on `CLOCK_MONOTONIC`, and the load
//! moves each entry onto the new process's clock.

use std::ffi::c_void;
use std::fs::OpenOptions;
use std::io;
use std::mem::{offset_of, size_of};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use vswitch::{NetId, Time};

use crate::balancer::{Balancer, secs};
use crate::conntrack::{
    Conn, ConnTable, Dir, F_ALL, F_HAIRPIN, F_INACTIVE, F_LIVE, F_SNAT, TableFullError,
};
use crate::state::{TCP_STATES, TcpState};
use crate::types::{Protocol, ServiceKey};

/// First bytes of a table file.
pub const MAGIC: [u8; 8] = *b"VXMCONNT";
/// Format version.
pub const VERSION: u32 = 1;
/// Bytes before the first entry: one page, so entries start page- and line-aligned.
pub const HEADER_LEN: usize = 4096;
/// Bytes of the node identity kept in the header (for messages; the whole one is hashed).
const IDENTITY_LEN: usize = 64;
/// Bytes of the boot id (`/proc/sys/kernel/random/boot_id`, 36 characters and a newline).
const BOOT_ID_LEN: usize = 40;
/// Where the kernel says which boot this is.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// FNV-1a's prime.
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a of `b`, continuing from `h`; usable in a constant.
const fn fnv_bytes(mut h: u64, b: &[u8]) -> u64 {
    let mut i = 0;
    while i < b.len() {
        h = (h ^ b[i] as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// FNV-1a over 64-bit words (each in little-endian byte order), usable in a constant.
const fn fnv(mut h: u64, words: &[u64]) -> u64 {
    let mut i = 0;
    while i < words.len() {
        h = fnv_bytes(h, &words[i].to_le_bytes());
        i += 1;
    }
    h
}

/// FNV-1a's offset basis.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// A hash of everything an entry's bytes mean: its size, every field's offset, the flag bits
/// and the number of TCP states. A build that changes any of them reads an older file as
/// foreign instead of misreading it.
pub const LAYOUT: u64 = fnv(
    FNV_BASIS,
    &[
        VERSION as u64,
        size_of::<Conn>() as u64,
        offset_of!(Conn, caddr) as u64,
        offset_of!(Conn, vaddr) as u64,
        offset_of!(Conn, daddr) as u64,
        offset_of!(Conn, laddr) as u64,
        offset_of!(Conn, cport) as u64,
        offset_of!(Conn, vport) as u64,
        offset_of!(Conn, dport) as u64,
        offset_of!(Conn, lport) as u64,
        offset_of!(Conn, expires) as u64,
        offset_of!(Conn, service) as u64,
        offset_of!(Conn, backend) as u64,
        offset_of!(Conn, fnet) as u64,
        offset_of!(Conn, rnet) as u64,
        offset_of!(Conn, proto) as u64,
        offset_of!(Conn, state) as u64,
        offset_of!(Conn, flags) as u64,
        offset_of!(Conn, cmac) as u64,
        offset_of!(Conn, vmac) as u64,
        F_LIVE as u64,
        F_INACTIVE as u64,
        F_SNAT as u64,
        F_HAIRPIN as u64,
        TCP_STATES as u64,
    ],
);

/// The header at the start of a table file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Header {
    magic: [u8; 8],
    version: u32,
    header_len: u32,
    layout: u64,
    capacity: u64,
    /// `CLOCK_MONOTONIC` nanoseconds at the writer's [`Time`] zero.
    epoch_ns: u64,
    identity_hash: u64,
    boot_id: [u8; BOOT_ID_LEN],
    identity: [u8; IDENTITY_LEN],
    /// FNV-1a of every byte before it.
    check: u64,
}

const _: () = assert!(size_of::<Header>() <= HEADER_LEN);
const _: () = assert!(HEADER_LEN.is_multiple_of(align_of::<Conn>()));

impl Header {
    fn new(capacity: usize, epoch_ns: u64, identity: &str, boot_id: [u8; BOOT_ID_LEN]) -> Header {
        let mut id = [0u8; IDENTITY_LEN];
        let n = identity.len().min(IDENTITY_LEN);
        id[..n].copy_from_slice(&identity.as_bytes()[..n]);
        let mut h = Header {
            magic: MAGIC,
            version: VERSION,
            header_len: HEADER_LEN as u32,
            layout: LAYOUT,
            capacity: capacity as u64,
            epoch_ns,
            identity_hash: hash_bytes(identity.as_bytes()),
            boot_id,
            identity: id,
            check: 0,
        };
        h.check = h.checksum();
        h
    }

    fn bytes(&self) -> [u8; size_of::<Header>()] {
        let mut b = [0u8; size_of::<Header>()];
        // SAFETY: Header is repr(C) plain data (arrays and integers) with no padding between
        // its fields (8-byte fields first, the byte arrays last, sized to keep `check` aligned),
        // so all its bytes are initialised; the copy is exactly its size.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self as *const Header).cast::<u8>(),
                b.as_mut_ptr(),
                size_of::<Header>(),
            );
        }
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Header> {
        if b.len() < size_of::<Header>() {
            return None;
        }
        // SAFETY: the slice holds at least size_of::<Header>() bytes, and every bit pattern is
        // a valid Header (integers and byte arrays); read_unaligned needs no alignment.
        Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<Header>()) })
    }

    fn checksum(&self) -> u64 {
        let b = self.bytes();
        hash_bytes(&b[..offset_of!(Header, check)])
    }

    fn identity(&self) -> String {
        let end = self
            .identity
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(IDENTITY_LEN);
        String::from_utf8_lossy(&self.identity[..end]).into_owned()
    }
}

/// FNV-1a of some bytes.
fn hash_bytes(b: &[u8]) -> u64 {
    fnv_bytes(FNV_BASIS, b)
}

/// This boot's id, or zeros where the kernel does not say.
fn boot_id() -> [u8; BOOT_ID_LEN] {
    let mut id = [0u8; BOOT_ID_LEN];
    if let Ok(s) = std::fs::read(BOOT_ID_PATH) {
        let n = s.len().min(BOOT_ID_LEN);
        id[..n].copy_from_slice(&s[..n]);
    }
    id
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (what `std::time::Instant`, and so [`Time`], reads).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(Time::NANOS_PER_SEC)
        .saturating_add(ts.tv_nsec as u64)
}

/// Why the table could not be put in its file (the node then keeps it in memory).
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Creating, sizing or mapping the file failed.
    #[error("{path}: {what}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        err: io::Error,
    },
}

/// A file mapped shared, read-write: stores go to the page cache (tmpfs), where they outlive
/// the process.
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Create (or truncate) `path`, mode 0600, `len` bytes of zeros, and map it.
    fn create(path: &Path, len: usize) -> Result<Mapping, PersistError> {
        let io = |what, err| PersistError::Io {
            path: path.to_path_buf(),
            what,
            err,
        };
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io("creating", e))?;
        f.set_len(len as u64).map_err(|e| io("sizing", e))?;
        // SAFETY: a fresh shared mapping of a file we just sized to `len`; the kernel picks the
        // address. MAP_POPULATE faults every page in now, so the packet path never takes a
        // page fault that allocates a tmpfs page.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io("mapping", io::Error::last_os_error()));
        }
        // SAFETY: advice on the mapping just made; a refusal (no huge pages for shmem) is
        // harmless and ignored.
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        // The descriptor may close: the mapping keeps the file.
        Ok(Mapping {
            base: NonNull::new(p.cast::<u8>()).expect("mmap returned null without MAP_FIXED"),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base and len are exactly what mmap returned and was given; nothing borrows
        // the mapping any more (its owner, the slab, is being dropped).
        unsafe { libc::munmap(self.base.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// Where a table's entries are: a heap array, or the entries of a mapped file.
pub(crate) struct Slab {
    ptr: NonNull<Conn>,
    len: usize,
    /// Keeps the mapping alive (and unmaps it last); `None`: `ptr` is a leaked `Box<[Conn]>`.
    mapping: Option<Mapping>,
}

// SAFETY: the slab owns its memory exclusively (a boxed array or a private mapping of its own
// file), like a Box<[Conn]>; moving it to another thread moves that ownership.
unsafe impl Send for Slab {}

impl Slab {
    /// Entries on the heap.
    pub(crate) fn heap(entries: Box<[Conn]>) -> Slab {
        let len = entries.len();
        let ptr = NonNull::new(Box::into_raw(entries).cast::<Conn>()).expect("Box is non-null");
        Slab {
            ptr,
            len,
            mapping: None,
        }
    }

    /// Whether the entries are in a file.
    pub(crate) fn is_mapped(&self) -> bool {
        self.mapping.is_some()
    }
}

impl std::ops::Deref for Slab {
    type Target = [Conn];
    #[inline]
    fn deref(&self) -> &[Conn] {
        // SAFETY: ptr/len describe `len` initialised, aligned entries owned by self (a boxed
        // array, or a mapping whose bytes are valid Conns: every bit pattern is).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Slab {
    #[inline]
    fn deref_mut(&mut self) -> &mut [Conn] {
        // SAFETY: as in deref, and &mut self makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        if self.mapping.is_none() {
            // SAFETY: ptr/len came from Box::into_raw of a Box<[Conn]> of this length.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    self.ptr.as_ptr(),
                    self.len,
                ))
            });
        }
    }
}

/// The entries of a previous process's file that may be taken over, or why none.
struct OldTable {
    epoch_ns: u64,
    entries: Vec<Conn>,
}

/// Read `path`: `Ok(None)` if there is none, `Err(why)` if it must be discarded.
fn read_old(
    path: &Path,
    identity: &str,
    boot: &[u8; BOOT_ID_LEN],
) -> Result<Option<OldTable>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("unreadable ({e})")),
    };
    let h = Header::from_bytes(&bytes).ok_or("shorter than its header (torn)")?;
    if h.magic != MAGIC {
        return Err("not a connection table (corrupt)".into());
    }
    if h.check != h.checksum() {
        return Err("header checksum wrong (corrupt)".into());
    }
    if h.version != VERSION || h.layout != LAYOUT || h.header_len as usize != HEADER_LEN {
        return Err(format!(
            "written by another build (version {}, layout {:#x}; this one reads {VERSION}, {LAYOUT:#x})",
            h.version, h.layout
        ));
    }
    if h.identity_hash != hash_bytes(identity.as_bytes()) {
        return Err(format!(
            "belongs to node {:?}, not {identity:?} (foreign)",
            h.identity()
        ));
    }
    if &h.boot_id != boot {
        return Err("written before the machine last booted (stale)".into());
    }
    let want = usize::try_from(h.capacity)
        .ok()
        .and_then(|c| c.checked_mul(size_of::<Conn>()))
        .and_then(|b| b.checked_add(HEADER_LEN));
    if want != Some(bytes.len()) {
        return Err(format!(
            "{} bytes where its header says {} entries (torn)",
            bytes.len(),
            h.capacity
        ));
    }
    let entries = bytes[HEADER_LEN..]
        .chunks_exact(size_of::<Conn>())
        // SAFETY: each chunk is exactly one Conn's bytes; every bit pattern is a valid Conn
        // (integers and byte arrays), and read_unaligned needs no alignment.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<Conn>()) })
        .filter(|c| c.flags & F_LIVE != 0)
        .collect();
    Ok(Some(OldTable {
        epoch_ns: h.epoch_ns,
        entries,
    }))
}

/// What [`Balancer::persist_conntrack`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Connections taken over from the previous file.
    pub restored: u64,
    /// Its entries left out.
    pub discarded: u64,
    /// Why the previous file was discarded whole, if it was.
    pub file_discarded: Option<String>,
}

/// Why one entry of an old file is left out (counted, not reported one by one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reject {
    Garbage,
    Expired,
    NoService,
    NoBackend,
    Taken,
    Full,
}

impl Balancer {
    /// Move the connection table into the file at `path` (for node `identity`), taking over
    /// the valid connections of the file a previous process of this node left there (see the
    /// module comment). Call once, before any packet; `now` is the clock the stage will be
    /// given. The counters `conntrack_restored`, `conntrack_entries_discarded` and
    /// `conntrack_files_discarded` say what happened; so does the result. On error the table
    /// stays in memory as it was.
    pub fn persist_conntrack(
        &mut self,
        path: &Path,
        identity: &str,
        now: Time,
    ) -> Result<Restored, PersistError> {
        let boot = boot_id();
        let epoch_ns = monotonic_ns().saturating_sub(now.0);
        let mut report = Restored::default();
        let old = match read_old(path, identity, &boot) {
            Ok(o) => o,
            Err(why) => {
                report.file_discarded = Some(why);
                self.counters.conntrack_files_discarded += 1;
                None
            }
        };
        let capacity = self.ct.capacity();
        let building = path.with_extension("conntrack.new");
        let map = Mapping::create(&building, HEADER_LEN + capacity * size_of::<Conn>())?;
        let header = Header::new(capacity, epoch_ns, identity, boot).bytes();
        // SAFETY: the mapping is HEADER_LEN + capacity entries long, so the header fits; the
        // entries start HEADER_LEN bytes in (page-aligned, so 64-byte aligned), zeroed by the
        // fresh file: all free entries (flags 0). Nothing else refers to the mapping yet.
        let slab = unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), map.base.as_ptr(), header.len());
            Slab {
                ptr: NonNull::new_unchecked(map.base.as_ptr().add(HEADER_LEN).cast::<Conn>()),
                len: capacity,
                mapping: Some(map),
            }
        };
        let mut table = ConnTable::with_slab(slab, self.ct.seed());
        // Connections made before (none when called at start-up, as it should be) move as they
        // are; the old file's are checked first.
        let current: Vec<Conn> = self.ct.iter().map(|(_, c)| *c).collect();
        for c in current {
            table.insert(c).map_err(|TableFullError| PersistError::Io {
                path: building.clone(),
                what: "moving the live connections",
                err: io::Error::other("table full"),
            })?;
        }
        // The file takes the table's name before the table moves into it: on an error the
        // table stays in memory as it was.
        std::fs::rename(&building, path).map_err(|err| PersistError::Io {
            path: path.to_path_buf(),
            what: "renaming the new table over the old one",
            err,
        })?;
        self.ct = table;
        if let Some(old) = old {
            // Seconds to add to an old expiry to put it on this process's clock.
            let ns = i128::from(Time::NANOS_PER_SEC);
            let shift = (i128::from(old.epoch_ns) - i128::from(epoch_ns) + ns / 2).div_euclid(ns);
            for c in old.entries {
                match self.take_over(c, shift, now) {
                    Ok(()) => report.restored += 1,
                    Err(_) => report.discarded += 1,
                }
            }
        }
        self.counters.conntrack_restored += report.restored;
        self.counters.conntrack_entries_discarded += report.discarded;
        Ok(report)
    }

    /// Whether the table is in a file ([`Balancer::persist_conntrack`] succeeded).
    pub fn conntrack_persisted(&self) -> bool {
        self.ct.is_mapped()
    }

    /// Check one entry of an old file against the configuration in force and track it.
    fn take_over(&mut self, mut c: Conn, shift: i128, now: Time) -> Result<(), Reject> {
        if c.flags & !F_ALL != 0 {
            return Err(Reject::Garbage);
        }
        let proto = Protocol::from_number(c.proto).ok_or(Reject::Garbage)?;
        let established = match proto {
            Protocol::Tcp => {
                if usize::from(c.state) >= TCP_STATES || c.state == TcpState::None as u8 {
                    return Err(Reject::Garbage);
                }
                TcpState::from_u8(c.state) == TcpState::Established
            }
            Protocol::Udp if c.state != 0 => return Err(Reject::Garbage),
            Protocol::Udp => false,
        };
        let expires = i128::from(c.expires) + shift;
        let t = i128::from(secs(now));
        if expires <= t {
            return Err(Reject::Expired);
        }
        // No connection waits longer than a timeout in force for its next packet (the old
        // process may have had longer ones, or the field may be garbage).
        let longest = i128::from(self.timeouts.longest());
        c.expires = expires.min(t + longest) as u32;
        let key = ServiceKey {
            net: NetId(c.fnet),
            proto,
            addr: Ipv4Addr::from(c.vaddr),
            port: c.vport,
        };
        let s = *self.by_key.get(&key).ok_or(Reject::NoService)?;
        let svc = &self.services[usize::from(s)];
        if svc.cfg.backend_net.0 != c.rnet {
            return Err(Reject::NoService);
        }
        let nat_ok = if c.flags & F_HAIRPIN != 0 {
            c.flags & F_SNAT != 0
                && svc.cfg.snat.is_none()
                && c.caddr == c.daddr
                && c.laddr == c.vaddr
                && c.fnet == c.rnet
                && c.lport >= crate::types::SNAT_PORT_MIN
        } else if c.flags & F_SNAT != 0 {
            // In the range this process hands out, so that its port search never meets it.
            svc.cfg
                .snat
                .is_some_and(|sn| u32::from(sn.addr) == c.laddr && c.lport >= sn.port_min)
        } else {
            svc.cfg.snat.is_none() && c.laddr == c.caddr && c.lport == c.cport
        };
        if !nat_ok {
            return Err(Reject::NoService);
        }
        let bid = svc
            .dests
            .iter()
            .copied()
            .find(|&id| {
                let b = &self.backends[usize::from(id)].cfg;
                u32::from(b.addr) == c.daddr
                    && (b.port == c.dport || (b.port == 0 && c.dport == c.vport))
            })
            .ok_or(Reject::NoBackend)?;
        if [Dir::Orig, Dir::Reply]
            .iter()
            .any(|&d| self.ct.lookup(&c.key(d)).is_some())
            || c.key(Dir::Orig) == c.key(Dir::Reply)
        {
            return Err(Reject::Taken);
        }
        c.service = s;
        c.backend = bid;
        c.flags &= F_SNAT | F_HAIRPIN;
        if !established {
            c.flags |= F_INACTIVE;
        }
        self.ct.insert(c).map_err(|TableFullError| Reject::Full)?;
        let b = &mut self.backends[usize::from(bid)];
        if established {
            b.active += 1;
        } else {
            b.inactive += 1;
        }
        self.services[usize::from(s)].conns += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::tests::*;
    use crate::sched::SchedulerKind;
    use crate::types::Verdict;
    use vswitch::wire::{ipv4, tcp};

    /// A file path of this test run, removed with its `.new` sibling on drop.
    struct TempPath(PathBuf);
    impl TempPath {
        fn new(name: &str) -> TempPath {
            TempPath(
                std::env::temp_dir()
                    .join(format!("vxmesh-lb-{}-{name}.conntrack", std::process::id())),
            )
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(self.0.with_extension("conntrack.new"));
        }
    }

    /// `n` established connections and one in SYN_RECV through a persisted balancer.
    fn with_conns(path: &Path, n: u16, now: Time) -> Balancer {
        let mut lb = lb_with(3, SchedulerKind::Rr, 64);
        let r = lb.persist_conntrack(path, "n1 198.18.0.1", now).unwrap();
        assert_eq!(r, Restored::default());
        assert!(lb.conntrack_persisted());
        for p in 0..n {
            lb.process(&mut client_pkt(1000 + p, tcp::FLAG_SYN), ETH, NET, now);
            lb.process(&mut client_pkt(1000 + p, tcp::FLAG_ACK), ETH, NET, now);
        }
        lb.process(&mut client_pkt(9999, tcp::FLAG_SYN), ETH, NET, now);
        lb
    }

    #[test]
    fn layout_and_header_fit() {
        assert_eq!(size_of::<Header>() % 8, 0);
        let h = Header::new(7, 5, "n1", [1; BOOT_ID_LEN]);
        assert_eq!(Header::from_bytes(&h.bytes()), Some(h));
        assert_eq!(h.identity(), "n1");
    }

    #[test]
    fn a_new_process_takes_every_connection_over() {
        let path = TempPath::new("takeover");
        let now = Time::from_secs(50);
        let first = with_conns(&path.0, 5, now);
        let before = first.conns(now);
        // The process dies without a word: the file is all that is left.
        std::mem::forget(first);
        // The next one starts its clock anew (its Time is 1 s at start, like the daemon's).
        let later = Time::from_secs(1);
        let mut lb = lb_with(3, SchedulerKind::Rr, 64);
        let r = lb
            .persist_conntrack(&path.0, "n1 198.18.0.1", later)
            .unwrap();
        assert_eq!((r.restored, r.discarded, r.file_discarded), (6, 0, None));
        let after = lb.conns(later);
        assert_eq!(after.len(), before.len());
        for (a, b) in after.iter().zip(&before) {
            assert_eq!(
                (a.client, a.virtual_, a.dest, a.state),
                (b.client, b.virtual_, b.dest, b.state)
            );
            // Expiry moved onto the new clock: within a second or two of what was left.
            assert!(a.expires_in.abs_diff(b.expires_in) <= 2, "{a:?} {b:?}");
        }
        let s = &lb.services()[0];
        let act: u32 = s.backends.iter().map(|b| b.active_conns).sum();
        let inact: u32 = s.backends.iter().map(|b| b.inact_conns).sum();
        assert_eq!((act, inact), (5, 1));
        // Established connections go on; their ACKs are no new SYNs.
        for p in 0..5 {
            assert!(matches!(
                lb.process(&mut client_pkt(1000 + p, tcp::FLAG_ACK), ETH, NET, later),
                Verdict::ToBackend { .. }
            ));
        }
        assert_eq!(lb.counters().conntrack_restored, 6);
        assert_eq!(lb.counters().new_conns, 0);
        // And the file is this process's now: a third one takes them over from it again.
        drop(lb);
        let mut third = lb_with(3, SchedulerKind::Rr, 64);
        let r = third
            .persist_conntrack(&path.0, "n1 198.18.0.1", later)
            .unwrap();
        assert_eq!(r.restored, 6);
    }

    #[test]
    fn entries_that_no_longer_fit_are_left_out() {
        let path = TempPath::new("leftout");
        let now = Time::from_secs(10);
        std::mem::forget(with_conns(&path.0, 6, now));
        // The next process has lost one backend (its connections go) and has a smaller table.
        let mut lb = lb_with(2, SchedulerKind::Rr, 64);
        let r = lb.persist_conntrack(&path.0, "n1 198.18.0.1", now).unwrap();
        // rr gave backends 0,1,2,0,1,2 and the SYN_RECV one to 0: two were on backend 2.
        assert_eq!((r.restored, r.discarded), (5, 2));
        assert_eq!(lb.counters().conntrack_entries_discarded, 2);
        // Expired ones are left out too: the file as if written 901 s ago.
        std::mem::forget(lb);
        let mut b = std::fs::read(&path.0).unwrap();
        let mut h = Header::from_bytes(&b).unwrap();
        h.epoch_ns -= 901 * Time::NANOS_PER_SEC;
        h.check = h.checksum();
        b[..size_of::<Header>()].copy_from_slice(&h.bytes());
        std::fs::write(&path.0, b).unwrap();
        let mut lb = lb_with(2, SchedulerKind::Rr, 64);
        let r = lb.persist_conntrack(&path.0, "n1 198.18.0.1", now).unwrap();
        assert_eq!((r.restored, r.discarded), (0, 5));
    }

    #[test]
    fn torn_corrupt_and_foreign_files_are_discarded_whole() {
        let path = TempPath::new("bad");
        let now = Time::from_secs(10);
        let good = move |p: &Path| std::mem::forget(with_conns(p, 3, now));
        type Make = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Make, &str)> = vec![
            (
                "garbage",
                Box::new(|p: &Path| std::fs::write(p, vec![0x5a; 9000]).unwrap()),
                "corrupt",
            ),
            (
                "empty",
                Box::new(|p: &Path| std::fs::write(p, b"").unwrap()),
                "torn",
            ),
            (
                "cut short",
                Box::new(move |p: &Path| {
                    good(p);
                    let f = OpenOptions::new().write(true).open(p).unwrap();
                    f.set_len((HEADER_LEN + 100) as u64).unwrap();
                }),
                "torn",
            ),
            (
                "header bit flipped",
                Box::new(move |p: &Path| {
                    good(p);
                    let mut b = std::fs::read(p).unwrap();
                    b[offset_of!(Header, capacity)] ^= 1;
                    std::fs::write(p, b).unwrap();
                }),
                "corrupt",
            ),
            (
                "another node's",
                Box::new(|p: &Path| {
                    let mut lb = lb_with(3, SchedulerKind::Rr, 64);
                    lb.persist_conntrack(p, "n2 198.18.0.2", Time::from_secs(10))
                        .unwrap();
                    std::mem::forget(lb);
                }),
                "foreign",
            ),
        ];
        for (what, make, says) in cases {
            make(&path.0);
            let mut lb = lb_with(3, SchedulerKind::Rr, 64);
            let r = lb.persist_conntrack(&path.0, "n1 198.18.0.1", now).unwrap();
            let why = r.file_discarded.unwrap_or_else(|| panic!("{what}: kept"));
            assert!(why.contains(says), "{what}: {why}");
            assert_eq!(r.restored, 0, "{what}");
            assert_eq!(lb.counters().conntrack_files_discarded, 1, "{what}");
            assert!(lb.conns(now).is_empty(), "{what}");
            // The discarded file was replaced by a good, empty one.
            drop(lb);
            let mut again = lb_with(3, SchedulerKind::Rr, 64);
            let r = again
                .persist_conntrack(&path.0, "n1 198.18.0.1", now)
                .unwrap();
            assert_eq!(r, Restored::default(), "{what}");
        }
    }

    #[test]
    fn garbage_entries_in_a_good_file_are_left_out_one_by_one() {
        let path = TempPath::new("entries");
        let now = Time::from_secs(10);
        std::mem::forget(with_conns(&path.0, 4, now));
        let mut b = std::fs::read(&path.0).unwrap();
        let e = |i: usize| HEADER_LEN + i * size_of::<Conn>();
        b[e(0) + offset_of!(Conn, state)] = 200; // unknown state
        b[e(1) + offset_of!(Conn, proto)] = 1; // ICMP
        b[e(2) + offset_of!(Conn, flags)] |= 0x80; // unknown flag
        b[e(3) + offset_of!(Conn, dport)] ^= 0x10; // no such backend port
        b[e(4) + offset_of!(Conn, expires)..e(4) + offset_of!(Conn, expires) + 4]
            .copy_from_slice(&u32::MAX.to_ne_bytes()); // far in the future: clamped
        std::fs::write(&path.0, b).unwrap();
        let mut lb = lb_with(3, SchedulerKind::Rr, 64);
        let r = lb.persist_conntrack(&path.0, "n1 198.18.0.1", now).unwrap();
        assert_eq!((r.restored, r.discarded, r.file_discarded), (1, 4, None));
        assert_eq!(lb.conns(now).len(), 1);
        assert_eq!(lb.conns(now)[0].expires_in, 900);
    }

    #[test]
    fn hairpin_and_routing_mesh_entries_come_back() {
        let path = TempPath::new("nat");
        let now = Time::from_secs(3);
        let mut lb = lb_with(1, SchedulerKind::Rr, 64);
        lb.persist_conntrack(&path.0, "n1", now).unwrap();
        let b = backend(0, 1);
        let mut f = frame(
            (b.addr, 5555),
            (VIP, 80),
            ipv4::PROTO_TCP,
            tcp::FLAG_SYN,
            b.mac,
            VMAC,
        );
        assert_eq!(lb.process(&mut f, ETH, NET, now), Verdict::Hairpin);
        let want = lb.conns(now);
        std::mem::forget(lb);
        let mut lb = lb_with(1, SchedulerKind::Rr, 64);
        let r = lb.persist_conntrack(&path.0, "n1", now).unwrap();
        assert_eq!(r.restored, 1);
        assert_eq!(lb.conns(now), want);
        let t = crate::balancer::tests::tuple_of(&f);
        let mut reply = frame(
            (b.addr, 8080),
            (VIP, t.sport),
            ipv4::PROTO_TCP,
            tcp::FLAG_SYN | tcp::FLAG_ACK,
            b.mac,
            VMAC,
        );
        assert_eq!(lb.process(&mut reply, ETH, NET, now), Verdict::Hairpin);
    }
}
