//! The control socket's guard: who may connect, how many at once, how much a request may be, how
//! long a client may sit idle, and what `capture -w` may create.
//!
//! Where it sits: off the packet path entirely. The daemon's tokio runtime accepts control
//! connections through [`Gate`]; each admitted session reads one request line with
//! [`read_request`] and writes replies with [`send_line`]; the command then runs on the poll
//! thread between batches. The rules (SPEC.md, "Port security"):
//!
//! - The socket is created mode 0600, owned by root, whatever the umask ([`bind`]);
//!   `vxmesh run --control-group GROUP` makes it 0660 with that group.
//! - Every connection's peer credentials (`SO_PEERCRED`) are checked ([`Access::permits`]): root,
//!   the node's own user, or, with a control group, a member of it. A socket file whose mode was
//!   loosened by hand does not let anyone else in.
//! - At most [`MAX_CONNECTIONS`] sessions at once; an excess connection is told so and closed.
//!   Running out of descriptors (`EMFILE`) pauses accepting for [`ACCEPT_BACKOFF`]; it never
//!   stops the node.
//! - A request line is at most [`MAX_REQUEST_LINE`] bytes; a client that sends nothing, or reads
//!   nothing, for [`IDLE_TIMEOUT`] is disconnected.
//! - `capture -w` creates a new file only (`O_CREAT|O_EXCL|O_NOFOLLOW`), with the requesting
//!   user's file-system identity, so it can neither overwrite nor reach through a symlink, nor
//!   create a file where that user could not ([`create_capture_file`]); the daemon opens and
//!   writes it off the control runtime, so a hung file system stalls only that capture.

use std::cell::Cell;
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Most control sessions served at once; more are refused with a message, never queued.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest request line, newline included.
pub const MAX_REQUEST_LINE: usize = 1 << 20;
/// A client that sends no request, or reads no reply, for this long is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause in accepting after the process ran out of descriptors.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Mode of the socket without a control group.
const MODE_OWNER: u32 = 0o600;
/// Mode of the socket with a control group.
const MODE_GROUP: u32 = 0o660;
/// Mode of a capture file.
const MODE_CAPTURE: u32 = 0o600;

/// Who may use the control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The node's own user (root, normally).
    owner: libc::uid_t,
    /// `--control-group`: its gid.
    group: Option<libc::gid_t>,
}

/// The credentials of a control client (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id.
    pub gid: libc::gid_t,
    /// Process id, when the kernel reports one.
    pub pid: Option<i32>,
}

impl Access {
    /// Access for the node's own user, plus members of `group` (a name or a number) if given.
    pub fn new(group: Option<&str>) -> anyhow::Result<Access> {
        // SAFETY: geteuid cannot fail.
        let owner = unsafe { libc::geteuid() };
        let group = group.map(group_id).transpose()?;
        Ok(Access { owner, group })
    }

    /// Whether `peer` may use the socket: root, the node's user, or a member of the control
    /// group (primary or supplementary, read from `/proc/PID/status`).
    pub fn permits(&self, peer: &Peer) -> bool {
        if peer.uid == 0 || peer.uid == self.owner {
            return true;
        }
        let Some(g) = self.group else {
            return false;
        };
        peer.gid == g
            || peer
                .pid
                .is_some_and(|pid| supplementary_groups(pid).contains(&g))
    }
}

/// The gid of `group`: a group name from the system's database, or a number.
fn group_id(group: &str) -> anyhow::Result<libc::gid_t> {
    if let Ok(n) = group.parse::<libc::gid_t>() {
        return Ok(n);
    }
    let name = CString::new(group).with_context(|| format!("--control-group {group:?}"))?;
    // SAFETY: `struct group` is plain data (integers and pointers); all-zero is a valid value
    // that getgrnam_r overwrites.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `grp` and `out`
    // are owned locals, `buf` is a live buffer of the given length.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 || out.is_null() {
        bail!("--control-group {group:?}: no such group");
    }
    Ok(grp.gr_gid)
}

