//! The memory backends: `memory` (typed values, never serialized) and `memory_serialized`
//! (dogpile's byte format, to catch values that cannot be serialized).
//!
//! Unbounded by default, as dogpile's memory backend: a [papaya](https://docs.rs/papaya)
//! map, so a hit pays for no eviction bookkeeping. With `max_entries` (or, for
//! `memory_serialized`, `max_bytes`) the store is the same kind of map with S3-FIFO
//! eviction beside it (`memory/bounded.rs`), which evicts when the bound is reached.
//!
//! # Why these stores (measured: `dogpile-tests/benches/memory_hits.rs`, BENCHMARKS.md)
//!
//! A hit is a read, and reads outnumber writes: the unbounded store is the one whose read
//! writes no shared memory. papaya's read takes a guard of its epoch-based reclamation
//! (`seize`), which writes only the reading thread's own slot, then follows pointers; the
//! region clones the payload from the map's own entry under that guard
//! ([`CacheBackend::get_with`]), so no reference count of a shared entry moves either.
//! Side by side on one thread, papaya's get plus clone measured 0.62x to 0.77x a bare
//! `RwLock<HashMap>` get plus clone, and it scales from one thread to two on one hot key
//! as two threads reading maps of their own do (2026-12-03, 2 vCPUs). `scc::HashIndex`
//! does as well; `scc::HashMap` and a map split in 64 `RwLock` shards write the reader
//! count of one lock shared by every reader of a hot key, and do not scale on it. Keys
//! hash with a randomly seeded `ahash` (HashDoS resistance: keys often come from
//! requests).
//!
//! The bounded store was measured against moka and quick_cache: both take a lock, or
//! write a shared buffer, on every hit, so neither scales on a hot key (0.8x to 1.1x from
//! one thread to two, against 1.9x for papaya). This one keeps papaya's read path and adds
//! one counter per entry that stops at 3: a hit raises it while it is lower, so hits on a
//! hot key write nothing. Its policy, S3-FIFO, admits every new key into a small queue
//! and keeps the keys asked for again, so a key that many callers wait for (the dogpile
//! case) is kept, and a one-off key is the first to go; on a Zipf (s = 0.9) trace of 1M
//! requests over 100k keys into 10k entries its hit ratio is 66.6 % against moka's
//! TinyLFU 67.1 % and quick_cache's 67.4 %. The store is split in shards (by the key's
//! hash, each a map with its own queues and lock, at least 512 entries each), so writers
//! on different keys rarely take the same lock; each shard keeps its share of the bound
//! exactly, so the store holds at most `max_entries` entries at every moment. A store
//! bounded by `max_bytes` is one shard, so that a value as heavy as the whole bound can be
//! kept, and a single value heavier than `max_bytes` is not kept. A bounded hit, like an
//! unbounded one, lends the stored entry.
//!
//! The price is on writes: a write that evicts costs about 0.7 µs (papaya's insert and
//! remove, their reclamation, and the allocations of the entry), about 0.75x moka's insert
//! and 7x quick_cache's. A write follows a creator call, which costs far more; a region
//! written much more often than read is better off unbounded. On the 2 vCPU VM the
//! figures come from, no store's writes scale from one thread to two (BENCHMARKS.md,
//! "Writes"): papaya's own insert costs ten times as much with a second writer.
//!
//! # Arguments
//!
//! | argument | backends | default | meaning |
//! |---|---|---|---|
//! | `max_entries` | `memory`, `memory_serialized` | unbounded | the most keys kept; a positive whole number |
//! | `max_bytes` | `memory_serialized` | unbounded | the most bytes kept (keys and serialized values); not with `max_entries` |
//!
//! Other arguments are refused, and so is `max_bytes` for `memory` (typed values have no
//! byte size).
//!
//! A `MemoryBackend` is a handle: clones share one store, so a test or a second region can
//! keep a clone of a backend given to [`CacheRegion::configure_backend`] and look at it.
//!
//! ```
//! use dogpile_core::{CacheRegion, Result};
//! use dogpile_backends::MemoryBackend;
//!
//! let backend = MemoryBackend::bounded(100)?;
//! let region = CacheRegion::new();
//! region.configure_backend(backend.clone(), None)?;
//! for i in 0..1000 {
//!     region.set(&format!("key{i}"), &i)?;
//! }
//! assert!(backend.entry_count() <= 100);
//! # Ok::<(), dogpile_core::Error>(())
//! ```
//!
//! [`CacheRegion::configure_backend`]: dogpile_core::CacheRegion::configure_backend

