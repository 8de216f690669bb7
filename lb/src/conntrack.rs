//! The connection tracking table: one entry per load-balanced connection, found from both ends.
//!
//! Where it sits: in the `lb-nat` stage, right after parsing. Every TCP/UDP packet is looked up
//! here first (client -> VIP packets by their original tuple, backend -> client replies by the
//! reply tuple); a miss for a service creates an entry after scheduling. IPVS keeps
//! `ip_vs_conn` in one chained hash table looked up twice (`in_get` / `out_get`); here both
//! directions are keys of one flat table.
//!
//! Layout: two arrays, both allocated once (on huge pages when large, see
//! [`vswitch::table::alloc_table`]).
//!
//! ```text
//!  buckets: [Bucket; nb], one 64-byte cache line each
//!  +------------------+------------------+------------------+------+------+------+-------+
//!  | key 0 (16 B)     | key 1 (16 B)     | key 2 (16 B)     | val0 | val1 | val2 | reach |
//!  +------------------+------------------+------------------+------+------+------+-------+
//!    key = net, proto, addresses, ports: the whole key        val = entry index << 1 | dir
//!
//!  conns: [Conn; capacity], one 64-byte line each: both directions' tuples, the NAT
//!         rewrite, TCP state, expiry, MACs
//! ```
//!
//! A key's home bucket is its seeded hash scaled onto `0..nb`. A key whose home is full goes
//! to the next bucket with a free slot (bucketized linear probing), and the home's `reach`
//! records how far its farthest key went. A lookup compares the full keys held in the home
//! line: the key is there, or `reach == 0` says it is nowhere, so one line decides hit or miss
//! for all keys but the displaced ones, and for those `reach` names every further line to
//! read. Keys sit at home whenever their home has room: a new key takes its home slot back
//! from a key displaced there from an earlier bucket (which moves on), and a deletion pulls
//! back, into the freed slot, a later key whose probe crosses it (backward shift, preferring a
//! key whose home it is), so churn never leaves keys farther from home than fresh inserts
//! would. At the maximum load (3/4 of the key slots) about 87% of keys are in their home line.
//!
//! Why this shape, and what a lookup costs. The previous table was two-level (an index slot
//! with a hash tag, then the entry holding the keys), so a lookup was two dependent cache
//! misses. Here the key comparison needs only the bucket line, so the stage hashes a whole
//! batch and prefetches every home line ([`ConnTable::prefetch`]), then probes them all
//! ([`ConnTable::lookup_burst`]) while those misses overlap: the displaced keys' further lines
//! are prefetched together in a second round, so a burst waits for memory about twice, not
//! once per key. Then the stage prefetches each hit's [`Conn`] ([`ConnTable::prefetch_conn`])
//! before translating. A lookup is one hash (foldhash, seeded, so remote clients cannot aim
//! keys at one probe run) plus, in a burst of 32 (`benches/lb.rs`): ~6 ns when the table is in
//! cache, the same for a warm working set of 4096 connections in a 1M table, and ~13 ns for
//! uniformly random keys over 1M connections (the two-level table: 4.7, 8.5 and ~38 ns). That
//! last case is bound by DRAM, not by the table: a burst cannot finish sooner than one memory
//! latency (100-150 ns on the 2-vCPU EPYC VM it was measured on, with about 30 misses in flight:
//! 32 random lines take 4.1 ns each), and the second round for the ~13% displaced keys costs
//! another. In cache, the three-slot compare and the displaced keys make a lookup ~1 ns slower
//! than the old tag check (more where the keys cluster, as the bench's 1K set does).
//!
//! Memory: a connection is one [`Conn`] (64 B) and two key slots of 64/3 B each at a load of
//! 3/4, so 121 bytes at capacity (the bucket count follows the capacity exactly, no rounding to
//! a power of two). Free entries are handed out in order and then recycled through a chain
//! kept in the free entries themselves: no separate free list.
//!
//! The table never grows and never evicts: when it is full, inserting fails with
//! [`TableFullError`] and the caller drops the new connection, so a SYN flood cannot push out an
//! established entry. The vswitch crate's generic `table` stores one value per key; here two
//! keys (the two directions) share one entry, which is why this table is its own.

use std::hash::BuildHasher;

use crate::packet::Tuple;
use crate::persist::Slab;

