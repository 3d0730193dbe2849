//! The async API of [`CacheRegion`]: the async driver of the [engine](crate::engine).
//!
//! Every decision is the engine's, as for the blocking driver in `region.rs`; this driver
//! differs only in how it waits (it awaits the per-key lock's listener and tokio's timer,
//! never blocking an executor thread) and how it calls the backend (the region's
//! [`AsyncBackend`](crate::AsyncBackend)). Sync and async callers of one region share its
//! per-key locks, its hand-offs and its time budget.
//!
//! A future that holds the lock and is dropped (cancelled, timed out) releases the
//! in-process lock at once, without I/O, and a waiter takes over; a distributed lock it
//! held is released by a task spawned on the current runtime (or, with no runtime left,
//! expires after the backend's `lock_timeout`).

use std::future::Future;
use std::sync::Arc;

use crate::async_backend::{acquire_until_async, AsyncCacheMutex};
use crate::clock::Clock;
use crate::engine::{
    distributed_deadline, distributed_outcome, local_outcome, read_outcome, store_outcome, Batch,
    Budget, Keep, Locked, Lookup, Machine, Rules, Settled, Step,
};
use crate::error::{Error, Result};
use crate::lock::{Handed, KeyGuard, LocalWait, Waiter};
use crate::region::{entry_for, CacheRegion, Configured, CreateError, CreateOptions};
use crate::value::{Cacheable, CachedValue};

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

/// Waits for a key's in-process lock without blocking the thread.
async fn wait_local(waiter: Waiter, deadline: std::time::Instant) -> LocalWait {
    loop {
        if let Some(done) = waiter.check() {
            return done;
        }
        let listener = waiter.listen();
        if let Some(done) = waiter.check() {
            return done;
        }
        if tokio::time::timeout_at(deadline.into(), listener)
            .await
            .is_err()
        {
            return waiter.check().unwrap_or(LocalWait::TimedOut);
        }
    }
}

