//! [`CacheRegion`]: the front end to one backend, and the dogpile lock algorithm.

use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Future};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::backend::{create_backend, wrap, CacheBackend};
use crate::clock::{Clock, SystemClock};
use crate::config::{BackendChoice, RegionConfig};
use crate::driver::{self, block_on, Io, MultiKeys};
use crate::engine::{store_outcome, Freshness, Lookup, Machine, Rules, Signals, Step};
use crate::error::{Error, Result};
use crate::key::{default_function_key, FunctionKey, FunctionKeyGenerator, KeyMangler};
use crate::lock::{
    acquire_until, CacheMutex, Handed, KeyGuard, KeyLocks, LocalWait, LockHandle, Waiter,
};
use crate::runner::AsyncCreationRunner;
use crate::stats::{RegionStats, StatsRecorder};
use crate::value::{encode, Cacheable, CachedValue, Entry};
use crate::warnings::{warn_limited, RegionWarnings, WarningKind};

/// How long a value stays fresh, per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiration {
    /// Never expires (dogpile's `-1`), in `get` as well as in `get_or_create`.
    Never,
    /// Expires this long after its creation.
    After(Duration),
}

impl From<Duration> for Expiration {
    fn from(duration: Duration) -> Self {
        Expiration::After(duration)
    }
}

/// Per-call options of [`CacheRegion::get_or_create_with`] and friends.
///
/// ```
/// use dogpile_core::{CreateOptions, Expiration};
///
/// let keep_non_empty = |v: &Vec<u32>| !v.is_empty();
/// let options = CreateOptions::new()
///     .expiration_time(Expiration::Never)
///     .should_cache_fn(&keep_non_empty);
/// ```
pub struct CreateOptions<'a, T> {
    pub(crate) expiration: Option<Expiration>,
    pub(crate) should_cache: Option<&'a (dyn Fn(&T) -> bool + Sync + 'a)>,
    pub(crate) time_budget: Option<Duration>,
}

impl<'a, T> CreateOptions<'a, T> {
    /// The region's defaults.
    pub fn new() -> Self {
        CreateOptions {
            expiration: None,
            should_cache: None,
            time_budget: None,
        }
    }

    /// Overrides the region's expiration time for this call.
    pub fn expiration_time(mut self, expiration: impl Into<Expiration>) -> Self {
        self.expiration = Some(expiration.into());
        self
    }

    /// Stores a newly created value only when `should_cache` returns true for it; the value
    /// is returned either way.
    pub fn should_cache_fn(mut self, should_cache: &'a (dyn Fn(&T) -> bool + Sync + 'a)) -> Self {
        self.should_cache = Some(should_cache);
        self
    }

    /// Overrides the region's [`time_budget`](RegionBuilder::time_budget) for this call:
    /// how long it may wait in all, for the in-process lock and the distributed lock.
    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.time_budget = Some(budget);
        self
    }

    pub(crate) fn should_cache(&self, value: &T) -> bool {
        self.should_cache.is_none_or(|f| f(value))
    }
}

impl<T> Default for CreateOptions<'_, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for CreateOptions<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateOptions")
            .field("expiration", &self.expiration)
            .field("should_cache_fn", &self.should_cache.is_some())
            .field("time_budget", &self.time_budget)
            .finish()
    }
}

/// The configured part of a region: swapped in whole by `configure`.
pub(crate) struct Configured {
    pub(crate) backend: Arc<dyn CacheBackend>,
    /// The async path to `backend` (see `backend/bridge.rs`).
    #[cfg(feature = "tokio")]
    pub(crate) async_backend: Arc<dyn crate::AsyncCacheBackend>,
    pub(crate) backend_name: String,
    pub(crate) expiration: Option<Duration>,
    pub(crate) stores_objects: bool,
    pub(crate) stores_nothing: bool,
    /// Keys that begin with this are the backend's locks.
    pub(crate) lock_key_prefix: Option<String>,
    /// The backend never blocks and has no async twin: async callers call it directly.
    #[cfg(feature = "tokio")]
    pub(crate) nonblocking: bool,
}

/// The configuration in force during one operation, borrowed from the region without
/// touching a reference count (the hit path stays free of shared-counter traffic).
pub(crate) struct Current(arc_swap::Guard<Option<Arc<Configured>>>);

impl Current {
    pub(crate) fn to_arc(&self) -> Arc<Configured> {
        match &*self.0 {
            Some(cfg) => cfg.clone(),
            None => unreachable!("a Current is only made from a configured state"),
        }
    }
}

impl std::ops::Deref for Current {
    type Target = Configured;

    #[inline]
    fn deref(&self) -> &Configured {
        match &*self.0 {
            Some(cfg) => cfg,
            None => unreachable!("a Current is only made from a configured state"),
        }
    }
}

