//! [`AsyncCacheBackend`]: the one async backend trait, and the async distributed lock.

use async_trait::async_trait;

use super::capabilities::Capabilities;
use super::entries;
use crate::error::Result;
use crate::lock::distributed::AsyncCacheMutex;
use crate::value::Entry;

/// An async cache backend: implement this for your own async store, and configure a
/// region with it through
/// [`RegionConfig::with_async_backend`](crate::RegionConfig::with_async_backend); or return
/// it from your sync backend's [`async_twin`](crate::backend::CacheBackend::async_twin), so that one
/// region serves sync and async callers.
///
/// The same shape as [`CacheBackend`](crate::backend::CacheBackend), async: three methods over
/// bytes are required, everything else has a default.
///
/// ```
/// use std::collections::HashMap;
/// use tokio::sync::Mutex;
/// use dogpile_core::Result;
/// use dogpile_core::backend::{async_trait, AsyncCacheBackend};
///
/// #[derive(Default)]
/// struct AsyncDictionary {
///     cache: Mutex<HashMap<String, Vec<u8>>>,
/// }
///
/// #[async_trait]
/// impl AsyncCacheBackend for AsyncDictionary {
///     async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
///         Ok(self.cache.lock().await.get(key).cloned())
///     }
///     async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
///         self.cache.lock().await.insert(key.to_owned(), value);
///         Ok(())
///     }
///     async fn delete(&self, key: &str) -> Result<()> {
///         self.cache.lock().await.remove(key);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait AsyncCacheBackend: Send + Sync + 'static {
    /// The bytes stored under `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `value` under `key`, replacing what was there.
    async fn set(&self, key: &str, value: Vec<u8>) -> Result<()>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// The values of many keys, in order. Override to use one round trip.
    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

    /// Stores many values. Override to use one round trip.
    async fn set_multi(&self, items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        for (key, value) in items {
            self.set(key, value).await?;
        }
        Ok(())
    }

    /// Removes many keys. Override to use one round trip.
    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }

    /// A lock on `key` shared with other processes, or `None` (the default) to use only the
    /// region's in-process lock.
    fn get_mutex(&self, _key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        None
    }

    /// What this backend can do, as
    /// [`CacheBackend::capabilities`](crate::backend::CacheBackend::capabilities). A region reads it
    /// for a backend given to
    /// [`RegionConfig::with_async_backend`](crate::RegionConfig::with_async_backend);
    /// [`nonblocking`](Capabilities::nonblocking) means nothing here.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }

    /// The entry stored under `key`, or `None`: what a region calls. The default reads
    /// [`get`](Self::get)'s bytes.
    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.get(key).await?.map(Entry::Bytes))
    }

    /// Stores `entry` under `key`. The default stores its bytes with [`set`](Self::set);
    /// only a store with [`Capabilities::stores_objects`] receives [`Entry::Object`].
    async fn set_entry(&self, key: &str, entry: Entry) -> Result<()> {
        let value = entry.into_bytes(std::any::type_name::<Self>())?;
        self.set(key, value).await
    }

    /// The entries of many keys, in order. The default reads
    /// [`get_multi`](Self::get_multi)'s bytes.
    async fn get_entries(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        Ok(entries::from_bytes(self.get_multi(keys).await?))
    }

    /// Stores many entries. The default stores their bytes with
    /// [`set_multi`](Self::set_multi).
    async fn set_entries(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        let items = entries::into_bytes(items, std::any::type_name::<Self>())?;
        self.set_multi(items).await
    }
}