/// Stores a created value, hands it to this process's waiters and releases the lock.
async fn store_async<T: Cacheable>(
    cfg: &Configured,
    now: f64,
    key: &str,
    value: &T,
    should_cache: bool,
    handle: Option<AsyncLockHandle>,
) -> Result<()> {
    if !should_cache {
        if let Some(handle) = handle {
            handle.hand_off(None).await;
        }
        return Ok(());
    }
    let (entry, object) = entry_for(cfg, key, value, now);
    let stored = match entry {
        Ok(entry) => cfg.async_backend.set(key, entry).await,
        Err(error) => Err(error),
    };
    if let Some(handle) = handle {
        handle.hand_off(Some(object)).await;
    }
    stored
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
        Ok(cfg
            .async_backend
            .get(key)
            .await?
            .and_then(|e| self.decode(key, e)))
    }

    async fn read_multi_async<T: Cacheable>(
        &self,
        cfg: &Configured,
        keys: &[&str],
    ) -> Result<Vec<Option<CachedValue<T>>>> {
        let entries = cfg.async_backend.get_multi(keys).await?;
        self.decode_multi(cfg, keys, entries)
    }

    // ----- get / set / delete --------------------------------------------------------

    /// As [`get`](Self::get), for async callers.
    pub async fn get_async<T: Cacheable>(&self, key: &str) -> Result<Option<T>> {
        let cfg = self.configured_arc()?;
        let key = self.mangle(key);
        let value = self.read_async(&cfg, &key).await?;
        Ok(match self.freshness(&cfg, None).judge(value) {
            Lookup::Fresh(value) => Some(value.payload),
            Lookup::Stale(_) | Lookup::Missing => None,
        })
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
        let mangled: Vec<_> = keys.iter().map(|k| self.mangle(k.as_ref())).collect();
        let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
        let values = self.read_multi_async(&cfg, &refs).await?;
        let freshness = self.freshness(&cfg, None);
        Ok(values
            .into_iter()
            .map(|value| match freshness.judge(value) {
                Lookup::Fresh(value) => Some(value.payload),
                _ => None,
            })
            .collect())
    }

    /// As [`set`](Self::set), for async callers.
    pub async fn set_async<T: Cacheable>(&self, key: &str, value: &T) -> Result<()> {
        let cfg = self.configured_arc()?;
        let key = self.mangle(key);
        let entry = entry_for(&cfg, &key, value, self.clock.now()).0?;
        cfg.async_backend.set(&key, entry).await
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
        let mangled: Vec<_> = items.iter().map(|(k, _)| self.mangle(k.as_ref())).collect();
        let entries = mangled
            .iter()
            .zip(items)
            .map(|(key, (_, value))| Ok((&**key, entry_for(&cfg, key, value, now).0?)))
            .collect::<Result<Vec<_>>>()?;
        cfg.async_backend.set_multi(entries).await
    }

    /// As [`delete`](Self::delete), for async callers.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        let cfg = self.configured_arc()?;
        let key = self.mangle(key);
        cfg.async_backend.delete(&key).await
    }

    /// As [`delete_multi`](Self::delete_multi), for async callers: one backend call.
    pub async fn delete_multi_async<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let cfg = self.configured_arc()?;
        let mangled: Vec<_> = keys.iter().map(|k| self.mangle(k.as_ref())).collect();
        let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
        cfg.async_backend.delete_multi(&refs).await
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
        let key = self.mangle(key);
        let outcome = self
            .drive_async(
                &cfg,
                &key,
                &options,
                creator,
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
        let cfg = match self.configured_arc() {
            Ok(cfg) => cfg,
            Err(error) => {
                tracing::warn!(region = %self.name, key, %error, "cache unavailable; computing the value uncached");
                return creator().await;
            }
        };
        let rules = Rules {
            fail_open: true,
            ..self.rules(&cfg, false)
        };
        let key = self.mangle(key);
        match self
            .drive_async(&cfg, &key, &options, creator, rules, None::<NoDetach<F>>)
            .await
        {
            Ok(value) => Ok(value),
            Err(CreateError::Creator(error)) => Err(error),
            // Failing open, the engine turns every cache failure into a miss or a warning.
            Err(CreateError::Cache(error)) => {
                unreachable!("fail-open cache error from a configured region: {error}")
            }
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
        let key = self.mangle(key);
        let creator = move || async move { Ok::<T, Error>(creator().await) };
        let detach = spawned(
            cfg.clone(),
            self.clock.clone(),
            self.name.clone(),
            key.clone().into_owned(),
        );
        let options = CreateOptions::new();
        self.drive_async(
            &cfg,
            &key,
            &options,
            creator,
            self.rules(&cfg, true),
            Some(detach),
        )
        .await
        .map_err(|e| match e {
            CreateError::Cache(e) | CreateError::Creator(e) => e,
        })
    }

    /// The async driver: steps one key's machine, awaiting where the blocking driver blocks.
    async fn drive_async<T, E, F, Fut, D>(
        &self,
        cfg: &Configured,
        key: &str,
        options: &CreateOptions<'_, T>,
        creator: F,
        rules: Rules,
        mut detach: Option<D>,
    ) -> Result<T, CreateError<E>>
    where
        T: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        D: FnOnce(F, Option<AsyncLockHandle>),
    {
        let mut machine = Machine::new(
            &self.name,
            key,
            self.freshness(cfg, options.expiration),
            rules,
        );
        let mut budget = Budget::new(options.time_budget.unwrap_or(self.time_budget));
        let mut handle = None;
        let mut creator = Some(creator);
        let mut step = machine.read(self.read_async(cfg, key).await);
        loop {
            step = match step {
                Step::Return(value) => return Ok(value),
                Step::Fail(error) => return Err(CreateError::Cache(error)),
                Step::Read => machine.read(self.read_async(cfg, key).await),
                Step::TryLock | Step::WaitLock => {
                    let wait = matches!(step, Step::WaitLock);
                    let locked;
                    (locked, handle) = self.lock_async(cfg, key, wait, &mut budget).await;
                    machine.locked(locked)
                }
                Step::Create => {
                    let Some(creator) = creator.take() else {
                        unreachable!("the engine asks for one creation per call")
                    };
                    let value = creator().await.map_err(CreateError::Creator)?;
                    let should_cache = options.should_cache(&value);
                    let now = self.clock.now();
                    let stored =
                        store_async(cfg, now, key, &value, should_cache, handle.take()).await;
                    machine.stored(value, stored)
                }
                Step::Background(stale) => match (creator.take(), detach.take()) {
                    (Some(creator), Some(detach)) => {
                        detach(creator, handle.take());
                        return Ok(stale);
                    }
                    _ => unreachable!("the background rule is only set with a detach"),
                },
            };
        }
    }

    /// Takes the dogpile lock on `key` for an async caller: as the blocking driver's
    /// `lock`, awaiting instead of blocking.
    async fn lock_async<T: Cacheable>(
        &self,
        cfg: &Configured,
        key: &str,
        wait: bool,
        budget: &mut Budget,
    ) -> (Locked<T>, Option<AsyncLockHandle>) {
        let local = if wait {
            let deadline = budget.deadline();
            loop {
                let waited = wait_local(self.locks.waiter(key), deadline).await;
                match local_outcome(waited, budget) {
                    Some(Ok(guard)) => break guard,
                    Some(Err(locked)) => return (locked, None),
                    None => continue,
                }
            }
        } else {
            match self.locks.try_acquire(key) {
                Some(guard) => guard,
                None => return (Locked::Busy, None),
            }
        };
        let Some(mutex) = cfg.async_backend.get_mutex(key) else {
            return (Locked::Held, Some(AsyncLockHandle::new(key, local, None)));
        };
        let acquired = if wait {
            let deadline = distributed_deadline(budget, mutex.wait_limit());
            acquire_until_async(&*mutex, deadline).await
        } else {
            mutex.try_acquire().await
        };
        let (locked, keep) = distributed_outcome(acquired, wait, budget);
        let handle = match keep {
            Keep::Both => Some(AsyncLockHandle::new(key, local, Some(mutex))),
            Keep::LocalOnly => Some(AsyncLockHandle::new(key, local, None)),
            Keep::Neither => None,
        };
        (locked, handle)
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
        let (inputs, unique) = self.distinct_keys(keys);
        let distinct: Vec<&str> = unique.iter().map(|(key, _)| key.as_str()).collect();
        let rules = Rules {
            fail_open,
            ..self.rules(&cfg, false)
        };
        let freshness = self.freshness(&cfg, options.expiration);
        let mut batch: Batch<'_, T, AsyncLockHandle> =
            Batch::new(&self.name, &distinct, freshness, rules);
        let mut budget = Budget::new(options.time_budget.unwrap_or(self.time_budget));
        loop {
            let reading = batch.reads();
            if !reading.is_empty() {
                let keys: Vec<&str> = reading.iter().map(|&i| distinct[i]).collect();
                let read = self.read_multi_async(&cfg, &keys).await;
                batch.read(
                    &reading,
                    read_outcome(&self.name, keys[0], fail_open, read)?,
                );
                continue;
            }
            let locking = batch.locks();
            if locking.is_empty() {
                break;
            }
            for (i, wait) in locking {
                let (locked, handle) = self.lock_async(&cfg, distinct[i], wait, &mut budget).await;
                batch.locked(i, locked, handle);
            }
        }
        let Settled {
            mut values,
            creating,
        } = batch.settle()?;
        if !creating.is_empty() {
            let (indices, handles): (Vec<usize>, Vec<Option<AsyncLockHandle>>) =
                creating.into_iter().unzip();
            let originals: Vec<String> = indices.iter().map(|&i| unique[i].1.clone()).collect();
            let asked = originals.len();
            let created = self.check_created(creator(originals).await, asked)?;
            let keys: Vec<&str> = indices.iter().map(|&i| distinct[i]).collect();
            let (entries, objects) =
                self.encode_created(&cfg, &keys, &created, &options, fail_open)?;
            let stored = if entries.is_empty() {
                Ok(())
            } else {
                cfg.async_backend.set_multi(entries).await
            };
            for (handle, object) in handles.into_iter().zip(objects) {
                if let Some(handle) = handle {
                    handle.hand_off(object).await;
                }
            }
            for (i, value) in indices.into_iter().zip(created) {
                values[i] = Some(value);
            }
            store_outcome(&self.name, keys[0], fail_open, stored)?;
        }
        self.assemble(&cfg, &inputs, &distinct, values)
    }
}

/// The background rule's detach: runs the creator as a spawned task that stores the value,
/// hands it to this process's waiters and releases the lock.
fn spawned<T, W, Fut>(
    cfg: Arc<Configured>,
    clock: Arc<dyn Clock>,
    name: String,
    key: String,
) -> impl FnOnce(W, Option<AsyncLockHandle>)
where
    T: Cacheable,
    W: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
{
    move |creator, handle| {
        tokio::spawn(async move {
            let Ok(value) = creator().await else {
                return;
            };
            let stored = store_async(&cfg, clock.now(), &key, &value, true, handle).await;
            // Nobody is left to tell: a failed store is a warning.
            let _ = store_outcome(&name, &key, true, stored);
        });
    }
}
