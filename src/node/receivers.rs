//! The receiver watcher: early drop for containers whose UDP receivers cannot keep up (issue
//! 20, part 3).
//!
//! Where it sits: beside the packet path, on a thread of its own (`vxmesh-receivers`). Every
//! container port with a named namespace has a [`ReceiverGate`] (`vswitch::gate`), which the
//! output step checks before queueing a UDP datagram for the container. This thread samples,
//! with `sock_diag`, the UDP sockets of the containers datagrams were sent to since it last
//! looked (and of those whose gate is closed), and closes a container's gate for the ports whose
//! sockets are all full; it opens it again once they have drained to half.
//!
//! ```text
//! output step ── UDP to c21 ──► gate(c21).touched
//! watcher, every --receiver-watch-us while touched (else every IDLE):
//!     sock_diag in c21's netns (a dump, or lookups of the sockets the last dump found)
//!         ─► Decider ─► gate(c21).set(full ports)
//! output step ── UDP to a gated port ──► drop_receiver_full (counted; the container's kernel
//!                                       never sees it)
//! ```
//!
//! Why: a full socket drops what reaches it after the whole path was paid for (this node's
//! receive, the stages, the transmit into the container, the container kernel's IP and UDP
//! receive); gated, the datagram costs only the receive and the stages, the CPU goes to the
//! receiver instead, and the loss is a counter of the switch (`drop_receiver_full`) that
//! `vxmesh stats` and `/metrics` show, not an invisible one in the container.
//!
//! A dump walks the kernel's whole UDP table (every namespace's sockets, twice), so its cost
//! grows with the host, not the container. A container with at most [`LOOKUP_MAX`] UDP sockets,
//! none sharing a port, is sampled by looking each one up instead (`UdpDiag::lookup`, one hash
//! lookup each), with a dump every [`REDISCOVER`] to find new sockets, and at once when a
//! socket is gone. So a flood to a socket opened since the last dump is gated within
//! [`REDISCOVER`] and two samples.
//!
//! Limits, on purpose: only IPv4 UDP (TCP has its own flow control); a socket is full by its
//! own figures (queued memory against its buffer), so a slow receiver is gated only when it
//! really overflows; the drop happens at the node that serves the container, so a flow from
//! another node still crosses the underlay (its sender's node cannot see the socket); a port
//! without a named namespace (`netns`) is not watched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use vswitch::gate::ReceiverGate;
use vswitch::port::sockdiag::{UdpDiag, UdpSock};

/// Default sampling period while datagrams flow to a container (`vxmesh run
/// --receiver-watch-us`): a default 212 KB socket buffer holds about 200 small datagrams,
/// a couple of milliseconds of a busy receiver, so it is sampled twice in that time.
pub const WATCH_PERIOD: Duration = Duration::from_millis(1);
/// How often the watcher looks for containers being sent to when none is: a flood to a full
/// socket is gated within this plus two samples. Each look is a timer wake-up: an idle pair of
/// nodes used 0.5-0.6% of a core with it against 0.2-0.3% before (`scripts/latency.sh`). At
/// 100 ms a slow receiver's flood left 78% of its loss to the switch instead of 88%
/// (`scripts/slowrecv.sh` on each build).
pub const IDLE_PERIOD: Duration = Duration::from_millis(20);
/// Samples in a row that must find a socket full before its port is gated.
pub const CLOSE_AFTER: u8 = 2;
/// Sockets a container may have and still be sampled by lookups, not dumps: four lookups cost
/// 13.5 µs here against 32 µs for a dump, which only grows with the host
/// (`cargo bench -p vswitch --bench sockdiag`).
pub const LOOKUP_MAX: usize = 4;
/// How often a container sampled by lookups is dumped, to find the sockets it opened since.
pub const REDISCOVER: Duration = Duration::from_millis(100);
/// After a failed `sock_diag` socket or dump, a container is not tried again for this long.
const RETRY: Duration = Duration::from_secs(1);
/// The watcher's share of a core at most, as 1/N: a look at every container being sent to
/// costs about 30 µs each by dumps (two walks of the kernel's UDP table), 3.4 µs a socket by
/// lookups (`cargo bench -p vswitch --bench sockdiag`), so with many of them the period
/// stretches instead of the thread taking a core (5%: one container at the
/// default period is under 3%, unchanged; ten get a look every 5 ms).
const CPU_SHARE_DIV: u32 = 20;