/// A front end to one cache backend, with a default expiration time and the dogpile lock.
///
/// Declare regions as lazy statics and configure them at run time:
///
/// ```
/// use std::time::Duration;
/// use dogpile_core::{CacheRegion, RegionConfig, CacheBackend, Result};
/// # use std::{collections::HashMap, sync::Mutex};
/// # #[derive(Default)] struct Dict(Mutex<HashMap<String, Vec<u8>>>);
/// # impl CacheBackend for Dict {
/// #     fn get(&self, k: &str) -> Result<Option<Vec<u8>>> { Ok(self.0.lock().unwrap().get(k).cloned()) }
/// #     fn set(&self, k: &str, v: Vec<u8>) -> Result<()> { self.0.lock().unwrap().insert(k.into(), v); Ok(()) }
/// #     fn delete(&self, k: &str) -> Result<()> { self.0.lock().unwrap().remove(k); Ok(()) }
/// # }
///
/// static REGION: std::sync::LazyLock<CacheRegion> = std::sync::LazyLock::new(CacheRegion::new);
///
/// REGION.configure(RegionConfig::with_backend(Dict::default())
///     .expiration_time(Duration::from_secs(60)))?;
/// let answer: u64 = REGION.get_or_create("answer", || 42)?;
/// assert_eq!(answer, 42);
/// # Ok::<(), dogpile_core::Error>(())
/// ```
pub struct CacheRegion {
    pub(crate) name: String,
    pub(crate) key_mangler: Option<KeyMangler>,
    pub(crate) function_key_generator: Option<FunctionKeyGenerator>,
    pub(crate) runner: Option<Arc<dyn AsyncCreationRunner>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) serve_stale: bool,
    pub(crate) fail_open: bool,
    pub(crate) time_budget: Duration,
    pub(crate) state: ArcSwapOption<Configured>,
    pub(crate) configure_lock: Mutex<()>,
    pub(crate) invalidated_at: AtomicU64,
    pub(crate) hard_invalidated: AtomicBool,
    pub(crate) locks: Arc<KeyLocks>,
    pub(crate) stats: Arc<StatsRecorder>,
    pub(crate) warnings: Arc<RegionWarnings>,
}

/// The default [`time_budget`](RegionBuilder::time_budget) of a region: 30 seconds.
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_secs(30);

/// A new, unconfigured region with default options (dogpile's `make_region()`).
pub fn make_region() -> CacheRegion {
    CacheRegion::new()
}

/// Construction-time options of a [`CacheRegion`].
pub struct RegionBuilder {
    region: CacheRegion,
}

impl RegionBuilder {
    /// The region's name, used in logs and error messages.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.region.name = name.into();
        self
    }

    /// Applied to every key before the backend sees it (for example
    /// [`sha1_mangle_key`](crate::sha1_mangle_key)).
    pub fn key_mangler<F>(mut self, mangler: F) -> Self
    where
        F: Fn(&str) -> String + Send + Sync + 'static,
    {
        self.region.key_mangler = Some(Arc::new(mangler));
        self
    }

    /// Builds the keys of functions memoized with `#[cache_on_arguments]` on this region.
    pub fn function_key_generator<F>(mut self, generator: F) -> Self
    where
        F: Fn(&FunctionKey<'_>) -> String + Send + Sync + 'static,
    {
        self.region.function_key_generator = Some(Arc::new(generator));
        self
    }

    /// Regenerates stale values in the background (see
    /// [`CacheRegion::get_or_create_in_background`]).
    pub fn async_creation_runner(mut self, runner: impl AsyncCreationRunner) -> Self {
        self.region.runner = Some(Arc::new(runner));
        self
    }

    /// The clock expiration and invalidation are judged by (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.region.clock = clock;
        self
    }

    /// With `false`, callers that find a stale value wait for the fresh one instead of
    /// getting the stale value while another caller regenerates. Default `true`.
    pub fn serve_stale(mut self, serve_stale: bool) -> Self {
        self.region.serve_stale = serve_stale;
        self
    }

    /// With `true`, backend errors are logged and treated as misses (reads) or ignored
    /// (writes), so `get_or_create` always returns the created value. Default `false`.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.region.fail_open = fail_open;
        self
    }

    /// How long one `get_or_create` call may wait in all: for this process's dogpile lock
    /// and the backend's distributed lock, however many callers are queued ahead of it.
    /// When it runs out the call fails with [`Error::LockTimeout`] (failing open, it
    /// computes the value without the lock). Default [`DEFAULT_TIME_BUDGET`] (30 s).
    ///
    /// Backend round trips are bounded by the backend's own `socket_timeout`; a server
    /// found down is marked down for `dead_retry`, so later calls fail at once.
    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.region.time_budget = budget;
        self
    }

    /// The region, not yet configured.
    pub fn build(mut self) -> CacheRegion {
        // The name (the `region` label of its metrics) and the clock are final only here.
        self.region.stats = Arc::new(StatsRecorder::new(&self.region.name));
        self.region.warnings = Arc::new(RegionWarnings::new(self.region.clock.clone()));
        self.region
    }
}

