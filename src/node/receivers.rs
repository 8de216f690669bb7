//! The receiver watcher: early drop for containers whose UDP receivers cannot keep up (issue
//! 20, part 3).
//!
//! Where it sits: beside the packet path, on a thread of its own (`vxmesh-receivers`). Every
//! container port with a named namespace has a [`ReceiverGate`] (`vswitch::gate`), which the
//! output step checks before queueing a UDP datagram for the container. This thread samples,
//! with `sock_diag`, the UDP sockets of the containers datagrams were sent to since it last
//! looked (and of those with throttled ports), and throttles a port whose sockets overflow:
//! the gate lets through the share of its datagrams that its receiver takes, and drops the
//! rest at the switch ([`Decider`]); once the receiver keeps up again, the port leaves the gate.
//!
//! ```text
//! output step ── UDP to c21 ──► gate(c21).touched
//! watcher, every --receiver-watch-us while touched (else every IDLE):
//!     sock_diag in c21's netns (a dump, or lookups of the sockets the last dump found)
//!     + gate(c21).take_counts() (offered, admitted per throttled port)
//!         ─► Decider ─► gate(c21).set / set_admit(port, share)
//! output step ── UDP to a throttled port, beyond its share ──► drop_receiver_full (counted;
//!                                       the container's kernel never sees it)
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

use vswitch::gate::{ADMIT_ALL, GATE_PORTS, PortCounts, ReceiverGate};
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
/// Samples in a row that must find a port under pressure before it is throttled: a receiver
/// that is slower than its senders, not one that drains its socket in bursts between samples.
pub const CLOSE_AFTER: u8 = 2;
/// Samples in a row that must find a throttled port admitting everything, without drops and
/// below half full, before it leaves the gate.
pub const OPEN_AFTER: u8 = 4;
/// Samples over which a throttled port's share is the largest its receiver took: a receiver
/// that reads in bursts (scheduled a few milliseconds at a time on a busy host) takes more
/// when it runs than its average, and must find its queue full then.
pub const SHARE_WINDOW: usize = 8;
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

/// One UDP port's state in a [`Decider`].
#[derive(Debug, Default, Clone, Copy)]
struct PortState {
    /// Samples in a row that found the port under pressure (not yet throttled).
    pressured: u8,
    /// Throttled: in the gate with `admit`.
    throttled: bool,
    /// Its admit share, in 1/[`ADMIT_ALL`]ths: the largest of `shares`.
    admit: u32,
    /// The share its receiver took at each of the last [`SHARE_WINDOW`] samples (oldest
    /// overwritten first, at `next`).
    shares: [u32; SHARE_WINDOW],
    next: usize,
    /// Samples in a row that found it throttled at [`ADMIT_ALL`], without drops and below half.
    quiet: u8,
    /// When it began to be throttled, in the [`Decider`]'s count: the gate's slots keep this
    /// order.
    since: u64,
}

/// What one sample decided for a container.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The ports to throttle, each with its admit share, in the order they began (at most
    /// [`GATE_PORTS`]).
    pub ports: Vec<(u16, u32)>,
    /// The drops the sockets took since the last sample.
    pub drops: u64,
    /// How many ports began to be throttled at this sample.
    pub began: u64,
}

/// Which of a container's UDP ports to throttle, and how much of each to let through, from one
/// sample to the next.
#[derive(Debug, Default)]
pub struct Decider {
    /// Drops per socket at the last sample, by inode.
    drops: HashMap<u32, u32>,
    /// By UDP port.
    ports: HashMap<u16, PortState>,
    /// Ports that began to be throttled so far (orders them).
    order: u64,
}

/// One port's sockets, summed up for a sample.
#[derive(Debug, Clone, Copy)]
struct PortSample {
    /// Every socket on it has a known buffer at least half used.
    half: bool,
    /// Every socket on it is within an eighth of its buffer.
    full: bool,
    /// Some socket on it is below a quarter of its buffer: its receiver keeps up.
    low: bool,
    /// Drops at its sockets since the last sample.
    drops: u64,
}

