//! The two kinds of I/O the [driver](crate::engine::driver) runs on: [`BlockingIo`] (the
//! backend's sync calls, waits that block the thread) and [`AsyncIo`] (the backend's async
//! path, waits that yield to the runtime).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::driver::Io;
use crate::error::{Error, Result};
use crate::lock::distributed::{acquire_until, CacheMutex};
use crate::lock::handle::LockHandle;
use crate::lock::local::{Handed, KeyGuard, LocalWait, Waiter};
use crate::region::state::{Configured, Current, RegionState};
use crate::value::{Cacheable, CachedValue, Entry};

/// The blocking face's I/O: every future is complete when first polled.
pub struct BlockingIo;

impl BlockingIo {
    /// Reads and decodes one key, blocking: an object store lends its entry, so a hit
    /// touches no shared reference count.
    #[inline]
    pub(crate) fn read_now<T: Cacheable>(
        region: &RegionState,
        cfg: &Configured,
        key: &str,
    ) -> Result<Option<CachedValue<T>>> {
        if !cfg.stores_objects {
            return Ok(cfg
                .backend
                .get_entry(key)?
                .and_then(|e| region.decode(key, e)));
        }
        let mut value = None;
        cfg.backend.get_with(key, &mut |entry| {
            value = match entry {
                Some(Entry::Object(object)) => match object.downcast_ref::<CachedValue<T>>() {
                    Some(found) => Some(found.clone()),
                    None => region.decode(key, Entry::Object(Arc::clone(object))),
                },
                Some(other) => region.decode(key, other.clone()),
                None => None,
            }
        })?;
        Ok(value)
    }
}

impl Io for BlockingIo {
    type Cfg = Current;
    type Handle = LockHandle;
    type Mutex = Box<dyn CacheMutex>;

    #[inline]
    fn configured(region: &RegionState) -> Result<Current> {
        region.configured()
    }

    async fn read<T: Cacheable>(
        region: &RegionState,
        cfg: &Configured,
        key: &str,
    ) -> Result<Option<CachedValue<T>>> {
        Self::read_now(region, cfg, key)
    }

    async fn read_multi<T: Cacheable>(
        region: &RegionState,
        cfg: &Configured,
        keys: &[&str],
    ) -> Result<Vec<Option<CachedValue<T>>>> {
        let entries = cfg.backend.get_entries(keys)?;
        region.decode_multi(cfg, keys, entries)
    }

    async fn set(cfg: &Configured, key: &str, entry: Entry) -> Result<()> {
        cfg.backend.set_entry(key, entry)
    }

    async fn set_multi(cfg: &Configured, entries: Vec<(&str, Entry)>) -> Result<()> {
        cfg.backend.set_entries(entries)
    }

    async fn delete(cfg: &Configured, key: &str) -> Result<()> {
        cfg.backend.delete(key)
    }

    async fn delete_multi(cfg: &Configured, keys: &[&str]) -> Result<()> {
        cfg.backend.delete_multi(keys)
    }

    async fn wait_local(waiter: Waiter, deadline: Instant) -> LocalWait {
        warn_if_in_runtime();
        waiter.wait_until(deadline)
    }

    fn mutex(cfg: &Configured, key: &str) -> Option<Box<dyn CacheMutex>> {
        cfg.backend.get_mutex(key)
    }

    async fn try_acquire(mutex: &Box<dyn CacheMutex>) -> Result<bool> {
        mutex.try_acquire()
    }

    async fn acquire_until(mutex: &Box<dyn CacheMutex>, deadline: Instant) -> Result<bool> {
        warn_if_in_runtime();
        acquire_until(&**mutex, deadline)
    }

    fn wait_limit(mutex: &Box<dyn CacheMutex>) -> Option<Duration> {
        mutex.wait_limit()
    }

    fn handle(key: &str, local: KeyGuard, distributed: Option<Box<dyn CacheMutex>>) -> LockHandle {
        LockHandle::new(key, Some(local), distributed)
    }

    async fn hand_off(handle: LockHandle, object: Option<Handed>) {
        match object {
            Some(object) => handle.hand_off(object),
            None => drop(handle),
        }
    }

    fn explain(error: Error) -> Error {
        match error {
            Error::LockTimeout {
                region,
                key,
                waited,
                ..
            } => Error::LockTimeout {
                region,
                key,
                waited,
                in_runtime: in_runtime(),
            },
            other => other,
        }
    }
}

/// Whether this thread runs inside a tokio runtime.
fn in_runtime() -> bool {
    #[cfg(feature = "tokio")]
    return tokio::runtime::Handle::try_current().is_ok();
    #[cfg(not(feature = "tokio"))]
    false
}

