//! Test support for the tests that run the real switch in network namespaces
//! (`vswitch/tests/afxdp.rs`, `tests/vxlan_interop.rs`): not in any packet path.
//!
//! - [`Lab`]: the namespaces a test created (all named with its per-run prefix) and the
//!   processes it started; dropping it stops those processes, kills whatever else still runs
//!   inside its namespaces and deletes exactly those namespaces, on failure too (a panicking
//!   test drops it while unwinding).
//! - Commands: [`run`] (must succeed), [`ip`], [`nsexec`] (in a namespace), [`has_tool`].
//! - Threads in a namespace: [`in_netns`].
//! - Traffic between containers: [`ping`] and [`tcp_exchange`] (patterned bytes both ways, every
//!   byte checked on arrival).
//! - The switch under test on its own thread: [`Worker`] (stopped and joined when dropped).
//! - Bounded waits only: [`wait_for`], and every socket and child wait is bounded by [`WAIT`].

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bound on every wait for something to happen.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long a started process gets to exit after SIGINT before it is killed.
pub const CHILD_STOP: Duration = Duration::from_secs(3);

/// A thread that runs until told to stop (the switch of a test), publishing snapshots of its
/// state (counters) as it goes; stopped and joined when dropped. Declare it before the [`Lab`]
/// in a struct holding both, so that it stops before the namespaces go.
pub struct Worker<S> {
    stop: Arc<AtomicBool>,
    snapshot: Arc<Mutex<Option<S>>>,
    handle: Option<JoinHandle<Result<S, String>>>,
}

impl<S: Clone + Default + Send + 'static> Worker<S> {
    /// Run `f(stop, snapshot)` on a new thread: `f` must return soon after `stop` turns true,
    /// with its final state; it may publish intermediate ones in `snapshot`.
    pub fn spawn(
        f: impl FnOnce(&AtomicBool, &Mutex<Option<S>>) -> Result<S, String> + Send + 'static,
    ) -> Worker<S> {
        let stop = Arc::new(AtomicBool::new(false));
        let snapshot = Arc::new(Mutex::new(None));
        let (stop2, snap2) = (stop.clone(), snapshot.clone());
        let handle = thread::spawn(move || {
            let end = f(&stop2, &snap2);
            if let Ok(s) = &end {
                *snap2.lock().unwrap() = Some(s.clone());
            }
            end
        });
        Worker {
            stop,
            snapshot,
            handle: Some(handle),
        }
    }

    /// The state published last (the default before the first).
    pub fn snapshot(&self) -> S {
        self.snapshot.lock().unwrap().clone().unwrap_or_default()
    }

    /// Stop the thread and return its final state; panics if it failed or panicked.
    pub fn stop(mut self) -> S {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("the worker thread panicked")
            .unwrap_or_else(|e| panic!("the worker thread failed: {e}"))
    }
}

impl<S> Drop for Worker<S> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A lab with the switch under test: the switch's thread, then the namespaces and processes.
/// Fields drop in order, so the switch stops before its namespaces go.
pub struct SwitchLab<S> {
    /// The switch's thread, once started.
    pub switch: Option<Worker<S>>,
    /// The namespaces and processes.
    pub ns: Lab,
}

impl<S: Clone + Default + Send + 'static> SwitchLab<S> {
    /// An empty lab (see [`Lab::new`]).
    pub fn new(prefix: impl Into<String>) -> SwitchLab<S> {
        SwitchLab {
            switch: None,
            ns: Lab::new(prefix),
        }
    }

    /// Stop the switch and return its final state.
    pub fn stop_switch(&mut self) -> S {
        self.switch.take().expect("switch running").stop()
    }

    /// The state the switch published last.
    pub fn stats(&self) -> S {
        self.switch
            .as_ref()
            .map(|w| w.snapshot())
            .unwrap_or_default()
    }
}

/// The namespaces and processes a test created, removed by name when dropped.
pub struct Lab {
    /// Every namespace's name starts with this (unique per run: include the pid).
    pub prefix: String,
    /// The namespaces created, in order.
    pub netns: Vec<String>,
    /// Processes started by the test: (what, the process).
    pub children: Vec<(String, Child)>,
}

