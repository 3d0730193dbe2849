//! [`CacheRegion`]: the front end to one backend. Its construction and configuration are
//! here; its operations are written once in `ops.rs` and offered by two thin faces,
//! blocking (`blocking.rs`) and async (`nonblocking.rs`). The dogpile algorithm itself is
//! the engine's (`crate::engine`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{create_backend, wrap, CacheBackend};
use crate::clock::Clock;
use crate::config::{BackendChoice, RegionConfig};
use crate::error::{Error, Result};
use crate::key::FunctionKey;
use crate::runner::AsyncCreationRunner;
use crate::stats::{RegionStats, StatsRecorder};
use crate::warnings::RegionWarnings;

mod blocking;
pub(crate) mod failures;
pub(crate) mod invalidation;
pub(crate) mod io;
mod name;
#[cfg(feature = "tokio")]
mod nonblocking;
pub(crate) mod ops;
pub(crate) mod options;
pub(crate) mod state;
mod view;

pub use options::{CreateOptions, Expiration};
pub use state::DEFAULT_TIME_BUDGET;

use name::RegionName;
use state::{Configured, RegionState};

/// A front end to one cache backend, with a default expiration time and the dogpile lock.
///
/// Declare regions as lazy statics and configure them at run time:
///
/// ```
/// use std::time::Duration;
/// use dogpile_core::{CacheRegion, RegionConfig, Result};
/// use dogpile_core::backend::CacheBackend;
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
///
/// # Replacing a configuration, dropping a region
/// A fresh hit on a store that holds nothing but memory (the `memory` backends) reads the
/// configuration from the calling thread's own copy of its handle, so that a hit writes
/// no memory another thread reads. When the configuration is replaced, or the region
/// dropped, each thread lets go of its handle at its next read of any region (and a
/// thread that ends, at its end). Until then, a thread that never reads a region again
/// keeps the old store, and the memory it holds, alive; no read uses it.
pub struct CacheRegion {
    pub(crate) inner: RegionState,
}

impl Drop for CacheRegion {
    fn drop(&mut self) {
        // Threads that keep its configuration let go of it at their next read.
        if *self.inner.view_id.get_mut() != 0 {
            view::retire();
        }
    }
}

/// A new, unconfigured region with default options (dogpile's `make_region()`).
///
/// Its name (in logs, errors and the `region` label of its metrics) is taken from the
/// prefix of its flat configuration ([`configure_from_config`](CacheRegion::configure_from_config)
/// with `"cache.local."` names it `cache.local`), and is `<unnamed>` until then. Python's
/// `make_region(name="users")` is [`CacheRegion::named("users")`](CacheRegion::named);
/// [`CacheRegion::builder`] takes the other options of `make_region`.
pub fn make_region() -> CacheRegion {
    CacheRegion::new()
}

/// Construction-time options of a [`CacheRegion`].
pub struct RegionBuilder {
    region: CacheRegion,
}