/// A blocking call about to wait for the dogpile lock inside a tokio runtime blocks an
/// executor thread for as long as it waits: said once per process.
fn warn_if_in_runtime() {
    static SAID: std::sync::Once = std::sync::Once::new();
    if in_runtime() {
        SAID.call_once(|| {
            tracing::warn!(
                "a blocking dogpile call waits for the dogpile lock inside a tokio runtime: it \
                 blocks an executor thread while it waits (up to its time budget); call the \
                 region's _async methods from async code"
            );
        });
    }
}

/// The async face's I/O: the backend's async path, and waits that yield to the runtime.
#[cfg(feature = "tokio")]
pub struct AsyncIo;

#[cfg(feature = "tokio")]
impl Io for AsyncIo {
    type Cfg = Arc<Configured>;
    type Handle = crate::lock::handle::AsyncLockHandle;
    type Mutex = Box<dyn crate::lock::distributed::AsyncCacheMutex>;

    /// The configuration, and a tokio runtime to reach its backend with: a backend that
    /// async code reaches through tokio fails with [`Error::NoTokioRuntime`] outside one,
    /// rather than panicking inside tokio. A store that never blocks (memory) works under
    /// any executor.
    fn configured(region: &RegionState) -> Result<Arc<Configured>> {
        let cfg = region.configured_arc()?;
        if !cfg.nonblocking && tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoTokioRuntime {
                region: region.name.to_string(),
                backend: cfg.backend_name.clone(),
            });
        }
        Ok(cfg)
    }

    async fn read<T: Cacheable>(
        region: &RegionState,
        cfg: &Configured,
        key: &str,
    ) -> Result<Option<CachedValue<T>>> {
        if cfg.nonblocking {
            // A store whose calls never block (memory): read it as the blocking face does,
            // lending its entry, with no boxed future per call.
            return BlockingIo::read_now(region, cfg, key);
        }
        Ok(cfg
            .async_backend
            .get_entry(key)
            .await?
            .and_then(|e| region.decode(key, e)))
    }

    async fn read_multi<T: Cacheable>(
        region: &RegionState,
        cfg: &Configured,
        keys: &[&str],
    ) -> Result<Vec<Option<CachedValue<T>>>> {
        let entries = cfg.async_backend.get_entries(keys).await?;
        region.decode_multi(cfg, keys, entries)
    }

    async fn set(cfg: &Configured, key: &str, entry: Entry) -> Result<()> {
        cfg.async_backend.set_entry(key, entry).await
    }

    async fn set_multi(cfg: &Configured, entries: Vec<(&str, Entry)>) -> Result<()> {
        cfg.async_backend.set_entries(entries).await
    }

    async fn delete(cfg: &Configured, key: &str) -> Result<()> {
        cfg.async_backend.delete(key).await
    }

    async fn delete_multi(cfg: &Configured, keys: &[&str]) -> Result<()> {
        cfg.async_backend.delete_multi(keys).await
    }

    async fn wait_local(waiter: Waiter, deadline: Instant) -> LocalWait {
        if tokio::runtime::Handle::try_current().is_err() {
            // Another executor (a memory region: see `configured`): no tokio timer to wait
            // with, so this thread waits, as the blocking face does.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "an async dogpile call waits for the dogpile lock outside a tokio runtime: \
                     it blocks its thread while it waits (within its time budget)"
                );
            });
            return BlockingIo::wait_local(waiter, deadline).await;
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        waiter
            .wait_with(|listener| async move {
                tokio::time::timeout_at(deadline, listener).await.is_ok()
            })
            .await
    }

    fn mutex(cfg: &Configured, key: &str) -> Option<Self::Mutex> {
        cfg.async_backend.get_mutex(key)
    }

    async fn try_acquire(mutex: &Self::Mutex) -> Result<bool> {
        mutex.try_acquire().await
    }

    async fn acquire_until(mutex: &Self::Mutex, deadline: Instant) -> Result<bool> {
        crate::lock::distributed::acquire_until_async(&**mutex, deadline).await
    }

    fn wait_limit(mutex: &Self::Mutex) -> Option<Duration> {
        mutex.wait_limit()
    }

    fn handle(key: &str, local: KeyGuard, distributed: Option<Self::Mutex>) -> Self::Handle {
        crate::lock::handle::AsyncLockHandle::new(key, local, distributed)
    }

    async fn hand_off(handle: Self::Handle, object: Option<Handed>) {
        handle.hand_off(object).await;
    }
}
