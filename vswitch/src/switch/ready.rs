//! The readiness gate: one `epoll_wait` per round instead of an empty receive call on every
//! idle socket port.
//!
//! Where it sits: at the start of [`Switch::poll`](super::Switch::poll), before the ports'
//! receives. A TAP's receive is a `readv`, the UDP underlay's and the ESP ports' a `recvmmsg`:
//! on a node where they are idle, every round paid one system call each just to learn there
//! was nothing (four on a node with a TAP container and both ESP transports). Ports that say
//! so ([`Port::rx_wants_readiness`](crate::Port::rx_wants_readiness): an empty receive costs
//! a system call and the port holds nothing back) are registered in an epoll set; in a round
//! where at least two of them are cold (nothing received last round), one `epoll_wait` with a
//! zero timeout says which are readable, and the others are skipped. A port that received in
//! the last round is called directly (more is likely waiting), so a busy underlay pays no
//! extra call, and with fewer than two cold ports there is no check at all (it would cost what
//! it saves). Ports that receive without a system call (AF_XDP rings, in-memory ports) are
//! always called.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most ready events taken per check; more ready ports wait for the next round's check or
/// are hot by then.
const EVENTS: usize = 64;

/// The epoll set of a switch's socket ports and what the last check found.
pub(super) struct Gate {
    ep: Option<OwnedFd>,
    /// The ports' generation the set was built for.
    generation: u64,
    /// Per port: registered in the set.
    registered: Vec<bool>,
    /// Per port: readable at the last check.
    ready: Vec<bool>,
    /// Per port: received frames in the last round.
    hot: Vec<bool>,
    /// Per port: wanted readiness at this round's check (asked once a round).
    wants: Vec<bool>,
    events: Box<[libc::epoll_event]>,
    /// Rounds that checked, and receive calls skipped (for `stats`).
    pub(super) checks: u64,
    pub(super) skipped: u64,
}

