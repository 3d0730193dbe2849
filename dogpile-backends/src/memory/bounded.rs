//! The bounded memory store: S3-FIFO eviction over papaya maps, so that a hit takes no
//! lock and, on a key read often, writes nothing; the store is split in shards, each with
//! its own map, queues and lock, so that writers on different keys rarely meet.
//!
//! A hit hashes its key once (a randomly seeded `ahash`), picks the shard from the hash,
//! and looks the key up in that shard's map under papaya's guard (which writes only the
//! reading thread's own slot). The map is keyed by the hash it was given, so the key is
//! hashed once per hit, as with a single map. The hit lends the entry, and raises the
//! entry's access count, a small counter that stops at 3: once it is there, hits on that
//! key write no memory at all, so two threads reading one hot key share no cache line that
//! either writes. (quick_cache and moka both take a lock, or write a shared buffer, on
//! every hit: measured in BENCHMARKS.md, neither scales from one thread to two on a hot
//! key.)
//!
//! Writes (inserts, replacements, removals and the evictions they cause) take their
//! shard's mutex, which also keeps the bound exact: each shard holds a share of the bound,
//! and room is made in it before an entry goes in, so the store never holds more than its
//! bound. Shards are at least [`MIN_SHARD`] entries (a small store is one shard) and
//! their number grows with the cores, up to [`MAX_SHARDS`]. A store bounded in bytes is
//! one shard, so that any value up to the whole bound can be kept. Each shard's map has
//! its own reclamation (`seize`), so a writer retiring an entry involves only the threads
//! inside that shard at that moment.
//!
//! The policy, in each shard, is S3-FIFO (Yang et al., "FIFO queues are all you need for
//! cache eviction", SOSP 2023): a new key enters a small FIFO queue (a tenth of the bound);
//! one that was read again by the time it leaves it moves to the main queue, the others
//! leave the store and are remembered, by hash, in a ghost queue; a key found in the ghost
//! queue goes straight to the main queue. The main queue evicts in FIFO order, giving a key
//! read since it was last passed one more turn per read (up to 3). A key that many callers
//! wait for (the dogpile case) is kept, and a one-off key is the first to go.

use std::collections::{hash_map, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dogpile_core::backend::Entry;

/// The most a key's access count goes up to.
const MAX_FREQ: u8 = 3;

/// The least room the ghost queue has, in keys.
const MIN_GHOSTS: usize = 16;

/// The fewest entries a shard is made for: below it, fewer shards.
const MIN_SHARD: u64 = 512;

/// The most shards a store has.
const MAX_SHARDS: usize = 64;

/// The weight of an entry: 1, or its bytes for `max_bytes`.
#[derive(Clone, Copy)]
pub(super) enum Weigh {
    Entries,
    Bytes,
}

/// A store holding at most `capacity` in weight: see the [module docs](self).
pub(super) struct Bounded {
    hasher: ahash::RandomState,
    shards: Box<[Shard]>,
    weigh: Weigh,
}

/// A part of the store: the keys whose hash picks it, and its share of the bound. Each on
/// cache lines of its own, so that writers on two shards write no line in common.
#[repr(align(128))]
struct Shard {
    map: papaya::HashMap<Key, Node, Prehashed>,
    queues: Mutex<Queues>,
    capacity: u64,
}

/// A shard's map, pinned.
type Map<'g, G> = papaya::HashMapRef<'g, Key, Node, Prehashed, G>;

/// A stored key with its hash, which the map takes as it is (see [`Prehashed`]).
#[derive(Clone)]
struct Key {
    hash: u64,
    text: Arc<str>,
}

/// A key looked up, with its hash.
struct Probe<'k> {
    hash: u64,
    text: &'k str,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Hash for Probe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for Key {}

impl papaya::Equivalent<Key> for Probe<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.hash == key.hash && self.text == &*key.text
    }
}

/// The maps' hasher: a key's hash is computed once, by the store's seeded `ahash`, and
/// handed over as it is.
#[derive(Clone, Default)]
struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = Handed;

    fn build_hasher(&self) -> Handed {
        Handed(0)
    }
}

/// The hash handed over by [`Key`] or [`Probe`].
struct Handed(u64);

