//! Every operation a region offers, written once, generic over the driver's [`Io`]: the
//! blocking face (`mod.rs`) runs each with `block_on`, the async face (`nonblocking.rs`)
//! awaits it. A behaviour added here (a rule, a count, a refusal) reaches both faces.

use std::future::Future;
use std::sync::Arc;

use crate::clock::Clock;
use crate::engine::driver::{self, CreateError, CreatorError, Io, Told, Untold};
use crate::engine::machine::{Lookup, Machine, Signals, Step};
use crate::error::{Error, Result};
use crate::region::io::BlockingIo;
use crate::region::options::{CreateOptions, Expiration};
use crate::region::state::{entry_for, Configured, RegionState};
use crate::stats::StatsRecorder;
use crate::value::{Cacheable, CachedValue};
use crate::warnings::{warn_limited, RegionWarnings, WarningKind};

/// The value under `key` with its metadata, or `None` when absent, expired or invalidated
/// (unless `ignore_expiration`); counted as a hit or a miss.
pub(crate) async fn get<IO: Io, T: Cacheable>(
    region: &RegionState,
    key: &str,
    expiration: Option<Expiration>,
    ignore_expiration: bool,
) -> Result<Option<CachedValue<T>>> {
    let cfg = IO::configured(region)?;
    let key = region.backend_key(&cfg, key)?;
    let value = region.counted(IO::read(region, &cfg, &key).await)?;
    let value = if ignore_expiration {
        value
    } else {
        match region.freshness(&cfg, expiration).judge(value) {
            Lookup::Fresh(value) => Some(value),
            Lookup::Stale(_) | Lookup::Missing => None,
        }
    };
    region.count_lookup(&value);
    Ok(value)
}

/// The values of many keys, in order, read in one backend call.
pub(crate) async fn get_multi<IO: Io, T: Cacheable, K: AsRef<str>>(
    region: &RegionState,
    keys: &[K],
) -> Result<Vec<Option<T>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = IO::configured(region)?;
    let mangled = region.backend_keys(&cfg, keys)?;
    let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
    let values = region.counted(IO::read_multi(region, &cfg, &refs).await)?;
    let freshness = region.freshness(&cfg, None);
    Ok(values
        .into_iter()
        .map(|value| {
            let value = match freshness.judge(value) {
                Lookup::Fresh(value) => Some(value.payload),
                Lookup::Stale(_) | Lookup::Missing => None,
            };
            region.count_lookup(&value);
            value
        })
        .collect())
}

/// Stores `value` under `key`, created now.
pub(crate) async fn set<IO: Io, T: Cacheable>(
    region: &RegionState,
    key: &str,
    value: &T,
) -> Result<()> {
    let cfg = IO::configured(region)?;
    let key = region.backend_key(&cfg, key)?;
    let entry = entry_for(&cfg, &key, value, region.clock.now()).0?;
    region.counted(IO::set(&cfg, &key, entry).await)
}

/// Stores many values in one backend call.
pub(crate) async fn set_multi<IO: Io, T: Cacheable, K: AsRef<str>>(
    region: &RegionState,
    items: &[(K, T)],
) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let cfg = IO::configured(region)?;
    let now = region.clock.now();
    let mangled = items
        .iter()
        .map(|(k, _)| region.backend_key(&cfg, k.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let entries = mangled
        .iter()
        .zip(items)
        .map(|(key, (_, value))| Ok((&**key, entry_for(&cfg, key, value, now).0?)))
        .collect::<Result<Vec<_>>>()?;
    region.counted(IO::set_multi(&cfg, entries).await)
}

/// Removes `key`.
pub(crate) async fn delete<IO: Io>(region: &RegionState, key: &str) -> Result<()> {
    let cfg = IO::configured(region)?;
    let key = region.backend_key(&cfg, key)?;
    region.counted(IO::delete(&cfg, &key).await)
}

/// Removes many keys in one backend call.
pub(crate) async fn delete_multi<IO: Io, K: AsRef<str>>(
    region: &RegionState,
    keys: &[K],
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let cfg = IO::configured(region)?;
    let mangled = region.backend_keys(&cfg, keys)?;
    let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
    region.counted(IO::delete_multi(&cfg, &refs).await)
}

/// A fresh hit on a backend that never blocks (memory), served at once: the common case of
/// `get_or_create`, on either face, with no future built. `None`: anything else (a miss, a
/// stale value, an error, a backend that may block), which the whole operation handles.
#[inline]
pub(crate) fn fresh_hit<T: Cacheable>(
    region: &RegionState,
    key: &str,
    expiration: Option<Expiration>,
) -> Option<T> {
    let cfg = region.configured().ok()?;
    if !cfg.nonblocking {
        return None;
    }
    let key = region.backend_key(&cfg, key).ok()?;
    let value = BlockingIo::read_now(region, &cfg, &key).ok()??;
    match region.freshness(&cfg, expiration).judge(Some(value)) {
        Lookup::Fresh(value) => {
            region.stats.hit();
            Some(value.payload)
        }
        Lookup::Stale(_) | Lookup::Missing => None,
    }
}

/// No background rule: the caller always creates.
pub(crate) type NoDetach<IO, F> = fn(&<IO as Io>::Cfg, &str, F, Option<<IO as Io>::Handle>);

/// `get_or_create`: the engine's machine for `key`, its first read here (a fresh hit
/// returns before the driver's future is made), then the driver, on the heap (a miss
/// pays one allocation; the hit path keeps a small future).
pub(crate) async fn get_or_create<IO, T, E, F, Fut, D>(
    region: &RegionState,
    key: &str,
    options: &CreateOptions<'_, T>,
    creator: &mut Option<F>,
    fail_open: bool,
    detach: Option<D>,
) -> std::result::Result<T, CreateError<E>>
where
    IO: Io,
    T: Cacheable,
    E: CreatorError,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    D: FnOnce(&IO::Cfg, &str, F, Option<IO::Handle>),
{
    let cfg = IO::configured(region).map_err(CreateError::Cache)?;
    let key = region.backend_key(&cfg, key).map_err(CreateError::Cache)?;
    let rules = region.rules(&cfg, fail_open, detach.is_some());
    let freshness = region.freshness(&cfg, options.expiration);
    let mut machine = Machine::new(region.signals(), &key, freshness, rules);
    let step = machine.read(IO::read(region, &cfg, &key).await);
    if let Step::Return(value) = step {
        return Ok(value);
    }
    Box::pin(driver::drive::<IO, T, E, F, Fut, D>(
        region, &cfg, &key, options, creator, machine, step, detach,
    ))
    .await
}

/// `try_get_or_create`: the creator's error is the caller's, and so is the cache's,
/// through `From`; the callers that waited for a creator that failed get
/// [`Error::CreatorFailed`] with its text, through `From` too.
pub(crate) async fn try_get_or_create<IO, T, E, F, Fut>(
    region: &RegionState,
    key: &str,
    options: &CreateOptions<'_, T>,
    creator: F,
) -> std::result::Result<T, E>
where
    IO: Io,
    T: Cacheable,
    E: From<Error> + std::fmt::Display,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    // Its error wrapped as one whose text the waiters are handed.
    let creator = move || {
        let creating = creator();
        async move { creating.await.map_err(Told) }
    };
    let mut creator = Some(creator);
    let detach = None::<NoDetach<IO, _>>;
    match get_or_create::<IO, T, _, _, _, _>(region, key, options, &mut creator, false, detach)
        .await
    {
        Ok(value) => Ok(value),
        Err(CreateError::Cache(error)) => Err(error.into()),
        Err(CreateError::Creator(Told(error))) => Err(error),
    }
}

