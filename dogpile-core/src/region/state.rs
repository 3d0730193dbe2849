//! What a region is made of, and what the driver may ask of it: its options, its
//! configuration in force, its locks and observers, and the steps every operation shares
//! (keys, decoding, freshness, the rules of a call). No I/O here and no public API: the
//! operations are in `ops.rs`, the public faces in `blocking.rs` and `nonblocking.rs`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::backend::CacheBackend;
use crate::clock::{Clock, SystemClock};
use crate::engine::machine::{store_outcome, Freshness, Rules, Signals};
use crate::error::{Error, Result};
use crate::key::{FunctionKeyGenerator, KeyMangler};
use crate::lock::local::{Handed, KeyLocks};
use crate::region::failures::Failures;
use crate::region::invalidation::Invalidation;
use crate::region::name::{RegionName, UNNAMED};
use crate::region::options::{CreateOptions, Expiration};
use crate::runner::AsyncCreationRunner;
use crate::stats::StatsRecorder;
use crate::value::{encode, Cacheable, CachedValue, Entry};
use crate::warnings::{warn_limited, RegionWarnings, WarningKind};

/// The default [`time_budget`](crate::RegionBuilder::time_budget) of a region: 30 seconds.
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_secs(30);

/// Everything a region holds; [`CacheRegion`](crate::CacheRegion) is its public face.
pub(crate) struct RegionState {
    pub(crate) name: RegionName,
    pub(crate) key_mangler: Option<KeyMangler>,
    pub(crate) function_key_generator: Option<FunctionKeyGenerator>,
    pub(crate) runner: Option<Arc<dyn AsyncCreationRunner>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) serve_stale: bool,
    pub(crate) fail_open: bool,
    pub(crate) time_budget: Duration,
    pub(crate) configured: ArcSwapOption<Configured>,
    /// The [`Configured::view_id`] of the configuration in force (0: none, or one that
    /// threads do not keep); published after `configured`.
    pub(crate) view_id: AtomicU64,
    pub(crate) configure_lock: Mutex<()>,
    /// When values were last invalidated (by this process, or another sharing it).
    pub(crate) invalidation: Arc<Invalidation>,
    pub(crate) locks: Arc<KeyLocks>,
    pub(crate) stats: Arc<StatsRecorder>,
    pub(crate) warnings: Arc<RegionWarnings>,
    /// Creator failures remembered for `retry_after_error`.
    pub(crate) failures: Arc<Failures>,
}

/// The configured part of a region: swapped in whole by `configure`.
pub(crate) struct Configured {
    pub(crate) backend: Arc<dyn CacheBackend>,
    /// The async path to `backend` (see `backend/bridge.rs`).
    #[cfg(feature = "tokio")]
    pub(crate) async_backend: Arc<dyn crate::backend::AsyncCacheBackend>,
    pub(crate) backend_name: String,
    pub(crate) expiration: Option<Duration>,
    /// See [`RegionConfig::stale_if_error`](crate::RegionConfig::stale_if_error).
    pub(crate) stale_if_error: Option<Duration>,
    /// See [`RegionConfig::retry_after_error`](crate::RegionConfig::retry_after_error).
    pub(crate) retry_after_error: Option<Duration>,
    /// See [`RegionConfig::soft_timeout`](crate::RegionConfig::soft_timeout).
    pub(crate) soft_timeout: Option<Duration>,
    /// See [`RegionConfig::shared_invalidation`](crate::RegionConfig::shared_invalidation).
    pub(crate) shared_invalidation: Option<Arc<crate::region::invalidation::Shared>>,
    /// See [`RegionConfig::early_refresh`](crate::RegionConfig::early_refresh); 0: off.
    pub(crate) early_refresh: f64,
    pub(crate) stores_objects: bool,
    pub(crate) stores_nothing: bool,
    /// Keys that begin with this are the backend's locks.
    pub(crate) lock_key_prefix: Option<String>,
    /// The backend never blocks and has no async twin: async callers call it directly.
    #[cfg(feature = "tokio")]
    pub(crate) nonblocking: bool,
    /// A fresh hit is answered before any future is built ([`fresh_hit`]): the backend
    /// never blocks, and no rule (`early_refresh`) needs the machine on a fresh value.
    ///
    /// [`fresh_hit`]: crate::region::ops::fresh_hit
    pub(crate) fresh_hits: bool,
    /// Its id in the threads' views of the configurations (`view.rs`), when a fresh hit
    /// may find it there: a store that holds nothing but memory, no watching thread. 0:
    /// hits load it from the region.
    pub(crate) view_id: u64,
}

