//! The forwarding database: (network, MAC) -> local port or remote VTEP. Read by `l2-learn`
//! (source MACs of local ports) and `l2-fwd` (destination MACs), filled statically with the
//! remote endpoints of the cluster file, and listed by `vxmesh fdb show`.
//!
//! Semantics follow the Linux bridge (`bridge fdb`): learned entries age out (300 s by default)
//! and move when a MAC shows up on another port (counted); static entries (remote endpoints,
//! `bridge fdb append ... dst VTEP` in Docker) never age and are never moved by learning. The
//! table is bounded: once `max_learned` learned entries exist a new MAC is not learned (counted,
//! the frame is still forwarded, as unknown unicast to it is flooded); static entries have their
//! own budget and are exempt. One entry is 16 bytes in a table kept at most half full.

use crate::env::Time;
use crate::packet::{Mac, NetId, PortId, VtepId};
use crate::table::{FlatTable, TableKey};

/// Default learned-entry aging time, as the Linux bridge's `ageing_time`.
pub const DEFAULT_AGING_SECS: u32 = 300;
/// Default bound on learned entries.
pub const DEFAULT_MAX_LEARNED: usize = 64 * 1024;
/// Default bound on static entries.
pub const DEFAULT_MAX_STATIC: usize = 64 * 1024;

/// FDB sizing and aging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbConfig {
    /// Most learned entries.
    pub max_learned: usize,
    /// Most static entries.
    pub max_static: usize,
    /// Seconds a learned entry lives without traffic.
    pub aging_secs: u32,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            max_learned: DEFAULT_MAX_LEARNED,
            max_static: DEFAULT_MAX_STATIC,
            aging_secs: DEFAULT_AGING_SECS,
        }
    }
}

/// Where frames to a MAC go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FdbDest {
    /// A local port.
    Local(PortId),
    /// A remote VTEP (encapsulate).
    Remote(VtepId),
}

/// The key: network in the top 16 bits, MAC in the low 48.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdbKey(u64);

impl FdbKey {
    /// The key of (`net`, `mac`).
    #[inline]
    pub fn new(net: NetId, mac: Mac) -> FdbKey {
        FdbKey((u64::from(net.0) << 48) | mac.to_u64())
    }
    /// The network.
    pub fn net(self) -> NetId {
        NetId((self.0 >> 48) as u16)
    }
    /// The MAC.
    pub fn mac(self) -> Mac {
        let b = self.0.to_be_bytes();
        Mac([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl TableKey for FdbKey {
    // Network 0xffff with the broadcast MAC: never stored (group MACs are never entries).
    const EMPTY: FdbKey = FdbKey(u64::MAX);
}

const DEST_REMOTE: u32 = 1 << 31;
const DEST_STATIC: u32 = 1 << 30;
const DEST_ID_MASK: u32 = 0xffff;

/// The stored value: destination and flags packed in 32 bits, last-seen second in 32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdbVal {
    dest: u32,
    seen: u32,
}

impl FdbVal {
    fn new(dest: FdbDest, is_static: bool, now: Time) -> FdbVal {
        let d = match dest {
            FdbDest::Local(p) => u32::from(p.0),
            FdbDest::Remote(v) => DEST_REMOTE | u32::from(v.0),
        };
        FdbVal {
            dest: d | if is_static { DEST_STATIC } else { 0 },
            seen: now.secs() as u32,
        }
    }
    /// Where frames go.
    #[inline]
    pub fn dest(self) -> FdbDest {
        let id = (self.dest & DEST_ID_MASK) as u16;
        if self.dest & DEST_REMOTE != 0 {
            FdbDest::Remote(VtepId(id))
        } else {
            FdbDest::Local(PortId(id))
        }
    }
    /// Whether the entry is static.
    #[inline]
    pub fn is_static(self) -> bool {
        self.dest & DEST_STATIC != 0
    }
    #[inline]
    fn expired(self, now_secs: u32, aging: u32) -> bool {
        !self.is_static() && now_secs.wrapping_sub(self.seen) >= aging
    }
}

/// What learning a source MAC did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A new entry.
    New,
    /// Already known on this port: its age was refreshed.
    Refreshed,
    /// It was on another port: moved here.
    Moved {
        /// Where it was.
        from: FdbDest,
    },
    /// Not learned: the table holds `max_learned` entries.
    Full,
    /// Not learned: a static entry owns this MAC elsewhere.
    StaticConflict,
    /// Not learned: group or all-zero address.
    Invalid,
}

/// A static entry could not be added.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    /// The static budget is used up.
    #[error("static FDB entries full ({0})")]
    StaticFull(usize),
    /// Group and zero MACs cannot be entries.
    #[error("{0} is not a unicast MAC address")]
    NotUnicast(Mac),
}

/// One entry, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbView {
    /// Network.
    pub net: NetId,
    /// MAC.
    pub mac: Mac,
    /// Destination.
    pub dest: FdbDest,
    /// Static (from the cluster file) or learned.
    pub is_static: bool,
    /// Seconds since last seen (learned entries; 0 for static).
    pub age_secs: u32,
}