/// `get_or_create`, failing open: an unconfigured region or a failing backend is logged
/// and the creator's value returned. What memoized functions call.
pub(crate) async fn get_or_create_fail_open<IO, T, E, F, Fut>(
    region: &RegionState,
    key: &str,
    options: &CreateOptions<'_, T>,
    creator: F,
) -> std::result::Result<T, E>
where
    IO: Io,
    T: Cacheable,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    // Its error (of any type) wrapped as one that is not handed to the waiters.
    let creator = move || {
        let creating = creator();
        async move { creating.await.map_err(Untold) }
    };
    let mut creator = Some(creator);
    let detach = None::<NoDetach<IO, _>>;
    match get_or_create::<IO, T, _, _, _, _>(region, key, options, &mut creator, true, detach).await
    {
        Ok(value) => Ok(value),
        Err(CreateError::Creator(Untold(error))) => Err(error),
        // Failing open, the engine turns read, lock and write failures into misses and
        // warnings: a cache error (an unconfigured region, a refused key) comes before the
        // creator ran, and the creator still gives the answer.
        Err(CreateError::Cache(error)) => match creator.take() {
            Some(creator) => {
                warn_limited!(region.warnings, WarningKind::CacheUnavailable, region = %region.name,
                    key, %error, "cache unavailable; computing the value uncached");
                creator().await.map_err(|Untold(error)| error)
            }
            None => unreachable!("fail-open cache error after the creator ran: {error}"),
        },
    }
}

/// `get_or_create_multi`: one machine per distinct key (see
/// [`drive_multi`](driver::drive_multi)).
pub(crate) async fn get_or_create_multi<IO, T, K, F, Fut>(
    region: &RegionState,
    keys: &[K],
    options: &CreateOptions<'_, T>,
    creator: F,
    fail_open: bool,
) -> Result<Vec<T>>
where
    IO: Io,
    T: Cacheable,
    K: AsRef<str>,
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Vec<T>>,
{
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = IO::configured(region)?;
    let keys = region.distinct_keys(&cfg, keys)?;
    let rules = region.rules(&cfg, fail_open, false);
    driver::drive_multi::<IO, T, F, Fut>(region, &cfg, keys, options, creator, rules).await
}

/// What a background regeneration takes along: owned, so that it outlives the call that
/// handed it over.
pub(crate) struct Detached {
    name: String,
    stats: Arc<StatsRecorder>,
    warnings: Arc<RegionWarnings>,
    clock: Arc<dyn Clock>,
    cfg: Arc<Configured>,
    key: String,
}

impl Detached {
    pub(crate) fn new(region: &RegionState, cfg: Arc<Configured>, key: &str) -> Self {
        Detached {
            name: region.name.clone(),
            stats: region.stats.clone(),
            warnings: region.warnings.clone(),
            clock: region.clock.clone(),
            cfg,
            key: key.to_owned(),
        }
    }

    /// Runs the creator, stores its value, hands it to the waiters and releases the lock.
    pub(crate) async fn regenerate<IO: Io, T: Cacheable, Fut>(
        self,
        creator: impl FnOnce() -> Fut,
        handle: Option<IO::Handle>,
    ) where
        Fut: Future<Output = Result<T>>,
    {
        let signals = Signals {
            region: &self.name,
            stats: &self.stats,
            warnings: &self.warnings,
        };
        driver::regenerate::<IO, T, Fut>(
            signals,
            &*self.clock,
            &self.cfg,
            &self.key,
            creator,
            handle,
        )
        .await;
    }
}