impl Default for CacheRegion {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheRegion {
    /// A new, unconfigured region with default options.
    pub fn new() -> Self {
        CacheRegion {
            name: "<unnamed>".to_owned(),
            key_mangler: None,
            function_key_generator: None,
            runner: None,
            clock: Arc::new(SystemClock),
            serve_stale: true,
            fail_open: false,
            time_budget: DEFAULT_TIME_BUDGET,
            state: ArcSwapOption::empty(),
            configure_lock: Mutex::new(()),
            invalidated_at: AtomicU64::new(0),
            hard_invalidated: AtomicBool::new(false),
            locks: Arc::default(),
            stats: Arc::new(StatsRecorder::new("<unnamed>")),
            warnings: Arc::default(),
        }
    }

    /// A builder for the construction-time options.
    pub fn builder() -> RegionBuilder {
        RegionBuilder {
            region: CacheRegion::new(),
        }
    }

    /// The region's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the region has done since it was made: hits, misses, stale values served,
    /// creations, errors and lock waits (see [`RegionStats`]). Counting is striped per
    /// thread, so hits on many threads never contend on one counter.
    ///
    /// ```
    /// use dogpile_core::{CacheRegion, RegionConfig, CacheBackend, Result};
    /// # use std::{collections::HashMap, sync::Mutex};
    /// # #[derive(Default)] struct Dict(Mutex<HashMap<String, Vec<u8>>>);
    /// # impl CacheBackend for Dict {
    /// #     fn get(&self, k: &str) -> Result<Option<Vec<u8>>> { Ok(self.0.lock().unwrap().get(k).cloned()) }
    /// #     fn set(&self, k: &str, v: Vec<u8>) -> Result<()> { self.0.lock().unwrap().insert(k.into(), v); Ok(()) }
    /// #     fn delete(&self, k: &str) -> Result<()> { self.0.lock().unwrap().remove(k); Ok(()) }
    /// # }
    /// let region = CacheRegion::builder().name("users").build();
    /// region.configure(RegionConfig::with_backend(Dict::default()))?;
    /// region.get_or_create("k", || 1u32)?; // a miss, and a creation
    /// region.get_or_create("k", || 2u32)?; // a hit
    /// let stats = region.stats();
    /// assert_eq!((stats.hits, stats.misses, stats.creations), (1, 1, 1));
    /// # Ok::<(), dogpile_core::Error>(())
    /// ```
    pub fn stats(&self) -> RegionStats {
        self.stats.snapshot()
    }

    /// Where the engine reports this region's decisions.
    #[inline]
    pub(crate) fn signals(&self) -> Signals<'_> {
        Signals {
            region: &self.name,
            stats: &self.stats,
            warnings: &self.warnings,
        }
    }

    /// Counts a failed backend call of a plain operation (get, set, delete).
    pub(crate) fn counted<R>(&self, result: Result<R>) -> Result<R> {
        if let Err(Error::Backend { .. }) = &result {
            self.stats.backend_error();
        }
        result
    }

    /// Counts a plain read's outcome: a hit, or a miss.
    pub(crate) fn count_lookup<V>(&self, value: &Option<V>) {
        match value {
            Some(_) => self.stats.hit(),
            None => self.stats.miss(),
        }
    }

    // ----- configuration -------------------------------------------------------------

    /// Configures the region's backend, expiration time and arguments.
    ///
    /// # Errors
    /// [`Error::RegionAlreadyConfigured`] unless the config says
    /// `replace_existing_backend(true)`; [`Error::PluginNotFound`] for an unknown backend
    /// name; [`Error::InvalidArgument`] for an unknown or malformed argument; whatever the
    /// backend reports when it cannot start.
    pub fn configure(&self, config: RegionConfig) -> Result<&Self> {
        let _serialized = self
            .configure_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(current) = &*self.state.load() {
            if !config.replace_existing_backend {
                return Err(Error::RegionAlreadyConfigured {
                    region: self.name.clone(),
                    backend: current.backend_name.clone(),
                });
            }
        }
        let (backend_name, backend) = match config.backend {
            BackendChoice::Named(name) => {
                let backend = create_backend(&name, &config.arguments)?;
                (name, backend)
            }
            BackendChoice::Built { name, backend } => {
                if let Some(argument) = config.arguments.keys().next() {
                    return Err(Error::invalid_argument(
                        &name,
                        argument,
                        "arguments apply to named backends only; this backend is already built",
                    ));
                }
                (name, backend)
            }
        };
        let backend = config
            .wrap
            .into_iter()
            .rev()
            .fold(backend, |backend, proxy| wrap(backend, proxy));
        tracing::debug!(region = %self.name, backend = %backend_name, "region configured");
        let capabilities = backend.capabilities();
        self.state.store(Some(Arc::new(Configured {
            stores_objects: capabilities.stores_objects,
            stores_nothing: capabilities.stores_nothing,
            lock_key_prefix: capabilities.lock_key_prefix,
            #[cfg(feature = "tokio")]
            nonblocking: capabilities.nonblocking && backend.async_twin().is_none(),
            #[cfg(feature = "tokio")]
            async_backend: crate::backend::async_path(&backend),
            backend,
            backend_name,
            expiration: config.expiration_time,
        })));
        Ok(self)
    }

