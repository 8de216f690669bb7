//! The connection tracking table: one entry per load-balanced connection, found from both ends.
//!
//! Sits in the `lb-nat` stage right after parsing: every TCP/UDP packet is looked up here first
//! (client -> VIP packets by their original tuple, backend -> client replies by the reply tuple);
//! a miss for a service creates an entry after scheduling. IPVS keeps `ip_vs_conn` in one chained
//! hash table looked up twice (`in_get` / `out_get`); here both directions are keys of one flat
//! open-addressing index (linear probing, backward-shift deletion, load <= 1/2) over a
//! preallocated slab of 64-byte, cache-line-aligned entries. A lookup costs one index line and
//! one entry line; the hash is seeded (foldhash) so remote clients cannot aim at a probe chain.
//! The table never grows and never evicts: when it is full, inserting fails and the caller drops
//! the new connection, so a SYN flood cannot push out an established entry.
//!
//! The vswitch crate's generic `table` is keyed by one key per value; here two keys (the two
//! directions) share one value and the entry itself holds both keys, so the index stores only a
//! 32-bit hash tag and the entry position: 8 bytes per key. That is why this table is its own.

use std::hash::BuildHasher;

use crate::packet::Tuple;

/// Index slot meaning "empty".
const EMPTY: u32 = u32::MAX;
/// Index slots per key: the index is kept at most half full.
const SLOTS_PER_KEY: usize = 2;
/// Keys (directions) per connection.
const KEYS_PER_CONN: usize = 2;

/// Entry flag: the entry is in use.
pub const F_LIVE: u8 = 0x01;
/// Entry flag: counted as inactive on its backend (IPVS `IP_VS_CONN_F_INACTIVE`).
pub const F_INACTIVE: u8 = 0x02;
/// Entry flag: the source was rewritten to the node's load-balancer address (routing mesh).
pub const F_SNAT: u8 = 0x04;

/// Direction of a packet relative to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to service (IPVS "input").
    Orig = 0,
    /// Backend to client (IPVS "output").
    Reply = 1,
}

/// A lookup key: a packet's tuple in the network it was seen in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key {
    /// Network (bridge domain) index.
    pub net: u16,
    /// The packet's tuple.
    pub tuple: Tuple,
}

impl Key {
    #[inline]
    fn pack(&self) -> (u64, u64) {
        let t = &self.tuple;
        let a = (u64::from(t.src) << 32) | u64::from(t.dst);
        let b = (u64::from(t.sport) << 48)
            | (u64::from(t.dport) << 32)
            | (u64::from(self.net) << 8)
            | u64::from(t.proto);
        (a, b)
    }
}

/// One tracked connection (IPVS `ip_vs_conn`): client `c` -> virtual `v`, forwarded to
/// destination `d` with source `l` (the client itself, or the node's LB address with SNAT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Conn {
    /// Client address.
    pub caddr: u32,
    /// Virtual (service) address the client used.
    pub vaddr: u32,
    /// Backend (destination) address.
    pub daddr: u32,
    /// Source address towards the backend (client, or the LB address with SNAT).
    pub laddr: u32,
    /// Client port.
    pub cport: u16,
    /// Virtual port.
    pub vport: u16,
    /// Backend port.
    pub dport: u16,
    /// Source port towards the backend.
    pub lport: u16,
    /// Expiry, in whole seconds of [`vswitch::Time`].
    pub expires: u32,
    /// Service slot.
    pub service: u16,
    /// Backend slot.
    pub backend: u16,
    /// Network of the client side.
    pub fnet: u16,
    /// Network of the backend side.
    pub rnet: u16,
    /// IP protocol.
    pub proto: u8,
    /// Protocol state ([`crate::TcpState`] as u8; 0 for UDP).
    pub state: u8,
    /// `F_*` flags.
    pub flags: u8,
    /// The client's MAC (destination of replies).
    pub cmac: [u8; 6],
    /// The MAC the client addressed (source of replies).
    pub vmac: [u8; 6],
}

impl Conn {
    /// The key of packets going in direction `dir`.
    #[inline]
    pub fn key(&self, dir: Dir) -> Key {
        match dir {
            Dir::Orig => Key {
                net: self.fnet,
                tuple: Tuple {
                    proto: self.proto,
                    src: self.caddr,
                    dst: self.vaddr,
                    sport: self.cport,
                    dport: self.vport,
                },
            },
            Dir::Reply => Key {
                net: self.rnet,
                tuple: Tuple {
                    proto: self.proto,
                    src: self.daddr,
                    dst: self.laddr,
                    sport: self.dport,
                    dport: self.lport,
                },
            },
        }
    }
}

