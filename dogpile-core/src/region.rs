//! [`CacheRegion`]: the front end to one backend, and the dogpile lock algorithm.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::backend::Backend;
use crate::clock::{Clock, SystemClock};
use crate::config::{BackendChoice, RegionConfig};
use crate::error::{Error, Result};
use crate::key::{default_function_key, FunctionKey, FunctionKeyGenerator, KeyMangler};
use crate::lock::{KeyLocks, LockHandle};
use crate::proxy::wrap;
use crate::registry::create_backend;
use crate::runner::AsyncCreationRunner;
use crate::value::{encode, Cacheable, CachedValue, Entry, Metadata};

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
    expiration: Option<Expiration>,
    should_cache: Option<&'a (dyn Fn(&T) -> bool + 'a)>,
}

impl<'a, T> CreateOptions<'a, T> {
    /// The region's defaults.
    pub fn new() -> Self {
        CreateOptions {
            expiration: None,
            should_cache: None,
        }
    }

    /// Overrides the region's expiration time for this call.
    pub fn expiration_time(mut self, expiration: impl Into<Expiration>) -> Self {
        self.expiration = Some(expiration.into());
        self
    }

    /// Stores a newly created value only when `should_cache` returns true for it; the value
    /// is returned either way.
    pub fn should_cache_fn(mut self, should_cache: &'a (dyn Fn(&T) -> bool + 'a)) -> Self {
        self.should_cache = Some(should_cache);
        self
    }

    fn should_cache(&self, value: &T) -> bool {
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
            .finish()
    }
}

/// The configured part of a region: swapped in whole by `configure`.
struct Configured {
    backend: Arc<dyn Backend>,
    backend_name: String,
    expiration: Option<Duration>,
    stores_objects: bool,
}

/// The configuration in force during one operation, borrowed from the region without
/// touching a reference count (the hit path stays free of shared-counter traffic).
struct Current(arc_swap::Guard<Option<Arc<Configured>>>);

impl Current {
    fn into_arc(self) -> Arc<Configured> {
        match arc_swap::Guard::into_inner(self.0) {
            Some(cfg) => cfg,
            None => unreachable!("a Current is only made from a configured state"),
        }
    }
}

impl std::ops::Deref for Current {
    type Target = Configured;

    fn deref(&self) -> &Configured {
        match &*self.0 {
            Some(cfg) => cfg,
            None => unreachable!("a Current is only made from a configured state"),
        }
    }
}

/// What a read found, judged against expiration and invalidation.
enum Lookup<T> {
    Fresh(CachedValue<T>),
    Stale(CachedValue<T>),
    Missing,
}

