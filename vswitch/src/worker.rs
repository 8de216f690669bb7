//! The poll loop, written once: what drives a [`Switch`] (or anything that polls like one, such
//! as the node around it) on its own thread. It sits outside the packet path, around it: each
//! round calls [`Work::poll`] (every port's receive, the stages, the transmits), then the hooks
//! that must run between two batches, never inside one.
//!
//! - Busy-poll while traffic flows: for a window after the last received frame the loop does
//!   not sleep. The window adapts to the traffic between [`PollConfig::busy_poll`] and
//!   [`PollConfig::busy_poll_max`] (`worker/window.rs`): twice the recent gap between arrivals
//!   when that fits, so a steady low-rate flow (a ping every 2 ms) is polled through instead of
//!   paying a wake-up per frame, and the shortest window when frames stop or come further
//!   apart. An empty round in that window yields the CPU (`sched_yield`): on a small machine
//!   the containers' own processes share the cores with the poll thread, and a spinning thread
//!   must not hold them off for a whole scheduler slice.
//! - Then sleep in `poll(2)` on the ports' descriptors plus a [`Waker`] (an eventfd the control
//!   plane writes to), so an idle switch costs no CPU. The sleep lasts at most one housekeeping
//!   period, so housekeeping runs on an idle switch too.
//! - Between batches: [`Work::between_batches`] every round (control jobs: cheap when there are
//!   none) and [`Work::housekeeping`] once per [`PollConfig::housekeeping`] (aging, expiry).
//! - Stops when the stop flag turns true (checked every round, and a sleeping loop wakes within
//!   a housekeeping period, or at once when the stopper also wakes the [`Waker`]).
//!
//! One system call per round at most while busy (the yield on an empty round); none per packet.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::env::Time;
use crate::switch::Switch;

mod window;
pub use window::Window;

/// What the poll loop drives.
pub trait Work {
    /// One round at time `now`: receive, process and transmit a batch per port; the number of
    /// frames received.
    fn poll(&mut self, now: Time) -> usize;

    /// Runs after every round, between two batches: apply control jobs. Called at packet rate,
    /// so it must cost next to nothing when there is nothing to do.
    fn between_batches(&mut self) {}

    /// Runs once per housekeeping period (after the round that finds it due): table aging,
    /// connection expiry, estimates, publishing counters.
    fn housekeeping(&mut self, _now: Time) {}

    /// The descriptors to sleep on when idle (the ports', [`Switch::poll_fds`]).
    fn poll_fds(&self) -> Vec<RawFd>;

    /// Called when the loop is about to sleep: false to poll again instead (work was queued for
    /// this thread by another one that will not wake it: `port::handoff::Mesh::may_sleep`).
    fn may_sleep(&mut self) -> bool {
        true
    }

    /// Changes whenever [`Work::poll_fds`] would change (a port added or removed between
    /// batches): read once per round, so it must be cheap.
    fn fds_generation(&self) -> u64;
}

impl Work for Switch {
    fn poll(&mut self, now: Time) -> usize {
        Switch::poll(self, now)
    }
    fn poll_fds(&self) -> Vec<RawFd> {
        Switch::poll_fds(self)
    }
    fn fds_generation(&self) -> u64 {
        self.ports_generation()
    }
}

/// How the poll loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollConfig {
    /// Shortest busy-poll window: after the last received frame, keep polling (no sleep) at
    /// least this long before sleeping in `poll(2)`. Zero sleeps at the first empty round;
    /// `Duration::MAX` never sleeps (VPP and DPDK's polling mode).
    pub busy_poll: Duration,
    /// Longest busy-poll window: while frames keep arriving within it, the window grows to
    /// twice their recent gap (at most this), so they are polled through. Equal to (or below)
    /// `busy_poll`: a fixed window.
    pub busy_poll_max: Duration,
    /// Housekeeping period; also the longest sleep when idle, so that housekeeping still runs.
    pub housekeeping: Duration,
}

