//! The receiver gate: early drop for a container that cannot keep up (issue 20, part 3).
//!
//! Where it sits: in the output step, between the stages' decision and a local port's transmit
//! batch. When a container's UDP socket is full, the kernel drops every further datagram at
//! that socket, after the whole path has been paid for: this node's receive, the stages, the
//! transmit into the container, and the container kernel's IP and UDP receive. A gate holds the
//! UDP ports whose sockets in the container overflow, as a watcher outside the packet path saw
//! them (`vxmesh::node::receivers`: `sock_diag` in the container's namespace, every
//! millisecond while datagrams flow to it), each with the share of its datagrams the receiver
//! takes (the admit share). The output step lets that share through, spread evenly, and drops
//! the rest before they are queued (`drop_receiver_full`, one counted drop instead of a silent
//! one in the container). A share of 0 drops everything to the port: a socket nobody reads.
//!
//! ```text
//! ... ─► l2-fwd ─► output ─┬─ UDP to a throttled port of p, beyond its share ─► drop_receiver_full
//!                          └─ anything else ─────────────────────────────────► p's transmit batch
//! watcher thread: sock_diag(container netns) + take_counts() ─► set / set_admit   (off the packet path)
//! ```
//!
//! Lock-free: the watcher writes a handful of atomics; the output step reads one when the gate
//! is empty (the common case), at most [`GATE_PORTS`] more when it is not, and adds to two
//! counters of a throttled port per datagram to it (the share's running sum and the offered
//! count, which the watcher takes to see what the receiver got). A datagram that meets the
//! gate while the watcher rewrites it may be dropped or let through wrongly: the gate is a rate
//! decision, not a filter, and the next sample puts it right.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::wire::{ethernet, ipv4, udp};

/// How many throttled ports a gate holds; a container with more overflowing UDP ports than this
/// gets the first ones to overflow throttled, and the others dropped by its kernel as without a
/// gate until a slot is free.
pub const GATE_PORTS: usize = 8;

/// The admit fraction that lets every datagram through, in 1/65536ths.
pub const ADMIT_ALL: u32 = 1 << 16;

/// One throttled UDP port: its number, the share of its datagrams to let through, and what
/// the output step did with them since the watcher last took the counts.
#[derive(Debug, Default)]
struct Slot {
    port: AtomicU32,
    /// The share admitted, in 1/[`ADMIT_ALL`]ths (0: none, [`ADMIT_ALL`]: all).
    admit: AtomicU32,
    /// Each datagram adds `admit`; it is let through when the sum crosses a multiple of
    /// [`ADMIT_ALL`] (so the datagrams let through are spread evenly, not in runs), and the
    /// crossings are the count of datagrams let through.
    acc: AtomicU64,
    /// Datagrams to this port, let through or not.
    offered: AtomicU64,
}

/// What the output step did with one throttled port's datagrams since the last
/// [`ReceiverGate::take_counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCounts {
    /// The UDP destination port.
    pub port: u16,
    /// Datagrams to it.
    pub offered: u64,
    /// Of those, let through to the container.
    pub admitted: u64,
}

/// The UDP ports of one container port whose receivers overflow, each with the share of its
/// datagrams to let through (see the module doc).
#[derive(Debug, Default)]
pub struct ReceiverGate {
    /// How many of `slots` hold a port (0: the gate is open).
    len: AtomicU32,
    /// The throttled UDP destination ports.
    slots: [Slot; GATE_PORTS],
    /// Set by the output step when a UDP datagram went toward this port since the watcher last
    /// looked: the watcher samples only the containers that are being sent to.
    touched: AtomicBool,
    /// The watcher's counters of this port ([`ReceiverGate::counters`]).
    samples: AtomicU64,
    closed: AtomicU64,
    socket_drops: AtomicU64,
    dumps: AtomicU64,
}

/// The names of a gate's counters, among its port's own counters in the switch's stats. Every
/// worker of a node holds the same gate, so adding workers' stats takes these once, not once
/// per worker (`SwitchStats::add`).
pub const GATE_COUNTERS: [&str; 4] = [
    "receiver_samples",
    "receiver_gate_closed",
    "receiver_socket_drops",
    "receiver_dumps",
];

