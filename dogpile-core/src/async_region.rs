//! The async API of [`CacheRegion`]: the async driver of the [engine](crate::engine).
//!
//! Every decision is the engine's, as for the blocking driver in `region.rs`; this driver
//! differs only in how it waits (it awaits the per-key lock's listener and tokio's timer,
//! never blocking an executor thread) and how it calls the backend (the region's
//! [`AsyncCacheBackend`](crate::AsyncCacheBackend)). Sync and async callers of one region
//! share its per-key locks, its hand-offs and its time budget.
//!
//! A future that holds the lock and is dropped (cancelled, timed out) releases the
//! in-process lock at once, without I/O, and a waiter takes over; a distributed lock it
//! held is released by a task spawned on the current runtime (or, with no runtime left,
//! expires after the backend's `lock_timeout`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{acquire_until_async, AsyncCacheMutex};
use crate::clock::Clock;
use crate::driver::{self, Io};
use crate::engine::{store_outcome, Lookup, Machine, Rules, Signals, Step};
use crate::error::{Error, Result};
use crate::lock::{Handed, KeyGuard, LocalWait, Waiter};
use crate::region::{entry_for, CacheRegion, Configured, CreateError, CreateOptions};
use crate::stats::StatsRecorder;
use crate::value::{Cacheable, CachedValue, Entry};
use crate::warnings::{warn_limited, RegionWarnings, WarningKind};

/// A held dogpile lock of an async caller.
struct AsyncLockHandle {
    key: String,
    local: Option<KeyGuard>,
    distributed: Option<Box<dyn AsyncCacheMutex>>,
}

impl AsyncLockHandle {
    fn new(key: &str, local: KeyGuard, distributed: Option<Box<dyn AsyncCacheMutex>>) -> Self {
        AsyncLockHandle {
            key: key.to_owned(),
            local: Some(local),
            distributed,
        }
    }

    /// Hands `value` to this process's waiters, then releases the distributed lock.
    async fn hand_off(mut self, value: Option<Handed>) {
        if let (Some(local), Some(value)) = (self.local.take(), value) {
            local.hand_off(value);
        }
        self.local.take();
        if let Some(mutex) = self.distributed.take() {
            if let Err(error) = mutex.release().await {
                tracing::warn!(key = %self.key, %error, "failed to release the distributed dogpile lock");
            }
        }
    }
}

impl Drop for AsyncLockHandle {
    fn drop(&mut self) {
        self.local.take();
        let Some(mutex) = self.distributed.take() else {
            return;
        };
        // Dropped while holding the distributed lock: the future was cancelled.
        let key = std::mem::take(&mut self.key);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = mutex.release().await {
                        tracing::warn!(%key, %error, "failed to release the distributed dogpile lock of a cancelled call");
                    }
                });
            }
            Err(_) => tracing::warn!(%key,
                "a cancelled call held the distributed dogpile lock and no runtime is left to release it; it expires after the backend's lock_timeout"),
        }
    }
}

/// The async driver's I/O: the backend's async twin, and waits that yield to the runtime.
struct AsyncIo<'r> {
    region: &'r CacheRegion,
    cfg: &'r Configured,
}

impl Io for AsyncIo<'_> {
    type Handle = AsyncLockHandle;
    type Mutex = Box<dyn AsyncCacheMutex>;

    fn region(&self) -> &CacheRegion {
        self.region
    }

    fn cfg(&self) -> &Configured {
        self.cfg
    }

    async fn read<T: Cacheable>(&self, key: &str) -> Result<Option<CachedValue<T>>> {
        self.region.read_async(self.cfg, key).await
    }

    async fn read_multi<T: Cacheable>(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue<T>>>> {
        self.region.read_multi_async(self.cfg, keys).await
    }

    async fn wait_local(&self, waiter: Waiter, deadline: Instant) -> LocalWait {
        let deadline = tokio::time::Instant::from_std(deadline);
        waiter
            .wait_with(|listener| async move {
                tokio::time::timeout_at(deadline, listener).await.is_ok()
            })
            .await
    }

    fn mutex(&self, key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        self.cfg.async_backend.get_mutex(key)
    }

    async fn try_acquire(&self, mutex: &Box<dyn AsyncCacheMutex>) -> Result<bool> {
        mutex.try_acquire().await
    }

    async fn acquire_until(
        &self,
        mutex: &Box<dyn AsyncCacheMutex>,
        deadline: Instant,
    ) -> Result<bool> {
        acquire_until_async(&**mutex, deadline).await
    }

    fn wait_limit(mutex: &Box<dyn AsyncCacheMutex>) -> Option<Duration> {
        mutex.wait_limit()
    }

    fn handle(
        key: &str,
        local: KeyGuard,
        distributed: Option<Box<dyn AsyncCacheMutex>>,
    ) -> AsyncLockHandle {
        AsyncLockHandle::new(key, local, distributed)
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.cfg.async_backend.set_entry(key, entry).await
    }

    async fn set_multi(&self, entries: Vec<(&str, Entry)>) -> Result<()> {
        self.cfg.async_backend.set_entries(entries).await
    }

    async fn hand_off(handle: AsyncLockHandle, object: Option<Handed>) {
        handle.hand_off(object).await;
    }
}