/// How long to wait after a round of looks that took `spent`: the period (`IDLE_PERIOD` when
/// nothing was being sent to), or longer, so that the looks stay within 1/[`CPU_SHARE_DIV`] of
/// a core.
fn pause(active: bool, period: Duration, spent: Duration) -> Duration {
    let base = if active { period } else { IDLE_PERIOD };
    base.max(spent * (CPU_SHARE_DIV - 1))
}

/// The gates of this process's container ports, by (port name, namespace).
#[derive(Default)]
pub struct Gates {
    map: Mutex<HashMap<(String, String), Arc<ReceiverGate>>>,
}

/// The process's gates: a change takes those of the ports it adds when it is prepared
/// (`Change::planned`, off the poll thread), the watcher reads them.
pub fn gates() -> &'static Gates {
    static GATES: LazyLock<Gates> = LazyLock::new(Gates::default);
    &GATES
}

impl Gates {
    /// The gate of port `name` in namespace `netns`, made on first use (every worker of a node
    /// gets the same one for the same port).
    pub fn gate(&self, name: &str, netns: &str) -> Arc<ReceiverGate> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((name.to_string(), netns.to_string()))
            .or_insert_with(|| Arc::new(ReceiverGate::new()))
            .clone()
    }

    /// Every gate some switch still holds, with its key; the others (their port was removed)
    /// are forgotten.
    fn live(&self) -> Vec<((String, String), Arc<ReceiverGate>)> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, g| Arc::strong_count(g) > 1);
        m.iter().map(|(k, g)| (k.clone(), g.clone())).collect()
    }
}

/// Which of a container's UDP ports to gate, from one sample to the next.
#[derive(Debug, Default)]
pub struct Decider {
    /// How many samples in a row found each socket full, by inode (at [`CLOSE_AFTER`] and
    /// above it is held full).
    full: HashMap<u32, u8>,
    /// Drops per socket at the last sample, by inode.
    drops: HashMap<u32, u32>,
}

impl Decider {
    /// Decide from `socks` (every UDP socket of the namespace): the ports all of whose sockets
    /// are full, sorted; and the drops the sockets took since the last sample.
    ///
    /// A socket looks full when its queued memory is within an eighth of its buffer, or when
    /// it dropped since the last sample with its buffer at least half used. It is held full
    /// once it looked full at [`CLOSE_AFTER`] samples in a row (a receiver that is slower
    /// than its senders, not one that drains its socket in bursts between the samples), and
    /// stays so until the buffer is at most half used (hysteresis: the gate does not flap on
    /// every sample). A port is gated only when every socket bound to it is held full
    /// (`SO_REUSEPORT` groups spread datagrams over their sockets).
    pub fn decide(&mut self, socks: &[UdpSock]) -> (Vec<u16>, u64) {
        let mut new_drops = 0u64;
        let mut full = HashMap::with_capacity(socks.len());
        let mut drops = HashMap::with_capacity(socks.len());
        let mut by_port: HashMap<u16, bool> = HashMap::new();
        for s in socks {
            let before = self.drops.get(&s.inode).copied();
            let dropped = before.is_some_and(|d| s.drops > d);
            if let Some(d) = before {
                new_drops += u64::from(s.drops.saturating_sub(d));
            }
            let half = s.rcvbuf / 2;
            let was = self.full.get(&s.inode).copied().unwrap_or(0);
            let looks_full =
                s.rcvbuf > 0 && (s.rmem >= s.rcvbuf - s.rcvbuf / 8 || (dropped && s.rmem >= half));
            let count = if was >= CLOSE_AFTER {
                if s.rmem > half { CLOSE_AFTER } else { 0 }
            } else if looks_full {
                was + 1
            } else {
                0
            };
            let is_full = count >= CLOSE_AFTER;
            full.insert(s.inode, count);
            drops.insert(s.inode, s.drops);
            *by_port.entry(s.port).or_insert(true) &= is_full;
        }
        self.full = full;
        self.drops = drops;
        let mut ports: Vec<u16> = by_port
            .into_iter()
            .filter_map(|(p, f)| f.then_some(p))
            .collect();
        ports.sort_unstable();
        (ports, new_drops)
    }
}

/// One watched container.
struct Watched {
    diag: Option<UdpDiag>,
    decider: Decider,
    /// No new socket or dump before this (after a failure).
    retry_at: Option<std::time::Instant>,
    /// The sockets of the last dump, and when it was made: looked up one by one until
    /// [`REDISCOVER`] has passed, if [`lookups_will_do`] says they may be.
    known: Vec<UdpSock>,
    dumped_at: Option<std::time::Instant>,
}