use std::sync::Arc;

use dogpile_core::backend::{Arguments, CacheBackend, Capabilities, Entry};
use dogpile_core::{Error, Result};

use self::bounded::{Bounded, Weigh};

mod bounded;

/// Arguments accepted by the memory backends.
const ARGUMENTS: &[&str] = &["max_entries", "max_bytes"];

/// The in-process store: see the [module docs](self). Clones share one store.
#[derive(Clone)]
pub struct MemoryBackend {
    store: Arc<Store>,
    serialized: bool,
}

/// The unbounded map: see the module docs for why papaya, keyed by a randomly seeded hash.
type Map = papaya::HashMap<String, Entry, ahash::RandomState>;

// One per backend, behind an `Arc`: boxing the larger variant would add a pointer to
// follow on every bounded hit.
#[allow(clippy::large_enum_variant)]
enum Store {
    Unbounded(Map),
    Bounded(Bounded),
}

impl MemoryBackend {
    /// An unbounded store of typed values.
    pub fn new() -> Self {
        MemoryBackend {
            store: Arc::new(Store::Unbounded(unbounded())),
            serialized: false,
        }
    }

    /// A store of typed values holding at most `max_entries` keys.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 (use the
    /// `null` backend to cache nothing).
    pub fn bounded(max_entries: u64) -> Result<Self> {
        Ok(MemoryBackend {
            store: Arc::new(Store::Bounded(Bounded::new(
                nonzero("memory", "max_entries", max_entries)?,
                Weigh::Entries,
            ))),
            serialized: false,
        })
    }

    /// The `memory` backend from its arguments: `max_entries` (optional).
    pub fn from_arguments(args: &Arguments) -> Result<Self> {
        args.check_known(ARGUMENTS)?;
        if args.get("max_bytes").is_some() {
            return Err(args.invalid(
                "max_bytes",
                "typed values have no byte size; use max_entries, or the memory_serialized backend",
            ));
        }
        match args.parse::<u64>("max_entries")? {
            Some(max) => Self::bounded(nonzero(args.backend(), "max_entries", max)?),
            None => Ok(Self::new()),
        }
    }

    /// The `memory_serialized` backend from its arguments: `max_entries` or `max_bytes`
    /// (optional, not both).
    pub fn serialized_from_arguments(args: &Arguments) -> Result<Self> {
        args.check_known(ARGUMENTS)?;
        let store = match (
            args.parse::<u64>("max_entries")?,
            args.parse::<u64>("max_bytes")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(args.invalid("max_bytes", "give max_entries or max_bytes, not both"))
            }
            (Some(max), None) => Store::Bounded(Bounded::new(
                nonzero(args.backend(), "max_entries", max)?,
                Weigh::Entries,
            )),
            (None, Some(max)) => Store::Bounded(Bounded::new(
                nonzero(args.backend(), "max_bytes", max)?,
                Weigh::Bytes,
            )),
            (None, None) => Store::Unbounded(unbounded()),
        };
        Ok(MemoryBackend {
            store: Arc::new(store),
            serialized: true,
        })
    }

    /// How many entries the store holds now.
    pub fn entry_count(&self) -> u64 {
        match &*self.store {
            Store::Unbounded(map) => map.len() as u64,
            Store::Bounded(cache) => cache.len(),
        }
    }

    /// The total weight of the store: bytes (keys plus stored values) for `max_bytes`,
    /// entries otherwise.
    pub fn weighted_size(&self) -> u64 {
        match &*self.store {
            Store::Unbounded(map) => map.len() as u64,
            Store::Bounded(cache) => cache.weight(),
        }
    }
}

