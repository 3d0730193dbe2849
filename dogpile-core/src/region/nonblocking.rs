//! The async face of [`CacheRegion`]: each operation of `ops.rs` awaited on the caller's
//! runtime, on the backend's async path, waiting without blocking an executor thread.
//! Sync and async callers of one region share its per-key locks, its hand-offs and its
//! time budget.
//!
//! A future that holds the lock and is dropped (cancelled, timed out) releases the
//! in-process lock at once, without I/O, and a waiter takes over; a distributed lock it
//! held is released by a task spawned on the current runtime (or, with no runtime left,
//! expires after the backend's `lock_timeout`).

use std::future::Future;
use std::sync::Arc;

use crate::engine::driver::{CreateError, Told};
use crate::error::{Error, Result};
use crate::lock::handle::AsyncLockHandle;
use crate::region::io::AsyncIo;
use crate::region::ops::{self, Detached};
use crate::region::options::CreateOptions;
use crate::region::state::Configured;
use crate::region::CacheRegion;
use crate::value::Cacheable;

impl CacheRegion {
    // ----- get / set / delete --------------------------------------------------------

    /// As [`get`](Self::get), for async callers.
    pub async fn get_async<T: Cacheable>(&self, key: &str) -> Result<Option<T>> {
        let value = ops::get::<AsyncIo, T>(&self.inner, key, None, false).await?;
        Ok(value.map(|v| v.payload))
    }

    /// As [`get_multi`](Self::get_multi), for async callers: one backend call.
    pub async fn get_multi_async<T: Cacheable, K: AsRef<str>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<T>>> {
        ops::get_multi::<AsyncIo, T, K>(&self.inner, keys).await
    }

    /// As [`set`](Self::set), for async callers.
    pub async fn set_async<T: Cacheable>(&self, key: &str, value: &T) -> Result<()> {
        ops::set::<AsyncIo, T>(&self.inner, key, value).await
    }

    /// As [`set_multi`](Self::set_multi), for async callers: one backend call.
    pub async fn set_multi_async<T: Cacheable, K: AsRef<str>>(
        &self,
        items: &[(K, T)],
    ) -> Result<()> {
        ops::set_multi::<AsyncIo, T, K>(&self.inner, items).await
    }

    /// As [`delete`](Self::delete), for async callers.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        ops::delete::<AsyncIo>(&self.inner, key).await
    }

    /// As [`delete_multi`](Self::delete_multi), for async callers: one backend call.
    pub async fn delete_multi_async<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        ops::delete_multi::<AsyncIo, K>(&self.inner, keys).await
    }

    // ----- get_or_create -------------------------------------------------------------

    /// As [`get_or_create`](Self::get_or_create), for async callers: `creator` is an async
    /// closure, and waiting (for the lock, for another caller's value) never blocks an
    /// executor thread. Sync and async callers of one region share its per-key locks.
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, RegionConfig, Result};
    /// # use dogpile_core::backend::CacheBackend;
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
        // Each async form answers a fresh hit in its own body, before the operation's future
        // is made: a shared helper (a Flow, or an async fn) cost 6-10 ns more per hit
        // (async_hits bench, 2026-12-03).
        if let Some(value) = ops::fresh_hit(&self.inner, key, None) {
            return Ok(value);
        }
        let creator = move || async move { Ok::<T, Error>(creator().await) };
        ops::try_get_or_create::<AsyncIo, T, Error, _>(
            &self.inner,
            key,
            CreateOptions::new(),
            creator,
        )
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
        if let Some(value) = ops::fresh_hit(&self.inner, key, options.expiration) {
            return Ok(value);
        }
        let creator = move || async move { Ok::<T, Error>(creator().await) };
        ops::try_get_or_create::<AsyncIo, T, Error, _>(&self.inner, key, options, creator).await
    }

    /// As [`try_get_or_create`](Self::try_get_or_create), for async callers: an `Err` from
    /// the creator is returned and not cached.
    ///
    /// The callers waiting for a creator that fails get its failure, as with
    /// [`try_get_or_create`](Self::try_get_or_create) ("A creator that fails").
    pub async fn try_get_or_create_async<T, E, F, Fut>(&self, key: &str, creator: F) -> Result<T, E>
    where
        T: Cacheable,
        E: From<Error> + std::fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(value) = ops::fresh_hit(&self.inner, key, None) {
            return Ok(value);
        }
        ops::try_get_or_create::<AsyncIo, T, E, F>(&self.inner, key, CreateOptions::new(), creator)
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
        E: From<Error> + std::fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(value) = ops::fresh_hit(&self.inner, key, options.expiration) {
            return Ok(value);
        }
        ops::try_get_or_create::<AsyncIo, T, E, F>(&self.inner, key, options, creator).await
    }

    /// As [`get_or_create_async`](Self::get_or_create_async), but when the value is stale,
    /// the caller that wins the lock returns the stale value at once too, and the creator
    /// runs as a task spawned on the current tokio runtime, which stores the value and
    /// releases the lock. A missing value is always created by the caller. Outside a tokio
    /// runtime (a memory region under another executor) the caller regenerates first.
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
        let creator = move || async move { Ok::<T, Error>(creator().await) };
        self.try_get_or_create_in_background_async(key, creator)
            .await
    }

    /// As [`get_or_create_in_background_async`](Self::get_or_create_in_background_async),
    /// for a creator that may fail, as
    /// [`try_get_or_create_in_background`](Self::try_get_or_create_in_background).
    pub async fn try_get_or_create_in_background_async<T, E, F, Fut>(
        &self,
        key: &str,
        creator: F,
    ) -> Result<T, E>
    where
        T: Cacheable,
        E: From<Error> + std::fmt::Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let region = &self.inner;
        let creator = move || async move { creator().await.map_err(Told) };
        let detach =
            |cfg: &Arc<Configured>, key: &str, creator, handle: Option<AsyncLockHandle>| {
                let job = Detached::new(region, cfg.clone(), key);
                let job = job.regenerate::<AsyncIo, T, Told<E>, _>(creator, handle);
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn(job)),
                    // Another executor (a memory region): no task to hand it to, so the
                    // caller regenerates before it answers.
                    Err(_) => crate::engine::block_on::block_on(job),
                }
            };
        let options = CreateOptions::new();
        ops::get_or_create::<AsyncIo, T, Told<E>, _, _>(
            region,
            key,
            &options,
            &mut Some(creator),
            false,
            Some(detach),
        )
        .await
        .map_err(CreateError::into_caller)
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
        let options = CreateOptions::new();
        ops::get_or_create_multi::<AsyncIo, T, K, F, Fut>(
            &self.inner,
            keys,
            &options,
            creator,
            false,
        )
        .await
    }
}
