//! The async backend traits, and how a region reaches a sync backend from async code.
//!
//! A region's async methods talk to an [`AsyncBackend`]. Where it comes from, per backend:
//! - a backend with a native async client says so with [`Backend::async_backend`] (redis:
//!   its own bounded async connections, on tokio's sockets);
//! - a backend whose calls never block ([`Backend::nonblocking`]: memory, null) is called
//!   directly, on the task, so both paths share the one store;
//! - every other sync backend (file, a sync-only [`CacheBackend`](crate::CacheBackend) of
//!   yours, a proxied backend) runs each call on tokio's blocking pool
//!   (`spawn_blocking`), so that it never blocks an executor thread. That is the rule for a
//!   sync-only custom backend used from async code: it works unchanged, at the cost of a
//!   hop to the blocking pool per call.
//!
//! Users with an async store implement [`AsyncCacheBackend`] (three byte methods, as
//! [`CacheBackend`](crate::CacheBackend)) and configure a region with
//! [`RegionConfig::with_async_backend`](crate::RegionConfig::with_async_backend).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::lock::{Backoff, CacheMutex, DEFAULT_RETRY_PAUSE};
use crate::value::Entry;

/// An async lock shared with other processes: the async twin of [`CacheMutex`].
#[async_trait]
pub trait AsyncCacheMutex: Send + Sync {
    /// One attempt to take the lock, without waiting.
    async fn try_acquire(&self) -> Result<bool>;

    /// Releases the lock, if this handle still holds it.
    async fn release(&self) -> Result<()>;

    /// The longest pause between two tries while waiting.
    fn retry_pause(&self) -> Duration {
        DEFAULT_RETRY_PAUSE
    }

    /// How long a caller may wait for this lock at most, from the start of its call.
    fn wait_limit(&self) -> Option<Duration> {
        None
    }
}

/// Takes `mutex`, pausing on tokio's timer between tries (with [`Backoff`]) until
/// `deadline` at most: `Ok(false)` when the deadline passed first.
///
/// # Errors
/// The backend's error from a try.
pub async fn acquire_until_async(mutex: &dyn AsyncCacheMutex, deadline: Instant) -> Result<bool> {
    let mut backoff = Backoff::new(deadline, mutex.retry_pause());
    loop {
        if mutex.try_acquire().await? {
            return Ok(true);
        }
        match backoff.next_pause() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => return Ok(false),
        }
    }
}

/// What a region's async methods talk to: the async twin of [`Backend`].
#[async_trait]
pub trait AsyncBackend: Send + Sync + 'static {
    /// The entry stored under `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Stores `entry` under `key`.
    async fn set(&self, key: &str, entry: Entry) -> Result<()>;

    /// Removes `key`; idempotent.
    async fn delete(&self, key: &str) -> Result<()>;

    /// The entries of many keys, in order.
    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            entries.push(self.get(key).await?);
        }
        Ok(entries)
    }

    /// Stores many entries.
    async fn set_multi(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        for (key, entry) in items {
            self.set(key, entry).await?;
        }
        Ok(())
    }

    /// Removes many keys.
    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }

    /// A distributed lock on `key`, or `None` for the region's in-process lock only.
    fn get_mutex(&self, _key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        None
    }
}

/// An async cache backend that stores bytes: implement this for your own async store.
///
/// ```
/// use std::collections::HashMap;
/// use tokio::sync::Mutex;
/// use dogpile_core::{async_trait, AsyncCacheBackend, Result};
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

    /// A distributed lock on `key`, or `None`.
    fn get_mutex(&self, _key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        None
    }
}

#[async_trait]
impl<B: AsyncCacheBackend> AsyncBackend for B {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(AsyncCacheBackend::get(self, key).await?.map(Entry::Bytes))
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        let bytes = entry.into_bytes(std::any::type_name::<B>())?;
        AsyncCacheBackend::set(self, key, bytes).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        AsyncCacheBackend::delete(self, key).await
    }

    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        Ok(AsyncCacheBackend::get_multi(self, keys)
            .await?
            .into_iter()
            .map(|value| value.map(Entry::Bytes))
            .collect())
    }

    async fn set_multi(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        let name = std::any::type_name::<B>();
        let items = items
            .into_iter()
            .map(|(key, entry)| Ok((key, entry.into_bytes(name)?)))
            .collect::<Result<Vec<_>>>()?;
        AsyncCacheBackend::set_multi(self, items).await
    }

    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        AsyncCacheBackend::delete_multi(self, keys).await
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        AsyncCacheBackend::get_mutex(self, key)
    }
}