impl Gate {
    pub(super) fn new() -> Gate {
        Gate {
            ep: None,
            generation: u64::MAX,
            registered: Vec::new(),
            ready: Vec::new(),
            hot: Vec::new(),
            wants: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS].into_boxed_slice(),
            checks: 0,
            skipped: 0,
        }
    }

    /// Rebuild the set for the ports' descriptors (`fds[i]`: port `i`'s, if it wants
    /// readiness) when the ports changed.
    pub(super) fn sync(&mut self, generation: u64, fds: impl Iterator<Item = Option<RawFd>>) {
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        self.registered.clear();
        self.ep = None;
        let fds: Vec<Option<RawFd>> = fds.collect();
        self.ready = vec![false; fds.len()];
        self.hot = vec![false; fds.len()];
        self.wants = vec![false; fds.len()];
        self.registered = vec![false; fds.len()];
        if fds.iter().flatten().count() < 2 {
            return; // one socket port or none: nothing to gain
        }
        // SAFETY: plain syscall; the result is checked before use.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return; // no gate: every port is called, as before
        }
        // SAFETY: `ep` is a fresh descriptor nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        for (i, fd) in fds.iter().enumerate() {
            let Some(fd) = *fd else { continue };
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: `ep` and `fd` are open descriptors; `ev` is a live epoll_event.
            if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } == 0 {
                self.registered[i] = true;
            }
        }
        self.ep = Some(ep);
    }

    /// Start a round: check readiness if at least two registered ports are cold and want it
    /// (`wants(i)`). Returns whether ports may be skipped this round.
    #[inline]
    pub(super) fn check(&mut self, wants: impl Fn(usize) -> bool) -> bool {
        let Some(ep) = &self.ep else {
            return false;
        };
        let mut cold = 0;
        for i in 0..self.registered.len() {
            self.wants[i] = self.registered[i] && !self.hot[i] && wants(i);
            cold += usize::from(self.wants[i]);
        }
        if cold < 2 {
            return false;
        }
        self.ready.fill(false);
        // SAFETY: `events` is a live array of EVENTS epoll_event structs; zero timeout.
        let n =
            unsafe { libc::epoll_wait(ep.as_raw_fd(), self.events.as_mut_ptr(), EVENTS as i32, 0) };
        if n < 0 {
            return false; // EINTR or worse: call every port this round
        }
        self.checks += 1;
        for ev in &self.events[..n as usize] {
            if let Some(r) = self.ready.get_mut(ev.u64 as usize) {
                *r = true;
            }
        }
        true
    }

    /// Whether port `i` can be skipped in a checked round: registered, cold, wanting readiness
    /// at the check, and not readable.
    #[inline]
    pub(super) fn skip(&mut self, i: usize) -> bool {
        let s = self.wants.get(i).copied().unwrap_or(false) && !self.ready[i];
        self.skipped += u64::from(s);
        s
    }

    /// Port `i` received `n` frames this round.
    #[inline]
    pub(super) fn received(&mut self, i: usize, n: usize) {
        if let Some(h) = self.hot.get_mut(i) {
            *h = n > 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::batch::Batch;
    use crate::env::{Env, Time};
    use crate::fdb::FdbConfig;
    use crate::port::Port;
    use crate::switch::{PortRole, Switch};

    /// A port whose receive is a `read` of a pipe (a system call, as a socket's), counting
    /// its calls.
    struct PipePort {
        fd: OwnedFd,
        calls: Arc<AtomicU64>,
    }

    impl Port for PipePort {
        fn rx_burst(&mut self, batch: &mut Batch) -> usize {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let area = batch.spare_mut()[0].rx_area();
            // SAFETY: reads at most area.len() bytes into the live buffer.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), area.as_mut_ptr().cast(), 64) };
            if n <= 0 {
                return 0;
            }
            batch.spare_mut()[0].set_len(n as usize);
            batch.grow(1);
            1
        }
        fn tx_burst(&mut self, batch: &mut Batch) -> usize {
            batch.len()
        }
        fn poll_fd(&self) -> Option<RawFd> {
            Some(self.fd.as_raw_fd())
        }
        fn rx_wants_readiness(&self) -> bool {
            true
        }
    }

    /// A non-blocking pipe: its read and write ends.
    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the live array.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        // SAFETY: fresh descriptors this test owns.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// `n` pipe ports on a switch: their write ends and call counters.
    fn switch_with_pipes(n: usize) -> (Switch, Vec<OwnedFd>, Vec<Arc<AtomicU64>>) {
        let mut sw = Switch::new(Env::new(FdbConfig::default()));
        let (mut writers, mut calls) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (r, w) = pipe();
            let c = Arc::new(AtomicU64::new(0));
            let port = PipePort {
                fd: r,
                calls: c.clone(),
            };
            sw.add_port(
                format!("p{i}"),
                Box::new(port),
                PortRole::Underlay,
                Vec::new(),
            );
            writers.push(w);
            calls.push(c);
        }
        (sw, writers, calls)
    }

    fn counts(calls: &[Arc<AtomicU64>]) -> Vec<u64> {
        calls.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    fn write(fd: &OwnedFd) {
        let frame = [0u8; 64];
        // SAFETY: writes 64 bytes from a live array to our pipe.
        let n = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), 64) };
        assert_eq!(n, 64);
    }

    #[test]
    fn idle_socket_ports_are_not_called_until_readable() {
        let (mut sw, w, calls) = switch_with_pipes(3);
        write(&w[2]);
        sw.poll(Time(1));
        assert_eq!(counts(&calls), [0, 0, 1], "only the readable port");
        // The port that received is called directly next round; the idle ones still not.
        sw.poll(Time(2));
        assert_eq!(counts(&calls), [0, 0, 2]);
        sw.poll(Time(3));
        assert_eq!(
            counts(&calls),
            [0, 0, 2],
            "all cold, none readable: no call"
        );
        write(&w[0]);
        sw.poll(Time(4));
        assert_eq!(counts(&calls), [1, 0, 2]);
        assert_eq!(sw.rx_gate_stats(), (4, 2 + 2 + 3 + 2));
        assert_eq!(sw.stats().ports[0].stats.rx_packets, 1);
    }

    #[test]
    fn one_socket_port_is_called_every_round() {
        let (mut sw, _w, calls) = switch_with_pipes(1);
        for t in 0..3 {
            sw.poll(Time(t));
        }
        assert_eq!(counts(&calls), [3]);
        assert_eq!(sw.rx_gate_stats(), (0, 0));
    }

    #[test]
    fn a_new_port_is_registered_when_the_ports_change() {
        let (mut sw, w, calls) = switch_with_pipes(2);
        sw.poll(Time(1));
        assert_eq!(counts(&calls), [0, 0]);
        let (r, wr) = pipe();
        let c = Arc::new(AtomicU64::new(0));
        sw.add_port(
            "p2",
            Box::new(PipePort {
                fd: r,
                calls: c.clone(),
            }),
            PortRole::Underlay,
            Vec::new(),
        );
        write(&wr);
        sw.poll(Time(2));
        assert_eq!(c.load(Ordering::Relaxed), 1, "the new port's frame is seen");
        assert_eq!(counts(&calls), [0, 0]);
        drop(w);
    }
}