    /// Configures the region with an already built backend.
    pub fn configure_backend(
        &self,
        backend: impl CacheBackend,
        expiration_time: Option<Duration>,
    ) -> Result<&Self> {
        let mut config = RegionConfig::with_backend(backend);
        config.expiration_time = expiration_time;
        self.configure(config)
    }

    /// Configures the region from string pairs, as dogpile's `configure_from_config`:
    /// see [`RegionConfig::from_config`].
    pub fn configure_from_config<I, K, V>(&self, map: I, prefix: &str) -> Result<&Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        self.configure(RegionConfig::from_config(map, prefix)?)
    }

    /// True once `configure` has succeeded.
    pub fn is_configured(&self) -> bool {
        self.state.load().is_some()
    }

    /// The configured backend's name.
    pub fn backend_name(&self) -> Option<String> {
        self.state.load().as_ref().map(|c| c.backend_name.clone())
    }

    /// The configured expiration time (`None`: never expires, or not configured).
    pub fn expiration_time(&self) -> Option<Duration> {
        self.state.load().as_ref().and_then(|c| c.expiration)
    }

    #[inline]
    pub(crate) fn configured(&self) -> Result<Current> {
        let state = self.state.load();
        if state.is_none() {
            return Err(Error::RegionNotConfigured {
                region: self.name.clone(),
            });
        }
        Ok(Current(state))
    }

    // ----- keys ----------------------------------------------------------------------

    #[inline]
    pub(crate) fn mangle<'k>(&self, key: &'k str) -> std::borrow::Cow<'k, str> {
        match &self.key_mangler {
            Some(mangler) => mangler(key).into(),
            None => key.into(),
        }
    }

    /// The key the backend sees for `key`: mangled by the region's key mangler, and refused
    /// when it would be one of the backend's distributed locks.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a key that begins with the backend's lock prefix.
    #[inline]
    pub(crate) fn backend_key<'k>(
        &self,
        cfg: &Configured,
        key: &'k str,
    ) -> Result<std::borrow::Cow<'k, str>> {
        let mangled = self.mangle(key);
        match &cfg.lock_key_prefix {
            Some(prefix) if mangled.starts_with(prefix.as_str()) => Err(Error::invalid_argument(
                format!("region `{}`", self.name),
                "key",
                format!(
                    "the key `{mangled}` begins with `{prefix}`, the prefix of backend \
                     `{}`'s distributed locks: such a key would be another key's lock; \
                     choose another key (or another lock_prefix)",
                    cfg.backend_name
                ),
            )),
            _ => Ok(mangled),
        }
    }

    /// The key of a memoized function call, built by the region's function key generator
    /// (by default [`default_function_key`]).
    pub fn function_key(&self, key: &FunctionKey<'_>) -> String {
        match &self.function_key_generator {
            Some(generator) => generator(key),
            None => default_function_key(key),
        }
    }

    /// True when function keys are built by [`default_function_key`] (no
    /// `function_key_generator` was given), which lets memoized functions build them in
    /// one pass.
    pub(crate) fn uses_default_function_key(&self) -> bool {
        self.function_key_generator.is_none()
    }

    /// True when some caller in this process holds the dogpile lock on `key`.
    pub fn key_is_locked(&self, key: &str) -> bool {
        self.locks.is_locked(&self.mangle(key))
    }

    // ----- reading and judging values ------------------------------------------------

    pub(crate) fn decode<T: Cacheable>(&self, key: &str, entry: Entry) -> Option<CachedValue<T>> {
        let problem = match entry {
            Entry::Object(object) => match object.downcast_ref::<CachedValue<T>>() {
                Some(value) => return Some(value.clone()),
                None => format!("stored value is not a {}", std::any::type_name::<T>()),
            },
            Entry::Bytes(bytes) => match CachedValue::from_bytes(&bytes) {
                Ok(value) => return Some(value),
                Err(problem) => problem,
            },
        };
        warn_limited!(self.warnings, WarningKind::Undecodable, region = %self.name, key, %problem,
            "cached value cannot be decoded; treating it as a miss");
        None
    }

    pub(crate) fn read<T: Cacheable>(
        &self,
        cfg: &Configured,
        key: &str,
    ) -> Result<Option<CachedValue<T>>> {
        if !cfg.stores_objects {
            return Ok(cfg
                .backend
                .get_entry(key)?
                .and_then(|e| self.decode(key, e)));
        }
        // A typed object is cloned from the store's own entry, under its guard: no
        // reference count of the shared entry is touched on a hit.
        let mut value = None;
        cfg.backend.get_with(key, &mut |entry| {
            value = match entry {
                Some(Entry::Object(object)) => match object.downcast_ref::<CachedValue<T>>() {
                    Some(found) => Some(found.clone()),
                    None => self.decode(key, Entry::Object(Arc::clone(object))),
                },
                Some(other) => self.decode(key, other.clone()),
                None => None,
            }
        })?;
        Ok(value)
    }

    /// Reads many keys in one backend call.
    ///
    /// # Errors
    /// The backend's, and [`Error::Backend`] when it answers with a different number of
    /// values than it was asked keys (the lists are never paired up wrongly).
    pub(crate) fn read_multi<T: Cacheable>(
        &self,
        cfg: &Configured,
        keys: &[&str],
    ) -> Result<Vec<Option<CachedValue<T>>>> {
        let entries = cfg.backend.get_entries(keys)?;
        self.decode_multi(cfg, keys, entries)
    }

    /// Decodes what a `get_multi` answered.
    ///
    /// # Errors
    /// [`Error::Backend`] when the backend answered a different number of values than it
    /// was asked keys (the lists are never paired up wrongly).
    pub(crate) fn decode_multi<T: Cacheable>(
        &self,
        cfg: &Configured,
        keys: &[&str],
        entries: Vec<Option<Entry>>,
    ) -> Result<Vec<Option<CachedValue<T>>>> {
        if entries.len() != keys.len() {
            return Err(Error::backend(
                &cfg.backend_name,
                format!(
                    "get_multi answered {} values for {} keys",
                    entries.len(),
                    keys.len()
                ),
            ));
        }
        Ok(keys
            .iter()
            .zip(entries)
            .map(|(key, entry)| entry.and_then(|e| self.decode(key, e)))
            .collect())
    }

    #[inline]
    pub(crate) fn invalidation(&self) -> Option<(f64, bool)> {
        let at = f64::from_bits(self.invalidated_at.load(Ordering::SeqCst));
        (at > 0.0).then(|| (at, self.hard_invalidated.load(Ordering::SeqCst)))
    }

    #[inline]
    pub(crate) fn resolve_expiration(
        &self,
        cfg: &Configured,
        expiration: Option<Expiration>,
    ) -> Option<Duration> {
        match expiration {
            None => cfg.expiration,
            Some(Expiration::Never) => None,
            Some(Expiration::After(d)) => Some(d),
        }
    }

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
        let cfg = self.configured()?;
        let key = self.backend_key(&cfg, key)?;
        let value = self.counted(self.read(&cfg, &key))?;
        let value = if ignore_expiration {
            value
        } else {
            match self.freshness(&cfg, expiration).judge(value) {
                Lookup::Fresh(value) => Some(value),
                Lookup::Stale(_) | Lookup::Missing => None,
            }
        };
        self.count_lookup(&value);
        Ok(value)
    }

    /// Stores `value` under `key`, created now.
    pub fn set<T: Cacheable>(&self, key: &str, value: &T) -> Result<()> {
        let cfg = self.configured()?;
        let key = self.backend_key(&cfg, key)?;
        let entry = entry_for(&cfg, &key, value, self.clock.now()).0?;
        self.counted(cfg.backend.set_entry(&key, entry))
    }

    /// Removes `key`. Removing a missing key is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        let cfg = self.configured()?;
        self.counted(cfg.backend.delete(&self.backend_key(&cfg, key)?))
    }

    /// The values of many keys, in order, read in one backend call.
    pub fn get_multi<T: Cacheable, K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<T>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.configured()?;
        let mangled = keys
            .iter()
            .map(|k| self.backend_key(&cfg, k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
        let freshness = self.freshness(&cfg, None);
        Ok(self
            .counted(self.read_multi(&cfg, &refs))?
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

    /// Stores many values in one backend call.
    pub fn set_multi<T: Cacheable, K: AsRef<str>>(&self, items: &[(K, T)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let cfg = self.configured()?;
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
        self.counted(cfg.backend.set_entries(entries))
    }

    /// Removes many keys in one backend call.
    pub fn delete_multi<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let cfg = self.configured()?;
        let mangled = keys
            .iter()
            .map(|k| self.backend_key(&cfg, k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
        self.counted(cfg.backend.delete_multi(&refs))
    }

    /// Invalidates every value created before now, without touching the backend.
    ///
    /// Hard: such values are absent. Soft: they are expired, so `get_or_create` callers
    /// keep getting the old value while one of them regenerates (`get` returns `None`).
    ///
    /// # Errors
    /// [`Error::SoftInvalidationWithoutExpiration`] for a soft invalidation of a region
    /// that has no expiration time.
    pub fn invalidate(&self, hard: bool) -> Result<()> {
        if !hard && self.expiration_time().is_none() {
            return Err(Error::SoftInvalidationWithoutExpiration {
                region: self.name.clone(),
            });
        }
        self.hard_invalidated.store(hard, Ordering::SeqCst);
        self.invalidated_at
            .store(self.clock.now().to_bits(), Ordering::SeqCst);
        Ok(())
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
    /// lock) ends by one deadline, the region's [`time_budget`](RegionBuilder::time_budget)
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
    pub fn try_get_or_create<T, E, F>(&self, key: &str, creator: F) -> Result<T, E>
    where
        T: Cacheable,
        E: From<Error>,
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
        E: From<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        let cfg = self.configured()?;
        let key = self.backend_key(&cfg, key)?;
        let mut creator = Some(move || ready(creator()));
        let rules = self.rules(&cfg, false);
        match self.drive(
            &cfg,
            &key,
            &options,
            &mut creator,
            rules,
            None::<NoDetach<_>>,
        ) {
            Ok(value) => Ok(value),
            Err(CreateError::Cache(error)) => Err(error.into()),
            Err(CreateError::Creator(error)) => Err(error),
        }
    }

    /// As [`try_get_or_create_with`](Self::try_get_or_create_with), but failing open: an
    /// unconfigured region or a failing backend is logged and `creator`'s value returned.
    /// This is what `#[cache_on_arguments]` functions call.
    pub fn get_or_create_fail_open<T, E, F>(
        &self,
        key: &str,
        options: CreateOptions<'_, T>,
        creator: F,
    ) -> Result<T, E>
    where
        T: Cacheable,
        F: FnOnce() -> Result<T, E>,
    {
        let mut creator = Some(move || ready(creator()));
        let outcome = match self.configured() {
            Ok(cfg) => {
                let rules = Rules {
                    fail_open: true,
                    ..self.rules(&cfg, false)
                };
                match self.backend_key(&cfg, key) {
                    Ok(key) => self.drive(
                        &cfg,
                        &key,
                        &options,
                        &mut creator,
                        rules,
                        None::<NoDetach<_>>,
                    ),
                    Err(error) => Err(CreateError::Cache(error)),
                }
            }
            Err(error) => Err(CreateError::Cache(error)),
        };
        match outcome {
            Ok(value) => Ok(value),
            Err(CreateError::Creator(error)) => Err(error),
            // Failing open, the only cache error is an unconfigured region (read, lock and
            // write failures are misses or warnings), and it comes before the creator runs.
            Err(CreateError::Cache(error)) => {
                warn_limited!(self.warnings, WarningKind::CacheUnavailable, region = %self.name, key,
                    %error, "cache unavailable; computing the value uncached");
                match creator.take() {
                    Some(creator) => block_on(creator()),
                    None => unreachable!("fail-open cache error after the creator ran"),
                }
            }
        }
    }

    /// As [`get_or_create`](Self::get_or_create), but when the region has an
    /// [`async_creation_runner`](RegionBuilder::async_creation_runner) and the value is
    /// stale, the caller that wins the lock also returns the stale value at once and the
    /// runner regenerates, stores and releases the lock. A missing value is always created
    /// by the caller.
    pub fn get_or_create_in_background<T, F>(&self, key: &str, creator: F) -> Result<T>
    where
        T: Cacheable,
        F: FnOnce() -> T + Send + 'static,
    {
        let cfg = self.configured()?;
        let key = self.backend_key(&cfg, key)?;
        let mut creator = Some(move || ready(Ok::<T, Error>(creator())));
        let rules = self.rules(&cfg, self.runner.is_some());
        let detach = self.runner.as_ref().map(|runner| {
            |creator, handle| self.regenerate_in_background(runner, &cfg, &key, creator, handle)
        });
        self.drive(
            &cfg,
            &key,
            &CreateOptions::new(),
            &mut creator,
            rules,
            detach,
        )
        .map_err(|e| match e {
            CreateError::Cache(e) | CreateError::Creator(e) => e,
        })
    }

    #[inline]
    pub(crate) fn rules(&self, cfg: &Configured, background: bool) -> Rules {
        Rules {
            serve_stale: self.serve_stale,
            fail_open: self.fail_open,
            background,
            lock: !cfg.stores_nothing,
        }
    }

    #[inline]
    pub(crate) fn freshness(
        &self,
        cfg: &Configured,
        expiration: Option<Expiration>,
    ) -> Freshness<'_> {
        Freshness {
            clock: &*self.clock,
            expiration: self.resolve_expiration(cfg, expiration),
            invalidated: self.invalidation(),
        }
    }

    /// The blocking driver: the engine's machine for `key` with its first read inline (a
    /// fresh hit builds no future), then the [shared driver](crate::driver) on blocking I/O.
    fn drive<T, E, F, Fut, D>(
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
        D: FnOnce(F, Option<LockHandle>),
    {
        let freshness = self.freshness(cfg, options.expiration);
        let mut machine = Machine::new(self.signals(), key, freshness, rules);
        let step = machine.read(self.read(cfg, key));
        if let Step::Return(value) = step {
            return Ok(value);
        }
        let io = BlockingIo { region: self, cfg };
        block_on(driver::drive(
            &io, key, options, creator, machine, step, detach,
        ))
    }

    /// Hands the creator and the held lock to the runner, which creates, stores and
    /// releases.
    fn regenerate_in_background<T, F, Fut>(
        &self,
        runner: &Arc<dyn AsyncCreationRunner>,
        cfg: &Current,
        key: &str,
        creator: F,
        handle: Option<LockHandle>,
    ) where
        T: Cacheable,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
    {
        let name = self.name.clone();
        let cfg = cfg.to_arc();
        let (clock, stats, warnings) = (
            self.clock.clone(),
            self.stats.clone(),
            self.warnings.clone(),
        );
        let key = key.to_owned();
        runner.run(Box::new(move || {
            let started = std::time::Instant::now();
            let Ok(value) = block_on(creator()) else {
                return;
            };
            stats.creation(started.elapsed());
            let (entry, object) = entry_for(&cfg, &key, &value, clock.now());
            let stored = entry.and_then(|entry| cfg.backend.set_entry(&key, entry));
            if let Some(handle) = handle {
                handle.hand_off(object);
            }
            let signals = Signals {
                region: &name,
                stats: &stats,
                warnings: &warnings,
            };
            // Nobody is left to tell: a failed store is a warning.
            let _ = store_outcome(&signals, &key, true, stored);
        }));
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
        self.get_or_create_multi_inner(keys, &options, creator, self.fail_open)
    }

    /// The blocking multi driver: one engine machine per distinct key, their reads batched
    /// into one `get_multi` (and their stores into one `set_multi`), their locks taken in
    /// key order.
    pub(crate) fn get_or_create_multi_inner<T, K, F>(
        &self,
        keys: &[K],
        options: &CreateOptions<'_, T>,
        creator: F,
        fail_open: bool,
    ) -> Result<Vec<T>>
    where
        T: Cacheable,
        K: AsRef<str>,
        F: FnOnce(&[&str]) -> Vec<T>,
    {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.configured()?;
        let keys = self.distinct_keys(&cfg, keys)?;
        let rules = Rules {
            fail_open,
            ..self.rules(&cfg, false)
        };
        let creator = |keys: Vec<String>| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            ready(creator(&keys))
        };
        let io = BlockingIo {
            region: self,
            cfg: &cfg,
        };
        block_on(driver::drive_multi(&io, keys, options, creator, rules))
    }

    /// The mangled keys of a multi call in the caller's order, and its distinct keys
    /// (mangled, as given) sorted by mangled key: the one order in which locks are taken,
    /// so that two multi calls never wait on each other in a cycle.
    #[allow(clippy::type_complexity)]
    pub(crate) fn distinct_keys<K: AsRef<str>>(
        &self,
        cfg: &Configured,
        keys: &[K],
    ) -> Result<MultiKeys> {
        let inputs: Vec<String> = keys
            .iter()
            .map(|k| Ok(self.backend_key(cfg, k.as_ref())?.into_owned()))
            .collect::<Result<_>>()?;
        let mut unique: Vec<(String, String)> = inputs
            .iter()
            .zip(keys)
            .map(|(mangled, k)| (mangled.clone(), k.as_ref().to_owned()))
            .collect();
        unique.sort();
        unique.dedup_by(|a, b| a.0 == b.0);
        Ok(MultiKeys { inputs, unique })
    }

    /// The values a multi call's creator returned, checked against how many it was asked.
    pub(crate) fn check_created<T>(&self, created: Vec<T>, asked: usize) -> Result<Vec<T>> {
        if created.len() == asked {
            return Ok(created);
        }
        Err(Error::invalid_argument(
            format!("region `{}`", self.name),
            "creator",
            format!(
                "get_or_create_multi's creator returned {} values for {asked} keys",
                created.len()
            ),
        ))
    }

    /// What a multi call stores for its created values (those `should_cache` keeps), and
    /// what it hands to the callers waiting on each key (`None`: nothing, not cached).
    #[allow(clippy::type_complexity)]
    pub(crate) fn encode_created<'k, T: Cacheable>(
        &self,
        cfg: &Configured,
        keys: &[&'k str],
        created: &[T],
        options: &CreateOptions<'_, T>,
        fail_open: bool,
    ) -> Result<(Vec<(&'k str, Entry)>, Vec<Option<Handed>>)> {
        let now = self.clock.now();
        let mut entries = Vec::with_capacity(keys.len());
        let mut objects = Vec::with_capacity(keys.len());
        for (&key, value) in keys.iter().zip(created) {
            if !options.should_cache(value) {
                objects.push(None);
                continue;
            }
            let (entry, object) = entry_for(cfg, key, value, now);
            match entry {
                Ok(entry) => entries.push((key, entry)),
                Err(error) => store_outcome(&self.signals(), key, fail_open, Err(error))?,
            }
            objects.push(Some(object));
        }
        Ok((entries, objects))
    }

    /// The values in the caller's order (and repeats) from the distinct keys' values.
    pub(crate) fn assemble<T: Clone>(
        &self,
        cfg: &Configured,
        inputs: &[String],
        distinct: &[&str],
        values: Vec<Option<T>>,
    ) -> Result<Vec<T>> {
        let index: HashMap<&str, usize> = distinct
            .iter()
            .enumerate()
            .map(|(i, key)| (*key, i))
            .collect();
        inputs
            .iter()
            .map(|key| {
                index
                    .get(key.as_str())
                    .and_then(|&i| values[i].clone())
                    .ok_or_else(|| {
                        Error::backend(
                            &cfg.backend_name,
                            format!("no value produced for key `{key}`"),
                        )
                    })
            })
            .collect()
    }
}

/// The entry `cfg`'s backend stores for `payload` (the typed object itself for object
/// stores, dogpile's byte format for every other), and the object handed to waiters.
pub(crate) fn entry_for<T: Cacheable>(
    cfg: &Configured,
    key: &str,
    payload: &T,
    ct: f64,
) -> (Result<Entry>, Handed) {
    let object: Arc<CachedValue<T>> = Arc::new(CachedValue::new(payload.clone(), ct));
    let entry = if cfg.stores_objects {
        Ok(Entry::Object(object.clone()))
    } else {
        encode(payload, &object.metadata, key).map(Entry::Bytes)
    };
    (entry, object)
}

/// The blocking driver's I/O: the backend's sync calls, and waits that block the thread.
struct BlockingIo<'r> {
    region: &'r CacheRegion,
    cfg: &'r Configured,
}

impl Io for BlockingIo<'_> {
    type Handle = LockHandle;
    type Mutex = Box<dyn CacheMutex>;

    fn region(&self) -> &CacheRegion {
        self.region
    }

    fn cfg(&self) -> &Configured {
        self.cfg
    }

    async fn read<T: Cacheable>(&self, key: &str) -> Result<Option<CachedValue<T>>> {
        self.region.read(self.cfg, key)
    }

    async fn read_multi<T: Cacheable>(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue<T>>>> {
        self.region.read_multi(self.cfg, keys)
    }

    async fn wait_local(&self, waiter: Waiter, deadline: Instant) -> LocalWait {
        waiter.wait_until(deadline)
    }

    fn mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        self.cfg.backend.get_mutex(key)
    }

    async fn try_acquire(&self, mutex: &Box<dyn CacheMutex>) -> Result<bool> {
        mutex.try_acquire()
    }

    async fn acquire_until(&self, mutex: &Box<dyn CacheMutex>, deadline: Instant) -> Result<bool> {
        acquire_until(&**mutex, deadline)
    }

    fn wait_limit(mutex: &Box<dyn CacheMutex>) -> Option<Duration> {
        mutex.wait_limit()
    }

    fn handle(key: &str, local: KeyGuard, distributed: Option<Box<dyn CacheMutex>>) -> LockHandle {
        LockHandle::new(key, Some(local), distributed)
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.cfg.backend.set_entry(key, entry)
    }

    async fn set_multi(&self, entries: Vec<(&str, Entry)>) -> Result<()> {
        self.cfg.backend.set_entries(entries)
    }

    async fn hand_off(handle: LockHandle, object: Option<Handed>) {
        match object {
            Some(object) => handle.hand_off(object),
            None => drop(handle),
        }
    }
}

/// No background rule: the caller always creates.
pub(crate) type NoDetach<F> = fn(F, Option<LockHandle>);

pub(crate) enum CreateError<E> {
    Cache(Error),
    Creator(E),
}

impl fmt::Debug for CacheRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load();
        f.debug_struct("CacheRegion")
            .field("name", &self.name)
            .field("backend", &state.as_ref().map(|c| &c.backend_name))
            .field(
                "expiration_time",
                &state.as_ref().and_then(|c| c.expiration),
            )
            .field("serve_stale", &self.serve_stale)
            .field("fail_open", &self.fail_open)
            .field("time_budget", &self.time_budget)
            .finish()
    }
}