/// Key slots per bucket: three 16-byte keys and their 4-byte values fill a 64-byte line.
const SLOTS: usize = 3;
/// Keys (directions) per connection.
const KEYS_PER_CONN: usize = 2;
/// At capacity, at most this many percent of key slots are in use (sets the bucket count).
const MAX_LOAD_PCT: usize = 75;
/// The reserved byte of a packed key (bits 24..32 of its second word): zero in every real key.
const RESERVED: u64 = 0xff << 24;
/// The key of an empty slot: its reserved byte is set.
const EMPTY_KEY: [u64; 2] = [0, RESERVED];
/// Keys per [`ConnTable::lookup_burst`] round (a vswitch batch at most).
const MAX_BURST: usize = vswitch::MAX_BATCH;
/// Lines after the home line prefetched for a displaced key in a burst's second round.
const PREFETCH_AHEAD: usize = 4;
/// End of the free-entry chain.
const NIL: u32 = u32::MAX;
/// Largest capacity: entry indices are stored shifted left by one (the direction bit).
const MAX_CAPACITY: usize = (u32::MAX >> 1) as usize;

/// Entry flag: the entry is in use.
pub const F_LIVE: u8 = 0x01;
/// Entry flag: counted as inactive on its backend (IPVS `IP_VS_CONN_F_INACTIVE`).
pub const F_INACTIVE: u8 = 0x02;
/// Entry flag: the source was rewritten to the node's load-balancer address (routing mesh).
pub const F_SNAT: u8 = 0x04;
/// Entry flag: the client is its own backend, source-NATed to the VIP (hairpin); set with
/// [`F_SNAT`].
pub const F_HAIRPIN: u8 = 0x08;
/// Every flag an entry may carry.
pub const F_ALL: u8 = F_LIVE | F_INACTIVE | F_SNAT | F_HAIRPIN;

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
    /// The key as two words, as stored in a bucket. Bits 24..32 of the second word are always
    /// zero: [`EMPTY_KEY`] sets them, so no real key equals an empty slot.
    #[inline]
    fn pack(&self) -> [u64; 2] {
        let t = &self.tuple;
        let a = (u64::from(t.src) << 32) | u64::from(t.dst);
        let b = (u64::from(t.sport) << 48)
            | (u64::from(t.dport) << 32)
            | (u64::from(self.net) << 8)
            | u64::from(t.proto);
        [a, b]
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
    /// Protocol state ([`crate::state::TcpState`] as u8; 0 for UDP).
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

/// One cache line of keys: see the module comment.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket {
    /// Packed keys ([`Key::pack`]); [`EMPTY_KEY`] marks a free slot.
    keys: [[u64; 2]; SLOTS],
    /// Per slot: entry index << 1 | direction.
    vals: [u32; SLOTS],
    /// How far past this bucket the farthest key whose home is here sits (0: all at home).
    reach: u32,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        keys: [EMPTY_KEY; SLOTS],
        vals: [0; SLOTS],
        reach: 0,
    };

    /// The slot holding `key`. All slots are compared and the match picked without a branch
    /// per slot: which slot holds a key is random, so per-slot branches would mispredict.
    #[inline]
    fn find(&self, key: [u64; 2]) -> Option<usize> {
        let mut hits = 0u32;
        for (s, k) in self.keys.iter().enumerate() {
            hits |= u32::from(((k[0] ^ key[0]) | (k[1] ^ key[1])) == 0) << s;
        }
        (hits != 0).then(|| hits.trailing_zeros() as usize)
    }

    /// The entry and direction of `key`, if this bucket holds it.
    #[inline]
    fn get(&self, key: [u64; 2]) -> Option<(u32, Dir)> {
        self.find(key).map(|s| decode(self.vals[s]))
    }

    /// A free slot (only an empty slot has its reserved byte set).
    #[inline]
    fn free_slot(&self) -> Option<usize> {
        let mut free = 0u32;
        for (s, k) in self.keys.iter().enumerate() {
            free |= u32::from(k[1] & RESERVED != 0) << s;
        }
        (free != 0).then(|| free.trailing_zeros() as usize)
    }
}

#[inline]
fn encode(idx: u32, dir: Dir) -> u32 {
    (idx << 1) | dir as u32
}

#[inline]
fn decode(val: u32) -> (u32, Dir) {
    let dir = if val & 1 == 0 { Dir::Orig } else { Dir::Reply };
    (val >> 1, dir)
}

