//! A bounded, flat, open-addressing hash table for the FDB's per-packet lookups (conntrack has its own bucketed table and shares only
//! [`alloc_table`]).
//!
//! Why not `HashMap`: the packet path needs a table that never grows (growth is an allocation and
//! a pause), reports "full" as a typed outcome, stores small `Copy` entries inline (16 bytes for
//! an FDB entry), and lets a stage hash a whole batch of keys first and prefetch their slots
//! before probing, as VPP's bihash users do, so lookups in a table far larger than the caches
//! overlap their memory latency instead of paying it one packet at a time.
//!
//! Linear probing over a power-of-two array kept at most half full; deletion by backward shift
//! (no tombstones, so probe lengths never degrade with churn). Keys are hashed with a per-table
//! random seed (foldhash): keys come from the wire, and a fixed hash would let a sender aim
//! collisions at one probe chain.

use core::hash::{BuildHasher, Hash};

use foldhash::fast::{FixedState, RandomState};

/// Tables at least this large ask for transparent huge pages.
pub const HUGE_PAGE_THRESHOLD: usize = 2 << 20;

/// `n` copies of `init` in memory that, for large tables, is backed by transparent huge pages
/// where the kernel offers them (`madvise` mode): a table of tens of megabytes probed at random
/// otherwise pays a TLB miss on nearly every lookup. The advice is given before the memory is
/// first touched, so the faults that fill it already map 2 MiB pages. Allocated once, at setup.
pub fn alloc_table<T: Copy>(n: usize, init: T) -> Box<[T]> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    let bytes = n * size_of::<T>();
    if bytes >= HUGE_PAGE_THRESHOLD {
        const PAGE: usize = 4096;
        let start = v.as_mut_ptr() as usize;
        let aligned = (start + PAGE - 1) & !(PAGE - 1);
        let len = (start + bytes).saturating_sub(aligned) & !(PAGE - 1);
        if len > 0 {
            // SAFETY: the range lies inside the allocation just made (page-aligned start, length
            // rounded down); MADV_HUGEPAGE is only advice and does not change the memory's contents
            // or validity. A refusal (no THP support) is harmless and ignored.
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
        }
    }
    v.resize(n, init);
    v.into_boxed_slice()
}

/// A key type for [`FlatTable`]: one value is reserved to mark a free slot.
pub trait TableKey: Copy + Eq + Hash {
    /// The reserved value; never inserted.
    const EMPTY: Self;
}

/// The table is at its configured capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("table full ({capacity} entries)")]
pub struct TableFull {
    /// The configured capacity.
    pub capacity: usize,
}

/// A bounded open-addressing hash table of `Copy` keys and values.
pub struct FlatTable<K, V> {
    /// Key and value side by side: one probe touches one cache line.
    slots: Box<[(K, V)]>,
    mask: usize,
    len: usize,
    capacity: usize,
    hasher: FixedState,
}

impl<K: TableKey, V: Copy + Default> FlatTable<K, V> {
    /// A table holding at most `capacity` entries (the slot array is sized for a load of at
    /// most one half, and allocated once, here).
    pub fn with_capacity(capacity: usize) -> Self {
        let slots = (capacity.max(8) * 2).next_power_of_two();
        FlatTable {
            slots: alloc_table(slots, (K::EMPTY, V::default())),
            mask: slots - 1,
            len: 0,
            capacity,
            // A seed of its own per table: remote senders cannot aim at a probe chain.
            hasher: FixedState::with_seed(RandomState::default().hash_one(0u64)),
        }
    }