/// Event counts of the FDB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdbStats {
    /// New learned entries.
    pub learned: u64,
    /// Learned entries that changed port.
    pub moves: u64,
    /// New MACs not learned because the table was full.
    pub full: u64,
    /// Learned entries removed by aging.
    pub aged: u64,
}

/// The forwarding database.
pub struct Fdb {
    table: FlatTable<FdbKey, FdbVal>,
    cfg: FdbConfig,
    learned: usize,
    statics: usize,
    sweep_cursor: usize,
    scratch: Vec<FdbKey>,
    /// Event counters.
    pub stats: FdbStats,
}

impl Fdb {
    /// An empty FDB; its memory is allocated here, once.
    pub fn new(cfg: FdbConfig) -> Fdb {
        Fdb {
            table: FlatTable::with_capacity(cfg.max_learned + cfg.max_static),
            cfg,
            learned: 0,
            statics: 0,
            sweep_cursor: 0,
            scratch: Vec::new(),
            stats: FdbStats::default(),
        }
    }

    /// Hash with `seed` from now on, the entries placed again and the aging sweep started over:
    /// the same table in every run (the simulator's `--seed`). Between batches.
    pub fn reseed(&mut self, seed: u64) {
        self.table.reseed(seed);
        self.sweep_cursor = 0;
    }

    /// The configuration.
    pub fn config(&self) -> FdbConfig {
        self.cfg
    }

    /// Learned entries.
    pub fn learned_len(&self) -> usize {
        self.learned
    }

    /// Static entries.
    pub fn static_len(&self) -> usize {
        self.statics
    }