impl Lab {
    /// An empty lab whose namespaces will be named `{prefix}{short}`.
    pub fn new(prefix: impl Into<String>) -> Lab {
        Lab {
            prefix: prefix.into(),
            netns: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The full name of the lab's namespace `short`.
    pub fn name(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Create the namespace `short` (loopback up); its full name.
    pub fn add_netns(&mut self, short: &str) -> String {
        let ns = self.name(short);
        run(Command::new("ip").args(["netns", "add", &ns]));
        self.netns.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Keep `child` (named `what`) to be stopped when the lab drops.
    pub fn adopt(&mut self, what: &str, child: Child) -> &mut Child {
        self.children.push((what.to_string(), child));
        &mut self.children.last_mut().expect("just pushed").1
    }

    /// The process adopted as `what`.
    pub fn child(&mut self, what: &str) -> Option<&mut Child> {
        self.children
            .iter_mut()
            .find(|(w, _)| w == what)
            .map(|(_, c)| c)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            stop_child(child);
        }
        let me = std::process::id();
        for ns in self.netns.iter().rev() {
            // Anything still running inside a namespace this test created was started by it.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<libc::pid_t>()
                        && pid as u32 != me
                    {
                        // SAFETY: kill(2) on a pid that lives in one of this test's namespaces.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// SIGINT, up to [`CHILD_STOP`] to exit, then SIGKILL.
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child's pid, which try_wait just showed has not been reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let start = Instant::now();
    while start.elapsed() < CHILD_STOP {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Run `cmd`; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS`, which must succeed; its standard output.
pub fn ip(args: &[&str]) -> String {
    String::from_utf8_lossy(&run(Command::new("ip").args(args)).stdout).into_owned()
}

/// Run `args` inside `ns`; its output, successful or not.
pub fn nsexec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {args:?} in {ns}: {e}"))
}

/// Whether `name` is on the PATH.
pub fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run `f` on a new thread that has moved into `ns` (and stays there until it ends).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<Result<T, String>> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        enter_netns(&path)?;
        Ok(f())
    })
}

/// Move the calling thread into a network namespace of its own, new, with only `lo`, up: for a
/// unit test whose sockets (on 127.0.0.1) must stay out of the host's namespace (SPEC.md, test
/// safety). Threads it starts afterwards are in it too; the namespace goes with the last of
/// them. Needs `CAP_SYS_ADMIN`: the error says so otherwise, and the caller skips.
pub fn own_netns() -> Result<(), String> {
    // SAFETY: unshare with CLONE_NEWNET changes only the calling thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "a network namespace of its own (unshare, needs root): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("a socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain old data; all-zero is valid, and the name fits with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`; SIOCSIFFLAGS reads
    // them; `fd` is ours.
    let up = unsafe {
        libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) == 0
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if !up {
        return Err(format!("lo up in the new namespace: {err}"));
    }
    Ok(())
}

/// Move the calling thread into the namespace at `path` (`/run/netns/NAME`).
pub fn enter_netns(path: &str) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns on a descriptor we own; it changes only the calling thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Wait until `cond` holds, at most [`WAIT`]; panics naming `what` after that.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `count` pings from namespace `from` to `to` (plus `extra` options), 0.2 s apart, each
/// waited for at most 2 s, 10 s in all; panics unless every one is answered. ping's output.
pub fn ping(from: &str, to: Ipv4Addr, count: u32, extra: &[&str]) -> String {
    let n = count.to_string();
    let to = to.to_string();
    let mut args = vec!["ping", "-n", "-c", &n, "-i", "0.2", "-W", "2", "-w", "10"];
    args.extend_from_slice(extra);
    args.push(&to);
    let out = nsexec(from, &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains(&format!("{count} received")),
        "ping {to} from {from} {extra:?} failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The byte at offset `i` of the stream sent by `side` (different each way).
fn pattern(side: u8, i: usize) -> u8 {
    (i % 251) as u8 ^ side
}

/// Read exactly `n` bytes from `s`, checking each against `pattern(side, _)`.
fn read_checked(s: &mut TcpStream, n: usize, side: u8) -> Result<(), String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < n {
        let want = buf.len().min(n - got);
        let k = s
            .read(&mut buf[..want])
            .map_err(|e| format!("read after {got} bytes: {e}"))?;
        if k == 0 {
            return Err(format!("connection closed after {got} of {n} bytes"));
        }
        if let Some(bad) = (0..k).find(|&j| buf[j] != pattern(side, got + j)) {
            return Err(format!("byte {} differs", got + bad));
        }
        got += k;
    }
    Ok(())
}

fn write_pattern(s: &mut TcpStream, n: usize, side: u8) -> Result<(), String> {
    let payload: Vec<u8> = (0..n).map(|i| pattern(side, i)).collect();
    s.write_all(&payload).map_err(|e| format!("write: {e}"))
}

/// `bytes` from a client in `client_ns` to a server in `server_ns` on `server` (address and
/// port), then as many back, every byte checked on arrival; panics on any failure. Both sides
/// are bounded in time by [`WAIT`].
pub fn tcp_exchange(server_ns: &str, server: SocketAddrV4, client_ns: &str, bytes: usize) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let srv = in_netns(server_ns, move || -> Result<(), String> {
        let l = TcpListener::bind(server).map_err(|e| format!("bind: {e}"))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        ready_tx.send(()).unwrap();
        let start = Instant::now();
        let (mut s, _) = loop {
            match l.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > WAIT {
                        return Err("no connection".into());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        read_checked(&mut s, bytes, 1).map_err(|e| format!("server: {e}"))?;
        write_pattern(&mut s, bytes, 2).map_err(|e| format!("server: {e}"))
    });
    ready_rx.recv_timeout(WAIT).expect("server listening");
    let cli = in_netns(client_ns, move || -> Result<(), String> {
        let mut s = TcpStream::connect_timeout(&server.into(), WAIT)
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        write_pattern(&mut s, bytes, 1).map_err(|e| format!("client: {e}"))?;
        read_checked(&mut s, bytes, 2).map_err(|e| format!("client: {e}"))
    });
    let c = cli.join().unwrap().unwrap();
    let s = srv.join().unwrap().unwrap();
    c.expect("client side of the TCP exchange");
    s.expect("server side of the TCP exchange");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_directions_carry_different_bytes() {
        assert!((0..1000).any(|i| pattern(1, i) != pattern(2, i)));
        assert!((0..1000).all(|i| pattern(1, i) != pattern(2, i)));
    }

    #[test]
    fn a_worker_publishes_and_stops() {
        let w = Worker::spawn(|stop, snap| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                *snap.lock().unwrap() = Some(n);
                thread::sleep(Duration::from_millis(1));
            }
            Ok(n + 1000)
        });
        wait_for("a snapshot", || w.snapshot() > 0);
        assert!(w.stop() > 1000);
    }

    #[test]
    fn a_failing_command_names_itself() {
        let r = std::panic::catch_unwind(|| run(Command::new("sh").args(["-c", "exit 3"])));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains("exit 3"), "{msg}");
    }
}