impl Configured {
    /// Whether the backend key `key` would be one of the backend's distributed locks
    /// (which [`RegionState::backend_key`] refuses).
    #[inline]
    pub(crate) fn is_lock_key(&self, key: &str) -> bool {
        self.lock_key_prefix
            .as_deref()
            .is_some_and(|prefix| key.starts_with(prefix))
    }
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

/// The keys of a multi call: in the caller's order (mangled), and distinct, sorted, with
/// the key each was given as.
pub(crate) struct MultiKeys {
    pub(crate) inputs: Vec<String>,
    pub(crate) unique: Vec<(String, String)>,
}

impl RegionState {
    /// A new, unconfigured region's state with default options.
    pub(crate) fn new() -> Self {
        RegionState {
            name: RegionName::default(),
            key_mangler: None,
            function_key_generator: None,
            runner: None,
            clock: Arc::new(SystemClock),
            serve_stale: true,
            fail_open: false,
            time_budget: DEFAULT_TIME_BUDGET,
            configured: ArcSwapOption::empty(),
            view_id: AtomicU64::new(0),
            configure_lock: Mutex::new(()),
            invalidation: Arc::default(),
            locks: Arc::default(),
            stats: Arc::new(StatsRecorder::new(UNNAMED)),
            warnings: Arc::default(),
            failures: Arc::default(),
        }
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
    #[inline]
    pub(crate) fn count_lookup<V>(&self, value: &Option<V>) {
        match value {
            Some(_) => self.stats.hit(),
            None => self.stats.miss(),
        }
    }

    /// The configuration in force, or [`Error::RegionNotConfigured`].
    #[inline]
    pub(crate) fn configured(&self) -> Result<Current> {
        let state = self.configured.load();
        if state.is_none() {
            return Err(Error::RegionNotConfigured {
                region: self.name.to_string(),
            });
        }
        Ok(Current(state))
    }

    /// As [`configured`](Self::configured), owned: for a call that awaits.
    #[cfg(feature = "tokio")]
    pub(crate) fn configured_arc(&self) -> Result<Arc<Configured>> {
        self.configured().map(|cfg| cfg.to_arc())
    }

    // ----- keys ----------------------------------------------------------------------

    #[inline]
    pub(crate) fn mangle<'k>(&self, key: &'k str) -> Cow<'k, str> {
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
    pub(crate) fn backend_key<'k>(&self, cfg: &Configured, key: &'k str) -> Result<Cow<'k, str>> {
        let mangled = self.mangle(key);
        match &cfg.lock_key_prefix {
            Some(prefix) if cfg.is_lock_key(&mangled) => Err(Error::invalid_argument(
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

    /// The backend keys of many keys, in order.
    pub(crate) fn backend_keys<'k, K: AsRef<str>>(
        &self,
        cfg: &Configured,
        keys: &'k [K],
    ) -> Result<Vec<Cow<'k, str>>> {
        keys.iter()
            .map(|k| self.backend_key(cfg, k.as_ref()))
            .collect()
    }

    /// The mangled keys of a multi call in the caller's order, and its distinct keys
    /// (mangled, as given) sorted by mangled key: the one order in which locks are taken,
    /// so that two multi calls never wait on each other in a cycle.
    pub(crate) fn distinct_keys<K: AsRef<str>>(
        &self,
        cfg: &Configured,
        keys: &[K],
    ) -> Result<MultiKeys> {
        let inputs: Vec<String> = self
            .backend_keys(cfg, keys)?
            .into_iter()
            .map(Cow::into_owned)
            .collect();
        let mut unique: Vec<(String, String)> = inputs
            .iter()
            .zip(keys)
            .map(|(mangled, k)| (mangled.clone(), k.as_ref().to_owned()))
            .collect();
        unique.sort();
        unique.dedup_by(|a, b| a.0 == b.0);
        Ok(MultiKeys { inputs, unique })
    }

    // ----- values --------------------------------------------------------------------

    /// A stored entry as a `T`; an entry that is not one is a miss and a warning.
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
            let (entry, object) = entry_for(cfg, key, value, now, None);
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

    // ----- freshness and rules -------------------------------------------------------

    /// A memoized function's cache error, before it computes the value uncached: a region
    /// that was never configured is a mistake that debug builds (and so tests) stop at,
    /// with a panic that says what to do; release builds go on uncached, with a
    /// rate-limited warning. A region built with
    /// [`fail_open(true)`](crate::RegionBuilder::fail_open) accepts being unconfigured, in
    /// every build.
    pub(crate) fn loud_if_unconfigured(&self, error: &Error) {
        if cfg!(debug_assertions) && !self.fail_open {
            if let Error::RegionNotConfigured { region } = error {
                panic!(
                    "region `{region}` is used by a memoized function but was never \
                     configured: call configure() on it at startup. (This panics in debug \
                     builds only: release builds compute the value uncached and log a \
                     warning. A region built with fail_open(true) may stay unconfigured.)"
                );
            }
        }
    }

    #[inline]
    pub(crate) fn invalidation(&self) -> Option<(f64, bool)> {
        self.invalidation.get()
    }

    #[inline]
    pub(crate) fn freshness(
        &self,
        cfg: &Configured,
        expiration: Option<Expiration>,
    ) -> Freshness<'_> {
        let expiration = match expiration {
            None => cfg.expiration,
            Some(Expiration::Never) => None,
            Some(Expiration::After(d)) => Some(d),
        };
        Freshness {
            clock: &*self.clock,
            expiration,
            invalidated: self.invalidation(),
        }
    }

