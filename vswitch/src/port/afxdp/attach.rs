//! Attaching the AF_XDP port to its interface: the XSKMAP, the XDP redirect program and its
//! `bpf_link`, by raw `bpf(2)` calls, and the choice of attach mode.
//!
//! Where it sits: in front of the packet path, in the kernel. The program runs on every frame
//! the interface receives and hands it to the AF_XDP socket bound to the frame's receive queue:
//!
//! ```text
//! frame on IF, rx queue q ─► XDP: bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)
//!                              ├─ xsks[q] holds a socket ─► that socket's RX ring ─► AfxdpPort
//!                              └─ slot empty ─────────────► XDP_PASS: the kernel stack, as before
//! ```
//!
//! The program is five instructions (six slots: `ld_imm64` takes two) assembled here (no libbpf, clang, ELF or BTF): load
//! `ctx->rx_queue_index`, load the map, call `bpf_redirect_map` with `XDP_PASS` as the action
//! when the slot is empty, return its result. It is attached with `BPF_LINK_CREATE` (kernel
//! 5.9+), not the netlink `IFLA_XDP` attribute, so the attachment is owned by a file descriptor:
//! closing it (dropping [`XdpLink`], or the process exiting or dying) detaches the program, and
//! nothing is left on the interface after a crash. A link also refuses to replace an XDP program
//! someone else attached (`EBUSY`) instead of silently taking over the interface.
//!
//! For a port that receives the container's TCP super-frames (`rx_super_frames`), a variant
//! ([`xsk_redirect_small_insns`], 15 instructions) first checks the frame's length: one longer
//! than the MTU allows is counted in a one-slot array map (`BPF_F_MMAPABLE`, mapped by the
//! port: [`PassedCount`]) with an atomic add and passed to the stack, where the port's packet
//! socket takes it; the rest are redirected as above.
//!
//! [`attach`] picks the mode: the one asked for, or with [`XdpMode::Auto`] driver mode and then
//! generic (skb) mode if the driver refuses.
//!
//! Every attribute block is a zeroed 128-byte `union bpf_attr` prefix filled at the offsets of
//! `include/uapi/linux/bpf.h`; the kernel zero-extends a shorter attribute.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::config::XdpMode;
use super::{AfxdpError, Ctx};

/// `BPF_MAP_CREATE`.
const BPF_MAP_CREATE: libc::c_int = 0;
/// `BPF_MAP_UPDATE_ELEM`.
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
/// `BPF_PROG_LOAD`.
const BPF_PROG_LOAD: libc::c_int = 5;
/// `BPF_LINK_CREATE`.
const BPF_LINK_CREATE: libc::c_int = 28;
/// `BPF_MAP_TYPE_XSKMAP`.
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` in `enum bpf_attach_type`.
const BPF_XDP: u32 = 37;
/// `BPF_ANY`: create or update a map element.
const BPF_ANY: u64 = 0;
/// `BPF_PSEUDO_MAP_FD`: the `ld_imm64` source register marking the immediate as a map fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `BPF_PSEUDO_MAP_VALUE`: the `ld_imm64` source register marking the immediate as a map fd
/// whose value's address (plus the second slot's offset) is loaded.
const BPF_PSEUDO_MAP_VALUE: u8 = 2;
/// `BPF_MAP_TYPE_ARRAY`.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_F_MMAPABLE`: an array map user space can `mmap`.
const BPF_F_MMAPABLE: u32 = 1 << 10;
/// `XDP_FLAGS_SKB_MODE`: generic XDP, run on the skb after the driver.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, run by the driver before an skb exists.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `XDP_PASS`: hand the frame to the kernel stack.
const XDP_PASS: i32 = 2;
/// `BPF_FUNC_redirect_map`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `offsetof(struct xdp_md, rx_queue_index)`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;
/// Bytes of `union bpf_attr` we fill (every command used here fits).
const ATTR_LEN: usize = 128;
/// Bytes of `prog_name` / `map_name` including the NUL.
const OBJ_NAME_LEN: usize = 16;
/// Name of the map, as `bpftool map` shows it.
const MAP_NAME: &str = "vxmesh_xsks";
/// Name of the program, as `bpftool prog` shows it.
const PROG_NAME: &str = "vxmesh_xsk";
/// The program's license: `bpf_redirect_map` is available to any license, GPL is the norm.
const LICENSE: &[u8] = b"GPL\0";
/// Size of the verifier log buffer, used only to explain a load failure.
const VERIFIER_LOG_LEN: usize = 64 * 1024;