/// The supplementary groups of process `pid` (empty if it cannot be read).
fn supplementary_groups(pid: i32) -> Vec<libc::gid_t> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Create the control socket at `path`: the directory if missing, a stale socket replaced, a
/// live one refused; mode 0600 (0660 with the control group's gid) from the moment it exists.
pub fn bind(path: &Path, access: &Access) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating control directory {}", dir.display()))?;
    }
    if path.exists() {
        // Only a socket nobody listens on (ECONNREFUSED) is stale; any other answer (connected,
        // a full backlog, no permission) may be a live node's, which must keep its socket.
        match std::os::unix::net::UnixStream::connect(path) {
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
            Ok(_) => bail!(
                "control socket {} is in use: another vxmesh node is running there",
                path.display()
            ),
            Err(e) => bail!(
                "control socket {}: {e}; is another node running there? (not removing it)",
                path.display()
            ),
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale control socket {}", path.display()))?;
    }
    // The socket file takes its mode from the umask at bind(2): with a restrictive umask it is
    // never reachable by others, not even between bind and chmod. The daemon is still single-
    // threaded here (the runtime is current-thread), so the process-wide umask is ours to set.
    // SAFETY: umask cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("binding control socket {}", path.display()))?;
    let mode = match access.group {
        Some(gid) => {
            let c = CString::new(path.as_os_str().as_bytes()).context("control socket path")?;
            // SAFETY: `c` is a NUL-terminated path; uid -1 leaves the owner as it is.
            if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
                let e = std::io::Error::last_os_error();
                let _ = std::fs::remove_file(path);
                bail!(
                    "control socket {}: setting group {gid}: {e}",
                    path.display()
                );
            }
            MODE_GROUP
        }
        None => MODE_OWNER,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("control socket {}: mode {mode:o}", path.display()))?;
    Ok(listener)
}

/// What became of one accepted connection.
pub enum Admit {
    /// Serve it; the session count drops when the guard does.
    Session(UnixStream, Peer, SessionGuard),
    /// Refused, with the reason to tell the client.
    Refused(UnixStream, String),
}

/// Counts live sessions: one per admitted connection, released on drop.
pub struct SessionGuard(Rc<Cell<usize>>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The accepting side of the control socket: admission by credentials and count.
pub struct Gate {
    listener: UnixListener,
    access: Access,
    live: Rc<Cell<usize>>,
}

impl Gate {
    /// A gate in front of `listener`.
    pub fn new(listener: UnixListener, access: Access) -> Gate {
        Gate {
            listener,
            access,
            live: Rc::new(Cell::new(0)),
        }
    }

    /// The next connection, admitted or refused. Accept errors (a client that went away, no
    /// descriptors left) are waited out here and never reach the caller: nothing a client does
    /// can stop the node.
    pub async fn next(&self) -> Admit {
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        tracing::warn!(error = %e, pause_ms = ACCEPT_BACKOFF.as_millis() as u64, "control socket: out of descriptors; not accepting for a while");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            };
            let peer = match stream.peer_cred() {
                Ok(c) => Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                },
                Err(e) => return Admit::Refused(stream, format!("no peer credentials: {e}")),
            };
            if !self.access.permits(&peer) {
                return Admit::Refused(
                    stream,
                    format!(
                        "permission denied: user {} is not root, the node's user or in its control group",
                        peer.uid
                    ),
                );
            }
            if self.live.get() >= MAX_CONNECTIONS {
                return Admit::Refused(
                    stream,
                    format!("too many control connections ({MAX_CONNECTIONS}); try again"),
                );
            }
            self.live.set(self.live.get() + 1);
            return Admit::Session(stream, peer, SessionGuard(self.live.clone()));
        }
    }
}

/// Why no request was read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The client closed before sending a line.
    Closed,
    /// Nothing for [`IDLE_TIMEOUT`].
    Idle,
    /// The line is longer than [`MAX_REQUEST_LINE`].
    TooLong,
    /// A read failed.
    Io(std::io::ErrorKind),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "closed before a request"),
            ReadError::Idle => write!(f, "no request in {} s", IDLE_TIMEOUT.as_secs()),
            ReadError::TooLong => write!(f, "request line over {MAX_REQUEST_LINE} bytes"),
            ReadError::Io(k) => write!(f, "reading the request: {k}"),
        }
    }
}

/// Read one request line (without its newline), bounded in size and time.
pub async fn read_request<R: AsyncRead + Unpin>(r: R) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let mut limited = BufReader::new(r).take(MAX_REQUEST_LINE as u64);
    let n = tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut buf))
        .await
        .map_err(|_| ReadError::Idle)?
        .map_err(|e| ReadError::Io(e.kind()))?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() >= MAX_REQUEST_LINE {
            ReadError::TooLong
        } else {
            ReadError::Closed
        });
    }
    buf.pop();
    String::from_utf8(buf).map_err(|_| ReadError::Io(std::io::ErrorKind::InvalidData))
}

