//! The bounded memory store: S3-FIFO eviction over a papaya map, so that a hit takes no
//! lock and, on a key read often, writes nothing.
//!
//! A hit looks the key up in the map under papaya's guard (which writes only the reading
//! thread's own slot), lends the entry, and raises the entry's access count, a small
//! counter that stops at 3: once it is there, hits on that key write no memory at all,
//! so two threads reading one hot key share no cache line that either writes. (quick_cache
//! and moka both take a lock, or write a shared buffer, on every hit: measured in
//! BENCHMARKS.md, neither scales from one thread to two on a hot key.)
//!
//! Writes (inserts, replacements, removals and the evictions they cause) take one mutex,
//! which also keeps the bound exact: room is made before an entry goes in, so the store
//! never holds more than its bound.
//!
//! The policy is S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction",
//! SOSP 2023): a new key enters a small FIFO queue (a tenth of the bound); one that was
//! read again by the time it leaves it moves to the main queue, the others leave the
//! store and are remembered, by hash, in a ghost queue; a key found in the ghost queue
//! goes straight to the main queue. The main queue evicts in FIFO order, giving a key
//! read since it was last passed one more turn per read (up to 3). A key that many
//! callers wait for (the dogpile case) is kept, and a one-off key is the first to go.

use std::collections::{hash_map, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dogpile_core::backend::Entry;

/// The most a key's access count goes up to.
const MAX_FREQ: u8 = 3;

/// The least room the ghost queue has, in keys.
const MIN_GHOSTS: usize = 16;

/// The weight of an entry: 1, or its bytes for `max_bytes`.
#[derive(Clone, Copy)]
pub(super) enum Weigh {
    Entries,
    Bytes,
}

/// A store holding at most `capacity` in weight: see the [module docs](self).
pub(super) struct Bounded {
    map: papaya::HashMap<String, Arc<Node>, ahash::RandomState>,
    /// The map's hasher, for the ghost queue's hashes.
    hasher: ahash::RandomState,
    queues: Mutex<Queues>,
    weigh: Weigh,
    capacity: u64,
}

/// One stored entry, shared by the map and a queue.
struct Node {
    key: String,
    /// The key's hash, for the ghost queue.
    hash: u64,
    entry: Entry,
    weight: u64,
    /// Reads since the queues last passed it, up to [`MAX_FREQ`].
    freq: AtomicU8,
    /// False once removed or replaced: its queue slot is then skipped. Changed under the
    /// mutex.
    live: AtomicBool,
    /// In the main queue (else the small one). Changed under the mutex.
    main: AtomicBool,
}

#[derive(Default)]
struct Queues {
    small: VecDeque<Arc<Node>>,
    main: VecDeque<Arc<Node>>,
    small_weight: u64,
    main_weight: u64,
    /// Entries held (their total weight is `small_weight + main_weight`).
    entries: u64,
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
        let hasher = ahash::RandomState::new();
        Bounded {
            map: papaya::HashMap::builder().hasher(hasher.clone()).build(),
            hasher,
            queues: Mutex::new(Queues::default()),
            weigh,
            capacity,
        }
    }

    /// Lends the entry of `key` to `f`, counting the read.
    #[inline]
    pub(super) fn get_with<R>(&self, key: &str, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        let map = self.map.pin();
        match map.get(key) {
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
    pub(super) fn insert(&self, key: String, entry: Entry) {
        let weight = self.weigh(&key, &entry);
        let mut queues = self.lock();
        // Writers hold the lock, so what the map holds for `key` stays put until we change
        // it. The old value stays readable, but no longer counts, nor can be evicted.
        let replaced = self.map.pin().get(key.as_str()).cloned();
        if let Some(old) = &replaced {
            self.forget(&mut queues, old);
        }
        if weight > self.capacity {
            if replaced.is_some() {
                self.map.pin().remove(key.as_str());
            }
            return;
        }
        while queues.weight() + weight > self.capacity {
            if !self.evict(&mut queues) {
                break;
            }
        }
        let (hash, main, freq) = match replaced {
            // A new value keeps its key's place in the policy.
            Some(old) => (
                old.hash,
                old.main.load(Ordering::Relaxed),
                old.freq.load(Ordering::Relaxed),
            ),
            None => {
                let hash = self.hasher.hash_one(key.as_str());
                (hash, queues.forget_ghost(hash), 0)
            }
        };
        let node = Arc::new(Node {
            key,
            hash,
            entry,
            weight,
            freq: AtomicU8::new(freq),
            live: AtomicBool::new(true),
            main: AtomicBool::new(main),
        });
        if main {
            queues.main_weight += weight;
            queues.main.push_back(node.clone());
        } else {
            queues.small_weight += weight;
            queues.small.push_back(node.clone());
        }
        queues.entries += 1;
        self.map.pin().insert(node.key.clone(), node);
    }

    /// Removes `key`'s entry, if any.
    pub(super) fn remove(&self, key: &str) {
        let mut queues = self.lock();
        self.unlink(&mut queues, key);
    }

    /// How many entries the store holds.
    pub(super) fn len(&self) -> u64 {
        self.lock().entries
    }

    /// Their total weight.
    pub(super) fn weight(&self) -> u64 {
        self.lock().weight()
    }

    fn weigh(&self, key: &str, entry: &Entry) -> u64 {
        match self.weigh {
            Weigh::Entries => 1,
            Weigh::Bytes => (key.len() + entry.approximate_size()).max(1) as u64,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // The queues are consistent between statements that could panic.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `key`'s entry out of the map, and its weight out of its queue's (its queue
    /// slot is skipped from now on). Returns it, if there was one.
    fn unlink(&self, queues: &mut Queues, key: &str) -> Option<Arc<Node>> {
        let node = self.map.pin().remove(key).cloned()?;
        self.forget(queues, &node);
        Some(node)
    }

    /// Marks `node`, no longer in the map, dead, and takes its weight off. Its queue slot
    /// stays until the queue passes it; when the dead slots outnumber the live ones (keys
    /// replaced again and again in a store that is not full, which never evicts), the
    /// queues drop them.
    fn forget(&self, queues: &mut Queues, node: &Node) {
        node.live.store(false, Ordering::Relaxed);
        if node.main.load(Ordering::Relaxed) {
            queues.main_weight -= node.weight;
        } else {
            queues.small_weight -= node.weight;
        }
        queues.entries -= 1;
        queues.dead += 1;
        if queues.dead > queues.entries as usize + 64 {
            let live = |node: &Arc<Node>| node.live.load(Ordering::Relaxed);
            queues.small.retain(live);
            queues.main.retain(live);
            queues.dead = 0;
        }
    }

    /// Evicts one entry; false if the store is empty.
    fn evict(&self, queues: &mut Queues) -> bool {
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
            let Some(node) = queue.pop_front() else {
                return false;
            };
            if !node.live.load(Ordering::Relaxed) {
                queues.dead = queues.dead.saturating_sub(1);
                continue;
            }
            let freq = node.freq.load(Ordering::Relaxed);
            if small_turn && freq > 0 {
                // Read again while in the small queue: it moves to the main one.
                node.freq.store(0, Ordering::Relaxed);
                node.main.store(true, Ordering::Relaxed);
                queues.small_weight -= node.weight;
                queues.main_weight += node.weight;
                queues.main.push_back(node);
                continue;
            }
            if !small_turn && freq > 0 {
                // Read since the main queue last passed it: one more turn.
                node.freq.store(freq - 1, Ordering::Relaxed);
                queues.main.push_back(node);
                continue;
            }
            self.map.pin().remove(&node.key);
            self.forget(queues, &node);
            // Its slot was popped already: `forget` counted it among the dead.
            queues.dead = queues.dead.saturating_sub(1);
            if small_turn {
                let room = (queues.entries as usize).max(MIN_GHOSTS);
                queues.remember_ghost(node.hash, room);
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
            store.insert(format!("k{i}"), bytes(1));
            assert!(store.len() <= 100, "{} entries", store.len());
        }
        assert_eq!(store.len(), 100);
        let held = (0..1_000).filter(|i| has(&store, &format!("k{i}"))).count();
        assert_eq!(held, 100, "the count is what the map holds");
        assert_eq!(store.weight(), 100);
    }

    #[test]
    fn a_key_read_again_outlives_a_scan_of_one_off_keys() {
        let store = Bounded::new(100, Weigh::Entries);
        for i in 0..50 {
            store.insert(format!("hot{i}"), bytes(1));
        }
        for round in 0..20 {
            for i in 0..50 {
                assert!(
                    has(&store, &format!("hot{i}")),
                    "hot{i} lost in round {round}"
                );
            }
            for i in 0..100 {
                store.insert(format!("scan{round}/{i}"), bytes(1));
            }
        }
    }

    #[test]
    fn replacing_and_removing_keep_the_counts_right() {
        let store = Bounded::new(10, Weigh::Bytes);
        store.insert("a".into(), bytes(4));
        store.insert("a".into(), bytes(2));
        assert_eq!((store.len(), store.weight()), (1, 3));
        store.get_with("a", |entry| {
            assert!(
                matches!(entry, Some(Entry::Bytes(b)) if b.len() == 2),
                "the new value"
            );
        });
        store.insert("b".into(), bytes(5));
        assert_eq!((store.len(), store.weight()), (2, 9));
        store.insert("c".into(), bytes(3));
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
            store.insert(format!("k{}", i % 10), bytes(1));
        }
        assert_eq!(store.len(), 10);
        let queues = store.lock();
        let slots = queues.small.len() + queues.main.len();
        assert!(slots <= 10 + 64 + 1, "{slots} queue slots for 10 entries");
    }

    #[test]
    fn a_replaced_value_never_leaves_its_key_missing_for_a_reader() {
        let store = Bounded::new(8, Weigh::Entries);
        for i in 0..8 {
            store.insert(format!("k{i}"), bytes(1));
        }
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..20_000 {
                    store.insert(format!("k{}", i % 8), bytes(1 + i % 3));
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
            store.insert(key.into(), bytes(3));
        }
        // a's old value is the oldest in the small queue; its new one (6) needs room, and
        // takes it from b, the next oldest.
        store.insert("a".into(), bytes(5));
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
        store.insert("a".into(), bytes(3));
        store.insert("a".into(), bytes(50));
        assert!(!has(&store, "a"));
        assert_eq!((store.len(), store.weight()), (0, 0));
    }

    #[test]
    fn concurrent_writers_and_readers_keep_the_bound_and_the_counts() {
        const THREADS: usize = 8;
        let store = Bounded::new(64, Weigh::Entries);
        let start = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (store, start) = (&store, &start);
                s.spawn(move || {
                    start.wait();
                    for i in 0..2_000 {
                        let key = format!("{}", (i * 7 + t) % 200);
                        match i % 4 {
                            0 => store.remove(&key),
                            _ => store.insert(key.clone(), bytes(1)),
                        }
                        has(store, &key);
                        assert!(store.len() <= 64, "{} entries", store.len());
                    }
                });
            }
        });
        let held = (0..200).filter(|i| has(&store, &i.to_string())).count() as u64;
        assert_eq!(store.len(), held);
        assert_eq!(store.weight(), held);
    }
}