/// `value`, unless it is 0.
fn nonzero(backend: &str, argument: &str, value: u64) -> Result<u64> {
    if value == 0 {
        return Err(Error::invalid_argument(
            backend,
            argument,
            "must be at least 1; use the null backend to cache nothing",
        ));
    }
    Ok(value)
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// An empty unbounded map, its hasher seeded from the system's random source.
fn unbounded() -> Map {
    papaya::HashMap::builder()
        .hasher(ahash::RandomState::new())
        .build()
}

/// The memory backend keeps entries: its byte methods are views of the entry methods,
/// which are what a region calls.
impl CacheBackend for MemoryBackend {
    /// The bytes under `key`; an error for a typed object, which has no byte form.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.get_entry(key)? {
            None => Ok(None),
            Some(Entry::Bytes(bytes)) => Ok(Some(bytes)),
            Some(Entry::Object(_)) => Err(Error::backend(
                "memory",
                "holds a typed object under this key, which has no byte form: read it \
                 through a region (or get_entry)",
            )),
        }
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.set_entry(key, Entry::Bytes(value))
    }

    fn capabilities(&self) -> Capabilities {
        // In memory: async callers call it directly, sharing the one store with sync
        // callers.
        Capabilities::new()
            .stores_objects(!self.serialized)
            .nonblocking(true)
    }

    fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(match &*self.store {
            Store::Unbounded(map) => map.pin().get(key).cloned(),
            Store::Bounded(cache) => cache.get_with(key, |entry| entry.cloned()),
        })
    }

    /// `f` sees the store's own entry under papaya's guard (no lock, no reference count
    /// touched).
    fn get_with(&self, key: &str, f: &mut dyn FnMut(Option<&Entry>)) -> Result<()> {
        match &*self.store {
            Store::Unbounded(map) => f(map.pin().get(key)),
            Store::Bounded(cache) => cache.get_with(key, f),
        }
        Ok(())
    }

    fn set_entry(&self, key: &str, entry: Entry) -> Result<()> {
        match &*self.store {
            Store::Unbounded(map) => {
                map.pin().insert(key.to_owned(), entry);
            }
            Store::Bounded(cache) => cache.insert(key, entry),
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        match &*self.store {
            Store::Unbounded(map) => {
                map.pin().remove(key);
            }
            Store::Bounded(cache) => {
                cache.remove(key);
            }
        }
        Ok(())
    }

    fn get_entries(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        Ok(match &*self.store {
            Store::Unbounded(map) => {
                let map = map.pin();
                keys.iter().map(|key| map.get(*key).cloned()).collect()
            }
            Store::Bounded(cache) => keys
                .iter()
                .map(|key| cache.get_with(key, |entry| entry.cloned()))
                .collect(),
        })
    }

    fn set_entries(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        match &*self.store {
            Store::Unbounded(map) => {
                let map = map.pin();
                for (key, entry) in items {
                    map.insert(key.to_owned(), entry);
                }
            }
            Store::Bounded(cache) => {
                for (key, entry) in items {
                    cache.insert(key, entry);
                }
            }
        }
        Ok(())
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        match &*self.store {
            Store::Unbounded(map) => {
                let map = map.pin();
                for key in keys {
                    map.remove(*key);
                }
            }
            Store::Bounded(cache) => {
                for key in keys {
                    cache.remove(key);
                }
            }
        }
        Ok(())
    }
}

/// Registration shim so the factory signature matches [`dogpile_core::__private::BuiltinBackend`].
pub(crate) fn memory(args: &Arguments) -> Result<Arc<dyn CacheBackend>> {
    Ok(Arc::new(MemoryBackend::from_arguments(args)?))
}

pub(crate) fn memory_serialized(args: &Arguments) -> Result<Arc<dyn CacheBackend>> {
    Ok(Arc::new(MemoryBackend::serialized_from_arguments(args)?))
}
