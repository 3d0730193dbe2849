//! The blocking face of [`CacheRegion`]: each operation of `ops.rs` run to completion on
//! the calling thread with `block_on` (its futures are complete when first polled).

use std::future::{ready, Ready};
use std::sync::Arc;

use crate::engine::block_on::block_on;
use crate::engine::driver::{CreateError, CreatorError, Told};
use crate::error::{Error, Result};
use crate::lock::handle::LockHandle;
use crate::region::io::BlockingIo;
use crate::region::ops::{self, Detached};
use crate::region::options::{CreateOptions, Expiration};
use crate::region::state::{Current, RegionState};
use crate::region::CacheRegion;
use crate::runner::AsyncCreationRunner;
use crate::value::{Cacheable, CachedValue};

impl CacheRegion {
    // ----- get / set / delete --------------------------------------------------------

    /// The value under `key`, or `None` when absent, expired or invalidated.
    ///
    /// A stored value that cannot be decoded as `T` is a miss (and a logged warning).
    pub fn get<T: Cacheable>(&self, key: &str) -> Result<Option<T>> {
        self.get_with(key, None, false)
    }

    /// As [`get`](Self::get), with the expiration time overridden for this call, or with
    /// expiration and invalidation ignored altogether.
    pub fn get_with<T: Cacheable>(
        &self,
        key: &str,
        expiration: Option<Expiration>,
        ignore_expiration: bool,
    ) -> Result<Option<T>> {
        Ok(self
            .get_value_metadata_with(key, expiration, ignore_expiration)?
            .map(|v| v.payload))
    }

    /// The value under `key` with its metadata, or `None` when absent, expired or
    /// invalidated.
    pub fn get_value_metadata<T: Cacheable>(&self, key: &str) -> Result<Option<CachedValue<T>>> {
        self.get_value_metadata_with(key, None, false)
    }

    /// As [`get_value_metadata`](Self::get_value_metadata), with
    /// [`get_with`](Self::get_with)'s overrides.
    pub fn get_value_metadata_with<T: Cacheable>(
        &self,
        key: &str,
        expiration: Option<Expiration>,
        ignore_expiration: bool,
    ) -> Result<Option<CachedValue<T>>> {
        block_on(ops::get::<BlockingIo, T>(
            &self.inner,
            key,
            expiration,
            ignore_expiration,
        ))
    }

    /// Stores `value` under `key`, created now.
    pub fn set<T: Cacheable>(&self, key: &str, value: &T) -> Result<()> {
        block_on(ops::set::<BlockingIo, T>(&self.inner, key, value))
    }