#[inline]
fn prefetch_line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint: it never faults and reads nothing architecturally, whatever
    // the address; callers pass pointers into their own arrays anyway.
    unsafe {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The connection table: a slab of [`Conn`] found through cache-line buckets of full keys.
pub struct ConnTable {
    /// The entries: on the heap, or in a mapped file ([`crate::persist`]).
    conns: Slab,
    /// Entries from here on have never been used: they are handed out in order, with no
    /// load from the (cold) slab on the insert path.
    fresh: u32,
    /// Last entry freed; freed entries chain through their `expires` field (LIFO, so a new
    /// connection reuses the line the expiry sweep just touched).
    free: u32,
    buckets: Box<[Bucket]>,
    hasher: foldhash::fast::FixedState,
    seed: u64,
    len: usize,
    /// Bumped by every insert and remove.
    generation: u64,
}

impl ConnTable {
    /// A table for at most `capacity` connections (>= 1), hashing with `seed`.
    pub fn new(capacity: usize, seed: u64) -> ConnTable {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        ConnTable::with_slab(
            Slab::heap(vswitch::table::alloc_table(capacity, Conn::default())),
            seed,
        )
    }

    /// A table over `conns` (all free: flags 0), hashing with `seed`.
    pub(crate) fn with_slab(conns: Slab, seed: u64) -> ConnTable {
        let capacity = conns.len().clamp(1, MAX_CAPACITY);
        let keys = capacity * KEYS_PER_CONN;
        // At least one slot more than keys, so an insert always finds a free one.
        let nb = (keys * 100)
            .div_ceil(SLOTS * MAX_LOAD_PCT)
            .max(keys / SLOTS + 1);
        ConnTable {
            conns,
            fresh: 0,
            free: NIL,
            buckets: vswitch::table::alloc_table(nb, Bucket::EMPTY),
            hasher: foldhash::fast::FixedState::with_seed(seed),
            seed,
            len: 0,
            generation: 0,
        }
    }

    /// The hash seed.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether the entries are in a file.
    pub(crate) fn is_mapped(&self) -> bool {
        self.conns.is_mapped()
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

    /// Changes whenever a connection is added or removed: a lookup result stays true for as
    /// long as the generation it was taken at is current.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of memory held by the table (entries plus buckets).
    pub fn memory_bytes(&self) -> usize {
        self.conns.len() * size_of::<Conn>() + self.buckets.len() * size_of::<Bucket>()
    }

    /// The seeded hash of a key.
    #[inline]
    pub fn hash(&self, key: &Key) -> u32 {
        self.hash_packed(key.pack())
    }

    #[inline]
    fn hash_packed(&self, k: [u64; 2]) -> u32 {
        (self.hasher.hash_one((k[0], k[1])) >> 32) as u32
    }

    /// The home bucket of `hash`: the hash scaled onto `0..nb` (no power-of-two rounding, so
    /// the bucket count follows the capacity exactly).
    #[inline]
    fn home(&self, hash: u32) -> usize {
        ((u64::from(hash) * self.buckets.len() as u64) >> 32) as usize
    }

    #[inline]
    fn home_of(&self, k: [u64; 2]) -> usize {
        self.home(self.hash_packed(k))
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    /// Bucket `d` places after `i`, cyclically (`d < nb`).
    #[inline]
    fn ahead(&self, i: usize, d: usize) -> usize {
        let j = i + d;
        if j >= self.buckets.len() {
            j - self.buckets.len()
        } else {
            j
        }
    }

    /// Buckets from `from` forward to `to`, cyclically (0 when equal).
    #[inline]
    fn dist(&self, from: usize, to: usize) -> usize {
        if to >= from {
            to - from
        } else {
            to + self.buckets.len() - from
        }
    }

    /// Hint the CPU to fetch the home bucket of `hash` (a batch hashes all its keys first).
    #[inline]
    pub fn prefetch(&self, hash: u32) {
        prefetch_line(&self.buckets[self.home(hash)]);
    }

    /// Hint the CPU to fetch entry `idx` (a batch does this for each hit before translating).
    #[inline]
    pub fn prefetch_conn(&self, idx: u32) {
        if let Some(c) = self.conns.get(idx as usize) {
            prefetch_line(c);
        }
    }

    /// Find the connection and direction of `key`.
    #[inline]
    pub fn lookup(&self, key: &Key) -> Option<(u32, Dir)> {
        self.lookup_hashed(key, self.hash(key))
    }

    /// As [`ConnTable::lookup`] with a precomputed [`ConnTable::hash`].
    #[inline]
    pub fn lookup_hashed(&self, key: &Key, hash: u32) -> Option<(u32, Dir)> {
        let k = key.pack();
        let h = self.home(hash);
        let b = &self.buckets[h];
        match b.get(k) {
            Some(found) => Some(found),
            None if b.reach == 0 => None,
            None => self.lookup_beyond(k, h, b.reach as usize),
        }
    }

    /// The rest of a probe: buckets `h + 1 ..= h + reach`.
    #[cold]
    fn lookup_beyond(&self, k: [u64; 2], h: usize, reach: usize) -> Option<(u32, Dir)> {
        (1..=reach).find_map(|d| self.buckets[self.ahead(h, d)].get(k))
    }

    /// Look up a burst: `out[i]` for `keys[i]`, whose hash `hashes[i]` was given to
    /// [`ConnTable::prefetch`] earlier (the batch's first pass), so the home lines are in
    /// flight together. The few keys that are not in their home line go to a second round:
    /// their further lines (which the home line's `reach` names) are all prefetched first,
    /// so a burst waits for memory about twice, not once per displaced key.
    pub fn lookup_burst(&self, keys: &[Key], hashes: &[u32], out: &mut [Option<(u32, Dir)>]) {
        let n = keys.len().min(hashes.len()).min(out.len());
        let mut start = 0;
        while start < n {
            let end = n.min(start + MAX_BURST);
            self.lookup_round(&keys[start..end], &hashes[start..end], &mut out[start..end]);
            start = end;
        }
    }

    #[inline]
    fn lookup_round(&self, keys: &[Key], hashes: &[u32], out: &mut [Option<(u32, Dir)>]) {
        let mut far = [0u8; MAX_BURST];
        let mut nfar = 0;
        for (i, ((key, &hash), out)) in keys.iter().zip(hashes).zip(out.iter_mut()).enumerate() {
            let h = self.home(hash);
            let b = &self.buckets[h];
            *out = b.get(key.pack());
            if out.is_none() && b.reach > 0 {
                far[nfar] = i as u8;
                nfar += 1;
                for d in 1..=(b.reach as usize).min(PREFETCH_AHEAD) {
                    prefetch_line(&self.buckets[self.ahead(h, d)]);
                }
            }
        }
        for &i in &far[..nfar] {
            let i = usize::from(i);
            let h = self.home(hashes[i]);
            let reach = self.buckets[h].reach as usize;
            out[i] = self.lookup_beyond(keys[i].pack(), h, reach);
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
    pub fn insert(&mut self, conn: Conn) -> Result<u32, TableFullError> {
        let idx = if self.free != NIL {
            let idx = self.free;
            self.free = self.conns[idx as usize].expires;
            idx
        } else if (self.fresh as usize) < self.conns.len() {
            self.fresh += 1;
            self.fresh - 1
        } else {
            return Err(TableFullError);
        };
        // Copy first, then flag the copy: flagging the argument in place would make the copy
        // reload a line just partly stored to (a store-forwarding stall).
        // The entry may be in a file that outlives the process (crate::persist): all its
        // fields are stored before F_LIVE says it is in use, so a process killed in between
        // leaves a free entry, never a torn live one. The fence orders the compiler only (x86
        // keeps stores in order, and a killed process's stores are all in the page cache).
        self.conns[idx as usize] = Conn {
            flags: conn.flags & !F_LIVE,
            ..conn
        };
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::Release);
        self.conns[idx as usize].flags |= F_LIVE;
        debug_assert!(
            [Dir::Orig, Dir::Reply]
                .iter()
                .all(|&d| self.lookup(&conn.key(d)).is_none()),
            "key already tracked"
        );
        for dir in [Dir::Orig, Dir::Reply] {
            self.place(conn.key(dir).pack(), encode(idx, dir));
        }
        self.len += 1;
        self.generation += 1;
        Ok(idx)
    }

    /// Put a key in its home bucket if there is room, else in the first later bucket with a
    /// free slot (every bucket in between is full). A full home bucket that holds a key
    /// displaced from an earlier home gives that slot to the new key and the displaced key
    /// moves on instead: keys sit at home whenever their home has room for them, which is what
    /// lets one line answer most lookups.
    #[inline]
    fn place(&mut self, k: [u64; 2], val: u32) {
        let h = self.home_of(k);
        let b = &mut self.buckets[h];
        if let Some(s) = b.free_slot() {
            b.keys[s] = k;
            b.vals[s] = val;
        } else {
            self.place_past_full_home(k, val, h);
        }
    }

    fn place_past_full_home(&mut self, k: [u64; 2], val: u32, h: usize) {
        let (mut k, mut val, mut kh) = (k, val, h);
        let b = self.buckets[h];
        if let Some(s) = (0..SLOTS).find(|&s| self.home_of(b.keys[s]) != h) {
            self.buckets[h].keys[s] = k;
            self.buckets[h].vals[s] = val;
            (k, val, kh) = (b.keys[s], b.vals[s], self.home_of(b.keys[s]));
        }
        let mut i = self.next(h);
        let s = loop {
            if let Some(s) = self.buckets[i].free_slot() {
                break s;
            }
            i = self.next(i);
        };
        self.buckets[i].keys[s] = k;
        self.buckets[i].vals[s] = val;
        let d = self.dist(kh, i) as u32;
        let reach = &mut self.buckets[kh].reach;
        *reach = (*reach).max(d);
    }

    /// Stop tracking the entry at `idx` (which must be live).
    pub fn remove(&mut self, idx: u32) {
        let conn = self.conns[idx as usize];
        debug_assert!(conn.flags & F_LIVE != 0);
        for dir in [Dir::Orig, Dir::Reply] {
            self.unplace(conn.key(dir).pack(), encode(idx, dir));
        }
        let c = &mut self.conns[idx as usize];
        c.flags = 0;
        // The entry is dead before `expires` becomes a free-list link: a process killed between
        // the two leaves a free entry in a file-backed table, never a live one with a link for
        // its expiry (the compiler may not swap the stores; x86 keeps their order).
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::Release);
        c.expires = self.free;
        self.free = idx;
        self.len -= 1;
        self.generation += 1;
    }

    /// Remove a key (with value `val`: the same key may be both directions of one odd entry),
    /// then backward-shift: while a later key's probe crosses the hole, pull one in (a key
    /// whose home is the hole if there is one, else the nearest). Keys thus never stay farther
    /// from home than a fresh insert would put them, however long the churn.
    fn unplace(&mut self, k: [u64; 2], val: u32) {
        let h = self.home_of(k);
        let b = &mut self.buckets[h];
        if let Some(s) = b.find(k)
            && b.vals[s] == val
        {
            // At home: the reach of `h` is unchanged (it counts keys past it).
            let was_full = b.free_slot().is_none();
            b.keys[s] = EMPTY_KEY;
            if was_full {
                self.shift_back(h);
            }
            return;
        }
        let (hole, s) = (0..=self.buckets[h].reach as usize)
            .map(|d| self.ahead(h, d))
            .find_map(|i| {
                let b = &self.buckets[i];
                (0..SLOTS)
                    .find(|&s| b.keys[s] == k && b.vals[s] == val)
                    .map(|s| (i, s))
            })
            .expect("a live entry's key is within its home's reach");
        let was_full = self.buckets[hole].free_slot().is_none();
        self.buckets[hole].keys[s] = EMPTY_KEY;
        self.settle_reach(h, self.dist(h, hole));
        if was_full {
            self.shift_back(hole);
        }
    }

    /// Fill a hole in a bucket that was full (so probes may cross it): while a later key's
    /// probe crosses the hole, pull one in, and the hole moves on to where it came from.
    fn shift_back(&mut self, mut hole: usize) {
        while let Some((from, s, from_home)) = self.crossing(hole) {
            let to = self.buckets[hole]
                .free_slot()
                .expect("the hole has a free slot");
            self.buckets[hole].keys[to] = self.buckets[from].keys[s];
            self.buckets[hole].vals[to] = self.buckets[from].vals[s];
            self.buckets[from].keys[s] = EMPTY_KEY;
            self.settle_reach(from_home, self.dist(from_home, from));
            hole = from;
        }
    }

    /// A key stored after `hole` whose probe crosses it: one whose home is `hole` if any, else
    /// the nearest. Such keys lie in the run of full buckets after the hole, or in the first
    /// bucket that is not full (keys never sit past a bucket with a free slot).
    fn crossing(&self, hole: usize) -> Option<(usize, usize, usize)> {
        let mut nearest = None;
        let mut j = self.next(hole);
        while j != hole {
            let b = &self.buckets[j];
            for (s, &k) in b.keys.iter().enumerate() {
                if k == EMPTY_KEY {
                    continue;
                }
                let kh = self.home_of(k);
                if self.dist(kh, hole) < self.dist(kh, j) {
                    if kh == hole {
                        return Some((j, s, kh));
                    }
                    nearest = nearest.or(Some((j, s, kh)));
                }
            }
            if b.free_slot().is_some() {
                break;
            }
            j = self.next(j);
        }
        nearest
    }

    /// Bucket `h` lost (or moved closer) a key that sat `gone` buckets past it: if that was its
    /// farthest, find the new farthest.
    fn settle_reach(&mut self, h: usize, gone: usize) {
        let reach = self.buckets[h].reach as usize;
        if gone < reach || reach == 0 {
            return;
        }
        let reach = (1..=reach)
            .rev()
            .find(|&d| {
                self.buckets[self.ahead(h, d)]
                    .keys
                    .iter()
                    .any(|&k| k != EMPTY_KEY && self.home_of(k) == h)
            })
            .unwrap_or(0);
        self.buckets[h].reach = reach as u32;
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
        self.iter_slots(0, self.conns.len())
    }

    /// Slots in the slab, live or free: what [`ConnTable::iter_slots`] walks.
    pub fn slots(&self) -> usize {
        self.conns.len()
    }

    /// Live entries among `n` slab slots from `from` on (listings read a large table a slice
    /// at a time, so the poll thread never stops for the whole table).
    pub fn iter_slots(&self, from: usize, n: usize) -> impl Iterator<Item = (u32, &Conn)> {
        let end = from.saturating_add(n).min(self.conns.len());
        self.conns[from.min(end)..end]
            .iter()
            .enumerate()
            .filter(|(_, c)| c.flags & F_LIVE != 0)
            .map(move |(i, c)| ((from + i) as u32, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use vswitch::wire::ipv4;

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
            proto: ipv4::PROTO_TCP,
            ..Conn::default()
        }
    }

    impl ConnTable {
        /// Every structural invariant: each stored key is a live entry's key; every bucket
        /// between a key's home and its place is full (so no key sits past a free slot it could
        /// have used); each bucket's reach is exactly its farthest key's distance; each bucket
        /// holds as many of its own keys as fit; the free chain holds exactly the dead entries.
        fn check(&self) {
            let nb = self.buckets.len();
            let mut reach = vec![0u32; nb];
            let mut homed = vec![(0, 0); nb];
            let mut keys = 0;
            for (p, b) in self.buckets.iter().enumerate() {
                for s in 0..SLOTS {
                    if b.keys[s] == EMPTY_KEY {
                        continue;
                    }
                    keys += 1;
                    let (idx, dir) = decode(b.vals[s]);
                    assert!(
                        self.is_live(idx),
                        "bucket {p} slot {s} points at a dead entry"
                    );
                    assert_eq!(self.get(idx).key(dir).pack(), b.keys[s]);
                    let h = self.home_of(b.keys[s]);
                    let mut i = h;
                    while i != p {
                        assert!(self.buckets[i].free_slot().is_none(), "bucket {i} has room");
                        i = self.next(i);
                    }
                    reach[h] = reach[h].max(self.dist(h, p) as u32);
                    homed[h].0 += 1;
                    homed[h].1 += usize::from(h == p);
                }
            }
            assert_eq!(keys, self.len * KEYS_PER_CONN);
            for (i, b) in self.buckets.iter().enumerate() {
                assert_eq!(b.reach, reach[i], "reach of bucket {i}");
                assert_eq!(
                    homed[i].1,
                    homed[i].0.min(SLOTS),
                    "keys at home in bucket {i}"
                );
            }
            let (mut n, mut f) = (0, self.free);
            while f != NIL {
                assert!(!self.is_live(f) && f < self.fresh);
                n += 1;
                f = self.get(f).expires;
            }
            assert!((self.fresh as usize..self.capacity()).all(|i| !self.is_live(i as u32)));
            assert_eq!(
                n + self.capacity() - self.fresh as usize,
                self.capacity() - self.len
            );
        }

        /// Fraction of stored keys that sit in their home bucket.
        fn home_fraction(&self) -> f64 {
            let (mut home, mut all) = (0, 0);
            for (p, b) in self.buckets.iter().enumerate() {
                for k in b.keys.iter().filter(|&&k| k != EMPTY_KEY) {
                    all += 1;
                    home += usize::from(self.home_of(*k) == p);
                }
            }
            home as f64 / all as f64
        }

        fn orig_home(&self, c: &Conn) -> usize {
            self.home(self.hash(&c.key(Dir::Orig)))
        }
    }

    /// Connections whose original keys all have home bucket `want(nb)` in `t`.
    fn colliding(t: &ConnTable, n: usize, want: impl Fn(usize) -> usize) -> Vec<Conn> {
        let home = want(t.buckets.len());
        (0..1_000_000u32)
            .map(|c| conn(c, 1, 7))
            .filter(|c| t.orig_home(c) == home)
            .take(n)
            .collect()
    }

    #[test]
    fn bucket_and_entry_are_one_cache_line_each() {
        assert_eq!(size_of::<Conn>(), 64);
        assert_eq!(size_of::<Bucket>(), 64);
        assert_eq!(align_of::<Bucket>(), 64);
    }

    #[test]
    fn no_real_key_is_the_empty_key() {
        let k = Key {
            net: u16::MAX,
            tuple: Tuple {
                proto: u8::MAX,
                src: u32::MAX,
                dst: u32::MAX,
                sport: u16::MAX,
                dport: u16::MAX,
            },
        };
        assert_eq!(k.pack()[1] & EMPTY_KEY[1], 0);
        assert_ne!(Key::default().pack(), EMPTY_KEY);
    }

    #[test]
    fn both_directions_find_the_entry() {
        let mut t = ConnTable::new(16, 7);
        let c = conn(1, 1000, 2);
        let i = t.insert(c).unwrap();
        assert_eq!(t.lookup(&c.key(Dir::Orig)), Some((i, Dir::Orig)));
        assert_eq!(t.lookup(&c.key(Dir::Reply)), Some((i, Dir::Reply)));
        let mut other = c.key(Dir::Orig);
        other.tuple.proto = ipv4::PROTO_UDP;
        assert_eq!(t.lookup(&other), None);
        other = c.key(Dir::Orig);
        other.net = 1;
        assert_eq!(t.lookup(&other), None);
        t.check();
        t.remove(i);
        assert_eq!(t.lookup(&c.key(Dir::Orig)), None);
        assert!(t.is_empty());
        t.check();
    }

    #[test]
    fn an_entry_whose_two_keys_are_equal() {
        // A backend that is its own client through a VIP on its own address: both directions
        // have one key. Both slots are kept apart by their values, and removal finds each.
        let mut t = ConnTable::new(8, 4);
        let mut c = conn(5, 80, 5);
        (c.vaddr, c.laddr, c.dport) = (5, 5, 80);
        assert_eq!(c.key(Dir::Orig), c.key(Dir::Reply));
        let other = t.insert(conn(6, 1, 7)).unwrap();
        let i = t.insert(c).unwrap();
        assert_eq!(t.lookup(&c.key(Dir::Reply)).map(|x| x.0), Some(i));
        t.check();
        t.remove(i);
        assert_eq!(t.lookup(&c.key(Dir::Orig)), None);
        t.check();
        t.remove(other);
        assert!(t.is_empty());
        t.check();
        // Taking out the copy found second leaves the first, and the other way round.
        let i = t.insert(c).unwrap();
        let k = c.key(Dir::Orig).pack();
        t.unplace(k, encode(i, Dir::Reply));
        assert_eq!(t.lookup(&c.key(Dir::Orig)), Some((i, Dir::Orig)));
        t.place(k, encode(i, Dir::Reply));
        t.unplace(k, encode(i, Dir::Orig));
        assert_eq!(t.lookup(&c.key(Dir::Orig)), Some((i, Dir::Reply)));
    }

    #[test]
    fn full_table_refuses_and_keeps_existing() {
        let mut t = ConnTable::new(4, 1);
        let cs: Vec<Conn> = (0..4).map(|i| conn(i, 1, 99)).collect();
        let idx: Vec<u32> = cs.iter().map(|c| t.insert(*c).unwrap()).collect();
        assert_eq!(t.insert(conn(50, 1, 99)), Err(TableFullError));
        assert_eq!(t.len(), 4);
        t.check();
        for c in &cs {
            assert!(t.lookup(&c.key(Dir::Orig)).is_some());
            assert!(t.lookup(&c.key(Dir::Reply)).is_some());
        }
        // A freed entry is reused, and the table is full again.
        t.remove(idx[2]);
        let n = t.insert(conn(50, 1, 99)).unwrap();
        assert_eq!(n, idx[2]);
        assert_eq!(t.insert(conn(51, 1, 99)), Err(TableFullError));
        assert_eq!(t.lookup(&cs[2].key(Dir::Orig)), None);
        t.check();
    }

    #[test]
    fn full_table_of_one_entry() {
        let mut t = ConnTable::new(1, 3);
        let i = t.insert(conn(1, 1, 2)).unwrap();
        assert_eq!(t.insert(conn(3, 1, 2)), Err(TableFullError));
        t.remove(i);
        t.insert(conn(3, 1, 2)).unwrap();
        assert_eq!(
            t.lookup(&conn(3, 1, 2).key(Dir::Reply)).map(|x| x.1),
            Some(Dir::Reply)
        );
        t.check();
    }

    #[test]
    fn colliding_keys_spill_over_and_shift_back() {
        let mut t = ConnTable::new(64, 11);
        let cs = colliding(&t, 8, |nb| nb / 2);
        let home = t.orig_home(&cs[0]);
        let idx: Vec<u32> = cs.iter().map(|c| t.insert(*c).unwrap()).collect();
        t.check();
        // Eight keys for a three-slot bucket: five live farther on.
        assert!(t.buckets[home].reach >= 2);
        let at = |t: &ConnTable| {
            t.buckets[home]
                .keys
                .iter()
                .filter(|&&k| k != EMPTY_KEY && t.home_of(k) == home)
                .count()
        };
        assert_eq!(at(&t), 3);
        for (c, &i) in cs.iter().zip(&idx) {
            assert_eq!(t.lookup(&c.key(Dir::Orig)), Some((i, Dir::Orig)));
        }
        // An absent key with the same home is a miss, after the home's reach.
        let absent = colliding(&t, 9, |nb| nb / 2)[8];
        assert_eq!(t.lookup(&absent.key(Dir::Orig)), None);
        // Remove from the home bucket first: the displaced keys move back in.
        for &i in [0, 1, 5, 2].iter().map(|k| &idx[*k]) {
            t.remove(i);
            t.check();
        }
        assert_eq!(at(&t), 3, "four colliding keys remain, three fit at home");
        for (n, c) in cs.iter().enumerate() {
            let want = [3, 4, 6, 7].contains(&n).then_some((idx[n], Dir::Orig));
            assert_eq!(t.lookup(&c.key(Dir::Orig)), want);
        }
        for &i in [3, 4, 6, 7].iter().map(|k| &idx[*k]) {
            t.remove(i);
            t.check();
        }
        assert!(t.buckets.iter().all(|b| b.reach == 0));
    }

    #[test]
    fn probes_wrap_around_the_last_bucket() {
        let mut t = ConnTable::new(64, 5);
        let cs = colliding(&t, 7, |nb| nb - 1);
        let idx: Vec<u32> = cs.iter().map(|c| t.insert(*c).unwrap()).collect();
        t.check();
        // Seven keys homed on the last bucket: four wrapped around to the first buckets.
        assert!(t.buckets[t.buckets.len() - 1].reach >= 2);
        for (c, &i) in cs.iter().zip(&idx) {
            assert_eq!(t.lookup(&c.key(Dir::Orig)), Some((i, Dir::Orig)));
        }
        for &i in idx.iter().rev().step_by(2) {
            t.remove(i);
            t.check();
        }
        for &i in idx.iter().rev().skip(1).step_by(2) {
            t.remove(i);
            t.check();
        }
        assert!(t.is_empty());
    }

    #[test]
    fn memory_per_connection_at_a_million() {
        let t = ConnTable::new(1_000_000, 0);
        let per = t.memory_bytes() as f64 / 1e6;
        assert!(per <= 128.0, "{per} bytes per connection");
    }

    #[test]
    fn churn_keeps_keys_at_home() {
        // At capacity (3/4 of the key slots in use), replace every entry three times over. Each
        // bucket keeps as many of its own keys as fit (`check`), so the share of keys found in
        // their home line stays where random placement puts it: E[min(X, 3)] / 2.25 = 0.864 for
        // X ~ Poisson(2.25). Without backward shift it would fall to ~0.55, and plain
        // first-come linear probing holds ~0.83.
        const CAP: usize = 20_000;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut random_conn = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            conn(x as u32, (x >> 32) as u16, 3)
        };
        let mut t = ConnTable::new(CAP, 9);
        let mut live: Vec<(Conn, u32)> = (0..CAP)
            .map(|_| {
                let c = random_conn();
                (c, t.insert(c).unwrap())
            })
            .collect();
        t.check();
        let fresh = t.home_fraction();
        for n in 0..CAP * 3 {
            let k = (n * 7919) % CAP;
            t.remove(live[k].1);
            let c = random_conn();
            live[k] = (c, t.insert(c).unwrap());
        }
        t.check();
        let churned = t.home_fraction();
        assert!(
            fresh > 0.85 && churned > 0.85,
            "fresh {fresh}, after churn {churned}"
        );
        for &(c, i) in &live {
            assert_eq!(t.lookup(&c.key(Dir::Reply)), Some((i, Dir::Reply)));
        }
    }

    proptest! {
        #[test]
        fn matches_a_model_under_churn(ops in proptest::collection::vec((any::<bool>(), 0u32..32, 0u16..2), 1..400), seed in any::<u64>()) {
            // A tiny table forces long probe runs and wrap-around, exercising backward shift.
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
            t.check();
            for c in 0..32u32 {
                for p in 0..2u16 {
                    let cn = conn(c, p, 1000 + c);
                    let want = model.get(&(c, p)).copied();
                    prop_assert_eq!(t.lookup(&cn.key(Dir::Orig)), want.map(|i| (i, Dir::Orig)));
                    prop_assert_eq!(t.lookup(&cn.key(Dir::Reply)), want.map(|i| (i, Dir::Reply)));
                }
            }
        }

        #[test]
        fn matches_a_model_when_full(ops in proptest::collection::vec((0u8..3, 0u32..24), 1..300), cap in 1usize..12, seed in any::<u64>()) {
            // More connections than room: every insert beyond capacity is refused, nothing else
            // changes, and the structure stays exact after every operation.
            let mut t = ConnTable::new(cap, seed);
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (op, c) in ops {
                if op > 0 {
                    if model.contains_key(&c) {
                        continue;
                    }
                    match t.insert(conn(c, 9, c ^ 0x5555)) {
                        Ok(i) => {
                            prop_assert!(model.len() < cap);
                            model.insert(c, i);
                        }
                        Err(TableFullError) => prop_assert_eq!(model.len(), cap),
                    }
                } else if let Some(i) = model.remove(&c) {
                    t.remove(i);
                }
                t.check();
            }
            for c in 0..24u32 {
                let cn = conn(c, 9, c ^ 0x5555);
                let want = model.get(&c).copied();
                prop_assert_eq!(t.lookup(&cn.key(Dir::Orig)), want.map(|i| (i, Dir::Orig)));
                prop_assert_eq!(t.lookup(&cn.key(Dir::Reply)), want.map(|i| (i, Dir::Reply)));
            }
        }
    }
}
