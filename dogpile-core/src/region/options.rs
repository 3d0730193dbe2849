//! The options of one call: [`CreateOptions`] and [`Expiration`].

use std::fmt;
use std::time::Duration;

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

/// Per-call options of [`CacheRegion::get_or_create_with`](crate::CacheRegion::get_or_create_with) and friends.
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
    pub(crate) stale_if_error: Option<Duration>,
}

impl<'a, T> CreateOptions<'a, T> {
    /// The region's defaults.
    pub fn new() -> Self {
        CreateOptions {
            expiration: None,
            should_cache: None,
            time_budget: None,
            stale_if_error: None,
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

    /// Overrides the region's [`time_budget`](crate::RegionBuilder::time_budget) for this call:
    /// how long it may wait in all, for the in-process lock and the distributed lock.
    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.time_budget = Some(budget);
        self
    }

    /// Overrides the region's
    /// [`stale_if_error`](crate::RegionConfig::stale_if_error) window for this call.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
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
            .field("stale_if_error", &self.stale_if_error)
            .finish()
    }
}
