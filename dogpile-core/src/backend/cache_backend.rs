//! [`CacheBackend`]: the one sync backend trait.

#[cfg(feature = "tokio")]
use std::sync::Arc;

#[cfg(feature = "tokio")]
use super::async_cache_backend::AsyncCacheBackend;
use super::capabilities::Capabilities;
use super::entries;
use crate::error::Result;
use crate::lock::CacheMutex;
use crate::value::Entry;

/// A cache backend: implement this for your own store.
///
/// Three methods over bytes (dogpile's byte format) are required; everything else has a
/// default.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use dogpile_core::Result;
/// use dogpile_core::backend::CacheBackend;
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
///
/// The provided methods, by what a backend overrides them for:
/// - one round trip for many keys: [`get_multi`](Self::get_multi),
///   [`set_multi`](Self::set_multi), [`delete_multi`](Self::delete_multi);
/// - a lock shared with other processes: [`get_mutex`](Self::get_mutex);
/// - what the backend can do ([`Capabilities`]: never blocks, stores typed objects, stores
///   nothing, lock key prefix): [`capabilities`](Self::capabilities);
/// - a native async client: [`async_twin`](Self::async_twin);
/// - a store that keeps typed objects without serializing them (the memory backend): the
///   entry methods [`get_entry`](Self::get_entry), [`get_with`](Self::get_with),
///   [`set_entry`](Self::set_entry), [`get_entries`](Self::get_entries),
///   [`set_entries`](Self::set_entries), with
///   [`Capabilities::stores_objects`]. These are what a region calls; their defaults
///   go through the byte methods.
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
    /// (the default) to use only the region's in-process lock.
    fn get_mutex(&self, _key: &str) -> Option<Box<dyn CacheMutex>> {
        None
    }

    /// What this backend can do; read once, when a region is configured with it. The
    /// default, [`Capabilities::new`], is a store of bytes that may block.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }

    /// Each server this backend talks to, reached once now (an operator's `ping`): its
    /// address, TLS, round-trip time and version, or why it is down. `None` (the default):
    /// the backend has no servers to list, and a `get` stands for a ping.
    fn servers(&self) -> Option<Vec<super::server_status::ServerStatus>> {
        None
    }

    /// Sends `message` to every process subscribed to `channel` on this backend's servers
    /// (redis: `PUBLISH`). The default sends nothing: other processes find out by polling.
    fn publish(&self, _channel: &str, _message: &[u8]) -> Result<()> {
        Ok(())
    }

    /// A subscription to `channel` on this backend's servers (redis: `SUBSCRIBE`), or
    /// `None` (the default) for a backend whose servers push nothing.
    ///
    /// # Errors
    /// The backend's error when it cannot subscribe (its server is down).
    fn subscribe(
        &self,
        _channel: &str,
    ) -> Result<Option<Box<dyn super::subscription::Subscription>>> {
        Ok(None)
    }

    /// This backend's native async twin (redis: its own bounded async connections), which
    /// a region's async methods use instead of this backend. `None` (the default): async
    /// callers call this backend directly when it is
    /// [`nonblocking`](Capabilities::nonblocking), on tokio's blocking pool otherwise.
    #[cfg(feature = "tokio")]
    fn async_twin(&self) -> Option<Arc<dyn AsyncCacheBackend>> {
        None
    }

    /// The entry stored under `key`, or `None`. The default reads
    /// [`get`](Self::get)'s bytes.
    fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.get(key)?.map(Entry::Bytes))
    }

    /// Calls `f` once with the entry under `key` (or `None`), lent by the store: a store
    /// that keeps entries in memory lends its own, so a hit copies only what `f` takes from
    /// it and touches no shared reference count. The default calls
    /// [`get_entry`](Self::get_entry).
    ///
    /// ```
    /// use dogpile_core::Result;
    /// use dogpile_core::backend::{CacheBackend, Entry};
    ///
    /// fn stored_size(backend: &dyn CacheBackend, key: &str) -> Result<Option<usize>> {
    ///     let mut size = None;
    ///     backend.get_with(key, &mut |entry| size = entry.map(Entry::approximate_size))?;
    ///     Ok(size)
    /// }
    /// ```
    fn get_with(&self, key: &str, f: &mut dyn FnMut(Option<&Entry>)) -> Result<()> {
        f(self.get_entry(key)?.as_ref());
        Ok(())
    }

    /// Stores `entry` under `key`. The default stores its bytes with [`set`](Self::set);
    /// only a store with [`Capabilities::stores_objects`] receives
    /// [`Entry::Object`], and it overrides this.
    fn set_entry(&self, key: &str, entry: Entry) -> Result<()> {
        self.set(key, entry.into_bytes(std::any::type_name::<Self>())?)
    }

    /// The entries of many keys, in order. The default reads
    /// [`get_multi`](Self::get_multi)'s bytes.
    fn get_entries(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        Ok(entries::from_bytes(self.get_multi(keys)?))
    }

    /// Stores many entries. The default stores their bytes with
    /// [`set_multi`](Self::set_multi).
    fn set_entries(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        self.set_multi(entries::into_bytes(items, std::any::type_name::<Self>())?)
    }

    /// Lists the stored keys that match `pattern`, for operator tools (the `dogpile keys`
    /// command); a region never calls it. Calls `found` with each key, as the backend
    /// stores it (after the region's key mangler), until `found` returns `false`.
    ///
    /// `pattern` is a glob as redis's `MATCH` takes it: `*` any run of characters, `?` one
    /// character, anything else itself ([`key_matches`](crate::backend::key_matches)).
    /// Keys are listed in no particular order; a key written or removed during the listing
    /// may or may not be seen.
    ///
    /// The default fails with an [`Error::Backend`](crate::Error::Backend) saying that the
    /// backend cannot list its keys. The file, redis and memcached backends override it.
    fn keys(&self, pattern: &str, found: &mut dyn FnMut(String) -> bool) -> Result<()> {
        let _ = (pattern, found);
        Err(crate::error::Error::backend(
            std::any::type_name::<Self>(),
            "this backend cannot list its keys",
        ))
    }
}

/// Whether `key` matches the glob `pattern`: `*` matches any run of characters (none
/// included), `?` exactly one, and every other character itself. The matching of
/// [`CacheBackend::keys`] for backends without a server-side one.
///
/// ```
/// use dogpile_core::backend::key_matches;
///
/// assert!(key_matches("user:*", "user:5"));
/// assert!(key_matches("user:?", "user:5"));
/// assert!(!key_matches("user:?", "user:55"));
/// assert!(key_matches("*", ""));
/// ```
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let key: Vec<char> = key.chars().collect();
    // Iterative matching with backtracking to the last `*`: linear in practice, never
    // exponential.
    let (mut p, mut k) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pattern.len() && (pattern[p] == '?' || (pattern[p] != '*' && pattern[p] == key[k])) {
            p += 1;
            k += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, k));
            p += 1;
        } else if let Some((star_p, star_k)) = star {
            p = star_p + 1;
            k = star_k + 1;
            star = Some((star_p, star_k + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}