impl Hasher for Handed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("the maps are only handed precomputed hashes");
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// One stored entry, held in the map itself (no allocation of its own).
struct Node {
    entry: Entry,
    weight: u64,
    /// Which value of its key this is: its queue slot carries the same number.
    seq: u64,
    /// Reads since the queues last passed it, up to [`MAX_FREQ`].
    freq: AtomicU8,
    /// In the main queue (else the small one). Changed under the mutex.
    main: AtomicBool,
    /// False once replaced or removed (it may stay readable a moment longer, while its
    /// replacement is made room for). Changed under the mutex.
    live: AtomicBool,
}

impl Node {
    /// Whether `slot` is this value's place in a queue, and the value still counts.
    fn holds(&self, slot: &Slot) -> bool {
        self.seq == slot.seq && self.live.load(Ordering::Relaxed)
    }
}

/// A queue's place for a stored value: its key, and which value of it. A value replaced
/// or removed leaves its slot dead (the map holds another number, or nothing), and the
/// queue skips it when it passes.
struct Slot {
    key: Key,
    seq: u64,
}

#[derive(Default)]
struct Queues {
    small: VecDeque<Slot>,
    main: VecDeque<Slot>,
    small_weight: u64,
    main_weight: u64,
    /// Entries held (their total weight is `small_weight + main_weight`).
    entries: u64,
    /// The number of the next value stored.
    next_seq: u64,
    /// Queue slots of removed or replaced entries, not yet passed.
    dead: usize,
    /// Hashes of keys evicted from the small queue, oldest first, and how many times each
    /// stands in it.
    ghosts: VecDeque<u64>,
    /// (The keys are already random hashes: ahash, not SipHash, to place them.)
    ghost_counts: HashMap<u64, u32, ahash::RandomState>,
}

impl Bounded {
    /// An empty store, its hasher seeded from the system's random source.
    pub(super) fn new(capacity: u64, weigh: Weigh) -> Self {
        let shards = match weigh {
            Weigh::Bytes => 1,
            Weigh::Entries => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let by_size = usize::try_from(capacity / MIN_SHARD).unwrap_or(usize::MAX);
                prev_power_of_two((cores * 4).min(by_size).min(MAX_SHARDS))
            }
        };
        let count = shards as u64;
        Bounded {
            hasher: ahash::RandomState::new(),
            shards: (0..count)
                .map(|i| {
                    // The bound shared out, the remainder to the first shards.
                    let capacity = capacity / count + u64::from(i < capacity % count);
                    Shard {
                        map: papaya::HashMap::builder()
                            .hasher(Prehashed)
                            .capacity(match weigh {
                                Weigh::Entries => usize::try_from(capacity).unwrap_or(0),
                                Weigh::Bytes => 0,
                            })
                            .build(),
                        queues: Mutex::new(Queues::default()),
                        capacity,
                    }
                })
                .collect(),
            weigh,
        }
    }

    /// `key`'s hash and shard.
    #[inline]
    fn locate(&self, key: &str) -> (u64, &Shard) {
        let hash = self.hasher.hash_one(key);
        // Bits the maps use little: they index by the low bits and tag by the top 7.
        let shard = (hash >> 48) as usize & (self.shards.len() - 1);
        (hash, &self.shards[shard])
    }

    /// Lends the entry of `key` to `f`, counting the read.
    #[inline]
    pub(super) fn get_with<R>(&self, key: &str, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        let (hash, shard) = self.locate(key);
        let map = shard.map.pin();
        match map.get(&Probe { hash, text: key }) {
            Some(node) => {
                let freq = node.freq.load(Ordering::Relaxed);
                // A lost update between two readers only undercounts a hot key, which
                // then reaches the top on its next read.
                if freq < MAX_FREQ {
                    node.freq.store(freq + 1, Ordering::Relaxed);
                }
                f(Some(&node.entry))
            }
            None => f(None),
        }
    }

    /// Stores `entry` as the value of `key`, evicting what it must first. An entry
    /// heavier than the whole store is not kept (and `key`'s old value goes). A value that
    /// replaces another takes its place in the map in one step: a reader finds the old
    /// value or the new one, never neither.
    pub(super) fn insert(&self, key: &str, entry: Entry) {
        let weight = self.weigh(key, &entry);
        let (hash, shard) = self.locate(key);
        let probe = Probe { hash, text: key };
        let map = shard.map.pin();
        let mut queues = shard.lock();
        // Writers hold the lock, so what the map holds for `key` stays put until we change
        // it. The old value stays readable, but no longer counts, nor can be evicted.
        let replaced = map.get(&probe);
        if let Some(old) = replaced {
            queues.forget(old);
        }
        if weight > shard.capacity {
            if replaced.is_some() {
                map.remove(&probe);
            }
            queues.compact(&map);
            return;
        }
        while queues.weight() + weight > shard.capacity {
            if !shard.evict(&mut queues, &map) {
                break;
            }
        }
        let (main, freq) = match replaced {
            // A new value keeps its key's place in the policy.
            Some(old) => (
                old.main.load(Ordering::Relaxed),
                old.freq.load(Ordering::Relaxed),
            ),
            None => (queues.forget_ghost(hash), 0),
        };
        let key = Key {
            hash,
            text: Arc::from(key),
        };
        let seq = queues.next_seq;
        queues.next_seq += 1;
        let slot = Slot {
            key: key.clone(),
            seq,
        };
        if main {
            queues.main_weight += weight;
            queues.main.push_back(slot);
        } else {
            queues.small_weight += weight;
            queues.small.push_back(slot);
        }
        queues.entries += 1;
        let node = Node {
            entry,
            weight,
            seq,
            freq: AtomicU8::new(freq),
            main: AtomicBool::new(main),
            live: AtomicBool::new(true),
        };
        map.insert(key, node);
        queues.compact(&map);
    }

    /// Removes `key`'s entry, if any.
    pub(super) fn remove(&self, key: &str) {
        let (hash, shard) = self.locate(key);
        let map = shard.map.pin();
        let mut queues = shard.lock();
        if let Some(node) = map.remove(&Probe { hash, text: key }) {
            queues.forget(node);
            queues.compact(&map);
        }
    }

    /// How many entries the store holds.
    pub(super) fn len(&self) -> u64 {
        self.shards.iter().map(|shard| shard.lock().entries).sum()
    }

    /// Their total weight.
    pub(super) fn weight(&self) -> u64 {
        self.shards.iter().map(|shard| shard.lock().weight()).sum()
    }

    fn weigh(&self, key: &str, entry: &Entry) -> u64 {
        match self.weigh {
            Weigh::Entries => 1,
            Weigh::Bytes => (key.len() + entry.approximate_size()).max(1) as u64,
        }
    }
}