impl RegionBuilder {
    /// The region's name, used in logs, error messages and the `region` label of its
    /// metrics (dogpile's `make_region(name=...)`). A region built without one takes the
    /// prefix of its flat configuration (see [`CacheRegion::configure_from_config`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.region.inner.name = RegionName::given(name.into());
        self
    }

    /// Applied to every key before the backend sees it (for example
    /// [`sha1_mangle_key`](crate::key::sha1_mangle_key)).
    pub fn key_mangler<F>(mut self, mangler: F) -> Self
    where
        F: Fn(&str) -> String + Send + Sync + 'static,
    {
        self.region.inner.key_mangler = Some(Arc::new(mangler));
        self
    }

    /// Builds the keys of functions memoized with `#[cache_on_arguments]` on this region.
    pub fn function_key_generator<F>(mut self, generator: F) -> Self
    where
        F: Fn(&FunctionKey<'_>) -> String + Send + Sync + 'static,
    {
        self.region.inner.function_key_generator = Some(Arc::new(generator));
        self
    }

    /// Regenerates stale values in the background (see
    /// [`CacheRegion::get_or_create_in_background`]).
    pub fn async_creation_runner(mut self, runner: impl AsyncCreationRunner) -> Self {
        self.region.inner.runner = Some(Arc::new(runner));
        self
    }

    /// The clock expiration and invalidation are judged by (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.region.inner.clock = clock;
        self
    }

    /// With `false`, callers that find a stale value wait for the fresh one instead of
    /// getting the stale value while another caller regenerates. Default `true`.
    pub fn serve_stale(mut self, serve_stale: bool) -> Self {
        self.region.inner.serve_stale = serve_stale;
        self
    }

    /// With `true`, backend errors are logged and treated as misses (reads) or ignored
    /// (writes), so `get_or_create` always returns the created value. Default `false`.
    ///
    /// Memoized functions (`#[cache_on_arguments]`) always fail open on backend errors. On
    /// a region that was never configured they compute uncached with a warning in release
    /// builds, and panic in debug builds (a forgotten `configure()` is a bug to see in
    /// tests), unless the region was built with `fail_open(true)`, which may stay
    /// unconfigured on purpose.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.region.inner.fail_open = fail_open;
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
        self.region.inner.time_budget = budget;
        self
    }

    /// The region, not yet configured.
    pub fn build(mut self) -> CacheRegion {
        // The name (the `region` label of its metrics) and the clock are final only here.
        self.region.inner.stats = Arc::new(StatsRecorder::new(&self.region.inner.name));
        self.region.inner.warnings = Arc::new(RegionWarnings::new(self.region.inner.clock.clone()));
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
            inner: RegionState::new(),
        }
    }

    /// A new, unconfigured region named `name` (dogpile's `make_region(name="users")`):
    /// its name appears in logs, error messages and the `region` label of its metrics, so
    /// that each region is its own series.
    ///
    /// ```
    /// use std::sync::LazyLock;
    /// use dogpile_core::CacheRegion;
    ///
    /// static USERS: LazyLock<CacheRegion> = LazyLock::new(|| CacheRegion::named("users"));
    /// assert_eq!(USERS.name(), "users");
    /// ```
    pub fn named(name: impl Into<String>) -> Self {
        CacheRegion::builder().name(name).build()
    }

    /// A builder for the construction-time options.
    pub fn builder() -> RegionBuilder {
        RegionBuilder {
            region: CacheRegion::new(),
        }
    }

    /// The region's name: the one it was built with ([`CacheRegion::named`],
    /// [`RegionBuilder::name`]), else the prefix of its flat configuration once
    /// [`configure_from_config`](Self::configure_from_config) has succeeded, else
    /// `<unnamed>`.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// What the region has done since it was made: hits, misses, stale values served,
    /// creations, errors and lock waits (see [`RegionStats`]). Counting is striped per
    /// thread, so hits on many threads never contend on one counter.
    ///
    /// ```
    /// use dogpile_core::{CacheRegion, RegionConfig, Result};
    /// use dogpile_core::backend::CacheBackend;
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
        self.inner.stats.snapshot()
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
        if !(config.early_refresh.is_finite() && config.early_refresh >= 0.0) {
            return Err(Error::invalid_argument(
                format!("region `{}`", self.inner.name),
                "early_refresh",
                format!("{} is not a number >= 0", config.early_refresh),
            ));
        }
        let _serialized = self
            .inner
            .configure_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(current) = &*self.inner.configured.load() {
            if !config.replace_existing_backend {
                return Err(Error::RegionAlreadyConfigured {
                    region: self.inner.name.to_string(),
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
        if let Some(name) = &config.name {
            if self.inner.name.name_if_unnamed(name) {
                self.inner.stats.name_region(name);
            }
        }
        let shared_invalidation = match config.shared_invalidation {
            false => None,
            true if !self.inner.name.is_named() => {
                return Err(Error::InvalidRegionOption {
                    option: "shared_invalidation".into(),
                    reason: "the region has no name, and processes share an invalidation by \
                             region name: build it with CacheRegion::named or \
                             CacheRegion::builder().name(..), or configure it from a prefixed \
                             configuration"
                        .into(),
                });
            }
            true => {
                let poll = config
                    .invalidation_poll
                    .unwrap_or(invalidation::DEFAULT_POLL);
                let shared = invalidation::Shared::new(&self.inner.name, poll, backend.clone());
                Some(Arc::new(shared))
            }
        };
        tracing::debug!(region = %self.inner.name, backend = %backend_name, "region configured");
        let capabilities = backend.capabilities();
        let fresh_hits = capabilities.nonblocking && config.early_refresh == 0.0;
        let view_id = match fresh_hits && shared_invalidation.is_none() {
            true => view::next_id(),
            false => 0,
        };
        let configured = Arc::new(Configured {
            stores_objects: capabilities.stores_objects,
            stores_nothing: capabilities.stores_nothing,
            lock_key_prefix: capabilities.lock_key_prefix,
            #[cfg(feature = "tokio")]
            nonblocking: capabilities.nonblocking && backend.async_twin().is_none(),
            fresh_hits,
            view_id,
            #[cfg(feature = "tokio")]
            async_backend: crate::backend::async_path(&backend),
            backend,
            backend_name,
            expiration: config.expiration_time,
            stale_if_error: config.stale_if_error,
            retry_after_error: config.retry_after_error,
            soft_timeout: config.soft_timeout,
            shared_invalidation,
            early_refresh: config.early_refresh,
        });
        if let Some(shared) = &configured.shared_invalidation {
            invalidation::watch(shared, &self.inner.invalidation);
        }
        let replaced = self.inner.configured.swap(Some(configured));
        self.inner
            .view_id
            .store(view_id, std::sync::atomic::Ordering::Release);
        if replaced.is_some_and(|old| old.view_id != 0) {
            view::retire();
        }
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
    /// see [`RegionConfig::from_config`]. A region built without a name is named after the
    /// prefix, without its trailing dot, so that each region of a config file is its own
    /// series in the metrics:
    ///
    /// ```
    /// use dogpile_core::make_region;
    /// # use dogpile_core::{backend::{register_backend, Arguments, CacheBackend}, Result};
    /// # struct Nothing;
    /// # impl CacheBackend for Nothing {
    /// #     fn get(&self, _: &str) -> Result<Option<Vec<u8>>> { Ok(None) }
    /// #     fn set(&self, _: &str, _: Vec<u8>) -> Result<()> { Ok(()) }
    /// #     fn delete(&self, _: &str) -> Result<()> { Ok(()) }
    /// # }
    /// # register_backend("dogpile.cache.null", |_: &Arguments| Ok(Nothing));
    ///
    /// let config = [("cache.local.backend", "dogpile.cache.null")];
    /// let local = make_region();
    /// local.configure_from_config(config, "cache.local.")?;
    /// assert_eq!(local.name(), "cache.local");
    /// # Ok::<(), dogpile_core::Error>(())
    /// ```
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
        self.inner.configured.load().is_some()
    }

    /// The configured backend's name.
    pub fn backend_name(&self) -> Option<String> {
        self.inner
            .configured
            .load()
            .as_ref()
            .map(|c| c.backend_name.clone())
    }

    /// The configured expiration time (`None`: never expires, or not configured).
    pub fn expiration_time(&self) -> Option<Duration> {
        self.inner
            .configured
            .load()
            .as_ref()
            .and_then(|c| c.expiration)
    }

    /// True when some caller in this process holds the dogpile lock on `key`.
    pub fn key_is_locked(&self, key: &str) -> bool {
        self.inner.locks.is_locked(&self.inner.mangle(key))
    }

    /// Invalidates every value created before now, without touching the values.
    ///
    /// Hard: such values are absent. Soft: they are expired, so `get_or_create` callers
    /// keep getting the old value while one of them regenerates (`get` returns `None`).
    ///
    /// As dogpile.cache's, it reaches this region in this process only, unless the region
    /// is configured with [`shared_invalidation`](RegionConfig::shared_invalidation): then
    /// it is recorded in the backend and reaches every process whose region has this name
    /// on the same backend.
    ///
    /// # Errors
    /// [`Error::SoftInvalidationWithoutExpiration`] for a soft invalidation of a region
    /// that has no expiration time; with `shared_invalidation`, the backend's error when
    /// the record cannot be written (this process is invalidated all the same).
    pub fn invalidate(&self, hard: bool) -> Result<()> {
        if !hard && self.expiration_time().is_none() {
            return Err(Error::SoftInvalidationWithoutExpiration {
                region: self.inner.name.to_string(),
            });
        }
        let at = self.inner.clock.now();
        self.inner.invalidation.set(at, hard);
        if let Some(cfg) = &*self.inner.configured.load() {
            if let Some(shared) = &cfg.shared_invalidation {
                shared.write(at, hard)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CacheRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.configured.load();
        f.debug_struct("CacheRegion")
            .field("name", &self.inner.name)
            .field("backend", &state.as_ref().map(|c| &c.backend_name))
            .field(
                "expiration_time",
                &state.as_ref().and_then(|c| c.expiration),
            )
            .field("serve_stale", &self.inner.serve_stale)
            .field("fail_open", &self.inner.fail_open)
            .field("time_budget", &self.inner.time_budget)
            .finish()
    }
}