    /// Entries stored.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum entries.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of memory the slot arrays take.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * size_of::<(K, V)>()
    }

    /// The hash of `key`, for [`prefetch`](Self::prefetch) and the `_hashed` calls.
    #[inline]
    pub fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // The high bits of foldhash's output are its best mixed.
        (hash >> 32) as usize & self.mask
    }

    /// Start loading the slot `hash` probes first into the cache.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let i = self.home(hash);
            // SAFETY: `i` is masked into the bounds of the slot array; a prefetch has no other
            // effect than loading the line.
            unsafe {
                use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(self.slots.as_ptr().add(i).cast());
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    #[inline]
    fn find(&self, key: &K, hash: u64) -> Option<usize> {
        let mut i = self.home(hash);
        loop {
            let k = self.slots[i].0;
            if k == *key {
                return Some(i);
            }
            if k == K::EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.get_hashed(key, self.hash(key))
    }

    /// The value of `key`, whose hash is `hash`.
    #[inline]
    pub fn get_hashed(&self, key: &K, hash: u64) -> Option<&V> {
        self.find(key, hash).map(|i| &self.slots[i].1)
    }

    /// The value of `key`, writable.
    #[inline]
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let h = self.hash(key);
        self.get_mut_hashed(key, h)
    }

    /// The value of `key` (hash `hash`), writable.
    #[inline]
    pub fn get_mut_hashed(&mut self, key: &K, hash: u64) -> Option<&mut V> {
        self.find(key, hash).map(|i| &mut self.slots[i].1)
    }

    /// Insert or replace; returns the previous value. A new key in a full table is refused.
    #[inline]
    pub fn insert(&mut self, key: K, val: V) -> Result<Option<V>, TableFull> {
        let h = self.hash(&key);
        self.insert_hashed(key, h, val)
    }

    /// [`insert`](Self::insert) with the key's hash already known.
    pub fn insert_hashed(&mut self, key: K, hash: u64, val: V) -> Result<Option<V>, TableFull> {
        debug_assert!(key != K::EMPTY, "the EMPTY key is reserved");
        let mut i = self.home(hash);
        loop {
            let k = self.slots[i].0;
            if k == key {
                return Ok(Some(core::mem::replace(&mut self.slots[i].1, val)));
            }
            if k == K::EMPTY {
                if self.len >= self.capacity {
                    return Err(TableFull {
                        capacity: self.capacity,
                    });
                }
                self.slots[i].0 = key;
                self.slots[i].1 = val;
                self.len += 1;
                return Ok(None);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Remove `key`; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(key, self.hash(key))?;
        let v = self.slots[i].1;
        self.remove_at(i);
        Some(v)
    }

    fn remove_at(&mut self, mut hole: usize) {
        // Backward shift: pull later entries of the probe chain into the hole when their home
        // slot does not lie cyclically in (hole, j].
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let k = self.slots[j].0;
            if k == K::EMPTY {
                break;
            }
            let home = self.home(self.hash(&k));
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole].0 = k;
                self.slots[hole].1 = self.slots[j].1;
                hole = j;
            }
        }
        self.slots[hole].0 = K::EMPTY;
        self.len -= 1;
    }

    /// Remove every entry for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let mut doomed = Vec::new();
        for i in 0..self.slots.len() {
            if self.slots[i].0 != K::EMPTY && !keep(&self.slots[i].0, &mut self.slots[i].1) {
                doomed.push(self.slots[i].0);
            }
        }
        for k in doomed {
            self.remove(&k);
        }
    }

    /// Look at `budget` slots from `cursor` (wrapping) and remove the entries `keep` rejects;
    /// returns the cursor to continue from. For aging a large table a slice at a time, between
    /// batches, so no single call pauses the packet path for long. `doomed` is scratch space.
    pub fn sweep(
        &mut self,
        cursor: usize,
        budget: usize,
        doomed: &mut Vec<K>,
        mut keep: impl FnMut(&K, &V) -> bool,
    ) -> usize {
        doomed.clear();
        let slots = self.slots.len();
        let mut i = cursor & self.mask;
        for _ in 0..budget.min(slots) {
            let k = self.slots[i].0;
            if k != K::EMPTY && !keep(&k, &self.slots[i].1) {
                doomed.push(k);
            }
            i = (i + 1) & self.mask;
        }
        for k in doomed.iter() {
            self.remove(k);
        }
        i
    }

    /// Every entry, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots
            .iter()
            .filter(|(k, _)| *k != K::EMPTY)
            .map(|(k, v)| (k, v))
    }

    /// Hash with `seed` from now on, every entry placed again: the same slots, probe chains and
    /// aging order in every run (the simulator's `--seed`). Control plane: it touches every slot.
    pub fn reseed(&mut self, seed: u64) {
        let entries: Vec<(K, V)> = self.iter().map(|(k, v)| (*k, *v)).collect();
        self.clear();
        self.hasher = FixedState::with_seed(seed);
        for (k, v) in entries {
            // Re-placing what fitted before: the capacity is unchanged.
            let _ = self.insert(k, v);
        }
    }

    /// Remove everything.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| s.0 = K::EMPTY);
        self.len = 0;
    }
}

impl TableKey for u64 {
    const EMPTY: u64 = u64::MAX;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn full_is_a_typed_outcome_and_replacing_still_works_when_full() {
        let mut t: FlatTable<u64, u32> = FlatTable::with_capacity(4);
        for k in 0..4 {
            assert_eq!(t.insert(k, k as u32), Ok(None));
        }
        assert_eq!(t.insert(99, 1), Err(TableFull { capacity: 4 }));
        assert_eq!(t.insert(2, 7), Ok(Some(2)));
        assert_eq!(t.remove(&0), Some(0));
        assert_eq!(t.insert(99, 1), Ok(None));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn sweep_visits_every_slot_over_rounds() {
        let mut t: FlatTable<u64, u32> = FlatTable::with_capacity(1000);
        for k in 0..1000 {
            t.insert(k, (k % 2) as u32).unwrap();
        }
        let mut cur = 0;
        let mut scratch = Vec::new();
        for _ in 0..64 {
            cur = t.sweep(cur, 64, &mut scratch, |_, v| *v == 0);
        }
        assert_eq!(t.len(), 500);
        assert!(t.iter().all(|(k, v)| k % 2 == 0 && *v == 0));
    }

    proptest! {
        // The table behaves as a bounded map under any sequence of inserts and removes,
        // including the backward-shift deletes that move entries around.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), 0u64..64, any::<u32>()), 0..400)) {
            let mut t: FlatTable<u64, u32> = FlatTable::with_capacity(40);
            let mut m: HashMap<u64, u32> = HashMap::new();
            for (ins, k, v) in ops {
                if ins {
                    let r = t.insert(k, v);
                    if m.len() >= 40 && !m.contains_key(&k) {
                        prop_assert_eq!(r, Err(TableFull { capacity: 40 }));
                    } else {
                        prop_assert_eq!(r, Ok(m.insert(k, v)));
                    }
                } else {
                    prop_assert_eq!(t.remove(&k), m.remove(&k));
                }
                prop_assert_eq!(t.len(), m.len());
            }
            for (k, v) in &m {
                prop_assert_eq!(t.get(k), Some(v));
            }
            prop_assert_eq!(t.iter().count(), m.len());
        }
    }
}