/// The largest power of two not above `n` (1 for 0).
fn prev_power_of_two(n: usize) -> usize {
    match n {
        0 | 1 => 1,
        n => 1 << (usize::BITS - 1 - n.leading_zeros()),
    }
}

impl Shard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // The queues are consistent between statements that could panic.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Evicts one entry; false if the shard is empty.
    fn evict(&self, queues: &mut Queues, map: &Map<'_, impl papaya::Guard>) -> bool {
        loop {
            if queues.weight() == 0 {
                return false;
            }
            let small_turn = (queues.small_weight > 0 && queues.small_weight >= self.capacity / 10)
                || queues.main_weight == 0;
            let queue = if small_turn {
                &mut queues.small
            } else {
                &mut queues.main
            };
            let Some(slot) = queue.pop_front() else {
                return false;
            };
            let node = match map.get(&slot.key) {
                Some(node) if node.holds(&slot) => node,
                // Replaced or removed since.
                _ => {
                    queues.dead = queues.dead.saturating_sub(1);
                    continue;
                }
            };
            let freq = node.freq.load(Ordering::Relaxed);
            if small_turn && freq > 0 {
                // Read again while in the small queue: it moves to the main one.
                node.freq.store(0, Ordering::Relaxed);
                node.main.store(true, Ordering::Relaxed);
                queues.small_weight -= node.weight;
                queues.main_weight += node.weight;
                queues.main.push_back(slot);
                continue;
            }
            if !small_turn && freq > 0 {
                // Read since the main queue last passed it: one more turn.
                node.freq.store(freq - 1, Ordering::Relaxed);
                queues.main.push_back(slot);
                continue;
            }
            map.remove(&slot.key);
            queues.forget(node);
            // Its slot was popped already: `forget` counted it among the dead.
            queues.dead = queues.dead.saturating_sub(1);
            if small_turn {
                let room = (queues.entries as usize).max(MIN_GHOSTS);
                queues.remember_ghost(slot.key.hash, room);
            }
            return true;
        }
    }
}