/// Whether the sockets of a dump may be sampled by lookups: few, and none sharing a port with
/// another (the kernel's lookup picks one socket of a `SO_REUSEPORT` group by hash).
fn lookups_will_do(socks: &[UdpSock]) -> bool {
    socks.len() <= LOOKUP_MAX
        && socks
            .iter()
            .enumerate()
            .all(|(i, s)| socks[..i].iter().all(|t| t.port != s.port))
}

/// Sample a container's sockets into `socks`: by looking up the ones the last dump found while
/// that is recent and they may be ([`lookups_will_do`]); else, or when one is gone, by a dump.
/// Returns whether it dumped.
fn sample(
    diag: &mut UdpDiag,
    known: &mut Vec<UdpSock>,
    dumped_at: &mut Option<std::time::Instant>,
    socks: &mut Vec<UdpSock>,
) -> Result<bool, vswitch::port::sockdiag::DiagError> {
    let fresh = dumped_at.is_some_and(|t| t.elapsed() < REDISCOVER);
    if fresh && lookups_will_do(known) {
        socks.clear();
        let mut all_there = true;
        for s in known.iter() {
            match diag.lookup(s)? {
                Some(now) => socks.push(now),
                None => {
                    all_there = false;
                    break;
                }
            }
        }
        if all_there {
            return Ok(false);
        }
    }
    diag.dump(socks)?;
    known.clone_from(socks);
    *dumped_at = Some(std::time::Instant::now());
    Ok(true)
}

