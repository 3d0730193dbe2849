//! The backend traits: what a region stores values in.
//!
//! Users write a [`CacheBackend`]: three byte-level methods, everything else has a default.
//! The region talks to a [`Backend`], which every `CacheBackend` is through a blanket
//! implementation; only stores that keep typed objects (the memory backend) implement
//! `Backend` directly.

use crate::error::Result;
use crate::lock::CacheMutex;
use crate::value::Entry;

/// A cache backend that stores bytes: implement this for your own store.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use dogpile_core::{CacheBackend, Result};
///
/// #[derive(Default)]
/// struct DictionaryBackend {
///     cache: Mutex<HashMap<String, Vec<u8>>>,
/// }
///
/// impl CacheBackend for DictionaryBackend {
///     fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
///         Ok(self.cache.lock().unwrap().get(key).cloned())
///     }
///     fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
///         self.cache.lock().unwrap().insert(key.to_owned(), value);
///         Ok(())
///     }
///     fn delete(&self, key: &str) -> Result<()> {
///         self.cache.lock().unwrap().remove(key);
///         Ok(())
///     }
/// }
/// ```
pub trait CacheBackend: Send + Sync + 'static {
    /// The bytes stored under `key`, or `None`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `value` under `key`, replacing what was there.
    fn set(&self, key: &str, value: Vec<u8>) -> Result<()>;

    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;

    /// The values of many keys, in order. Override to use one round trip.
    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Stores many values. Override to use one round trip.
    fn set_multi(&self, items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        items
            .into_iter()
            .try_for_each(|(key, value)| self.set(key, value))
    }

    /// Removes many keys. Override to use one round trip.
    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        keys.iter().try_for_each(|key| self.delete(key))
    }

    /// A lock on `key` shared with other processes (a distributed dogpile lock), or `None`
    /// to use only the region's in-process lock.
    fn get_mutex(&self, _key: &str) -> Option<Box<dyn CacheMutex>> {
        None
    }

    /// True when no call ever blocks (no I/O): async callers then call this backend
    /// directly instead of on tokio's blocking pool. Default false.
    fn nonblocking(&self) -> bool {
        false
    }

    /// The prefix of the keys the distributed locks of [`get_mutex`](Self::get_mutex) live
    /// under, if any: the region refuses keys that begin with it (see
    /// [`Backend::lock_key_prefix`]).
    fn lock_key_prefix(&self) -> Option<String> {
        None
    }

    /// This backend's native async twin, which a region's async methods use instead of
    /// sending each call to tokio's blocking pool (see [`Backend::async_backend`]).
    #[cfg(feature = "tokio")]
    fn async_backend(&self) -> Option<std::sync::Arc<dyn crate::AsyncBackend>> {
        None
    }
}

/// What a region talks to: a store of [`Entry`] values.
///
/// Every [`CacheBackend`] is a `Backend`. Implement `Backend` directly only for a store that
/// keeps typed objects without serializing them, and say so with
/// [`stores_objects`](Backend::stores_objects).
pub trait Backend: Send + Sync + 'static {
    /// The entry stored under `key`, or `None`.
    fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Stores `entry` under `key`.
    fn set(&self, key: &str, entry: Entry) -> Result<()>;

    /// Calls `f` once with the entry under `key` (or `None`), lent by the store: a store
    /// that keeps entries in memory lends its own, so a hit copies only what `f` takes from
    /// it and touches no shared reference count. The default calls [`get`](Backend::get).
    ///
    /// ```
    /// use dogpile_core::{Backend, Entry, Result};
    ///
    /// fn stored_size(backend: &dyn Backend, key: &str) -> Result<Option<usize>> {
    ///     let mut size = None;
    ///     backend.get_with(key, &mut |entry| size = entry.map(Entry::approximate_size))?;
    ///     Ok(size)
    /// }
    /// ```
    fn get_with(&self, key: &str, f: &mut dyn FnMut(Option<&Entry>)) -> Result<()> {
        f(self.get(key)?.as_ref());
        Ok(())
    }

    /// Removes `key`; idempotent.
    fn delete(&self, key: &str) -> Result<()>;

    /// The entries of many keys, in order.
    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Stores many entries.
    fn set_multi(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        items
            .into_iter()
            .try_for_each(|(key, entry)| self.set(key, entry))
    }

    /// Removes many keys.
    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        keys.iter().try_for_each(|key| self.delete(key))
    }

    /// A distributed lock on `key`, or `None` for the region's in-process lock only.
    fn get_mutex(&self, _key: &str) -> Option<Box<dyn CacheMutex>> {
        None
    }

    /// True when this store takes [`Entry::Object`] values; the region then never
    /// serializes. False (the default) means every entry it receives is [`Entry::Bytes`].
    fn stores_objects(&self) -> bool {
        false
    }

    /// The prefix of the keys this backend's distributed locks live under (dogpile's
    /// `_lock`), when it has distributed locks: the region refuses every key that begins
    /// with it, so that no value can read, overwrite or delete a lock.
    fn lock_key_prefix(&self) -> Option<String> {
        None
    }

    /// True for a store that keeps nothing (the null backend): the region then takes no
    /// dogpile lock, and every caller creates its own value, as with caching switched off.
    fn stores_nothing(&self) -> bool {
        false
    }

    /// True when no call ever blocks (no I/O, no waiting beyond a short in-memory lock):
    /// the region's async methods then call it directly on the task. False (the default)
    /// sends each async call to tokio's blocking pool.
    fn nonblocking(&self) -> bool {
        false
    }

    /// This backend's native async twin, which the region's async methods use instead of
    /// this one (redis: its own bounded async connections). `None` (the default): see
    /// [`nonblocking`](Backend::nonblocking).
    #[cfg(feature = "tokio")]
    fn async_backend(&self) -> Option<std::sync::Arc<dyn crate::AsyncBackend>> {
        None
    }
}

impl<B: CacheBackend> Backend for B {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(CacheBackend::get(self, key)?.map(Entry::Bytes))
    }

    fn set(&self, key: &str, entry: Entry) -> Result<()> {
        CacheBackend::set(self, key, entry.into_bytes(std::any::type_name::<B>())?)
    }

    fn delete(&self, key: &str) -> Result<()> {
        CacheBackend::delete(self, key)
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        Ok(CacheBackend::get_multi(self, keys)?
            .into_iter()
            .map(|value| value.map(Entry::Bytes))
            .collect())
    }

    fn set_multi(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        let name = std::any::type_name::<B>();
        let items = items
            .into_iter()
            .map(|(key, entry)| Ok((key, entry.into_bytes(name)?)))
            .collect::<Result<Vec<_>>>()?;
        CacheBackend::set_multi(self, items)
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        CacheBackend::delete_multi(self, keys)
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        CacheBackend::get_mutex(self, key)
    }

    fn nonblocking(&self) -> bool {
        CacheBackend::nonblocking(self)
    }

    fn lock_key_prefix(&self) -> Option<String> {
        CacheBackend::lock_key_prefix(self)
    }

    #[cfg(feature = "tokio")]
    fn async_backend(&self) -> Option<std::sync::Arc<dyn crate::AsyncBackend>> {
        CacheBackend::async_backend(self)
    }
}