// eBPF opcodes (include/uapi/linux/bpf_common.h, bpf.h).
/// `BPF_LDX | BPF_W | BPF_MEM`: `dst = *(u32 *)(src + off)`.
const OP_LDX_W: u8 = 0x61;
/// `BPF_LD | BPF_DW | BPF_IMM`: 64-bit immediate load (two instruction slots).
const OP_LD_IMM64: u8 = 0x18;
/// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
const OP_MOV64_IMM: u8 = 0xb7;
/// `BPF_JMP | BPF_CALL`: call helper `imm`.
const OP_CALL: u8 = 0x85;
/// `BPF_JMP | BPF_EXIT`: return `r0`.
const OP_EXIT: u8 = 0x95;
/// `BPF_ALU64 | BPF_MOV | BPF_X`: `dst = src`.
const OP_MOV64_REG: u8 = 0xbf;
/// `BPF_ALU64 | BPF_ADD | BPF_K`: `dst += imm`.
const OP_ADD64_IMM: u8 = 0x07;
/// `BPF_JMP | BPF_JLE | BPF_X`: `if dst <= src goto pc + off`.
const OP_JLE_REG: u8 = 0xbd;
/// `BPF_STX | BPF_ATOMIC | BPF_DW` with `imm = BPF_ADD`: `lock *(u64 *)(dst + off) += src`.
const OP_ATOMIC_DW: u8 = 0xdb;
/// `offsetof(struct xdp_md, data)`.
const XDP_MD_DATA: i16 = 0;
/// `offsetof(struct xdp_md, data_end)`.
const XDP_MD_DATA_END: i16 = 4;
/// Name of the counter map of passed super-frames.
const PASSED_MAP_NAME: &str = "vxmesh_passed";

/// A failed `bpf(2)` step.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// The command (`BPF_MAP_CREATE`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The verifier refused the program.
    #[error("BPF_PROG_LOAD: {source}; verifier log: {log}")]
    Verifier {
        /// The OS error.
        #[source]
        source: io::Error,
        /// What the verifier said.
        log: String,
    },
}