/// Run the watcher until `stop`: sample the containers being sent to every `period`, the others
/// every [`IDLE_PERIOD`].
pub fn run(gates: &Gates, stop: &AtomicBool, period: Duration) {
    let mut watched: HashMap<(String, String), Watched> = HashMap::new();
    let mut socks = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let round = std::time::Instant::now();
        let live = gates.live();
        let mut active = false;
        for (key, gate) in &live {
            let touched = gate.take_touched();
            if !touched && !gate.is_closed() {
                continue;
            }
            active = true;
            let w = watched.entry(key.clone()).or_insert_with(|| Watched {
                diag: None,
                decider: Decider::default(),
                retry_at: None,
                known: Vec::new(),
                dumped_at: None,
            });
            if w.retry_at.is_some_and(|t| std::time::Instant::now() < t) {
                continue;
            }
            let diag = match &mut w.diag {
                Some(d) => d,
                None => match UdpDiag::open_in(&key.1) {
                    Ok(d) => w.diag.insert(d),
                    Err(e) => {
                        tracing::warn!(port = %key.0, netns = %key.1, error = %e,
                            "receiver watch: no sock_diag socket in the container's namespace; its gate stays open");
                        gate.set(&[]);
                        w.retry_at = Some(std::time::Instant::now() + RETRY);
                        continue;
                    }
                },
            };
            match sample(diag, &mut w.known, &mut w.dumped_at, &mut socks) {
                Ok(true) => gate.count_dump(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(port = %key.0, netns = %key.1, error = %e,
                        "receiver watch: sampling the container's UDP sockets failed; its gate opens");
                    gate.set(&[]);
                    w.diag = None;
                    w.dumped_at = None;
                    w.retry_at = Some(std::time::Instant::now() + RETRY);
                    continue;
                }
            }
            let (ports, drops) = w.decider.decide(&socks);
            let closing = !gate.is_closed() && !ports.is_empty();
            gate.count_sample(drops, closing);
            if closing {
                tracing::debug!(port = %key.0, ?ports, "receiver watch: gate closed");
            }
            if ports != gate.ports() {
                gate.set(&ports);
            }
        }
        watched.retain(|k, _| live.iter().any(|(l, _)| l == k));
        std::thread::sleep(pause(active, period, round.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(port: u16, inode: u32, rmem: u32, drops: u32) -> UdpSock {
        UdpSock {
            id: Default::default(),
            port,
            inode,
            rmem,
            rcvbuf: 8000,
            drops,
        }
    }

    #[test]
    fn the_period_stretches_so_that_the_looks_stay_within_their_share_of_a_core() {
        let us = Duration::from_micros;
        // One container at the default period: unchanged.
        assert_eq!(pause(true, WATCH_PERIOD, us(27)), WATCH_PERIOD);
        assert_eq!(pause(false, WATCH_PERIOD, us(27)), IDLE_PERIOD);
        // Ten of them: 270 µs of looks, then 19 times that asleep (5% of a core).
        assert_eq!(pause(true, WATCH_PERIOD, us(270)), us(270 * 19));
        let (spent, slept) = (us(2700), pause(true, WATCH_PERIOD, us(2700)));
        assert!(spent.as_secs_f64() / (spent + slept).as_secs_f64() <= 0.05 + 1e-9);
    }

    #[test]
    fn a_socket_full_at_two_samples_in_a_row_is_gated_until_half_drained() {
        let mut d = Decider::default();
        assert_eq!(d.decide(&[sock(5201, 1, 6000, 0)]), (vec![], 0));
        assert_eq!(
            d.decide(&[sock(5201, 1, 7000, 0)]),
            (vec![], 0),
            "once: a burst"
        );
        assert_eq!(d.decide(&[sock(5201, 1, 7900, 0)]), (vec![5201], 0));
        // Draining, still above half: held.
        assert_eq!(d.decide(&[sock(5201, 1, 4500, 0)]), (vec![5201], 0));
        assert_eq!(d.decide(&[sock(5201, 1, 4000, 0)]), (vec![], 0));
        // Full, drained, full: never twice in a row, never gated.
        for rmem in [7900, 100, 7900, 100] {
            assert_eq!(d.decide(&[sock(5201, 1, rmem, 0)]).0, Vec::<u16>::new());
        }
    }

    #[test]
    fn drops_since_the_last_sample_make_a_half_full_socket_look_full_and_are_counted() {
        let mut d = Decider::default();
        // First sight: its drops so far are a baseline, not news.
        assert_eq!(d.decide(&[sock(53, 1, 4100, 100)]), (vec![], 0));
        assert_eq!(d.decide(&[sock(53, 1, 4100, 130)]), (vec![], 30));
        assert_eq!(d.decide(&[sock(53, 1, 4100, 150)]), (vec![53], 20));
        // Drops with a nearly empty buffer (a burst that has passed): not full.
        let mut e = Decider::default();
        e.decide(&[sock(53, 1, 100, 0)]);
        assert_eq!(e.decide(&[sock(53, 1, 100, 9)]), (vec![], 9));
        assert_eq!(e.decide(&[sock(53, 1, 100, 19)]), (vec![], 10));
    }

    #[test]
    fn a_port_is_gated_only_when_every_socket_on_it_is_full() {
        let mut d = Decider::default();
        let both = [sock(5201, 1, 7900, 0), sock(5201, 2, 7900, 0)];
        let one = [sock(5201, 1, 7900, 0), sock(5201, 2, 10, 0)];
        assert_eq!(d.decide(&one).0, Vec::<u16>::new());
        assert_eq!(d.decide(&both).0, Vec::<u16>::new(), "full once");
        assert_eq!(d.decide(&one).0, Vec::<u16>::new());
        assert_eq!(d.decide(&both).0, Vec::<u16>::new());
        assert_eq!(d.decide(&both).0, vec![5201]);
        // A socket that closed is forgotten; an unknown buffer size never counts as full.
        let mut odd = sock(9, 3, 0, 0);
        odd.rcvbuf = 0;
        assert_eq!(d.decide(&[odd]).0, Vec::<u16>::new());
    }

    #[test]
    fn lookups_only_for_a_few_sockets_each_alone_on_its_port() {
        let one = [sock(5201, 1, 0, 0)];
        assert!(lookups_will_do(&one));
        let four: Vec<_> = (0..4).map(|i| sock(5000 + i, u32::from(i), 0, 0)).collect();
        assert!(lookups_will_do(&four));
        let five: Vec<_> = (0..5).map(|i| sock(5000 + i, u32::from(i), 0, 0)).collect();
        assert!(!lookups_will_do(&five), "more than LOOKUP_MAX");
        let group = [sock(53, 1, 0, 0), sock(5201, 2, 0, 0), sock(53, 3, 0, 0)];
        assert!(!lookups_will_do(&group), "a SO_REUSEPORT group");
    }

    #[test]
    fn gates_are_shared_by_name_and_forgotten_once_no_switch_holds_them() {
        let g = Gates::default();
        let a = g.gate("c11", "ns1");
        let b = g.gate("c11", "ns1");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &g.gate("c11", "ns2")));
        // "c11"/"ns2" is held by nobody but the map: gone at the next look.
        assert_eq!(g.live().len(), 1);
        drop((a, b));
        assert!(g.live().is_empty());
    }
}