    /// The rules of a call: the region's, failing open when it does or the call asks to,
    /// with the background rule when asked for. A call that asks to fail open (a memoized
    /// function's, whose error type dogpile cannot build) takes over from a creator that
    /// failed instead of sharing its failure.
    #[inline]
    pub(crate) fn rules(&self, cfg: &Configured, fail_open: bool, background: bool) -> Rules {
        Rules {
            stale_if_error: cfg.stale_if_error,
            early_refresh: cfg.early_refresh,
            serve_stale: self.serve_stale,
            fail_open: fail_open || self.fail_open,
            background,
            soft_timeout: background && cfg.soft_timeout.is_some(),
            lock: !cfg.stores_nothing,
            share_failures: !fail_open,
        }
    }
}

/// The entry storing `payload`, created at `ct`, under `key`: what a plain `set` stores
/// (as [`entry_for`], with nothing handed to waiters).
pub(crate) fn entry_of<T: Cacheable>(
    cfg: &Configured,
    key: &str,
    payload: &T,
    ct: f64,
) -> Result<Entry> {
    if cfg.stores_objects {
        Ok(Entry::Object(Arc::new(CachedValue::new(
            payload.clone(),
            ct,
        ))))
    } else {
        encode(payload, &crate::value::Metadata::new(ct), key).map(Entry::Bytes)
    }
}

/// The entry `cfg`'s backend stores for `payload` (the typed object itself for object
/// stores, dogpile's byte format for every other), and the object handed to waiters.
/// `took`: how long its creation took, recorded for `early_refresh`.
pub(crate) fn entry_for<T: Cacheable>(
    cfg: &Configured,
    key: &str,
    payload: &T,
    ct: f64,
    took: Option<f64>,
) -> (Result<Entry>, Handed) {
    let mut value = CachedValue::new(payload.clone(), ct);
    value.metadata.set_creation_time(took);
    let object: Arc<CachedValue<T>> = Arc::new(value);
    let entry = if cfg.stores_objects {
        Ok(Entry::Object(object.clone()))
    } else {
        encode(payload, &object.metadata, key).map(Entry::Bytes)
    };
    (entry, object)
}