    /// Bytes of table memory.
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes()
    }

    /// The hash of a key, to prefetch with [`Fdb::prefetch`] a batch ahead of the lookups.
    #[inline]
    pub fn hash(&self, key: FdbKey) -> u64 {
        self.table.hash(&key)
    }

    /// Start loading the slot of a hashed key.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.table.prefetch(hash)
    }

    /// Where frames to `mac` in `net` go; expired learned entries are misses.
    #[inline]
    pub fn lookup(&self, net: NetId, mac: Mac, now: Time) -> Option<FdbDest> {
        let k = FdbKey::new(net, mac);
        self.lookup_hashed(k, self.hash(k), now)
    }

    /// [`lookup`](Self::lookup) with the hash known.
    #[inline]
    pub fn lookup_hashed(&self, key: FdbKey, hash: u64, now: Time) -> Option<FdbDest> {
        let v = *self.table.get_hashed(&key, hash)?;
        (!v.expired(now.secs() as u32, self.cfg.aging_secs)).then(|| v.dest())
    }

    /// Whether `entry` (from [`entry`](Self::entry)) is still in force at `now`: static, or
    /// learned and not aged out. What [`lookup`](Self::lookup) decides, without a second probe.
    #[inline]
    pub fn is_live(&self, entry: FdbVal, now: Time) -> bool {
        !entry.expired(now.secs() as u32, self.cfg.aging_secs)
    }

    /// The raw entry (even if expired), for listings and traces.
    pub fn entry(&self, net: NetId, mac: Mac) -> Option<FdbVal> {
        self.table.get(&FdbKey::new(net, mac)).copied()
    }

    /// Learn that `mac` in `net` is behind local port `port`.
    #[inline]
    pub fn learn(&mut self, net: NetId, mac: Mac, port: PortId, now: Time) -> Learned {
        let k = FdbKey::new(net, mac);
        let h = self.hash(k);
        self.learn_hashed(k, h, port, now)
    }

    /// [`learn`](Self::learn) with the hash known.
    #[inline]
    pub fn learn_hashed(&mut self, key: FdbKey, hash: u64, port: PortId, now: Time) -> Learned {
        self.learn_dest(key, hash, FdbDest::Local(port), now)
    }

    /// Learn that `mac` in `net` is behind remote VTEP `vtep` (learning from decapsulated
    /// traffic, as a kernel VXLAN device without `nolearning` does). Ages like any learned entry.
    pub fn learn_remote(&mut self, net: NetId, mac: Mac, vtep: VtepId, now: Time) -> Learned {
        let k = FdbKey::new(net, mac);
        let h = self.hash(k);
        self.learn_dest(k, h, FdbDest::Remote(vtep), now)
    }

    #[inline]
    fn learn_dest(&mut self, key: FdbKey, hash: u64, here: FdbDest, now: Time) -> Learned {
        if !key.mac().is_unicast() {
            return Learned::Invalid;
        }
        let now_secs = now.secs() as u32;
        let aging = self.cfg.aging_secs;
        if let Some(v) = self.table.get_mut_hashed(&key, hash) {
            if v.is_static() {
                return if v.dest() == here {
                    Learned::Refreshed
                } else {
                    Learned::StaticConflict
                };
            }
            let was = v.dest();
            let expired = v.expired(now_secs, aging);
            if was == here {
                // Write only when the second changed: a store per packet would dirty the line.
                if v.seen != now_secs {
                    v.seen = now_secs;
                }
                return if expired {
                    Learned::New
                } else {
                    Learned::Refreshed
                };
            }
            *v = FdbVal::new(here, false, now);
            if expired {
                return Learned::New;
            }
            self.stats.moves += 1;
            return Learned::Moved { from: was };
        }
        if self.learned >= self.cfg.max_learned {
            self.stats.full += 1;
            return Learned::Full;
        }
        match self
            .table
            .insert_hashed(key, hash, FdbVal::new(here, false, now))
        {
            Ok(_) => {
                self.learned += 1;
                self.stats.learned += 1;
                Learned::New
            }
            Err(_) => {
                self.stats.full += 1;
                Learned::Full
            }
        }
    }

    /// Add or replace a static entry (never aged, never moved by learning).
    pub fn add_static(&mut self, net: NetId, mac: Mac, dest: FdbDest) -> Result<(), FdbError> {
        if !mac.is_unicast() {
            return Err(FdbError::NotUnicast(mac));
        }
        let k = FdbKey::new(net, mac);
        let was_static = self.table.get(&k).map(|v| v.is_static());
        if was_static.is_none() && self.statics >= self.cfg.max_static {
            return Err(FdbError::StaticFull(self.cfg.max_static));
        }
        if was_static == Some(false) {
            // A learned entry gives way to the static one.
            self.table.remove(&k);
            self.learned -= 1;
        }
        self.table
            .insert(k, FdbVal::new(dest, true, Time::default()))
            .map_err(|_| FdbError::StaticFull(self.cfg.max_static))?;
        if was_static != Some(true) {
            self.statics += 1;
        }
        Ok(())
    }

    /// Remove an entry of either kind; returns whether one existed.
    pub fn remove(&mut self, net: NetId, mac: Mac) -> bool {
        match self.table.remove(&FdbKey::new(net, mac)) {
            Some(v) if v.is_static() => {
                self.statics -= 1;
                true
            }
            Some(_) => {
                self.learned -= 1;
                true
            }
            None => false,
        }
    }

    /// Remove every learned entry for which `doomed(network, destination)` is true (a port, a
    /// network or a VTEP went away); returns how many. A walk of the whole table: control plane
    /// only, between batches.
    pub fn flush_learned(&mut self, mut doomed: impl FnMut(NetId, FdbDest) -> bool) -> usize {
        let mut n = 0;
        self.table.retain(|k, v| {
            let gone = !v.is_static() && doomed(k.net(), v.dest());
            n += usize::from(gone);
            !gone
        });
        self.learned -= n;
        n
    }

    /// Remove every learned entry pointing at `port` (the port went away).
    pub fn flush_port(&mut self, port: PortId) -> usize {
        self.flush_learned(|_, d| d == FdbDest::Local(port))
    }

    /// Remove every static entry for which `doomed` is true (a reload dropped them).
    pub fn remove_static_where(
        &mut self,
        mut doomed: impl FnMut(NetId, Mac, FdbDest) -> bool,
    ) -> usize {
        let mut n = 0;
        self.table.retain(|k, v| {
            let gone = v.is_static() && doomed(k.net(), k.mac(), v.dest());
            n += usize::from(gone);
            !gone
        });
        self.statics -= n;
        n
    }

    /// Age out expired learned entries, looking at no more than `budget` slots; returns how
    /// many were removed. Call between batches; a full pass takes `slots / budget` calls.
    pub fn age(&mut self, now: Time, budget: usize) -> usize {
        let now_secs = now.secs() as u32;
        let aging = self.cfg.aging_secs;
        let mut scratch = core::mem::take(&mut self.scratch);
        self.sweep_cursor = self
            .table
            .sweep(self.sweep_cursor, budget, &mut scratch, |_, v| {
                !v.expired(now_secs, aging)
            });
        let n = scratch.len();
        self.scratch = scratch;
        self.learned -= n;
        self.stats.aged += n as u64;
        n
    }

    /// Every entry (listing order: network, then MAC).
    pub fn entries(&self, now: Time) -> Vec<FdbView> {
        let now_secs = now.secs() as u32;
        let mut v: Vec<FdbView> = self
            .table
            .iter()
            .filter(|(_, v)| !v.expired(now_secs, self.cfg.aging_secs))
            .map(|(k, v)| FdbView {
                net: k.net(),
                mac: k.mac(),
                dest: v.dest(),
                is_static: v.is_static(),
                age_secs: if v.is_static() {
                    0
                } else {
                    now_secs.wrapping_sub(v.seen)
                },
            })
            .collect();
        v.sort_by_key(|e| (e.net, e.mac));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: NetId = NetId(0);
    const M: NetId = NetId(1);

    fn mac(i: u8) -> Mac {
        Mac([0x02, 0x42, 10, 0, 9, i])
    }

    #[test]
    fn learns_moves_and_ages_with_a_fake_clock() {
        let mut f = Fdb::new(FdbConfig::default());
        let t0 = Time::from_secs(10);
        assert_eq!(f.learn(N, mac(1), PortId(1), t0), Learned::New);
        assert_eq!(f.learn(N, mac(1), PortId(1), t0), Learned::Refreshed);
        assert_eq!(f.lookup(N, mac(1), t0), Some(FdbDest::Local(PortId(1))));
        // another network is another bridge domain
        assert_eq!(f.lookup(M, mac(1), t0), None);
        assert_eq!(
            f.learn(N, mac(1), PortId(2), t0),
            Learned::Moved {
                from: FdbDest::Local(PortId(1))
            }
        );
        assert_eq!(f.stats.moves, 1);
        // refreshed at 200 s, so alive at 499 s and gone at 500 s
        f.learn(N, mac(1), PortId(2), Time::from_secs(200));
        assert!(f.lookup(N, mac(1), Time::from_secs(499)).is_some());
        assert_eq!(f.lookup(N, mac(1), Time::from_secs(500)), None);
        assert_eq!(f.age(Time::from_secs(500), usize::MAX), 1);
        assert_eq!(f.learned_len(), 0);
        assert!(f.entries(Time::from_secs(500)).is_empty());
    }

    #[test]
    fn never_learns_group_or_zero_sources() {
        let mut f = Fdb::new(FdbConfig::default());
        for m in [
            Mac::BROADCAST,
            Mac([0x01, 0, 0x5e, 0, 0, 1]),
            Mac([0x33, 0x33, 0, 0, 0, 1]),
            Mac::ZERO,
        ] {
            assert_eq!(f.learn(N, m, PortId(1), Time::default()), Learned::Invalid);
        }
        assert_eq!(f.learned_len(), 0);
        assert!(
            f.add_static(N, Mac::BROADCAST, FdbDest::Local(PortId(0)))
                .is_err()
        );
    }

    #[test]
    fn static_entries_are_never_aged_or_moved_and_are_exempt_from_the_bound() {
        let cfg = FdbConfig {
            max_learned: 2,
            max_static: 8,
            aging_secs: 300,
        };
        let mut f = Fdb::new(cfg);
        f.add_static(N, mac(9), FdbDest::Remote(VtepId(0))).unwrap();
        assert_eq!(
            f.learn(N, mac(9), PortId(1), Time::default()),
            Learned::StaticConflict
        );
        assert_eq!(
            f.lookup(N, mac(9), Time::from_secs(1_000_000)),
            Some(FdbDest::Remote(VtepId(0)))
        );
        assert_eq!(f.learn(N, mac(1), PortId(1), Time::default()), Learned::New);
        assert_eq!(f.learn(N, mac(2), PortId(1), Time::default()), Learned::New);
        assert_eq!(
            f.learn(N, mac(3), PortId(1), Time::default()),
            Learned::Full
        );
        assert_eq!(f.stats.full, 1);
        // known MACs still refresh and move when full
        assert_eq!(
            f.learn(N, mac(2), PortId(3), Time::default()),
            Learned::Moved {
                from: FdbDest::Local(PortId(1))
            }
        );
        // statics still go in
        f.add_static(N, mac(10), FdbDest::Remote(VtepId(1)))
            .unwrap();
        assert_eq!((f.learned_len(), f.static_len()), (2, 2));
        f.age(Time::from_secs(10_000), usize::MAX);
        assert_eq!((f.learned_len(), f.static_len()), (0, 2));
        // a static entry replaces a learned one
        f.learn(N, mac(4), PortId(1), Time::from_secs(10_000));
        f.add_static(N, mac(4), FdbDest::Remote(VtepId(1))).unwrap();
        assert_eq!((f.learned_len(), f.static_len()), (0, 3));
        assert_eq!(f.remove_static_where(|_, m, _| m == mac(4)), 1);
        assert_eq!(f.static_len(), 2);
    }

    #[test]
    fn remote_learning_ages_and_moves_but_never_overrides_static() {
        let mut f = Fdb::new(FdbConfig::default());
        let t = Time::from_secs(5);
        assert_eq!(f.learn_remote(N, mac(1), VtepId(2), t), Learned::New);
        assert_eq!(f.lookup(N, mac(1), t), Some(FdbDest::Remote(VtepId(2))));
        assert_eq!(
            f.learn_remote(N, mac(1), VtepId(3), t),
            Learned::Moved {
                from: FdbDest::Remote(VtepId(2))
            }
        );
        assert_eq!(f.lookup(N, mac(1), Time::from_secs(5 + 300)), None);
        f.add_static(N, mac(2), FdbDest::Remote(VtepId(2))).unwrap();
        assert_eq!(
            f.learn_remote(N, mac(2), VtepId(3), t),
            Learned::StaticConflict
        );
    }

    #[test]
    fn flush_port_removes_only_that_ports_learned_entries() {
        let mut f = Fdb::new(FdbConfig::default());
        f.learn(N, mac(1), PortId(1), Time::default());
        f.learn(N, mac(2), PortId(2), Time::default());
        f.add_static(N, mac(3), FdbDest::Local(PortId(1))).unwrap();
        assert_eq!(f.flush_port(PortId(1)), 1);
        assert_eq!(f.learned_len(), 1);
        assert_eq!(f.static_len(), 1);
    }
}
