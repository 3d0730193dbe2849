//! The memory backends: `memory` (typed values, never serialized) and `memory_serialized`
//! (dogpile's byte format, to catch values that cannot be serialized).
//!
//! Unbounded by default, as dogpile's memory backend: a plain `RwLock<HashMap>`, so a hit
//! pays for no eviction bookkeeping. With `max_entries` (or, for `memory_serialized`,
//! `max_bytes`) the store is a [moka](https://docs.rs/moka) cache, whose TinyLFU policy
//! evicts when the bound is reached. moka applies its policy in batches: between two
//! batches the store may briefly hold a few entries more than the bound, and after each
//! batch (and whenever [`MemoryBackend::entry_count`] or
//! [`MemoryBackend::weighted_size`] is read) it is within the bound again.
//!
//! TinyLFU keeps the keys that are asked for most: when the store is full, a new key is
//! admitted only if it has been asked for more often than the key it would evict. So a
//! value `set` into a full store may be dropped at once, while a key that many callers
//! wait for (the dogpile case) is kept and its creator still runs once.
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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use dogpile_core::{Arguments, Backend, Entry, Error, Result};

/// Arguments accepted by the memory backends.
const ARGUMENTS: &[&str] = &["max_entries", "max_bytes"];

/// The in-process store: see the [module docs](self). Clones share one store.
#[derive(Clone)]
pub struct MemoryBackend {
    store: Arc<Store>,
    serialized: bool,
}

enum Store {
    Unbounded(RwLock<HashMap<String, Entry>>),
    Bounded(moka::sync::Cache<String, Entry>),
}

impl MemoryBackend {
    /// An unbounded store of typed values.
    pub fn new() -> Self {
        MemoryBackend {
            store: Arc::new(Store::Unbounded(RwLock::default())),
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
            store: Arc::new(Store::Bounded(moka::sync::Cache::new(nonzero(
                "memory",
                "max_entries",
                max_entries,
            )?))),
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
            (Some(max), None) => Store::Bounded(moka::sync::Cache::new(nonzero(
                args.backend(),
                "max_entries",
                max,
            )?)),
            (None, Some(max)) => Store::Bounded(
                moka::sync::Cache::builder()
                    .max_capacity(nonzero(args.backend(), "max_bytes", max)?)
                    .weigher(|key: &String, entry: &Entry| {
                        u32::try_from(key.len() + entry.approximate_size()).unwrap_or(u32::MAX)
                    })
                    .build(),
            ),
            (None, None) => Store::Unbounded(RwLock::default()),
        };
        Ok(MemoryBackend {
            store: Arc::new(store),
            serialized: true,
        })
    }

    /// How many entries the store holds now (for a bounded store, after pending evictions
    /// have run).
    pub fn entry_count(&self) -> u64 {
        match &*self.store {
            Store::Unbounded(map) => read(map).len() as u64,
            Store::Bounded(cache) => {
                cache.run_pending_tasks();
                cache.entry_count()
            }
        }
    }

    /// The total weight of a bounded store, after pending evictions have run: bytes (keys
    /// plus stored values) for `max_bytes`, entries otherwise.
    pub fn weighted_size(&self) -> u64 {
        match &*self.store {
            Store::Unbounded(map) => read(map).len() as u64,
            Store::Bounded(cache) => {
                cache.run_pending_tasks();
                cache.weighted_size()
            }
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

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Backend for MemoryBackend {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(match &*self.store {
            Store::Unbounded(map) => read(map).get(key).cloned(),
            Store::Bounded(cache) => cache.get(key),
        })
    }

    fn set(&self, key: &str, entry: Entry) -> Result<()> {
        match &*self.store {
            Store::Unbounded(map) => {
                write(map).insert(key.to_owned(), entry);
            }
            Store::Bounded(cache) => cache.insert(key.to_owned(), entry),
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        match &*self.store {
            Store::Unbounded(map) => {
                write(map).remove(key);
            }
            Store::Bounded(cache) => cache.invalidate(key),
        }
        Ok(())
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        Ok(match &*self.store {
            Store::Unbounded(map) => {
                let map = read(map);
                keys.iter().map(|key| map.get(*key).cloned()).collect()
            }
            Store::Bounded(cache) => keys.iter().map(|key| cache.get(*key)).collect(),
        })
    }

    fn set_multi(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        match &*self.store {
            Store::Unbounded(map) => {
                let mut map = write(map);
                for (key, entry) in items {
                    map.insert(key.to_owned(), entry);
                }
            }
            Store::Bounded(cache) => {
                for (key, entry) in items {
                    cache.insert(key.to_owned(), entry);
                }
            }
        }
        Ok(())
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        match &*self.store {
            Store::Unbounded(map) => {
                let mut map = write(map);
                for key in keys {
                    map.remove(*key);
                }
            }
            Store::Bounded(cache) => {
                for key in keys {
                    cache.invalidate(*key);
                }
            }
        }
        Ok(())
    }

    fn stores_objects(&self) -> bool {
        !self.serialized
    }

    /// In memory: async callers call it directly, sharing the one store with sync callers.
    fn nonblocking(&self) -> bool {
        true
    }
}

/// Registration shim so the factory signature matches [`dogpile_core::BuiltinBackend`].
pub(crate) fn memory(args: &Arguments) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(MemoryBackend::from_arguments(args)?))
}

pub(crate) fn memory_serialized(args: &Arguments) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(MemoryBackend::serialized_from_arguments(args)?))
}
