//! Schedulers: which backend a new connection goes to, as IPVS decides it.
//!
//! Called by the balancer only on a connection-tracking miss for a service (a new connection),
//! never for established flows. Each algorithm follows its IPVS module: `rr` (ip_vs_rr.c),
//! `wrr` (ip_vs_wrr.c: gcd step, `mw` lowered by `di - 1`), `lc` and `wlc` (overhead =
//! active * 256 + inactive), `sh` (ip_vs_sh.c: 256 buckets filled by weight, `hash_32` of the
//! source) and `mh` (ip_vs_mh.c: Maglev, a 4093-entry lookup table built from per-backend
//! permutations, so a backend leaving only moves its own clients). `sh` and `mh` always fall
//! back to another bucket when the chosen backend is drained (as IPVS with `sh-fallback` /
//! `mh-fallback`), so weight 0 never black-holes a client. No scheduler allocates per call.

use core::fmt;
use core::str::FromStr;
use std::hash::BuildHasher;

/// Source-hashing table size (IP_VS_SH_TAB_BITS = 8).
pub const SH_TAB_BITS: u32 = 8;
/// Source-hashing table entries.
pub const SH_TAB_SIZE: usize = 1 << SH_TAB_BITS;
/// Maglev lookup table size: a prime (IPVS default, CONFIG_IP_VS_MH_TAB_INDEX = 12).
pub const MH_TAB_SIZE: usize = 4093;
/// IP_VS_MH_TAB_BITS: weights above 2^6 times the gcd are scaled down.
pub const MH_TAB_BITS: u32 = 6;
/// Linux `hash_32` multiplier (GOLDEN_RATIO_32).
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;
/// Connection overhead weight of an active (established) connection versus an inactive one.
pub const ACTIVE_CONN_SHIFT: u32 = 8;
/// Fixed Maglev hash keys: every node builds the same table from the same backends.
const MH_SEED1: u64 = 0x6d61_676c_6576_0001;
const MH_SEED2: u64 = 0x6d61_676c_6576_0002;
/// Empty table bucket.
const NO_DEST: u16 = u16::MAX;

/// A scheduling algorithm, by its ipvsadm name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// Round robin.
    #[default]
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection.
    Wlc,
    /// Source hashing.
    Sh,
    /// Maglev hashing.
    Mh,
}

impl SchedulerKind {
    /// Every scheduler, in the order messages list them.
    pub const ALL: [SchedulerKind; 6] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Sh,
        SchedulerKind::Mh,
    ];

    /// The ipvsadm name (`rr`, `wrr`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Mh => "mh",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown scheduler name (the cluster file's message: `unknown scheduler "x" (known: rr, ...)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerError(pub String);

impl std::error::Error for SchedulerError {}

impl fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown scheduler {:?} (known: ", self.0)?;
        for (i, k) in SchedulerKind::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(k.name())?;
        }
        f.write_str(")")
    }
}

impl FromStr for SchedulerKind {
    type Err = SchedulerError;
    fn from_str(s: &str) -> Result<Self, SchedulerError> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| SchedulerError(s.to_string()))
    }
}

/// The ordered backends of one service, as a scheduler sees them.
pub trait DestSet {
    /// Number of backends.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Current weight (0 = drained).
    fn weight(&self, i: usize) -> u32;
    /// Last non-zero weight (Maglev keeps a drained backend's buckets).
    fn last_weight(&self, i: usize) -> u32;
    /// Active (established) connections.
    fn active(&self, i: usize) -> u32;
    /// Inactive connections.
    fn inactive(&self, i: usize) -> u32;
    /// Backend address and port (hashed by Maglev).
    fn addr(&self, i: usize) -> (u32, u16);
}