    /// Removes `key`. Removing a missing key is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        block_on(ops::delete::<BlockingIo>(&self.inner, key))
    }

    /// The values of many keys, in order, read in one backend call.
    pub fn get_multi<T: Cacheable, K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<T>>> {
        block_on(ops::get_multi::<BlockingIo, T, K>(&self.inner, keys))
    }

    /// Stores many values in one backend call.
    pub fn set_multi<T: Cacheable, K: AsRef<str>>(&self, items: &[(K, T)]) -> Result<()> {
        block_on(ops::set_multi::<BlockingIo, T, K>(&self.inner, items))
    }

    /// Removes many keys in one backend call.
    pub fn delete_multi<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        block_on(ops::delete_multi::<BlockingIo, K>(&self.inner, keys))
    }

    // ----- get_or_create -------------------------------------------------------------

    /// The value under `key`; when it is absent or expired, `creator` makes it under the
    /// dogpile lock.
    ///
    /// # Concurrent calls on the same key
    /// - Fresh value: returned, no lock taken.
    /// - Stale value: one caller takes the lock and runs `creator`; every other caller gets
    ///   the stale value at once (unless the region was built with `serve_stale(false)`).
    /// - No value: one caller runs `creator`; the others wait, then get its value: callers
    ///   of this process are handed it directly, without reading the backend again.
    ///
    /// `creator` runs once per key per expiry, however many threads race. If it panics,
    /// the lock is released and a waiting caller takes over. A creator may read other keys
    /// of the same region; it must not call `get_or_create` for its own key.
    ///
    /// # Time budget
    /// All of a call's waiting (for this process's lock, for the backend's distributed
    /// lock) ends by one deadline, the region's [`time_budget`](crate::RegionBuilder::time_budget)
    /// (30 s unless set), or [`CreateOptions::time_budget`]: a caller queued behind others
    /// never pays their waits in turn. When it runs out the call fails with
    /// [`Error::LockTimeout`]; failing open, it computes the value without the lock.
    pub fn get_or_create<T: Cacheable, F: FnOnce() -> T>(
        &self,
        key: &str,
        creator: F,
    ) -> Result<T> {
        self.get_or_create_with(key, CreateOptions::new(), creator)
    }

    /// As [`get_or_create`](Self::get_or_create), with per-call [`CreateOptions`].
    pub fn get_or_create_with<T: Cacheable, F: FnOnce() -> T>(
        &self,
        key: &str,
        options: CreateOptions<'_, T>,
        creator: F,
    ) -> Result<T> {
        self.try_get_or_create_with(key, options, || Ok::<T, Error>(creator()))
    }

    /// As [`get_or_create`](Self::get_or_create) with a fallible creator: its `Err` is
    /// returned and nothing is cached.
    ///
    /// # A creator that fails
    /// The caller that ran `creator` gets its `Err` as it was. The callers of this process
    /// that waited for that creation (no value to serve) get its failure at the same time,
    /// without calling the origin again: [`Error::CreatorFailed`], naming the region and the
    /// key and carrying the error's text (hence `E: Display`), converted with `From`. The
    /// next caller after the failure runs the creator again. A creator that panics hands
    /// nothing: a waiter takes the lock and runs its own creator.
    pub fn try_get_or_create<T, E, F>(&self, key: &str, creator: F) -> Result<T, E>
    where
        T: Cacheable,
        E: From<Error> + std::fmt::Display,
        F: FnOnce() -> Result<T, E>,
    {
        self.try_get_or_create_with(key, CreateOptions::new(), creator)
    }

    /// As [`try_get_or_create`](Self::try_get_or_create), with per-call options.
    pub fn try_get_or_create_with<T, E, F>(
        &self,
        key: &str,
        options: CreateOptions<'_, T>,
        creator: F,
    ) -> Result<T, E>
    where
        T: Cacheable,
        E: From<Error> + std::fmt::Display,
        F: FnOnce() -> Result<T, E>,
    {
        // A fresh hit answered here, before anything is built to carry it; the rest is
        // out of line, so that the hit's value is not copied through its frame.
        if let Some(value) = ops::fresh_hit(&self.inner, key, options.expiration) {
            return Ok(value);
        }
        self.try_get_or_create_whole(key, options, creator)
    }

    /// [`try_get_or_create_with`](Self::try_get_or_create_with) past the fresh hit.
    #[inline(never)]
    fn try_get_or_create_whole<T, E, F>(
        &self,
        key: &str,
        options: CreateOptions<'_, T>,
        creator: F,
    ) -> Result<T, E>
    where
        T: Cacheable,
        E: From<Error> + std::fmt::Display,
        F: FnOnce() -> Result<T, E>,
    {
        let creator = move || ready(creator());
        block_on(ops::try_get_or_create::<BlockingIo, T, E, _>(
            &self.inner,
            key,
            options,
            creator,
        ))
    }

    /// As [`get_or_create`](Self::get_or_create), but when the region has an
    /// [`async_creation_runner`](crate::RegionBuilder::async_creation_runner) and the value is
    /// stale, the caller that wins the lock also returns the stale value at once and the
    /// runner regenerates, stores and releases the lock. A missing value is always created
    /// by the caller.
    ///
    /// With [`soft_timeout`](crate::RegionConfig::soft_timeout), that caller waits up to
    /// that long for the runner's value before it answers with the stale one.
    pub fn get_or_create_in_background<T, F>(&self, key: &str, creator: F) -> Result<T>
    where
        T: Cacheable,
        F: FnOnce() -> T + Send + 'static,
    {
        self.try_get_or_create_in_background(key, move || Ok::<T, Error>(creator()))
    }

    /// As [`get_or_create_in_background`](Self::get_or_create_in_background), for a
    /// creator that may fail, as [`try_get_or_create`](Self::try_get_or_create): its `Err`
    /// is returned to a caller that ran it, and is not cached. A regeneration that fails on
    /// the runner hands its failure to the callers waiting for it
    /// ([`Error::CreatorFailed`]); a caller waiting under `soft_timeout` answers with the
    /// stale value.
    pub fn try_get_or_create_in_background<T, E, F>(&self, key: &str, creator: F) -> Result<T, E>
    where
        T: Cacheable,
        E: From<Error> + std::fmt::Display + Send + 'static,
        F: FnOnce() -> Result<T, E> + Send + 'static,
    {
        let region = &self.inner;
        let detach = region
            .runner
            .as_ref()
            .map(|runner| on_runner(region, runner));
        let creator = move || ready(creator().map_err(Told));
        let options = CreateOptions::new();
        block_on(ops::get_or_create::<BlockingIo, T, Told<E>, _, _>(
            region,
            key,
            &options,
            &mut Some(creator),
            false,
            detach,
        ))
        .map_err(CreateError::into_caller)
    }

    /// The values of many keys, in order; `creator` receives only the keys that need a
    /// value (absent or expired, and not being regenerated by another caller), and returns
    /// their values in the same order. One dogpile lock per key, taken in key order (so two
    /// multi calls never wait on each other in a cycle), within one time budget.
    ///
    /// # Errors
    /// Backend errors, and [`Error::InvalidArgument`] when `creator` returns a different
    /// number of values than it was given keys.
    pub fn get_or_create_multi<T, K, F>(&self, keys: &[K], creator: F) -> Result<Vec<T>>
    where
        T: Cacheable,
        K: AsRef<str>,
        F: FnOnce(&[&str]) -> Vec<T>,
    {
        self.get_or_create_multi_with(keys, CreateOptions::new(), creator)
    }

    /// As [`get_or_create_multi`](Self::get_or_create_multi), with per-call options.
    pub fn get_or_create_multi_with<T, K, F>(
        &self,
        keys: &[K],
        options: CreateOptions<'_, T>,
        creator: F,
    ) -> Result<Vec<T>>
    where
        T: Cacheable,
        K: AsRef<str>,
        F: FnOnce(&[&str]) -> Vec<T>,
    {
        let creator = |keys: Vec<String>| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            ready(creator(&keys))
        };
        block_on(ops::get_or_create_multi::<BlockingIo, T, K, _, _>(
            &self.inner,
            keys,
            &options,
            creator,
            false,
        ))
    }
}

/// The background rule's hand-over on the blocking face: `runner` creates, stores, hands
/// the value to the waiters and releases the lock.
fn on_runner<'r, T, X, C>(
    region: &'r RegionState,
    runner: &'r Arc<dyn AsyncCreationRunner>,
) -> impl FnOnce(&Current, &str, C, Option<LockHandle>) + 'r
where
    T: Cacheable,
    X: CreatorError + Send + 'static,
    C: FnOnce() -> Ready<Result<T, X>> + Send + 'static,
{
    move |cfg, key, creator, handle| {
        let job = Detached::new(region, cfg.to_arc(), key);
        runner.run(Box::new(move || {
            block_on(job.regenerate::<BlockingIo, T, X, _>(creator, handle));
        }));
    }
}