impl Decider {
    /// Decide from `socks` (every UDP socket of the namespace) and `counts` (what the output
    /// step did with each throttled port's datagrams since the last sample).
    ///
    /// A port is under pressure when every socket on it is at least half full and either
    /// dropped since the last sample or is within an eighth of its buffer (`SO_REUSEPORT`
    /// groups spread datagrams over their sockets, so one slow socket does not make the port).
    /// After [`CLOSE_AFTER`] samples in a row under pressure it is throttled, first admitting
    /// everything. Then each sample finds the share its receiver took:
    ///
    /// - a socket on it below a quarter of its buffer: everything (its receiver keeps up);
    /// - else, nothing offered to it since the last sample: no share (nothing learnt);
    /// - else, what got into its sockets (let through, less dropped) over what was offered.
    ///
    /// The port admits the largest share of the last [`SHARE_WINDOW`] samples (as BBR takes
    /// the largest delivery rate of a window): a steady receiver is fed at its own rate and
    /// the rest is dropped at the switch, counted; one that reads in bursts gets what it takes
    /// when it runs. After a sample without drops, below an eighth of full, it admits a
    /// sixteenth and 1/256 more than that, to follow a receiver that speeds up (a probe, not
    /// kept in the window: the next sample shows whether the receiver took it). After
    /// [`OPEN_AFTER`] samples in a row admitting everything, without drops and below half
    /// full, the port leaves the gate. At most [`GATE_PORTS`] ports are throttled at once,
    /// kept in the order they began; another under pressure waits for a slot.
    pub fn decide(&mut self, socks: &[UdpSock], counts: &[PortCounts]) -> Decision {
        let mut drops = HashMap::with_capacity(socks.len());
        let mut by_port: HashMap<u16, PortSample> = HashMap::new();
        let mut total = 0u64;
        for s in socks {
            let new = self
                .drops
                .get(&s.inode)
                .map_or(0, |d| u64::from(s.drops.saturating_sub(*d)));
            total += new;
            drops.insert(s.inode, s.drops);
            let known = s.rcvbuf > 0;
            let e = by_port.entry(s.port).or_insert(PortSample {
                half: true,
                full: true,
                low: false,
                drops: 0,
            });
            e.half &= known && s.rmem >= s.rcvbuf / 2;
            e.full &= known && s.rmem >= s.rcvbuf - s.rcvbuf / 8;
            e.low |= known && s.rmem < s.rcvbuf / 4;
            e.drops += new;
        }
        self.drops = drops;
        // A port with no socket left is forgotten (its gate slot with it).
        self.ports.retain(|p, _| by_port.contains_key(p));
        let mut began = 0;
        let mut throttled = self.ports.values().filter(|st| st.throttled).count();
        let mut sampled: Vec<(&u16, &PortSample)> = by_port.iter().collect();
        sampled.sort_unstable_by_key(|(p, _)| **p);
        for (port, ps) in sampled {
            let st = self.ports.entry(*port).or_default();
            if !st.throttled {
                let pressured = ps.half && (ps.drops > 0 || ps.full);
                st.pressured = if pressured {
                    st.pressured.saturating_add(1)
                } else {
                    0
                };
                if st.pressured >= CLOSE_AFTER && throttled < GATE_PORTS {
                    self.order += 1;
                    *st = PortState {
                        throttled: true,
                        admit: ADMIT_ALL,
                        shares: [ADMIT_ALL; SHARE_WINDOW],
                        since: self.order,
                        ..PortState::default()
                    };
                    began += 1;
                    throttled += 1;
                }
                continue;
            }
            let (offered, admitted) = counts
                .iter()
                .find(|c| c.port == *port)
                .map_or((0, 0), |c| (c.offered, c.admitted));
            // Only what the receiver showed it takes enters the window; the probe above it is
            // applied on top and is not kept, so guesses neither linger nor compound.
            // Nothing sent to it since the last sample (a division by zero): nothing learnt.
            let got_in = admitted.saturating_sub(ps.drops);
            let taken = if ps.low {
                Some(ADMIT_ALL)
            } else {
                (got_in * u64::from(ADMIT_ALL))
                    .checked_div(offered)
                    .map(|share| share.min(u64::from(ADMIT_ALL)) as u32)
            };
            if let Some(share) = taken {
                st.shares[st.next] = share;
                st.next = (st.next + 1) % SHARE_WINDOW;
            }
            st.admit = st.shares.iter().copied().max().unwrap_or(ADMIT_ALL);
            if taken.is_some() && ps.drops == 0 && !ps.full {
                st.admit = (st.admit + st.admit / 16 + ADMIT_ALL / 256).min(ADMIT_ALL);
            }
            if st.admit == ADMIT_ALL && ps.drops == 0 && !ps.half {
                st.quiet += 1;
                if st.quiet >= OPEN_AFTER {
                    *st = PortState::default();
                }
            } else {
                st.quiet = 0;
            }
        }
        let mut ports: Vec<(u64, u16, u32)> = self
            .ports
            .iter()
            .filter(|(_, st)| st.throttled)
            .map(|(p, st)| (st.since, *p, st.admit))
            .collect();
        ports.sort_unstable();
        let ports = ports.into_iter().map(|(_, p, a)| (p, a)).collect();
        Decision {
            ports,
            drops: total,
            began,
        }
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

/// The counts of every gate of one namespace, added by UDP port: a socket of the container
/// takes datagrams from each of its ports (a container on two networks has two).
fn merged_counts(gates: &[&Arc<ReceiverGate>]) -> Vec<PortCounts> {
    let mut all: Vec<PortCounts> = Vec::new();
    for g in gates {
        for c in g.take_counts() {
            match all.iter_mut().find(|a| a.port == c.port) {
                Some(a) => {
                    a.offered += c.offered;
                    a.admitted += c.admitted;
                }
                None => all.push(c),
            }
        }
    }
    all
}

/// Give `gate` exactly `ports` (a decision): their shares alone if the same ports are there in
/// the same order, so that their counts go on; else the whole set, counted afresh.
fn apply(gate: &ReceiverGate, ports: &[(u16, u32)]) {
    let now = gate.ports();
    let same = now.len() == ports.len() && now.iter().zip(ports).all(|(a, b)| a.0 == b.0);
    if same {
        for (port, admit) in ports {
            gate.set_admit(*port, *admit);
        }
    } else {
        gate.set(ports);
    }
}

/// Run the watcher until `stop`: sample the containers being sent to every `period`, the others
/// every [`IDLE_PERIOD`]. A container is its namespace: every port of it shares one sample and
/// one decision (its sockets take datagrams from all of them), and each of its ports shows the
/// samples in its counters.
pub fn run(gates: &Gates, stop: &AtomicBool, period: Duration) {
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut socks = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let round = std::time::Instant::now();
        let live = gates.live();
        let mut by_netns: HashMap<&str, Vec<(&str, &Arc<ReceiverGate>)>> = HashMap::new();
        for ((port, netns), gate) in &live {
            by_netns
                .entry(netns.as_str())
                .or_default()
                .push((port.as_str(), gate));
        }
        let mut active = false;
        for (netns, ports) in &by_netns {
            // Every gate's mark is taken, so none stays set for the next round.
            let touched = ports.iter().fold(false, |t, (_, g)| g.take_touched() | t);
            if !touched && !ports.iter().any(|(_, g)| g.is_closed()) {
                continue;
            }
            active = true;
            // The port names, for a log line only (not made every round).
            let names = || ports.iter().map(|(n, _)| *n).collect::<Vec<_>>();
            let gs: Vec<&Arc<ReceiverGate>> = ports.iter().map(|(_, g)| *g).collect();
            let w = watched.entry(netns.to_string()).or_insert_with(|| Watched {
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
                None => match UdpDiag::open_in(netns) {
                    Ok(d) => w.diag.insert(d),
                    Err(e) => {
                        tracing::warn!(ports = ?names(), netns = %netns, error = %e,
                            "receiver watch: no sock_diag socket in the container's namespace; its gates stay open");
                        gs.iter().for_each(|g| g.set(&[]));
                        w.decider = Decider::default();
                        w.retry_at = Some(std::time::Instant::now() + RETRY);
                        continue;
                    }
                },
            };
            // The counts first, then the sockets: every datagram counted has reached its socket
            // (or been dropped there) by the time the sockets are read, within microseconds of
            // the output step. Taken the other way round, a datagram let through between the
            // two reads counts as got in, its drop comes a sample later, and the share is over
            // the receiver's; the window keeps the largest share, so that would linger. This
            // way round an error is under it, which the window's largest share absorbs.
            let counts = merged_counts(&gs);
            match sample(diag, &mut w.known, &mut w.dumped_at, &mut socks) {
                Ok(true) => gs.iter().for_each(|g| g.count_dump()),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(ports = ?names(), netns = %netns, error = %e,
                        "receiver watch: sampling the container's UDP sockets failed; its gates open");
                    gs.iter().for_each(|g| g.set(&[]));
                    w.diag = None;
                    w.decider = Decider::default();
                    w.dumped_at = None;
                    w.retry_at = Some(std::time::Instant::now() + RETRY);
                    continue;
                }
            }
            let d = w.decider.decide(&socks, &counts);
            if d.began > 0 {
                tracing::debug!(ports = ?names(), netns = %netns, udp = ?d.ports,
                    "receiver watch: throttling began");
            }
            for g in &gs {
                g.count_sample(d.drops, d.began);
                apply(g, &d.ports);
            }
        }
        watched.retain(|k, _| by_netns.contains_key(k.as_str()));
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

    /// A UDP datagram from c11 to c21's port `dport`, as the output step sees it.
    fn datagram(dport: u16) -> Vec<u8> {
        vswitch::frames::udp(
            vswitch::packet::Mac([2, 0, 0, 0, 0, 1]),
            vswitch::packet::Mac([2, 0, 0, 0, 0, 2]),
            std::net::Ipv4Addr::new(10, 0, 9, 11),
            std::net::Ipv4Addr::new(10, 0, 9, 21),
            40000,
            dport,
            b"x",
        )
    }

    fn counts(port: u16, offered: u64, admitted: u64) -> PortCounts {
        PortCounts {
            port,
            offered,
            admitted,
        }
    }

    #[test]
    fn a_port_under_pressure_twice_is_throttled_to_what_gets_in_and_leaves_once_quiet() {
        let mut d = Decider::default();
        assert_eq!(d.decide(&[sock(5201, 1, 6000, 0)], &[]).ports, vec![]);
        let once = d.decide(&[sock(5201, 1, 7500, 0)], &[]);
        assert_eq!(once.ports, vec![], "once: a burst");
        let twice = d.decide(&[sock(5201, 1, 7900, 0)], &[]);
        assert_eq!((twice.ports, twice.began), (vec![(5201, ADMIT_ALL)], 1));
        // 1000 offered, all admitted, 600 dropped at the socket each time: 40% got in, and
        // once the window holds only such samples, that is the share.
        let mut drops = 0;
        for i in 1..=SHARE_WINDOW {
            drops += 600;
            let s = d.decide(&[sock(5201, 1, 7900, drops)], &[counts(5201, 1000, 1000)]);
            assert_eq!(s.drops, 600);
            assert_eq!(s.began, 0);
            let want = if i < SHARE_WINDOW {
                ADMIT_ALL
            } else {
                2 * ADMIT_ALL / 5
            };
            assert_eq!(s.ports, vec![(5201, want)], "sample {i}");
        }
        let share = 2 * ADMIT_ALL / 5;
        // Nothing sent to it: nothing learnt, however full it is.
        for _ in 0..SHARE_WINDOW {
            let idle = d.decide(&[sock(5201, 1, 7900, drops)], &[]);
            assert_eq!(idle.ports, vec![(5201, share)]);
        }
        // Full without new drops, the share taken whole: held.
        let held = d.decide(&[sock(5201, 1, 7900, drops)], &[counts(5201, 1000, 400)]);
        assert_eq!(held.ports, vec![(5201, share)]);
        // Between a quarter and nearly full without drops: a probe a little above it.
        let grown = d.decide(&[sock(5201, 1, 5000, drops)], &[counts(5201, 1000, 400)]);
        let more = share + share / 16 + ADMIT_ALL / 256;
        assert_eq!(grown.ports, vec![(5201, more)]);
        // The probe taken whole is a share the receiver showed: kept, and probed above again.
        let took = d.decide(&[sock(5201, 1, 5000, drops)], &[counts(5201, 1000, 460)]);
        let took_share = (460 * u64::from(ADMIT_ALL) / 1000) as u32;
        assert_eq!(
            took.ports,
            vec![(5201, took_share + took_share / 16 + ADMIT_ALL / 256)]
        );
        // A sample that took less does not lower the share while a larger one is in the
        // window, and with drops there is no probe.
        let less = d.decide(
            &[sock(5201, 1, 7900, drops + 900)],
            &[counts(5201, 1000, 1000)],
        );
        assert_eq!(less.ports, vec![(5201, took_share)]);
        // Drained below a quarter: the receiver keeps up, so everything is admitted again,
        // and after OPEN_AFTER such samples below half the port leaves the gate.
        for _ in 1..OPEN_AFTER {
            let open = d.decide(&[sock(5201, 1, 100, drops + 900)], &[counts(5201, 10, 10)]);
            assert_eq!(open.ports, vec![(5201, ADMIT_ALL)]);
        }
        assert_eq!(
            d.decide(&[sock(5201, 1, 100, drops + 900)], &[]).ports,
            vec![]
        );
    }

    #[test]
    fn bursts_and_drops_from_a_nearly_empty_buffer_are_not_pressure() {
        let mut d = Decider::default();
        // Full, drained, full, drained: never twice in a row.
        for rmem in [7900, 100, 7900, 100] {
            assert_eq!(d.decide(&[sock(5201, 1, rmem, 0)], &[]).ports, vec![]);
        }
        // First sight: its drops so far are a baseline, not news; drops with a nearly empty
        // buffer (a burst that has passed) are counted but are not pressure.
        let mut e = Decider::default();
        assert_eq!(e.decide(&[sock(53, 1, 100, 100)], &[]).drops, 0);
        for n in [109, 119] {
            let s = e.decide(&[sock(53, 1, 100, n)], &[]);
            assert_eq!((s.ports, s.drops), (vec![], 10 - u64::from(n == 109)));
        }
        // Half full and dropping, twice: pressure.
        e.decide(&[sock(53, 1, 4100, 130)], &[]);
        assert_eq!(
            e.decide(&[sock(53, 1, 4100, 150)], &[]).ports,
            vec![(53, ADMIT_ALL)]
        );
    }

    #[test]
    fn a_port_is_throttled_only_when_every_socket_on_it_is_under_pressure() {
        let mut d = Decider::default();
        let both = [sock(5201, 1, 7900, 0), sock(5201, 2, 7900, 0)];
        let one = [sock(5201, 1, 7900, 0), sock(5201, 2, 10, 0)];
        assert_eq!(d.decide(&one, &[]).ports, vec![]);
        assert_eq!(d.decide(&both, &[]).ports, vec![], "once");
        assert_eq!(d.decide(&one, &[]).ports, vec![]);
        assert_eq!(d.decide(&both, &[]).ports, vec![]);
        assert_eq!(d.decide(&both, &[]).ports, vec![(5201, ADMIT_ALL)]);
        // A socket nobody reads beside one that keeps up: everything admitted.
        let nobody = [sock(5201, 1, 7900, 50), sock(5201, 2, 10, 0)];
        let s = d.decide(&nobody, &[counts(5201, 100, 100)]);
        assert_eq!(s.ports, vec![(5201, ADMIT_ALL)]);
        // The port's sockets are gone: forgotten, gate and all. An unknown buffer size is
        // never pressure.
        let mut odd = sock(9, 3, 0, 0);
        odd.rcvbuf = 0;
        for _ in 0..3 {
            assert_eq!(d.decide(&[odd], &[]).ports, vec![]);
        }
    }

    /// A model socket behind a real gate, sampled every millisecond: `offer` datagrams a
    /// millisecond, of which the gate lets some through into a buffer of 200 datagrams; the
    /// receiver reads `read(ms)` a millisecond. Returns (read, dropped by the socket, dropped
    /// by the gate) over the last `ms - warm` milliseconds.
    fn model(
        gated: bool,
        offer: u64,
        read: impl Fn(u64) -> u64,
        ms: u64,
        warm: u64,
    ) -> (u64, u64, u64) {
        const TRUESIZE: u32 = 40;
        let frame = datagram(5201);
        let gate = ReceiverGate::new();
        let mut d = Decider::default();
        let (mut queued, mut sock_drops) = (0u32, 0u32);
        let (mut got, mut lost_sock, mut lost_gate) = (0, 0, 0);
        for t in 0..ms {
            // Ten steps a millisecond: a tenth of the datagrams, then a tenth of the reads.
            for step in 0..10 {
                for _ in 0..(offer * (step + 1) / 10 - offer * step / 10) {
                    if gate.blocks(&frame) {
                        lost_gate += u64::from(t >= warm);
                    } else if (queued + 1) * TRUESIZE > 8000 {
                        sock_drops += 1;
                        lost_sock += u64::from(t >= warm);
                    } else {
                        queued += 1;
                    }
                }
                let want = read(t) * (step + 1) / 10 - read(t) * step / 10;
                let r = want.min(u64::from(queued));
                queued -= r as u32;
                got += if t >= warm { r } else { 0 };
            }
            if !gated {
                continue;
            }
            let s = sock(5201, 1, queued * TRUESIZE, sock_drops);
            let dec = d.decide(&[s], &gate.take_counts());
            apply(&gate, &dec.ports);
        }
        (got, lost_sock, lost_gate)
    }

    #[test]
    fn a_steady_slow_receiver_is_fed_at_its_rate_and_the_switch_takes_the_rest() {
        // 300 offered, 120 read a millisecond.
        let (got, sock, gate) = model(true, 300, |_| 120, 2000, 100);
        assert_eq!(got, 120 * 1900, "the receiver never starves");
        assert!(
            gate >= 9 * (sock + gate) / 10,
            "the switch took {gate} of {} lost",
            sock + gate
        );
    }

    #[test]
    fn a_socket_nobody_reads_gets_nothing_and_one_that_keeps_up_is_never_throttled() {
        let (got, sock, gate) = model(true, 300, |_| 0, 500, 50);
        assert_eq!(got, 0);
        assert!(sock * 100 <= sock + gate, "{sock} dropped by the socket");
        let (got, sock, gate) = model(true, 100, |_| 120, 500, 0);
        assert_eq!((got, sock, gate), (100 * 500, 0, 0));
    }

    #[test]
    fn a_receiver_that_reads_in_bursts_gets_as_much_as_without_a_gate() {
        // On for 4 ms at 400 a millisecond, off for 4 ms.
        let bursty = |t: u64| if t % 8 < 4 { 400 } else { 0 };
        let (got, sock, gate) = model(true, 300, bursty, 2000, 0);
        let (ungated, _, _) = model(false, 300, bursty, 2000, 0);
        assert!(
            got * 100 >= ungated * 95,
            "read {got} against {ungated} without the gate ({sock} and {gate} dropped)"
        );
    }

    #[test]
    fn at_most_gate_ports_are_throttled_in_the_order_they_began() {
        let mut d = Decider::default();
        let full = |ports: std::ops::Range<u16>| -> Vec<UdpSock> {
            ports.map(|p| sock(p, u32::from(p), 7900, 0)).collect()
        };
        // Ports 20..29 under pressure first, then 1..4 as well: the first eight are
        // throttled, the rest wait.
        d.decide(&full(20..30), &[]);
        let first = d.decide(&full(20..30), &[]);
        assert_eq!(first.began, GATE_PORTS as u64);
        let want: Vec<(u16, u32)> = (20..28).map(|p| (p, ADMIT_ALL)).collect();
        assert_eq!(first.ports, want);
        let mut all = full(1..5);
        all.extend(full(20..30));
        d.decide(&all, &[]);
        let later = d.decide(&all, &[]);
        assert_eq!((later.ports, later.began), (want, 0), "no slot for 1..4");
        // Port 20's sockets go: a slot frees, and the lowest waiting port takes it, last.
        let rest: Vec<UdpSock> = all.into_iter().filter(|s| s.port != 20).collect();
        let next = d.decide(&rest, &[]);
        assert_eq!(next.began, 1);
        assert_eq!(next.ports.len(), GATE_PORTS);
        assert_eq!(next.ports.last(), Some(&(1, ADMIT_ALL)));
        assert_eq!(next.ports[0], (21, ADMIT_ALL));
    }

    #[test]
    fn a_reuseport_group_takes_the_drops_of_all_its_sockets() {
        let mut d = Decider::default();
        let group =
            |rmem: u32, drops: [u32; 2]| [sock(53, 1, rmem, drops[0]), sock(53, 2, rmem, drops[1])];
        d.decide(&group(7900, [0, 0]), &[]);
        d.decide(&group(7900, [0, 0]), &[]);
        let mut drops = [0, 0];
        let mut last = Decision::default();
        for _ in 0..SHARE_WINDOW {
            drops = [drops[0] + 300, drops[1] + 200];
            last = d.decide(&group(7900, drops), &[counts(53, 1000, 1000)]);
            assert_eq!(last.drops, 500);
        }
        assert_eq!(last.ports, vec![(53, ADMIT_ALL / 2)]);
    }

    #[test]
    fn a_container_on_two_networks_is_one_sample_and_one_decision() {
        let (a, b) = (ReceiverGate::new(), ReceiverGate::new());
        a.set(&[(53, ADMIT_ALL / 2)]);
        b.set(&[(53, ADMIT_ALL / 2), (5201, 0)]);
        let f = datagram(53);
        for _ in 0..4 {
            a.blocks(&f);
        }
        for _ in 0..6 {
            b.blocks(&f);
        }
        let merged = merged_counts(&[&Arc::new(a), &Arc::new(b)]);
        assert_eq!(
            merged,
            vec![counts(53, 10, 5), counts(5201, 0, 0)],
            "offered and admitted added by UDP port"
        );
        // A decision goes to every gate: the shares alone when the ports are the same (the
        // counts go on), the whole set otherwise.
        let g = ReceiverGate::new();
        apply(&g, &[(53, ADMIT_ALL)]);
        for _ in 0..3 {
            g.blocks(&f);
        }
        apply(&g, &[(53, ADMIT_ALL / 4)]);
        assert_eq!(g.ports(), vec![(53, ADMIT_ALL / 4)]);
        assert_eq!(
            g.take_counts(),
            vec![counts(53, 3, 3)],
            "kept across a new share"
        );
        apply(&g, &[(5201, 0), (53, 0)]);
        assert_eq!(g.take_counts(), vec![counts(5201, 0, 0), counts(53, 0, 0)]);
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