impl Queues {
    /// The total weight of the entries held.
    fn weight(&self) -> u64 {
        self.small_weight + self.main_weight
    }

    /// Takes the weight of `node`, replaced or removed, off. Its queue slot stays, dead,
    /// until the queue passes it or [`compact`](Self::compact) drops it.
    fn forget(&mut self, node: &Node) {
        node.live.store(false, Ordering::Relaxed);
        if node.main.load(Ordering::Relaxed) {
            self.main_weight -= node.weight;
        } else {
            self.small_weight -= node.weight;
        }
        self.entries -= 1;
        self.dead += 1;
    }

    /// Drops the dead slots when they outnumber the live ones (keys replaced again and
    /// again in a store that is not full, which never evicts). `map` is the shard's, as
    /// it stands after the change.
    fn compact(&mut self, map: &Map<'_, impl papaya::Guard>) {
        if self.dead > self.entries as usize + 64 {
            let live = |slot: &Slot| map.get(&slot.key).is_some_and(|node| node.holds(slot));
            self.small.retain(live);
            self.main.retain(live);
            self.dead = 0;
        }
    }

    /// Remembers an evicted key's hash, forgetting the oldest beyond `room`.
    fn remember_ghost(&mut self, hash: u64, room: usize) {
        self.ghosts.push_back(hash);
        *self.ghost_counts.entry(hash).or_default() += 1;
        while self.ghosts.len() > room {
            if let Some(old) = self.ghosts.pop_front() {
                self.forget_ghost(old);
            }
        }
    }