/// Write one reply line; a client that does not read it within [`IDLE_TIMEOUT`] is an error.
pub async fn send_line<W: AsyncWrite + Unpin>(w: &mut W, line: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(IDLE_TIMEOUT, w.write_all(line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Create `path` for a capture: a new file only (never truncating one, never through a symlink
/// in its last component), mode 0600. For a client other than root or the node's user, the file
/// is opened on a thread of its own that first takes the client's file-system identity (its uid,
/// its primary gid, no supplementary groups; checked before opening): it lands only where that
/// user could create it, owned by them. The thread ends with the open, so the identity never
/// needs restoring. Blocks until the open returns: call it from a blocking context.
pub fn create_capture_file(path: &Path, peer: &Peer) -> std::io::Result<File> {
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE_CAPTURE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    // SAFETY: geteuid cannot fail.
    if peer.uid == 0 || peer.uid == unsafe { libc::geteuid() } {
        return open(path);
    }
    let (path, peer) = (path.to_path_buf(), *peer);
    std::thread::Builder::new()
        .name("vxmesh-open".into())
        .spawn(move || {
            as_peer(&peer)?;
            open(&path)
        })?
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the capture file's opener panicked")))
}

/// Give the calling thread `peer`'s file-system identity: no supplementary groups, fsgid and
/// fsuid the peer's. These are raw system calls on purpose: the kernel keeps credentials per
/// thread, and glibc's wrappers would change every thread of the node. setfsuid/setfsgid report
/// no error (they return the previous id), so the result is read back and checked.
fn as_peer(peer: &Peer) -> std::io::Result<()> {
    // SAFETY: setgroups(0, NULL) clears this thread's supplementary groups; no memory is passed.
    if unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: plain system calls on this thread's credentials; -1 (u32::MAX) only reads.
    let ok = unsafe {
        libc::syscall(libc::SYS_setfsgid, peer.gid);
        libc::syscall(libc::SYS_setfsuid, peer.uid);
        libc::syscall(libc::SYS_setfsgid, u32::MAX) == i64::from(peer.gid)
            && libc::syscall(libc::SYS_setfsuid, u32::MAX) == i64::from(peer.uid)
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_admits_root_the_owner_and_the_group_only() {
        let a = Access {
            owner: 0,
            group: Some(1234),
        };
        let peer = |uid, gid| Peer {
            uid,
            gid,
            pid: None,
        };
        assert!(a.permits(&peer(0, 0)));
        assert!(a.permits(&peer(1000, 1234)));
        assert!(!a.permits(&peer(1000, 1000)));
        let no_group = Access {
            owner: 0,
            group: None,
        };
        assert!(!no_group.permits(&peer(1000, 1234)));
        let own = Access {
            owner: 1000,
            group: None,
        };
        assert!(own.permits(&peer(1000, 5)));
        // Supplementary groups come from /proc: this process's own are readable.
        let me = std::process::id() as i32;
        let mine = supplementary_groups(me);
        if let Some(&g) = mine.first() {
            let a = Access {
                owner: 0,
                group: Some(g),
            };
            assert!(a.permits(&Peer {
                uid: 4242,
                gid: 4242,
                pid: Some(me)
            }));
        }
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(group_id("4321").unwrap(), 4321);
        assert_eq!(group_id("root").unwrap(), 0);
        let e = group_id("no-such-group-vxmesh").unwrap_err().to_string();
        assert!(e.contains("no such group"), "{e}");
    }

    #[tokio::test]
    async fn a_request_line_is_bounded_in_size() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = tokio::spawn(async move {
            let _ = a.write_all(b"{\"cmd\":\"stats\",\"json\":false}\n").await;
            a
        });
        assert_eq!(
            read_request(b).await.unwrap(),
            "{\"cmd\":\"stats\",\"json\":false}"
        );
        drop(writer.await);

        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..(MAX_REQUEST_LINE / chunk.len() + 2) {
                if a.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        assert_eq!(read_request(b).await, Err(ReadError::TooLong));
        writer.abort();

        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert_eq!(read_request(b).await, Err(ReadError::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped_after_the_idle_timeout() {
        let (_a, b) = UnixStream::pair().unwrap();
        let t0 = tokio::time::Instant::now();
        assert_eq!(read_request(b).await, Err(ReadError::Idle));
        assert!(t0.elapsed() >= IDLE_TIMEOUT);
    }

    #[test]
    fn capture_files_are_new_files_only() {
        let dir = std::env::temp_dir().join(format!("vxctl{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        let existing = dir.join("existing");
        std::fs::write(&existing, b"keep").unwrap();
        let e = create_capture_file(&existing, &me).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
        let link = dir.join("link");
        std::os::unix::fs::symlink(dir.join("target-not-there"), &link).unwrap();
        assert!(create_capture_file(&link, &me).is_err());
        assert!(!dir.join("target-not-there").exists());
        let new = dir.join("new.pcap");
        create_capture_file(&new, &me).unwrap();
        let mode = std::fs::metadata(&new).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, MODE_CAPTURE);
        // A group member's capture is created with their identity: not in a directory only root
        // may write, and owned by them where they may.
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let nobody = Peer {
                uid: 65534,
                gid: 65534,
                pid: None,
            };
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            let e = create_capture_file(&dir.join("theirs.pcap"), &nobody).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            create_capture_file(&dir.join("theirs.pcap"), &nobody).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                std::fs::metadata(dir.join("theirs.pcap")).unwrap().uid(),
                65534
            );
            // And the thread is root again afterwards.
            create_capture_file(&dir.join("root-again.pcap"), &me).unwrap();
            assert_eq!(
                std::fs::metadata(dir.join("root-again.pcap"))
                    .unwrap()
                    .uid(),
                0
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
