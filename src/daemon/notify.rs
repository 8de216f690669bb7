//! systemd's service notifications (sd_notify(3)), written by hand: one datagram to the
//! socket `$NOTIFY_SOCKET` names (a path, or an abstract name when it starts with '@').
//! Control plane only, with one exception kept cheap: the poll thread's [`Watchdog`] costs a
//! timestamp compare per housekeeping tick and one `sendto` every `WATCHDOG_USEC / 2`.
//!
//! `vxmesh run` sends `READY=1` once the node is built (its ports open) and its control socket
//! listens, `WATCHDOG=1` from the poll thread (so systemd restarts a node whose dataplane stopped
//! polling: `WatchdogSec=` in `vxmesh@.service`), and `STOPPING=1` when it starts to stop. Not
//! under systemd (no `$NOTIFY_SOCKET`) every call is nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use vswitch::Time;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when it is not set (not under systemd, or not
    /// `Type=notify`) or cannot be used.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        Notifier::to(path.to_str()?)
    }

    /// To the socket `path` (`@NAME`: the abstract socket NAME).
    pub fn to(path: &str) -> Option<Notifier> {
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
            None if path.starts_with('/') => SocketAddr::from_pathname(path).ok()?,
            None => return None,
        };
        let sock = UnixDatagram::unbound().ok()?;
        Some(Notifier { sock, addr })
    }

    /// Send `state` (newline-separated `KEY=VALUE` lines). Failures are ignored: a service
    /// manager that went away is no reason to stop forwarding.
    pub fn send(&self, state: &str) {
        let _ = self.sock.send_to_addr(state.as_bytes(), &self.addr);
    }
}

/// Send `state` to the service manager, if there is one.
pub fn notify(state: &str) {
    if let Some(n) = Notifier::from_env() {
        n.send(state);
    }
}

/// The poll thread's keep-alive: `WATCHDOG=1` at most every half watchdog period.
#[derive(Debug)]
pub struct Watchdog {
    notifier: Notifier,
    every_ns: u64,
    next: Time,
}

impl Watchdog {
    /// From `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, which must be this process when set) and
    /// `$NOTIFY_SOCKET`; `None` when the service has no watchdog.
    pub fn from_env() -> Option<Watchdog> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        Watchdog::new(Notifier::from_env()?, usec)
    }

    /// Keep-alives to `notifier` for a watchdog of `usec` microseconds (0: none).
    pub fn new(notifier: Notifier, usec: u64) -> Option<Watchdog> {
        (usec > 0).then(|| Watchdog {
            notifier,
            every_ns: usec.saturating_mul(1000) / 2,
            next: Time(0),
        })
    }

    /// Called from the poll loop: a compare, and a keep-alive when one is due.
    #[inline]
    pub fn tick(&mut self, now: Time) {
        if now.0 >= self.next.0 {
            self.next = Time(now.0.saturating_add(self.every_ns));
            self.notifier.send("WATCHDOG=1");
        }
    }
}

/// The poll threads' heartbeats (`vxmesh run --workers`): each worker records when it last ran
/// its housekeeping, and worker 0 feeds the watchdog only while every worker's is recent, so
/// systemd restarts a node any of whose workers stopped polling, not only worker 0.
#[derive(Debug)]
pub struct Heartbeats(Box<[std::sync::atomic::AtomicU64]>);

/// A worker whose housekeeping is older than this is taken for stopped (ten periods).
pub const HEARTBEAT_STALE: std::time::Duration = std::time::Duration::from_secs(1);

impl Heartbeats {
    /// Heartbeats of `workers` workers, all at `now`.
    pub fn new(workers: usize, now: Time) -> Heartbeats {
        Heartbeats(
            (0..workers.max(1))
                .map(|_| std::sync::atomic::AtomicU64::new(now.0))
                .collect(),
        )
    }

    /// Worker `me` ran its housekeeping at `now`.
    #[inline]
    pub fn beat(&self, me: usize, now: Time) {
        if let Some(b) = self.0.get(me) {
            b.store(now.0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether every worker beat within [`HEARTBEAT_STALE`] before `now`.
    #[inline]
    pub fn all_alive(&self, now: Time) -> bool {
        let stale = u64::try_from(HEARTBEAT_STALE.as_nanos()).unwrap_or(u64::MAX);
        self.0.iter().all(|b| {
            now.0
                .saturating_sub(b.load(std::sync::atomic::Ordering::Relaxed))
                <= stale
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_worker_stops_the_heartbeat() {
        let s = |x: u64| Time(x * 1_000_000_000);
        let h = Heartbeats::new(2, s(10));
        assert!(h.all_alive(s(10)));
        h.beat(0, s(11));
        h.beat(1, s(11));
        assert!(h.all_alive(s(12)));
        h.beat(0, s(13));
        // Worker 1 last beat at 11: two seconds ago.
        assert!(!h.all_alive(s(13)));
        h.beat(1, s(13));
        assert!(h.all_alive(s(13)));
        h.beat(7, s(13)); // no such worker: ignored
    }

    fn listener(name: &str) -> (UnixDatagram, String) {
        let name = format!("vxmesh-notify-test-{}-{name}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_nonblocking(true).unwrap();
        (sock, format!("@{name}"))
    }

    fn received(sock: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let (sock, path) = listener("ready");
        Notifier::to(&path).unwrap().send("READY=1\nSTATUS=up");
        assert_eq!(received(&sock), ["READY=1\nSTATUS=up"]);
        assert!(Notifier::to("relative/path").is_none());
    }

    #[test]
    fn the_watchdog_pings_once_per_half_period() {
        let (sock, path) = listener("watchdog");
        // A 2 s watchdog: a keep-alive at the first tick, then one per second of the clock
        // given (the ticks' own timestamps; nothing here waits).
        let mut w = Watchdog::new(Notifier::to(&path).unwrap(), 2_000_000).unwrap();
        let s = 1_000_000_000u64;
        for t in [
            10 * s,
            10 * s + 1,
            10 * s + s / 2,
            11 * s - 1,
            11 * s,
            11 * s + 1,
        ] {
            w.tick(Time(t));
        }
        assert_eq!(received(&sock), ["WATCHDOG=1", "WATCHDOG=1"]);
        assert!(Watchdog::new(Notifier::to(&path).unwrap(), 0).is_none());
    }
}