/// Where `get_or_create` stands once the lock question is settled.
enum Decision<T> {
    /// A value to return, no creation needed.
    Done(T),
    /// This caller holds the lock and must create; `stale` is what it may serve meanwhile.
    Create {
        handle: Option<LockHandle>,
        stale: Option<T>,
    },
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
    name: String,
    key_mangler: Option<KeyMangler>,
    function_key_generator: Option<FunctionKeyGenerator>,
    runner: Option<Arc<dyn AsyncCreationRunner>>,
    clock: Arc<dyn Clock>,
    serve_stale: bool,
    fail_open: bool,
    state: ArcSwapOption<Configured>,
    configure_lock: Mutex<()>,
    invalidated_at: AtomicU64,
    hard_invalidated: AtomicBool,
    locks: Arc<KeyLocks>,
}

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

    /// The region, not yet configured.
    pub fn build(self) -> CacheRegion {
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
            state: ArcSwapOption::empty(),
            configure_lock: Mutex::new(()),
            invalidated_at: AtomicU64::new(0),
            hard_invalidated: AtomicBool::new(false),
            locks: Arc::default(),
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
        self.state.store(Some(Arc::new(Configured {
            stores_objects: backend.stores_objects(),
            backend,
            backend_name,
            expiration: config.expiration_time,
        })));
        Ok(self)
    }

    /// Configures the region with an already built backend.
    pub fn configure_backend(
        &self,
        backend: impl Backend,
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

    fn configured(&self) -> Result<Current> {
        let state = self.state.load();
        if state.is_none() {
            return Err(Error::RegionNotConfigured {
                region: self.name.clone(),
            });
        }
        Ok(Current(state))
    }

    // ----- keys ----------------------------------------------------------------------

    fn mangle<'k>(&self, key: &'k str) -> std::borrow::Cow<'k, str> {
        match &self.key_mangler {
            Some(mangler) => mangler(key).into(),
            None => key.into(),
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

    fn decode<T: Cacheable>(&self, key: &str, entry: Entry) -> Option<CachedValue<T>> {
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
        tracing::warn!(region = %self.name, key, %problem, "cached value cannot be decoded; treating it as a miss");
        None
    }

    fn read<T: Cacheable>(&self, cfg: &Configured, key: &str) -> Result<Option<CachedValue<T>>> {
        Ok(cfg.backend.get(key)?.and_then(|e| self.decode(key, e)))
    }

    fn invalidation(&self) -> Option<(f64, bool)> {
        let at = f64::from_bits(self.invalidated_at.load(Ordering::SeqCst));
        (at > 0.0).then(|| (at, self.hard_invalidated.load(Ordering::SeqCst)))
    }

    fn judge<T>(&self, value: Option<CachedValue<T>>, expiration: Option<Duration>) -> Lookup<T> {
        let Some(value) = value else {
            return Lookup::Missing;
        };
        let ct = value.metadata.ct;
        if let Some((at, hard)) = self.invalidation() {
            if ct < at {
                return if hard {
                    Lookup::Missing
                } else {
                    Lookup::Stale(value)
                };
            }
        }
        match expiration {
            Some(exp) if self.clock.now() - ct > exp.as_secs_f64() => Lookup::Stale(value),
            _ => Lookup::Fresh(value),
        }
    }

    fn resolve_expiration(
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
        let key = self.mangle(key);
        let value = self.read(&cfg, &key)?;
        if ignore_expiration {
            return Ok(value);
        }
        let expiration = self.resolve_expiration(&cfg, expiration);
        Ok(match self.judge(value, expiration) {
            Lookup::Fresh(value) => Some(value),
            Lookup::Stale(_) | Lookup::Missing => None,
        })
    }

    /// Stores `value` under `key`, created now.
    pub fn set<T: Cacheable>(&self, key: &str, value: &T) -> Result<()> {
        let cfg = self.configured()?;
        let key = self.mangle(key);
        let entry = encode_entry(&cfg, &key, value, self.clock.now())?;
        cfg.backend.set(&key, entry)
    }

    /// Removes `key`. Removing a missing key is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        let cfg = self.configured()?;
        cfg.backend.delete(&self.mangle(key))
    }

    /// The values of many keys, in order, read in one backend call.
    pub fn get_multi<T: Cacheable, K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<T>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.configured()?;
        let mangled: Vec<_> = keys.iter().map(|k| self.mangle(k.as_ref())).collect();
        let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
        let entries = cfg.backend.get_multi(&refs)?;
        Ok(refs
            .iter()
            .zip(entries)
            .map(|(key, entry)| {
                let value = entry.and_then(|e| self.decode(key, e));
                match self.judge(value, cfg.expiration) {
                    Lookup::Fresh(value) => Some(value.payload),
                    _ => None,
                }
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
        let mangled: Vec<_> = items.iter().map(|(k, _)| self.mangle(k.as_ref())).collect();
        let entries = mangled
            .iter()
            .zip(items)
            .map(|(key, (_, value))| Ok((&**key, encode_entry(&cfg, key, value, now)?)))
            .collect::<Result<Vec<_>>>()?;
        cfg.backend.set_multi(entries)
    }

    /// Removes many keys in one backend call.
    pub fn delete_multi<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let cfg = self.configured()?;
        let mangled: Vec<_> = keys.iter().map(|k| self.mangle(k.as_ref())).collect();
        let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
        cfg.backend.delete_multi(&refs)
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
    /// - No value: one caller runs `creator`; the others wait, then get its value.
    ///
    /// `creator` runs once per key per expiry, however many threads race. If it panics,
    /// the lock is released and a waiting caller takes over. A creator may read other keys
    /// of the same region; it must not call `get_or_create` for its own key.
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
        match self.create_inner(key, &options, creator, self.fail_open) {
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
        let mut creator = Some(creator);
        let outcome = self.create_inner(
            key,
            &options,
            || {
                creator
                    .take()
                    .map_or_else(|| unreachable!("the creator runs once"), |f| f())
            },
            true,
        );
        match outcome {
            Ok(value) => Ok(value),
            Err(CreateError::Creator(error)) => Err(error),
            Err(CreateError::Cache(error)) => {
                tracing::warn!(region = %self.name, key, %error, "cache unavailable; computing the value uncached");
                match creator.take() {
                    Some(creator) => creator(),
                    // Failing open, a cache error is only ever returned before the creator
                    // runs (every later error is logged and ignored).
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
        let options = CreateOptions::new();
        let cfg = self.configured()?;
        let mangled = self.mangle(key).into_owned();
        let decision = self.decide::<T>(&cfg, &mangled, &options, false)?;
        let (handle, stale) = match decision {
            Decision::Done(value) => return Ok(value),
            Decision::Create { handle, stale } => (handle, stale),
        };
        match (stale, &self.runner) {
            (Some(stale), Some(runner)) => {
                let region = RegionHandle {
                    name: self.name.clone(),
                    cfg: cfg.into_arc(),
                    clock: self.clock.clone(),
                };
                runner.run(Box::new(move || {
                    let _handle = handle;
                    let value = creator();
                    let now = region.clock.now();
                    let stored = encode_entry(&region.cfg, &mangled, &value, now)
                        .and_then(|entry| region.cfg.backend.set(&mangled, entry));
                    if let Err(error) = stored {
                        tracing::warn!(region = %region.name, key = %mangled, %error, "background regeneration could not store its value");
                    }
                }));
                Ok(stale)
            }
            _ => self
                .create_and_store(
                    &cfg,
                    &mangled,
                    &options,
                    || Ok::<T, Error>(creator()),
                    handle,
                    false,
                )
                .map_err(|e| match e {
                    CreateError::Cache(e) | CreateError::Creator(e) => e,
                }),
        }
    }

    fn create_inner<T, E, F>(
        &self,
        key: &str,
        options: &CreateOptions<'_, T>,
        creator: F,
        fail_open: bool,
    ) -> Result<T, CreateError<E>>
    where
        T: Cacheable,
        F: FnOnce() -> Result<T, E>,
    {
        let cfg = self.configured().map_err(CreateError::Cache)?;
        let mangled = self.mangle(key);
        match self.decide::<T>(&cfg, &mangled, options, fail_open) {
            Ok(Decision::Done(value)) => Ok(value),
            Ok(Decision::Create { handle, .. }) => {
                self.create_and_store(&cfg, &mangled, options, creator, handle, fail_open)
            }
            Err(error) => Err(CreateError::Cache(error)),
        }
    }

    /// Steps 1 to 3 of the dogpile lock (SPEC 3.3): return a fresh value, serve a stale one
    /// while somebody else regenerates, or hand this caller the lock to create.
    fn decide<T: Cacheable>(
        &self,
        cfg: &Configured,
        key: &str,
        options: &CreateOptions<'_, T>,
        fail_open: bool,
    ) -> Result<Decision<T>> {
        let expiration = self.resolve_expiration(cfg, options.expiration);
        let read = |cx: &str| -> Result<Lookup<T>> {
            match self.read(cfg, key) {
                Ok(value) => Ok(self.judge(value, expiration)),
                Err(error) if fail_open => {
                    tracing::warn!(region = %self.name, key, %error, "cache read failed ({cx}); treating it as a miss");
                    Ok(Lookup::Missing)
                }
                Err(error) => Err(error),
            }
        };
        // `Ok(None)`: another caller holds the lock. `Ok(Some(None))`: failing open
        // without a lock.
        let lock = |wait: bool| -> Result<Option<Option<LockHandle>>> {
            match self.lock(cfg, key, wait) {
                Ok(handle) => Ok(handle.map(Some)),
                Err(error) if fail_open => {
                    tracing::warn!(region = %self.name, key, %error, "dogpile lock unavailable; creating without it");
                    Ok(Some(None))
                }
                Err(error) => Err(error),
            }
        };

        let stale = match read("first read")? {
            Lookup::Fresh(value) => return Ok(Decision::Done(value.payload)),
            Lookup::Stale(value) if self.serve_stale => {
                let Some(handle) = lock(false)? else {
                    // Another caller is regenerating: serve the stale value meanwhile.
                    return Ok(Decision::Done(value.payload));
                };
                return Ok(match read("re-read under the lock")? {
                    Lookup::Fresh(value) => Decision::Done(value.payload),
                    _ => Decision::Create {
                        handle,
                        stale: Some(value.payload),
                    },
                });
            }
            Lookup::Stale(value) => Some(value.payload),
            Lookup::Missing => None,
        };
        let handle = lock(true)?.flatten();
        Ok(match read("re-read after waiting")? {
            Lookup::Fresh(value) => Decision::Done(value.payload),
            _ => Decision::Create { handle, stale },
        })
    }

    /// Takes the dogpile lock on `key`; `Ok(None)` when `wait` is false and somebody else
    /// holds it. Waiting ends in [`Error::LockTimeout`] when a distributed lock gives up.
    fn lock(&self, cfg: &Configured, key: &str, wait: bool) -> Result<Option<LockHandle>> {
        let started = Instant::now();
        match self.locks.lock(key, cfg.backend.get_mutex(key), wait)? {
            None if wait => Err(Error::LockTimeout {
                key: key.to_owned(),
                waited: started.elapsed(),
            }),
            handle => Ok(handle),
        }
    }

    fn create_and_store<T, E, F>(
        &self,
        cfg: &Configured,
        key: &str,
        options: &CreateOptions<'_, T>,
        creator: F,
        handle: Option<LockHandle>,
        fail_open: bool,
    ) -> Result<T, CreateError<E>>
    where
        T: Cacheable,
        F: FnOnce() -> Result<T, E>,
    {
        let value = creator().map_err(CreateError::Creator)?;
        if options.should_cache(&value) {
            let stored = encode_entry(cfg, key, &value, self.clock.now())
                .and_then(|entry| cfg.backend.set(key, entry));
            match stored {
                Ok(()) => {}
                Err(error) if fail_open => {
                    tracing::warn!(region = %self.name, key, %error, "cache write failed; returning the value uncached");
                }
                Err(error) => return Err(CreateError::Cache(error)),
            }
        }
        drop(handle);
        Ok(value)
    }

    /// The values of many keys, in order; `creator` receives only the keys that need a
    /// value (absent or expired, and not being regenerated by another caller), and returns
    /// their values in the same order. One dogpile lock per key.
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
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.configured()?;
        let expiration = self.resolve_expiration(&cfg, options.expiration);

        // Unique keys, sorted by mangled key: locks are always taken in this order, so two
        // multi calls can never wait on each other in a cycle.
        let inputs: Vec<String> = keys
            .iter()
            .map(|k| self.mangle(k.as_ref()).into_owned())
            .collect();
        let mut unique: Vec<(&str, &str)> = inputs
            .iter()
            .zip(keys)
            .map(|(mangled, k)| (mangled.as_str(), k.as_ref()))
            .collect();
        unique.sort();
        unique.dedup_by(|a, b| a.0 == b.0);
        let mangled: Vec<&str> = unique.iter().map(|(m, _)| *m).collect();

        let read_all = |keys: &[&str]| -> Result<Vec<Lookup<T>>> {
            Ok(keys
                .iter()
                .zip(cfg.backend.get_multi(keys)?)
                .map(|(key, entry)| self.judge(entry.and_then(|e| self.decode(key, e)), expiration))
                .collect())
        };

        let mut found: HashMap<&str, T> = HashMap::new();
        let mut locked: Vec<(usize, LockHandle)> = Vec::new();
        for (i, lookup) in read_all(&mangled)?.into_iter().enumerate() {
            let key = mangled[i];
            match lookup {
                Lookup::Fresh(value) => {
                    found.insert(key, value.payload);
                }
                Lookup::Stale(value) if self.serve_stale => match self.lock(&cfg, key, false)? {
                    Some(handle) => locked.push((i, handle)),
                    None => {
                        found.insert(key, value.payload);
                    }
                },
                _ => {
                    if let Some(handle) = self.lock(&cfg, key, true)? {
                        locked.push((i, handle));
                    }
                }
            }
        }

        if !locked.is_empty() {
            // Re-read under the locks: another caller may have just made some values.
            let locked_keys: Vec<&str> = locked.iter().map(|(i, _)| mangled[*i]).collect();
            let mut to_create = Vec::new();
            for ((i, _), lookup) in locked.iter().zip(read_all(&locked_keys)?) {
                match lookup {
                    Lookup::Fresh(value) => {
                        found.insert(mangled[*i], value.payload);
                    }
                    _ => to_create.push(*i),
                }
            }
            if !to_create.is_empty() {
                let originals: Vec<&str> = to_create.iter().map(|&i| unique[i].1).collect();
                let created = creator(&originals);
                if created.len() != originals.len() {
                    return Err(Error::invalid_argument(
                        format!("region `{}`", self.name),
                        "creator",
                        format!(
                            "get_or_create_multi's creator returned {} values for {} keys",
                            created.len(),
                            originals.len()
                        ),
                    ));
                }
                let now = self.clock.now();
                let mut entries = Vec::new();
                for (&i, value) in to_create.iter().zip(&created) {
                    if options.should_cache(value) {
                        entries.push((mangled[i], encode_entry(&cfg, mangled[i], value, now)?));
                    }
                }
                if !entries.is_empty() {
                    cfg.backend.set_multi(entries)?;
                }
                for (&i, value) in to_create.iter().zip(created) {
                    found.insert(mangled[i], value);
                }
            }
        }
        drop(locked);

        inputs
            .iter()
            .map(|key| {
                found.get(key.as_str()).cloned().ok_or_else(|| {
                    Error::backend(
                        &cfg.backend_name,
                        format!("no value produced for key `{key}`"),
                    )
                })
            })
            .collect()
    }
}

/// What a background job needs of its region.
struct RegionHandle {
    name: String,
    cfg: Arc<Configured>,
    clock: Arc<dyn Clock>,
}

/// The entry `cfg`'s backend stores for `payload`: the typed object itself for object
/// stores, dogpile's byte format for every other.
fn encode_entry<T: Cacheable>(cfg: &Configured, key: &str, payload: &T, ct: f64) -> Result<Entry> {
    if cfg.stores_objects {
        let object: Arc<dyn Any + Send + Sync> = Arc::new(CachedValue::new(payload.clone(), ct));
        Ok(Entry::Object(object))
    } else {
        encode(payload, &Metadata::new(ct), key).map(Entry::Bytes)
    }
}

enum CreateError<E> {
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
            .finish()
    }
}