/// No background rule: the caller always creates.
type NoDetach<F> = fn(F, Option<AsyncLockHandle>);

impl CacheRegion {
    fn configured_arc(&self) -> Result<Arc<Configured>> {
        self.configured().map(|cfg| cfg.to_arc())
    }

    async fn read_async<T: Cacheable>(
        &self,
        cfg: &Configured,
        key: &str,
    ) -> Result<Option<CachedValue<T>>> {
        if cfg.nonblocking {
            // A store whose calls never block (memory): read it as the sync path does,
            // lending its entry, with no boxed future per call.
            return self.read(cfg, key);
        }
        Ok(cfg
            .async_backend
            .get_entry(key)
            .await?
            .and_then(|e| self.decode(key, e)))
    }

    async fn read_multi_async<T: Cacheable>(
        &self,
        cfg: &Configured,
        keys: &[&str],
    ) -> Result<Vec<Option<CachedValue<T>>>> {
        let entries = cfg.async_backend.get_entries(keys).await?;
        self.decode_multi(cfg, keys, entries)
    }

    // ----- get / set / delete --------------------------------------------------------

    /// As [`get`](Self::get), for async callers.
    pub async fn get_async<T: Cacheable>(&self, key: &str) -> Result<Option<T>> {
        let cfg = self.configured_arc()?;
        let key = self.backend_key(&cfg, key)?;
        let value = self.counted(self.read_async(&cfg, &key).await)?;
        let value = match self.freshness(&cfg, None).judge(value) {
            Lookup::Fresh(value) => Some(value.payload),
            Lookup::Stale(_) | Lookup::Missing => None,
        };
        self.count_lookup(&value);
        Ok(value)
    }

    /// As [`get_multi`](Self::get_multi), for async callers: one backend call.
    pub async fn get_multi_async<T: Cacheable, K: AsRef<str>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<T>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.configured_arc()?;
        let mangled = keys
            .iter()
            .map(|k| self.backend_key(&cfg, k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
        let values = self.counted(self.read_multi_async(&cfg, &refs).await)?;
        let freshness = self.freshness(&cfg, None);
        Ok(values
            .into_iter()
            .map(|value| {
                let value = match freshness.judge(value) {
                    Lookup::Fresh(value) => Some(value.payload),
                    _ => None,
                };
                self.count_lookup(&value);
                value
            })
            .collect())
    }

    /// As [`set`](Self::set), for async callers.
    pub async fn set_async<T: Cacheable>(&self, key: &str, value: &T) -> Result<()> {
        let cfg = self.configured_arc()?;
        let key = self.backend_key(&cfg, key)?;
        let entry = entry_for(&cfg, &key, value, self.clock.now()).0?;
        self.counted(cfg.async_backend.set_entry(&key, entry).await)
    }

    /// As [`set_multi`](Self::set_multi), for async callers: one backend call.
    pub async fn set_multi_async<T: Cacheable, K: AsRef<str>>(
        &self,
        items: &[(K, T)],
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let cfg = self.configured_arc()?;
        let now = self.clock.now();
        let mangled = items
            .iter()
            .map(|(k, _)| self.backend_key(&cfg, k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let entries = mangled
            .iter()
            .zip(items)
            .map(|(key, (_, value))| Ok((&**key, entry_for(&cfg, key, value, now).0?)))
            .collect::<Result<Vec<_>>>()?;
        self.counted(cfg.async_backend.set_entries(entries).await)
    }

    /// As [`delete`](Self::delete), for async callers.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        let cfg = self.configured_arc()?;
        let key = self.backend_key(&cfg, key)?;
        self.counted(cfg.async_backend.delete(&key).await)
    }

    /// As [`delete_multi`](Self::delete_multi), for async callers: one backend call.
    pub async fn delete_multi_async<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let cfg = self.configured_arc()?;
        let mangled = keys
            .iter()
            .map(|k| self.backend_key(&cfg, k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
        self.counted(cfg.async_backend.delete_multi(&refs).await)
    }

    // ----- get_or_create -------------------------------------------------------------

    /// As [`get_or_create`](Self::get_or_create), for async callers: `creator` is an async
    /// closure, and waiting (for the lock, for another caller's value) never blocks an
    /// executor thread. Sync and async callers of one region share its per-key locks.
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, RegionConfig, CacheBackend, Result};
    /// # use std::{collections::HashMap, sync::Mutex};
    /// # #[derive(Default)] struct Dict(Mutex<HashMap<String, Vec<u8>>>);
    /// # impl CacheBackend for Dict {
    /// #     fn get(&self, k: &str) -> Result<Option<Vec<u8>>> { Ok(self.0.lock().unwrap().get(k).cloned()) }
    /// #     fn set(&self, k: &str, v: Vec<u8>) -> Result<()> { self.0.lock().unwrap().insert(k.into(), v); Ok(()) }
    /// #     fn delete(&self, k: &str) -> Result<()> { self.0.lock().unwrap().remove(k); Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<()> {
    /// let region = CacheRegion::new();
    /// region.configure(RegionConfig::with_backend(Dict::default()))?;
    /// let user: String = region
    ///     .get_or_create_async("user:5", || async { "ed".to_string() })
    ///     .await?;
    /// assert_eq!(user, "ed");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_create_async<T, F, Fut>(&self, key: &str, creator: F) -> Result<T>
    where
        T: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.get_or_create_with_async(key, CreateOptions::new(), creator)
            .await
    }

    /// As [`get_or_create_async`](Self::get_or_create_async), with per-call options.
    pub async fn get_or_create_with_async<T, F, Fut>(
        &self,
        key: &str,
        options: CreateOptions<'_, T>,
        creator: F,
    ) -> Result<T>
    where
        T: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.try_get_or_create_with_async(key, options, || async {
            Ok::<T, Error>(creator().await)
        })
        .await
    }