/// Run `work` until `stop` is true. When idle, sleep in `poll(2)` on the work's descriptors
/// ([`Work::poll_fds`], read again whenever a port comes or goes) and on `wake` if given
/// (drained after each sleep).
pub fn run<W: Work + ?Sized>(
    work: &mut W,
    wake: Option<&Waker>,
    stop: &AtomicBool,
    cfg: PollConfig,
) {
    let fds_of = |work: &W| {
        let mut all = work.poll_fds();
        all.extend(wake.map(Waker::fd));
        Poller::new(&all)
    };
    let mut poller = fds_of(work);
    let mut generation = work.fds_generation();
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let mut window = Window::new(ns(cfg.busy_poll), ns(cfg.busy_poll_max));
    let mut was_empty = true;
    let housekeeping_ns = u64::try_from(cfg.housekeeping.as_nanos()).unwrap_or(u64::MAX);
    let idle_sleep_ms = i32::try_from(cfg.housekeeping.as_millis()).unwrap_or(i32::MAX);
    let mut last_rx = Time::monotonic();
    let mut next_housekeeping = last_rx;
    while !stop.load(Ordering::Relaxed) {
        let now = Time::monotonic();
        let got = work.poll(now);
        if got > 0 {
            if was_empty {
                window.arrival(now.0.saturating_sub(last_rx.0));
            }
            last_rx = now;
        }
        was_empty = got == 0;
        work.between_batches();
        if work.fds_generation() != generation {
            generation = work.fds_generation();
            poller = fds_of(work);
        }
        if now >= next_housekeeping {
            next_housekeeping = Time(now.0.saturating_add(housekeeping_ns));
            work.housekeeping(now);
        }
        if now.0.saturating_sub(last_rx.0) > window.get() && work.may_sleep() {
            poller.wait(idle_sleep_ms);
            if let Some(w) = wake {
                w.drain();
            }
        } else if got == 0 {
            // An empty round while busy-polling: let whatever else is runnable on this CPU
            // (the containers' own processes, on a small machine) go first, instead of holding
            // the CPU for the rest of the scheduler's slice.
            // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
            unsafe { libc::sched_yield() };
        }
    }
}

/// An eventfd that wakes a sleeping poll loop from another thread (the control plane, or
/// whoever sets the stop flag).
#[derive(Debug)]
pub struct Waker(OwnedFd);

impl Waker {
    /// A non-blocking eventfd.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Waker(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wake the loop that sleeps on it.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our descriptor.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clear pending wake-ups.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our descriptor.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// Its descriptor.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The descriptors the loop sleeps on when idle, prepared once.
struct Poller {
    pfds: Vec<libc::pollfd>,
}

impl Poller {
    fn new(fds: &[RawFd]) -> Poller {
        Poller {
            pfds: fds
                .iter()
                .map(|&fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
        }
    }

    /// Wait until one of the descriptors is readable or `timeout_ms` passes.
    fn wait(&mut self, timeout_ms: i32) {
        // SAFETY: pfds is a live array of pfds.len() pollfd structs.
        unsafe {
            libc::poll(
                self.pfds.as_mut_ptr(),
                self.pfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
    }
}

/// A switch driven by [`run`] for someone watching it from another thread (a namespace test, a
/// tool): it publishes its counters into `snapshot` every `every`, and stops itself after
/// `lifetime` whatever the watcher does, so a watcher that fails cannot leave it running.
pub struct Watched<'a> {
    /// The switch.
    pub sw: Switch,
    stop: &'a AtomicBool,
    snapshot: &'a std::sync::Mutex<Option<crate::SwitchStats>>,
    every: Duration,
    lifetime: Duration,
    started: std::time::Instant,
    published: std::time::Instant,
}

impl<'a> Watched<'a> {
    /// Watch `sw`: counters into `snapshot` every `every`, `stop` set after `lifetime`.
    pub fn new(
        sw: Switch,
        stop: &'a AtomicBool,
        snapshot: &'a std::sync::Mutex<Option<crate::SwitchStats>>,
        every: Duration,
        lifetime: Duration,
    ) -> Watched<'a> {
        let now = std::time::Instant::now();
        Watched {
            sw,
            stop,
            snapshot,
            every,
            lifetime,
            started: now,
            published: now,
        }
    }
}

impl Work for Watched<'_> {
    fn poll(&mut self, now: Time) -> usize {
        self.sw.poll(now)
    }
    fn poll_fds(&self) -> Vec<RawFd> {
        self.sw.poll_fds()
    }
    fn fds_generation(&self) -> u64 {
        self.sw.ports_generation()
    }