/// The async path to a sync backend: the backend's own async twin, direct calls for a
/// backend that never blocks, or the blocking pool for every other.
pub(crate) fn async_path(backend: &Arc<dyn Backend>) -> Arc<dyn AsyncBackend> {
    if let Some(native) = backend.async_backend() {
        return native;
    }
    if backend.nonblocking() {
        Arc::new(Direct(backend.clone()))
    } else {
        Arc::new(OnBlockingPool(backend.clone()))
    }
}

/// A sync backend whose calls never block, called on the task.
struct Direct(Arc<dyn Backend>);

#[async_trait]
impl AsyncBackend for Direct {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.0.get(key)
    }
    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.0.set(key, entry)
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key)
    }
    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.0.get_multi(keys)
    }
    async fn set_multi(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        self.0.set_multi(items)
    }
    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        self.0.delete_multi(keys)
    }
    fn get_mutex(&self, key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        let mutex = self.0.get_mutex(key)?;
        Some(Box::new(BlockingMutex(Arc::from(mutex))))
    }
}

/// A sync backend that may block, called on tokio's blocking pool.
struct OnBlockingPool(Arc<dyn Backend>);

/// Runs `f` on tokio's blocking pool; a panic there is a backend error.
async fn blocking<R, F>(f: F) -> Result<R>
where
    R: Send + 'static,
    F: FnOnce() -> Result<R> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(error) => Err(Error::backend(
            "a sync backend on the blocking pool",
            format!("the call did not complete: {error}"),
        )),
    }
}

fn owned(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

fn borrowed(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

#[async_trait]
impl AsyncBackend for OnBlockingPool {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let (backend, key) = (self.0.clone(), key.to_owned());
        blocking(move || backend.get(&key)).await
    }
    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        let (backend, key) = (self.0.clone(), key.to_owned());
        blocking(move || backend.set(&key, entry)).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        let (backend, key) = (self.0.clone(), key.to_owned());
        blocking(move || backend.delete(&key)).await
    }
    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let (backend, keys) = (self.0.clone(), owned(keys));
        blocking(move || backend.get_multi(&borrowed(&keys))).await
    }
    async fn set_multi(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        let backend = self.0.clone();
        let (keys, entries): (Vec<String>, Vec<Entry>) = items
            .into_iter()
            .map(|(key, entry)| (key.to_owned(), entry))
            .unzip();
        blocking(move || backend.set_multi(borrowed(&keys).into_iter().zip(entries).collect()))
            .await
    }
    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        let (backend, keys) = (self.0.clone(), owned(keys));
        blocking(move || backend.delete_multi(&borrowed(&keys))).await
    }
    fn get_mutex(&self, key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        let mutex = self.0.get_mutex(key)?;
        Some(Box::new(BlockingMutex(Arc::from(mutex))))
    }
}

/// A sync distributed lock, tried and released on the blocking pool.
struct BlockingMutex(Arc<dyn CacheMutex>);

#[async_trait]
impl AsyncCacheMutex for BlockingMutex {
    async fn try_acquire(&self) -> Result<bool> {
        let mutex = self.0.clone();
        blocking(move || mutex.try_acquire()).await
    }
    async fn release(&self) -> Result<()> {
        let mutex = self.0.clone();
        blocking(move || mutex.release()).await
    }
    fn retry_pause(&self) -> Duration {
        self.0.retry_pause()
    }
    fn wait_limit(&self) -> Option<Duration> {
        self.0.wait_limit()
    }
}

/// The sync side of a region configured with an async-only backend: every call is an error
/// that says to use the async methods.
pub(crate) struct AsyncOnly {
    pub(crate) name: String,
    pub(crate) backend: Arc<dyn AsyncBackend>,
}

impl AsyncOnly {
    fn refuse<T>(&self) -> Result<T> {
        Err(Error::backend(
            &self.name,
            "this backend is async only: call the region's _async methods (get_async, \
             get_or_create_async, ...) from async code",
        ))
    }
}

impl Backend for AsyncOnly {
    fn get(&self, _: &str) -> Result<Option<Entry>> {
        self.refuse()
    }
    fn set(&self, _: &str, _: Entry) -> Result<()> {
        self.refuse()
    }
    fn delete(&self, _: &str) -> Result<()> {
        self.refuse()
    }
    fn async_backend(&self) -> Option<Arc<dyn AsyncBackend>> {
        Some(self.backend.clone())
    }
}