    /// Takes one standing of `hash` out of the ghost queue's counts; true if it stood
    /// there.
    fn forget_ghost(&mut self, hash: u64) -> bool {
        match self.ghost_counts.entry(hash) {
            hash_map::Entry::Occupied(mut count) => {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
                true
            }
            hash_map::Entry::Vacant(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    fn bytes(n: usize) -> Entry {
        Entry::Bytes(vec![7; n])
    }

    fn has(store: &Bounded, key: &str) -> bool {
        store.get_with(key, |entry| entry.is_some())
    }

    #[test]
    fn never_holds_more_than_its_bound_and_counts_what_it_holds() {
        let store = Bounded::new(100, Weigh::Entries);
        for i in 0..1_000 {
            store.insert(&format!("k{i}"), bytes(1));
            assert!(store.len() <= 100, "{} entries", store.len());
        }
        assert_eq!(store.len(), 100);
        let held = (0..1_000).filter(|i| has(&store, &format!("k{i}"))).count();
        assert_eq!(held, 100, "the count is what the map holds");
        assert_eq!(store.weight(), 100);
    }

    #[test]
    fn a_store_of_many_shards_keeps_its_bound_and_its_read_keys() {
        let store = Bounded::new(4096, Weigh::Entries);
        assert!(store.shards.len() >= 4, "{} shards", store.shards.len());
        let capacities: u64 = store.shards.iter().map(|shard| shard.capacity).sum();
        assert_eq!(capacities, 4096);
        for i in 0..1_000 {
            store.insert(&format!("hot{i}"), bytes(1));
        }
        for round in 0..10 {
            for i in 0..1_000 {
                assert!(
                    has(&store, &format!("hot{i}")),
                    "hot{i} lost in round {round}"
                );
            }
            for i in 0..5_000 {
                store.insert(&format!("scan{round}/{i}"), bytes(1));
                assert!(store.len() <= 4096, "{} entries", store.len());
            }
        }
        // Every shard is full: the store holds its whole bound, and counts what it holds.
        assert_eq!(store.len(), 4096);
        let held = (0..1_000)
            .filter(|i| has(&store, &format!("hot{i}")))
            .count()
            + (0..5_000)
                .filter(|i| has(&store, &format!("scan9/{i}")))
                .count();
        assert!(held <= 4096, "{held}");
    }

    #[test]
    fn a_key_read_again_outlives_a_scan_of_one_off_keys() {
        let store = Bounded::new(100, Weigh::Entries);
        for i in 0..50 {
            store.insert(&format!("hot{i}"), bytes(1));
        }
        for round in 0..20 {
            for i in 0..50 {
                assert!(
                    has(&store, &format!("hot{i}")),
                    "hot{i} lost in round {round}"
                );
            }
            for i in 0..100 {
                store.insert(&format!("scan{round}/{i}"), bytes(1));
            }
        }
    }

    #[test]
    fn replacing_and_removing_keep_the_counts_right() {
        let store = Bounded::new(10, Weigh::Bytes);
        store.insert("a", bytes(4));
        store.insert("a", bytes(2));
        assert_eq!((store.len(), store.weight()), (1, 3));
        store.get_with("a", |entry| {
            assert!(
                matches!(entry, Some(Entry::Bytes(b)) if b.len() == 2),
                "the new value"
            );
        });
        store.insert("b", bytes(5));
        assert_eq!((store.len(), store.weight()), (2, 9));
        store.insert("c", bytes(3));
        assert!(store.weight() <= 10, "{}", store.weight());
        assert!(has(&store, "c"));
        store.remove("c");
        store.remove("missing");
        assert!(!has(&store, "c"));
        let held = ["a", "b"].iter().filter(|k| has(&store, k)).count() as u64;
        assert_eq!(store.len(), held);
    }

    #[test]
    fn replacing_keys_in_a_store_that_is_not_full_leaves_no_pile_of_dead_slots() {
        let store = Bounded::new(1_000, Weigh::Entries);
        for i in 0..100_000 {
            store.insert(&format!("k{}", i % 10), bytes(1));
        }
        assert_eq!(store.len(), 10);
        let queues = store.shards[0].lock();
        let slots = queues.small.len() + queues.main.len();
        assert!(slots <= 10 + 64 + 1, "{slots} queue slots for 10 entries");
    }

    #[test]
    fn a_replaced_value_never_leaves_its_key_missing_for_a_reader() {
        let store = Bounded::new(8, Weigh::Entries);
        for i in 0..8 {
            store.insert(&format!("k{i}"), bytes(1));
        }
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..20_000 {
                    store.insert(&format!("k{}", i % 8), bytes(1 + i % 3));
                }
                done.store(true, Ordering::Relaxed);
            });
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) || reads < 1_000 {
                let key = format!("k{}", reads % 8);
                reads += 1;
                assert!(has(&store, &key), "{key} was missing on read {reads}");
            }
        });
        assert_eq!(store.len(), 8);
    }

    #[test]
    fn a_value_being_replaced_is_not_what_its_replacement_evicts() {
        // Weights are the key's byte plus the value's: a, b and c weigh 4 each.
        let store = Bounded::new(13, Weigh::Bytes);
        for key in ["a", "b", "c"] {
            store.insert(key, bytes(3));
        }
        // a's old value is the oldest in the small queue; its new one (6) needs room, and
        // takes it from b, the next oldest.
        store.insert("a", bytes(5));
        store.get_with("a", |entry| {
            assert!(
                matches!(entry, Some(Entry::Bytes(b)) if b.len() == 5),
                "the new value"
            );
        });
        assert!(!has(&store, "b"));
        assert!(has(&store, "c"));
        assert_eq!((store.len(), store.weight()), (2, 10));
    }

    #[test]
    fn an_entry_heavier_than_the_store_is_not_kept_and_drops_the_old_value() {
        let store = Bounded::new(10, Weigh::Bytes);
        store.insert("a", bytes(3));
        store.insert("a", bytes(50));
        assert!(!has(&store, "a"));
        assert_eq!((store.len(), store.weight()), (0, 0));
    }

    #[test]
    fn concurrent_writers_and_readers_keep_the_bound_and_the_counts() {
        // One shard, then several (each shard its own lock).
        for (capacity, keys) in [(64, 200), (2048, 6_000)] {
            const THREADS: usize = 8;
            let store = Bounded::new(capacity, Weigh::Entries);
            let start = Barrier::new(THREADS);
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let (store, start) = (&store, &start);
                    s.spawn(move || {
                        start.wait();
                        for i in 0..4_000 {
                            let key = format!("{}", (i * 7 + t) % keys);
                            match i % 4 {
                                0 => store.remove(&key),
                                _ => store.insert(&key, bytes(1)),
                            }
                            has(store, &key);
                            assert!(store.len() <= capacity, "{} entries", store.len());
                        }
                    });
                }
            });
            let held = (0..keys).filter(|i| has(&store, &i.to_string())).count() as u64;
            assert_eq!(store.len(), held, "capacity {capacity}");
            assert_eq!(store.weight(), held, "capacity {capacity}");
        }
    }
}