/// The table is at its maximum number of connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection table full")]
pub struct TableFullError;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Slot {
    tag: u32,
    val: u32,
}

/// The connection table: a slab of [`Conn`] and a two-key open-addressing index.
pub struct ConnTable {
    conns: Box<[Conn]>,
    free: Vec<u32>,
    slots: Box<[Slot]>,
    mask: u32,
    hasher: foldhash::fast::FixedState,
    len: usize,
}

impl ConnTable {
    /// A table for at most `capacity` connections (>= 1), hashing with `seed`.
    pub fn new(capacity: usize, seed: u64) -> ConnTable {
        let capacity = capacity.clamp(1, EMPTY as usize / 2);
        let nslots = (capacity * KEYS_PER_CONN * SLOTS_PER_KEY).next_power_of_two();
        ConnTable {
            conns: vswitch::table::alloc_table(capacity, Conn::default()),
            free: (0..capacity as u32).rev().collect(),
            slots: vswitch::table::alloc_table(nslots, Slot { tag: 0, val: EMPTY }),
            mask: (nslots - 1) as u32,
            hasher: foldhash::fast::FixedState::with_seed(seed),
            len: 0,
        }
    }

    /// Maximum connections.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.conns.len()
    }

    /// Live connections.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no connection is tracked.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory held by the table (entries plus index).
    pub fn memory_bytes(&self) -> usize {
        self.conns.len() * size_of::<Conn>()
            + self.slots.len() * size_of::<Slot>()
            + self.free.capacity() * size_of::<u32>()
    }

    /// The seeded hash of a key.
    #[inline]
    pub fn hash(&self, key: &Key) -> u32 {
        let (a, b) = key.pack();
        (self.hasher.hash_one((a, b)) >> 32) as u32
    }

    /// Hint the CPU to fetch the index line of `hash` (batch lookups hash all keys first).
    #[inline]
    pub fn prefetch(&self, hash: u32) {
        let i = (hash & self.mask) as usize;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `i <= mask < slots.len()`, so the pointer is in bounds; prefetch never faults
        // and reads nothing architecturally.
        unsafe {
            use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(self.slots.as_ptr().add(i).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// Second prefetch stage of a batch: once the index line of `hash` is in cache, hint the
    /// entry its home slot points to (the usual hit at load <= 1/2).
    #[inline]
    pub fn prefetch_entry(&self, hash: u32) {
        let s = self.slots[(hash & self.mask) as usize];
        if s.val == EMPTY {
            return;
        }
        let idx = (s.val >> 1) as usize;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: live index values always point inside `conns`; the bound is re-checked with
        // `min` anyway, and prefetch never faults.
        unsafe {
            use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(
                self.conns
                    .as_ptr()
                    .add(idx.min(self.conns.len() - 1))
                    .cast(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = idx;
    }

    /// Find the connection and direction of `key`.
    #[inline]
    pub fn lookup(&self, key: &Key) -> Option<(u32, Dir)> {
        self.lookup_hashed(key, self.hash(key))
    }

    /// As [`ConnTable::lookup`] with a precomputed [`ConnTable::hash`].
    #[inline]
    pub fn lookup_hashed(&self, key: &Key, hash: u32) -> Option<(u32, Dir)> {
        let mut i = hash & self.mask;
        loop {
            let s = self.slots[i as usize];
            if s.val == EMPTY {
                return None;
            }
            if s.tag == hash {
                let idx = s.val >> 1;
                let dir = if s.val & 1 == 0 {
                    Dir::Orig
                } else {
                    Dir::Reply
                };
                if self.conns[idx as usize].key(dir) == *key {
                    return Some((idx, dir));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The entry at `idx`.
    #[inline]
    pub fn get(&self, idx: u32) -> &Conn {
        &self.conns[idx as usize]
    }

    /// The entry at `idx`, writable. Key fields must not change while it is live.
    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut Conn {
        &mut self.conns[idx as usize]
    }

    /// Track `conn` (its keys must not be present yet); returns its index.
    pub fn insert(&mut self, mut conn: Conn) -> Result<u32, TableFullError> {
        let idx = self.free.pop().ok_or(TableFullError)?;
        conn.flags |= F_LIVE;
        self.conns[idx as usize] = conn;
        for dir in [Dir::Orig, Dir::Reply] {
            let h = self.hash(&conn.key(dir));
            let mut i = h & self.mask;
            while self.slots[i as usize].val != EMPTY {
                i = (i + 1) & self.mask;
            }
            self.slots[i as usize] = Slot {
                tag: h,
                val: (idx << 1) | dir as u32,
            };
        }
        self.len += 1;
        Ok(idx)
    }

    /// Stop tracking the entry at `idx` (which must be live).
    pub fn remove(&mut self, idx: u32) {
        let conn = self.conns[idx as usize];
        debug_assert!(conn.flags & F_LIVE != 0);
        for dir in [Dir::Orig, Dir::Reply] {
            let h = self.hash(&conn.key(dir));
            let want = (idx << 1) | dir as u32;
            let mut i = h & self.mask;
            while self.slots[i as usize].val != want {
                i = (i + 1) & self.mask;
            }
            self.delete_slot(i);
        }
        self.conns[idx as usize].flags = 0;
        self.free.push(idx);
        self.len -= 1;
    }

    /// Backward-shift deletion: pull later members of the probe run into the hole.
    fn delete_slot(&mut self, mut hole: u32) {
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slots[j as usize];
            if s.val == EMPTY {
                break;
            }
            let home = s.tag & self.mask;
            // Move `j` into the hole unless its home lies cyclically in (hole, j].
            let dist_home = j.wrapping_sub(home) & self.mask;
            let dist_hole = j.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.slots[hole as usize] = s;
                hole = j;
            }
        }
        self.slots[hole as usize] = Slot { tag: 0, val: EMPTY };
    }

    /// Whether slot `idx` of the slab holds a live entry.
    #[inline]
    pub fn is_live(&self, idx: u32) -> bool {
        self.conns
            .get(idx as usize)
            .is_some_and(|c| c.flags & F_LIVE != 0)
    }

    /// Live entries with their indices (control plane: listings).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Conn)> {
        self.conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.flags & F_LIVE != 0)
            .map(|(i, c)| (i as u32, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{PROTO_TCP, PROTO_UDP};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn conn(c: u32, cport: u16, d: u32) -> Conn {
        Conn {
            caddr: c,
            vaddr: 0x0a00_0964,
            daddr: d,
            laddr: c,
            cport,
            vport: 80,
            dport: 8080,
            lport: cport,
            proto: PROTO_TCP,
            ..Conn::default()
        }
    }

    #[test]
    fn entry_is_one_cache_line() {
        assert_eq!(size_of::<Conn>(), 64);
        assert_eq!(size_of::<Slot>(), 8);
    }

    #[test]
    fn both_directions_find_the_entry() {
        let mut t = ConnTable::new(16, 7);
        let c = conn(1, 1000, 2);
        let i = t.insert(c).unwrap();
        assert_eq!(t.lookup(&c.key(Dir::Orig)), Some((i, Dir::Orig)));
        assert_eq!(t.lookup(&c.key(Dir::Reply)), Some((i, Dir::Reply)));
        let mut other = c.key(Dir::Orig);
        other.tuple.proto = PROTO_UDP;
        assert_eq!(t.lookup(&other), None);
        other = c.key(Dir::Orig);
        other.net = 1;
        assert_eq!(t.lookup(&other), None);
        t.remove(i);
        assert_eq!(t.lookup(&c.key(Dir::Orig)), None);
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_refuses_and_keeps_existing() {
        let mut t = ConnTable::new(4, 1);
        let cs: Vec<Conn> = (0..4).map(|i| conn(i, 1, 99)).collect();
        for c in &cs {
            t.insert(*c).unwrap();
        }
        assert_eq!(t.insert(conn(50, 1, 99)), Err(TableFullError));
        for c in &cs {
            assert!(t.lookup(&c.key(Dir::Orig)).is_some());
        }
    }

    proptest! {
        #[test]
        fn matches_a_model_under_churn(ops in proptest::collection::vec((any::<bool>(), 0u32..32, 0u16..2), 1..400), seed in any::<u64>()) {
            // A tiny index forces long probe runs and wrap-around, exercising backward shift.
            let mut t = ConnTable::new(64, seed);
            let mut model: HashMap<(u32, u16), u32> = HashMap::new();
            for (ins, c, p) in ops {
                let k = (c, p);
                if ins {
                    if let std::collections::hash_map::Entry::Vacant(e) = model.entry(k) {
                        e.insert(t.insert(conn(c, p, 1000 + c)).unwrap());
                    }
                } else if let Some(i) = model.remove(&k) {
                    t.remove(i);
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for c in 0..32u32 {
                for p in 0..2u16 {
                    let cn = conn(c, p, 1000 + c);
                    let want = model.get(&(c, p)).copied();
                    prop_assert_eq!(t.lookup(&cn.key(Dir::Orig)).map(|x| x.0), want);
                    prop_assert_eq!(t.lookup(&cn.key(Dir::Reply)).map(|x| x.0), want);
                }
            }
        }
    }
}