    fn housekeeping(&mut self, _: Time) {
        if self.published.elapsed() >= self.every {
            // A poisoned lock means the watcher panicked: nobody reads the counters any more.
            if let Ok(mut s) = self.snapshot.lock() {
                *s = Some(self.sw.stats());
            }
            self.published = std::time::Instant::now();
        }
        if self.started.elapsed() >= self.lifetime {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    /// Counts rounds and housekeeping; stops itself after `rounds` rounds.
    struct Counting<'a> {
        rounds: usize,
        between: usize,
        housekeeping: usize,
        stop_after: usize,
        stop: &'a AtomicBool,
    }

    impl Work for Counting<'_> {
        fn poll(&mut self, _: Time) -> usize {
            self.rounds += 1;
            if self.rounds == self.stop_after {
                self.stop.store(true, Ordering::Relaxed);
            }
            1
        }
        fn between_batches(&mut self) {
            self.between += 1;
        }
        fn housekeeping(&mut self, _: Time) {
            self.housekeeping += 1;
        }
        fn poll_fds(&self) -> Vec<RawFd> {
            Vec::new()
        }
        fn fds_generation(&self) -> u64 {
            0
        }
    }

    /// A work whose descriptor appears after the loop started (a port hot-plugged between
    /// batches): a readable event on it must wake the sleeping loop, which then stops.
    struct LatePort {
        late: Arc<Waker>,
        added: bool,
        rounds: usize,
        housekeeping: usize,
        stop: Arc<AtomicBool>,
    }

    impl Work for LatePort {
        fn poll(&mut self, _: Time) -> usize {
            self.rounds += 1;
            if self.added && self.rounds > 2 {
                // Woken by the late descriptor (the loop has no other way out of its sleep).
                self.stop.store(true, Ordering::Relaxed);
            }
            0
        }
        fn between_batches(&mut self) {
            self.added = true;
        }
        fn housekeeping(&mut self, _: Time) {
            // Due in the first round, then after a whole period asleep: the late descriptor
            // did not wake the loop. Stop, so a failing test ends.
            self.housekeeping += 1;
            if self.housekeeping > 1 {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
        fn poll_fds(&self) -> Vec<RawFd> {
            if self.added {
                vec![self.late.fd()]
            } else {
                Vec::new()
            }
        }
        fn fds_generation(&self) -> u64 {
            u64::from(self.added)
        }
    }

    #[test]
    fn a_port_added_between_batches_is_slept_on() {
        let stop = Arc::new(AtomicBool::new(false));
        let late = Arc::new(Waker::new().unwrap());
        let (stop2, late2) = (stop.clone(), late.clone());
        let t = std::thread::spawn(move || {
            let mut w = LatePort {
                late: late2,
                added: false,
                rounds: 0,
                housekeeping: 0,
                stop: stop2,
            };
            let cfg = PollConfig {
                busy_poll: Duration::ZERO,
                busy_poll_max: Duration::ZERO,
                housekeeping: Duration::from_secs(20),
            };
            let stop = w.stop.clone();
            run(&mut w, None, &stop, cfg);
            (w.rounds, w.housekeeping)
        });
        std::thread::sleep(Duration::from_millis(50));
        // Readable from now on (never drained): each sleep returns at once.
        late.wake();
        let (rounds, housekeeping) = t.join().unwrap();
        assert_eq!(
            housekeeping, 1,
            "slept a whole period: the new descriptor was not polled"
        );
        assert!(rounds > 2, "{rounds}");
    }

    #[test]
    fn hooks_run_between_batches_and_housekeeping_once_per_period() {
        let stop = AtomicBool::new(false);
        let mut w = Counting {
            rounds: 0,
            between: 0,
            housekeeping: 0,
            stop_after: 1000,
            stop: &stop,
        };
        let cfg = PollConfig {
            busy_poll: Duration::MAX,
            busy_poll_max: Duration::MAX,
            housekeeping: Duration::from_secs(3600),
        };
        run(&mut w, None, &stop, cfg);
        assert_eq!((w.rounds, w.between), (1000, 1000));
        assert_eq!(
            w.housekeeping, 1,
            "the first round finds it due, then not for an hour"
        );
    }

    #[test]
    fn an_idle_loop_sleeps_and_a_waker_ends_the_sleep() {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Waker::new().unwrap());
        let (stop2, wake2) = (stop.clone(), wake.clone());
        let t = std::thread::spawn(move || {
            let mut sw = Switch::new(crate::Env::new(crate::FdbConfig::default()));
            let cfg = PollConfig {
                busy_poll: Duration::ZERO,
                busy_poll_max: Duration::ZERO,
                housekeeping: Duration::from_secs(3600),
            };
            let start = Instant::now();
            run(&mut sw, Some(&wake2), &stop2, cfg);
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        wake.wake();
        let took = t.join().unwrap();
        assert!(
            took < Duration::from_secs(60),
            "the waker did not wake it: {took:?}"
        );
    }
}