impl BpfError {
    /// The OS error behind the failure.
    pub fn os_error(&self) -> &io::Error {
        match self {
            BpfError::Sys { source, .. } | BpfError::Verifier { source, .. } => source,
        }
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`
fn xsk_redirect_insns(map_fd: RawFd) -> [Insn; 6] {
    [
        // r2 = ctx->rx_queue_index (r1 holds ctx on entry)
        insn(OP_LDX_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        // r1 = &xsks: the loader rewrites the fd into the map's address
        insn(OP_LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // r3 = the action when xsks[r2] is empty
        insn(OP_MOV64_IMM, 3, 0, 0, XDP_PASS),
        // r0 = bpf_redirect_map(r1, r2, r3)
        insn(OP_CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(OP_EXIT, 0, 0, 0, 0),
    ]
}

/// With super-frames received beside the rings: a frame longer than `max_len` (a TCP
/// super-frame the container's TSO built; generic XDP sees it whole) is counted in the
/// `passed` map's one value and passed to the kernel stack, where the port's packet socket
/// takes it with its segmentation size; every other frame goes as [`xsk_redirect_insns`].
///
/// ```text
/// if (ctx->data + max_len + 1 <= ctx->data_end) { __sync_fetch_and_add(&passed[0], 1); return XDP_PASS; }
/// return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
/// ```
fn xsk_redirect_small_insns(map_fd: RawFd, passed_fd: RawFd, max_len: u16) -> [Insn; 17] {
    [
        // r6 = ctx
        insn(OP_MOV64_REG, 6, 1, 0, 0),
        // r2 = ctx->data, r3 = ctx->data_end
        insn(OP_LDX_W, 2, 1, XDP_MD_DATA, 0),
        insn(OP_LDX_W, 3, 1, XDP_MD_DATA_END, 0),
        // r2 += max_len + 1; if r2 <= r3 (longer than max_len) goto pass
        insn(OP_ADD64_IMM, 2, 0, 0, i32::from(max_len) + 1),
        insn(OP_JLE_REG, 2, 3, 6, 0),
        // the redirect, as xsk_redirect_insns
        insn(OP_LDX_W, 2, 6, XDP_MD_RX_QUEUE_INDEX, 0),
        insn(OP_LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(OP_MOV64_IMM, 3, 0, 0, XDP_PASS),
        insn(OP_CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(OP_EXIT, 0, 0, 0, 0),
        // pass: r1 = &passed[0] (offset 0 in the second slot)
        insn(OP_LD_IMM64, 1, BPF_PSEUDO_MAP_VALUE, 0, passed_fd),
        insn(0, 0, 0, 0, 0),
        // lock *(u64 *)r1 += 1
        insn(OP_MOV64_IMM, 2, 0, 0, 1),
        insn(OP_ATOMIC_DW, 1, 2, 0, 0),
        insn(OP_MOV64_IMM, 0, 0, 0, XDP_PASS),
        insn(OP_EXIT, 0, 0, 0, 0),
    ]
}

/// A zeroed `union bpf_attr` prefix, 8-byte aligned as the kernel reads it.
#[repr(C, align(8))]
struct Attr([u8; ATTR_LEN]);

impl Attr {
    fn new() -> Attr {
        Attr([0; ATTR_LEN])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn name(&mut self, off: usize, name: &str) -> &mut Attr {
        let n = name.len().min(OBJ_NAME_LEN - 1);
        self.0[off..off + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }
}

/// Issue `cmd` with `attr`; the non-negative result.
fn sys_bpf(cmd: libc::c_int, attr: &mut Attr, op: &'static str) -> Result<libc::c_long, BpfError> {
    // SAFETY: `attr` is a live, exclusively borrowed 128-byte buffer; every pointer stored in it
    // by the callers refers to memory that outlives this call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), ATTR_LEN as u32) };
    if rc < 0 {
        return Err(BpfError::Sys {
            op,
            source: io::Error::last_os_error(),
        });
    }
    Ok(rc)
}

/// Like [`sys_bpf`], for commands that return a new file descriptor.
fn sys_bpf_fd(cmd: libc::c_int, attr: &mut Attr, op: &'static str) -> Result<OwnedFd, BpfError> {
    let fd = sys_bpf(cmd, attr, op)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// An `XSKMAP`: receive queue index -> AF_XDP socket.
#[derive(Debug)]
pub(super) struct XskMap {
    fd: OwnedFd,
    entries: u32,
}

impl XskMap {
    /// A map with one slot per receive queue.
    pub(super) fn create(entries: u32) -> Result<XskMap, BpfError> {
        let mut a = Attr::new();
        a.u32(0, BPF_MAP_TYPE_XSKMAP)
            .u32(4, size_of::<u32>() as u32) // key_size
            .u32(8, size_of::<u32>() as u32) // value_size
            .u32(12, entries) // max_entries
            .name(28, MAP_NAME); // map_name
        let fd = sys_bpf_fd(BPF_MAP_CREATE, &mut a, "BPF_MAP_CREATE")?;
        Ok(XskMap { fd, entries })
    }

    /// Number of slots.
    pub(super) fn entries(&self) -> u32 {
        self.entries
    }

    /// Point slot `queue` at the AF_XDP socket `xsk_fd`.
    pub(super) fn set(&self, queue: u32, xsk_fd: RawFd) -> Result<(), BpfError> {
        let key = queue;
        let value = xsk_fd as u32;
        let mut a = Attr::new();
        a.u32(0, self.fd.as_raw_fd() as u32)
            .u64(8, &key as *const u32 as u64)
            .u64(16, &value as *const u32 as u64)
            .u64(24, BPF_ANY);
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a, "BPF_MAP_UPDATE_ELEM").map(drop)
    }
}

/// A one-slot array map the XDP program counts passed super-frames in, mapped into this
/// process: the port reads the count with a load, no system call, and reads its packet socket
/// only when it moved.
#[derive(Debug)]
pub(super) struct PassedCount {
    fd: OwnedFd,
    value: *const u64,
}

// SAFETY: the mapping is owned by this value and only read (with volatile loads) through it.
unsafe impl Send for PassedCount {}

impl PassedCount {
    /// Create the map and map its value.
    pub(super) fn create() -> Result<PassedCount, BpfError> {
        let mut a = Attr::new();
        a.u32(0, BPF_MAP_TYPE_ARRAY)
            .u32(4, size_of::<u32>() as u32) // key_size
            .u32(8, size_of::<u64>() as u32) // value_size
            .u32(12, 1) // max_entries
            .u32(16, BPF_F_MMAPABLE) // map_flags
            .name(28, PASSED_MAP_NAME);
        let fd = sys_bpf_fd(BPF_MAP_CREATE, &mut a, "BPF_MAP_CREATE (passed count)")?;
        // SAFETY: maps one page of the map's values, shared with the kernel, read-only; the
        // address is checked before use and unmapped on drop.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                PAGE,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(BpfError::Sys {
                op: "mmap (passed count)",
                source: io::Error::last_os_error(),
            });
        }
        Ok(PassedCount {
            fd,
            value: p.cast(),
        })
    }

    /// Super-frames passed so far.
    #[inline]
    pub(super) fn get(&self) -> u64 {
        // SAFETY: `value` points at the mapped, 8-byte aligned value for as long as self lives;
        // the kernel updates it atomically, a volatile load sees each update whole.
        unsafe { core::ptr::read_volatile(self.value) }
    }
}

impl Drop for PassedCount {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the page mapped in `create`.
        unsafe { libc::munmap(self.value as *mut libc::c_void, PAGE) };
    }
}

/// The page mapped for [`PassedCount`] (an array map's values start its mapping).
const PAGE: usize = 4096;

/// A loaded XDP program: redirect to the socket of the frame's receive queue, else pass.
#[derive(Debug)]
pub(super) struct XdpProgram {
    fd: OwnedFd,
}

impl XdpProgram {
    /// Load `return bpf_redirect_map(&map, ctx->rx_queue_index, XDP_PASS)`.
    pub(super) fn xsk_redirect(map: &XskMap) -> Result<XdpProgram, BpfError> {
        Self::load_explained(&xsk_redirect_insns(map.fd.as_raw_fd()))
    }

    /// Load [`xsk_redirect_small_insns`]: frames longer than `max_len` counted in `passed` and
    /// passed to the stack, the rest redirected.
    pub(super) fn xsk_redirect_small(
        map: &XskMap,
        passed: &PassedCount,
        max_len: u16,
    ) -> Result<XdpProgram, BpfError> {
        Self::load_explained(&xsk_redirect_small_insns(
            map.fd.as_raw_fd(),
            passed.fd.as_raw_fd(),
            max_len,
        ))
    }

    fn load_explained(insns: &[Insn]) -> Result<XdpProgram, BpfError> {
        match Self::load(insns, None) {
            Ok(fd) => Ok(XdpProgram { fd }),
            Err(first) => {
                // Load again with the verifier log on, only to say why.
                let mut log = vec![0u8; VERIFIER_LOG_LEN];
                match Self::load(insns, Some(&mut log)) {
                    Ok(fd) => Ok(XdpProgram { fd }),
                    Err(_) => {
                        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                        Err(BpfError::Verifier {
                            source: first,
                            log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
                        })
                    }
                }
            }
        }
    }

    fn load(insns: &[Insn], log: Option<&mut [u8]>) -> Result<OwnedFd, io::Error> {
        let mut a = Attr::new();
        a.u32(0, BPF_PROG_TYPE_XDP)
            .u32(4, insns.len() as u32) // insn_cnt
            .u64(8, insns.as_ptr() as u64) // insns
            .u64(16, LICENSE.as_ptr() as u64) // license
            .name(48, PROG_NAME) // prog_name
            .u32(68, BPF_XDP); // expected_attach_type
        if let Some(log) = log {
            a.u32(24, 1) // log_level
                .u32(28, log.len() as u32) // log_size
                .u64(32, log.as_mut_ptr() as u64); // log_buf
        }
        sys_bpf_fd(BPF_PROG_LOAD, &mut a, "BPF_PROG_LOAD").map_err(|e| match e {
            BpfError::Sys { source, .. } | BpfError::Verifier { source, .. } => source,
        })
    }
}

/// The program attached to an interface; dropping it (or the process ending) detaches it.
#[derive(Debug)]
pub(super) struct XdpLink {
    fd: OwnedFd,
}

impl XdpLink {
    /// Attach `prog` to interface `ifindex` with `XDP_FLAGS_SKB_MODE` or `XDP_FLAGS_DRV_MODE`.
    pub(super) fn attach(
        prog: &XdpProgram,
        ifindex: u32,
        xdp_flags: u32,
    ) -> Result<XdpLink, BpfError> {
        let mut a = Attr::new();
        a.u32(0, prog.fd.as_raw_fd() as u32) // prog_fd
            .u32(4, ifindex) // target_ifindex
            .u32(8, BPF_XDP) // attach_type
            .u32(12, xdp_flags); // flags
        let fd = sys_bpf_fd(BPF_LINK_CREATE, &mut a, "BPF_LINK_CREATE")?;
        Ok(XdpLink { fd })
    }
}

impl AsRawFd for XdpLink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Attach `prog` in `mode` (Auto: driver mode, else generic); the mode it took.
pub(super) fn attach(
    cx: &Ctx<'_>,
    prog: &XdpProgram,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(XdpLink, XdpMode), AfxdpError> {
    let try_mode = |m: XdpMode| {
        let flags = match m {
            XdpMode::Drv => XDP_FLAGS_DRV_MODE,
            _ => XDP_FLAGS_SKB_MODE,
        };
        XdpLink::attach(prog, ifindex, flags)
    };
    let err = |tried: String, source: BpfError| {
        // A link never replaces a program someone else attached: say so, it is the usual cause.
        let taken = matches!(
            source.os_error().raw_os_error(),
            Some(libc::EBUSY | libc::EEXIST)
        );
        AfxdpError::Attach {
            ifname: cx.ifname.to_string(),
            tried: if taken {
                format!("{tried}; the interface already has an XDP program")
            } else {
                tried
            },
            source,
        }
    };
    match mode {
        XdpMode::Skb | XdpMode::Drv => try_mode(mode)
            .map(|l| (l, mode))
            .map_err(|e| err(format!("{mode} mode"), e)),
        XdpMode::Auto => match try_mode(XdpMode::Drv) {
            Ok(l) => Ok((l, XdpMode::Drv)),
            Err(drv) => try_mode(XdpMode::Skb)
                .map(|l| (l, XdpMode::Skb))
                .map_err(|e| err(format!("drv mode failed: {drv}; then skb mode"), e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_encodes_as_the_kernel_expects() {
        let p = xsk_redirect_insns(7);
        assert_eq!(size_of::<Insn>(), 8);
        // ldxw r2, [r1 + 16]
        assert_eq!(p[0], insn(0x61, 2, 1, 16, 0));
        assert_eq!(p[0].regs, 0x12);
        // lddw r1, map fd 7 (src = BPF_PSEUDO_MAP_FD), then the empty upper half
        assert_eq!((p[1].code, p[1].regs, p[1].imm), (0x18, 0x11, 7));
        assert_eq!(p[2], insn(0, 0, 0, 0, 0));
        assert_eq!((p[3].code, p[3].regs, p[3].imm), (0xb7, 0x03, 2));
        assert_eq!((p[4].code, p[4].imm), (0x85, 51));
        assert_eq!(p[5].code, 0x95);
    }

    #[test]
    fn attributes_land_at_their_offsets() {
        let mut a = Attr::new();
        a.u32(4, 0x0102_0304)
            .u64(8, u64::MAX)
            .name(48, "a_very_long_program_name");
        assert_eq!(&a.0[4..8], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&a.0[8..16], &[0xff; 8]);
        // names are cut to 15 bytes and keep their NUL
        assert_eq!(&a.0[48..63], b"a_very_long_pro");
        assert_eq!(a.0[63], 0);
        assert!(a.0[16..48].iter().all(|&b| b == 0));
    }

    /// Needs root (CI runs as root): the kernel accepts the map and the program.
    #[test]
    fn the_verifier_accepts_the_program() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: loading an XDP program needs root");
            return;
        }
        let map = XskMap::create(4).expect("XSKMAP");
        assert_eq!(map.entries(), 4);
        let prog = XdpProgram::xsk_redirect(&map).expect("the verifier accepts the program");
        // no interface has index 0: the link is refused, and nothing was attached anywhere
        let e = XdpLink::attach(&prog, 0, XDP_FLAGS_SKB_MODE).unwrap_err();
        assert!(e.to_string().starts_with("BPF_LINK_CREATE"), "{e}");
    }

    /// Needs root: the kernel accepts the super-frame variant, its counter map and mapping.
    #[test]
    fn the_verifier_accepts_the_super_frame_program() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: loading an XDP program needs root");
            return;
        }
        let map = XskMap::create(1).expect("XSKMAP");
        let passed = PassedCount::create().expect("an mmapable array map");
        assert_eq!(passed.get(), 0);
        XdpProgram::xsk_redirect_small(&map, &passed, 1518)
            .expect("the verifier accepts the program");
    }
}