impl ReceiverGate {
    /// An open gate.
    pub fn new() -> ReceiverGate {
        ReceiverGate::default()
    }

    /// Whether to drop `frame` (Ethernet): a UDP datagram to a throttled port that its share
    /// does not let through. Marks the gate touched for any unfragmented (or first-fragment)
    /// IPv4 UDP datagram. Called per frame by the output step: a few loads, and two atomic
    /// adds for a datagram to a throttled port; no allocation.
    #[inline]
    pub fn blocks(&self, frame: &[u8]) -> bool {
        let Some(dport) = udp_dst_port(frame) else {
            return false;
        };
        if !self.touched.load(Ordering::Relaxed) {
            self.touched.store(true, Ordering::Relaxed);
        }
        let n = (self.len.load(Ordering::Acquire) as usize).min(GATE_PORTS);
        let Some(s) = self.slots[..n]
            .iter()
            .find(|s| s.port.load(Ordering::Relaxed) == u32::from(dport))
        else {
            return false;
        };
        s.offered.fetch_add(1, Ordering::Relaxed);
        let admit = u64::from(s.admit.load(Ordering::Relaxed).min(ADMIT_ALL));
        let before = s.acc.fetch_add(admit, Ordering::Relaxed);
        let one = u64::from(ADMIT_ALL);
        (before + admit) / one == before / one
    }

    /// Throttle exactly `ports`, each with its admit share in 1/[`ADMIT_ALL`]ths (the first
    /// [`GATE_PORTS`] of them), and start their counts afresh: the watcher's side, when the
    /// set of throttled ports changes. A port's share alone changes with
    /// [`ReceiverGate::set_admit`].
    pub fn set(&self, ports: &[(u16, u32)]) {
        let n = ports.len().min(GATE_PORTS);
        // Shrink first, so a reader never sees a slot being rewritten inside its length.
        self.len.store(0, Ordering::Release);
        for (slot, (p, admit)) in self.slots.iter().zip(&ports[..n]) {
            slot.port.store(u32::from(*p), Ordering::Relaxed);
            slot.admit.store((*admit).min(ADMIT_ALL), Ordering::Relaxed);
            slot.acc.store(0, Ordering::Relaxed);
            slot.offered.store(0, Ordering::Relaxed);
        }
        self.len.store(n as u32, Ordering::Release);
    }