    /// As [`try_get_or_create`](Self::try_get_or_create), for async callers: an `Err` from
    /// the creator is returned and not cached.
    pub async fn try_get_or_create_async<T, E, F, Fut>(&self, key: &str, creator: F) -> Result<T, E>
    where
        T: Cacheable,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.try_get_or_create_with_async(key, CreateOptions::new(), creator)
            .await
    }

    /// As [`try_get_or_create_async`](Self::try_get_or_create_async), with per-call options.
    pub async fn try_get_or_create_with_async<T, E, F, Fut>(
        &self,
        key: &str,
        options: CreateOptions<'_, T>,
        creator: F,
    ) -> Result<T, E>
    where
        T: Cacheable,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cfg = self.configured_arc()?;
        let key = self.backend_key(&cfg, key)?;
        let outcome = self
            .drive_async(
                &cfg,
                &key,
                &options,
                &mut Some(creator),
                self.rules(&cfg, false),
                None::<NoDetach<F>>,
            )
            .await;
        match outcome {
            Ok(value) => Ok(value),
            Err(CreateError::Cache(error)) => Err(error.into()),
            Err(CreateError::Creator(error)) => Err(error),
        }
    }

    /// As [`get_or_create_fail_open`](Self::get_or_create_fail_open), for async callers:
    /// what `#[cache_on_arguments]` on an `async fn` calls.
    pub async fn get_or_create_fail_open_async<T, E, F, Fut>(
        &self,
        key: &str,
        options: CreateOptions<'_, T>,
        creator: F,
    ) -> Result<T, E>
    where
        T: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let ready = self
            .configured_arc()
            .and_then(|cfg| Ok((self.backend_key(&cfg, key)?.into_owned(), cfg)));
        let (key, cfg) = match ready {
            Ok(ready) => ready,
            Err(error) => {
                warn_limited!(self.warnings, WarningKind::CacheUnavailable, region = %self.name,
                    key, %error, "cache unavailable; computing the value uncached");
                return creator().await;
            }
        };
        let rules = Rules {
            fail_open: true,
            ..self.rules(&cfg, false)
        };
        let mut creator = Some(creator);
        match self
            .drive_async(
                &cfg,
                &key,
                &options,
                &mut creator,
                rules,
                None::<NoDetach<F>>,
            )
            .await
        {
            Ok(value) => Ok(value),
            Err(CreateError::Creator(error)) => Err(error),
            // Failing open, the engine turns cache failures into misses and warnings; should
            // one come back before the creator ran, the creator still gives the answer.
            Err(CreateError::Cache(error)) => match creator.take() {
                Some(creator) => {
                    warn_limited!(self.warnings, WarningKind::CacheUnavailable, region = %self.name,
                        key = %key, %error, "cache unavailable; computing the value uncached");
                    creator().await
                }
                None => unreachable!("fail-open cache error after the creator ran: {error}"),
            },
        }
    }

    /// As [`get_or_create_async`](Self::get_or_create_async), but when the value is stale,
    /// the caller that wins the lock returns the stale value at once too, and the creator
    /// runs as a task spawned on the current tokio runtime, which stores the value and
    /// releases the lock. A missing value is always created by the caller.
    pub async fn get_or_create_in_background_async<T, F, Fut>(
        &self,
        key: &str,
        creator: F,
    ) -> Result<T>
    where
        T: Cacheable,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let cfg = self.configured_arc()?;
        let key = self.backend_key(&cfg, key)?;
        let creator = move || async move { Ok::<T, Error>(creator().await) };
        let detach = spawned(
            cfg.clone(),
            self.clock.clone(),
            (self.name.clone(), self.stats.clone(), self.warnings.clone()),
            key.clone().into_owned(),
        );
        let options = CreateOptions::new();
        self.drive_async(
            &cfg,
            &key,
            &options,
            &mut Some(creator),
            self.rules(&cfg, true),
            Some(detach),
        )
        .await
        .map_err(|e| match e {
            CreateError::Cache(e) | CreateError::Creator(e) => e,
        })
    }

    /// The async driver: the engine's machine for `key` with its first read, then the
    /// [shared driver](crate::driver) on async I/O.
    async fn drive_async<T, E, F, Fut, D>(
        &self,
        cfg: &Configured,
        key: &str,
        options: &CreateOptions<'_, T>,
        creator: &mut Option<F>,
        rules: Rules,
        detach: Option<D>,
    ) -> Result<T, CreateError<E>>
    where
        T: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        D: FnOnce(F, Option<AsyncLockHandle>),
    {
        let freshness = self.freshness(cfg, options.expiration);
        let mut machine = Machine::new(self.signals(), key, freshness, rules);
        let step = machine.read(self.read_async(cfg, key).await);
        if let Step::Return(value) = step {
            return Ok(value);
        }
        let io = AsyncIo { region: self, cfg };
        driver::drive(&io, key, options, creator, machine, step, detach).await
    }

    /// As [`get_or_create_multi`](Self::get_or_create_multi), for async callers: `creator`
    /// gets the keys that need a value and returns their values in the same order.
    ///
    /// # Errors
    /// As [`get_or_create_multi`](Self::get_or_create_multi).
    pub async fn get_or_create_multi_async<T, K, F, Fut>(
        &self,
        keys: &[K],
        creator: F,
    ) -> Result<Vec<T>>
    where
        T: Cacheable,
        K: AsRef<str>,
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Vec<T>>,
    {
        self.get_or_create_multi_with_async(keys, CreateOptions::new(), creator, self.fail_open)
            .await
    }

    /// The async multi driver (see the blocking `get_or_create_multi_inner`); public for
    /// the code `#[cache_multi_on_arguments]` generates on an `async fn`, not an API.
    #[doc(hidden)]
    pub async fn get_or_create_multi_with_async<T, K, F, Fut>(
        &self,
        keys: &[K],
        options: CreateOptions<'_, T>,
        creator: F,
        fail_open: bool,
    ) -> Result<Vec<T>>
    where
        T: Cacheable,
        K: AsRef<str>,
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Vec<T>>,
    {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.configured_arc()?;
        let keys = self.distinct_keys(&cfg, keys)?;
        let rules = Rules {
            fail_open,
            ..self.rules(&cfg, false)
        };
        let io = AsyncIo {
            region: self,
            cfg: &cfg,
        };
        driver::drive_multi(&io, keys, &options, creator, rules).await
    }
}

/// The background rule's detach: runs the creator as a spawned task that stores the value,
/// hands it to this process's waiters and releases the lock.
fn spawned<T, W, Fut>(
    cfg: Arc<Configured>,
    clock: Arc<dyn Clock>,
    observers: (String, Arc<StatsRecorder>, Arc<RegionWarnings>),
    key: String,
) -> impl FnOnce(W, Option<AsyncLockHandle>)
where
    T: Cacheable,
    W: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
{
    move |creator, handle| {
        tokio::spawn(async move {
            let (name, stats, warnings) = observers;
            let started = std::time::Instant::now();
            let Ok(value) = creator().await else {
                return;
            };
            stats.creation(started.elapsed());
            let (entry, object) = entry_for(&cfg, &key, &value, clock.now());
            let stored = match entry {
                Ok(entry) => cfg.async_backend.set_entry(&key, entry).await,
                Err(error) => Err(error),
            };
            if let Some(handle) = handle {
                handle.hand_off(Some(object)).await;
            }
            let signals = Signals {
                region: &name,
                stats: &stats,
                warnings: &warnings,
            };
            // Nobody is left to tell: a failed store is a warning.
            let _ = store_outcome(&signals, &key, true, stored);
        });
    }
}