/// `ip_vs_dest_conn_overhead`: active connections weigh 256 inactive ones.
#[inline]
fn overhead(d: &impl DestSet, i: usize) -> u64 {
    (u64::from(d.active(i)) << ACTIVE_CONN_SHIFT) + u64::from(d.inactive(i))
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// WRR position (`struct ip_vs_wrr_mark`); `cl == None` is the list head.
#[derive(Clone, Copy, Debug, Default)]
struct WrrMark {
    cl: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

/// One service's scheduler and its state.
#[derive(Clone, Debug)]
pub struct Scheduler {
    kind: SchedulerKind,
    /// rr position (`svc->sched_data`), `None` = list head.
    rr_cl: Option<usize>,
    wrr: WrrMark,
    /// sh / mh lookup table: backend positions, [`NO_DEST`] for none.
    table: Vec<u16>,
}

impl Scheduler {
    /// A scheduler of `kind` for an empty service.
    pub fn new(kind: SchedulerKind) -> Scheduler {
        let size = match kind {
            SchedulerKind::Sh => SH_TAB_SIZE,
            SchedulerKind::Mh => MH_TAB_SIZE,
            _ => 0,
        };
        Scheduler {
            kind,
            rr_cl: None,
            wrr: WrrMark::default(),
            table: vec![NO_DEST; size],
        }
    }

    /// The algorithm.
    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// Tell the scheduler the backend set changed (control plane, between batches). `removed`
    /// is the position a backend was just removed from, if any; adds append at the end.
    pub fn dests_changed(&mut self, d: &impl DestSet, removed: Option<usize>) {
        if let Some(r) = removed {
            // ip_vs_rr_del_dest: a position on the removed backend moves to the previous one.
            self.rr_cl = match self.rr_cl {
                Some(c) if c == r => r.checked_sub(1),
                Some(c) if c > r => Some(c - 1),
                other => other,
            };
        }
        match self.kind {
            SchedulerKind::Wrr => self.wrr_changed(d),
            SchedulerKind::Sh => self.sh_reassign(d),
            SchedulerKind::Mh => self.mh_reassign(d),
            _ => {}
        }
    }

    /// Pick a backend position for a new connection from `src:sport`, or `None` if every
    /// backend is drained (or there are none).
    pub fn schedule(&mut self, d: &impl DestSet, src: u32, sport: u16) -> Option<usize> {
        let _ = sport; // sh/mh hash the source address only (no sh-port / mh-port flag)
        match self.kind {
            SchedulerKind::Rr => self.rr(d),
            SchedulerKind::Wrr => self.wrr(d),
            SchedulerKind::Lc => lc(d),
            SchedulerKind::Wlc => wlc(d),
            SchedulerKind::Sh => self.hash_lookup(d, src, sh_hash),
            SchedulerKind::Mh => self.hash_lookup(d, src, mh_hash),
        }
    }

    fn rr(&mut self, d: &impl DestSet) -> Option<usize> {
        let n = d.len();
        let start = self.rr_cl.map_or(0, |c| c + 1);
        let wrap_end = self.rr_cl.map_or(0, |c| c + 1).min(n);
        for i in (start..n).chain(0..wrap_end) {
            if d.weight(i) > 0 {
                self.rr_cl = Some(i);
                return Some(i);
            }
        }
        None
    }

    fn wrr_changed(&mut self, d: &impl DestSet) {
        let mut g = 0;
        let mut max = 0;
        for i in 0..d.len() {
            let w = d.weight(i);
            if w > 0 {
                g = if g > 0 { gcd(w, g) } else { w };
            }
            max = max.max(w);
        }
        let m = &mut self.wrr;
        m.cl = None;
        m.di = i64::from(if g > 0 { g } else { 1 });
        m.mw = i64::from(max) - (m.di - 1);
        if m.cw > m.mw || m.cw == 0 {
            m.cw = m.mw;
        } else if m.di > 1 {
            m.cw = (m.cw / m.di) * m.di + 1;
        }
    }

    fn wrr(&mut self, d: &impl DestSet) -> Option<usize> {
        let n = d.len();
        let m = &mut self.wrr;
        if m.mw <= 0 {
            return None;
        }
        let last = m.cl;
        let (mut stop, mut last_pass, mut restarted) = (None, false, false);
        let mut dest = m.cl;
        loop {
            let mut i = dest.map_or(0, |x| x + 1);
            while i < n {
                if i64::from(d.weight(i)) >= m.cw {
                    m.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    m.cl = Some(i);
                    return None;
                }
                i += 1;
            }
            dest = None;
            m.cw -= m.di;
            if m.cw <= 0 {
                m.cw = m.mw;
                if last_pass || last.is_none() {
                    m.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = m.cw <= m.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }

    fn sh_reassign(&mut self, d: &impl DestSet) {
        let n = d.len();
        let (mut p, mut count) = (0usize, 0u32);
        for b in self.table.iter_mut() {
            if n == 0 {
                *b = NO_DEST;
                continue;
            }
            *b = p as u16;
            count += 1;
            if count >= d.weight(p) {
                p = (p + 1) % n;
                count = 0;
            }
        }
    }

    fn mh_reassign(&mut self, d: &impl DestSet) {
        let n = d.len();
        let mut g = 0;
        let mut max = 0;
        for i in 0..n {
            let w = d.last_weight(i);
            if w > 0 {
                g = if g > 0 { gcd(w, g) } else { w };
                max = max.max(w);
            }
        }
        self.table.fill(NO_DEST);
        if g == 0 {
            return;
        }
        let rshift = (32 - (max / g).leading_zeros()).saturating_sub(MH_TAB_BITS);
        // Permutation setup (ip_vs_mh_permutate): offset, skip and turns per backend.
        let setup: Vec<(usize, usize, u32)> = (0..n)
            .map(|i| {
                let (a, p) = d.addr(i);
                let offset = mh_key(MH_SEED1, a, p, 0) as usize % MH_TAB_SIZE;
                let skip = mh_key(MH_SEED2, a, p, 0) as usize % (MH_TAB_SIZE - 1) + 1;
                let lw = d.last_weight(i);
                let turns = match (lw / g) >> rshift {
                    0 => u32::from(lw != 0),
                    t => t,
                };
                (offset, skip, turns)
            })
            .collect();
        let mut perm: Vec<usize> = setup.iter().map(|s| s.0).collect();
        let mut filled = 0;
        while filled < MH_TAB_SIZE {
            for (i, &(_, skip, turns)) in setup.iter().enumerate() {
                for _ in 0..turns {
                    let mut c = perm[i];
                    while self.table[c] != NO_DEST {
                        c += skip;
                        if c >= MH_TAB_SIZE {
                            c -= MH_TAB_SIZE;
                        }
                    }
                    perm[i] = c;
                    self.table[c] = i as u16;
                    filled += 1;
                    if filled == MH_TAB_SIZE {
                        return;
                    }
                }
            }
        }
    }

    /// sh/mh lookup with fallback to the next buckets when the chosen backend is drained.
    fn hash_lookup(
        &self,
        d: &impl DestSet,
        src: u32,
        hash: fn(u32, u32) -> usize,
    ) -> Option<usize> {
        let size = self.table.len();
        let ihash = hash(src, 0) % size;
        let first = self.table[ihash];
        if first == NO_DEST {
            return None;
        }
        if d.weight(usize::from(first)) > 0 {
            return Some(usize::from(first));
        }
        for offset in 0..size {
            let roffset = ((offset + ihash) % size) as u32;
            let b = self.table[hash(src, roffset) % size];
            if b == NO_DEST {
                return None;
            }
            if d.weight(usize::from(b)) > 0 {
                return Some(usize::from(b));
            }
        }
        None
    }
}

/// `ip_vs_sh_hashkey`: `offset + hash_32(addr, 8)`.
fn sh_hash(src: u32, offset: u32) -> usize {
    (offset.wrapping_add(src.wrapping_mul(GOLDEN_RATIO_32) >> (32 - SH_TAB_BITS)) as usize)
        & (SH_TAB_SIZE - 1)
}

fn mh_key(seed: u64, addr: u32, port: u16, offset: u32) -> u32 {
    let v = offset.wrapping_add(u32::from(port)).wrapping_add(addr);
    foldhash::fast::FixedState::with_seed(seed).hash_one(v) as u32
}

/// `ip_vs_mh_hashkey` of a client source address.
fn mh_hash(src: u32, offset: u32) -> usize {
    mh_key(MH_SEED1, src, 0, offset) as usize
}

fn lc(d: &impl DestSet) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for i in 0..d.len() {
        if d.weight(i) == 0 {
            continue;
        }
        let doh = overhead(d, i);
        if least.is_none_or(|(_, loh)| doh < loh) {
            least = Some((i, doh));
        }
    }
    least.map(|(i, _)| i)
}

fn wlc(d: &impl DestSet) -> Option<usize> {
    let n = d.len();
    let first = (0..n).find(|&i| d.weight(i) > 0)?;
    let (mut least, mut loh) = (first, overhead(d, first));
    for i in first + 1..n {
        let doh = overhead(d, i);
        if u128::from(loh) * u128::from(d.weight(i)) > u128::from(doh) * u128::from(d.weight(least))
        {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Default)]
    struct TestDests(Vec<(u32, u32, u32, u32)>); // weight, last_weight, active, inactive

    impl TestDests {
        fn weights(ws: &[u32]) -> Self {
            TestDests(ws.iter().map(|&w| (w, w.max(1), 0, 0)).collect())
        }
    }

    impl DestSet for TestDests {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn weight(&self, i: usize) -> u32 {
            self.0[i].0
        }
        fn last_weight(&self, i: usize) -> u32 {
            self.0[i].1
        }
        fn active(&self, i: usize) -> u32 {
            self.0[i].2
        }
        fn inactive(&self, i: usize) -> u32 {
            self.0[i].3
        }
        fn addr(&self, i: usize) -> (u32, u16) {
            (0x0a00_0900 + i as u32 * 7 + 1, 80)
        }
    }

    /// Schedule `n` connections, each counted inactive on its backend; return per-backend counts.
    fn run(s: &mut Scheduler, d: &mut TestDests, n: usize) -> Vec<usize> {
        let mut counts = vec![0; d.len()];
        for c in 0..n {
            let i = s
                .schedule(d, 0xc000_0200 + c as u32 * 13, c as u16)
                .expect("a backend");
            counts[i] += 1;
            d.0[i].3 += 1;
        }
        counts
    }

    #[test]
    fn rr_30_over_3_is_10_each_in_order() {
        let mut d = TestDests::weights(&[1, 1, 1]);
        let mut s = Scheduler::new(SchedulerKind::Rr);
        s.dests_changed(&d, None);
        let seq: Vec<usize> = (0..6).map(|_| s.schedule(&d, 1, 1).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(run(&mut s, &mut d, 30), vec![10, 10, 10]);
    }

    #[test]
    fn rr_skips_drained_and_survives_removal() {
        let mut d = TestDests::weights(&[1, 0, 1]);
        let mut s = Scheduler::new(SchedulerKind::Rr);
        s.dests_changed(&d, None);
        assert_eq!(run(&mut s, &mut d, 10), vec![5, 0, 5]);
        // Last pick was position 2; remove it: the position moves back to 1, next pick wraps to 0.
        d.0.remove(2);
        s.dests_changed(&d, Some(2));
        assert_eq!(s.schedule(&d, 1, 1), Some(0));
        d.0[0].0 = 0;
        assert_eq!(s.schedule(&d, 1, 1), None);
    }

    #[test]
    fn wrr_follows_ipvs_sequence() {
        let d = TestDests::weights(&[4, 3, 2]);
        let mut s = Scheduler::new(SchedulerKind::Wrr);
        s.dests_changed(&d, None);
        let seq: Vec<usize> = (0..18).map(|_| s.schedule(&d, 1, 1).unwrap()).collect();
        assert_eq!(
            seq,
            vec![0, 0, 1, 0, 1, 2, 0, 1, 2, 0, 0, 1, 0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn wrr_all_drained_is_none() {
        let d = TestDests::weights(&[0, 0]);
        let mut s = Scheduler::new(SchedulerKind::Wrr);
        s.dests_changed(&d, None);
        assert_eq!(s.schedule(&d, 1, 1), None);
    }

    #[test]
    fn lc_prefers_fewest_and_weighs_active() {
        let mut d = TestDests::weights(&[1, 1, 1]);
        d.0[0].2 = 1; // one active conn outweighs 255 inactive
        d.0[1].3 = 200;
        let s = &mut Scheduler::new(SchedulerKind::Lc);
        assert_eq!(s.schedule(&d, 1, 1), Some(2));
        d.0[2].3 = 201;
        assert_eq!(s.schedule(&d, 1, 1), Some(1));
    }

    #[test]
    fn wlc_ignores_drained() {
        let d = TestDests::weights(&[0, 2]);
        assert_eq!(
            Scheduler::new(SchedulerKind::Wlc).schedule(&d, 1, 1),
            Some(1)
        );
    }

    #[test]
    fn sh_is_sticky_and_weighted() {
        let d = TestDests::weights(&[1, 2, 1]);
        let mut s = Scheduler::new(SchedulerKind::Sh);
        s.dests_changed(&d, None);
        let mut buckets = [0usize; 3];
        for &b in &s.table {
            buckets[usize::from(b)] += 1;
        }
        assert_eq!(buckets, [64, 128, 64]);
        for src in 0..100u32 {
            assert_eq!(s.schedule(&d, src, 1), s.schedule(&d, src, 2));
        }
    }

    #[test]
    fn sh_and_mh_fall_back_from_drained() {
        for kind in [SchedulerKind::Sh, SchedulerKind::Mh] {
            let mut d = TestDests::weights(&[1, 1, 1]);
            let mut s = Scheduler::new(kind);
            s.dests_changed(&d, None);
            d.0[1].0 = 0;
            s.dests_changed(&d, None);
            for src in 0..1000u32 {
                let b = s.schedule(&d, src.wrapping_mul(2_654_435_761), 0).unwrap();
                assert_ne!(b, 1, "{kind}");
            }
        }
    }

    #[test]
    fn mh_is_balanced_and_minimally_disrupted() {
        let d = TestDests::weights(&[1; 5]);
        let mut s = Scheduler::new(SchedulerKind::Mh);
        s.dests_changed(&d, None);
        let mut per = [0usize; 5];
        for &b in &s.table {
            per[usize::from(b)] += 1;
        }
        // Equal weights: every backend owns floor or ceil of 4093 / 5 buckets.
        assert!(
            per.iter()
                .all(|&c| c == MH_TAB_SIZE / 5 || c == MH_TAB_SIZE / 5 + 1),
            "{per:?}"
        );
        let clients: Vec<u32> = (0..20_000u32)
            .map(|c| 0x0a00_0000 ^ c.wrapping_mul(0x9e37_79b9))
            .collect();
        let before: Vec<usize> = clients
            .iter()
            .map(|&c| s.schedule(&d, c, 0).unwrap())
            .collect();
        // Remove backend 2: positions above it shift down by one.
        let mut d2 = d.clone();
        d2.0.remove(2);
        // Keep the remaining backends' identities (addresses) as before.
        struct Shifted<'a>(&'a TestDests);
        impl DestSet for Shifted<'_> {
            fn len(&self) -> usize {
                self.0.len() - 1
            }
            fn weight(&self, i: usize) -> u32 {
                self.0.weight(if i >= 2 { i + 1 } else { i })
            }
            fn last_weight(&self, i: usize) -> u32 {
                self.0.last_weight(if i >= 2 { i + 1 } else { i })
            }
            fn active(&self, _: usize) -> u32 {
                0
            }
            fn inactive(&self, _: usize) -> u32 {
                0
            }
            fn addr(&self, i: usize) -> (u32, u16) {
                self.0.addr(if i >= 2 { i + 1 } else { i })
            }
        }
        let sh = Shifted(&d);
        s.dests_changed(&sh, Some(2));
        let mut moved = 0;
        let mut kept_total = 0;
        for (c, &b) in clients.iter().zip(&before) {
            let after = s.schedule(&sh, *c, 0).unwrap();
            let after_orig = if after >= 2 { after + 1 } else { after };
            if b != 2 {
                kept_total += 1;
                moved += usize::from(after_orig != b);
            }
        }
        // Maglev: clients of surviving backends almost all stay (the paper: a few percent at most).
        assert!(
            moved * 100 < kept_total * 5,
            "moved {moved} of {kept_total}"
        );
    }

    proptest! {
        #[test]
        fn wrr_share_matches_weights(ws in proptest::collection::vec(0u32..6, 1..6)) {
            let d = TestDests::weights(&ws);
            let mut s = Scheduler::new(SchedulerKind::Wrr);
            s.dests_changed(&d, None);
            let total: u32 = ws.iter().sum();
            let mut counts = vec![0u32; ws.len()];
            for _ in 0..total * 3 {
                match s.schedule(&d, 1, 1) {
                    Some(i) => counts[i] += 1,
                    None => prop_assert_eq!(total, 0),
                }
            }
            let expect: Vec<u32> = ws.iter().map(|w| w * 3).collect();
            prop_assert_eq!(counts, expect);
        }

        #[test]
        fn rr_and_lc_spread_evenly(n in 1usize..8, rounds in 1usize..10) {
            for kind in [SchedulerKind::Rr, SchedulerKind::Lc, SchedulerKind::Wlc] {
                let mut d = TestDests::weights(&vec![1; n]);
                let mut s = Scheduler::new(kind);
                s.dests_changed(&d, None);
                let counts = run(&mut s, &mut d, n * rounds);
                prop_assert!(counts.iter().all(|&c| c == rounds), "{:?} {:?}", kind, counts);
            }
        }

        #[test]
        fn wlc_share_matches_weights(ws in proptest::collection::vec(1u32..5, 1..5)) {
            let mut d = TestDests::weights(&ws);
            let mut s = Scheduler::new(SchedulerKind::Wlc);
            let total: u32 = ws.iter().sum();
            let counts = run(&mut s, &mut d, total as usize * 4);
            for (c, w) in counts.iter().zip(&ws) {
                prop_assert!((*c as i64 - i64::from(w * 4)).abs() <= 1, "{:?} {:?}", counts, ws);
            }
        }
    }
}