    /// Change throttled port `port`'s admit share; false if it is not throttled.
    pub fn set_admit(&self, port: u16, admit: u32) -> bool {
        let n = (self.len.load(Ordering::Acquire) as usize).min(GATE_PORTS);
        match self.slots[..n]
            .iter()
            .find(|s| s.port.load(Ordering::Relaxed) == u32::from(port))
        {
            Some(s) => {
                s.admit.store(admit.min(ADMIT_ALL), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The throttled ports and their admit shares.
    pub fn ports(&self) -> Vec<(u16, u32)> {
        let n = (self.len.load(Ordering::Acquire) as usize).min(GATE_PORTS);
        self.slots[..n]
            .iter()
            .map(|s| {
                (
                    s.port.load(Ordering::Relaxed) as u16,
                    s.admit.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// What the output step did with each throttled port's datagrams since the last call (or
    /// since [`ReceiverGate::set`]); starts the counts afresh.
    pub fn take_counts(&self) -> Vec<PortCounts> {
        let n = (self.len.load(Ordering::Acquire) as usize).min(GATE_PORTS);
        let one = u64::from(ADMIT_ALL);
        self.slots[..n]
            .iter()
            .map(|s| {
                // Take the whole crossings out of the sum and leave its fraction, so the
                // spreading goes on across the take; an add that lands in between is kept.
                let crossings = s.acc.load(Ordering::Relaxed) / one;
                s.acc.fetch_sub(crossings * one, Ordering::Relaxed);
                PortCounts {
                    port: s.port.load(Ordering::Relaxed) as u16,
                    offered: s.offered.swap(0, Ordering::Relaxed),
                    admitted: crossings,
                }
            })
            .collect()
    }

    /// Whether any port is throttled.
    pub fn is_closed(&self) -> bool {
        self.len.load(Ordering::Acquire) > 0
    }

    /// Whether a UDP datagram went toward the port since the last call; clears the mark.
    pub fn take_touched(&self) -> bool {
        self.touched.swap(false, Ordering::Relaxed)
    }

    /// Count one sample of the container's sockets that found `socket_drops` new drops at
    /// them (the loss the gate did not prevent), and the ports it began to throttle.
    pub fn count_sample(&self, socket_drops: u64, began: u64) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.socket_drops.fetch_add(socket_drops, Ordering::Relaxed);
        self.closed.fetch_add(began, Ordering::Relaxed);
    }

    /// Count a sample that dumped the namespace's UDP sockets (the others looked up the
    /// sockets a dump found, one by one).
    pub fn count_dump(&self) {
        self.dumps.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters, named as [`GATE_COUNTERS`]: samples taken, times a port began to be
    /// throttled, datagrams the container's kernel dropped at full sockets as the samples saw
    /// them, and the samples that were dumps.
    pub fn counters(&self) -> [(&'static str, u64); 4] {
        [
            (GATE_COUNTERS[0], self.samples.load(Ordering::Relaxed)),
            (GATE_COUNTERS[1], self.closed.load(Ordering::Relaxed)),
            (GATE_COUNTERS[2], self.socket_drops.load(Ordering::Relaxed)),
            (GATE_COUNTERS[3], self.dumps.load(Ordering::Relaxed)),
        ]
    }
}

/// The UDP destination port of an untagged Ethernet/IPv4 frame whose payload starts with the
/// UDP header (not a later fragment); `None` for anything else or anything truncated.
#[inline]
pub fn udp_dst_port(frame: &[u8]) -> Option<u16> {
    let eth = ethernet::Packet::new_checked(frame).ok()?;
    if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
        return None;
    }
    let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
    if ip.protocol() != ipv4::PROTO_UDP || ip.frag_offset() != 0 {
        return None;
    }
    let u = udp::Packet::new_checked(ip.payload()).ok()?;
    Some(u.dst_port())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::frames;
    use crate::packet::Mac;

    fn datagram(dport: u16) -> Vec<u8> {
        frames::udp(
            Mac([2, 0, 0, 0, 0, 1]),
            Mac([2, 0, 0, 0, 0, 2]),
            Ipv4Addr::new(10, 0, 9, 11),
            Ipv4Addr::new(10, 0, 9, 21),
            40000,
            dport,
            b"x",
        )
    }

    #[test]
    fn an_open_gate_blocks_nothing_and_marks_udp_only() {
        let g = ReceiverGate::new();
        assert!(!g.blocks(&datagram(5201)));
        assert!(g.take_touched());
        assert!(!g.take_touched());
        let tcp = frames::tcp(
            Mac([2, 0, 0, 0, 0, 1]),
            Mac([2, 0, 0, 0, 0, 2]),
            Ipv4Addr::new(10, 0, 9, 11),
            Ipv4Addr::new(10, 0, 9, 21),
            40000,
            5201,
            frames::TcpFlags::SYN,
            1,
            0,
            &[],
        );
        assert!(!g.blocks(&tcp));
        assert!(!g.take_touched(), "TCP does not mark the gate");
    }

    #[test]
    fn a_gate_blocks_its_ports_only_until_reset() {
        let g = ReceiverGate::new();
        g.set(&[(5201, 0), (53, 0)]);
        assert!(g.is_closed());
        assert_eq!(g.ports(), vec![(5201, 0), (53, 0)]);
        assert!(g.blocks(&datagram(5201)));
        assert!(g.blocks(&datagram(53)));
        assert!(!g.blocks(&datagram(5202)));
        g.set(&[]);
        assert!(!g.is_closed());
        assert!(!g.blocks(&datagram(5201)));
    }

    #[test]
    fn a_gate_holds_at_most_gate_ports() {
        let g = ReceiverGate::new();
        let many: Vec<(u16, u32)> = (1..=20).map(|p| (p, 0)).collect();
        g.set(&many);
        assert_eq!(g.ports().len(), GATE_PORTS);
        assert!(g.blocks(&datagram(GATE_PORTS as u16)));
        assert!(!g.blocks(&datagram(GATE_PORTS as u16 + 1)));
    }

    #[test]
    fn a_share_lets_that_share_through_spread_evenly_and_counts_it() {
        let g = ReceiverGate::new();
        g.set(&[(5201, ADMIT_ALL / 4), (53, ADMIT_ALL)]);
        let f = datagram(5201);
        let passed: Vec<bool> = (0..12).map(|_| !g.blocks(&f)).collect();
        // One in four, never two in a row.
        assert_eq!(passed.iter().filter(|p| **p).count(), 3);
        assert!(passed.windows(2).all(|w| !(w[0] && w[1])), "{passed:?}");
        // A port admitted whole passes everything, and is counted as such.
        assert!((0..5).all(|_| !g.blocks(&datagram(53))));
        assert_eq!(
            g.take_counts(),
            vec![
                PortCounts {
                    port: 5201,
                    offered: 12,
                    admitted: 3
                },
                PortCounts {
                    port: 53,
                    offered: 5,
                    admitted: 5
                },
            ]
        );
        // Counts start afresh; a changed share takes effect at once.
        assert!(g.set_admit(5201, ADMIT_ALL / 2));
        assert!(!g.set_admit(5202, 0), "not throttled");
        let passed = (0..10).filter(|_| !g.blocks(&f)).count();
        assert_eq!(passed, 5);
        assert_eq!(
            g.take_counts()[0],
            PortCounts {
                port: 5201,
                offered: 10,
                admitted: 5
            }
        );
        assert_eq!(g.ports(), vec![(5201, ADMIT_ALL / 2), (53, ADMIT_ALL)]);
    }

    #[test]
    fn a_take_keeps_the_fraction_so_the_spreading_goes_on() {
        let g = ReceiverGate::new();
        g.set(&[(5201, 3 * ADMIT_ALL / 8)]);
        let f = datagram(5201);
        // 2 × 3/8 = 6/8: none through yet; the 6/8 carries over the take.
        assert!(g.blocks(&f) && g.blocks(&f));
        assert_eq!(g.take_counts()[0].admitted, 0);
        assert!(!g.blocks(&f), "6/8 + 3/8 crosses a whole");
        assert_eq!(g.take_counts()[0].admitted, 1);
    }

    #[test]
    fn counts_stay_exact_with_two_workers_and_the_watcher_taking_them() {
        let g = std::sync::Arc::new(ReceiverGate::new());
        g.set(&[(5201, ADMIT_ALL / 2)]);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    let f = datagram(5201);
                    (0..20_000).filter(|_| !g.blocks(&f)).count() as u64
                })
            })
            .collect();
        let (mut offered, mut admitted) = (0, 0);
        while !workers.iter().all(|w| w.is_finished()) {
            for c in g.take_counts() {
                offered += c.offered;
                admitted += c.admitted;
            }
        }
        let passed: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        for c in g.take_counts() {
            offered += c.offered;
            admitted += c.admitted;
        }
        assert_eq!(offered, 40_000);
        assert_eq!(passed, 20_000, "half of them, exactly");
        assert_eq!(admitted, passed, "the counts say what passed");
    }

    #[test]
    fn later_fragments_and_truncated_frames_are_not_udp() {
        let mut f = datagram(5201);
        assert_eq!(udp_dst_port(&f), Some(5201));
        assert_eq!(udp_dst_port(&f[..14 + 20 + 4]), None, "UDP header cut");
        assert_eq!(udp_dst_port(&f[..10]), None);
        // Fragment offset 1 (8 bytes in): the payload is not a UDP header.
        f[14 + 7] = 1;
        assert_eq!(udp_dst_port(&f), None);
        let mut arp = datagram(5201);
        arp[12..14].copy_from_slice(&ethernet::ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(udp_dst_port(&arp), None);
    }
}
